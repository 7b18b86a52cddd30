//! Backup, restore and verification of the whole store.
//!
//! A backup is a new redb file holding a copy of every table as one read
//! transaction saw it: redb's readers see one commit whatever writers do
//! meanwhile, so the copy is consistent while the server keeps importing.
//! A byte copy of the live file would not be: a commit in the middle of
//! the copy would tear it.
//!
//! The copy is logical (table by table, entry by entry, in key order), so
//! the backup is also compact: it holds no free pages.
//!
//! A restore checks the backup (redb's integrity check and our schema
//! version) on a copy in the data folder, then renames that copy over the
//! store and keeps the store it replaced beside it.

use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle};

use super::{open_error, Store, StoreError, SCHEMA_VERSION};

/// Entries copied per write transaction of the backup file: commits of
/// about this size keep redb's memory bounded (CRATES.md: ~10k–100k rows).
#[cfg(not(test))]
const ENTRIES_PER_COMMIT: u64 = 50_000;
/// Small in tests, so that they cross commits without a slow debug load.
#[cfg(test)]
const ENTRIES_PER_COMMIT: u64 = 500;

thread_local! {
    /// Set while [`Store::verify`] reads: the panic hook stays quiet for
    /// the panics it expects (redb panics on some damaged pages).
    static VERIFYING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a thread that is verifying the store; its panics are reported
/// as damage, not as bugs.
pub fn verifying() -> bool {
    VERIFYING.with(|v| v.get())
}

/// What a backup or a restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub tables: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// The file being written: a hidden name beside `out`, renamed to `out`
/// once complete, so that `out` is never a partial backup. The process ID
/// keeps two backups to one name from writing one file.
fn partial_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.{}.flagsync-partial", std::process::id()))
}

impl Store {
    /// Writes a consistent copy of the whole store to `out`, which must not
    /// exist yet.
    pub fn backup_to(&self, out: &Path) -> Result<BackupSummary, StoreError> {
        if out.exists() {
            return Err(StoreError::Backup(format!(
                "{} already exists; choose a new name or remove it first",
                out.display()
            )));
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backup(format!("cannot create the folder {}: {e}", dir.display()))
            })?;
        }
        let partial = partial_path(out);
        let written = self.write_backup(&partial);
        let summary = match written {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        publish(&partial, out)?;
        Ok(BackupSummary {
            bytes: file_size(out),
            ..summary
        })
    }

    fn write_backup(&self, partial: &Path) -> Result<BackupSummary, StoreError> {
        let _ = std::fs::remove_file(partial);
        let mut backup = Database::builder()
            .set_cache_size(32 << 20)
            .create(partial)
            .map_err(|e| backup_io(partial, e))?;
        let snapshot = self.begin_read()?;
        let summary = copy_all(&snapshot, &backup).map_err(|e| match e {
            StoreError::Redb(redb::Error::Io(io)) => {
                StoreError::Backup(format!("cannot write {}: {io}", partial.display()))
            }
            other => other,
        })?;
        drop(snapshot);
        // The copy's commits leave free pages behind (and redb grows a
        // file in big steps); compacting makes the backup the size of its
        // data.
        backup.compact().map_err(|e| {
            StoreError::Backup(format!("cannot compact {}: {e}", partial.display()))
        })?;
        drop(backup);
        sync_file(partial)?;
        Ok(summary)
    }
}

impl Store {
    /// Reads every entry of every table and decodes every recipient, so
    /// that a damaged file is found at start (or by `flagsync check`), not
    /// in the middle of a run. redb does not check page checksums on
    /// reads and panics on some damaged pages, hence `catch_unwind`.
    pub fn verify(&self) -> Result<u64, StoreError> {
        guard_damage(&self.path, || self.read_everything())
    }

    fn read_everything(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        let mut entries = 0;
        for name in &names {
            entries += if name.starts_with("recipients/") {
                read_recipients(&txn, name)?
            } else {
                read_table(&txn, name)?
            };
        }
        Ok(entries)
    }
}

