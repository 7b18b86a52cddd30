//! The one place that orchestrates a run: file → core → store → outputs.
//!
//! Owns: the order of a run's steps, and which of them happen inside the
//! store's write transaction. `flagsync import` and (later) the server's
//! worker call the same functions, so a run from the command line is exactly
//! a run on the server.
//!
//! Invariants:
//! 1. A failed run writes nothing: not the folders, and not the store
//!    either, except on the server, where its run record and its error
//!    report (the reason) are kept.
//! 2. A dry run writes nothing.
//! 3. An applied, unchanged or held run's changes, run record and the
//!    superseding of older held runs are one write transaction; its error
//!    report and held-file copy are in place before that commits.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use compact_str::CompactString;

use crate::config::{Config, Feed};
use crate::import::pgp;
use crate::import::{
    apply_diff, apply_diff_with_snapshot, container_of, diff_scan, expand, header_columns,
    judge_clearing, judge_delete_guard, run_fingerprint, scan_file_against, transcode_utf16,
    trusted_hashes, utf16_byte_order, ApplyCounts, ApplyError, Container, Diff, Encoding, Expanded,
    FileContext, FileInput, Input, Refusal, Scan, StoredIndex, Verdict,
};
use crate::import::{workbook_of, workbook_to_csv, SheetRead, SheetRequest, Workbook};
use crate::report::ErrorCollector;
use crate::store::{DataLock, ReadFeed, Run, RunState, Store, StoreError};

pub mod engine;
pub mod indexer;
pub mod intake;
pub mod schedule;
pub mod status;
mod undo;
mod webhooks;

pub use undo::{restore_recipient, restore_recipient_in, undo_run, undo_run_in};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing a run's own files (its error report, a held copy) failed:
    /// the disk, not the file, and it may pass.
    #[error(
        "{what}: {source}; check the data folder's free space and that flagsync may write there"
    )]
    Output {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A held run's kept file no longer reads as it did.
    #[error("the held file cannot be read as it was: {0}")]
    HeldFile(String),
    /// The request names no run.
    #[error("run {0} does not exist; `flagsync runs list` shows the runs")]
    UnknownRun(u64),
    /// Only held runs can be decided.
    #[error("run {id} is {state}, not held; only held runs can be {verb}")]
    NotHeld {
        id: u64,
        state: &'static str,
        verb: &'static str,
    },
    /// The run's feed left the configuration.
    #[error(
        "feed '{feed}' (of run {id}) is no longer configured; add it back to decide on the run"
    )]
    FeedGone { id: u64, feed: String },
    /// The run cannot be undone.
    #[error("run {id} cannot be undone: {why}")]
    NotUndoable { id: u64, why: String },
    /// An undo or restore waits for the feed's held run to be decided.
    #[error(
        "feed '{feed}' has a held run ({held}); confirm or reject it first (`flagsync runs confirm {held}` or `flagsync runs reject {held}`), then try again"
    )]
    FeedHasHeldRun { feed: String, held: u64 },
    /// A restore that has nothing to put back.
    #[error("nothing restored: {0}")]
    NothingToRestore(String),
    /// A bug met while running a file (a panic, caught).
    #[error("{0}")]
    Internal(String),
}

impl WorkerError {
    /// The request itself is wrong (exit 2 on the command line, 409 on the
    /// page), not the server or the file.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WorkerError::UnknownRun(_)
                | WorkerError::NotHeld { .. }
                | WorkerError::FeedGone { .. }
                | WorkerError::NotUndoable { .. }
                | WorkerError::FeedHasHeldRun { .. }
                | WorkerError::NothingToRestore(_)
        )
    }

    fn output(what: impl Into<String>, source: std::io::Error) -> WorkerError {
        WorkerError::Output {
            what: what.into(),
            source,
        }
    }
}

impl<E: Into<WorkerError>> From<ApplyError<E>> for WorkerError {
    fn from(e: ApplyError<E>) -> Self {
        match e {
            ApplyError::Writer(w) => w.into(),
            ApplyError::Damaged(d) => StoreError::Damaged(d.to_string()).into(),
            ApplyError::Snapshot(s) => StoreError::Damaged(s).into(),
            ApplyError::Read(e) => WorkerError::output("reading the file again", e),
            ApplyError::ErrorReport(e) => WorkerError::output("writing the error report", e),
        }
    }
}

/// How many of those a held run would remove are named in its report.
const WOULD_REMOVE_SHOWN: usize = 20;

/// Options of one import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Record a failed run in the store (the server does, so that it can
    /// be seen; `flagsync import` does not: its output says it all).
    pub record_failure: bool,
}

