//! The data folder's layout, shared by the sFTP server and the worker:
//! which folders a feed has and which uploaded names are imported.
//!
//! `<data_dir>/<feed>/`:
//! - `upload/`: where the account writes; files wait here.
//! - `processing/`: a file the worker has claimed (a hard link to the
//!   upload, named `<arrival stamp>-<name>`), until its run is recorded.
//! - `archive/`: processed files, `<arrival stamp>-<name>`.
//! - `errors/`: error reports, one per run,
//!   `<UTC start>-run<run id>-<name>.errors.csv` (`report::report_name`).
//! - `held/`: kept copies of held files, `<run id>-<name>`.
//! - `pgp.key`: the feed's OpenPGP secret key when `flagsync pgp keygen`
//!   made it (outside the folders an sFTP account reaches).

use std::path::{Path, PathBuf};

/// Prefix of the sFTP server's temporary upload files in `upload/`:
/// hidden from clients, never picked up, removed at start.
pub const UPLOAD_TEMP_PREFIX: &str = ".flagsync-upload-";

/// Longest file name the usual file systems take (bytes).
pub const MAX_FILE_NAME: usize = 255;
/// What `processing/` and `archive/` add to an upload's name:
/// `<arrival stamp>-` ([`claim_name`]).
const CLAIM_EXTRA: usize = "20261125T134501.123Z-".len();
/// What `errors/` adds: `<UTC start>-run<run id>-` and `.errors.csv`
/// (`report::report_name`), with the longest run ID (a u64).
const REPORT_EXTRA: usize =
    "20261204T020000Z-run".len() + "18446744073709551615".len() + "-.errors.csv".len();
/// What `held/` adds: `<run id>-`.
const HELD_EXTRA: usize = "18446744073709551615-".len();

