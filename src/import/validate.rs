//! Row validation and normalisation: one row's raw cells in, either the
//! stored record or every reason the row is flagged.
//!
//! This is the import's hot loop (every new or changed row, every field),
//! so the common cases take fast paths: plain ASCII emails, values with no
//! control characters, values shorter than any length limit in bytes.

use std::borrow::Cow;

use crate::config::{Feed, Field, FieldKind};

use super::phone::normalize_phone;
use super::record::{Record, RecordBuilder};
use super::text::{decode_field, Encoding};

/// What validating a row needs besides the row.
pub struct RowContext<'a> {
    pub feed: &'a Feed,
    pub field_columns: &'a [Option<usize>],
    pub encoding: Encoding,
}

/// One parsed row's cells: the unquoted bytes of every cell, back to back
/// (`gap` 0) or the row's own text with its delimiters (`gap` 1, for a row
/// without quotes), and where each cell ends.
#[derive(Debug, Clone, Copy)]
pub struct Cells<'a> {
    pub data: &'a [u8],
    pub ends: &'a [usize],
    /// Bytes between one cell's end and the next one's start.
    pub gap: usize,
}

impl<'a> Cells<'a> {
    pub fn count(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] + self.gap
        };
        self.data.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.count()).filter_map(|i| self.get(i))
    }

    pub fn as_slice(&self) -> &'a [u8] {
        self.data
    }
}

/// Parses single records with one reused csv-core reader: building a
/// reader costs far more than parsing a row.
pub struct RowParser {
    delimiter: u8,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

/// A thread's parser whose buffers grew past this is dropped after use.
const KEPT_PARSER_BYTES: usize = 1 << 20;

thread_local! {
    /// Each thread's parser, kept between chunks: rayon splits a chunk into
    /// many small jobs, and building a csv-core reader (its DFA) per job
    /// cost 5% of validating.
    static THREAD_PARSER: std::cell::RefCell<Option<RowParser>> = const { std::cell::RefCell::new(None) };
}

impl RowParser {
    /// Runs `f` with this thread's parser for `delimiter`.
    pub fn with_thread_parser<T>(delimiter: u8, f: impl FnOnce(&mut RowParser) -> T) -> T {
        THREAD_PARSER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let parser = match &mut *slot {
                Some(p) if p.delimiter == delimiter => p,
                _ => slot.insert(RowParser::new(delimiter)),
            };
            let result = f(parser);
            // One huge row (an unclosed quote can make the rest of a file
            // one row) must not stay resident in a server thread.
            if parser.buffer_bytes() > KEPT_PARSER_BYTES {
                *slot = None;
            }
            result
        })
    }

    pub fn new(delimiter: u8) -> RowParser {
        RowParser {
            delimiter,
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            out: vec![0; 1024],
            ends: vec![0; 64],
        }
    }

    /// The first record in `input` (no cells on anything unexpected),
    /// borrowing the parser's buffers: no allocation per row.
    pub fn parse<'s>(&'s mut self, input: &'s [u8]) -> Cells<'s> {
        self.parse_record(input).0
    }

    /// The first record in `input` and how many bytes it took (its line
    /// break included); 0 bytes at the end of the input.
    pub fn parse_record<'s>(&'s mut self, input: &'s [u8]) -> (Cells<'s>, usize) {
        match plain_line(input) {
            Some((line, consumed)) => (self.split_plain(line), consumed),
            None => self.parse_quoted(input),
        }
    }

    /// The cells of a line without quotes: its delimiters are all the
    /// parsing it needs (csv-core would copy every byte to find them).
    fn split_plain<'s>(&'s mut self, line: &'s [u8]) -> Cells<'s> {
        let mut n = 0;
        for at in memchr::memchr_iter(self.delimiter, line).chain([line.len()]) {
            if n == self.ends.len() {
                self.ends.resize(n * 2, 0);
            }
            self.ends[n] = at;
            n += 1;
        }
        Cells {
            data: line,
            ends: &self.ends[..n],
            gap: 1,
        }
    }

    fn parse_quoted(&mut self, input: &[u8]) -> (Cells<'_>, usize) {
        use csv_core::ReadRecordResult as R;
        self.core.reset();
        let (mut at_in, mut at_out, mut at_end) = (0, 0, 0);
        loop {
            let (result, n_in, n_out, n_ends) = self.core.read_record(
                &input[at_in..],
                &mut self.out[at_out..],
                &mut self.ends[at_end..],
            );
            at_in += n_in;
            at_out += n_out;
            at_end += n_ends;
            match result {
                R::InputEmpty if at_in < input.len() => continue,
                // An empty input tells csv-core the data ended.
                R::InputEmpty => {
                    let (result, _, n_out, n_ends) = self.core.read_record(
                        &[],
                        &mut self.out[at_out..],
                        &mut self.ends[at_end..],
                    );
                    at_out += n_out;
                    at_end += n_ends;
                    if matches!(result, R::OutputFull | R::OutputEndsFull) {
                        self.grow();
                        continue;
                    }
                    break;
                }
                R::OutputFull | R::OutputEndsFull => self.grow(),
                R::Record | R::End => break,
            }
        }
        let cells = Cells {
            data: &self.out[..at_out],
            ends: &self.ends[..at_end],
            gap: 0,
        };
        (cells, at_in)
    }

    /// What its buffers hold: a row of many cells grows `ends` alone.
    fn buffer_bytes(&self) -> usize {
        self.out.len() + self.ends.len() * std::mem::size_of::<usize>()
    }

    fn grow(&mut self) {
        let (out, ends) = (self.out.len() * 2, self.ends.len() * 2);
        self.out.resize(out, 0);
        self.ends.resize(ends, 0);
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The first record of `input` and the bytes it takes, when it is one
/// line with no quote: such a record is exactly its text split at the
/// delimiters. Anything else (quotes, a blank line, a BOM) is left to
/// csv-core.
fn plain_line(input: &[u8]) -> Option<(&[u8], usize)> {
    // csv-core ends a record at a CR (alone or before an LF) and reads the
    // LF of a CRLF as a blank line: take the same bytes, so that offsets and
    // lines agree.
    let (line, consumed) = match memchr::memchr2(b'\n', b'\r', input) {
        Some(end) => (&input[..end], end + 1),
        None => (input, input.len()),
    };
    // csv-core also drops a byte-order mark at the start of a record.
    if line.is_empty() || line.starts_with(BOM) || memchr::memchr(b'"', line).is_some() {
        return None;
    }
    Some((line, consumed))
}

/// A valid row, encoded as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRow {
    /// The encoded [`super::record::Record`].
    pub encoded: Vec<u8>,
    /// Its groups, sorted, without repeats.
    pub groups: Vec<String>,
    /// Why optional values were left out (the row is imported without
    /// them): one warning each.
    pub warnings: Vec<String>,
    /// Fields (bit per field position) whose value in the file was invalid:
    /// a new person gets them empty, an existing one keeps the stored value
    /// ([`keep_stored_values`]).
    pub kept: u64,
}

