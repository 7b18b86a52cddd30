//! Running `flagsync serve` and talking to it with real sFTP clients.
//!
//! [`Server`] starts the binary in the foreground on a free loopback port
//! (`listen = "127.0.0.1:0"`), reads the host keys and the bound port from
//! what it prints, drains its output in the background (so its logs never
//! block it) and stops it with SIGTERM when dropped. [`Client`] drives the
//! paramiko script in `clients/sftp_steps.py`; [`tool`] and [`run_tool`]
//! run OpenSSH, sshpass, curl and lftp with a timeout. A missing tool is a
//! test failure that says what to install, never a skip.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// The address every test server listens on and every client connects to.
pub const HOST: &str = "127.0.0.1";

/// How long `serve` may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `serve` may take to exit after SIGTERM or SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client tool may run before it is killed as hung.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A whole configuration for a server test: `data_dir`, then the raw
/// top-level lines `top` (e.g. `retention = "5s"`), an `[sftp]` table on a
/// free loopback port plus the raw lines `sftp` (e.g. `lockout_failures =
/// 3`), the web page on a free port, then the feeds.
pub fn sftp_config_text(data_dir: &Path, feeds: &[Feed], top: &[&str], sftp: &[&str]) -> String {
    let mut s = format!("data_dir = {}\n", toml_str(&data_dir.display().to_string()));
    for line in top {
        s += line;
        s.push('\n');
    }
    s += "\n[sftp]\n";
    if !sftp.iter().any(|l| l.trim_start().starts_with("listen")) {
        s += &format!("listen = \"{HOST}:0\"\n");
    }
    for line in sftp {
        s += line;
        s.push('\n');
    }
    s += "\n[web]\nlisten = \"127.0.0.1:0\"\n\n";
    for feed in feeds {
        s += &feed.to_toml();
    }
    s
}

/// A test dir whose configuration has `feeds` and the given extra lines
/// (see [`sftp_config_text`]).
pub fn sftp_env_with(feeds: &[Feed], top: &[&str], sftp: &[&str]) -> Env {
    let env = Env::bare();
    env.write_config(&sftp_config_text(&env.data_dir, feeds, top, sftp));
    env
}

