//! Unit and property tests of the pure core (no store, no files).
//!
//! The harness runs the real pipeline minus redb: [`scan_file`] →
//! [`diff_scan`] → [`apply_diff`] against [`Model`], an in-memory
//! [`FeedWriter`] that keeps what the store keeps (records, group counts,
//! the (ID, hash) list an applied run hands back and the mapping
//! fingerprint). Memberships are read from the records' groups, which is
//! where the core keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use proptest::prelude::*;

use super::record::Record;
use super::scan::{raw_hash, trim_bytes, RowShape};
use super::text::last_record_boundary;
use super::*;
use crate::config::{Config, Feed, Source};

// ------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------

fn feed_from(toml: &str) -> Feed {
    match Config::parse(toml, Source::Embedded) {
        Ok(mut config) => config.feeds.remove(0),
        Err(e) => panic!("test feed does not parse: {e}\n{toml}"),
    }
}

/// ID, Name, Note: plain text, no delivery channel required.
const SIMPLE: &str = r#"
[[feed]]
name = "simple"
  [[feed.field]]
  name = "id"
  column = "Employee ID"
  aliases = ["EmpID"]
  type = "id"
  [[feed.field]]
  name = "name"
  column = "Name"
  [[feed.field]]
  name = "note"
  column = "Note"
"#;

fn simple_feed() -> Feed {
    feed_from(SIMPLE)
}

/// The simple feed with feed-level keys added (thresholds, limits...).
fn simple_feed_with(keys: &str) -> Feed {
    feed_from(&SIMPLE.replace(
        "name = \"simple\"\n",
        &format!("name = \"simple\"\n{keys}\n"),
    ))
}

const HR: &str = r#"
[[feed]]
name = "hr"
require_channel = true
group_fields = ["department", "tags"]
  [[feed.field]]
  name = "employee_id"
  column = "Employee ID"
  aliases = ["EmpID", "external_id"]
  type = "id"
  [[feed.field]]
  name = "name"
  column = "Name"
  required = true
  [[feed.field]]
  name = "email"
  column = "Email"
  type = "email"
  [[feed.field]]
  name = "mobile"
  column = "Mobile"
  type = "sms"
  [[feed.field]]
  name = "office"
  column = "Office Phone"
  type = "voice"
  [[feed.field]]
  name = "department"
  column = "Department"
  [[feed.field]]
  name = "tags"
  column = "Tags"
  type = "multi"
  separator = ";"
  [[feed.field]]
  name = "status"
  column = "Status"
"#;

const HR_HEADER: &str = "Employee ID,Name,Email,Mobile,Office Phone,Department,Tags,Status\n";

/// The HR feed without a filter.
fn hr_feed() -> Feed {
    feed_from(HR)
}

/// The HR feed importing only rows whose Status is Active.
fn hr_feed_active_only() -> Feed {
    feed_from(&format!(
        "{HR}\n  [[feed.filter]]\n  field = \"status\"\n  equals = [\"Active\"]\n"
    ))
}

fn hr_file(rows: &[&str]) -> Vec<u8> {
    let mut out = HR_HEADER.to_string();
    for r in rows {
        out.push_str(r);
        out.push('\n');
    }
    out.into_bytes()
}

/// The store of one feed, in memory: what the redb store keeps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Model {
    records: BTreeMap<String, Vec<u8>>,
    /// The (ID, raw hash) list the last applied run handed back.
    hashes: BTreeMap<String, u64>,
    groups: BTreeMap<String, u64>,
    fingerprint: Option<u64>,
    mapping: Option<u64>,
    /// IDs written during the current run (each may be touched once).
    touched: BTreeSet<String>,
}

impl Model {
    fn touch(&mut self, id: &str) {
        assert!(
            self.touched.insert(id.to_string()),
            "ID '{id}' written twice in one run"
        );
    }

    /// What the store hands to the diff: sorted (ID, hash) and the
    /// fingerprint stored by the last applied run.
    fn index(&self) -> StoredIndex {
        StoredIndex {
            hashes: self
                .hashes
                .iter()
                .map(|(id, h)| (id.as_str().into(), *h))
                .collect(),
            fingerprint: self.fingerprint,
            mapping: self.mapping,
        }
    }

    fn record(&self, id: &str) -> Record {
        let bytes = self
            .records
            .get(id)
            .unwrap_or_else(|| panic!("no recipient '{id}' in {:?}", self.ids()));
        Record::decode(bytes).expect("stored record decodes")
    }

    fn values(&self, id: &str) -> Vec<String> {
        self.record(id).values
    }

    fn ids(&self) -> Vec<String> {
        self.records.keys().cloned().collect()
    }

    fn group_counts(&self) -> Vec<(String, u64)> {
        self.groups.iter().map(|(g, n)| (g.clone(), *n)).collect()
    }

    /// (group, ID) of every membership, from the stored records.
    fn members(&self) -> BTreeSet<(String, String)> {
        let mut members = BTreeSet::new();
        for (id, bytes) in &self.records {
            let record = Record::decode(bytes).expect("stored record decodes");
            for g in record.groups {
                members.insert((g, id.clone()));
            }
        }
        members
    }

    fn members_of(&self, group: &str) -> Vec<String> {
        self.members()
            .into_iter()
            .filter(|(g, _)| g == group)
            .map(|(_, id)| id)
            .collect()
    }

    /// Every record is stored under the ID it holds.
    fn assert_keys_are_ids(&self, feed: &Feed) {
        for id in self.records.keys() {
            assert_eq!(
                &self.values(id)[feed.id_field],
                id,
                "a record stored under another ID"
            );
        }
    }

    /// Records and hashes have the same IDs; group counts are the member
    /// counts.
    fn assert_consistent(&self) {
        assert_eq!(
            self.records.keys().collect::<Vec<_>>(),
            self.hashes.keys().collect::<Vec<_>>(),
            "records and hashes disagree"
        );
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (g, _) in self.members() {
            *counts.entry(g).or_default() += 1;
        }
        assert_eq!(counts, self.groups, "group counts disagree with members");
    }
}

impl FeedWriter for Model {
    type Error = Infallible;

    fn stored_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.records.get(id).cloned())
    }

    fn put_record(&mut self, id: &str, record: &[u8]) -> Result<(), Infallible> {
        self.touch(id);
        self.records.insert(id.to_string(), record.to_vec());
        Ok(())
    }

    fn remove_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, Infallible> {
        self.touch(id);
        Ok(self.records.remove(id))
    }

    fn group_count(&mut self, group: &str) -> Result<u64, Infallible> {
        Ok(self.groups.get(group).copied().unwrap_or(0))
    }

    fn set_group_count(&mut self, group: &str, count: u64) -> Result<(), Infallible> {
        if count == 0 {
            self.groups.remove(group);
        } else {
            self.groups.insert(group.to_string(), count);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Errors(Vec<RowError>);

impl ErrorSink for Errors {
    fn row_error(&mut self, error: &RowError) -> std::io::Result<()> {
        self.0.push(error.clone());
        Ok(())
    }
}

fn try_scan(feed: &Feed, bytes: &[u8]) -> Result<Scan, Rejection> {
    let input: Vec<u8> = bytes.to_vec();
    scan_file(&input, feed, &|_| {})
}

fn scan(feed: &Feed, bytes: &[u8]) -> Scan {
    try_scan(feed, bytes).unwrap_or_else(|r| panic!("file rejected: {}", r.reason))
}

fn rejection(feed: &Feed, bytes: &[u8]) -> String {
    match try_scan(feed, bytes) {
        Ok(s) => panic!("expected a rejection, got {} rows", s.rows_read),
        Err(r) => r.reason,
    }
}

/// The diff of `bytes` against `model`, as the worker computes it.
fn diff_of(feed: &Feed, model: &Model, bytes: &[u8]) -> Diff {
    let scan = scan(feed, bytes);
    let fingerprint = run_fingerprint(feed, scan.encoding);
    diff_scan(scan, model.index(), fingerprint)
}

/// scan_file → diff_scan → apply_diff against `model`; the hash list and
/// the fingerprint are stored afterwards, as an applied run does. Checks
/// the invariants every run must keep.
fn try_run(
    feed: &Feed,
    model: &mut Model,
    bytes: &[u8],
) -> Result<(ApplyCounts, Vec<RowError>), Rejection> {
    let input: Vec<u8> = bytes.to_vec();
    let index = model.index();
    let known = trusted_hashes(&index, feed);
    let scan = scan_file_against(&input, feed, known, &|_| {})?;
    // The fast path (rows recognised by their stored hash, unparsed) must
    // see exactly what a full parse sees.
    let full = scan_file(&input, feed, &|_| {})?;
    let facts = |s: &Scan| -> Vec<(String, u64, u64, u32, RowShape)> {
        s.rows
            .iter()
            .map(|r| (r.id.to_string(), r.hash, r.offset, r.line, r.shape))
            .collect()
    };
    assert_eq!(facts(&scan), facts(&full), "fast-path scan differs");
    assert_eq!(
        (scan.rows_read, scan.filtered, scan.encoding),
        (full.rows_read, full.filtered, full.encoding)
    );
    let header = scan.header.clone();
    let encoding = scan.encoding;
    let fingerprint = run_fingerprint(feed, scan.encoding);
    let diff = diff_scan(scan, index, fingerprint);
    let file = FileContext {
        input: &input,
        feed,
        header: &header,
        encoding,
        line_word: "line",
    };
    let mut errors = Errors::default();
    let applied = match apply_diff(&file, diff, model, &mut errors) {
        Ok(a) => a,
        Err(e) => panic!("apply_diff failed: {e}"),
    };
    let hashes: BTreeMap<String, u64> = applied
        .hashes
        .iter()
        .map(|(id, h)| (id.to_string(), *h))
        .collect();
    assert_eq!(
        hashes.len(),
        applied.hashes.len(),
        "hash list without repeats"
    );
    assert!(
        applied.hashes.windows(2).all(|w| w[0].0 < w[1].0),
        "hash list sorted by ID"
    );
    if !applied.hashes_changed {
        assert_eq!(hashes, model.hashes, "hashes_changed is false");
    }
    model.hashes = hashes;
    model.fingerprint = Some(fingerprint);
    model.mapping = Some(feed.mapping_fingerprint());
    model.touched.clear();
    let counts = applied.counts;
    assert_eq!(
        counts.rows,
        counts.added + counts.updated + counts.unchanged + counts.flagged + counts.filtered,
        "every row lands in exactly one count: {counts:?}"
    );
    let warned = errors.0.iter().filter(|e| e.warning).count() as u64;
    assert_eq!(
        (errors.0.len() as u64 - warned, warned),
        (counts.flagged, counts.warnings),
        "one error per flagged row, one per row with warnings"
    );
    assert!(
        errors.0.windows(2).all(|w| w[0].line <= w[1].line),
        "row errors in file order: {:?}",
        errors.0.iter().map(|e| e.line).collect::<Vec<_>>()
    );
    model.assert_consistent();
    Ok((counts, errors.0))
}

fn run(feed: &Feed, model: &mut Model, bytes: &[u8]) -> (ApplyCounts, Vec<RowError>) {
    try_run(feed, model, bytes).unwrap_or_else(|r| panic!("file rejected: {}", r.reason))
}

/// (line, id, reasons) of each row error.
fn brief(errors: &[RowError]) -> Vec<(u32, Option<String>, Vec<String>)> {
    errors
        .iter()
        .map(|e| (e.line, e.id.clone(), e.reasons.clone()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (id, line, shape) of the scanned rows in file order.
fn scanned(scan: &Scan) -> Vec<(String, u32, RowShape)> {
    scan.rows
        .iter()
        .map(|r| (r.id.to_string(), r.line, r.shape))
        .collect()
}

fn counts(
    rows: u64,
    [added, updated, removed, unchanged, flagged, filtered]: [u64; 6],
    [groups_created, groups_removed]: [u64; 2],
) -> ApplyCounts {
    ApplyCounts {
        rows,
        added,
        updated,
        removed,
        unchanged,
        flagged,
        warnings: 0,
        filtered,
        groups_created,
        groups_removed,
    }
}

// ------------------------------------------------------------------------
// CSV quirks
// ------------------------------------------------------------------------

#[test]
fn utf8_bom_is_skipped_and_first_column_still_maps() {
    let feed = simple_feed();
    let bytes = b"\xEF\xBB\xBFEmployee ID,Name,Note\nE1,Ann,x\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.header.bom_len, 3);
    assert_eq!(s.header.columns, strings(&["Employee ID", "Name", "Note"]));
    assert_eq!(s.header.field_columns, vec![Some(0), Some(1), Some(2)]);
    assert_eq!(s.encoding, Encoding::Utf8);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(1, [1, 0, 0, 0, 0, 0], [0, 0]));
    assert!(errors.is_empty());
    assert_eq!(model.values("E1"), strings(&["E1", "Ann", "x"]));
}

#[test]
fn windows_1252_file_is_detected_and_decoded() {
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\nE1,Jos\xE9,caf\xE9\nJ\xE9r\xF4me,Ren\xE9e,x\n,Zo\xEB,y\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.encoding, Encoding::Windows1252);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(3, [2, 0, 0, 0, 1, 0], [0, 0]));
    assert_eq!(model.ids(), strings(&["E1", "Jérôme"]));
    assert_eq!(model.values("E1"), strings(&["E1", "José", "café"]));
    assert_eq!(model.values("Jérôme"), strings(&["Jérôme", "Renée", "x"]));
    model.assert_keys_are_ids(&feed);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].cells, strings(&["", "Zoë", "y"]));

    // A header written in Windows-1252 maps too.
    let feed = feed_from(&SIMPLE.replace("column = \"Name\"", "column = \"Prénom\""));
    let bytes = b"Employee ID,Pr\xE9nom,Note\nE1,Jos\xE9,x\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.encoding, Encoding::Windows1252);
    assert_eq!(
        s.header.columns,
        strings(&["Employee ID", "Prénom", "Note"])
    );
    let mut model = Model::default();
    run(&feed, &mut model, bytes);
    assert_eq!(model.values("E1"), strings(&["E1", "José", "x"]));
}

