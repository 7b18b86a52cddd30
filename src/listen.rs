//! The accept loop the sFTP server and the web page share, and the
//! connection caps it counts.
//!
//! What it guarantees:
//! - A connection is counted against its caps ([`Connections`]: in all,
//!   and per address, an IPv6 address by its /64) before anything is read
//!   from it; over a cap it is closed at once. Connections already open
//!   are never closed for a newcomer.
//! - It never stops listening on an accept error (EMFILE and friends): it
//!   waits a little, longer each time up to a second, and accepts again.
//! - At shutdown the listener closes at once (new clients are refused, not
//!   left waiting), the connections get a grace to finish, and a warning
//!   says when some were still open after it.
//!
//! What a connection is admitted by and how it is served (SSH, TLS, HTTP)
//! is the caller's: `sftp::run` and `web::listen`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refused connections are logged at most once in this long (with a count).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The first wait after an accept error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What one side's accept loop says in the log, and how long it waits for
/// its connections at shutdown.
pub(crate) struct Settings {
    /// Logged when an accept fails.
    pub accept_failed: &'static str,
    /// How long open connections get to finish at shutdown.
    pub grace: Duration,
    /// Logged when connections were still open after [`Settings::grace`].
    pub still_open: &'static str,
}

/// Accepts connections on `listener` until `shutdown`. Each is first put
/// to `admit` (caps, allow-lists: `None` closes it at once); an admitted
/// one is served by `serve` with what `admit` gave it, on a task of its
/// own. Then waits for those tasks as [`Settings`] says.
pub(crate) async fn accept_loop<T, A, S, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    settings: Settings,
    mut admit: A,
    mut serve: S,
) where
    A: FnMut(SocketAddr) -> Option<T>,
    S: FnMut(TcpStream, SocketAddr, T) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    while let Some((stream, peer)) = accept(&listener, &shutdown, settings.accept_failed).await {
        // Not admitted: the stream is dropped here, closed unread.
        if let Some(ticket) = admit(peer) {
            tracker.spawn(serve(stream, peer, ticket));
        }
    }
    // New clients are refused from now on, not left waiting.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(settings.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("{}", settings.still_open);
    }
}

/// The next connection, or `None` at `shutdown`. An accept error (EMFILE
/// and friends) is logged and waited out, never the end of listening: a
/// burst of them must not stop the server, and the growing wait keeps a
/// lasting one from filling the log.
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    failed: &str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "{failed}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Total,
    Address,
}

/// What [`Connections`] calls its refusals, and who logs them.
pub(crate) struct Wording {
    /// Whose connections: "web", "sFTP".
    pub label: &'static str,
    /// Why, when the total is reached.
    pub total: &'static str,
    /// Why, when the address has its maximum.
    pub address: &'static str,
    /// Whether [`Connections::try_take`] logs refusals itself, at most
    /// once every [`LOG_EVERY`] with a count; otherwise the caller does
    /// (the sFTP side logs through its own per-address refusal log).
    pub logged_here: bool,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    refused_since_log: usize,
    last_log: Option<Instant>,
}

/// The open connections, counted.
pub(crate) struct Connections {
    max_total: usize,
    max_per_address: usize,
    wording: Wording,
    counts: Mutex<Counts>,
}

/// A counted connection; dropping it gives the slot back.
pub(crate) struct Slot {
    connections: Arc<Connections>,
    key: IpAddr,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    pub(crate) fn new(max_total: usize, max_per_address: usize, wording: Wording) -> Arc<Self> {
        Arc::new(Connections {
            max_total,
            max_per_address,
            wording,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a new connection from `ip`, or why there is none.
    /// Counted by `auth::address_key` (an IPv6 address by its /64).
    pub(crate) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = crate::auth::address_key(ip);
        let mut c = lock(&self.counts);
        let from_here = c.per_address.get(&key).copied().unwrap_or(0);
        if c.total >= self.max_total {
            return Err(self.refuse(&mut c, ip, Refused::Total));
        }
        if from_here >= self.max_per_address {
            return Err(self.refuse(&mut c, ip, Refused::Address));
        }
        c.total += 1;
        *c.per_address.entry(key).or_default() += 1;
        Ok(Slot {
            connections: self.clone(),
            key,
        })
    }

    /// The reason for `why` in the log.
    pub(crate) fn reason(&self, why: Refused) -> &'static str {
        match why {
            Refused::Total => self.wording.total,
            Refused::Address => self.wording.address,
        }
    }

    /// Counts the refusal and logs it if it is time (see [`Wording`]).
    fn refuse(&self, c: &mut Counts, ip: IpAddr, why: Refused) -> Refused {
        if !self.wording.logged_here {
            return why;
        }
        c.refused_since_log += 1;
        let now = Instant::now();
        if c.last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            let n = std::mem::take(&mut c.refused_since_log);
            c.last_log = Some(now);
            let max = match why {
                Refused::Total => self.max_total,
                Refused::Address => self.max_per_address,
            };
            tracing::warn!(
                %ip, refused = n, max,
                "{} connections refused: {}", self.wording.label, self.reason(why)
            );
        }
        why
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.connections.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_address.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn connections(max_total: usize, max_per_address: usize) -> Arc<Connections> {
        let wording = Wording {
            label: "test",
            total: "the server has its maximum of connections",
            address: "too many connections from this address",
            logged_here: true,
        };
        Connections::new(max_total, max_per_address, wording)
    }

    #[test]
    fn per_address_and_total_caps_refuse_and_slots_come_back() {
        let conns = connections(5, 3);
        let a: Vec<Slot> = (0..3)
            .map(|_| conns.try_take(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(conns.try_take(ip("10.0.0.1")).err(), Some(Refused::Address));
        // The same address written as IPv4-mapped IPv6 counts as itself.
        assert_eq!(
            conns.try_take(ip("::ffff:10.0.0.1")).err(),
            Some(Refused::Address)
        );
        let b1 = conns.try_take(ip("10.0.0.2")).unwrap();
        let _b2 = conns.try_take(ip("10.0.0.2")).unwrap();
        assert_eq!(conns.try_take(ip("10.0.0.3")).err(), Some(Refused::Total));
        assert_eq!(conns.open(), 5);
        drop(b1);
        let _c = conns.try_take(ip("10.0.0.3")).unwrap();
        drop(a);
        assert_eq!(conns.open(), 2);
        for _ in 0..3 {
            std::mem::forget(conns.try_take(ip("10.0.0.1")).unwrap());
        }
        assert_eq!(conns.open(), 5);
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64() {
        let conns = connections(100, 2);
        let _a = conns.try_take(ip("2001:db8:1:2::1")).unwrap();
        let _b = conns.try_take(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            conns.try_take(ip("2001:db8:1:2::77")).err(),
            Some(Refused::Address)
        );
        assert!(conns.try_take(ip("2001:db8:1:3::1")).is_ok());
    }
}
