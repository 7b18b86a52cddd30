//! Hostile clients: path traversal in every form we know, NUL bytes,
//! symlinks and hard links, a second loopback address outside the
//! allow-list, password guessing, exec/shell/port forwarding, oversized
//! and broken uploads, too many sessions, idle connections. Each test
//! checks that nothing outside the jail was read or changed and that the
//! store holds only what legitimate uploads put there.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::server::*;
use crate::util::*;

/// What the file next to the data folder holds.
const SECRET: &str = "TOP-SECRET-7f3a9c-do-not-leak";

/// A file next to the data folder (outside any jail), owner-only.
fn plant_secret(env: &Env) -> PathBuf {
    let path = env.root.join("secret.txt");
    fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    path
}

/// Panics if a step's value holds anything from outside the jail.
#[track_caller]
fn assert_no_leak(result: &Value, what: &str) {
    let text = result["value"].to_string();
    for marker in [
        SECRET,
        "root:x:0:0",
        "redb\\u001a",
        "BEGIN OPENSSH PRIVATE KEY",
    ] {
        assert!(
            !text.contains(marker),
            "{what} read something from outside the jail ({marker:?}): {result:#}"
        );
    }
}

/// Everything under the temp dir except the data folder and what the
/// client tools keep (their HOME, batch files): path → content.
fn outside_tree(env: &Env) -> BTreeMap<String, Option<Vec<u8>>> {
    let skip = |path: &str| {
        ["data", "home"]
            .iter()
            .any(|d| path == *d || path.starts_with(&format!("{d}/")))
            || path.starts_with("batch-")
    };
    snapshot(&env.root)
        .into_iter()
        .filter(|(path, _)| !skip(path))
        .collect()
}

/// Every path under `dir` that is a symlink.
fn symlinks_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.file_type().is_symlink() {
            found.push(path);
        } else if meta.is_dir() {
            found.extend(symlinks_under(&path));
        }
    }
    found
}

/// The setup every jail test starts from: a secret next to the data
/// folder, a server, and a snapshot of what must not change.
struct Jail {
    s: Setup,
    secret: PathBuf,
    secret_mtime: SystemTime,
    outside: BTreeMap<String, Option<Vec<u8>>>,
    data_top: Vec<String>,
    feed_top: Vec<String>,
}

impl Jail {
    fn new() -> Jail {
        let s = Setup::standard();
        let secret = plant_secret(&s.env);
        // Let the client tools create their HOME, and a first login the
        // feed's folders, before the snapshot.
        fs::create_dir_all(s.env.root.join("home")).expect("home");
        let results = s
            .key_client()
            .session(vec![json!({"op": "listdir", "path": "/upload"})]);
        ok(&results[0], "a first login");
        let secret_mtime = fs::metadata(&secret)
            .and_then(|m| m.modified())
            .expect("mtime");
        let outside = outside_tree(&s.env);
        let data_top = names_in(&s.env.data_dir);
        assert!(
            data_top.contains(&"flagsync.redb".to_string()),
            "the store is {}/flagsync.redb: {data_top:?}",
            s.env.data_dir.display()
        );
        let feed_top = names_in(&s.env.data_dir.join("hr"));
        Jail {
            s,
            secret,
            secret_mtime,
            outside,
            data_top,
            feed_top,
        }
    }

    fn root(&self) -> String {
        self.s.env.root.display().to_string()
    }

    fn data(&self) -> String {
        self.s.env.data_dir.display().to_string()
    }

    /// Nothing outside the feed's upload/ changed; upload/ holds exactly
    /// `upload` (sorted); no symlink anywhere; nothing was imported.
    #[track_caller]
    fn assert_untouched(&self, upload: &[&str]) {
        let env = &self.s.env;
        let meta = fs::metadata(&self.secret).expect("the secret file still exists");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o600,
            "secret.txt mode changed"
        );
        assert_eq!(
            meta.modified().expect("mtime"),
            self.secret_mtime,
            "secret.txt mtime changed"
        );
        assert_same_tree(&self.outside, &outside_tree(env), "outside the data folder");
        assert_eq!(
            names_in(&env.data_dir),
            self.data_top,
            "the top of the data folder changed"
        );
        assert_eq!(
            names_in(&env.data_dir.join("hr")),
            self.feed_top,
            "the feed's folder has a new entry"
        );
        for (path, content) in snapshot(&env.data_dir.join("hr")) {
            assert!(
                content.is_none() || path.starts_with("upload/"),
                "a file outside upload/ in the feed's folder: {path}"
            );
        }
        let mut upload: Vec<String> = upload.iter().map(|s| s.to_string()).collect();
        upload.sort();
        assert_eq!(names_in(&upload_dir(env, "hr")), upload, "upload/");
        assert_eq!(
            symlinks_under(&env.root),
            Vec::<PathBuf>::new(),
            "a symlink was created"
        );
        for (path, _) in snapshot(&env.root) {
            assert!(!path.contains("evil"), "an attacker's file exists: {path}");
        }
        assert_eq!(env.runs_list().len(), 0, "nothing was imported");
    }

    /// A legitimate upload after the attacks is the first and only run.
    #[track_caller]
    fn assert_still_serves(&self) {
        let results = self
            .s
            .key_client()
            .session(vec![put("/upload/after.csv", &hr_file(1..=3))]);
        ok(&results[0], "a normal upload after the attacks");
        let runs = self.s.wait_for_exactly(1);
        assert_run(&runs[0], "after.csv", "applied", &[("added", 3)]);
    }
}

#[test]
fn traversal_cannot_read_outside_the_jail() {
    let j = Jail::new();
    let (root, data) = (j.root(), j.data());
    let files = [
        "../flagsync.redb".to_string(),
        "../../secret.txt".into(),
        "../../../secret.txt".into(),
        "/../flagsync.redb".into(),
        "/../../secret.txt".into(),
        "/../../../../../../../../etc/passwd".into(),
        "../../../../../../../../etc/passwd".into(),
        "/upload/../../flagsync.redb".into(),
        "/upload/../../../secret.txt".into(),
        "upload/../../secret.txt".into(),
        "upload/../../../etc/passwd".into(),
        "//upload//..//..//secret.txt".into(),
        "//upload//..//..//..//etc//passwd".into(),
        "/./../flagsync.redb".into(),
        "./../../secret.txt".into(),
        "/upload/./.././../secret.txt".into(),
        "~/../flagsync.redb".into(),
        "~/../../secret.txt".into(),
        "~root/.bashrc".into(),
        "..\\flagsync.redb".into(),
        "..\\..\\secret.txt".into(),
        "/upload/..\\..\\..\\secret.txt".into(),
        "/upload/%2e%2e/%2e%2e/secret.txt".into(),
        "/etc/passwd".into(),
        format!("{data}/flagsync.redb"),
        format!("{root}/secret.txt"),
        format!("{data}/hr/upload/../../flagsync.redb"),
        format!("{data}/ssh_host_ed25519_key"),
        format!("/upload/../..{root}/secret.txt"),
        format!("/upload/{root}/secret.txt"),
    ];
    let mut steps = Vec::new();
    for path in &files {
        steps.push(json!({"op": "get", "path": path}));
        steps.push(json!({"op": "stat", "path": path}));
        steps.push(json!({"op": "lstat", "path": path}));
    }
    let folders = [
        "..".to_string(),
        "../..".into(),
        "/..".into(),
        "/../..".into(),
        "/upload/../..".into(),
        "//upload//..//..".into(),
        "upload/../../..".into(),
        "~".into(),
        "~/..".into(),
        "/etc".into(),
        "/tmp".into(),
        root.clone(),
        data.clone(),
        format!("{data}/hr"),
    ];
    for path in &folders {
        steps.push(json!({"op": "listdir", "path": path}));
        steps.push(json!({"op": "realpath", "path": path}));
    }
    let results = j.s.key_client().session(steps);

    for (i, path) in files.iter().enumerate() {
        for (k, op) in ["get", "stat", "lstat"].iter().enumerate() {
            let r = &results[i * 3 + k];
            assert_no_leak(r, &format!("{op} {path:?}"));
            refused(r, &format!("{op} {path:?} (a file outside the jail)"));
        }
    }
    let jail_names: Vec<&str> = vec!["archive", "errors", "upload"];
    for (i, path) in folders.iter().enumerate() {
        let listed = &results[files.len() * 3 + i * 2];
        if listed["ok"] == true {
            for name in name_set(&listed["value"]) {
                assert!(
                    jail_names.contains(&name.as_str()),
                    "listdir {path:?} shows {name:?} from outside the jail: {listed:#}"
                );
            }
        }
        let real = &results[files.len() * 3 + i * 2 + 1];
        if real["ok"] == true {
            let answer = real["value"].as_str().unwrap_or_default();
            assert!(
                answer.starts_with('/'),
                "realpath {path:?} = {answer:?} is not absolute"
            );
            if path.contains("..") && !path.contains(&root) {
                assert_eq!(answer, "/", "realpath {path:?} clamps at the jail's root");
            }
        }
    }
    j.assert_untouched(&[]);
    j.assert_still_serves();
}

