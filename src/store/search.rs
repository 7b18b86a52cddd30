//! The recipient search index: which keys (see [`crate::search`]) each
//! recipient is found by, kept beside the recipients and brought up to date
//! after the runs that change them (by `worker::indexer`), never inside a
//! run: a run's speed does not depend on it.
//!
//! Tables (per feed `F`), the first two in `blocks` (prefix-compressed
//! blocks of sorted entries):
//! - `search/F`: index keys (values empty).
//! - `search_ids/F`: ID → that recipient's key prefixes (what to remove
//!   when it changes or goes).
//! - `search_hashes/F`: the feed's (ID, raw hash) list as last indexed, in
//!   `hashlist` chunks: comparing it with `hashlist/F` names the recipients
//!   to index again.
//! - `search_meta`: feed → index state (u64: the feed's mapping
//!   fingerprint and the search layout) and the feed generation indexed.
//!
//! - `search_build/F`, `search_ids_build/F`: staging tables of a build.
//!
//! A pass patches a few changed recipients into the blocks they fall in,
//! in one short write transaction; when more changed than that would pay
//! for, the index is built anew *aside*: from a read snapshot into scratch
//! files, then into the staging tables in small write transactions, then
//! swapped in with `rename_table` (see [`Store::build_aside`]). The
//! store's only writer is never held for long, so a run waits for it at
//! most one small transaction.
//!
//! Invariants:
//! 1. `search/F` holds exactly the keys listed in `search_ids/F`.
//! 2. When `search_meta[F]` names the feed's current generation and state,
//!    the index holds exactly the keys of the stored recipients.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use compact_str::CompactString;
use rayon::slice::ParallelSliceMut;
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};

use super::{blocks, hashlist, optional, table_name, Store, StoreError, META};
use crate::import::record::Record;
use crate::search::{id_of_key, Filter, KeyRange, SearchLayout};

const SEARCH_META: TableDefinition<&str, &[u8]> = TableDefinition::new("search_meta");
/// With a filter, a search gathers this many times its cap before
/// filtering.
const FILTER_GATHER: usize = 10;

/// A build writes its blocks into the staging tables this many bytes a
/// write transaction: a few milliseconds of inserts and one commit, so a
/// run waits well under 200 ms for the writer.
const STAGE_TXN_BYTES: usize = 4 << 20;

/// What a pass calls back.
pub struct PassHooks<'a> {
    /// `(done, todo)` recipients, for the page.
    pub progress: &'a mut dyn FnMut(u64, u64),
    /// Called between steps of a build, outside any write transaction:
    /// returns once no run waits (the server's indexer waits while a run
    /// is under way, so the run has the cores), true when it waited: the
    /// snapshot being read is then likely out of date, and a build still
    /// reading it gives up (see [`PassOutcome::Overtaken`]).
    pub yield_to_runs: &'a mut dyn FnMut() -> bool,
}

/// Keys a changed recipient is assumed to touch, when choosing between
/// patching blocks and building anew.
const KEYS_PER_RECIPIENT: u64 = 16;

type Blocks<'t> = Table<'t, &'static [u8], &'static [u8]>;

fn blocks_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn generation_key(feed: &str) -> String {
    format!("generation/{feed}")
}

/// What a query asks of the index.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Key ranges of a search; empty = no search.
    pub ranges: Vec<KeyRange>,
    /// Only recipients with this field value.
    pub filter: Option<Filter>,
    pub offset: usize,
    pub limit: usize,
    /// Matches counted at most; beyond it the page says "more than".
    pub cap: usize,
}

/// One page of matches, in ID order.
#[derive(Debug, Default)]
pub struct SearchPage {
    /// Matches (at most the cap).
    pub total: u64,
    /// More matches exist than `total`.
    pub capped: bool,
    pub recipients: Vec<(String, Record)>,
}

