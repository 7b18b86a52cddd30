//! `support bundle --redact`: every personal value of a bundle replaced by
//! a pseudonym that validation treats as it treated the original, so that
//! the bundle can travel and still replay identically.
//!
//! One value becomes one pseudonym everywhere in the bundle: the file, the
//! people before the run, the run's record and its error report.
//! - **IDs**: letters by letters of the same case and digits by digits,
//!   through a random map that keeps the order of the bundle's IDs (the
//!   sorted list maps to a sorted list), their lengths, repeats and empties.
//! - **Phones**: a valid number keeps its country, its leading digits and
//!   its kind (the set of number types it matches: mobile, fixed line…);
//!   its last digits are drawn again until the number is valid, of the same
//!   kind and nobody's number in the bundle. The file's way of writing it
//!   (spaces, brackets, `+`, trunk prefix, extension) is kept. An invalid
//!   one gets new digits until it is invalid for the same reason.
//! - **Everything else personal** (names, emails, unmapped columns): each
//!   word, a run of letters and digits, becomes a word of the same length,
//!   letters of the same case drawn without vowels (so a pseudonym never
//!   spells a real name) and digits. Punctuation, spaces, `@` and an
//!   address's top-level domain stay, so a valid address stays valid, an
//!   invalid one invalid for the same reason, and lengths stay.
//! - **Kept**: the header, the values of the feed's filter fields (they
//!   decide who is imported) and of its group fields unless
//!   `--redact-groups`, and bytes that are not characters (a bad byte in a
//!   UTF-8 file: the reason names it).
//!
//! The randomness is the operating system's, drawn for each bundle and
//! never written down.

use std::collections::{HashMap, HashSet};

use compact_str::CompactString;
use rand::rngs::ThreadRng;
use rand::RngExt;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use super::PersonBefore;
use crate::config::{Feed, FieldKind};
use crate::import::{
    check_field_value, container_of, decode_field, expand, is_email, phone, printable, read_header,
    scan_file, transcode_utf16, utf16_byte_order, Encoding, Header, Input, RowParser,
};
use crate::store::Run;

/// Maps and sets of a million people's values: a fast hash (no attacker
/// chooses these keys).
type Map<K, V> = HashMap<K, V, Xxh3DefaultBuilder>;
type Set<K> = HashSet<K, Xxh3DefaultBuilder>;

/// The run's file as the redactor reads it: its text as the import reads
/// it, its header when the import can read one, and the lines the run's
/// record and report name (their values are kept to rewrite the reasons).
pub(super) struct FileText {
    text: Text,
    header: Option<Header>,
    wanted: HashSet<u32>,
}

// ------------------------------------------------------------------------
// The file as the import reads it
// ------------------------------------------------------------------------

/// The file's bytes as the import reads them: a compressed file expanded,
/// a UTF-16 file as its UTF-8 copy.
struct Text {
    bytes: Vec<u8>,
    utf8_copy: bool,
    /// A UTF-16 file's byte order (true: big-endian).
    big_endian: bool,
    /// What the file was packed in (`gzip`, `zip: <entry>`): the redacted
    /// file is packed the same way.
    container: Option<String>,
}

impl Text {
    /// Takes the file's bytes (no second copy of a big file). A compressed
    /// file is expanded as the import does (up to `limit` bytes); one the
    /// import refuses is nothing here: its packed bytes are the people's
    /// data, and no redaction of them can be trusted. A workbook (also
    /// once expanded) is its sheet as the import reads it, CSV: that is
    /// redacted, and the bundle carries the redacted CSV in the workbook's
    /// place (a replay reads it by its content; line N is still row N).
    fn of(file: Vec<u8>, feed: &Feed) -> Text {
        let limit = feed.max_file_size;
        // A workbook is a ZIP too: it is read as a workbook, as the import
        // does.
        let packed = match crate::import::workbook_of(&file) {
            Some(_) => None,
            None => container_of(&file),
        };
        let (file, container) = match packed {
            None => (file, None),
            Some(kind) => {
                let mut expanded_bytes = Vec::new();
                match expand(&file, kind, limit, &mut expanded_bytes) {
                    Ok(expanded) => (expanded_bytes, Some(expanded.container)),
                    Err(_) => (Vec::new(), None),
                }
            }
        };
        let (file, container) = match crate::import::workbook_of(&file) {
            Some(kind) => (sheet_as_csv(file, kind, feed), None),
            None => (file, container),
        };
        let plain = Text {
            bytes: file,
            utf8_copy: false,
            big_endian: false,
            container,
        };
        if let Some(order) = utf16_byte_order(&plain) {
            let mut bytes = Vec::with_capacity(plain.bytes.len());
            if transcode_utf16(&plain, order, &mut bytes).is_ok() {
                return Text {
                    bytes,
                    utf8_copy: true,
                    big_endian: plain.bytes.starts_with(&[0xFE, 0xFF]),
                    container: plain.container,
                };
            }
        }
        plain
    }

    /// `redacted` (in this text's form) in the original file's form.
    fn encode_like(&self, redacted: Vec<u8>) -> Vec<u8> {
        let unpacked = self.unicode_like(redacted);
        match self.container.as_deref() {
            None => unpacked,
            Some("gzip") => pack_gzip(&unpacked),
            Some(other) => {
                if let Some(name) = other.strip_prefix("tar.gz: ") {
                    pack_gzip(&pack_tar(name, &unpacked))
                } else if let Some(name) = other.strip_prefix("tar: ") {
                    pack_tar(name, &unpacked)
                } else {
                    pack_zip(other.strip_prefix("zip: ").unwrap_or("file.csv"), &unpacked)
                }
            }
        }
    }

