//! Faults on the server's side: the data disk fills up during an upload.
//! The upload fails with an error status, nothing is imported, no partial
//! file is left, and the server goes on serving once there is space.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::server::*;
use crate::util::*;

/// A small tmpfs mounted on the data folder for the test's length. The
/// test suite runs as root (`scripts/test` installs with apt-get); a
/// refused mount is a failure, not a skip.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} failed (the suite must run as root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_upload_cleanly_and_the_server_recovers() {
    let env = sftp_env();
    let _disk = Tmpfs::mount(&env.data_dir, "16m");
    let key = keygen(&env, "hr-up-key");
    add_account(&env, USER, "hr", Some(PASSWORD), &[&pub_of(&key)], &[]);
    let mut server = Server::start(&env);

    // About 30 MB: more than the whole disk.
    let huge = env.input("huge.csv", hr_file(1..=400_000));
    assert!(std::fs::metadata(&huge).expect("huge").len() > 20 << 20);
    let out = openssh_sftp_key(
        &env,
        server.port,
        USER,
        &key,
        &format!("put {} /upload/huge.csv\n", huge.display()),
    );
    assert_ne!(
        out.code, 0,
        "an upload larger than the disk must fail: {out:#?}"
    );
    server.assert_running();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        all_names(&upload_dir(&env, "hr")),
        Vec::<String>::new(),
        "no partial or temporary file is left in upload/"
    );
    assert!(env.runs_list().is_empty(), "nothing was imported");

    // The space is back (the failed upload's bytes were freed): the next
    // upload is imported.
    let small = env.input("after.csv", hr_file(1..=25));
    let out = openssh_sftp_key(
        &env,
        server.port,
        USER,
        &key,
        &format!("put {} /upload/after.csv\n", small.display()),
    );
    assert_eq!(out.code, 0, "an upload after the failure: {out:#?}");
    let runs = server.wait_for_exactly(&env, 1, RUN_TIMEOUT);
    assert_run(&runs[0], "after.csv", "applied", &[("added", 25)]);
    assert!(
        server.stderr().contains("upload"),
        "the failure is logged: {}",
        server.stderr()
    );
    drop(server);
}

#[test]
fn a_full_disk_during_the_commit_changes_nothing_and_the_file_is_run_once_space_returns() {
    let env = sftp_env();
    let _disk = Tmpfs::mount(&env.data_dir, "24m");
    let key = keygen(&env, "hr-commit-key");
    add_account(&env, USER, "hr", Some(PASSWORD), &[&pub_of(&key)], &[]);
    let first = env.input("first.csv", hr_file(1..=100));
    assert_eq!(env.import("hr", &first, &[]).state(), "applied");
    let before = env.export("hr");
    let mut server = Server::start(&env);

    // Leave about 3 MB: the upload (about 1.5 MB) fits, the store's growth
    // for 25,000 people does not.
    let ballast = env.data_dir.join("ballast");
    let free = free_bytes(&env.data_dir);
    std::fs::write(&ballast, vec![1u8; (free - (3 << 20)) as usize]).expect("ballast");
    let big = env.input("big.csv", hr_file(1..=25_000));
    let out = openssh_sftp_key(
        &env,
        server.port,
        USER,
        &key,
        &format!("put {} /upload/big.csv\n", big.display()),
    );
    assert_eq!(out.code, 0, "the upload itself fits: {out:#?}");
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    while !server.stderr().contains("No space left") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.stderr().contains("No space left"),
        "the full disk is logged: {}",
        server.stderr()
    );
    server.assert_running();
    assert_eq!(env.export("hr"), before, "nothing of the run is applied");
    assert!(
        env.runs_list()
            .iter()
            .all(|r| r["state"] != "applied" || r["file"] != "big.csv"),
        "{:?}",
        env.runs_list()
    );

    // Space returns: the kept file is run without a restart, once.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let mut runs = env.runs_list();
    while !runs
        .iter()
        .any(|r| r["file"] == "big.csv" && r["state"] == "applied")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "big.csv was not run once space returned: {runs:#?}\n{}",
            server.context()
        );
        std::thread::sleep(Duration::from_millis(300));
        runs = env.runs_list();
    }
    let big_runs: Vec<&serde_json::Value> =
        runs.iter().filter(|r| r["file"] == "big.csv").collect();
    assert_eq!(big_runs.len(), 1, "run once: {runs:?}");
    assert_run(
        big_runs[0],
        "big.csv",
        "applied",
        &[("added", 24_900), ("unchanged", 100)],
    );
    assert!(
        server.stderr().contains("the store is open again"),
        "redb refuses its handle after the failed write; the store reopened: {}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("in use by another"),
        "the reopen never waited on its own handle: {}",
        server.stderr()
    );
    drop(server);
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}
