//! Queues a recorded run's webhook events in the run's own transaction
//! (so a run is never recorded without its events), as `queue_report`
//! does its email.

use std::time::SystemTime;

use crate::config::Feed;
use crate::store::{Run, RunTransaction};
use crate::webhook::events;

use super::WorkerError;

/// Queues what `run` sends to `feed`'s webhooks; whether it queued any
/// (then [`wake_sender`] after the commit). Pages of changes are queued
/// without them: the transaction only counts the run's changes (a walk of
/// its log's keys), the sender reads each page when it sends it. (Built
/// whole here, the pages of a 1M-row initial import made it ~12% slower
/// and wrote 60 MB into the `webhooks` table; counted, within noise.)
pub(super) fn queue_events(
    feed: &Feed,
    run: &Run,
    txn: &RunTransaction,
) -> Result<bool, WorkerError> {
    // Counted from the log, not taken from `run.counts`: the pages must
    // cover exactly what the sender will find in the log.
    let logged = match run.run_id {
        Some(id) if events::wants_changes(feed, run) => txn.count_changes(&feed.name, id)?,
        _ => 0,
    };
    let messages = events::run_messages(feed, run, logged, SystemTime::now());
    let queued = !messages.is_empty();
    txn.queue_webhooks(messages)?;
    Ok(queued)
}

/// Deletes held run `run_id`'s log, which its confirmation writes again
/// (what it changes instead of what it would). Its pages still waiting
/// for their receiver get their changes first, as the held run logged
/// them: a page says what its event said whenever it is delivered, and
/// is the same on every attempt. Only a receiver that was behind pays for
/// this, and only in a confirmation.
pub(super) fn forget_held_changes(
    txn: &RunTransaction,
    feed: &str,
    run_id: u64,
) -> Result<(), WorkerError> {
    for mut message in txn.pending_pages_of_run(run_id)? {
        let Some(page) = message.changes else {
            continue;
        };
        let changes = txn.changes_slice(feed, run_id, page.offset, page.limit())?;
        // A damaged body stays as it is: the sender gives it up, saying why.
        if let Ok(body) = events::page_body(&message.body, &changes) {
            message.body = body;
            message.changes = None;
            txn.update_webhook(&message)?;
        }
    }
    txn.forget_changes(feed, run_id)?;
    Ok(())
}

