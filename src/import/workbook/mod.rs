//! Spreadsheet workbooks (`.xlsx`, `.xlsb`, `.xls`, `.ods`): one sheet read
//! with calamine and written as CSV into a writer the caller gives (the
//! worker's unnamed temporary file), so that the rest of the reader maps,
//! validates and diffs it like any CSV file.
//!
//! Invariants:
//! 1. Line N of the CSV written is row N of the sheet: empty rows are
//!    written as empty lines, and a line break inside a cell is written as
//!    a space, so that a report's "row N" is the row the customer sees.
//! 2. Every line of a row with a value has at least the header's number
//!    of fields (the header is the first row with a value, which the
//!    reader wants in row 1 as in a CSV file; trailing empty cells of a row
//!    are not "missing columns"); a row with values past the header's
//!    width keeps them, and is flagged as a CSV row would be.
//! 3. Never more than `limit` + one row of CSV is written (the feed's
//!    `max_file_size`, as for an expanded gzip file), and a ZIP-based
//!    workbook whose parts declare more than [`PARTS_PER_LIMIT`] times
//!    `limit` is refused before anything is inflated.
//! 4. `.xlsx` sheets are streamed cell by cell (memory: the shared strings
//!    and one row); the other kinds are read as a whole sheet by calamine.
//! 5. Cells are written as the customer sees them ([`cell`]).

mod cell;

use std::io::{self, Read, Seek, Write};

use calamine::{Data, DataRef, Reader, Sheet, SheetType, SheetVisible};

use super::container::{InputReader, Refusal};
use super::input::Input;
use super::text::printable;

/// A workbook's file format, told from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workbook {
    Xlsx,
    Xlsb,
    /// Excel 97-2003, a Compound File (CFB).
    Xls,
    /// OpenDocument spreadsheet (LibreOffice).
    Ods,
}

impl Workbook {
    pub fn as_str(self) -> &'static str {
        match self {
            Workbook::Xlsx => "xlsx",
            Workbook::Xlsb => "xlsb",
            Workbook::Xls => "xls",
            Workbook::Ods => "ods",
        }
    }

    const ALL: [Workbook; 4] = [Workbook::Xlsx, Workbook::Xlsb, Workbook::Xls, Workbook::Ods];
}

/// A ZIP-based workbook whose parts (sheet XML, shared strings…) declare
/// more than this many times the feed's `max_file_size` is refused: the
/// XML of a sheet is typically 5-10 times its CSV.
pub const PARTS_PER_LIMIT: u64 = 20;

/// The Compound File magic: `.xls` (and `.doc`, `.ppt`, a password-protected
/// `.xlsx`).
const CFB_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";
const ODS_MIMETYPE: &[u8] = b"application/vnd.oasis.opendocument.spreadsheet";

/// The workbook `input` is, from its content (not its name): a Compound
/// File is taken for `.xls`; a ZIP archive with `xl/` entries for `.xlsx`
/// (`.xlsb` when its workbook part is binary), or whose `mimetype` entry
/// says spreadsheet for `.ods`. A Word or PowerPoint file is none.
pub fn workbook_of(input: &dyn Input) -> Option<Workbook> {
    let mut head = [0u8; 8];
    input
        .read_exact_at(0, &mut head[..input.len().min(8) as usize])
        .ok()?;
    if head == CFB_MAGIC {
        return Some(Workbook::Xls);
    }
    if !(head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")) {
        return None;
    }
    let mut archive = zip::ZipArchive::new(InputReader::new(input)).ok()?;
    let names: Vec<String> = archive
        .file_names_raw()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    if names.iter().any(|n| n == "xl/workbook.bin") {
        Some(Workbook::Xlsb)
    } else if names.iter().any(|n| n.starts_with("xl/")) {
        Some(Workbook::Xlsx)
    } else if names.iter().any(|n| n == "mimetype") {
        let mut mimetype = Vec::new();
        archive
            .by_name("mimetype")
            .ok()?
            .take(ODS_MIMETYPE.len() as u64 + 1)
            .read_to_end(&mut mimetype)
            .ok()?;
        (mimetype == ODS_MIMETYPE).then_some(Workbook::Ods)
    } else {
        None
    }
}

