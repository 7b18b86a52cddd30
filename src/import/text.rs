//! What a record is, in bytes: line breaks, quotes, the evidence for a
//! file's encoding, the [`Encoding`] decided and how a cell decodes in it
//! ([`decode_field`]), and why a whole file is refused ([`Rejection`]).
//! The leaf of `import`: header, scan and validate all use it, it uses
//! none of them. Every part of the reader (header, pass 1 blocks, the
//! fast path, pass 2) finds records with [`walk_record_ends`], so they all
//! agree on where a record ends.
//!
//! A record ends at a line break outside quotes: `\n`, `\r\n`, or a `\r`
//! alone (classic Mac), as csv-core reads them. A quote opens a quoted
//! field only at the start of a field; `""` inside quotes is a quote.

/// Calls `at_end` with the end (just after its line break) of every record
/// in `buf`; stops when `at_end` returns false. Returns where the quote
/// that is still open at the end of `buf` was opened, if one is.
///
/// A `\r` that is the last byte of `buf` is not reported as an end: the
/// next byte, not read yet, may be its `\n`.
pub(crate) fn walk_record_ends(
    buf: &[u8],
    is_delimiter: impl Fn(u8) -> bool,
    at_end: impl FnMut(usize) -> bool,
) -> Option<usize> {
    walk(
        memchr::memchr3_iter(b'"', b'\n', b'\r', buf),
        buf,
        is_delimiter,
        at_end,
    )
}

/// [`walk_record_ends`] for bytes known to hold no lone CR
/// ([`has_lone_cr`]): every record ends at an LF, so CRs need no look (the
/// common case, and pass 1's hot loop).
pub(crate) fn walk_lf_record_ends(
    buf: &[u8],
    is_delimiter: impl Fn(u8) -> bool,
    at_end: impl FnMut(usize) -> bool,
) -> Option<usize> {
    walk(
        memchr::memchr2_iter(b'"', b'\n', buf),
        buf,
        is_delimiter,
        at_end,
    )
}

fn walk(
    stops: impl Iterator<Item = usize>,
    buf: &[u8],
    is_delimiter: impl Fn(u8) -> bool,
    mut at_end: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut in_quotes = false;
    let mut closed_at = usize::MAX;
    let mut opened_at = 0;
    for pos in stops {
        match buf[pos] {
            b'\n' => {
                if !in_quotes && !at_end(pos + 1) {
                    return None;
                }
            }
            b'\r' => {
                let lone = matches!(buf.get(pos + 1), Some(&next) if next != b'\n');
                if !in_quotes && lone && !at_end(pos + 1) {
                    return None;
                }
            }
            _ if in_quotes => {
                in_quotes = false;
                closed_at = pos;
            }
            _ if pos > 0 && closed_at == pos - 1 => {
                // The second quote of an escaped `""`.
                in_quotes = true;
            }
            _ => {
                let prev = if pos == 0 { b'\n' } else { buf[pos - 1] };
                in_quotes = prev == b'\n' || prev == b'\r' || is_delimiter(prev);
                if in_quotes {
                    opened_at = pos;
                }
            }
        }
    }
    in_quotes.then_some(opened_at)
}

/// The end of the last complete record in `buf` (just after its line
/// break).
#[cfg(test)]
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

/// Whether `bytes` holds a CR that is not the first half of a CRLF (one
/// that ends `bytes` counts).
pub(crate) fn has_lone_cr(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', bytes).any(|at| bytes.get(at + 1) != Some(&b'\n'))
}

/// Line breaks in `bytes[from..to]`: each `\n`, and each `\r` not followed
/// by `\n` (looking past `to` when `bytes` goes on; a `\r` that ends
/// `bytes` counts).
pub(crate) fn count_line_breaks(bytes: &[u8], from: usize, to: usize) -> u64 {
    let slice = &bytes[from..to];
    let mut n = memchr::memchr_iter(b'\n', slice).count() as u64;
    for at in memchr::memchr_iter(b'\r', slice) {
        if bytes.get(from + at + 1) != Some(&b'\n') {
            n += 1;
        }
    }
    n
}