/// Validates a row that has as many columns as the header and a non-empty,
/// first-seen ID. Collects every reason rather than stopping at the first.
///
/// An invalid ID or required value flags the row (`Err`); an invalid
/// optional value is a warning, and the row is imported without it, as long
/// as a valid delivery channel remains where the feed requires one.
pub fn validate_row(record: &Cells, ctx: &RowContext) -> Result<ValidRow, Vec<String>> {
    let feed = ctx.feed;
    let mut builder = RecordBuilder::with_capacity(record.as_slice().len() + 4 * feed.fields.len());
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let mut kept = 0u64;
    let (mut has_channel, mut invalid_channel) = (false, false);
    let mut group_values: Vec<(usize, Cow<str>)> = Vec::new();
    // One UTF-8 check for the whole record instead of one per cell; a cell
    // is then a slice of it (when its ends are character boundaries).
    let whole = if ctx.encoding.reads_as_utf8() {
        std::str::from_utf8(record.as_slice()).ok()
    } else {
        None
    };
    let check_cells = ctx.encoding.reads_as_utf8() && whole.is_none();
    let base = record.as_slice().as_ptr() as usize;
    let may_have_controls = has_suspicious_bytes(record.as_slice());
    for (i, (field, col)) in feed.fields.iter().zip(ctx.field_columns).enumerate() {
        let raw = col.and_then(|c| record.get(c));
        if let Some(bad) = raw.filter(|r| check_cells && std::str::from_utf8(r).is_err()) {
            reasons.push(invalid_utf8_reason(bad, field));
            builder.push_value("");
            continue;
        }
        let decoded = match raw {
            None => Cow::Borrowed(""),
            Some(raw) => {
                let at = raw.as_ptr() as usize - base;
                match whole.and_then(|w| w.get(at..at + raw.len())) {
                    Some(cell) => Cow::Borrowed(cell),
                    None => decode_field(raw, ctx.encoding),
                }
            }
        };
        match check_value(
            decoded.trim(),
            field,
            feed,
            may_have_controls,
            &mut warnings,
        ) {
            Ok(v) => {
                has_channel |= field.kind.is_channel() && !v.is_empty();
                builder.push_value(&v);
                if !v.is_empty() && feed.group_fields.contains(&i) {
                    group_values.push((i, Cow::Owned(v.into_owned())));
                }
            }
            Err(reason) if i == feed.id_field || field.required => reasons.push(reason),
            Err(reason) => {
                invalid_channel |= field.kind.is_channel();
                warnings.push(format!("{reason}; imported without it"));
                kept |= 1 << i;
                builder.push_value("");
            }
        }
    }
    let no_channel = (feed.require_channel && !has_channel).then_some(if invalid_channel {
        "no valid delivery channel: every SMS, Voice and email value is empty or invalid"
    } else {
        "no delivery channel: SMS, Voice and email are all empty"
    });
    if !reasons.is_empty() || no_channel.is_some() {
        // Flagged: what would have been warnings are reasons too.
        reasons.extend(
            warnings
                .into_iter()
                .map(|w| w.trim_end_matches("; imported without it").to_string()),
        );
        reasons.extend(no_channel.map(str::to_string));
        return Err(reasons);
    }
    let groups = groups_of(&group_values, feed);
    Ok(ValidRow {
        encoded: builder.finish(&groups),
        groups,
        warnings,
        kept,
    })
}

