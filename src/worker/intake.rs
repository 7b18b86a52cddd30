//! The server's intake: takes arrived files one at a time, in arrival
//! order, runs each, archives it, and keeps the folders within retention.
//!
//! A file's path through the intake:
//! 1. `upload/<name>` arrives (closed after writing, or renamed there).
//! 2. Claim: hard-linked as `processing/<stamp>-<name>`. The upload keeps
//!    its name for a few seconds ([`LINGER`]) so that clients that `stat`
//!    or `setstat` right after closing (paramiko, WinSCP) find it; a link
//!    count above one marks it as claimed.
//! 3. Run: the run record names the claim (`Run::upload`) and is committed
//!    with the run's changes.
//! 4. Archive: `processing/<claim>` moves to `archive/<claim>`.
//!
//! After a crash, a claim still in `processing/` whose run is recorded is
//! archived; one without a run is run again (the store is as before it).
//! Unclaimed files in `upload/` are taken oldest first.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, Feed};
use crate::layout::{is_pickable, remove_stale_temps, sync_dir, FeedFolders};
use crate::store::Store;

use super::{import_upload, WorkerError};

/// How long a claimed upload keeps its name in `upload/`.
const LINGER: Duration = Duration::from_secs(3);

/// Work for the intake thread.
pub enum Job {
    Arrival { feed: String, name: String },
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
    pub fn arrived(&self, feed: &str, name: &str) {
        let _ = self.tx.send(Job::Arrival {
            feed: feed.to_string(),
            name: name.to_string(),
        });
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Job::Stop);
    }
}

/// What the intake and the control socket share: the open store and the
/// gate every writer passes (one run at a time in this process).
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub gate: Mutex<()>,
}

impl Engine {
    pub fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
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
            };
            intake.recover();
            intake.serve(rx);
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

fn arrival_stamp(now: SystemTime) -> String {
    let text = humantime::format_rfc3339_millis(now).to_string();
    // 2026-11-25T13:45:01.123Z → 20261125T134501.123Z: sorts by time and
    // is a valid file name everywhere.
    text.replace(['-', ':'], "")
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
                .map(|l| l.due.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(Job::Arrival { feed, name }) => self.take(&feed, &name),
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.release_lingering(false);
        }
        self.release_lingering(true);
    }

    /// Finishes claims left in `processing/`, then takes waiting uploads,
    /// oldest first.
    fn recover(&mut self) {
        let recorded: HashSet<String> = match self.engine.store.list_runs(None) {
            Ok(runs) => runs.into_iter().filter_map(|r| r.upload).collect(),
            Err(e) => {
                tracing::error!(error = %e, "the runs cannot be read; uploads are not recovered");
                return;
            }
        };
        let feeds: Vec<Feed> = self.config().feeds.clone();
        let mut waiting = Vec::new();
        for feed in &feeds {
            let folders = self.folders(&feed.name);
            if let Err(e) = folders.create_visible() {
                tracing::error!(feed = %feed.name, error = %e, "the feed's folders cannot be created");
            }
            remove_stale_temps(&folders.upload());
            for claim in sorted_names(&folders.processing()) {
                if recorded.contains(&claim) {
                    self.archive(&folders, &claim);
                } else {
                    tracing::info!(feed = %feed.name, claim, "running again a file whose run was interrupted");
                    self.run_claim(feed, &claim);
                }
            }
            waiting.extend(waiting_uploads(&folders.upload(), &feed.name));
            self.sweep(&folders);
        }
        waiting.sort();
        for (_, feed, name) in waiting {
            self.take(&feed, &name);
        }
    }

    fn folders(&self, feed: &str) -> FeedFolders {
        FeedFolders::new(self.config().feed_dir(feed))
    }

    /// Steps 2-4 for one arrival.
    fn take(&mut self, feed_name: &str, name: &str) {
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
        let folders = self.folders(feed_name);
        let upload = folders.upload().join(name);
        let meta = match std::fs::symlink_metadata(&upload) {
            Ok(m) if m.file_type().is_file() => m,
            // Renamed or removed before its turn, or already archived.
            _ => return,
        };
        if meta.nlink() > 1 {
            return; // Already claimed.
        }
        let claim = format!("{}-{name}", arrival_stamp(SystemTime::now()));
        let processing = folders.processing();
        let linked = std::fs::create_dir_all(&processing)
            .and_then(|_| std::fs::hard_link(&upload, processing.join(&claim)));
        if let Err(e) = linked {
            tracing::error!(feed = feed_name, file = name, error = %e, "the upload cannot be claimed; it stays in upload/");
            return;
        }
        sync_dir(&processing);
        self.lingering.push(Lingering {
            path: upload,
            dev: meta.dev(),
            ino: meta.ino(),
            due: Instant::now() + LINGER,
        });
        self.run_claim(&feed, &claim);
    }

    fn run_claim(&mut self, feed: &Feed, claim: &str) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let folders = self.folders(&feed.name);
        let path = folders.processing().join(claim);
        let name = claim.split_once('-').map_or(claim, |(_, n)| n);
        let result = {
            let _gate = self.engine.exclusive();
            import_upload(self.config(), &self.engine.store, feed, &path, name, claim)
        };
        match result {
            Ok(run) => tracing::info!(
                feed = %feed.name,
                file = name,
                run_id = run.run_id.unwrap_or_default(),
                state = run.state.as_str(),
                "run recorded"
            ),
            Err(WorkerError::Store(e)) => {
                // Kept in processing/: it is run again at the next start.
                tracing::error!(feed = %feed.name, file = name, error = %e, "the run could not be recorded; the file is kept and tried again at the next start");
                return;
            }
            Err(e) => {
                tracing::error!(feed = %feed.name, file = name, error = %e, "the run failed; the file is archived")
            }
        }
        self.archive(&folders, claim);
        self.sweep(&folders);
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
fn waiting_uploads(dir: &Path, feed: &str) -> Vec<(SystemTime, String, String)> {
    let mut out = Vec::new();
    for name in sorted_names(dir) {
        if !is_pickable(&name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_stamps_sort_by_time_and_are_plain_names() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_078_301_123);
        let s = arrival_stamp(t);
        assert_eq!(s, "20251125T134501.123Z");
        assert!(!s.contains('-'));
        let later = arrival_stamp(t + Duration::from_millis(1));
        assert!(later > s);
    }
}