    fn unicode_like(&self, redacted: Vec<u8>) -> Vec<u8> {
        if !self.utf8_copy {
            return redacted;
        }
        let big_endian = self.big_endian;
        let text = String::from_utf8_lossy(&redacted);
        let mut out = Vec::with_capacity(2 + text.len() * 2);
        out.extend_from_slice(if big_endian {
            &[0xFE, 0xFF]
        } else {
            &[0xFF, 0xFE]
        });
        for unit in text.encode_utf16() {
            out.extend_from_slice(&if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }
}

/// `bytes` as a gzip file. Writing into memory cannot fail.
fn pack_gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

/// The sheet of a workbook the import reads, as the CSV it reads; nothing
/// when the import refuses the workbook.
fn sheet_as_csv(file: Vec<u8>, kind: crate::import::Workbook, feed: &Feed) -> Vec<u8> {
    let mut csv = Vec::new();
    let request = crate::import::SheetRequest::for_feed(feed);
    match crate::import::workbook_to_csv(&file, kind, &request, &mut csv) {
        Ok(_) => csv,
        Err(_) => Vec::new(),
    }
}

/// `bytes` as a tar archive holding one file called `name`.
fn pack_tar(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, bytes)
        .and_then(|()| builder.into_inner())
        .unwrap_or_default()
}

/// `bytes` as a ZIP archive holding one file called `name`.
fn pack_zip(name: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let written = writer
        .start_file(name, zip::write::SimpleFileOptions::default())
        .map_err(std::io::Error::other)
        .and_then(|()| writer.write_all(bytes));
    match written.and_then(|()| writer.finish().map_err(std::io::Error::other)) {
        Ok(cursor) => cursor.into_inner(),
        Err(_) => Vec::new(),
    }
}

impl Input for Text {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn is_utf8_copy(&self) -> bool {
        self.utf8_copy
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.bytes.as_slice().read_exact_at(offset, buf)
    }
}

/// One data record: where it starts, its physical line, its cells as the
/// import reads them (decoded, not trimmed) and their raw byte ranges.
struct Record {
    line: u32,
    cells: Vec<String>,
    spans: Vec<(usize, usize)>,
}

/// Walks the data records the way the import splits them.
fn for_each_record(text: &[u8], header: &Header, encoding: Encoding, mut f: impl FnMut(Record)) {
    let mut at = (header.data_start as usize).min(text.len());
    let mut line = header.lines_before_data as u32 + 1;
    // The LF of the header's CRLF may be where the data starts.
    let mut after_cr = at > 0 && text[at - 1] == b'\r';
    let mut parser = RowParser::new(header.delimiter);
    let mut count_lines = |bytes: &[u8], line: &mut u32| {
        for &b in bytes {
            if b == b'\r' || (b == b'\n' && !after_cr) {
                *line += 1;
            }
            after_cr = b == b'\r';
        }
    };
    while at < text.len() {
        // Blank lines (and the LF of a CRLF) hold no record; csv-core
        // would skip them into the next one.
        let blank = text[at..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        count_lines(&text[at..at + blank], &mut line);
        at += blank;
        if at >= text.len() {
            break;
        }
        let (cells, used) = parser.parse_record(&text[at..]);
        if used == 0 {
            break;
        }
        let bytes = &text[at..at + used];
        let cells: Vec<&[u8]> = cells.iter().collect();
        if !(cells.len() == 1 && cells[0].is_empty()) {
            f(Record {
                line,
                cells: cells
                    .iter()
                    .map(|c| decode_field(c, encoding).into_owned())
                    .collect(),
                spans: cell_spans(bytes, header.delimiter)
                    .into_iter()
                    .map(|(s, e)| (at + s, at + e))
                    .collect(),
            });
        }
        count_lines(bytes, &mut line);
        at += used;
    }
}

/// The raw byte ranges of a record's cells (quotes included), read as
/// csv-core reads them: a quote opens a quoted part only at a cell's start.
fn cell_spans(record: &[u8], delimiter: u8) -> Vec<(usize, usize)> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Plain,
        Quoted,
        QuoteInQuoted,
    }
    let mut spans = Vec::new();
    let mut start = 0;
    let mut state = State::Start;
    for (i, &b) in record.iter().enumerate() {
        state = match state {
            State::Start if b == b'"' => State::Quoted,
            State::Quoted if b == b'"' => State::QuoteInQuoted,
            State::Quoted => State::Quoted,
            State::QuoteInQuoted if b == b'"' => State::Quoted,
            _ if b == delimiter => {
                spans.push((start, i));
                start = i + 1;
                State::Start
            }
            _ if b == b'\r' || b == b'\n' => {
                spans.push((start, i));
                return spans;
            }
            _ => State::Plain,
        };
    }
    spans.push((start, record.len()));
    spans
}

/// The lines a report names (its first column).
fn report_lines(report: &[u8]) -> Vec<u32> {
    read_report(report)
        .iter()
        .skip(1)
        .filter_map(|row| row.first()?.parse().ok())
        .collect()
}

fn read_report(report: &[u8]) -> Vec<Vec<String>> {
    let body = report.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(report);
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body)
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .collect()
}

/// Each data row's raw hash, by line, as pass 1 computes it.
fn row_hashes_by_line(text: &Text, feed: &Feed) -> Map<u32, u64> {
    scan_file(text, feed, &|_| {})
        .map(|scan| scan.rows.iter().map(|r| (r.line, r.hash)).collect())
        .unwrap_or_default()
}

/// Each ID's first row: (its raw hash, its line).
fn first_rows_by_id(text: &Text, feed: &Feed) -> Map<String, (u64, u32)> {
    let mut out = Map::default();
    if let Ok(scan) = scan_file(text, feed, &|_| {}) {
        for row in &scan.rows {
            out.entry(row.id.to_string())
                .or_insert((row.hash, row.line));
        }
    }
    out
}

// ------------------------------------------------------------------------
// Characters
// ------------------------------------------------------------------------

/// Where a character's replacement comes from. Characters without one
/// (punctuation, spaces, symbols, controls) stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Digit,
    Upper,
    Lower,
    /// A non-ASCII capital: one of Latin-1's (one byte in Windows-1252,
    /// two in UTF-8, as most such letters).
    WideUpper,
    WideLower,
    /// A letter of three UTF-8 bytes without case (CJK and the like).
    Ideograph,
}

impl Pool {
    fn of(c: char) -> Option<Pool> {
        match c {
            '0'..='9' => Some(Pool::Digit),
            'A'..='Z' => Some(Pool::Upper),
            'a'..='z' => Some(Pool::Lower),
            c if c.is_ascii() || !c.is_alphabetic() => None,
            c if c.len_utf8() == 2 && c.is_uppercase() => Some(Pool::WideUpper),
            c if c.len_utf8() == 2 && c.is_lowercase() => Some(Pool::WideLower),
            c if c.len_utf8() == 3 && !c.is_uppercase() && !c.is_lowercase() => {
                Some(Pool::Ideograph)
            }
            _ => None,
        }
    }

    /// The characters a word's letters are drawn from: no vowels, so that
    /// a pseudonym never spells a real name.
    fn word_chars(self) -> &'static [char] {
        const DIGITS: &[char] = &['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
        match self {
            Pool::Digit => DIGITS,
            Pool::Upper => &[
                'B', 'C', 'D', 'F', 'G', 'H', 'J', 'K', 'L', 'M', 'N', 'P', 'Q', 'R', 'S', 'T',
                'V', 'W', 'X', 'Z',
            ],
            Pool::Lower => &[
                'b', 'c', 'd', 'f', 'g', 'h', 'j', 'k', 'l', 'm', 'n', 'p', 'q', 'r', 's', 't',
                'v', 'w', 'x', 'z',
            ],
            Pool::WideUpper => &['Ç', 'Ð', 'Ñ', 'Þ'],
            Pool::WideLower => &['ç', 'ð', 'ñ', 'þ', 'ß'],
            // Rare ideographs (CJK Extension A): common ones are surnames
            // (丁, 万), and a pseudonym must not spell a real name.
            Pool::Ideograph => &[
                '\u{3400}', '\u{3401}', '\u{3402}', '\u{3403}', '\u{3404}', '\u{3405}', '\u{3406}',
                '\u{3407}', '\u{3408}', '\u{3409}', '\u{340A}', '\u{340B}', '\u{340C}', '\u{340D}',
                '\u{340E}', '\u{340F}',
            ],
        }
    }

    /// The class's whole alphabet in order (IDs keep their order through
    /// it; words fall back to it when the vowel-free one is used up).
    fn alphabet(self) -> Vec<char> {
        match self {
            Pool::Digit => ('0'..='9').collect(),
            Pool::Upper => ('A'..='Z').collect(),
            Pool::Lower => ('a'..='z').collect(),
            Pool::WideUpper => ('\u{C0}'..='\u{DE}').filter(|&c| c != '×').collect(),
            Pool::WideLower => ('\u{DF}'..='\u{FF}').filter(|&c| c != '÷').collect(),
            Pool::Ideograph => ('\u{4E00}'..='\u{9FA5}').collect(),
        }
    }
}

