//! Load and slow clients (issue 8): slowloris and unauthenticated floods
//! from one address (127.0.0.2) are cut off by the web server's timeouts
//! and per-address cap while a logged-in API client on 127.0.0.1 keeps
//! getting its answers; concurrent sFTP uploads while the API is driven
//! are all imported exactly once. Figures come from `scripts/bench-load`;
//! nothing here times the server's speed.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::*;
use crate::util::*;

const ADMIN: &str = "boss";
const ADMIN_PASSWORD: &str = "correct-horse-battery";
/// The web server's fixed limits (src/web/limits.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// The attacker's address; the logged-in user is on 127.0.0.1.
const ATTACKER: &str = "127.0.0.2";
/// No request of the logged-in user may take longer than this, while
/// under attack (a bound on being served at all, not a speed figure).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A server with an administrator and an API token.
struct Web {
    env: Env,
    server: Server,
    api: Api,
}

/// Where the page is and the token to call its API with.
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    token: String,
}

impl Web {
    fn start(env: Env) -> Web {
        let out = run_with_stdin(
            &env,
            &["admins", "add", ADMIN, "--password-stdin"],
            &format!("{ADMIN_PASSWORD}\n"),
        );
        assert_eq!(out.code, 0, "{out:#?}");
        let out = env.run(&["admins", "token", "create", ADMIN]);
        assert_eq!(out.code, 0, "{out:#?}");
        let token = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .expect("the token")
            .to_string();
        let server = Server::start(&env);
        let addr: SocketAddr = server
            .stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix("web: listening on http://"))
            .unwrap_or_else(|| panic!("no web line: {}", server.context()))
            .parse()
            .expect("the web address");
        Web {
            env,
            server,
            api: Api { addr, token },
        }
    }
}

/// A TCP connection to `to` from the local address `from` (any of
/// 127.0.0.0/8 on loopback).
pub(crate) fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let from: SocketAddr = format!("{from}:0").parse().expect("address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(from)?;
        socket.connect(to).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// One HTTP/1.1 request on a new connection (`Connection: close`); the
/// status and body. Panics if no answer comes within [`ANSWER_WITHIN`].
fn request(from: &str, to: SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let started = Instant::now();
    let mut stream = connect_from(from, to).unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let text = format!(
        "{head}\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap_or_else(|e| {
        panic!(
            "{head} from {from}: no answer ({e}) after {:?}",
            started.elapsed()
        )
    });
    assert!(
        started.elapsed() < ANSWER_WITHIN,
        "{head} from {from} took {:?}",
        started.elapsed()
    );
    let response = String::from_utf8_lossy(&response).into_owned();
    let (headers, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{head} from {from}: not an HTTP response: {response:?}"));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {headers:?}"));
    (status, headers.to_string(), body.to_string())
}

fn get_with_token(from: &str, api: &Api, path: &str) -> (u16, String) {
    let (status, _, body) = request(
        from,
        api.addr,
        &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {}", api.token),
        "",
    );
    (status, body)
}

