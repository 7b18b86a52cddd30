//! Pass 1: read the file in blocks, parse the blocks in parallel, and keep
//! per row only what the diff needs (ID, hash, where the row is).

use compact_str::CompactString;
use rayon::prelude::*;

use crate::config::Feed;

pub(crate) use super::text::decode_field;
pub use super::text::{Encoding, Rejection};

use super::header::{read_header, Header};
use super::input::Input;
use super::text::{
    count_line_breaks, has_lone_cr, printable, runaway_quote, walk_lf_record_ends,
    walk_record_ends, Utf8Evidence,
};
use super::validate::{Cells, RowParser};

/// Blocks handed to one parser task. Big enough to amortise the task, small
/// enough that a batch of them stays a few tens of MiB.
const BLOCK_BYTES: usize = 4 << 20;

/// The header row's cells of a file (trimmed, decoded as the import reads
/// them), for the report of a file refused as a whole; `None` when no
/// header row can be read (an empty file, one that is not CSV).
pub fn header_columns(input: &dyn Input, feed: &Feed) -> Option<Vec<String>> {
    match read_header(input, feed) {
        Ok(header) => Some(header.columns),
        Err(rejection) => rejection.header,
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

/// The feed's stored (ID, raw hash) list, sorted by ID, and the encoding
/// decision its hashes were made under.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub hashes: &'a [(CompactString, u64)],
    pub encoding: Encoding,
}

/// As [`scan_file`], with the feed's stored (ID, raw hash) list: a row
/// whose raw text hashes to its ID's stored hash is taken as unchanged
/// without being parsed. Pass it only when its hashes can be trusted (the
/// stored fingerprint is the feed's under `known.encoding`, see
/// [`super::run_fingerprint`]); when the file turns out to be in another
/// encoding, it is read again without them.
pub fn scan_file_against(
    input: &dyn Input,
    feed: &Feed,
    known: Option<Known>,
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
    let with_header = |r: Rejection| r.with_header(&header.columns);
    let ctx = ScanContext {
        feed,
        header: &header,
        known: known.map(|k| k.hashes),
    };
    let first = scan_rows(input, &ctx, IdDecoding::Guess, progress).map_err(with_header)?;
    let evidence = if input.is_utf8_copy() {
        // A UTF-16 file's copy is Unicode whatever its bytes look like (a
        // malformed sequence is the byte 0xFF there, flagged in pass 2).
        Utf8Evidence::default()
    } else if first.evidence.invalid == 0 && header.evidence.invalid == 0 {
        first.evidence
    } else {
        let mut evidence = body_evidence(input, header.data_start);
        evidence.add(header.evidence);
        evidence
    };
    let encoding = if evidence.is_utf8() {
        Encoding::Utf8
    } else {
        Encoding::Windows1252
    };
    let rows = if known.is_some_and(|k| k.encoding != encoding) {
        // The stored hashes were made under another decision: every row
        // is to be read again, unrecognised.
        let ctx = ScanContext { known: None, ..ctx };
        scan_rows(input, &ctx, IdDecoding::Fixed(encoding), progress).map_err(with_header)?
    } else if first.non_ascii_decoded_otherwise(encoding) {
        // Some block guessed the other encoding for a non-ASCII ID or
        // filter value: read again, decoding every block as decided.
        scan_rows(input, &ctx, IdDecoding::Fixed(encoding), progress).map_err(with_header)?
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
    Fixed(Encoding),
}

struct ScannedRows {
    rows: Vec<ScannedRow>,
    rows_read: u64,
    filtered: u64,
    evidence: Utf8Evidence,
    /// A non-ASCII ID or filter value was decoded as UTF-8 (in a valid
    /// block) / as Windows-1252 (in a block that is not valid UTF-8).
    non_ascii_as_utf8: bool,
    non_ascii_as_1252: bool,
}

impl ScannedRows {
    fn non_ascii_decoded_otherwise(&self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Windows1252 => self.non_ascii_as_utf8,
            _ => self.non_ascii_as_1252,
        }
    }
}

/// One block's parse, with line numbers relative to the block.
struct BlockResult {
    rows: Vec<ScannedRow>,
    rows_read: u64,
    filtered: u64,
    newlines: u64,
    id_encoding: Encoding,
    evidence: Utf8Evidence,
    non_ascii: bool,
    /// The first damage found in the block.
    damage: Option<Damage>,
}

struct Block {
    offset: u64,
    bytes: Vec<u8>,
    /// The file's last block.
    at_end: bool,
    /// The read the block was cut from held a CR that is not part of a
    /// CRLF (a cut never falls inside a CRLF, so without one the block has
    /// none either, and LFs alone end its records).
    lone_cr: bool,
}

/// Why a file cannot be read as records; turned into a [`Rejection`] that
/// names the line and column (see [`describe_damage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A quote opened at `quote` (file offset) is still open at the end
    /// of the file.
    OpenQuote {
        record: u64,
        quote: u64,
    },
    /// A record longer than [`MAX_RECORD_BYTES`]; `quote` when a quote
    /// opened in it is never closed within that length.
    TooLong {
        record: u64,
        quote: Option<u64>,
    },
    /// The last record has no line break and fewer cells than the header.
    CutShort {
        record: u64,
        cells: usize,
    },
    /// A record whose quoted value runs over several lines and whose cell
    /// count is not the header's: a quote that was not closed where it
    /// should have been, swallowing the lines after it.
    RunawayQuote {
        record: u64,
        quote: u64,
        len: u32,
        cells: usize,
    },
    Unreadable,
}

