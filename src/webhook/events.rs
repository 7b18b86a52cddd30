//! What a recorded run sends: its event (if any) and the messages, one
//! per target that subscribes to it (several with `include_changes =
//! "full"`: its changes paged). Decides only; the worker queues the
//! messages in the run's transaction.
//!
//! A page of changes is queued without them (the run's transaction counts
//! its changes, nothing more): its payload less `data.changes`, which
//! [`page_body`] adds when the sender reads the page from the change log.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::{Feed, IncludeChanges, Webhook};
use crate::store::{HookMessage, HookState, LoggedChange, PageOfChanges, Run, RunState};

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
/// caller counts them in the change log only then).
pub fn wants_changes(feed: &Feed, run: &Run) -> bool {
    event_of(run).is_some_and(|event| {
        feed.webhooks
            .iter()
            .any(|h| h.wants(event) && h.include_changes == IncludeChanges::Full)
    })
}

/// The messages `run` sends to `feed`'s targets, in the order to deliver;
/// `logged`: how many changes the run logged, when [`wants_changes`] said
/// so. Pages of changes are queued without them (see [`page_body`]).
pub fn run_messages(feed: &Feed, run: &Run, logged: u64, now: SystemTime) -> Vec<HookMessage> {
    let Some(event) = event_of(run) else {
        return Vec::new();
    };
    let stamp = Stamp::of(now);
    feed.webhooks
        .iter()
        .filter(|hook| hook.wants(event))
        .flat_map(|hook| target_messages(hook, feed, run, event, logged, &stamp))
        .collect()
}