/// How far the index of a feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// Nothing to do: the index was current, at this generation.
    Current { generation: u64 },
    /// The index was brought up to date; this many recipients were indexed
    /// again.
    Updated(u64),
    /// A run went by while the index was being built from an older
    /// snapshot: the build was dropped, the next pass starts from the
    /// store as it is now (one build instead of an outdated one and then
    /// another).
    Overtaken,
}

/// Index state: the feed's mapping fingerprint and the search layout.
fn index_state(fingerprint: Option<u64>, layout: &SearchLayout) -> u64 {
    let mut bytes = [0u8; 17];
    bytes[0] = fingerprint.is_some() as u8;
    bytes[1..9].copy_from_slice(&fingerprint.unwrap_or(0).to_le_bytes());
    bytes[9..].copy_from_slice(&layout.fingerprint().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Key prefixes (`[slot] term`, without the ID) as stored in `search_ids`.
fn encode_prefixes(keys: &[Vec<u8>], id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys {
        let prefix = &k[..k.len() - id.len() - 1];
        out.extend_from_slice(&(prefix.len() as u16).to_le_bytes());
        out.extend_from_slice(prefix);
    }
    out
}

fn decode_keys(bytes: &[u8], id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let damaged = || StoreError::Damaged("a search index entry is truncated".into());
    let mut keys = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = bytes.get(at..at + 2).ok_or_else(damaged)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        at += 2;
        let prefix = bytes.get(at..at + len).ok_or_else(damaged)?;
        at += len;
        let mut key = Vec::with_capacity(len + 1 + id.len());
        key.extend_from_slice(prefix);
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        keys.push(key);
    }
    Ok(keys)
}

/// IDs whose hash differs between two sorted (ID, hash) lists, or that
/// are in only one of them.
fn changed_ids(
    now: &[(CompactString, u64)],
    indexed: &[(CompactString, u64)],
) -> Vec<CompactString> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < now.len() || j < indexed.len() {
        match (now.get(i), indexed.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    out.push(a.0.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(a.0.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                out.push(b.0.clone());
                j += 1;
            }
            (Some(a), None) => {
                out.push(a.0.clone());
                i += 1;
            }
            (None, Some(b)) => {
                out.push(b.0.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// How a pass brings an index that exists up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Patch or rebuild, whichever writes less.
    Cheapest,
    #[cfg_attr(not(test), allow(dead_code))]
    Patch,
    #[cfg_attr(not(test), allow(dead_code))]
    Rebuild,
}

struct Snapshot {
    generation: u64,
    state: u64,
    hashes: Vec<(CompactString, u64)>,
    indexed_hashes: Vec<(CompactString, u64)>,
    /// The index was built under another mapping or layout: build it anew.
    fresh: bool,
    index_blocks: u64,
}

impl Store {
    /// A number that changes whenever the feed's recipients do.
    pub fn feed_generation(&self, feed: &str) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let Some(meta) = optional(txn.open_table(META))? else {
            return Ok(0);
        };
        Ok(meta
            .get(generation_key(feed).as_str())?
            .and_then(|v| u64_at(v.value(), 0))
            .unwrap_or(0))
    }

    /// What a pass works from, read in one transaction; `Err(generation)`
    /// when the index is current.
    fn search_snapshot(
        txn: &ReadTransaction,
        feed: &str,
        layout: &SearchLayout,
    ) -> Result<Result<Snapshot, u64>, StoreError> {
        let generation = match optional(txn.open_table(META))? {
            Some(meta) => meta
                .get(generation_key(feed).as_str())?
                .and_then(|v| u64_at(v.value(), 0))
                .unwrap_or(0),
            None => 0,
        };
        let fingerprint = match optional(txn.open_table(super::FINGERPRINTS))? {
            Some(t) => t.get(feed)?.map(|v| v.value()),
            None => None,
        };
        let state = index_state(fingerprint, layout);
        let indexed = match optional(txn.open_table(SEARCH_META))? {
            Some(meta) => meta
                .get(feed)?
                .and_then(|v| Some((u64_at(v.value(), 0)?, u64_at(v.value(), 8)?))),
            None => None,
        };
        if indexed == Some((state, generation)) {
            return Ok(Err(generation));
        }
        let read_list = |kind: &str| -> Result<Vec<(CompactString, u64)>, StoreError> {
            let name = table_name(kind, feed);
            let def: TableDefinition<u32, &[u8]> = TableDefinition::new(&name);
            match optional(txn.open_table(def))? {
                Some(t) => hashlist::read_list(&t),
                None => Ok(Vec::new()),
            }
        };
        let fresh = indexed.map(|(s, _)| s) != Some(state);
        let index_blocks = match optional(txn.open_table(blocks_def(&table_name("search", feed))))?
        {
            Some(t) => t.len()?,
            None => 0,
        };
        Ok(Ok(Snapshot {
            generation,
            state,
            hashes: read_list("hashlist")?,
            indexed_hashes: if fresh {
                Vec::new()
            } else {
                read_list("search_hashes")?
            },
            fresh,
            index_blocks,
        }))
    }

    /// One pass of the indexer over a feed: indexes again every recipient
    /// added, changed or removed since the last pass, or builds the index
    /// anew when the mapping or the layout changed or too many did.
    /// A patch is one short write transaction; a build reads a snapshot
    /// and writes the store only in short transactions (see
    /// [`Store::build_aside`]), so a run never waits long for the writer.
    pub fn update_search_index(
        &self,
        feed: &str,
        layout: &SearchLayout,
        hooks: PassHooks,
    ) -> Result<PassOutcome, StoreError> {
        self.index_pass(feed, layout, hooks, Strategy::Cheapest)
    }

    pub(crate) fn index_pass(
        &self,
        feed: &str,
        layout: &SearchLayout,
        hooks: PassHooks,
        strategy: Strategy,
    ) -> Result<PassOutcome, StoreError> {
        let snapshot = self.begin_read()?;
        let snap = match Store::search_snapshot(&snapshot, feed, layout)? {
            Ok(snap) => snap,
            Err(generation) => return Ok(PassOutcome::Current { generation }),
        };
        let changed = if snap.fresh {
            Vec::new()
        } else {
            changed_ids(&snap.hashes, &snap.indexed_hashes)
        };
        // Patching rewrites each block a changed key falls in; past half
        // of the blocks, writing them all in order is cheaper.
        let rebuild = snap.fresh
            || match strategy {
                Strategy::Cheapest => {
                    changed.len() as u64 * KEYS_PER_RECIPIENT > snap.index_blocks / 2
                }
                Strategy::Patch => false,
                Strategy::Rebuild => true,
            };
        if rebuild {
            return Ok(
                match self.build_aside(snapshot, feed, layout, &snap, hooks)? {
                    Some(indexed) => PassOutcome::Updated(indexed),
                    None => PassOutcome::Overtaken,
                },
            );
        }
        // The patch reads the records as they are now, perhaps newer than
        // the snapshot: the next pass then indexes those again (a patch
        // of the same recipient twice ends the same).
        drop(snapshot);
        let txn = self.begin_write()?;
        patch(&txn, feed, layout, &changed)?;
        record_indexed(&txn, feed, &snap)?;
        txn.commit()?;
        (hooks.progress)(changed.len() as u64, changed.len() as u64);
        Ok(PassOutcome::Updated(changed.len() as u64))
    }

    /// Builds the feed's index anew from the snapshot `snapshot` without
    /// the writer: the blocks go to scratch files first
    /// ([`build_blocks`]), then into staging tables in write transactions
    /// of at most [`STAGE_TXN_BYTES`] each, the writer released between
    /// them (a run waiting for it gets it next); a last short transaction
    /// swaps the staging tables in with `rename_table` and records the
    /// snapshot's generation and hash list. A run that committed during
    /// the build moved the generation: the next pass patches the
    /// difference. Returns the recipients indexed, or `None` when a run
    /// went by while the snapshot was being read (the build is dropped).
    fn build_aside(
        &self,
        snapshot: ReadTransaction,
        feed: &str,
        layout: &SearchLayout,
        snap: &Snapshot,
        mut hooks: PassHooks,
    ) -> Result<Option<u64>, StoreError> {
        let staged = Staged::of(feed);
        self.clear_staging(&staged)?;
        let scratch = Spills::create(
            &self.path.with_extension("search-build"),
            layout.slots().len(),
        )?;
        let overtaken = Overtaken {
            store: self,
            feed,
            generation: snap.generation,
        };
        let built = build_blocks(&snapshot, feed, layout, &scratch, &mut hooks, &overtaken)?;
        // The snapshot's pages may be reused once it is dropped.
        drop(snapshot);
        let Some(built) = built else {
            return Ok(None);
        };
        // From here the build is written whatever runs go by: the next
        // pass patches what they changed.
        (hooks.yield_to_runs)();
        self.stage_blocks(&staged.ids, &built.ids, &mut hooks)?;
        self.stage_blocks(&staged.keys, &built.keys, &mut hooks)?;
        (hooks.yield_to_runs)();
        let txn = self.begin_write()?;
        let started = std::time::Instant::now();
        for (live, staging) in [
            (table_name("search_ids", feed), &staged.ids),
            (table_name("search", feed), &staged.keys),
        ] {
            txn.delete_table(blocks_def(&live))?;
            txn.rename_table(blocks_def(staging), blocks_def(&live))?;
        }
        record_indexed(&txn, feed, snap)?;
        txn.commit()?;
        tracing::debug!(
            feed,
            ms = started.elapsed().as_millis() as u64,
            "search index: swapped in"
        );
        // redb reuses the pages a commit freed (the old index) only after
        // another commit (redb#829): an empty one now, so that the next
        // run neither grows the file by them nor waits for this.
        self.begin_write()?.commit()?;
        Ok(Some(built.recipients))
    }

    /// Empties the staging tables (a build stopped by a crash may have
    /// left blocks in them).
    fn clear_staging(&self, staged: &Staged) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        for name in [&staged.ids, &staged.keys] {
            txn.delete_table(blocks_def(name))?;
            txn.open_table(blocks_def(name))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Copies the blocks of a scratch file into the staging table `table`,
    /// [`STAGE_TXN_BYTES`] a transaction: each batch is read before the
    /// writer is taken, so the writer is held only for the inserts and
    /// the commit.
    fn stage_blocks(
        &self,
        table: &str,
        file: &Path,
        hooks: &mut PassHooks,
    ) -> Result<(), StoreError> {
        let mut reader =
            BufReader::with_capacity(256 * 1024, File::open(file).map_err(scratch_error)?);
        // The longest the writer was held, for the debug log.
        let mut longest = std::time::Duration::ZERO;
        loop {
            let batch = read_block_batch(&mut reader, STAGE_TXN_BYTES)?;
            if batch.is_empty() {
                tracing::debug!(
                    table,
                    longest_ms = longest.as_millis() as u64,
                    "search index: staged"
                );
                return Ok(());
            }
            (hooks.yield_to_runs)();
            let txn = self.begin_write()?;
            let started = std::time::Instant::now();
            {
                let mut t = txn.open_table(blocks_def(table))?;
                for (key, block) in &batch {
                    t.insert(key.as_slice(), block.as_slice())?;
                }
            }
            txn.commit()?;
            longest = longest.max(started.elapsed());
        }
    }

    /// One page of the recipients a query finds, with their records.
    pub fn search_recipients(
        &self,
        feed: &str,
        query: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let txn = self.begin_read()?;
        let records_name = table_name("recipients", feed);
        let Some(records) =
            optional(txn.open_table(TableDefinition::<&str, &[u8]>::new(&records_name)))?
        else {
            return Ok(SearchPage::default());
        };
        let (total, capped, ids) = if query.ranges.is_empty() && query.filter.is_none() {
            let name = table_name("hashlist", feed);
            let total = records.len()?;
            let ids = match optional(txn.open_table(TableDefinition::<u32, &[u8]>::new(&name)))? {
                Some(t) => hashlist::ids_at(&t, query.offset, query.limit)?,
                None => Vec::new(),
            };
            (total, false, ids)
        } else {
            match optional(txn.open_table(blocks_def(&table_name("search", feed))))? {
                Some(search) => matching_ids(&search, query)?,
                None => (0, false, Vec::new()),
            }
        };
        let mut recipients = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = records.get(id.as_str())? {
                let record =
                    Record::decode(v.value()).map_err(|e| StoreError::Damaged(e.to_string()))?;
                recipients.push((id, record));
            }
        }
        Ok(SearchPage {
            total,
            capped,
            recipients,
        })
    }
}

#[cfg(test)]
impl Store {
    /// Makes the next pass look at the feed again.
    pub(crate) fn bump_generation_for_tests(&self, feed: &str) {
        let txn = self.writable().unwrap().begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            let key = generation_key(feed);
            let now = meta
                .get(key.as_str())
                .unwrap()
                .and_then(|v| u64_at(v.value(), 0))
                .unwrap_or(0);
            meta.insert(key.as_str(), (now + 1).to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    /// Everything in the feed's index and reverse map, for tests.
    pub(crate) fn search_dump(&self, feed: &str) -> (Vec<Vec<u8>>, Vec<blocks::Entry>) {
        let txn = self.begin_read().unwrap();
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        if let Some(t) = optional(txn.open_table(blocks_def(&table_name("search", feed)))).unwrap()
        {
            blocks::range(&t, b"", b"\xff", |k, _| {
                keys.push(k.to_vec());
                true
            })
            .unwrap();
        }
        if let Some(t) =
            optional(txn.open_table(blocks_def(&table_name("search_ids", feed)))).unwrap()
        {
            blocks::range(&t, b"", b"\xff", |k, v| {
                let mut prefixes = decode_keys(v, std::str::from_utf8(k).unwrap()).unwrap();
                prefixes.sort();
                ids.push((k.to_vec(), prefixes.concat()));
                true
            })
            .unwrap();
        }
        (keys, ids)
    }
}

/// Writes the index state, generation and hash list of the snapshot a
/// pass indexed.
fn record_indexed(txn: &WriteTransaction, feed: &str, snap: &Snapshot) -> Result<(), StoreError> {
    let name = table_name("search_hashes", feed);
    let mut hashes = txn.open_table(TableDefinition::<u32, &[u8]>::new(&name))?;
    hashlist::write_list(&mut hashes, &snap.hashes)?;
    let mut meta = txn.open_table(SEARCH_META)?;
    let mut value = snap.state.to_le_bytes().to_vec();
    value.extend_from_slice(&snap.generation.to_le_bytes());
    meta.insert(feed, value.as_slice())?;
    Ok(())
}

/// The staging tables a build writes before they replace the index.
struct Staged {
    ids: String,
    keys: String,
}

impl Staged {
    fn of(feed: &str) -> Staged {
        Staged {
            ids: table_name("search_ids_build", feed),
            keys: table_name("search_build", feed),
        }
    }
}

/// A built index in scratch files of blocks (see [`spill_block`]).
struct BuiltBlocks {
    ids: PathBuf,
    keys: PathBuf,
    recipients: u64,
}

/// Whether a run changed the feed since the snapshot a build reads.
struct Overtaken<'s> {
    store: &'s Store,
    feed: &'s str,
    generation: u64,
}

impl Overtaken<'_> {
    /// Waits while a run is under way; true when one went by and changed
    /// this feed (a run of another feed, or a reminder, leaves the
    /// snapshot as good as it was).
    fn after_runs(&self, hooks: &mut PassHooks) -> Result<bool, StoreError> {
        Ok((hooks.yield_to_runs)() && self.store.feed_generation(self.feed)? != self.generation)
    }
}

/// How often (in records) a build looks whether a run waits.
const YIELD_EVERY: usize = 4096;

/// Builds the feed's index from the records of a snapshot into two scratch
/// files of finished blocks: the reverse map's blocks as the records come
/// (in ID order), each slot's keys to a scratch file of its own; then slot
/// by slot (slots are in key order) the keys are sorted in memory and cut
/// into blocks. Memory stays at one slot's keys; the store is only read.
/// `None` when a run changed the feed meanwhile (see
/// [`PassHooks::yield_to_runs`]).
fn build_blocks(
    snapshot: &ReadTransaction,
    feed: &str,
    layout: &SearchLayout,
    spills: &Spills,
    hooks: &mut PassHooks,
    overtaken: &Overtaken,
) -> Result<Option<BuiltBlocks>, StoreError> {
    let built = BuiltBlocks {
        ids: spills.dir.join("ids.blocks"),
        keys: spills.dir.join("keys.blocks"),
        recipients: 0,
    };
    let mut ids_out = block_file(&built.ids)?;
    let mut keys_out = block_file(&built.keys)?;
    let records_name = table_name("recipients", feed);
    let Some(records) =
        optional(snapshot.open_table(TableDefinition::<&str, &[u8]>::new(&records_name)))?
    else {
        flush_block_file(ids_out)?;
        flush_block_file(keys_out)?;
        return Ok(Some(built));
    };
    let total = records.len()?;
    let slots = layout.slots();
    let mut writers = spills.writers()?;
    {
        let mut builder =
            blocks::Builder::new(|k: &[u8], b: &[u8]| spill_block(&mut ids_out, k, b));
        let mut keys = Vec::new();
        let mut prefixes = Vec::new();
        for (n, entry) in records.iter()?.enumerate() {
            let (id, bytes) = entry?;
            let id = id.value();
            let values = Record::borrowed_values(bytes.value())
                .map_err(|e| StoreError::Damaged(e.to_string()))?;
            prefixes.clear();
            for (slot, out) in slots.iter().zip(writers.iter_mut()) {
                keys.clear();
                if let Some(value) = values.get(slot.field) {
                    layout.push_slot_keys(*slot, id, value, &mut keys);
                }
                for k in &keys {
                    spill(out, k)?;
                }
                prefixes.extend(encode_prefixes(&keys, id));
            }
            builder.push(id.as_bytes(), &prefixes)?;
            if n % YIELD_EVERY == 0 && overtaken.after_runs(hooks)? {
                return Ok(None);
            }
            if n % 100_000 == 0 {
                (hooks.progress)(n as u64 / 2, total);
            }
        }
        let bytes = builder.finish()?;
        tracing::debug!(feed, bytes, "search index: reverse map built");
    }
    drop(writers);
    flush_block_file(ids_out)?;
    let mut builder = blocks::Builder::new(|k: &[u8], b: &[u8]| spill_block(&mut keys_out, k, b));
    let mut key_count = 0usize;
    for n in 0..slots.len() {
        if overtaken.after_runs(hooks)? {
            return Ok(None);
        }
        let bytes = spills.read(n)?;
        let mut spans = spans_of(&bytes)?;
        spans.par_sort_unstable_by(|a, b| bytes[a.clone()].cmp(&bytes[b.clone()]));
        spans.dedup_by(|a, b| bytes[a.clone()] == bytes[b.clone()]);
        key_count += spans.len();
        for span in spans {
            builder.push(&bytes[span], &[])?;
        }
        (hooks.progress)(
            total / 2 + total * (n as u64 + 1) / (2 * slots.len() as u64),
            total,
        );
    }
    let bytes = builder.finish()?;
    flush_block_file(keys_out)?;
    tracing::debug!(feed, keys = key_count, bytes, "search index: keys built");
    Ok(Some(BuiltBlocks {
        recipients: total,
        ..built
    }))
}

fn block_file(path: &Path) -> Result<BufWriter<File>, StoreError> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(256 * 1024, f))
        .map_err(scratch_error)
}

fn flush_block_file(mut out: BufWriter<File>) -> Result<(), StoreError> {
    out.flush().map_err(scratch_error)
}

/// One block in a scratch file of blocks: its redb key, then its bytes,
/// each as [`spill`] writes a key.
fn spill_block(out: &mut BufWriter<File>, key: &[u8], block: &[u8]) -> Result<(), StoreError> {
    spill(out, key)?;
    spill(out, block)
}

/// The next blocks of a scratch file of blocks, about `max_bytes` of them
/// (at least one); empty at its end.
fn read_block_batch(
    reader: &mut impl Read,
    max_bytes: usize,
) -> Result<Vec<blocks::Entry>, StoreError> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while bytes < max_bytes {
        let Some(key) = read_spilled(reader)? else {
            break;
        };
        let block = read_spilled(reader)?.ok_or_else(truncated_scratch)?;
        bytes += key.len() + block.len();
        batch.push((key, block));
    }
    Ok(batch)
}

fn truncated_scratch() -> StoreError {
    StoreError::Damaged("a search index scratch file is truncated".into())
}

/// One entry as [`spill`] wrote it; `None` at the end of the file.
fn read_spilled(reader: &mut impl Read) -> Result<Option<Vec<u8>>, StoreError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(scratch_error(e)),
    }
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    reader.read_exact(&mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => truncated_scratch(),
        _ => scratch_error(e),
    })?;
    Ok(Some(bytes))
}