/// What a confirmation brings to the run.
struct Confirmation {
    held: Run,
    by: String,
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// The skeleton of a run record before its outcome is known.
fn new_run(feed: &Feed, file: &str, dry_run: bool, started_at: String) -> Run {
    Run {
        dry_run,
        ..Run::new(&feed.name, file, started_at)
    }
}

fn finish_timing(run: &mut Run, t0: Instant) {
    run.finished_at = now_text();
    run.duration_ms = t0.elapsed().as_millis() as u64;
}

/// Processes `path` for `feed` exactly as the server does.
pub fn import_file(
    config: &Config,
    feed: &Feed,
    path: &Path,
    options: ImportOptions,
) -> Result<Run, WorkerError> {
    let (access, _lock) = if options.dry_run {
        (Access::ReadOnly, None)
    } else {
        (Access::Upgrade, Some(DataLock::acquire(&config.data_dir)?))
    };
    run_file(RunRequest {
        config,
        feed,
        path,
        file_name: &file_name_of(path),
        access,
        options,
        confirmation: None,
        upload: None,
        force_hold: false,
    })
}

/// [`import_file`] with a store the caller holds open for writing, other
/// writers kept out (the server).
pub fn import_file_in(
    config: &Config,
    store: &Store,
    feed: &Feed,
    path: &Path,
    options: ImportOptions,
) -> Result<Run, WorkerError> {
    run_file(RunRequest {
        config,
        feed,
        path,
        file_name: &file_name_of(path),
        access: Access::Open(store),
        options,
        confirmation: None,
        upload: None,
        force_hold: false,
    })
}

/// Processes a file the server has claimed (`processing/<upload>`), with
/// the store it holds open. The caller keeps other writers out.
pub fn import_upload(
    config: &Config,
    store: &Store,
    feed: &Feed,
    path: &Path,
    file_name: &str,
    upload: &str,
) -> Result<Run, WorkerError> {
    run_file(RunRequest {
        config,
        feed,
        path,
        file_name,
        access: Access::Open(store),
        options: ImportOptions {
            dry_run: false,
            progress: false,
            record_failure: true,
        },
        confirmation: None,
        upload: Some(upload.to_string()),
        force_hold: false,
    })
}

/// Everything one run needs to know.
struct RunRequest<'a> {
    config: &'a Config,
    feed: &'a Feed,
    /// Where the bytes are (the upload, or a held run's kept copy).
    path: &'a Path,
    /// The name the file arrived with.
    file_name: &'a str,
    access: Access<'a>,
    options: ImportOptions,
    confirmation: Option<Confirmation>,
    /// The server's claimed upload, recorded with the run.
    upload: Option<String>,
    /// Hold the run (its apply found it clears too much).
    force_hold: bool,
}

/// How a run reaches the store.
enum Access<'s> {
    /// Read-only throughout (dry runs).
    ReadOnly,
    /// Read-only until the file is known to be readable, then read-write:
    /// a failed run never opens the store for writing, so its file stays
    /// byte-for-byte the same. The caller holds the [`DataLock`].
    Upgrade,
    /// Already open for writing (confirm).
    Open(&'s Store),
}

/// Applies a held run: its kept file, diffed against the store as it is now.
pub fn confirm_run(
    config: &Config,
    run_id: u64,
    by: &str,
    options: ImportOptions,
) -> Result<Run, WorkerError> {
    let _lock = DataLock::acquire(&config.data_dir)?;
    let store = Store::open(&config.store_path())?;
    confirm_run_in(config, &store, run_id, by, options)
}

/// [`confirm_run`] with a store the caller holds open for writing, other
/// writers kept out.
pub fn confirm_run_in(
    config: &Config,
    store: &Store,
    run_id: u64,
    by: &str,
    options: ImportOptions,
) -> Result<Run, WorkerError> {
    let held = held_run(store, run_id, "confirmed")?;
    if held.undo_of.is_some() {
        return undo::confirm_undo(config, store, held, by);
    }
    let feed = config
        .feed(&held.feed)
        .ok_or_else(|| WorkerError::FeedGone {
            id: run_id,
            feed: held.feed.clone(),
        })?;
    let path = PathBuf::from(held.held_file.clone().unwrap_or_default());
    let file = held.file.clone();
    // The server's claim stays the run's: its archived copy is the file.
    let upload = held.upload.clone();
    let confirmation = Confirmation {
        held,
        by: by.to_string(),
    };
    run_file(RunRequest {
        config,
        feed,
        path: &path,
        file_name: &file,
        access: Access::Open(store),
        options,
        confirmation: Some(confirmation),
        upload,
        force_hold: false,
    })
}

/// Rejects a held run: nothing is applied and its kept file is deleted.
pub fn reject_run(config: &Config, run_id: u64, by: &str) -> Result<Run, WorkerError> {
    let _lock = DataLock::acquire(&config.data_dir)?;
    let store = Store::open(&config.store_path())?;
    reject_run_in(config, &store, run_id, by)
}

/// [`reject_run`] with a store the caller holds open for writing.
pub fn reject_run_in(
    config: &Config,
    store: &Store,
    run_id: u64,
    by: &str,
) -> Result<Run, WorkerError> {
    let mut run = held_run(store, run_id, "rejected")?;
    let held_file = run.held_file.take();
    run.state = RunState::Rejected;
    run.rejected_by = Some(by.to_string());
    run.rejected_at = Some(now_text());
    // The record and its webhook events (none for a feed no longer
    // configured) in one transaction.
    let txn = store.begin_run()?;
    txn.put_run(&run)?;
    let events = match config.feed(&run.feed) {
        Some(feed) => webhooks::queue_events(feed, &run, &txn)?,
        None => false,
    };
    txn.commit()?;
    webhooks::wake_sender(events);
    if let Some(f) = held_file {
        remove_quietly(Path::new(&f));
    }
    Ok(run)
}

fn held_run(store: &Store, run_id: u64, verb: &'static str) -> Result<Run, WorkerError> {
    let run = match store.get_run(run_id) {
        Err(StoreError::UnknownRun(id)) => return Err(WorkerError::UnknownRun(id)),
        other => other?,
    };
    if run.state != RunState::Held {
        return Err(WorkerError::NotHeld {
            id: run_id,
            state: run.state.as_str(),
            verb,
        });
    }
    Ok(run)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a held file");
        }
    }
}