/// Whether a run's `container` (see [`SheetRead::container`]) says it read
/// a workbook: its report then counts rows of the sheet, not lines.
pub fn is_workbook_container(container: &str) -> bool {
    Workbook::ALL
        .iter()
        .any(|kind| container.starts_with(&format!("{}: ", kind.as_str())))
}

/// "row" for a run that read a workbook (line N of its CSV is row N of the
/// sheet), "line" for a CSV file.
pub fn line_word(container: Option<&str>) -> &'static str {
    match container {
        Some(c) if is_workbook_container(c) => "row",
        _ => "line",
    }
}

/// What the feed asks of a workbook.
#[derive(Debug, Clone, Copy)]
pub struct SheetRequest<'a> {
    /// The feed's `sheet`; `None`: the first visible worksheet.
    pub sheet: Option<&'a str>,
    /// The CSV's delimiter (the feed's, `,` when it detects it).
    pub delimiter: u8,
    /// The feed's `max_file_size`: the most CSV written.
    pub limit: u64,
}

impl<'a> SheetRequest<'a> {
    /// What `feed`'s settings ask.
    pub fn for_feed(feed: &'a crate::config::Feed) -> Self {
        SheetRequest {
            sheet: feed.sheet.as_deref(),
            delimiter: feed.delimiter.unwrap_or(b','),
            limit: feed.max_file_size,
        }
    }
}

/// What was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetRead {
    /// `xlsx: <sheet name>`, for the run record.
    pub container: String,
    /// Bytes of CSV written.
    pub size: u64,
}

/// Writes the requested sheet of `input` (which [`workbook_of`] named
/// `kind`) as CSV into `out`.
pub fn workbook_to_csv(
    input: &dyn Input,
    kind: Workbook,
    request: &SheetRequest<'_>,
    out: &mut dyn Write,
) -> Result<SheetRead, Refusal> {
    if kind != Workbook::Xls {
        check_declared_sizes(input, request.limit)?;
    } else if is_encrypted_office_file(input) {
        return Err(Refusal::Refused(
            "the workbook is password-protected (Excel keeps an encrypted workbook in an Office container, which cannot be read without the password): save it without a password (File > Info > Protect Workbook > Encrypt with Password, then clear the password), or save it as \"CSV UTF-8\", and send it again".into(),
        ));
    }
    let reader = io::BufReader::with_capacity(1 << 16, InputReader::new(input));
    let mut sheet = SheetWriter::new(out, request);
    let name = match kind {
        Workbook::Xlsx => {
            let mut book: calamine::Xlsx<_> = open(reader, kind)?;
            let name = choose_sheet(book.sheets_metadata(), request.sheet)?;
            stream_xlsx_sheet(&mut book, &name, &mut sheet)?;
            name
        }
        Workbook::Xlsb => {
            read_whole_sheet::<calamine::Xlsb<_>, _>(reader, kind, request, &mut sheet)?
        }
        Workbook::Xls => {
            read_whole_sheet::<calamine::Xls<_>, _>(reader, kind, request, &mut sheet)?
        }
        Workbook::Ods => {
            read_whole_sheet::<calamine::Ods<_>, _>(reader, kind, request, &mut sheet)?
        }
    };
    Ok(SheetRead {
        container: format!("{}: {name}", kind.as_str()),
        size: sheet.written,
    })
}

fn open<B, RS>(reader: RS, kind: Workbook) -> Result<B, Refusal>
where
    RS: Read + Seek,
    B: Reader<RS>,
    B::Error: std::fmt::Display,
{
    B::new(reader).map_err(|e| Refusal::Refused(unreadable(kind, &e.to_string())))
}

