//! The lockout book of sFTP and the web page: who may have a password
//! checked now. Each side has its own [`Lockout`] with its own
//! [`LockoutPolicy`] (sFTP's from `[sftp]`, the page's fixed).
//!
//! The bookkeeping ([`Book`]) is pure, with the time passed in, so tests
//! need no clock; [`Lockout`] puts it behind a lock, reads the clock and
//! hands out the [`PasswordCheck`] guards.
//!
//! Invariants:
//! 1. Failed logins count per address and per account (for the page: per
//!    administrator name), each against its own limit within the window.
//!    A locked address has no password checked; a locked account has no
//!    password checked from anywhere. Other ways in are the caller's: sFTP
//!    lets a locked account's keys in (a key cannot be guessed, so an
//!    attacker cannot lock a feed's key-based uploads out).
//! 2. A success never clears failures: a right password (one's own
//!    account) between guesses does not buy the guesser new tries.
//! 3. A check is admitted and counted in one step ([`Lockout::begin`]):
//!    checks under way count against both limits, so a burst of concurrent
//!    guesses gets at most the limit of checks, never more.
//! 4. A check never settled (its client went away during it) counts as
//!    failed: the guess was made, and a check left under way for ever
//!    would lower the limit for good. One the server could not make
//!    ([`PasswordCheck::withdraw`]) counts as nothing: an outage must not
//!    lock anyone out.
//! 5. Failures before a password check (no such account, an address the
//!    account does not allow, a wrong key) count for the address only
//!    ([`Lockout::record_failure`]), and not while it is locked: such an
//!    attempt was refused before anything was checked.
//! 6. [`Refused::TooManyAtOnce`] (a caller may wait its turn) only while
//!    checks under way could still reach a limit; failures alone at a
//!    limit (they pile up while a lockout runs, from checks that were
//!    under way) lock again, so a caller never waits for a turn that
//!    cannot come.
//! 7. Memory is bounded: at most [`MAX_TRACKED`] addresses and as many
//!    accounts. A full table drops idle records (nothing failed within the
//!    window, nothing under way, not locked); when none is idle, a new
//!    address or account has no password checked ([`Refused::Full`]) until
//!    one is: evicting a live record would let an attacker with many
//!    addresses reset an account's failures. The log says so at most once
//!    a minute.
//! 8. Addresses count by [`address_key`]: an IPv6 client by its /64 (one
//!    host can pick any address in it), IPv4 by address.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::address_key;

/// Addresses (and accounts) tracked at once: a few hundred KiB.
pub const MAX_TRACKED: usize = 10_000;
/// A full table is said in the log at most this often: every refusal it
/// causes is an attacker's to make.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures from one address within `window` that lock it.
    pub address_failures: usize,
    /// Failures for one account, from any addresses, that lock it.
    pub account_failures: usize,
    pub window: Duration,
    pub duration: Duration,
}

/// What one table counts against.
#[derive(Debug, Clone, Copy)]
struct Limits {
    failures: usize,
    window: Duration,
    duration: Duration,
}

#[derive(Debug, Default)]
struct Record {
    failures: VecDeque<Instant>,
    /// Checks admitted and not settled yet.
    in_flight: usize,
    locked_until: Option<Instant>,
}

impl Record {
    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// A failure exactly `window` old still counts: the longer memory is
    /// the safer one.
    fn forget_old(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > window)
        {
            self.failures.pop_front();
        }
    }

    /// Failures so far plus checks under way: what a new check would make.
    fn attempts(&self) -> usize {
        self.failures.len() + self.in_flight
    }

    /// The failures that led to a lockout are spent: after it the record
    /// starts afresh.
    fn lock(&mut self, now: Instant, limits: &Limits) {
        self.failures.clear();
        self.locked_until = Some(now + limits.duration);
    }

    /// `true` when this failure locked the record. Failures while it is
    /// locked still count (invariant 6).
    fn fail(&mut self, now: Instant, limits: &Limits) -> bool {
        self.failures.push_back(now);
        let locks = !self.is_locked(now) && self.failures.len() >= limits.failures;
        if locks {
            self.lock(now, limits);
        }
        locks
    }

    /// Invariant 6; `true` when the record is locked.
    fn lock_if_at_limit(&mut self, now: Instant, limits: &Limits) -> bool {
        if !self.is_locked(now) && self.failures.len() >= limits.failures {
            self.lock(now, limits);
        }
        self.is_locked(now)
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && !self.is_locked(now) && self.failures.is_empty()
    }
}