/// Scratch files, one per slot, removed when dropped.
struct Spills {
    dir: PathBuf,
    count: usize,
}

fn scratch_error(source: std::io::Error) -> StoreError {
    StoreError::Output {
        what: "the search index cannot use its scratch folder".into(),
        source,
    }
}

impl Spills {
    fn create(dir: &Path, count: usize) -> Result<Spills, StoreError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(scratch_error)?;
        Ok(Spills {
            dir: dir.to_owned(),
            count,
        })
    }

    fn path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("slot-{n}"))
    }

    fn writers(&self) -> Result<Vec<BufWriter<File>>, StoreError> {
        (0..self.count)
            .map(|n| {
                File::create(self.path(n))
                    .map(|f| BufWriter::with_capacity(256 * 1024, f))
                    .map_err(scratch_error)
            })
            .collect()
    }

    fn read(&self, n: usize) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.path(n)).map_err(scratch_error)
    }
}

impl Drop for Spills {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One key in a scratch file: u32 length (LE), bytes.
fn spill(out: &mut BufWriter<File>, key: &[u8]) -> Result<(), StoreError> {
    out.write_all(&(key.len() as u32).to_le_bytes())
        .and_then(|()| out.write_all(key))
        .map_err(scratch_error)
}

fn spans_of(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, StoreError> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        at += 4;
        if at + len > bytes.len() {
            break;
        }
        spans.push(at..at + len);
        at += len;
    }
    if at != bytes.len() {
        return Err(StoreError::Damaged(
            "a search index scratch file is truncated".into(),
        ));
    }
    Ok(spans)
}

