//! `flagsync serve` as a service: the embedded default, host keys that
//! survive restarts, files that arrive while it is down, the command line
//! while it runs (forwarded to it), `flagsync accounts`, retention, and
//! clean exits on SIGTERM/SIGINT.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::*;
use crate::util::*;

/// `flagsync ARGS...` in the test dir with no `--config`: the embedded
/// default (no ./flagsync.toml there, FLAGSYNC_CONFIG unset).
fn run_default(env: &Env, args: &[&str]) -> Out {
    let mut cmd = env.command();
    cmd.args(args);
    run_command(cmd, &args.join(" "))
}

/// Every regular file under `dir`, as bytes.
fn all_bytes_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .filter_map(|(path, content)| content.map(|c| (path, c)))
        .collect()
}

/// Panics if `secret` appears in any file under `dir`.
#[track_caller]
fn assert_not_stored_in_clear(dir: &Path, secret: &str) {
    for (path, bytes) in all_bytes_under(dir) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the password {secret:?} is stored in clear in {path}"
        );
    }
}

/// Fingerprints OpenSSH's ssh-keyscan sees: key type → `SHA256:...`.
fn keyscan(env: &Env, port: u16) -> Vec<(String, String)> {
    let mut cmd = tool(env, "ssh-keyscan");
    cmd.args(["-T", "20", "-t", "ed25519,rsa", "-p"])
        .arg(port.to_string())
        .arg(HOST);
    let out = run_tool(cmd, "ssh-keyscan", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "ssh-keyscan: {out:#?}");
    let keys = env.root.join(format!("keyscan-{}.txt", unique()));
    fs::write(&keys, &out.stdout).expect("write keyscan output");
    let mut cmd = tool(env, "ssh-keygen");
    cmd.args(["-l", "-E", "sha256", "-f"]).arg(&keys);
    let listed = run_tool(cmd, "ssh-keygen -l", None, TOOL_TIMEOUT);
    assert_eq!(
        listed.code, 0,
        "ssh-keygen -l on {:?}: {listed:#?}",
        out.stdout
    );
    // "256 SHA256:... [127.0.0.1]:PORT (ED25519)"
    let mut found: Vec<(String, String)> = listed
        .stdout
        .lines()
        .filter_map(|l| {
            let fp = l.split_whitespace().find(|w| w.starts_with("SHA256:"))?;
            let kind = l.rsplit('(').next()?.trim_end_matches(')');
            Some((kind.to_string(), fp.to_string()))
        })
        .collect();
    found.sort();
    found
}

/// Checks the printed host keys: `ssh-ed25519`, `ecdsa-sha2-nistp256` and
/// `ssh-rsa` lines (key types as `ssh-keyscan` names them). Called at the
/// end of the tests so that a different name does not hide other failures.
#[track_caller]
fn assert_host_key_lines(host_keys: &[(String, String)]) {
    let algorithms: Vec<&str> = host_keys.iter().map(|(a, _)| a.as_str()).collect();
    assert!(
        algorithms.contains(&"ssh-ed25519")
            && algorithms.contains(&"ecdsa-sha2-nistp256")
            && algorithms.contains(&"ssh-rsa"),
        "serve prints `sftp: host key ssh-ed25519 SHA256:...`, \
         `... ecdsa-sha2-nistp256 ...` and `... ssh-rsa ...`; it printed {host_keys:?}"
    );
}

