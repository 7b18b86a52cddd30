//! Run records: what happened to each file.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::import::{ApplyCounts, Encoding, RowError};

use super::{optional, Store, StoreError, RUNS};

/// A run's state. `held` runs wait for `confirm` (→ applied or unchanged),
/// `reject` (→ rejected) or a newer file (→ superseded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Applied,
    Unchanged,
    Held,
    Failed,
    Rejected,
    Superseded,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Applied => "applied",
            RunState::Unchanged => "unchanged",
            RunState::Held => "held",
            RunState::Failed => "failed",
            RunState::Rejected => "rejected",
            RunState::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        [
            RunState::Applied,
            RunState::Unchanged,
            RunState::Held,
            RunState::Failed,
            RunState::Rejected,
            RunState::Superseded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The record of one run, as stored and as printed by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub run_id: Option<u64>,
    pub feed: String,
    /// The file's name as it arrived.
    pub file: String,
    pub state: RunState,
    pub dry_run: bool,
    pub reason: Option<String>,
    #[serde(flatten)]
    pub counts: ApplyCounts,
    pub encoding: Option<Encoding>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// Path of the error report, when the run flagged rows.
    pub error_report: Option<String>,
    /// Path of the kept copy of a held file.
    pub held_file: Option<String>,
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<String>,
    pub rejected_by: Option<String>,
    pub rejected_at: Option<String>,
    pub superseded_by: Option<u64>,
    /// The first row errors (at most [`Run::KEPT_ERRORS`]).
    pub errors: Vec<RowError>,
    /// On the server: the claimed upload (`processing/<name>`) the run
    /// came from, so that a restart knows it was already recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// A held run: the first of those it would remove (ID and name), for
    /// the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_remove: Vec<String>,
    /// A held run: when its one reminder email was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at: Option<String>,
}

impl Run {
    pub const KEPT_ERRORS: usize = 100;

    /// The run as `--json` and the API give it; without its error list
    /// unless `with_errors` (only `runs show` and the run's own API entry
    /// list them).
    pub fn to_json(&self, with_errors: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut v {
            if !with_errors {
                map.remove("errors");
            }
        }
        v
    }
}

pub(super) fn put_run(txn: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let id = run
        .run_id
        .ok_or_else(|| StoreError::Damaged("internal: run without an ID".into()))?;
    let json = serde_json::to_vec(run).map_err(|e| StoreError::Damaged(e.to_string()))?;
    txn.open_table(RUNS)?.insert(id, json.as_slice())?;
    Ok(())
}

pub(super) fn decode_run(bytes: &[u8]) -> Result<Run, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("a run record cannot be read: {e}")))
}

pub(super) fn get_run_in(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Run, StoreError> {
    match table.get(id)? {
        Some(v) => decode_run(v.value()),
        None => Err(StoreError::UnknownRun(id)),
    }
}

pub(super) fn supersede_held(
    txn: &WriteTransaction,
    feed: &str,
    by: u64,
) -> Result<Vec<Run>, StoreError> {
    let mut table = txn.open_table(RUNS)?;
    let mut held = Vec::new();
    for entry in table.iter()? {
        let (_, v) = entry?;
        let run = decode_run(v.value())?;
        if run.feed == feed && run.state == RunState::Held && run.run_id != Some(by) {
            held.push(run);
        }
    }
    for run in &mut held {
        run.state = RunState::Superseded;
        run.superseded_by = Some(by);
        let json = serde_json::to_vec(&*run).map_err(|e| StoreError::Damaged(e.to_string()))?;
        if let Some(id) = run.run_id {
            table.insert(id, json.as_slice())?;
        }
    }
    Ok(held)
}

impl Store {
    pub fn get_run(&self, id: u64) -> Result<Run, StoreError> {
        let txn = self.begin_read()?;
        match optional(txn.open_table(RUNS))? {
            Some(t) => get_run_in(&t, id),
            None => Err(StoreError::UnknownRun(id)),
        }
    }

    /// Runs, newest first, optionally of one feed only.
    pub fn list_runs(&self, feed: Option<&str>) -> Result<Vec<Run>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(RUNS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()?.rev() {
            let (_, v) = entry?;
            let run = decode_run(v.value())?;
            if feed.is_none_or(|f| f == run.feed) {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Rewrites one run record on its own (reject).
    pub fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        put_run(&txn, run)?;
        txn.commit()?;
        Ok(())
    }
}
