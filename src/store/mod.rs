//! The store: one redb file in the data folder.
//!
//! Owns: the redb tables, the schema version, and applying a run's changes
//! (through [`import::FeedWriter`]) together with its run record in one
//! write transaction. Knows no CSV and makes no decisions.
//!
//! Tables (per feed `F`, names are `<kind>/<F>`):
//! - `meta`: `&str → &[u8]`: `schema_version` (u32 LE), `next_run_id` (u64 LE).
//! - `fingerprints`: feed → u64 mapping fingerprint of the last applied run.
//! - `runs`: run ID → JSON [`Run`]; `runs_by_feed` and `held_runs`:
//!   (feed, run ID) → () of every run and of the held ones;
//!   `run_uploads`: server claim → run ID.
//! - `recipients/F`: ID → encoded [`import::record::Record`] (its values and
//!   its groups: a recipient's memberships live with it).
//! - `hashlist/F`: chunk number → a slice of the feed's sorted (ID, raw
//!   hash) list (see `hashlist`).
//! - `groups/F`: group name → member count (a group exists while > 0).
//! - `accounts`: sFTP account name → JSON [`Account`].
//! - `admins`: status page administrator → JSON [`Admin`].
//! - `api_tokens`: SHA-256 of an API token → JSON [`ApiToken`].
//! - `outbox`: message ID → JSON [`Message`] (report emails and their
//!   delivery state); `outbox_pending`: IDs of those still to send;
//!   `meta.next_message_id`.
//! - `webhooks`: message ID → JSON [`HookMessage`] (signed run events
//!   and their delivery state); `webhooks_pending`: (target, ID) of those
//!   still to deliver; `meta.next_webhook_id` (see `webhooks`).
//! - `feed_state`: feed → JSON [`FeedState`] (last arrival, overdue alert
//!   sent, last daily slot processed).
//! - `search/F`, `search_ids/F`, `search_hashes/F`, `search_meta`: the
//!   recipient search index (see `search`), written by the indexer after
//!   runs; `meta.generation/F` counts the changes of a feed's recipients.
//!
//! Invariants:
//! 1. `recipients/F` and `hashlist/F` hold the same IDs.
//! 2. `groups/F[g]` is the number of records listing `g`.
//! 3. All changes of one run and its run record are one write transaction.
//! 4. `runs_by_feed`, `held_runs` and `run_uploads` list exactly the
//!    records of `runs` (every write of a run goes through `runs::put_run`).

mod accounts;
mod admins;
mod backup;
mod blocks;
mod changes;
mod feed_state;
mod hashlist;
mod outbox;
mod runs;
mod scim;
mod search;
mod undo;
mod webhooks;
mod writeback;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use compact_str::CompactString;
use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition, TableError, TransactionError,
    WriteTransaction,
};

use crate::import::record::Record;
use crate::import::StoredIndex;

pub use accounts::Account;
pub use admins::{Admin, ApiToken};
pub use backup::{guard_damage, panic_text, restore, verifying, BackupSummary};
pub use changes::{
    fields_text, shown_value, ChangeCounts, ChangeLog, ChangesPage, FeedChange, FeedCursor,
    FeedError, FeedPage, LoggedChange, LoggedField, LoggedValue, CHANGE_KINDS,
};
pub use feed_state::FeedState;
pub use outbox::{Delivery, Message};
pub use runs::{Pruned, Run, RunState};
pub use scim::{ScimPosition, ScimState, ScimUser};
#[cfg(test)]
pub(crate) use search::Strategy;
pub use search::{PassHooks, PassOutcome, SearchPage, SearchQuery};
pub use webhooks::{target_key, HookMessage, HookState, PageOfChanges};
pub use writer::{ReadFeed, Snapshot, WriteFeed};

/// The schema this build writes. A store with a higher version was written
/// by a newer flagsync.
pub const SCHEMA_VERSION: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// `meta` key of a feed's mapping fingerprint (see `set_fingerprint`).
fn mapping_key(feed: &str) -> String {
    format!("mapping/{feed}")
}
const FINGERPRINTS: TableDefinition<&str, u64> = TableDefinition::new("fingerprints");
const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");