fn invalid_utf8_reason(bytes: &[u8], field: &Field) -> String {
    let bad = bytes
        .utf8_chunks()
        .find(|c| !c.invalid().is_empty())
        .map(|c| {
            c.invalid()
                .iter()
                .map(|b| format!("0x{b:02X}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "'{}' holds bytes that are not UTF-8 ({bad}) in a file that is UTF-8 otherwise; correct the value in the source system, or export the file again as \"CSV UTF-8\"",
        field.column
    )
}

/// `valid` with the stored values of its kept fields (see
/// [`ValidRow::kept`]) from `old`, the stored record: a typo in today's
/// file never blanks what an existing person has. Groups follow the values.
pub fn keep_stored_values(
    valid: &ValidRow,
    old: &[u8],
    feed: &Feed,
) -> Result<ValidRow, super::record::DecodeError> {
    let new = Record::borrowed_values(&valid.encoded)?;
    let old = Record::borrowed_values(old)?;
    let values: Vec<&str> = new
        .iter()
        .enumerate()
        .map(|(i, value)| {
            if valid.kept & (1 << i) != 0 {
                old.get(i).copied().unwrap_or("")
            } else {
                value
            }
        })
        .collect();
    let encoded = encode_values(&values, feed);
    Ok(ValidRow {
        groups: Record::decode_groups(&encoded)?,
        encoded,
        warnings: valid.warnings.clone(),
        kept: 0,
    })
}

/// The stored record of `values` (in field order), with the groups they
/// make.
pub fn encode_values(values: &[&str], feed: &Feed) -> Vec<u8> {
    let mut builder = RecordBuilder::with_capacity(values.iter().map(|v| v.len() + 4).sum());
    let mut group_values: Vec<(usize, Cow<str>)> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        builder.push_value(value);
        if !value.is_empty() && feed.group_fields.contains(&i) {
            group_values.push((i, Cow::Borrowed(value)));
        }
    }
    builder.finish(&groups_of(&group_values, feed))
}

/// Bit per field position whose value in the encoded record is not empty.
pub fn filled_fields(encoded: &[u8]) -> Result<u64, super::record::DecodeError> {
    Ok(Record::borrowed_values(encoded)?
        .iter()
        .enumerate()
        .filter(|(i, v)| *i < 64 && !v.is_empty())
        .fold(0, |mask, (i, _)| mask | 1 << i))
}

/// Whether `bytes` may hold a control character: any byte below space
/// (tab, CR and LF included: cheap to over-report), DEL, or 0xC2 (the lead
/// byte of the C1 controls in UTF-8, and a few letters). No early exit, so
/// the compiler can check many bytes at a time.
fn has_suspicious_bytes(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == 0x7F) | (b == 0xC2)
    })
}

