//! `flagsync doctor`'s checks: what support always asks, checked in one
//! go. Each check is one line, `OK`, `WARN` or `FAIL`, with what was found
//! and, for WARN and FAIL, what to do. The command (`cli::doctor`) prints
//! them and exits 1 with a FAIL; a support bundle carries their text as
//! `doctor.txt`, from the command line and from the run's page alike,
//! which is why they live here and not in `cli`.
//!
//! Given the server's engine (the command sent to a running server, see
//! `cli::control`, or the page's bundle), they read the server's open
//! store and connect to the addresses the server bound; without one they
//! open the store read-only here. They change
//! nothing but a test file it writes and deletes in the data folder, and
//! it sends no email (the SMTP check says EHLO, logs in if configured,
//! and quits).
//!
//! It never prints a secret: the SMTP password file is read by the mailer
//! and only its path can appear, in an error.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Source};
use crate::store::{Delivery, ReadStore, Store, StoreError};
use crate::worker::engine::Engine;

/// Free space under this is a FAIL: a run's commit or an upload may not fit.
pub const FAIL_BELOW: u64 = 100 << 20;
/// Free space under this (or under twice the largest archived file) is a
/// WARN.
pub const WARN_BELOW: u64 = 1 << 30;
/// How long a port or the SMTP server may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The packages' service user: a data folder it owns is in order.
const SERVICE_USER: &str = "flagsync";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do (WARN and FAIL).
    pub fix: Option<String>,
}

fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        status: Status::Fail,
        ..warn(name, detail, fix)
    }
}

/// Every check, in order; `server`: the running server's engine when the
/// checks run in it.
pub fn all_checks(config: &Config, server: Option<&Engine>) -> Vec<Check> {
    let mut checks = vec![configuration(config)];
    let (store_check, store) = store(config, server);
    checks.push(store_check);
    checks.push(data_folder(config));
    checks.push(writable(config));
    checks.push(free_space(config));
    checks.extend(ports(config, server));
    checks.push(host_keys(config));
    checks.push(smtp(config));
    checks.push(clock(store.as_ref().and_then(ReadStore::get)));
    checks.extend(feeds(config, store.as_ref()));
    checks
}

/// Whether a check failed (`flagsync doctor` exits 1).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// The checks' text as `flagsync doctor` prints it (for a support bundle,
/// made from the command line or the page).
pub fn report(config: &Config, server: Option<&Engine>) -> String {
    text(&all_checks(config, server))
}

/// The checks as lines, then a count of warnings and failures.
pub fn text(checks: &[Check]) -> String {
    use crate::import::printable;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for c in checks {
        text.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.label(),
            printable(&c.name),
            printable(&c.detail)
        ));
        if let Some(fix) = &c.fix {
            text.push_str(&format!("      {:<width$}  → {}\n", "", printable(fix)));
        }
    }
    let (warns, fails) = checks.iter().fold((0, 0), |(w, f), c| match c.status {
        Status::Ok => (w, f),
        Status::Warn => (w + 1, f),
        Status::Fail => (w, f + 1),
    });
    text.push_str(&format!(
        "flagsync {}: {} checks, {warns} warning(s), {fails} failure(s)\n",
        crate::cli::VERSION,
        checks.len()
    ));
    text
}

/// The feeds' OpenPGP key files that a run could not use (missing,
/// unreadable, not a key, a public key for ours, a passphrase, no key for
/// encryption): `flagsync check` refuses the configuration for them.
pub fn key_problems(config: &Config) -> Vec<String> {
    config
        .feeds
        .iter()
        .filter_map(|f| crate::import::pgp::check_keys(f).err())
        .collect()
}

/// Problems with the [smtp] table and the report addresses, found without
/// sending anything (`flagsync check` refuses the configuration for them).
pub fn smtp_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(smtp) = &config.smtp {
        if let Err(e) = crate::mail::Mailer::new(smtp) {
            problems.push(e.to_string());
        }
    }
    for feed in &config.feeds {
        for address in &feed.report_to {
            if address.parse::<lettre::message::Mailbox>().is_err() {
                problems.push(format!(
                    "feed '{}': report_to \"{address}\" is not an email address",
                    feed.name
                ));
            }
        }
        if !feed.report_to.is_empty() && config.smtp.is_none() {
            problems.push(format!(
                "feed '{}' has report_to addresses but there is no [smtp] table: no report will be sent",
                feed.name
            ));
        }
    }
    problems
}

