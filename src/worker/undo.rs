//! Runs that no file started: the undo of an applied run (`runs undo`,
//! the run page's Undo button) and the restore of one removed person
//! (`recipients restore`).
//!
//! Both put back values from the change log through the import core's
//! undo plan, and end like a file's run: one write transaction with the
//! changes, their own change log, the hash list, the run record and its
//! report email. An undo that removes more than the feed's delete
//! threshold is held like a file; confirming it plans it again against
//! the store as it is then.
//!
//! Neither starts while the feed has a held run: a held run is the feed's
//! next change, and an undo committed before it would make the change
//! feed's order differ from the order the changes were made in.

use std::collections::HashSet;
use std::time::Instant;

use crate::config::{Config, Feed};
use crate::import::{
    apply_undo, edit_hash_list, judge_removals, plan_undo, LoggedChange, RowError, StoredRecords,
    UndoError, UndoPlan, Verdict,
};
use crate::report::ErrorCollector;
use crate::store::{DataLock, Run, RunState, Store};

use super::{finish_report, finish_timing, new_run, now_text, Recording, WorkerError};

/// What an undo or a restore puts back, and on whose behalf.
struct UndoRequest<'a> {
    config: &'a Config,
    store: &'a Store,
    feed: &'a Feed,
    /// The run whose changes are put back (for a restore, the run that
    /// removed the person).
    of: u64,
    changes: Vec<LoggedChange>,
    /// The person a restore puts back.
    restored_id: Option<String>,
    by: String,
    /// A held undo being confirmed.
    confirmation: Option<Run>,
}

/// Undoes applied run `run_id` from the command line.
pub fn undo_run(config: &Config, run_id: u64, by: &str) -> Result<Run, WorkerError> {
    let _lock = DataLock::acquire(&config.data_dir)?;
    let store = Store::open(&config.store_path())?;
    undo_run_in(config, &store, run_id, by)
}

/// [`undo_run`] with a store the caller holds open for writing, other
/// writers kept out.
pub fn undo_run_in(
    config: &Config,
    store: &Store,
    run_id: u64,
    by: &str,
) -> Result<Run, WorkerError> {
    let run = match store.get_run(run_id) {
        Err(crate::store::StoreError::UnknownRun(id)) => return Err(WorkerError::UnknownRun(id)),
        other => other?,
    };
    if run.state != RunState::Applied || run.dry_run {
        return Err(WorkerError::NotUndoable {
            id: run_id,
            why: format!(
                "it is {}; only applied runs can be undone",
                run.state.as_str()
            ),
        });
    }
    if let Some(undo) = run.undone_by.filter(|&u| still_undoing(store, u)) {
        return Err(WorkerError::NotUndoable {
            id: run_id,
            why: format!(
                "run {undo} already undid it; undo run {undo} to put its changes back again"
            ),
        });
    }
    let feed = configured_feed(config, &run)?;
    refuse_while_held(store, feed)?;
    let changes = store.run_changes(&feed.name, run_id)?;
    if changes.is_empty() {
        return Err(WorkerError::NotUndoable {
            id: run_id,
            why: "its change log is empty (it was recorded before flagsync kept one)".into(),
        });
    }
    execute(UndoRequest {
        config,
        store,
        feed,
        of: run_id,
        changes,
        restored_id: None,
        by: by.to_string(),
        confirmation: None,
    })
}

/// Whether undo run `id` still stands: held, or applied and not undone
/// in turn (rejected, superseded or undone, the run may be undone again).
fn still_undoing(store: &Store, id: u64) -> bool {
    store.get_run(id).is_ok_and(|u| match u.state {
        RunState::Held => true,
        RunState::Applied => u.undone_by.is_none(),
        _ => false,
    })
}

/// Puts back one person of `feed_name` removed by an applied run whose
/// change log is still kept, from the command line.
pub fn restore_recipient(
    config: &Config,
    feed_name: &str,
    id: &str,
    by: &str,
) -> Result<Run, WorkerError> {
    let _lock = DataLock::acquire(&config.data_dir)?;
    let store = Store::open(&config.store_path())?;
    restore_recipient_in(config, &store, feed_name, id, by)
}

