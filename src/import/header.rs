//! The header row: byte-order mark, delimiter detection and the mapping of
//! columns to the feed's fields.

use crate::config::{Feed, FieldKind};

use super::input::Input;
use super::text::{count_line_breaks, printable, sniff_not_csv, walk_record_ends, Utf8Evidence};
use super::text::{decode_field, Encoding, Rejection};

/// The header can be at most this long; longer means it is not a header.
const MAX_HEADER_BYTES: usize = 1 << 20;

const CANDIDATE_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// What the header row tells about the file.
#[derive(Debug, Clone)]
pub struct Header {
    /// Bytes of the byte-order mark (0 or 3).
    pub bom_len: u64,
    pub delimiter: u8,
    /// The header's cells as written (trimmed), for the error report.
    pub columns: Vec<String>,
    /// The same cells as raw bytes, to decode again once the file's
    /// encoding is known.
    pub raw_columns: Vec<Vec<u8>>,
    /// Offset of the first data row.
    pub data_start: u64,
    /// Line number of the first data row's line (1-based).
    pub lines_before_data: u64,
    /// For each of the feed's fields, the column it is read from.
    pub field_columns: Vec<Option<usize>>,
    /// True when the header is not valid UTF-8 (a hint, the file decides).
    pub header_is_cp1252: bool,
    /// The header's share of the evidence for the file's encoding.
    pub evidence: Utf8Evidence,
    /// Mapped fields (neither the ID nor required) whose column is not in
    /// the file: such a file is held (confirming it clears the field).
    pub missing_fields: Vec<usize>,
}

pub fn read_header(input: &dyn Input, feed: &Feed) -> Result<Header, Rejection> {
    let len = input.len();
    if len == 0 {
        return Err(Rejection::new("the file is empty: there is no header row"));
    }
    let mut take = len.min(64 * 1024) as usize;
    loop {
        let mut buf = vec![0u8; take];
        input
            .read_exact_at(0, &mut buf)
            .map_err(|e| Rejection::new(format!("the file cannot be read: {e}")))?;
        if let Some(what) = sniff_not_csv(&buf[..buf.len().min(4096)]) {
            return Err(Rejection::new(what));
        }
        reject_utf16(&buf)?;
        let bom_len = if buf.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let hint = sep_hint(&buf[bom_len..]);
        let skip = bom_len + hint.map_or(0, |(_, len)| len);
        let start = Start {
            bom_len: bom_len as u64,
            offset: skip as u64,
            lines_before: u64::from(hint.is_some()),
            delimiter: feed.delimiter.or(hint.map(|(d, _)| d)),
        };
        let body = &buf[skip..];
        match first_record_end(body) {
            Some(end) => {
                let first = parse_header(&body[..end], start, feed);
                if first.is_err() {
                    if let Some(below) = header_below_title(body, end, start, feed) {
                        return Ok(below);
                    }
                }
                return first;
            }
            None if (take as u64) == len => {
                return parse_header(body, start, feed);
            }
            None if take >= MAX_HEADER_BYTES => {
                return Err(Rejection::new(
                    "the header row is unreadable: no line end within the first 1 MiB",
                ))
            }
            None => take = (take * 4).min(len as usize).min(MAX_HEADER_BYTES),
        }
    }
}

/// Where the header row starts and what is known before reading it.
#[derive(Debug, Clone, Copy)]
struct Start {
    bom_len: u64,
    /// Offset of the header row (after the BOM and a `sep=` line).
    offset: u64,
    /// Lines before the header row.
    lines_before: u64,
    /// The feed's delimiter, or the one a `sep=` line names.
    delimiter: Option<u8>,
}

/// Rows a report title may take above the header.
const MAX_TITLE_ROWS: usize = 10;

/// The header under a title: HR reports saved from a spreadsheet often
/// start with a title row or two ("Active employees, 1 Dec") and an empty
/// row. When the first row is no header of this feed, the first of the
/// next rows (within the first 64 KiB) that is one — it names the ID
/// column and every required one — is the header, and the rows above it
/// are skipped. Line numbers stay the file's.
fn header_below_title(body: &[u8], first_end: usize, start: Start, feed: &Feed) -> Option<Header> {
    let mut at = first_end;
    for _ in 0..MAX_TITLE_ROWS {
        let end = at + first_record_end(&body[at..])?;
        let below = Start {
            offset: start.offset + at as u64,
            lines_before: start.lines_before + count_line_breaks(body, 0, at),
            ..start
        };
        if let Ok(header) = parse_header(&body[at..end], below, feed) {
            return Some(header);
        }
        at = end;
    }
    None
}

/// Excel's `sep=;` line before the header (written by tools for Excel in
/// locales where the list separator is not a comma): the delimiter and the
/// line's length, line break included.
fn sep_hint(body: &[u8]) -> Option<(u8, usize)> {
    if body.len() < 5 || !body[..4].eq_ignore_ascii_case(b"sep=") {
        return None;
    }
    let delimiter = body[4];
    let rest = &body[5..];
    let line_break = if rest.starts_with(b"\r\n") {
        2
    } else if rest.starts_with(b"\n") || rest.starts_with(b"\r") {
        1
    } else {
        return None;
    };
    CANDIDATE_DELIMITERS
        .contains(&delimiter)
        .then_some((delimiter, 5 + line_break))
}