#[test]
fn crlf_and_lf_files_read_the_same() {
    let feed = simple_feed();
    let lf = "Employee ID,Name,Note\nE1,Ann,x\nE2,Bob,y\nE3,Cat,z\n";
    let crlf = lf.replace('\n', "\r\n");
    let (a, b) = (scan(&feed, lf.as_bytes()), scan(&feed, crlf.as_bytes()));
    let hashes = |s: &Scan| s.rows.iter().map(|r| r.hash).collect::<Vec<_>>();
    assert_eq!(hashes(&a), hashes(&b));
    let want = vec![
        ("E1".to_string(), 2, RowShape::Whole),
        ("E2".to_string(), 3, RowShape::Whole),
        ("E3".to_string(), 4, RowShape::Whole),
    ];
    assert_eq!(scanned(&a), want);
    let mut model = Model::default();
    run(&feed, &mut model, crlf.as_bytes());
    assert_eq!(model.values("E3"), strings(&["E3", "Cat", "z"]));
    // The same data with other line ends changes nothing.
    let (c, _) = run(&feed, &mut model, lf.as_bytes());
    assert_eq!(c, counts(3, [0, 0, 0, 3, 0, 0], [0, 0]));
}

#[test]
fn crlf_line_numbers_name_the_rows_own_lines() {
    // Excel on Windows writes CRLF. The error report must name the line a
    // row is on, and a repeated ID must name the line of the first one.
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\r\nE1,Ann,x\r\nE2,Bob,y\r\n,Nobody,z\r\nE1,Again,w\r\n";
    let s = scan(&feed, bytes);
    assert_eq!(
        scanned(&s),
        vec![
            ("E1".to_string(), 2, RowShape::Whole),
            ("E2".to_string(), 3, RowShape::Whole),
            (String::new(), 4, RowShape::Whole),
            ("E1".to_string(), 5, RowShape::Whole),
        ]
    );
    let mut model = Model::default();
    let (_, errors) = run(&feed, &mut model, bytes);
    assert_eq!(
        brief(&errors),
        vec![
            (4, None, strings(&["empty ID (column 'Employee ID')"])),
            (
                5,
                Some("E1".to_string()),
                strings(&["repeated ID 'E1': the first occurrence on line 2 is used"])
            ),
        ]
    );
}

#[test]
fn crlf_repeated_id_on_consecutive_lines_keeps_the_first() {
    // E1 on lines 2 and 3 of a CRLF file: the first occurrence is used.
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\r\nE1,First,x\r\nE1,Second,y\r\n";
    let mut model = Model::default();
    let (_, errors) = run(&feed, &mut model, bytes);
    assert_eq!(model.values("E1"), strings(&["E1", "First", "x"]));
    assert_eq!(
        brief(&errors),
        vec![(
            3,
            Some("E1".to_string()),
            strings(&["repeated ID 'E1': the first occurrence on line 2 is used"])
        )]
    );
}

#[test]
fn blank_lines_are_skipped_and_do_not_shift_line_numbers() {
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\nE1,Ann,x\n\nE2,Bob,y\n\n\n,Nobody,z\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.rows_read, 3);
    assert_eq!(
        scanned(&s),
        vec![
            ("E1".to_string(), 2, RowShape::Whole),
            ("E2".to_string(), 4, RowShape::Whole),
            (String::new(), 7, RowShape::Whole),
        ]
    );
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(3, [2, 0, 0, 0, 1, 0], [0, 0]));
    assert_eq!(errors[0].line, 7);
}

#[test]
fn semicolon_tab_and_pipe_are_detected() {
    let feed = simple_feed();
    for d in [b';', b'\t', b'|'] {
        let d = d as char;
        let text = format!("Employee ID{d}Name{d}Note\nE1{d}Doe, Jane{d}a,b\nE2{d}Bob{d}\n");
        let s = scan(&feed, text.as_bytes());
        assert_eq!(s.header.delimiter as char, d);
        assert_eq!(s.header.columns, strings(&["Employee ID", "Name", "Note"]));
        let mut model = Model::default();
        let (c, _) = run(&feed, &mut model, text.as_bytes());
        assert_eq!(c, counts(2, [2, 0, 0, 0, 0, 0], [0, 0]), "delimiter {d:?}");
        assert_eq!(model.values("E1"), strings(&["E1", "Doe, Jane", "a,b"]));
        assert_eq!(model.values("E2"), strings(&["E2", "Bob", ""]));
    }
    // Comma when there is a tie.
    let s = scan(&feed, b"Employee ID,Name;Note|x\n");
    assert_eq!(s.header.delimiter, b',');
}

#[test]
fn a_feed_can_fix_its_delimiter() {
    // Comma and pipe tie in this header, so detection picks the comma and
    // the ID column is not found; a feed with delimiter = "|" reads it.
    let text = "Employee ID|Last, First\nE1|Doe, Jane\n";
    let mapping = |delimiter: &str| {
        feed_from(&format!(
            "[[feed]]\nname = \"p\"\n{delimiter}\n  [[feed.field]]\n  name = \"id\"\n  column = \"Employee ID\"\n  type = \"id\"\n  [[feed.field]]\n  name = \"name\"\n  column = \"Last, First\"\n"
        ))
    };
    let auto = mapping("");
    assert_eq!(
        rejection(&auto, text.as_bytes()),
        "the ID column 'Employee ID' is missing; the header has: Employee ID|Last, First"
    );
    let fixed = mapping("delimiter = \"|\"");
    let mut model = Model::default();
    let (c, _) = run(&fixed, &mut model, text.as_bytes());
    assert_eq!(c, counts(1, [1, 0, 0, 0, 0, 0], [0, 0]));
    assert_eq!(model.values("E1"), strings(&["E1", "Doe, Jane"]));
}

#[test]
fn quoted_delimiters_and_line_breaks_stay_in_values() {
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\n\
E1,\"Doe, Jane\",\"line one\nline two\"\n\
E2,Bob,\"a,b\"\n\
E3,\"Multi\r\nline\nname\",z\n\
E4,Last,w\n\
E1,Again,v\n";
    let s = scan(&feed, bytes);
    assert_eq!(
        scanned(&s)
            .iter()
            .map(|r| (r.0.as_str(), r.1))
            .collect::<Vec<_>>(),
        vec![("E1", 2), ("E2", 4), ("E3", 5), ("E4", 8), ("E1", 9)]
    );
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(5, [4, 0, 0, 0, 1, 0], [0, 0]));
    assert_eq!(
        model.values("E1"),
        strings(&["E1", "Doe, Jane", "line one\nline two"])
    );
    assert_eq!(model.values("E2"), strings(&["E2", "Bob", "a,b"]));
    assert_eq!(
        model.values("E3"),
        strings(&["E3", "Multi\r\nline\nname", "z"])
    );
    assert_eq!(model.values("E4"), strings(&["E4", "Last", "w"]));
    assert_eq!(
        brief(&errors),
        vec![(
            9,
            Some("E1".to_string()),
            strings(&["repeated ID 'E1': the first occurrence on line 2 is used"])
        )]
    );
    assert_eq!(errors[0].cells, strings(&["E1", "Again", "v"]));
}

#[test]
fn doubled_quotes_are_escaped_quotes() {
    let feed = simple_feed();
    let bytes =
        b"Employee ID,Name,Note\nE1,\"She said \"\"hi\"\"\",\"\"\"quoted\"\"\"\nE2,\"\",\"\"\"\"\n";
    let mut model = Model::default();
    let (c, _) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(2, [2, 0, 0, 0, 0, 0], [0, 0]));
    assert_eq!(
        model.values("E1"),
        strings(&["E1", "She said \"hi\"", "\"quoted\""])
    );
    assert_eq!(model.values("E2"), strings(&["E2", "", "\""]));
}

#[test]
fn a_stray_quote_in_an_unquoted_field_does_not_derail_later_rows() {
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note\nE1,5\" tall,x\nE2,Bob,y\nE3,\"ok\",z\nE4,ab\"c,d\"e\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.rows_read, 4);
    assert_eq!(
        scanned(&s),
        vec![
            ("E1".to_string(), 2, RowShape::Whole),
            ("E2".to_string(), 3, RowShape::Whole),
            ("E3".to_string(), 4, RowShape::Whole),
            ("E4".to_string(), 5, RowShape::Whole),
        ]
    );
    let mut model = Model::default();
    run(&feed, &mut model, bytes);
    assert_eq!(model.values("E1"), strings(&["E1", "5\" tall", "x"]));
    assert_eq!(model.values("E2"), strings(&["E2", "Bob", "y"]));
    assert_eq!(model.values("E3"), strings(&["E3", "ok", "z"]));
    assert_eq!(model.values("E4"), strings(&["E4", "ab\"c", "d\"e"]));
}

#[test]
fn a_stray_quote_in_the_header_does_not_swallow_the_rows() {
    // `Height 5"` is read by the csv rules as a plain header cell; the data
    // rows after it must be read.
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note,Height 5\"\nE1,Ann,x,1\nE2,Bob,y,2\n";
    let s = scan(&feed, bytes);
    assert_eq!(
        s.header.columns,
        strings(&["Employee ID", "Name", "Note", "Height 5\""])
    );
    assert_eq!(s.rows_read, 2);
    assert_eq!(
        scanned(&s),
        vec![
            ("E1".to_string(), 2, RowShape::Whole),
            ("E2".to_string(), 3, RowShape::Whole),
        ]
    );
}

#[test]
fn header_names_match_ignoring_case_spaces_and_by_alias() {
    let feed = simple_feed();
    let s = scan(&feed, b"  employee id ,NAME ,\tnote\t\nE1,Ann,x\n");
    assert_eq!(s.header.field_columns, vec![Some(0), Some(1), Some(2)]);
    assert_eq!(s.rows[0].id.as_str(), "E1");

    // By alias, in any case, in another column order, with unmapped columns.
    let bytes = b"Extra,NOTE,empid,name\n1,x,E1,Ann\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.header.field_columns, vec![Some(2), Some(3), Some(1)]);
    let mut model = Model::default();
    run(&feed, &mut model, bytes);
    assert_eq!(model.values("E1"), strings(&["E1", "Ann", "x"]));

    // Moving or adding unmapped columns changes no recipient: the row may
    // be validated again (a file that maps every column in order is hashed
    // as raw text), and is found unchanged.
    let moved = b"Employee ID,Name,Note\nE1,Ann,x\n";
    let (c, _) = run(&feed, &mut model, moved);
    assert_eq!(c, counts(1, [0, 0, 0, 1, 0, 0], [0, 0]));
    let (c, _) = run(&feed, &mut model, bytes);
    assert_eq!(c, counts(1, [0, 0, 0, 1, 0, 0], [0, 0]));
    // Once stored under a layout, the same layout again is not re-read.
    assert!(diff_of(&feed, &model, bytes).work.is_empty());

    // An optional column that is absent reads as empty.
    let s = scan(&feed, b"Employee ID,Name\nE1,Ann\n");
    assert_eq!(s.header.field_columns, vec![Some(0), Some(1), None]);
    let mut model = Model::default();
    run(&feed, &mut model, b"Employee ID,Name\nE1,Ann\n");
    assert_eq!(model.values("E1"), strings(&["E1", "Ann", ""]));
}

// ------------------------------------------------------------------------
// A file of several 4 MiB blocks against the csv crate read sequentially
// ------------------------------------------------------------------------