#[test]
fn traversal_cannot_write_or_change_anything_outside_the_jail() {
    let j = Jail::new();
    let (root, data) = (j.root(), j.data());
    let tmp_target = format!("/tmp/flagsync-evil-{}-{}.csv", std::process::id(), unique());
    let evil = hr_file(1..=2);

    let writes = [
        "../evil.csv".to_string(),
        "../../evil.csv".into(),
        "../../../evil.csv".into(),
        "/../evil.csv".into(),
        "/../../evil.csv".into(),
        "/upload/../../evil.csv".into(),
        "/upload/../../../evil.csv".into(),
        "upload/../../evil.csv".into(),
        "//upload//..//..//evil.csv".into(),
        "/errors/../../evil.csv".into(),
        "~/evil.csv".into(),
        "~/../evil.csv".into(),
        "..\\evil.csv".into(),
        "/evil.csv".into(),
        format!("{root}/evil.csv"),
        format!("{data}/evil.csv"),
        format!("{data}/hr/evil.csv"),
        format!("{data}/hr/upload/../evil.csv"),
        tmp_target.clone(),
    ];
    let mut steps: Vec<Value> = writes.iter().map(|p| put(p, &evil)).collect();
    let secret_paths = [
        "../../secret.txt".to_string(),
        "/../../secret.txt".into(),
        "/upload/../../../secret.txt".into(),
        format!("{root}/secret.txt"),
    ];
    let store_paths = [
        "../flagsync.redb".to_string(),
        format!("{data}/flagsync.redb"),
    ];
    // Removing, renaming and changing attributes of what is outside.
    for path in secret_paths.iter().chain(&store_paths) {
        steps.push(json!({"op": "remove", "path": path}));
        steps.push(json!({"op": "chmod", "path": path, "mode": 0o777}));
        steps.push(json!({"op": "utime", "path": path, "times": [0, 0]}));
        steps.push(json!({"op": "rename", "src": path, "dst": "/upload/stolen.tmp"}));
        steps.push(json!({"op": "posix_rename", "src": path, "dst": "/upload/stolen2.tmp"}));
    }
    // Renaming an uploaded file out of the jail.
    steps.push(put("/upload/legit.tmp", &evil));
    let rename_targets = [
        "../../evil-renamed.csv".to_string(),
        "/../../evil-renamed.csv".into(),
        "/upload/../../evil-renamed.csv".into(),
        "//upload//..//..//..//evil-renamed.csv".into(),
        format!("{root}/evil-renamed.csv"),
        format!("{data}/evil-renamed.csv"),
    ];
    for target in &rename_targets {
        steps.push(json!({"op": "rename", "src": "/upload/legit.tmp", "dst": target}));
        steps.push(json!({"op": "posix_rename", "src": "/upload/legit.tmp", "dst": target}));
    }
    // Folders outside.
    let dirs = [
        "../../evil-dir".to_string(),
        "/../../evil-dir".into(),
        "/upload/../../evil-dir".into(),
        "/upload/evil-dir".into(),
        format!("{root}/evil-dir"),
        format!("{data}/evil-dir"),
    ];
    for dir in &dirs {
        steps.push(json!({"op": "mkdir", "path": dir}));
    }
    for dir in [
        "../../in",
        "/../../in",
        &format!("{root}/in"),
        "/../hr",
        "../../data",
    ] {
        steps.push(json!({"op": "rmdir", "path": dir}));
    }
    let results = j.s.key_client().session(steps);

    let mut i = 0;
    for path in &writes {
        refused(&results[i], &format!("upload to {path:?}"));
        i += 1;
    }
    for path in secret_paths.iter().chain(&store_paths) {
        for op in ["remove", "chmod", "utime", "rename", "posix_rename"] {
            // chmod/utime may be accepted and ignored; the checks on disk
            // below say whether anything happened.
            if op == "remove" || op.contains("rename") {
                refused(&results[i], &format!("{op} {path:?}"));
            }
            i += 1;
        }
    }
    ok(&results[i], "put /upload/legit.tmp");
    i += 1;
    for target in &rename_targets {
        refused(&results[i], &format!("rename legit.tmp to {target:?}"));
        refused(
            &results[i + 1],
            &format!("posix-rename legit.tmp to {target:?}"),
        );
        i += 2;
    }
    for dir in &dirs {
        refused(&results[i], &format!("mkdir {dir:?}"));
        i += 1;
    }
    assert!(
        j.s.env.root.join("in").is_dir(),
        "rmdir reached the input folder"
    );

    assert!(!Path::new(&tmp_target).exists(), "{tmp_target} was written");
    assert!(
        j.s.env.data_dir.join("flagsync.redb").is_file(),
        "the store is gone"
    );
    j.assert_untouched(&["legit.tmp"]);
    j.assert_still_serves();
}

#[test]
fn nul_bytes_symlinks_and_hard_links_are_refused() {
    let j = Jail::new();
    let (root, data) = (j.root(), j.data());
    let file = hr_file(1..=2);
    let steps = vec![
        put("/upload/legit.tmp", &file),
        // 1: NUL bytes (sent raw by paramiko)
        put("/upload/nul\u{0}.csv", &file),
        put("/upload/x.tmp\u{0}/../../../evil.csv", &file),
        json!({"op": "get", "path": "../../secret.txt\u{0}.csv"}),
        json!({"op": "get", "path": "/upload/legit.tmp\u{0}/../../../secret.txt"}),
        json!({"op": "stat", "path": "/upload\u{0}/../../secret.txt"}),
        json!({"op": "rename", "src": "/upload/legit.tmp", "dst": "/upload/evil\u{0}.csv"}),
        json!({"op": "mkdir", "path": "/upload/evil\u{0}dir"}),
        // 8: symlinks
        json!({"op": "symlink", "target": "/etc/passwd", "path": "/upload/pw.tmp"}),
        json!({"op": "symlink", "target": "../../secret.txt", "path": "/upload/s1.tmp"}),
        json!({"op": "symlink", "target": format!("{root}/secret.txt"), "path": "/upload/s2.tmp"}),
        json!({"op": "symlink", "target": format!("{data}/flagsync.redb"), "path": "/upload/s3.tmp"}),
        json!({"op": "symlink", "target": "/upload/legit.tmp", "path": "/upload/s4.tmp"}),
        json!({"op": "symlink", "target": "/", "path": "/upload/rootlink"}),
        json!({"op": "symlink", "target": "/upload/legit.tmp", "path": "../../evil-link"}),
        // 15: hard links (OpenSSH's hardlink@openssh.com extension)
        json!({"op": "hardlink", "src": "../../secret.txt", "dst": "/upload/h1.tmp"}),
        json!({"op": "hardlink", "src": format!("{root}/secret.txt"), "dst": "/upload/h2.tmp"}),
        json!({"op": "hardlink", "src": format!("{data}/flagsync.redb"), "dst": "/upload/h3.tmp"}),
        json!({"op": "hardlink", "src": "/upload/legit.tmp", "dst": "../../evil-hard"}),
        json!({"op": "hardlink", "src": "/upload/legit.tmp", "dst": format!("{root}/evil-hard2")}),
        // 20: reading back what would have been created
        json!({"op": "get", "path": "/upload/pw.tmp"}),
        json!({"op": "get", "path": "/upload/s1.tmp"}),
        json!({"op": "get", "path": "/upload/s2.tmp"}),
        json!({"op": "get", "path": "/upload/h1.tmp"}),
        json!({"op": "get", "path": "/upload/h2.tmp"}),
        json!({"op": "get", "path": "/upload/h3.tmp"}),
        json!({"op": "listdir", "path": "/upload/rootlink"}),
        json!({"op": "readlink", "path": "/upload/s1.tmp"}),
        // 28
        json!({"op": "listdir", "path": "/upload"}),
    ];
    let n = steps.len();
    let results = j.s.key_client().session(steps);
    ok(&results[0], "put legit.tmp");
    for (i, r) in results.iter().enumerate().take(n - 1).skip(1) {
        assert_no_leak(r, &format!("step {i}"));
        refused(
            r,
            &format!("step {i} (NUL byte, symlink or hard link): {r}"),
        );
    }
    assert_eq!(
        ok(&results[n - 1], "listdir /upload"),
        json!(["legit.tmp"]),
        "only the legitimate file is in /upload"
    );
    j.assert_untouched(&["legit.tmp"]);
    j.assert_still_serves();
}