/// One standard `hr` feed, every `[sftp]` setting at its default.
pub fn sftp_env() -> Env {
    sftp_env_with(&[Feed::hr("hr")], &[], &[])
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A running `flagsync serve`, stopped with SIGTERM when dropped.
pub struct Server {
    child: Option<Child>,
    /// The bound port read from `sftp: listening on HOST:PORT`.
    pub port: u16,
    /// The address part of that line, as printed.
    pub listen: String,
    /// `(algorithm, "SHA256:...")` from each `sftp: host key` line.
    pub host_keys: Vec<(String, String)>,
    stdout: Arc<Mutex<Vec<String>>>,
    stdout_lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// Host key files: name → content.
type HostKeyFiles = Vec<(String, Vec<u8>)>;

/// Host key files from the first server of this test run that generated
/// them, copied into later fresh data folders: a 3072-bit RSA key takes a
/// random, sometimes long, time to generate in a debug build, and every
/// test has a fresh data folder. The tests about host keys use
/// [`Server::start_unseeded`].
fn host_key_cache() -> &'static Mutex<HostKeyFiles> {
    static CACHE: OnceLock<Mutex<HostKeyFiles>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

fn is_host_key_file(name: &str) -> bool {
    name.starts_with("ssh_host_")
}

impl Server {
    /// `flagsync --config <env.config> serve`, with the cached host keys
    /// copied into a data folder that has none yet.
    pub fn start(env: &Env) -> Server {
        seed_host_keys(&env.data_dir);
        let server = Server::start_unseeded(env);
        remember_host_keys(&env.data_dir);
        server
    }

    /// `flagsync --config <env.config> serve`, generating host keys itself
    /// if the data folder has none.
    pub fn start_unseeded(env: &Env) -> Server {
        let mut cmd = env.command();
        cmd.arg("--config").arg(&env.config).arg("serve");
        Server::spawn(cmd, "flagsync serve")
    }

    /// Starts a prepared `serve` command and waits for its listening line.
    pub fn spawn(mut cmd: Command, what: &str) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: could not start {BIN}: {e}"));

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("stderr piped");
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stderr
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let stdout = Arc::clone(&stdout);
            let pipe = child.stdout.take().expect("stdout piped");
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stdout
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    // Once nobody waits for lines, keep draining anyway.
                    let _ = tx.send(line);
                }
            });
        }

        let mut server = Server {
            child: Some(child),
            port: 0,
            listen: String::new(),
            host_keys: Vec::new(),
            stdout,
            stdout_lines: rx,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("sftp: host key ") {
                        let mut parts = rest.split_whitespace();
                        let alg = parts.next().unwrap_or_default().to_string();
                        let fp = parts.next().unwrap_or_default().to_string();
                        assert!(
                            fp.starts_with("SHA256:") && fp.len() > 20,
                            "{what}: host key line {line:?} has no SHA256 fingerprint"
                        );
                        server.host_keys.push((alg, fp));
                    } else if let Some(addr) = line.strip_prefix("sftp: listening on ") {
                        let addr = addr.trim();
                        let port = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                            .unwrap_or_else(|| {
                                panic!("{what}: no port in {line:?}\n{}", server.context())
                            });
                        assert_ne!(port, 0, "{what}: listening on port 0: {line:?}");
                        server.port = port;
                        server.listen = addr.to_string();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let context = server.context();
                    drop(server);
                    panic!(
                        "{what}: no `sftp: listening on` line within {}s\n{context}",
                        START_TIMEOUT.as_secs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(10));
                    panic!(
                        "{what}: exited ({status:?}) before listening\n{}",
                        server.context()
                    );
                }
            }
        }
        server
    }

    /// Everything the server printed so far, for failure messages.
    pub fn context(&self) -> String {
        let stdout = self.stdout_text();
        let stderr = self.stderr();
        let tail = |s: &str| {
            let cut = s.len().saturating_sub(12_000);
            let cut = (cut..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(cut);
            s[cut..].to_string()
        };
        format!(
            "--- serve stdout ---\n{}\n--- serve stderr (tail) ---\n{}",
            tail(&stdout),
            tail(&stderr)
        )
    }

    pub fn stdout_text(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The log once it holds `text` (its reader thread may lag behind the
    /// server), or as it is after 5 s.
    pub fn stderr_once_it_has(&self, text: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = self.stderr();
            if log.contains(text) || std::time::Instant::now() >= until {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The fingerprint printed for `algorithm`.
    pub fn fingerprint(&self, algorithm: &str) -> String {
        self.host_keys
            .iter()
            .find(|(a, _)| a == algorithm)
            .map(|(_, fp)| fp.clone())
            .unwrap_or_else(|| {
                panic!(
                    "serve printed no `sftp: host key {algorithm} SHA256:...` line; it printed {:?}",
                    self.host_keys
                )
            })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Sends `signal` (e.g. TERM, INT) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (TERM or INT) and asserts a clean exit: code 0
    /// within [`STOP_TIMEOUT`], no panic in the logs.
    pub fn stop_with(self, signal: &str) -> String {
        self.signal(signal);
        self.wait_clean_exit(signal)
    }

    /// After [`Server::signal`]: asserts a clean exit (code 0 within
    /// [`STOP_TIMEOUT`], no panic in the logs); returns the stderr.
    pub fn wait_clean_exit(mut self, signal: &str) -> String {
        let status = self.wait_exit(STOP_TIMEOUT);
        // Let the reader threads collect the last lines.
        thread::sleep(Duration::from_millis(100));
        let context = self.context();
        let Some(status) = status else {
            panic!(
                "serve did not exit within {}s of SIG{signal}\n{context}",
                STOP_TIMEOUT.as_secs()
            );
        };
        assert_eq!(
            status.code(),
            Some(0),
            "serve did not exit 0 on SIG{signal}: {status:?}\n{context}"
        );
        assert!(
            !context.contains("panicked") && !context.contains("RUST_BACKTRACE"),
            "serve panicked:\n{context}"
        );
        self.stderr()
    }

    /// SIGTERM and a clean exit; returns the server's stderr.
    pub fn stop(self) -> String {
        self.stop_with("TERM")
    }

    /// Polls `runs list --json` until at least `n` runs exist; returns
    /// them oldest first.
    pub fn wait_for_runs(&self, env: &Env, n: usize, timeout: Duration) -> Vec<Value> {
        self.wait_for_runs_with(|| env.try_runs_list(&[]), n, timeout)
    }

    /// [`Server::wait_for_runs`] with the runs list fetched by `list`.
    pub fn wait_for_runs_with(
        &self,
        list: impl Fn() -> Result<Vec<Value>, Out>,
        n: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match list() {
                Ok(runs) if runs.len() >= n => return oldest_first(runs),
                Ok(runs) => format!("{runs:#?}"),
                Err(out) => format!("runs list failed: {out:#?}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "fewer than {n} runs after {}s; last runs list: {last}\n{}",
                    timeout.as_secs(),
                    self.context()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`Server::wait_for_runs`] for exactly `n` runs: asserts no more
    /// appeared.
    pub fn wait_for_exactly(&self, env: &Env, n: usize, timeout: Duration) -> Vec<Value> {
        let runs = self.wait_for_runs(env, n, timeout);
        assert_eq!(
            runs.len(),
            n,
            "expected exactly {n} runs: {runs:#?}\n{}",
            self.context()
        );
        runs
    }

    /// Panics with the server's output unless the server process is still
    /// running.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("server started");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            panic!("serve exited unexpectedly ({status:?})\n{}", self.context());
        }
    }

    /// Waits for a stdout line starting with `prefix` (one already printed
    /// counts).
    pub fn wait_stdout_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stdout_lines()
                .into_iter()
                .find(|l| l.starts_with(prefix))
            {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "serve printed no line starting {prefix:?}\n{}",
                    self.context()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let pid = child.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn seed_host_keys(data_dir: &Path) {
    let cache = host_key_cache().lock().unwrap_or_else(|e| e.into_inner());
    if cache.is_empty() || has_host_keys(data_dir) {
        return;
    }
    // As flagsync makes it (umask 077): only the service user's.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(data_dir)
        .expect("create data dir");
    for (name, content) in cache.iter() {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(data_dir.join(name))
            .expect("seed host key");
        f.write_all(content).expect("write host key");
    }
}

fn has_host_keys(data_dir: &Path) -> bool {
    names_in(data_dir).iter().any(|n| is_host_key_file(n))
}

fn remember_host_keys(data_dir: &Path) {
    let mut cache = host_key_cache().lock().unwrap_or_else(|e| e.into_inner());
    if !cache.is_empty() {
        return;
    }
    for name in names_in(data_dir) {
        if is_host_key_file(&name) {
            if let Ok(content) = fs::read(data_dir.join(&name)) {
                cache.push((name, content));
            }
        }
    }
}

/// A runs list sorted oldest first (by run ID, numerically when it is a
/// number).
pub fn oldest_first(mut runs: Vec<Value>) -> Vec<Value> {
    runs.sort_by_key(|r| {
        let id = run_id_of(r);
        (id.parse::<u64>().unwrap_or(u64::MAX), id)
    });
    runs
}

/// The `file` of each run, in the order given.
pub fn run_files(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            r["file"]
                .as_str()
                .unwrap_or_else(|| panic!("run without a string `file`: {r:#}"))
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The feed's folders on disk
// ---------------------------------------------------------------------------

pub fn upload_dir(env: &Env, feed: &str) -> PathBuf {
    env.data_dir.join(feed).join("upload")
}

pub fn archive_dir(env: &Env, feed: &str) -> PathBuf {
    env.data_dir.join(feed).join("archive")
}

pub fn errors_dir(env: &Env, feed: &str) -> PathBuf {
    env.data_dir.join(feed).join("errors")
}

/// Names in a folder, sorted; none when it does not exist.
/// Every entry of `dir`, hidden ones included, sorted (none when it does
/// not exist).
pub fn all_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The one archived copy of `file` (named `<timestamp>-<file>`), waiting
/// up to 10 s for it (the file is archived just after its run is
/// recorded).
#[track_caller]
pub fn archived_name(env: &Env, feed: &str, file: &str) -> String {
    let suffix = format!("-{file}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<String> = names_in(&archive_dir(env, feed))
            .into_iter()
            .filter(|n| n.ends_with(&suffix) && n.len() > suffix.len())
            .collect();
        if found.len() == 1 {
            return found[0].clone();
        }
        assert!(
            found.len() < 2 && Instant::now() < deadline,
            "expected one archived `<timestamp>-{file}` in {}: {:?}",
            archive_dir(env, feed).display(),
            names_in(&archive_dir(env, feed))
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

/// `flagsync --config <config> ARGS...` with `input` on stdin.
pub fn run_with_stdin(env: &Env, args: &[&str], input: &str) -> Out {
    let mut cmd = env.command();
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = args.join(" ");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {BIN}: {e}"));
    {
        let mut stdin = child.stdin.take().expect("stdin piped");
        // The binary may exit before reading (a usage error).
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().expect("wait for flagsync");
    let out = Out {
        code: output
            .status
            .code()
            .unwrap_or_else(|| panic!("{what}: killed by a signal: {:?}", output.status)),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    out.assert_no_panic(&what);
    out
}

/// `accounts add NAME --feed FEED` with a password on stdin (if any), the
/// public keys and allow-list entries given; asserts exit 0.
pub fn add_account(
    env: &Env,
    name: &str,
    feed: &str,
    password: Option<&str>,
    keys: &[&Path],
    allow: &[&str],
) -> Out {
    let mut args: Vec<String> = vec!["accounts".into(), "add".into(), name.into()];
    args.push("--feed".into());
    args.push(feed.into());
    if password.is_some() {
        args.push("--password-stdin".into());
    }
    for key in keys {
        args.push("--key".into());
        args.push(key.display().to_string());
    }
    for cidr in allow {
        args.push("--allow".into());
        args.push(cidr.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match password {
        Some(pw) => run_with_stdin(env, &args, &format!("{pw}\n")),
        None => env.run(&args),
    };
    assert_eq!(out.code, 0, "{}: {out:#?}", args.join(" "));
    out
}

/// `accounts list --json`.
pub fn accounts_list(env: &Env) -> Vec<Value> {
    let out = env.run(&["accounts", "list", "--json"]);
    assert_eq!(out.code, 0, "accounts list --json: {out:#?}");
    match out.json("accounts list --json") {
        Value::Array(a) => a,
        other => panic!("accounts list --json is not an array: {other:#}"),
    }
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// Panics unless `program` is on PATH: tests never skip for a missing tool.
pub fn require_tool(program: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
    });
    assert!(
        found,
        "`{program}` is not installed: this test needs it (./scripts/test installs the test \
         tools: openssh-client, sshpass, curl, lftp, python3 with paramiko)"
    );
}

/// A client tool with its working directory and HOME inside the test dir
/// (so nothing reads or writes the real ~/.ssh).
pub fn tool(env: &Env, program: &str) -> Command {
    require_tool(program);
    let home = env.root.join("home");
    fs::create_dir_all(&home).expect("home dir");
    let mut cmd = Command::new(program);
    cmd.current_dir(&env.root)
        .env("HOME", &home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env("LC_ALL", "C");
    cmd
}

/// Runs a client tool with `input` on stdin; kills its whole process
/// group after `timeout` (the result then has code -1 and says so in
/// stderr).
pub fn run_tool(mut cmd: Command, what: &str, input: Option<&[u8]>, timeout: Duration) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin piped");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out_thread = reader(Box::new(child.stdout.take().expect("stdout piped")));
    let err_thread = reader(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tool") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // The whole process group. (Not `kill -KILL -PID` through
            // /usr/bin/kill: procps reads `-PID` there as an option and
            // signalled every process.)
            // SAFETY: kill(2) with a negative pid only sends a signal.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            break child.wait().expect("wait for killed tool");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let mut stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
    if timed_out {
        stderr += &format!(
            "\n[{what}: timed out after {}s and was killed]",
            timeout.as_secs()
        );
    }
    Out {
        code: if timed_out {
            -1
        } else {
            status.code().unwrap_or(-1)
        },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
    }
}

/// A new ed25519 key pair without a passphrase in the test dir; returns the
/// private key's path (the public key is next to it, `.pub`).
pub fn keygen(env: &Env, name: &str) -> PathBuf {
    keygen_with(env, name, &["-t", "ed25519"])
}

/// A key pair made with `ssh-keygen ARGS` (type and format).
pub fn keygen_with(env: &Env, name: &str, args: &[&str]) -> PathBuf {
    let dir = env.root.join("keys");
    fs::create_dir_all(&dir).expect("keys dir");
    let path = dir.join(name);
    let mut cmd = tool(env, "ssh-keygen");
    cmd.arg("-q")
        .args(args)
        .args(["-N", "", "-C"])
        .arg(name)
        .arg("-f")
        .arg(&path);
    let out = run_tool(cmd, "ssh-keygen", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "ssh-keygen failed: {out:#?}");
    path
}

/// The public key file next to a private key.
pub fn pub_of(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// `SHA256:...` of a public key file, as `ssh-keygen -l` gives it.
pub fn key_fingerprint(env: &Env, public: &Path) -> String {
    let mut cmd = tool(env, "ssh-keygen");
    cmd.arg("-l").arg("-E").arg("sha256").arg("-f").arg(public);
    let out = run_tool(cmd, "ssh-keygen -l", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "ssh-keygen -l failed: {out:#?}");
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {out:#?}"))
        .to_string()
}

/// The options every OpenSSH client call uses: no user config, no known
/// hosts, only the identities given.
pub fn ssh_options(port: u16) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "IdentitiesOnly=yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("-oPort={port}")])
    .collect()
}

/// OpenSSH `sftp -b BATCH` with a key; returns what it did.
pub fn openssh_sftp_key(env: &Env, port: u16, user: &str, key: &Path, batch: &str) -> Out {
    let batch_file = env.root.join(format!("batch-{}.txt", unique()));
    fs::write(&batch_file, batch).expect("write batch file");
    let mut cmd = tool(env, "sftp");
    cmd.args(ssh_options(port))
        .args(["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no"])
        .args(["-o", "KbdInteractiveAuthentication=no"])
        .arg("-i")
        .arg(key)
        .arg("-b")
        .arg(&batch_file)
        .arg(format!("{user}@{HOST}"));
    run_tool(cmd, "sftp (key)", None, TOOL_TIMEOUT)
}

/// OpenSSH `sftp -b BATCH` with a password, typed by sshpass.
pub fn openssh_sftp_password(env: &Env, port: u16, user: &str, password: &str, batch: &str) -> Out {
    require_tool("sftp");
    let batch_file = env.root.join(format!("batch-{}.txt", unique()));
    fs::write(&batch_file, batch).expect("write batch file");
    let mut cmd = tool(env, "sshpass");
    cmd.arg("-p")
        .arg(password)
        .arg("sftp")
        .args(ssh_options(port))
        // -b implies BatchMode=yes, which would stop sshpass typing.
        .args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no"])
        .args([
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .arg("-b")
        .arg(&batch_file)
        .arg(format!("{user}@{HOST}"));
    run_tool(cmd, "sshpass sftp (password)", None, TOOL_TIMEOUT)
}

/// A number unique within this test process.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// paramiko
// ---------------------------------------------------------------------------

/// The paramiko client script.
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/sftp_steps.py")
}

/// A paramiko client: who logs in, and how (see `clients/sftp_steps.py`).
#[derive(Clone, Debug)]
pub struct Client {
    pub port: u16,
    pub defaults: Value,
}

impl Client {
    pub fn password(port: u16, user: &str, password: &str) -> Client {
        Client {
            port,
            defaults: json!({"user": user, "password": password}),
        }
    }

    pub fn key(port: u16, user: &str, key: &Path) -> Client {
        Client {
            port,
            defaults: json!({"user": user, "key": key.display().to_string()}),
        }
    }

    /// Connects from this local address (e.g. 127.0.0.2).
    pub fn bind(mut self, addr: &str) -> Client {
        self.defaults["bind"] = json!(addr);
        self
    }

    /// Runs the steps as given (connects only where a step says so);
    /// returns one result per step.
    pub fn run(&self, steps: Vec<Value>) -> Vec<Value> {
        require_tool("python3");
        let spec =
            json!({"host": HOST, "port": self.port, "defaults": self.defaults, "steps": steps});
        let mut cmd = Command::new("python3");
        cmd.arg("-B")
            .arg(client_script())
            .arg(spec.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let out = run_tool(cmd, "paramiko client", None, Duration::from_secs(120));
        let json: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("the paramiko client printed no JSON ({e}): {out:#?}"));
        if let Some(fatal) = json.get("fatal") {
            panic!("the paramiko client failed: {fatal}\n{out:#?}");
        }
        let results = json["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results from the paramiko client: {json:#}"))
            .clone();
        assert_eq!(
            results.len(),
            spec["steps"].as_array().map_or(0, Vec::len),
            "one result per step"
        );
        results
    }

    /// Connects, runs the steps, closes; panics if the login fails. Returns
    /// the results of `steps` only.
    #[track_caller]
    pub fn session(&self, steps: Vec<Value>) -> Vec<Value> {
        let mut all = vec![json!({"op": "connect"})];
        all.extend(steps);
        all.push(json!({"op": "close"}));
        let results = self.run(all);
        let connect = &results[0];
        assert_eq!(
            connect["ok"], true,
            "paramiko login as {} failed: {connect:#}",
            self.defaults["user"]
        );
        results[1..results.len() - 1].to_vec()
    }

    /// Tries to log in; returns the connect result (`ok`, `stage`, `error`).
    pub fn try_login(&self) -> Value {
        self.run(vec![
            json!({"op": "connect"}),
            json!({"op": "listdir", "path": "/"}),
        ])
        .into_iter()
        .next()
        .expect("connect result")
    }
}

/// Asserts one step succeeded; returns its value.
#[track_caller]
pub fn ok(result: &Value, what: &str) -> Value {
    assert_eq!(result["ok"], true, "{what} should succeed: {result:#}");
    result["value"].clone()
}

/// Asserts one step was refused with an error.
#[track_caller]
pub fn refused(result: &Value, what: &str) {
    assert_eq!(result["ok"], false, "{what} should be refused: {result:#}");
}

/// A step that uploads `data` to `path` (open, write, close).
pub fn put(path: &str, data: &str) -> Value {
    json!({"op": "put", "path": path, "data": data})
}

/// Names of `list` as a set.
pub fn name_set(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list:#}"))
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect()
}

/// The standard wait for a run to appear after an upload.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The usual test setup
// ---------------------------------------------------------------------------

/// The account most tests log in as: feed `hr`, [`PASSWORD`] and a key,
/// any address.
pub const USER: &str = "hr-up";
pub const PASSWORD: &str = "Tr0ub4dor-and-3";

/// A running server for the `hr` feed with the account [`USER`] (added
/// before the server started).
pub struct Setup {
    pub env: Env,
    pub server: Server,
    /// [`USER`]'s private key.
    pub key: PathBuf,
}

impl Setup {
    /// Feed `hr`, the raw top-level and `[sftp]` lines given.
    pub fn new(top: &[&str], sftp: &[&str]) -> Setup {
        Setup::with_feed(Feed::hr("hr"), top, sftp)
    }

    /// `feed` (which must be called `hr`), the raw top-level and `[sftp]`
    /// lines given.
    pub fn with_feed(feed: Feed, top: &[&str], sftp: &[&str]) -> Setup {
        let env = sftp_env_with(&[feed], top, sftp);
        let key = keygen(&env, "hr-up-key");
        add_account(&env, USER, "hr", Some(PASSWORD), &[&pub_of(&key)], &[]);
        let server = Server::start(&env);
        Setup { env, server, key }
    }

    /// Everything at its default.
    pub fn standard() -> Setup {
        Setup::new(&[], &[])
    }

    /// paramiko as [`USER`] with the password.
    pub fn password_client(&self) -> Client {
        Client::password(self.server.port, USER, PASSWORD)
    }

    /// paramiko as [`USER`] with the key.
    pub fn key_client(&self) -> Client {
        Client::key(self.server.port, USER, &self.key)
    }

    /// Waits for exactly `n` runs (see [`Server::wait_for_exactly`]).
    pub fn wait_for_exactly(&self, n: usize) -> Vec<Value> {
        self.server.wait_for_exactly(&self.env, n, RUN_TIMEOUT)
    }
}

/// Checks a run record from the server: feed `hr`, the original file
/// name, the state, the counting invariant, the counts given.
#[track_caller]
pub fn assert_run(run: &Value, file: &str, state: &str, counts: &[(&str, u64)]) {
    assert_eq!(run["feed"], "hr", "feed of {run:#}");
    assert_eq!(
        run["file"], file,
        "file of the run (its original name): {run:#}"
    );
    assert_eq!(run["state"], state, "state of {run:#}");
    if state != "failed" {
        assert_count_invariant(run);
    }
    for (key, want) in counts {
        assert_eq!(run[*key], *want, "count `{key}` of {run:#}");
    }
}

/// Waits (up to 10 s) until the feed's `upload/` holds exactly `names`:
/// the server leaves a processed upload under its name for a few seconds
/// (for clients that stat or setstat right after closing) before it is
/// gone.
#[track_caller]
pub fn wait_for_upload_dir(env: &Env, feed: &str, names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    let dir = upload_dir(env, feed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = names_in(&dir);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {now:?} after 10s; expected {want:?}",
            dir.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`tree_of`], for a folder that may hold a running server's Unix
/// socket: path → content for regular files, `None` for folders, and a
/// marker for anything else (sockets, symlinks), which is not read.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    fn walk(
        base: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, Option<Vec<u8>>>,
    ) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .expect("under base")
                .display()
                .to_string();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                out.insert(rel, None);
                walk(base, &path, out);
            } else if kind.is_file() {
                // A file may vanish between listing and reading (the server
                // moves uploads): record it as gone.
                if let Ok(content) = fs::read(&path) {
                    out.insert(rel, Some(content));
                }
            } else {
                out.insert(rel, Some(format!("<not a file: {kind:?}>").into_bytes()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