/// [`read_table`] for a recipients table: every record is also decoded
/// (redb checks no checksum on reads, so a flipped byte shows only here).
fn read_recipients(txn: &ReadTransaction, name: &str) -> Result<u64, StoreError> {
    let table = txn.open_table(TableDefinition::<&str, &[u8]>::new(name))?;
    let mut n = 0u64;
    for entry in table.iter()? {
        let (k, v) = entry?;
        std::hint::black_box(k.value());
        crate::import::record::Record::decode(v.value())
            .map_err(|e| StoreError::Damaged(format!("table {name}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

/// Runs `read` (opening or reading the store at `path`) so that a panic
/// in redb, which some damaged pages cause, becomes
/// [`StoreError::Damaged`] and the panic hook stays quiet.
pub fn guard_damage<T>(
    path: &Path,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let damaged = |detail: String| {
        StoreError::Damaged(format!("{} cannot be read: {detail}", path.display()))
    };
    let outer = VERIFYING.with(|v| v.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    VERIFYING.with(|v| v.set(outer));
    match outcome {
        Ok(read) => read,
        Err(panic) => Err(damaged(panic_text(panic.as_ref()))),
    }
}

/// A panic's message, for an error line.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "an internal error".to_string()
    }
}

/// Copies every table of `snapshot` into `to`, `ENTRIES_PER_COMMIT` at a
/// time.
fn copy_all(snapshot: &ReadTransaction, to: &Database) -> Result<BackupSummary, StoreError> {
    if snapshot.list_multimap_tables()?.next().is_some() {
        return Err(StoreError::Damaged(
            "the store has a multimap table, which this build never writes".into(),
        ));
    }
    let names: Vec<String> = snapshot
        .list_tables()?
        .map(|t| t.name().to_string())
        .collect();
    let mut summary = BackupSummary {
        tables: 0,
        entries: 0,
        bytes: 0,
    };
    for name in &names {
        summary.entries += copy_table(snapshot, to, name)?;
        summary.tables += 1;
    }
    Ok(summary)
}

/// Opens the table `$name` of `$txn` under each key and value layout the
/// store uses until one matches (redb checks a table's types when it is
/// opened), binds it to `$table` and its definition to `$def`, and
/// evaluates `$body`. A table of a layout not listed here is an error: a
/// new layout must be added (the backup test fills every table).
macro_rules! with_layout {
    ($txn:expr, $name:expr, |$table:ident, $def:ident| $body:block) => {{
        with_layout!(@try $txn, $name, $table, $def, $body, &str, &[u8]);
        with_layout!(@try $txn, $name, $table, $def, $body, &str, u64);
        with_layout!(@try $txn, $name, $table, $def, $body, u64, &[u8]);
        with_layout!(@try $txn, $name, $table, $def, $body, u64, ());
        with_layout!(@try $txn, $name, $table, $def, $body, u32, &[u8]);
        with_layout!(@try $txn, $name, $table, $def, $body, &[u8], &[u8]);
        with_layout!(@try $txn, $name, $table, $def, $body, (&str, u64), ());
        Err(StoreError::Damaged(format!(
            "table {} has a layout this build does not know",
            $name
        )))
    }};
    (@try $txn:expr, $name:expr, $table:ident, $def:ident, $body:block, $k:ty, $v:ty) => {
        let $def = TableDefinition::<$k, $v>::new($name);
        match $txn.open_table($def) {
            Ok($table) => return $body,
            Err(TableError::TableTypeMismatch { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    };
}

/// Copies one table, `ENTRIES_PER_COMMIT` entries per transaction of `to`;
/// returns the number of entries.
fn copy_table(from: &ReadTransaction, to: &Database, name: &str) -> Result<u64, StoreError> {
    with_layout!(from, name, |source, def| {
        let mut entries = source.iter()?;
        let mut copied = 0u64;
        loop {
            let txn = to.begin_write()?;
            let mut batch = 0u64;
            {
                let mut table = txn.open_table(def)?;
                while batch < ENTRIES_PER_COMMIT {
                    let Some(entry) = entries.next() else { break };
                    let (k, v) = entry?;
                    table.insert(k.value(), v.value())?;
                    batch += 1;
                }
            }
            txn.commit()?;
            copied += batch;
            if batch < ENTRIES_PER_COMMIT {
                break Ok(copied);
            }
        }
    })
}

/// Reads every entry of one table; returns the number of entries.
fn read_table(txn: &ReadTransaction, name: &str) -> Result<u64, StoreError> {
    with_layout!(txn, name, |table, _def| {
        let mut n = 0u64;
        for entry in table.iter()? {
            let (k, v) = entry?;
            // Decoding is lazy: `value()` is where a damaged key or value
            // shows.
            std::hint::black_box((k.value(), v.value()));
            n += 1;
        }
        Ok(n)
    })
}

/// Replaces the store at `store_path` by the backup `from`: checks a copy
/// of it in the data folder first, then renames it into place. The store
/// it replaced (if any) is kept and its new name returned. The caller
/// holds the data lock, and no server may be running.
pub fn restore(
    from: &Path,
    store_path: &Path,
) -> Result<(BackupSummary, Option<PathBuf>), StoreError> {
    if !from.is_file() {
        return Err(StoreError::Backup(format!(
            "{} is not a file; give the path of a file written by `flagsync backup`",
            from.display()
        )));
    }
    let dir = store_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Backup(format!("cannot create {}: {e}", dir.display())))?;
    let staged = partial_path(store_path);
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(from, &staged).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        StoreError::Backup(format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            staged.display()
        ))
    })?;
    let checked = check_backup(from, &staged);
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    sync_file(&staged)?;
    // The replaced store is kept by a second name first, then the backup
    // replaces it in one rename: at no moment is there no store (a server
    // started then would begin with an empty one).
    let kept = if store_path.exists() {
        let aside = set_aside_name(store_path);
        std::fs::hard_link(store_path, &aside).map_err(|e| {
            StoreError::Backup(format!(
                "cannot keep {} as {}: {e}; nothing was changed",
                store_path.display(),
                aside.display()
            ))
        })?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staged, store_path).map_err(|e| {
        StoreError::Backup(format!(
            "cannot rename the checked backup {} to {}: {e}; the store is unchanged",
            staged.display(),
            store_path.display()
        ))
    })?;
    sync_dir(store_path);
    Ok((
        BackupSummary {
            bytes: file_size(store_path),
            ..summary
        },
        kept,
    ))
}

/// Opens the staged copy of a backup and checks it is a whole, readable
/// store of a schema this build knows: what `serve` would check at start.
fn check_backup(from: &Path, staged: &Path) -> Result<BackupSummary, StoreError> {
    let damaged = |detail: String| {
        StoreError::Backup(format!(
            "{} is not a usable backup ({detail}); nothing was changed",
            from.display()
        ))
    };
    let checked = guard_damage(staged, || {
        let mut db = Database::builder()
            .open(staged)
            .map_err(|e| damaged(open_error(staged, e).to_string()))?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => {
                return Err(damaged(
                    "it had to be repaired: it was not written completely".into(),
                ))
            }
            Err(e) => return Err(damaged(e.to_string())),
        }
        let store = Store {
            db: std::sync::RwLock::new(super::Db::ReadWrite(std::sync::Arc::new(db))),
            reopening: Default::default(),
            path: staged.to_owned(),
            cache: super::CACHE_BYTES,
        };
        match store.stored_schema() {
            Ok(Some(v)) if v <= SCHEMA_VERSION => {}
            Ok(Some(v)) => {
                return Err(damaged(format!(
                "it was written by a newer flagsync: schema {v}, this build knows {SCHEMA_VERSION}"
            )))
            }
            Ok(None) => return Err(damaged("it is not a flagsync store".into())),
            Err(e) => return Err(damaged(e.to_string())),
        }
        let tables = store
            .begin_read()
            .and_then(|txn| Ok(txn.list_tables()?.count() as u64))
            .map_err(|e| damaged(e.to_string()))?;
        let entries = store
            .read_everything()
            .map_err(|e| damaged(e.to_string()))?;
        Ok(BackupSummary {
            tables,
            entries,
            bytes: 0,
        })
    });
    checked.map_err(|e| match e {
        StoreError::Backup(_) => e,
        other => damaged(other.to_string()),
    })
}

/// `flagsync.redb.before-restore-20261125T180000`: where the replaced
/// store is kept.
fn set_aside_name(store_path: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S").to_string();
    let name = store_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = store_path.with_file_name(format!("{name}.before-restore-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = store_path.with_file_name(format!("{name}.before-restore-{stamp}-{n}"));
    }
    candidate
}

/// Renames a complete file into place and makes the rename durable.
fn publish(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|e| {
        let _ = std::fs::remove_file(from);
        StoreError::Backup(format!(
            "cannot rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    sync_dir(to);
    Ok(())
}

/// Makes a rename of `path` durable: fsync its folder.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Backup(format!("cannot write {}: {e}", path.display())))
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn backup_io(path: &Path, e: redb::DatabaseError) -> StoreError {
    StoreError::Backup(format!(
        "cannot create {}: {e}; the user running flagsync (the server, when it runs) must be able to write there",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Key, ReadOnlyTable, ReadableDatabase, Value};

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;
    type Dump = Vec<(String, Entries)>;

    fn dump_table<K: Key + 'static, V: Value + 'static>(
        table: ReadOnlyTable<K, V>,
    ) -> Result<Entries, StoreError> {
        let mut entries = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            entries.push((
                K::as_bytes(&k.value()).as_ref().to_vec(),
                V::as_bytes(&v.value()).as_ref().to_vec(),
            ));
        }
        Ok(entries)
    }

    fn dump(path: &Path) -> Dump {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let entries =
                    (|| with_layout!(txn, &name, |table, _def| { dump_table(table) }))().unwrap();
                (name, entries)
            })
            .collect()
    }

    /// A store with a table of every layout the store uses, two of them
    /// bigger than one backup transaction.
    fn store_with_every_layout(path: &Path) -> Store {
        let store = Store::open(path).unwrap();
        let db = store.writable().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn
                .open_table(TableDefinition::<&str, &[u8]>::new("names/x"))
                .unwrap();
            for i in 0..(ENTRIES_PER_COMMIT * 2 + 7) {
                t.insert(
                    format!("E{i:07}").as_str(),
                    format!("record {i}").as_bytes(),
                )
                .unwrap();
            }
            let mut t = txn
                .open_table(TableDefinition::<&str, u64>::new("groups/x"))
                .unwrap();
            t.insert("Sales", 3).unwrap();
            let mut t = txn
                .open_table(TableDefinition::<u64, &[u8]>::new("outbox"))
                .unwrap();
            t.insert(9, b"{}".as_slice()).unwrap();
            let mut t = txn
                .open_table(TableDefinition::<u64, ()>::new("outbox_pending"))
                .unwrap();
            t.insert(9, ()).unwrap();
            let mut t = txn
                .open_table(TableDefinition::<u32, &[u8]>::new("hashlist/x"))
                .unwrap();
            t.insert(0, [1u8, 2, 3].as_slice()).unwrap();
            let mut t = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("search/x"))
                .unwrap();
            for i in 0u32..(ENTRIES_PER_COMMIT as u32 + 1) {
                t.insert(i.to_be_bytes().as_slice(), [0u8; 40].as_slice())
                    .unwrap();
            }
            txn.open_table(TableDefinition::<&str, &[u8]>::new("empty"))
                .unwrap();
        }
        txn.commit().unwrap();
        store
    }

    #[test]
    fn a_backup_holds_every_table_entry_for_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_every_layout(&dir.path().join("store.redb"));
        let out = dir.path().join("backup.redb");
        let summary = store.backup_to(&out).unwrap();
        drop(store);
        assert!(!partial_path(&out).exists());
        let original = dump(&dir.path().join("store.redb"));
        assert_eq!(original, dump(&out));
        assert_eq!(summary.tables as usize, original.len());
        let entries: usize = original.iter().map(|(_, e)| e.len()).sum();
        assert_eq!(summary.entries as usize, entries);
        assert!(original.iter().any(|(n, e)| n == "empty" && e.is_empty()));
    }

    #[test]
    fn a_backup_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_every_layout(&dir.path().join("store.redb"));
        let out = dir.path().join("backup.redb");
        std::fs::write(&out, b"keep me").unwrap();
        let e = store.backup_to(&out).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    }

    /// A backup (`backup.redb`) of a store with every layout (`a.redb`),
    /// and another store to restore it over.
    fn backup_and_other_store(dir: &Path) -> (PathBuf, PathBuf) {
        let store = store_with_every_layout(&dir.join("a.redb"));
        let out = dir.join("backup.redb");
        store.backup_to(&out).unwrap();
        drop(store);
        let target = dir.join("data").join("flagsync.redb");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        drop(Store::open(&target).unwrap());
        (out, target)
    }

    #[test]
    fn a_restore_replaces_the_store_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (out, target) = backup_and_other_store(dir.path());
        let before = std::fs::read(&target).unwrap();
        let (summary, kept) = restore(&out, &target).unwrap();
        let kept = kept.unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), before);
        assert_eq!(dump(&target), dump(&dir.path().join("a.redb")));
        assert!(summary.entries > ENTRIES_PER_COMMIT * 2);
        assert!(!partial_path(&target).exists());
    }

    #[test]
    fn a_damaged_backup_is_refused_and_the_store_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (out, target) = backup_and_other_store(dir.path());
        let before = std::fs::read(&target).unwrap();
        let whole = std::fs::read(&out).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", whole[..whole.len() / 2].to_vec()),
            ("empty", Vec::new()),
            ("not a store", b"Employee ID,Name\nE1,Ann\n".to_vec()),
        ];
        for (what, bytes) in cases {
            let bad = dir.path().join(format!("{what}.redb"));
            std::fs::write(&bad, bytes).unwrap();
            let e = restore(&bad, &target).unwrap_err().to_string();
            assert!(e.contains("not a usable backup"), "{what}: {e}");
            assert_eq!(std::fs::read(&target).unwrap(), before, "{what}");
            assert!(!partial_path(&target).exists(), "{what}");
        }
    }
}
