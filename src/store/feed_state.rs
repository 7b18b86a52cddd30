//! What the scheduler remembers per feed, so that a restart neither
//! repeats nor forgets: `feed_state`: feed → JSON [`FeedState`].

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{optional, Run, Store, StoreError, RUNS};

const FEED_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("feed_state");

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// Unix seconds of the last file's arrival (or of the first time the
    /// server saw the feed, before any file).
    pub last_arrival: u64,
    /// An overdue alert went out for the current silence.
    pub overdue_alerted: bool,
    /// Unix seconds of the last `daily` slot that was processed.
    pub schedule_done: u64,
    /// A file has arrived at least once (else `last_arrival` is when the
    /// server first saw the feed).
    #[serde(default)]
    pub file_seen: bool,
}

impl Store {
    pub fn feed_state(&self, feed: &str) -> Result<Option<FeedState>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(FEED_STATE))? else {
            return Ok(None);
        };
        let found = table.get(feed)?;
        found
            .map(|v| {
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Damaged(format!("feed state of {feed}: {e}")))
            })
            .transpose()
    }

    pub fn put_feed_state(&self, feed: &str, state: &FeedState) -> Result<(), StoreError> {
        let json = serde_json::to_vec(state).map_err(|e| StoreError::Internal(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(FEED_STATE)?.insert(feed, json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The newest runs, at most `limit`, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<Run>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(RUNS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(limit) {
            let (_, v) = entry?;
            out.push(super::runs::decode_run(v.value())?);
        }
        Ok(out)
    }
}