#[test]
fn curl_and_openssh_traversal_cannot_leave_the_jail() {
    let j = Jail::new();
    let (root, data) = (j.root(), j.data());
    let port = j.s.server.port;
    let env = &j.s.env;

    // curl: --path-as-is sends the dots as typed; /~/ is curl's "home".
    let urls = [
        format!("sftp://{HOST}:{port}/../../secret.txt"),
        format!("sftp://{HOST}:{port}/upload/../../../secret.txt"),
        format!("sftp://{HOST}:{port}/~/../../secret.txt"),
        format!("sftp://{HOST}:{port}/~/../flagsync.redb"),
        format!("sftp://{HOST}:{port}/%2e%2e/%2e%2e/secret.txt"),
        format!("sftp://{HOST}:{port}{data}/flagsync.redb"),
        format!("sftp://{HOST}:{port}{root}/secret.txt"),
        format!("sftp://{HOST}:{port}/etc/passwd"),
        format!("sftp://{HOST}:{port}//etc/passwd"),
    ];
    for url in &urls {
        let mut cmd = tool(env, "curl");
        cmd.args(["-sS", "-k", "--path-as-is", "--user"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg(url);
        let out = run_tool(cmd, "curl get", None, TOOL_TIMEOUT);
        assert!(
            !out.stdout.contains(SECRET)
                && !out.stdout.contains("root:x:0:0")
                && !out.stdout.starts_with("redb"),
            "curl read {url} from outside the jail: {out:#?}"
        );
        assert_ne!(out.code, 0, "curl {url} should fail: {out:#?}");
    }
    let evil = env.input("evil.csv", hr_file(1..=2));
    for url in [
        format!("sftp://{HOST}:{port}/../../evil.csv"),
        format!("sftp://{HOST}:{port}/upload/../../evil.csv"),
        format!("sftp://{HOST}:{port}{root}/evil2.csv"),
    ] {
        let mut cmd = tool(env, "curl");
        cmd.args(["-sS", "-k", "--path-as-is", "--user"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg("-T")
            .arg(&evil)
            .arg(&url);
        let out = run_tool(cmd, "curl put", None, TOOL_TIMEOUT);
        assert_ne!(out.code, 0, "curl upload to {url} should fail: {out:#?}");
    }
    // --ftp-create-dirs makes curl send mkdir for missing folders.
    let mut cmd = tool(env, "curl");
    cmd.args(["-sS", "-k", "--ftp-create-dirs", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("-T")
        .arg(&evil)
        .arg(format!("sftp://{HOST}:{port}/upload/newdir/x.tmp"));
    let out = run_tool(cmd, "curl --ftp-create-dirs", None, TOOL_TIMEOUT);
    assert_ne!(out.code, 0, "curl could create a folder: {out:#?}");
    fs::remove_file(&evil).expect("remove local evil.csv");

    // OpenSSH sftp: a leading '-' lets the batch go on after a failure.
    let local_evil = j.s.env.root.join("home").join("evil-local.csv");
    fs::write(&local_evil, hr_file(1..=2)).expect("write evil-local");
    let got = j.s.env.root.join("home").join("got");
    let batch = format!(
        "-get ../../secret.txt {got}1\n\
         -get /../../secret.txt {got}2\n\
         -get {root}/secret.txt {got}3\n\
         -get {data}/flagsync.redb {got}4\n\
         -get /../../../../../../etc/passwd {got}5\n\
         -put {local} ../../evil-ssh.csv\n\
         -put {local} /upload/../../evil-ssh2.csv\n\
         -put {local} {root}/evil-ssh3.csv\n\
         -ln -s /etc/passwd /upload/evil-link.tmp\n\
         -ln /upload/../../secret.txt /upload/evil-hard.tmp\n\
         -mkdir /upload/evil-dir\n\
         -mkdir ../../evil-dir\n\
         -chmod 777 ../../secret.txt\n\
         -rm ../../secret.txt\n\
         -rename ../../secret.txt /upload/evil-stolen.tmp\n\
         -get ../../../secret.txt {got}6\n\
         pwd\n",
        got = got.display(),
        local = local_evil.display()
    );
    let out = openssh_sftp_key(env, port, USER, &j.s.key, &batch);
    assert_eq!(out.code, 0, "the batch itself runs: {out:#?}");
    assert!(
        out.stdout.contains("Remote working directory: /upload"),
        "{out:#?}"
    );

    // Changing folder upwards stays at the jail's root.
    let out = openssh_sftp_key(
        env,
        port,
        USER,
        &j.s.key,
        "cd ../..\nls -1\npwd\ncd /upload/../../..\nls -1\n-cd ~\nls -1\n",
    );
    assert_eq!(out.code, 0, "cd .. in OpenSSH sftp: {out:#?}");
    for line in out.stdout.lines() {
        if line.starts_with("sftp>") || line.trim().is_empty() {
            continue;
        }
        assert!(
            ["archive", "errors", "upload", "Remote working directory: /"].contains(&line.trim()),
            "OpenSSH sftp sees {line:?} above the jail: {out:#?}"
        );
    }
    for i in 1..=6 {
        let path = PathBuf::from(format!("{}{i}", got.display()));
        if let Ok(content) = fs::read(&path) {
            let text = String::from_utf8_lossy(&content);
            assert!(
                !text.contains(SECRET) && !text.contains("root:x:0:0") && !text.starts_with("redb"),
                "OpenSSH sftp read outside the jail into {}",
                path.display()
            );
        }
        let _ = fs::remove_file(&path);
    }
    fs::remove_file(&local_evil).expect("remove evil-local");
    // Client tools left their HOME; the rest must be as it was.
    j.assert_untouched(&[]);
    j.assert_still_serves();
}

#[test]
fn a_client_from_an_address_no_account_allows_is_refused_before_authentication() {
    // Enough failures allowed that the refusals here never lock 127.0.0.2
    // out.
    let env = sftp_env_with(&[Feed::hr("hr")], &[], &["lockout_failures = 20"]);
    let key = keygen(&env, "local-key");
    add_account(
        &env,
        "local",
        "hr",
        None,
        &[&pub_of(&key)],
        &["127.0.0.1/32"],
    );
    let server = Server::start(&env);
    let local = Client::key(server.port, "local", &key);

    ok(&local.try_login(), "login from 127.0.0.1 (allowed)");
    let r = local.clone().bind("127.0.0.2").try_login();
    refused(&r, "login from 127.0.0.2, which no account allows");
    assert!(
        r["stage"] == "tcp" || r["stage"] == "ssh",
        "a connection from an address no account allows is refused before authentication, \
         not at it: {r:#}"
    );

    // OpenSSH from the second address, with the right key.
    let batch = env.root.join("batch-ls.txt");
    fs::write(&batch, "ls /\n").expect("batch");
    let mut cmd = tool(&env, "sftp");
    cmd.args(ssh_options(server.port))
        .args(["-o", "BatchMode=yes", "-o", "BindAddress=127.0.0.2", "-i"])
        .arg(&key)
        .arg("-b")
        .arg(&batch)
        .arg(format!("local@{HOST}"));
    let out = run_tool(cmd, "sftp from 127.0.0.2", None, TOOL_TIMEOUT);
    assert_ne!(
        out.code, 0,
        "OpenSSH from 127.0.0.2 must be refused: {out:#?}"
    );
    assert!(!out.stdout.contains("upload"), "{out:#?}");

    // An account for any address, added while serving: 127.0.0.2 now gets
    // to authentication, where `local`'s own allow-list still refuses it.
    let out = run_with_stdin(
        &env,
        &[
            "accounts",
            "add",
            "open",
            "--feed",
            "hr",
            "--password-stdin",
        ],
        "open-Pass-1\n",
    );
    assert_eq!(out.code, 0, "accounts add while serving: {out:#?}");
    let open = Client::password(server.port, "open", "open-Pass-1").bind("127.0.0.2");
    ok(&open.try_login(), "login as `open` from 127.0.0.2");
    let r = local.clone().bind("127.0.0.2").try_login();
    refused(&r, "`local` from 127.0.0.2 (not in its allow-list)");

    // Allowing the second address lets it in, removing it again does not.
    let out = env.run(&["accounts", "allow", "add", "local", "127.0.0.2/32"]);
    assert_eq!(out.code, 0, "{out:#?}");
    ok(
        &local.clone().bind("127.0.0.2").try_login(),
        "`local` from 127.0.0.2 once allowed",
    );
    let out = env.run(&["accounts", "allow", "remove", "local", "127.0.0.2/32"]);
    assert_eq!(out.code, 0, "{out:#?}");
    refused(
        &local.clone().bind("127.0.0.2").try_login(),
        "`local` from 127.0.0.2 after the allow-list entry was removed",
    );
    ok(&local.try_login(), "`local` from 127.0.0.1 still");

    // Nothing was uploaded by anyone refused.
    assert_eq!(env.runs_list().len(), 0);
}

#[test]
fn repeated_failed_logins_lock_the_address_out_for_a_while() {
    let s = Setup::new(
        &[],
        &[
            "lockout_failures = 3",
            "lockout_window = \"10m\"",
            "lockout_duration = \"6s\"",
        ],
    );
    let port = s.server.port;
    let right = s.password_client();

    // Three failures: two wrong passwords and an unknown user.
    for client in [
        Client::password(port, USER, "guess-1"),
        Client::password(port, USER, "guess-2"),
        Client::password(port, "nobody", "guess-3"),
    ] {
        let r = client.try_login();
        refused(&r, "a wrong login");
    }

    // Now even the right password and the right key are refused from
    // 127.0.0.1 ...
    refused(
        &right.try_login(),
        "the right password from a locked-out address",
    );
    refused(
        &s.key_client().try_login(),
        "the right key from a locked-out address",
    );
    let out = openssh_sftp_password(&s.env, port, USER, PASSWORD, "ls /\n");
    assert_ne!(
        out.code, 0,
        "OpenSSH with the right password while locked out: {out:#?}"
    );
    let last_attempt = Instant::now();

    // ... while another address is not locked out.
    ok(
        &right.clone().bind("127.0.0.2").try_login(),
        "the right password from 127.0.0.2 (not locked out)",
    );

    // After lockout_duration, the right password works again.
    let wait = Duration::from_secs(7).saturating_sub(last_attempt.elapsed());
    thread::sleep(wait);
    let results = right.session(vec![put("/upload/after-lockout.csv", &hr_file(1..=2))]);
    ok(&results[0], "upload after the lockout ended");
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "after-lockout.csv", "applied", &[("added", 2)]);
}

#[test]
fn exec_shell_subsystems_and_port_forwarding_are_refused() {
    let s = Setup::standard();
    let port = s.server.port;
    let quick = Duration::from_secs(20);

    // OpenSSH: a command, a shell, another subsystem, sftp-server run as a
    // command (`sftp -s PATH` execs it), a remote forward.
    let ssh = |extra: &[&str], what: &str| {
        let mut cmd = tool(&s.env, "ssh");
        cmd.args(ssh_options(port))
            .args(["-o", "BatchMode=yes", "-i"])
            .arg(&s.key)
            .args(extra);
        run_tool(cmd, what, None, quick)
    };
    let target = format!("{USER}@{HOST}");
    let out = ssh(&["-T", &target, "echo", "pwned-$((6*7))"], "ssh exec");
    assert_ne!(out.code, 0, "exec must be refused: {out:#?}");
    assert!(!out.stdout.contains("pwned-42"), "exec ran: {out:#?}");
    assert!(
        !out.stderr.contains("timed out after"),
        "exec hung: {out:#?}"
    );

    let out = ssh(&["-T", &target], "ssh shell");
    assert_ne!(out.code, 0, "a shell must be refused: {out:#?}");
    assert!(
        !out.stderr.contains("timed out after"),
        "shell hung: {out:#?}"
    );

    let out = ssh(&["-T", "-s", &target, "shell"], "ssh subsystem shell");
    assert_ne!(
        out.code, 0,
        "a subsystem other than sftp must be refused: {out:#?}"
    );
    assert!(!out.stderr.contains("timed out after"), "{out:#?}");

    let out = ssh(
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:9",
            &target,
        ],
        "ssh -R",
    );
    assert_ne!(
        out.code, 0,
        "a remote port forward must be refused: {out:#?}"
    );
    assert!(
        !out.stderr.contains("timed out after"),
        "ssh -R hung: {out:#?}"
    );

    let batch = s.env.root.join("batch-ls.txt");
    fs::write(&batch, "ls /\n").expect("batch");
    let mut cmd = tool(&s.env, "sftp");
    cmd.args(ssh_options(port))
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&s.key)
        .args(["-s", "/usr/lib/openssh/sftp-server", "-b"])
        .arg(&batch)
        .arg(&target);
    let out = run_tool(cmd, "sftp -s /usr/lib/openssh/sftp-server", None, quick);
    assert_ne!(
        out.code, 0,
        "sftp-server as an exec must be refused: {out:#?}"
    );
    assert!(!out.stdout.contains("upload"), "{out:#?}");

    // paramiko on one connection: each request refused, sftp still works.
    let results = s.key_client().session(vec![
        json!({"op": "exec", "command": "echo pwned-$((6*7))"}),
        json!({"op": "shell"}),
        json!({"op": "direct_tcpip", "host": HOST, "port": port}),
        json!({"op": "tcpip_forward", "port": 0}),
        json!({"op": "listdir", "path": "/"}),
    ]);
    let exec = &results[0];
    if exec["ok"] == true {
        let v = &exec["value"];
        assert!(
            !v["stdout"]
                .as_str()
                .unwrap_or_default()
                .contains("pwned-42"),
            "exec ran: {exec:#}"
        );
        assert!(v["status"] != json!(0), "exec must not succeed: {exec:#}");
    }
    if results[1]["ok"] == true {
        assert!(
            !results[1]["value"]
                .as_str()
                .unwrap_or_default()
                .contains("flagsync-shell-42"),
            "a shell ran: {:#}",
            results[1]
        );
    }
    refused(&results[2], "a local port forward (direct-tcpip)");
    refused(&results[3], "a remote port forward (tcpip-forward)");
    assert_eq!(
        name_set(&ok(&results[4], "sftp after the refused requests")),
        ["archive", "errors", "upload"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(s.env.runs_list().len(), 0);
}

#[test]
fn a_connection_holds_a_few_channels_and_one_sftp_subsystem_at_a_time() {
    let mut s = Setup::standard();
    let init_realpath = "000000050100000003 0000000a1000000009000000012e".replace(' ', "");
    let results = s.key_client().run(vec![
        json!({"op": "connect"}),
        // Channels opened and closed give their places back.
        json!({"op": "churn_channels", "count": 200}),
        // 2: beside the sftp channel, three more at once, no more.
        json!({"op": "open_channels", "count": 10}),
        json!({"op": "close_channels"}),
        // 4: a second sftp subsystem while the first runs is refused ...
        json!({"op": "raw_sftp", "data_hex": init_realpath}),
        // ... and the first still serves.
        json!({"op": "listdir", "path": "/"}),
        json!({"op": "close"}),
        // 7: one sftp subsystem after another on one connection.
        json!({"op": "connect", "conn": "d", "sftp": false}),
        json!({"op": "raw_sftp", "conn": "d", "data_hex": init_realpath}),
        json!({"op": "raw_sftp", "conn": "d", "data_hex": init_realpath}),
        json!({"op": "close", "conn": "d"}),
    ]);
    ok(&results[0], "login");
    assert_eq!(ok(&results[1], "200 channels opened and closed"), 200);
    assert_eq!(
        ok(&results[2], "channels held open at once"),
        3,
        "the sftp channel and three more: {:#}",
        results[2]
    );
    refused(&results[4], "a second sftp subsystem at once");
    assert_eq!(
        name_set(&ok(&results[5], "sftp after the refusals")),
        ["archive", "errors", "upload"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    for i in [8, 9] {
        assert!(
            ok(&results[i], "an sftp subsystem after the last one closed").as_u64() > Some(20),
            "no VERSION and NAME came back: {:#}",
            results[i]
        );
    }
    s.server.assert_running();
    assert_eq!(
        log_lines_with(&s.server, &["refused: this server offers sftp only"]),
        1,
        "one line for the connection's refusals:\n{}",
        s.server.stderr()
    );
}

/// A valid `hr` file of exactly `size` bytes and the number of people in
/// it (the last row's last name padded, within its 255-character limit).
fn hr_file_of_size(size: usize) -> (String, u64) {
    let tail = |pad: usize| {
        format!(
            "E09999,Pad,{},pad@example.com,,,Sales,Active\n",
            "x".repeat(pad)
        )
    };
    let mut text = String::from(HR_HEADER);
    text.push('\n');
    let mut people = 0;
    loop {
        let row = hr_row(people + 1) + "\n";
        if text.len() + row.len() + tail(100).len() > size {
            break;
        }
        text += &row;
        people += 1;
    }
    let pad = size - text.len() - tail(0).len();
    assert!(pad <= 200, "padding {pad}");
    text += &tail(pad);
    assert_eq!(text.len(), size);
    (text, people as u64 + 1)
}

#[test]
fn an_upload_over_the_size_limit_fails_cleanly_and_nothing_is_imported() {
    let s = Setup::new(&[], &["max_upload_size = \"10KiB\""]);
    let big = hr_file(1..=1000);
    assert!(big.len() > 40 * 1024);
    let big_local = s.env.input("big.csv", &big);

    // paramiko, one write at a time: the write that crosses the limit
    // fails, and the session goes on.
    let results = s.key_client().session(vec![
        json!({"op": "write_open", "path": "/upload/big1.csv", "data": big}),
        json!({"op": "listdir", "path": "/"}),
        // paramiko ignores the status of pipelined writes and of CLOSE;
        // confirm=True stats the result, which is how a paramiko user
        // learns of the failure.
        json!({"op": "put", "path": "/upload/big2.csv", "data": big, "confirm": true}),
        json!({"op": "listdir", "path": "/upload"}),
    ]);
    refused(&results[0], "a non-pipelined upload over max_upload_size");
    ok(&results[1], "the session goes on after the refused write");
    refused(&results[2], "a pipelined upload over max_upload_size");
    let listed = ok(&results[3], "listdir /upload");
    for name in name_set(&listed) {
        assert!(
            !name.starts_with("big"),
            "a partial upload is visible: {listed:#}"
        );
    }

    // OpenSSH sftp and curl get an error too.
    let out = openssh_sftp_key(
        &s.env,
        s.server.port,
        USER,
        &s.key,
        &format!("put {} /upload/big3.csv\n", big_local.display()),
    );
    assert_ne!(out.code, 0, "OpenSSH sftp put over the limit: {out:#?}");
    let mut cmd = tool(&s.env, "curl");
    cmd.args(["-sS", "-k", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("-T")
        .arg(&big_local)
        .arg(format!("sftp://{HOST}:{}/upload/big4.csv", s.server.port));
    let out = run_tool(cmd, "curl -T over the limit", None, TOOL_TIMEOUT);
    assert_ne!(out.code, 0, "curl upload over the limit: {out:#?}");

    // A file exactly at the limit is fine; being the first run shows none
    // of the refused uploads was queued.
    let (exact, people) = hr_file_of_size(10 * 1024);
    let results = s
        .key_client()
        .session(vec![put("/upload/limit.csv", &exact)]);
    ok(&results[0], "an upload of exactly max_upload_size");
    let runs = s.wait_for_exactly(1);
    assert_run(
        &runs[0],
        "limit.csv",
        "applied",
        &[("added", people), ("flagged", 0)],
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(s.env.runs_list().len(), 1, "nothing else imported");
    // No partial file is left in upload/.
    wait_for_upload_dir(&s.env, "hr", &[]);
}

#[test]
fn a_client_that_disconnects_mid_upload_imports_nothing_and_the_server_keeps_serving() {
    let mut s = Setup::standard();
    // A complete-looking CSV prefix: importing it would add 5 people.
    let partial = hr_file(1..=5);
    let results = s.key_client().run(vec![
        json!({"op": "connect"}),
        json!({"op": "write_open", "path": "/upload/mid.csv", "data": partial}),
        json!({"op": "write_more", "data": hr_row(6)}),
        json!({"op": "sleep", "seconds": 0.3}),
        json!({"op": "abort"}),
    ]);
    for (i, r) in results.iter().enumerate() {
        ok(r, &format!("step {i} of the interrupted upload"));
    }
    // The same with OpenSSH-like pipelined writes cut short, on a second
    // connection.
    let results = s.password_client().run(vec![
        json!({"op": "connect"}),
        json!({"op": "write_open", "path": "/upload/mid2.csv", "data": hr_file(1..=4)}),
        json!({"op": "abort"}),
    ]);
    ok(&results[1], "write mid2.csv");

    s.server.assert_running();
    let results = s
        .key_client()
        .session(vec![put("/upload/next.csv", &hr_file(1..=7))]);
    ok(&results[0], "the next client's upload");
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "next.csv", "applied", &[("added", 7)]);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.env.runs_list().len(),
        1,
        "the broken uploads were not imported"
    );
    // No broken upload is left (under its final name it would be
    // imported at the next start).
    wait_for_upload_dir(&s.env, "hr", &[]);
    assert_eq!(s.env.exported_ids("hr").len(), 7);
    s.server.assert_running();
}

#[test]
fn session_limits_refuse_extra_sessions() {
    let env = sftp_env_with(
        &[Feed::hr("hr")],
        &[],
        &["max_sessions = 3", "max_sessions_per_account = 2"],
    );
    let key_a = keygen(&env, "a-key");
    let key_b = keygen(&env, "b-key");
    add_account(&env, "a", "hr", None, &[&pub_of(&key_a)], &[]);
    add_account(&env, "b", "hr", None, &[&pub_of(&key_b)], &[]);
    let server = Server::start(&env);
    let a = json!({"op": "connect", "user": "a", "key": key_a.display().to_string()});
    let b = json!({"op": "connect", "user": "b", "key": key_b.display().to_string()});
    let with = |step: &Value, conn: &str| {
        let mut step = step.clone();
        step["conn"] = json!(conn);
        step
    };
    let ls = |conn: &str| json!({"op": "listdir", "path": "/", "conn": conn});
    let client = Client {
        port: server.port,
        defaults: json!({}),
    };
    // A refused connection may take the server a moment to tear down:
    // wait a little after each before counting again.
    let pause = json!({"op": "sleep", "seconds": 1.0});
    let results = client.run(vec![
        with(&a, "a1"),
        with(&a, "a2"),
        with(&a, "a3"),
        ls("a3"),
        pause.clone(),
        with(&b, "b1"),
        with(&b, "b2"),
        ls("b2"),
        pause.clone(),
        json!({"op": "close", "conn": "a1"}),
        pause.clone(),
        with(&a, "a4"),
        ls("a2"),
        ls("a4"),
        ls("b1"),
    ]);
    let all = format!("{results:#?}");
    assert_eq!(results[0]["ok"], true, "a's first session: {all}");
    assert_eq!(results[1]["ok"], true, "a's second session: {all}");
    assert!(
        results[2]["ok"] == false || results[3]["ok"] == false,
        "a third session for `a` (max_sessions_per_account = 2) must be refused: {all}"
    );
    assert_eq!(
        results[5]["ok"], true,
        "b's first session (3 in all): {all}"
    );
    assert!(
        results[6]["ok"] == false || results[7]["ok"] == false,
        "a fourth session in all (max_sessions = 3) must be refused: {all}"
    );
    assert_eq!(results[9]["ok"], true, "closing a1: {all}");
    assert_eq!(
        results[11]["ok"], true,
        "a new session for `a` once one has closed: {all}"
    );
    for r in &results[12..=14] {
        assert_eq!(r["ok"], true, "the sessions still open work: {all}");
    }
}

#[test]
fn connections_that_do_not_log_in_or_go_idle_are_closed() {
    let s = Setup::new(&[], &["login_timeout = \"2s\"", "idle_timeout = \"3s\""]);
    let results = s.key_client().run(vec![
        json!({"op": "idle_tcp", "seconds": 12}),
        json!({"op": "connect", "conn": "idle"}),
        json!({"op": "connect", "conn": "busy"}),
        json!({"op": "sleep", "seconds": 1.0}),
        json!({"op": "listdir", "path": "/", "conn": "busy"}),
        json!({"op": "sleep", "seconds": 1.0}),
        json!({"op": "listdir", "path": "/", "conn": "busy"}),
        json!({"op": "sleep", "seconds": 1.0}),
        json!({"op": "listdir", "path": "/", "conn": "busy"}),
        json!({"op": "sleep", "seconds": 1.0}),
        json!({"op": "listdir", "path": "/", "conn": "busy"}),
        json!({"op": "sleep", "seconds": 1.5}),
        json!({"op": "listdir", "path": "/", "conn": "busy"}),
        json!({"op": "listdir", "path": "/", "conn": "idle"}),
    ]);
    let idle_tcp = ok(&results[0], "a raw TCP connection");
    assert!(
        idle_tcp["banner"]
            .as_str()
            .unwrap_or_default()
            .starts_with("SSH-2.0-"),
        "the server sends its SSH banner: {idle_tcp:#}"
    );
    let closed = idle_tcp["closed_after"].as_f64().unwrap_or_else(|| {
        panic!("a connection that never logs in is still open after 12s (login_timeout = 2s): {idle_tcp:#}")
    });
    assert!(
        (1.5..10.0).contains(&closed),
        "closed after {closed}s; login_timeout = 2s"
    );
    ok(&results[1], "connect idle");
    ok(&results[2], "connect busy");
    for i in [4, 6, 8, 10, 12] {
        ok(&results[i], "a session in use is not idle");
    }
    refused(&results[13], "a session idle for 5.5s (idle_timeout = 3s)");
}

#[test]
fn malformed_ssh_and_sftp_packets_do_not_stop_the_server() {
    let mut s = Setup::standard();
    let banner = "5353482d322e302d6576696c0d0a"; // "SSH-2.0-evil\r\n"
    let init = "000000050100000003"; // SSH_FXP_INIT, version 3
    let results = s.key_client().run(vec![
        // 0: SSH level
        json!({"op": "garbage_tcp", "random": 4096}),
        json!({"op": "garbage_tcp", "data_hex": banner, "random": 65536}),
        json!({"op": "garbage_tcp", "data_hex": format!("{banner}fffffff0"), "random": 64}),
        // 3: SFTP level, each on a new channel of one logged-in connection
        // (one sftp subsystem at a time: the connection starts none)
        json!({"op": "connect", "sftp": false}),
        json!({"op": "raw_sftp", "data_hex": "ffffffff01", "random": 100}),
        json!({"op": "raw_sftp", "data_hex": format!("{init}00000005c800000001")}),
        json!({"op": "raw_sftp", "data_hex": format!("{init}000000200300000002")}),
        json!({"op": "raw_sftp", "data_hex": format!(
            "{init}0000001c06000000070000000458585858000000000000000000000003616263"
        )}),
        json!({"op": "raw_sftp", "data_hex": format!("{init}000493e006"), "random": 299_999}),
        json!({"op": "raw_sftp", "data_hex": format!(
            "{init}0000000a1000000009000000012e"
        )}),
        json!({"op": "close"}),
    ]);
    // The garbage may end its channel or connection; what matters is
    // that the server goes on. Only the login must work.
    ok(&results[3], "login");
    // The well-formed INIT + REALPATH on the last channel is answered: the
    // raw channels really reached the sftp subsystem.
    assert!(
        ok(&results[9], "INIT and REALPATH sent raw").as_u64() > Some(20),
        "no VERSION and NAME came back: {:#}",
        results[9]
    );
    s.server.assert_running();

    let results = s
        .key_client()
        .session(vec![put("/upload/after-garbage.csv", &hr_file(1..=4))]);
    ok(&results[0], "a normal upload after the garbage");
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "after-garbage.csv", "applied", &[("added", 4)]);
    s.server.assert_running();
    let Setup { server, .. } = s;
    let stderr = server.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Lines of the server's log that hold all of `words`.
fn log_lines_with(server: &Server, words: &[&str]) -> usize {
    server
        .stderr()
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .count()
}

#[test]
fn a_login_to_ones_own_account_between_guesses_does_not_reset_the_lockout() {
    let s = Setup::new(&[], &["lockout_failures = 3", "lockout_duration = \"60s\""]);
    let port = s.server.port;
    add_account(&s.env, "own", "hr", Some("own-Pass-1"), &[], &[]);
    let own = Client::password(port, "own", "own-Pass-1");
    for i in 1..=3 {
        let r = Client::password(port, USER, &format!("guess-{i}")).try_login();
        refused(&r, &format!("guess {i} at another feed's account"));
        if i < 3 {
            ok(
                &own.try_login(),
                "a login to one's own account between guesses",
            );
        }
    }
    refused(
        &own.try_login(),
        "one's own account from an address locked out after three guesses",
    );
    refused(
        &s.password_client().try_login(),
        "the right password of the guessed account from the locked address",
    );
}

#[test]
fn an_account_guessed_at_from_many_addresses_locks_for_passwords_but_not_keys() {
    let s = Setup::new(&[], &["lockout_failures = 3", "lockout_duration = \"60s\""]);
    let port = s.server.port;
    for i in 1..=3 {
        let r = Client::password(port, USER, &format!("guess-{i}"))
            .bind(&format!("127.0.0.{}", 20 + i))
            .try_login();
        refused(&r, &format!("guess {i}, each from another address"));
    }
    refused(
        &s.password_client().bind("127.0.0.30").try_login(),
        "the right password of an account locked after guesses from many addresses",
    );
    let out = openssh_sftp_password(&s.env, port, USER, PASSWORD, "ls /\n");
    assert_ne!(out.code, 0, "OpenSSH with the right password: {out:#?}");
    let results = s
        .key_client()
        .bind("127.0.0.30")
        .session(vec![put("/upload/by-key.csv", &hr_file(1..=2))]);
    ok(
        &results[0],
        "an upload with the account's key while its password is locked",
    );
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "by-key.csv", "applied", &[("added", 2)]);
}

#[test]
fn a_burst_of_concurrent_guesses_is_checked_no_more_than_the_limit() {
    let s = Setup::new(&[], &["lockout_failures = 3", "lockout_duration = \"60s\""]);
    let port = s.server.port;
    let guesses: Vec<_> = (0..8)
        .map(|i| {
            let client = Client::password(port, USER, &format!("burst-{i}")).bind("127.0.0.3");
            thread::spawn(move || client.try_login())
        })
        .collect();
    for guess in guesses {
        refused(&guess.join().expect("guess thread"), "a guess in the burst");
    }
    let checked = log_lines_with(&s.server, &["wrong password", "127.0.0.3"]);
    assert!(
        (1..=3).contains(&checked),
        "{checked} of 8 concurrent guesses had their password checked (lockout_failures = 3):\n{}",
        s.server.stderr()
    );
    refused(
        &s.password_client().bind("127.0.0.3").try_login(),
        "the right password from the address after the burst",
    );
}

/// `open_many`'s result: handles opened and the error messages.
fn opened_and_errors(result: &Value, what: &str) -> (u64, Vec<String>) {
    let value = ok(result, what);
    let opened = value["opened"].as_u64().expect("opened");
    let errors = value["errors"]
        .as_object()
        .expect("errors")
        .keys()
        .cloned()
        .collect();
    (opened, errors)
}

#[test]
fn one_session_cannot_take_every_file_handle_from_the_others() {
    let env = sftp_env_with(&[Feed::hr("hr"), Feed::hr("pay")], &[], &[]);
    let key = keygen(&env, "hr-key");
    add_account(&env, USER, "hr", None, &[&pub_of(&key)], &[]);
    add_account(&env, "pay-up", "pay", Some("pay-Pass-1"), &[], &[]);
    let server = Server::start(&env);
    let port = server.port;
    let marker = env.root.join("home").join("handles-taken");
    fs::create_dir_all(env.root.join("home")).expect("home");

    let hog = Client::key(port, USER, &key);
    let mut steps = vec![
        json!({"op": "connect"}),
        json!({"op": "open_many", "path": "/upload/hog-{i}.csv", "count": 1500, "mode": "w"}),
        json!({"op": "open_many", "path": "/upload", "count": 500, "mode": "dir"}),
    ];
    // Three more sessions of the same account fill its cap; a fifth
    // finds it full.
    for conn in ["c2", "c3", "c4", "c5"] {
        steps.push(json!({"op": "connect", "conn": conn}));
        steps.push(json!({"op": "open_many", "conn": conn,
            "path": format!("/upload/{conn}-{{i}}.csv"), "count": 100, "mode": "w"}));
    }
    steps.push(json!({"op": "mark", "local": marker.display().to_string()}));
    steps.push(json!({"op": "sleep", "seconds": 8.0}));
    steps.push(json!({"op": "stat", "path": "/upload"}));
    let hogging = thread::spawn(move || hog.run(steps));

    let deadline = Instant::now() + Duration::from_secs(90);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the handles were not taken within 90 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // While the handles are held: another feed's upload lands, and the
    // web page answers.
    let results = Client::password(port, "pay-up", "pay-Pass-1")
        .session(vec![put("/upload/pay.csv", &hr_file(1..=3))]);
    ok(
        &results[0],
        "another feed's upload while one session holds its handles",
    );
    let runs = server.wait_for_exactly(&env, 1, RUN_TIMEOUT);
    assert_eq!(runs[0]["feed"], "pay", "{:#}", runs[0]);
    assert_eq!(runs[0]["state"], "applied", "{:#}", runs[0]);
    let web = server
        .stdout_lines()
        .iter()
        .find_map(|l| l.strip_prefix("web: listening on ").map(str::to_string))
        .expect("the web address");
    let mut cmd = tool(&env, "curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{web}/healthz"));
    let out = run_tool(cmd, "curl /healthz", None, TOOL_TIMEOUT);
    assert_eq!(
        out.stdout, "200",
        "/healthz while handles are held: {out:#?}"
    );

    let results = hogging.join().expect("the hogging client");
    let all = format!("{results:#?}");
    ok(&results[0], "connect");
    let (files, file_errors) = opened_and_errors(&results[1], "open 1500 files");
    let (dirs, dir_errors) = opened_and_errors(&results[2], "open 500 folders");
    assert_eq!(files + dirs, 64, "handles open in one session: {all}");
    for message in file_errors.iter().chain(&dir_errors) {
        assert!(
            message.contains("too many open files in this session")
                && message.contains("close some first"),
            "a clear failure for one handle too many: {message:?}\n{all}"
        );
    }
    let mut in_all = files;
    for i in 0..4 {
        ok(&results[3 + 2 * i], "another session of the account");
        let (n, errors) = opened_and_errors(&results[4 + 2 * i], "open files");
        in_all += n;
        if i == 3 {
            assert_eq!(
                n, 0,
                "the fifth session finds the account's cap full: {all}"
            );
            assert!(
                errors
                    .iter()
                    .all(|m| m.contains("too many open files in this account")),
                "{errors:?}"
            );
        }
    }
    assert_eq!(in_all, 256, "handles open in the account's sessions: {all}");
    ok(
        &results[results.len() - 1],
        "the session still answers at its cap",
    );

    // Once the sessions have ended, their handles are free again.
    let results =
        Client::key(port, USER, &key).session(vec![put("/upload/after.csv", &hr_file(1..=2))]);
    ok(&results[0], "an upload after the handles were given back");
    let runs = server.wait_for_exactly(&env, 2, RUN_TIMEOUT);
    assert!(runs.iter().any(|r| r["file"] == "after.csv"), "{runs:#?}");
    assert_eq!(
        names_in(&upload_dir(&env, "hr"))
            .iter()
            .filter(|n| n.starts_with("hog"))
            .count(),
        0,
        "handles never closed left no upload behind"
    );
}

#[test]
fn names_too_long_to_be_processed_are_refused_at_open_and_rename() {
    // The longest name an upload may have: 255 bytes less what the
    // error report adds (`<stamp>-run<u64 run id>-` and `.errors.csv`).
    const LONGEST: usize = 203;
    let s = Setup::standard();
    let name = |len: usize| format!("{}.csv", "n".repeat(len - 4));
    let longest = name(LONGEST);
    let file = hr_file(1..=2);
    let mut steps = vec![put(&format!("/upload/{longest}"), &file)];
    for len in [LONGEST + 1, 234, 235, 250, 255] {
        steps.push(put(&format!("/upload/{}", name(len)), &file));
    }
    steps.push(put("/upload/legit.tmp", &file));
    steps.push(json!({"op": "rename", "src": "/upload/legit.tmp", "dst": format!("/upload/{}", name(240))}));
    steps.push(json!({"op": "listdir", "path": "/upload"}));
    let results = s.key_client().session(steps);
    ok(&results[0], "an upload with the longest name allowed");
    for (i, len) in [LONGEST + 1, 234, 235, 250, 255].iter().enumerate() {
        let r = &results[1 + i];
        refused(r, &format!("an upload with a {len}-byte name"));
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("file name too long: at most {LONGEST} bytes")),
            "the reason is given: {r:#}"
        );
    }
    ok(&results[6], "put legit.tmp");
    refused(&results[7], "a rename into a name too long to be processed");
    let listed = ok(&results[8], "listdir /upload");
    assert!(
        !name_set(&listed).iter().any(|n| n.len() > LONGEST),
        "a name too long is in /upload: {listed:#}"
    );

    // OpenSSH says so too.
    let local = s.env.input("short.csv", &file);
    let out = openssh_sftp_key(
        &s.env,
        s.server.port,
        USER,
        &s.key,
        &format!("put {} /upload/{}\n", local.display(), name(240)),
    );
    assert_ne!(out.code, 0, "OpenSSH put of a 240-byte name: {out:#?}");

    // The longest name is imported and archived.
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], &longest, "applied", &[("added", 2)]);
    let archived = archived_name(&s.env, "hr", &longest);
    assert!(archived.len() <= 255, "{archived}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(s.env.runs_list().len(), 1, "nothing else was imported");
}

#[test]
fn a_symlink_planted_in_the_upload_folder_is_never_followed() {
    let s = Setup::standard();
    ok(
        &s.key_client()
            .session(vec![json!({"op": "listdir", "path": "/upload"})])[0],
        "a first login creates the folders",
    );
    let outside = s.env.root.join("outside.csv");
    let original = format!("{SECRET}\n");
    fs::write(&outside, &original).expect("write the outside file");
    let upload = upload_dir(&s.env, "hr");
    for name in ["resume.csv", "append.csv", "write.csv", "renamed.csv"] {
        std::os::unix::fs::symlink(&outside, upload.join(name)).expect("plant a symlink");
    }
    let row = hr_row(9) + "\n";
    let results = s.key_client().session(vec![
        json!({"op": "open_mode", "path": "/upload/resume.csv", "mode": "r+", "data": row}),
        json!({"op": "open_mode", "path": "/upload/append.csv", "mode": "a", "data": row}),
        json!({"op": "open_mode", "path": "/upload/write.csv", "mode": "w", "data": hr_file(1..=2)}),
        put("/upload/legit.tmp", &hr_file(1..=2)),
        json!({"op": "rename", "src": "/upload/legit.tmp", "dst": "/upload/renamed.csv"}),
        json!({"op": "get", "path": "/upload/resume.csv"}),
    ]);
    for (i, what) in [
        "resuming through a symlink",
        "appending through a symlink",
        "writing over a symlink",
    ]
    .iter()
    .enumerate()
    {
        assert_no_leak(&results[i], what);
        refused(&results[i], what);
    }
    ok(&results[3], "put legit.tmp");
    refused(&results[4], "renaming over a symlink");
    assert_no_leak(&results[5], "reading through a symlink");
    refused(&results[5], "reading through a symlink");
    assert_eq!(
        fs::read_to_string(&outside).expect("the outside file"),
        original,
        "the file outside the data folder changed"
    );
    for name in ["resume.csv", "append.csv", "write.csv", "renamed.csv"] {
        let meta = fs::symlink_metadata(upload.join(name)).expect("the planted link");
        assert!(meta.file_type().is_symlink(), "{name} was replaced");
    }
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.env.runs_list().len(), 0, "nothing was imported");
}

/// Debian's JSch (libjsch-java).
const JSCH_JAR: &str = "/usr/share/java/jsch.jar";

/// `clients/JschUpload.java` compiled into the test dir; returns the
/// class path to run it with.
fn compile_jsch_client(env: &Env) -> String {
    assert!(
        Path::new(JSCH_JAR).is_file(),
        "{JSCH_JAR} is missing: this test needs JSch (./scripts/test installs \
         default-jdk-headless and libjsch-java)"
    );
    let classes = env.root.join("jsch-classes");
    fs::create_dir_all(&classes).expect("classes dir");
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/JschUpload.java");
    let mut cmd = tool(env, "javac");
    cmd.args(["-cp", JSCH_JAR, "-d"]).arg(&classes).arg(&source);
    let out = run_tool(cmd, "javac JschUpload.java", None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "javac: {out:#?}");
    format!("{}:{JSCH_JAR}", classes.display())
}

/// JSch uploads `local` as `remote`, by password, or by `key` when given.
fn jsch_upload(
    env: &Env,
    classpath: &str,
    port: u16,
    local: &Path,
    remote: &str,
    key: Option<&Path>,
) -> Out {
    let mut cmd = tool(env, "java");
    cmd.args(["-cp", classpath, "JschUpload", HOST])
        .arg(port.to_string())
        .arg(USER)
        .arg(if key.is_some() { "" } else { PASSWORD })
        .arg(local)
        .arg(remote);
    if let Some(key) = key {
        cmd.arg(key);
    }
    run_tool(cmd, "JSch upload", None, TOOL_TIMEOUT)
}

/// OpenSSH asked to use only `option=value` for one algorithm kind.
fn openssh_with_only(s: &Setup, option: &str, value: &str) -> Out {
    let batch = s.env.root.join(format!("batch-only-{}.txt", unique()));
    fs::write(&batch, "ls /\n").expect("batch");
    let mut cmd = tool(&s.env, "sftp");
    cmd.args(ssh_options(s.server.port))
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            &format!("{option}={value}"),
            "-i",
        ])
        .arg(&s.key)
        .arg("-b")
        .arg(&batch)
        .arg(format!("{USER}@{HOST}"));
    run_tool(
        cmd,
        &format!("sftp -o {option}={value}"),
        None,
        TOOL_TIMEOUT,
    )
}