/// [`restore_recipient`] with a store the caller holds open for writing.
pub fn restore_recipient_in(
    config: &Config,
    store: &Store,
    feed_name: &str,
    id: &str,
    by: &str,
) -> Result<Run, WorkerError> {
    let feed = config.feed(feed_name).ok_or_else(|| {
        WorkerError::NothingToRestore(format!("feed '{feed_name}' is not configured"))
    })?;
    if store
        .snapshot(feed_name)?
        .stored_record(id)
        .map_err(internal)?
        .is_some()
    {
        return Err(WorkerError::NothingToRestore(format!(
            "'{id}' is in feed '{feed_name}' now; `flagsync runs undo` puts back a run's changes"
        )));
    }
    let history = store.recipient_history(feed_name, id)?;
    let Some((removal, change)) = history
        .into_iter()
        .next_back()
        .filter(|(_, c)| matches!(c, LoggedChange::Removed { .. }))
    else {
        return Err(WorkerError::NothingToRestore(format!(
            "no removal of '{id}' from feed '{feed_name}' is in the kept history (history_retention); nothing to restore"
        )));
    };
    refuse_while_held(store, feed)?;
    execute(UndoRequest {
        config,
        store,
        feed,
        of: removal.run_id.unwrap_or_default(),
        changes: vec![change],
        restored_id: Some(id.to_string()),
        by: by.to_string(),
        confirmation: None,
    })
}

/// Confirms held undo `held`: planned again against the store as it is
/// now, applied without the guard, under the held run's ID.
pub(super) fn confirm_undo(
    config: &Config,
    store: &Store,
    held: Run,
    by: &str,
) -> Result<Run, WorkerError> {
    let feed = configured_feed(config, &held)?;
    let of = held.undo_of.unwrap_or_default();
    let changes = store.run_changes(&feed.name, of)?;
    execute(UndoRequest {
        config,
        store,
        feed,
        of,
        changes,
        restored_id: held.restored_id.clone(),
        by: by.to_string(),
        confirmation: Some(held),
    })
}

fn configured_feed<'c>(config: &'c Config, run: &Run) -> Result<&'c Feed, WorkerError> {
    config.feed(&run.feed).ok_or_else(|| WorkerError::FeedGone {
        id: run.run_id.unwrap_or_default(),
        feed: run.feed.clone(),
    })
}

