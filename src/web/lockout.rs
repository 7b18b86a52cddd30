//! The web login's lockout. Failed logins count per address (an IPv6 /64
//! as one, `limits::address_key`) and per administrator name:
//! [`ADDRESS_FAILURES`] from one address, or [`ACCOUNT_FAILURES`] for one
//! name from anywhere, within [`LOGIN_WINDOW`] refuse further logins from
//! that address (for that name) for [`LOGIN_LOCKOUT`], even with the right
//! password.
//!
//! - An attempt is reserved before its password is checked, and the check
//!   and the count are one step under one lock: attempts in flight count
//!   as failures until they are settled, so a burst of concurrent logins
//!   gets at most the limit of password checks, never more.
//! - A success never clears failures: a right guess between wrong ones
//!   does not buy the guesser new tries.
//! - An attempt that never settles (the client went away during the check)
//!   counts as failed.
//! - The name's limit is higher than the address's: it slows guessing from
//!   many addresses, while one address cannot lock an administrator out
//!   alone.
//! - Memory is bounded: at most [`MAX_TRACKED`] addresses and as many
//!   names are kept. When a table is full, idle entries (nothing failed
//!   within the window, nothing under way, not locked) are dropped; if
//!   none is idle, a new address or name is refused as if locked out
//!   (fail closed) until one is: evicting a live record would let an
//!   attacker with many addresses reset a name's failure count.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed logins from one address within [`LOGIN_WINDOW`] that lock it
/// out for [`LOGIN_LOCKOUT`].
pub(super) const ADDRESS_FAILURES: usize = 5;
/// Failed logins for one administrator name, from any address.
pub(super) const ACCOUNT_FAILURES: usize = 20;
pub(super) const LOGIN_WINDOW: Duration = Duration::from_secs(600);
pub(super) const LOGIN_LOCKOUT: Duration = Duration::from_secs(900);
/// Addresses (and names) tracked at once: a few hundred KiB.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
struct Record {
    failures: Vec<Instant>,
    in_flight: usize,
    locked_until: Option<Instant>,
}

impl Record {
    fn forget_old(&mut self, now: Instant) {
        self.failures
            .retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if self.locked_until.is_some_and(|until| now >= until) {
            self.locked_until = None;
        }
    }

    fn refuses(&self, limit: usize) -> bool {
        self.locked_until.is_some() || self.failures.len() + self.in_flight >= limit
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.failures.is_empty() && self.locked_until.is_none()
    }
}

/// Records by key, at most [`MAX_TRACKED`].
struct Tracked<K> {
    limit: usize,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Tracked<K> {
    fn new(limit: usize) -> Self {
        Tracked {
            limit,
            records: HashMap::new(),
        }
    }

    fn refuses(&mut self, key: &K, now: Instant) -> bool {
        let limit = self.limit;
        self.records.get_mut(key).is_some_and(|r| {
            r.forget_old(now);
            r.refuses(limit)
        })
    }

    /// Whether `key` has a record or room for one (invariant: memory
    /// bounded, failing closed).
    fn has_room_for(&mut self, key: &K, now: Instant) -> bool {
        self.records.contains_key(key) || self.make_room(now)
    }

    fn reserve(&mut self, key: &K) {
        self.records.entry(key.clone()).or_default().in_flight += 1;
    }

    /// Ends an attempt; `true` when its failure locked the key out.
    fn settle(&mut self, key: &K, failed: bool, now: Instant) -> bool {
        let Some(r) = self.records.get_mut(key) else {
            return false;
        };
        r.in_flight = r.in_flight.saturating_sub(1);
        r.forget_old(now);
        if !failed {
            return false;
        }
        r.failures.push(now);
        if r.failures.len() >= self.limit && r.locked_until.is_none() {
            r.failures.clear();
            r.locked_until = Some(now + LOGIN_LOCKOUT);
            return true;
        }
        false
    }

    /// Room for one more record: idle ones are dropped; live ones never
    /// (`false` when all are live).
    fn make_room(&mut self, now: Instant) -> bool {
        if self.records.len() < MAX_TRACKED {
            return true;
        }
        self.records.retain(|_, r| {
            r.forget_old(now);
            !r.is_idle()
        });
        self.records.len() < MAX_TRACKED
    }
}

struct Books {
    addresses: Tracked<IpAddr>,
    names: Tracked<String>,
}

/// The web login's failure counts (see the module's notes).
pub(super) struct Lockout {
    books: Mutex<Books>,
}

/// A login attempt allowed to check its password. Dropped unsettled, it
/// counts as failed.
pub(super) struct Attempt {
    lockout: Arc<Lockout>,
    address: IpAddr,
    name: String,
    settled: bool,
}

/// Administrator names are at most 64 characters: a longer name cannot
/// exist, and its key need not be longer.
fn name_key(name: &str) -> String {
    crate::sftp::refusals::shown_name(name).to_string()
}

impl Lockout {
    pub(super) fn new() -> Arc<Lockout> {
        Arc::new(Lockout {
            books: Mutex::new(Books {
                addresses: Tracked::new(ADDRESS_FAILURES),
                names: Tracked::new(ACCOUNT_FAILURES),
            }),
        })
    }

