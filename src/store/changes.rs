//! The change log: what each run did to each person, written in the run's
//! own write transaction (so a run and its log commit together or not at
//! all).
//!
//! Tables, per feed:
//! - `changes/F`: key run ID (8 bytes, big-endian) + recipient ID → the
//!   change (updates and removals): a run's changes are one range, in ID
//!   order, appended at the table's end (a run's ID is the feed's newest).
//! - `change_added/F`: run ID (big-endian) + the chunk's first recipient ID
//!   → a chunk of the IDs the run added, sorted. An addition keeps no copy
//!   of the record (the store has it), and a million of them cost a few
//!   MiB of chunks instead of a million B-tree entries.
//!
//! A person's history is looked up run by run (the feed's runs are
//! indexed): a point lookup in `changes/F` and one in `change_added/F` per
//! run, instead of a second index written with every change.
//!
//! The change feed (`changes_after`, for `/api/changes`) reads the same
//! ranges in (run ID, recipient ID) order, merging a run's additions with
//! its other changes: a cursor is such a pair. Only applied runs are read
//! (a held run's log is what it would change) and the feed stops at a
//! held run: it may still be confirmed, and no later run of its feed
//! applies before it is decided.
//!
//! A change's value: one byte of kind, then strings as LEB128 length +
//! UTF-8: an update's (field, old, new) triples, a removal's (field,
//! value) pairs.

use compact_str::CompactString;
use rayon::slice::ParallelSliceMut;
use std::ops::ControlFlow;

use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use super::{table_name, StoreError};
use crate::import::Change;

pub(super) type ChangeTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

const UPDATED: u8 = 1;
const REMOVED: u8 = 2;
/// IDs per chunk of a run's additions.
const ADDED_CHUNK: usize = 4096;

pub use crate::import::{LoggedChange, LoggedField, LoggedValue};

impl LoggedChange {
    /// One entry of a person's history, for the command line and the API.
    pub fn history_json(&self, run: &super::Run) -> serde_json::Value {
        serde_json::json!({
            "run_id": run.run_id,
            "started_at": run.started_at,
            "file": run.file,
            "state": run.state.as_str(),
            "confirmed_by": run.confirmed_by,
            "decision": run.decision(),
            "requested_by": run.requested_by,
            "undo_of": run.undo_of,
            "change": self,
        })
    }
}

/// An update's fields as one line: `email: a → b; mobile: +1… → (empty)`
/// (control characters escaped), for the command line and the report
/// email.
pub fn fields_text(fields: &[LoggedField]) -> String {
    let each: Vec<String> = fields
        .iter()
        .map(|f| {
            format!(
                "{}: {} → {}",
                f.field,
                shown_value(&f.old),
                shown_value(&f.new)
            )
        })
        .collect();
    each.join("; ")
}

/// A value in a change line: "(empty)" when empty, so that "cleared"
/// shows.
pub fn shown_value(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_string()
    } else {
        crate::import::printable(value).to_string()
    }
}

pub(super) fn changes_def(feed: &str) -> String {
    table_name("changes", feed)
}

pub(super) fn added_def(feed: &str) -> String {
    table_name("change_added", feed)
}

/// What a run's writer logs, gathered and written at the end in key
/// order: a run's entries then append to its tables instead of each
/// descending the B-tree (a daily run's twenty thousand changes cost
/// milliseconds). A held run's log is gathered from a read transaction and
/// written with its record: what it would change.
#[derive(Default)]
pub struct ChangeLog {
    changes: Vec<(CompactString, Vec<u8>)>,
    added: Vec<CompactString>,
}

impl ChangeLog {
    pub(super) fn log(&mut self, change: Change<'_>) {
        let (id, value) = match change {
            Change::Added { id } => {
                self.added.push(CompactString::from(id));
                return;
            }
            Change::Updated { id, fields } => {
                let mut value = vec![UPDATED];
                for f in fields {
                    put_str(&mut value, f.field);
                    put_str(&mut value, f.old);
                    put_str(&mut value, f.new);
                }
                (id, value)
            }
            Change::Removed { id, values } => {
                let mut value = vec![REMOVED];
                for (field, v) in values {
                    put_str(&mut value, field);
                    put_str(&mut value, v);
                }
                (id, value)
            }
        };
        self.changes.push((CompactString::from(id), value));
    }

