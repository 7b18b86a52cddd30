//! What keeps slow or many connections from tiring out the web server:
//! fixed limits (no settings), counted by the shared accept loop
//! (`crate::listen`, called from `super::listen::serve`).
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

use std::net::IpAddr;
use std::time::Duration;

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

/// The connection caps above, for the accept loop; a refusal is logged
/// there, at most every few seconds with a count.
pub(super) fn connections() -> std::sync::Arc<crate::listen::Connections> {
    crate::listen::Connections::new(
        max_connections(),
        MAX_CONNECTIONS_PER_ADDRESS,
        crate::listen::Wording {
            label: "web",
            total: "the server has its maximum of connections",
            address: "too many connections from this address",
            logged_here: true,
        },
    )
}

/// What a connection or a login counts against: its address, or for IPv6
/// its /64 (shared with the sFTP side: `auth::address_key`).
pub(super) fn address_key(ip: IpAddr) -> IpAddr {
    crate::auth::address_key(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_stays_below_the_open_files_limit() {
        let n = max_connections();
        assert!((MAX_CONNECTIONS_PER_ADDRESS..=MAX_CONNECTIONS).contains(&n));
    }
}
