//! Who may even try: the lockouts and the session counts.
//!
//! Pure bookkeeping with the time passed in, so tests need no clock.
//!
//! Invariants:
//! 1. Failed logins are counted per address and, once the address
//!    reached a real account's password check, per account. A locked
//!    address may not log in at all; a locked account may not log in by
//!    password (a key cannot be guessed, so key logins still pass: an
//!    attacker cannot lock a feed's key-based uploads out).
//! 2. A successful login never clears a failure record: logging in to
//!    one's own account between guesses at another does not reset them.
//! 3. A password check is admitted and counted in one step
//!    ([`Defender::begin_password_check`]): checks under way count
//!    against the limit, so a burst of concurrent guesses cannot pass it
//!    (the caller makes the ones not admitted yet wait their turn).
//! 4. Memory stays bounded: entries older than the window are pruned
//!    whenever a table grows past [`PRUNE_AT`].
//! 5. Addresses count by `auth::address_key`: an IPv6 client by
//!    its /64 (one host can pick any address in it), IPv4 by address.
//! 6. A check waits its turn ([`Refused::TooManyAtOnce`]) only while
//!    checks under way could still reach the limit; failures alone at the
//!    limit (they can pile up while a lockout runs, from checks that were
//!    under way) lock again, so a caller never waits for a turn that
//!    cannot come.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::address_key;

const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub failures: usize,
    pub window: Duration,
    pub duration: Duration,
}

#[derive(Debug, Default)]
struct Record {
    failures: VecDeque<Instant>,
    /// Password checks admitted and not finished yet.
    in_flight: usize,
    locked_until: Option<Instant>,
}

impl Record {
    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    fn forget_old_failures(&mut self, now: Instant, window: Duration) {
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

    /// `true` when this failure locked the record.
    fn fail(&mut self, now: Instant, policy: &LockoutPolicy) -> bool {
        self.forget_old_failures(now, policy.window);
        self.failures.push_back(now);
        if self.failures.len() >= policy.failures && !self.is_locked(now) {
            self.failures.clear();
            self.locked_until = Some(now + policy.duration);
            return true;
        }
        false
    }

    /// Locks the record again when its failures alone reach the limit
    /// (invariant 6); `true` when it is locked.
    fn lock_if_at_limit(&mut self, now: Instant, policy: &LockoutPolicy) -> bool {
        if !self.is_locked(now) && self.failures.len() >= policy.failures {
            self.failures.clear();
            self.locked_until = Some(now + policy.duration);
        }
        self.is_locked(now)
    }

    fn is_stale(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && !self.is_locked(now)
            && self
                .failures
                .back()
                .is_none_or(|&t| now.duration_since(t) > window)
    }
}

/// One table of records (by address or by account), pruned as it grows.
#[derive(Debug)]
struct Records<K> {
    by_key: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Records<K> {
    fn new() -> Self {
        Records {
            by_key: HashMap::new(),
        }
    }

    fn is_locked(&self, key: &K, now: Instant) -> bool {
        self.by_key.get(key).is_some_and(|r| r.is_locked(now))
    }

    fn entry(&mut self, key: &K, now: Instant, window: Duration) -> &mut Record {
        if self.by_key.len() >= PRUNE_AT {
            self.by_key.retain(|_, r| !r.is_stale(now, window));
        }
        let record = self.by_key.entry(key.clone()).or_default();
        record.forget_old_failures(now, window);
        record
    }

    fn finish(&mut self, key: &K) {
        if let Some(r) = self.by_key.get_mut(key) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }
}

/// Why a login may not even be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    AddressLocked,
    AccountLocked,
    /// Enough checks are under way to reach the limit if they all fail:
    /// the caller may wait for one of them to end.
    TooManyAtOnce,
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
        }
    }
}

/// What a finished failure locked, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub address: bool,
    pub account: bool,
}

#[derive(Debug)]
pub struct Defender {
    policy: LockoutPolicy,
    by_address: Records<IpAddr>,
    by_account: Records<String>,
}