fn reject_utf16(buf: &[u8]) -> Result<(), Rejection> {
    if buf.starts_with(b"\xFF\xFE") || buf.starts_with(b"\xFE\xFF") {
        return Err(Rejection::new(
            "the file is UTF-16 text; save it as \"CSV UTF-8\" (or Windows-1252 CSV) and send it again",
        ));
    }
    Ok(())
}

/// End (exclusive, after the line break) of the first record, honouring
/// quotes as the csv crate does (the delimiter is not known yet, so any
/// candidate counts); `None` when the buffer holds no complete first line
/// (a CR that ends the buffer may be half a CRLF: more is read).
fn first_record_end(buf: &[u8]) -> Option<usize> {
    let mut first = None;
    walk_record_ends(
        buf,
        |b| CANDIDATE_DELIMITERS.contains(&b),
        |end| {
            first = Some(end);
            false
        },
    );
    first
}

/// The candidate that occurs most often outside quotes; comma on a tie.
pub fn detect_delimiter(line: &[u8]) -> u8 {
    let mut counts = [0usize; 4];
    let mut in_quotes = false;
    let mut prev = b'\n';
    for &b in line {
        if b == b'"' {
            in_quotes = if in_quotes {
                false
            } else {
                prev == b'\n'
                    || prev == b'\r'
                    || CANDIDATE_DELIMITERS.contains(&prev)
                    || prev == b'"'
            };
        } else if !in_quotes {
            if let Some(i) = CANDIDATE_DELIMITERS.iter().position(|&d| d == b) {
                counts[i] += 1;
            }
        }
        prev = b;
    }
    let mut best = 0;
    for i in 1..counts.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    CANDIDATE_DELIMITERS[best]
}

fn parse_header(line: &[u8], start: Start, feed: &Feed) -> Result<Header, Rejection> {
    let delimiter = start.delimiter.unwrap_or_else(|| detect_delimiter(line));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(line);
    let mut record = csv::ByteRecord::new();
    let found = reader
        .read_byte_record(&mut record)
        .map_err(|e| Rejection::new(format!("the header row is unreadable: {e}")))?;
    if !found || record.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
        return Err(Rejection::new(
            "the header row is empty; the first line must name the columns",
        ));
    }
    let header_is_cp1252 = std::str::from_utf8(line).is_err();
    let encoding = if header_is_cp1252 {
        Encoding::Windows1252
    } else {
        Encoding::Utf8
    };
    let columns: Vec<String> = record
        .iter()
        .map(|c| decode_field(c, encoding).trim().to_string())
        .collect();
    let field_columns =
        map_fields(&columns, feed).map_err(|r| r.with_encoding(encoding).with_header(&columns))?;
    let missing_fields = field_columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_none())
        .map(|(i, _)| i)
        .collect();
    let lines_before_data = start.lines_before + count_line_breaks(line, 0, line.len());
    Ok(Header {
        bom_len: start.bom_len,
        delimiter,
        columns,
        raw_columns: record.iter().map(<[u8]>::to_vec).collect(),
        data_start: start.offset + line.len() as u64,
        lines_before_data,
        field_columns,
        header_is_cp1252,
        evidence: Utf8Evidence::of(line, !header_is_cp1252),
        missing_fields,
    })
}

/// Finds each field's column by its name or an alias, ignoring case and
/// surrounding spaces. The ID column and required columns must be there;
/// two columns for one field make the file ambiguous.
fn map_fields(columns: &[String], feed: &Feed) -> Result<Vec<Option<usize>>, Rejection> {
    let normalized: Vec<String> = columns.iter().map(|c| header_key(c)).collect();
    let header_found = || {
        columns
            .iter()
            .map(|c| printable(c).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::with_capacity(feed.fields.len());
    for field in &feed.fields {
        let wanted: Vec<String> = std::iter::once(&field.column)
            .chain(field.aliases.iter())
            .map(|n| header_key(n))
            .collect();
        let mut found = normalized
            .iter()
            .enumerate()
            .filter(|(_, c)| wanted.contains(c))
            .map(|(i, _)| i);
        let first = found.next();
        if let (Some(a), Some(b)) = (first, found.next()) {
            return Err(Rejection::new(format!(
                "columns {} ('{}') and {} ('{}') both map to the field '{}'; remove one of them or rename it",
                a + 1,
                printable(&columns[a]),
                b + 1,
                printable(&columns[b]),
                field.name
            )));
        }
        if first.is_none() && (field.kind == FieldKind::Id || field.required) {
            let what = if field.kind == FieldKind::Id {
                "ID column"
            } else {
                "required column"
            };
            return Err(Rejection::new(format!(
                "the {what} {} is missing; the header has: {}",
                column_names(field),
                header_found()
            )));
        }
        out.push(first);
    }
    Ok(out)
}

/// A header name as matched: lower case, runs of white space (a no-break
/// space from Excel included) as one space, none around it.
fn header_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `'Mobile' or 'Cell'`: a field's column and aliases.
pub fn column_names(field: &crate::config::Field) -> String {
    std::iter::once(&field.column)
        .chain(field.aliases.iter())
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(" or ")
}
