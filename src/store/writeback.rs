//! Starts the kernel's write-back of the store file while a run writes it.
//!
//! redb writes a big run's pages into the page cache as it goes and forces
//! them to disk only at its `fdatasync`s (when the file grows, and at the
//! commit). With plenty of memory the kernel starts writing dirty pages on
//! its own only past `dirty_background_ratio`, so every byte of a 1M-row
//! initial load (400 MB) waited for those syncs, on the one writer thread,
//! while the other core idled. Asking the kernel to start write-back every
//! few hundred milliseconds lets the disk work while the run computes.
//!
//! It changes only *when* pages reach the disk, never what or in which
//! order the commit makes durable: redb's own syncs still decide that.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often write-back is started while a run is open.
const INTERVAL: Duration = Duration::from_millis(200);

/// Starts write-back of one file every [`INTERVAL`] until dropped.
pub(super) struct Writeback {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Starts the helper for `path`; `None` when the file cannot be opened
    /// (the run goes on without it: this is only about speed).
    pub(super) fn start(path: &Path) -> Option<Writeback> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let file = std::fs::File::open(path).ok()?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-writeback".into())
            .spawn(move || loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => start_writeback(&file),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok()?;
        Some(Writeback {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its arguments; the descriptor is
    // open for as long as `file` lives. WRITE alone does not wait for the
    // disk; an error (say, EIO) is redb's to see at its own sync.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File) {}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_helper_runs_until_dropped_and_is_joined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut file = std::fs::File::create(&path).unwrap();
        let helper = Writeback::start(&path).expect("a helper for an existing file");
        let thread = helper.thread.as_ref().unwrap().thread().clone();
        assert_eq!(thread.name(), Some("store-writeback"));
        // Dirty pages for it to start writing, over a few intervals.
        for _ in 0..3 {
            file.write_all(&[7u8; 1 << 20]).unwrap();
            std::thread::sleep(INTERVAL);
        }
        assert!(!helper.thread.as_ref().unwrap().is_finished());
        drop(helper); // joins: a server runs many runs, none may leave it behind
    }

    #[test]
    fn no_helper_for_a_file_that_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Writeback::start(&dir.path().join("missing")).is_none());
    }
}