/// The RSA host key's printed fingerprint, whatever algorithm name the
/// line gives it.
#[track_caller]
fn rsa_fingerprint(server: &Server) -> String {
    server
        .host_keys
        .iter()
        .find(|(a, _)| ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"].contains(&a.as_str()))
        .map(|(_, fp)| fp.clone())
        .unwrap_or_else(|| panic!("no RSA host key printed: {:?}", server.host_keys))
}

#[test]
fn embedded_default_serves_the_demo_feed_on_port_2222_and_prints_the_password_once() {
    // THE ONLY TEST THAT USES PORT 2222: the embedded default listens on
    // 0.0.0.0:2222 and cannot be told otherwise. It fails if something
    // else holds that port.
    let env = Env::bare();
    assert!(!env.root.join("flagsync.toml").exists());
    let start = |env: &Env| {
        let mut cmd = env.command();
        cmd.arg("serve");
        Server::spawn(cmd, "flagsync serve (embedded default)")
    };

    // A first start that fails (the web port is taken) keeps no account
    // whose password was shown and then lost with the failed start.
    let taken = std::net::TcpListener::bind("127.0.0.1:8080").expect("port 8080 free for the test");
    let failed = run_default(&env, &["serve"]);
    assert_eq!(failed.code, 2, "{failed:#?}");
    assert!(failed.stderr.contains("8080"), "{failed:#?}");
    assert!(!failed.stdout.contains("password"), "{failed:#?}");
    drop(taken);

    let server = start(&env);
    assert_eq!(server.listen, "0.0.0.0:2222", "{}", server.context());
    assert!(
        env.root.join("flagsync-data").is_dir(),
        "./flagsync-data is created"
    );
    let prefix = "sftp: account demo (feed demo) password: ";
    let line = server.wait_stdout_line(prefix, Duration::from_secs(5));
    let password = line[prefix.len()..].trim().to_string();
    assert!(
        password.len() >= 12,
        "a generated password of some strength: {password:?}"
    );
    assert_not_stored_in_clear(&env.root.join("flagsync-data"), &password);

    let accounts = {
        let out = run_default(&env, &["accounts", "list", "--json"]);
        assert_eq!(
            out.code, 0,
            "accounts list while serving the default: {out:#?}"
        );
        out.json("accounts list")
    };
    let accounts = accounts.as_array().expect("accounts array").clone();
    assert_eq!(accounts.len(), 1, "{accounts:#?}");
    assert_eq!(accounts[0]["name"], "demo");
    assert_eq!(accounts[0]["feed"], "demo");
    assert_eq!(accounts[0]["password"], true);

    let demo = Client::password(2222, "demo", &password);
    let results = demo.session(vec![put("/upload/demo.csv", &hr_file(1..=6))]);
    ok(&results[0], "upload as demo");
    let list = || {
        let out = run_default(&env, &["runs", "list", "--json"]);
        if out.code != 0 {
            return Err(out);
        }
        Ok(out
            .json("runs list")
            .as_array()
            .cloned()
            .unwrap_or_default())
    };
    let runs = server.wait_for_runs_with(list, 1, RUN_TIMEOUT);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["feed"], "demo");
    assert_eq!(runs[0]["file"], "demo.csv");
    assert_eq!(runs[0]["state"], "applied", "{:#}", runs[0]);
    assert_eq!(runs[0]["added"], 6);
    let host_keys = server.host_keys.clone();
    server.stop();

    // The second start prints no password, keeps the host keys, and the
    // first password still works.
    let server = start(&env);
    assert_eq!(server.host_keys, host_keys, "host keys changed on restart");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !server.stdout_text().contains("password"),
        "the password is printed only at the first start:\n{}",
        server.stdout_text()
    );
    let results = demo.session(vec![json!({"op": "listdir", "path": "/archive"})]);
    let archive = ok(&results[0], "list /archive with the first password");
    assert_eq!(archive.as_array().map(Vec::len), Some(1), "{archive:#}");
    server.stop_with("INT");
    assert_host_key_lines(&host_keys);
}

