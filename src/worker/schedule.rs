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

/// The first `hour:minute:second` (in `tz`) after `now`: the next
/// calendar day's slot when today's has passed, so a DST change between
/// them moves it with the clock (not "latest + 24 h").
pub fn next_slot(now: Timestamp, tz: &TimeZone, hour: u8, minute: u8, second: u8) -> Timestamp {
    let latest = latest_slot(now, tz, hour, minute, second);
    let day = latest.to_zoned(tz.clone()).date();
    day.tomorrow()
        .ok()
        .and_then(|next| {
            next.at(hour as i8, minute as i8, second as i8, 0)
                .to_zoned(tz.clone())
                .ok()
        })
        .map(|z| z.timestamp())
        .filter(|&t| t > now)
        .unwrap_or(latest)
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
        // Across the spring change (2026-03-29 in Berlin), the next 04:00
        // is 23 hours after the latest (03:00Z on the 28th), not 24.
        assert_eq!(
            next_slot(ts("2026-03-28T12:00:00Z"), &berlin, 4, 0, 0),
            ts("2026-03-29T02:00:00Z")
        );
        assert_eq!(
            next_slot(ts("2026-11-25T01:30:00Z"), &berlin, 2, 0, 0),
            ts("2026-11-26T01:00:00Z")
        );
        // 2026-03-29 02:30 does not exist in Berlin: no panic, a slot.
        let s = latest_slot(ts("2026-03-29T12:00:00Z"), &berlin, 2, 30, 0);
        assert!(s <= ts("2026-03-29T12:00:00Z"));
    }
}
