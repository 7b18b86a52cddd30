use super::*;

/// sFTP's kind of policy: one limit for addresses and accounts.
fn policy() -> LockoutPolicy {
    LockoutPolicy {
        address_failures: 3,
        account_failures: 3,
        window: Duration::from_secs(600),
        duration: Duration::from_secs(900),
    }
}

/// The page's kind of policy: an account's limit above an address's.
const ADDRESS_FAILURES: usize = 5;
const ACCOUNT_FAILURES: usize = 20;

fn two_limits() -> LockoutPolicy {
    LockoutPolicy {
        address_failures: ADDRESS_FAILURES,
        account_failures: ACCOUNT_FAILURES,
        ..policy()
    }
}

static FAILED_LOGINS: AtomicU64 = AtomicU64::new(0);

fn lockout(policy: LockoutPolicy) -> Arc<Lockout> {
    Lockout::new(
        policy,
        Service {
            name: "test",
            failed_logins: &FAILED_LOGINS,
            account_locked: "the account is locked",
        },
    )
}

const A: &str = "hr-up";
const B: &str = "payroll-up";

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn v4(i: u32) -> IpAddr {
    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One settled password check.
fn guess(b: &mut Book, ip: IpAddr, account: &str, right: bool, at: Instant) -> Locked {
    b.begin(ip, account, at).expect("the check is admitted");
    b.end(ip, account, !right, at)
}

/// One wrong guess at `account` from each address; what the last locked.
fn guess_from_each(
    b: &mut Book,
    from: impl IntoIterator<Item = IpAddr>,
    account: &str,
    at: Instant,
) -> Locked {
    from.into_iter()
        .map(|ip| guess(b, ip, account, false, at))
        .last()
        .unwrap_or_default()
}

/// As many failures before a password check as lock an address.
fn fail_before_checks(b: &mut Book, ip: IpAddr, at: Instant) {
    for _ in 0..policy().address_failures {
        b.record_failure(ip, at);
    }
}

#[test]
fn failures_within_the_window_lock_the_address_for_a_while() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    assert!(!b.record_failure(ip(1), t0));
    assert!(!b.record_failure(ip(1), t0 + Duration::from_secs(10)));
    assert!(b.record_failure(ip(1), t0 + Duration::from_secs(20)));
    assert!(b.is_locked(ip(1), t0 + Duration::from_secs(21)));
    assert!(!b.is_locked(ip(2), t0 + Duration::from_secs(21)));
    assert!(b.is_locked(ip(1), t0 + Duration::from_secs(919)));
    assert!(!b.is_locked(ip(1), t0 + Duration::from_secs(921)));
}

#[test]
fn failures_spread_wider_than_the_window_do_not_lock() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    for i in 0..10 {
        let at = t0 + Duration::from_secs(400 * i);
        assert_eq!(guess(&mut b, ip(1), A, false, at), Locked::default());
    }
    assert!(!b.is_locked(ip(1), t0 + Duration::from_secs(4000)));
}

#[test]
fn a_login_to_ones_own_account_between_guesses_resets_nothing() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    let at = |s: u64| t0 + Duration::from_secs(s);
    guess(&mut b, ip(1), B, false, at(0));
    guess(&mut b, ip(1), A, true, at(1));
    guess(&mut b, ip(1), B, false, at(2));
    guess(&mut b, ip(1), A, true, at(3));
    let locked = guess(&mut b, ip(1), B, false, at(4));
    assert!(locked.address && locked.account, "{locked:?}");
    assert_eq!(b.begin(ip(1), A, at(5)), Err(Refused::AddressLocked));
}

#[test]
fn guesses_from_many_addresses_lock_the_account_only() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    for i in 0..3 {
        guess(&mut b, ip(10 + i), B, false, t0);
    }
    assert!(b.is_account_locked(B, t0));
    assert!(!b.is_locked(ip(10), t0), "one failure locks no address");
    assert_eq!(b.begin(ip(99), B, t0), Err(Refused::AccountLocked));
    assert_eq!(b.begin(ip(99), A, t0), Ok(()));
    assert!(!b.is_account_locked(B, t0 + Duration::from_secs(901)));
}