const DOS_END_OF_FILE: u8 = 0x1A;

/// A record is at most this long (the block size): longer means a quote
/// that is never closed, or a file that is not CSV; it is never read into
/// memory whole.
pub const MAX_RECORD_BYTES: usize = BLOCK_BYTES;

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
        evidence: Utf8Evidence::default(),
        non_ascii_as_utf8: false,
        non_ascii_as_1252: false,
    };
    let fail = |damage: Damage| describe_damage(damage, input, header);
    let mut reader = BlockReader::new(input, header.data_start, header.delimiter);
    let mut lines_before = header.lines_before_data;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut batch = read_batch(&mut reader, batch_blocks, &mut pool).map_err(fail)?;
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
            if let Some(damage) = r.damage {
                return Err(fail(damage));
            }
            let base = lines_before;
            reserve_for_file(
                &mut out.rows,
                r.rows.len(),
                reader.offset,
                input.len(),
                feed.max_rows,
            );
            out.rows.extend(r.rows.into_iter().map(|mut row| {
                row.line = u32::try_from(base + row.line as u64).unwrap_or(u32::MAX);
                row
            }));
            lines_before += r.newlines;
            out.rows_read += r.rows_read;
            out.filtered += r.filtered;
            out.evidence.add(r.evidence);
            match r.id_encoding {
                Encoding::Windows1252 => out.non_ascii_as_1252 |= r.non_ascii,
                _ => out.non_ascii_as_utf8 |= r.non_ascii,
            }
        }
        if out.rows_read > feed.max_rows {
            let encoding = if out.evidence.is_utf8() {
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
        batch = next.map_err(fail)?;
    }
    Ok(out)
}

/// The evidence for the encoding of the whole body, read again: only for a
/// file with bytes that cannot be UTF-8, whose valid blocks pass 1 did not
/// count.
fn body_evidence(input: &dyn Input, from: u64) -> Utf8Evidence {
    let mut evidence = Utf8Evidence::default();
    let mut buf = vec![0u8; BLOCK_BYTES];
    let mut at = from;
    while at < input.len() {
        let take = (input.len() - at).min(BLOCK_BYTES as u64) as usize;
        if input.read_exact_at(at, &mut buf[..take]).is_err() {
            break;
        }
        // Cut after a line feed: no UTF-8 sequence holds one.
        let cut = match memchr::memrchr(b'\n', &buf[..take]) {
            Some(nl) if at + (take as u64) < input.len() => nl + 1,
            _ => take,
        };
        let chunk = &buf[..cut];
        evidence.add(Utf8Evidence::of(
            chunk,
            simdutf8::basic::from_utf8(chunk).is_ok(),
        ));
        at += cut as u64;
    }
    evidence
}

