//! The server's intake: takes arrived files one at a time, in arrival
//! order, runs each, archives it, and keeps the folders within retention.
//!
//! A file's path through the intake:
//! 1. `upload/<name>` arrives (closed after writing, or renamed there).
//! 2. Claim, by the sFTP server the moment it arrives: hard-linked as
//!    `processing/<stamp>-<name>` (a link count above one marks an upload
//!    as claimed), so that a second upload of the same name cannot take its
//!    place. The upload keeps its name until a few seconds ([`LINGER`])
//!    after its run, for clients that `stat` or `setstat` right after
//!    closing (paramiko, WinSCP).
//! 3. Run: the run record names the claim (`Run::upload`) and is committed
//!    with the run's changes.
//! 4. Archive: `processing/<claim>` moves to `archive/<claim>`.
//!
//! After a crash, a claim still in `processing/` whose run is recorded is
//! archived; one without a run is run again (the store is as before it).
//! Unclaimed files in `upload/` are taken oldest first.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, Feed, Schedule};
use crate::layout::{
    claim_upload, claimed_file_name, is_pickable, remove_stale_temps, sync_dir, FeedFolders,
};
use crate::store::{FeedState, RunState, StoreError};

use super::engine::Engine;
use super::{import_upload, WorkerError};

/// How long a claimed upload keeps its name in `upload/`.
const LINGER: Duration = Duration::from_secs(3);
/// How often schedules and overdue feeds are looked at.
const TICK: Duration = Duration::from_secs(1);
/// A file whose run met a store or disk error is tried again after this,
/// then twice as long each time, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// An error of the disk or the store's handle, which may pass: the file
/// is tried again.
fn is_transient(e: &WorkerError) -> bool {
    match e {
        WorkerError::Output { .. } => true,
        WorkerError::Store(s) => s.is_transient(),
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Done,
    /// Kept in `processing/`, to be tried again.
    Retry,
}
/// How often held runs are looked at for reminders, at most (more often
/// when `held_reminder` is short).
const REMINDER_CHECK: Duration = Duration::from_secs(30);
/// Held runs are looked for among this many newest runs (a newer file of
/// the feed supersedes a held run, so a held run is always recent).
const RECENT_RUNS_CHECKED: usize = 200;

/// Work for the intake thread.
pub enum Job {
    Arrival {
        feed: String,
        name: String,
        claim: String,
    },
    Stop,
}

/// Sends jobs to the intake thread.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: Sender<Job>,
    /// Set at shutdown: files not yet started wait for the next start.
    stopping: Arc<AtomicBool>,
}

impl IntakeHandle {
    /// `upload/<name>` arrived and is claimed as `processing/<claim>`.
    pub fn arrived(&self, feed: &str, name: &str, claim: &str) {
        crate::metrics::add(&crate::metrics::INTAKE_QUEUED, 1);
        let _ = self.tx.send(Job::Arrival {
            feed: feed.to_string(),
            name: name.to_string(),
            claim: claim.to_string(),
        });
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Job::Stop);
    }
}

/// A claimed upload's name, to be removed from `upload/` once [`LINGER`]
/// has passed, if it is still the same file.
struct Lingering {
    path: PathBuf,
    dev: u64,
    ino: u64,
    due: Instant,
}

pub struct Intake {
    engine: Arc<Engine>,
    lingering: Vec<Lingering>,
    stopping: Arc<AtomicBool>,
    last_reminder_check: Instant,
    /// (feed, claim) of files waiting for the store to work again, oldest
    /// first; the first is tried at `retry_at`.
    stalled: std::collections::VecDeque<(String, String)>,
    retry_at: Instant,
    retry_delay: Duration,
}