/// Replaces the keys of `ids` by those of their records now.
fn patch(
    txn: &WriteTransaction,
    feed: &str,
    layout: &SearchLayout,
    ids: &[CompactString],
) -> Result<(), StoreError> {
    let records_name = table_name("recipients", feed);
    let records = optional(txn.open_table(TableDefinition::<&str, &[u8]>::new(&records_name)))?;
    let mut by_id: Blocks = txn.open_table(blocks_def(&table_name("search_ids", feed)))?;
    let mut search: Blocks = txn.open_table(blocks_def(&table_name("search", feed)))?;
    let mut id_changes = Vec::with_capacity(ids.len());
    let mut stale = Vec::new();
    let mut fresh = Vec::new();
    for id in ids {
        if let Some(old) = blocks::get(&by_id, id.as_bytes())? {
            stale.extend(decode_keys(&old, id)?);
        }
        let record = match &records {
            Some(t) => t.get(id.as_str())?.map(|v| Record::decode(v.value())),
            None => None,
        };
        match record {
            Some(record) => {
                let record = record.map_err(|e| StoreError::Damaged(e.to_string()))?;
                let keys = layout.keys(id, &record.values);
                id_changes.push((id.as_bytes().to_vec(), Some(encode_prefixes(&keys, id))));
                fresh.extend(keys);
            }
            None => id_changes.push((id.as_bytes().to_vec(), None)),
        }
    }
    let mut key_changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = stale
        .into_iter()
        .map(|k| (k, None))
        .chain(fresh.into_iter().map(|k| (k, Some(Vec::new()))))
        .collect();
    // A key both stale and fresh stays: the put sorts last and wins.
    key_changes.sort();
    key_changes.reverse();
    key_changes.dedup_by(|a, b| a.0 == b.0);
    key_changes.reverse();
    blocks::apply(&mut search, &key_changes)?;
    blocks::apply(&mut by_id, &id_changes)?;
    Ok(())
}

