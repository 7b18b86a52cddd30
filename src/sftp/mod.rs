//! The sFTP server: an adapter between SSH clients and the worker, as in
//! SFTPGo. It owns authentication (argon2id passwords, OpenSSH keys,
//! allow-lists, lockout), the jail, and the upload's completion; it knows
//! no CSV and hands each finished file to the worker as an [`Arrival`].
//!
//! Built on russh (SSH) and russh-sftp (the SFTP packet codec); see
//! `files` for why the SFTP request loop is our own.
//!
//! Invariants:
//! 1. A connection from an address that no account allows, or that is
//!    locked out, is closed before the SSH handshake.
//! 2. Only the `sftp` subsystem is served; everything else is refused
//!    with a failure reply that leaves the channel and connection open.
//! 3. The accept loop never stops on an accept error (russh's does; ours
//!    is `crate::listen`, shared with the web page).
//! 4. An account sees only its own feed's `upload/`, `errors/`, `archive/`.
//! 5. Connections not logged in yet are capped in all and per address
//!    ([`MAX_UNAUTHENTICATED`], [`MAX_UNAUTHENTICATED_PER_ADDRESS`]) and
//!    closed after `login_timeout`; a session once logged in no longer
//!    counts against those caps.
//! 6. Lockouts count per address and per account and are never reset by
//!    a login; a locked account still logs in by key (`auth::lockout`).
//! 7. Refusals are logged at most once a minute per address, the rest
//!    summed up (see `refusals`).

pub mod credentials;
pub mod files;
pub mod host_keys;
pub mod jail;
pub(crate) mod refusals;
mod session;
mod session_counts;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{compression, kex, MethodKind, MethodSet, Preferred, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::auth::{Lockout, LockoutPolicy, PasswordCheck, Refused, Service};
use crate::config::Config;
use crate::listen;
use crate::store::Store;

pub use files::{Arrival, ArrivalSink};

use credentials::{address_allowed, address_key, canonical_ip};
use refusals::{RefusalLog, Verdict};
use session_counts::SessionCounts;

/// argon2id hashes at once (19 MiB each): a flood of logins cannot
/// exhaust memory. They run on this many long-lived threads of their own:
/// on short-lived blocking threads each 19 MiB block stayed in a separate
/// malloc arena (50 logins left the server at 800 MB).
const CONCURRENT_HASHES: usize = 4;
/// How often a password check waiting for its turn looks again (see
/// `Shared::begin_password_check`); a check takes about 20 ms.
const CHECK_QUEUE_POLL: Duration = Duration::from_millis(10);
/// How long a password check waits at most for its turn (less when the
/// login timeout comes sooner); then the login is refused. Real logins
/// wait milliseconds; only a burst of guesses waits this long.
const CHECK_QUEUE_MAX_WAIT: Duration = Duration::from_secs(5);
/// How long sessions get to finish when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Connections not yet logged in, at once, in all: over it a new
/// connection is closed before the SSH handshake. Below `max_sessions`
/// (100) so that connections that never log in (each cut after
/// `login_timeout`) cannot take every slot from the sessions at work.
const MAX_UNAUTHENTICATED: usize = 64;
/// Connections not yet logged in, at once, from one address. A client
/// logs in within a second (key exchange and one argon2id check, four at
/// a time); an HR system opens one or two connections. 8 is a burst no
/// real client makes, and one address holds at most an eighth of
/// [`MAX_UNAUTHENTICATED`]: with one address flooding, 56 logins from
/// elsewhere can still be under way at once.
const MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 8;

/// What every connection shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub arrivals: ArrivalSink,
    /// Open SFTP handles per account (see `files`, invariant 4).
    open_handles: Arc<files::OpenHandleCounts>,
    lockout: Arc<Lockout>,
    refusals: Mutex<RefusalLog>,
    sessions: Mutex<SessionCounts>,
    /// Connections not logged in yet: in all, and per address.
    unauthenticated: Mutex<(usize, HashMap<IpAddr, usize>)>,
    hashing: Option<rayon::ThreadPool>,
    /// Logins to record on their accounts, written by one thread: a write
    /// waits while an import commits, and logins must not.
    logins: Mutex<std::sync::mpsc::Sender<Login>>,
}

struct Login {
    account: String,
    ip: IpAddr,
    at: String,
}