#[test]
fn an_account_has_its_own_limit_above_an_addresss() {
    let t0 = Instant::now();
    let mut b = Book::new(two_limits());
    let from = |n: u32| (0..n).map(|i| addr(&format!("10.1.{}.{}", i / 200, i % 200 + 1)));
    let locked = guess_from_each(&mut b, from(ACCOUNT_FAILURES as u32 - 1), "boss", t0);
    assert!(!locked.account, "one failure short of the account's limit");
    let locked = guess_from_each(&mut b, [addr("10.2.0.1")], "boss", t0);
    assert!(locked.account && !locked.address, "{locked:?}");
    assert_eq!(
        b.begin(addr("10.9.9.9"), "boss", t0),
        Err(Refused::AccountLocked)
    );
    assert_eq!(b.begin(addr("10.9.9.9"), "other", t0), Ok(()));
}

#[test]
fn concurrent_checks_cannot_pass_the_limit() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    let admitted = (0..20).filter(|_| b.begin(ip(1), B, t0).is_ok()).count();
    assert_eq!(admitted, 3, "only as many checks as failures allowed");
    assert_eq!(
        b.begin(ip(2), B, t0),
        Err(Refused::TooManyAtOnce),
        "the account's checks under way count too"
    );
    for _ in 0..admitted {
        b.end(ip(1), B, true, t0);
    }
    assert!(b.is_locked(ip(1), t0) && b.is_account_locked(B, t0));
}

#[test]
fn checks_under_way_count_and_successes_free_their_places_only() {
    let l = lockout(two_limits());
    let a = ip(1);
    let held: Vec<PasswordCheck> = (0..ADDRESS_FAILURES)
        .map(|_| l.begin(a, "boss").expect("under the limit"))
        .collect();
    assert_eq!(l.begin(a, "boss").err(), Some(Refused::TooManyAtOnce));
    for check in held {
        check.settle(true);
    }
    for _ in 0..ADDRESS_FAILURES - 1 {
        l.begin(a, "boss").unwrap().settle(false);
    }
    l.begin(a, "boss").unwrap().settle(true);
    l.begin(a, "boss").unwrap().settle(false);
    assert_eq!(
        l.begin(a, "boss").err(),
        Some(Refused::AddressLocked),
        "locked out, whatever the password"
    );
    assert!(l.is_locked(a));
    assert!(l.begin(ip(2), "boss").is_ok());
}

#[test]
fn a_check_dropped_unsettled_counts_as_failed_and_a_withdrawn_one_not() {
    let l = lockout(two_limits());
    let a = ip(1);
    for _ in 0..ADDRESS_FAILURES * 2 {
        l.begin(a, "boss").unwrap().withdraw();
    }
    let counted = FAILED_LOGINS.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..ADDRESS_FAILURES {
        drop(l.begin(a, "boss").unwrap());
    }
    assert!(FAILED_LOGINS.load(std::sync::atomic::Ordering::Relaxed) >= counted + 5);
    assert_eq!(l.begin(a, "boss").err(), Some(Refused::AddressLocked));
}

#[test]
fn failures_before_the_password_check_count_for_the_address_only() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    fail_before_checks(&mut b, ip(1), t0);
    assert!(b.is_locked(ip(1), t0));
    assert!(!b.is_account_locked(A, t0));
}

#[test]
fn failures_left_from_a_lockout_lock_again_instead_of_waiting_for_ever() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut b = Book::new(policy());
    for _ in 0..3 {
        b.begin(ip(1), A, t0).expect("admitted");
    }
    fail_before_checks(&mut b, ip(1), t0);
    assert!(b.is_locked(ip(1), t0));
    // The checks under way end as failures while the lockout runs.
    for _ in 0..3 {
        b.end(ip(1), A, true, at(800));
    }
    // The lockout is over, the failures still within the window and
    // nothing is under way: waiting for a turn would never end.
    assert!(!b.is_locked(ip(1), at(901)));
    assert_eq!(b.begin(ip(1), B, at(901)), Err(Refused::AddressLocked));
    assert!(b.is_locked(ip(1), at(902)));
    // The account's failures alone lock it the same way.
    assert_eq!(b.begin(ip(2), A, at(901)), Err(Refused::AccountLocked));
}

