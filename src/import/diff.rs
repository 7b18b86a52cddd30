//! The merge-join of the file's (ID, hash) list against the store's.

use compact_str::CompactString;
use rayon::slice::ParallelSliceMut;

use super::scan::{RowShape, Scan, ScannedRow};

/// The feed's stored state as the diff needs it.
#[derive(Debug, Default, Clone)]
pub struct StoredIndex {
    /// (ID, raw hash), sorted by ID, without repeats.
    pub hashes: Vec<(CompactString, u64)>,
    /// The mapping fingerprint the hashes were made under; `None` for a feed
    /// that has never been imported.
    pub fingerprint: Option<u64>,
    /// The mapping fingerprint ([`crate::config::Feed::mapping_fingerprint`])
    /// the stored records' values are laid out under: values are kept by
    /// position, so only under the same mapping can a stored value stand in
    /// for an invalid one.
    pub mapping: Option<u64>,
}

/// Why a row is flagged before its fields are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyFlag {
    EmptyId,
    /// A later row with an ID already seen on `first_line`.
    Repeated {
        first_line: u32,
    },
    WrongColumnCount,
}

/// One row that pass 2 must read again.
#[derive(Debug, Clone)]
pub struct Work {
    pub row: ScannedRow,
    pub kind: WorkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// New ID, or a stored ID whose raw hash changed: validate, compare.
    Candidate { stored: bool },
    /// Flagged already; read again only for the error report.
    Flagged(EarlyFlag),
}

/// What the file would do to the feed, before any row is validated.
#[derive(Debug, Default)]
pub struct Diff {
    pub rows_read: u64,
    pub filtered: u64,
    /// Stored recipients before the run.
    pub stored_count: u64,
    /// See [`StoredIndex::mapping`].
    pub stored_mapping: Option<u64>,
    /// Rows whose hash equals the stored one: unchanged, nothing to do.
    pub unchanged: u64,
    /// Stored IDs absent from the file's unfiltered rows, sorted.
    pub removed: Vec<CompactString>,
    /// Rows to read again, sorted by offset.
    pub work: Vec<Work>,
    /// The stored (ID, hash) entries that are not removed, sorted by ID:
    /// the start of the feed's hash list after the run.
    pub kept: Vec<(CompactString, u64)>,
}

/// Classifies every row of `scan` against `stored`. `fingerprint` is the
/// feed's current mapping fingerprint: when it differs from the stored one,
/// no stored hash is trusted.
pub fn diff_scan(scan: Scan, stored: StoredIndex, fingerprint: u64) -> Diff {
    let trust_hashes = stored.fingerprint == Some(fingerprint);
    let mut rows = scan.rows;
    let by_id_then_offset =
        |a: &ScannedRow, b: &ScannedRow| a.id.cmp(&b.id).then(a.offset.cmp(&b.offset));
    // HR exports are usually sorted by ID already: check before sorting.
    if !rows.is_sorted_by(|a, b| by_id_then_offset(a, b).is_le()) {
        rows.par_sort_unstable_by(by_id_then_offset);
    }
    let mut diff = Diff {
        rows_read: scan.rows_read,
        filtered: scan.filtered,
        stored_count: stored.hashes.len() as u64,
        stored_mapping: stored.mapping,
        ..Diff::default()
    };
    // The kept entries are compacted in place at the front of the stored
    // list (`write` ≤ `read`), so no second list of a million is built.
    let mut list = stored.hashes;
    let (mut read, mut write) = (0usize, 0usize);
    let mut i = 0;
    while i < rows.len() {
        let id = rows[i].id.clone();
        let mut j = i + 1;
        while j < rows.len() && rows[j].id == id {
            j += 1;
        }
        if id.is_empty() {
            for row in &rows[i..j] {
                let flag = match row.shape {
                    RowShape::WrongColumnCount => EarlyFlag::WrongColumnCount,
                    RowShape::Whole => EarlyFlag::EmptyId,
                };
                diff.push_flagged(row, flag);
            }
            i = j;
            continue;
        }
        // Stored IDs before this one are absent from the file.
        while read < list.len() && list[read].0 < id {
            diff.removed.push(std::mem::take(&mut list[read].0));
            read += 1;
        }
        let stored_hash = if read < list.len() && list[read].0 == id {
            let hash = list[read].1;
            list.swap(write, read);
            write += 1;
            read += 1;
            Some(hash)
        } else {
            None
        };
        let first = &rows[i];
        match (first.shape, stored_hash) {
            (RowShape::WrongColumnCount, _) => {
                diff.push_flagged(first, EarlyFlag::WrongColumnCount)
            }
            (RowShape::Whole, Some(h)) if trust_hashes && h == first.hash => diff.unchanged += 1,
            (RowShape::Whole, stored) => diff.work.push(Work {
                row: first.clone(),
                kind: WorkKind::Candidate {
                    stored: stored.is_some(),
                },
            }),
        }
        for later in &rows[i + 1..j] {
            diff.push_flagged(
                later,
                EarlyFlag::Repeated {
                    first_line: first.line,
                },
            );
        }
        i = j;
    }
    while read < list.len() {
        diff.removed.push(std::mem::take(&mut list[read].0));
        read += 1;
    }
    list.truncate(write);
    diff.kept = list;
    diff.work.par_sort_unstable_by_key(|w| w.row.offset);
    diff
}

impl Diff {
    fn push_flagged(&mut self, row: &ScannedRow, flag: EarlyFlag) {
        self.work.push(Work {
            row: row.clone(),
            kind: WorkKind::Flagged(flag),
        });
    }
}