/// xorshift64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Rows of every quoting shape, with LF and CRLF line ends, blank lines,
/// wrong column counts and multi-line quoted fields spread everywhere.
fn tricky_rows(rows: u32, seed: u64) -> Vec<u8> {
    let mut out = b"Employee ID,Name,Note,Extra\n".to_vec();
    let mut rng = Rng(seed);
    for i in 0..rows {
        let r = rng.next();
        let eol = if r & 1 == 0 { "\n" } else { "\r\n" };
        let pad = "x".repeat((r >> 32) as usize % 320);
        let row = match (r >> 8) % 16 {
            0 => format!("E{i},\"Doe, {i}\",\"line one\nline two\",{pad}"),
            1 => format!("E{i},\"He said \"\"hi\"\"\n{i}\",n,{pad}"),
            2 => format!("E{i},5\" tall,6\"\" wide,{pad}"),
            3 => format!("E{i},\"a\"b,\"\"\"\",d"),
            4 => format!("\"E{i}\",\"x\"\"\n\"\"y\",\"\r\n\",z"),
            5 => format!("E{i},only"),
            6 => format!("E{i},a,b,c,d"),
            // A long value over many lines (with few delimiters: many in a
            // value over lines look like swallowed records, see runaway_quote).
            7 => format!("E{i},\"{}\",n,x", "long;\"\"\n".repeat(30)),
            8 => format!("{eol}E{i},after a blank line,n,x"),
            9 => format!("E{i},ab\"c,d\"e,f\"\"\""),
            10 => format!("E{i},\"\",\"\"\"\n\"\"\",\"\n\""),
            11 => format!(" \"E{i}\",x,y,\"\n\""),
            _ => format!("E{i},Name {i},note {i},{pad}{pad}"),
        };
        out.extend_from_slice(row.as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    out
}

/// The records of `bytes` by the csv crate, read in one go.
fn csv_records(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    reader
        .byte_records()
        .map(|r| r.expect("byte records never fail on a slice"))
        .map(|r| r.iter().map(<[u8]>::to_vec).collect())
        .collect()
}

/// What pass 1 must find per row: (id, hash, end offset, shape).
type RowFacts = (String, u64, u64, RowShape);

/// A row by the csv crate read in one go: its facts, where its first byte
/// is and the physical line that byte is on. (The csv crate itself puts the
/// start of a record after a CRLF or after blank lines on the line end
/// before it; the first byte of the record is what a person calls its line.)
struct SequentialRow {
    facts: RowFacts,
    first_byte: u64,
    line: u32,
}

fn sequential_scan(bytes: &[u8], field_columns: &[Option<usize>]) -> Vec<SequentialRow> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut scratch = Vec::new();
    assert!(reader.read_byte_record(&mut record).expect("header"));
    let ncols = record.len();
    let mut out = Vec::new();
    let (mut lines, mut counted) = (1u32, 0usize);
    while reader.read_byte_record(&mut record).expect("record") {
        let mut first = record.position().expect("position").byte() as usize;
        while matches!(bytes[first], b'\r' | b'\n') {
            first += 1;
        }
        lines += memchr::memchr_iter(b'\n', &bytes[counted..first]).count() as u32;
        counted = first;
        let id = field_columns[0]
            .and_then(|c| record.get(c))
            .map(trim_bytes)
            .unwrap_or(b"");
        let shape = if record.len() == ncols {
            RowShape::Whole
        } else {
            RowShape::WrongColumnCount
        };
        out.push(SequentialRow {
            facts: (
                String::from_utf8(id.to_vec()).expect("ASCII IDs"),
                {
                    let mut ends = Vec::with_capacity(record.len());
                    let mut at = 0;
                    for cell in record.iter() {
                        at += cell.len();
                        ends.push(at);
                    }
                    let cells = super::validate::Cells {
                        data: record.as_slice(),
                        ends: &ends,
                        gap: 0,
                    };
                    raw_hash(&cells, field_columns, &mut scratch)
                },
                reader.position().byte(),
                shape,
            ),
            first_byte: first as u64,
            line: lines,
        });
    }
    out
}

#[test]
fn a_file_of_several_blocks_reads_like_the_csv_crate_in_one_go() {
    let bytes = tricky_rows(60_000, 0x9E37_79B9_7F4A_7C15);
    assert!(
        bytes.len() > 8 << 20,
        "{} bytes: more than two blocks",
        bytes.len()
    );
    let feed = simple_feed();
    let s = scan(&feed, &bytes);
    let want = sequential_scan(&bytes, &s.header.field_columns);
    assert_eq!(s.rows_read, want.len() as u64);
    assert_eq!(s.rows.len(), want.len());
    for (i, (got, want)) in s.rows.iter().zip(&want).enumerate() {
        let facts = (
            got.id.to_string(),
            got.hash,
            got.offset + got.len as u64,
            got.shape,
        );
        assert_eq!(facts, want.facts, "row {i}: (id, hash, end, shape)");
        // The row's bytes may start with the line ends before it.
        assert!(
            got.offset <= want.first_byte
                && bytes[got.offset as usize..want.first_byte as usize]
                    .iter()
                    .all(|b| matches!(b, b'\r' | b'\n')),
            "row {i} starts at {}, its first byte is at {}",
            got.offset,
            want.first_byte
        );
    }

    // And the whole run stores exactly the csv crate's values.
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    let records = csv_records(&bytes);
    let whole: Vec<&Vec<Vec<u8>>> = records[1..].iter().filter(|r| r.len() == 4).collect();
    assert_eq!(c.rows, want.len() as u64);
    assert_eq!(c.added, whole.len() as u64);
    assert_eq!(c.flagged, (want.len() - whole.len()) as u64);
    assert!(errors
        .iter()
        .all(|e| e.reasons[0].starts_with("wrong column count")));
    for r in whole {
        let cell = |i: usize| {
            String::from_utf8(r[i].clone())
                .expect("UTF-8")
                .trim()
                .to_string()
        };
        assert_eq!(model.values(&cell(0)), vec![cell(0), cell(1), cell(2)]);
    }

    // Line numbers last: each row is on the line of its first byte.
    let wrong: Vec<(usize, u32, u32)> = s
        .rows
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (got, want))| got.line != want.line)
        .map(|(i, (got, want))| (i, got.line, want.line))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} rows have a wrong line number, e.g. (row, got, want) {:?}",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Splitting `bytes` at the cut gives the same records as reading it whole.
fn check_cut(bytes: &[u8], limit: usize) -> Option<usize> {
    let cut = last_record_boundary(&bytes[..limit], b',')?;
    assert!(cut <= limit);
    assert!(
        matches!(bytes[cut - 1], b'\n' | b'\r'),
        "a cut is just after a line end"
    );
    let mut split = csv_records(&bytes[..cut]);
    split.extend(csv_records(&bytes[cut..]));
    assert_eq!(
        split,
        csv_records(bytes),
        "cutting at {cut} (limit {limit}) splits a record"
    );
    Some(cut)
}

#[test]
fn block_cuts_fall_on_record_boundaries() {
    let bytes = tricky_rows(600, 42);
    let body = &bytes[28..]; // after the header, as a block starts
    let mut rng = Rng(7);
    for _ in 0..150 {
        let limit = 1 + (rng.next() as usize) % body.len();
        let cut = check_cut(body, limit);
        // Rows are shorter than 1 KiB, so a cut is never far back.
        if limit > 2048 {
            let cut = cut.expect("a boundary in 2 KiB");
            assert!(limit - cut < 2048, "cut {cut} far before limit {limit}");
        }
    }
}

#[test]
fn a_windows_1252_byte_after_the_first_block_decodes_every_id_as_windows_1252() {
    // The first 4 MiB block is valid UTF-8 and holds a non-ASCII ID; a
    // later block is not UTF-8. The file is Windows-1252 as a whole, and
    // every ID is read the way its values are.
    let feed = simple_feed();
    let mut bytes = "Employee ID,Name,Note\nZoë,first,x\n".as_bytes().to_vec();
    let mut i = 0;
    while bytes.len() < (4 << 20) + 4096 {
        bytes.extend_from_slice(format!("E{i:05},Name {i},{}\n", "x".repeat(220)).as_bytes());
        i += 1;
    }
    // More bytes that cannot be UTF-8 than valid UTF-8 sequences.
    bytes.extend_from_slice(b"Ren\xE9e,middle,y\nJos\xE9,last,y\n");
    let s = scan(&feed, &bytes);
    assert_eq!(s.encoding, Encoding::Windows1252);
    assert_eq!(s.rows[0].id.as_str(), "ZoÃ«");
    assert_eq!(s.rows[s.rows.len() - 1].id.as_str(), "José");
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    assert!(errors.is_empty());
    assert_eq!(c.added, i as u64 + 3);
    assert_eq!(model.values("ZoÃ«"), strings(&["ZoÃ«", "first", "x"]));
    assert_eq!(model.values("José"), strings(&["José", "last", "y"]));
    model.assert_keys_are_ids(&feed);
}

#[test]
fn ids_are_trimmed_like_every_value() {
    // A no-break space (U+00A0, what Excel often leaves behind) around an
    // ID: the stored value is trimmed, so the key must be too, and the two
    // rows are the same person.
    let feed = simple_feed();
    let mut model = Model::default();
    let (c, errors) = run(
        &feed,
        &mut model,
        "Employee ID,Name,Note\nE1\u{a0},Ann,x\nE1,Bob,y\n".as_bytes(),
    );
    model.assert_keys_are_ids(&feed);
    assert_eq!(model.ids(), strings(&["E1"]));
    assert_eq!(c, counts(2, [1, 0, 0, 0, 1, 0], [0, 0]));
    assert_eq!(
        brief(&errors),
        vec![(
            3,
            Some("E1".to_string()),
            strings(&["repeated ID 'E1': the first occurrence on line 2 is used"])
        )]
    );
}

// ------------------------------------------------------------------------
// Whole-file rejections
// ------------------------------------------------------------------------

#[test]
fn empty_file_is_rejected() {
    assert_eq!(
        rejection(&simple_feed(), b""),
        "the file is empty: there is no header row"
    );
}

#[test]
fn missing_id_column_names_it_and_lists_the_header() {
    assert_eq!(
        rejection(&simple_feed(), b"Staff No, Name ,Note\nE1,Ann,x\n"),
        "the ID column 'Employee ID' or 'EmpID' is missing; the header has: Staff No, Name, Note"
    );
}

#[test]
fn missing_required_column_is_rejected() {
    assert_eq!(
        rejection(&hr_feed(), b"Employee ID,Email,Mobile\nE1,a@example.com,\n"),
        "the required column 'Name' is missing; the header has: Employee ID, Email, Mobile"
    );
}

#[test]
fn unreadable_headers_are_rejected() {
    let feed = simple_feed();
    assert_eq!(
        rejection(&feed, b"\n\nE1,Ann,x\n"),
        "the header row is empty; the first line must name the columns"
    );
    assert_eq!(
        rejection(&feed, b" , \nE1,Ann,x\n"),
        "the header row is empty; the first line must name the columns"
    );
    let no_line_end = vec![b'a'; (1 << 20) + 10];
    assert_eq!(
        rejection(&feed, &no_line_end),
        "the header row is unreadable: no line end within the first 1 MiB"
    );
}

#[test]
fn utf16_files_are_rejected() {
    let want =
        "the file is UTF-16 text; save it as \"CSV UTF-8\" (or Windows-1252 CSV) and send it again";
    let feed = simple_feed();
    assert_eq!(rejection(&feed, b"\xFF\xFEE\x00m\x00p\x00\n\x00"), want);
    assert_eq!(rejection(&feed, b"\xFE\xFF\x00E\x00m\x00p\x00\n"), want);
}

#[test]
fn files_over_max_file_size_are_rejected() {
    let feed = simple_feed_with("max_file_size = 40");
    let fits = b"Employee ID,Name,Note\nE1,Ann,xxxxxxxxxx\n";
    assert_eq!(fits.len(), 40);
    assert_eq!(scan(&feed, fits).rows_read, 1);
    assert_eq!(
        rejection(&feed, b"Employee ID,Name,Note\nE1,Ann,xxxxxxxxxxx\n"),
        "the file is 41 bytes, over this feed's max_file_size of 40 bytes"
    );
}

#[test]
fn files_over_max_rows_are_rejected() {
    let feed = simple_feed_with("max_rows = 3");
    let three = b"Employee ID,Name,Note\nE1,a,\nE2,b,\n\nE3,c,\n";
    assert_eq!(scan(&feed, three).rows_read, 3);
    assert_eq!(
        rejection(
            &feed,
            b"Employee ID,Name,Note\nE1,a,\nE2,b,\nE3,c,\nE4,d,\n"
        ),
        "the file has more than 3 data rows, this feed's max_rows"
    );
    // A rejected file changes nothing.
    let mut model = Model::default();
    run(&feed, &mut model, three);
    let before = model.clone();
    assert!(try_run(
        &feed,
        &mut model,
        b"Employee ID,Name,Note\nE1,a,\nE2,b,\nE3,c,\nE4,d,\n"
    )
    .is_err());
    assert_eq!(model, before);
}

// ------------------------------------------------------------------------
// Row errors
// ------------------------------------------------------------------------

const NO_VALID_CHANNEL: &str =
    "no valid delivery channel: every SMS, Voice and email value is empty or invalid";