/// Reserves room for the whole file's rows once, estimated from the rows
/// per byte so far, so that the row list is not copied while it doubles.
fn reserve_for_file(
    rows: &mut Vec<ScannedRow>,
    adding: usize,
    read_to: u64,
    file_len: u64,
    max_rows: u64,
) {
    if rows.capacity() - rows.len() >= adding {
        return;
    }
    let seen = (rows.len() + adding) as u64;
    // Never more than the feed takes: a huge file of tiny rows is refused
    // at max_rows, not by a failed allocation.
    let estimate = (seen.saturating_mul(file_len) / read_to.max(1)).min(max_rows + 1);
    let want = (estimate + estimate / 16) as usize;
    rows.reserve(want.max(rows.len() + adding) - rows.len());
}

fn read_batch(
    reader: &mut BlockReader,
    blocks: usize,
    pool: &mut Vec<Vec<u8>>,
) -> Result<Vec<Block>, Damage> {
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
    fn next_block(&mut self, mut bytes: Vec<u8>) -> Result<Option<Block>, Damage> {
        let len = self.input.len();
        if self.offset >= len {
            return Ok(None);
        }
        let take = (len - self.offset).min(BLOCK_BYTES as u64) as usize;
        bytes.resize(take, 0);
        self.input
            .read_exact_at(self.offset, &mut bytes)
            .map_err(|_| Damage::Unreadable)?;
        let at_end = self.offset + take as u64 == len;
        let mut last_end = 0;
        let at_record_end = |end| {
            last_end = end;
            true
        };
        let is_delimiter = |b| b == self.delimiter;
        // Most files have no lone CR: then LFs alone end records.
        let lone_cr = has_lone_cr(&bytes);
        let open_quote = if lone_cr {
            walk_record_ends(&bytes, is_delimiter, at_record_end)
        } else {
            walk_lf_record_ends(&bytes, is_delimiter, at_record_end)
        };
        let cut = match (at_end, open_quote) {
            (true, None) => take,
            (true, Some(quote)) => {
                return Err(Damage::OpenQuote {
                    record: self.offset + last_end as u64,
                    quote: self.offset + quote as u64,
                })
            }
            // No record ends in a whole block: one record is longer than
            // any a CSV export holds.
            (false, quote) if last_end == 0 => {
                return Err(Damage::TooLong {
                    record: self.offset,
                    quote: quote.map(|q| self.offset + q as u64),
                })
            }
            (false, _) => last_end,
        };
        bytes.truncate(cut);
        let block = Block {
            offset: self.offset,
            bytes,
            at_end,
            lone_cr,
        };
        self.offset += cut as u64;
        Ok(Some(block))
    }
}