/// The quote that opened a quoted field of `record` that runs over
/// several lines *and* holds at least `swallowed_delimiters` delimiters:
/// the mark of a quote left open that swallowed whole records (a value
/// over lines such as an address holds few). `None` when there is none.
pub(crate) fn runaway_quote(
    record: &[u8],
    delimiter: u8,
    swallowed_delimiters: usize,
) -> Option<usize> {
    let mut i = 0;
    let mut field_start = true;
    while i < record.len() {
        if record[i] == b'"' && field_start {
            let opened = i;
            let (mut breaks, mut delimiters) = (false, 0);
            i += 1;
            loop {
                match record.get(i) {
                    None => break,
                    Some(b'"') if record.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        breaks |= matches!(c, b'\n' | b'\r');
                        delimiters += usize::from(c == delimiter);
                        i += 1;
                    }
                }
            }
            if breaks && delimiters >= swallowed_delimiters {
                return Some(opened);
            }
            field_start = false;
            continue;
        }
        field_start = matches!(record[i], b'\n' | b'\r') || record[i] == delimiter;
        i += 1;
    }
    None
}

/// Evidence for a file's encoding: UTF-8 sequences of two or more bytes
/// that are valid, and bytes that cannot be UTF-8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Evidence {
    pub multibyte: u64,
    pub invalid: u64,
}

impl Utf8Evidence {
    /// Counts `bytes`; `valid` says whether they are known to be UTF-8
    /// already (the common case: then only lead bytes are counted).
    pub fn of(bytes: &[u8], valid: bool) -> Utf8Evidence {
        if valid {
            return Utf8Evidence {
                multibyte: bytes.iter().filter(|&&b| b >= 0xC0).count() as u64,
                invalid: 0,
            };
        }
        let mut evidence = Utf8Evidence::default();
        for chunk in bytes.utf8_chunks() {
            evidence.multibyte += chunk.valid().bytes().filter(|&b| b >= 0xC0).count() as u64;
            if !chunk.invalid().is_empty() {
                evidence.invalid += 1;
            }
        }
        evidence
    }

    pub fn add(&mut self, other: Utf8Evidence) {
        self.multibyte += other.multibyte;
        self.invalid += other.invalid;
    }

    /// A file with no invalid byte is UTF-8. One with invalid bytes is
    /// still UTF-8 when it also holds at least as many valid multi-byte
    /// sequences (text in Windows-1252 almost never forms one): its bad
    /// bytes are errors in a few rows. Otherwise it is Windows-1252, what
    /// Excel writes as "CSV".
    pub fn is_utf8(&self) -> bool {
        self.invalid == 0 || (self.multibyte > 0 && self.multibyte >= self.invalid)
    }
}

/// What a file that is not CSV text is, in words, from its first bytes.
pub(crate) fn sniff_not_csv(head: &[u8]) -> Option<String> {
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        // UTF-16 with a byte-order mark: read after decoding.
        return None;
    }
    let what = if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        office_zip_reason(head, &[])
            .unwrap_or("a ZIP archive: unpack it and send the CSV file it holds")
    } else if head.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        "an Excel 97-2003 workbook (.xls) or another Office file: save it as \"CSV UTF-8\""
    } else if head.starts_with(b"\x1F\x8B") {
        "gzip-compressed: unpack it and send the CSV file"
    } else if head.starts_with(b"%PDF") {
        "a PDF document, not a CSV file: export the data from its source system as CSV"
    } else if head.starts_with(b"7z\xBC\xAF\x27\x1C") || head.starts_with(b"Rar!") {
        "a compressed archive (7z or RAR): unpack it and send the CSV file"
    } else if head.starts_with(b"\x89PNG") || head.starts_with(b"\xFF\xD8\xFF") {
        "an image, not a CSV file"
    } else if head.starts_with(b"{\\rtf") {
        "an RTF document, not a CSV file"
    } else if starts_with_ignoring_case(trim_start(head), b"<?xml")
        && contains(head, b"urn:schemas-microsoft-com:office:spreadsheet")
    {
        "an Excel XML spreadsheet: save it as \"CSV UTF-8\""
    } else if starts_with_ignoring_case(trim_start(head), b"<!doctype html")
        || starts_with_ignoring_case(trim_start(head), b"<html")
    {
        "a web page (HTML), not a CSV file"
    } else if let Some(order) = utf16_without_bom(head) {
        return Some(format!(
            "the file is UTF-16 text ({order}) without a byte-order mark, which cannot be told apart from binary data; save it as \"CSV UTF-8\" and send it again"
        ));
    } else if first_line(head).contains(&0) {
        "binary data (it holds NUL bytes), not CSV text"
    } else {
        return None;
    };
    Some(format!("the file is {what}"))
}

