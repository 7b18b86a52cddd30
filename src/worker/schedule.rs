//! Time arithmetic of `daily` schedules, pure: the instant of the latest
//! slot at or before `now` in the feed's time zone.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The latest `hour:minute:second` (in `tz`) at or before `now`. On a day
/// when that time does not exist (a DST gap), the later offset's instant.
pub fn latest_slot(now: Timestamp, tz: &TimeZone, hour: u8, minute: u8, second: u8) -> Timestamp {
    let today = now.to_zoned(tz.clone()).date();
    let at = |date: jiff::civil::Date| {
        date.at(hour as i8, minute as i8, second as i8, 0)
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now)
    };
    let slot = at(today);
    if slot <= now {
        return slot;
    }
    today.yesterday().map(at).unwrap_or(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_latest_slot_is_today_once_passed_else_yesterday() {
        let utc = TimeZone::UTC;
        assert_eq!(
            latest_slot(ts("2026-11-25T03:00:00Z"), &utc, 2, 0, 0),
            ts("2026-11-25T02:00:00Z")
        );
        assert_eq!(
            latest_slot(ts("2026-11-25T01:59:59Z"), &utc, 2, 0, 0),
            ts("2026-11-24T02:00:00Z")
        );
        assert_eq!(
            latest_slot(ts("2026-11-25T02:00:00Z"), &utc, 2, 0, 0),
            ts("2026-11-25T02:00:00Z")
        );
    }

    #[test]
    fn slots_follow_the_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(
            latest_slot(ts("2026-11-25T01:30:00Z"), &berlin, 2, 0, 0),
            ts("2026-11-25T01:00:00Z")
        );
        // 2026-03-29 02:30 does not exist in Berlin: no panic, a slot.
        let s = latest_slot(ts("2026-03-29T12:00:00Z"), &berlin, 2, 30, 0);
        assert!(s <= ts("2026-03-29T12:00:00Z"));
    }
}
