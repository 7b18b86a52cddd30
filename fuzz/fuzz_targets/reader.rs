//! Any bytes as an HR file of the embedded configuration's `demo` feed, run
//! through the import core as `worker` runs a file: header and pass 1,
//! diff, delete guard, pass 2 into an in-memory store. Each input runs
//! twice against an empty feed and twice against a feed that holds the
//! demo file, and every run must keep the core's invariants; the second
//! run of the same bytes must change nothing.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::OnceLock;

use compact_str::CompactString;
use flagsync::config::{Config, Feed};
use flagsync::import::record::Record;
use flagsync::import::{
    apply_diff, diff_scan, judge_delete_guard, run_fingerprint, scan_file, scan_file_against,
    trusted_hashes, ApplyCounts, ErrorSink, FeedWriter, FileContext, Rejection, RowError, Scan,
    StoredIndex, Verdict,
};
use libfuzzer_sys::fuzz_target;

/// The demo file shipped in assets/: the "small stored state".
const DEMO_FILE: &[u8] = include_bytes!("../../assets/demo/hr-sample.csv");

struct Fixture {
    feed: Feed,
    /// The feed after the demo file was applied to it.
    seeded: Store,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One thread: the same input then takes the same path each time,
        // and each parallel step builds its csv-core parser once instead of
        // once per piece of work (the parser's table is costly to build
        // under the fuzzer's comparison tracing: most of the time went to
        // it with a thread per core).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
        let config = Config::embedded().expect("the embedded configuration is valid");
        let feed = config.feed("demo").expect("it has the demo feed").clone();
        let mut seeded = Store::default();
        let counts = run(&feed, &mut seeded, DEMO_FILE).expect("the demo file is accepted");
        assert!(counts.added > 0, "the demo file adds recipients");
        Fixture { feed, seeded }
    })
}

/// One feed as the redb store keeps it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Store {
    records: BTreeMap<String, Vec<u8>>,
    hashes: Vec<(CompactString, u64)>,
    groups: BTreeMap<String, u64>,
    fingerprint: Option<u64>,
    mapping: Option<u64>,
    /// IDs written by the current run: the core touches each at most once.
    touched: BTreeSet<String>,
}

impl Store {
    fn index(&self) -> StoredIndex {
        StoredIndex {
            hashes: self.hashes.clone(),
            fingerprint: self.fingerprint,
            mapping: self.mapping,
        }
    }

    fn touch(&mut self, id: &str) {
        assert!(self.touched.insert(id.to_string()), "'{id}' written twice");
    }

    /// The store's invariant 5: records and hash list hold the same IDs,
    /// and each group's count is the number of records listing it; and
    /// each record is stored under the ID it holds.
    fn assert_consistent(&self, id_field: usize) {
        let listed: Vec<&str> = self.hashes.iter().map(|(id, _)| id.as_str()).collect();
        let stored: Vec<&str> = self.records.keys().map(String::as_str).collect();
        assert_eq!(listed, stored, "hash list and records differ");
        let mut members: BTreeMap<String, u64> = BTreeMap::new();
        for (id, bytes) in &self.records {
            let record = Record::decode(bytes).expect("a stored record decodes");
            assert_eq!(
                &record.values[id_field], id,
                "a record stored under another ID"
            );
            for g in record.groups {
                *members.entry(g).or_default() += 1;
            }
        }
        assert_eq!(members, self.groups, "group counts differ from the records");
    }
}

