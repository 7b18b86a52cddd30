//! Webhook messages: signed run events waiting to be POSTed, and what
//! became of them (as the outbox is for emails).
//!
//! Tables:
//! - `webhooks`: message ID → JSON [`HookMessage`] (its body as signed,
//!   its delivery state);
//! - `webhooks_pending`: (target, message ID) → () of the messages still
//!   to deliver, a target being `"<feed> <url>"`: a target's pending
//!   messages are one range in queueing order, so the sender reads each
//!   target's oldest (its head) without reading the rest;
//! - `meta.next_webhook_id`.
//!
//! Invariants:
//! 1. A run's messages are queued in the run's own write transaction: a
//!    run is never recorded without its events nor an event without its run.
//!    A page of its changes (`include_changes = "full"`) is queued without
//!    them: its payload less `changes`, and which of the run's changes it
//!    lists ([`PageOfChanges`]); the sender reads them from the change log
//!    when it sends the page. A million-change run writes a thousand small
//!    messages, not its changes a second time.
//! 2. Message IDs grow: within a target, ID order is the order to deliver.
//! 3. `webhooks_pending` lists exactly the queued and failing messages.
//! 4. A page's changes are the run's as logged when it was queued: the
//!    log of a kept run is rewritten only by the confirmation of a held
//!    run, which first writes the pages still pending into their bodies.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{optional, take_next_id, RunTransaction, Store, StoreError};

const WEBHOOKS: TableDefinition<u64, &[u8]> = TableDefinition::new("webhooks");
const WEBHOOKS_PENDING: TableDefinition<(&str, u64), ()> = TableDefinition::new("webhooks_pending");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookState {
    /// Waiting for its first attempt (or for an older message of its
    /// target).
    Queued,
    /// The receiver answered 2xx.
    Delivered,
    /// Attempts failed; it is tried again at `next_attempt`, and holds back
    /// its target's later messages.
    Failing,
    /// Failed for longer than the target's `retry_for`, or its target is
    /// no longer configured.
    GaveUp,
}

impl HookState {
    pub const ALL: [HookState; 4] = [
        HookState::Queued,
        HookState::Delivered,
        HookState::Failing,
        HookState::GaveUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookState::Queued => "queued",
            HookState::Delivered => "delivered",
            HookState::Failing => "failing",
            HookState::GaveUp => "gave_up",
        }
    }

    fn pending(self) -> bool {
        matches!(self, HookState::Queued | HookState::Failing)
    }
}

/// Which of its run's changes a page lists, read from the change log when
/// it is sent (the order of `Store::run_changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOfChanges {
    /// Of the page's first change in the run's list.
    pub offset: u64,
    /// The target's `page_size` when the page was queued.
    pub page_size: u64,
    /// How many changes the run had logged then.
    pub run_changes: u64,
}

impl PageOfChanges {
    /// How many changes the page lists: a full page, or the rest.
    pub fn len(&self) -> u64 {
        self.page_size
            .min(self.run_changes.saturating_sub(self.offset))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`PageOfChanges::len`] as a read's limit.
    pub fn limit(&self) -> usize {
        usize::try_from(self.len()).unwrap_or(usize::MAX)
    }
}

/// One webhook POST and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookMessage {
    /// Assigned when queued.
    pub id: u64,
    pub feed: String,
    /// As configured (it may hold a token: show [`crate::config::shown_url`]).
    pub url: String,
    /// `None` for a message of no run (none yet: pings are not queued).
    pub run_id: Option<u64>,
    /// The payload's `type`: `run.applied`, `run.confirmed`, ...
    pub event: String,
    /// 1-based; a run's changes with `include_changes = "full"` may take
    /// several messages.
    pub page: u32,
    pub pages: u32,
    /// The JSON payload, exactly as signed and sent; with `changes`, the
    /// payload without its `data.changes`, which are added when it is sent.
    pub body: String,
    /// A page of changes built when sent (`None`: `body` is all of it, as
    /// every message queued before pages were built lazily).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<PageOfChanges>,
    pub state: HookState,
    pub queued_at: String,
    /// The same, in Unix seconds (for `retry_for`, and the `webhook-id`).
    pub queued_unix: u64,
    /// Unix seconds of the first attempt's due time, then of the next one.
    pub next_attempt: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The HTTP status of the last answer, when there was one.
    pub last_status: Option<u16>,
    pub delivered_at: Option<String>,
}

impl HookMessage {
    /// The target it goes to: its feed and URL (the key of its queue).
    pub fn target(&self) -> String {
        target_key(&self.feed, &self.url)
    }

    /// The `webhook-id` header: the same on every attempt, so that a
    /// receiver can drop a message it already has.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}_{}", self.queued_unix, self.id)
    }

    /// What became of it, as `runs show --json` and the API show it (the
    /// URL without its query, never the body).
    pub fn delivery_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.webhook_id(),
            "url": crate::config::shown_url(&self.url),
            "event": self.event,
            "page": self.page,
            "pages": self.pages,
            "state": self.state.as_str(),
            "queued_at": self.queued_at,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "next_attempt_at": (self.state == HookState::Failing).then(|| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.next_attempt);
                humantime::format_rfc3339_seconds(at).to_string()
            }),
        })
    }
}

/// The queue key of a feed's target (feed names hold no spaces).
pub fn target_key(feed: &str, url: &str) -> String {
    format!("{feed} {url}")
}

fn decode(bytes: &[u8]) -> Result<HookMessage, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("a webhook message is unreadable: {e}")))
}

fn next_hook_id(txn: &WriteTransaction) -> Result<u64, StoreError> {
    take_next_id(txn, "next_webhook_id")
}