/// The characters of `value` that have a pool, in order.
fn pooled_chars(value: &str) -> impl Iterator<Item = char> + '_ {
    value.chars().filter(|&c| Pool::of(c).is_some())
}

/// One cell's raw bytes with its pooled characters replaced, in order, by
/// `to`'s characters at the places where `from` (the cell's value) has its
/// pooled characters. `None` when the raw bytes do not hold `from`'s pooled
/// characters (the cell was not read as expected).
fn overlay(raw: &[u8], encoding: Encoding, from: &str, to: &str) -> Option<Vec<u8>> {
    let mut expected = pooled_chars(from);
    let mut replacements = from
        .chars()
        .zip(to.chars())
        .filter(|(f, _)| Pool::of(*f).is_some())
        .map(|(_, t)| t);
    let mut out = Vec::with_capacity(raw.len());
    let mut failed = false;
    for_each_unit(raw, encoding, |unit, c| {
        match c.filter(|&c| Pool::of(c).is_some()) {
            Some(c) if !failed => match (expected.next(), replacements.next()) {
                (Some(e), Some(r)) if e == c => match encode_char(r, encoding) {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => out.extend_from_slice(unit),
                },
                _ => failed = true,
            },
            _ => out.extend_from_slice(unit),
        }
    });
    (!failed && expected.next().is_none()).then_some(out)
}

/// Calls `f` with each character of `raw` (its bytes, the character) in
/// `encoding`; a byte that is no character comes with `None`.
fn for_each_unit(raw: &[u8], encoding: Encoding, mut f: impl FnMut(&[u8], Option<char>)) {
    if encoding == Encoding::Windows1252 {
        for i in 0..raw.len() {
            let c = decode_field(&raw[i..=i], encoding).chars().next();
            f(&raw[i..=i], c);
        }
        return;
    }
    for chunk in raw.utf8_chunks() {
        let valid = chunk.valid();
        for (i, c) in valid.char_indices() {
            f(&valid.as_bytes()[i..i + c.len_utf8()], Some(c));
        }
        for i in 0..chunk.invalid().len() {
            f(&chunk.invalid()[i..=i], None);
        }
    }
}

fn encode_char(c: char, encoding: Encoding) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4];
    let text = c.encode_utf8(&mut buf);
    if encoding != Encoding::Windows1252 {
        return Some(text.as_bytes().to_vec());
    }
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
    (!unmappable).then(|| bytes.into_owned())
}

// ------------------------------------------------------------------------
// The redactor
// ------------------------------------------------------------------------

/// What is done with one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Keep,
    Id,
    Phone,
    Email,
    Words,
}

/// A phone value's pseudonym, with the extension and the stored number it
/// made (the reasons quote them).
#[derive(Clone)]
struct PhoneValue {
    pseudonym: String,
    extension: Option<(String, String)>,
    number: Option<(String, String)>,
}

/// How many digits of an invalid phone stay as written: what makes it
/// invalid is mostly at its start (a trunk prefix, a country code).
const KEPT_LEADING_DIGITS: usize = 3;

/// Replaces a bundle's personal values: collect everything first (the
/// file, the people before the run, the run), then build the ID map, then
/// rewrite each part (the file first: the reasons quote its values).
pub(super) struct Redactor<'f> {
    feed: &'f Feed,
    redact_groups: bool,
    encoding: Encoding,
    rng: ThreadRng,
    /// The file's columns: column to field.
    columns: Map<usize, usize>,
    all_ids: Set<String>,
    ids: Map<String, String>,
    words: Map<String, String>,
    /// Words and numbers as [`key`]s: a million people's worth of them
    /// would not fit as strings.
    used_words: Set<u64>,
    original_words: Set<u64>,
    /// Valid numbers, E.164 to E.164.
    numbers: Map<CompactString, CompactString>,
    used_numbers: Set<u64>,
    original_numbers: Set<u64>,
    /// Invalid phones as written: their pseudonyms are drawn, not derived.
    invalid_phones: Map<String, String>,
    /// For the lines the run's record and report name: each cell's
    /// (value, pseudonym), trimmed.
    lines: Map<u32, Vec<(String, String)>>,
    /// The same lines' phones.
    line_phones: Map<u32, Vec<PhoneValue>>,
    /// Values whose outcome could not be kept: (line, 0 for the people
    /// before the run).
    unkept: Vec<u32>,
    /// The lines of the run's recorded row errors.
    error_lines: Set<u32>,
    /// Each ID's first row in the original file: (raw hash, line).
    old_rows: Map<String, (u64, u32)>,
    /// Each line's raw hash in the redacted file.
    new_hashes: Map<u32, u64>,
}

