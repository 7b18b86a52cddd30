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
//! A change's value: one byte of kind, then strings as LEB128 length +
//! UTF-8: an update's (field, old, new) triples, a removal's (field,
//! value) pairs.

use compact_str::CompactString;
use rayon::slice::ParallelSliceMut;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

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

impl super::Store {
    /// What run `run` changed in `feed` (empty for a run that changed
    /// nothing, or one recorded before the change log existed).
    pub fn run_changes(&self, feed: &str, run: u64) -> Result<Vec<LoggedChange>, StoreError> {
        run_changes(&self.begin_read()?, feed, run)
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
        let open = |name: String| {
            super::optional(txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)))
        };
        let changes = open(changes_def(feed))?;
        let added = open(added_def(feed))?;
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

/// The changes `run` made to `feed`: additions, then updates and removals,
/// each in ID order.
fn run_changes(
    txn: &redb::ReadTransaction,
    feed: &str,
    run: u64,
) -> Result<Vec<LoggedChange>, StoreError> {
    let mut out = Vec::new();
    let from = run.to_be_bytes();
    let to = (run + 1).to_be_bytes();
    if let Some(added) =
        super::optional(txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&added_def(feed))))?
    {
        for entry in added.range(from.as_slice()..to.as_slice())? {
            let (_, chunk) = entry?;
            let mut cursor = chunk.value();
            while !cursor.is_empty() {
                out.push(LoggedChange::Added {
                    id: take_str(&mut cursor)?.to_string(),
                });
            }
        }
    }
    if let Some(changes) =
        super::optional(txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&changes_def(feed))))?
    {
        for entry in changes.range(from.as_slice()..to.as_slice())? {
            let (key, value) = entry?;
            let id = std::str::from_utf8(&key.value()[8..])
                .map_err(|_| damaged("a change's ID is not UTF-8"))?;
            out.push(decode_change(id, value.value())?);
        }
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
