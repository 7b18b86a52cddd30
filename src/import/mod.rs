//! The import core: parse → validate → diff → plan.
//!
//! Owns: reading a feed's CSV file (encoding, delimiter, quoting), mapping
//! its header, validating and normalising rows, diffing them against the
//! feed's stored state, the delete guard, and driving the changes through
//! the [`FeedWriter`] trait. It is pure: no tokio, no network, no redb; it
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
//! 4. A row whose raw hash equals the stored one (under the same mapping
//!    fingerprint) is unchanged without being validated again: it was valid
//!    when stored.

mod apply;
mod diff;
mod guard;
mod header;
mod input;
pub mod phone;
pub mod record;
mod scan;
mod validate;

pub use apply::{
    apply_diff, apply_diff_with_snapshot, Applied, ApplyCounts, ApplyError, ErrorSink, FeedWriter,
    FileContext, RowError, StoredRecords,
};
pub use diff::{diff_scan, Diff, StoredIndex};
pub use guard::{judge_delete_guard, thousands, Verdict};
pub use input::{FileInput, Input};
pub use scan::{scan_file, scan_file_against, Encoding, Rejection, Scan};

#[cfg(test)]
mod tests;