#[test]
fn sha1_algorithms_are_offered_only_with_legacy_algorithms() {
    for legacy in [false, true] {
        let sftp: &[&str] = if legacy {
            &["legacy_algorithms = true"]
        } else {
            &[]
        };
        let env = sftp_env_with(&[Feed::hr("hr")], &[], sftp);
        let key = keygen(&env, "hr-up-key");
        let rsa = keygen_with(&env, "jsch-rsa", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
        add_account(
            &env,
            USER,
            "hr",
            Some(PASSWORD),
            &[&pub_of(&key), &pub_of(&rsa)],
            &[],
        );
        let s = Setup {
            server: Server::start(&env),
            env,
            key,
        };
        let rsa_key = |option: &str| {
            let mut cmd = tool(&s.env, "sftp");
            let batch = s.env.root.join(format!("batch-rsa-{}.txt", unique()));
            fs::write(&batch, "ls /\n").expect("batch");
            cmd.args(ssh_options(s.server.port))
                .args(["-o", "BatchMode=yes", "-o", option, "-i"])
                .arg(&rsa)
                .arg("-b")
                .arg(&batch)
                .arg(format!("{USER}@{HOST}"));
            run_tool(cmd, option, None, TOOL_TIMEOUT)
        };

        // OpenSSH told to use SHA-1 only: the host key, the key exchange,
        // the client's signature.
        let host_key = openssh_with_only(&s, "HostKeyAlgorithms", "ssh-rsa");
        let kex = openssh_with_only(&s, "KexAlgorithms", "diffie-hellman-group14-sha1");
        let signature = rsa_key("PubkeyAcceptedAlgorithms=ssh-rsa");
        let modern = rsa_key("PubkeyAcceptedAlgorithms=rsa-sha2-512");
        assert_eq!(
            modern.code, 0,
            "an RSA key with rsa-sha2-512 (legacy {legacy}): {modern:#?}"
        );

        let classpath = compile_jsch_client(&s.env);
        let local = s.env.input("jsch.csv", hr_file(1..=3));
        let by_password = jsch_upload(
            &s.env,
            &classpath,
            s.server.port,
            &local,
            "/upload/jsch.csv",
            None,
        );
        let by_key = jsch_upload(
            &s.env,
            &classpath,
            s.server.port,
            &local,
            "/upload/jsch-key.csv",
            Some(&rsa),
        );

        if legacy {
            for (out, what) in [
                (&host_key, "an ssh-rsa host key"),
                (&kex, "diffie-hellman-group14-sha1"),
                (&signature, "an ssh-rsa signature"),
                (&by_password, "JSch by password"),
                (&by_key, "JSch by RSA key"),
            ] {
                assert_eq!(
                    out.code, 0,
                    "{what} with legacy_algorithms = true: {out:#?}"
                );
            }
            let runs = s.wait_for_exactly(2);
            let mut files = run_files(&runs);
            files.sort();
            assert_eq!(files, ["jsch-key.csv", "jsch.csv"], "{runs:#?}");
        } else {
            // russh closes the connection without telling the client why;
            // the server's log says it, with what to do.
            let log = s.server.stderr();
            for (out, what, kind) in [
                (&host_key, "an ssh-rsa host key", "No common Key algorithm"),
                (
                    &kex,
                    "diffie-hellman-group14-sha1",
                    "No common Kex algorithm",
                ),
            ] {
                assert_ne!(out.code, 0, "{what} is not offered by default: {out:#?}");
                assert!(
                    log.lines()
                        .any(|l| l.contains(kind) && l.contains("legacy_algorithms = true")),
                    "the log says why {what} failed and what to do:\n{log}"
                );
            }
            assert!(
                signature.code != 0 && signature.stderr.contains("Permission denied"),
                "an ssh-rsa signature is refused by default: {signature:#?}"
            );
            // JSch 0.1.55 finds ecdsa-sha2-nistp256 and
            // diffie-hellman-group-exchange-sha256 by default: only its
            // RSA key signatures (ssh-rsa) need the switch.
            assert_eq!(
                by_password.code, 0,
                "JSch by password by default: {by_password:#?}"
            );
            assert!(
                by_key.code != 0 && by_key.stderr.contains("Auth fail"),
                "JSch with an RSA key without legacy_algorithms: {by_key:#?}"
            );
            assert!(
                log.contains(
                    "refused an ssh-rsa (SHA-1) signature; set [sftp] legacy_algorithms = true"
                ),
                "the log says why JSch's key was refused:\n{log}"
            );
            let runs = s.wait_for_exactly(1);
            assert_run(&runs[0], "jsch.csv", "applied", &[("added", 3)]);
        }
    }
}

#[test]
fn a_burst_of_real_logins_is_queued_not_refused_by_the_lockout_count() {
    let s = Setup::new(&[], &["lockout_failures = 3"]);
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let client = s.password_client();
            thread::spawn(move || client.try_login())
        })
        .collect();
    for login in logins {
        ok(
            &login.join().expect("login thread"),
            "one of 8 logins at once with the right password",
        );
    }
}

