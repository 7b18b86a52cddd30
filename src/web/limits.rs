//! What keeps slow or many connections from tiring out the web server:
//! fixed limits (no settings), counted in the accept loop (`super::serve`).
//!
//! - A request's head must arrive within [`HEADER_TIMEOUT`] of the
//!   connection opening or going idle (hyper's `header_read_timeout`, which
//!   hyper also starts when a kept-alive connection goes idle): a slowloris
//!   client, a connection that never sends anything and an idle keep-alive
//!   connection are all closed after it.
//! - At most [`MAX_CONNECTIONS_PER_ADDRESS`] connections from one address
//!   (an IPv6 address counts by its /64) and [`max_connections`] in all;
//!   a connection over either is closed at once, before anything is read.
//!   Connections already open are never closed for a newcomer, so someone
//!   else's flood does not touch a logged-in user's connections, and the
//!   per-address cap keeps one address from taking the total.
//! - At most [`CONCURRENT_PASSWORD_CHECKS`] login password checks at once;
//!   the login lockout (failures per address and per name) is in
//!   `crate::auth::lockout`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The head of a request (request line and headers) must arrive within
/// this long, counted from the connection's start or from the end of its
/// previous response. Browsers and API clients send a head in one packet
/// within milliseconds; 10 s leaves room for a very slow link, and a
/// slowloris connection holds its slot for no longer. Browsers reopen a
/// kept-alive connection that was closed while idle without the user
/// noticing.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS handshake must finish within this long.
pub(super) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once from one address. A browser opens at most 6 to a
/// host, an API client or a load tester a few dozen; 64 covers an office
/// of administrators behind one NAT address. One address then holds at
/// most 1/16 of [`MAX_CONNECTIONS`].
pub(super) const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Connections at once in all (less when the open-files limit is low, see
/// [`max_connections`]). An idle connection costs a task and a few KiB of
/// buffers: 1024 of them are a few MB, and the status page of one
/// organisation never needs as many.
pub(super) const MAX_CONNECTIONS: usize = 1024;
/// How long open connections get to finish their request when the server
/// stops (`flagsync serve` waits 5 s for the web server).
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// Web password checks (argon2id, 19 MiB and ~20 ms each) at once; more
/// logins wait their turn. Four as on the sFTP side: 76 MiB at most.
pub(super) const CONCURRENT_PASSWORD_CHECKS: usize = 4;
pub(super) static PASSWORD_CHECKS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(CONCURRENT_PASSWORD_CHECKS);
/// Refused connections are logged at most once in this long (with a count).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// [`MAX_CONNECTIONS`], or half the process's open-files limit when that is
/// lower: the web page must never take the file descriptors the sFTP
/// server and the store need.
pub(super) fn max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    // `None` is "unlimited".
    let Some(soft) = limit.current else {
        return MAX_CONNECTIONS;
    };
    let half = usize::try_from(soft / 2).unwrap_or(MAX_CONNECTIONS);
    MAX_CONNECTIONS.min(half).max(MAX_CONNECTIONS_PER_ADDRESS)
}

/// What a connection counts against: its address, or for IPv6 its /64
/// (shared with the sFTP side: `auth::address_key`).
pub(super) fn address_key(ip: IpAddr) -> IpAddr {
    crate::auth::address_key(ip)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Total,
    Address,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    refused_since_log: usize,
    last_log: Option<Instant>,
}

/// The open connections, counted.
pub(super) struct Connections {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

/// A counted connection; dropping it gives the slot back.
pub(super) struct Slot {
    connections: Arc<Connections>,
    key: IpAddr,
}

impl Connections {
    pub(super) fn new(max_total: usize, max_per_address: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a new connection from `ip`, or why there is none.
    pub(super) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = address_key(ip);
        let mut c = super::lock(&self.counts);
        let from_here = c.per_address.get(&key).copied().unwrap_or(0);
        let refused = if c.total >= self.max_total {
            Some(Refused::Total)
        } else if from_here >= self.max_per_address {
            Some(Refused::Address)
        } else {
            None
        };
        if let Some(why) = refused {
            c.refused_since_log += 1;
            let now = Instant::now();
            if c.last_log
                .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
            {
                let n = std::mem::take(&mut c.refused_since_log);
                c.last_log = Some(now);
                match why {
                    Refused::Total => tracing::warn!(
                        %ip, refused = n, max = self.max_total,
                        "web connections refused: the server has its maximum of connections"
                    ),
                    Refused::Address => tracing::warn!(
                        %ip, refused = n, max = self.max_per_address,
                        "web connections refused: too many connections from this address"
                    ),
                }
            }
            return Err(why);
        }
        c.total += 1;
        *c.per_address.entry(key).or_default() += 1;
        Ok(Slot {
            connections: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        super::lock(&self.counts).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = super::lock(&self.connections.counts);
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

    #[test]
    fn per_address_and_total_caps_refuse_and_slots_come_back() {
        let conns = Connections::new(5, 3);
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
        let conns = Connections::new(100, 2);
        let _a = conns.try_take(ip("2001:db8:1:2::1")).unwrap();
        let _b = conns.try_take(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            conns.try_take(ip("2001:db8:1:2::77")).err(),
            Some(Refused::Address)
        );
        assert!(conns.try_take(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_total_stays_below_the_open_files_limit() {
        let n = max_connections();
        assert!((MAX_CONNECTIONS_PER_ADDRESS..=MAX_CONNECTIONS).contains(&n));
    }
}