#[test]
fn attempts_from_a_locked_address_are_not_counted() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut b = Book::new(policy());
    fail_before_checks(&mut b, ip(1), t0);
    for s in 1..100 {
        assert!(!b.record_failure(ip(1), at(s)));
    }
    // After the lockout the address starts afresh.
    assert!(!b.is_locked(ip(1), at(901)));
    assert_eq!(b.begin(ip(1), A, at(901)), Ok(()));
}

#[test]
fn an_ipv6_client_counts_by_its_64_and_ipv4_by_address() {
    let t0 = Instant::now();
    let mut b = Book::new(policy());
    for i in 1..=3 {
        b.record_failure(addr(&format!("2001:db8:1:2::{i}")), t0);
    }
    assert!(b.is_locked(addr("2001:db8:1:2:ffff::9"), t0));
    assert!(!b.is_locked(addr("2001:db8:1:3::1"), t0));
    fail_before_checks(&mut b, ip(7), t0);
    assert!(b.is_locked(addr("::ffff:192.0.2.7"), t0), "IPv4-mapped");
    assert!(!b.is_locked(ip(8), t0));
}

#[test]
fn an_ipv6_host_is_locked_out_of_checks_by_its_64() {
    let t0 = Instant::now();
    let mut b = Book::new(two_limits());
    let from = (1..=ADDRESS_FAILURES).map(|i| addr(&format!("2001:db8:1:2::{i}")));
    let locked = guess_from_each(&mut b, from, "boss", t0);
    assert!(locked.address && !locked.account, "{locked:?}");
    let same_64 = [("2001:db8:1:2::99", true), ("2001:db8:1:3::1", false)];
    for (other, locked) in same_64 {
        let refused = locked.then_some(Refused::AddressLocked);
        assert_eq!(b.begin(addr(other), "other", t0).err(), refused, "{other}");
    }
}

#[test]
fn the_tables_stay_bounded_and_fail_closed_when_full_of_live_records() {
    let t0 = Instant::now();
    let mut b = Book::new(two_limits());
    let mut refused = 0;
    for i in 0..(MAX_TRACKED + 50) as u32 {
        match b.begin(v4(i), &format!("name{i}"), t0) {
            Ok(()) => {
                b.end(v4(i), &format!("name{i}"), true, t0);
            }
            Err(why) => {
                assert_eq!(why, Refused::Full);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 50, "new keys are refused while all are live");
    assert!(b.addresses.records.len() <= MAX_TRACKED);
    assert!(b.accounts.records.len() <= MAX_TRACKED);
    assert!(
        !b.record_failure(v4(MAX_TRACKED as u32 + 1), t0),
        "nor does a failure before a check make room"
    );
    assert!(b.addresses.records.len() <= MAX_TRACKED);
    // Keys already tracked still get their checks.
    assert_eq!(b.begin(v4(1), "name1", t0), Ok(()));
    // Once records are idle, new keys get their room.
    let later = t0 + Duration::from_secs(601);
    assert_eq!(b.begin(v4(MAX_TRACKED as u32 + 1), "new", later), Ok(()));
}

#[test]
fn many_addresses_cannot_reset_an_accounts_failures_by_filling_the_tables() {
    let t0 = Instant::now();
    let mut b = Book::new(two_limits());
    let boss_from = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
    for i in 0..ACCOUNT_FAILURES as u32 - 1 {
        guess(&mut b, boss_from(i), "boss", false, t0);
    }
    // Fill the accounts' table with live records from other addresses.
    for i in 0..MAX_TRACKED as u32 {
        if b.begin(v4(i), &format!("filler{i}"), t0).is_ok() {
            b.end(v4(i), &format!("filler{i}"), true, t0);
        }
    }
    let locked = guess(&mut b, boss_from(0), "boss", false, t0);
    assert!(locked.account, "the account's failures were kept: it locks");
    assert_eq!(
        b.begin(boss_from(1), "boss", t0),
        Err(Refused::AccountLocked)
    );
}