impl FeedWriter for Store {
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

/// One run of `bytes` against `store`, as `worker` runs a file, applied
/// whatever the delete guard says (a held run that is confirmed). `None`
/// when the file is rejected, which leaves `store` as it was.
fn run(feed: &Feed, store: &mut Store, bytes: &[u8]) -> Option<ApplyCounts> {
    // `Input` is implemented for byte vectors, not for borrowed slices.
    let input = bytes.to_vec();
    let index = store.index();
    let known = trusted_hashes(&index, feed);
    let scan = scan_file_against(&input, feed, known, &|_| {});
    if known.is_some() {
        same_scan(&input, &scan, &scan_file(&input, feed, &|_| {}));
    }
    let scan = scan.ok()?;
    let header = scan.header.clone();
    let encoding = scan.encoding;
    let fingerprint = run_fingerprint(feed, encoding);
    let stored_before = store.records.len() as u64;
    let diff = diff_scan(scan, index, fingerprint);
    assert_eq!(diff.stored_count, stored_before);
    let removed: u64 = diff.removed.len() as u64;
    let verdict = judge_delete_guard(&diff, feed.delete_threshold);
    if stored_before == 0 {
        assert_eq!(verdict, Verdict::Proceed, "an empty feed is never held");
    }
    let file = FileContext {
        input: &input,
        feed,
        header: &header,
        encoding,
        line_word: "line",
    };
    let mut errors = Errors::default();
    let applied = match apply_diff(&file, diff, store, &mut errors) {
        Ok(applied) => applied,
        Err(e) => panic!("apply_diff failed on a file in memory: {e}"),
    };
    let counts = applied.counts;
    assert_eq!(
        counts.rows,
        counts.added + counts.updated + counts.unchanged + counts.flagged + counts.filtered,
        "every row in exactly one count: {counts:?}"
    );
    assert_eq!(counts.removed, removed);
    let warned = errors.0.iter().filter(|e| e.warning).count() as u64;
    assert_eq!(
        (errors.0.len() as u64 - warned, warned),
        (counts.flagged, counts.warnings),
        "one error per flagged row, one per row with warnings"
    );
    assert!(
        errors.0.windows(2).all(|w| w[0].line <= w[1].line),
        "row errors in file order"
    );
    assert!(
        applied.hashes.windows(2).all(|w| w[0].0 < w[1].0),
        "the hash list is sorted, without repeats"
    );
    if !applied.hashes_changed {
        assert_eq!(applied.hashes, store.hashes, "hashes_changed is false");
    }
    store.hashes = applied.hashes;
    store.fingerprint = Some(fingerprint);
    store.mapping = Some(feed.mapping_fingerprint());
    store.touched.clear();
    store.assert_consistent(feed.id_field);
    Some(counts)
}

/// Rows recognised by their stored hash without being parsed must be
/// exactly what a full parse finds.
fn same_scan(input: &[u8], fast: &Result<Scan, Rejection>, full: &Result<Scan, Rejection>) {
    let (fast, full) = match (fast, full) {
        (Ok(fast), Ok(full)) => (fast, full),
        (Err(a), Err(b)) => return assert_eq!(a, b, "the fast path rejects differently"),
        (a, b) => panic!(
            "one scan rejects, the other not: {:?} / {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    };
    assert_eq!(fast.rows.len(), full.rows.len(), "the fast path differs");
    // A row's length may or may not take in the `\n` of a CRLF (csv-core
    // stops at the `\r`): pass 2 reads one record from it either way.
    let text = |offset: u64, len: u32| {
        let row = &input[offset as usize..][..len as usize];
        row.strip_suffix(b"\n").unwrap_or(row)
    };
    for (a, b) in fast.rows.iter().zip(&full.rows) {
        assert!(
            (&a.id, a.hash, a.offset, a.line) == (&b.id, b.hash, b.offset, b.line)
                && a.shape == b.shape
                && text(a.offset, a.len) == text(b.offset, b.len),
            "the fast path differs from a full parse: {a:?} / {b:?}"
        );
    }
    assert_eq!(
        (fast.rows_read, fast.filtered, fast.encoding),
        (full.rows_read, full.filtered, full.encoding)
    );
}

/// The same file again changes nothing and flags the same rows.
fn run_twice(feed: &Feed, mut store: Store, bytes: &[u8]) {
    let Some(first) = run(feed, &mut store, bytes) else {
        return;
    };
    let after_first = store.clone();
    let again = run(feed, &mut store, bytes).expect("an accepted file is accepted again");
    assert_eq!(
        again.changes(),
        0,
        "a second run changed something: {again:?}"
    );
    assert_eq!(
        (again.rows, again.flagged, again.filtered),
        (first.rows, first.flagged, first.filtered)
    );
    assert_eq!(store.records, after_first.records);
    assert_eq!(store.groups, after_first.groups);
}

fuzz_target!(|bytes: &[u8]| {
    let fixture = fixture();
    run_twice(&fixture.feed, Store::default(), bytes);
    run_twice(&fixture.feed, fixture.seeded.clone(), bytes);
});