#[test]
fn every_row_error_reason() {
    let feed = hr_feed();
    let long = "x".repeat(256);
    let bytes = hr_file(&[
        "E1,Ann,ann@example.com,,,Sales,,Active",
        ",Bob,bob@example.com,,,,,Active",
        "E1,Ann Again,ann@example.com,,,,,Active",
        "E2,Cat,,call me,,,,Active",
        "E3,Dan,dan@example,,,,,Active",
        "E4,,eve@example.com,,,,,Active",
        &format!("E5,{long},x@example.com,,,,,Active"),
        "E6,Fa\x07y,fay@example.com,,,,,Active",
        "E7,Gus,gus@example.com,,,,,Active,extra",
        "E8,Hal,hal@example.com",
        "E9,Ivy,,,,,,Active",
        "E10,,bad,12,+999 1234,,,Active",
        "  ,Nemo,nemo@example.com,,,,,Active",
    ]);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    assert_eq!(c, counts(13, [1, 0, 0, 0, 12, 0], [1, 0]));
    let id = |s: &str| Some(s.to_string());
    assert_eq!(
        brief(&errors),
        vec![
            (3, None, strings(&["empty ID (column 'Employee ID')"])),
            (
                4,
                id("E1"),
                strings(&["repeated ID 'E1': the first occurrence on line 2 is used"])
            ),
            (
                5,
                id("E2"),
                strings(&[
                    "invalid phone in 'Mobile': 'call me' is not a phone number",
                    NO_VALID_CHANNEL
                ])
            ),
            (
                6,
                id("E3"),
                strings(&[
                    "invalid email in 'Email': 'dan@example' is not an email address",
                    NO_VALID_CHANNEL
                ])
            ),
            (7, id("E4"), strings(&["required field 'Name' is empty"])),
            (
                8,
                id("E5"),
                strings(&["value too long in 'Name': 256 characters, at most 255"])
            ),
            (
                9,
                id("E6"),
                strings(&["control character U+0007 in 'Name'"])
            ),
            (
                10,
                id("E7"),
                strings(&["wrong column count: 9 columns, the header has 8"])
            ),
            (
                11,
                id("E8"),
                strings(&["wrong column count: 3 columns, the header has 8"])
            ),
            (
                12,
                id("E9"),
                strings(&["no delivery channel: SMS, Voice and email are all empty"])
            ),
            (
                13,
                id("E10"),
                strings(&[
                    "required field 'Name' is empty",
                    "invalid email in 'Email': 'bad' is not an email address",
                    "invalid phone in 'Mobile': '12' is not a phone number",
                    "invalid phone in 'Office Phone': '+999 1234' is not a phone number",
                    NO_VALID_CHANNEL,
                ])
            ),
            (14, None, strings(&["empty ID (column 'Employee ID')"])),
        ]
    );
    // The report keeps the cells as written.
    assert_eq!(
        errors[7].cells,
        strings(&[
            "E7",
            "Gus",
            "gus@example.com",
            "",
            "",
            "",
            "",
            "Active",
            "extra"
        ])
    );
    assert_eq!(model.ids(), strings(&["E1"]));
}

#[test]
fn empty_id_names_the_column_as_the_header_writes_it() {
    let feed = simple_feed();
    let mut model = Model::default();
    let (_, errors) = run(&feed, &mut model, b"EMPID,Name,Note\n,Ann,x\n");
    assert_eq!(
        brief(&errors),
        vec![(2, None, strings(&["empty ID (column 'EMPID')"]))]
    );
}

#[test]
fn wrong_column_count_is_checked_before_the_empty_id() {
    // README "Order of row checks": wrong column count → filter → empty ID.
    let feed = simple_feed();
    let mut model = Model::default();
    let (_, errors) = run(&feed, &mut model, b"Employee ID,Name,Note\n,Ann\n");
    assert_eq!(
        brief(&errors),
        vec![(
            2,
            None,
            strings(&["wrong column count: 2 columns, the header has 3"])
        )]
    );
}

#[test]
fn max_length_counts_characters_and_is_per_field() {
    let feed =
        feed_from(&SIMPLE.replace("column = \"Name\"", "column = \"Name\"\n  max_length = 4"));
    let mut model = Model::default();
    let (c, errors) = run(
        &feed,
        &mut model,
        "Employee ID,Name,Note\nE1,Zoë!,x\nE2,Zoë!!,y\n".as_bytes(),
    );
    // Name is optional here: the row is imported without it.
    assert_eq!(
        c,
        ApplyCounts {
            warnings: 1,
            ..counts(2, [2, 0, 0, 0, 0, 0], [0, 0])
        }
    );
    assert_eq!(
        brief(&errors),
        vec![(
            3,
            Some("E2".to_string()),
            strings(&["value too long in 'Name': 5 characters, at most 4; imported without it"])
        )]
    );
}

// ------------------------------------------------------------------------
// Phones, emails, multi-value fields
// ------------------------------------------------------------------------

fn phone_feed(country: &str) -> Feed {
    feed_from(&format!(
        "[[feed]]\nname = \"p\"\ndefault_country = \"{country}\"\n  [[feed.field]]\n  name = \"id\"\n  column = \"ID\"\n  type = \"id\"\n  [[feed.field]]\n  name = \"phone\"\n  column = \"Phone\"\n  type = \"sms\"\n"
    ))
}

/// The stored phone of each row, or its reasons.
fn phones(country: &str, numbers: &[&str]) -> Vec<Result<String, Vec<String>>> {
    let feed = phone_feed(country);
    let mut text = "ID,Phone\n".to_string();
    for (i, n) in numbers.iter().enumerate() {
        text.push_str(&format!("P{i:02},\"{n}\"\n"));
    }
    let mut model = Model::default();
    let (_, errors) = run(&feed, &mut model, text.as_bytes());
    (0..numbers.len())
        .map(|i| {
            let id = format!("P{i:02}");
            // A warning that left the phone out reads as its reasons.
            let stored = model.records.get(&id).map(|_| model.values(&id)[1].clone());
            let error = errors.iter().find(|e| e.id.as_deref() == Some(id.as_str()));
            match (error, stored) {
                (Some(e), Some(v)) if e.warning && !v.is_empty() => Ok(v),
                (Some(e), _) => Err(e.reasons.clone()),
                (None, v) => Ok(v.unwrap_or_default()),
            }
        })
        .collect()
}

#[test]
fn phones_become_e164() {
    let ok = |s: &str| Ok(s.to_string());
    assert_eq!(
        phones(
            "US",
            &[
                "(212) 555-0123",
                "212.555.0123",
                "1-212-555-0123",
                "+1 212 555 0123",
                "+44 20 7946 0958",
                "+44 (0) 20 7946 0958",
                "+33 6 12 34 56 78",
                "+49 30 1234567",
                "+49 (0)151 23456789",
                "+61 2 9374 4000",
                "+81 3-1234-5678",
                "+91 98765 43210",
                "  +12125550123  ",
                "(212) 555-0123 ext. 7",
            ]
        ),
        vec![
            ok("+12125550123"),
            ok("+12125550123"),
            ok("+12125550123"),
            ok("+12125550123"),
            ok("+442079460958"),
            ok("+442079460958"),
            ok("+33612345678"),
            ok("+49301234567"),
            ok("+4915123456789"),
            ok("+61293744000"),
            ok("+81312345678"),
            ok("+919876543210"),
            ok("+12125550123"),
            ok("+12125550123"),
        ]
    );
    // National numbers read against the feed's country.
    assert_eq!(
        phones("GB", &["07912 345678", "020 7946 0958"]),
        vec![ok("+447912345678"), ok("+442079460958")]
    );
    assert_eq!(phones("FR", &["06 12 34 56 78"]), vec![ok("+33612345678")]);
}

#[test]
fn an_extension_is_dropped_with_a_warning_never_silently() {
    let feed = phone_feed("US");
    let forms = [
        "(212) 555-0123 x123",
        "212-555-0123 ext. 5",
        "+1 212 555 0123;ext=5",
        "+1 212 555 0123 extension 12",
    ];
    let mut text = "ID,Phone\n".to_string();
    for (i, n) in forms.iter().enumerate() {
        text.push_str(&format!("P{i},{n}\n"));
    }
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, text.as_bytes());
    assert_eq!((c.added, c.flagged, c.warnings), (4, 0, 4));
    for (i, e) in errors.iter().enumerate() {
        assert!(e.warning);
        assert!(e.reasons[0].contains("extension"), "{:?}", e.reasons);
        assert_eq!(model.values(&format!("P{i}"))[1], "+12125550123");
    }
    assert!(errors[0].reasons[0].contains("extension 123 of '(212) 555-0123 x123' dropped"));
}

#[test]
fn impossible_and_invalid_phones_flag_the_row() {
    // The phone is optional here: an invalid one is left out (a warning).
    let bad = |n: &str, why: &str| {
        Err(vec![format!(
            "invalid phone in 'Phone': '{n}' is {why}; imported without it"
        )])
    };
    let foreign = "not a valid US number; if it is a foreign number, \
                   write it in international form such as +33 6 12 34 56 78";
    assert_eq!(
        phones(
            "US",
            &[
                "12",
                "+1 555",
                "call me",
                "+999 1234567",
                "+4420794609581234567",
                "(555) 555-5555",
                "06 12 34 56 78",
                "+1 555 555 5555",
            ]
        ),
        vec![
            bad("12", "not a phone number"),
            bad("+1 555", "not a possible phone number"),
            bad("call me", "not a phone number"),
            bad("+999 1234567", "not a phone number"),
            bad("+4420794609581234567", "not a possible phone number"),
            bad("(555) 555-5555", foreign),
            bad("06 12 34 56 78", foreign),
            bad(
                "+1 555 555 5555",
                "not a valid number in its numbering plan"
            ),
        ]
    );
}

#[test]
fn emails_are_checked_and_stored_as_written() {
    let feed = hr_feed();
    let bytes = hr_file(&[
        "E1,Ann, Ann.Lee+hr@Example.COM ,,,,,",
        "E2,Bob,bob@example,,,,,",
        "E3,Cat,cat@@example.com,,,,,",
        "E4,Dan,dan@.example.com,,,,,",
        "E5,Eve,eve@example.com.,,,,,",
        "E6,Fay,fay.example.com,,,,,",
    ]);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    assert_eq!(c, counts(6, [1, 0, 0, 0, 5, 0], [0, 0]));
    assert_eq!(model.values("E1")[2], "Ann.Lee+hr@Example.COM");
    assert_eq!(
        errors
            .iter()
            .map(|e| e.reasons[0].as_str())
            .collect::<Vec<_>>(),
        vec![
            "invalid email in 'Email': 'bob@example' is not an email address",
            "invalid email in 'Email': 'cat@@example.com' is not an email address",
            "invalid email in 'Email': 'dan@.example.com' is not an email address",
            "invalid email in 'Email': 'eve@example.com.' is not an email address",
            "invalid email in 'Email': 'fay.example.com' is not an email address",
        ]
    );
}

#[test]
fn multi_values_are_split_trimmed_and_deduplicated_into_groups() {
    let feed = hr_feed();
    let bytes = hr_file(&[
        "E1,Ann,ann@example.com,,,Sales,\" night ; first aid;night;; fire \",",
        "E2,Bob,bob@example.com,,,, ; ;,",
        "E3,Cat,cat@example.com,,,Sales,fire,",
    ]);
    let mut model = Model::default();
    let (c, _) = run(&feed, &mut model, &bytes);
    assert_eq!(c, counts(3, [3, 0, 0, 0, 0, 0], [4, 0]));
    assert_eq!(model.values("E1")[6], "night;first aid;fire");
    assert_eq!(model.values("E2")[6], "");
    assert_eq!(
        model.record("E1").groups,
        strings(&[
            "Department: Sales",
            "Tags: fire",
            "Tags: first aid",
            "Tags: night"
        ])
    );
    assert!(model.record("E2").groups.is_empty());
    assert_eq!(
        model.group_counts(),
        vec![
            ("Department: Sales".to_string(), 2),
            ("Tags: fire".to_string(), 2),
            ("Tags: first aid".to_string(), 1),
            ("Tags: night".to_string(), 1),
        ]
    );
    assert_eq!(model.members_of("Tags: fire"), strings(&["E1", "E3"]));

    // A required multi field of separators only is empty.
    let feed = feed_from(&HR.replace(
        "type = \"multi\"\n",
        "type = \"multi\"\n  required = true\n",
    ));
    let mut model = Model::default();
    let (_, errors) = run(
        &feed,
        &mut model,
        &hr_file(&["E1,Ann,ann@example.com,,,,;  ;,"]),
    );
    assert_eq!(
        brief(&errors),
        vec![(
            2,
            Some("E1".to_string()),
            strings(&["required field 'Tags' is empty"])
        )]
    );
}

// ------------------------------------------------------------------------
// Filters
// ------------------------------------------------------------------------

#[test]
fn filters_compare_trimmed_and_case_insensitively() {
    let feed = hr_feed_active_only();
    let bytes = hr_file(&[
        "E1,Ann,ann@example.com,,,,,Active",
        "E2,Bob,bob@example.com,,,,, active ",
        "E3,Cat,cat@example.com,,,,,ACTIVE",
        "E4,Dan,dan@example.com,,,,,Inactive",
        "E5,Eve,eve@example.com,,,,,",
        ",Nobody,,,,,,Inactive",
        "E4,Dan,dan@example.com,,,,,Active",
    ]);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    // Filtered rows are neither errors nor recipients, and do not count as
    // a first occurrence of their ID.
    assert_eq!(c, counts(7, [4, 0, 0, 0, 0, 3], [0, 0]));
    assert!(errors.is_empty());
    assert_eq!(model.ids(), strings(&["E1", "E2", "E3", "E4"]));
    assert_eq!(model.values("E2")[7], "active");
}

#[test]
fn filters_match_accented_values_in_windows_1252_files() {
    let feed = feed_from(&format!(
        "{SIMPLE}\n  [[feed.filter]]\n  field = \"note\"\n  equals = [\"Employé\"]\n"
    ));
    // UTF-8: matches.
    let mut model = Model::default();
    let (c, _) = run(
        &feed,
        &mut model,
        "Employee ID,Name,Note\nE1,Ann,Employé\n".as_bytes(),
    );
    assert_eq!(c, counts(1, [1, 0, 0, 0, 0, 0], [0, 0]));
    // The same file saved by Excel as Windows-1252 must read the same.
    let mut model = Model::default();
    let (c, _) = run(
        &feed,
        &mut model,
        b"Employee ID,Name,Note\nE1,Ann,Employ\xE9\n",
    );
    assert_eq!(c, counts(1, [1, 0, 0, 0, 0, 0], [0, 0]));
    assert_eq!(model.values("E1"), strings(&["E1", "Ann", "Employé"]));
}