/// What an Office file packed as a ZIP is, told from the archive's first
/// bytes (`head`) or its entry names: such a file is not read as an
/// archive of a CSV file.
pub(crate) fn office_zip_reason(head: &[u8], names: &[String]) -> Option<&'static str> {
    let named = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    let named_exactly = |name: &str| names.iter().any(|n| n == name);
    if contains(head, b"xl/") || named("xl/") {
        Some(EXCEL_WORKBOOK)
    } else if contains(head, b"word/") || named("word/") {
        Some("a Word document (.docx), not a CSV file")
    } else if contains(head, b"content.xml")
        || contains(head, b"opendocument")
        || named_exactly("content.xml")
    {
        Some("an OpenDocument file (.ods) that cannot be read (damaged or cut short): send it again, or save it as CSV (UTF-8)")
    } else if named_exactly("[Content_Types].xml") {
        Some(EXCEL_WORKBOOK)
    } else {
        None
    }
}

/// Workbooks are read (`import::workbook`): one that reaches this reason
/// could not be opened as one.
const EXCEL_WORKBOOK: &str =
    "an Excel workbook (.xlsx) that cannot be read (damaged or cut short): send it again, or open it in Excel and save it as \"CSV UTF-8\"";

/// `Some("little-endian")` when every other byte of the start is NUL (ASCII
/// text in UTF-16), as a file without a byte-order mark shows it.
fn utf16_without_bom(head: &[u8]) -> Option<&'static str> {
    let sample = &head[..head.len().min(512) & !1];
    if sample.len() < 8 {
        return None;
    }
    let zeros_at = |parity: usize| {
        sample
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let half = sample.len() / 2;
    // Most characters of a header are ASCII: mostly zeros on one side only.
    if zeros_at(1) * 10 >= half * 9 && zeros_at(0) * 10 < half {
        Some("little-endian")
    } else if zeros_at(0) * 10 >= half * 9 && zeros_at(1) * 10 < half {
        Some("big-endian")
    } else {
        None
    }
}

fn first_line(head: &[u8]) -> &[u8] {
    let end = memchr::memchr2(b'\n', b'\r', head).unwrap_or(head.len());
    &head[..end]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

fn starts_with_ignoring_case(b: &[u8], prefix: &[u8]) -> bool {
    b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `value` as it may be shown in a message (terminal, page, email, log):
/// control characters (escape sequences, NUL, bidirectional overrides)
/// are written as `\u{…}` instead of being passed on.
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !value.chars().any(unsafe_char) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// A message of several lines as it may be shown on a terminal: each line
/// through [`printable`], the line breaks kept.
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .split('\n')
        .any(|line| matches!(printable(line), std::borrow::Cow::Owned(_)))
    {
        return text.into();
    }
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
        .into()
}

/// How a file's bytes are read: what the import decided from its
/// evidence (or its byte-order mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// UTF-16 with a byte-order mark (Excel's "Unicode text"): the run
    /// reads a UTF-8 copy of it, so its cells decode as UTF-8.
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1252 => "windows-1252",
            Encoding::Utf16Le => "utf-16le",
            Encoding::Utf16Be => "utf-16be",
        }
    }

    /// Whether the bytes being read are UTF-8 (a UTF-16 file is read from
    /// its UTF-8 copy).
    pub fn reads_as_utf8(self) -> bool {
        self != Encoding::Windows1252
    }
}

/// Why a whole file is refused (run state `failed`, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    /// The file's encoding, when it was read far enough to tell.
    pub encoding: Option<Encoding>,
    /// The header's cells as written (trimmed), when it was read: the
    /// report of the refused file shows them.
    pub header: Option<Vec<String>>,
}

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Rejection {
        Rejection {
            reason: reason.into(),
            encoding: None,
            header: None,
        }
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> Rejection {
        self.encoding = Some(encoding);
        self
    }

    pub fn with_header(mut self, columns: &[String]) -> Rejection {
        self.header = Some(columns.to_vec());
        self
    }
}