fn start_login_recorder(store: Arc<Store>) -> std::sync::mpsc::Sender<Login> {
    let (tx, rx) = std::sync::mpsc::channel::<Login>();
    let spawned = std::thread::Builder::new()
        .name("login-recorder".into())
        .spawn(move || {
            for login in rx {
                let result = store.update_account(&login.account, |a| {
                    a.last_login = Some(login.at);
                    a.last_login_from = Some(login.ip.to_string());
                });
                if let Err(e) = result {
                    tracing::warn!(user = %login.account, error = %e, "could not record the login");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "logins will not be recorded on their accounts");
    }
    tx
}

/// Password logins only count against an account: its keys still work.
const LOCKOUT_SERVICE: Service = Service {
    name: "sftp",
    failed_logins: &crate::metrics::SFTP_FAILED_LOGINS,
    account_locked: "the account is locked for password logins (keys still work)",
};

fn lockout_policy(config: &Config) -> LockoutPolicy {
    let s = &config.sftp;
    LockoutPolicy {
        address_failures: s.lockout_failures,
        account_failures: s.lockout_failures,
        window: s.lockout_window,
        duration: s.lockout_duration,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(config: Arc<Config>, store: Arc<Store>, arrivals: ArrivalSink) -> Shared {
        Shared {
            lockout: Lockout::new(lockout_policy(&config), LOCKOUT_SERVICE),
            refusals: Mutex::new(RefusalLog::default()),
            sessions: Mutex::new(SessionCounts::default()),
            open_handles: Arc::default(),
            unauthenticated: Mutex::new((0, HashMap::new())),
            logins: Mutex::new(start_login_recorder(store.clone())),
            hashing: rayon::ThreadPoolBuilder::new()
                .num_threads(CONCURRENT_HASHES)
                .thread_name(|i| format!("argon2-{i}"))
                .build()
                .map_err(|e| tracing::error!(error = %e, "no threads for password checks"))
                .ok(),
            config,
            store,
            arrivals,
        }
    }

    /// Admits a password check and counts it as under way until it is
    /// settled (or dropped: a failure). While as many checks are under
    /// way as failures could still lock, it waits for one to end rather
    /// than refuse: a burst of guesses is then checked no more than the
    /// limit allows, and a burst of real logins (a customer's parallel
    /// sessions) only queues for a few milliseconds.
    /// It waits until `deadline` at most (a few seconds, or what is left
    /// of the login timeout), then is refused.
    async fn begin_password_check(
        &self,
        ip: IpAddr,
        account: &str,
        deadline: Instant,
    ) -> Result<PasswordCheck, Refused> {
        let deadline = deadline.min(Instant::now() + CHECK_QUEUE_MAX_WAIT);
        loop {
            match self.lockout.begin(ip, account) {
                Ok(check) => return Ok(check),
                Err(Refused::TooManyAtOnce) if Instant::now() < deadline => {
                    tokio::time::sleep(CHECK_QUEUE_POLL).await
                }
                Err(refused) => return Err(refused),
            }
        }
    }

    /// Logs a refused connection or login unless this address already had
    /// a line within the minute (invariant 7).
    /// Counted by `address_key`, so an IPv6 client cannot get a line per
    /// address of its /64; a user name is cut to [`refusals::shown_name`].
    fn log_refusal(&self, ip: IpAddr, user: Option<&str>, why: &str) {
        if lock(&self.refusals).refused(address_key(ip), Instant::now()) == Verdict::Quiet {
            return;
        }
        match user {
            Some(user) => {
                let user = refusals::shown_name(user);
                tracing::warn!(user, peer = %ip, "login refused: {why}")
            }
            None => tracing::warn!(peer = %ip, "connection refused: {why}"),
        }
    }

    /// Logs how many refusals each address had beyond its one line.
    fn log_quiet_refusals(&self) {
        let due = lock(&self.refusals).due(Instant::now());
        for summary in due {
            match summary.address {
                Some(ip) => tracing::warn!(
                    peer = %ip,
                    "{} more refused connections or logins from this address (not logged one by one)",
                    summary.not_logged
                ),
                None => tracing::warn!(
                    "{} more refused connections or logins from other addresses (not logged one by one)",
                    summary.not_logged
                ),
            }
        }
    }

    fn take_session_slot(&self, account: &str) -> bool {
        let limit = self.config.sftp.max_sessions_per_account;
        let taken = lock(&self.sessions).try_take(account, limit);
        if taken {
            crate::metrics::add(&crate::metrics::SFTP_SESSIONS, 1);
        }
        taken
    }

    fn give_back_session_slot(&self, account: &str) {
        crate::metrics::add(&crate::metrics::SFTP_SESSIONS, -1);
        lock(&self.sessions).give_back(account)
    }

    /// Whether the password matches; `None` when the server could not
    /// check it (no threads for password checks, a check that panicked):
    /// that is not the client's failure.
    async fn check_password(&self, password: String, hash: String) -> Option<bool> {
        let Some(pool) = &self.hashing else {
            tracing::error!("a password cannot be checked: no threads for password checks");
            return None;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.spawn(move || {
            let _ = tx.send(crate::auth::password_matches(&password, &hash));
        });
        rx.await.ok()
    }

    /// Records the login on the account, without holding up the session.
    fn note_login(&self, account: &str, ip: IpAddr) {
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let _ = lock(&self.logins).send(Login {
            account: account.to_string(),
            ip,
            at,
        });
    }

    /// Invariant 1: some account allows the address and it is not locked.
    fn admits(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.lockout.is_locked(ip) {
            return Err(Refused::AddressLocked.reason());
        }
        let accounts = self.store.accounts().map_err(|e| {
            tracing::error!(error = %e, "the accounts cannot be read");
            "the accounts cannot be read"
        })?;
        if accounts.iter().any(|a| address_allowed(&a.allow, ip)) {
            Ok(())
        } else {
            Err("no account allows this address")
        }
    }

    /// A slot among the connections not logged in yet; the connection
    /// gives it back when it logs in or ends.
    fn take_login_slot(self: &Arc<Self>, ip: IpAddr) -> Result<LoginSlot, &'static str> {
        let mut guard = lock(&self.unauthenticated);
        let (total, per_address) = &mut *guard;
        if *total >= MAX_UNAUTHENTICATED {
            return Err("too many connections not logged in");
        }
        let ip = address_key(ip);
        let n = per_address.entry(ip).or_default();
        if *n >= MAX_UNAUTHENTICATED_PER_ADDRESS {
            return Err("too many connections not logged in from this address");
        }
        *n += 1;
        *total += 1;
        Ok(LoginSlot {
            shared: self.clone(),
            ip,
        })
    }
}

/// A connection's place among those not logged in yet; dropped at login
/// or when the connection ends.
pub(crate) struct LoginSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.shared.unauthenticated);
        let (total, per_address) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = per_address.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_address.remove(&self.ip);
            }
        }
    }
}