#[test]
fn filters_are_case_insensitive_beyond_ascii() {
    let feed = feed_from(&format!(
        "{SIMPLE}\n  [[feed.filter]]\n  field = \"note\"\n  equals = [\"Employé\"]\n"
    ));
    let mut model = Model::default();
    let (c, _) = run(
        &feed,
        &mut model,
        "Employee ID,Name,Note\nE1,Ann,EMPLOYÉ\n".as_bytes(),
    );
    assert_eq!(c, counts(1, [1, 0, 0, 0, 0, 0], [0, 0]));
}

// ------------------------------------------------------------------------
// The diff
// ------------------------------------------------------------------------

#[test]
fn a_second_file_adds_updates_removes_and_keeps() {
    let feed = hr_feed_active_only();
    let mut model = Model::default();
    let (c, _) = run(
        &feed,
        &mut model,
        &hr_file(&[
            "E1,Ann,ann@example.com,,,Sales,,Active",
            "E2,Bob,bob@example.com,,,Sales,,Active",
            "E3,Cat,cat@example.com,,,Ops,,Active",
            "E4,Dan,dan@example.com,,,Ops,,Active",
        ]),
    );
    assert_eq!(c, counts(4, [4, 0, 0, 0, 0, 0], [2, 0]));
    let e4 = model.records["E4"].clone();

    let (c, errors) = run(
        &feed,
        &mut model,
        &hr_file(&[
            "E1,Ann,ann@example.com,,,Sales,,Active",
            "E2,Bob,bob@new.example.com,,,Sales,,Active",
            "E3,Cat,cat@example.com,,,Ops,,Inactive",
            "E4,Dan,dan@example,,,Ops,,Active",
            "E5,Eve,eve@example.com,,,HR,,Active",
            "E6,Fay,fay@example,,,,,Active",
            "E7,Gus,gus@example.com,,,,,Inactive",
        ]),
    );
    // E3 is filtered out, so it is removed; E4 is flagged, so it is kept.
    assert_eq!(c, counts(7, [1, 1, 1, 1, 2, 2], [1, 0]));
    assert_eq!(
        errors
            .iter()
            .map(|e| e.id.clone().unwrap())
            .collect::<Vec<_>>(),
        strings(&["E4", "E6"])
    );
    assert_eq!(model.ids(), strings(&["E1", "E2", "E4", "E5"]));
    assert_eq!(model.values("E2")[2], "bob@new.example.com");
    assert_eq!(model.records["E4"], e4);
    assert_eq!(
        model.group_counts(),
        vec![
            ("Department: HR".to_string(), 1),
            ("Department: Ops".to_string(), 1),
            ("Department: Sales".to_string(), 2),
        ]
    );
    assert_eq!(model.members_of("Department: Ops"), strings(&["E4"]));
}

#[test]
fn a_flagged_row_keeps_the_stored_recipient_byte_for_byte() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(
        &feed,
        &mut model,
        &hr_file(&["E1,Ann,ann@example.com,(212) 555-0123,,Sales,a;b,Active"]),
    );
    let before = model.clone();
    for bad in [
        "E1,,ann@example.com,(212) 555-0123,,Sales,a;b,Active",
        "E1,Ann,ann@example,,,Ops,,Active",
        "E1,Ann,,,,,,",
        "E1,Ann",
        "E1,Ann,,12,,Ops,c,Active",
    ] {
        let (c, errors) = run(&feed, &mut model, &hr_file(&[bad]));
        assert_eq!(c, counts(1, [0, 0, 0, 0, 1, 0], [0, 0]), "{bad}");
        assert_eq!(errors.len(), 1);
        assert_eq!(model, before, "{bad}");
    }
    // An ID that is only in flagged rows (first one bad, repeat good) is
    // kept too; the repeat is not used.
    let (c, _) = run(
        &feed,
        &mut model,
        &hr_file(&["E1,,x,,,,,", "E1,Ann,new@example.com,,,,,"]),
    );
    assert_eq!(c, counts(2, [0, 0, 0, 0, 2, 0], [0, 0]));
    assert_eq!(model, before);
}

#[test]
fn a_new_way_of_writing_the_same_values_is_unchanged() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(
        &feed,
        &mut model,
        &hr_file(&["E1,Ann,ann@example.com,(212) 555-0123,,Sales,a;b,Active"]),
    );
    let record = model.records["E1"].clone();
    let hash = model.hashes["E1"];
    let second = hr_file(&["E1, Ann ,ann@example.com,+1 212 555 0123,,Sales , a; b;a,Active"]);
    let diff = diff_of(&feed, &model, &second);
    assert_eq!(diff.work.len(), 1, "the raw text changed: validated again");
    let (c, _) = run(&feed, &mut model, &second);
    assert_eq!(c, counts(1, [0, 0, 0, 1, 0, 0], [0, 0]));
    assert_eq!(model.records["E1"], record);
    assert_ne!(model.hashes["E1"], hash, "the new raw hash is kept");
    // Now the raw hash matches: nothing to read again.
    let diff = diff_of(&feed, &model, &second);
    assert_eq!((diff.unchanged, diff.work.len()), (1, 0));
    let (c, _) = run(&feed, &mut model, &second);
    assert_eq!(c, counts(1, [0, 0, 0, 1, 0, 0], [0, 0]));
}

#[test]
fn a_mapping_change_validates_every_row_again() {
    let before = hr_feed();
    let bytes = hr_file(&[
        "E1,Ann,ann@example.com,,,Sales,,Active",
        "E2,Bob Longname,bob@example.com,,,Ops,,Active",
    ]);
    let mut model = Model::default();
    run(&before, &mut model, &bytes);
    let e2 = model.records["E2"].clone();
    // Same file, same mapping: nothing to validate.
    let diff = diff_of(&before, &model, &bytes);
    assert_eq!((diff.unchanged, diff.work.len()), (2, 0));

    // Names now at most 5 characters, and status becomes a group field.
    let after = feed_from(
        &HR.replace("column = \"Name\"", "column = \"Name\"\n  max_length = 5")
            .replace("\"tags\"]", "\"tags\", \"status\"]"),
    );
    assert_ne!(after.mapping_fingerprint(), before.mapping_fingerprint());
    let diff = diff_of(&after, &model, &bytes);
    assert_eq!((diff.unchanged, diff.work.len()), (0, 2));
    let (c, errors) = run(&after, &mut model, &bytes);
    assert_eq!(c, counts(2, [0, 1, 0, 0, 1, 0], [1, 0]));
    assert_eq!(
        brief(&errors),
        vec![(
            3,
            Some("E2".to_string()),
            strings(&["value too long in 'Name': 12 characters, at most 5"])
        )]
    );
    assert_eq!(
        model.record("E1").groups,
        strings(&["Department: Sales", "Status: Active"])
    );
    assert_eq!(model.records["E2"], e2, "flagged: kept as it was");
    assert_eq!(
        model.fingerprint,
        Some(run_fingerprint(&after, Encoding::Utf8))
    );

    // A feed never imported has no fingerprint: nothing is trusted either.
    let mut fresh = model.clone();
    fresh.fingerprint = None;
    let diff = diff_of(&after, &fresh, &bytes);
    assert_eq!((diff.unchanged, diff.work.len()), (0, 2));
}

#[test]
fn groups_are_created_moved_and_removed_when_empty() {
    let feed = hr_feed();
    let mut model = Model::default();
    let (c, _) = run(
        &feed,
        &mut model,
        &hr_file(&[
            "E1,Ann,ann@example.com,,,Sales,,",
            "E2,Bob,bob@example.com,,,Sales,,",
            "E3,Cat,cat@example.com,,,Ops,x,",
        ]),
    );
    assert_eq!(c, counts(3, [3, 0, 0, 0, 0, 0], [3, 0]));
    assert_eq!(
        model.group_counts(),
        vec![
            ("Department: Ops".to_string(), 1),
            ("Department: Sales".to_string(), 2),
            ("Tags: x".to_string(), 1),
        ]
    );
    // E3 moves to Sales (Ops and Tags: x are left empty), E2 moves to HR.
    let (c, _) = run(
        &feed,
        &mut model,
        &hr_file(&[
            "E1,Ann,ann@example.com,,,Sales,,",
            "E2,Bob,bob@example.com,,,HR,,",
            "E3,Cat,cat@example.com,,,Sales,,",
        ]),
    );
    assert_eq!(c, counts(3, [0, 2, 0, 1, 0, 0], [1, 2]));
    assert_eq!(
        model.group_counts(),
        vec![
            ("Department: HR".to_string(), 1),
            ("Department: Sales".to_string(), 2),
        ]
    );
    assert_eq!(
        model.members_of("Department: Sales"),
        strings(&["E1", "E3"])
    );
    // Removing everyone in HR removes the group.
    let (c, _) = run(
        &feed,
        &mut model,
        &hr_file(&[
            "E1,Ann,ann@example.com,,,Sales,,",
            "E3,Cat,cat@example.com,,,Sales,,",
        ]),
    );
    assert_eq!(c, counts(2, [0, 0, 1, 2, 0, 0], [0, 1]));
    assert_eq!(
        model.group_counts(),
        vec![("Department: Sales".to_string(), 2)]
    );
}

#[test]
fn re_processing_the_same_file_changes_nothing() {
    let feed = hr_feed_active_only();
    let bytes = hr_file(&[
        "E1,Ann,ann@example.com,(212) 555-0123,,Sales,a;b,Active",
        "E2,Bob,bob@example,,,Sales,,Active",
        "E3,Cat,cat@example.com,,,Ops,,Inactive",
        ",Dan,dan@example.com,,,,,Active",
    ]);
    let mut model = Model::default();
    let (first, _) = run(&feed, &mut model, &bytes);
    assert_eq!(first, counts(4, [1, 0, 0, 0, 2, 1], [3, 0]));
    let before = model.clone();
    let (again, _) = run(&feed, &mut model, &bytes);
    assert_eq!(again, counts(4, [0, 0, 0, 1, 2, 1], [0, 0]));
    assert_eq!(again.changes(), 0);
    assert_eq!(model, before);
}

// ------------------------------------------------------------------------
// Delete guard on real diffs
// ------------------------------------------------------------------------

fn id_file(ids: std::ops::Range<u32>) -> Vec<u8> {
    let mut text = "Employee ID,Name,Note\n".to_string();
    for i in ids {
        text.push_str(&format!("E{i:03},Name {i},\n"));
    }
    text.into_bytes()
}

fn verdict(feed: &Feed, model: &Model, bytes: &[u8]) -> Verdict {
    judge_delete_guard(&diff_of(feed, model, bytes), feed.delete_threshold)
}

fn hundred(feed: &Feed) -> Model {
    let mut model = Model::default();
    assert_eq!(verdict(feed, &model, &id_file(0..100)), Verdict::Proceed);
    run(feed, &mut model, &id_file(0..100));
    assert_eq!(model.records.len(), 100);
    model
}

fn held(reason: &str) -> Verdict {
    Verdict::Hold {
        reason: reason.to_string(),
    }
}

#[test]
fn delete_guard_percent() {
    let feed = simple_feed();
    let model = hundred(&feed);
    assert_eq!(verdict(&feed, &model, &id_file(10..100)), Verdict::Proceed);
    assert_eq!(
        verdict(&feed, &model, &id_file(11..100)),
        held("would remove 11 of 100 recipients, 11.0% > 10%")
    );
    // New IDs do not offset removals.
    assert_eq!(
        verdict(&feed, &model, &id_file(11..200)),
        held("would remove 11 of 100 recipients, 11.0% > 10%")
    );
    // A flagged (wrong-shaped) row still protects its ID.
    let mut text = String::from_utf8(id_file(11..100)).unwrap();
    text.push_str("E000,a,b,c\n");
    assert_eq!(verdict(&feed, &model, text.as_bytes()), Verdict::Proceed);
}

#[test]
fn delete_guard_absolute_count() {
    let feed = simple_feed_with("delete_threshold = 5");
    let model = hundred(&feed);
    assert_eq!(verdict(&feed, &model, &id_file(5..100)), Verdict::Proceed);
    assert_eq!(
        verdict(&feed, &model, &id_file(6..100)),
        held("would remove 6 of 100 recipients, 6 > 5 allowed")
    );
}

#[test]
fn delete_guard_empty_file_and_empty_feed() {
    let feed = simple_feed_with("delete_threshold = \"100%\"");
    let model = hundred(&feed);
    let header_only = b"Employee ID,Name,Note\n";
    assert_eq!(
        verdict(&feed, &model, header_only),
        held("the file has no data rows and the feed has 100 recipients; confirm only if the feed really is to be emptied")
    );
    // 100% allows removing everyone when the file has rows.
    assert_eq!(verdict(&feed, &model, &id_file(500..501)), Verdict::Proceed);
    // An empty feed is never held, not even by an empty file.
    let feed = simple_feed_with("delete_threshold = 0");
    assert_eq!(
        verdict(&feed, &Model::default(), header_only),
        Verdict::Proceed
    );
    assert_eq!(
        verdict(&feed, &Model::default(), &id_file(0..3)),
        Verdict::Proceed
    );
}

// ------------------------------------------------------------------------
// Property tests
// ------------------------------------------------------------------------

