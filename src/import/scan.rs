//! Pass 1: read the file in blocks, parse the blocks in parallel, and keep
//! per row only what the diff needs (ID, hash, where the row is).

use compact_str::CompactString;
use rayon::prelude::*;
use serde::Serialize;

use crate::config::Feed;

use super::header::{read_header, Header};
use super::input::Input;
use super::validate::{Cells, RowParser};

/// Blocks handed to one parser task. Big enough to amortise the task, small
/// enough that a batch of them stays a few tens of MiB.
const BLOCK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1252 => "windows-1252",
        }
    }
}

/// Why a whole file is refused (run state `failed`, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    /// The file's encoding, when it was read far enough to tell.
    pub encoding: Option<Encoding>,
}

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Rejection {
        Rejection {
            reason: reason.into(),
            encoding: None,
        }
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> Rejection {
        self.encoding = Some(encoding);
        self
    }
}

/// What pass 1 learnt about one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowShape {
    /// As many columns as the header.
    Whole,
    /// Too many or too few columns: flagged, but its ID (if readable) still
    /// protects a stored recipient.
    WrongColumnCount,
}

#[derive(Debug, Clone)]
pub struct ScannedRow {
    /// Trimmed ID; empty when the cell is empty or missing.
    pub id: CompactString,
    /// Hash of the mapped raw fields (see [`raw_hash`]).
    pub hash: u64,
    pub offset: u64,
    pub len: u32,
    /// Physical line where the record starts (header = line 1).
    pub line: u32,
    pub shape: RowShape,
}

/// The result of pass 1.
#[derive(Debug)]
pub struct Scan {
    pub header: Header,
    pub encoding: Encoding,
    /// Every data record read (blank lines excepted).
    pub rows_read: u64,
    pub filtered: u64,
    /// Rows that are not filtered, in file order.
    pub rows: Vec<ScannedRow>,
}