/// What works but is likely not what the administrator wants.
pub fn config_warnings(config: &Config) -> Vec<String> {
    let mut warnings = key_expiry_warnings(config);
    if config.smtp.is_some() && config.web_public_url.is_none() {
        for feed in config.feeds.iter().filter(|f| !f.report_to.is_empty()) {
            warnings.push(format!(
                "feed '{}' mails reports but [web] public_url is not set: the mails cannot link to the run's page, and a held run's mail can only name the `flagsync runs confirm` command; set public_url to the address people open the page at",
                feed.name
            ));
        }
    }
    warnings
}

/// The feeds' OpenPGP keys (ours or the sender's) that expire within 30
/// days, or have expired (`EXPIRED:` first), and secret key files other
/// users may read. Not a failure: `check` runs
/// before the server starts, and decrypting still works; it is the
/// sender's tools that refuse an expired key.
fn key_expiry_warnings(config: &Config) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expiring = config
        .feeds
        .iter()
        .flat_map(|f| crate::import::pgp::expiring_keys(f, now))
        .map(|k| {
            let loud = if k.expired { "EXPIRED: " } else { "" };
            format!("{loud}{}", k.message)
        });
    let open_to_others = config
        .feeds
        .iter()
        .filter_map(crate::import::pgp::key_file_mode_warning);
    expiring.chain(open_to_others).collect()
}

/// Check 1: It loaded (or the command would not be here): where from, and what
/// `flagsync check` refuses or warns about.
fn configuration(config: &Config) -> Check {
    const NAME: &str = "configuration";
    let feeds = format!("{} feed(s): {}", config.feeds.len(), config.feed_names());
    let mut problems = smtp_problems(config);
    problems.extend(key_problems(config));
    if !problems.is_empty() {
        return fail(
            NAME,
            format!("{}: {}", config.source, problems.join("; ")),
            format!("correct {} (flagsync check lists the same)", config.source),
        );
    }
    let warnings = config_warnings(config);
    if !warnings.is_empty() {
        return warn(
            NAME,
            format!("{} loads; {feeds}; {}", config.source, warnings.join("; ")),
            format!("edit {}: each warning says what to set", config.source),
        );
    }
    match &config.source {
        Source::File(p) => ok(NAME, format!("{} is valid; {feeds}", p.display())),
        Source::Embedded => warn(
            NAME,
            format!("the embedded default (no configuration file found); {feeds}"),
            "write your configuration to /etc/flagsync/flagsync.toml (installed) or ./flagsync.toml, or pass --config FILE",
        ),
    }
}

/// Check 2: The store opens and every entry reads (the server's open store when
/// sent to it).
fn store<'a>(config: &Config, server: Option<&'a Engine>) -> (Check, Option<ReadStore<'a>>) {
    const NAME: &str = "store";
    let path = config.store_path();
    match server {
        Some(engine) => match engine.store.verify() {
            Ok(n) => (
                ok(
                    NAME,
                    format!(
                        "{} is open in the running server and reads whole ({n} entries)",
                        path.display()
                    ),
                ),
                Some(ReadStore::Borrowed(&engine.store)),
            ),
            Err(e) => (
                fail(NAME, e.to_string(), store_fix(&e)),
                Some(ReadStore::Borrowed(&engine.store)),
            ),
        },
        None => {
            let opened = crate::store::guard_damage(&path, || {
                let store = Store::open_read_only(&path)?;
                let entries = match &store {
                    Some(s) => s.verify()?,
                    None => 0,
                };
                Ok((store, entries))
            });
            match opened {
                Ok((Some(store), n)) => (
                    ok(NAME, format!("{} reads whole ({n} entries)", path.display())),
                    Some(ReadStore::Owned(store)),
                ),
                Ok((None, _)) => (
                    ok(
                        NAME,
                        format!("{} does not exist yet: it is created at the first run", path.display()),
                    ),
                    Some(ReadStore::Empty),
                ),
                Err(StoreError::InUse { .. }) => (
                    warn(
                        NAME,
                        format!("{} is held by a running flagsync whose control socket this user cannot use", path.display()),
                        "run flagsync doctor as the server's user (sudo -u flagsync flagsync doctor) so that the server checks its store",
                    ),
                    None,
                ),
                Err(e) => (fail(NAME, e.to_string(), store_fix(&e)), None),
            }
        }
    }
}