const PROP_FEED: &str = r#"
[[feed]]
name = "prop"
require_channel = true
group_fields = ["department", "tags"]
  [[feed.field]]
  name = "id"
  column = "ID"
  type = "id"
  [[feed.field]]
  name = "name"
  column = "Name"
  required = true
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
  [[feed.field]]
  name = "tags"
  column = "Tags"
  type = "multi"
  separator = ";"
  [[feed.field]]
  name = "status"
  column = "Status"
  [[feed.filter]]
  field = "status"
  equals = ["Active"]
"#;

const PROP_HEADER: &str = "ID,Name,Email,Mobile,Department,Tags,Status";

const IDS: &[&str] = &["", "  ", "A", "B", "C", "D", "E", " A", "B "];
/// (raw, valid).
const NAMES: &[(&str, bool)] = &[
    ("Ann", true),
    (" Bob ", true),
    ("Doe, Jane", true),
    ("Ann\nLee", true),
    ("say \"hi\"", true),
    ("Zoë", true),
    ("", false),
    ("bad\u{7}", false),
];
/// (raw, stored value or None when invalid).
const EMAILS: &[(&str, Option<&str>)] = &[
    ("", Some("")),
    ("a@example.com", Some("a@example.com")),
    (" b@example.org ", Some("b@example.org")),
    ("bob@example", None),
    ("x", None),
];
const PHONES: &[(&str, Option<&str>)] = &[
    ("", Some("")),
    ("(212) 555-0123", Some("+12125550123")),
    ("+1 212 555 0123", Some("+12125550123")),
    ("+44 20 7946 0958", Some("+442079460958")),
    ("12", None),
    ("call me", None),
];
const DEPTS: &[&str] = &["", "Sales", "Ops", " Sales "];
/// (raw, stored value).
const TAGS: &[(&str, &str)] = &[("", ""), ("a;b", "a;b"), ("b; a ;a", "b;a"), (";", "")];
const STATUSES: &[&str] = &["Active", " active ", "ACTIVE", "Inactive", ""];

#[derive(Debug, Clone)]
struct PropRow {
    id: usize,
    name: usize,
    email: usize,
    phone: usize,
    dept: usize,
    tags: usize,
    status: usize,
    /// 0: as many cells as the header; -1: one fewer; 1: one more.
    shape: i8,
}

impl PropRow {
    fn id(&self) -> &'static str {
        IDS[self.id].trim()
    }

    fn cells(&self) -> Vec<&'static str> {
        let mut cells = vec![
            IDS[self.id],
            NAMES[self.name].0,
            EMAILS[self.email].0,
            PHONES[self.phone].0,
            DEPTS[self.dept],
            TAGS[self.tags].0,
            STATUSES[self.status],
        ];
        match self.shape {
            -1 => {
                cells.pop();
            }
            1 => cells.push("extra"),
            _ => {}
        }
        cells
    }

    fn filtered(&self) -> bool {
        self.shape == 0 && !STATUSES[self.status].trim().eq_ignore_ascii_case("active")
    }

    /// The stored record of this row when it is valid (reference model):
    /// an invalid email or phone is left out (a warning), and an existing
    /// person (`stored`) keeps the stored value.
    fn expected_record(&self, stored: Option<&Record>) -> Option<Record> {
        let (email, phone) = (EMAILS[self.email].1, PHONES[self.phone].1);
        let has_channel = !email.unwrap_or("").is_empty() || !phone.unwrap_or("").is_empty();
        if self.shape != 0 || !NAMES[self.name].1 || !has_channel {
            return None;
        }
        let kept = |i: usize| {
            stored
                .and_then(|r| r.values.get(i))
                .map_or("", |v| v.as_str())
        };
        let email = email.unwrap_or_else(|| kept(2));
        let phone = phone.unwrap_or_else(|| kept(3));
        let dept = DEPTS[self.dept].trim();
        let tags = TAGS[self.tags].1;
        let mut groups = Vec::new();
        if !dept.is_empty() {
            groups.push(format!("Department: {dept}"));
        }
        for t in tags.split(';').filter(|t| !t.is_empty()) {
            groups.push(format!("Tags: {t}"));
        }
        groups.sort();
        Some(Record {
            values: vec![
                self.id().to_string(),
                NAMES[self.name].0.trim().to_string(),
                email.to_string(),
                phone.to_string(),
                dept.to_string(),
                tags.to_string(),
                STATUSES[self.status].trim().to_string(),
            ],
            groups,
        })
    }
}

fn prop_row() -> impl Strategy<Value = PropRow> {
    (
        0..IDS.len(),
        0..NAMES.len(),
        0..EMAILS.len(),
        0..PHONES.len(),
        0..DEPTS.len(),
        0..TAGS.len(),
        0..STATUSES.len(),
        prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
    )
        .prop_map(
            |(id, name, email, phone, dept, tags, status, shape)| PropRow {
                id,
                // A value over lines in a row of the wrong width fails the
                // whole file (a quote that swallowed a line looks so).
                name: if shape != 0 && NAMES[name].0.contains('\n') {
                    0
                } else {
                    name
                },
                email,
                phone,
                dept,
                tags,
                status,
                shape,
            },
        )
}

fn prop_rows() -> impl Strategy<Value = Vec<PropRow>> {
    proptest::collection::vec(prop_row(), 0..14)
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

fn prop_file(rows: &[PropRow], crlf: bool) -> Vec<u8> {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut text = format!("{PROP_HEADER}{eol}");
    for row in rows {
        let cells: Vec<String> = row.cells().into_iter().map(csv_cell).collect();
        text.push_str(&cells.join(","));
        text.push_str(eol);
    }
    text.into_bytes()
}

/// A starting store: the result of applying some earlier files, with the
/// fingerprint possibly lost (as after a mapping change).
fn prop_start() -> impl Strategy<Value = (Vec<Vec<PropRow>>, bool)> {
    (proptest::collection::vec(prop_rows(), 0..3), any::<bool>())
}

fn build_start(feed: &Feed, files: &[Vec<PropRow>], forget_fingerprint: bool) -> Model {
    let mut model = Model::default();
    for rows in files {
        run(feed, &mut model, &prop_file(rows, false));
    }
    if forget_fingerprint {
        model.fingerprint = Some(0xDEAD_BEEF);
    }
    model
}

/// The naive reference: valid first-occurrence unfiltered rows, and the
/// stored record of every other ID in an unfiltered row.
fn expected_records(rows: &[PropRow], before: &Model) -> BTreeMap<String, Vec<u8>> {
    let mut first: BTreeMap<&str, Option<Record>> = BTreeMap::new();
    for row in rows {
        if row.filtered() || row.id().is_empty() || first.contains_key(row.id()) {
            continue;
        }
        let stored = before
            .records
            .get(row.id())
            .map(|bytes| Record::decode(bytes).expect("a stored record"));
        first.insert(row.id(), row.expected_record(stored.as_ref()));
    }
    first
        .into_iter()
        .filter_map(|(id, record)| {
            let bytes = match record {
                Some(r) => r.encode(),
                None => before.records.get(id)?.clone(),
            };
            Some((id.to_string(), bytes))
        })
        .collect()
}

const SEED_FILE: &str = "ID,Name,Email,Mobile,Department,Tags,Status\n\
A,Ann,a@example.com,,Sales,a;b,Active\n\
B,Bob,,(212) 555-0123,Ops,,Active\n";

/// Bytes mostly from `alphabet` (and now and then any byte), generated
/// cheaply: a `prop_oneof!` per byte is slow in a debug build.
fn bytes_from(
    alphabet: &'static [u8],
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len).prop_map(move |raw| {
        raw.into_iter()
            .map(|b| match alphabet.get(b as usize % 64) {
                Some(&a) => a,
                None if b >= 240 => b,
                None => alphabet[b as usize % alphabet.len()],
            })
            .collect()
    })
}

fn prop_feed() -> Feed {
    feed_from(PROP_FEED)
}

proptest! {
    // No regression files: a failure is reported with its minimal input.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    })]

    #[test]
    fn prop_store_after_apply_matches_the_reference(
        start in prop_start(),
        rows in prop_rows(),
        crlf in any::<bool>(),
    ) {
        let feed = prop_feed();
        let mut model = build_start(&feed, &start.0, start.1);
        let before = model.clone();
        let bytes = prop_file(&rows, crlf);
        let (c, errors) = run(&feed, &mut model, &bytes);
        prop_assert_eq!(&model.records, &expected_records(&rows, &before));
        model.assert_keys_are_ids(&feed);
        prop_assert_eq!(c.rows, rows.len() as u64);
        prop_assert_eq!(c.filtered, rows.iter().filter(|r| r.filtered()).count() as u64);
        let removed = before.records.keys().filter(|id| !model.records.contains_key(*id)).count();
        prop_assert_eq!(c.removed, removed as u64);
        prop_assert_eq!(errors.iter().filter(|e| !e.warning).count() as u64, c.flagged);
    }

    #[test]
    fn prop_row_errors_name_the_line_each_row_starts_on(
        rows in prop_rows(),
        crlf in any::<bool>(),
    ) {
        let feed = prop_feed();
        let mut model = Model::default();
        let (_, errors) = run(&feed, &mut model, &prop_file(&rows, crlf));
        let mut line = 2u32;
        let mut starts = Vec::new();
        for row in &rows {
            starts.push(line);
            line += row.cells().iter().map(|c| c.matches('\n').count() as u32).sum::<u32>() + 1;
        }
        for e in &errors {
            prop_assert!(starts.contains(&e.line), "error line {} is no row's start {:?}", e.line, starts);
        }
    }

    #[test]
    fn prop_the_same_file_twice_changes_nothing_the_second_time(
        start in prop_start(),
        rows in prop_rows(),
        crlf in any::<bool>(),
    ) {
        let feed = prop_feed();
        let mut model = build_start(&feed, &start.0, start.1);
        let bytes = prop_file(&rows, crlf);
        let (first, first_errors) = run(&feed, &mut model, &bytes);
        let after_first = model.clone();
        let (second, second_errors) = run(&feed, &mut model, &bytes);
        prop_assert_eq!(second, ApplyCounts {
            rows: first.rows,
            unchanged: first.added + first.updated + first.unchanged,
            flagged: first.flagged,
            warnings: first.warnings,
            filtered: first.filtered,
            ..ApplyCounts::default()
        });
        prop_assert_eq!(brief(&first_errors), brief(&second_errors));
        prop_assert_eq!(model, after_first);
    }

    #[test]
    fn prop_row_order_does_not_change_the_store(
        (start, rows, shuffled) in (prop_start(), prop_rows()).prop_flat_map(|(start, rows)| {
            // One row per ID (empty IDs may repeat): no duplicate to choose.
            let mut seen = BTreeSet::new();
            let rows: Vec<PropRow> = rows
                .into_iter()
                .filter(|r| r.id().is_empty() || seen.insert(r.id()))
                .collect();
            (Just(start), Just(rows.clone()), Just(rows).prop_shuffle())
        }),
    ) {
        let feed = prop_feed();
        let start = build_start(&feed, &start.0, start.1);
        let (mut a, mut b) = (start.clone(), start);
        let (ca, ea) = run(&feed, &mut a, &prop_file(&rows, false));
        let (cb, eb) = run(&feed, &mut b, &prop_file(&shuffled, false));
        prop_assert_eq!(ca, cb);
        prop_assert_eq!(a, b);
        let reasons = |errors: &[RowError]| {
            let mut r: Vec<_> = errors.iter().map(|e| (e.id.clone(), e.reasons.clone())).collect();
            r.sort();
            r
        };
        prop_assert_eq!(reasons(&ea), reasons(&eb));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let feed = prop_feed();
        let mut model = Model::default();
        run(&feed, &mut model, SEED_FILE.as_bytes());
        let _ = try_run(&feed, &mut model, &bytes);
    }

    #[test]
    fn prop_arbitrary_rows_after_a_valid_header_never_panic(
        body in bytes_from(b",\"\n\r; AB1@+\xE9\xC3\x00", 0..800),
        seed in proptest::collection::vec(prop_row(), 0..6),
    ) {
        let feed = prop_feed();
        let mut model = Model::default();
        run(&feed, &mut model, &prop_file(&seed, false));
        let mut bytes = format!("{PROP_HEADER}\n").into_bytes();
        bytes.extend_from_slice(&body);
        // `try_run` checks the counts, the error order and the store's
        // consistency; a damaged file is refused as a whole, with a reason,
        // and leaves the store as it was.
        let before = model.clone();
        if let Err(rejection) = try_run(&feed, &mut model, &bytes) {
            prop_assert!(!rejection.reason.is_empty());
            prop_assert_eq!(model.hashes.clone(), before.hashes.clone());
        }
    }

    #[test]
    fn prop_block_cuts_agree_with_the_csv_crate(
        body in bytes_from(b"aaaa,,\"\"\n\n\r", 0..300),
        limits in proptest::collection::vec(any::<prop::sample::Index>(), 1..8),
    ) {
        if !body.is_empty() {
            for limit in limits {
                check_cut(&body, 1 + limit.index(body.len()));
            }
        }
    }
}

#[test]
fn a_windows_1252_header_makes_the_file_windows_1252() {
    let feed = simple_feed();
    let bytes = b"Employee ID,Name,Note \xB0C\nE1,Ann,x\n";
    let s = scan(&feed, bytes);
    assert_eq!(s.encoding, Encoding::Windows1252);
    assert_eq!(s.header.columns[2], "Note \u{b0}C");
}

// ------------------------------------------------------------------------
// Real-world files: line ends, damage, encodings, warnings, guards
// ------------------------------------------------------------------------