/// The logged-in user on 127.0.0.1, until `stop`: GET `/api/runs` and
/// `/api/recipients` with the token every 100 ms. Returns (requests,
/// answers that were not 200, as "status path").
fn logged_in_user(api: &Api, stop: &AtomicBool) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut bad = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for path in ["/api/runs", "/api/recipients?feed=hr&q=last"] {
            let (status, body) = get_with_token("127.0.0.1", api, path);
            n += 1;
            if status != 200 {
                bad.push(format!("{status} {path}: {body}"));
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    (n, bad)
}

/// How a connection ended: closed by the server after this long, or still
/// open at the deadline (`None`). `drip` sends one more byte of a request
/// head every second (slowloris); otherwise nothing is sent.
fn hold_until_closed(mut stream: TcpStream, drip: bool, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let head = b"GET /api/runs HTTP/1.1\r\nHost: flagsync\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < deadline {
        if drip {
            // The head never ends: after it, header bytes go on forever.
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).is_err() {
                return Some(started.elapsed());
            }
            sent += 1;
        }
        match stream.read(&mut buf) {
            // The server's 408 (if any) and then its close.
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// Whether the server closed a just-opened connection at once (without
/// reading anything from it).
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn slowloris_connections_are_closed_while_a_logged_in_user_is_served() {
    let web = Web::start(sftp_env());
    let api = web.api.clone();
    // The attacker fills its address's quota: half never send a byte,
    // half send a request head one byte a second.
    let attackers: Vec<TcpStream> = (0..MAX_CONNECTIONS_PER_ADDRESS)
        .map(|i| {
            connect_from(ATTACKER, api.addr)
                .unwrap_or_else(|e| panic!("attacker connection {i}: {e}"))
        })
        .collect();
    // One more from the same address is closed at once.
    let mut extra = connect_from(ATTACKER, api.addr).expect("connect");
    assert!(
        closed_at_once(&mut extra),
        "connection {} from one address is closed at once",
        MAX_CONNECTIONS_PER_ADDRESS + 1
    );
    let stop = Arc::new(AtomicBool::new(false));
    let closed: Vec<_> = attackers
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            thread::spawn(move || hold_until_closed(stream, i % 2 == 1, Duration::from_secs(30)))
        })
        .collect();
    let user = thread::scope(|s| {
        let user = s.spawn(|| logged_in_user(&api, &stop));
        let closed: Vec<Option<Duration>> = closed
            .into_iter()
            .map(|t| t.join().expect("attacker thread"))
            .collect();
        stop.store(true, Ordering::SeqCst);
        let user = user.join().expect("user thread");
        (closed, user)
    });
    let (closed, (requests, bad)) = user;
    for (i, c) in closed.iter().enumerate() {
        let kind = if i % 2 == 1 { "slowloris" } else { "idle" };
        let after = c.unwrap_or_else(|| {
            panic!(
                "{kind} connection {i} still open after 30 s (header timeout {HEADER_TIMEOUT:?})"
            )
        });
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_secs(2) && after < HEADER_TIMEOUT * 2,
            "{kind} connection {i} closed after {after:?}; header timeout {HEADER_TIMEOUT:?}"
        );
    }
    assert!(requests >= 20, "the user made {requests} requests");
    assert!(bad.is_empty(), "the logged-in user got: {bad:#?}");
    // The attacker's slots came back: its address is served again.
    let (status, _, body) = request(ATTACKER, api.addr, "GET /healthz HTTP/1.1", "");
    assert_eq!((status, body.trim()), (200, "ok"));
    web.server.stop();
}