/// The reason a damaged file is refused, naming the line (and column)
/// where the damage starts. Nothing of such a file is applied: a record
/// that swallowed the lines after it would otherwise remove the people on
/// those lines.
fn describe_damage(damage: Damage, input: &dyn Input, header: &Header) -> Rejection {
    let line = |offset: u64| line_of(input, offset);
    let column = |record: u64, quote: u64| column_of(input, header, record, quote);
    let reason = match damage {
        Damage::OpenQuote { record, quote } => format!(
            "the file ends inside a quoted value: the quote opened on line {}, {} is never closed, so the rest of the file would be one value. Nothing was changed; correct that line (a stray \" character) or send the whole file again",
            line(quote),
            column(record, quote)
        ),
        Damage::TooLong { record, quote } => {
            let why = match quote {
                Some(q) => format!(
                    "the quote opened on line {}, {} is probably never closed",
                    line(q),
                    column(record, q)
                ),
                None => "it is not a CSV record".to_string(),
            };
            format!(
                "the record starting on line {} is longer than {} MiB: {why}. Nothing was changed",
                line(record),
                MAX_RECORD_BYTES >> 20
            )
        }
        Damage::CutShort { record, cells } => format!(
            "the file looks cut off: its last line (line {}) ends without a line break and has {cells} of the header's {} columns, as when an upload is interrupted. Nothing was changed; send the whole file again",
            line(record),
            header.columns.len()
        ),
        Damage::RunawayQuote {
            record,
            quote,
            len,
            cells,
        } => format!(
            "the quoted value opened on line {}, {} runs on to line {} (that record has {cells} columns, the header {}): a quote is probably not closed where it should be, and the people on the lines it swallowed would be lost. Nothing was changed; correct that line (a stray \" character) and send the file again",
            line(quote),
            column(record, quote),
            line(record + u64::from(len).saturating_sub(1)),
            header.columns.len()
        ),
        Damage::Unreadable => "the file cannot be read (it changed or vanished while it was read)".to_string(),
    };
    Rejection::new(reason)
}

/// The line (header = 1) that holds the byte at `offset`.
fn line_of(input: &dyn Input, offset: u64) -> u64 {
    let mut breaks = 0;
    let mut at = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while at < offset {
        // One byte more than counted, to see the `\n` after a `\r`.
        let take = (offset - at + 1)
            .min(buf.len() as u64)
            .min(input.len() - at) as usize;
        if take == 0 || input.read_exact_at(at, &mut buf[..take]).is_err() {
            break;
        }
        let mut counted = take.min((offset - at) as usize);
        if counted == take && take > 1 {
            // Its look-ahead (a CR's LF) is in the next read.
            counted -= 1;
        }
        breaks += count_line_breaks(&buf[..take], 0, counted);
        at += counted as u64;
    }
    breaks + 1
}

/// "column 3 ('Name')": where a quote at `quote` opens, in the record
/// starting at `record`.
fn column_of(input: &dyn Input, header: &Header, record: u64, quote: u64) -> String {
    let mut prefix = vec![0u8; (quote - record) as usize];
    let cells = if prefix.is_empty() || input.read_exact_at(record, &mut prefix).is_err() {
        1
    } else {
        RowParser::new(header.delimiter)
            .parse(&prefix)
            .count()
            .max(1)
    };
    match header.columns.get(cells - 1) {
        Some(name) => format!("column {cells} ('{}')", printable(name)),
        None => format!("column {cells}"),
    }
}