/// Reads the file once and returns its rows' IDs and hashes, or why the
/// whole file is refused. `progress` is told the bytes done so far.
pub fn scan_file(
    input: &dyn Input,
    feed: &Feed,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Scan, Rejection> {
    scan_file_against(input, feed, None, progress)
}

/// As [`scan_file`], with the feed's stored (ID, raw hash) list: a row
/// whose raw text hashes to its ID's stored hash is taken as unchanged
/// without being parsed. Pass it only when its hashes can be trusted (the
/// stored mapping fingerprint equals the feed's).
pub fn scan_file_against(
    input: &dyn Input,
    feed: &Feed,
    known: Option<&[(CompactString, u64)]>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Scan, Rejection> {
    if input.len() > feed.max_file_size {
        return Err(Rejection::new(format!(
            "the file is {} bytes, over this feed's max_file_size of {} bytes",
            input.len(),
            feed.max_file_size
        )));
    }
    let header = read_header(input, feed)?;
    let ctx = ScanContext {
        feed,
        header: &header,
        known,
    };
    let first = scan_rows(input, &ctx, IdDecoding::Guess, progress)?;
    // The header is part of the file: a Windows-1252 header makes the
    // whole file Windows-1252 even when every data row is plain ASCII.
    let encoding = if first.all_utf8 && !header.header_is_cp1252 {
        Encoding::Utf8
    } else {
        Encoding::Windows1252
    };
    // A block that happened to be valid UTF-8 in a Windows-1252 file decoded
    // its non-ASCII IDs as UTF-8: read again, decoding every ID as 1252.
    let rows = if encoding == Encoding::Windows1252 && first.non_ascii_ids_in_utf8_blocks {
        scan_rows(input, &ctx, IdDecoding::Windows1252, progress)?
    } else {
        first
    };
    let mut header = header;
    if header.header_is_cp1252 != (encoding == Encoding::Windows1252) {
        header.header_is_cp1252 = encoding == Encoding::Windows1252;
        header.columns = header
            .raw_columns
            .iter()
            .map(|c| decode_field(c, encoding).trim().to_string())
            .collect();
    }
    Ok(Scan {
        header,
        encoding,
        rows_read: rows.rows_read,
        filtered: rows.filtered,
        rows: rows.rows,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdDecoding {
    /// UTF-8 where the block is valid UTF-8, Windows-1252 otherwise.
    Guess,
    Windows1252,
}

struct ScannedRows {
    rows: Vec<ScannedRow>,
    rows_read: u64,
    filtered: u64,
    all_utf8: bool,
    non_ascii_ids_in_utf8_blocks: bool,
}

/// One block's parse, with line numbers relative to the block.
struct BlockResult {
    rows: Vec<ScannedRow>,
    rows_read: u64,
    filtered: u64,
    newlines: u64,
    utf8: bool,
    non_ascii_ids: bool,
}

struct Block {
    offset: u64,
    bytes: Vec<u8>,
}

fn scan_rows(
    input: &dyn Input,
    ctx: &ScanContext,
    ids: IdDecoding,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ScannedRows, Rejection> {
    let (feed, header) = (ctx.feed, ctx.header);
    let batch_blocks = rayon::current_num_threads().max(1) * 2;
    let mut out = ScannedRows {
        rows: Vec::new(),
        rows_read: 0,
        filtered: 0,
        all_utf8: true,
        non_ascii_ids_in_utf8_blocks: false,
    };
    let mut reader = BlockReader::new(input, header.data_start, header.delimiter);
    let mut lines_before = header.lines_before_data;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut batch = read_batch(&mut reader, batch_blocks, &mut pool)?;
    while !batch.is_empty() {
        // Read the next batch while this one is parsed.
        let (results, next) = rayon::join(
            || {
                batch
                    .par_iter()
                    .map(|b| parse_block(b, ctx, ids))
                    .collect::<Vec<BlockResult>>()
            },
            || read_batch(&mut reader, batch_blocks, &mut pool),
        );
        for r in results {
            let base = lines_before;
            reserve_for_file(&mut out.rows, r.rows.len(), reader.offset, input.len());
            out.rows.extend(r.rows.into_iter().map(|mut row| {
                row.line = u32::try_from(base + row.line as u64).unwrap_or(u32::MAX);
                row
            }));
            lines_before += r.newlines;
            out.rows_read += r.rows_read;
            out.filtered += r.filtered;
            out.all_utf8 &= r.utf8;
            out.non_ascii_ids_in_utf8_blocks |= r.utf8 && r.non_ascii_ids;
        }
        if out.rows_read > feed.max_rows {
            let encoding = if out.all_utf8 {
                Encoding::Utf8
            } else {
                Encoding::Windows1252
            };
            return Err(Rejection::new(format!(
                "the file has more than {} data rows, this feed's max_rows",
                feed.max_rows
            ))
            .with_encoding(encoding));
        }
        progress(reader.offset);
        pool.extend(batch.drain(..).map(|b| b.bytes));
        batch = next?;
    }
    Ok(out)
}

/// Reserves room for the whole file's rows once, estimated from the rows
/// per byte so far, so that the row list is not copied while it doubles.
fn reserve_for_file(rows: &mut Vec<ScannedRow>, adding: usize, read_to: u64, file_len: u64) {
    if rows.capacity() - rows.len() >= adding {
        return;
    }
    let seen = (rows.len() + adding) as u64;
    let estimate = seen.saturating_mul(file_len) / read_to.max(1);
    let want = (estimate + estimate / 16) as usize;
    rows.reserve(want.max(rows.len() + adding) - rows.len());
}

fn read_batch(
    reader: &mut BlockReader,
    blocks: usize,
    pool: &mut Vec<Vec<u8>>,
) -> Result<Vec<Block>, Rejection> {
    let mut batch = Vec::with_capacity(blocks);
    while batch.len() < blocks {
        match reader.next_block(pool.pop().unwrap_or_default())? {
            Some(b) => batch.push(b),
            None => break,
        }
    }
    Ok(batch)
}

/// Reads the file sequentially in blocks that end on a record boundary.
struct BlockReader<'a> {
    input: &'a dyn Input,
    offset: u64,
    delimiter: u8,
}

impl<'a> BlockReader<'a> {
    fn new(input: &'a dyn Input, offset: u64, delimiter: u8) -> Self {
        BlockReader {
            input,
            offset,
            delimiter,
        }
    }

    /// The next block, read into `bytes` (a reused buffer).
    fn next_block(&mut self, mut bytes: Vec<u8>) -> Result<Option<Block>, Rejection> {
        let len = self.input.len();
        if self.offset >= len {
            return Ok(None);
        }
        let mut want = BLOCK_BYTES;
        loop {
            let take = (len - self.offset).min(want as u64) as usize;
            bytes.resize(take, 0);
            self.input
                .read_exact_at(self.offset, &mut bytes)
                .map_err(|e| Rejection::new(format!("the file cannot be read: {e}")))?;
            let at_end = self.offset + take as u64 == len;
            let cut = if at_end {
                Some(take)
            } else {
                last_record_boundary(&bytes, self.delimiter)
            };
            if let Some(cut) = cut {
                bytes.truncate(cut);
                let block = Block {
                    offset: self.offset,
                    bytes,
                };
                self.offset += cut as u64;
                return Ok(Some(block));
            }
            // One record longer than the block (or a quote never closed):
            // read more. The size limit bounds this.
            want = want.saturating_mul(2);
        }
    }
}

/// Calls `at_end` with the end (just after its `\n`) of every record in
/// `buf`, following the csv crate's quoting rules: a quote opens a quoted
/// field only at the start of a field (after a line break or a byte for
/// which `is_delimiter` holds), `""` inside quotes is an escaped quote.
/// Stops when `at_end` returns false.
pub(crate) fn walk_record_ends(
    buf: &[u8],
    is_delimiter: impl Fn(u8) -> bool,
    mut at_end: impl FnMut(usize) -> bool,
) {
    let mut in_quotes = false;
    let mut closed_at = usize::MAX;
    for pos in memchr::memchr2_iter(b'"', b'\n', buf) {
        if buf[pos] == b'\n' {
            if !in_quotes && !at_end(pos + 1) {
                return;
            }
        } else if in_quotes {
            in_quotes = false;
            closed_at = pos;
        } else if pos > 0 && closed_at == pos - 1 {
            // The second quote of an escaped `""`.
            in_quotes = true;
        } else {
            let prev = if pos == 0 { b'\n' } else { buf[pos - 1] };
            in_quotes = prev == b'\n' || prev == b'\r' || is_delimiter(prev);
        }
    }
}

/// The end of the last complete record in `buf` (just after its `\n`).
pub(crate) fn last_record_boundary(buf: &[u8], delimiter: u8) -> Option<usize> {
    let mut last = None;
    walk_record_ends(
        buf,
        |b| b == delimiter,
        |end| {
            last = Some(end);
            true
        },
    );
    last
}

fn parse_block(block: &Block, ctx: &ScanContext, ids: IdDecoding) -> BlockResult {
    let (feed, header) = (ctx.feed, ctx.header);
    let utf8 = simdutf8::basic::from_utf8(&block.bytes).is_ok();
    let id_encoding = match (ids, utf8) {
        (IdDecoding::Guess, true) => Encoding::Utf8,
        _ => Encoding::Windows1252,
    };
    let mut result = BlockResult {
        rows: Vec::with_capacity(block.bytes.len() / 256),
        rows_read: 0,
        filtered: 0,
        newlines: 0,
        utf8,
        non_ascii_ids: false,
    };
    let bytes = &block.bytes[..];
    let delimiter = header.delimiter;
    let mut parser = RowParser::new(delimiter);
    let mut scratch = Vec::with_capacity(512);
    let ncols = header.columns.len();
    let id_col = header.field_columns[feed.id_field];
    let every_column_in_order = header
        .field_columns
        .iter()
        .enumerate()
        .all(|(i, c)| *c == Some(i))
        && header.field_columns.len() == ncols;
    // Rows whose raw text is as stored need no parsing at all.
    let known = ctx.known.filter(|k| !k.is_empty() && every_column_in_order);
    let mut hint = 0usize;
    let (mut counted_to, mut line) = (0usize, 1u64);
    let mut pos = 0usize;
    while pos < bytes.len() {
        let line_end = record_end(bytes, pos, delimiter);
        if bytes[pos..line_end]
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n'))
        {
            // A blank line: the csv crate skips it too.
            pos = line_end;
            continue;
        }
        line += memchr::memchr_iter(b'\n', &bytes[counted_to..pos]).count() as u64;
        counted_to = pos;
        if let (Some(known), Some(id_col)) = (known, id_col) {
            let text = &bytes[pos..line_end];
            let hash = line_hash(text, delimiter);
            if let Some(raw_id) = plain_field(text, delimiter, id_col) {
                let id = decode_field(trim_bytes(raw_id), id_encoding);
                let id = id.trim();
                if stored_hash(known, id, &mut hint) == Some(hash) {
                    result.non_ascii_ids |= !id.is_ascii();
                    result.rows_read += 1;
                    result.rows.push(ScannedRow {
                        id: CompactString::from(id),
                        hash,
                        offset: block.offset + pos as u64,
                        len: u32::try_from(line_end - pos).unwrap_or(u32::MAX),
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        shape: RowShape::Whole,
                    });
                    pos = line_end;
                    continue;
                }
            }
        }
        let (record, consumed) = parser.parse_record(&bytes[pos..]);
        if consumed == 0 {
            break;
        }
        let end = pos + consumed;
        if record.count() == 0 {
            pos = end;
            continue;
        }
        result.rows_read += 1;
        let shape = if record.count() == ncols {
            RowShape::Whole
        } else {
            RowShape::WrongColumnCount
        };
        if shape == RowShape::Whole && is_filtered_out(&record, feed, header, id_encoding) {
            result.filtered += 1;
            pos = end;
            continue;
        }
        let raw_id = id_col
            .and_then(|c| record.get(c))
            .map(trim_bytes)
            .unwrap_or(b"");
        if !raw_id.is_ascii() {
            result.non_ascii_ids = true;
        }
        let id = CompactString::from(decode_field(raw_id, id_encoding).trim());
        let hash = if every_column_in_order {
            line_hash(&bytes[pos..end], delimiter)
        } else {
            raw_hash(&record, &header.field_columns, &mut scratch)
        };
        result.rows.push(ScannedRow {
            id,
            hash,
            offset: block.offset + pos as u64,
            len: u32::try_from(end - pos).unwrap_or(u32::MAX),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            shape,
        });
        pos = end;
    }
    result.newlines =
        line - 1 + memchr::memchr_iter(b'\n', &bytes[counted_to.min(bytes.len())..]).count() as u64;
    result
}

/// What parsing a block needs besides the block.
struct ScanContext<'a> {
    feed: &'a Feed,
    header: &'a Header,
    /// The feed's stored (ID, raw hash) list, sorted, when its hashes can be
    /// trusted (same mapping fingerprint).
    known: Option<&'a [(CompactString, u64)]>,
}

/// The end (after its `\n`, or the end of `bytes`) of the record starting
/// at `start`. Only a guess for the fast path: the parser has the last word.
fn record_end(bytes: &[u8], start: usize, delimiter: u8) -> usize {
    let mut end = bytes.len();
    walk_record_ends(
        &bytes[start..],
        |b| b == delimiter,
        |e| {
            end = start + e;
            false
        },
    );
    end
}

/// Cell `n` of a line when it is plain (no quotes up to it): the fast
/// path's way to the ID without parsing the row.
fn plain_field(line: &[u8], delimiter: u8, n: usize) -> Option<&[u8]> {
    let mut start = 0;
    for _ in 0..n {
        start += memchr::memchr(delimiter, &line[start..])? + 1;
    }
    let rest = &line[start..];
    let end = memchr::memchr(delimiter, rest).unwrap_or_else(|| {
        let mut e = rest.len();
        while e > 0 && matches!(rest[e - 1], b'\r' | b'\n') {
            e -= 1;
        }
        e
    });
    let cell = &rest[..end];
    (!line[..start + end].contains(&b'"')).then_some(cell)
}

/// The stored hash of `id`, searching from `hint` first (files are often in
/// ID order, so the next row's ID is usually just after the last one).
fn stored_hash(known: &[(CompactString, u64)], id: &str, hint: &mut usize) -> Option<u64> {
    if let Some((k, h)) = known.get(*hint) {
        if k.as_str() == id {
            *hint += 1;
            return Some(*h);
        }
    }
    let at = known.binary_search_by(|(k, _)| k.as_str().cmp(id)).ok()?;
    *hint = at + 1;
    Some(known[at].1)
}

/// A row is filtered out when a filter's field does not hold one of its
/// values (trimmed, case-insensitive; the configured values are lowercase).
fn is_filtered_out(record: &Cells, feed: &Feed, header: &Header, encoding: Encoding) -> bool {
    feed.filters.iter().any(|filter| {
        let value = header.field_columns[filter.field]
            .and_then(|c| record.get(c))
            .map(trim_bytes)
            .unwrap_or(b"");
        let mut lowered: Option<String> = None;
        !filter.equals.iter().any(|wanted| {
            if value.is_ascii() && wanted.is_ascii() {
                return wanted.as_bytes().eq_ignore_ascii_case(value);
            }
            let lowered =
                lowered.get_or_insert_with(|| decode_field(value, encoding).trim().to_lowercase());
            lowered == wanted
        })
    })
}

/// Hash of a row's raw text (without its line break): used when the feed
/// maps every column of the file, in order, so that it equals hashing the
/// mapped fields but costs one pass instead of a copy per cell.
pub(crate) fn line_hash(line: &[u8], delimiter: u8) -> u64 {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    // The delimiter is part of what the text means.
    xxhash_rust::xxh3::xxh3_64_with_seed(&line[..end], u64::from(delimiter))
}

/// Hash of the mapped raw fields in the feed's field order, so that a moved
/// or an unmapped column changes nothing.
pub(crate) fn raw_hash(
    record: &Cells,
    field_columns: &[Option<usize>],
    scratch: &mut Vec<u8>,
) -> u64 {
    scratch.clear();
    for col in field_columns {
        if let Some(v) = col.and_then(|c| record.get(c)) {
            scratch.extend_from_slice(v);
        }
        scratch.push(0x1F);
    }
    xxhash_rust::xxh3::xxh3_64(scratch)
}

pub(crate) fn trim_bytes(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

pub(crate) fn decode_field(bytes: &[u8], encoding: Encoding) -> std::borrow::Cow<'_, str> {
    match encoding {
        Encoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        },
        Encoding::Windows1252 => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}
