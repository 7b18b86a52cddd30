//! A feed's health: what `flagsync feeds` and the status page show.

use crate::config::Config;
use crate::store::{Store, StoreError};

fn unix_text(secs: u64) -> Option<String> {
    (secs > 0).then(|| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string()
    })
}

/// One feed's health, as `flagsync feeds` and the status page show it.
pub fn feed_health(
    config: &Config,
    feed: &crate::config::Feed,
    store: Option<&Store>,
) -> Result<serde_json::Value, StoreError> {
    let now = jiff::Timestamp::now();
    let state = match store {
        Some(s) => s.feed_state(&feed.name)?,
        None => None,
    };
    let (runs, held) = match store {
        Some(s) => (
            s.latest_runs(Some(&feed.name), 1)?,
            s.held_runs(&feed.name)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let last_arrival = state.as_ref().map_or(0, |s| s.last_arrival);
    let overdue = state.is_some()
        && (now.as_second().max(0) as u64).saturating_sub(last_arrival)
            > feed.expect_every.as_secs();
    let last = runs.first();
    let held: Vec<u64> = held.iter().filter_map(|r| r.run_id).collect();
    let (schedule, next) = match feed.schedule {
        crate::config::Schedule::OnArrival => ("on_arrival".to_string(), None),
        crate::config::Schedule::Daily {
            hour,
            minute,
            second,
        } => {
            let tz = config.time_zone();
            let latest = crate::worker::schedule::latest_slot(now, &tz, hour, minute, second);
            let next = latest
                .checked_add(jiff::SignedDuration::from_hours(24))
                .ok()
                .map(|t| t.to_string());
            (format!("daily {hour:02}:{minute:02}:{second:02}"), next)
        }
    };
    Ok(serde_json::json!({
        "feed": feed.name,
        "schedule": schedule,
        "next_scheduled": next,
        "expect_every": humantime::format_duration(feed.expect_every).to_string(),
        "last_file_at": state.as_ref().filter(|s| s.file_seen).and_then(|_| unix_text(last_arrival)),
        "watched_since": state.as_ref().filter(|s| !s.file_seen).and_then(|_| unix_text(last_arrival)),
        "overdue": overdue,
        "last_run": last.map(|r| serde_json::json!({
            "run_id": r.run_id,
            "file": r.file,
            "state": r.state.as_str(),
            "finished_at": r.finished_at,
        })),
        "held_runs": held,
    }))
}