#[test]
fn ecdsa_p384_and_p521_keys_log_in_and_are_named_in_server_sig_algs() {
    let s = Setup::standard();
    for bits in ["384", "521"] {
        let name = format!("p{bits}");
        let key = keygen_with(&s.env, &name, &["-t", "ecdsa", "-b", bits]);
        let out = add_account(&s.env, &name, "hr", None, &[&pub_of(&key)], &[]);
        assert_eq!(out.code, 0, "{out:#?}");
        let batch = s.env.root.join(format!("batch-{name}.txt"));
        fs::write(&batch, "ls /\n").expect("batch");
        let mut cmd = tool(&s.env, "sftp");
        // The first value of an option wins: DEBUG1 over ssh_options' ERROR.
        cmd.args(["-o", "LogLevel=DEBUG1"])
            .args(ssh_options(s.server.port))
            .args(["-o", "BatchMode=yes", "-i"])
            .arg(&key)
            .arg("-b")
            .arg(&batch)
            .arg(format!("{name}@{HOST}"));
        let out = run_tool(cmd, "sftp with an ECDSA key", None, TOOL_TIMEOUT);
        assert_eq!(out.code, 0, "an ecdsa-sha2-nistp{bits} key: {out:#?}");
        let sig_algs = out
            .stderr
            .lines()
            .find(|l| l.contains("server-sig-algs="))
            .unwrap_or_else(|| panic!("no server-sig-algs in {out:#?}"));
        for algorithm in ["ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"] {
            assert!(sig_algs.contains(algorithm), "{sig_algs}");
        }
        assert!(
            !sig_algs.contains("ssh-rsa,") && !sig_algs.ends_with("ssh-rsa>"),
            "{sig_algs}"
        );
    }
}