fn hr_rows(n: u32) -> Vec<String> {
    (1..=n)
        .map(|i| format!("E{i:03},Name {i},p{i}@example.com,+1212555{i:04},,Sales,,Active"))
        .collect()
}

fn hr_file_with(rows: &[String], eol: &str) -> Vec<u8> {
    let mut out = HR_HEADER.replace('\n', eol);
    for r in rows {
        out.push_str(r);
        out.push_str(eol);
    }
    out.into_bytes()
}

#[test]
fn cr_only_and_mixed_line_ends_read_like_lf() {
    let feed = hr_feed();
    let mut rows = hr_rows(40);
    rows[7] = "E008,,p8@example.com,,,,,Active".into(); // flagged: no name
    let mut lf = Model::default();
    let (want, want_errors) = run(&feed, &mut lf, &hr_file_with(&rows, "\n"));
    assert_eq!(want.added, 39);
    for eol in ["\r", "\r\n"] {
        let mut model = Model::default();
        let (c, errors) = run(&feed, &mut model, &hr_file_with(&rows, eol));
        assert_eq!((c, brief(&errors)), (want, brief(&want_errors)), "{eol:?}");
        assert_eq!(model.records, lf.records);
    }
    // Mixed within one file, with a quoted value over a CR-only line break.
    let mut mixed = HR_HEADER.to_string();
    for (i, r) in rows.iter().enumerate() {
        mixed.push_str(r);
        mixed.push_str(["\n", "\r", "\r\n"][i % 3]);
    }
    mixed.push_str("E900,\"Two\rlines\",x@example.com,,,,,Active\r");
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, mixed.as_bytes());
    assert_eq!((c.added, brief(&errors)), (40, brief(&want_errors)));
    assert_eq!(model.values("E900")[1], "Two\rlines");
}

#[test]
fn a_quote_left_open_fails_the_file_and_names_where_it_opened() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(&feed, &mut model, &hr_file_with(&hr_rows(300), "\n"));
    let before = model.clone();
    // Near the end: the rest of the file would be one value.
    let mut rows = hr_rows(300);
    rows[279] = rows[279].replace("Name 280", "\"Name 280");
    let reason = try_run(&feed, &mut model, &hr_file_with(&rows, "\n"))
        .err()
        .map(|r| r.reason)
        .unwrap_or_default();
    assert!(
        reason.contains("line 281, column 2 ('Name') is never closed"),
        "{reason}"
    );
    // In the middle, closed again by a later stray quote: the records in
    // between would be one value, and the people on them removed.
    let mut rows = hr_rows(300);
    rows[99] = rows[99].replace("Name 100", "\"Name 100");
    rows[104] = rows[104].replace("Name 105", "Name 105\"");
    let reason = try_run(&feed, &mut model, &hr_file_with(&rows, "\r\n"))
        .err()
        .map(|r| r.reason)
        .unwrap_or_default();
    assert!(
        reason.contains("opened on line 101, column 2 ('Name') runs on to line 106"),
        "{reason}"
    );
    assert_eq!(model, before, "nothing changed");
}

#[test]
fn a_cut_off_last_line_fails_the_file() {
    let feed = hr_feed();
    let bytes = hr_file_with(&hr_rows(20), "\n");
    let cut = &bytes[..bytes.len() - 30];
    let reason = rejection(&feed, cut);
    assert!(reason.contains("looks cut off"), "{reason}");
    assert!(reason.contains("line 21"), "{reason}");
    // A last line without a line break but whole is fine.
    let whole = &bytes[..bytes.len() - 1];
    assert_eq!(scan(&feed, whole).rows_read, 20);
}

#[test]
fn a_record_over_the_limit_fails_without_reading_the_rest_as_one_row() {
    let feed = hr_feed();
    let mut rows = hr_rows(10);
    rows[2] = rows[2].replace("Name 3", "\"Name 3");
    let mut bytes = hr_file_with(&rows, "\n");
    while bytes.len() < 9 << 20 {
        bytes.extend_from_slice(b"E999,Filler,,,,,,\n");
    }
    let reason = rejection(&feed, &bytes);
    assert!(reason.contains("longer than 4 MiB"), "{reason}");
    assert!(reason.contains("line 4, column 2 ('Name')"), "{reason}");
}

#[test]
fn a_utf8_file_with_a_few_bad_bytes_stays_utf8_and_flags_those_rows() {
    let feed = hr_feed();
    let good = "Employee ID,Name,Email,Mobile,Office Phone,Department,Tags,Status\n\
        E1,José,a@example.com,,,Sales,,Active\n\
        E2,Zoë,b@example.com,,,Sales,,Active\n\
        E3,Renée,c@example.com,,,Sales,,Active\n";
    let mut model = Model::default();
    run(&feed, &mut model, good.as_bytes());
    // The next file: one name typed in Windows-1252 by another tool.
    let mut bad = good
        .replace("Zoë", "Zoë Ann")
        .replace("Renée", "René")
        .into_bytes();
    let at = bad
        .windows(5)
        .position(|w| w == "René".as_bytes())
        .expect("René");
    bad.splice(at + 3..at + 5, [0xE9]);
    let input = bad.clone();
    let s = scan_file(&input, &feed, &|_| {}).expect("read");
    assert_eq!(s.encoding, Encoding::Utf8);
    let (c, errors) = run(&feed, &mut model, &bad);
    assert_eq!((c.updated, c.flagged), (1, 1));
    assert!(
        errors[0].reasons[0].contains("not UTF-8 (0xE9)"),
        "{:?}",
        errors
    );
    assert_eq!(model.values("E2")[1], "Zoë Ann", "decoded as UTF-8");
    assert_eq!(model.values("E3")[1], "Renée", "kept as stored");
    // The corrected file the next day fixes the flagged row.
    let fixed = good.replace("Renée", "René");
    let (c, errors) = run(&feed, &mut model, fixed.as_bytes());
    assert!(errors.is_empty());
    assert_eq!(model.values("E3")[1], "René");
    assert_eq!(c.updated, 2);
}

#[test]
fn a_later_run_in_another_encoding_reads_unchanged_rows_again() {
    let feed = hr_feed();
    let mut model = Model::default();
    // A Windows-1252 file: "Ã©" stays as the two characters it is there.
    let cp1252 = b"Employee ID,Name,Email,Mobile,Office Phone,Department,Tags,Status\n\
        E1,Jos\xC3\xA9,a@example.com,,,Sales,,Active\n\
        E2,Ren\xE9e,b@example.com,,,Sales,,Active\n\
        E3,Zo\xEB,c@example.com,,,Sales,,Active\n";
    run(&feed, &mut model, cp1252);
    assert_eq!(model.values("E1")[1], "JosÃ©");
    // The same bytes for E1 in a file that is UTF-8: E1 is José now.
    let utf8 = "Employee ID,Name,Email,Mobile,Office Phone,Department,Tags,Status\n\
        E1,José,a@example.com,,,Sales,,Active\n\
        E2,Renée,b@example.com,,,Sales,,Active\n\
        E3,Zoë,c@example.com,,,Sales,,Active\n";
    let (c, _) = run(&feed, &mut model, utf8.as_bytes());
    assert_eq!(model.values("E1")[1], "José");
    assert_eq!((c.updated, c.unchanged), (1, 2));
}

#[test]
fn utf16_files_are_read_through_their_utf8_text() {
    let feed = hr_feed();
    let text = "Employee ID\tName\tEmail\tMobile\tOffice Phone\tDepartment\tTags\tStatus\r\n\
        E1\tJosé\ta@example.com\t\t\tSales\t\tActive\r\nE2\t李\tb@example.com\t\t\tOps\t\tActive\r\n";
    for (order, bom, big) in [
        (Encoding::Utf16Le, [0xFF, 0xFE], false),
        (Encoding::Utf16Be, [0xFE, 0xFF], true),
    ] {
        let mut bytes = bom.to_vec();
        for unit in text.encode_utf16() {
            let b = if big {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            bytes.extend_from_slice(&b);
        }
        assert_eq!(super::utf16_byte_order(&bytes), Some(order));
        let mut utf8 = Vec::new();
        super::transcode_utf16(&bytes, order, &mut utf8).expect("transcode");
        assert_eq!(utf8, text.as_bytes());
        let mut model = Model::default();
        let (c, errors) = run(&feed, &mut model, &utf8);
        assert!(errors.is_empty());
        assert_eq!(c.added, 2);
        assert_eq!(model.values("E2")[1], "李");
    }
}

#[test]
fn files_that_are_not_csv_are_named() {
    let feed = hr_feed();
    for (bytes, words) in [
        (
            &b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml xl/workbook.xml"[..],
            "Excel workbook (.xlsx)",
        ),
        (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\x00\x00", "Excel 97-2003"),
        (b"\x1F\x8B\x08\x00\x00\x00", "gzip"),
        (b"%PDF-1.4\n%\xE2\xE3", "PDF"),
        (
            b"E\x00m\x00p\x00l\x00o\x00y\x00e\x00e\x00 \x00I\x00D\x00,\x00",
            "UTF-16 text (little-endian)",
        ),
    ] {
        let reason = rejection(&feed, bytes);
        assert!(reason.contains(words), "{reason}");
        assert!(
            !reason.contains('\0') && !reason.contains('\u{1b}'),
            "{reason:?}"
        );
    }
}

#[test]
fn two_columns_for_one_field_fail_naming_both() {
    let feed = hr_feed();
    let reason = rejection(
        &feed,
        b"Employee ID,Name,Email,Mobile,EmpID\nE1,Ann,a@example.com,,E1\n",
    );
    assert!(
        reason.contains(
            "columns 1 ('Employee ID') and 5 ('EmpID') both map to the field 'employee_id'"
        ),
        "{reason}"
    );
    let reason = rejection(&feed, b"Employee ID,Name,Name\nE1,Ann,Bob\n");
    assert!(
        reason.contains("columns 2 ('Name') and 3 ('Name')"),
        "{reason}"
    );
}

#[test]
fn an_invalid_optional_value_is_a_warning_and_keeps_the_person_reachable() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(
        &feed,
        &mut model,
        &hr_file(&["E1,Ann,ann@example.com,+12125550101,,Sales,,Active"]),
    );
    let (c, errors) = run(
        &feed,
        &mut model,
        &hr_file(&[
            // Existing: the bad email keeps the stored one; the mobile changes.
            "E1,Ann,ann@example,+12125550199,,Ops,,Active",
            // New: imported without the bad email, reachable by SMS.
            "E2,Bob,bob@,+12125550102,,Sales,,Active",
            // Only an invalid channel: flagged.
            "E3,Cy,cy@,,,Sales,,Active",
        ]),
    );
    assert_eq!(
        c,
        ApplyCounts {
            warnings: 2,
            ..counts(3, [1, 1, 0, 0, 1, 0], [1, 0])
        }
    );
    assert_eq!(
        model.values("E1"),
        strings(&[
            "E1",
            "Ann",
            "ann@example.com",
            "+12125550199",
            "",
            "Ops",
            "",
            "Active"
        ])
    );
    assert_eq!(model.values("E2")[2], "");
    assert_eq!(model.values("E2")[3], "+12125550102");
    let warned: Vec<_> = errors
        .iter()
        .filter(|e| e.warning)
        .map(|e| e.line)
        .collect();
    assert_eq!(warned, vec![2, 3]);
    assert!(
        errors[0].reasons[0].ends_with("imported without it"),
        "{errors:?}"
    );
    // The same file again: still warned about, nothing changes.
    let again = hr_file(&[
        "E1,Ann,ann@example,+12125550199,,Ops,,Active",
        "E2,Bob,bob@,+12125550102,,Sales,,Active",
        "E3,Cy,cy@,,,Sales,,Active",
    ]);
    let (c, _) = run(&feed, &mut model, &again);
    assert_eq!((c.unchanged, c.warnings, c.changes()), (2, 2, 0));
}

/// judge_clearing after the file is applied to `model`, counting stored
/// values in `before`.
fn clearing(feed: &Feed, before: &Model, bytes: &[u8]) -> Vec<String> {
    let input: Vec<u8> = bytes.to_vec();
    let scan = scan_file(&input, feed, &|_| {}).expect("read");
    let header = scan.header.clone();
    let fingerprint = run_fingerprint(feed, scan.encoding);
    let file = FileContext {
        input: &input,
        feed,
        header: &header,
        encoding: scan.encoding,
        line_word: "line",
    };
    let diff = diff_scan(scan, before.index(), fingerprint);
    let mut model = before.clone();
    let applied = apply_diff(&file, diff, &mut model, &mut Errors::default()).expect("apply");
    let mut filled = |field: usize, limit: u64| -> Result<u64, ()> {
        let n = before
            .records
            .values()
            .filter(|r| {
                Record::value_at(r, field)
                    .ok()
                    .flatten()
                    .is_some_and(|v| !v.is_empty())
            })
            .count() as u64;
        Ok(n.min(limit))
    };
    judge_clearing(feed, &header, &applied.cleared, &mut filled).expect("judge")
}

#[test]
fn a_renamed_column_holds_the_run_and_says_what_confirming_clears() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(&feed, &mut model, &hr_file_with(&hr_rows(4), "\n"));
    let renamed = String::from_utf8(hr_file_with(&hr_rows(4), "\n"))
        .unwrap_or_default()
        .replacen("Mobile", "Cell", 1);
    let reasons = clearing(&feed, &model, renamed.as_bytes());
    assert_eq!(
        reasons,
        strings(&["the column 'Mobile' (field 'mobile') is missing from the file, whose header has: Employee ID, Name, Email, Cell, Office Phone, Department, Tags, Status; confirming clears that field for everyone: 4 stored values"])
    );
}