fn put(txn: &WriteTransaction, message: &HookMessage) -> Result<(), StoreError> {
    let json = serde_json::to_vec(message).map_err(|e| StoreError::Internal(e.to_string()))?;
    txn.open_table(WEBHOOKS)?
        .insert(message.id, json.as_slice())?;
    let mut pending = txn.open_table(WEBHOOKS_PENDING)?;
    let key = (message.target(), message.id);
    if message.state.pending() {
        pending.insert((key.0.as_str(), key.1), ())?;
    } else {
        pending.remove((key.0.as_str(), key.1))?;
    }
    Ok(())
}

impl RunTransaction {
    /// Queues `messages` with the run, in their order (IDs assigned here).
    pub fn queue_webhooks(&self, messages: Vec<HookMessage>) -> Result<(), StoreError> {
        for mut message in messages {
            message.id = next_hook_id(&self.txn)?;
            put(&self.txn, &message)?;
        }
        Ok(())
    }

    /// Run `run_id`'s pending messages whose changes are still to be read
    /// from its log, in ID order.
    pub fn pending_pages_of_run(&self, run_id: u64) -> Result<Vec<HookMessage>, StoreError> {
        let pending = self.txn.open_table(WEBHOOKS_PENDING)?;
        let messages = self.txn.open_table(WEBHOOKS)?;
        let mut out = Vec::new();
        for entry in pending.iter()? {
            let id = entry?.0.value().1;
            let Some(value) = messages.get(id)? else {
                continue;
            };
            let message = decode(value.value())?;
            if message.run_id == Some(run_id) && message.changes.is_some() {
                out.push(message);
            }
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// Rewrites a queued message in the run's transaction.
    pub fn update_webhook(&self, message: &HookMessage) -> Result<(), StoreError> {
        put(&self.txn, message)
    }
}

impl Store {
    /// The oldest pending message of each target: the only one of its
    /// target that may be attempted (delivery is in order per target).
    pub fn webhook_heads(&self) -> Result<Vec<HookMessage>, StoreError> {
        let txn = self.begin_read()?;
        let (Some(pending), Some(messages)) = (
            optional(txn.open_table(WEBHOOKS_PENDING))?,
            optional(txn.open_table(WEBHOOKS))?,
        ) else {
            return Ok(Vec::new());
        };
        let mut heads = Vec::new();
        let mut last_target: Option<String> = None;
        for entry in pending.iter()? {
            let entry = entry?;
            let (target, id) = entry.0.value();
            if last_target.as_deref() == Some(target) {
                continue;
            }
            last_target = Some(target.to_string());
            if let Some(v) = messages.get(id)? {
                heads.push(decode(v.value())?);
            }
        }
        Ok(heads)
    }

    /// Every webhook message, oldest first.
    pub fn webhook_messages(&self) -> Result<Vec<HookMessage>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(WEBHOOKS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Run `run_id`'s webhook messages, oldest first.
    pub fn webhooks_of_run(&self, run_id: u64) -> Result<Vec<HookMessage>, StoreError> {
        Ok(self
            .webhook_messages()?
            .into_iter()
            .filter(|m| m.run_id == Some(run_id))
            .collect())
    }

    /// Records a delivery attempt's outcome.
    pub fn update_webhook(&self, message: &HookMessage) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        put(&txn, message)?;
        txn.commit()?;
        Ok(())
    }
}

/// Deletes delivered and given-up messages queued before `before` (Unix
/// seconds); pending ones stay whatever their age.
pub(super) fn prune_delivered(txn: &WriteTransaction, before: u64) -> Result<u64, StoreError> {
    let done: Vec<u64> = {
        let table = txn.open_table(WEBHOOKS)?;
        let mut done = Vec::new();
        for entry in table.iter()? {
            let message = decode(entry?.1.value())?;
            if message.queued_unix >= before {
                // IDs grow with time: the rest are newer.
                break;
            }
            if !message.state.pending() {
                done.push(message.id);
            }
        }
        done
    };
    let mut table = txn.open_table(WEBHOOKS)?;
    for id in &done {
        table.remove(*id)?;
    }
    Ok(done.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(feed: &str, url: &str, event: &str) -> HookMessage {
        HookMessage {
            id: 0,
            feed: feed.into(),
            url: url.into(),
            run_id: Some(1),
            event: event.into(),
            page: 1,
            pages: 1,
            body: "{}".into(),
            changes: None,
            state: HookState::Queued,
            queued_at: "2026-12-05T00:00:00Z".into(),
            queued_unix: 1,
            next_attempt: 1,
            attempts: 0,
            last_error: None,
            last_status: None,
            delivered_at: None,
        }
    }

    #[test]
    fn each_target_offers_its_oldest_pending_message_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let txn = store.begin_run().unwrap();
        txn.queue_webhooks(vec![
            message("hr", "https://a/", "run.applied"),
            message("hr", "https://b/", "run.applied"),
            message("hr", "https://a/", "run.held"),
        ])
        .unwrap();
        txn.commit().unwrap();
        let heads = store.webhook_heads().unwrap();
        let seen: Vec<(&str, u64)> = heads.iter().map(|m| (m.url.as_str(), m.id)).collect();
        assert_eq!(seen, [("https://a/", 1), ("https://b/", 2)]);
        let mut first = heads[0].clone();
        first.state = HookState::Failing;
        store.update_webhook(&first).unwrap();
        assert_eq!(
            store.webhook_heads().unwrap()[0].id,
            1,
            "a failing head holds back its target"
        );
        first.state = HookState::Delivered;
        store.update_webhook(&first).unwrap();
        let ids: Vec<u64> = store
            .webhook_heads()
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [3, 2]);
        assert_eq!(store.webhooks_of_run(1).unwrap().len(), 3);
    }
}