/// An Office Compound File holding an `EncryptedPackage` stream: what
/// Excel (and every Office program) writes for a password-protected
/// `.xlsx`. The name is in the first sector of the directory, which the
/// header locates (sector size at 0x1E as a power of two, the directory's
/// first sector at 0x30).
fn is_encrypted_office_file(input: &dyn Input) -> bool {
    let mut header = [0u8; 0x34];
    if input.len() < header.len() as u64 || input.read_exact_at(0, &mut header).is_err() {
        return false;
    }
    let shift = u16::from_le_bytes([header[0x1E], header[0x1F]]);
    if !(9..=12).contains(&shift) {
        return false;
    }
    let size = 1u64 << shift;
    let first = u32::from_le_bytes([header[0x30], header[0x31], header[0x32], header[0x33]]);
    let at = (u64::from(first) + 1) * size;
    let mut directory = vec![0u8; size as usize];
    if at + size > input.len() || input.read_exact_at(at, &mut directory).is_err() {
        return false;
    }
    let name: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    directory.windows(name.len()).any(|w| w == name.as_slice())
}

fn unreadable(kind: Workbook, error: &str) -> String {
    let what = match kind {
        Workbook::Xls => "the file is an Office file (Compound File) that cannot be read as an Excel 97-2003 workbook",
        Workbook::Ods => "the OpenDocument spreadsheet cannot be read",
        Workbook::Xlsx | Workbook::Xlsb => "the Excel workbook cannot be read",
    };
    format!(
        "{what} ({}): it may be damaged, cut short or password-protected; send it again without a password, or open it and save it as \"CSV UTF-8\"",
        printable(error)
    )
}

/// Refuses a ZIP-based workbook whose parts declare more than
/// [`PARTS_PER_LIMIT`] × `limit` bytes: calamine inflates them without a
/// limit of its own, and holds the shared strings in memory.
fn check_declared_sizes(input: &dyn Input, limit: u64) -> Result<(), Refusal> {
    let mut archive = zip::ZipArchive::new(InputReader::new(input))
        .map_err(|e| Refusal::Refused(unreadable(Workbook::Xlsx, &e.to_string())))?;
    let mut declared = 0u64;
    for i in 0..archive.len() {
        if let Ok(entry) = archive.by_index_raw(i) {
            declared = declared.saturating_add(entry.size());
        }
    }
    let most = limit.saturating_mul(PARTS_PER_LIMIT);
    if declared > most {
        return Err(Refusal::Refused(format!(
            "the workbook ({} bytes) expands to {declared} bytes of sheets and strings, more than {PARTS_PER_LIMIT} times this feed's max_file_size of {limit} bytes; send a smaller file, save it as CSV, or ask for a larger max_file_size",
            input.len()
        )));
    }
    Ok(())
}

/// The sheet to read: the feed's `sheet`, or the first visible worksheet.
/// A hidden sheet is read only when named.
fn choose_sheet(sheets: &[Sheet], wanted: Option<&str>) -> Result<String, Refusal> {
    let found = match wanted {
        Some(name) => sheets.iter().find(|s| s.name == name),
        None => sheets
            .iter()
            .find(|s| s.typ == SheetType::WorkSheet && s.visible == SheetVisible::Visible),
    };
    if let Some(sheet) = found {
        return Ok(sheet.name.clone());
    }
    let listed = sheet_list(sheets);
    Err(Refusal::Refused(match wanted {
        Some(name) => format!(
            "the workbook has no sheet named '{}' (this feed's sheet setting); its sheets are {listed}. Rename the sheet, or change the feed's sheet setting",
            printable(name)
        ),
        None => format!(
            "the workbook has no visible worksheet (its sheets are {listed}); show the sheet to import, or name it in the feed's sheet setting"
        ),
    }))
}