/// Longest name an upload to be imported may have (bytes): it must still
/// fit in [`MAX_FILE_NAME`] once stamped for `processing/`, `archive/`,
/// `errors/` and `held/`. A longer one would be accepted and then never
/// processed, so the sFTP server refuses it.
pub const MAX_UPLOAD_NAME: usize = MAX_FILE_NAME - max(max(CLAIM_EXTRA, REPORT_EXTRA), HELD_EXTRA);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

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
    /// Where `flagsync pgp keygen` writes the feed's secret key.
    pub fn pgp_key(&self) -> PathBuf {
        self.root.join("pgp.key")
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

/// Whether a file in `upload/` is meant to be imported. Clients upload to
/// a temporary name and rename it when done: names ending in one of
/// `temporary_suffixes` (lower case; names compare in any case) wait for
/// that rename. Hidden names are never data.
pub fn is_pickable(name: &str, temporary_suffixes: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && !temporary_suffixes
            .iter()
            .any(|s| lower.ends_with(s.as_str()))
}

/// `<stamp>-<name>`: a claimed upload's name in `processing/` and
/// `archive/`. 2026-11-25T13:45:01.123Z → 20261125T134501.123Z: sorts by
/// time and is a valid file name everywhere.
pub fn claim_name(now: std::time::SystemTime, name: &str) -> String {
    let stamp = humantime::format_rfc3339_millis(now)
        .to_string()
        .replace(['-', ':'], "");
    format!("{stamp}-{name}")
}

/// The original name of a claim.
pub fn claimed_file_name(claim: &str) -> &str {
    claim.split_once('-').map_or(claim, |(_, n)| n)
}

/// Claims `upload/<name>`: hard-links it as `processing/<claim>` and
/// returns the claim. `None` when it is gone, not a regular file, or
/// already claimed (its link count is above one).
pub fn claim_upload(folders: &FeedFolders, name: &str) -> std::io::Result<Option<String>> {
    let claimed = {
        // The sFTP sessions and the intake (uploads that arrived while no
        // server ran) may claim one name at the same moment: the check of
        // the link count and the link are one step. Claims are made only
        // by the one process that holds the data folder's lock.
        let _one_at_a_time = CLAIMING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        link_claim(folders, name)?
    };
    if claimed.is_some() {
        sync_dir(&folders.processing());
    }
    Ok(claimed)
}

/// Serialises [`claim_upload`] within the process.
static CLAIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn link_claim(folders: &FeedFolders, name: &str) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let upload = folders.upload().join(name);
    let meta = match std::fs::symlink_metadata(&upload) {
        Ok(m) if m.file_type().is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.nlink() > 1 {
        return Ok(None);
    }
    let processing = folders.processing();
    std::fs::create_dir_all(&processing)?;
    let mut claim = claim_name(std::time::SystemTime::now(), name);
    // Two arrivals of one name within a millisecond.
    while processing.join(&claim).exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
        claim = claim_name(std::time::SystemTime::now(), name);
    }
    std::fs::hard_link(&upload, processing.join(&claim))?;
    Ok(Some(claim))
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
    fn claim_names_sort_by_time_and_keep_the_name() {
        use std::time::{Duration, SystemTime};
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_078_301_123);
        let c = claim_name(t, "hr-2026.csv");
        assert_eq!(c, "20251125T134501.123Z-hr-2026.csv");
        assert_eq!(claimed_file_name(&c), "hr-2026.csv");
        assert!(claim_name(t + Duration::from_millis(1), "a") > claim_name(t, "b"));
    }

    #[test]
    fn the_longest_upload_name_fits_every_stamped_name() {
        use std::time::{Duration, SystemTime};
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_000);
        let name = "é".repeat(MAX_UPLOAD_NAME / 2) + "x";
        assert_eq!(name.len(), MAX_UPLOAD_NAME);
        assert!(claim_name(far, &name).len() <= MAX_FILE_NAME);
        let report = crate::report::report_name(far, Some(u64::MAX), &name);
        assert!(report.len() <= MAX_FILE_NAME);
        assert!(report.contains(&name), "not shortened: {report}");
        assert!(format!("{}-{name}", u64::MAX).len() <= MAX_FILE_NAME);
    }

    #[test]
    fn an_upload_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let folders = FeedFolders::new(dir.path().to_path_buf());
        folders.create_visible().unwrap();
        std::fs::write(folders.upload().join("hr.csv"), "x").unwrap();
        let claim = claim_upload(&folders, "hr.csv").unwrap().unwrap();
        assert!(folders.processing().join(&claim).exists());
        assert_eq!(
            claim_upload(&folders, "hr.csv").unwrap(),
            None,
            "already claimed"
        );
        assert_eq!(claim_upload(&folders, "gone.csv").unwrap(), None);
    }

    /// The sFTP session that received an upload and the intake (at start,
    /// taking uploads that arrived while no server ran) may claim the same
    /// name at the same moment: exactly one of them gets it. (Without
    /// the lock in `claim_upload`, both got a claim within a few dozen
    /// rounds: one upload, two runs.)
    #[test]
    fn two_claimers_at_once_get_one_claim() {
        let dir = tempfile::tempdir().unwrap();
        let folders = FeedFolders::new(dir.path().to_path_buf());
        folders.create_visible().unwrap();
        for round in 0..300 {
            let name = format!("hr-{round}.csv");
            std::fs::write(folders.upload().join(&name), "x").unwrap();
            let barrier = std::sync::Barrier::new(2);
            let claims: Vec<Option<String>> = std::thread::scope(|s| {
                let claimers: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            claim_upload(&folders, &name).unwrap()
                        })
                    })
                    .collect();
                claimers.into_iter().map(|c| c.join().unwrap()).collect()
            });
            let made = claims.iter().flatten().count();
            assert_eq!(made, 1, "round {round}: {claims:?}");
        }
    }

    #[test]
    fn temporary_client_names_are_not_picked_up() {
        let defaults: Vec<String> = crate::config::DEFAULT_TEMPORARY_SUFFIXES
            .map(String::from)
            .to_vec();
        assert!(is_pickable("hr.csv", &defaults));
        assert!(is_pickable("HR 2026-11-25.CSV", &defaults));
        // Compressed files are read (import::container): no extension is
        // filtered.
        for name in ["hr.csv.gz", "hr.gz", "hr.zip", "HR.ZIP", "hr.txt"] {
            assert!(is_pickable(name, &defaults), "{name}");
        }
        for name in [
            "hr.csv.part",
            "hr.csv.filepart",
            "hr.csv.TMP",
            "hr.csv.Ab3xQ9zK.partial",
            ".hr.csv",
            ".flagsync-upload-1",
        ] {
            assert!(!is_pickable(name, &defaults), "{name}");
        }
    }

    #[test]
    fn the_temporary_suffixes_are_a_setting_and_hidden_names_always_wait() {
        let only_upload = vec![".upload".to_string()];
        assert!(!is_pickable("hr.csv.UPLOAD", &only_upload));
        assert!(is_pickable("hr.csv.part", &only_upload));
        assert!(!is_pickable(".hr.csv", &[]));
        assert!(is_pickable("hr.csv.tmp", &[]));
    }
}