    /// Writes the log of run `run` into its transaction.
    pub(super) fn write(
        mut self,
        txn: &WriteTransaction,
        feed: &str,
        run: u64,
    ) -> Result<(), StoreError> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(self.changes.len());
        self.changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (id, value) in self.changes {
            entries.push((run_key(run, id.as_bytes()), value));
        }
        if !entries.is_empty() {
            let mut table: ChangeTable =
                txn.open_table(TableDefinition::new(&changes_def(feed)))?;
            append_sorted(&mut table, &entries)?;
        }
        if !self.added.is_empty() {
            self.added.par_sort_unstable();
            let chunks = self.added.chunks(ADDED_CHUNK).map(|chunk| {
                let mut value = Vec::with_capacity(chunk.len() * 10);
                for id in chunk {
                    put_str(&mut value, id);
                }
                (run_key(run, chunk[0].as_bytes()), value)
            });
            let entries: Vec<(Vec<u8>, Vec<u8>)> = chunks.collect();
            let mut table: ChangeTable = txn.open_table(TableDefinition::new(&added_def(feed)))?;
            append_sorted(&mut table, &entries)?;
        }
        Ok(())
    }
}

/// Inserts entries whose keys ascend; those past the table's last key go
/// in through a cursor at its end (redb splices such a run in as packed
/// pages).
fn append_sorted(
    table: &mut ChangeTable,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), StoreError> {
    let last = table.last()?.map(|(k, _)| k.value().to_vec());
    let past_last = match &last {
        Some(last) => entries.partition_point(|(k, _)| k.as_slice() <= last.as_slice()),
        None => 0,
    };
    for (key, value) in &entries[..past_last] {
        table.insert(key.as_slice(), value.as_slice())?;
    }
    if past_last < entries.len() {
        let mut end = table.upper_bound_mut(std::ops::Bound::<&[u8]>::Unbounded)?;
        for (key, value) in &entries[past_last..] {
            end.insert_before(key.as_slice(), value.as_slice())
                .map_err(redb::Error::from)?;
        }
        end.close()?;
    }
    Ok(())
}

/// Whether run `run` added the ID whose run key is `key`: the chunk that
/// would hold it is the last one starting at or before it.
fn was_added(
    added: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    run: u64,
    key: &[u8],
) -> Result<bool, StoreError> {
    let from = run.to_be_bytes();
    let Some(entry) = added.range(from.as_slice()..=key)?.next_back() else {
        return Ok(false);
    };
    let (_, chunk) = entry?;
    let id = &key[8..];
    let mut cursor = chunk.value();
    while !cursor.is_empty() {
        let candidate = take_str(&mut cursor)?.as_bytes();
        if candidate >= id {
            return Ok(candidate == id);
        }
    }
    Ok(false)
}

/// The run ID first, big-endian: a run's entries sort together, runs in
/// the order they committed.
fn run_key(run: u64, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + rest.len());
    key.extend_from_slice(&run.to_be_bytes());
    key.extend_from_slice(rest);
    key
}

/// Deletes what run `run` logged for `feed` (its record goes with it).
pub(super) fn delete_run_changes(
    txn: &WriteTransaction,
    feed: &str,
    run: u64,
) -> Result<(), StoreError> {
    let from = run.to_be_bytes();
    let to = (run + 1).to_be_bytes();
    let range = from.as_slice()..to.as_slice();
    let mut changes: ChangeTable = txn.open_table(TableDefinition::new(&changes_def(feed)))?;
    changes.retain_in(range.clone(), |_, _| false)?;
    let mut added: ChangeTable = txn.open_table(TableDefinition::new(&added_def(feed)))?;
    added.retain_in(range, |_, _| false)?;
    Ok(())
}

/// The kinds of change, as `LoggedChange::kind` names them.
pub const CHANGE_KINDS: [&str; 3] = ["added", "updated", "removed"];

/// How many changes of each kind a run logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeCounts {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
}

impl ChangeCounts {
    pub fn total(&self) -> u64 {
        self.added + self.updated + self.removed
    }

    /// The count of kind `kind` (one of [`CHANGE_KINDS`]), or all.
    pub fn of(&self, kind: Option<&str>) -> u64 {
        match kind {
            Some("added") => self.added,
            Some("updated") => self.updated,
            Some("removed") => self.removed,
            _ => self.total(),
        }
    }

