//! Pass 2: re-read the rows the diff could not settle, validate them, and
//! push the resulting changes into a [`FeedWriter`].

use std::collections::HashMap;

use compact_str::CompactString;
use rayon::prelude::*;

use crate::config::Feed;

use super::diff::{Diff, EarlyFlag, Work, WorkKind};
use super::header::Header;
use super::input::Input;
use super::record::{DecodeError, Record};
use super::text::printable;
use super::text::{decode_field, Encoding};
use super::validate::{
    filled_fields, keep_stored_values, validate_row, Cells, RowContext, RowParser, ValidRow,
};

/// Membership changes per group name. The writer thread counts three per
/// row on a big run: a fast non-cryptographic hash (names come from the
/// customer's own file, so flooding it only slows that customer's run).
pub(super) type GroupDeltas = HashMap<String, i64, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

/// Rows validated per chunk: small enough that the writer starts early and
/// overlaps the validation of the next chunk (a typical daily delta is a few
/// chunks), large enough to keep both cores busy.
const CHUNK_ROWS: usize = 4_096;
/// Neighbouring rows closer than this are read with one read.
const MAX_GAP: u64 = 4 << 10;
/// Largest single read.
const MAX_RANGE: u64 = 8 << 20;

/// Where the changes of a run go. The store implements it over a write
/// transaction (a real run) or a read transaction (a dry or held run, where
/// the writes are dropped). Each ID is touched at most once per run.
pub trait FeedWriter {
    type Error;
    /// The stored record of `id`, if any.
    fn stored_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put_record(&mut self, id: &str, record: &[u8]) -> Result<(), Self::Error>;
    /// Stores several records whose IDs ascend strictly, as `put_record`
    /// of each would. The store appends a run of them past its last ID in
    /// one go, which an initial load of an ID-sorted file does throughout.
    fn put_sorted_records(&mut self, records: &[(&str, &[u8])]) -> Result<(), Self::Error> {
        for (id, record) in records {
            self.put_record(id, record)?;
        }
        Ok(())
    }
    /// Removes `id` and returns its record.
    fn remove_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn group_count(&mut self, group: &str) -> Result<u64, Self::Error>;
    /// Sets a group's member count; 0 removes the group.
    fn set_group_count(&mut self, group: &str, count: u64) -> Result<(), Self::Error>;
    /// Notes one person's change for the change log. A writer that keeps
    /// no log (a dry or held run) ignores it.
    fn log_change(&mut self, change: Change<'_>) -> Result<(), Self::Error> {
        let _ = change;
        Ok(())
    }
}

/// One person's change in a run, as the change log keeps it. Fields are
/// named (not numbered), so that the log reads the same after the feed's
/// mapping changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// New: the stored record is the rest of the story.
    Added { id: &'a str },
    /// The fields whose values differ, old and new.
    Updated {
        id: &'a str,
        fields: Vec<FieldChange<'a>>,
    },
    /// Gone: the whole record as it was (its non-empty values).
    Removed {
        id: &'a str,
        values: Vec<(&'a str, &'a str)>,
    },
}

/// One field's value before and after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange<'a> {
    pub field: &'a str,
    pub old: &'a str,
    pub new: &'a str,
}

/// The fields whose values differ between two records of `feed`, by
/// position. A record from before a mapping change may hold fewer or other
/// fields; a value it lacks reads as empty.
pub(super) fn field_changes<'a>(
    old: &'a [u8],
    new: &'a [u8],
    feed: &'a Feed,
) -> Result<Vec<FieldChange<'a>>, DecodeError> {
    let old = Record::borrowed_values(old)?;
    let new = Record::borrowed_values(new)?;
    let value = |values: &[&'a str], i: usize| values.get(i).copied().unwrap_or("");
    Ok(feed
        .fields
        .iter()
        .enumerate()
        .filter(|(i, _)| value(&old, *i) != value(&new, *i))
        .map(|(i, f)| FieldChange {
            field: f.name.as_str(),
            old: value(&old, i),
            new: value(&new, i),
        })
        .collect())
}

/// A removed record's non-empty values, named by the feed's fields.
pub(super) fn named_values<'a>(
    record: &'a [u8],
    feed: &'a Feed,
) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
    let values = Record::borrowed_values(record)?;
    Ok(feed
        .fields
        .iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(f, v)| (f.name.as_str(), v))
        .collect())
}

/// The feed's records as they were when the run began, readable from any
/// thread: pass 2 reads the old record of each changed row while it
/// validates (in parallel, ahead of the writer), so the single writer thread
/// only writes.
pub trait StoredRecords: Sync {
    fn stored_record(&self, id: &str) -> Result<Option<Vec<u8>>, String>;
}