/// A run's file as the reader sees it: the file itself, or a copy of it in
/// an unnamed temporary file (deleted when the run ends, whatever happens;
/// the archive keeps the file as uploaded): a gzip file or a ZIP archive
/// expanded, a workbook's sheet (also once expanded) as CSV, a UTF-16 file
/// (also once expanded) in UTF-8.
struct RunInput {
    file: FileInput,
    /// The file's own encoding when it is UTF-16.
    utf16: Option<Encoding>,
    /// What the file was packed in, from the outside in (`pgp`, `gzip`,
    /// `zip: <entry>`: `pgp, gzip`), or the workbook sheet read
    /// (`xlsx: <sheet>`, `xlsx: <sheet>, in pgp, zip: <entry>`).
    container: Option<String>,
    /// An OpenPGP file: what its decryption and signature were.
    pgp: Option<pgp::PgpRecord>,
    /// A container that cannot be expanded: the run fails with this (and
    /// `file` is the file as sent).
    refused: Option<crate::import::Rejection>,
}

impl RunInput {
    /// `feed`: its `max_file_size`, which an expanded file (or a sheet's
    /// CSV) may not pass, its OpenPGP keys and the `sheet` read from a
    /// workbook; `scratch`: the data folder, where the copies are made.
    /// The steps, each on the previous one's output: OpenPGP decryption,
    /// then gzip, ZIP or tar expansion, then a workbook's sheet as CSV,
    /// then UTF-16 transcoding.
    fn open(path: &Path, feed: &Feed, scratch: &Path) -> Result<RunInput, WorkerError> {
        let fail = |source| WorkerError::File {
            path: path.to_owned(),
            source,
        };
        let limit = feed.max_file_size;
        let sent = FileInput::open(path).map_err(fail)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let mut layers = Vec::new();
        let mut pgp = None;
        let mut file = match decrypted_copy(&sent, &name, feed, scratch) {
            Ok(None) => sent,
            Ok(Some((copy, decrypted))) => {
                layers.push("pgp".to_string());
                pgp = Some(decrypted.record);
                FileInput::from_file(copy).map_err(fail)?
            }
            Err(refusal) => return RunInput::refused(sent, refusal, path, scratch),
        };
        // A workbook is often a ZIP archive itself: read as one below.
        if let Some(kind) = container_of(&file).filter(|_| workbook_of(&file).is_none()) {
            match expanded_copy(&file, kind, limit, scratch) {
                Ok((copy, expanded)) => {
                    file = FileInput::from_file(copy).map_err(fail)?;
                    layers.push(expanded.container);
                }
                Err(refusal) => {
                    let mut refused = RunInput::refused(file, refusal, path, scratch)?;
                    refused.pgp = pgp;
                    return Ok(refused);
                }
            }
        }
        let mut container = (!layers.is_empty()).then(|| layers.join(", "));
        if let Some(kind) = workbook_of(&file) {
            match sheet_copy(&file, kind, feed, scratch) {
                Ok((copy, read)) => {
                    file = FileInput::from_file(copy).map_err(fail)?;
                    container = Some(match container {
                        Some(outer) => format!("{}, in {outer}", read.container),
                        None => read.container,
                    });
                }
                Err(refusal) => {
                    let mut refused = RunInput::refused(file, refusal, path, scratch)?;
                    refused.pgp = pgp;
                    return Ok(refused);
                }
            }
        }
        let Some(order) = utf16_byte_order(&file) else {
            return Ok(RunInput {
                file,
                utf16: None,
                container,
                pgp,
                refused: None,
            });
        };
        let copy = utf8_copy(&file, order, scratch).map_err(fail)?;
        Ok(RunInput {
            file: FileInput::utf8_copy(copy).map_err(fail)?,
            utf16: Some(order),
            container,
            pgp,
            refused: None,
        })
    }

    /// The columns of the file's first line, for a failed run's report;
    /// none for an OpenPGP file left as sent (its armour is no header).
    fn header_columns(&self, feed: &Feed) -> Option<Vec<String>> {
        if pgp::is_openpgp(&self.file, "") {
            return None;
        }
        header_columns(&self.file, feed)
    }

    /// A file that cannot be unpacked: the run fails with the reason
    /// (`Refused`), or the copy could not be written (`Write`).
    fn refused(
        file: FileInput,
        refusal: Refusal,
        path: &Path,
        scratch: &Path,
    ) -> Result<RunInput, WorkerError> {
        match refusal {
            Refusal::Refused(reason) => Ok(RunInput {
                file,
                utf16: None,
                container: None,
                pgp: None,
                refused: Some(crate::import::Rejection::new(reason)),
            }),
            Refusal::Write(e) => Err(WorkerError::output(
                format!(
                    "cannot write the expanded copy of {} in {}",
                    path.display(),
                    scratch.display()
                ),
                e,
            )),
        }
    }
}

/// The clear content of an OpenPGP file, in an unnamed temporary file;
/// `None` for a file that is not one (refused when the feed requires
/// signed files). Also what a support bundle carries of an encrypted run.
pub(crate) fn decrypted_copy(
    file: &FileInput,
    name: &str,
    feed: &Feed,
    scratch: &Path,
) -> Result<Option<(std::fs::File, pgp::Decrypted)>, Refusal> {
    use std::io::{Seek, Write};
    if !pgp::is_openpgp(file, name) {
        if feed.require_signature {
            return Err(Refusal::Refused(format!(
                "the file is not an OpenPGP message, and feed '{}' requires files signed and encrypted by the sender (require_signature): ask the sender to sign and encrypt it",
                feed.name
            )));
        }
        return Ok(None);
    }
    let keys = match pgp::load_keys(feed) {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            return Err(Refusal::Refused(format!(
                "the file is OpenPGP-encrypted, and feed '{}' has no pgp_private_key_file to decrypt it with: make a key pair with `flagsync pgp keygen --feed {}`, add the line it prints to the feed, and have the sender encrypt to its public key",
                feed.name, feed.name
            )))
        }
        Err(problem) => {
            return Err(Refusal::Refused(format!(
                "the file is OpenPGP-encrypted, and {problem}; `flagsync check` tells the same"
            )))
        }
    };
    let mut copy = unnamed_temp_file(scratch, "decrypted").map_err(Refusal::Write)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut copy);
    let decrypted = pgp::decrypt(file, &keys, feed.max_file_size, &mut out)?;
    out.flush().map_err(Refusal::Write)?;
    drop(out);
    copy.rewind().map_err(Refusal::Write)?;
    Ok(Some((copy, decrypted)))
}