fn refuse_while_held(store: &Store, feed: &Feed) -> Result<(), WorkerError> {
    match store.held_runs(&feed.name)?.first() {
        Some(held) => Err(WorkerError::FeedHasHeldRun {
            feed: feed.name.clone(),
            held: held.run_id.unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

fn internal(e: String) -> WorkerError {
    crate::store::StoreError::Damaged(e).into()
}

/// Plans the undo against the store, then holds it (too many removals) or
/// applies it.
fn execute(request: UndoRequest) -> Result<Run, WorkerError> {
    let t0 = Instant::now();
    let UndoRequest {
        config,
        store,
        feed,
        of,
        changes,
        restored_id,
        by,
        confirmation,
    } = request;
    let index = store.feed_index(&feed.name)?;
    if index
        .mapping
        .is_some_and(|m| m != feed.mapping_fingerprint())
    {
        // Stored records are laid out by the old mapping until a file runs.
        let why = "the feed's field mapping changed since its last run; import a file with the new mapping first".to_string();
        return Err(match restored_id {
            Some(_) => WorkerError::NothingToRestore(why),
            None => WorkerError::NotUndoable { id: of, why },
        });
    }
    let ids: HashSet<&str> = changes.iter().map(LoggedChange::id).collect();
    let changed_later = store.changed_after(&feed.name, of, &ids)?;
    let plan = {
        let snapshot = store.snapshot(&feed.name)?;
        plan_undo(
            feed,
            of,
            &changes,
            |id| changed_later.get(id).copied(),
            |id| snapshot.stored_record(id),
        )
        .map_err(|e| match e {
            UndoError::Store(e) => internal(e),
            UndoError::Damaged(e) => crate::store::StoreError::Damaged(e.to_string()).into(),
        })?
    };
    let started_at = confirmation
        .as_ref()
        .map_or_else(now_text, |held| held.started_at.clone());
    let file = match &restored_id {
        Some(id) => format!("restore of {id}"),
        None => format!("undo of run {of}"),
    };
    let mut run = new_run(feed, &file, false, started_at);
    run.undo_of = Some(of);
    run.restored_id = restored_id;
    run.requested_by = Some(by.clone());
    run.conflicts = plan.conflicts.len() as u64;
    let verdict = match confirmation {
        Some(_) => Verdict::Proceed,
        None => judge_removals(
            plan.removals(),
            index.hashes.len() as u64,
            feed.delete_threshold,
        ),
    };
    let recording = Recording::begin(config, feed, store)?;
    let mut errors = conflict_report(config, feed, &plan)?;
    run.errors = std::mem::take(&mut errors.first);
    match verdict {
        Verdict::Hold { reason } => {
            let id = recording.assign_id(&mut run)?;
            let (applied, would_change) =
                store.with_read_feed_logged(&feed.name, |r| apply_undo(feed, id, &plan, r))?;
            run.counts = applied?.counts;
            run.state = RunState::Held;
            let first_removed: Vec<compact_str::CompactString> = plan
                .targets
                .iter()
                .filter(|(_, t)| *t == crate::import::UndoTarget::Remove)
                .take(super::WOULD_REMOVE_SHOWN)
                .map(|(id, _)| id.clone())
                .collect();
            run.would_remove = super::describe_removed(store, feed, &first_removed);
            run.reason = Some(format!("{reason}; confirm to apply the undo"));
            run.error_report = finish_report(errors, &run)?;
            recording
                .txn()
                .put_change_log(&feed.name, id, would_change)?;
            finish_timing(&mut run, t0);
            recording.commit(&run)?;
        }
        Verdict::Proceed => {
            let id = match &confirmation {
                Some(held) => {
                    let id = held.run_id.unwrap_or_default();
                    super::webhooks::forget_held_changes(recording.txn(), &feed.name, id)?;
                    run.run_id = Some(id);
                    run.confirmed_by = Some(by.clone());
                    run.confirmed_at = Some(now_text());
                    id
                }
                None => recording.assign_id(&mut run)?,
            };
            let applied = recording
                .txn()
                .with_feed(&feed.name, Some(id), |w| apply_undo(feed, id, &plan, w))??;
            if !applied.hashes.is_empty() {
                let hashes = edit_hash_list(index.hashes, &applied.hashes);
                recording.txn().put_hash_list(&feed.name, &hashes)?;
            }
            run.counts = applied.counts;
            run.state = if applied.counts.changes() == 0 {
                RunState::Unchanged
            } else {
                RunState::Applied
            };
            if run.restored_id.is_none() && run.state == RunState::Applied {
                mark_undone(store, &recording, of, id)?;
            }
            run.error_report = finish_report(errors, &run)?;
            finish_timing(&mut run, t0);
            recording.commit(&run)?;
        }
    }
    if let Some(report) = confirmation.and_then(|held| held.error_report) {
        if run.error_report.as_deref() != Some(report.as_str()) {
            super::remove_quietly(std::path::Path::new(&report));
        }
    }
    tracing::info!(
        feed = %feed.name,
        undo_of = of,
        outcome = run.state.as_str(),
        conflicts = run.conflicts,
        "undo finished"
    );
    Ok(run)
}

/// The people a held undo would remove, sorted by ID: those its would-be
/// change log removes.
pub(super) fn held_undo_removals(
    store: &Store,
    run: &Run,
) -> Result<Vec<compact_str::CompactString>, WorkerError> {
    let changes = store.run_changes(&run.feed, run.run_id.unwrap_or_default())?;
    let mut removed: Vec<compact_str::CompactString> = changes
        .iter()
        .filter(|c| matches!(c, LoggedChange::Removed { .. }))
        .map(|c| c.id().into())
        .collect();
    removed.sort_unstable();
    Ok(removed)
}

/// The undone run's record names its undo (written with the undo).
fn mark_undone(
    store: &Store,
    recording: &Recording,
    of: u64,
    undo: u64,
) -> Result<(), WorkerError> {
    let mut undone = store.get_run(of)?;
    undone.undone_by = Some(undo);
    recording.txn().put_run(&undone)?;
    Ok(())
}

/// The run's report: one row per person left as is, with why.
fn conflict_report(
    config: &Config,
    feed: &Feed,
    plan: &UndoPlan,
) -> Result<ErrorCollector, WorkerError> {
    use crate::import::ErrorSink;
    let dir = config.feed_dir(&feed.name).join("errors");
    let fail = |e| WorkerError::Output {
        what: format!("cannot write the error report in {}", dir.display()),
        source: e,
    };
    let mut errors =
        ErrorCollector::with_report(&dir, "line", &["id".to_string()]).map_err(fail)?;
    for c in &plan.conflicts {
        let error = RowError {
            line: 0,
            id: Some(c.id.clone()),
            reasons: vec![c.reason.clone()],
            warning: false,
            cells: vec![c.id.clone()],
        };
        errors.row_error(&error).map_err(fail)?;
    }
    Ok(errors)
}
