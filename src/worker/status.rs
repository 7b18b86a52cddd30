//! A feed's health: what `flagsync feeds` and the status page show.

use crate::config::Config;
use crate::store::{Run, RunState, Store, StoreError};

/// Runs drawn in a feed's trend.
pub const TREND_RUNS: usize = 30;

/// An RFC 3339 UTC time as people read it: in the configured time zone,
/// with its offset ("2026-12-04 13:45 -05:00"); the text itself when it is
/// not a time.
pub fn local_time(config: &Config, utc: &str) -> String {
    match utc.parse::<jiff::Timestamp>() {
        Ok(t) => t
            .to_zoned(config.time_zone())
            .strftime("%Y-%m-%d %H:%M %:z")
            .to_string(),
        Err(_) => utc.to_string(),
    }
}

/// The worst true thing about a feed, for its badge: `failed` (the last
/// run failed), `overdue`, `held` (a run waits for a decision), `rejected`
/// (the last file was rejected), `new` (no run yet), else `ok`.
pub fn health_level(last: Option<&Run>, overdue: bool, held: bool) -> (&'static str, String) {
    match last {
        Some(r) if r.state == RunState::Failed => (
            "failed",
            format!(
                "Last run failed: {}",
                r.reason.as_deref().unwrap_or("see the run")
            ),
        ),
        _ if overdue => (
            "overdue",
            "Overdue: no file within the expected time".into(),
        ),
        _ if held => ("held", "Held run waiting for review".into()),
        Some(r) if r.state == RunState::Rejected => (
            "rejected",
            "The last file was rejected: the list is as before it".into(),
        ),
        Some(r) if r.state == RunState::Applied => ("ok", "OK: the last file was applied".into()),
        Some(r) if r.state == RunState::Unchanged => {
            ("ok", "OK: the last file changed nothing".into())
        }
        Some(_) => ("held", "Waiting for a decision".into()),
        None => ("new", "No file yet".into()),
    }
}

/// Recipients after each of the feed's latest runs, oldest first, worked
/// back from the count now (only applied runs change it).
pub fn trend(runs_newest_first: &[Run], recipients_now: u64) -> Vec<TrendPoint> {
    let mut after = recipients_now as i64;
    let mut points = Vec::new();
    for r in runs_newest_first {
        let changed = r.state == RunState::Applied;
        points.push(TrendPoint {
            run_id: r.run_id,
            state: r.state.as_str(),
            recipients: after.max(0) as u64,
            added: if changed { r.counts.added } else { 0 },
            removed: if changed { r.counts.removed } else { 0 },
        });
        if changed {
            after = after - r.counts.added as i64 + r.counts.removed as i64;
        }
    }
    points.reverse();
    points
}

fn unix_text(secs: u64) -> Option<String> {
    (secs > 0).then(|| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string()
    })
}

/// One feed's health, as `flagsync feeds` and the status page show it.
/// One feed's health, as `flagsync feeds` (and `--json`), the page and
/// `/api/feeds` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedHealth {
    pub feed: String,
    pub schedule: String,
    /// RFC 3339 UTC, and the same in the configured zone.
    pub next_scheduled: Option<String>,
    pub next_scheduled_local: Option<String>,
    pub expect_every: String,
    pub last_file_at: Option<String>,
    pub last_file_local: Option<String>,
    /// No file yet: since when the feed is watched.
    pub watched_since: Option<String>,
    pub watched_since_local: Option<String>,
    pub overdue: bool,
    pub last_run: Option<LastRun>,
    pub held_runs: Vec<u64>,
    pub health: Health,
    pub recipients: u64,
    pub groups: usize,
    pub trend: Vec<TrendPoint>,
    /// The feed's OpenPGP keys that expire within 30 days or have expired
    /// (the page and the run email show them). Always present: the page's
    /// templates are strict about missing values.
    pub key_warnings: Vec<String>,
    /// `[feed.scim]`'s target: how far it has received the change log.
    pub scim: Option<ScimHealth>,
}

/// A SCIM target on the feed's card and in `flagsync feeds`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScimHealth {
    /// `in_sync`, `behind`, `failing`, `needs_full_sync`.
    pub state: &'static str,
    pub behind: u64,
    /// In words: "in sync", "behind by 3 changes", "failing (…): error".
    pub text: String,
    /// People whose last push the target refused.
    pub failed: usize,
}

fn scim_health(
    feed: &crate::config::Feed,
    store: Option<&Store>,
) -> Result<Option<ScimHealth>, StoreError> {
    let (Some(_), Some(store)) = (&feed.scim, store) else {
        return Ok(None);
    };
    let status = crate::scim::status(store, &feed.name)?;
    Ok(Some(ScimHealth {
        state: status.state,
        behind: status.behind,
        text: status.summary(&feed.name),
        failed: status.failures.len(),
    }))
}

/// The feed's badge: see [`health_level`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub level: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    pub run_id: Option<u64>,
    pub file: String,
    pub state: &'static str,
    pub finished_at: String,
    pub finished_local: String,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    /// Its counts were applied (not what a held, rejected or superseded
    /// run would have done).
    pub applied: bool,
}