#[test]
fn host_keys_are_generated_once_and_kept_across_restarts() {
    let env = sftp_env();
    let key = keygen(&env, "hr-up-key");
    add_account(&env, USER, "hr", None, &[&pub_of(&key)], &[]);

    let server = Server::start_unseeded(&env);
    let ed25519 = server.fingerprint("ssh-ed25519");
    let rsa = rsa_fingerprint(&server);

    // What clients see is what was printed.
    let scanned = keyscan(&env, server.port);
    assert!(
        scanned.contains(&("ED25519".to_string(), ed25519.clone())),
        "ssh-keyscan's ed25519 key {scanned:?} is not the printed {ed25519}"
    );
    assert!(
        scanned.contains(&("RSA".to_string(), rsa.clone())),
        "ssh-keyscan's RSA key {scanned:?} is not the printed {rsa}"
    );
    let client = Client::key(server.port, USER, &key);
    let connect = client.run(vec![json!({"op": "connect"})]);
    let seen = ok(&connect[0], "paramiko login");
    assert!(
        server
            .host_keys
            .iter()
            .any(|(_, fp)| *fp == seen["fingerprint"]),
        "paramiko saw {seen:#}, serve printed {:?}",
        server.host_keys
    );

    // The private keys are in the data folder, owner-only.
    let mut private = Vec::new();
    for name in names_in(&env.data_dir) {
        let path = env.data_dir.join(&name);
        if !path.is_file() {
            continue;
        }
        let head = fs::read(&path)
            .map(|b| b[..b.len().min(64)].to_vec())
            .unwrap_or_default();
        if String::from_utf8_lossy(&head).contains("PRIVATE KEY") {
            let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "host key {name} has mode {mode:o}");
            private.push(name);
        }
    }
    assert!(
        private.len() >= 2,
        "the ed25519 and RSA host keys are kept in the data folder as private key files: {:?}",
        names_in(&env.data_dir)
    );
    let key_files: Vec<(String, Vec<u8>)> = private
        .iter()
        .map(|n| (n.clone(), fs::read(env.data_dir.join(n)).expect("read key")))
        .collect();
    let printed = server.host_keys.clone();
    server.stop();

    let server = Server::start_unseeded(&env);
    assert_eq!(server.host_keys, printed, "host keys changed on restart");
    assert_eq!(
        keyscan(&env, server.port),
        scanned,
        "the keys clients see changed on restart"
    );
    for (name, content) in &key_files {
        assert_eq!(
            &fs::read(env.data_dir.join(name)).expect("read key"),
            content,
            "{name} was rewritten"
        );
    }
    server.stop_with("INT");
    assert_host_key_lines(&printed);
}

#[test]
fn a_file_written_while_the_server_was_stopped_is_imported_at_start() {
    let s = Setup::standard();
    let results = s
        .key_client()
        .session(vec![put("/upload/first.csv", &hr_file(1..=10))]);
    ok(&results[0], "first upload");
    s.wait_for_exactly(1);
    let Setup { env, server, key } = s;
    server.stop();

    // While it is down: a final name, and two names never picked up.
    let upload = upload_dir(&env, "hr");
    fs::write(upload.join("while-down.csv"), hr_file(1..=12)).expect("write while down");
    fs::write(upload.join(".hidden.csv"), hr_file(1..=1)).expect("write hidden");
    fs::write(upload.join("half.csv.part"), hr_file(1..=1)).expect("write part");

    let server = Server::start(&env);
    let runs = server.wait_for_exactly(&env, 2, RUN_TIMEOUT);
    assert_eq!(run_files(&runs), vec!["first.csv", "while-down.csv"]);
    assert_run(
        &runs[1],
        "while-down.csv",
        "applied",
        &[("added", 2), ("unchanged", 10)],
    );
    assert_eq!(env.exported_ids("hr").len(), 12);
    archived_name(&env, "hr", "while-down.csv");
    // Only the final name was taken.
    wait_for_upload_dir(&env, "hr", &[".hidden.csv", "half.csv.part"]);

    // And it still serves.
    let results = Client::key(server.port, USER, &key)
        .session(vec![put("/upload/third.csv", &hr_file(1..=13))]);
    ok(&results[0], "upload after the restart");
    let runs = server.wait_for_exactly(&env, 3, RUN_TIMEOUT);
    assert_eq!(runs[2]["file"], "third.csv");
    server.stop();
}

