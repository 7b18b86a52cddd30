//! What a recorded run sends: its event (if any) and the messages, one
//! per target that subscribes to it (several with `include_changes =
//! "full"`: its changes paged). Decides only; the worker queues the
//! messages in the run's transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::{Feed, IncludeChanges, Webhook};
use crate::store::{HookMessage, HookState, LoggedChange, Run, RunState};

/// The `events` name of what just happened to `run`, when it is one a
/// webhook can subscribe to: a held run confirmed is `confirmed` (its
/// state says applied or unchanged), an applied undo of a whole run is
/// `undone`, a superseded file and a dry run are none.
pub fn event_of(run: &Run) -> Option<&'static str> {
    if run.dry_run {
        return None;
    }
    Some(match run.state {
        RunState::Superseded => return None,
        RunState::Rejected => "rejected",
        RunState::Held => "held",
        RunState::Failed => "failed",
        RunState::Applied | RunState::Unchanged if run.confirmed_by.is_some() => "confirmed",
        RunState::Applied if run.undo_of.is_some() && run.restored_id.is_none() => "undone",
        RunState::Applied => "applied",
        RunState::Unchanged => "unchanged",
    })
}

/// Whether some target of `feed` wants `run`'s changes listed (the
/// caller reads them from the change log only then).
pub fn wants_changes(feed: &Feed, run: &Run) -> bool {
    event_of(run).is_some_and(|event| {
        feed.webhooks
            .iter()
            .any(|h| h.wants(event) && h.include_changes == IncludeChanges::Full)
    })
}

/// The messages `run` sends to `feed`'s targets, in the order to deliver;
/// `changes`: the run's logged changes when [`wants_changes`] said so.
pub fn run_messages(
    feed: &Feed,
    run: &Run,
    changes: &[LoggedChange],
    now: SystemTime,
) -> Vec<HookMessage> {
    let Some(event) = event_of(run) else {
        return Vec::new();
    };
    let stamp = Stamp::of(now);
    feed.webhooks
        .iter()
        .filter(|hook| hook.wants(event))
        .flat_map(|hook| target_messages(hook, feed, run, event, changes, &stamp))
        .collect()
}

/// When the event happened, as the payload and the queue record it.
struct Stamp {
    text: String,
    unix: u64,
}

impl Stamp {
    fn of(now: SystemTime) -> Stamp {
        Stamp {
            text: humantime::format_rfc3339_seconds(now).to_string(),
            unix: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

fn target_messages(
    hook: &Webhook,
    feed: &Feed,
    run: &Run,
    event: &str,
    changes: &[LoggedChange],
    stamp: &Stamp,
) -> Vec<HookMessage> {
    let kind = format!("run.{event}");
    let mut data = run_data(feed, run);
    if hook.include_changes != IncludeChanges::None {
        data["counts"] = json!(run.counts);
    }
    if hook.include_changes != IncludeChanges::Full {
        return vec![queued(
            hook,
            feed,
            run,
            &kind,
            payload(&kind, stamp, data),
            1,
            1,
            stamp,
        )];
    }
    // An empty run still sends one page (of no changes).
    let pages: Vec<&[LoggedChange]> = match changes {
        [] => vec![&[]],
        all => all.chunks(hook.page_size.max(1)).collect(),
    };
    let count = pages.len() as u32;
    pages
        .into_iter()
        .zip(1..)
        .map(|(page, number)| {
            let mut data = data.clone();
            data["page"] = json!(number);
            data["pages"] = json!(count);
            data["changes"] = json!(page);
            let body = payload(&kind, stamp, data);
            queued(hook, feed, run, &kind, body, number, count, stamp)
        })
        .collect()
}

/// What every event says of its run.
fn run_data(feed: &Feed, run: &Run) -> Value {
    json!({
        "feed": feed.name,
        "run_id": run.run_id,
        "file": run.file,
        "state": run.state.as_str(),
        "reason": run.reason,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "confirmed_by": run.confirmed_by,
        "rejected_by": run.rejected_by,
        "undo_of": run.undo_of,
    })
}

fn payload(kind: &str, stamp: &Stamp, data: Value) -> String {
    json!({"type": kind, "timestamp": stamp.text, "data": data}).to_string()
}

#[allow(clippy::too_many_arguments)]
fn queued(
    hook: &Webhook,
    feed: &Feed,
    run: &Run,
    kind: &str,
    body: String,
    page: u32,
    pages: u32,
    stamp: &Stamp,
) -> HookMessage {
    HookMessage {
        id: 0,
        feed: feed.name.clone(),
        url: hook.url.clone(),
        run_id: run.run_id,
        event: kind.to_string(),
        page,
        pages,
        body,
        state: HookState::Queued,
        queued_at: stamp.text.clone(),
        queued_unix: stamp.unix,
        next_attempt: stamp.unix,
        attempts: 0,
        last_error: None,
        last_status: None,
        delivered_at: None,
    }
}

/// The `flagsync webhooks test` payload.
pub fn ping_body(feed: &Feed, now: SystemTime) -> String {
    let stamp = Stamp::of(now);
    payload("ping", &stamp, json!({"feed": feed.name}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Source};

    fn feed_with(hooks: &str) -> Feed {
        let text = format!(
            "[[feed]]\nname = \"hr\"\n[[feed.field]]\nname = \"id\"\ntype = \"id\"\n{hooks}"
        );
        Config::parse(&text, Source::Embedded)
            .unwrap()
            .feeds
            .remove(0)
    }

    fn applied(changes: u64) -> Run {
        let mut run = Run::new("hr", "hr.csv", "2026-12-05T00:00:00Z".into());
        run.run_id = Some(7);
        run.state = RunState::Applied;
        run.counts.added = changes;
        run
    }

    #[test]
    fn events_name_what_happened() {
        let mut run = applied(1);
        assert_eq!(event_of(&run), Some("applied"));
        run.confirmed_by = Some("ann".into());
        assert_eq!(event_of(&run), Some("confirmed"));
        run.confirmed_by = None;
        run.undo_of = Some(3);
        assert_eq!(event_of(&run), Some("undone"));
        run.state = RunState::Superseded;
        assert_eq!(event_of(&run), None);
    }

    #[test]
    fn full_changes_are_paged_in_order_per_target() {
        let feed = feed_with(
            "[[feed.webhook]]\nurl = \"https://a/\"\nsecret_file = \"s\"\ninclude_changes = \"full\"\npage_size = 2\n\
             [[feed.webhook]]\nurl = \"https://b/\"\nsecret_file = \"s\"\nevents = [\"held\"]\n",
        );
        let changes: Vec<LoggedChange> = (1..=5)
            .map(|i| LoggedChange::Added {
                id: format!("E{i}"),
            })
            .collect();
        let run = applied(5);
        assert!(wants_changes(&feed, &run));
        let messages = run_messages(&feed, &run, &changes, SystemTime::now());
        let pages: Vec<(u32, u32)> = messages.iter().map(|m| (m.page, m.pages)).collect();
        assert_eq!(pages, [(1, 3), (2, 3), (3, 3)], "b wants held runs only");
        let last: Value = serde_json::from_str(&messages[2].body).unwrap();
        assert_eq!(last["type"], "run.applied");
        assert_eq!(last["data"]["changes"][0]["id"], "E5");
        assert_eq!(last["data"]["counts"]["added"], 5);
    }
}