/// A page's payload as sent: `frame` (its body as queued, the payload
/// without `data.changes`) with the page's `changes` added last, byte for
/// byte the payload built with them in the first place (the JSON keeps
/// its keys' order).
pub fn page_body(frame: &str, changes: &[LoggedChange]) -> Result<String, String> {
    let mut payload: Value = serde_json::from_str(frame)
        .map_err(|e| format!("the queued message is damaged ({e}); not sent"))?;
    let data = payload
        .get_mut("data")
        .and_then(Value::as_object_mut)
        .ok_or("the queued message has no `data`; not sent")?;
    data.insert("changes".into(), json!(changes));
    Ok(payload.to_string())
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
    logged: u64,
    stamp: &Stamp,
) -> Vec<HookMessage> {
    let kind = format!("run.{event}");
    let mut data = run_data(feed, run);
    if hook.include_changes != IncludeChanges::None {
        data["counts"] = json!(run.counts);
    }
    if hook.include_changes != IncludeChanges::Full {
        let body = payload(&kind, stamp, data);
        return vec![queued(hook, feed, run, &kind, body, 1, 1, stamp)];
    }
    let page_size = hook.page_size.max(1) as u64;
    // An empty run still sends one page (of no changes).
    let count = logged.div_ceil(page_size).max(1);
    let pages = u32::try_from(count).unwrap_or(u32::MAX);
    (1..=pages)
        .map(|number| {
            let mut data = data.clone();
            data["page"] = json!(number);
            data["pages"] = json!(pages);
            let frame = payload(&kind, stamp, data);
            let mut message = queued(hook, feed, run, &kind, frame, number, pages, stamp);
            message.changes = Some(PageOfChanges {
                offset: u64::from(number - 1) * page_size,
                page_size,
                run_changes: logged,
            });
            message
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
        changes: None,
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

/// The pages' bodies as they were built whole in the run's transaction
/// before pages were built when sent: what [`page_body`] must give, byte
/// for byte.
#[cfg(test)]
pub(crate) fn eager_page_bodies(
    feed: &Feed,
    run: &Run,
    event: &str,
    changes: &[LoggedChange],
    page_size: usize,
    timestamp: &str,
) -> Vec<String> {
    let stamp = Stamp {
        text: timestamp.to_string(),
        unix: 0,
    };
    let kind = format!("run.{event}");
    let mut data = run_data(feed, run);
    data["counts"] = json!(run.counts);
    let pages: Vec<&[LoggedChange]> = match changes {
        [] => vec![&[]],
        all => all.chunks(page_size.max(1)).collect(),
    };
    let count = pages.len() as u32;
    pages
        .into_iter()
        .zip(1..)
        .map(|(page, number): (&[LoggedChange], u32)| {
            let mut data = data.clone();
            data["page"] = json!(number);
            data["pages"] = json!(count);
            data["changes"] = json!(page);
            payload(&kind, &stamp, data)
        })
        .collect()
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

    fn full_feed(page_size: usize) -> Feed {
        feed_with(&format!(
            "[[feed.webhook]]\nurl = \"https://a/\"\nsecret_file = \"s\"\ninclude_changes = \"full\"\npage_size = {page_size}\n\
             [[feed.webhook]]\nurl = \"https://b/\"\nsecret_file = \"s\"\nevents = [\"held\"]\n"
        ))
    }

    fn added(n: usize) -> Vec<LoggedChange> {
        (1..=n)
            .map(|i| LoggedChange::Added {
                id: format!("E{i}"),
            })
            .collect()
    }

    /// Each page's body as the sender builds it from the run's changes.
    fn built(messages: &[HookMessage], changes: &[LoggedChange]) -> Vec<String> {
        messages
            .iter()
            .map(|m| {
                let page = m.changes.expect("a page of changes");
                let from = page.offset as usize;
                let to = (from + page.limit()).min(changes.len());
                page_body(&m.body, &changes[from..to]).unwrap()
            })
            .collect()
    }

    #[test]
    fn full_changes_are_paged_in_order_per_target() {
        let feed = full_feed(2);
        let changes = added(5);
        let run = applied(5);
        assert!(wants_changes(&feed, &run));
        let messages = run_messages(&feed, &run, 5, SystemTime::now());
        let pages: Vec<(u32, u32)> = messages.iter().map(|m| (m.page, m.pages)).collect();
        assert_eq!(pages, [(1, 3), (2, 3), (3, 3)], "b wants held runs only");
        let offsets: Vec<(u64, u64)> = messages
            .iter()
            .map(|m| m.changes.map_or((99, 99), |p| (p.offset, p.len())))
            .collect();
        assert_eq!(offsets, [(0, 2), (2, 2), (4, 1)]);
        for m in &messages {
            let queued: Value = serde_json::from_str(&m.body).unwrap();
            assert!(queued["data"].get("changes").is_none(), "{}", m.body);
        }
        let bodies = built(&messages, &changes);
        let last: Value = serde_json::from_str(&bodies[2]).unwrap();
        assert_eq!(last["type"], "run.applied");
        assert_eq!(last["data"]["changes"][0]["id"], "E5");
        assert_eq!(last["data"]["counts"]["added"], 5);
    }

    #[test]
    fn pages_built_when_sent_are_the_bodies_built_whole_byte_for_byte() {
        let mut changes = added(4);
        changes.push(LoggedChange::Updated {
            id: "U\"1\u{e9}".into(),
            fields: vec![crate::store::LoggedField {
                field: "email".into(),
                old: "a@x".into(),
                new: "b\n\u{1F600}@x".into(),
            }],
        });
        changes.push(LoggedChange::Removed {
            id: "R1".into(),
            values: vec![crate::store::LoggedValue {
                field: "name".into(),
                value: "Zo\u{eb} \\ </script>".into(),
            }],
        });
        let now = SystemTime::now();
        for (n, page_size) in [(0, 3), (1, 3), (5, 1), (6, 3), (6, 4), (6, 100)] {
            let feed = full_feed(page_size);
            let mut run = applied(n as u64);
            run.reason = Some("r\u{e9}ason \"q\"".into());
            let messages = run_messages(&feed, &run, n as u64, now);
            let eager = eager_page_bodies(
                &feed,
                &run,
                "applied",
                &changes[..n],
                page_size,
                &messages[0].queued_at,
            );
            assert_eq!(messages.len(), eager.len(), "{n} by {page_size}");
            assert_eq!(built(&messages, &changes[..n]), eager, "{n} by {page_size}");
        }
    }
}