#[test]
fn the_command_line_works_while_serving_and_after() {
    let s = Setup::standard();
    let env = &s.env;

    // import, runs list/show, recipients export, groups list: forwarded to
    // the running server, never a lock error.
    let run = env.import_text("hr", "cli.csv", hr_file(1..=100));
    assert_eq!(
        run.state(),
        "applied",
        "import while serving: {:#}",
        run.json
    );
    assert!(
        !run.stderr.to_lowercase().contains("lock"),
        "{}",
        run.stderr
    );
    let runs = env.runs_list();
    assert_eq!(runs.len(), 1);
    let shown = env.run_show(&run.id());
    assert_eq!(shown["file"], "cli.csv");
    assert_eq!(env.exported_ids("hr").len(), 100);
    assert_eq!(env.groups("hr").values().sum::<u64>(), 100);

    // An sFTP upload that removes too many is held; confirm it from the
    // command line while serving.
    let results = s
        .key_client()
        .session(vec![put("/upload/cut.csv", &hr_file(21..=100))]);
    ok(&results[0], "upload cut.csv");
    let runs = s.wait_for_exactly(2);
    assert_run(&runs[1], "cut.csv", "held", &[("removed", 20)]);
    assert_eq!(
        env.exported_ids("hr").len(),
        100,
        "a held run changes nothing"
    );
    let held = run_id_of(&runs[1]);
    let out = env.run(&["runs", "confirm", &held, "--by", "alice", "--json"]);
    assert_eq!(out.code, 0, "runs confirm while serving: {out:#?}");
    assert_eq!(out.json("runs confirm")["state"], "applied");
    assert_eq!(env.exported_ids("hr").len(), 80);

    // And one rejected.
    let results = s
        .key_client()
        .session(vec![put("/upload/cut2.csv", &hr_file(41..=100))]);
    ok(&results[0], "upload cut2.csv");
    let runs = s.wait_for_exactly(3);
    assert_eq!(runs[2]["state"], "held", "{:#}", runs[2]);
    let out = env.run(&["runs", "reject", &run_id_of(&runs[2]), "--by", "bob"]);
    assert_eq!(out.code, 0, "runs reject while serving: {out:#?}");
    assert_eq!(env.run_show(&run_id_of(&runs[2]))["state"], "rejected");
    assert_eq!(env.exported_ids("hr").len(), 80);

    // accounts while serving.
    assert_eq!(accounts_list(env).len(), 1);

    let runs_while = oldest_first(env.runs_list());
    let export_while = env.export("hr");
    let Setup { env, server, .. } = s;
    server.stop();

    // Without a server the command line opens the store itself and sees
    // the same.
    assert_eq!(oldest_first(env.runs_list()), runs_while);
    assert_eq!(env.export("hr"), export_while);
    assert_eq!(accounts_list(&env).len(), 1);
}

/// The account called `name` in `accounts list --json`.
#[track_caller]
fn account<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no account {name} in {list:#?}"))
}

#[track_caller]
fn assert_usage_error(out: &Out, what: &str) {
    assert_eq!(out.code, 2, "{what} is a usage error (exit 2): {out:#?}");
    assert!(
        !out.stderr.trim().is_empty(),
        "{what}: a message on stderr: {out:#?}"
    );
}