/// A session-less login attempt from `from`: fetches the form (its CSRF
/// token and pre-login cookie) and posts `password`; the status.
fn try_web_login(from: &str, to: SocketAddr, password: &str) -> u16 {
    let (status, headers, body) = request(from, to, "GET /login HTTP/1.1", "");
    assert_eq!(status, 200, "{headers}");
    let cookie = pre_login_cookie(&headers);
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let csrf = &body[at..at + 64];
    let form = format!("csrf={csrf}&name={ADMIN}&password={password}");
    let (status, _, _) = request(
        from,
        to,
        &format!(
            "POST /login HTTP/1.1\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        &form,
    );
    status
}

#[test]
fn an_unauthenticated_flood_is_refused_while_a_logged_in_user_is_served() {
    let web = Web::start(sftp_env());
    let api = web.api.clone();
    let stop = AtomicBool::new(false);
    let statuses = Mutex::new(BTreeMap::<u16, usize>::new());
    let open = AtomicUsize::new(0);
    let held = AtomicBool::new(true);
    let (user, over_cap) = thread::scope(|s| {
        let user = s.spawn(|| logged_in_user(&api, &stop));
        // Failed logins from the attacker: 401 until the lockout, then 429.
        let logins: Vec<u16> = (0..8)
            .map(|_| try_web_login(ATTACKER, api.addr, "wrong"))
            .collect();
        assert_eq!(&logins[..5], &[401; 5], "{logins:?}");
        assert_eq!(&logins[5..], &[429; 3], "{logins:?}");
        // The attacker's address is locked out, not the user's.
        assert_eq!(try_web_login("127.0.0.1", api.addr, ADMIN_PASSWORD), 303);
        assert_eq!(try_web_login(ATTACKER, api.addr, ADMIN_PASSWORD), 429);
        // Unauthenticated API calls on its whole quota of connections, at
        // once, kept alive: every answer a 401.
        let flood: Vec<_> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|i| {
                let (open, held, statuses) = (&open, &held, &statuses);
                s.spawn(move || {
                    let mut stream = connect_from(ATTACKER, api.addr).expect("connect");
                    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
                    let mut answered = 0;
                    for round in 0..10 {
                        let auth = if (i + round) % 2 == 0 {
                            "Authorization: Bearer not-a-token\r\n"
                        } else {
                            ""
                        };
                        let req = format!("GET /api/runs HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
                        stream.write_all(req.as_bytes()).expect("send");
                        let status = read_response(&mut stream);
                        *lock(statuses).entry(status).or_default() += 1;
                        answered += 1;
                    }
                    open.fetch_add(1, Ordering::SeqCst);
                    while held.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(50));
                    }
                    answered
                })
            })
            .collect();
        while open.load(Ordering::SeqCst) < MAX_CONNECTIONS_PER_ADDRESS {
            thread::sleep(Duration::from_millis(20));
        }
        // Its quota is full: one more connection is closed at once, while
        // the user's address is still served.
        let mut extra = connect_from(ATTACKER, api.addr).expect("connect");
        let over_cap = closed_at_once(&mut extra);
        let (status, _) = get_with_token("127.0.0.1", &api, "/api/runs");
        assert_eq!(status, 200);
        held.store(false, Ordering::SeqCst);
        let answered: usize = flood.into_iter().map(|t| t.join().expect("flood")).sum();
        assert_eq!(answered, MAX_CONNECTIONS_PER_ADDRESS * 10);
        stop.store(true, Ordering::SeqCst);
        (user.join().expect("user"), over_cap)
    });
    assert!(
        over_cap,
        "a connection over the per-address cap is closed at once"
    );
    let statuses = statuses.into_inner().unwrap();
    assert_eq!(
        statuses,
        BTreeMap::from([(401, MAX_CONNECTIONS_PER_ADDRESS * 10)]),
        "unauthenticated API calls"
    );
    let (requests, bad) = user;
    assert!(requests > 0);
    assert!(bad.is_empty(), "the logged-in user got: {bad:#?}");
    web.server.stop();
}

/// One response on a kept-alive connection (its body has a
/// Content-Length); its status.
fn read_response(stream: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
            if data.len() >= end + 4 + length {
                assert_eq!(data.len(), end + 4 + length, "one response at a time");
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status in {head:?}"));
            }
        }
        let n = stream.read(&mut buf).expect("an answer");
        assert!(n > 0, "the connection closed mid-response: {data:?}");
        data.extend_from_slice(&buf[..n]);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Concurrent sFTP sessions, each uploading its own file into one feed.
const UPLOADS: usize = 20;

#[test]
fn concurrent_uploads_while_the_api_is_driven_are_all_imported_once() {
    let env = sftp_env_with(
        &[Feed::hr("hr")],
        &[],
        &[&format!("max_sessions_per_account = {}", UPLOADS + 5)],
    );
    add_account(&env, USER, "hr", Some(PASSWORD), &[], &[]);
    let web = Web::start(env);
    let api = web.api.clone();
    let port = web.server.port;
    let stop = AtomicBool::new(false);
    // Every file: the same 100 people and one of its own, so that each
    // run adds one and removes at most one (under the delete threshold)
    // whatever the order of arrival.
    let name = |k: usize| format!("load-{k:02}.csv");
    let (user, uploads) = thread::scope(|s| {
        let user = s.spawn(|| logged_in_user(&api, &stop));
        let uploads: Vec<_> = (0..UPLOADS)
            .map(|k| {
                let name = name(k);
                s.spawn(move || {
                    // Spread over four client addresses: at most 8
                    // connections not yet logged in per address.
                    let client = Client::password(port, USER, PASSWORD)
                        .bind(&format!("127.0.1.{}", k % 4 + 1));
                    let data = hr_file((0..100).chain([1000 + k]));
                    client.session(vec![put(&format!("/upload/{name}"), &data)])
                })
            })
            .collect();
        let uploads: Vec<Vec<serde_json::Value>> = uploads
            .into_iter()
            .map(|t| t.join().expect("upload"))
            .collect();
        let runs = web
            .server
            .wait_for_exactly(&web.env, UPLOADS, Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        ((user.join().expect("user"), runs), uploads)
    });
    for (k, results) in uploads.iter().enumerate() {
        ok(&results[0], &format!("upload {}", name(k)));
    }
    let ((requests, bad), runs) = user;
    let mut files = run_files(&runs);
    files.sort();
    let expected: Vec<String> = (0..UPLOADS).map(name).collect();
    assert_eq!(files, expected, "each upload imported exactly once");
    for run in &runs {
        assert_eq!(run["state"], "applied", "{run:#}");
    }
    assert_eq!(web.env.exported_ids("hr").len(), 101);
    assert!(requests > 0);
    assert!(bad.is_empty(), "API answers that were not 200: {bad:#?}");
    web.server.stop();
}

/// The sFTP server's caps on connections not logged in yet
/// (src/sftp/mod.rs).
const SFTP_UNAUTHENTICATED_PER_ADDRESS: usize = 8;
const SFTP_UNAUTHENTICATED: usize = 64;

/// Opens a raw TCP connection to the sFTP port from `from`; whether the
/// server sent its SSH banner (`false`: closed at once, before it).
fn sftp_banner(from: &str, port: u16) -> (TcpStream, bool) {
    let to: SocketAddr = format!("{HOST}:{port}").parse().expect("address");
    let mut stream = connect_from(from, to).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 256];
    let banner = match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"SSH-2.0-"),
        Err(_) => false,
    };
    (stream, banner)
}

