//! Workbooks built here by hand (the smallest parts calamine reads); the
//! integration tests read ones written by openpyxl.

use std::io::Write;

use super::*;

/// An `.xlsx` of `sheets` (name, hidden, the `<sheetData>` rows' XML).
fn xlsx(sheets: &[(&str, bool, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let mut put = |name: &str, text: &str| {
        w.start_file(name, options).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    };
    put(
        "[Content_Types].xml",
        r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
    );
    put(
        "_rels/.rels",
        r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    );
    let mut book = String::from(
        r#"<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>"#,
    );
    let mut rels = String::from(
        r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">"#,
    );
    for (i, (name, hidden, _)) in sheets.iter().enumerate() {
        let state = if *hidden { r#" state="hidden""# } else { "" };
        book.push_str(&format!(
            r#"<sheet name="{name}" sheetId="{}"{state} r:id="rId{}"/>"#,
            i + 1,
            i + 1
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{}.xml"/>"#,
            i + 1,
            i + 1
        ));
    }
    book.push_str("</sheets></workbook>");
    rels.push_str("</Relationships>");
    put("xl/workbook.xml", &book);
    put("xl/_rels/workbook.xml.rels", &rels);
    for (i, (_, _, rows)) in sheets.iter().enumerate() {
        put(
            &format!("xl/worksheets/sheet{}.xml", i + 1),
            &format!(
                r#"<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
            ),
        );
    }
    w.finish().unwrap().into_inner()
}

fn text(r: &str, value: &str) -> String {
    format!(r#"<c r="{r}" t="inlineStr"><is><t>{value}</t></is></c>"#)
}

fn number(r: &str, value: &str) -> String {
    format!(r#"<c r="{r}"><v>{value}</v></c>"#)
}

fn row(n: u32, cells: &[String]) -> String {
    format!(r#"<row r="{n}">{}</row>"#, cells.concat())
}

fn read(book: &[u8], sheet: Option<&str>, limit: u64) -> Result<(SheetRead, String), String> {
    let input = book.to_vec();
    let kind = workbook_of(&input).expect("a workbook");
    let mut out = Vec::new();
    let request = SheetRequest {
        sheet,
        delimiter: b',',
        limit,
    };
    match workbook_to_csv(&input, kind, &request, &mut out) {
        Ok(read) => Ok((read, String::from_utf8(out).unwrap())),
        Err(Refusal::Refused(reason)) => Err(reason),
        Err(Refusal::Write(e)) => panic!("{e}"),
    }
}

fn staff() -> String {
    [
        row(
            1,
            &[text("A1", "id"), text("B1", "name"), text("C1", "phone")],
        ),
        row(2, &[text("A2", "000123"), text("B2", "Ann, Lee")]),
        row(
            4,
            &[
                number("A4", "124"),
                text("B4", "Bo\nb"),
                number("C4", "4915112345678"),
            ],
        ),
    ]
    .concat()
}

#[test]
fn a_sheet_becomes_csv_one_line_per_row() {
    let (read, csv) = read(&xlsx(&[("Staff", false, &staff())]), None, 1000).unwrap();
    assert_eq!(read.container, "xlsx: Staff");
    assert_eq!(
        csv,
        "id,name,phone\n000123,\"Ann, Lee\",\n\n124,Bo b,4915112345678\n"
    );
    assert_eq!(read.size, csv.len() as u64);
}

#[test]
fn the_first_visible_sheet_unless_one_is_named() {
    let other = row(1, &[text("A1", "other")]);
    let book = xlsx(&[
        ("Old", true, &other),
        ("Staff", false, &staff()),
        ("Notes", false, &other),
    ]);
    let (read_default, _) = read(&book, None, 1000).unwrap();
    assert_eq!(read_default.container, "xlsx: Staff");
    let (notes, csv) = read(&book, Some("Notes"), 1000).unwrap();
    assert_eq!(notes.container, "xlsx: Notes");
    assert_eq!(csv, "other\n");
    let (hidden, _) = read(&book, Some("Old"), 1000).unwrap();
    assert_eq!(hidden.container, "xlsx: Old");
}

#[test]
fn a_missing_sheet_lists_the_sheets() {
    let book = xlsx(&[("Old", true, ""), ("Staff", false, &staff())]);
    let reason = read(&book, Some("Personal"), 1000).unwrap_err();
    assert!(
        reason.contains("no sheet named 'Personal'")
            && reason.contains("its sheets are 'Old' (hidden), 'Staff'"),
        "{reason}"
    );
}

#[test]
fn an_empty_sheet_is_an_empty_file() {
    let (read, csv) = read(&xlsx(&[("Empty", false, "")]), None, 1000).unwrap();
    assert_eq!((read.size, csv.as_str()), (0, ""));
}

#[test]
fn the_csv_written_is_held_to_the_limit() {
    let rows: String = (1..=200)
        .map(|n| row(n, &[text(&format!("A{n}"), "a value of some length")]))
        .collect();
    let reason = read(&xlsx(&[("Big", false, &rows)]), None, 1000).unwrap_err();
    assert!(reason.contains("max_file_size of 1000 bytes"), "{reason}");
}

#[test]
fn parts_declaring_far_more_than_the_limit_are_refused_before_reading() {
    let rows: String = (1..=2000)
        .map(|n| row(n, &[number(&format!("A{n}"), "1")]))
        .collect();
    let reason = read(&xlsx(&[("Big", false, &rows)]), None, 100).unwrap_err();
    assert!(
        reason.contains("times this feed's max_file_size"),
        "{reason}"
    );
}

#[test]
fn word_files_and_csv_are_not_workbooks() {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    w.start_file(
        "word/document.xml",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    w.write_all(b"<x/>").unwrap();
    let docx = w.finish().unwrap().into_inner();
    assert_eq!(workbook_of(&docx), None);
    assert_eq!(workbook_of(&b"id,name\n".to_vec()), None);
    assert_eq!(
        workbook_of(&b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1rest".to_vec()),
        Some(Workbook::Xls)
    );
}

#[test]
fn a_workbook_run_counts_rows() {
    assert_eq!(line_word(Some("xlsx: Staff")), "row");
    assert_eq!(line_word(Some("ods: Tabelle1, in zip: a.ods")), "row");
    assert_eq!(line_word(Some("zip: staff.csv")), "line");
    assert_eq!(line_word(None), "line");
}

/// An `.ods` of one sheet, "Staff" (rows of `<table:table-row>` XML).
fn ods(rows: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("mimetype", stored).unwrap();
    w.write_all(ODS_MIMETYPE).unwrap();
    w.start_file("META-INF/manifest.xml", stored).unwrap();
    w.write_all(br#"<?xml version="1.0"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/></manifest:manifest>"#).unwrap();
    w.start_file("content.xml", zip::write::SimpleFileOptions::default())
        .unwrap();
    write!(
        w,
        r#"<?xml version="1.0"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:spreadsheet><table:table table:name="Staff">{rows}</table:table></office:spreadsheet></office:body></office:document-content>"#
    )
    .unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn an_ods_sheet_becomes_csv_too() {
    let text = |v: &str| {
        format!(
            r#"<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>"#
        )
    };
    let rows = [
        format!("<table:table-row>{}{}</table:table-row>", text("id"), text("start")),
        format!(
            r#"<table:table-row><table:table-cell office:value-type="float" office:value="124"><text:p>124</text:p></table:table-cell>{}</table:table-row>"#,
            text("x")
        ),
        "<table:table-row><table:table-cell/></table:table-row>".to_string(),
        format!(
            r#"<table:table-row>{}<table:table-cell office:value-type="date" office:date-value="2026-01-31"><text:p>31.01.26</text:p></table:table-cell></table:table-row>"#,
            text("000125")
        ),
    ]
    .concat();
    let book = ods(&rows);
    assert_eq!(workbook_of(&book), Some(Workbook::Ods));
    let (read, csv) = read(&book, None, 1000).unwrap();
    assert_eq!(read.container, "ods: Staff");
    assert_eq!(csv, "id,start\n124,x\n\n000125,2026-01-31\n");
}