/// A file in `dir` (the data folder) that is unlinked at once (only this
/// process holds it; it is gone when the run closes it). Not in the system's
/// temporary folder: that is often memory (tmpfs), and an expanded upload
/// may be as big as `max_file_size`. Falls back to it when `dir` cannot be
/// written.
fn unnamed_temp_file(dir: &Path, what: &str) -> std::io::Result<std::fs::File> {
    let stamp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!(".flagsync-{what}-{}-{stamp}.csv", std::process::id());
    let create = |path: &Path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let _ = std::fs::remove_file(path);
        Ok(file)
    };
    create(&dir.join(&name)).or_else(|_: std::io::Error| create(&std::env::temp_dir().join(&name)))
}

/// The expanded content of a gzip file or ZIP archive, in an unnamed
/// temporary file.
fn expanded_copy(
    file: &FileInput,
    kind: Container,
    limit: u64,
    scratch: &Path,
) -> Result<(std::fs::File, Expanded), Refusal> {
    use std::io::{Seek, Write};
    let mut copy = unnamed_temp_file(scratch, "expanded").map_err(Refusal::Write)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut copy);
    let expanded = expand(file, kind, limit, &mut out)?;
    out.flush().map_err(Refusal::Write)?;
    drop(out);
    copy.rewind().map_err(Refusal::Write)?;
    Ok((copy, expanded))
}

/// A workbook's sheet (the feed's `sheet`, or its first visible one) as CSV
/// in the feed's delimiter, in an unnamed temporary file.
fn sheet_copy(
    file: &FileInput,
    kind: Workbook,
    feed: &Feed,
    scratch: &Path,
) -> Result<(std::fs::File, SheetRead), Refusal> {
    use std::io::{Seek, Write};
    let mut copy = unnamed_temp_file(scratch, "sheet").map_err(Refusal::Write)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut copy);
    let read = workbook_to_csv(file, kind, &SheetRequest::for_feed(feed), &mut out)?;
    out.flush().map_err(Refusal::Write)?;
    drop(out);
    copy.rewind().map_err(Refusal::Write)?;
    Ok((copy, read))
}

/// The UTF-8 text of a UTF-16 file, in an unnamed temporary file.
fn utf8_copy(file: &FileInput, order: Encoding, scratch: &Path) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let mut copy = unnamed_temp_file(scratch, "utf16")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut copy);
    transcode_utf16(file, order, &mut out)?;
    out.flush()?;
    drop(out);
    copy.rewind()?;
    Ok(copy)
}

fn progress_bar(input: &dyn Input, enabled: bool) -> Option<indicatif::ProgressBar> {
    const BIG_FILE: u64 = 64 << 20;
    if !enabled || input.len() < BIG_FILE || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(input.len());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("reading");
    Some(bar)
}

/// The store's index, then pass 1 against it: rows whose raw text is as
/// stored are recognised without being parsed.
fn scan_and_index(
    input: &dyn Input,
    feed: &Feed,
    store: Option<&Store>,
    progress: bool,
) -> Result<(Result<Scan, crate::import::Rejection>, StoredIndex), WorkerError> {
    let index = match store {
        Some(store) => store.feed_index(&feed.name)?,
        None => StoredIndex::default(),
    };
    tracing::debug!("read the store's index");
    let known = trusted_hashes(&index, feed);
    let bar = progress_bar(input, progress);
    let on_progress = |done: u64| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    };
    let scan = scan_file_against(input, feed, known, &on_progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((scan, index))
}

