//! The control socket: while `flagsync serve` holds the store (redb lets
//! one process open it), the other commands are sent to the server over a
//! Unix socket in the data folder and run there, on the open store, with
//! their output streamed back. A command line finds the server by
//! connecting; a socket left by a killed server refuses the connection,
//! and the command then runs here as usual.
//!
//! Protocol: the client writes one JSON line ([`Request`]); the server
//! answers with frames of `tag (1 byte) | length (u32, big endian) |
//! bytes`: `o` standard output, `e` standard error, `x` the exit code (one
//! byte), last.
//!
//! The socket is mode 0600: only the server's user (and root) may use it,
//! as only they may open the store.
//!
//! Invariants:
//! 1. At most [`MAX_CLIENTS`] clients are served at once, each on its own
//!    thread; one more gets a "busy" answer at once, from the listening
//!    thread, and is not queued.
//! 2. A client that sends no whole request within [`REQUEST_TIMEOUT`] is
//!    dropped: an idle connection cannot hold a slot, nor can one that
//!    trickles its request a byte at a time (the timeout is for the
//!    whole request, not for each read).
//! 3. A write to a client that stops reading fails after
//!    [`WRITE_TIMEOUT`] without progress, ending its command's output.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::accounts::{AccountsCommand, KeysCommand};
use super::{error_text, execute, Backend, Command, Failure, Io};
use crate::config::Config;
use crate::worker::engine::Engine;

const SOCKET: &str = "flagsync.sock";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 16 << 20;
/// Clients served at once. Commands are run by administrators and
/// scripts; a few at once is plenty, and each holds a thread.
pub const MAX_CLIENTS: usize = 8;
/// How long a client may take to send its request: the command line
/// sends it at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write to a client may make no progress: the command line
/// reads its answer as it comes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the listening thread may spend telling a client it is busy.
const BUSY_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join(SOCKET)
}

#[derive(Serialize, Deserialize)]
struct Request {
    command: Command,
    /// Standard input, for commands that read it.
    stdin: Option<String>,
    /// Files the command names that the server may not be allowed to read
    /// (public keys in the caller's home).
    files: HashMap<PathBuf, String>,
}

pub enum Forwarded {
    /// The server ran it; this is the exit code.
    Done(u8),
    /// No server is running: run it here.
    NoServer(Command),
}

/// Sends `command` to a running server, if there is one.
pub fn forward_if_serving(config: &Config, command: Command) -> Result<Forwarded, Failure> {
    let Ok(stream) = UnixStream::connect(socket_path(config)) else {
        return Ok(Forwarded::NoServer(command));
    };
    let request = prepare(command)?;
    let code = exchange(stream, &request)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("the running server did not answer: {e}")))?;
    Ok(Forwarded::Done(code))
}

/// Makes the command self-contained: absolute paths, standard input and
/// key files read here.
fn prepare(mut command: Command) -> Result<Request, Failure> {
    let cwd = std::env::current_dir().map_err(|e| Failure::Runtime(e.into()))?;
    let mut files = HashMap::new();
    let mut read = |path: &Path| -> Result<(), Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(anyhow::anyhow!("cannot read {}: {e}", path.display())))?;
        files.insert(path.to_path_buf(), text);
        Ok(())
    };
    let mut wants_stdin = false;
    match &mut command {
        Command::Import(args) => args.file = cwd.join(&args.file),
        Command::Backup { out } => *out = cwd.join(&*out),
        Command::Support(super::SupportCommand::Bundle { out, .. }) => *out = cwd.join(&*out),
        Command::Accounts(AccountsCommand::Add(args)) => {
            for k in &args.keys {
                read(k)?;
            }
            wants_stdin = args.password.password_stdin;
        }
        Command::Accounts(AccountsCommand::Keys(KeysCommand::Add { file, .. })) => read(file)?,
        Command::Accounts(AccountsCommand::Password { password, .. })
        | Command::Admins(super::admins::AdminsCommand::Add { password, .. })
        | Command::Admins(super::admins::AdminsCommand::Password { password, .. }) => {
            wants_stdin = password.password_stdin
        }
        _ => {}
    }
    let stdin = if wants_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::Runtime(e.into()))?;
        Some(s)
    } else {
        None
    };
    Ok(Request {
        command,
        stdin,
        files,
    })
}

fn exchange(mut stream: UnixStream, request: &Request) -> std::io::Result<u8> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // A busy server answers and closes without reading the request: its
    // answer is still there to read.
    let sent = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    if let Err(e) = sent {
        let mut head = [0u8; 5];
        if reader.read_exact(&mut head).is_err() {
            return Err(e);
        }
        return read_frames(reader, Some(head));
    }
    read_frames(reader, None)
}

/// The server's answer: output, errors, and the exit code last.
fn read_frames(
    mut reader: BufReader<UnixStream>,
    mut first: Option<[u8; 5]>,
) -> std::io::Result<u8> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let head = match first.take() {
            Some(head) => head,
            None => {
                let mut head = [0u8; 5];
                reader.read_exact(&mut head)?;
                head
            }
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        match head[0] {
            b'o' => {
                if let Err(e) = out.write_all(&body) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(0);
                    }
                    return Err(e);
                }
            }
            b'e' => {
                let _ = std::io::stderr().write_all(&body);
            }
            b'x' => {
                out.flush()?;
                return Ok(body.first().copied().unwrap_or(1));
            }
            other => return Err(std::io::Error::other(format!("unexpected frame {other}"))),
        }
    }
}