/// Tab, CR and LF may appear inside a quoted value; other control
/// characters may not.
fn first_control_char(value: &str) -> Option<char> {
    if !has_suspicious_bytes(value.as_bytes()) {
        return None;
    }
    value
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// The value to store, or why it is invalid; `warnings` gets what was
/// changed on the way (a phone's extension dropped).
fn check_value<'v>(
    value: &'v str,
    field: &Field,
    feed: &Feed,
    may_have_controls: bool,
    warnings: &mut Vec<String>,
) -> Result<Cow<'v, str>, String> {
    let column = &field.column;
    if let Some(c) = may_have_controls
        .then(|| first_control_char(value))
        .flatten()
    {
        return Err(format!(
            "control character U+{:04X} in '{column}'",
            c as u32
        ));
    }
    // A value is never longer in characters than in bytes.
    if value.len() > field.max_length {
        let length = value.chars().count();
        if length > field.max_length {
            return Err(format!(
                "value too long in '{column}': {length} characters, at most {}",
                field.max_length
            ));
        }
    }
    if value.is_empty() {
        return if field.required {
            Err(format!("required field '{column}' is empty"))
        } else {
            Ok(Cow::Borrowed(""))
        };
    }
    match field.kind {
        FieldKind::Id | FieldKind::Text => Ok(Cow::Borrowed(value)),
        FieldKind::Email => {
            if is_email(value) {
                Ok(Cow::Borrowed(value))
            } else {
                Err(format!(
                    "invalid email in '{column}': '{value}' is not an email address"
                ))
            }
        }
        FieldKind::Sms | FieldKind::Voice => {
            let phone = normalize_phone(value, feed.default_country)
                .map_err(|e| format!("invalid phone in '{column}': {e}"))?;
            if let Some(extension) = &phone.extension {
                warnings.push(format!(
                    "phone in '{column}': extension {extension} of '{value}' dropped; {} is stored (text messages and alert calls cannot dial an extension)",
                    phone.e164
                ));
            }
            Ok(Cow::Owned(phone.e164))
        }
        FieldKind::Multi => {
            let separator = field.separator.as_deref().unwrap_or(";");
            let parts = split_multi(value, separator);
            if parts.is_empty() && field.required {
                return Err(format!("required field '{column}' is empty"));
            }
            Ok(Cow::Owned(parts.join(separator)))
        }
    }
}

/// What validation makes of one value of `field` (trimmed, as a row's
/// cell is): the value to store or why it is invalid, and the warnings it
/// raises. Support's redaction uses it to keep each value's outcome.
pub fn check_field_value(
    value: &str,
    field: &Field,
    feed: &Feed,
) -> (Result<String, String>, Vec<String>) {
    let mut warnings = Vec::new();
    let outcome = check_value(value, field, feed, true, &mut warnings).map(Cow::into_owned);
    (outcome, warnings)
}

/// Splits, trims, drops empty parts and repeats (the first one is kept).
pub fn split_multi<'v>(value: &'v str, separator: &str) -> Vec<&'v str> {
    let mut out: Vec<&str> = Vec::new();
    for part in value.split(separator).map(str::trim) {
        if !part.is_empty() && !out.contains(&part) {
            out.push(part);
        }
    }
    out
}

/// A valid address whose domain has a dot (`bob@example` is almost always
/// a typo in an HR file).
pub fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return false;
    }
    if value.is_ascii() {
        return is_plain_local_part(local) && is_plain_domain(domain);
    }
    email_address::EmailAddress::is_valid(value)
}

/// The dot-atom local part of RFC 5322 (no quoted local parts: an HR
/// system does not send those).
fn is_plain_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
}

