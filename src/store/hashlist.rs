//! A feed's sorted (ID, raw hash) list, kept whole in chunks.
//!
//! Every run needs the whole list (the diff is a merge-join against it) and
//! rewrites much of it, so it is stored as a few hundred large values rather
//! than one redb entry per recipient: reading it is a sequential copy, and
//! writing it costs a few hundred inserts instead of a million.
//!
//! Chunk layout: repeated `u32` ID length (LE), ID bytes, `u64` hash (LE).

use compact_str::CompactString;
use redb::{ReadableTable, Table};

use super::StoreError;

/// Entries per chunk: about 100 KiB for typical IDs.
const CHUNK_ENTRIES: usize = 4096;

pub(super) fn encode_chunk(entries: &[(CompactString, u64)]) -> Vec<u8> {
    let size: usize = entries.iter().map(|(id, _)| 12 + id.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (id, hash) in entries {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&hash.to_le_bytes());
    }
    out
}

pub(super) fn decode_chunk(
    bytes: &[u8],
    out: &mut Vec<(CompactString, u64)>,
) -> Result<(), StoreError> {
    let damaged = || StoreError::Damaged("a hash list chunk is truncated".into());
    let mut at = 0;
    while at < bytes.len() {
        let len: [u8; 4] = bytes
            .get(at..at + 4)
            .ok_or_else(damaged)?
            .try_into()
            .map_err(|_| damaged())?;
        let len = u32::from_le_bytes(len) as usize;
        at += 4;
        let id = bytes.get(at..at + len).ok_or_else(damaged)?;
        let id = std::str::from_utf8(id)
            .map_err(|_| StoreError::Damaged("a hash list ID is not UTF-8".into()))?;
        at += len;
        let hash: [u8; 8] = bytes
            .get(at..at + 8)
            .ok_or_else(damaged)?
            .try_into()
            .map_err(|_| damaged())?;
        at += 8;
        out.push((CompactString::from(id), u64::from_le_bytes(hash)));
    }
    Ok(())
}

/// Replaces the whole list.
pub(super) fn write_list(
    table: &mut Table<u32, &[u8]>,
    entries: &[(CompactString, u64)],
) -> Result<(), StoreError> {
    let mut n = 0u32;
    for chunk in entries.chunks(CHUNK_ENTRIES) {
        table.insert(n, encode_chunk(chunk).as_slice())?;
        n += 1;
    }
    let stale: Vec<u32> = table
        .range(n..)?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for k in stale {
        table.remove(k)?;
    }
    Ok(())
}

/// Reads the whole list.
pub(super) fn read_list(
    table: &impl ReadableTable<u32, &'static [u8]>,
) -> Result<Vec<(CompactString, u64)>, StoreError> {
    let chunks = table.len()? as usize;
    let mut out = Vec::with_capacity(chunks * CHUNK_ENTRIES);
    for entry in table.iter()? {
        let (_, v) = entry?;
        decode_chunk(v.value(), &mut out)?;
    }
    Ok(out)
}

/// The IDs at positions `offset..offset + limit` of the list, reading only
/// the chunks that hold them.
pub(super) fn ids_at(
    table: &impl ReadableTable<u32, &'static [u8]>,
    offset: usize,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let first = (offset / CHUNK_ENTRIES) as u32;
    let mut skip = offset % CHUNK_ENTRIES;
    let mut out = Vec::with_capacity(limit);
    let mut entries = Vec::new();
    for chunk in table.range(first..)? {
        if out.len() >= limit {
            break;
        }
        let (_, v) = chunk?;
        entries.clear();
        decode_chunk(v.value(), &mut entries)?;
        out.extend(
            entries
                .drain(..)
                .skip(skip)
                .take(limit - out.len())
                .map(|(id, _)| id.to_string()),
        );
        skip = 0;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let entries: Vec<(CompactString, u64)> = (0..10)
            .map(|i| (CompactString::from(format!("E{i:03}é")), i * 7))
            .collect();
        let mut out = Vec::new();
        decode_chunk(&encode_chunk(&entries), &mut out).unwrap();
        assert_eq!(out, entries);
        let bytes = encode_chunk(&entries);
        assert!(decode_chunk(&bytes[..bytes.len() - 1], &mut Vec::new()).is_err());
    }
}