impl Defender {
    pub fn new(policy: LockoutPolicy) -> Defender {
        Defender {
            policy,
            by_address: Records::new(),
            by_account: Records::new(),
        }
    }

    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_address.is_locked(&address_key(ip), now)
    }

    /// Admits a password check for `account` from `ip` and counts it as
    /// under way (invariant 3); [`Defender::end_password_check`] must
    /// follow.
    pub fn begin_password_check(
        &mut self,
        ip: IpAddr,
        account: &str,
        now: Instant,
    ) -> Result<(), Refused> {
        let (policy, window) = (self.policy, self.policy.window);
        let address = self.by_address.entry(&address_key(ip), now, window);
        if address.lock_if_at_limit(now, &policy) {
            return Err(Refused::AddressLocked);
        }
        if address.attempts() >= policy.failures {
            return Err(Refused::TooManyAtOnce);
        }
        let account_record = self.by_account.entry(&account.to_string(), now, window);
        if account_record.lock_if_at_limit(now, &policy) {
            return Err(Refused::AccountLocked);
        }
        if account_record.attempts() >= policy.failures {
            return Err(Refused::TooManyAtOnce);
        }
        account_record.in_flight += 1;
        address.in_flight += 1;
        Ok(())
    }

    /// Ends a check begun with [`Defender::begin_password_check`]; a
    /// failure counts against the address and the account. A success
    /// clears nothing (invariant 2).
    pub fn end_password_check(
        &mut self,
        ip: IpAddr,
        account: &str,
        succeeded: bool,
        now: Instant,
    ) -> Locked {
        let account = account.to_string();
        let ip = address_key(ip);
        self.by_address.finish(&ip);
        self.by_account.finish(&account);
        if succeeded {
            return Locked::default();
        }
        let (policy, window) = (self.policy, self.policy.window);
        Locked {
            address: self.by_address.entry(&ip, now, window).fail(now, &policy),
            account: self
                .by_account
                .entry(&account, now, window)
                .fail(now, &policy),
        }
    }

    /// Records a failed login that never reached a password check (no
    /// such account, an address the account does not allow, a wrong
    /// key): it counts against the address only. `true` when this failure
    /// locked the address. An attempt from an address already locked is
    /// not counted: it was refused before anything was checked.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (policy, window) = (self.policy, self.policy.window);
        let record = self.by_address.entry(&address_key(ip), now, window);
        if record.is_locked(now) {
            return false;
        }
        record.fail(now, &policy)
    }

    #[cfg(test)]
    pub fn is_account_locked(&self, account: &str, now: Instant) -> bool {
        self.by_account.is_locked(&account.to_string(), now)
    }
}

/// Sessions per account, so one account cannot take every slot.
#[derive(Debug, Default)]
pub struct SessionCounts {
    by_account: HashMap<String, usize>,
}

impl SessionCounts {
    /// Takes a slot for `account` unless it already has `limit`.
    pub fn try_take(&mut self, account: &str, limit: usize) -> bool {
        let n = self.by_account.entry(account.to_string()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn give_back(&mut self, account: &str) {
        if let Some(n) = self.by_account.get_mut(account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_account.remove(account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            failures: 3,
            window: Duration::from_secs(600),
            duration: Duration::from_secs(900),
        }
    }

    const A: &str = "hr-up";
    const B: &str = "payroll-up";

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    /// One finished password check.
    fn guess(d: &mut Defender, ip: IpAddr, account: &str, right: bool, at: Instant) -> Locked {
        d.begin_password_check(ip, account, at)
            .expect("the check is admitted");
        d.end_password_check(ip, account, right, at)
    }

    #[test]
    fn failures_within_the_window_lock_the_address_for_a_while() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        assert!(!d.record_failure(ip(1), t0));
        assert!(!d.record_failure(ip(1), t0 + Duration::from_secs(10)));
        assert!(d.record_failure(ip(1), t0 + Duration::from_secs(20)));
        assert!(d.is_locked(ip(1), t0 + Duration::from_secs(21)));
        assert!(!d.is_locked(ip(2), t0 + Duration::from_secs(21)));
        assert!(d.is_locked(ip(1), t0 + Duration::from_secs(919)));
        assert!(!d.is_locked(ip(1), t0 + Duration::from_secs(921)));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_lock() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        for i in 0..10 {
            let at = t0 + Duration::from_secs(400 * i);
            assert_eq!(guess(&mut d, ip(1), A, false, at), Locked::default());
        }
        assert!(!d.is_locked(ip(1), t0 + Duration::from_secs(4000)));
    }

    #[test]
    fn a_login_to_ones_own_account_between_guesses_resets_nothing() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        let at = |s: u64| t0 + Duration::from_secs(s);
        guess(&mut d, ip(1), B, false, at(0));
        guess(&mut d, ip(1), A, true, at(1));
        guess(&mut d, ip(1), B, false, at(2));
        guess(&mut d, ip(1), A, true, at(3));
        let locked = guess(&mut d, ip(1), B, false, at(4));
        assert!(locked.address && locked.account, "{locked:?}");
        assert_eq!(
            d.begin_password_check(ip(1), A, at(5)),
            Err(Refused::AddressLocked)
        );
    }

    #[test]
    fn guesses_from_many_addresses_lock_the_account_for_passwords_only() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        for i in 0..3 {
            guess(&mut d, ip(10 + i), B, false, t0);
        }
        assert!(d.is_account_locked(B, t0));
        assert!(!d.is_locked(ip(10), t0), "one failure locks no address");
        assert_eq!(
            d.begin_password_check(ip(99), B, t0),
            Err(Refused::AccountLocked)
        );
        assert_eq!(d.begin_password_check(ip(99), A, t0), Ok(()));
        assert!(!d.is_account_locked(B, t0 + Duration::from_secs(901)));
    }

