//! The import core: parse → validate → diff → plan.
//!
//! Owns: decrypting an OpenPGP file and judging its signature (`pgp`),
//! expanding a gzip file or a one-file ZIP or tar archive (`container`),
//! writing a workbook's sheet as CSV (`workbook`), each into the caller's
//! writer with the size limit, reading a feed's CSV file
//! (encoding, delimiter, quoting), mapping its header, validating and
//! normalising rows, diffing them against the feed's stored state, the
//! delete guard, and driving the changes through the [`FeedWriter`]
//! trait. It is pure: no tokio, no network, no redb; it
//! decides and the caller's writer acts. The CLI and the server both call it
//! through `worker`.
//!
//! The path of a file (see ARCHITECTURE.md):
//! 1. [`scan_file`] / [`scan_file_against`] (pass 1, parallel): per row
//!    only the ID, a 64-bit raw hash, its byte offset/length and line
//!    number; against the stored hash list, a row whose raw text is as
//!    stored is recognised without being parsed.
//! 2. [`diff_scan`]: sort by ID and merge-join with the stored (ID, hash)
//!    list: unchanged rows cost nothing more; new and changed rows become
//!    candidates; stored IDs absent from the file are removals.
//! 3. [`judge_delete_guard`]: hold the run when it would remove too many.
//! 4. [`apply_diff`] (pass 2, parallel): re-read candidates and flagged rows
//!    by offset, validate and normalise them, compare with the stored record
//!    and push adds, updates, removals and group changes into a
//!    [`FeedWriter`]; stream row errors to an [`ErrorSink`].
//!
//! Invariants:
//! 1. Every data row ends in exactly one of added, updated, unchanged,
//!    flagged, filtered.
//! 2. A flagged row whose ID is stored never changes that recipient.
//! 3. A stored recipient is removed only when its ID is in no unfiltered
//!    row of the file.
//! 4. A row whose raw hash equals the stored one (under the same run
//!    fingerprint: mapping, [`RULES_VERSION`], encoding decision) is
//!    unchanged without being validated again: it was valid, without
//!    warnings, when stored.
//! 5. A file whose records cannot be told apart (a quote left open, a
//!    record that swallowed others, a cut-off last line) is refused whole:
//!    damage never removes anyone. Every part of the reader finds records
//!    with `text::walk_record_ends`.

mod apply;
mod container;
mod diff;
mod guard;
mod header;
mod input;
pub mod pgp;
pub mod phone;
#[cfg(test)]
mod phone_tables_gen;
pub mod record;
mod scan;
mod text;
mod undo;
mod validate;
mod workbook;

pub use apply::{
    apply_diff, apply_diff_with_snapshot, Applied, ApplyCounts, ApplyError, Change, ErrorSink,
    FeedWriter, FieldChange, FileContext, RowError, StoredRecords,
};
pub use container::{container_of, expand, Container, Expanded, Refusal};
pub use diff::{diff_scan, Diff, StoredIndex};
pub use guard::{judge_clearing, judge_delete_guard, judge_removals, thousands, Verdict};
pub use header::{read_header, Header};
pub use input::{transcode_utf16, utf16_byte_order, FileInput, Input};
pub use scan::{header_columns, scan_file, scan_file_against, Encoding, Known, Rejection, Scan};
pub(crate) use text::decode_field;
pub use text::{printable, printable_lines};
pub use undo::{
    apply_undo, edit_hash_list, plan_undo, revert_change, LoggedChange, LoggedField, LoggedValue,
    UndoApplied, UndoConflict, UndoError, UndoPlan, UndoTarget,
};
pub use validate::{check_field_value, encode_values, is_email, RowParser};
pub use workbook::{
    is_workbook_container, line_word, workbook_of, workbook_to_csv, SheetRead, SheetRequest,
    Workbook,
};

/// The version of the reading and validation rules. It is part of the
/// fingerprint that lets rows whose raw text is as stored skip validation,
/// so a release that changes what is read or valid raises it and every
/// stored row is validated again once.
pub const RULES_VERSION: u32 = 2;

/// The fingerprint a run's stored raw hashes are made under: the feed's
/// mapping, the rules' version, and the file's encoding decision (the same
/// bytes mean other values under another decision).
pub fn run_fingerprint(feed: &crate::config::Feed, encoding: Encoding) -> u64 {
    let encoding = match encoding {
        Encoding::Windows1252 => 1u64,
        _ => 0,
    };
    xxhash_rust::xxh3::xxh3_64(
        &[
            feed.mapping_fingerprint().to_le_bytes(),
            u64::from(RULES_VERSION).to_le_bytes(),
            encoding.to_le_bytes(),
        ]
        .concat(),
    )
}

/// The stored hashes of `index` when they can be trusted for a file read
/// with the rules of this build, and the encoding they were made under.
pub fn trusted_hashes<'a>(index: &'a StoredIndex, feed: &crate::config::Feed) -> Option<Known<'a>> {
    [Encoding::Utf8, Encoding::Windows1252]
        .into_iter()
        .find(|&e| index.fingerprint == Some(run_fingerprint(feed, e)))
        .map(|encoding| Known {
            hashes: &index.hashes,
            encoding,
        })
}

#[cfg(test)]
mod tests;