/// OpenSSH `sftp` from `bind` trying `prompts` passwords on one
/// connection, each `password` (typed by an askpass script).
fn openssh_password_prompts(s: &Setup, bind: &str, password: &str, prompts: u32) -> Out {
    let askpass = s.env.root.join(format!("askpass-{}.sh", unique()));
    fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).expect("askpass");
    fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod askpass");
    let batch = s.env.root.join(format!("batch-prompts-{}.txt", unique()));
    fs::write(&batch, "ls /\n").expect("batch");
    let mut cmd = tool(&s.env, "sftp");
    cmd.args(ssh_options(s.server.port))
        .args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no"])
        .args(["-o", "PreferredAuthentications=password"])
        .arg("-o")
        .arg(format!("NumberOfPasswordPrompts={prompts}"))
        .arg("-o")
        .arg(format!("BindAddress={bind}"))
        .arg("-b")
        .arg(&batch)
        .arg(format!("{USER}@{HOST}"))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(std::process::Stdio::null());
    run_tool(cmd, "sftp with askpass", None, TOOL_TIMEOUT)
}

#[test]
fn after_a_lockout_ends_the_right_password_logs_in_at_once() {
    let s = Setup::new(&[], &["lockout_failures = 2", "lockout_duration = \"8s\""]);
    // Guesses on one connection (russh takes five): the second locks the
    // address and the account; the ones after it are refused unchecked
    // and must not count.
    let out = openssh_password_prompts(&s, "127.0.0.5", "wrong", 6);
    assert_ne!(out.code, 0, "{out:#?}");
    thread::sleep(Duration::from_secs(7));
    let started = std::time::Instant::now();
    let out = openssh_password_prompts(&s, "127.0.0.5", PASSWORD, 1);
    assert_eq!(
        out.code,
        0,
        "the right password once the lockout is over: {out:#?}\n{}",
        s.server.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the login waited {:?}",
        started.elapsed()
    );
}

#[test]
fn logins_the_server_cannot_check_do_not_lock_the_address() {
    let sftp = ["lockout_failures = 2"];
    let env = sftp_env_with(&[Feed::hr("hr"), Feed::hr("payroll")], &[], &sftp);
    add_account(&env, "pay-up", "payroll", Some("pay-Pass-1"), &[], &[]);
    add_account(&env, USER, "hr", Some(PASSWORD), &[], &[]);
    // The payroll feed is taken out of the configuration: its account's
    // logins cannot be served, which is the server's fault, not theirs.
    env.write_config(&sftp_config_text(
        &env.data_dir,
        &[Feed::hr("hr")],
        &[],
        &sftp,
    ));
    let server = Server::start(&env);
    for i in 1..=4 {
        refused(
            &Client::password(server.port, "pay-up", "pay-Pass-1").try_login(),
            &format!("login {i} to the account whose feed is gone"),
        );
    }
    ok(
        &Client::password(server.port, USER, PASSWORD).try_login(),
        "another account from the same address",
    );
    let log = server.stderr();
    assert!(
        log.contains("is not configured (not counted as a failed login)"),
        "{log}"
    );
}