/// `'Staff', 'Old' (hidden)`, or `none` for an empty list.
fn sheet_list(sheets: &[Sheet]) -> String {
    if sheets.is_empty() {
        return "none".into();
    }
    sheets
        .iter()
        .map(|s| {
            let note = match (s.visible, s.typ) {
                (SheetVisible::Visible, SheetType::WorkSheet) => "",
                (SheetVisible::Visible, _) => " (not a worksheet)",
                _ => " (hidden)",
            };
            format!("'{}'{note}", printable(&s.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The widest column index a sheet may use (XFD, Excel's last column).
const MAX_COLUMN: u32 = 16_383;

/// Streams an `.xlsx` sheet cell by cell, with each cell's number format
/// (for zero-padding).
fn stream_xlsx_sheet<RS: Read + Seek>(
    book: &mut calamine::Xlsx<RS>,
    name: &str,
    out: &mut SheetWriter<'_>,
) -> Result<(), Refusal> {
    let damaged =
        |e: calamine::XlsxError| Refusal::Refused(unreadable(Workbook::Xlsx, &e.to_string()));
    let mut cells = book.worksheet_cells_reader(name).map_err(damaged)?;
    let zero_pads: Vec<Option<usize>> = cells
        .styles()
        .iter()
        .map(|style| {
            style
                .number_format
                .as_ref()
                .and_then(|f| cell::zero_pad_width(&f.format_code))
        })
        .collect();
    let mut row = RowBuffer::default();
    while let Some((cell, style)) = cells.next_cell_with_style_id().map_err(damaged)? {
        let (r, c) = cell.get_position();
        if row.number != Some(r) {
            row.flush_into(out)?;
            row.number = Some(r);
        }
        let zero_pad = zero_pads.get(style).copied().flatten();
        row.put(c, cell::cell_text(cell.get_value(), zero_pad))?;
    }
    row.flush_into(out)
}

/// Reads a whole sheet with calamine (the kinds it has no cell streaming
/// for, or none that gives number formats).
fn read_whole_sheet<B, RS>(
    reader: RS,
    kind: Workbook,
    request: &SheetRequest<'_>,
    out: &mut SheetWriter<'_>,
) -> Result<String, Refusal>
where
    RS: Read + Seek,
    B: Reader<RS>,
    B::Error: std::fmt::Display,
{
    let mut book: B = open(reader, kind)?;
    let name = choose_sheet(book.sheets_metadata(), request.sheet)?;
    let range = book
        .worksheet_range(&name)
        .map_err(|e| Refusal::Refused(unreadable(kind, &e.to_string())))?;
    let Some((first_row, first_column)) = range.start() else {
        return Ok(name);
    };
    for (i, cells) in range.rows().enumerate() {
        let mut row = RowBuffer {
            number: Some(first_row.saturating_add(i as u32)),
            ..RowBuffer::default()
        };
        for (j, value) in cells.iter().enumerate() {
            let column = first_column.saturating_add(j as u32);
            row.put(column, cell::cell_text(&as_ref(value), None))?;
        }
        row.flush_into(out)?;
    }
    Ok(name)
}

/// A whole sheet's cell as the streamed kind.
fn as_ref(value: &Data) -> DataRef<'_> {
    match value {
        Data::Int(n) => DataRef::Int(*n),
        Data::Float(x) => DataRef::Float(*x),
        Data::String(s) => DataRef::SharedString(s),
        Data::Bool(b) => DataRef::Bool(*b),
        Data::DateTime(d) => DataRef::DateTime(*d),
        Data::DateTimeIso(s) => DataRef::DateTimeIso(s.clone()),
        Data::DurationIso(s) => DataRef::DurationIso(s.clone()),
        Data::Error(e) => DataRef::Error(e.clone()),
        Data::Empty => DataRef::Empty,
    }
}

/// The cells of one row, by column, as they arrive.
#[derive(Default)]
struct RowBuffer {
    /// The row's index (0 for row 1), once a cell came.
    number: Option<u32>,
    values: Vec<String>,
}

impl RowBuffer {
    fn put(&mut self, column: u32, text: String) -> Result<(), Refusal> {
        if text.is_empty() {
            return Ok(());
        }
        if column > MAX_COLUMN {
            return Err(Refusal::Refused(format!(
                "the sheet has a value past Excel's last column (XFD) in row {}; the workbook is damaged: open it and save it again, or save it as \"CSV UTF-8\"",
                self.number.map_or(0, |r| u64::from(r) + 1)
            )));
        }
        let column = column as usize;
        if self.values.len() <= column {
            self.values.resize(column + 1, String::new());
        }
        self.values[column] = text;
        Ok(())
    }

    fn flush_into(&mut self, out: &mut SheetWriter<'_>) -> Result<(), Refusal> {
        if let Some(row) = self.number.take() {
            out.write_row(row, &mut self.values)?;
        }
        self.values.clear();
        Ok(())
    }
}

/// The CSV being written: one line per row of the sheet.
struct SheetWriter<'w> {
    out: &'w mut dyn Write,
    limit: u64,
    written: u64,
    /// The index of the row the next line is.
    next_row: u64,
    /// The header's number of fields, once the first row with a value came.
    width: Option<usize>,
    /// The csv crate's writer, set up once, formats each row (quoting as
    /// needed) into `line` before it goes to `out`.
    format: csv::WriterBuilder,
    line: Vec<u8>,
}

impl<'w> SheetWriter<'w> {
    fn new(out: &'w mut dyn Write, request: &SheetRequest<'_>) -> Self {
        let mut format = csv::WriterBuilder::new();
        format
            .delimiter(request.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .flexible(true)
            .buffer_capacity(1024);
        SheetWriter {
            out,
            limit: request.limit,
            written: 0,
            next_row: 0,
            width: None,
            format,
            line: Vec::new(),
        }
    }

    /// Writes row `row` (its cells by column; trailing empty ones are
    /// dropped), after an empty line for each row skipped since the last.
    fn write_row(&mut self, row: u32, values: &mut Vec<String>) -> Result<(), Refusal> {
        let row = u64::from(row);
        if row < self.next_row {
            return Err(Refusal::Refused(format!(
                "the sheet's rows are out of order (row {} after row {}); the workbook is damaged: open it and save it again, or save it as \"CSV UTF-8\"",
                row + 1,
                self.next_row
            )));
        }
        while self.next_row < row {
            self.emit(b"\n")?;
            self.next_row += 1;
        }
        self.next_row = row + 1;
        while values.last().is_some_and(String::is_empty) {
            values.pop();
        }
        if values.is_empty() {
            return self.emit(b"\n");
        }
        let width = *self.width.get_or_insert(values.len());
        if values.len() < width {
            values.resize(width, String::new());
        }
        for value in values.iter_mut() {
            if value.contains(['\n', '\r']) {
                *value = one_line(value);
            }
        }
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        {
            let mut format = self.format.from_writer(&mut line);
            format
                .write_record(values.iter())
                .map_err(|e| Refusal::Write(io::Error::other(e)))?;
            format.flush().map_err(Refusal::Write)?;
        }
        let emitted = self.emit(&line);
        self.line = line;
        emitted
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.written += bytes.len() as u64;
        if self.written > self.limit {
            return Err(Refusal::Refused(format!(
                "the sheet, written as CSV, is more than this feed's max_file_size of {} bytes; send a smaller file, or ask for a larger max_file_size",
                self.limit
            )));
        }
        self.out.write_all(bytes).map_err(Refusal::Write)
    }
}

/// A cell's text with each line break (Alt+Enter in Excel) as a space.
fn one_line(value: &str) -> String {
    value.replace("\r\n", " ").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