/// One run, in the steps of ARCHITECTURE.md's "path of a file": read the
/// file (pass 1), diff it against the store, judge the guards, then apply
/// it (pass 2), hold it, or for a dry run only count what it would do.
fn run_file(request: RunRequest) -> Result<Run, WorkerError> {
    let RunRequest {
        config,
        feed,
        path,
        file_name,
        access,
        options,
        confirmation,
        upload,
        force_hold,
    } = request;
    let t0 = Instant::now();
    let started_at = confirmation
        .as_ref()
        .map_or_else(now_text, |c| c.held.started_at.clone());
    let mut run = new_run(feed, file_name, options.dry_run, started_at);
    run.upload = upload;
    let mut input = RunInput::open(path, feed, &config.data_dir)?;
    run.container = input.container.clone();
    run.pgp = input.pgp.clone();
    let _span = tracing::info_span!("run", feed = %feed.name, file = %file_name).entered();
    let mut store = RunStore::open(config, access)?;
    if let Some(rejection) = input.refused.take() {
        let failures = store.for_failures().filter(|_| options.record_failure);
        return reject_file(config, feed, &input, rejection, failures, run, t0);
    }

    // Read.
    let (scan, index) = scan_and_index(&input.file, feed, store.get(), options.progress)?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "scanned file and read index"
    );
    let scan = match scan {
        Ok(scan) => scan,
        Err(rejection) => {
            let failures = store.for_failures().filter(|_| options.record_failure);
            return reject_file(config, feed, &input, rejection, failures, run, t0);
        }
    };
    run.encoding = Some(input.utf16.unwrap_or(scan.encoding));
    let header = scan.header.clone();
    let encoding = scan.encoding;
    let fingerprint = run_fingerprint(feed, encoding);

    // Diff.
    let diff = diff_scan(scan, index, fingerprint);
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        work = diff.work.len(),
        removed = diff.removed.len(),
        "diffed"
    );

    // Guards. A confirmed run applies what an administrator saw; the
    // first file of an empty feed is never held.
    let guarded = confirmation.is_none() && diff.stored_count > 0;
    let mut hold_reasons = Vec::new();
    if let (true, Verdict::Hold { reason }) =
        (guarded, judge_delete_guard(&diff, feed.delete_threshold))
    {
        hold_reasons.push(reason);
    }
    // Held whatever pass 2 finds; its reason says how many values go.
    let hold_first = guarded && (!header.missing_fields.is_empty() || force_hold);
    let hold = !hold_reasons.is_empty() || hold_first;

    // Apply, hold, or count.
    let file = FileContext {
        input: &input.file,
        feed,
        header: &header,
        encoding,
        line_word: crate::import::line_word(input.container.as_deref()),
    };
    let errors_dir = config.feed_dir(&feed.name).join("errors");
    store.make_writable(config, diff.work.len())?;
    match store.get() {
        _ if options.dry_run => {
            let cleared = dry_run(&file, diff, store.get(), &mut run)?;
            if let (true, Some(store)) = (guarded, store.get()) {
                hold_reasons.extend(clearing_reasons(&file, &cleared, store)?);
            }
            if !hold_reasons.is_empty() {
                run.state = RunState::Held;
                run.reason = Some(hold_reasons.join("; "));
            }
        }
        Some(store) if hold => {
            hold_run(
                config,
                &file,
                diff,
                store,
                &mut run,
                &errors_dir,
                path,
                hold_reasons,
                t0,
            )?;
        }
        Some(store) => {
            let outcome = apply_run(
                config,
                &file,
                diff,
                store,
                &mut run,
                &errors_dir,
                fingerprint,
                confirmation,
                guarded,
                t0,
            )?;
            if outcome == Applying::Undone {
                // The run would clear too much: nothing of it was
                // committed. Run the file again, held.
                return run_file(RunRequest {
                    config,
                    feed,
                    path,
                    file_name,
                    access: Access::Open(store),
                    options,
                    confirmation: None,
                    upload: run.upload.clone(),
                    force_hold: true,
                });
            }
        }
        None => return Err(StoreError::Internal("no store for a real run".into()).into()),
    }
    // A recorded run was timed just before its record was written.
    if run.finished_at.is_empty() {
        finish_timing(&mut run, t0);
    }
    tracing::info!(
        rows = run.counts.rows,
        outcome = run.state.as_str(),
        "run finished"
    );
    Ok(run)
}

/// The store as one run reaches it (see [`Access`]).
struct RunStore<'s> {
    access: Access<'s>,
    /// What the run opened itself: read-only, then for writing.
    opened: Option<Store>,
}

impl<'s> RunStore<'s> {
    fn open(config: &Config, access: Access<'s>) -> Result<Self, WorkerError> {
        let opened = match access {
            Access::ReadOnly | Access::Upgrade => Store::open_read_only(&config.store_path())?,
            Access::Open(_) => None,
        };
        Ok(RunStore { access, opened })
    }

    /// The store; none for a dry run before the first import.
    fn get(&self) -> Option<&Store> {
        match self.access {
            Access::Open(store) => Some(store),
            _ => self.opened.as_ref(),
        }
    }

    /// Once pass 1 found the file readable: an [`Access::Upgrade`] store
    /// is opened again for writing, its cache sized for `work` rows.
    fn make_writable(&mut self, config: &Config, work: usize) -> Result<(), WorkerError> {
        if let Access::Upgrade = self.access {
            self.opened = None;
            self.opened = Some(Store::open_for_run(&config.store_path(), work)?);
        }
        Ok(())
    }

    /// Where a rejected file's failed run is recorded: only a store open
    /// for writing from the start (the server, a confirmation). The
    /// command line leaves the store untouched by a file it cannot read.
    fn for_failures(&self) -> Option<&'s Store> {
        match self.access {
            Access::Open(store) => Some(store),
            _ => None,
        }
    }
}

/// A file pass 1 could not read: its run fails with the reason (and is
/// recorded when `store` is given), nothing else changes.
fn reject_file(
    config: &Config,
    feed: &Feed,
    input: &RunInput,
    rejection: crate::import::Rejection,
    store: Option<&Store>,
    mut run: Run,
    t0: Instant,
) -> Result<Run, WorkerError> {
    let header = rejection.header.or_else(|| input.header_columns(feed));
    run.reason = Some(rejection.reason);
    run.encoding = input.utf16.or(rejection.encoding);
    finish_timing(&mut run, t0);
    tracing::warn!(
        reason = run.reason.as_deref().unwrap_or(""),
        "file rejected"
    );
    if let Some(store) = store {
        record_failed_run(config, feed, store, &mut run, header)?;
    }
    Ok(run)
}

/// Records a failed run for an upload whose run stopped on an internal
/// error (a caught panic), so that the file does not go to the archive
/// without a trace in the runs.
pub fn record_broken_upload(
    config: &Config,
    store: &Store,
    feed: &Feed,
    file_name: &str,
    upload: &str,
    reason: String,
) -> Result<Run, WorkerError> {
    let mut run = new_run(feed, file_name, false, now_text());
    run.reason = Some(reason);
    run.upload = Some(upload.to_string());
    run.finished_at = now_text();
    let claimed = crate::layout::FeedFolders::new(config.feed_dir(&feed.name))
        .processing()
        .join(upload);
    let header = RunInput::open(&claimed, feed, &config.data_dir)
        .ok()
        .and_then(|input| input.header_columns(feed));
    record_failed_run(config, feed, store, &mut run, header)?;
    Ok(run)
}

