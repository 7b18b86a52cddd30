//! `flagsync backup` and `flagsync restore`.
//!
//! A backup runs wherever the store is open: sent to a running server (its
//! read transaction sees one commit while imports go on), or here on the
//! store opened read-only. A restore replaces the store's file, so it runs
//! only here, with the server stopped and the data lock held.

use std::path::Path;

use super::{read_store, Backend, Failure, Io};
use crate::config::Config;
use crate::store::{BackupSummary, DataLock};

pub fn backup(config: &Config, out: &Path, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    let store = read_store(config, backend)?;
    let Some(store) = store.get() else {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "nothing to back up: the store {} does not exist yet (no file has been imported)",
            config.store_path().display()
        )));
    };
    let summary = store.backup_to(out)?;
    writeln!(
        io.out,
        "backup written to {}: {}",
        out.display(),
        describe(&summary)
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(0)
}

pub fn restore(
    config: &Config,
    from: &Path,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    if let Backend::Server(_) = backend {
        return Err(Failure::Usage(anyhow::anyhow!(
            "flagsync serve is running on {}; stop it first (systemctl stop flagsync), restore, then start it again: a restore replaces the store the server has open",
            config.data_dir.display()
        )));
    }
    let _lock = DataLock::acquire(&config.data_dir)?;
    let store_path = config.store_path();
    let (summary, kept) = crate::store::restore(from, &store_path)?;
    writeln!(
        io.out,
        "restored {} into {}: {}",
        from.display(),
        store_path.display(),
        describe(&summary)
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    if let Some(kept) = kept {
        writeln!(
            io.out,
            "the store it replaced is kept as {}; delete it once the restored store is what you wanted",
            kept.display()
        )
        .map_err(|e| Failure::Runtime(e.into()))?;
    }
    Ok(0)
}

fn describe(s: &BackupSummary) -> String {
    format!(
        "{} tables, {} entries, {:.1} MB",
        s.tables,
        s.entries,
        s.bytes as f64 / 1e6
    )
}
