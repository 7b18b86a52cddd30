//! The log of refused connections and logins, rate-limited: a flood from
//! one address (a scanner, a client stuck in a retry loop, a lockout
//! being hammered) must not fill the disk or drown the other lines.
//!
//! Pure bookkeeping with the time passed in, so tests need no clock.
//!
//! Invariants:
//! 1. At most one line per address per [`QUIET_FOR`]; the refusals not
//!    logged are counted and reported in one summary line per address
//!    ("N more refused") once its quiet time is over.
//! 2. Memory stays bounded: at most [`MAX_ADDRESSES`] addresses are
//!    tracked; refusals from others, while the table is full, are only
//!    counted, in one summary line for all of them.
//! 3. A name a client sent is logged cut to [`SHOWN_NAME_CHARS`]
//!    characters ([`shown_name`]): no account or administrator name is
//!    longer, and a line stays short whatever was sent.
//!
//! The sFTP server and the web login each keep one, keyed by
//! `auth::address_key` (an IPv6 client by its /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One line per address per this long.
pub const QUIET_FOR: Duration = Duration::from_secs(60);
/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 10_000;
/// Characters of a client's user name that a log line shows.
pub const SHOWN_NAME_CHARS: usize = 64;

/// `name` cut to its first [`SHOWN_NAME_CHARS`] characters (invariant 3).
pub fn shown_name(name: &str) -> &str {
    match name.char_indices().nth(SHOWN_NAME_CHARS) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

#[derive(Debug)]
struct Entry {
    logged_at: Instant,
    not_logged: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Log,
    Quiet,
}

/// Refusals not logged, reported once an address's quiet time is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None` for refusals from addresses beyond [`MAX_ADDRESSES`].
    pub address: Option<IpAddr>,
    pub not_logged: u64,
}

#[derive(Debug, Default)]
pub struct RefusalLog {
    by_address: HashMap<IpAddr, Entry>,
    untracked: u64,
    /// When [`RefusalLog::due_at_most_once_a_minute`] last summed up.
    summed_up_at: Option<Instant>,
}

impl RefusalLog {
    /// Whether this refusal gets its own log line.
    pub fn refused(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if let Some(entry) = self.by_address.get_mut(&ip) {
            if now.duration_since(entry.logged_at) < QUIET_FOR {
                entry.not_logged += 1;
                return Verdict::Quiet;
            }
        }
        if self.by_address.len() >= MAX_ADDRESSES && !self.by_address.contains_key(&ip) {
            self.untracked += 1;
            return Verdict::Quiet;
        }
        let entry = self.by_address.entry(ip).or_insert(Entry {
            logged_at: now,
            not_logged: 0,
        });
        entry.logged_at = now;
        Verdict::Log
    }

    /// The summaries due at `now`; forgets addresses whose quiet time is
    /// over. Called about once per [`QUIET_FOR`].
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.by_address.retain(|ip, entry| {
            if now.duration_since(entry.logged_at) < QUIET_FOR {
                return true;
            }
            if entry.not_logged > 0 {
                summaries.push(Summary {
                    address: Some(*ip),
                    not_logged: entry.not_logged,
                });
            }
            false
        });
        if self.untracked > 0 {
            summaries.push(Summary {
                address: None,
                not_logged: std::mem::take(&mut self.untracked),
            });
        }
        summaries.sort_by_key(|s| s.address);
        summaries
    }

    /// [`RefusalLog::due`] when it was not called within [`QUIET_FOR`],
    /// else nothing: for a caller with no timer of its own, which asks
    /// at each refusal.
    pub fn due_at_most_once_a_minute(&mut self, now: Instant) -> Vec<Summary> {
        match self.summed_up_at {
            Some(at) if now.duration_since(at) < QUIET_FOR => Vec::new(),
            _ => {
                self.summed_up_at = Some(now);
                self.due(now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn one_line_per_address_per_minute_then_a_summary() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(ip(1), t0), Verdict::Log);
        for s in 1..=30 {
            assert_eq!(
                log.refused(ip(1), t0 + Duration::from_secs(s)),
                Verdict::Quiet
            );
        }
        assert_eq!(log.refused(ip(2), t0), Verdict::Log, "other addresses");
        assert_eq!(log.due(t0 + Duration::from_secs(59)), Vec::new());
        assert_eq!(
            log.due(t0 + Duration::from_secs(60)),
            vec![Summary {
                address: Some(ip(1)),
                not_logged: 30
            }]
        );
        assert_eq!(log.due(t0 + Duration::from_secs(61)), Vec::new());
        assert_eq!(
            log.refused(ip(1), t0 + Duration::from_secs(62)),
            Verdict::Log
        );
    }

    #[test]
    fn an_address_quiet_for_a_minute_is_logged_again_without_a_summary() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(ip(1), t0), Verdict::Log);
        assert_eq!(
            log.refused(ip(1), t0 + Duration::from_secs(60)),
            Verdict::Log
        );
        assert_eq!(log.due(t0 + Duration::from_secs(200)), Vec::new());
    }

    #[test]
    fn names_are_shown_cut_to_64_characters() {
        assert_eq!(shown_name("hr-up"), "hr-up");
        let long = "é".repeat(16 * 1024);
        assert_eq!(shown_name(&long).chars().count(), SHOWN_NAME_CHARS);
        assert_eq!(shown_name(&"x".repeat(64)).len(), 64);
    }

    #[test]
    fn summaries_asked_for_at_each_refusal_come_once_a_minute() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(ip(1), t0), Verdict::Log);
        assert_eq!(log.due_at_most_once_a_minute(t0), Vec::new());
        for s in 1..=30 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(log.refused(ip(1), at), Verdict::Quiet);
            assert_eq!(log.due_at_most_once_a_minute(at), Vec::new());
        }
        let at = t0 + QUIET_FOR;
        assert_eq!(
            log.due_at_most_once_a_minute(at),
            vec![Summary {
                address: Some(ip(1)),
                not_logged: 30
            }]
        );
        assert_eq!(log.due_at_most_once_a_minute(at), Vec::new());
    }

    #[test]
    fn a_flood_from_many_addresses_is_bounded() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let logged = (0..MAX_ADDRESSES as u32 + 500)
            .filter(|i| log.refused(IpAddr::from(i.to_be_bytes()), t0) == Verdict::Log)
            .count();
        assert_eq!(logged, MAX_ADDRESSES);
        let due = log.due(t0 + QUIET_FOR);
        assert_eq!(
            due,
            vec![Summary {
                address: None,
                not_logged: 500
            }]
        );
        assert!(log.by_address.is_empty());
    }
}