/// Records a failed run with its report (the reason, and the header found
/// in the file when it has one), which is in `errors/` before the record
/// commits.
fn record_failed_run(
    config: &Config,
    feed: &Feed,
    store: &Store,
    run: &mut Run,
    header: Option<Vec<String>>,
) -> Result<(), WorkerError> {
    let recording = Recording::begin(config, feed, store)?;
    recording.assign_id(run)?;
    let errors_dir = config.feed_dir(&feed.name).join("errors");
    let written = crate::report::write_rejection_report(
        &errors_dir,
        &report_name(run),
        run.reason.as_deref().unwrap_or("unknown reason"),
        run.line_word(),
        header.as_deref(),
    )
    .map_err(|e| {
        WorkerError::output(
            format!("cannot write the error report in {}", errors_dir.display()),
            e,
        )
    })?;
    run.error_report = Some(written.display().to_string());
    recording.commit(run)
}

/// A run being recorded: its write transaction, and the steps every run
/// ends with, in one place — its ID, then its record and its report email
/// committed with whatever else the transaction holds.
struct Recording<'a> {
    txn: crate::store::RunTransaction,
    config: &'a Config,
    feed: &'a Feed,
}

impl<'a> Recording<'a> {
    fn begin(config: &'a Config, feed: &'a Feed, store: &Store) -> Result<Self, WorkerError> {
        Ok(Recording {
            txn: store.begin_run()?,
            config,
            feed,
        })
    }

    /// Gives the run the next run ID; returns it.
    fn assign_id(&self, run: &mut Run) -> Result<u64, WorkerError> {
        let id = self.txn.next_run_id()?;
        run.run_id = Some(id);
        Ok(id)
    }

    /// The transaction, for what a run writes besides its record.
    fn txn(&self) -> &crate::store::RunTransaction {
        &self.txn
    }

    /// Writes the run record and queues its report email (as `report_on`
    /// says), then commits everything at once.
    fn commit(self, run: &Run) -> Result<(), WorkerError> {
        self.txn.put_run(run)?;
        queue_report(self.config, self.feed, run, &self.txn)?;
        let events = webhooks::queue_events(self.feed, run, &self.txn)?;
        self.txn.commit()?;
        webhooks::wake_sender(events);
        Ok(())
    }

    /// As [`Recording::commit`], without a report email: a file skipped
    /// for a newer one is told of by the newer one's report.
    fn commit_quietly(self, run: &Run) -> Result<(), WorkerError> {
        self.txn.put_run(run)?;
        self.txn.commit()?;
        Ok(())
    }
}

/// Queues the run's report email in the run's transaction, when SMTP is
/// configured and the feed has report addresses and reports on the run's
/// state (`report_on`).
fn queue_report(
    config: &Config,
    feed: &Feed,
    run: &Run,
    txn: &crate::store::RunTransaction,
) -> Result<(), WorkerError> {
    if config.smtp.is_none() || !feed.reports_on(run.state.as_str()) || run.dry_run {
        return Ok(());
    }
    let link = config
        .web_public_url
        .as_ref()
        .zip(run.run_id)
        .map(|(url, id)| format!("{}/runs/{id}", url.trim_end_matches('/')));
    let attachment = run.error_report.clone();
    let attachment_name = attachment
        .as_deref()
        .and_then(|p| crate::report::mail::attachment_label(Path::new(p)));
    let changes = first_change_lines(feed, run, txn)?;
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let notices = status::key_warnings(feed, now);
    let rendered = match crate::report::mail::render_run_with_notices(
        run,
        link,
        attachment_name.as_deref(),
        &changes,
        &notices,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the run's report email cannot be written");
            return Ok(());
        }
    };
    txn.queue_message(new_message("run", feed, run.run_id, rendered, attachment))?;
    Ok(())
}

/// The first [`CHANGES_SHOWN`](crate::report::mail::CHANGES_SHOWN) of
/// the run's changes as the report lists them, read back from the log the
/// run wrote in `txn`: a million-change run reads twenty entries.
fn first_change_lines(
    feed: &Feed,
    run: &Run,
    txn: &crate::store::RunTransaction,
) -> Result<Vec<String>, WorkerError> {
    let Some(id) = run.run_id.filter(|_| run.counts.changes() > 0) else {
        return Ok(Vec::new());
    };
    let first = txn.first_changes(&feed.name, id, crate::report::mail::CHANGES_SHOWN)?;
    let names: Vec<&str> = name_fields(feed)
        .into_iter()
        .map(|i| feed.fields[i].name.as_str())
        .collect();
    Ok(crate::report::mail::change_lines(
        &first,
        &names,
        run.state.nothing_applied(),
    ))
}