/// Once the run committed: the server's sender delivers at once.
pub(super) fn wake_sender(queued: bool) {
    // The SCIM sender reads the change log itself: any committed run may
    // have changed it.
    crate::scim::wake();
    if queued {
        crate::webhook::wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Source};
    use crate::import::{Change, FeedWriter, FieldChange};
    use crate::store::{RunState, Store};
    use serde_json::Value;

    fn full_feed(page_size: usize) -> Feed {
        let text = format!(
            "[[feed]]\nname = \"hr\"\n[[feed.field]]\nname = \"id\"\ntype = \"id\"\n\
             [[feed.webhook]]\nurl = \"https://a/\"\nsecret_file = \"s\"\n\
             include_changes = \"full\"\npage_size = {page_size}\n"
        );
        Config::parse(&text, Source::Embedded)
            .unwrap()
            .feeds
            .remove(0)
    }

    /// Records a run of `feed` in `state` that added `added` people (more
    /// than one chunk of the log's additions), updated one and removed
    /// one, its events queued in its transaction.
    fn record_run(store: &Store, feed: &Feed, state: RunState, added: usize) -> Run {
        let txn = store.begin_run().unwrap();
        let id = txn.next_run_id().unwrap();
        let ids: Vec<String> = (0..added).map(|i| format!("A{i:05}")).collect();
        txn.with_feed(&feed.name, Some(id), |w| {
            for a in &ids {
                w.log_change(Change::Added { id: a }).unwrap();
            }
            let fields = vec![FieldChange {
                field: "email",
                old: "a@x",
                new: "b\"é@x",
            }];
            w.log_change(Change::Updated { id: "U1", fields }).unwrap();
            let values = vec![("name", "Zoë")];
            w.log_change(Change::Removed { id: "R1", values }).unwrap();
        })
        .unwrap();
        let mut run = Run::new(&feed.name, "hr.csv", "2026-12-05T00:00:00Z".into());
        run.run_id = Some(id);
        run.state = state;
        run.counts.added = added as u64;
        run.counts.updated = 1;
        run.counts.removed = 1;
        txn.put_run(&run).unwrap();
        assert!(queue_events(feed, &run, &txn).unwrap());
        txn.commit().unwrap();
        run
    }

    #[test]
    fn a_runs_pages_are_queued_without_changes_and_built_later_as_they_were_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (added, page_size) = (5000, 1000);
        let feed = full_feed(page_size);
        let run = record_run(&store, &feed, RunState::Applied, added);
        let id = run.run_id.unwrap();
        let messages = store.webhook_messages().unwrap();
        // 5002 changes: 5 full pages and one of 2.
        let pages: Vec<(u32, u32)> = messages.iter().map(|m| (m.page, m.pages)).collect();
        assert_eq!(pages, (1..=6).map(|p| (p, 6)).collect::<Vec<_>>());
        for m in &messages {
            assert!(m.body.len() < 1024, "no changes queued: {}", m.body);
            let queued: Value = serde_json::from_str(&m.body).unwrap();
            assert!(queued["data"].get("changes").is_none(), "{}", m.body);
        }
        let all = store.run_changes("hr", id).unwrap();
        let eager = events::eager_page_bodies(
            &feed,
            &run,
            "applied",
            &all,
            page_size,
            &messages[0].queued_at,
        );
        let built: Vec<String> = messages
            .iter()
            .map(|m| {
                let page = m.changes.unwrap();
                let changes = store
                    .kept_run_changes("hr", id, page.offset, page.limit())
                    .unwrap()
                    .expect("the run is kept");
                assert_eq!(changes.len() as u64, page.len());
                events::page_body(&m.body, &changes).unwrap()
            })
            .collect();
        assert_eq!(built, eager);
    }

    #[test]
    fn a_run_without_changes_queues_one_empty_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let feed = full_feed(10);
        let txn = store.begin_run().unwrap();
        let mut run = Run::new("hr", "hr.csv", "2026-12-05T00:00:00Z".into());
        run.run_id = Some(txn.next_run_id().unwrap());
        run.state = RunState::Unchanged;
        txn.put_run(&run).unwrap();
        queue_events(&feed, &run, &txn).unwrap();
        txn.commit().unwrap();
        let messages = store.webhook_messages().unwrap();
        assert_eq!(messages.len(), 1);
        let page = messages[0].changes.unwrap();
        assert_eq!((page.offset, page.len()), (0, 0));
        let changes = store
            .kept_run_changes("hr", run.run_id.unwrap(), 0, page.limit())
            .unwrap();
        assert_eq!(changes, Some(Vec::new()));
    }

    #[test]
    fn a_held_runs_pending_pages_keep_what_it_would_change_through_its_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let feed = full_feed(2);
        let held = record_run(&store, &feed, RunState::Held, 3);
        let id = held.run_id.unwrap();
        let held_log = store.run_changes("hr", id).unwrap();
        let before = store.webhook_messages().unwrap();
        // The first page was delivered before the confirmation.
        let mut first = before[0].clone();
        first.state = crate::store::HookState::Delivered;
        store.update_webhook(&first).unwrap();
        let txn = store.begin_run().unwrap();
        forget_held_changes(&txn, "hr", id).unwrap();
        txn.with_feed("hr", Some(id), |w| {
            w.log_change(Change::Added { id: "OTHER" }).unwrap();
        })
        .unwrap();
        let mut confirmed = held.clone();
        confirmed.state = RunState::Applied;
        confirmed.confirmed_by = Some("ann".into());
        txn.put_run(&confirmed).unwrap();
        txn.commit().unwrap();
        let after = store.webhook_messages().unwrap();
        assert_eq!(after[0].changes, before[0].changes, "delivered: left alone");
        let eager =
            events::eager_page_bodies(&feed, &held, "held", &held_log, 2, &before[0].queued_at);
        assert_eq!(after.len(), 3, "5 changes in pages of 2");
        for (m, body) in after.iter().zip(&eager).skip(1) {
            assert_eq!(m.changes, None, "page {} written whole", m.page);
            assert_eq!(&m.body, body);
        }
    }
}