#[test]
fn accounts_are_added_listed_changed_and_removed() {
    let env = sftp_env_with(&[Feed::hr("hr"), Feed::hr("crm")], &[], &[]);
    let k1 = keygen(&env, "k1");
    let k2 = keygen_with(&env, "k2", &["-t", "rsa", "-b", "2048"]);
    let fp1 = key_fingerprint(&env, &pub_of(&k1));
    let fp2 = key_fingerprint(&env, &pub_of(&k2));
    let alice_pw = "alice-Secret-4711";

    add_account(&env, "alice", "hr", Some(alice_pw), &[], &[]);
    let out = env.run(&[
        "accounts",
        "add",
        "bob",
        "--feed",
        "crm",
        "--generate-password",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let bob_pw = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("--generate-password prints `password: PW`: {out:#?}"))
        .trim()
        .to_string();
    assert!(bob_pw.len() >= 12, "{bob_pw:?}");
    add_account(
        &env,
        "carol",
        "hr",
        None,
        &[&pub_of(&k1), &pub_of(&k2)],
        &["127.0.0.1/32", "10.0.0.0/8", "::1"],
    );

    let list = accounts_list(&env);
    assert_eq!(list.len(), 3, "{list:#?}");
    let alice = account(&list, "alice");
    assert_eq!(alice["feed"], "hr");
    assert_eq!(alice["password"], true);
    assert_eq!(alice["keys"], json!([]));
    assert_eq!(alice["allow"], json!([]));
    assert!(alice["last_login"].is_null(), "{alice:#}");
    let bob = account(&list, "bob");
    assert_eq!(bob["feed"], "crm");
    assert_eq!(bob["password"], true);
    let carol = account(&list, "carol");
    assert_eq!(carol["password"], false);
    let fps: Vec<&str> = carol["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| {
            assert!(
                k["algorithm"].as_str().is_some_and(|a| !a.is_empty()),
                "a key's algorithm: {k:#}"
            );
            k["fingerprint"].as_str().expect("fingerprint")
        })
        .collect();
    assert_eq!(fps, vec![fp1.as_str(), fp2.as_str()], "{carol:#}");
    let allow: Vec<&str> = carol["allow"]
        .as_array()
        .expect("allow array")
        .iter()
        .map(|a| a.as_str().expect("allow entry"))
        .collect();
    assert_eq!(allow.len(), 3, "{carol:#}");
    assert!(
        allow.contains(&"127.0.0.1/32") && allow.contains(&"10.0.0.0/8"),
        "{allow:?}"
    );

    // Passwords are stored hashed, never in clear.
    assert_not_stored_in_clear(&env.data_dir, alice_pw);
    assert_not_stored_in_clear(&env.data_dir, &bob_pw);

    // Usage errors: exit 2, a message, nothing changed.
    let garbage = env.root.join("keys").join("garbage.pub");
    fs::write(&garbage, "this is not a public key\n").expect("write garbage key");
    let k1_pub = pub_of(&k1).display().to_string();
    let missing = env.root.join("keys").join("missing.pub");
    let missing = missing.to_str().expect("utf-8");
    let garbage = garbage.to_str().expect("utf-8");
    for (args, what) in [
        (
            vec![
                "accounts",
                "add",
                "dave",
                "--feed",
                "nosuch",
                "--generate-password",
            ],
            "unknown feed",
        ),
        (
            vec!["accounts", "add", "eve", "--feed", "hr", "--key", garbage],
            "a bad key file",
        ),
        (
            vec!["accounts", "add", "eve", "--feed", "hr", "--key", missing],
            "a missing key file",
        ),
        (
            vec![
                "accounts",
                "add",
                "eve",
                "--feed",
                "hr",
                "--generate-password",
                "--allow",
                "10.0.0.0/33",
            ],
            "a bad CIDR",
        ),
        (
            vec!["accounts", "password", "nobody", "--generate-password"],
            "unknown account",
        ),
        (
            vec!["accounts", "keys", "add", "nobody", &k1_pub],
            "unknown account",
        ),
        (
            vec!["accounts", "keys", "add", "alice", garbage],
            "a bad key file",
        ),
        (
            vec!["accounts", "allow", "add", "alice", "300.1.2.3"],
            "a bad address",
        ),
        (
            vec!["accounts", "allow", "add", "alice", "10.0.0.0/33"],
            "a bad CIDR",
        ),
        (
            vec!["accounts", "allow", "add", "nobody", "10.0.0.0/8"],
            "unknown account",
        ),
        (vec!["accounts", "remove", "nobody"], "unknown account"),
    ] {
        let out = env.run(&args);
        assert_usage_error(&out, &format!("{} ({what})", args.join(" ")));
    }
    let out = env.run(&[
        "accounts",
        "add",
        "alice",
        "--feed",
        "hr",
        "--generate-password",
    ]);
    assert_ne!(out.code, 0, "adding an existing account again: {out:#?}");
    assert_eq!(accounts_list(&env), list, "failed commands changed nothing");

    // Changes.
    let out = run_with_stdin(
        &env,
        &["accounts", "password", "alice", "--password-stdin"],
        "alice-New-0815\n",
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["accounts", "password", "carol", "--generate-password"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("password: ")),
        "{out:#?}"
    );
    let out = env.run(&[
        "accounts",
        "keys",
        "add",
        "alice",
        &pub_of(&k1).display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["accounts", "keys", "remove", "carol", &fp1]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["accounts", "allow", "add", "alice", "192.168.0.0/16"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["accounts", "allow", "remove", "carol", "10.0.0.0/8"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["accounts", "remove", "bob"]);
    assert_eq!(out.code, 0, "{out:#?}");

    let list = accounts_list(&env);
    assert_eq!(list.len(), 2, "{list:#?}");
    let alice = account(&list, "alice");
    assert_eq!(alice["keys"][0]["fingerprint"], fp1.as_str());
    assert_eq!(alice["allow"], json!(["192.168.0.0/16"]));
    let carol = account(&list, "carol");
    assert_eq!(carol["password"], true);
    assert_eq!(carol["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(carol["keys"][0]["fingerprint"], fp2.as_str());
    assert_eq!(
        carol["allow"].as_array().map(Vec::len),
        Some(2),
        "{carol:#}"
    );
    assert_not_stored_in_clear(&env.data_dir, "alice-New-0815");
}

#[test]
fn account_changes_take_effect_while_serving() {
    // Plenty of failures allowed: this test fails logins on purpose.
    let env = sftp_env_with(&[Feed::hr("hr")], &[], &["lockout_failures = 50"]);
    add_account(&env, "alice", "hr", Some("alice-First-1"), &[], &[]);
    let server = Server::start(&env);
    let port = server.port;
    let key = keygen(&env, "alice-key");

    ok(
        &Client::password(port, "alice", "alice-First-1").try_login(),
        "first password",
    );
    let list = accounts_list(&env);
    assert!(
        account(&list, "alice")["last_login"].is_string(),
        "last_login is set after a login: {list:#?}"
    );

    // A new password replaces the old one at once.
    let out = run_with_stdin(
        &env,
        &["accounts", "password", "alice", "--password-stdin"],
        "alice-Second-2\n",
    );
    assert_eq!(out.code, 0, "{out:#?}");
    refused(
        &Client::password(port, "alice", "alice-First-1").try_login(),
        "the old password",
    );
    ok(
        &Client::password(port, "alice", "alice-Second-2").try_login(),
        "the new password",
    );

    // Keys added and removed.
    refused(
        &Client::key(port, "alice", &key).try_login(),
        "a key not yet added",
    );
    let out = env.run(&[
        "accounts",
        "keys",
        "add",
        "alice",
        &pub_of(&key).display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    ok(
        &Client::key(port, "alice", &key).try_login(),
        "the added key",
    );
    let fp = key_fingerprint(&env, &pub_of(&key));
    let out = env.run(&["accounts", "keys", "remove", "alice", &fp]);
    assert_eq!(out.code, 0, "{out:#?}");
    refused(
        &Client::key(port, "alice", &key).try_login(),
        "the removed key",
    );

    // A new account works at once.
    let out = env.run(&[
        "accounts",
        "add",
        "bob",
        "--feed",
        "hr",
        "--generate-password",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let bob_pw = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password line")
        .trim()
        .to_string();
    let results = Client::password(port, "bob", &bob_pw)
        .session(vec![put("/upload/bob.csv", &hr_file(1..=3))]);
    ok(&results[0], "bob's upload");
    let runs = server.wait_for_exactly(&env, 1, RUN_TIMEOUT);
    assert_eq!(runs[0]["file"], "bob.csv");

    // Removed: refused.
    let out = env.run(&["accounts", "remove", "alice"]);
    assert_eq!(out.code, 0, "{out:#?}");
    refused(
        &Client::password(port, "alice", "alice-Second-2").try_login(),
        "a removed account",
    );
    server.stop();
}

#[test]
fn archived_files_and_error_reports_older_than_the_retention_are_deleted() {
    let s = Setup::new(&["retention = \"8s\""], &[]);
    let mut first = hr_file(1..=5);
    first += "E99999,,Nameless,nobody@example.com,,,Sales,Active\n";
    let results = s
        .key_client()
        .session(vec![put("/upload/first.csv", &first)]);
    ok(&results[0], "first upload");
    let runs = s.wait_for_exactly(1);
    assert_eq!(runs[0]["flagged"], 1, "{:#}", runs[0]);
    let first_archived = archived_name(&s.env, "hr", "first.csv");
    let first_report = s.env.error_report_path("hr", "first.csv");
    assert!(first_report.is_file());
    let first_done = Instant::now();

    // Past the retention period, a newer run; then the old files go while
    // the new ones stay.
    thread::sleep(Duration::from_secs(9).saturating_sub(first_done.elapsed()));
    let mut second = hr_file(1..=5);
    second += "E99998,,Nameless,nobody2@example.com,,,Sales,Active\n";
    let results = s
        .key_client()
        .session(vec![put("/upload/second.csv", &second)]);
    ok(&results[0], "second upload");
    s.wait_for_exactly(2);
    let second_done = Instant::now();
    let deadline = second_done + Duration::from_secs(6);
    loop {
        let archive = names_in(&archive_dir(&s.env, "hr"));
        let gone = !archive.contains(&first_archived) && !first_report.exists();
        if gone {
            assert!(
                second_done.elapsed() < Duration::from_secs(8),
                "checked too late to tell old from new"
            );
            archived_name(&s.env, "hr", "second.csv");
            assert!(s.env.error_report_path("hr", "second.csv").is_file());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archived files and error reports older than `retention = \"8s\"` are still there \
             6s after the next run: archive {archive:?}, errors {:?}",
            names_in(&errors_dir(&s.env, "hr"))
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigterm_stops_accepting_and_exits_cleanly_with_a_client_connected() {
    let s = Setup::standard();
    let client = s.key_client();
    // A client that logs in and then sits idle.
    let holder = thread::spawn(move || {
        client.run(vec![
            json!({"op": "connect"}),
            json!({"op": "sleep", "seconds": 40}),
            json!({"op": "listdir", "path": "/"}),
        ])
    });
    thread::sleep(Duration::from_secs(4));
    let Setup { server, env, .. } = s;
    let port = server.port;
    server.signal("TERM");
    let signalled = Instant::now();

    // A new connection after SIGTERM is not served.
    let probe = Client::key(port, USER, &env.root.join("keys/hr-up-key"))
        .run(vec![json!({"op": "idle_tcp", "seconds": 30})]);
    if probe[0]["ok"] == true {
        assert_eq!(
            probe[0]["value"]["banner"], "",
            "a connection made after SIGTERM was served: {:#}",
            probe[0]
        );
    }
    server.wait_clean_exit("TERM");
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "serve took {:?} to exit on SIGTERM with an idle client connected",
        signalled.elapsed()
    );
    let results = holder.join().expect("client thread");
    ok(&results[0], "the client had logged in");
    refused(&results[2], "the idle session after the server stopped");
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the server's threads")
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|name| name.starts_with(prefix))
        })
        .count()
}

#[test]
fn idle_command_line_connections_cannot_block_the_control_socket() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let env = sftp_env();
    let server = Server::start(&env);
    let socket = env.data_dir.join("flagsync.sock");
    let connect = || UnixStream::connect(&socket).expect("connect to the control socket");

    // A client that connects and sends nothing does not hold up others.
    let _idle = connect();
    let out = env.run(&["runs", "list", "--json"]);
    assert_eq!(out.code, 0, "a command beside an idle client: {out:#?}");

    // 100 more: at most 8 are served at once, each on a thread; the rest
    // are told at once that the server is busy.
    let started = Instant::now();
    let idle: Vec<UnixStream> = (0..100).map(|_| connect()).collect();
    thread::sleep(Duration::from_millis(500));
    let threads = threads_named(server.pid(), "control-client");
    assert!(
        threads <= 8,
        "{threads} threads for idle command-line clients"
    );
    let mut answer = String::new();
    let mut turned_away = &idle[99];
    turned_away
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = turned_away.read_to_string(&mut answer);
    assert!(
        answer.contains("busy"),
        "the answer to one too many: {answer:?}"
    );
    let out = env.run(&["runs", "list", "--json"]);
    assert_eq!(out.code, 1, "a command while the socket is full: {out:#?}");
    assert!(
        out.stderr.contains("the server is busy") && out.stderr.contains("try again"),
        "{out:#?}"
    );

    // Clients that send nothing are dropped after 30 s: the socket serves
    // again though they never closed.
    thread::sleep(Duration::from_secs(32).saturating_sub(started.elapsed()));
    let out = env.run(&["runs", "list", "--json"]);
    assert_eq!(
        out.code, 0,
        "a command once the idle clients timed out: {out:#?}"
    );
    drop(idle);
}

#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    require_tool("prlimit");
    let env = sftp_env();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=1024:4096", "--"])
        .arg(BIN)
        .arg("--config")
        .arg(&env.config)
        .arg("serve")
        .current_dir(&env.root)
        .env_remove("FLAGSYNC_CONFIG")
        .env_remove("RUST_LOG");
    let server = Server::spawn(cmd, "prlimit --nofile=1024:4096 flagsync serve");
    let limits = fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in {limits}"));
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        numbers,
        ["4096", "4096"],
        "soft and hard limit: {open_files}"
    );
}

/// The server (like every command) asks Linux for ordinary pages: with
/// transparent huge pages each first touch of memory zeroes 2 MiB, which
/// made runs up to twice as slow on a VM (see main.rs).
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let env = sftp_env();
    let server = Server::start(&env);
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line (Linux 5.0 or later has it): {status}"));
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    server.stop();
}
