//! Run records: what happened to each file.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::import::{ApplyCounts, Encoding, RowError};

use super::{optional, Store, StoreError, RUNS};

/// (feed, run ID) of every run: a feed's runs, newest first, without
/// reading the others'.
pub(super) const RUNS_BY_FEED: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("runs_by_feed");
/// (feed, run ID) of the runs held now.
pub(super) const HELD_RUNS: TableDefinition<(&str, u64), ()> = TableDefinition::new("held_runs");
/// A server run's claimed upload → its run ID (a restart knows which
/// claims already ran).
pub(super) const RUN_UPLOADS: TableDefinition<&str, u64> = TableDefinition::new("run_uploads");

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

    /// Held, rejected, superseded: nothing of the file was applied, so the
    /// run's counts and change log are what it would have done.
    pub fn nothing_applied(self) -> bool {
        matches!(
            self,
            RunState::Held | RunState::Rejected | RunState::Superseded
        )
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
    /// An undo: the run whose changes it puts back (`runs undo`), or for
    /// a restore the run that removed the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<u64>,
    /// A restore (`recipients restore`): the one person put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_id: Option<String>,
    /// An undone run: the undo that put its changes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_by: Option<u64>,
    /// Who asked for a run that no file started (an undo or a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// An undo: people left as they are because they changed since (each
    /// listed in `errors` and the error report).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conflicts: u64,
    /// What the file was packed in, from the outside in: `pgp`, `gzip`,
    /// `zip: <its one entry>`, `tar.gz: <entry>`, as `pgp, gzip` (the run
    /// read the clear, expanded file; the archive keeps it as sent); or
    /// the workbook sheet it read as CSV: `xlsx: <sheet>`, with `, in
    /// gzip` or `, in pgp, zip: <entry>` when the workbook came packed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// An OpenPGP file: the key it was decrypted with and who signed it
    /// (records from before OpenPGP files were read have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgp: Option<crate::import::pgp::PgpRecord>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Run {
    /// How an OpenPGP file was encrypted and who signed it, in words (the
    /// status page, `runs show`, the report email).
    pub fn pgp_description(&self) -> Option<String> {
        self.pgp.as_ref().map(|p| p.describe())
    }

    pub const KEPT_ERRORS: usize = 100;

    /// A run of `file` for `feed` that has just started: no ID yet, state
    /// `failed` until it ends otherwise, nothing counted.
    pub fn new(feed: &str, file: &str, started_at: String) -> Run {
        Run {
            run_id: None,
            feed: feed.to_string(),
            file: file.to_string(),
            state: RunState::Failed,
            dry_run: false,
            reason: None,
            counts: ApplyCounts::default(),
            encoding: None,
            started_at,
            finished_at: String::new(),
            duration_ms: 0,
            error_report: None,
            held_file: None,
            confirmed_by: None,
            confirmed_at: None,
            rejected_by: None,
            rejected_at: None,
            superseded_by: None,
            errors: Vec::new(),
            upload: None,
            would_remove: Vec::new(),
            reminded_at: None,
            undo_of: None,
            restored_id: None,
            undone_by: None,
            requested_by: None,
            conflicts: 0,
            container: None,
            pgp: None,
        }
    }

    /// The decision on a run that was held: who confirmed or rejected it
    /// and when, or which run superseded it; none for a run never held
    /// (or still held).
    pub fn decision(&self) -> Option<serde_json::Value> {
        let decided = |action: &str, by: &Option<String>, at: &Option<String>| serde_json::json!({"action": action, "by": by, "at": at});
        if self.confirmed_by.is_some() {
            return Some(decided("confirmed", &self.confirmed_by, &self.confirmed_at));
        }
        if self.rejected_by.is_some() {
            return Some(decided("rejected", &self.rejected_by, &self.rejected_at));
        }
        self.superseded_by.map(
            |by| serde_json::json!({"action": "superseded", "by_run": by, "at": self.finished_at}),
        )
    }

    /// How the run's reports number the rows of its file: `row` when it read
    /// a workbook's sheet (line N of the CSV written is row N of the
    /// sheet), `line` for a CSV file.
    pub fn line_word(&self) -> &'static str {
        crate::import::line_word(self.container.as_deref())
    }

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

/// Writes a run record and keeps its indexes in step (invariant 4).
pub(super) fn put_run(txn: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let id = run
        .run_id
        .ok_or_else(|| StoreError::Internal("a run without an ID".into()))?;
    let json = serde_json::to_vec(run).map_err(|e| StoreError::Internal(e.to_string()))?;
    txn.open_table(RUNS)?.insert(id, json.as_slice())?;
    index_run(txn, id, run)
}

fn index_run(txn: &WriteTransaction, id: u64, run: &Run) -> Result<(), StoreError> {
    let key = (run.feed.as_str(), id);
    txn.open_table(RUNS_BY_FEED)?.insert(key, ())?;
    let mut held = txn.open_table(HELD_RUNS)?;
    if run.state == RunState::Held && !run.dry_run {
        held.insert(key, ())?;
    } else {
        held.remove(key)?;
    }
    if let Some(upload) = &run.upload {
        txn.open_table(RUN_UPLOADS)?.insert(upload.as_str(), id)?;
    }
    Ok(())
}

/// Indexes every run of a store written before the run indexes existed.
pub(super) fn index_all_runs(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let runs: Vec<Run> = {
        let table = txn.open_table(RUNS)?;
        let mut runs = Vec::new();
        for entry in table.iter()? {
            runs.push(decode_run(entry?.1.value())?);
        }
        runs
    };
    for run in &runs {
        if let Some(id) = run.run_id {
            index_run(txn, id, run)?;
        }
    }
    Ok(runs.len() as u64)
}