/// redb's page cache. Runs read the pages of changed recipients once, so a
/// large cache buys little and counts against the import's memory...
const CACHE_BYTES: usize = 16 << 20;
/// ...except when a run writes much of a big feed (an initial load): redb
/// keeps at most half its cache as written pages and writes the rest to
/// the file during the run, reading them back at the commit for their
/// checksums. So a run gets about 512 bytes of cache per row it may write
/// (a record is ~400), up to this much: at 1M rows 0.95x the time of a
/// 128 MiB cache, for ~200 MB more at the peak...
const MAX_RUN_CACHE_BYTES: usize = 512 << 20;
const RUN_CACHE_BYTES_PER_ROW: usize = 512;
/// ...and only while the run's pages can fit: past this many rows they
/// cannot, and a large cache only adds to the peak (10M rows: 2.15 GB).
const MAX_ROWS_FOR_RUN_CACHE: usize = 1_500_000;
/// What such a run gets instead.
const HUGE_RUN_CACHE_BYTES: usize = 128 << 20;

/// Above this many changes, an empty transaction follows the run so that
/// redb can reuse the pages the run freed (redb#829).
const BIG_RUN_CHANGES: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {path} cannot be opened: {detail}. If the file is damaged, stop flagsync and restore it from a backup with `flagsync restore BACKUP_FILE`")]
    Open { path: PathBuf, detail: String },
    #[error("{path}: {detail}; the user running flagsync must be able to read and write the data folder (for the packages: chown -R flagsync:flagsync /var/lib/flagsync)")]
    Access { path: PathBuf, detail: String },
    #[error("{path} is in use by another flagsync process (an import or the server); wait for it or stop it, and try again")]
    InUse { path: PathBuf },
    #[error(
        "cannot read the data folder {folder}: {detail}; run as the flagsync user or with sudo"
    )]
    Unreadable { folder: PathBuf, detail: String },
    #[error("the store {path} was written by a newer flagsync (schema {found}, this build knows {SCHEMA_VERSION}); upgrade flagsync or restore a backup")]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("store error: {0}{hint}", hint = damage_hint(.0))]
    Redb(#[from] redb::Error),
    #[error("the store is damaged: {0}. Stop flagsync and restore the store from a backup with `flagsync restore BACKUP_FILE`")]
    Damaged(String),
    #[error("run {0} does not exist; `flagsync runs list` shows the runs")]
    UnknownRun(u64),
    #[error("{0}")]
    Backup(String),
    #[error(
        "the store is being opened again after an I/O error (a full disk?); try again in a moment"
    )]
    Reopening,
    /// Writing what was read from the store somewhere else failed (the
    /// output of `recipients export`, a scratch file): the store is fine.
    #[error("{what}: {source}; check that there is room and the right to write there")]
    Output {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug, not the store's state.
    #[error("internal error: {0}; please report it with the log")]
    Internal(String),
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Redb(e.into())
    }
}

impl StoreError {
    /// An error of the disk or the handle (a full disk, a failed write,
    /// the store being reopened), which may pass; not damage or a bug.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Redb(
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::DatabaseClosed
                    | redb::Error::WouldBlock
            ) | StoreError::Reopening
                | StoreError::InUse { .. }
                | StoreError::Output { .. }
        )
    }
}

/// What to do about an error that means the file itself is damaged.
fn damage_hint(e: &redb::Error) -> &'static str {
    match e {
        redb::Error::Corrupted(_) | redb::Error::TypeDefinitionChanged { .. } => {
            ". The store file is damaged: stop flagsync and restore it with `flagsync restore BACKUP_FILE`"
        }
        _ => "",
    }
}