fn store_fix(e: &StoreError) -> String {
    match e {
        StoreError::Unreadable { .. } | StoreError::Access { .. } => {
            "run flagsync doctor as the flagsync user or with sudo; the data folder must belong to the user running flagsync (chown -R flagsync:flagsync /var/lib/flagsync)".into()
        }
        StoreError::NewerSchema { .. } => {
            "upgrade flagsync to the version that wrote the store, or restore a backup".into()
        }
        StoreError::Reopening => "run flagsync doctor again in a moment".into(),
        _ => "stop flagsync, restore the store from a backup (flagsync restore BACKUP_FILE), start it again".into(),
    }
}

/// The user name of `uid`, from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    passwd_entries().find(|(_, u)| *u == uid).map(|(n, _)| n)
}

fn uid_of(name: &str) -> Option<u32> {
    passwd_entries().find(|(n, _)| n == name).map(|(_, u)| u)
}

fn passwd_entries() -> impl Iterator<Item = (String, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?.to_string();
            let uid = parts.nth(1)?.parse().ok()?;
            Some((name, uid))
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn who(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Check 3a: The data folder exists, belongs to this user (or the packages'
/// service user), and others cannot read it (WARN) or write it (FAIL).
fn data_folder(config: &Config) -> Check {
    const NAME: &str = "data folder";
    let dir = &config.data_dir;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return warn(
                NAME,
                format!("{} does not exist yet", dir.display()),
                "it is created by the first flagsync serve or import; check data_dir in the configuration if you expected it",
            )
        }
        Err(e) => {
            return fail(
                NAME,
                format!("{}: {e}", dir.display()),
                "run flagsync doctor as the flagsync user or with sudo",
            )
        }
    };
    if !meta.is_dir() {
        return fail(
            NAME,
            format!("{} is not a folder", dir.display()),
            "set data_dir to a folder",
        );
    }
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    let mode = meta.mode() & 0o7777;
    let service = uid_of(SERVICE_USER);
    let found = format!("{}: owner {}, mode {mode:04o}", dir.display(), who(owner));
    if mode & 0o002 != 0 {
        return fail(
            NAME,
            format!("{found}: anyone may write into it"),
            format!("chmod 700 {}", dir.display()),
        );
    }
    if owner != me && Some(owner) != service {
        return warn(
            NAME,
            format!("{found}, but flagsync runs here as {}", who(me)),
            format!(
                "run flagsync (serve and the other commands) as the folder's owner, or make it this user's: chown -R {} {}",
                user_name(me).unwrap_or_else(|| me.to_string()),
                dir.display()
            ),
        );
    }
    if mode & 0o007 != 0 {
        return warn(
            NAME,
            format!("{found}: other users may read or enter it (it holds personal data)"),
            format!("chmod 700 {}", dir.display()),
        );
    }
    ok(NAME, found)
}

/// Check 3b: A file can be written and deleted in the data folder.
fn writable(config: &Config) -> Check {
    const NAME: &str = "data folder writable";
    let dir = &config.data_dir;
    if !dir.is_dir() {
        return ok(NAME, "not checked: the data folder does not exist yet");
    }
    // One name per check: the server may run two at once (a page's bundle
    // and `flagsync doctor` sent to it).
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".flagsync-doctor-{}-{n}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"flagsync doctor\n"));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => ok(NAME, format!("a test file was written and deleted in {}", dir.display())),
        Err(e) => fail(
            NAME,
            format!("cannot write in {}: {e}", dir.display()),
            "free space on the disk, or make the folder the flagsync user's (chown -R flagsync:flagsync DATA_DIR); run doctor as that user",
        ),
    }
}