/// Frames written to the client; buffered so that a big export goes out
/// in large frames.
struct FrameWriter<'a> {
    stream: &'a UnixStream,
    buffer: Vec<u8>,
}

const FRAME: usize = 64 * 1024;

fn write_frame(mut stream: &UnixStream, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut head = [tag, 0, 0, 0, 0];
    head[1..].copy_from_slice(&(body.len() as u32).to_be_bytes());
    stream.write_all(&head)?;
    stream.write_all(body)
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= FRAME {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            write_frame(self.stream, b'o', &self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

/// Listens on the control socket; each client is served on its own
/// thread, at most [`MAX_CLIENTS`] at once (invariant 1).
pub fn listen(engine: Arc<Engine>) -> std::io::Result<()> {
    let path = socket_path(&engine.config);
    // Only the data lock's holder gets here: a socket file is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let busy = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(slot) = ClientSlot::take(&busy) else {
                    answer_busy(&stream);
                    continue;
                };
                let engine = engine.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        serve_client(&engine, stream);
                        drop(slot);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot serve a command-line client");
                }
            }
        })?;
    Ok(())
}

/// A client's place among the [`MAX_CLIENTS`]; given back when dropped.
struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    fn take(busy: &Arc<AtomicUsize>) -> Option<ClientSlot> {
        busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_CLIENTS).then_some(n + 1)
        })
        .ok()
        .map(|_| ClientSlot(busy.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells one client too many to come back; never waits long for it.
fn answer_busy(stream: &UnixStream) {
    tracing::warn!("a command-line client was turned away: {MAX_CLIENTS} are being served");
    let _ = stream.set_write_timeout(Some(BUSY_ANSWER_TIMEOUT));
    let message = format!(
        "flagsync: the server is busy with {MAX_CLIENTS} other command-line clients; try again in a moment\n"
    );
    let _ = write_frame(stream, b'e', message.as_bytes());
    let _ = write_frame(stream, b'x', &[1]);
}

pub fn remove_socket(config: &Config) {
    let _ = std::fs::remove_file(socket_path(config));
}

/// Reads from the stream until `deadline` in all (invariant 2): each read
/// waits only for what is left.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request did not arrive in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// The request line, which must arrive whole within `within`.
fn read_request(stream: &UnixStream, within: Duration) -> std::io::Result<String> {
    let reader = DeadlineReader {
        stream,
        deadline: Instant::now() + within,
    };
    let mut line = String::new();
    BufReader::new(reader.take(MAX_REQUEST)).read_line(&mut line)?;
    Ok(line)
}

fn serve_client(engine: &Engine, stream: UnixStream) {
    // Invariant 3: a client that stops reading cannot hold its slot.
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        tracing::warn!(error = %e, "cannot set a timeout on a command-line client");
        return;
    }
    // Invariant 2: the command line sends its request at once.
    let read = read_request(&stream, REQUEST_TIMEOUT);
    if let Err(e) = &read {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            tracing::info!(
                "a command-line client sent no command within {REQUEST_TIMEOUT:?}; closed"
            );
            return;
        }
    }
    let request: Request = match read
        .map_err(|e| e.to_string())
        .and_then(|line| serde_json::from_str(&line).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            let _ = write_frame(
                &stream,
                b'e',
                format!("flagsync: the server could not read the command ({e}); use the same flagsync version as the server\n").as_bytes(),
            );
            let _ = write_frame(&stream, b'x', &[2]);
            return;
        }
    };
    let mut out = FrameWriter {
        stream: &stream,
        buffer: Vec::new(),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut io = Io {
            out: &mut out,
            stdin: request.stdin,
            files: request.files,
        };
        execute(
            &engine.config,
            request.command,
            Backend::Server(engine),
            &mut io,
        )
    }));
    let code = match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(Failure::Usage(e))) => {
            let _ = out.flush();
            let _ = write_frame(&stream, b'e', format!("{}\n", error_text(&e)).as_bytes());
            2
        }
        Ok(Err(Failure::Runtime(e))) => {
            let _ = out.flush();
            let _ = write_frame(&stream, b'e', format!("{}\n", error_text(&e)).as_bytes());
            1
        }
        Err(_) => {
            tracing::error!("a command-line request panicked");
            let _ = write_frame(&stream, b'e', b"flagsync: internal error in the server\n");
            1
        }
    };
    let _ = out.flush();
    let _ = write_frame(&stream, b'x', &[code]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline() {
        let (server, mut client) = UnixStream::pair().expect("a socket pair");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trickler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && client.write_all(b"{").is_ok() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let started = Instant::now();
        let read = read_request(&server, Duration::from_millis(300));
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        trickler.join().expect("trickler");
        let e = read.expect_err("no whole request arrived");
        // The last read's own timeout may end it first (EAGAIN).
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            "{e}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn a_request_sent_at_once_is_read() {
        let (server, mut client) = UnixStream::pair().expect("a socket pair");
        client.write_all(b"{\"x\":1}\nmore").expect("write");
        let line = read_request(&server, Duration::from_secs(5)).expect("the request");
        assert_eq!(line, "{\"x\":1}\n");
    }
}