    fn count(&mut self, kind: &str) {
        match kind {
            "added" => self.added += 1,
            "updated" => self.updated += 1,
            _ => self.removed += 1,
        }
    }
}

/// One page of a run's changes, and how many there are of each kind.
#[derive(Debug, Clone, Default)]
pub struct ChangesPage {
    pub counts: ChangeCounts,
    pub changes: Vec<LoggedChange>,
}

/// A logged change as its table holds it: the kind is read from one byte
/// and the rest decoded only for the changes that are shown, so counting
/// or skipping a million of them allocates nothing.
struct StoredChange<'a> {
    id: &'a str,
    /// `None` for an addition (kept in `change_added/F`).
    value: Option<&'a [u8]>,
}

impl StoredChange<'_> {
    fn kind(&self) -> &'static str {
        match self.value.and_then(|v| v.first()) {
            None => "added",
            Some(&UPDATED) => "updated",
            Some(_) => "removed",
        }
    }

    fn decode(&self) -> Result<LoggedChange, StoreError> {
        match self.value {
            None => Ok(LoggedChange::Added {
                id: self.id.to_string(),
            }),
            Some(value) => decode_change(self.id, value),
        }
    }
}

/// Calls `each` with run `run`'s changes in the order `run_changes` lists
/// them (additions, then updates and removals, each in ID order) until it
/// breaks. Works on a read or a write transaction's tables (the report
/// email reads the run's own, not yet committed, log).
fn visit_run_changes<T: ReadableTable<&'static [u8], &'static [u8]>>(
    added: Option<&T>,
    changes: Option<&T>,
    run: u64,
    each: &mut dyn FnMut(StoredChange<'_>) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    let from = run.to_be_bytes();
    let to = (run + 1).to_be_bytes();
    if let Some(added) = added {
        for entry in added.range(from.as_slice()..to.as_slice())? {
            let (_, chunk) = entry?;
            let mut cursor = chunk.value();
            while !cursor.is_empty() {
                let id = take_str(&mut cursor)?;
                if each(StoredChange { id, value: None })?.is_break() {
                    return Ok(());
                }
            }
        }
    }
    if let Some(changes) = changes {
        for entry in changes.range(from.as_slice()..to.as_slice())? {
            let (key, value) = entry?;
            let id = std::str::from_utf8(&key.value()[8..])
                .map_err(|_| damaged("a change's ID is not UTF-8"))?;
            let stored = StoredChange {
                id,
                value: Some(value.value()),
            };
            if each(stored)?.is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The first `limit` changes of run `run`, read from `txn`'s tables.
fn first_changes<T: ReadableTable<&'static [u8], &'static [u8]>>(
    added: Option<&T>,
    changes: Option<&T>,
    run: u64,
    limit: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    changes_slice(added, changes, run, 0, limit)
}

/// Changes `offset..offset + limit` of run `run`, in `run_changes`'
/// order: the changes before the page are walked, not decoded, and the
/// walk stops at the page's end.
fn changes_slice<T: ReadableTable<&'static [u8], &'static [u8]>>(
    added: Option<&T>,
    changes: Option<&T>,
    run: u64,
    offset: u64,
    limit: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut skipped = 0u64;
    visit_run_changes(added, changes, run, &mut |change| {
        if skipped < offset {
            skipped += 1;
            return Ok(ControlFlow::Continue(()));
        }
        out.push(change.decode()?);
        Ok(if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(out)
}

/// How many changes run `run` logged: its updates' and removals' keys
/// counted, its additions' chunks walked; nothing decoded, nothing
/// allocated.
fn count_changes<T: ReadableTable<&'static [u8], &'static [u8]>>(
    added: Option<&T>,
    changes: Option<&T>,
    run: u64,
) -> Result<u64, StoreError> {
    let mut count = 0u64;
    visit_run_changes(added, changes, run, &mut |_| {
        count += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(count)
}

/// A feed's two change tables in a write transaction (`None`: never
/// written; a table the run did not write is not created).
fn write_tables<'txn>(
    txn: &'txn WriteTransaction,
    feed: &str,
) -> Result<(Option<ChangeTable<'txn>>, Option<ChangeTable<'txn>>), StoreError> {
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let open = |name: String| -> Result<Option<ChangeTable>, StoreError> {
        if names.contains(&name) {
            Ok(Some(txn.open_table(TableDefinition::new(&name))?))
        } else {
            Ok(None)
        }
    };
    Ok((open(added_def(feed))?, open(changes_def(feed))?))
}

/// The first `limit` changes run `run` logged in `txn`, the run's own
/// write transaction (before it commits): the report email's list.
pub(super) fn first_changes_in_write(
    txn: &WriteTransaction,
    feed: &str,
    run: u64,
    limit: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let (added, changes) = write_tables(txn, feed)?;
    first_changes(added.as_ref(), changes.as_ref(), run, limit)
}

/// Changes `offset..offset + limit` of run `run` as logged in `txn` (a
/// held run's log, read before its confirmation rewrites it).
pub(super) fn changes_slice_in_write(
    txn: &WriteTransaction,
    feed: &str,
    run: u64,
    offset: u64,
    limit: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let (added, changes) = write_tables(txn, feed)?;
    changes_slice(added.as_ref(), changes.as_ref(), run, offset, limit)
}

/// How many changes run `run` logged in `txn`, the run's own write
/// transaction: what its webhook pages are counted from.
pub(super) fn count_changes_in_write(
    txn: &WriteTransaction,
    feed: &str,
    run: u64,
) -> Result<u64, StoreError> {
    let (added, changes) = write_tables(txn, feed)?;
    count_changes(added.as_ref(), changes.as_ref(), run)
}

type ReadChangeTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A feed's two change tables in a read transaction (`None`: never
/// written).
fn read_tables(
    txn: &redb::ReadTransaction,
    feed: &str,
) -> Result<(Option<ReadChangeTable>, Option<ReadChangeTable>), StoreError> {
    let open = |name: String| super::optional(txn.open_table(TableDefinition::new(&name)));
    Ok((open(added_def(feed))?, open(changes_def(feed))?))
}

impl super::Store {
    /// What run `run` changed in `feed` (empty for a run that changed
    /// nothing, or one recorded before the change log existed).
    pub fn run_changes(&self, feed: &str, run: u64) -> Result<Vec<LoggedChange>, StoreError> {
        let mut out = Vec::new();
        self.for_each_run_change(feed, run, |change| {
            out.push(change);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `each` with every change of run `run`, in `run_changes`'
    /// order, one at a time (a download of a million changes holds one).
    pub fn for_each_run_change(
        &self,
        feed: &str,
        run: u64,
        mut each: impl FnMut(LoggedChange) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (added, changes) = read_tables(&self.begin_read()?, feed)?;
        visit_run_changes(added.as_ref(), changes.as_ref(), run, &mut |change| {
            each(change.decode()?)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Changes `offset..offset + limit` of run `run`, in `run_changes`'
    /// order, read in one read transaction; `None` when the run's record
    /// is gone, and its log with it (`history_retention`). A webhook page
    /// built when it is sent: it stops at the page's end, where
    /// `run_changes_page` reads the whole run to count it.
    pub fn kept_run_changes(
        &self,
        feed: &str,
        run: u64,
        offset: u64,
        limit: usize,
    ) -> Result<Option<Vec<LoggedChange>>, StoreError> {
        let txn = self.begin_read()?;
        let kept = match super::optional(txn.open_table(super::RUNS))? {
            Some(runs) => runs.get(run)?.is_some(),
            None => false,
        };
        if !kept {
            return Ok(None);
        }
        let (added, changes) = read_tables(&txn, feed)?;
        changes_slice(added.as_ref(), changes.as_ref(), run, offset, limit).map(Some)
    }

    /// `limit` of run `run`'s changes of kind `kind` (all kinds when
    /// `None`) from `offset`, and the counts of each kind: one pass over
    /// the run's log that decodes only the changes on the page.
    pub fn run_changes_page(
        &self,
        feed: &str,
        run: u64,
        kind: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<ChangesPage, StoreError> {
        let (added, changes) = read_tables(&self.begin_read()?, feed)?;
        let mut page = ChangesPage::default();
        let mut matching = 0usize;
        visit_run_changes(added.as_ref(), changes.as_ref(), run, &mut |change| {
            let this = change.kind();
            page.counts.count(this);
            if kind.is_none_or(|k| k == this) {
                if matching >= offset && page.changes.len() < limit {
                    page.changes.push(change.decode()?);
                }
                matching += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(page)
    }

    /// What each applied run did to recipient `id` of `feed`, oldest
    /// first, with the run: the person's history while the runs are kept
    /// (also after their removal). What a held or rejected run would have
    /// done is that run's, not the person's.
    pub fn recipient_history(
        &self,
        feed: &str,
        id: &str,
    ) -> Result<Vec<(super::Run, LoggedChange)>, StoreError> {
        let txn = self.begin_read()?;
        let (added, changes) = read_tables(&txn, feed)?;
        let (Some(index), Some(runs)) = (
            super::optional(txn.open_table(super::runs::RUNS_BY_FEED))?,
            super::optional(txn.open_table(super::RUNS))?,
        ) else {
            return Ok(Vec::new());
        };
        let mut history = Vec::new();
        for run in super::runs::feed_run_ids(&index, feed, usize::MAX)?
            .into_iter()
            .rev()
        {
            let key = run_key(run, id.as_bytes());
            let mut change = None;
            if let Some(t) = &changes {
                if let Some(value) = t.get(key.as_slice())? {
                    change = Some(decode_change(id, value.value())?);
                }
            }
            if let (None, Some(t)) = (&change, &added) {
                if was_added(t, run, &key)? {
                    change = Some(LoggedChange::Added { id: id.to_string() });
                }
            }
            let Some(change) = change else { continue };
            let record = super::runs::get_run_in(&runs, run)?;
            if record.state == super::RunState::Applied {
                history.push((record, change));
            }
        }
        Ok(history)
    }
}

/// A position in a feed's change feed: just after the change to
/// recipient `id` in run `run`. Changes are ordered by (run ID, recipient
/// ID): runs of a feed commit in run-ID order, and a run's changes are
/// one range of each change table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub run: u64,
    pub id: String,
}

impl FeedCursor {
    /// `<run>.<hex of the ID's bytes>`: only digits, letters and a dot,
    /// so a client can store it and put it in an address as it is.
    pub fn encode(&self) -> String {
        let mut text = format!("{}.", self.run);
        for byte in self.id.as_bytes() {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }

    /// Reads a cursor given by [`FeedCursor::encode`]; the error says
    /// what is wrong with it. One spelling per cursor: no leading zeros,
    /// lowercase hex.
    pub fn parse(text: &str) -> Result<FeedCursor, String> {
        let unreadable = || {
            format!(
                "'{}' is not a cursor of the change feed (one looks like 12.4530303031); \
                 use the `cursor` or `next` of an answer, or leave out `after` to start \
                 from the oldest change kept",
                text.escape_default()
            )
        };
        let (run, hex) = text.split_once('.').ok_or_else(unreadable)?;
        let canonical_run =
            !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()) && !run.starts_with('0');
        let canonical_hex = hex.len() % 2 == 0
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !canonical_run || !canonical_hex {
            return Err(unreadable());
        }
        let run: u64 = run.parse().map_err(|_| unreadable())?;
        let bytes: Result<Vec<u8>, _> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16))
            .collect();
        let id = bytes
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(unreadable)?;
        Ok(FeedCursor { run, id })
    }
}

/// One change of the feed, with the run it is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedChange {
    pub run: u64,
    /// When the run's changes became visible: its confirmation for a
    /// confirmed held run, else its end.
    pub committed_at: String,
    pub change: LoggedChange,
    /// For an addition: the person's values as stored now (in field
    /// order), `None` when a later run removed them.
    pub current: Option<Vec<String>>,
}

impl FeedChange {
    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            run: self.run,
            id: self.change.id().to_string(),
        }
    }

    /// The change with its cursor and run; an addition with the person's
    /// values as stored now (`null` once a later run removed them: that
    /// removal follows in the feed), named by `fields` (the feed's fields
    /// in order), the empty ones left out like a removal's.
    pub fn to_json(&self, fields: &[&str]) -> serde_json::Value {
        let mut v = serde_json::json!(self.change);
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("cursor".into(), self.cursor().encode().into());
            map.insert("run_id".into(), self.run.into());
            map.insert("committed_at".into(), self.committed_at.clone().into());
            if let LoggedChange::Added { .. } = self.change {
                let values = self.current.as_ref().map(|values| {
                    fields
                        .iter()
                        .zip(values)
                        .filter(|(_, value)| !value.is_empty())
                        .map(|(field, value)| serde_json::json!({"field": field, "value": value}))
                        .collect::<Vec<_>>()
                });
                map.insert("values".into(), serde_json::json!(values));
            }
        }
        v
    }
}

/// A page of a feed's changes.
#[derive(Debug, Default)]
pub struct FeedPage {
    pub changes: Vec<FeedChange>,
    /// More changes follow now (ask again from the last one's cursor).
    pub more: bool,
    /// The held run the feed stops at: it may still be confirmed, so no
    /// cursor passes it until it is decided.
    pub held_run: Option<u64>,
}

impl FeedPage {
    /// The last change's cursor, or `after` when nothing is new (the
    /// reader stays where it was).
    pub fn next(&self, after: Option<&FeedCursor>) -> Option<FeedCursor> {
        self.changes
            .last()
            .map(FeedChange::cursor)
            .or_else(|| after.cloned())
    }

    /// The page as `/api/changes` and `recipients changes --json` give it.
    pub fn to_json(
        &self,
        feed: &str,
        fields: &[&str],
        after: Option<&FeedCursor>,
    ) -> serde_json::Value {
        let changes: Vec<serde_json::Value> =
            self.changes.iter().map(|c| c.to_json(fields)).collect();
        serde_json::json!({
            "feed": feed,
            "changes": changes,
            "next": self.next(after).map(|c| c.encode()),
            "more": self.more,
            "held_run": self.held_run,
        })
    }
}

/// Why a feed cannot be read from a cursor.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The cursor's run and the runs after it were deleted with the
    /// history (`history_retention`): changes may be lost to the reader.
    #[error("the changes after cursor {cursor} are no longer kept (history_retention); re-read the full list from /api/recipients and start again without `after`")]
    Gone { cursor: String },
    /// A cursor of another feed, or of a run that never was one of it.
    #[error("cursor {cursor} is not one of feed '{feed}'; leave out `after` to start from the oldest change kept")]
    NotOfFeed { cursor: String, feed: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::StorageError> for FeedError {
    fn from(e: redb::StorageError) -> FeedError {
        FeedError::Store(e.into())
    }
}

impl super::Store {
    /// At most `limit` of the changes of `feed`'s applied runs after
    /// `after` (from the oldest kept without it), in (run ID, recipient
    /// ID) order, read in one read transaction. Held, rejected and
    /// superseded runs' logs are what they would change, never part of
    /// the feed; the feed stops at a held run, which may still become
    /// applied under its own ID.
    pub fn changes_after(
        &self,
        feed: &str,
        after: Option<&FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage, FeedError> {
        let txn = self.begin_read()?;
        let (Some(index), Some(runs)) = (
            super::optional(txn.open_table(super::runs::RUNS_BY_FEED))?,
            super::optional(txn.open_table(super::RUNS))?,
        ) else {
            return match after {
                Some(cursor) => Err(not_of_feed(cursor, feed)),
                None => Ok(FeedPage::default()),
            };
        };
        if let Some(cursor) = after {
            check_cursor(&txn, &index, &runs, feed, cursor)?;
        }
        let tables = ChangeTables::open(&txn, feed)?;
        let recipients = super::optional(txn.open_table(TableDefinition::<&str, &[u8]>::new(
            &table_name("recipients", feed),
        )))?;
        let mut page = FeedPage::default();
        let first = after.map_or(0, |c| c.run);
        // One more than asked: whether more follow.
        let wanted = limit.saturating_add(1);
        let mut collected: Vec<FeedChange> = Vec::new();
        for entry in index.range((feed, first)..=(feed, u64::MAX))? {
            let run_id = entry?.0.value().1;
            let run = super::runs::get_run_in(&runs, run_id)?;
            match run.state {
                super::RunState::Applied => {}
                super::RunState::Held => {
                    page.held_run = Some(run_id);
                    break;
                }
                // Final and never applied: nothing of them is the feed's.
                super::RunState::Unchanged
                | super::RunState::Failed
                | super::RunState::Rejected
                | super::RunState::Superseded => continue,
            }
            let from = after.filter(|c| c.run == run_id).map(|c| c.id.as_str());
            let committed_at = run.confirmed_at.clone().unwrap_or(run.finished_at.clone());
            for change in tables.run_changes_after(run_id, from, wanted - collected.len())? {
                collected.push(FeedChange {
                    run: run_id,
                    committed_at: committed_at.clone(),
                    change,
                    current: None,
                });
            }
            if collected.len() >= wanted {
                break;
            }
        }
        // (A page with more never reached a held run.)
        if collected.len() > limit {
            collected.truncate(limit);
            page.more = true;
        }
        for change in &mut collected {
            if let (LoggedChange::Added { id }, Some(table)) = (&change.change, &recipients) {
                change.current = current_values(table, id)?;
            }
        }
        page.changes = collected;
        Ok(page)
    }
}

/// Refuses a cursor whose run is not this feed's, and one whose run went
/// with the history: the changes between it and the oldest kept run may
/// be lost to the reader.
fn check_cursor(
    txn: &redb::ReadTransaction,
    index: &redb::ReadOnlyTable<(&'static str, u64), ()>,
    runs: &redb::ReadOnlyTable<u64, &'static [u8]>,
    feed: &str,
    cursor: &FeedCursor,
) -> Result<(), FeedError> {
    match runs.get(cursor.run)? {
        Some(record) => {
            if super::runs::decode_run(record.value())?.feed == feed {
                Ok(())
            } else {
                Err(not_of_feed(cursor, feed))
            }
        }
        None => {
            let oldest_kept = match index.range((feed, 0)..=(feed, u64::MAX))?.next() {
                Some(entry) => Some(entry?.0.value().1),
                None => None,
            };
            let pruned = match oldest_kept {
                Some(oldest) => cursor.run < oldest,
                // Every run of the feed went with the history.
                None => cursor.run < next_run_id(txn)?,
            };
            if pruned {
                Err(FeedError::Gone {
                    cursor: cursor.encode(),
                })
            } else {
                Err(not_of_feed(cursor, feed))
            }
        }
    }
}

fn not_of_feed(cursor: &FeedCursor, feed: &str) -> FeedError {
    FeedError::NotOfFeed {
        cursor: cursor.encode(),
        feed: feed.to_string(),
    }
}

/// The run ID the next run will get (1 before the first).
fn next_run_id(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let Some(meta) = super::optional(txn.open_table(super::META))? else {
        return Ok(1);
    };
    let stored = meta.get("next_run_id")?;
    super::decode_next_run_id(stored.as_ref().map(|v| v.value()))
}

fn current_values(
    table: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let Some(value) = table.get(id)? else {
        return Ok(None);
    };
    let record = crate::import::record::Record::decode(value.value())
        .map_err(|e| StoreError::Damaged(e.to_string()))?;
    Ok(Some(record.values))
}

/// A feed's two change tables, as a reader sees them (absent before the
/// first change of their kind).
struct ChangeTables {
    changes: Option<ReadChangeTable>,
    added: Option<ReadChangeTable>,
}

impl ChangeTables {
    fn open(txn: &redb::ReadTransaction, feed: &str) -> Result<ChangeTables, StoreError> {
        let (added, changes) = read_tables(txn, feed)?;
        Ok(ChangeTables { changes, added })
    }

    /// At most `want` changes of run `run` after recipient `after` (all
    /// without it), in ID order: its additions merged with its updates
    /// and removals (an ID is in one of them only).
    fn run_changes_after(
        &self,
        run: u64,
        after: Option<&str>,
        want: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        let added = match &self.added {
            Some(table) => added_after(table, run, after, want)?,
            None => Vec::new(),
        };
        let others = match &self.changes {
            Some(table) => others_after(table, run, after, want)?,
            None => Vec::new(),
        };
        let mut merged = Vec::with_capacity(want.min(added.len() + others.len()));
        let (mut added, mut others) = (added.into_iter().peekable(), others.into_iter().peekable());
        while merged.len() < want {
            let take_added = match (added.peek(), others.peek()) {
                (Some(a), Some(o)) => a.id() < o.id(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_added {
                added.next()
            } else {
                others.next()
            };
            merged.extend(next);
        }
        Ok(merged)
    }
}

/// The bounds of run `run`'s keys after recipient `after`.
fn run_bounds(
    run: u64,
    after: Option<&str>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let start = match after {
        Some(id) => Bound::Excluded(run_key(run, id.as_bytes())),
        None => Bound::Included(run.to_be_bytes().to_vec()),
    };
    let end = match run.checked_add(1) {
        Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    (start, end)
}

fn as_slices(
    (start, end): &(std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>),
) -> (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) {
    (
        start.as_ref().map(Vec::as_slice),
        end.as_ref().map(Vec::as_slice),
    )
}

/// At most `want` of the IDs run `run` added after `after`, as changes.
fn added_after(
    table: &ReadChangeTable,
    run: u64,
    after: Option<&str>,
    want: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    // The chunk holding `after` starts at or before it.
    let mut first_chunk = run.to_be_bytes().to_vec();
    if let Some(id) = after {
        let key = run_key(run, id.as_bytes());
        if let Some(entry) = table
            .range(first_chunk.as_slice()..=key.as_slice())?
            .next_back()
        {
            first_chunk = entry?.0.value().to_vec();
        }
    }
    let (_, end) = run_bounds(run, None);
    let bounds = (std::ops::Bound::Included(first_chunk), end);
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(as_slices(&bounds))? {
        let (_, chunk) = entry?;
        let mut cursor = chunk.value();
        while !cursor.is_empty() {
            let id = take_str(&mut cursor)?;
            if after.is_some_and(|after| id <= after) {
                continue;
            }
            out.push(LoggedChange::Added { id: id.to_string() });
            if out.len() == want {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// At most `want` of run `run`'s updates and removals after `after`.
fn others_after(
    table: &ReadChangeTable,
    run: u64,
    after: Option<&str>,
    want: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let bounds = run_bounds(run, after);
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(as_slices(&bounds))?.take(want) {
        let (key, value) = entry?;
        let id = std::str::from_utf8(&key.value()[8..])
            .map_err(|_| damaged("a change's ID is not UTF-8"))?;
        out.push(decode_change(id, value.value())?);
    }
    Ok(out)
}

fn decode_change(id: &str, value: &[u8]) -> Result<LoggedChange, StoreError> {
    let (&kind, mut rest) = value
        .split_first()
        .ok_or_else(|| damaged("an empty change"))?;
    let id = id.to_string();
    match kind {
        UPDATED => {
            let mut fields = Vec::new();
            while !rest.is_empty() {
                fields.push(LoggedField {
                    field: take_str(&mut rest)?.to_string(),
                    old: take_str(&mut rest)?.to_string(),
                    new: take_str(&mut rest)?.to_string(),
                });
            }
            Ok(LoggedChange::Updated { id, fields })
        }
        REMOVED => {
            let mut values = Vec::new();
            while !rest.is_empty() {
                values.push(LoggedValue {
                    field: take_str(&mut rest)?.to_string(),
                    value: take_str(&mut rest)?.to_string(),
                });
            }
            Ok(LoggedChange::Removed { id, values })
        }
        _ => Err(damaged("a change of an unknown kind")),
    }
}

fn damaged(what: &str) -> StoreError {
    StoreError::Damaged(format!("the change log is damaged ({what})"))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn take_str<'a>(cursor: &mut &'a [u8]) -> Result<&'a str, StoreError> {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let (&byte, rest) = cursor
            .split_first()
            .ok_or_else(|| damaged("a length runs past the end"))?;
        *cursor = rest;
        if shift > 56 {
            return Err(damaged("a length is too long"));
        }
        len |= ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if cursor.len() < len {
        return Err(damaged("a string runs past the end"));
    }
    let (s, rest) = cursor.split_at(len);
    *cursor = rest;
    std::str::from_utf8(s).map_err(|_| damaged("a string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_whatever_their_length() {
        let mut out = Vec::new();
        let long = "x".repeat(300);
        for s in ["", "a", long.as_str(), "José"] {
            put_str(&mut out, s);
        }
        let mut cursor = out.as_slice();
        for s in ["", "a", long.as_str(), "José"] {
            assert_eq!(take_str(&mut cursor).unwrap(), s);
        }
        assert!(cursor.is_empty());
        assert!(take_str(&mut &[0x05, b'a'][..]).is_err());
    }
}
