//! The outbox: report emails waiting to be sent, and what became of them.
//! `outbox`: message ID → JSON [`Message`]. A run's report is queued in
//! the run's own write transaction, so a run is never recorded without
//! its report nor a report without its run; the sender updates each
//! message's delivery state in small transactions of its own.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{optional, take_next_id, RunTransaction, Store, StoreError};

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// IDs of the messages still to be sent: the sender reads only these.
const OUTBOX_PENDING: TableDefinition<u64, ()> = TableDefinition::new("outbox_pending");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Waiting for its first attempt.
    Queued,
    /// The server accepted it.
    Sent,
    /// Attempts failed; it is tried again at `next_attempt`.
    Failing,
    /// Failed for longer than the retry period (or permanently refused).
    GaveUp,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Sent => "sent",
            Delivery::Failing => "failing",
            Delivery::GaveUp => "gave_up",
        }
    }
}

/// One email and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    /// What it is about: `run`, `overdue`, `reminder`.
    pub kind: String,
    pub feed: String,
    pub run_id: Option<u64>,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A file to attach (the run's error report), read when sending.
    pub attachment: Option<String>,
    pub state: Delivery,
    pub queued_at: String,
    /// The same, in Unix seconds (for the retry period).
    pub queued_unix: u64,
    /// Unix seconds of the first attempt's due time, then of the next one.
    pub next_attempt: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
    /// The SMTP server's answer to the accepted message.
    pub server_reply: Option<String>,
}

impl Message {
    /// Who it went to and what became of it, as `runs show --json` and the
    /// API show it (never the body).
    pub fn delivery_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "to": self.to,
            "subject": self.subject,
            "state": self.state.as_str(),
            "queued_at": self.queued_at,
            "attempts": self.attempts,
            "sent_at": self.sent_at,
            "last_error": self.last_error,
            "server_reply": self.server_reply,
        })
    }
}

fn decode(bytes: &[u8]) -> Result<Message, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("an outbox message is unreadable: {e}")))
}

fn next_message_id(txn: &WriteTransaction) -> Result<u64, StoreError> {
    take_next_id(txn, "next_message_id")
}

fn put(txn: &WriteTransaction, message: &Message) -> Result<(), StoreError> {
    let json = serde_json::to_vec(message).map_err(|e| StoreError::Internal(e.to_string()))?;
    txn.open_table(OUTBOX)?
        .insert(message.id, json.as_slice())?;
    let mut pending = txn.open_table(OUTBOX_PENDING)?;
    match message.state {
        Delivery::Queued | Delivery::Failing => {
            pending.insert(message.id, ())?;
        }
        Delivery::Sent | Delivery::GaveUp => {
            pending.remove(message.id)?;
        }
    }
    Ok(())
}

fn queue_in(txn: &WriteTransaction, mut message: Message) -> Result<u64, StoreError> {
    message.id = next_message_id(txn)?;
    put(txn, &message)?;
    Ok(message.id)
}

impl RunTransaction {
    /// Queues a message with the run (its ID is assigned here).
    pub fn queue_message(&self, message: Message) -> Result<u64, StoreError> {
        queue_in(&self.txn, message)
    }
}

impl Store {
    /// Queues a message on its own (alerts and reminders).
    pub fn queue_message(&self, message: Message) -> Result<u64, StoreError> {
        let txn = self.begin_write()?;
        let id = queue_in(&txn, message)?;
        txn.commit()?;
        Ok(id)
    }

    /// Every message, oldest first.
    pub fn messages(&self) -> Result<Vec<Message>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(OUTBOX))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Messages still to be sent (queued or failing), oldest first.
    pub fn pending_messages(&self) -> Result<Vec<Message>, StoreError> {
        let txn = self.begin_read()?;
        let (Some(pending), Some(outbox)) = (
            optional(txn.open_table(OUTBOX_PENDING))?,
            optional(txn.open_table(OUTBOX))?,
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in pending.iter()? {
            let id = entry?.0.value();
            if let Some(v) = outbox.get(id)? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    pub fn messages_of_run(&self, run_id: u64) -> Result<Vec<Message>, StoreError> {
        Ok(self
            .messages()?
            .into_iter()
            .filter(|m| m.run_id == Some(run_id))
            .collect())
    }

    /// Records a delivery attempt's outcome.
    pub fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        put(&txn, message)?;
        txn.commit()?;
        Ok(())
    }
}

/// Deletes sent and given-up messages queued before `before` (Unix
/// seconds); ones still to send stay whatever their age.
pub(super) fn prune_delivered(txn: &WriteTransaction, before: u64) -> Result<u64, StoreError> {
    let done: Vec<u64> = {
        let table = txn.open_table(OUTBOX)?;
        let mut done = Vec::new();
        for entry in table.iter()? {
            let message = decode(entry?.1.value())?;
            if message.queued_unix >= before {
                // IDs grow with time: the rest are newer.
                break;
            }
            if matches!(message.state, Delivery::Sent | Delivery::GaveUp) {
                done.push(message.id);
            }
        }
        done
    };
    let mut table = txn.open_table(OUTBOX)?;
    for id in &done {
        table.remove(*id)?;
    }
    Ok(done.len() as u64)
}
