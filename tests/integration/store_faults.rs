//! The store under faults: `flagsync backup` while the server imports,
//! `flagsync restore`, and damaged or truncated store files (a clear error
//! at start that says to restore, never a panic).

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::server::*;
use crate::util::*;

const ROWS: usize = 4_000;

/// The second file: every 30th person gone, every 10th renamed.
fn second_file() -> String {
    let mut s = String::from(HR_HEADER);
    s.push('\n');
    for i in 1..=ROWS {
        if i.is_multiple_of(30) {
            continue;
        }
        let row = hr_row(i);
        if i % 10 == 1 {
            s += &row.replace(&format!(",Last{i},"), &format!(",Renamed{i},"));
        } else {
            s += &row;
        }
        s.push('\n');
    }
    s
}

#[test]
fn a_backup_taken_while_the_server_imports_is_one_run_or_the_next() {
    let env = sftp_env();
    let first = env.input("first.csv", hr_file(1..=ROWS));
    let second = env.input("second.csv", second_file());
    assert_eq!(env.import("hr", &first, &[]).state(), "applied");
    let after_first = env.export("hr");

    let server = Server::start(&env);
    // The second import runs in the server (sent over the control socket)
    // while the backup is taken.
    let mut import = env.command();
    import
        .args(["--config"])
        .arg(&env.config)
        .args(["import", "--feed", "hr"])
        .arg(&second)
        .arg("--json");
    let import = import
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the import");
    let backup = env.root.join("during.redb");
    let out = env.run(&["backup", "--out", backup.to_str().unwrap()]);
    assert_eq!(out.code, 0, "backup while serving: {out:#?}");
    assert!(out.stdout.contains("backup written to"), "{out:#?}");
    let imported = import.wait_with_output().expect("import ends");
    assert!(imported.status.success(), "{imported:?}");
    let after_second = env.export("hr");
    assert_ne!(after_first, after_second);

    // Restoring needs the server stopped, and says so.
    let refused = env.run(&["restore", backup.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(refused.stderr.contains("stop it first"), "{refused:#?}");

    let quiet = env.root.join("quiet.redb");
    let out = env.run(&["backup", "--out", quiet.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    server.stop();
    let entries_served = env.store_entries();
    let runs_served = env.runs_list();

    // The backup taken during the import holds the store before it or
    // after it, never a mix.
    let out = env.run(&["restore", backup.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    let restored = env.export("hr");
    assert!(
        restored == after_first || restored == after_second,
        "the backup taken during an import is neither before nor after it"
    );
    let kept: Vec<String> = names_in(&env.data_dir)
        .into_iter()
        .filter(|n| n.starts_with("flagsync.redb.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced store is kept: {kept:?}");

    // The backup of the quiet server is the whole store, table for table.
    let out = env.run(&["restore", quiet.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(env.export("hr"), after_second);
    assert_eq!(env.runs_list(), runs_served);
    assert_eq!(env.store_entries(), entries_served);

    // The restored store serves: the next file applies against it.
    let server = Server::start(&env);
    let again = env.input("again.csv", hr_file(1..=ROWS));
    let run = env.import("hr", &again, &[]);
    assert_eq!(run.state(), "applied", "{run:?}");
    assert_eq!(env.export("hr"), after_first);
    server.stop();
}

#[test]
fn backup_refuses_to_overwrite_and_restore_refuses_what_is_not_a_backup() {
    let env = Env::hr();
    let file = env.input("base.csv", hr_file(1..=50));
    env.import("hr", &file, &[]);
    let taken = env.input("taken.redb", "keep me");
    let out = env.run(&["backup", "--out", taken.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("already exists"), "{out:#?}");
    assert_eq!(fs::read(&taken).unwrap(), b"keep me");

    let store = env.data_dir.join("flagsync.redb");
    let before = fs::read(&store).unwrap();
    let good = env.root.join("good.redb");
    assert_eq!(
        env.run(&["backup", "--out", good.to_str().unwrap()]).code,
        0
    );
    let whole = fs::read(&good).unwrap();
    for (what, bytes) in [
        ("half", whole[..whole.len() / 2].to_vec()),
        ("csv", b"Employee ID\nE1\n".to_vec()),
        ("empty", Vec::new()),
    ] {
        let bad = env.input(&format!("{what}.redb"), bytes);
        let out = env.run(&["restore", bad.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{what}: {out:#?}");
        assert!(
            out.stderr.contains("not a usable backup"),
            "{what}: {out:#?}"
        );
        assert_eq!(fs::read(&store).unwrap(), before, "{what}: store changed");
    }
    let out = env.run(&["restore", "no-such-file.redb"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("is not a file"), "{out:#?}");

    // A store that does not exist yet: nothing to back up, said plainly.
    let empty = Env::hr();
    let out = empty.run(&[
        "backup",
        "--out",
        empty.root.join("b.redb").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("nothing to back up"), "{out:#?}");
}

/// Damage at `offset`: `len` bytes of zeros, or a cut when `len` is 0.
fn damage(store: &Path, offset: u64, len: usize) {
    let mut bytes = fs::read(store).unwrap();
    if len == 0 {
        bytes.truncate(offset as usize);
    } else {
        let end = (offset as usize + len).min(bytes.len());
        bytes[offset as usize..end].fill(0);
    }
    fs::write(store, bytes).unwrap();
}

#[test]
fn a_damaged_store_stops_serve_and_check_with_what_to_do_and_restore_repairs_it() {
    let env = sftp_env();
    let file = env.input("base.csv", hr_file(1..=ROWS));
    env.import("hr", &file, &[]);
    let before = env.export("hr");
    let backup = env.root.join("backup.redb");
    assert_eq!(
        env.run(&["backup", "--out", backup.to_str().unwrap()]).code,
        0
    );
    let store = env.data_dir.join("flagsync.redb");
    let pristine = fs::read(&store).unwrap();
    let size = pristine.len() as u64;
    // The header, the first pages (tables' roots), the middle (recipient
    // pages), and cuts. (Zeros in pages redb has not used yet are no
    // damage, so the file's end is cut, not zeroed.)
    let cases = [
        ("header zeroed", 0, 4096),
        ("commit slot zeroed", 300, 200),
        ("first pages zeroed", 4096, 8192),
        ("middle zeroed", size / 2, 4096),
        ("cut to nothing", 0, 0),
        ("cut in half", size / 2, 0),
        ("last byte cut", size - 1, 0),
    ];
    for (what, offset, len) in cases {
        fs::write(&store, &pristine).unwrap();
        damage(&store, offset, len);

        let check = env.run(&["check"]);
        assert_eq!(check.code, 2, "{what}: check: {check:#?}");
        assert!(
            check.stderr.contains("flagsync restore"),
            "{what}: {check:#?}"
        );

        let mut serve = env.command();
        serve.arg("--config").arg(&env.config).arg("serve");
        let out = run_tool(serve, what, None, Duration::from_secs(60));
        assert_eq!(out.code, 1, "{what}: serve: {out:#?}");
        assert!(
            out.stderr.contains("flagsync restore"),
            "{what}: serve: {out:#?}"
        );
        assert!(
            !out.stdout.contains("listening"),
            "{what}: serve started: {out:#?}"
        );
    }
    let out = env.run(&["restore", backup.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(env.export("hr"), before);
    assert_eq!(env.run(&["check"]).code, 0);
}

/// `flagsync --config CONFIG ARGS...` run as `nobody` (setpriv): the
/// tests run as root, which reads every folder.
fn run_as_nobody(env: &Env, args: &[&str]) -> Out {
    require_tool("setpriv");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .current_dir(&env.root)
        .env("HOME", &env.root)
        .env_remove("FLAGSYNC_CONFIG")
        .env_remove("RUST_LOG");
    run_command(cmd, &args.join(" "))
}

#[test]
fn a_user_who_cannot_read_the_data_folder_gets_an_error_not_an_empty_store() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::hr();
    let run = env.import_text("hr", "hr.csv", hr_file(1..=3));
    assert_eq!(run.state(), "applied");
    // The configuration is readable by all, the data folder by root only.
    for (path, mode) in [
        (&env.root, 0o755),
        (&env.config, 0o644),
        (&env.data_dir, 0o700),
    ] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let folder = env.data_dir.display().to_string();
    for args in [
        &["runs", "list"][..],
        &["runs", "list", "--json"],
        &["recipients", "export", "--feed", "hr"],
    ] {
        let out = run_as_nobody(&env, args);
        let what = args.join(" ");
        assert_eq!(
            out.code, 1,
            "{what} by a user who cannot read the store: {out:#?}"
        );
        assert!(
            out.stderr.contains(&format!(
                "cannot read the data folder {folder}: permission denied"
            )) && out.stderr.contains("run as the flagsync user or with sudo"),
            "{what}: the reason and what to do: {out:#?}"
        );
        assert!(out.stdout.is_empty(), "{what} printed output: {out:#?}");
    }
    // Root still reads it.
    assert_eq!(env.runs_list().len(), 1);
}