#[test]
fn emptying_a_channel_field_beyond_the_clear_threshold_is_held() {
    let mut model = Model::default();
    let feed = hr_feed();
    run(&feed, &mut model, &hr_file_with(&hr_rows(100), "\n"));
    let without_mobile = |n: usize| {
        let rows: Vec<String> = hr_rows(100)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if i < n {
                    let cells: Vec<&str> = r.split(',').collect();
                    format!(
                        "{},{},{},,{}",
                        cells[0],
                        cells[1],
                        cells[2],
                        cells[4..].join(",")
                    )
                } else {
                    r
                }
            })
            .collect();
        hr_file_with(&rows, "\n")
    };
    assert!(
        clearing(&feed, &model, &without_mobile(10)).is_empty(),
        "10% is allowed"
    );
    assert_eq!(
        clearing(&feed, &model, &without_mobile(11)),
        strings(&[
            "would empty 11 of 100 stored values of 'Mobile' (a delivery channel), 11.0% > 10%"
        ])
    );
    let count = feed_from(&HR.replace(
        "require_channel = true",
        "require_channel = true\nclear_threshold = 5",
    ));
    assert_eq!(
        clearing(&count, &model, &without_mobile(6)),
        strings(&["would empty 6 stored values of 'Mobile' (a delivery channel), 6 > 5 allowed"])
    );
    let off = feed_from(&HR.replace(
        "require_channel = true",
        "require_channel = true\nclear_threshold = \"none\"",
    ));
    assert!(clearing(&off, &model, &without_mobile(90)).is_empty());
}

#[test]
fn a_bad_byte_after_the_first_block_keeps_a_utf8_file_utf8() {
    // The evidence of valid blocks counts although pass 1 found them valid.
    let feed = simple_feed();
    let mut bytes = "Employee ID,Name,Note\n".as_bytes().to_vec();
    let mut i = 0;
    while bytes.len() < (4 << 20) + 4096 {
        bytes.extend_from_slice(format!("E{i:05},Zoë {i},{}\n", "x".repeat(200)).as_bytes());
        i += 1;
    }
    bytes.extend_from_slice(b"E99999,Ren\xE9e,y\n");
    let s = scan(&feed, &bytes);
    assert_eq!(s.encoding, Encoding::Utf8);
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    assert_eq!((c.added, c.flagged), (i as u64, 1));
    assert!(errors[0].reasons[0].contains("not UTF-8"), "{errors:?}");
    assert_eq!(model.values("E00000")[1], "Zoë 0");
}

#[test]
fn cr_only_blocks_cut_and_count_lines_like_lf_ones() {
    // Several blocks of CR-only lines: cuts, line numbers and the fast path
    // (a second run of the same file) agree with the LF file.
    let feed = simple_feed();
    let mut lf = "Employee ID,Name,Note\n".to_string();
    let mut i = 0;
    while lf.len() < (9 << 20) {
        lf += &format!("E{i:06},Name {i},{}\n", "n".repeat(150));
        i += 1;
    }
    lf += "E999999,too few\n";
    let cr = lf.replace('\n', "\r");
    let (mut a, mut b) = (Model::default(), Model::default());
    let (ca, ea) = run(&feed, &mut a, lf.as_bytes());
    let (cb, eb) = run(&feed, &mut b, cr.as_bytes());
    assert_eq!((ca, brief(&ea)), (cb, brief(&eb)));
    assert_eq!(ea[0].line as usize, i + 2);
    let (again, _) = run(&feed, &mut b, cr.as_bytes());
    assert_eq!(again.unchanged, i as u64);
}

#[test]
fn reasons_never_carry_control_characters_from_the_file() {
    let feed = hr_feed();
    let mut model = Model::default();
    let bytes = hr_file(&[
        "E1,Ann,a\u{202E}b@,,,Sales,,Active",
        "E\u{1b}[2J,Bob,b@example.com,,,Sales,,Active",
        "E\u{1b}[2J,Bob,b@example.com,,,Sales,,Active",
    ]);
    let (_, errors) = run(&feed, &mut model, &bytes);
    assert!(!errors.is_empty());
    for e in &errors {
        for r in &e.reasons {
            assert!(
                !r.chars().any(|c| c.is_control() || c == '\u{202E}'),
                "{r:?}"
            );
        }
    }
}

#[test]
fn excel_and_dos_habits_are_understood() {
    let feed = hr_feed();
    let rows = hr_rows(3);
    let lf = hr_file_with(&rows, "\n");
    let mut want = Model::default();
    run(&feed, &mut want, &lf);
    // Excel's `sep=;` line, a header with no-break and double spaces, and
    // a DOS end-of-file mark after the last line.
    let semicolons = String::from_utf8(lf.clone())
        .unwrap_or_default()
        .replace(',', ";")
        .replacen("Employee ID", "Employee\u{a0}ID", 1)
        .replacen("Office Phone", "Office  Phone", 1);
    let bytes = [b"sep=;\r\n".as_slice(), semicolons.as_bytes(), b"\x1A"].concat();
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &bytes);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((c.rows, c.added), (3, 3));
    assert_eq!(model.records, want.records);
    // Line numbers count the `sep=` line.
    let bad = [
        b"sep=;\n".as_slice(),
        semicolons.replacen("E002;Name 2", "E002;", 1).as_bytes(),
    ]
    .concat();
    let (_, errors) = run(&feed, &mut Model::default(), &bad);
    assert_eq!(errors[0].line, 4);
}

#[test]
fn a_title_above_the_header_is_skipped() {
    let feed = hr_feed();
    let rows = hr_rows(3);
    let plain = hr_file_with(&rows, "\r\n");
    let mut want = Model::default();
    run(&feed, &mut want, &plain);
    // A report title, a "generated" line and an empty row, as a
    // spreadsheet saves them (trailing delimiters included).
    let titled = [
        b"Active employees,,,,\r\n\"Generated 2026-12-01, 06:00\",,\r\n,,,,\r\n".as_slice(),
        &plain,
    ]
    .concat();
    let mut model = Model::default();
    let (c, errors) = run(&feed, &mut model, &titled);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((c.rows, c.added), (3, 3));
    assert_eq!(model.records, want.records);
    // Line numbers stay the file's: the title's three lines count.
    let bad = String::from_utf8(titled)
        .unwrap()
        .replacen("E002,Name 2", "E002,", 1);
    let (_, errors) = run(&feed, &mut Model::default(), bad.as_bytes());
    assert_eq!(errors[0].line, 6, "{errors:?}");
    // Past the title rows allowed, the first row's reason stands.
    let deep = [b"Title\n".repeat(11).as_slice(), &plain].concat();
    let reason = try_run(&feed, &mut Model::default(), &deep)
        .err()
        .map(|r| r.reason)
        .unwrap_or_default();
    assert!(reason.contains("ID column 'Employee ID'"), "{reason}");
}

#[test]
fn a_quote_missing_in_an_all_quoted_export_fails_the_file() {
    // The open quote closes at the next line's first quote: one record of
    // the wrong width that swallowed the next person.
    let feed = hr_feed();
    let quoted = |i: u32| {
        format!("\"E{i}\",\"Name {i}\",\"p{i}@example.com\",\"\",\"\",\"Sales\",\"\",\"Active\"")
    };
    let rows: Vec<String> = (1..=10).map(quoted).collect();
    let mut model = Model::default();
    run(&feed, &mut model, &hr_file_with(&rows, "\r\n"));
    let before = model.clone();
    let mut broken = rows.clone();
    broken[3] = broken[3].trim_end_matches('"').to_string();
    let reason = try_run(&feed, &mut model, &hr_file_with(&broken, "\r\n"))
        .err()
        .map(|r| r.reason)
        .unwrap_or_default();
    assert!(
        reason.contains("opened on line 5, column 8 ('Status') runs on to line 6"),
        "{reason}"
    );
    assert_eq!(model, before);
}

#[test]
fn bad_bytes_only_in_the_header_do_not_make_a_utf8_body_windows_1252() {
    let feed = simple_feed();
    let bytes = [
        b"Employee ID,Name,Note \xB0\n".as_slice(),
        "E1,José,x\nE2,Zoë,y\n".as_bytes(),
    ]
    .concat();
    let s = scan(&feed, &bytes);
    assert_eq!(s.encoding, Encoding::Utf8);
    let mut model = Model::default();
    run(&feed, &mut model, &bytes);
    assert_eq!(model.values("E1")[1], "José");
}

/// The UTF-8 copy of a UTF-16 file, as the worker hands it to the reader.
struct Utf8Copy(Vec<u8>);

impl Input for Utf8Copy {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_exact_at(offset, buf)
    }
    fn is_utf8_copy(&self) -> bool {
        true
    }
}

#[test]
fn a_utf16_file_with_a_lone_surrogate_stays_unicode_and_flags_that_row() {
    let feed = simple_feed();
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "Employee ID,Name,Note\r\nE1,Ann,x\r\nE2,".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    utf16.extend_from_slice(&0xD800u16.to_le_bytes());
    for unit in ",y\r\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut copy = Vec::new();
    super::transcode_utf16(&utf16, Encoding::Utf16Le, &mut copy).expect("transcode");
    let input = Utf8Copy(copy);
    let s = scan_file(&input, &feed, &|_| {}).expect("read");
    assert_eq!(s.encoding, Encoding::Utf8);
    let header = s.header.clone();
    let diff = diff_scan(s, StoredIndex::default(), 0);
    let file = FileContext {
        input: &input,
        feed: &feed,
        header: &header,
        encoding: Encoding::Utf8,
        line_word: "line",
    };
    let mut model = Model::default();
    let mut errors = Errors::default();
    let applied = apply_diff(&file, diff, &mut model, &mut errors).expect("apply");
    assert_eq!((applied.counts.added, applied.counts.flagged), (1, 1));
    assert!(
        errors.0[0].reasons[0].contains("not UTF-8"),
        "{:?}",
        errors.0
    );
}

#[test]
fn after_a_mapping_change_an_invalid_value_flags_the_row_instead_of_keeping_by_position() {
    let feed = hr_feed();
    let mut model = Model::default();
    run(
        &feed,
        &mut model,
        &hr_file(&["E1,Ann,ann@example.com,+12125550101,,Sales,,Active"]),
    );
    let before = model.clone();
    // A field added before Email: stored values are in the old positions.
    let changed = feed_from(&HR.replace(
        "  [[feed.field]]\n  name = \"email\"",
        "  [[feed.field]]\n  name = \"title\"\n  column = \"Title\"\n  [[feed.field]]\n  name = \"email\"",
    ));
    let file = "Employee ID,Name,Title,Email,Mobile,Office Phone,Department,Tags,Status\n\
        E1,Ann,Boss,ann@example,+12125550101,,Sales,,Active\n";
    let (c, errors) = run(&changed, &mut model, file.as_bytes());
    assert_eq!((c.flagged, c.warnings, c.updated), (1, 0, 0));
    assert!(errors[0].reasons[0].contains("invalid email"), "{errors:?}");
    assert_eq!(model.records, before.records, "kept exactly as stored");
}

#[test]
fn a_refused_file_brings_the_header_it_had() {
    // What the report of a file refused as a whole shows as its header.
    let feed = hr_feed();
    let input = "\u{feff}Name;=Email;Caf\u{e9}\r\nAnn;a@x;1\r\n"
        .as_bytes()
        .to_vec();
    let rejection = try_scan(&feed, &input).expect_err("no ID column");
    assert_eq!(
        rejection.header.as_deref(),
        Some(["Name", "=Email", "Caf\u{e9}"].map(String::from).as_slice())
    );
    assert_eq!(rejection.header, super::header_columns(&input, &feed));
    let cp1252 = b"ID,Caf\xe9\n".to_vec();
    assert_eq!(
        super::header_columns(&cp1252, &feed),
        Some(vec!["ID".to_string(), "Caf\u{e9}".to_string()])
    );
    // Damage found after the header carries it too.
    let open = hr_file(&["E1,\"Ann,a@example.com,,,,,Active"]);
    let rejection = try_scan(&feed, &open).expect_err("an open quote");
    assert_eq!(rejection.header.map(|h| h.len()), Some(8));
    // Not text, or empty: no header.
    for bytes in [&b"PK\x03\x04\x00\x00binary"[..], b""] {
        assert_eq!(super::header_columns(&bytes.to_vec(), &feed), None);
    }
}

/// The import core is pure: it uses `config` and itself only (no store,
/// no network, no async runtime), and its leaf `text` uses nothing of it.
#[test]
fn the_import_core_uses_nothing_but_config_and_itself() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/import");
    let forbidden = ["tokio", "redb", "axum", "russh", "lettre", "hyper"];
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The tests may use anything; this test names what it forbids.
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            assert!(
                rest.starts_with("config") || rest.starts_with("import"),
                "{name} uses crate::{}",
                rest.chars().take(30).collect::<String>()
            );
        }
        for crate_name in forbidden {
            assert!(
                !text.contains(&format!("{crate_name}::")),
                "{name} uses {crate_name}"
            );
        }
        if name == "text.rs" {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            assert!(
                !code.contains("super::"),
                "the leaf text.rs uses another import module"
            );
        }
    }
    assert!(files > 5, "only {files} files read");
}