impl<'f> Redactor<'f> {
    pub(super) fn new(feed: &'f Feed, redact_groups: bool, run: &Run) -> Redactor<'f> {
        Redactor {
            feed,
            redact_groups,
            encoding: run.encoding.unwrap_or(Encoding::Utf8),
            rng: rand::rng(),
            columns: Map::default(),
            all_ids: Set::default(),
            ids: Map::default(),
            words: Map::default(),
            used_words: Set::default(),
            original_words: Set::default(),
            numbers: Map::default(),
            used_numbers: Set::default(),
            original_numbers: Set::default(),
            invalid_phones: Map::default(),
            lines: Map::default(),
            line_phones: Map::default(),
            unkept: Vec::new(),
            error_lines: Set::default(),
            old_rows: Map::default(),
            new_hashes: Map::default(),
        }
    }

    /// Reads the run's file (and which lines its report names) and collects
    /// its values.
    pub(super) fn collect_file(&mut self, file: Vec<u8>, report: Option<&[u8]>) -> FileText {
        let text = Text::of(file, self.feed);
        let header = read_header(&text, self.feed).ok();
        let wanted = report
            .map(report_lines)
            .unwrap_or_default()
            .into_iter()
            .collect();
        if let Some(header) = &header {
            self.set_header(header);
            for_each_record(&text.bytes, header, self.encoding, |record| {
                self.collect_record(&record)
            });
        }
        self.old_rows = first_rows_by_id(&text, self.feed);
        FileText {
            text,
            header,
            wanted,
        }
    }

    /// The file with its values replaced, in the original's form (UTF-16
    /// stays UTF-16).
    pub(super) fn rewrite_file(&mut self, file: &FileText) -> Vec<u8> {
        let wanted: HashSet<u32> = file
            .wanted
            .iter()
            .chain(&self.error_lines)
            .copied()
            .collect();
        let bytes = match &file.header {
            Some(header) => self.rewrite_records(&file.text.bytes, header, &wanted),
            None => self.rewrite_unreadable(&file.text.bytes),
        };
        let redacted = Text {
            bytes,
            utf8_copy: file.text.utf8_copy,
            big_endian: file.text.big_endian,
            container: None,
        };
        self.new_hashes = row_hashes_by_line(&redacted, self.feed);
        file.text.encode_like(redacted.bytes)
    }

    fn set_header(&mut self, header: &Header) {
        self.columns = header
            .field_columns
            .iter()
            .enumerate()
            .filter_map(|(field, col)| col.map(|c| (c, field)))
            .collect();
    }

    fn treatment(&self, field: Option<usize>) -> Treatment {
        let Some(i) = field else {
            return Treatment::Words;
        };
        if self.feed.filters.iter().any(|f| f.field == i)
            || (!self.redact_groups && self.feed.group_fields.contains(&i))
        {
            return Treatment::Keep;
        }
        match self.feed.fields[i].kind {
            FieldKind::Id => Treatment::Id,
            FieldKind::Sms | FieldKind::Voice => Treatment::Phone,
            FieldKind::Email => Treatment::Email,
            FieldKind::Text | FieldKind::Multi => Treatment::Words,
        }
    }

    // -- what the bundle holds, before anything is replaced ---------------

    fn collect_value(&mut self, field: Option<usize>, value: &str) {
        if value.is_empty() {
            return;
        }
        match self.treatment(field) {
            Treatment::Keep => {}
            Treatment::Id => {
                self.all_ids.insert(value.to_string());
            }
            Treatment::Phone => {
                if let Some(i) = field {
                    if let Ok(e164) = check_field_value(value, &self.feed.fields[i], self.feed).0 {
                        self.original_numbers.insert(key(&e164));
                    }
                }
            }
            Treatment::Email | Treatment::Words => {
                for word in words_of(value) {
                    self.original_words.insert(key(word));
                }
            }
        }
    }

    fn collect_record(&mut self, record: &Record) {
        for (col, cell) in record.cells.iter().enumerate() {
            let field = self.columns.get(&col).copied();
            self.collect_value(field, cell.trim());
        }
    }

    pub(super) fn collect_person(&mut self, person: &PersonBefore) {
        {
            self.all_ids.insert(person.id.clone());
            for (i, value) in person.values.iter().enumerate() {
                match self.treatment(Some(i)) {
                    Treatment::Phone => {
                        self.original_numbers.insert(key(value));
                    }
                    _ => self.collect_value(Some(i), value),
                }
            }
        }
    }

    pub(super) fn collect_run(&mut self, run: &Run) {
        self.error_lines.extend(run.errors.iter().map(|e| e.line));
        let ids = run
            .errors
            .iter()
            .filter_map(|e| e.id.clone())
            .chain(run.restored_id.clone());
        self.all_ids.extend(ids);
    }

    /// IDs keep their order: the sorted list of the bundle's IDs maps to a
    /// sorted list. At each place where sorted IDs part ways, the letters
    /// or digits they part on get the same number of new ones of their
    /// class, drawn at random and kept in order; classes keep their ranges,
    /// so IDs that part on classes keep their order too.
    pub(super) fn build_id_map(&mut self) {
        let mut ids: Vec<&String> = self.all_ids.iter().filter(|id| !id.is_empty()).collect();
        ids.sort();
        let chars: Vec<Vec<char>> = ids.iter().map(|id| id.chars().collect()).collect();
        let mut mapped = chars.clone();
        let mut pending = vec![(0, ids.len(), 0)];
        while let Some((lo, hi, depth)) = pending.pop() {
            let mut i = lo;
            while i < hi && chars[i].len() == depth {
                i += 1;
            }
            let mut branches: Vec<(char, usize, usize)> = Vec::new();
            while i < hi {
                let c = chars[i][depth];
                let start = i;
                while i < hi && chars[i][depth] == c {
                    i += 1;
                }
                branches.push((c, start, i));
            }
            let mut to: HashMap<char, char> = HashMap::new();
            for pool in [Pool::Digit, Pool::Upper, Pool::Lower] {
                let present: Vec<char> = branches
                    .iter()
                    .map(|b| b.0)
                    .filter(|&c| Pool::of(c) == Some(pool))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let alphabet = pool.alphabet();
                let mut picks =
                    rand::seq::index::sample(&mut self.rng, alphabet.len(), present.len())
                        .into_vec();
                picks.sort_unstable();
                to.extend(
                    present
                        .into_iter()
                        .zip(picks.into_iter().map(|k| alphabet[k])),
                );
            }
            for (c, start, end) in branches {
                let new = to.get(&c).copied().unwrap_or(c);
                for id in &mut mapped[start..end] {
                    id[depth] = new;
                }
                pending.push((start, end, depth + 1));
            }
        }
        self.ids = ids
            .into_iter()
            .zip(mapped)
            .map(|(id, new)| (id.clone(), new.into_iter().collect()))
            .collect();
        self.all_ids = Set::default();
    }

    // -- pseudonyms -------------------------------------------------------

    fn id(&self, value: &str) -> String {
        self.ids
            .get(value)
            .cloned()
            .unwrap_or_else(|| value.to_string())
    }

    /// A word's pseudonym: the same length, each character from its pool;
    /// never one another word already got, and not one of the bundle's
    /// words while there is room.
    fn word(&mut self, word: &str) -> String {
        if let Some(known) = self.words.get(word) {
            return known.clone();
        }
        let pools: Vec<Option<Pool>> = word.chars().map(Pool::of).collect();
        let mut chosen = None;
        for attempt in 0..128 {
            let candidate: String = word
                .chars()
                .zip(&pools)
                .map(|(c, pool)| match pool {
                    Some(pool) => {
                        let set = pool.word_chars();
                        set[self.rng.random_range(0..set.len())]
                    }
                    None => c,
                })
                .collect();
            if self.used_words.contains(&key(&candidate))
                || (attempt < 64 && self.original_words.contains(&key(&candidate)))
            {
                continue;
            }
            chosen = Some(candidate);
            break;
        }
        let new = chosen.unwrap_or_else(|| self.first_free_word(word));
        self.used_words.insert(key(&new));
        self.words.insert(word.to_string(), new.clone());
        new
    }

    /// The first word of `word`'s shape (over whole alphabets) no other
    /// word got: a short word among many of its shape.
    fn first_free_word(&self, word: &str) -> String {
        let alphabets: Vec<Vec<char>> = word
            .chars()
            .map(|c| Pool::of(c).map_or(vec![c], Pool::alphabet))
            .collect();
        let mut index = vec![0usize; alphabets.len()];
        for _ in 0..(1 << 20) {
            let candidate: String = index.iter().zip(&alphabets).map(|(&i, a)| a[i]).collect();
            if !self.used_words.contains(&key(&candidate)) {
                return candidate;
            }
            let mut k = alphabets.len();
            loop {
                if k == 0 {
                    return word.to_string();
                }
                k -= 1;
                index[k] += 1;
                if index[k] < alphabets[k].len() {
                    break;
                }
                index[k] = 0;
            }
        }
        word.to_string()
    }

    /// `value` with each word replaced, except words starting at or after
    /// byte `keep_from`.
    fn words_in(&mut self, value: &str, keep_from: usize) -> String {
        let mut out = String::with_capacity(value.len());
        let mut at = 0;
        while at < value.len() {
            let rest = &value[at..];
            let word_len = rest
                .find(|c: char| Pool::of(c).is_none())
                .unwrap_or(rest.len());
            if word_len > 0 {
                let word = &rest[..word_len];
                if at >= keep_from {
                    out.push_str(word);
                } else {
                    let new = self.word(word);
                    out.push_str(&new);
                }
            }
            let gap = &rest[word_len..];
            let gap_len = gap
                .find(|c: char| Pool::of(c).is_some())
                .unwrap_or(gap.len());
            out.push_str(&gap[..gap_len]);
            at += word_len + gap_len;
        }
        out
    }

    fn email(&mut self, value: &str, line: u32) -> String {
        let new = self.words_in(value, top_level_domain(value));
        if is_email(value) != is_email(&new) {
            self.unkept.push(line);
        }
        new
    }

    /// A valid number's pseudonym: its last digits drawn again until it is
    /// valid, of the same kind, and nobody's number.
    fn number(&mut self, e164: &str) -> String {
        if let Some(known) = self.numbers.get(e164) {
            return known.to_string();
        }
        let kind = phone::number_kind(e164);
        let digits = e164.len().saturating_sub(1);
        let mut tail = 4.min(digits.saturating_sub(3)).max(1).min(e164.len());
        let mut new = None;
        for attempt in 1..=600 {
            if attempt % 150 == 0 {
                tail = (tail + 1)
                    .min(digits.saturating_sub(1))
                    .max(1)
                    .min(e164.len());
            }
            let mut candidate = e164[..e164.len() - tail].to_string();
            for _ in 0..tail {
                candidate.push(char::from(b'0' + self.rng.random_range(0..10u8)));
            }
            if candidate == e164
                || self.used_numbers.contains(&key(&candidate))
                || self.original_numbers.contains(&key(&candidate))
                || (kind.is_some() && phone::number_kind(&candidate) != kind)
            {
                continue;
            }
            new = Some(candidate);
            break;
        }
        let new = new.unwrap_or_else(|| {
            self.unkept.push(0);
            self.words_in(e164, usize::MAX)
        });
        self.used_numbers.insert(key(&new));
        self.numbers.insert(e164.into(), new.as_str().into());
        new
    }

    fn phone(&mut self, value: &str, field: usize, line: u32) -> PhoneValue {
        if let Some(known) = self.invalid_phones.get(value) {
            return PhoneValue {
                pseudonym: known.clone(),
                extension: None,
                number: None,
            };
        }
        match check_field_value(value, &self.feed.fields[field], self.feed).0 {
            Ok(e164) => self.valid_phone(value, &e164, line),
            Err(reason) => {
                let new = self.invalid_phone(value, field, &reason, line);
                self.invalid_phones
                    .insert(value.to_string(), new.pseudonym.clone());
                new
            }
        }
    }

    /// A valid phone as written, with the digits that differ between its
    /// number and the number's pseudonym written over its last digits, and
    /// an extension's digits drawn again.
    fn valid_phone(&mut self, value: &str, e164: &str, line: u32) -> PhoneValue {
        let to = self.number(e164);
        let country = self.feed.default_country;
        let extension = phone::normalize_phone(value, country)
            .ok()
            .and_then(|p| p.extension);
        let digits: Vec<usize> = value
            .char_indices()
            .filter(|(_, c)| c.is_ascii_digit())
            .map(|(i, _)| i)
            .collect();
        let ext_len = extension.as_ref().map_or(0, String::len).min(digits.len());
        let (number_digits, extension_digits) = digits.split_at(digits.len() - ext_len);
        let differing = e164.len() - common_prefix_len(e164, &to);
        let mut bytes = value.as_bytes().to_vec();
        let mut written = differing <= number_digits.len();
        if written {
            for (k, &at) in number_digits.iter().rev().take(differing).enumerate() {
                bytes[at] = to.as_bytes()[to.len() - 1 - k];
            }
        }
        // The extension's digits as one word: the same value, the same
        // pseudonym.
        let old_extension: String = extension_digits
            .iter()
            .map(|&at| char::from(bytes[at]))
            .collect();
        let new_extension = self.word(&old_extension);
        for (&at, digit) in extension_digits.iter().zip(new_extension.bytes()) {
            bytes[at] = digit;
        }
        // Only ASCII digits were written over ASCII digits.
        let pseudonym = String::from_utf8(bytes).unwrap_or_else(|_| to.clone());
        written &= phone::normalize_phone(&pseudonym, country)
            .is_ok_and(|p| p.e164 == to && p.extension.is_some() == extension.is_some());
        if !written {
            self.unkept.push(line);
        }
        PhoneValue {
            pseudonym,
            extension: extension.map(|e| (e, new_extension)),
            number: Some((e164.to_string(), to)),
        }
    }

    /// An invalid phone: its words replaced and its digits after the first
    /// few drawn again until validation refuses it for the same reason.
    fn invalid_phone(&mut self, value: &str, field: usize, reason: &str, line: u32) -> PhoneValue {
        let worded = self.words_in(value, usize::MAX);
        let mut kept = 0;
        let mut last = worded.clone();
        for _ in 0..64 {
            let candidate: String = value
                .chars()
                .zip(worded.chars())
                .map(|(original, worded)| {
                    if !original.is_ascii_digit() {
                        return worded;
                    }
                    kept += 1;
                    if kept <= KEPT_LEADING_DIGITS {
                        original
                    } else {
                        char::from(b'0' + self.rng.random_range(0..10u8))
                    }
                })
                .collect();
            kept = 0;
            let outcome = check_field_value(&candidate, &self.feed.fields[field], self.feed).0;
            if outcome == Err(reason.replace(value, &candidate)) {
                return PhoneValue {
                    pseudonym: candidate,
                    extension: None,
                    number: None,
                };
            }
            last = candidate;
        }
        self.unkept.push(line);
        PhoneValue {
            pseudonym: last,
            extension: None,
            number: None,
        }
    }

    /// The pseudonym of one trimmed value of `field` (a column of the file
    /// no field reads when `None`).
    fn value(&mut self, field: Option<usize>, value: &str, line: u32) -> String {
        self.cell_value(field, value, line).0
    }

    /// [`Redactor::value`], with what a phone's pseudonym made of its
    /// extension and stored number.
    fn cell_value(
        &mut self,
        field: Option<usize>,
        value: &str,
        line: u32,
    ) -> (String, Option<PhoneValue>) {
        if value.is_empty() {
            return (String::new(), None);
        }
        match (self.treatment(field), field) {
            (Treatment::Keep, _) => (value.to_string(), None),
            (Treatment::Id, _) => (self.id(value), None),
            (Treatment::Phone, Some(i)) => {
                let phone = self.phone(value, i, line);
                (phone.pseudonym.clone(), Some(phone))
            }
            (Treatment::Email, _) => (self.email(value, line), None),
            // A person's ID in another column (a manager's ID) is that
            // person's pseudonym there too.
            _ => match self.ids.get(value) {
                Some(id) => (id.clone(), None),
                None => (self.words_in(value, usize::MAX), None),
            },
        }
    }

    /// A stored value (phones in E.164) of field `i`.
    fn stored_value(&mut self, i: usize, value: &str) -> String {
        match self.treatment(Some(i)) {
            Treatment::Phone if value.starts_with('+') => self.number(value),
            _ => self.value(Some(i), value, 0),
        }
    }

    /// Bytes the import cannot read as cells: every word replaced.
    fn raw_words(&mut self, raw: &[u8], encoding: Encoding) -> Vec<u8> {
        let mut units: Vec<(Vec<u8>, Option<char>)> = Vec::new();
        for_each_unit(raw, encoding, |bytes, c| {
            units.push((bytes.to_vec(), c.filter(|&c| Pool::of(c).is_some())))
        });
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < units.len() {
            if units[i].1.is_none() {
                out.extend_from_slice(&units[i].0);
                i += 1;
                continue;
            }
            let start = i;
            while i < units.len() && units[i].1.is_some() {
                i += 1;
            }
            let word: String = units[start..i].iter().filter_map(|u| u.1).collect();
            let new = self.word(&word);
            for (unit, c) in units[start..i].iter().zip(new.chars()) {
                match encode_char(c, encoding) {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => out.extend_from_slice(&unit.0),
                }
            }
        }
        out
    }

    // -- the bundle's parts -----------------------------------------------

    fn rewrite_records(&mut self, text: &[u8], header: &Header, wanted: &HashSet<u32>) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut last = 0;
        let encoding = self.encoding;
        for_each_record(text, header, encoding, |record| {
            let keep_values = wanted.contains(&record.line);
            let mut values = Vec::new();
            let mut phones = Vec::new();
            let readable = record.spans.len() == record.cells.len();
            for (col, &(start, end)) in record.spans.iter().enumerate() {
                out.extend_from_slice(&text[last..start]);
                last = end;
                let raw = &text[start..end];
                let Some(cell) = record.cells.get(col).filter(|_| readable) else {
                    let new = self.raw_words(raw, encoding);
                    out.extend_from_slice(&new);
                    continue;
                };
                let value = cell.trim();
                let field = self.columns.get(&col).copied();
                let (new, phone) = self.cell_value(field, value, record.line);
                if let Some(phone) = phone.filter(|_| keep_values) {
                    phones.push(phone);
                }
                let bytes = if new == value {
                    raw.to_vec()
                } else {
                    overlay(raw, encoding, value, &new).unwrap_or_else(|| {
                        self.unkept.push(record.line);
                        self.raw_words(raw, encoding)
                    })
                };
                out.extend_from_slice(&bytes);
                if keep_values {
                    values.push((value.to_string(), new));
                }
            }
            if keep_values {
                self.lines.insert(record.line, values);
                self.line_phones.insert(record.line, phones);
            }
        });
        out.extend_from_slice(&text[last..]);
        out
    }