/// Why a table takes no further check for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Locked,
    Busy,
    Full,
}

/// One table of records (by address or by account), at most
/// [`MAX_TRACKED`].
#[derive(Debug)]
struct Table<K> {
    limits: Limits,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(failures: usize, policy: &LockoutPolicy) -> Self {
        Table {
            limits: Limits {
                failures,
                window: policy.window,
                duration: policy.duration,
            },
            records: HashMap::new(),
        }
    }

    fn is_locked(&self, key: &K, now: Instant) -> bool {
        self.records.get(key).is_some_and(|r| r.is_locked(now))
    }

    /// Whether one more check for `key` may start (invariants 3, 6, 7).
    fn admits(&mut self, key: &K, now: Instant) -> Result<(), Closed> {
        let limits = self.limits;
        let Some(record) = self.records.get_mut(key) else {
            return self.make_room(now).then_some(()).ok_or(Closed::Full);
        };
        record.forget_old(now, limits.window);
        if record.lock_if_at_limit(now, &limits) {
            return Err(Closed::Locked);
        }
        if record.attempts() >= limits.failures {
            return Err(Closed::Busy);
        }
        Ok(())
    }

    /// Counts a check admitted by [`Table::admits`] as under way.
    fn reserve(&mut self, key: &K) {
        self.records.entry(key.clone()).or_default().in_flight += 1;
    }

    /// Ends a check; `true` when its failure locked the key.
    fn settle(&mut self, key: &K, failed: bool, now: Instant) -> bool {
        let Some(record) = self.records.get_mut(key) else {
            return false;
        };
        record.in_flight = record.in_flight.saturating_sub(1);
        record.forget_old(now, self.limits.window);
        failed && record.fail(now, &self.limits)
    }

    /// A failure without a check (invariant 5); `true` when it locked the
    /// key. Not counted with no room for a new key: the key then has no
    /// check either (invariant 7).
    fn record_failure(&mut self, key: &K, now: Instant) -> bool {
        if !self.records.contains_key(key) && !self.make_room(now) {
            return false;
        }
        let record = self.records.entry(key.clone()).or_default();
        record.forget_old(now, self.limits.window);
        !record.is_locked(now) && record.fail(now, &self.limits)
    }

    /// Room for one more record: idle ones are dropped, live ones never
    /// (`false` when all are live).
    fn make_room(&mut self, now: Instant) -> bool {
        if self.records.len() < MAX_TRACKED {
            return true;
        }
        let window = self.limits.window;
        self.records.retain(|_, r| {
            r.forget_old(now, window);
            !r.is_idle(now)
        });
        self.records.len() < MAX_TRACKED
    }
}

/// Why a password may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    AddressLocked,
    AccountLocked,
    /// Enough checks are under way to reach a limit if they all fail:
    /// the caller may wait for one of them to end.
    TooManyAtOnce,
    /// The address or account is new and its table is full of live
    /// records (invariant 7).
    Full,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::AddressLocked => "the address is locked out after failed logins",
            Refused::AccountLocked => {
                "the account is locked for password logins after failed logins"
            }
            Refused::TooManyAtOnce => {
                "too many password checks at once for this address or account"
            }
            Refused::Full => {
                "the lockout's table is full of recent failures: new addresses and accounts have no password checked until entries age out"
            }
        }
    }
}

impl Closed {
    fn refused(self, locked: Refused) -> Refused {
        match self {
            Closed::Locked => locked,
            Closed::Busy => Refused::TooManyAtOnce,
            Closed::Full => Refused::Full,
        }
    }
}

/// What a failure locked, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Locked {
    address: bool,
    account: bool,
}

/// The bookkeeping, time passed in.
#[derive(Debug)]
struct Book {
    addresses: Table<IpAddr>,
    accounts: Table<String>,
}

impl Book {
    fn new(policy: LockoutPolicy) -> Book {
        Book {
            addresses: Table::new(policy.address_failures, &policy),
            accounts: Table::new(policy.account_failures, &policy),
        }
    }

    fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.addresses.is_locked(&address_key(ip), now)
    }

    /// Admits a check and counts it as under way in one step (invariant
    /// 3); [`Book::end`] must follow.
    fn begin(&mut self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Refused> {
        let (address, account) = (address_key(ip), account.to_string());
        self.addresses
            .admits(&address, now)
            .map_err(|c| c.refused(Refused::AddressLocked))?;
        self.accounts
            .admits(&account, now)
            .map_err(|c| c.refused(Refused::AccountLocked))?;
        self.addresses.reserve(&address);
        self.accounts.reserve(&account);
        Ok(())
    }

    /// Ends a check begun with [`Book::begin`]; a failure counts against
    /// the address and the account, a success clears nothing (invariant
    /// 2).
    fn end(&mut self, ip: IpAddr, account: &str, failed: bool, now: Instant) -> Locked {
        Locked {
            address: self.addresses.settle(&address_key(ip), failed, now),
            account: self.accounts.settle(&account.to_string(), failed, now),
        }
    }

    /// Invariant 5; `true` when this failure locked the address.
    fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.addresses.record_failure(&address_key(ip), now)
    }

    #[cfg(test)]
    fn is_account_locked(&self, account: &str, now: Instant) -> bool {
        self.accounts.is_locked(&account.to_string(), now)
    }
}

/// Who keeps a lockout: named in its log lines, its failed logins
/// counted in its metric.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub name: &'static str,
    pub failed_logins: &'static AtomicU64,
    /// What a locked account means there, for the log.
    pub account_locked: &'static str,
}

/// One side's lockout (see the module's notes).
#[derive(Debug)]
pub struct Lockout {
    book: Mutex<Book>,
    service: Service,
    full_warned_at: Mutex<Option<Instant>>,
}

/// A password check admitted by [`Lockout::begin`]. Dropped unsettled,
/// it counts as failed (invariant 4).
#[derive(Debug)]
pub struct PasswordCheck {
    lockout: Arc<Lockout>,
    ip: IpAddr,
    account: String,
    settled: bool,
}

impl Lockout {
    pub fn new(policy: LockoutPolicy, service: Service) -> Arc<Lockout> {
        Arc::new(Lockout {
            book: Mutex::new(Book::new(policy)),
            service,
            full_warned_at: Mutex::new(None),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warn_full(&self, now: Instant) {
        let mut warned_at = self
            .full_warned_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned_at.is_some_and(|at| now.duration_since(at) < FULL_WARNING_EVERY) {
            return;
        }
        *warned_at = Some(now);
        tracing::warn!(
            service = self.service.name,
            "the lockout's table is full of recent failures: password logins from new addresses or for new accounts are refused for a while"
        );
    }

    pub fn is_locked(&self, ip: IpAddr) -> bool {
        self.book().is_locked(ip, Instant::now())
    }

    /// A password check for `account` from `ip`, counted as under way
    /// until it is settled.
    pub fn begin(self: &Arc<Self>, ip: IpAddr, account: &str) -> Result<PasswordCheck, Refused> {
        let now = Instant::now();
        let begun = self.book().begin(ip, account, now);
        if begun == Err(Refused::Full) {
            self.warn_full(now);
        }
        begun.map(|()| PasswordCheck {
            lockout: self.clone(),
            ip,
            account: account.to_string(),
            settled: false,
        })
    }

    /// A failed login that never reached a password check (invariant 5).
    pub fn record_failure(&self, ip: IpAddr, user: &str) {
        crate::metrics::count(self.service.failed_logins);
        let locked = Locked {
            address: self.book().record_failure(ip, Instant::now()),
            account: false,
        };
        self.log(ip, user, locked);
    }

    fn end(&self, check: &PasswordCheck, failed: bool) {
        if failed {
            crate::metrics::count(self.service.failed_logins);
        }
        let locked = self
            .book()
            .end(check.ip, &check.account, failed, Instant::now());
        self.log(check.ip, &check.account, locked);
    }

    fn log(&self, ip: IpAddr, user: &str, locked: Locked) {
        let service = self.service.name;
        if locked.address {
            tracing::warn!(service, user, peer = %ip, "too many failed logins: the address is locked out for a while");
        }
        if locked.account {
            tracing::warn!(service, user, peer = %ip, "too many failed logins: {}", self.service.account_locked);
        }
    }
}

impl PasswordCheck {
    /// Ends the check: a wrong password counts as a failure.
    pub fn settle(mut self, matched: bool) {
        self.settled = true;
        self.lockout.end(&self, !matched);
    }

    /// Ends a check the server could not make: no failure (invariant 4).
    pub fn withdraw(self) {
        self.settle(true);
    }
}

impl Drop for PasswordCheck {
    fn drop(&mut self) {
        if !self.settled {
            self.lockout.end(self, true);
        }
    }
}

#[cfg(test)]
mod tests;