/// Recipients after one run, and what it added and removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrendPoint {
    pub run_id: Option<u64>,
    pub state: &'static str,
    pub recipients: u64,
    pub added: u64,
    pub removed: u64,
}

/// One feed's health, read from the store (`None`: no store yet).
pub fn feed_health(
    config: &Config,
    feed: &crate::config::Feed,
    store: Option<&Store>,
) -> Result<FeedHealth, StoreError> {
    let now = jiff::Timestamp::now();
    let state = match store {
        Some(s) => s.feed_state(&feed.name)?,
        None => None,
    };
    let (runs, held, recipients, groups) = match store {
        Some(s) => (
            s.latest_runs(Some(&feed.name), TREND_RUNS)?,
            s.held_runs(&feed.name)?,
            s.recipient_count(&feed.name)?,
            s.groups(&feed.name)?.len(),
        ),
        None => (Vec::new(), Vec::new(), 0, 0),
    };
    let last_arrival = state.as_ref().map_or(0, |s| s.last_arrival);
    let overdue = state.is_some()
        && (now.as_second().max(0) as u64).saturating_sub(last_arrival)
            > feed.expect_every.as_secs();
    let last = runs.first();
    let held: Vec<u64> = held.iter().filter_map(|r| r.run_id).collect();
    let (level, text) = health_level(last, overdue, !held.is_empty());
    let local = |t: &Option<String>| t.as_deref().map(|t| local_time(config, t));
    let (schedule, next_scheduled) = match feed.schedule {
        crate::config::Schedule::OnArrival => ("on_arrival".to_string(), None),
        crate::config::Schedule::Daily {
            hour,
            minute,
            second,
        } => {
            let tz = config.time_zone();
            let next = crate::worker::schedule::next_slot(now, &tz, hour, minute, second);
            (
                format!("daily {hour:02}:{minute:02}:{second:02}"),
                Some(next.to_string()),
            )
        }
    };
    let seen = |file_seen: bool| {
        state
            .as_ref()
            .filter(|s| s.file_seen == file_seen)
            .and_then(|_| unix_text(last_arrival))
    };
    let (last_file_at, watched_since) = (seen(true), seen(false));
    Ok(FeedHealth {
        feed: feed.name.clone(),
        schedule,
        next_scheduled_local: local(&next_scheduled),
        next_scheduled,
        expect_every: humantime::format_duration(feed.expect_every).to_string(),
        last_file_local: local(&last_file_at),
        last_file_at,
        watched_since_local: local(&watched_since),
        watched_since,
        overdue,
        last_run: last.map(|r| LastRun {
            run_id: r.run_id,
            file: r.file.clone(),
            state: r.state.as_str(),
            finished_at: r.finished_at.clone(),
            finished_local: local_time(config, &r.finished_at),
            added: r.counts.added,
            updated: r.counts.updated,
            removed: r.counts.removed,
            applied: r.state == RunState::Applied,
        }),
        held_runs: held,
        health: Health { level, text },
        recipients,
        groups,
        trend: trend(&runs, recipients),
        key_warnings: key_warnings(feed, now.as_second().max(0) as u64),
        scim: scim_health(feed, store)?,
    })
}

/// The feed's OpenPGP keys near or past their expiry, one line each.
pub fn key_warnings(feed: &crate::config::Feed, now: u64) -> Vec<String> {
    crate::import::pgp::expiring_keys(feed, now)
        .into_iter()
        .map(|k| k.message)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ApplyCounts;

    fn run(id: u64, state: RunState, added: u64, removed: u64) -> Run {
        Run {
            run_id: Some(id),
            state,
            reason: Some("a reason".into()),
            counts: ApplyCounts {
                added,
                removed,
                ..Default::default()
            },
            ..Run::new("hr", "f.csv", String::new())
        }
    }

    #[test]
    fn the_trend_works_back_from_the_count_now_through_applied_runs_only() {
        // Newest first: a held run (changes nothing), then two applied.
        let runs = [
            run(3, RunState::Held, 0, 50),
            run(2, RunState::Applied, 5, 2),
            run(1, RunState::Applied, 100, 0),
        ];
        let points: Vec<(u64, u64, u64)> = trend(&runs, 103)
            .iter()
            .map(|p| (p.recipients, p.added, p.removed))
            .collect();
        assert_eq!(points, [(100, 100, 0), (103, 5, 2), (103, 0, 0)]);
    }

    #[test]
    fn the_badge_says_the_worst_true_thing() {
        let level = |last: Option<&Run>, overdue, held| health_level(last, overdue, held).0;
        let failed = run(1, RunState::Failed, 0, 0);
        let applied = run(1, RunState::Applied, 1, 0);
        let rejected = run(1, RunState::Rejected, 0, 0);
        assert_eq!(level(Some(&failed), true, true), "failed");
        assert_eq!(level(Some(&applied), true, true), "overdue");
        assert_eq!(level(Some(&applied), false, true), "held");
        assert_eq!(level(Some(&rejected), false, false), "rejected");
        assert_eq!(level(Some(&applied), false, false), "ok");
        assert_eq!(level(None, false, false), "new");
        assert_eq!(level(None, true, false), "overdue");
    }
}