/// `meta.next_run_id` (u64 LE); 1 before the first run.
fn decode_next_run_id(stored: Option<&[u8]>) -> Result<u64, StoreError> {
    let Some(bytes) = stored else {
        return Ok(1);
    };
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Damaged("next_run_id is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A table that does not exist yet (nothing written to it so far) reads as
/// `None`: to a reader it is empty.
fn optional<T>(opened: Result<T, TableError>) -> Result<Option<T>, StoreError> {
    match opened {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn table_name(kind: &str, feed: &str) -> String {
    format!("{kind}/{feed}")
}

/// Either kind of open database, for reading.
#[derive(Clone)]
enum Db {
    ReadWrite(Arc<Database>),
    ReadOnly(Arc<ReadOnlyDatabase>),
    /// Closed after an I/O error, being opened again (see [`Store::reopen`]).
    Reopening,
}

/// An open store.
pub struct Store {
    /// Replaced when the store is reopened after an I/O error: redb refuses
    /// every transaction of a handle once a write failed (a full disk, say).
    db: RwLock<Db>,
    /// Held while the handle is being replaced.
    reopening: std::sync::Mutex<()>,
    path: PathBuf,
    cache: usize,
}

/// [`Store::reopen`] waits for this much free space before it closes the
/// failed handle.
const REOPEN_MIN_FREE: u64 = 1 << 20;

/// Free bytes on the file system holding `path` (`None` when unknown).
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// How long [`Store::reopen`] waits for the old handle's write
/// transactions and clones (they keep redb's file lock) to end.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens the store for writing, creating it (and its folder) if needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, CACHE_BYTES)
    }

    /// [`Store::open`] for a run that will write about `rows` recipients.
    pub fn open_for_run(path: &Path, rows: usize) -> Result<Store, StoreError> {
        let cache = if rows > MAX_ROWS_FOR_RUN_CACHE {
            HUGE_RUN_CACHE_BYTES
        } else {
            rows.saturating_mul(RUN_CACHE_BYTES_PER_ROW)
                .clamp(CACHE_BYTES, MAX_RUN_CACHE_BYTES)
        };
        Store::open_with_cache(path, cache)
    }

    fn open_with_cache(path: &Path, cache: usize) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                io_error(
                    path,
                    format!("cannot create folder {}: {e}", dir.display()),
                    &e,
                )
            })?;
        }
        let db = open_or_create(path, cache)?;
        let store = Store {
            db: RwLock::new(Db::ReadWrite(Arc::new(db))),
            reopening: Default::default(),
            path: path.to_owned(),
            cache,
        };
        store.check_or_set_schema()?;
        Ok(store)
    }

    /// Opens an existing store for reading only; `None` when there is none
    /// yet (an empty store, to a reader).
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        // Not `exists()`: a folder the user may not read would look empty,
        // and the command line would report "no runs yet".
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(unreadable(path, &e)),
        }
        // A small cache: readers (the command line, `check`'s full read)
        // read most pages once; redb's default would keep up to 1 GiB.
        let db = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open_read_only(path)
        {
            Ok(db) => Db::ReadOnly(Arc::new(db)),
            // A process was killed with the store open: only a writer may
            // repair it (redb rolls back to the last commit), so open it
            // as one. The content is unchanged by the repair.
            Err(redb::DatabaseError::RepairAborted) => {
                tracing::info!(path = %path.display(), "repairing the store after an unclean stop");
                let db = Database::builder()
                    .open(path)
                    .map_err(|e| open_error(path, e))?;
                Db::ReadWrite(Arc::new(db))
            }
            Err(e) => return Err(open_error(path, e)),
        };
        let store = Store {
            db: RwLock::new(db),
            reopening: Default::default(),
            path: path.to_owned(),
            cache: CACHE_BYTES,
        };
        store.check_schema()?;
        Ok(Some(store))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Db {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(match self.db() {
            Db::ReadWrite(db) => db.begin_read()?,
            Db::ReadOnly(db) => db.begin_read()?,
            Db::Reopening => {
                self.open_again_now()?;
                return self.begin_read();
            }
        })
    }

    /// A write transaction. After an I/O error redb refuses it
    /// (`PreviousIo`) until [`Store::recover_if_failed`] reopens the file;
    /// that is not done here, because the caller may still hold the failed
    /// run's transactions (they keep the file open).
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let db = self.writable()?;
        let txn = db.begin_write()?;
        Ok(txn)
    }

    fn writable(&self) -> Result<Arc<Database>, StoreError> {
        match self.db() {
            Db::ReadWrite(db) => Ok(db),
            Db::ReadOnly(_) => Err(StoreError::Internal(
                "internal: write on a read-only store".into(),
            )),
            Db::Reopening => {
                self.open_again_now()?;
                match self.db() {
                    Db::ReadWrite(db) => Ok(db),
                    _ => Err(StoreError::Reopening),
                }
            }
        }
    }

    /// Opens the store again if redb refuses its handle after an I/O error
    /// (redb notices a past one only when a write begins). Threads that
    /// met an I/O error call this once they hold no transaction of the
    /// store: the intake before it tries a file again, the indexer.
    pub fn recover_if_failed(&self) -> Result<(), StoreError> {
        match self.db() {
            Db::ReadOnly(_) => Ok(()),
            Db::Reopening => self.open_again_now(),
            Db::ReadWrite(db) => {
                let probe = db.begin_write();
                let failed = Arc::as_ptr(&db);
                // redb releases the file lock with the last handle.
                drop(db);
                match probe {
                    Ok(txn) => Ok(txn.abort()?),
                    Err(TransactionError::Storage(StorageError::PreviousIo)) => self.reopen(failed),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// After a reopen that failed: one more try.
    fn open_again_now(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.open_again()
    }

    /// Closes the handle `failed` and opens the file again: what redb needs
    /// after a failed write (its handle then refuses everything). The
    /// committed state is on disk; redb rolls back what the failed commit
    /// left. One thread reopens at a time, and only the handle that failed
    /// (another thread may have reopened it already). Waits up to
    /// [`REOPEN_WAIT`] for the old handle's last users.
    fn reopen(&self, failed: *const Database) -> Result<(), StoreError> {
        let _one_at_a_time = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.db() {
            Db::ReadOnly(_) => return Ok(()),
            Db::ReadWrite(current) if Arc::as_ptr(&current) != failed => return Ok(()),
            Db::ReadWrite(_) => {
                // Opening runs redb's repair, which writes: on a disk that
                // is still full it would fail and leave no handle at all,
                // while the old one still serves most reads from its cache.
                if let Some(free) = free_bytes(&self.path) {
                    if free < REOPEN_MIN_FREE {
                        return Err(StoreError::Redb(redb::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            format!(
                                "{free} bytes free on the data folder's disk; waiting for space"
                            ),
                        ))));
                    }
                }
            }
            Db::Reopening => {}
        }
        tracing::warn!(path = %self.path.display(), "reopening the store after an I/O error");
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Db::Reopening;
        self.open_again()
    }

    /// Opens the file into the `Reopening` slot; the caller holds
    /// `reopening`. Waits up to [`REOPEN_WAIT`] for the old handle's last
    /// users to let go of the file lock.
    fn open_again(&self) -> Result<(), StoreError> {
        if !matches!(self.db(), Db::Reopening) {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + REOPEN_WAIT;
        loop {
            match Database::builder()
                .set_cache_size(self.cache)
                .open(&self.path)
            {
                Ok(db) => {
                    *self.db.write().unwrap_or_else(PoisonError::into_inner) =
                        Db::ReadWrite(Arc::new(db));
                    tracing::info!(path = %self.path.display(), "the store is open again");
                    return Ok(());
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_error(&self.path, e)),
            }
        }
    }

    fn stored_schema(&self) -> Result<Option<u32>, StoreError> {
        let txn = self.begin_read()?;
        let Some(meta) = optional(txn.open_table(META))? else {
            return Ok(None);
        };
        let Some(v) = meta.get("schema_version")? else {
            return Ok(None);
        };
        let bytes: [u8; 4] = v
            .value()
            .try_into()
            .map_err(|_| StoreError::Damaged("schema_version is not 4 bytes".into()))?;
        Ok(Some(u32::from_le_bytes(bytes)))
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.stored_schema()? {
            Some(found) if found > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
            }),
            _ => Ok(()),
        }
    }

    fn check_or_set_schema(&self) -> Result<(), StoreError> {
        let stored = self.stored_schema()?;
        if stored == Some(SCHEMA_VERSION) {
            return Ok(());
        }
        if stored.is_some() {
            self.check_schema()?;
        }
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            txn.open_table(RUNS)?;
            txn.open_table(FINGERPRINTS)?;
            // Schema 2: the run indexes, built once from the runs of an
            // older store.
            let indexed = runs::index_all_runs(&txn)?;
            if stored.is_some() {
                tracing::info!(
                    runs = indexed,
                    "store upgraded to schema 2: runs indexed by feed"
                );
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The feed's stored (ID, hash) list and mapping fingerprint.
    pub fn feed_index(&self, feed: &str) -> Result<StoredIndex, StoreError> {
        let txn = self.begin_read()?;
        let fingerprint = match optional(txn.open_table(FINGERPRINTS))? {
            Some(t) => t.get(feed)?.map(|v| v.value()),
            None => None,
        };
        let name = table_name("hashlist", feed);
        let def: TableDefinition<u32, &[u8]> = TableDefinition::new(&name);
        let hashes = match optional(txn.open_table(def))? {
            Some(table) => hashlist::read_list(&table)?,
            None => Vec::new(),
        };
        // Builds before the run fingerprint stored the mapping fingerprint
        // itself, and no `mapping/F`.
        let mapping = match optional(txn.open_table(META))? {
            Some(meta) => meta
                .get(mapping_key(feed).as_str())?
                .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)),
            None => None,
        }
        .or(fingerprint);
        Ok(StoredIndex {
            hashes,
            fingerprint,
            mapping,
        })
    }

    /// Runs `f` over the feed's current state without changing anything
    /// (dry runs and held runs).
    pub fn with_read_feed<T>(
        &self,
        feed: &str,
        f: impl FnOnce(&mut ReadFeed) -> T,
    ) -> Result<T, StoreError> {
        let txn = self.begin_read()?;
        let mut reader = ReadFeed::open(&txn, feed)?;
        Ok(f(&mut reader))
    }

    /// As [`Store::with_read_feed`], gathering what `f` would change (a
    /// held run's log, written with its record).
    pub fn with_read_feed_logged<T>(
        &self,
        feed: &str,
        f: impl FnOnce(&mut ReadFeed) -> T,
    ) -> Result<(T, ChangeLog), StoreError> {
        let txn = self.begin_read()?;
        let mut reader = ReadFeed::open(&txn, feed)?;
        reader.log = Some(ChangeLog::default());
        let out = f(&mut reader);
        Ok((out, reader.log.take().unwrap_or_default()))
    }

    /// The feed's records as committed now, readable from many threads.
    pub fn snapshot(&self, feed: &str) -> Result<Snapshot, StoreError> {
        let txn = self.begin_read()?;
        Snapshot::open(&txn, feed)
    }

    /// Number of recipients in a feed.
    pub fn recipient_count(&self, feed: &str) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let name = table_name("recipients", feed);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        match optional(txn.open_table(def))? {
            Some(t) => Ok(t.len()?),
            None => Ok(0),
        }
    }

    /// Calls `each` with every recipient of the feed, in ID order.
    pub fn for_each_recipient(
        &self,
        feed: &str,
        mut each: impl FnMut(&str, Record) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let name = table_name("recipients", feed);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let Some(table) = optional(txn.open_table(def))? else {
            return Ok(());
        };
        for entry in table.iter()? {
            let (k, v) = entry?;
            let record =
                Record::decode(v.value()).map_err(|e| StoreError::Damaged(e.to_string()))?;
            each(k.value(), record).map_err(|source| StoreError::Output {
                what: "writing the recipients".into(),
                source,
            })?;
        }
        Ok(())
    }

    /// The stored values (in field order) of each of `ids`, read in one
    /// transaction; `None` for an ID that is not stored.
    pub fn recipients_values<S: AsRef<str>>(
        &self,
        feed: &str,
        ids: &[S],
    ) -> Result<Vec<Option<Vec<String>>>, StoreError> {
        let txn = self.begin_read()?;
        let name = table_name("recipients", feed);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let Some(table) = optional(txn.open_table(def))? else {
            return Ok(vec![None; ids.len()]);
        };
        ids.iter()
            .map(|id| {
                let found = table.get(id.as_ref())?;
                found
                    .map(|v| {
                        Record::decode(v.value())
                            .map(|r| r.values)
                            .map_err(|e| StoreError::Damaged(e.to_string()))
                    })
                    .transpose()
            })
            .collect()
    }

    /// One recipient's record.
    pub fn recipient(&self, feed: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.begin_read()?;
        let name = table_name("recipients", feed);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let Some(table) = optional(txn.open_table(def))? else {
            return Ok(None);
        };
        let found = table.get(id)?;
        found
            .map(|v| Record::decode(v.value()).map_err(|e| StoreError::Damaged(e.to_string())))
            .transpose()
    }

    /// The feed's groups and their member counts, by name.
    pub fn groups(&self, feed: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let name = table_name("groups", feed);
        let def: TableDefinition<&str, u64> = TableDefinition::new(&name);
        let Some(table) = optional(txn.open_table(def))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Begins a run's write transaction. Nothing is visible until
    /// [`RunTransaction::commit`].
    pub fn begin_run(&self) -> Result<RunTransaction, StoreError> {
        let txn = self.begin_write()?;
        Ok(RunTransaction {
            txn,
            _writeback: writeback::Writeback::start(&self.path),
        })
    }

    /// Lets redb reuse the pages a very large run freed (redb#829);
    /// `rewritten` is the number of records the run replaced or removed.
    pub fn after_big_run(&self, rewritten: u64) -> Result<(), StoreError> {
        if rewritten >= BIG_RUN_CHANGES {
            self.begin_write()?.commit()?;
        }
        Ok(())
    }
}