/// russh's settings for our server: sftp-friendly window and packet sizes
/// (the defaults make uploads slow), keepalives, and the host keys.
pub fn ssh_config(config: &Config, keys: Vec<PrivateKey>) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(
            format!("SSH-2.0-flagsync_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH probes with "none" first: no need to make it wait.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        window_size: 16 << 20,
        maximum_packet_size: 65535,
        channel_buffer_size: 256,
        max_auth_attempts: 6,
        inactivity_timeout: Some(config.sftp.idle_timeout),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: preferred_algorithms(config.sftp.legacy_algorithms),
        ..Default::default()
    }
}

/// What current OpenSSH offers: no SHA-1 anywhere, compression only
/// after login. SHA-1 signatures can be forged at a cost within reach
/// (SHA-1 is a shambles, 2020), so `ssh-rsa` and the SHA-1 key exchanges
/// come only with `legacy_algorithms`, for clients such as JSch 0.1.55
/// that know nothing newer.
fn preferred_algorithms(legacy: bool) -> Preferred {
    let mut kex = vec![
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::DH_GEX_SHA256,
        kex::DH_G18_SHA512,
        kex::DH_G16_SHA512,
        kex::DH_G14_SHA256,
    ];
    let mut key = vec![
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    if legacy {
        kex.push(kex::DH_G14_SHA1);
        key.push(Algorithm::Rsa { hash: None });
    }
    // russh reads its extensions (RFC 8308, strict key exchange) from the
    // same list.
    kex.extend([
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ]);
    Preferred {
        kex: kex.into(),
        key: key.into(),
        compression: (&[compression::NONE, compression::ZLIB_LEGACY][..]).into(),
        ..Preferred::DEFAULT
    }
}

/// `ssh-rsa`: an RSA signature over SHA-1, refused unless
/// `legacy_algorithms` is on (see [`preferred_algorithms`]).
pub(crate) fn is_sha1_signature(algorithm: &Algorithm) -> bool {
    *algorithm == Algorithm::Rsa { hash: None }
}

/// Accepts connections until `shutdown` (`crate::listen`), then gives
/// sessions a short grace to finish.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
    shutdown: CancellationToken,
) {
    tokio::spawn(summarise_refusals(shared.clone(), shutdown.clone()));
    let connections = connections(&shared.config);
    let settings = listen::Settings {
        // Logged, then retried: never stops listening (invariant 3).
        accept_failed: "accept failed; retrying",
        grace: SHUTDOWN_GRACE,
        still_open:
            "sessions still open at shutdown were closed; their unfinished uploads are discarded",
    };
    let admit = |peer: SocketAddr| admit(&shared, &connections, peer);
    let stop = shutdown.clone();
    let serve = |socket, peer, (slot, login_slot): (listen::Slot, LoginSlot)| {
        let shared = shared.clone();
        let ssh = ssh.clone();
        let stop = stop.clone();
        async move {
            serve_connection(socket, peer, shared, ssh, stop, login_slot).await;
            // Its place in all and per address, held for the whole session.
            drop(slot);
        }
    };
    listen::accept_loop(listener, shutdown, settings, admit, serve).await
}

