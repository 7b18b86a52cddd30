//! Who may even try: the address lockout and the session counts.
//!
//! Pure bookkeeping with the time passed in, so tests need no clock.
//! Invariant: memory stays bounded: entries older than the window are
//! pruned whenever the table grows past [`PRUNE_AT`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Defender {
    policy: LockoutPolicy,
    by_address: HashMap<IpAddr, Record>,
}

impl Defender {
    pub fn new(policy: LockoutPolicy) -> Defender {
        Defender {
            policy,
            by_address: HashMap::new(),
        }
    }

    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_address
            .get(&ip)
            .and_then(|r| r.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed login; `true` when this failure locked the address.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.by_address.len() >= PRUNE_AT {
            self.prune(now);
        }
        let policy = self.policy;
        let record = self.by_address.entry(ip).or_default();
        while record
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            record.failures.pop_front();
        }
        record.failures.push_back(now);
        if record.failures.len() >= policy.failures {
            record.failures.clear();
            record.locked_until = Some(now + policy.duration);
            return true;
        }
        false
    }

    /// A successful login forgets earlier failures of that address.
    pub fn record_success(&mut self, ip: IpAddr) {
        self.by_address.remove(&ip);
    }

    fn prune(&mut self, now: Instant) {
        let window = self.policy.window;
        self.by_address.retain(|_, r| {
            r.locked_until.is_some_and(|u| now < u)
                || r.failures
                    .back()
                    .is_some_and(|&t| now.duration_since(t) <= window)
        });
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

    #[test]
    fn failures_within_the_window_lock_the_address_for_a_while() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        assert!(!d.record_failure(ip, t0));
        assert!(!d.record_failure(ip, t0 + Duration::from_secs(10)));
        assert!(d.record_failure(ip, t0 + Duration::from_secs(20)));
        assert!(d.is_locked(ip, t0 + Duration::from_secs(21)));
        assert!(!d.is_locked(other, t0 + Duration::from_secs(21)));
        assert!(d.is_locked(ip, t0 + Duration::from_secs(919)));
        assert!(!d.is_locked(ip, t0 + Duration::from_secs(921)));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_lock() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut d = Defender::new(policy());
        for i in 0..10 {
            assert!(!d.record_failure(ip, t0 + Duration::from_secs(400 * i)));
        }
        d.record_success(ip);
        assert!(!d.is_locked(ip, t0));
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