fn is_plain_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `<column>: <value>` for each group field's value (several for a multi
/// field), sorted, without repeats.
fn groups_of(values: &[(usize, Cow<str>)], feed: &Feed) -> Vec<String> {
    let mut groups = Vec::with_capacity(values.len());
    for (i, value) in values {
        let field = &feed.fields[*i];
        let mut push = |part: &str| {
            let mut name = String::with_capacity(field.column.len() + 2 + part.len());
            name.push_str(&field.column);
            name.push_str(": ");
            name.push_str(part);
            groups.push(name);
        };
        match (field.kind, &field.separator) {
            (FieldKind::Multi, Some(sep)) => {
                split_multi(value, sep).into_iter().for_each(&mut push)
            }
            _ => push(value),
        }
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{is_email, RowParser};

    fn cells_of(cells: super::Cells) -> Vec<Vec<u8>> {
        cells.iter().map(<[u8]>::to_vec).collect()
    }

    /// Splits `input` into records the way a block is walked, with or
    /// without the split of plain lines.
    fn records(input: &[u8], delimiter: u8, plain: bool) -> Vec<(Vec<Vec<u8>>, usize)> {
        let mut parser = RowParser::new(delimiter);
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let (cells, consumed) = if plain {
                parser.parse_record(&input[at..])
            } else {
                parser.parse_quoted(&input[at..])
            };
            if consumed == 0 {
                break;
            }
            out.push((cells_of(cells), consumed));
            at += consumed;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        })]

        /// The split of plain lines finds exactly what csv-core finds, and
        /// takes as many bytes: quotes, CRs, blank lines and a last line
        /// without a break included.
        #[test]
        fn plain_lines_split_as_csv_core_parses_them(
            bytes in proptest::collection::vec(
                prop::sample::select(b"ab ,;|\t\"\r\n\xc3\xa9\xef\xbb\xbf".to_vec()), 0..60),
            delimiter in prop::sample::select(b",;|\t".to_vec()),
        ) {
            prop_assert_eq!(records(&bytes, delimiter, true), records(&bytes, delimiter, false));
        }
    }

    #[test]
    fn a_plain_line_is_split_at_its_delimiters() {
        let mut parser = RowParser::new(b';');
        let (cells, consumed) = parser.parse_record(b"a;;b c;\r\nnext");
        assert_eq!(cells.gap, 1, "the plain split was used");
        assert_eq!(consumed, 8, "up to the CR, as csv-core");
        assert_eq!(cells_of(cells), [&b"a"[..], b"", b"b c", b""]);
        let (cells, _) = parser.parse_record(b"\"a;b\";c\n");
        assert_eq!(cells.gap, 0, "quotes go to csv-core");
        assert_eq!(cells_of(cells), [&b"a;b"[..], b"c"]);
        let (cells, _) = parser.parse_record(b"\xEF\xBB\xBFE1;x\n");
        assert_eq!(
            cells_of(cells),
            [&b"E1"[..], b"x"],
            "a BOM is dropped, as csv-core does"
        );
    }

    #[test]
    fn a_thread_does_not_keep_the_buffers_of_a_huge_row() {
        let huge = [b"\"".as_slice(), &vec![b'x'; 4 << 20], b"\"\n"].concat();
        let cells = RowParser::with_thread_parser(b',', |p| p.parse(&huge).count());
        assert_eq!(cells, 1);
        super::THREAD_PARSER.with(|slot| assert!(slot.borrow().is_none(), "dropped"));
        RowParser::with_thread_parser(b',', |p| p.parse(b"a,b\n").count());
        super::THREAD_PARSER.with(|slot| assert!(slot.borrow().is_some(), "kept"));
        let many_cells = [vec![b','; 1 << 18], b"\n".to_vec()].concat();
        let cells = RowParser::with_thread_parser(b',', |p| p.parse(&many_cells).count());
        assert_eq!(cells, (1 << 18) + 1);
        super::THREAD_PARSER
            .with(|slot| assert!(slot.borrow().is_none(), "dropped for its cell ends"));
    }

    #[test]
    fn emails() {
        for good in [
            "a@b.co",
            "first.last+tag@example.com",
            "o'neil@x-y.org",
            "zoë@example.com",
        ] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "bob@",
            "@x.com",
            "a@b",
            "a@.com",
            "a@b.",
            "a..b@x.com",
            "a b@x.com",
            "a@-x.com",
            "a@x_y.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