/// The largest file in any feed's `archive/`: a file that size must fit
/// again, with its copy in `processing/`.
fn largest_archived(config: &Config) -> u64 {
    config
        .feeds
        .iter()
        .filter_map(|f| {
            std::fs::read_dir(crate::layout::FeedFolders::new(config.feed_dir(&f.name)).archive())
                .ok()
        })
        .flat_map(|dir| dir.flatten())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Check 3c: Free space: FAIL under [`FAIL_BELOW`], WARN under [`WARN_BELOW`]
/// or under twice the largest archived file.
fn free_space(config: &Config) -> Check {
    const NAME: &str = "free space";
    // The folder, or the nearest existing parent (where it will be made).
    let Some(at) = config.data_dir.ancestors().find(|p| p.is_dir()) else {
        return warn(NAME, "not checked: no existing folder", "check data_dir");
    };
    let free = match rustix::fs::statvfs(at) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => {
            return warn(
                NAME,
                format!("cannot ask the disk of {}: {e}", at.display()),
                "check the data folder's disk with df",
            )
        }
    };
    let largest = largest_archived(config);
    let found = format!(
        "{} free on the disk of {} (largest archived file {})",
        mib(free),
        at.display(),
        mib(largest)
    );
    let fix = "free space on that disk (old files in each feed's archive/ and errors/ are pruned after `retention`), or move data_dir to a larger disk";
    match space_verdict(free, largest) {
        (Status::Ok, _) => ok(NAME, found),
        (status, why) => Check {
            status,
            ..warn(NAME, format!("{found}: {why}"), fix)
        },
    }
}

/// FAIL under [`FAIL_BELOW`]; WARN under [`WARN_BELOW`] or under twice
/// the largest archived file (a file that size arrives as an upload and
/// is claimed by a hard link, then its run's store pages and error report
/// need room too); with why.
fn space_verdict(free: u64, largest: u64) -> (Status, String) {
    if free < FAIL_BELOW {
        (Status::Fail, format!("under {}", mib(FAIL_BELOW)))
    } else if free < WARN_BELOW {
        (Status::Warn, format!("under {}", mib(WARN_BELOW)))
    } else if free < largest.saturating_mul(2) {
        (Status::Warn, "under twice the largest file".into())
    } else {
        (Status::Ok, String::new())
    }
}

/// An address to connect to for one that listens on every interface.
fn reachable(address: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match address.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, address.port())
}

/// Check 4: Something accepts connections on the sFTP and web addresses (those
/// the server bound, when sent to it).
fn ports(config: &Config, server: Option<&Engine>) -> Vec<Check> {
    let bound = server.and_then(|engine| engine.listening.get().copied());
    let serving = server.is_some();
    vec![
        port(
            "sftp port",
            "[sftp] listen",
            &config.sftp.listen,
            bound.map(|b| b.0),
            serving,
        ),
        port(
            "web port",
            "[web] listen",
            &config.web_listen,
            bound.map(|b| b.1),
            serving,
        ),
    ]
}

fn port(
    name: &str,
    setting: &str,
    configured: &str,
    bound: Option<SocketAddr>,
    serving: bool,
) -> Check {
    let address = match bound {
        Some(a) => a,
        None => match configured.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                return fail(
                    name,
                    format!("{setting} = \"{configured}\" is not an address"),
                    format!("set {setting} to HOST:PORT"),
                )
            }
        },
    };
    if address.port() == 0 {
        return warn(
            name,
            format!("{setting} = \"{configured}\": port 0 is chosen at each start, so it cannot be checked without the server"),
            "start flagsync serve, then run flagsync doctor again (it asks the server)",
        );
    }
    let target = reachable(address);
    match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(_) => ok(name, format!("listening on {address}")),
        Err(e) if serving => fail(
            name,
            format!("the server runs but {target} does not accept connections: {e}"),
            "look at the server's log; a firewall or a full connection table may be in the way; restart it (systemctl restart flagsync)",
        ),
        Err(e) => warn(
            name,
            format!("nothing listens on {target} ({e}): the server is not running?"),
            format!("start it (systemctl start flagsync, or flagsync serve); if it runs, check {setting}"),
        ),
    }
}