/// The sessions in all (`max_sessions`) and per address
/// (`max_connections_per_address`), logged in or not.
fn connections(config: &Config) -> Arc<listen::Connections> {
    listen::Connections::new(
        config.sftp.max_sessions,
        config.sftp.max_connections_per_address,
        listen::Wording {
            label: "sFTP",
            total: "the server has its maximum of sessions",
            address: "too many connections from this address",
            // Through `Shared::log_refusal` (invariant 7) by `admit`.
            logged_here: false,
        },
    )
}

/// Whether a new connection may go on to the SSH handshake, checked in
/// this order: some account allows the address and it is not locked out
/// (invariant 1), a session slot in all and per address, a slot among the
/// connections not logged in yet (invariant 5). Each refusal is logged
/// (invariant 7); slots already taken go back when the refusal drops them.
fn admit(
    shared: &Arc<Shared>,
    connections: &Arc<listen::Connections>,
    peer: SocketAddr,
) -> Option<(listen::Slot, LoginSlot)> {
    let ip = canonical_ip(peer.ip());
    let refuse = |why| shared.log_refusal(ip, None, why);
    shared.admits(ip).map_err(refuse).ok()?;
    let slot = connections
        .try_take(ip)
        .map_err(|why| refuse(connections.reason(why)))
        .ok()?;
    let login_slot = shared.take_login_slot(ip).map_err(refuse).ok()?;
    Some((slot, login_slot))
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
    shutdown: CancellationToken,
    login_slot: LoginSlot,
) {
    let id = session_id();
    let span = tracing::info_span!("session", id, peer = %peer);
    let _ = socket.set_nodelay(true);
    let login_timeout = shared.config.sftp.login_timeout;
    let legacy = shared.config.sftp.legacy_algorithms;
    let handler = session::Connection::new(
        shared,
        canonical_ip(peer.ip()),
        login_slot,
        Instant::now() + login_timeout,
    );
    let authenticated = handler.authenticated.clone();
    let start = russh::server::run_stream(ssh, socket, handler);
    let running = match tokio::time::timeout(login_timeout, start).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            span.in_scope(|| tracing::info!(error = %e, "handshake failed"));
            return;
        }
        Err(_) => {
            span.in_scope(|| tracing::info!("closed: no SSH handshake within the login timeout"));
            return;
        }
    };
    let handle = running.handle();
    let deadline = tokio::time::sleep(login_timeout);
    tokio::pin!(running);
    tokio::pin!(deadline);
    let mut deadline_armed = true;
    loop {
        tokio::select! {
            result = &mut running => {
                if let Err(e) = result {
                    span.in_scope(|| log_session_error(&e, legacy));
                }
                break;
            }
            _ = &mut deadline, if deadline_armed => {
                deadline_armed = false;
                if !authenticated.load(std::sync::atomic::Ordering::SeqCst) {
                    span.in_scope(|| tracing::info!("closed: not logged in within the login timeout"));
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "login timeout".into(), "en".into()).await;
                }
            }
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await;
                let _ = handle.disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), "en".into()).await;
                break;
            }
        }
    }
}

/// A client that shares no algorithm with us is told nothing by russh
/// (it closes the connection): the log says why, and what may help.
fn log_session_error(e: &session::ConnectionError, legacy: bool) {
    let session::ConnectionError::Ssh(russh::Error::NoCommonAlgo { .. }) = e else {
        tracing::info!(error = %e, "session ended with an error");
        return;
    };
    if legacy {
        tracing::warn!(error = %e, "refused: the client offers no algorithm the server has");
    } else {
        tracing::warn!(error = %e, "refused: the client offers no algorithm the server has; if it is an old client that needs SHA-1 (ssh-rsa, diffie-hellman-group14-sha1), set [sftp] legacy_algorithms = true");
    }
}

/// Once a minute, the refusals that were not logged one by one.
async fn summarise_refusals(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(refusals::QUIET_FOR);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => shared.log_quiet_refusals(),
        }
    }
    shared.log_quiet_refusals();
}

fn session_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