/// (matches counted, more than that exist, the IDs of the page).
fn matching_ids(
    search: &impl ReadableTable<&'static [u8], &'static [u8]>,
    query: &SearchQuery,
) -> Result<(u64, bool, Vec<String>), StoreError> {
    let window = query.offset..query.offset.saturating_add(query.limit);
    if query.ranges.is_empty() {
        // A filter alone: its keys are in ID order already.
        let Some(filter) = &query.filter else {
            return Ok((0, false, Vec::new()));
        };
        let (start, end) = filter.range();
        let (mut total, mut capped) = (0usize, false);
        let mut ids = Vec::new();
        blocks::range(search, &start, &end, |k, _| {
            if total >= query.cap {
                capped = true;
                return false;
            }
            if window.contains(&total) {
                ids.push(id_of_key(k).unwrap_or_default().to_string());
            }
            total += 1;
            true
        })?;
        return Ok((total as u64, capped, ids));
    }
    // Search hits, in ID order; with a filter, more are gathered (they are
    // thinned out after).
    let gather = match query.filter {
        Some(_) => query.cap.saturating_mul(FILTER_GATHER),
        None => query.cap,
    };
    let mut found: Vec<String> = Vec::new();
    let mut capped = false;
    for (start, end) in &query.ranges {
        blocks::range(search, start, end, |k, _| {
            let Some(id) = id_of_key(k) else {
                return true;
            };
            // Repeats (one person found twice) count here and are removed
            // below: cheaper than a set lookup per key.
            if found.len() >= gather {
                capped = true;
                return false;
            }
            found.push(id.to_string());
            true
        })?;
        if capped {
            break;
        }
    }
    found.sort_unstable();
    found.dedup();
    if let Some(filter) = &query.filter {
        // Asked in ID order, the filter's keys are read a block at a time.
        let (prefix, _) = filter.range();
        let mut probe = blocks::SortedProbe::new();
        let mut kept = Vec::new();
        let mut key = Vec::new();
        for id in found {
            key.clear();
            key.extend_from_slice(&prefix);
            key.extend_from_slice(id.as_bytes());
            if probe.contains(search, &key)? {
                if kept.len() >= query.cap {
                    capped = true;
                    break;
                }
                kept.push(id);
            }
        }
        found = kept;
    }
    let total = found.len() as u64;
    let ids = found
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    Ok((total, capped, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, u64)]) -> Vec<(CompactString, u64)> {
        entries
            .iter()
            .map(|(id, h)| (CompactString::from(*id), *h))
            .collect()
    }

    #[test]
    fn changed_ids_names_added_changed_and_removed() {
        let now = list(&[("a", 1), ("b", 2), ("d", 4), ("e", 5)]);
        let before = list(&[("a", 1), ("b", 9), ("c", 3), ("e", 5)]);
        let changed: Vec<String> = changed_ids(&now, &before)
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(changed, ["b", "c", "d"]);
        assert!(changed_ids(&now, &now).is_empty());
    }

    #[test]
    fn key_prefixes_round_trip() {
        let keys = vec![b"\x01abc\x00E1".to_vec(), b"\x41d\x00E1".to_vec()];
        let bytes = encode_prefixes(&keys, "E1");
        assert_eq!(decode_keys(&bytes, "E1").unwrap(), keys);
        assert!(decode_keys(&bytes[..bytes.len() - 1], "E1").is_err());
    }
}