    /// A file whose header the import refuses (not a CSV, a column missing
    /// or twice): its first line as it is (the reason is about it), every
    /// word after it replaced.
    fn rewrite_unreadable(&mut self, text: &[u8]) -> Vec<u8> {
        let first_line = memchr::memchr2(b'\r', b'\n', text).unwrap_or(text.len());
        let mut out = text[..first_line].to_vec();
        let rest = self.raw_words(&text[first_line..], Encoding::Utf8);
        out.extend_from_slice(&rest);
        out
    }

    pub(super) fn person(&mut self, person: &PersonBefore) -> PersonBefore {
        let values = person
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| self.stored_value(i, v))
            .collect();
        // A row the server trusted by its hash is trusted by its new hash.
        let hash = person
            .hash
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .and_then(|h| {
                let (old, line) = self.old_rows.get(&person.id)?;
                (*old == h).then(|| self.new_hashes.get(line)).flatten()
            })
            .map(|h| format!("{h:016x}"));
        PersonBefore {
            id: self.id(&person.id),
            values,
            hash,
        }
    }

    pub(super) fn run(&mut self, run: &Run) -> Run {
        let mut new = run.clone();
        for error in &mut new.errors {
            error.id = error.id.as_deref().map(|id| self.id(id));
            error.reasons = error
                .reasons
                .iter()
                .map(|r| self.reason(r, error.line))
                .collect();
        }
        new.would_remove = run
            .would_remove
            .iter()
            .map(|shown| self.removed_person(shown))
            .collect();
        new.restored_id = run.restored_id.as_deref().map(|id| self.id(id));
        for admin in [
            &mut new.confirmed_by,
            &mut new.rejected_by,
            &mut new.requested_by,
        ] {
            if admin.is_some() {
                *admin = Some("admin".into());
            }
        }
        new
    }

    /// A would-be removal as a held run shows it: the person's ID, then
    /// their name's values (the longest known ID the text starts with).
    fn removed_person(&mut self, shown: &str) -> String {
        let id_end = shown
            .char_indices()
            .filter(|&(_, c)| c == ' ')
            .map(|(i, _)| i)
            .chain([shown.len()])
            .rfind(|&end| self.ids.contains_key(&shown[..end]));
        match id_end {
            Some(end) => {
                let name = self.words_in(&shown[end..], usize::MAX);
                format!("{}{name}", self.id(&shown[..end]))
            }
            None => self.words_in(shown, usize::MAX),
        }
    }

    /// A reason of `line` with the values it quotes replaced.
    fn reason(&self, reason: &str, line: u32) -> String {
        let Some(values) = self.lines.get(&line) else {
            return reason.to_string();
        };
        let mut out = reason.to_string();
        for (value, new) in values {
            if value == new {
                continue;
            }
            let (shown, new_shown) = (printable(value), printable(new));
            for prefix in [": '", "of '", "ID '"] {
                out = out.replace(
                    &format!("{prefix}{shown}'"),
                    &format!("{prefix}{new_shown}'"),
                );
            }
        }
        for phone in self.line_phones.get(&line).into_iter().flatten() {
            if let Some((old, new)) = &phone.extension {
                out = out.replace(
                    &format!("extension {old} of '"),
                    &format!("extension {new} of '"),
                );
            }
            if let Some((old, new)) = &phone.number {
                out = out.replace(
                    &format!("dropped; {old} is stored"),
                    &format!("dropped; {new} is stored"),
                );
            }
        }
        out
    }

    /// The error report with its reasons and records redacted like the
    /// file (its own header row kept).
    pub(super) fn report(&mut self, bytes: &[u8]) -> Vec<u8> {
        let rows = read_report(bytes);
        let mut out = b"\xEF\xBB\xBF".to_vec();
        {
            let mut writer = csv::WriterBuilder::new()
                .flexible(true)
                .from_writer(&mut out);
            for (n, row) in rows.iter().enumerate() {
                let line: Option<u32> = row.first().and_then(|l| l.parse().ok());
                let new_row: Vec<String> = if n == 0 {
                    row.clone()
                } else {
                    row.iter()
                        .enumerate()
                        .map(|(j, cell)| self.report_cell(line, j, cell))
                        .collect()
                };
                // Writing to memory does not fail.
                let _ = writer.write_record(&new_row);
            }
            let _ = writer.flush();
        }
        out
    }

    fn report_cell(&mut self, line: Option<u32>, column: usize, cell: &str) -> String {
        let plain = unneutralize(cell);
        let new = match (column, line) {
            (0, _) => return cell.to_string(),
            (1, Some(line)) => self.reason(plain, line),
            (1, None) => plain.to_string(),
            (_, line) => {
                let pair = line
                    .and_then(|l| self.lines.get(&l))
                    .and_then(|values| values.get(column - 2))
                    .cloned();
                let overlaid = pair.and_then(|(value, new)| {
                    overlay(plain.as_bytes(), Encoding::Utf8, &value, &new)
                        .and_then(|b| String::from_utf8(b).ok())
                });
                match overlaid {
                    Some(text) => text,
                    None => {
                        String::from_utf8_lossy(&self.raw_words(plain.as_bytes(), Encoding::Utf8))
                            .into_owned()
                    }
                }
            }
        };
        crate::report::neutralize(&new).into_owned()
    }

    pub(super) fn finish_warnings(&mut self) -> Vec<String> {
        if self.unkept.is_empty() {
            return Vec::new();
        }
        self.unkept.sort_unstable();
        self.unkept.dedup();
        let lines: Vec<String> = self
            .unkept
            .iter()
            .filter(|&&l| l > 0)
            .take(10)
            .map(u32::to_string)
            .collect();
        let where_ = if lines.is_empty() {
            "in the people before the run".to_string()
        } else {
            format!("on lines {}", lines.join(", "))
        };
        vec![format!(
            "{} values could not be redacted keeping what validation makes of them ({where_}): the replay may differ there",
            self.unkept.len()
        )]
    }
}