/// Removes a run record and its index entries.
fn delete_run(txn: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let Some(id) = run.run_id else {
        return Ok(());
    };
    txn.open_table(RUNS)?.remove(id)?;
    txn.open_table(RUNS_BY_FEED)?
        .remove((run.feed.as_str(), id))?;
    txn.open_table(HELD_RUNS)?.remove((run.feed.as_str(), id))?;
    if let Some(upload) = &run.upload {
        txn.open_table(RUN_UPLOADS)?.remove(upload.as_str())?;
    }
    super::changes::delete_run_changes(txn, &run.feed, id)
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

/// The run IDs of a feed in an index table, newest first, at most `limit`.
/// The feed's run IDs in `table`, newest first, at most `limit`.
pub(super) fn feed_run_ids(
    table: &impl ReadableTable<(&'static str, u64), ()>,
    feed: &str,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for entry in table.range((feed, 0)..=(feed, u64::MAX))?.rev().take(limit) {
        ids.push(entry?.0.value().1);
    }
    Ok(ids)
}

pub(super) fn supersede_held(
    txn: &WriteTransaction,
    feed: &str,
    by: u64,
) -> Result<Vec<Run>, StoreError> {
    let ids = feed_run_ids(&txn.open_table(HELD_RUNS)?, feed, usize::MAX)?;
    let mut held = Vec::new();
    {
        let table = txn.open_table(RUNS)?;
        for id in ids.into_iter().filter(|&id| id != by) {
            let run = get_run_in(&table, id)?;
            if run.state == RunState::Held {
                held.push(run);
            }
        }
    }
    for run in &mut held {
        run.state = RunState::Superseded;
        run.superseded_by = Some(by);
        put_run(txn, run)?;
    }
    Ok(held)
}

/// What history pruning removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs cut down to their summary (no row errors, no report link).
    pub summarised: u64,
    /// Runs deleted.
    pub deleted: u64,
    /// Sent or given-up report emails deleted.
    pub messages: u64,
}

/// A run's start in Unix seconds (0 when unreadable: pruned first).
fn started_unix(run: &Run) -> u64 {
    humantime::parse_rfc3339_weak(&run.started_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
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
        self.latest_runs(feed, usize::MAX)
    }

    /// At most `limit` runs, newest first, optionally of one feed only; a
    /// feed's are found through `runs_by_feed`, not by reading every run.
    pub fn latest_runs(&self, feed: Option<&str>, limit: usize) -> Result<Vec<Run>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(RUNS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        match (feed, optional(txn.open_table(RUNS_BY_FEED))?) {
            (Some(feed), Some(index)) => {
                for id in feed_run_ids(&index, feed, limit)? {
                    out.push(get_run_in(&table, id)?);
                }
            }
            // A store opened read-only before its first write under this
            // build has no index yet.
            _ => {
                for entry in table.iter()?.rev() {
                    let run = decode_run(entry?.1.value())?;
                    if feed.is_none_or(|f| f == run.feed) {
                        out.push(run);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The feed's held runs, newest first.
    pub fn held_runs(&self, feed: &str) -> Result<Vec<Run>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(RUNS))? else {
            return Ok(Vec::new());
        };
        let Some(held) = optional(txn.open_table(HELD_RUNS))? else {
            drop(table);
            drop(txn);
            let all = self.list_runs(Some(feed))?;
            return Ok(all
                .into_iter()
                .filter(|r| r.state == RunState::Held)
                .collect());
        };
        let mut out = Vec::new();
        for id in feed_run_ids(&held, feed, usize::MAX)? {
            out.push(get_run_in(&table, id)?);
        }
        Ok(out)
    }

    /// The run recorded for a server claim (`processing/<name>`), if any.
    pub fn run_of_upload(&self, claim: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.begin_read()?;
        if let Some(uploads) = optional(txn.open_table(RUN_UPLOADS))? {
            return Ok(uploads.get(claim)?.map(|v| v.value()));
        }
        drop(txn);
        Ok(self
            .list_runs(None)?
            .into_iter()
            .find(|r| r.upload.as_deref() == Some(claim))
            .and_then(|r| r.run_id))
    }

    /// Keeps the history bounded: runs that started before `summary_before`
    /// (Unix seconds) lose their row errors and report link (the report
    /// file is gone with the retention); runs before `delete_before` are
    /// deleted, held ones never; sent or given-up emails and delivered or
    /// given-up webhook messages queued before `summary_before` are deleted.
    pub fn prune_history(
        &self,
        summary_before: u64,
        delete_before: u64,
    ) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let txn = self.begin_write()?;
        let runs: Vec<Run> = {
            let table = txn.open_table(RUNS)?;
            let mut old = Vec::new();
            for entry in table.iter()? {
                let run = decode_run(entry?.1.value())?;
                let started = started_unix(&run);
                if started >= summary_before {
                    // IDs grow with time: the rest are newer.
                    break;
                }
                old.push(run);
            }
            old
        };
        for mut run in runs {
            if run.state == RunState::Held {
                continue;
            }
            if started_unix(&run) < delete_before {
                delete_run(&txn, &run)?;
                pruned.deleted += 1;
            } else if !run.errors.is_empty()
                || run.error_report.is_some()
                || !run.would_remove.is_empty()
            {
                run.errors.clear();
                run.error_report = None;
                run.would_remove.clear();
                put_run(&txn, &run)?;
                pruned.summarised += 1;
            }
        }
        pruned.messages = super::outbox::prune_delivered(&txn, summary_before)?;
        super::webhooks::prune_delivered(&txn, summary_before)?;
        txn.commit()?;
        Ok(pruned)
    }

    /// Rewrites one run record on its own (reject).
    pub fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        put_run(&txn, run)?;
        txn.commit()?;
        Ok(())
    }
}
