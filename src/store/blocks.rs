//! A sorted map of byte keys to byte values kept in blocks: one redb entry
//! per ~16 KiB of entries, keyed by the block's first key.
//!
//! Why: the search index holds a dozen keys per recipient. As one redb
//! entry each, a million recipients made a 1.7 GB index (per-entry overhead
//! and half-full pages after random inserts) and took 68 s to build; in
//! prefix-compressed blocks written in order it is a fraction of both.
//!
//! Block layout, entries in key order: LEB128 bytes shared with the previous
//! key, LEB128 length of the rest, the rest, LEB128 value length, the value.
//!
//! Invariants:
//! 1. Every block is non-empty and its redb key is its first entry's key.
//! 2. All keys of a block sort before the next block's redb key.

use std::ops::Bound;

use redb::{ReadableTable, Table};

use super::StoreError;

/// A block is closed once it reaches this size.
const BLOCK_BYTES: usize = 4 * 1024;

pub(super) type Entry = (Vec<u8>, Vec<u8>);

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn damaged() -> StoreError {
    StoreError::Damaged(
        "a search index block is damaged; it is rebuilt if you delete the index (see README)"
            .into(),
    )
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<usize, StoreError> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at).ok_or_else(damaged)?;
        *at += 1;
        n |= ((b & 0x7F) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(damaged())
}

/// Writes entries (in key order) into one block's bytes.
#[derive(Default)]
struct BlockWriter {
    bytes: Vec<u8>,
    first: Vec<u8>,
    last: Vec<u8>,
}

impl BlockWriter {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        if self.bytes.is_empty() {
            self.first = key.to_vec();
        }
        let shared = self
            .last
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count();
        put_varint(&mut self.bytes, shared);
        put_varint(&mut self.bytes, key.len() - shared);
        self.bytes.extend_from_slice(&key[shared..]);
        put_varint(&mut self.bytes, value.len());
        self.bytes.extend_from_slice(value);
        self.last.clear();
        self.last.extend_from_slice(key);
    }

    fn full(&self) -> bool {
        self.bytes.len() >= BLOCK_BYTES
    }

    fn flush(&mut self, sink: &mut impl BlockSink) -> Result<(), StoreError> {
        if !self.bytes.is_empty() {
            sink(self.first.as_slice(), self.bytes.as_slice())?;
        }
        self.bytes.clear();
        self.last.clear();
        Ok(())
    }
}

