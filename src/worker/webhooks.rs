//! Queues a recorded run's webhook events in the run's own transaction
//! (so a run is never recorded without its events), as `queue_report`
//! does its email.

use std::time::SystemTime;

use crate::config::Feed;
use crate::store::{Run, RunTransaction};
use crate::webhook::events;

use super::WorkerError;

/// Queues what `run` sends to `feed`'s webhooks; whether it queued any
/// (then [`wake_sender`] after the commit).
pub(super) fn queue_events(
    feed: &Feed,
    run: &Run,
    txn: &RunTransaction,
) -> Result<bool, WorkerError> {
    let changes = match run.run_id {
        Some(id) if events::wants_changes(feed, run) => {
            txn.first_changes(&feed.name, id, usize::MAX)?
        }
        _ => Vec::new(),
    };
    let messages = events::run_messages(feed, run, &changes, SystemTime::now());
    let queued = !messages.is_empty();
    txn.queue_webhooks(messages)?;
    Ok(queued)
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