/// A cell's bytes as text, in the file's encoding (invalid UTF-8 is
/// replaced; validation flags it).
pub(crate) fn decode_field(bytes: &[u8], encoding: Encoding) -> std::borrow::Cow<'_, str> {
    match encoding {
        Encoding::Windows1252 => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
        _ => match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(buf: &[u8]) -> (Vec<usize>, Option<usize>) {
        let mut out = Vec::new();
        let open = walk_record_ends(
            buf,
            |b| b == b',',
            |e| {
                out.push(e);
                true
            },
        );
        (out, open)
    }

    #[test]
    fn every_line_end_ends_a_record() {
        assert_eq!(ends(b"a\nb\r\nc\rd"), (vec![2, 5, 7], None));
        assert_eq!(
            ends(b"a\r"),
            (vec![], None),
            "a final CR may be half a CRLF"
        );
        assert_eq!(ends(b"\"x\ry\",1\rz\r\n"), (vec![8, 11], None));
        assert_eq!(ends(b"a,\"open\nb\n"), (vec![], Some(2)));
        assert_eq!(ends(b"a,\"\"\"x\"\"\"\n"), (vec![10], None));
    }

    #[test]
    fn line_breaks_are_counted_once_per_line() {
        let text = b"a\r\nb\rc\nd\r";
        assert_eq!(count_line_breaks(text, 0, text.len()), 4);
        assert_eq!(count_line_breaks(text, 0, 2), 0, "CR of a CRLF");
        assert_eq!(count_line_breaks(text, 0, 3), 1);
    }

    #[test]
    fn quotes_that_swallow_records_are_found() {
        assert_eq!(
            runaway_quote(b"a,\"b\nE2,c,d\nE3,e,f\",d", b',', 2),
            Some(2)
        );
        assert_eq!(runaway_quote(b"a,\"b\nE2,c,d\nE3,e,f", b',', 2), Some(2));
        assert_eq!(runaway_quote(b"a,\"Main St\nApt 5\",d", b',', 2), None);
        assert_eq!(runaway_quote(b"a,\"b,c,d\",d\n", b',', 2), None);
        assert_eq!(runaway_quote(b"a,b\"\nc,d,e", b',', 2), None);
        assert_eq!(runaway_quote(b"a,\"x\"\"\n,,\"\"y\"", b',', 2), Some(2));
    }

    #[test]
    fn encoding_evidence() {
        let utf8 = "José,Zoë\n".as_bytes();
        assert_eq!(Utf8Evidence::of(utf8, true).multibyte, 2);
        assert_eq!(Utf8Evidence::of(utf8, false).multibyte, 2);
        let cp1252 = b"Jos\xE9,Zo\xEB\n";
        let e = Utf8Evidence::of(cp1252, false);
        assert_eq!((e.multibyte, e.invalid), (0, 2));
        assert!(!e.is_utf8());
        let mixed = [utf8, b"Ren\xE9\n"].concat();
        assert!(Utf8Evidence::of(&mixed, false).is_utf8());
    }

    #[test]
    fn other_formats_are_named() {
        for (head, word) in [
            (
                &b"PK\x03\x04....[Content_Types].xml..xl/workbook.xml"[..],
                "Excel workbook",
            ),
            (b"PK\x03\x04....foo.csv", "ZIP archive"),
            (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1rest", ".xls"),
            (b"\x1F\x8B\x08\x00", "gzip"),
            (b"%PDF-1.7\n", "PDF"),
            (b"I\0D\0,\0N\0a\0m\0e\0\r\0\n\0", "UTF-16"),
            (b"ID\0,Name\n", "binary"),
        ] {
            let reason = sniff_not_csv(head).unwrap_or_default();
            assert!(reason.contains(word), "{reason}");
        }
        assert_eq!(sniff_not_csv(b"ID,Name\nE1,Ann\n"), None);
        assert_eq!(sniff_not_csv("ID;Nom\nE1;Zoë\n".as_bytes()), None);
    }

    #[test]
    fn control_characters_are_never_shown_raw() {
        assert_eq!(printable("Ann"), "Ann");
        assert_eq!(printable("a\x1b[31mb"), "a\\u{1B}[31mb");
        assert_eq!(printable("x\u{202E}y"), "x\\u{202E}y");
        assert_eq!(printable("two\nlines"), "two\\u{A}lines");
    }

    #[test]
    fn a_message_keeps_its_own_line_breaks_but_no_control_characters() {
        assert_eq!(printable_lines("one\ntwo"), "one\ntwo");
        assert_eq!(
            printable_lines("one\r\n\x1b[2Jtwo"),
            "one\\u{D}\n\\u{1B}[2Jtwo"
        );
    }
}