/// A message for the outbox, due now.
pub fn new_message(
    kind: &str,
    feed: &Feed,
    run_id: Option<u64>,
    rendered: crate::report::mail::Rendered,
    attachment: Option<String>,
) -> crate::store::Message {
    let now = SystemTime::now();
    let unix = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::store::Message {
        id: 0,
        kind: kind.into(),
        feed: feed.name.clone(),
        run_id,
        to: feed.report_to.clone(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        attachment,
        state: crate::store::Delivery::Queued,
        queued_at: humantime::format_rfc3339_seconds(now).to_string(),
        queued_unix: unix,
        next_attempt: unix,
        attempts: 0,
        last_error: None,
        sent_at: None,
        server_reply: None,
    }
}

/// Records a file that a newer one replaced before its scheduled time: a
/// run in state `superseded`, nothing applied.
pub fn record_superseded(
    config: &Config,
    store: &Store,
    feed: &Feed,
    file_name: &str,
    upload: &str,
    newer: &str,
) -> Result<Run, WorkerError> {
    let now = now_text();
    let mut run = new_run(feed, file_name, false, now.clone());
    run.state = RunState::Superseded;
    run.reason = Some(format!(
        "a newer file ({newer}) arrived before the scheduled time; only the newest is processed"
    ));
    run.finished_at = now;
    run.upload = Some(upload.to_string());
    let recording = Recording::begin(config, feed, store)?;
    recording.assign_id(&mut run)?;
    recording.commit_quietly(&run)?;
    Ok(run)
}

/// Everyone a held run would remove if confirmed now: its kept file
/// diffed against the store as it is (a held undo: the removals it
/// logged), as (ID, name) sorted by ID.
pub fn held_removals(
    config: &Config,
    store: &Store,
    run: &Run,
) -> Result<Vec<(String, String)>, WorkerError> {
    let feed = config
        .feed(&run.feed)
        .ok_or_else(|| WorkerError::FeedGone {
            id: run.run_id.unwrap_or_default(),
            feed: run.feed.clone(),
        })?;
    let removed = match run.undo_of {
        Some(_) => undo::held_undo_removals(store, run)?,
        None => {
            let path = PathBuf::from(run.held_file.clone().unwrap_or_default());
            let input = RunInput::open(&path, feed, &config.data_dir)?;
            if let Some(refused) = input.refused {
                return Err(WorkerError::HeldFile(refused.reason));
            }
            let (scan, index) = scan_and_index(&input.file, feed, Some(store), false)?;
            let scan = scan.map_err(|r| WorkerError::HeldFile(r.reason))?;
            let fingerprint = run_fingerprint(feed, scan.encoding);
            diff_scan(scan, index, fingerprint).removed
        }
    };
    Ok(describe_removed(store, feed, &removed)
        .into_iter()
        .zip(removed.iter())
        .map(|(shown, id)| {
            let name = shown
                .strip_prefix(id.as_str())
                .unwrap_or("")
                .trim()
                .to_string();
            (id.to_string(), name)
        })
        .collect())
}

/// The first of those a held run would remove, as "ID Name" for the
/// report (the name from the fields called `*name*`).
fn describe_removed(store: &Store, feed: &Feed, ids: &[CompactString]) -> Vec<String> {
    let name_fields = name_fields(feed);
    let all_values = store
        .recipients_values(&feed.name, ids)
        .unwrap_or_else(|_| vec![None; ids.len()]);
    ids.iter()
        .zip(all_values)
        .map(|(id, values)| {
            let name: Vec<&str> = name_fields
                .iter()
                .filter_map(|&i| values.as_ref()?.get(i).map(String::as_str))
                .filter(|v| !v.is_empty())
                .collect();
            if name.is_empty() {
                id.to_string()
            } else {
                format!("{id} {}", name.join(" "))
            }
        })
        .collect()
}

/// The fields a person's name is shown from in reports: the first two
/// called `*name*` other than the ID.
fn name_fields(feed: &Feed) -> Vec<usize> {
    feed.fields
        .iter()
        .enumerate()
        .filter(|(i, f)| *i != feed.id_field && f.name.to_ascii_lowercase().contains("name"))
        .map(|(i, _)| i)
        .take(2)
        .collect()
}

/// Counts what `file` would do, writing nothing; returns the stored values
/// it would empty per field.
fn dry_run(
    file: &FileContext,
    diff: Diff,
    store: Option<&Store>,
    run: &mut Run,
) -> Result<Vec<u64>, WorkerError> {
    let mut errors = ErrorCollector::in_memory();
    let applied = match store {
        Some(store) => {
            store.with_read_feed(&file.feed.name, |r| apply_diff(file, diff, r, &mut errors))??
        }
        None => apply_diff(file, diff, &mut ReadFeed::empty(), &mut errors)?,
    };
    run.counts = applied.counts;
    run.state = applied_or_unchanged(&applied.counts);
    run.errors = errors.first;
    Ok(applied.cleared)
}

/// Why the run must be held for the values it empties (see
/// [`judge_clearing`]), counting stored values as they are now.
fn clearing_reasons(
    file: &FileContext,
    cleared: &[u64],
    store: &Store,
) -> Result<Vec<String>, WorkerError> {
    let snapshot = store.snapshot(&file.feed.name)?;
    clearing_reasons_in(file, cleared, &snapshot)
}

fn clearing_reasons_in(
    file: &FileContext,
    cleared: &[u64],
    snapshot: &crate::store::Snapshot,
) -> Result<Vec<String>, WorkerError> {
    let mut filled = |field, limit| snapshot.count_filled(field, limit);
    Ok(judge_clearing(
        file.feed,
        file.header,
        cleared,
        &mut filled,
    )?)
}

fn applied_or_unchanged(counts: &ApplyCounts) -> RunState {
    if counts.changes() == 0 {
        RunState::Unchanged
    } else {
        RunState::Applied
    }
}

#[allow(clippy::too_many_arguments)]
fn hold_run(
    config: &Config,
    file: &FileContext,
    diff: Diff,
    store: &Store,
    run: &mut Run,
    errors_dir: &Path,
    path: &Path,
    mut reasons: Vec<String>,
    t0: Instant,
) -> Result<(), WorkerError> {
    let first_removed: Vec<CompactString> = diff
        .removed
        .iter()
        .take(WOULD_REMOVE_SHOWN)
        .cloned()
        .collect();
    run.would_remove = describe_removed(store, file.feed, &first_removed);
    let mut errors = open_error_report(errors_dir, file)?;
    let (applied, would_change) =
        store.with_read_feed_logged(&file.feed.name, |r| apply_diff(file, diff, r, &mut errors))?;
    let applied = applied?;
    reasons.extend(clearing_reasons(file, &applied.cleared, store)?);
    run.reason = Some(reasons.join("; "));
    run.counts = applied.counts;
    run.state = RunState::Held;
    let recording = Recording::begin(config, file.feed, store)?;
    let id = recording.assign_id(run)?;
    let held_dir = config.feed_dir(&file.feed.name).join("held");
    let held_path = held_dir.join(format!("{id}-{}", run.file));
    copy_held_file(path, &held_dir, &held_path)?;
    run.held_file = Some(held_path.display().to_string());
    run.errors = std::mem::take(&mut errors.first);
    run.error_report = finish_report(errors, run)?;
    let superseded = recording.txn().supersede_held(&file.feed.name, id)?;
    recording
        .txn()
        .put_change_log(&file.feed.name, id, would_change)?;
    finish_timing(run, t0);
    recording.commit(run)?;
    delete_held_files(&superseded);
    Ok(())
}

fn open_error_report(errors_dir: &Path, file: &FileContext) -> Result<ErrorCollector, WorkerError> {
    ErrorCollector::with_report(errors_dir, file.line_word, &file.header.columns).map_err(|e| {
        WorkerError::output(
            format!("cannot write the error report in {}", errors_dir.display()),
            e,
        )
    })
}

fn copy_held_file(from: &Path, dir: &Path, to: &Path) -> Result<(), WorkerError> {
    let fail = |e: std::io::Error| {
        WorkerError::output(format!("cannot keep the held file in {}", dir.display()), e)
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::copy(from, to).map_err(fail)?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    Ok(())
}

/// The run's own report name in `errors/`: its start (UTC), run ID and
/// file name.
fn report_name(run: &Run) -> String {
    let started = humantime::parse_rfc3339(&run.started_at).unwrap_or_else(|_| SystemTime::now());
    crate::report::report_name(started, run.run_id, &run.file)
}

fn finish_report(errors: ErrorCollector, run: &Run) -> Result<Option<String>, WorkerError> {
    errors
        .finish(&report_name(run))
        .map(|p| p.map(|p| p.display().to_string()))
        .map_err(|e| WorkerError::output("cannot write the error report", e))
}

fn delete_held_files(runs: &[Run]) {
    for r in runs {
        if let Some(f) = &r.held_file {
            remove_quietly(Path::new(f));
        }
    }
}

/// How [`apply_run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applying {
    Committed,
    /// Not committed: the run clears more than its feed allows.
    Undone,
}

#[allow(clippy::too_many_arguments)]
fn apply_run(
    config: &Config,
    file: &FileContext,
    diff: Diff,
    store: &Store,
    run: &mut Run,
    errors_dir: &Path,
    fingerprint: u64,
    confirmation: Option<Confirmation>,
    guarded: bool,
    t0: Instant,
) -> Result<Applying, WorkerError> {
    let mut errors = open_error_report(errors_dir, file)?;
    // Taken before the write transaction: the state the writer starts from
    // (the data lock keeps other writers out).
    let snapshot = store.snapshot(&file.feed.name)?;
    let recording = Recording::begin(config, file.feed, store)?;
    let txn = recording.txn();
    // The ID first: the change log is the run's. A confirmed run keeps the
    // held run's ID; an undone transaction gives its reserved ID back.
    let id = match &confirmation {
        Some(c) => {
            // What it would change when held gives way to what it does.
            let id = c.held.run_id.unwrap_or_default();
            webhooks::forget_held_changes(txn, &file.feed.name, id)?;
            id
        }
        None => recording.assign_id(run)?,
    };
    let applied = txn.with_feed(&file.feed.name, Some(id), |w| {
        apply_diff_with_snapshot(file, diff, w, &mut errors, Some(&snapshot))
    })??;
    if guarded && !clearing_reasons_in(file, &applied.cleared, &snapshot)?.is_empty() {
        // Dropping the transaction undoes everything it wrote.
        drop(recording);
        return Ok(Applying::Undone);
    }
    drop(snapshot);
    tracing::debug!("merged the hash list");
    if applied.hashes_changed {
        txn.put_hash_list(&file.feed.name, &applied.hashes)?;
    }
    let counts = applied.counts;
    run.counts = counts;
    run.state = applied_or_unchanged(&counts);
    tracing::debug!("applied changes to the write transaction");
    let (held_file, held_report) = match confirmation {
        Some(c) => {
            run.run_id = c.held.run_id;
            run.confirmed_by = Some(c.by);
            run.confirmed_at = Some(now_text());
            (c.held.held_file, c.held.error_report)
        }
        None => (None, None),
    };
    let superseded = txn.supersede_held(&file.feed.name, id)?;
    txn.set_fingerprint(
        &file.feed.name,
        fingerprint,
        file.feed.mapping_fingerprint(),
    )?;
    run.errors = std::mem::take(&mut errors.first);
    run.error_report = finish_report(errors, run)?;
    finish_timing(run, t0);
    recording.commit(run)?;
    tracing::debug!("committed");
    delete_held_files(&superseded);
    if let Some(f) = held_file {
        remove_quietly(Path::new(&f));
    }
    // The report written when the run was held is this run's; confirmed
    // without row errors, the run has none any more.
    if let (Some(old), None) = (held_report, &run.error_report) {
        remove_quietly(Path::new(&old));
    }
    // Only updates and removals free pages; an initial load frees none.
    // The run is committed: a failure here must not make it fail (and be
    // run again).
    if let Err(e) = store.after_big_run(counts.updated + counts.removed) {
        tracing::warn!(error = %e, "the empty transaction after a big run failed");
    }
    Ok(Applying::Committed)
}