/// A flagged row (left out), or a row imported with warnings (without
/// its invalid optional values); both are listed in the error report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    pub line: u32,
    pub id: Option<String>,
    pub reasons: Vec<String>,
    /// True for a row that was imported: `reasons` are its warnings.
    #[serde(default)]
    pub warning: bool,
    /// The original record as it was in the file.
    #[serde(skip)]
    pub cells: Vec<String>,
}

/// Receives row errors in file order.
pub trait ErrorSink {
    fn row_error(&mut self, error: &RowError) -> std::io::Result<()>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyCounts {
    pub rows: u64,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub flagged: u64,
    /// Rows imported without some invalid optional value (each also one
    /// of added, updated, unchanged).
    #[serde(default)]
    pub warnings: u64,
    pub filtered: u64,
    pub groups_created: u64,
    pub groups_removed: u64,
}

impl ApplyCounts {
    pub fn changes(&self) -> u64 {
        self.added + self.updated + self.removed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E> {
    #[error(transparent)]
    Writer(E),
    #[error("the file cannot be read again: {0}")]
    Read(std::io::Error),
    #[error("the error report cannot be written: {0}")]
    ErrorReport(std::io::Error),
    #[error(transparent)]
    Damaged(#[from] DecodeError),
    #[error("the store cannot be read: {0}")]
    Snapshot(String),
}

/// The file being applied and how to read it.
pub struct FileContext<'a> {
    pub input: &'a dyn Input,
    pub feed: &'a Feed,
    pub header: &'a Header,
    pub encoding: Encoding,
    /// How a reason names a row's place: `line` in a CSV file, `row` in a
    /// workbook's sheet (see [`super::line_word`]).
    pub line_word: &'static str,
}

/// A validated row ready for the writer.
struct Upsert {
    id: CompactString,
    hash: u64,
    valid: ValidRow,
    stored: bool,
    /// The stored record, when read ahead from a snapshot.
    old: Option<Option<Vec<u8>>>,
    /// The row's warnings, for the error report.
    warning: Option<RowError>,
}

enum Outcome {
    Upsert(Upsert),
    /// Valid, and equal to the stored record once normalised.
    Unchanged {
        id: CompactString,
        hash: u64,
        warning: Option<RowError>,
    },
    Error(RowError),
    SnapshotFailed(String),
}

/// The result of applying a diff.
#[derive(Debug)]
pub struct Applied {
    pub counts: ApplyCounts,
    /// The feed's (ID, raw hash) list after the run, sorted by ID: the
    /// store keeps it whole (see `store`), so the next run's diff needs no
    /// per-row lookups.
    pub hashes: Vec<(CompactString, u64)>,
    /// False when `hashes` equals the list before the run.
    pub hashes_changed: bool,
    /// Per field position: stored values that this run empties (updates
    /// only; removals are the delete guard's), for the clear guard and the
    /// hold of a file missing a column.
    pub cleared: Vec<u64>,
}

/// Applies `diff` through `writer`, streaming row errors to `errors`.
pub fn apply_diff<W: FeedWriter>(
    file: &FileContext,
    diff: Diff,
    writer: &mut W,
    errors: &mut dyn ErrorSink,
) -> Result<Applied, ApplyError<W::Error>> {
    apply_diff_with_snapshot(file, diff, writer, errors, None)
}

/// As [`apply_diff`], reading old records from `snapshot` (the state the
/// writer starts from) on the validating threads.
pub fn apply_diff_with_snapshot<W: FeedWriter>(
    file: &FileContext,
    diff: Diff,
    writer: &mut W,
    errors: &mut dyn ErrorSink,
    snapshot: Option<&dyn StoredRecords>,
) -> Result<Applied, ApplyError<W::Error>> {
    let mut counts = ApplyCounts {
        rows: diff.rows_read,
        unchanged: diff.unchanged,
        filtered: diff.filtered,
        ..ApplyCounts::default()
    };
    let mut group_delta = GroupDeltas::default();
    let mut cleared = vec![0u64; file.feed.fields.len()];
    let mut written: Vec<(CompactString, u64)> = Vec::new();
    // The next chunk is validated (on the rayon pool) while this thread
    // writes the last one: the writer is a single thread (redb), so a big
    // run would otherwise leave a core idle half the time.
    let same_layout = diff.stored_mapping == Some(file.feed.mapping_fingerprint());
    std::thread::scope(|scope| -> Result<(), ApplyError<W::Error>> {
        let (sender, validated) = std::sync::mpsc::sync_channel(1);
        let work = &diff.work;
        scope.spawn(move || {
            for chunk in work.chunks(CHUNK_ROWS) {
                let outcomes = validate_chunk(file, chunk, snapshot, same_layout);
                if sender.send(outcomes).is_err() {
                    break;
                }
            }
        });
        for outcomes in validated {
            let mut upserts = Vec::with_capacity(CHUNK_ROWS);
            for outcome in outcomes.map_err(ApplyError::Read)? {
                let warning = match &outcome {
                    Outcome::Upsert(u) => u.warning.as_ref(),
                    Outcome::Unchanged { warning, .. } => warning.as_ref(),
                    _ => None,
                };
                if let Some(w) = warning {
                    counts.warnings += 1;
                    errors.row_error(w).map_err(ApplyError::ErrorReport)?;
                }
                match outcome {
                    Outcome::Upsert(u) => upserts.push(u),
                    Outcome::Unchanged { id, hash, .. } => {
                        counts.unchanged += 1;
                        written.push((id, hash));
                    }
                    Outcome::Error(e) => {
                        counts.flagged += 1;
                        errors.row_error(&e).map_err(ApplyError::ErrorReport)?;
                    }
                    Outcome::SnapshotFailed(e) => return Err(ApplyError::Snapshot(e)),
                }
            }
            // Sorted keys are what redb inserts fastest.
            upserts.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            let mut changed = Vec::with_capacity(upserts.len());
            for mut u in upserts {
                written.push((u.id.clone(), u.hash));
                let mut tally = Tally {
                    counts: &mut counts,
                    group_delta: &mut group_delta,
                    cleared: &mut cleared,
                };
                if count_upsert(&mut u, writer, &mut tally, file.feed)? {
                    changed.push(u);
                }
            }
            let puts: Vec<(&str, &[u8])> = changed
                .iter()
                .map(|u| (u.id.as_str(), u.valid.encoded.as_slice()))
                .collect();
            writer
                .put_sorted_records(&puts)
                .map_err(ApplyError::Writer)?;
        }
        Ok(())
    })?;
    tracing::debug!("validated and wrote the new and changed rows");
    for id in &diff.removed {
        let old = writer.remove_record(id).map_err(ApplyError::Writer)?;
        counts.removed += 1;
        if let Some(old) = old {
            for g in Record::decode_groups(&old)? {
                *group_delta.entry(g).or_default() -= 1;
            }
            let values = named_values(&old, file.feed)?;
            writer
                .log_change(Change::Removed { id, values })
                .map_err(ApplyError::Writer)?;
        }
    }
    tracing::debug!("removed");
    settle_groups(group_delta, writer, &mut counts)?;
    let hashes_changed = !written.is_empty() || !diff.removed.is_empty();
    Ok(Applied {
        counts,
        hashes: merge_hashes(diff.kept, written),
        hashes_changed,
        cleared,
    })
}

/// The kept entries (sorted) with the written ones (any order) replacing or
/// joining them.
fn merge_hashes(
    mut kept: Vec<(CompactString, u64)>,
    written: Vec<(CompactString, u64)>,
) -> Vec<(CompactString, u64)> {
    // In place: a daily run writes a few thousand entries into a list of a
    // million; copying the million into a new list cost more than the rest.
    let mut new_ids = Vec::new();
    for (id, hash) in written {
        match kept.binary_search_by(|k| k.0.cmp(&id)) {
            Ok(at) => kept[at].1 = hash,
            Err(_) => new_ids.push((id, hash)),
        }
    }
    if new_ids.is_empty() {
        return kept;
    }
    new_ids.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Merge from the back into the grown list.
    let old_len = kept.len();
    kept.resize(old_len + new_ids.len(), (CompactString::default(), 0));
    let (mut read, mut write) = (old_len, kept.len());
    while let Some(new) = new_ids.pop() {
        while read > 0 && kept[read - 1].0 > new.0 {
            read -= 1;
            write -= 1;
            kept.swap(read, write);
        }
        write -= 1;
        kept[write] = new;
    }
    kept
}

/// What the writer thread counts while it writes.
struct Tally<'a> {
    counts: &'a mut ApplyCounts,
    group_delta: &'a mut GroupDeltas,
    cleared: &'a mut [u64],
}

/// Counts `u` as added, updated or unchanged, its group moves and the
/// stored values it empties; true when its record must be written. An
/// existing person keeps the stored values of `u`'s invalid fields.
fn count_upsert<W: FeedWriter>(
    u: &mut Upsert,
    writer: &mut W,
    tally: &mut Tally,
    feed: &Feed,
) -> Result<bool, ApplyError<W::Error>> {
    let read;
    let old = match &u.old {
        Some(read_ahead) => read_ahead.as_deref(),
        None if u.stored => {
            read = writer.stored_record(&u.id).map_err(ApplyError::Writer)?;
            read.as_deref()
        }
        None => None,
    };
    if let Some(old) = old.filter(|_| u.valid.kept != 0) {
        u.valid = keep_stored_values(&u.valid, old, feed)?;
    }
    let old_groups = match old {
        Some(old) if old == u.valid.encoded.as_slice() => {
            tally.counts.unchanged += 1;
            return Ok(false);
        }
        Some(old) => {
            tally.counts.updated += 1;
            count_cleared(old, &u.valid.encoded, tally.cleared)?;
            let fields = field_changes(old, &u.valid.encoded, feed)?;
            writer
                .log_change(Change::Updated { id: &u.id, fields })
                .map_err(ApplyError::Writer)?;
            Record::decode_groups(old)?
        }
        None => {
            tally.counts.added += 1;
            writer
                .log_change(Change::Added { id: &u.id })
                .map_err(ApplyError::Writer)?;
            Vec::new()
        }
    };
    for g in old_groups.iter().filter(|g| !u.valid.groups.contains(g)) {
        add_to_group(tally.group_delta, g, -1);
    }
    for g in u.valid.groups.iter().filter(|g| !old_groups.contains(g)) {
        add_to_group(tally.group_delta, g, 1);
    }
    Ok(true)
}

/// Adds the values that `new` empties in `old`, per field.
fn count_cleared(old: &[u8], new: &[u8], cleared: &mut [u64]) -> Result<(), DecodeError> {
    let emptied = filled_fields(old)? & !filled_fields(new)?;
    if emptied == 0 {
        return Ok(());
    }
    for (i, count) in cleared.iter_mut().enumerate().take(64) {
        if emptied & (1 << i) != 0 {
            *count += 1;
        }
    }
    Ok(())
}

/// Counts a membership change without copying the group's name when the
/// group is already counted (the writer thread does this for every row).
pub(super) fn add_to_group(group_delta: &mut GroupDeltas, group: &str, delta: i64) {
    match group_delta.get_mut(group) {
        Some(d) => *d += delta,
        None => {
            group_delta.insert(group.to_string(), delta);
        }
    }
}

/// Writes the groups' new member counts; counts groups that appear and
/// groups left empty (which are removed).
pub(super) fn settle_groups<W: FeedWriter>(
    group_delta: GroupDeltas,
    writer: &mut W,
    counts: &mut ApplyCounts,
) -> Result<(), ApplyError<W::Error>> {
    let mut deltas: Vec<(String, i64)> = group_delta.into_iter().filter(|(_, d)| *d != 0).collect();
    deltas.sort_unstable();
    for (group, delta) in deltas {
        let before = writer.group_count(&group).map_err(ApplyError::Writer)?;
        let after = (before as i64 + delta).max(0) as u64;
        if before == 0 && after > 0 {
            counts.groups_created += 1;
        }
        if before > 0 && after == 0 {
            counts.groups_removed += 1;
        }
        writer
            .set_group_count(&group, after)
            .map_err(ApplyError::Writer)?;
    }
    Ok(())
}

/// A run of neighbouring rows read with one read.
struct Range {
    start: u64,
    bytes: Vec<u8>,
}

fn read_ranges(input: &dyn Input, chunk: &[Work]) -> std::io::Result<Vec<Range>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for w in chunk {
        let (s, e) = (w.row.offset, w.row.offset + w.row.len as u64);
        match ranges.last_mut() {
            Some((rs, re)) if s <= *re + MAX_GAP && e - *rs <= MAX_RANGE => *re = (*re).max(e),
            _ => ranges.push((s, e)),
        }
    }
    ranges
        .into_par_iter()
        .map(|(start, end)| {
            let mut bytes = vec![0u8; (end - start) as usize];
            input.read_exact_at(start, &mut bytes)?;
            Ok(Range { start, bytes })
        })
        .collect()
}

/// `same_layout`: the stored records are laid out under the feed's current
/// mapping (see [`super::StoredIndex::mapping`]).
fn validate_chunk(
    file: &FileContext,
    chunk: &[Work],
    snapshot: Option<&dyn StoredRecords>,
    same_layout: bool,
) -> std::io::Result<Vec<Outcome>> {
    let ranges = read_ranges(file.input, chunk)?;
    let ctx = RowContext {
        feed: file.feed,
        field_columns: &file.header.field_columns,
        encoding: file.encoding,
    };
    // Rows and ranges are both in offset order: pair each row with its range.
    let mut located = Vec::with_capacity(chunk.len());
    let mut r = 0;
    for w in chunk {
        while ranges[r].start + ranges[r].bytes.len() as u64 <= w.row.offset {
            r += 1;
        }
        let at = (w.row.offset - ranges[r].start) as usize;
        located.push((w, &ranges[r].bytes[at..at + w.row.len as usize]));
    }
    Ok(located
        .into_par_iter()
        .map(|(w, bytes)| {
            let outcome = RowParser::with_thread_parser(file.header.delimiter, |parser| {
                validate_work(w, parser.parse(bytes), file, &ctx, same_layout)
            });
            read_ahead(outcome, snapshot, file.feed)
        })
        .collect())
}

fn validate_work(
    w: &Work,
    record: Cells,
    file: &FileContext,
    ctx: &RowContext,
    same_layout: bool,
) -> Outcome {
    // Reasons quote the file's values; they are shown on terminals, pages
    // and in emails, so control characters in them are written out.
    let error_of = |reasons: Vec<String>| RowError {
        line: w.row.line,
        id: (!w.row.id.is_empty()).then(|| w.row.id.to_string()),
        reasons: reasons
            .into_iter()
            .map(|r| match printable(&r) {
                std::borrow::Cow::Borrowed(_) => r,
                std::borrow::Cow::Owned(shown) => shown,
            })
            .collect(),
        warning: false,
        cells: record
            .iter()
            .map(|c| decode_field(c, file.encoding).into_owned())
            .collect(),
    };
    let error = |reasons: Vec<String>| Outcome::Error(error_of(reasons));
    match w.kind {
        WorkKind::Flagged(flag) => error(vec![early_reason(flag, w, &record, file)]),
        WorkKind::Candidate { stored } => match validate_row(&record, ctx) {
            // The stored values cannot stand in for invalid ones after a
            // mapping change (they are kept by position): the person is
            // kept exactly as stored instead.
            Ok(valid) if stored && valid.kept != 0 && !same_layout => error(
                valid
                    .warnings
                    .iter()
                    .map(|w| w.trim_end_matches("; imported without it").to_string())
                    .collect(),
            ),
            Ok(valid) => {
                let warning = (!valid.warnings.is_empty()).then(|| RowError {
                    warning: true,
                    ..error_of(valid.warnings.clone())
                });
                Outcome::Upsert(Upsert {
                    id: w.row.id.clone(),
                    // A row with warnings is stored under another hash, so
                    // that the next file holding it is validated (and
                    // warned about) again.
                    hash: if warning.is_some() {
                        !w.row.hash
                    } else {
                        w.row.hash
                    },
                    valid,
                    stored,
                    old: None,
                    warning,
                })
            }
            Err(reasons) => error(reasons),
        },
    }
}

/// Attaches the stored record to an update (with the stored values of
/// its invalid fields), or settles it as unchanged.
fn read_ahead(outcome: Outcome, snapshot: Option<&dyn StoredRecords>, feed: &Feed) -> Outcome {
    let (mut u, snapshot) = match (outcome, snapshot) {
        (Outcome::Upsert(u), Some(snapshot)) if u.stored => (u, snapshot),
        (other, _) => return other,
    };
    let old = match snapshot.stored_record(&u.id) {
        Ok(old) => old,
        Err(e) => return Outcome::SnapshotFailed(e),
    };
    if let Some(old) = old.as_deref().filter(|_| u.valid.kept != 0) {
        match keep_stored_values(&u.valid, old, feed) {
            Ok(valid) => u.valid = valid,
            Err(e) => return Outcome::SnapshotFailed(e.to_string()),
        }
    }
    if old.as_deref() == Some(u.valid.encoded.as_slice()) {
        return Outcome::Unchanged {
            id: u.id,
            hash: u.hash,
            warning: u.warning,
        };
    }
    u.old = Some(old);
    Outcome::Upsert(u)
}

fn early_reason(flag: EarlyFlag, w: &Work, record: &Cells, file: &FileContext) -> String {
    match flag {
        EarlyFlag::EmptyId => {
            let column = file.header.field_columns[file.feed.id_field]
                .and_then(|c| file.header.columns.get(c))
                .map_or(file.feed.id().column.as_str(), String::as_str);
            format!("empty ID (column '{column}')")
        }
        EarlyFlag::Repeated { first_line } => format!(
            "repeated ID '{}': the first occurrence on {} {first_line} is used",
            w.row.id, file.line_word
        ),
        EarlyFlag::WrongColumnCount => format!(
            "wrong column count: {} columns, the header has {}",
            record.count(),
            file.header.columns.len()
        ),
    }
}