/// Check 5: The host keys' fingerprints, as `ssh-keygen -l` prints them, for
/// the customer to compare with what their client shows.
fn host_keys(config: &Config) -> Check {
    const NAME: &str = "host keys";
    let keys = crate::sftp::host_keys::existing(&config.data_dir);
    if keys.is_empty() {
        return warn(
            NAME,
            format!("none yet in {}", config.data_dir.display()),
            "flagsync serve generates them at its first start; give customers their fingerprints then",
        );
    }
    let mut found = Vec::new();
    for (file, key) in keys {
        match key {
            Ok(key) => found.push(format!(
                "{} {} ({file})",
                key.algorithm().as_str(),
                crate::sftp::credentials::fingerprint(&key)
            )),
            Err(e) => {
                return fail(
                    NAME,
                    e.to_string(),
                    "run flagsync doctor as the flagsync user; a damaged key must be restored from a backup (clients refuse a new one)",
                )
            }
        }
    }
    ok(NAME, found.join("; "))
}

/// Check 6: The SMTP server answers (EHLO, STARTTLS or TLS, the login): nothing
/// is sent.
fn smtp(config: &Config) -> Check {
    const NAME: &str = "smtp";
    let Some(smtp) = &config.smtp else {
        let reporting: Vec<&str> = config
            .feeds
            .iter()
            .filter(|f| !f.report_to.is_empty())
            .map(|f| f.name.as_str())
            .collect();
        if reporting.is_empty() {
            return ok(NAME, "not configured: no report emails are sent");
        }
        return warn(
            NAME,
            format!(
                "not configured, but feed(s) {} have report_to addresses: no report is sent",
                reporting.join(", ")
            ),
            format!("add an [smtp] table to {}", config.source),
        );
    };
    let mut settings = smtp.clone();
    settings.timeout = settings.timeout.min(SMTP_TIMEOUT);
    let server = format!(
        "{}:{} (security {}{})",
        smtp.host,
        smtp.port,
        smtp.security,
        if smtp.username.is_some() {
            ", with a login"
        } else {
            ""
        }
    );
    let fix = format!(
        "check that the mail server runs and is reachable from here (a firewall?), and host, port, security (none, starttls, tls), ca_file, username and password_file in the [smtp] table of {}",
        config.source
    );
    let mailer = match crate::mail::Mailer::new(&settings) {
        Ok(m) => m,
        Err(e) => return fail(NAME, format!("{server}: {e}"), fix),
    };
    match mailer.test_connection() {
        Ok(()) => ok(
            NAME,
            format!(
                "{server} answered{}; no mail was sent",
                if smtp.username.is_some() {
                    " and accepted the login"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => fail(NAME, format!("{server}: {e}"), fix),
    }
}

/// Check 7: The system clock is not before the newest run's start, nor absurd.
fn clock(store: Option<&Store>) -> Check {
    const NAME: &str = "clock";
    let now = jiff::Timestamp::now();
    let fix = "set the system clock right (timedatectl set-ntp true): schedules, overdue alerts, retention and run times depend on it";
    let year = now.to_zoned(jiff::tz::TimeZone::UTC).year();
    if year < 2020 {
        return warn(NAME, format!("the system time is {now}, before 2020"), fix);
    }
    let newest = store
        .and_then(|s| s.latest_runs(None, 1).ok())
        .and_then(|runs| runs.into_iter().next());
    if let Some(run) = newest {
        if let Ok(started) = run.started_at.parse::<jiff::Timestamp>() {
            if now.as_second() < started.as_second() {
                return warn(
                    NAME,
                    format!(
                        "the system time {} is before the start of run {} ({})",
                        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        run.run_id.unwrap_or_default(),
                        run.started_at
                    ),
                    fix,
                );
            }
        }
    }
    ok(NAME, format!("{} (UTC)", now.strftime("%Y-%m-%d %H:%M:%S")))
}

/// Check 8: Each feed: its last run, held runs, overdue, report emails that
/// were not delivered. The health is `worker::status`'s, as `flagsync
/// feeds` and the page show it.
fn feeds(config: &Config, store: Option<&ReadStore>) -> Vec<Check> {
    let Some(store) = store else {
        return vec![warn(
            "feeds",
            "not checked: the store could not be read",
            "see the store line above",
        )];
    };
    let messages = match store.get().map(Store::messages).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => return vec![fail("feeds", e.to_string(), store_fix(&e))],
    };
    let hooks = match store.get().map(Store::webhook_messages).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => return vec![fail("feeds", e.to_string(), store_fix(&e))],
    };
    let mut checks = Vec::new();
    for feed in &config.feeds {
        let health = match crate::worker::status::feed_health(config, feed, store.get()) {
            Ok(h) => h,
            Err(e) => {
                checks.push(fail(
                    format!("feed {}", feed.name),
                    e.to_string(),
                    store_fix(&e),
                ));
                continue;
            }
        };
        checks.push(last_run(&health));
        checks.push(held_runs(&health));
        checks.push(overdue(&health));
        checks.push(emails(&feed.name, &messages));
        if !feed.webhooks.is_empty() {
            checks.push(webhooks(&feed.name, &hooks));
        }
        if let Some(scim) = &health.scim {
            checks.push(scim_target(&feed.name, scim));
        }
    }
    checks
}

/// The SCIM target: failing, needing a full sync, or refusing people.
fn scim_target(feed: &str, scim: &crate::worker::status::ScimHealth) -> Check {
    let name = format!("feed {feed}: SCIM");
    match scim.state {
        "needs_full_sync" => warn(
            name,
            scim.text.clone(),
            format!("flagsync scim sync --feed {feed} reconciles the whole target"),
        ),
        "failing" => warn(
            name,
            scim.text.clone(),
            "fix the target or [feed.scim] (base_url, token_file); the push goes on by itself, in order",
        ),
        _ if scim.failed > 0 => warn(
            name,
            format!(
                "{}; {} refused by the target",
                scim.text,
                if scim.failed == 1 {
                    "1 person".to_string()
                } else {
                    format!("{} people", scim.failed)
                }
            ),
            format!("flagsync scim status --feed {feed} lists them with the target's reasons; fix the values at the source"),
        ),
        _ => ok(name, scim.text.clone()),
    }
}

/// Webhook messages still retried, and those given up since the feed's
/// last delivered one (as for emails).
fn webhooks(feed: &str, messages: &[crate::store::HookMessage]) -> Check {
    use crate::store::HookState;
    let name = format!("feed {feed}: webhooks");
    let of_feed: Vec<_> = messages.iter().filter(|m| m.feed == feed).collect();
    let last_delivered = of_feed
        .iter()
        .filter(|m| m.state == HookState::Delivered)
        .map(|m| m.id)
        .max();
    let failed: Vec<_> = of_feed
        .iter()
        .filter(|m| match m.state {
            HookState::Failing => true,
            HookState::GaveUp => last_delivered.is_none_or(|d| m.id > d),
            HookState::Queued | HookState::Delivered => false,
        })
        .collect();
    let Some(last) = failed.iter().max_by_key(|m| m.id) else {
        let queued = of_feed
            .iter()
            .filter(|m| m.state == HookState::Queued)
            .count();
        return ok(
            name,
            format!("{} kept, {queued} queued, none failing", of_feed.len()),
        );
    };
    let gave_up = failed
        .iter()
        .filter(|m| m.state == HookState::GaveUp)
        .count();
    warn(
        name,
        format!(
            "{} not delivered ({gave_up} given up, {} still retried); the last ({} to {}): {}",
            failed.len(),
            failed.len() - gave_up,
            last.event,
            crate::config::shown_url(&last.url),
            last.last_error.as_deref().unwrap_or("no error recorded")
        ),
        "flagsync webhooks test --feed FEED shows each receiver's answer now; failing messages are retried until the webhook's retry_for; `flagsync runs show ID` shows a run's deliveries",
    )
}

fn last_run(f: &crate::worker::status::FeedHealth) -> Check {
    let name = format!("feed {}: last run", f.feed);
    match &f.last_run {
        None => ok(name, "none yet"),
        Some(r) => {
            let id = r.run_id.unwrap_or_default();
            let found = format!("run {id} {} ({}, {})", r.state, r.file, r.finished_local);
            if r.state == "failed" {
                warn(
                    name,
                    format!("{found}: {}", f.health.text),
                    format!("flagsync runs show {id} says why; fix the file at the source and send it again"),
                )
            } else {
                ok(name, found)
            }
        }
    }
}

fn held_runs(f: &crate::worker::status::FeedHealth) -> Check {
    let name = format!("feed {}: held runs", f.feed);
    let Some(first) = f.held_runs.first() else {
        return ok(name, "none waiting");
    };
    let ids: Vec<String> = f.held_runs.iter().map(u64::to_string).collect();
    warn(
        name,
        format!("{} waiting for a decision: run {}", ids.len(), ids.join(", ")),
        format!("flagsync runs show {first}, then flagsync runs confirm {first} or flagsync runs reject {first}"),
    )
}

fn overdue(f: &crate::worker::status::FeedHealth) -> Check {
    let name = format!("feed {}: arrivals", f.feed);
    let last = match (&f.last_file_local, &f.watched_since_local) {
        (Some(at), _) => format!("last file {at}"),
        (None, Some(since)) => format!("no file yet (watched since {since})"),
        (None, None) => "no file yet".to_string(),
    };
    let found = format!("{last}; expected every {}", f.expect_every);
    if f.overdue {
        warn(
            name,
            format!("OVERDUE: {found}"),
            "check the customer's export job and its sFTP login (flagsync accounts list shows the last logins)",
        )
    } else {
        ok(name, found)
    }
}

/// Messages still retried, and those given up since the feed's last
/// delivered one (an old outage that mail has recovered from is no
/// longer news).
fn emails(feed: &str, messages: &[crate::store::Message]) -> Check {
    let name = format!("feed {feed}: report emails");
    let of_feed: Vec<&crate::store::Message> = messages.iter().filter(|m| m.feed == feed).collect();
    let last_sent = of_feed
        .iter()
        .filter(|m| m.state == Delivery::Sent)
        .map(|m| m.id)
        .max();
    let failed: Vec<&&crate::store::Message> = of_feed
        .iter()
        .filter(|m| match m.state {
            Delivery::Failing => true,
            Delivery::GaveUp => last_sent.is_none_or(|sent| m.id > sent),
            Delivery::Queued | Delivery::Sent => false,
        })
        .collect();
    let Some(last) = failed.iter().max_by_key(|m| m.id) else {
        let sent = of_feed.iter().filter(|m| m.state == Delivery::Sent).count();
        return ok(
            name,
            format!("{} kept, {sent} sent, none failing", of_feed.len()),
        );
    };
    let gave_up = failed
        .iter()
        .filter(|m| m.state == Delivery::GaveUp)
        .count();
    warn(
        name,
        format!(
            "{} not delivered ({gave_up} given up, {} still retried); the last (message {}, {}): {}",
            failed.len(),
            failed.len() - gave_up,
            last.id,
            last.subject,
            last.last_error.as_deref().unwrap_or("no error recorded")
        ),
        "check the smtp line above (and flagsync mail test --to ADDRESS); failing messages are retried until [smtp] retry_for; `flagsync runs show ID` shows a run's emails",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_fails_under_100_mib_and_warns_under_1_gib_or_twice_the_largest_file() {
        const MIB: u64 = 1 << 20;
        let status = |free, largest| space_verdict(free, largest).0;
        assert_eq!(status(99 * MIB, 0), Status::Fail);
        assert_eq!(status(100 * MIB, 0), Status::Warn);
        assert_eq!(status(1023 * MIB, 0), Status::Warn);
        assert_eq!(status(1024 * MIB, 0), Status::Ok);
        assert_eq!(status(3 << 30, 2 << 30), Status::Warn, "a 2 GiB file twice");
        assert_eq!(status(4 << 30, 2 << 30), Status::Ok);
        assert_eq!(
            status(50 * MIB, 10 << 30),
            Status::Fail,
            "the worse of both"
        );
    }

    #[test]
    fn an_address_on_every_interface_is_asked_on_loopback() {
        let asked = |a: &str| reachable(a.parse().expect("address")).to_string();
        assert_eq!(asked("0.0.0.0:2222"), "127.0.0.1:2222");
        assert_eq!(asked("[::]:8080"), "[::1]:8080");
        assert_eq!(asked("192.0.2.7:22"), "192.0.2.7:22");
    }
}