    /// An attempt to log in as `name` from `ip`, or `None` while either is
    /// locked out or has as many attempts failed and in flight as its
    /// limit, or is new while its table is full of live records.
    pub(super) fn try_attempt(self: &Arc<Self>, ip: IpAddr, name: &str) -> Option<Attempt> {
        let address = super::limits::address_key(ip);
        let name = name_key(name);
        let now = Instant::now();
        let mut books = super::lock(&self.books);
        if books.addresses.refuses(&address, now) || books.names.refuses(&name, now) {
            return None;
        }
        if !books.addresses.has_room_for(&address, now) || !books.names.has_room_for(&name, now) {
            tracing::warn!("the web login's lockout table is full of recent failures: logins from new addresses or for new names are refused for a while");
            return None;
        }
        books.addresses.reserve(&address);
        books.names.reserve(&name);
        Some(Attempt {
            lockout: self.clone(),
            address,
            name,
            settled: false,
        })
    }

    fn settle(&self, attempt: &Attempt, failed: bool) {
        if failed {
            crate::metrics::count(&crate::metrics::WEB_FAILED_LOGINS);
        }
        let now = Instant::now();
        let mut books = super::lock(&self.books);
        if books.addresses.settle(&attempt.address, failed, now) {
            tracing::warn!(address = %attempt.address, "web logins from this address are locked out for a while");
        }
        if books.names.settle(&attempt.name, failed, now) {
            tracing::warn!(
                user = %crate::import::printable(&attempt.name),
                "web logins as this administrator are locked out for a while (failures from several addresses)"
            );
        }
    }
}

impl Attempt {
    pub(super) fn succeeded(mut self) {
        self.settled = true;
        self.lockout.settle(&self, false);
    }

    /// The password was never checked (the server could not): no failure.
    pub(super) fn withdrawn(self) {
        self.succeeded();
    }

    pub(super) fn failed(mut self) {
        self.settled = true;
        self.lockout.settle(&self, true);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.lockout.settle(self, true);
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
    fn attempts_in_flight_count_against_the_limit() {
        let lockout = Lockout::new();
        let a = ip("10.0.0.1");
        let held: Vec<Attempt> = (0..ADDRESS_FAILURES)
            .map(|_| lockout.try_attempt(a, "boss").expect("under the limit"))
            .collect();
        assert!(lockout.try_attempt(a, "boss").is_none());
        // Successes free their places but never clear failures.
        for attempt in held {
            attempt.succeeded();
        }
        for _ in 0..ADDRESS_FAILURES - 1 {
            lockout.try_attempt(a, "boss").unwrap().failed();
        }
        lockout.try_attempt(a, "boss").unwrap().succeeded();
        lockout.try_attempt(a, "boss").unwrap().failed();
        assert!(lockout.try_attempt(a, "boss").is_none(), "locked out");
        assert!(lockout.try_attempt(ip("10.0.0.2"), "boss").is_some());
    }

    #[test]
    fn an_attempt_dropped_unsettled_counts_as_failed() {
        let lockout = Lockout::new();
        let a = ip("10.0.0.1");
        for _ in 0..ADDRESS_FAILURES {
            drop(lockout.try_attempt(a, "boss").unwrap());
        }
        assert!(lockout.try_attempt(a, "boss").is_none());
    }

    #[test]
    fn an_ipv6_host_is_locked_out_by_its_64() {
        let lockout = Lockout::new();
        for i in 0..ADDRESS_FAILURES {
            let from = ip(&format!("2001:db8:1:2::{}", i + 1));
            lockout.try_attempt(from, "boss").unwrap().failed();
        }
        assert!(lockout
            .try_attempt(ip("2001:db8:1:2::99"), "other")
            .is_none());
        assert!(lockout
            .try_attempt(ip("2001:db8:1:3::1"), "other")
            .is_some());
    }

    #[test]
    fn a_name_is_locked_out_after_failures_from_many_addresses() {
        let lockout = Lockout::new();
        for i in 0..ACCOUNT_FAILURES {
            let from = ip(&format!("10.1.{}.{}", i / 200, i % 200 + 1));
            lockout.try_attempt(from, "boss").unwrap().failed();
        }
        assert!(lockout.try_attempt(ip("10.9.9.9"), "boss").is_none());
        assert!(lockout.try_attempt(ip("10.9.9.9"), "other").is_some());
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn the_books_stay_bounded_and_fail_closed_when_full_of_live_records() {
        let lockout = Lockout::new();
        let mut refused = 0;
        for i in 0..(MAX_TRACKED + 50) as u32 {
            match lockout.try_attempt(v4(i), &format!("name{i}")) {
                Some(attempt) => attempt.failed(),
                None => refused += 1,
            }
        }
        assert_eq!(refused, 50, "new keys are refused while all are live");
        {
            let books = super::super::lock(&lockout.books);
            assert!(books.addresses.records.len() <= MAX_TRACKED);
            assert!(books.names.records.len() <= MAX_TRACKED);
        }
        // Keys already tracked still get their attempts.
        assert!(lockout.try_attempt(v4(1), "name1").is_some());
    }

    #[test]
    fn many_addresses_cannot_reset_a_names_failures_by_filling_the_books() {
        let lockout = Lockout::new();
        let boss_from = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        for i in 0..ACCOUNT_FAILURES as u32 - 1 {
            lockout.try_attempt(boss_from(i), "boss").unwrap().failed();
        }
        // Fill the names' table with live records from other addresses.
        for i in 0..MAX_TRACKED as u32 {
            if let Some(attempt) = lockout.try_attempt(v4(i), &format!("filler{i}")) {
                attempt.failed();
            }
        }
        lockout
            .try_attempt(boss_from(0), "boss")
            .expect("the address and the name are still tracked")
            .failed();
        assert!(
            lockout.try_attempt(boss_from(1), "boss").is_none(),
            "the name's failures were kept: it is locked out"
        );
    }
}
