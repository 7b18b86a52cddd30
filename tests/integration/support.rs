//! Support bundles and replay: runs the server recorded, bundled (also
//! while it runs), replayed in a temporary folder with the outcome
//! compared; bundles that are damaged, foreign or newer refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::server::*;
use crate::util::*;

/// Runs the files one after the other through the server (each written
/// to `upload/` while it is stopped, picked up at start), as the server
/// records them.
pub(crate) fn serve_files<T: AsRef<[u8]>>(env: &Env, files: &[(&str, T)]) -> Vec<Value> {
    let mut runs = Vec::new();
    for (name, text) in files {
        let upload = upload_dir(env, "hr");
        std::fs::create_dir_all(&upload).expect("upload folder");
        std::fs::write(upload.join(name), text.as_ref()).expect("write upload");
        let server = Server::start(env);
        let all = server.wait_for_exactly(env, runs.len() + 1, RUN_TIMEOUT);
        runs.push(oldest_first(all).pop().expect("a run"));
        server.stop();
    }
    runs
}

fn bundle(env: &Env, run: &str) -> (PathBuf, Out) {
    bundle_with(env, run, &[], "bundle")
}

/// `support bundle --run RUN` with `flags`, to a new file named by `tag`.
pub(crate) fn bundle_with(env: &Env, run: &str, flags: &[&str], tag: &str) -> (PathBuf, Out) {
    let out = env.root.join(format!("run-{run}.{tag}.zip"));
    let mut args = vec![
        "support",
        "bundle",
        "--run",
        run,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    (out.clone(), env.run(&args))
}

pub(crate) fn replay(env: &Env, bundle: &Path) -> (i32, Value) {
    let out = env.run(&["replay", bundle.to_str().unwrap(), "--json"]);
    (out.code, out.json("replay"))
}

pub(crate) fn entries(bundle: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(bundle).expect("bundle");
    let mut zip = zip::ZipArchive::new(file).expect("a zip");
    (0..zip.len())
        .map(|i| {
            let mut e = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (e.name().unwrap().to_string(), bytes)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &BTreeMap<String, Vec<u8>>) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// `entries` with `name` replaced and its checksum in the manifest made
/// to match (a bundle edited on purpose, not damaged).
fn edited(
    mut entries: BTreeMap<String, Vec<u8>>,
    name: &str,
    bytes: Vec<u8>,
) -> BTreeMap<String, Vec<u8>> {
    use sha2::Digest;
    let sum: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut manifest: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    manifest["checksums"][name] = Value::String(sum);
    entries.insert(name.into(), bytes);
    entries.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    entries
}

/// A row of person `i` with the email given.
fn row(i: usize, email: &str) -> String {
    format!("E{i:05},First{i},Last{i},{email},,,Sales,Active")
}

fn day(people: impl Iterator<Item = usize>, extra: &[String]) -> String {
    let mut text = hr_file(people);
    for r in extra {
        text += r;
        text.push('\n');
    }
    text
}

#[test]
fn every_kind_of_run_is_bundled_and_replays_identically() {
    let env = sftp_env();
    // Person 5 has an invalid email and a mobile: imported with a warning,
    // and unchanged (trusted by its row's hash) in the later files. Person
    // 6 is flagged (no channel at all).
    let keep = |i: &usize| ![5, 6].contains(i);
    let odd = [
        "E00005,First5,Last5,not-an-email,+12015550123,,Sales,Active".to_string(),
        "E00006,First6,Last6,,,,Sales,Active".to_string(),
    ];
    let base = day((1..=60).filter(keep), &odd);
    let mut day2_extra = odd.to_vec();
    day2_extra.push(row(10, "changed10@example.com"));
    day2_extra.push(row(61, "new61@example.com"));
    let day2 = day(
        (1..=60).filter(|i| keep(i) && ![10, 11, 12].contains(i)),
        &day2_extra,
    );
    let mut day3_extra = odd.to_vec();
    day3_extra.push(row(10, "again10@example.com"));
    day3_extra.push(row(61, "new61@example.com"));
    day3_extra.push(row(12, "back12@example.com"));
    let day3 = day(
        (1..=60).filter(|i| keep(i) && ![10, 11, 12].contains(i)),
        &day3_extra,
    );
    let files = vec![
        ("base.csv", base),
        ("day2.csv", day2),
        ("day3.csv", day3.clone()),
        ("same.csv", day3),
        ("cut.csv", hr_file(1..=20)),
        (
            "broken.csv",
            "Employee ID;Nothing\n\u{0}\u{1}\n".to_string(),
        ),
    ];
    let runs = serve_files(&env, &files);
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        [
            "applied",
            "applied",
            "applied",
            "unchanged",
            "held",
            "failed"
        ],
        "{runs:#?}"
    );
    assert!(runs[0]["warnings"].as_u64() == Some(1) && runs[0]["flagged"].as_u64() == Some(1));
    // The held run rejected: bundled as it was held.
    let held = run_id_of(&runs[4]);
    assert_eq!(env.run(&["runs", "reject", &held]).code, 0);

    for run in &runs {
        let id = run_id_of(run);
        let (path, out) = bundle(&env, &id);
        assert_eq!(out.code, 0, "bundle of run {id}: {out:#?}");
        assert!(out.stdout.contains("holds personal data"), "{out:#?}");
        let doctor = String::from_utf8(entries(&path)["doctor.txt"].clone()).unwrap();
        assert!(
            doctor.contains("store") && doctor.contains("checks"),
            "{doctor}"
        );
        let (code, replayed) = replay(&env, &path);
        assert_eq!(code, 0, "run {id} ({}): {replayed:#}", run["state"]);
        assert_eq!(replayed["verdict"], "identical");
        assert_eq!(replayed["same_version"], true);
    }
    // Run 2's bundle holds the people before it (run 3 changed some of
    // them since): the export before run 2.
    let (path, _) = bundle(&env, &run_id_of(&runs[1]));
    let people = String::from_utf8(entries(&path)["before/people.jsonl"].clone()).unwrap();
    let before: Vec<Value> = people
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(before.len(), 59, "60 people, one flagged");
    let e10 = before.iter().find(|p| p["id"] == "E00010").unwrap();
    assert_eq!(e10["values"][3], "user10@example.com", "{e10}");
    assert!(before.iter().any(|p| p["id"] == "E00011"));
    assert!(!before.iter().any(|p| p["id"] == "E00061"));
    assert!(
        e10["hash"].is_null(),
        "changed since: its row is read again"
    );
}

#[test]
fn a_confirmed_run_replays_through_its_confirmation_and_a_changed_rule_is_different() {
    let env = sftp_env();
    let runs = serve_files(&env, &[("base.csv", hr_file(1..=40))]);
    std::fs::write(upload_dir(&env, "hr").join("cut.csv"), hr_file(1..=30)).unwrap();
    // Bundled while the server runs: the command goes over its socket.
    let server = Server::start(&env);
    let all = oldest_first(server.wait_for_exactly(&env, 2, RUN_TIMEOUT));
    let held = run_id_of(&all[1]);
    assert_eq!(all[1]["state"], "held");
    assert_eq!(
        env.run(&["runs", "confirm", &held, "--by", "alice"]).code,
        0
    );
    let (path, out) = bundle(&env, &held);
    assert_eq!(out.code, 0, "{out:#?}");
    server.stop();
    let (code, replayed) = replay(&env, &path);
    assert_eq!(code, 0, "{replayed:#}");
    assert_eq!(replayed["replayed"]["confirmed_by"], "alice");
    assert_eq!(replayed["replayed"]["removed"], 10);
    drop(runs);

    // A stricter rule (last names at most 5 characters) flags rows the
    // server took: different, with the lines that differ.
    let all = entries(&path);
    let config = String::from_utf8(all["config.toml"].clone()).unwrap();
    let stricter = config.replacen(
        "name = \"last_name\"",
        "name = \"last_name\"\nmax_length = 5",
        1,
    );
    assert_ne!(stricter, config, "{config}");
    let changed = env.root.join("stricter.zip");
    write_zip(&changed, &edited(all, "config.toml", stricter.into_bytes()));
    let out = env.run(&["replay", changed.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("verdict: DIFFERENT"), "{out:#?}");
    assert!(
        out.stdout.contains("flagged") && out.stdout.contains("line "),
        "{out:#?}"
    );
}

#[test]
fn bad_bundles_and_bad_requests_are_refused_and_write_nothing() {
    let env = sftp_env_with(&[Feed::hr("hr")], &[], &[]);
    let runs = serve_files(&env, &[("base.csv", hr_file(1..=10))]);
    let id = run_id_of(&runs[0]);
    let (good, out) = bundle(&env, &id);
    assert_eq!(out.code, 0, "{out:#?}");
    let good_entries = entries(&good);

    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    let damaged = env.root.join("damaged.zip");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    cases.push((damaged, "not a flagsync support bundle"));
    let foreign = env.root.join("foreign.zip");
    let mut other = BTreeMap::new();
    other.insert("hello.txt".to_string(), b"hi".to_vec());
    write_zip(&foreign, &other);
    cases.push((foreign, "no manifest.json"));
    let newer = env.root.join("newer.zip");
    let mut manifest: Value = serde_json::from_slice(&good_entries["manifest.json"]).unwrap();
    manifest["format_version"] = 99.into();
    let mut newer_entries = good_entries.clone();
    newer_entries.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    write_zip(&newer, &newer_entries);
    cases.push((newer, "made by a newer flagsync"));
    let tampered = env.root.join("tampered.zip");
    let mut t = good_entries.clone();
    t.insert("before/people.jsonl".into(), b"{}\n".to_vec());
    write_zip(&tampered, &t);
    cases.push((tampered, "does not match its checksum"));
    cases.push((env.root.join("missing.zip"), "cannot open"));
    for (path, says) in &cases {
        let out = env.run(&["replay", path.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{path:?}: {out:#?}");
        assert!(out.stderr.contains(says), "{path:?}: {out:#?}");
    }

    // A run without its file (a command-line import keeps none), an
    // unknown run, a file that exists: exit 2, nothing written.
    let cli_run = env.import_text("hr", "by-hand.csv", hr_file(1..=11));
    let (path, out) = bundle(&env, &cli_run.id());
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("keeps no copy"), "{out:#?}");
    assert!(!path.exists());
    let (path, out) = bundle(&env, "999");
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(!path.exists());
    let out = env.run(&[
        "support",
        "bundle",
        "--run",
        &id,
        "--out",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert_eq!(
        entries(&good),
        good_entries,
        "the existing file is untouched"
    );
    let leftovers: Vec<String> = all_names(&env.root)
        .into_iter()
        .filter(|n| n.contains(".flagsync-bundle"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_bundle_never_holds_a_secret() {
    let env = Env::bare();
    let secrets = env.root.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let password = "smtp-Pa55word-sentinel";
    std::fs::write(secrets.join("smtp-password"), password).unwrap();
    let mut text = sftp_config_text(&env.data_dir, &[Feed::hr("hr")], &[], &[]);
    text = text.replace(
        "[web]\n",
        "[web]\npublic_url = \"https://flagsync.internal.example\"\n",
    );
    // A webhook's URL may carry a token; its secret file is a secret.
    std::fs::write(
        secrets.join("hook.secret"),
        "whsec_aG9vay1zZWNyZXQtc2VudGluZWw=\n",
    )
    .unwrap();
    text += &format!(
        "\n[[feed.webhook]]\nurl = \"https://hooks-sentinel.example/in?token=hook-token\"\nsecret_file = {}\n",
        toml_str(&secrets.join("hook.secret").display().to_string())
    );
    text += &format!(
        "\n[smtp]\nhost = \"smtp-host-sentinel.example\"\nusername = \"smtp-user-sentinel\"\npassword_file = {}\nfrom = \"flagsync@example.com\"\n",
        toml_str(&secrets.join("smtp-password").display().to_string())
    );
    env.write_config(&text);
    let runs = serve_files(&env, &[("base.csv", hr_file(1..=5))]);
    let admin_password = "admin-Pa55word-sentinel";
    let out = run_with_stdin(
        &env,
        &["admins", "add", "boss", "--password-stdin"],
        &format!("{admin_password}\n"),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let out = env.run(&["admins", "token", "create", "boss"]);
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token")
        .to_string();
    let (path, out) = bundle(&env, &run_id_of(&runs[0]));
    assert_eq!(out.code, 0, "{out:#?}");
    let host_keys: Vec<Vec<u8>> = all_names(&env.data_dir)
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_") && !n.ends_with(".pub"))
        .map(|n| std::fs::read(env.data_dir.join(n)).unwrap())
        .collect();
    assert!(!host_keys.is_empty());
    for (name, bytes) in entries(&path) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            password,
            admin_password,
            token.as_str(),
            "aG9vay1zZWNyZXQtc2VudGluZWw",
        ] {
            assert!(!text.contains(secret), "{name} holds {secret}");
        }
        if name == "config.toml" {
            for setting in [
                "smtp-host-sentinel",
                "smtp-user-sentinel",
                "smtp-password",
                "hooks-sentinel",
                "hook.secret",
                "flagsync.internal.example",
                "[sftp]",
                "[web]",
                "[smtp]",
                "data_dir",
            ] {
                assert!(
                    !text.contains(setting),
                    "config.toml holds {setting}:\n{text}"
                );
            }
        }
        for key in &host_keys {
            assert!(
                !bytes
                    .windows(key.len().min(64))
                    .any(|w| w == &key[..key.len().min(64)]),
                "{name} holds a host key"
            );
        }
    }
}

#[test]
fn an_admin_downloads_a_runs_bundle_from_its_page() {
    use crate::web::{Web, ADMIN_PASSWORD};
    let env = sftp_env();
    let runs = serve_files(&env, &[("base.csv", hr_file(1..=12))]);
    let id = run_id_of(&runs[0]);
    let web = Web::start_in(env);
    let url = web.url(&format!("/runs/{id}/bundle.zip"));
    let (code, _, _) = web.curl(&[&url]);
    assert_eq!(code, 401, "logged out");
    web.login(ADMIN_PASSWORD);
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
    assert_eq!(code, 200);
    assert!(page.contains("id=\"bundle\""), "{page}");
    let saved = web.env.root.join("downloaded.zip");
    let headers_file = web.env.root.join("bundle-headers.txt");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-f", "-o"])
        .arg(&saved)
        .arg("-D")
        .arg(&headers_file)
        .arg("-b")
        .arg(&web.jar)
        .arg(&url);
    let out = run_tool(cmd, "curl (bundle)", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    let headers = std::fs::read_to_string(&headers_file).unwrap();
    assert!(
        headers
            .to_lowercase()
            .contains("content-type: application/zip"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("flagsync-run-{id}.bundle.zip")),
        "{headers}"
    );
    let (code, replayed) = replay(&web.env, &saved);
    assert_eq!(code, 0, "{replayed:#}");
    let all = entries(&saved);
    let manifest: Value = serde_json::from_slice(&all["manifest.json"]).unwrap();
    assert!(
        !manifest["warnings"].to_string().contains("doctor"),
        "{manifest:#}"
    );
    assert_eq!(manifest["redacted"], false, "{manifest:#}");
    // The server's own doctor: its open store and the ports it bound.
    let doctor = String::from_utf8(all["doctor.txt"].clone()).unwrap();
    assert!(doctor.contains("open in the running server"), "{doctor}");
    assert!(doctor.contains("checks,"), "{doctor}");
    assert!(
        manifest["checksums"]["doctor.txt"].is_string(),
        "{manifest:#}"
    );
    // Redacted from the page.
    let redacted = web.env.root.join("redacted.zip");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-f", "-o"])
        .arg(&redacted)
        .arg("-b")
        .arg(&web.jar)
        .arg(format!("{url}?redact=personal"));
    let out = run_tool(cmd, "curl (redacted bundle)", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    let all = entries(&redacted);
    let manifest: Value = serde_json::from_slice(&all["manifest.json"]).unwrap();
    assert_eq!(manifest["redacted"], true, "{manifest:#}");
    assert_eq!(manifest["groups_redacted"], false, "{manifest:#}");
    assert!(all.contains_key("doctor.txt"), "{:?}", all.keys());
    let (code, replayed) = replay(&web.env, &redacted);
    assert_eq!(code, 0, "{replayed:#}");
    assert_eq!(replayed["verdict"], "identical", "{replayed:#}");
    let (code, _, body) = web.curl(&[&format!("{url}?redact=nonsense")]);
    assert_eq!(code, 400, "{body}");
    // A run without its file, and one that does not exist.
    let by_hand = run_id_of(&import_via_cli_of(&web.env));
    let (code, _, body) = web.curl(&[&web.url(&format!("/runs/{by_hand}/bundle.zip"))]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("keeps no copy"), "{body}");
    let (code, _, _) = web.curl(&[&web.url("/runs/999/bundle.zip")]);
    assert_eq!(code, 404);
    let leftovers = all_names(&web.env.data_dir.join(".support"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!web.server.stderr().contains("panicked"));
}

/// A run from the command line while the server runs (no file kept).
fn import_via_cli_of(env: &Env) -> Value {
    crate::web::import_via_cli(env, "by-hand.csv", &hr_file(1..=13))
}