/// The words of a value: its runs of pooled characters.
fn words_of(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| Pool::of(c).is_none())
        .filter(|w| !w.is_empty())
}

/// Where an address's top-level domain starts (it stays: a made-up one
/// would not be valid); past the end when there is none.
fn top_level_domain(value: &str) -> usize {
    let Some(at) = value.rfind('@') else {
        return usize::MAX;
    };
    match value[at..].rfind('.') {
        Some(dot)
            if value[at + dot + 1..]
                .chars()
                .all(|c| c.is_ascii_alphabetic()) =>
        {
            at + dot + 1
        }
        _ => usize::MAX,
    }
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// A report cell as written before spreadsheets' formula guard.
fn unneutralize(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// `text` with every email address (a word holding `@`) replaced: report
/// recipients and mail server answers in a redacted bundle's emails and
/// doctor output are people too.
pub fn addresses_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let is_address = word
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
        out.push_str(if is_address {
            "someone@example.invalid"
        } else {
            word
        });
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || "<>\"',;()[]{}".contains(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The bundled configuration with each address (a string holding `@`,
/// alone or in a list) replaced by a valid made-up one.
pub fn config_addresses(text: &str) -> String {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return addresses_in(text);
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    fn walk(value: &mut toml::Value, seen: &mut HashMap<String, String>) {
        match value {
            toml::Value::String(s) if s.contains('@') => {
                let n = seen.len() + 1;
                *s = seen
                    .entry(s.clone())
                    .or_insert_with(|| format!("redacted-{n}@example.com"))
                    .clone();
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, seen)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| walk(v, seen)),
            _ => {}
        }
    }
    for (_, value) in table.iter_mut() {
        walk(value, &mut seen);
    }
    toml::to_string(&table).unwrap_or_else(|_| addresses_in(text))
}

/// A word's or a number's key in the sets that only need to know whether
/// it was seen.
fn key(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Source};
    use phonenumber::country::Id;

    const CONFIG: &str = r#"
[[feed]]
name = "hr"
id_field = "id"
default_country = "US"
group_fields = ["department"]
  [[feed.field]]
  name = "id"
  column = "ID"
  type = "id"
  [[feed.field]]
  name = "name"
  column = "Name"
  type = "text"
  [[feed.field]]
  name = "email"
  column = "Email"
  type = "email"
  [[feed.field]]
  name = "mobile"
  column = "Mobile"
  type = "sms"
  [[feed.field]]
  name = "department"
  column = "Department"
  type = "text"
  [[feed.field]]
  name = "status"
  column = "Status"
  type = "text"
  [[feed.filter]]
  field = "status"
  equals = ["Active"]
"#;

    fn config() -> Config {
        Config::parse(CONFIG, Source::Embedded).expect("the test configuration is valid")
    }

    fn redactor(config: &Config) -> Redactor<'_> {
        Redactor::new(
            config.feed("hr").unwrap(),
            false,
            &Run::new("hr", "f.csv", String::new()),
        )
    }

    /// A compressed file is redacted expanded and packed again the same
    /// way: nothing of the original survives in its packed bytes.
    #[test]
    fn a_compressed_file_is_redacted_inside_and_packed_again() {
        use std::io::Read;
        let config = config();
        let csv = "ID,Name,Email,Mobile,Department,Status\nE17,Zoe Quimby,zoe.quimby@example.com,+12125550123,Sales,Active\n";
        let expand_all = |packed: &[u8]| {
            let kind = container_of(&packed.to_vec()).expect("packed");
            let mut out = Vec::new();
            expand(&packed.to_vec(), kind, 1 << 20, &mut out).expect("expands");
            out
        };
        for packed in [
            pack_gzip(csv.as_bytes()),
            pack_zip("hr.csv", csv.as_bytes()),
            pack_tar("hr.csv", csv.as_bytes()),
            pack_gzip(&pack_tar("hr.csv", csv.as_bytes())),
        ] {
            let mut r = redactor(&config);
            let text = r.collect_file(packed.clone(), None);
            let redacted = r.rewrite_file(&text);
            assert_eq!(&redacted[..2], &packed[..2], "packed the same way");
            let inside = String::from_utf8(expand_all(&redacted)).unwrap();
            assert!(
                inside.starts_with("ID,Name,Email,Mobile,Department,Status\n"),
                "{inside}"
            );
            for secret in ["Zoe", "Quimby", "zoe.quimby", "5550123"] {
                assert!(!inside.contains(secret), "{secret} in {inside}");
            }
            let mut raw = Vec::new();
            std::io::Cursor::new(&redacted)
                .read_to_end(&mut raw)
                .unwrap();
            assert!(!raw.windows(6).any(|w| w == b"Quimby"));
        }
        // A container the import refuses is left out whole.
        let mut r = redactor(&config);
        let cut = pack_gzip(csv.as_bytes());
        let text = r.collect_file(cut[..cut.len() / 2].to_vec(), None);
        assert!(r.rewrite_file(&text).is_empty());
    }

    #[test]
    fn the_id_map_keeps_order_length_repeats_and_empties_across_classes() {
        let config = config();
        let mut r = redactor(&config);
        let mut ids: Vec<String> = [
            "A-1",
            "A-10",
            "A-2",
            "B",
            "a",
            "a0",
            "Z9",
            "z",
            "9",
            "10",
            "Müller-7",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let alphabet: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        let mut rng = rand::rng();
        for _ in 0..500 {
            let len = rng.random_range(1..=6);
            ids.push(
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect(),
            );
        }
        r.all_ids.extend(ids.iter().cloned());
        r.build_id_map();
        let mapped: Vec<String> = ids.iter().map(|id| r.id(id)).collect();
        for (id, new) in ids.iter().zip(&mapped) {
            assert_eq!(id.chars().count(), new.chars().count(), "{id} → {new}");
            assert_eq!(id.len(), new.len(), "{id} → {new}");
            assert_eq!(r.id(id), *new, "{id} maps to one pseudonym");
            for (c, d) in id.chars().zip(new.chars()) {
                assert_eq!(Pool::of(c), Pool::of(d), "{id} → {new}");
                if Pool::of(c).is_none() {
                    assert_eq!(c, d, "{id} → {new}");
                }
            }
        }
        assert_eq!(r.id(""), "");
        for i in 0..ids.len() {
            for j in 0..ids.len() {
                assert_eq!(
                    ids[i].cmp(&ids[j]),
                    mapped[i].cmp(&mapped[j]),
                    "{} and {} became {} and {}",
                    ids[i],
                    ids[j],
                    mapped[i],
                    mapped[j]
                );
            }
        }
        let changed = ids.iter().zip(&mapped).filter(|(a, b)| a != b).count();
        assert!(changed > ids.len() / 2, "IDs are pseudonyms: {mapped:?}");
    }

    #[test]
    fn the_word_map_is_injective_beyond_the_vowel_free_pool() {
        let config = config();
        let mut r = redactor(&config);
        let mut words: Vec<String> = ('a'..='z').chain('A'..='Z').map(String::from).collect();
        for a in 'a'..='z' {
            for b in 'a'..='z' {
                words.push(format!("{a}{b}"));
            }
        }
        words.extend(["é", "ñ", "ü", "É", "Ü", "Jo", "0", "42"].map(String::from));
        for word in &words {
            r.original_words.insert(key(word));
        }
        let mut seen: HashMap<String, String> = HashMap::new();
        for word in words.iter().chain(&words) {
            let new = r.word(word);
            assert_eq!(word.chars().count(), new.chars().count(), "{word} → {new}");
            for (c, d) in word.chars().zip(new.chars()) {
                assert_eq!(Pool::of(c), Pool::of(d), "{word} → {new}");
            }
            if let Some(before) = seen.insert(new.clone(), word.clone()) {
                assert_eq!(&before, word, "{before} and {word} both became {new}");
            }
        }
        assert_eq!(seen.len(), words.len());
    }

    #[test]
    fn overlay_writes_over_the_values_characters_only() {
        /// Raw cell, encoding, the value read in it, its pseudonym, the
        /// pseudonym's raw cell.
        type Case<'a> = (&'a [u8], Encoding, &'a str, &'a str, &'a [u8]);
        let cases: [Case; 5] = [
            (
                br#""Robert ""Bob""""#,
                Encoding::Utf8,
                "Robert \"Bob\"",
                "Bcdfgh \"Jkl\"",
                br#""Bcdfgh ""Jkl""""#,
            ),
            (
                b"  Ana Li  ",
                Encoding::Utf8,
                "Ana Li",
                "Bcd Fg",
                b"  Bcd Fg  ",
            ),
            (
                b"\"Mu\xf1oz, Jos\xe9 \"",
                Encoding::Windows1252,
                "Muñoz, José",
                "Bcþdf, Ghkð",
                b"\"Bc\xfedf, Ghk\xf0 \"",
            ),
            // A bad byte in a UTF-8 file is no character: kept as it is.
            (
                b"Jo\xffs\xc3\xa9",
                Encoding::Utf8,
                "Jo\u{FFFD}sé",
                "Bc\u{FFFD}dñ",
                b"Bc\xffd\xc3\xb1",
            ),
            (b"x@y.com", Encoding::Utf8, "x@y.com", "b@c.com", b"b@c.com"),
        ];
        for (raw, encoding, from, to, expected) in cases {
            // `from` is what the import reads in `raw`.
            let mut parser = RowParser::new(b';');
            let (cells, _) = parser.parse_record(raw);
            let cells: Vec<&[u8]> = cells.iter().collect();
            assert_eq!(cells.len(), 1);
            assert_eq!(decode_field(cells[0], encoding).trim(), from);
            let out = overlay(raw, encoding, from, to);
            assert_eq!(
                out.as_deref(),
                Some(expected),
                "{:?} → {:?}",
                String::from_utf8_lossy(raw),
                out.as_deref().map(String::from_utf8_lossy)
            );
        }
        // Bytes that do not hold the value: refused, not guessed.
        assert_eq!(overlay(b"Ana", Encoding::Utf8, "Eva", "Bcd"), None);
        assert_eq!(overlay(b"Ana", Encoding::Utf8, "Ana Li", "Bcd Fg"), None);
    }

    #[test]
    fn a_numbers_pseudonym_is_valid_and_of_the_same_kind() {
        let config = config();
        let mut r = redactor(&config);
        for country in [Id::US, Id::GB, Id::FR, Id::DE] {
            for mobile in [true, false] {
                let e164 = phone::example_number(country, mobile).unwrap();
                let kind = phone::number_kind(&e164);
                assert!(kind.is_some(), "{e164} is valid");
                r.original_numbers.insert(key(&e164));
                for _ in 0..20 {
                    // A fresh redactor each time: new draws.
                    let mut fresh = redactor(&config);
                    fresh.original_numbers.insert(key(&e164));
                    let new = fresh.number(&e164);
                    assert_ne!(new, e164);
                    assert_eq!(new.len(), e164.len(), "{e164} → {new}");
                    assert_eq!(phone::number_kind(&new), kind, "{e164} → {new}");
                    assert_eq!(
                        phone::normalize_phone(&new, country).map(|p| p.e164),
                        Ok(new.clone())
                    );
                }
                let once = r.number(&e164);
                assert_eq!(r.number(&e164), once, "one number, one pseudonym");
            }
        }
        assert!(r.unkept.is_empty());
    }

    #[test]
    fn addresses_in_text_are_replaced() {
        let text = "To: Jane Doe <jane.doe@acme-corp.com>, bob@x.org; 550 5.1.1 \
                    'carl+hr@mail.example.com' unknown (see postmaster@acme-corp.com)\n\
                    an @ alone, trailing@ and @leading stay";
        let out = addresses_in(text);
        for address in [
            "jane.doe@acme-corp.com",
            "bob@x.org",
            "carl+hr@mail.example.com",
            "postmaster@acme-corp.com",
        ] {
            assert!(!out.contains(address), "{out}");
        }
        assert_eq!(out.matches("someone@example.invalid").count(), 4, "{out}");
        assert!(out.contains("<someone@example.invalid>,"), "{out}");
        assert!(
            out.contains("an @ alone, trailing@ and @leading stay"),
            "{out}"
        );
        assert!(out.starts_with("To: Jane Doe <"), "{out}");
        assert_eq!(addresses_in("no addresses"), "no addresses");
    }

    #[test]
    fn config_addresses_replaces_each_address_by_one_valid_one() {
        let text = r#"
data_dir = "/srv/flagsync"
[[feed]]
name = "hr"
report_to = ["ops@acme-corp.com", "hr.lead@acme-corp.com", "ops@acme-corp.com"]
alert = "ops@acme-corp.com"
"#;
        let out = config_addresses(text);
        assert!(!out.contains("acme-corp"), "{out}");
        let table: toml::Table = toml::from_str(&out).expect("still TOML");
        let feed = &table["feed"].as_array().unwrap()[0];
        let to: Vec<&str> = feed["report_to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(to[0], to[2], "one address, one replacement");
        assert_ne!(to[0], to[1]);
        assert_eq!(feed["alert"].as_str(), Some(to[0]));
        for address in to {
            assert!(is_email(address), "{address}");
        }
        assert_eq!(table["data_dir"].as_str(), Some("/srv/flagsync"));
        assert_eq!(feed["name"].as_str(), Some("hr"));
        // Not TOML: every address in the text replaced all the same.
        let broken = "report_to = [\"ops@acme-corp.com\"\n";
        let out = config_addresses(broken);
        assert!(!out.contains("ops@acme-corp.com"), "{out}");
    }

    #[test]
    fn ideographs_become_rare_ideographs_of_the_same_length() {
        let config = config();
        let mut r = redactor(&config);
        let name = "王伟 丁";
        let new = r.words_in(name, usize::MAX);
        assert_eq!(new.len(), name.len(), "{new}");
        assert_eq!(new.chars().nth(2), Some(' '));
        for c in new.chars().filter(|c| *c != ' ') {
            assert!(('\u{3400}'..='\u{340F}').contains(&c), "{new}");
        }
        assert_eq!(
            r.words_in(name, usize::MAX),
            new,
            "one value, one pseudonym"
        );
    }

    #[test]
    fn an_id_in_another_column_gets_that_persons_pseudonym() {
        let config = config();
        let mut r = redactor(&config);
        for id in ["E0000001", "E0000002", "E0000010"] {
            r.collect_value(Some(0), id);
        }
        r.build_id_map();
        let boss = r.value(Some(0), "E0000001", 2);
        assert_ne!(boss, "E0000001");
        // Field 1 is the text field `name`.
        assert_eq!(r.value(Some(1), "E0000001", 3), boss);
        assert_eq!(
            r.value(Some(1), "E0000001", 0),
            r.stored_value(1, "E0000001")
        );
    }
}