    #[test]
    fn concurrent_checks_cannot_pass_the_limit() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        let admitted = (0..20)
            .filter(|_| d.begin_password_check(ip(1), B, t0).is_ok())
            .count();
        assert_eq!(admitted, 3, "only as many checks as failures allowed");
        assert_eq!(
            d.begin_password_check(ip(2), B, t0),
            Err(Refused::TooManyAtOnce),
            "the account's checks under way count too"
        );
        for _ in 0..admitted {
            d.end_password_check(ip(1), B, false, t0);
        }
        assert!(d.is_locked(ip(1), t0) && d.is_account_locked(B, t0));
    }

    #[test]
    fn failures_before_the_password_check_count_for_the_address_only() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        for _ in 0..3 {
            d.record_failure(ip(1), t0);
        }
        assert!(d.is_locked(ip(1), t0));
        assert!(!d.is_account_locked(A, t0));
    }

    #[test]
    fn failures_left_from_a_lockout_lock_again_instead_of_waiting_for_ever() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Defender::new(policy());
        for _ in 0..3 {
            d.begin_password_check(ip(1), A, t0).expect("admitted");
        }
        for _ in 0..3 {
            d.record_failure(ip(1), t0);
        }
        assert!(d.is_locked(ip(1), t0));
        // The checks under way end as failures while the lockout runs.
        for _ in 0..3 {
            d.end_password_check(ip(1), A, false, at(800));
        }
        // The lockout is over, the failures still within the window and
        // nothing is under way: waiting for a turn would never end.
        assert!(!d.is_locked(ip(1), at(901)));
        assert_eq!(
            d.begin_password_check(ip(1), B, at(901)),
            Err(Refused::AddressLocked)
        );
        assert!(d.is_locked(ip(1), at(902)));
        // The account's failures alone lock it the same way.
        assert_eq!(
            d.begin_password_check(ip(2), A, at(901)),
            Err(Refused::AccountLocked)
        );
    }

    #[test]
    fn attempts_from_a_locked_address_are_not_counted() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Defender::new(policy());
        for _ in 0..3 {
            d.record_failure(ip(1), t0);
        }
        for s in 1..100 {
            assert!(!d.record_failure(ip(1), at(s)));
        }
        // After the lockout the address starts afresh.
        assert!(!d.is_locked(ip(1), at(901)));
        assert_eq!(d.begin_password_check(ip(1), A, at(901)), Ok(()));
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_ipv4_by_address() {
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 1..=3 {
            d.record_failure(v6(&format!("2001:db8:1:2::{i}")), t0);
        }
        assert!(d.is_locked(v6("2001:db8:1:2:ffff::9"), t0));
        assert!(!d.is_locked(v6("2001:db8:1:3::1"), t0));
        for _ in 0..3 {
            d.record_failure(ip(7), t0);
        }
        assert!(d.is_locked(v6("::ffff:192.0.2.7"), t0), "IPv4-mapped");
        assert!(!d.is_locked(ip(8), t0));
    }

    #[test]
    fn session_slots_per_account() {
        let mut s = SessionCounts::default();
        assert!(s.try_take("a", 2));
        assert!(s.try_take("a", 2));
        assert!(!s.try_take("a", 2));
        assert!(s.try_take("b", 2));
        s.give_back("a");
        assert!(s.try_take("a", 2));
    }
}