/// Calls `each(key, value)` for the entries of one block, in order, until
/// it returns false; returns whether it was never told to stop.
fn for_each_in_block(
    bytes: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<bool, StoreError> {
    let mut key: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let shared = varint(bytes, &mut at)?;
        let rest = varint(bytes, &mut at)?;
        if shared > key.len() {
            return Err(damaged());
        }
        key.truncate(shared);
        key.extend_from_slice(bytes.get(at..at + rest).ok_or_else(damaged)?);
        at += rest;
        let len = varint(bytes, &mut at)?;
        let value = bytes.get(at..at + len).ok_or_else(damaged)?;
        at += len;
        if !each(&key, value) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn decode_block(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    for_each_in_block(bytes, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// Where finished blocks go: `(redb key, block bytes)`, in key order.
pub(super) trait BlockSink: FnMut(&[u8], &[u8]) -> Result<(), StoreError> {}
impl<S: FnMut(&[u8], &[u8]) -> Result<(), StoreError>> BlockSink for S {}

/// A sink that inserts the blocks into a table.
pub(super) fn into_table<'a, 't>(
    table: &'a mut Table<'t, &'static [u8], &'static [u8]>,
) -> impl BlockSink + use<'a, 't> {
    move |key: &[u8], block: &[u8]| {
        table.insert(key, block)?;
        Ok(())
    }
}

/// Cuts entries pushed in key order into blocks for a sink (an empty
/// table, or a scratch file the blocks are copied from later).
pub(super) struct Builder<S: BlockSink> {
    sink: S,
    block: BlockWriter,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<S: BlockSink> Builder<S> {
    pub fn new(sink: S) -> Self {
        Builder {
            sink,
            block: BlockWriter::default(),
            bytes: 0,
        }
    }

    /// `key` must sort after every key pushed before.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.block.full() {
            self.bytes += self.block.bytes.len() as u64;
            self.block.flush(&mut self.sink)?;
        }
        self.block.push(key, value);
        Ok(())
    }

    /// Returns the bytes written.
    pub fn finish(mut self) -> Result<u64, StoreError> {
        self.bytes += self.block.bytes.len() as u64;
        self.block.flush(&mut self.sink)?;
        Ok(self.bytes)
    }
}

/// Calls `each(key, value)` for every entry with `start <= key < end`, in
/// order, until it returns false.
pub(super) fn range(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    end: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StoreError> {
    // The block holding `start` begins at or before it.
    let first = match table.range::<&[u8]>(..=start)?.next_back() {
        Some(entry) => entry?.0.value().to_vec(),
        None => start.to_vec(),
    };
    for block in table.range::<&[u8]>(first.as_slice()..end)? {
        let (_, bytes) = block?;
        let mut past_end = false;
        let go_on = for_each_in_block(bytes.value(), |k, v| {
            if k < start {
                return true;
            }
            if k >= end {
                past_end = true;
                return false;
            }
            each(k, v)
        })?;
        if !go_on || past_end {
            break;
        }
    }
    Ok(())
}

/// Answers "is this key there?" for keys asked in ascending order,
/// decoding each block once however many of its keys are asked about.
pub(super) struct SortedProbe {
    /// Keys of the block last read (one buffer, with their ends), and the
    /// first key past it.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    first: Vec<u8>,
    next_block: Option<Vec<u8>>,
    loaded: bool,
}

impl SortedProbe {
    pub fn new() -> SortedProbe {
        SortedProbe {
            bytes: Vec::new(),
            ends: Vec::new(),
            first: Vec::new(),
            next_block: None,
            loaded: false,
        }
    }

    pub fn contains(
        &mut self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        let covered = self.loaded
            && key >= self.first.as_slice()
            && self.next_block.as_deref().is_none_or(|n| key < n);
        if !covered {
            self.load(table, key)?;
        }
        let key_at = |i: usize| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.bytes[start..self.ends[i]]
        };
        let (mut low, mut high) = (0, self.ends.len());
        while low < high {
            let mid = (low + high) / 2;
            match key_at(mid).cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }

    fn load(
        &mut self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<(), StoreError> {
        self.bytes.clear();
        self.ends.clear();
        self.loaded = true;
        match table.range::<&[u8]>(..=key)?.next_back() {
            Some(entry) => {
                let (first, bytes) = entry?;
                self.first = first.value().to_vec();
                for_each_in_block(bytes.value(), |k, _| {
                    self.bytes.extend_from_slice(k);
                    self.ends.push(self.bytes.len());
                    true
                })?;
            }
            None => self.first.clear(),
        }
        let after = (Bound::Excluded(key), Bound::Unbounded);
        self.next_block = match table.range::<&[u8]>(after)?.next() {
            Some(entry) => Some(entry?.0.value().to_vec()),
            None => None,
        };
        Ok(())
    }
}

/// The value of one key.
pub(super) fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut end = key.to_vec();
    end.push(0);
    let mut found = None;
    range(table, key, &end, |_, v| {
        found = Some(v.to_vec());
        false
    })?;
    Ok(found)
}

/// Applies changes sorted by key, without repeats: `Some(value)` puts,
/// `None` removes. Only the blocks the changes fall in are rewritten.
pub(super) fn apply(
    table: &mut Table<&'static [u8], &'static [u8]>,
    changes: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<(), StoreError> {
    let mut i = 0;
    while i < changes.len() {
        let key = changes[i].0.as_slice();
        let (block_key, entries) = match table.range::<&[u8]>(..=key)?.next_back() {
            Some(entry) => {
                let (k, v) = entry?;
                (Some(k.value().to_vec()), decode_block(v.value())?)
            }
            None => (None, Vec::new()),
        };
        let after = (Bound::Excluded(key), Bound::Unbounded);
        let next_block = match table.range::<&[u8]>(after)?.next() {
            Some(entry) => Some(entry?.0.value().to_vec()),
            None => None,
        };
        let mut j = i;
        while j < changes.len()
            && next_block
                .as_deref()
                .is_none_or(|n| changes[j].0.as_slice() < n)
        {
            j += 1;
        }
        let merged = merge(entries, &changes[i..j]);
        if let Some(k) = block_key {
            table.remove(k.as_slice())?;
        }
        let mut block = BlockWriter::default();
        let mut sink = into_table(table);
        for (k, v) in &merged {
            if block.full() {
                block.flush(&mut sink)?;
            }
            block.push(k, v);
        }
        block.flush(&mut sink)?;
        i = j;
    }
    Ok(())
}

fn merge(entries: Vec<Entry>, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len() + changes.len());
    let mut old = entries.into_iter().peekable();
    for (key, value) in changes {
        while let Some(e) = old.next_if(|e| e.0 < *key) {
            out.push(e);
        }
        old.next_if(|e| e.0 == *key);
        if let Some(v) = value {
            out.push((key.clone(), v.clone()));
        }
    }
    out.extend(old);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
    use std::collections::BTreeMap;

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");

    fn key(i: u32) -> Vec<u8> {
        format!("k{:06}", i * 7 % 10_007).into_bytes()
    }

    fn contents(db: &Database, start: &[u8], end: &[u8]) -> Vec<Entry> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        let mut out = Vec::new();
        range(&table, start, end, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn build_apply_and_range_agree_with_a_btreemap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..5000u32 {
            model.insert(key(i), i.to_le_bytes().to_vec());
        }
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            let mut b = Builder::new(into_table(&mut t));
            for (k, v) in &model {
                b.push(k, v).unwrap();
            }
            b.finish().unwrap();
            assert!(t.len().unwrap() > 2, "several blocks");
        }
        txn.commit().unwrap();
        // Removals, replacements and inserts before, inside and after.
        let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for i in (0..12_000u32).step_by(3) {
            let k = key(i);
            let change = if i % 2 == 0 {
                None
            } else {
                Some(vec![1, 2, 3])
            };
            changes.push((k, change));
        }
        changes.push((b"a".to_vec(), Some(b"first".to_vec())));
        changes.push((b"z".to_vec(), Some(b"last".to_vec())));
        changes.sort();
        changes.dedup_by(|a, b| a.0 == b.0);
        for (k, v) in &changes {
            match v {
                Some(v) => model.insert(k.clone(), v.clone()),
                None => model.remove(k),
            };
        }
        let txn = db.begin_write().unwrap();
        apply(&mut txn.open_table(T).unwrap(), &changes).unwrap();
        txn.commit().unwrap();
        let all: Vec<Entry> = model.clone().into_iter().collect();
        assert_eq!(contents(&db, b"", b"\xff"), all);
        let part: Vec<Entry> = model
            .range(b"k001".to_vec()..b"k002".to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(!part.is_empty());
        assert_eq!(contents(&db, b"k001", b"k002"), part);
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert_eq!(get(&t, b"z").unwrap(), Some(b"last".to_vec()));
        // A key that is only a prefix of stored ones is not found.
        assert_eq!(get(&t, b"k00000").unwrap(), None);
        let mut probe = SortedProbe::new();
        let mut asked: Vec<Vec<u8>> = (0..12_000u32).step_by(7).map(key).collect();
        asked.push(b"a".to_vec());
        asked.push(b"zz".to_vec());
        asked.sort();
        for k in &asked {
            assert_eq!(
                probe.contains(&t, k).unwrap(),
                model.contains_key(k),
                "{k:?}"
            );
        }
    }

    #[test]
    fn damaged_block_is_an_error() {
        let mut w = BlockWriter::default();
        w.push(b"abc", b"v");
        w.push(b"abd", b"w");
        let bytes = w.bytes.clone();
        assert_eq!(decode_block(&bytes).unwrap().len(), 2);
        for cut in 1..bytes.len() {
            let _ = decode_block(&bytes[..cut]);
        }
        assert!(decode_block(&[5, 1, b'x', 0]).is_err());
    }
}