fn parse_block(block: &Block, ctx: &ScanContext, ids: IdDecoding) -> BlockResult {
    let (feed, header) = (ctx.feed, ctx.header);
    let utf8 = simdutf8::basic::from_utf8(&block.bytes).is_ok();
    let id_encoding = match (ids, utf8) {
        (IdDecoding::Fixed(encoding), _) => encoding,
        (IdDecoding::Guess, true) => Encoding::Utf8,
        (IdDecoding::Guess, false) => Encoding::Windows1252,
    };
    let mut result = BlockResult {
        rows: Vec::with_capacity(block.bytes.len() / 256),
        rows_read: 0,
        filtered: 0,
        newlines: 0,
        id_encoding,
        // Valid blocks are counted only when some block is not valid (see
        // `body_evidence`): most files are UTF-8 throughout.
        evidence: if utf8 {
            Utf8Evidence::default()
        } else {
            Utf8Evidence::of(&block.bytes, false)
        },
        non_ascii: false,
        damage: None,
    };
    let bytes = &block.bytes[..];
    let lone_cr = block.lone_cr;
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
        let line_end = record_end(bytes, pos, delimiter, lone_cr);
        if bytes[pos..line_end]
            .iter()
            .all(|&b| matches!(b, b'\r' | b'\n' | DOS_END_OF_FILE))
        {
            // A blank line: the csv crate skips it too. So is the DOS
            // end-of-file mark (Ctrl-Z) older systems still write last.
            pos = line_end;
            continue;
        }
        line += breaks_in(bytes, counted_to, pos, lone_cr);
        counted_to = pos;
        if let (Some(known), Some(id_col)) = (known, id_col) {
            let text = &bytes[pos..line_end];
            let hash = line_hash(text, delimiter);
            if let Some(raw_id) = plain_field(text, delimiter, id_col) {
                let id = decode_field(trim_bytes(raw_id), id_encoding);
                let id = id.trim();
                if stored_hash(known, id, &mut hint) == Some(hash) {
                    result.non_ascii |= !id.is_ascii();
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
        let record_at = block.offset + pos as u64;
        let text = &bytes[pos..end];
        let unterminated = block.at_end && end == bytes.len() && !text.ends_with(b"\n");
        if unterminated && !text.ends_with(b"\r") && record.count() < ncols {
            result.damage = Some(Damage::CutShort {
                record: record_at,
                cells: record.count(),
            });
            break;
        }
        // Only a record over several lines can have swallowed others. A
        // quote left open swallows the lines after it up to the next quote:
        // in an export that quotes every value, the next line's first one,
        // which leaves the record with the wrong cell count; a later stray
        // quote can even restore the header's count, and then the value
        // holds a whole record's delimiters.
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let over_lines = record.gap == 0 && memchr::memchr2(b'\n', b'\r', body).is_some();
        let swallowed = ncols.saturating_sub(1).max(1);
        let quote = if over_lines && shape == RowShape::WrongColumnCount {
            runaway_quote(text, delimiter, 0)
        } else if over_lines {
            runaway_quote(text, delimiter, swallowed)
        } else {
            None
        };
        if let Some(quote) = quote {
            result.damage = Some(Damage::RunawayQuote {
                record: record_at,
                quote: record_at + quote as u64,
                len: u32::try_from(text.len()).unwrap_or(u32::MAX),
                cells: record.count(),
            });
            break;
        }
        if shape == RowShape::Whole
            && is_filtered_out(&record, feed, header, id_encoding, &mut result.non_ascii)
        {
            result.filtered += 1;
            pos = end;
            continue;
        }
        let raw_id = id_col
            .and_then(|c| record.get(c))
            .map(trim_bytes)
            .unwrap_or(b"");
        if !raw_id.is_ascii() {
            result.non_ascii = true;
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
        line - 1 + breaks_in(bytes, counted_to.min(bytes.len()), bytes.len(), lone_cr);
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
fn record_end(bytes: &[u8], start: usize, delimiter: u8, lone_cr: bool) -> usize {
    let mut end = bytes.len();
    let at_end = |e| {
        end = start + e;
        false
    };
    if lone_cr {
        walk_record_ends(&bytes[start..], |b| b == delimiter, at_end);
    } else {
        walk_lf_record_ends(&bytes[start..], |b| b == delimiter, at_end);
    }
    end
}

/// Line breaks in `bytes[from..to]`; only LFs when the block has no lone
/// CR (one pass instead of two).
fn breaks_in(bytes: &[u8], from: usize, to: usize, lone_cr: bool) -> u64 {
    if lone_cr {
        count_line_breaks(bytes, from, to)
    } else {
        memchr::memchr_iter(b'\n', &bytes[from..to]).count() as u64
    }
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
/// `non_ascii` is set when a value had to be decoded.
fn is_filtered_out(
    record: &Cells,
    feed: &Feed,
    header: &Header,
    encoding: Encoding,
    non_ascii: &mut bool,
) -> bool {
    feed.filters.iter().any(|filter| {
        let value = header.field_columns[filter.field]
            .and_then(|c| record.get(c))
            .map(trim_bytes)
            .unwrap_or(b"");
        *non_ascii |= !value.is_ascii();
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