/// An exclusive lock on the data folder: one process at a time writes
/// (an import from the command line, or the server). It lets an import read
/// the store read-only first, so that a failed run never opens it for
/// writing, and still be sure nobody writes in between.
pub struct DataLock {
    _file: std::fs::File,
}

impl DataLock {
    pub fn acquire(data_dir: &Path) -> Result<DataLock, StoreError> {
        let path = data_dir.join("flagsync.lock");
        let open = || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(data_dir)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        let file = open().map_err(|e| io_error(&path, e.to_string(), &e))?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Open {
                path,
                detail: e.to_string(),
            }),
        }
    }
}

/// Opens the store's file, creating it only when there is none: redb's
/// `create` would also initialise a file whose header is zeros, silently
/// replacing a damaged store by an empty one.
fn open_or_create(path: &Path, cache: usize) -> Result<Database, StoreError> {
    let builder = {
        let mut b = Database::builder();
        b.set_cache_size(cache);
        b
    };
    let opened = match std::fs::symlink_metadata(path) {
        Ok(_) => builder.open(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => builder.create(path),
        Err(e) => return Err(io_error(path, e.to_string(), &e)),
    };
    opened.map_err(|e| open_error(path, e))
}

/// A file that cannot be opened: no access is the folder's owner or
/// mode, anything else may be damage.
/// The store's folder cannot be looked into (it is the server's).
fn unreadable(store: &Path, e: &std::io::Error) -> StoreError {
    let detail = match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    StoreError::Unreadable {
        folder: store.parent().unwrap_or(store).to_owned(),
        detail,
    }
}

fn io_error(path: &Path, detail: String, e: &std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        StoreError::Access {
            path: path.to_owned(),
            detail,
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            detail,
        }
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            io_error(path, io.to_string(), &io)
        }
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        other => StoreError::Open {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// One run's write transaction.
pub struct RunTransaction {
    txn: redb::WriteTransaction,
    /// Dropped after the commit (fields drop in order).
    _writeback: Option<writeback::Writeback>,
}

impl RunTransaction {
    /// Runs `f` with a writer over the feed's tables; with `run`, what it
    /// changes goes to that run's change log.
    pub fn with_feed<T>(
        &self,
        feed: &str,
        run: Option<u64>,
        f: impl FnOnce(&mut WriteFeed) -> T,
    ) -> Result<T, StoreError> {
        let mut writer = WriteFeed::open(&self.txn, feed, run)?;
        let out = f(&mut writer);
        writer.finish(&self.txn, feed)?;
        Ok(out)
    }

    /// Writes what run `run` changed (or, held, would change).
    pub fn put_change_log(&self, feed: &str, run: u64, log: ChangeLog) -> Result<(), StoreError> {
        log.write(&self.txn, feed, run)
    }

    /// The first `limit` changes run `run` logged in this transaction (the
    /// report email's list: read back from the log, not cloned from it).
    pub fn first_changes(
        &self,
        feed: &str,
        run: u64,
        limit: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        changes::first_changes_in_write(&self.txn, feed, run, limit)
    }

    /// How many changes run `run` logged in this transaction (what its
    /// `include_changes = "full"` webhook pages are counted from).
    pub fn count_changes(&self, feed: &str, run: u64) -> Result<u64, StoreError> {
        changes::count_changes_in_write(&self.txn, feed, run)
    }

    /// Changes `offset..offset + limit` of run `run` as this transaction
    /// sees its log.
    pub fn changes_slice(
        &self,
        feed: &str,
        run: u64,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        changes::changes_slice_in_write(&self.txn, feed, run, offset, limit)
    }

    /// Deletes run `run`'s log: a confirmed held run logs again what it
    /// changes against the store as it is now.
    pub fn forget_changes(&self, feed: &str, run: u64) -> Result<(), StoreError> {
        changes::delete_run_changes(&self.txn, feed, run)
    }

    /// Reserves the next run ID.
    pub fn next_run_id(&self) -> Result<u64, StoreError> {
        let mut meta = self.txn.open_table(META)?;
        let stored = meta.get("next_run_id")?;
        let next = decode_next_run_id(stored.as_ref().map(|v| v.value()))?;
        drop(stored);
        meta.insert("next_run_id", (next + 1).to_le_bytes().as_slice())?;
        Ok(next)
    }

    /// Replaces the feed's (ID, raw hash) list.
    pub fn put_hash_list(
        &self,
        feed: &str,
        entries: &[(CompactString, u64)],
    ) -> Result<(), StoreError> {
        let name = table_name("hashlist", feed);
        let mut table = self
            .txn
            .open_table(TableDefinition::<u32, &[u8]>::new(&name))?;
        hashlist::write_list(&mut table, entries)?;
        self.bump_generation(feed)
    }

    /// Tells the search indexer that the feed's recipients changed.
    fn bump_generation(&self, feed: &str) -> Result<(), StoreError> {
        let mut meta = self.txn.open_table(META)?;
        let key = format!("generation/{feed}");
        let next = meta
            .get(key.as_str())?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0)
            + 1;
        meta.insert(key.as_str(), next.to_le_bytes().as_slice())?;
        Ok(())
    }

    /// The run fingerprint the feed's hashes were made under, and the
    /// mapping fingerprint its records' values are laid out under.
    pub fn set_fingerprint(
        &self,
        feed: &str,
        fingerprint: u64,
        mapping: u64,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(FINGERPRINTS)?
            .insert(feed, fingerprint)?;
        self.txn
            .open_table(META)?
            .insert(mapping_key(feed).as_str(), mapping.to_le_bytes().as_slice())?;
        Ok(())
    }

    pub fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        runs::put_run(&self.txn, run)
    }

    /// Marks the feed's held runs as superseded by `by`; returns them.
    pub fn supersede_held(&self, feed: &str, by: u64) -> Result<Vec<Run>, StoreError> {
        runs::supersede_held(&self.txn, feed, by)
    }

    /// Makes every change of the run durable at once.
    pub fn commit(self) -> Result<(), StoreError> {
        self.txn.commit()?;
        Ok(())
    }
}

/// A store to read: a running server's, or one opened read-only by the
/// caller (`Empty` when there is none yet).
pub enum ReadStore<'a> {
    Borrowed(&'a Store),
    Owned(Store),
    Empty,
}

impl ReadStore<'_> {
    pub fn get(&self) -> Option<&Store> {
        match self {
            ReadStore::Borrowed(s) => Some(s),
            ReadStore::Owned(s) => Some(s),
            ReadStore::Empty => None,
        }
    }
}

/// Reserves the next ID of the `key` counter in `meta` (1 first).
pub(super) fn take_next_id(txn: &redb::WriteTransaction, key: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let next = match meta.get(key)? {
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| StoreError::Damaged(format!("{key} is not 8 bytes")))?;
            u64::from_le_bytes(bytes)
        }
        None => 1,
    };
    meta.insert(key, (next + 1).to_le_bytes().as_slice())?;
    Ok(next)
}

#[cfg(test)]
mod tests;
