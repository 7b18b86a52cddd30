//! The data folder's layout, shared by the sFTP server and the worker:
//! which folders a feed has and which uploaded names are imported.
//!
//! `<data_dir>/<feed>/`:
//! - `upload/`: where the account writes; files wait here.
//! - `processing/`: a file the worker has claimed (a hard link to the
//!   upload, named `<arrival stamp>-<name>`), until its run is recorded.
//! - `archive/`: processed files, `<arrival stamp>-<name>`.
//! - `errors/`: error reports, `<name>.errors.csv`.
//! - `held/`: kept copies of held files, `<run id>-<name>`.

use std::path::{Path, PathBuf};

/// Prefix of the sFTP server's temporary upload files in `upload/`:
/// hidden from clients, never picked up, removed at start.
pub const UPLOAD_TEMP_PREFIX: &str = ".flagsync-upload-";

/// One feed's folders.
#[derive(Debug, Clone)]
pub struct FeedFolders {
    pub root: PathBuf,
}

impl FeedFolders {
    pub fn new(root: PathBuf) -> FeedFolders {
        FeedFolders { root }
    }
    pub fn upload(&self) -> PathBuf {
        self.root.join("upload")
    }
    pub fn processing(&self) -> PathBuf {
        self.root.join("processing")
    }
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    pub fn errors(&self) -> PathBuf {
        self.root.join("errors")
    }
    pub fn held(&self) -> PathBuf {
        self.root.join("held")
    }
    /// The folders an sFTP account uses, created at start so that a
    /// first listing shows them.
    pub fn create_visible(&self) -> std::io::Result<()> {
        for dir in [self.upload(), self.archive(), self.errors()] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }
}

/// Whether a file in `upload/` is meant to be imported. Clients such as
/// WinSCP upload to a temporary name (`.filepart`) and rename it; hidden
/// names are never data.
pub fn is_pickable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && ![".part", ".filepart", ".tmp"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// Removes temporary upload files left by a process that was killed.
pub fn remove_stale_temps(upload_dir: &Path) {
    let Ok(read) = std::fs::read_dir(upload_dir) else {
        return;
    };
    for entry in read.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(UPLOAD_TEMP_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Syncs a folder so that a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync a folder");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_client_names_are_not_picked_up() {
        assert!(is_pickable("hr.csv"));
        assert!(is_pickable("HR 2026-11-25.CSV"));
        for name in [
            "hr.csv.part",
            "hr.csv.filepart",
            "hr.csv.TMP",
            ".hr.csv",
            ".flagsync-upload-1",
        ] {
            assert!(!is_pickable(name), "{name}");
        }
    }
}