#[test]
fn sftp_connections_that_do_not_log_in_are_capped_and_sessions_keep_working() {
    let s = Setup::new(&[], &["login_timeout = \"8s\""]);
    let port = s.server.port;
    let client = s.key_client();
    thread::scope(|scope| {
        // A logged-in session, busy again once the flood is in place.
        let session = scope.spawn(|| {
            client.run(vec![
                serde_json::json!({"op": "connect"}),
                serde_json::json!({"op": "sleep", "seconds": 4.0}),
                serde_json::json!({"op": "listdir", "path": "/"}),
                put("/upload/during-flood.csv", &hr_file(0..10)),
                serde_json::json!({"op": "close"}),
            ])
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.server.stderr().contains("logged in") {
            assert!(
                Instant::now() < deadline,
                "no login: {}",
                s.server.context()
            );
            thread::sleep(Duration::from_millis(50));
        }
        // One address: its quota of connections that never send a byte,
        // then the next is closed before the SSH banner.
        let mut held = Vec::new();
        for i in 0..SFTP_UNAUTHENTICATED_PER_ADDRESS {
            let (stream, banner) = sftp_banner(ATTACKER, port);
            assert!(banner, "connection {i} from {ATTACKER} gets the banner");
            held.push(stream);
        }
        let (_, banner) = sftp_banner(ATTACKER, port);
        assert!(!banner, "one more from {ATTACKER} is closed at once");
        // More addresses fill the total; then anyone new is refused...
        for n in 1..SFTP_UNAUTHENTICATED / SFTP_UNAUTHENTICATED_PER_ADDRESS {
            for _ in 0..SFTP_UNAUTHENTICATED_PER_ADDRESS {
                let (stream, banner) = sftp_banner(&format!("127.0.0.{}", n + 2), port);
                assert!(banner);
                held.push(stream);
            }
        }
        let (_, banner) = sftp_banner("127.0.0.1", port);
        assert!(
            !banner,
            "over the total, a new connection is closed at once"
        );
        // ... but the session already logged in works on.
        let results = session.join().expect("session");
        for (i, r) in results.iter().enumerate() {
            ok(r, &format!("step {i} of the logged-in session"));
        }
        // The flood is closed after the login timeout; new clients get in.
        for stream in &mut held {
            assert!(closed_at_once_within(stream, Duration::from_secs(15)));
        }
    });
    let runs = s.wait_for_exactly(1);
    assert_eq!(run_files(&runs), ["during-flood.csv"]);
    let results = s
        .key_client()
        .session(vec![serde_json::json!({"op": "listdir", "path": "/"})]);
    ok(&results[0], "a login after the flood");
}

/// Whether the server closes `stream` within `limit`.
fn closed_at_once_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}