/// Starts the intake thread; it first finishes what a previous process
/// left, then takes arrivals until [`IntakeHandle::stop`].
pub fn start(engine: Arc<Engine>) -> (IntakeHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("intake".into())
        .spawn(move || {
            let mut intake = Intake {
                engine,
                lingering: Vec::new(),
                stopping: flag,
                last_reminder_check: Instant::now(),
                stalled: Default::default(),
                retry_at: Instant::now(),
                retry_delay: RETRY_FIRST,
            };
            intake.engine.intake_alive.store(true, Ordering::SeqCst);
            intake.recover();
            intake.serve(rx);
            intake.engine.intake_alive.store(false, Ordering::SeqCst);
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the intake thread cannot start");
            std::thread::spawn(|| ())
        }
    };
    (IntakeHandle { tx, stopping }, thread)
}

impl Intake {
    fn config(&self) -> &Config {
        &self.engine.config
    }

    fn serve(&mut self, rx: Receiver<Job>) {
        loop {
            let wait = self
                .lingering
                .iter()
                .map(|l| l.due)
                .chain((!self.stalled.is_empty()).then_some(self.retry_at))
                .map(|due| due.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(TICK)
                .min(TICK);
            match rx.recv_timeout(wait) {
                Ok(Job::Arrival { feed, claim, .. }) => {
                    self.take(&feed, &claim);
                    crate::metrics::add(&crate::metrics::INTAKE_QUEUED, -1);
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.release_lingering(false);
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.retry_stalled();
            self.tick();
        }
        self.release_lingering(true);
    }

    /// Schedules that are due, feeds that went quiet, held runs waiting
    /// too long. Its state is in the store (`feed_state`, `Run::reminded_at`).
    fn tick(&mut self) {
        let now = jiff::Timestamp::now();
        let feeds = self.config().feeds.clone();
        for feed in &feeds {
            if let Err(e) = self.tick_feed(feed, now) {
                tracing::error!(feed = %feed.name, error = %e, "the scheduler cannot read or write the store");
            }
        }
        let every = REMINDER_CHECK.min(self.config().held_reminder / 2);
        if self.last_reminder_check.elapsed() >= every {
            self.last_reminder_check = Instant::now();
            if let Err(e) = self.remind_held_runs() {
                tracing::error!(error = %e, "held runs cannot be checked for reminders");
            }
        }
    }

    fn feed_state_or_new(
        &self,
        feed: &Feed,
        now: jiff::Timestamp,
    ) -> Result<FeedState, StoreError> {
        if let Some(state) = self.engine.store.feed_state(&feed.name)? {
            return Ok(state);
        }
        // A feed seen for the first time: its silence starts now, and a
        // slot that passed before it existed is not run.
        let state = FeedState {
            last_arrival: now.as_second().max(0) as u64,
            overdue_alerted: false,
            file_seen: false,
            schedule_done: self
                .latest_slot(feed, now)
                .map_or(0, |t| t.as_second().max(0) as u64),
        };
        self.engine.store.put_feed_state(&feed.name, &state)?;
        Ok(state)
    }

    fn latest_slot(&self, feed: &Feed, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        match feed.schedule {
            Schedule::OnArrival => None,
            Schedule::Daily {
                hour,
                minute,
                second,
            } => Some(super::schedule::latest_slot(
                now,
                &self.engine.config.time_zone(),
                hour,
                minute,
                second,
            )),
        }
    }

    fn tick_feed(&mut self, feed: &Feed, now: jiff::Timestamp) -> Result<(), StoreError> {
        let mut state = self.feed_state_or_new(feed, now)?;
        let now_s = now.as_second().max(0) as u64;
        if let Some(slot) = self.latest_slot(feed, now) {
            let slot_s = slot.as_second().max(0) as u64;
            if slot_s > state.schedule_done {
                tracing::info!(feed = %feed.name, "scheduled time: processing the newest waiting file");
                self.process_scheduled(feed);
                state = self.feed_state_or_new(feed, now)?;
                state.schedule_done = slot_s;
                self.engine.store.put_feed_state(&feed.name, &state)?;
            }
        }
        let quiet = now_s.saturating_sub(state.last_arrival);
        if !state.overdue_alerted && quiet > feed.expect_every.as_secs() {
            tracing::warn!(feed = %feed.name, "overdue: no file within expect_every");
            state.overdue_alerted = true;
            self.alert_overdue(feed, &state);
            self.engine.store.put_feed_state(&feed.name, &state)?;
        }
        Ok(())
    }

    fn alert_overdue(&self, feed: &Feed, state: &FeedState) {
        if self.config().smtp.is_none() || feed.report_to.is_empty() {
            return;
        }
        let since = jiff::Timestamp::from_second(state.last_arrival as i64)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let every = humantime::format_duration(feed.expect_every).to_string();
        let rendered = crate::report::mail::render_overdue(&feed.name, &since, &every);
        let message = super::new_message("overdue", feed, None, rendered, None);
        if let Err(e) = self.engine.store.queue_message(message) {
            tracing::error!(feed = %feed.name, error = %e, "the overdue alert cannot be queued");
        }
    }

    /// One reminder per held run older than `held_reminder`.
    fn remind_held_runs(&mut self) -> Result<(), StoreError> {
        let now = SystemTime::now();
        for mut run in self.engine.store.recent_runs(RECENT_RUNS_CHECKED)? {
            if run.state != RunState::Held || run.reminded_at.is_some() {
                continue;
            }
            let held_at = humantime::parse_rfc3339_weak(&run.finished_at)
                .or_else(|_| humantime::parse_rfc3339_weak(&run.started_at))
                .unwrap_or(now);
            if now.duration_since(held_at).unwrap_or_default() < self.config().held_reminder {
                continue;
            }
            let Some(feed) = self.config().feed(&run.feed).cloned() else {
                continue;
            };
            run.reminded_at = Some(humantime::format_rfc3339_seconds(now).to_string());
            let _gate = self.engine.exclusive();
            // Re-read under the gate: a confirm may have happened meanwhile.
            let Some(id) = run.run_id else { continue };
            match self.engine.store.get_run(id) {
                Ok(current) if current.state == RunState::Held && current.reminded_at.is_none() => {
                }
                _ => continue,
            }
            self.engine.store.update_run(&run)?;
            if self.config().smtp.is_some() && !feed.report_to.is_empty() {
                let link = self
                    .config()
                    .web_public_url
                    .as_ref()
                    .map(|u| format!("{}/runs/{id}", u.trim_end_matches('/')));
                let rendered = crate::report::mail::render_reminder(&run, link);
                self.engine.store.queue_message(super::new_message(
                    "reminder",
                    &feed,
                    Some(id),
                    rendered,
                    None,
                ))?;
            }
            tracing::info!(feed = %feed.name, run_id = id, "reminder: the held run is still waiting");
        }
        Ok(())
    }

    /// At a `daily` feed's time: the newest waiting file is run, the older
    /// ones are recorded as superseded, all in arrival order.
    fn process_scheduled(&mut self, feed: &Feed) {
        let folders = self.folders(&feed.name);
        let suffixes = &self.config().sftp.temporary_suffixes;
        let mut unclaimed = waiting_uploads(&folders.upload(), &feed.name, suffixes);
        unclaimed.sort();
        for (_, _, name) in unclaimed {
            self.claim(&folders, &name);
        }
        // Claims are named by arrival time: sorted is arrival order.
        let mut claims = sorted_names(&folders.processing());
        let Some(newest) = claims.pop() else {
            return;
        };
        let newest_name = claimed_file_name(&newest).to_string();
        for claim in &claims {
            let name = claimed_file_name(claim);
            let recorded = {
                let _gate = self.engine.exclusive();
                super::record_superseded(
                    &self.engine.config,
                    &self.engine.store,
                    feed,
                    name,
                    claim,
                    &newest_name,
                )
            };
            match recorded {
                Ok(run) => {
                    tracing::info!(feed = %feed.name, file = %name, run_id = run.run_id.unwrap_or_default(), "superseded by a newer file")
                }
                Err(e) => {
                    tracing::error!(feed = %feed.name, file = %name, error = %e, "the superseded file cannot be recorded");
                    continue;
                }
            }
            self.archive(&folders, claim);
            self.linger(&folders, claim);
        }
        self.run_claim(feed, &newest);
    }

    /// Notes that a file arrived: the feed is not quiet any more.
    fn note_arrival(&self, feed: &Feed) {
        let now = jiff::Timestamp::now();
        let result = self.feed_state_or_new(feed, now).and_then(|mut state| {
            state.last_arrival = now.as_second().max(0) as u64;
            state.overdue_alerted = false;
            state.file_seen = true;
            self.engine.store.put_feed_state(&feed.name, &state)
        });
        if let Err(e) = result {
            tracing::error!(feed = %feed.name, error = %e, "the arrival cannot be recorded");
        }
    }

    /// Finishes claims left in `processing/`, then takes waiting uploads,
    /// oldest first.
    fn recover(&mut self) {
        if let Err(e) = self.engine.store.run_of_upload("") {
            tracing::error!(error = %e, "the runs cannot be read; uploads are not recovered");
            return;
        }
        let feeds: Vec<Feed> = self.config().feeds.clone();
        let mut waiting = Vec::new();
        for feed in &feeds {
            let folders = self.folders(&feed.name);
            if let Err(e) = folders.create_visible() {
                tracing::error!(feed = %feed.name, error = %e, "the feed's folders cannot be created");
            }
            remove_stale_temps(&folders.upload());
            for claim in sorted_names(&folders.processing()) {
                if self.already_recorded(&claim) {
                    self.archive(&folders, &claim);
                    self.linger(&folders, &claim);
                } else if feed.schedule == Schedule::OnArrival {
                    tracing::info!(feed = %feed.name, claim, "running a file that arrived before the last stop");
                    self.run_claim(feed, &claim);
                }
            }
            if feed.schedule == Schedule::OnArrival {
                let suffixes = &self.config().sftp.temporary_suffixes;
                waiting.extend(waiting_uploads(&folders.upload(), &feed.name, suffixes));
            }
            self.sweep(&folders);
        }
        self.prune_history();
        waiting.sort();
        for (_, feed_name, name) in waiting {
            let Some(feed) = self.config().feed(&feed_name).cloned() else {
                continue;
            };
            let folders = self.folders(&feed_name);
            if let Some(claim) = self.claim(&folders, &name) {
                self.take(&feed.name, &claim);
            }
        }
    }

    fn folders(&self, feed: &str) -> FeedFolders {
        FeedFolders::new(self.config().feed_dir(feed))
    }

    /// Steps 3-4 for one arrival, claimed when it arrived.
    fn take(&mut self, feed_name: &str, claim: &str) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(feed) = self.config().feed(feed_name).cloned() else {
            tracing::warn!(
                feed = feed_name,
                "an upload for a feed that is not configured is left alone"
            );
            return;
        };
        self.note_arrival(&feed);
        if feed.schedule != Schedule::OnArrival {
            // It waits (claimed) for the feed's time (see `tick`).
            return;
        }
        self.run_claim(&feed, claim);
    }

    /// Claims an upload that arrived while no server was watching.
    fn claim(&mut self, folders: &FeedFolders, name: &str) -> Option<String> {
        match claim_upload(folders, name) {
            Ok(claim) => claim,
            Err(e) => {
                tracing::error!(file = name, error = %e, "the upload cannot be claimed; it stays in upload/");
                None
            }
        }
    }

    /// The upload keeps its name for [`LINGER`] after its run, then goes,
    /// unless a new file has taken the name.
    fn linger(&mut self, folders: &FeedFolders, claim: &str) {
        let Ok(meta) = std::fs::metadata(folders.archive().join(claim))
            .or_else(|_| std::fs::metadata(folders.processing().join(claim)))
        else {
            return;
        };
        self.lingering.push(Lingering {
            path: folders.upload().join(claimed_file_name(claim)),
            dev: meta.dev(),
            ino: meta.ino(),
            due: Instant::now() + LINGER,
        });
    }

    /// Runs a claimed file, unless earlier files wait for the store to
    /// work again (then it waits behind them: a feed's files apply in the
    /// order they came).
    fn run_claim(&mut self, feed: &Feed, claim: &str) {
        let entry = (feed.name.clone(), claim.to_string());
        if self.stalled.contains(&entry) {
            return;
        }
        if !self.stalled.is_empty() {
            self.stalled.push_back(entry);
            return;
        }
        if self.attempt_claim(feed, claim) == Attempt::Retry {
            self.stalled.push_back(entry);
            self.retry_delay = RETRY_FIRST;
            self.retry_at = Instant::now() + self.retry_delay;
        }
    }

    /// Tries the stalled files again, in order, once their time has come.
    fn retry_stalled(&mut self) {
        if self.stalled.is_empty() || Instant::now() < self.retry_at {
            return;
        }
        // redb notices a past I/O error only when a write begins: reopen
        // the store first if it refuses its handle.
        if let Err(e) = self.engine.store.recover_if_failed() {
            tracing::warn!(error = %e, "the store is not writable yet");
            self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            self.retry_at = Instant::now() + self.retry_delay;
            return;
        }
        while let Some((feed_name, claim)) = self.stalled.front().cloned() {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let Some(feed) = self.config().feed(&feed_name).cloned() else {
                self.stalled.pop_front();
                continue;
            };
            let folders = self.folders(&feed_name);
            if !folders.processing().join(&claim).exists() {
                // Archived meanwhile (superseded at a daily slot, say).
                self.stalled.pop_front();
                continue;
            }
            if self.already_recorded(&claim) {
                // The run committed, and what failed came after it.
                self.archive(&folders, &claim);
                self.linger(&folders, &claim);
                self.stalled.pop_front();
                continue;
            }
            if self.attempt_claim(&feed, &claim) == Attempt::Retry {
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
                self.retry_at = Instant::now() + self.retry_delay;
                return;
            }
            self.stalled.pop_front();
        }
    }

    /// Whether a run names this claim (each file runs once).
    fn already_recorded(&self, claim: &str) -> bool {
        self.engine
            .store
            .run_of_upload(claim)
            .is_ok_and(|run| run.is_some())
    }

    fn attempt_claim(&mut self, feed: &Feed, claim: &str) -> Attempt {
        if self.stopping.load(Ordering::SeqCst) {
            return Attempt::Done;
        }
        let folders = self.folders(&feed.name);
        let path = folders.processing().join(claim);
        let name = claimed_file_name(claim);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _gate = self.engine.exclusive();
            import_upload(self.config(), &self.engine.store, feed, &path, name, claim)
        }))
        .unwrap_or_else(|panic| {
            Err(WorkerError::Internal(format!(
                "internal error: {}; `flagsync check` tells whether the store is damaged",
                crate::store::panic_text(panic.as_ref())
            )))
        });
        match result {
            Ok(run) => tracing::info!(
                feed = %feed.name,
                file = name,
                run_id = run.run_id.unwrap_or_default(),
                state = run.state.as_str(),
                "run recorded"
            ),
            Err(e) if is_transient(&e) => {
                // The disk or the store's handle failed (a full disk, say),
                // not the file: it stays in processing/ and is tried again.
                tracing::error!(feed = %feed.name, file = name, error = %e, "the run could not be completed; the file is kept and tried again in a moment");
                return Attempt::Retry;
            }
            Err(e @ WorkerError::Store(_)) => {
                // Damage or a bug in the store: retrying cannot help, and
                // archiving would lose the file from view. It stays in
                // processing/ and runs at the next start (after a restore).
                tracing::error!(feed = %feed.name, file = name, error = %e, "the run could not be recorded; the file is kept and tried again at the next start");
                return Attempt::Done;
            }
            Err(WorkerError::Internal(reason)) => {
                // A bug met on this file: archived with a failed run, so
                // that one file cannot stop the server at every start.
                tracing::error!(feed = %feed.name, file = name, error = %reason, "the run stopped on an internal error; the file is archived");
                let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _gate = self.engine.exclusive();
                    super::record_broken_upload(
                        self.config(),
                        &self.engine.store,
                        feed,
                        name,
                        claim,
                        reason,
                    )
                }));
                if !matches!(recorded, Ok(Ok(_))) {
                    tracing::error!(feed = %feed.name, file = name, "the failed run cannot be recorded either");
                }
            }
            Err(e) => {
                tracing::error!(feed = %feed.name, file = name, error = %e, "the run failed; the file is archived")
            }
        }
        self.archive(&folders, claim);
        self.linger(&folders, claim);
        self.sweep(&folders);
        self.prune_history();
        Attempt::Done
    }

    /// Keeps the store's history bounded like the folders: past the
    /// retention a run keeps only its summary and delivered emails go;
    /// past `history_retention` the run record and its change log go too.
    fn prune_history(&self) {
        let now = SystemTime::now();
        let unix = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        };
        let summary_before = unix(now.checked_sub(self.config().retention));
        let delete_before = unix(now.checked_sub(self.config().history_retention));
        match self
            .engine
            .store
            .prune_history(summary_before, delete_before)
        {
            Ok(p) if p != Default::default() => tracing::info!(
                summarised = p.summarised,
                deleted = p.deleted,
                emails = p.messages,
                "history pruned"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the history could not be pruned; it is tried again after the next run")
            }
        }
    }

    fn archive(&self, folders: &FeedFolders, claim: &str) {
        let archive = folders.archive();
        let moved = std::fs::create_dir_all(&archive)
            .and_then(|_| std::fs::rename(folders.processing().join(claim), archive.join(claim)));
        match moved {
            Ok(()) => {
                sync_dir(&archive);
                sync_dir(&folders.processing());
            }
            Err(e) => tracing::error!(claim, error = %e, "the processed file cannot be archived"),
        }
    }

    /// Removes claimed uploads from `upload/` once due (or all, at stop),
    /// unless a new file has taken the name meanwhile.
    fn release_lingering(&mut self, all: bool) {
        let now = Instant::now();
        self.lingering.retain(|l| {
            if !all && l.due > now {
                return true;
            }
            if let Ok(m) = std::fs::symlink_metadata(&l.path) {
                if m.dev() == l.dev && m.ino() == l.ino {
                    let _ = std::fs::remove_file(&l.path);
                }
            }
            false
        });
    }

    /// Deletes archived files and error reports older than the retention.
    fn sweep(&self, folders: &FeedFolders) {
        let Some(cutoff) = SystemTime::now().checked_sub(self.config().retention) else {
            return;
        };
        for dir in [folders.archive(), folders.errors()] {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in read.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff);
                if old {
                    if let Err(e) = std::fs::remove_file(entry.path()) {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not delete an expired file");
                    }
                }
            }
        }
    }
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Pickable, unclaimed uploads as (modified, feed, name).
fn waiting_uploads(
    dir: &Path,
    feed: &str,
    temporary_suffixes: &[String],
) -> Vec<(SystemTime, String, String)> {
    let mut out = Vec::new();
    for name in sorted_names(dir) {
        if !is_pickable(&name, temporary_suffixes) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(dir.join(&name)) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        if meta.nlink() > 1 {
            // Claimed and processed by an earlier process: only its
            // lingering name is left.
            let _ = std::fs::remove_file(dir.join(&name));
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push((modified, feed.to_string(), name));
    }
    out
}
