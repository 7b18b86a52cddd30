//! The store against a real redb file on disk.

use compact_str::CompactString;

use super::*;
use crate::import::FeedWriter;

fn temp_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagsync.redb");
    (dir, path)
}

#[test]
fn a_store_from_a_newer_flagsync_is_refused_with_a_clear_error() {
    let (_dir, path) = temp_store();
    {
        let store = Store::open(&path).unwrap();
        let txn = store.writable().unwrap().begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    for result in [
        Store::open(&path).map(|_| ()),
        Store::open_read_only(&path).map(|_| ()),
    ] {
        let message = result
            .expect_err("a newer schema must be refused")
            .to_string();
        assert!(message.contains("newer flagsync (schema 99"), "{message}");
        assert!(message.contains("upgrade flagsync"), "{message}");
    }
}

#[test]
fn a_damaged_file_gives_an_error_not_a_panic() {
    let (_dir, path) = temp_store();
    std::fs::write(
        &path,
        b"this is not a redb file, just some bytes that were here",
    )
    .unwrap();
    let message = Store::open(&path)
        .err()
        .expect("garbage must not open")
        .to_string();
    assert!(message.contains("restore it from a backup"), "{message}");
    let message = Store::open_read_only(&path)
        .map(|_| ())
        .expect_err("garbage must not open")
        .to_string();
    assert!(message.contains("cannot be opened"), "{message}");
}

/// A store at `path` holding one recipient of feed `hr`.
fn store_with_one_record(path: &Path) {
    let store = Store::open(path).unwrap();
    let txn = store.begin_run().unwrap();
    txn.with_feed("hr", None, |w| w.put_record("E1", b"\x01\x00\x00\x00\x00"))
        .unwrap()
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_store_whose_header_is_zeros_is_refused_not_made_anew() {
    let (_dir, path) = temp_store();
    store_with_one_record(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4096].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let message = Store::open(&path).err().expect("must not open").to_string();
    assert!(message.contains("flagsync restore"), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is untouched"
    );
    std::fs::write(&path, b"").unwrap();
    assert!(
        Store::open(&path).is_err(),
        "an emptied store is not made anew"
    );
}

#[test]
fn a_truncated_store_gives_an_error_not_a_panic() {
    let (_dir, path) = temp_store();
    store_with_one_record(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    // Either refused with a message, or opened (redb repairs what it can):
    // never a panic.
    if let Err(e) = Store::open(&path) {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn nothing_of_an_uncommitted_run_is_visible() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    {
        let txn = store.begin_run().unwrap();
        let id = txn.next_run_id().unwrap();
        assert_eq!(id, 1);
        txn.with_feed("hr", None, |w| w.put_record("E1", b"x"))
            .unwrap()
            .unwrap();
        txn.put_hash_list("hr", &[(CompactString::from("E1"), 7)])
            .unwrap();
        // Dropped without commit: redb aborts the transaction.
    }
    assert!(store.feed_index("hr").unwrap().hashes.is_empty());
    assert_eq!(store.recipient_count("hr").unwrap(), 0);
    let txn = store.begin_run().unwrap();
    assert_eq!(txn.next_run_id().unwrap(), 1, "the run ID was not used");
}

#[test]
fn sorted_records_are_stored_like_single_puts_before_among_and_past_the_stored_ids() {
    use crate::import::StoredRecords;
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let put = |records: &[(&str, &[u8])]| {
        let txn = store.begin_run().unwrap();
        txn.with_feed("hr", None, |w| w.put_sorted_records(records))
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
    };
    // Into an empty table: all of it past the (missing) last ID.
    let first: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| (format!("E{:05}", i * 2), format!("old {i}").into_bytes()))
        .collect();
    let first_refs: Vec<(&str, &[u8])> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    put(&first_refs);
    // Before the first ID, between stored IDs, replacing one, equal to the
    // last, and past it.
    put(&[
        ("A1", b"new a1"),
        ("E00003", b"new 3"),
        ("E00004", b"new 4"),
        ("E05998", b"new last"),
        ("E05999", b"new past 1"),
        ("F1", b"new past 2"),
    ]);
    assert_eq!(store.recipient_count("hr").unwrap(), 3000 + 4);
    let snapshot = store.snapshot("hr").unwrap();
    let get = |id: &str| snapshot.stored_record(id).unwrap();
    assert_eq!(get("A1").as_deref(), Some(&b"new a1"[..]));
    assert_eq!(get("E00000").as_deref(), Some(&b"old 0"[..]));
    assert_eq!(get("E00003").as_deref(), Some(&b"new 3"[..]));
    assert_eq!(get("E00004").as_deref(), Some(&b"new 4"[..]));
    assert_eq!(get("E00006").as_deref(), Some(&b"old 3"[..]));
    assert_eq!(get("E05998").as_deref(), Some(&b"new last"[..]));
    assert_eq!(get("E05999").as_deref(), Some(&b"new past 1"[..]));
    assert_eq!(get("F1").as_deref(), Some(&b"new past 2"[..]));
    for i in 0..3000 {
        assert!(
            get(&format!("E{:05}", i * 2)).is_some(),
            "E{:05} lost",
            i * 2
        );
    }
}

#[test]
fn the_hash_list_is_replaced_whole() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let long: Vec<(CompactString, u64)> = (0..10_000)
        .map(|i| (CompactString::from(format!("E{i:06}")), i))
        .collect();
    let txn = store.begin_run().unwrap();
    txn.put_hash_list("hr", &long).unwrap();
    txn.commit().unwrap();
    assert_eq!(store.feed_index("hr").unwrap().hashes, long);
    let short = vec![(CompactString::from("A"), 1)];
    let txn = store.begin_run().unwrap();
    txn.put_hash_list("hr", &short).unwrap();
    txn.commit().unwrap();
    assert_eq!(store.feed_index("hr").unwrap().hashes, short);
}

#[test]
fn the_data_lock_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataLock::acquire(dir.path()).unwrap();
    let second = DataLock::acquire(dir.path());
    assert!(matches!(second, Err(StoreError::InUse { .. })));
    drop(first);
    DataLock::acquire(dir.path()).unwrap();
}

/// A run record of `feed` that started `days_ago` days ago.
fn run_of(feed: &str, state: RunState, days_ago: u64, upload: Option<&str>) -> Run {
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(days_ago * 86_400);
    let at = humantime::format_rfc3339_seconds(started).to_string();
    Run {
        state,
        finished_at: at.clone(),
        duration_ms: 1,
        error_report: Some("/errors/report.csv".into()),
        errors: vec![crate::import::RowError {
            line: 2,
            id: None,
            reasons: vec!["bad".into()],
            warning: false,
            cells: Vec::new(),
        }],
        upload: upload.map(str::to_string),
        ..Run::new(feed, &format!("{feed}-{days_ago}.csv"), at)
    }
}

/// Records `run` with a change log: it added N1, updated E1's email and
/// removed E2.
fn record(store: &Store, mut run: Run) -> u64 {
    use crate::import::{Change, FieldChange};
    let txn = store.begin_run().unwrap();
    let id = txn.next_run_id().unwrap();
    run.run_id = Some(id);
    let feed = run.feed.clone();
    txn.with_feed(&feed, Some(id), |w| {
        w.log_change(Change::Added { id: "N1" })?;
        let fields = vec![FieldChange {
            field: "email",
            old: "a@example.com",
            new: "b@example.com",
        }];
        w.log_change(Change::Updated { id: "E1", fields })?;
        let values = vec![("employee_id", "E2")];
        w.log_change(Change::Removed { id: "E2", values })
    })
    .unwrap()
    .unwrap();
    txn.put_run(&run).unwrap();
    txn.commit().unwrap();
    id
}

#[test]
fn a_feeds_runs_and_held_runs_are_found_through_their_indexes() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let a1 = record(&store, run_of("a", RunState::Applied, 3, Some("c1")));
    let b1 = record(&store, run_of("b", RunState::Applied, 3, None));
    let a2 = record(&store, run_of("a", RunState::Held, 2, Some("c2")));
    let a3 = record(&store, run_of("a", RunState::Held, 1, None));
    let ids = |runs: Vec<Run>| runs.iter().filter_map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids(store.latest_runs(Some("a"), 2).unwrap()), [a3, a2]);
    assert_eq!(ids(store.latest_runs(Some("a"), 10).unwrap()), [a3, a2, a1]);
    assert_eq!(ids(store.latest_runs(Some("b"), 10).unwrap()), [b1]);
    assert_eq!(ids(store.latest_runs(None, 3).unwrap()), [a3, a2, b1]);
    assert_eq!(ids(store.held_runs("a").unwrap()), [a3, a2]);
    assert_eq!(store.run_of_upload("c2").unwrap(), Some(a2));
    assert_eq!(store.run_of_upload("nope").unwrap(), None);

    // A newer file supersedes both held runs; the index follows.
    let txn = store.begin_run().unwrap();
    let by = txn.next_run_id().unwrap();
    let superseded = txn.supersede_held("a", by).unwrap();
    txn.commit().unwrap();
    assert_eq!(ids(superseded), [a3, a2]);
    assert!(store.held_runs("a").unwrap().is_empty());
    assert_eq!(store.get_run(a2).unwrap().state, RunState::Superseded);
}

#[test]
fn history_past_the_retention_keeps_summaries_then_goes_and_held_runs_stay() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let ancient = record(&store, run_of("a", RunState::Applied, 500, Some("old")));
    let held = record(&store, run_of("a", RunState::Held, 450, None));
    let old = record(&store, run_of("a", RunState::Failed, 40, None));
    let recent = record(&store, run_of("a", RunState::Applied, 5, None));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = |d: u64| now - d * 86_400;
    assert_eq!(store.run_changes("a", ancient).unwrap().len(), 3);
    let pruned = store.prune_history(days(30), days(400)).unwrap();
    assert_eq!((pruned.deleted, pruned.summarised), (1, 1), "{pruned:?}");
    // The change log goes with the run record, and only with it.
    assert!(store.run_changes("a", ancient).unwrap().is_empty());
    assert_eq!(store.run_changes("a", old).unwrap().len(), 3);
    let runs = |id: &str| -> Vec<u64> {
        let history = store.recipient_history("a", id).unwrap();
        history.iter().filter_map(|(run, _)| run.run_id).collect()
    };
    // A person's history holds the applied runs only (held and failed
    // runs logged here too, as a test's stand-ins).
    assert_eq!(runs("E1"), [recent]);
    let (_, last) = store.recipient_history("a", "E2").unwrap().pop().unwrap();
    assert_eq!(last.kind(), "removed");
    assert!(matches!(
        store.get_run(ancient),
        Err(StoreError::UnknownRun(_))
    ));
    assert_eq!(store.run_of_upload("old").unwrap(), None);
    let summary = store.get_run(old).unwrap();
    assert!(summary.errors.is_empty() && summary.error_report.is_none());
    assert_eq!(summary.state, RunState::Failed);
    let kept = store.get_run(recent).unwrap();
    assert_eq!(kept.errors.len(), 1, "a recent run keeps its errors");
    assert_eq!(store.get_run(held).unwrap().state, RunState::Held);
    let ids: Vec<u64> = store
        .latest_runs(Some("a"), 10)
        .unwrap()
        .iter()
        .filter_map(|r| r.run_id)
        .collect();
    assert_eq!(ids, [recent, old, held]);
    // Nothing left to do a second time.
    assert_eq!(
        store.prune_history(days(30), days(400)).unwrap(),
        Pruned::default()
    );
}

#[test]
fn a_store_of_schema_1_gets_its_run_indexes_when_opened() {
    let (_dir, path) = temp_store();
    let (a, b) = {
        let store = Store::open(&path).unwrap();
        let a = record(&store, run_of("a", RunState::Held, 2, Some("c1")));
        let b = record(&store, run_of("a", RunState::Applied, 1, None));
        // What a schema 1 store looks like: no run indexes.
        let txn = store.writable().unwrap().begin_write().unwrap();
        for table in [runs::RUNS_BY_FEED, runs::HELD_RUNS] {
            txn.delete_table(table).unwrap();
        }
        txn.delete_table(runs::RUN_UPLOADS).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 1u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        (a, b)
    };
    // Read-only, it is read without the indexes...
    let reader = Store::open_read_only(&path).unwrap().unwrap();
    assert_eq!(reader.held_runs("a").unwrap().len(), 1);
    assert_eq!(reader.run_of_upload("c1").unwrap(), Some(a));
    drop(reader);
    // ...and opened for writing, it is indexed once.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.stored_schema().unwrap(), Some(SCHEMA_VERSION));
    let ids: Vec<u64> = store
        .latest_runs(Some("a"), 10)
        .unwrap()
        .iter()
        .filter_map(|r| r.run_id)
        .collect();
    assert_eq!(ids, [b, a]);
    assert_eq!(store.held_runs("a").unwrap().len(), 1);
    assert_eq!(store.run_of_upload("c1").unwrap(), Some(a));
}

#[test]
fn a_persons_runs_are_found_across_chunks_of_additions() {
    use crate::import::Change;
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let txn = store.begin_run().unwrap();
    let id = txn.next_run_id().unwrap();
    let ids: Vec<String> = (0..10_000).map(|i| format!("P{:05}", i * 2)).collect();
    txn.with_feed("a", Some(id), |w| {
        for i in ids.iter().rev() {
            w.log_change(Change::Added { id: i }).unwrap();
        }
    })
    .unwrap();
    let mut run = run_of("a", RunState::Applied, 0, None);
    run.run_id = Some(id);
    txn.put_run(&run).unwrap();
    txn.commit().unwrap();
    let logged = store.run_changes("a", id).unwrap();
    assert_eq!(logged.len(), ids.len());
    assert!(logged
        .iter()
        .map(|c| c.id())
        .eq(ids.iter().map(String::as_str)));
    // First, last, around a chunk's edge (4096 a chunk), and odd IDs that
    // fall between two added ones or past the end.
    for present in ["P00000", "P08190", "P08192", "P19998"] {
        let history = store.recipient_history("a", present).unwrap();
        assert_eq!(history.len(), 1, "{present}");
        assert_eq!(
            (history[0].0.run_id, history[0].1.kind()),
            (Some(id), "added"),
            "{present}"
        );
    }
    for absent in ["P00001", "P08191", "P19999", "A", "Z"] {
        let history = store.recipient_history("a", absent).unwrap();
        assert!(history.is_empty(), "{absent}");
    }
}

#[test]
fn a_runs_changes_are_paged_and_counted_by_kind_and_read_back_before_commit() {
    use crate::import::{Change, FieldChange};
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let txn = store.begin_run().unwrap();
    let id = txn.next_run_id().unwrap();
    let added: Vec<String> = (0..5000).map(|i| format!("A{i:05}")).collect();
    txn.with_feed("a", Some(id), |w| {
        for a in &added {
            w.log_change(Change::Added { id: a }).unwrap();
        }
        let fields = vec![FieldChange {
            field: "email",
            old: "a@x",
            new: "b@x",
        }];
        w.log_change(Change::Updated { id: "U1", fields }).unwrap();
        w.log_change(Change::Removed {
            id: "R1",
            values: vec![("name", "Ann")],
        })
        .unwrap();
    })
    .unwrap();
    // The report's first changes, from the uncommitted log.
    let first = txn.first_changes("a", id, 3).unwrap();
    let ids: Vec<&str> = first.iter().map(|c| c.id()).collect();
    assert_eq!(ids, ["A00000", "A00001", "A00002"]);
    // A feed the run never wrote: nothing.
    assert!(txn.first_changes("b", id, 3).unwrap().is_empty());
    let mut run = run_of("a", RunState::Applied, 0, None);
    run.run_id = Some(id);
    txn.put_run(&run).unwrap();
    txn.commit().unwrap();

    let counts = ChangeCounts {
        added: 5000,
        updated: 1,
        removed: 1,
    };
    let page = store.run_changes_page("a", id, None, 4999, 2).unwrap();
    assert_eq!(page.counts, counts);
    let ids: Vec<&str> = page.changes.iter().map(|c| c.id()).collect();
    // Updates and removals follow the additions, in ID order.
    assert_eq!(ids, ["A04999", "R1"]);
    let removed = store
        .run_changes_page("a", id, Some("removed"), 0, 10)
        .unwrap();
    assert_eq!(removed.counts.of(Some("removed")), 1);
    assert_eq!(removed.changes.len(), 1);
    assert_eq!(removed.changes[0].kind(), "removed");
    let past = store
        .run_changes_page("a", id, Some("updated"), 1, 10)
        .unwrap();
    assert!(past.changes.is_empty());
    assert_eq!(past.counts.total(), 5002);
}

/// Records `run` with a change log of the IDs given: each added, updated
/// (its email) or removed.
fn record_changes(
    store: &Store,
    mut run: Run,
    added: &[String],
    updated: &[&str],
    removed: &[&str],
) -> u64 {
    use crate::import::{Change, FieldChange};
    let txn = store.begin_run().unwrap();
    let id = txn.next_run_id().unwrap();
    run.run_id = Some(id);
    let feed = run.feed.clone();
    txn.with_feed(&feed, Some(id), |w| -> Result<(), StoreError> {
        for a in added {
            w.log_change(Change::Added { id: a })?;
        }
        for u in updated {
            let fields = vec![FieldChange {
                field: "email",
                old: "old@example.com",
                new: "new@example.com",
            }];
            w.log_change(Change::Updated { id: u, fields })?;
        }
        for r in removed {
            w.log_change(Change::Removed {
                id: r,
                values: vec![("employee_id", r)],
            })?;
        }
        Ok(())
    })
    .unwrap()
    .unwrap();
    txn.put_run(&run).unwrap();
    txn.commit().unwrap();
    id
}

/// The whole feed read `limit` changes at a time from `after`: (run, ID,
/// kind) of each, and the cursor of the last.
fn read_feed(
    store: &Store,
    feed: &str,
    mut after: Option<FeedCursor>,
    limit: usize,
) -> Vec<(u64, String, &'static str)> {
    let mut out = Vec::new();
    loop {
        let page = store.changes_after(feed, after.as_ref(), limit).unwrap();
        assert!(page.changes.len() <= limit);
        for c in &page.changes {
            let cursor = c.cursor();
            assert!(after.as_ref().is_none_or(|a| *a < cursor), "in order");
            out.push((c.run, c.change.id().to_string(), c.change.kind()));
            after = Some(cursor);
        }
        if !page.more {
            return out;
        }
        assert_eq!(page.changes.len(), limit, "a page with more is full");
    }
}

#[test]
fn the_change_feed_gives_applied_runs_in_run_then_id_order_and_stops_at_a_held_run() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Additions and other changes interleave by ID.
    let first = record_changes(
        &store,
        run_of("a", RunState::Applied, 3, None),
        &strings(&["B", "D"]),
        &["A", "C"],
        &["E"],
    );
    let other_feed = record_changes(
        &store,
        run_of("b", RunState::Applied, 3, None),
        &strings(&["A0"]),
        &[],
        &[],
    );
    let rejected = record_changes(
        &store,
        run_of("a", RunState::Rejected, 2, None),
        &strings(&["R"]),
        &["A"],
        &[],
    );
    // More additions than one chunk holds, around an update.
    let many: Vec<String> = (0..5000).map(|i| format!("N{i:05}")).collect();
    let big = record_changes(
        &store,
        run_of("a", RunState::Applied, 2, None),
        &many,
        &["N02500x"],
        &[],
    );
    let held = record_changes(
        &store,
        run_of("a", RunState::Held, 1, None),
        &strings(&["H"]),
        &[],
        &[],
    );
    let mut expected: Vec<(u64, String, &str)> = vec![
        (first, "A".into(), "updated"),
        (first, "B".into(), "added"),
        (first, "C".into(), "updated"),
        (first, "D".into(), "added"),
        (first, "E".into(), "removed"),
    ];
    for id in &many {
        expected.push((big, id.clone(), "added"));
        if id == "N02500" {
            expected.push((big, "N02500x".into(), "updated"));
        }
    }
    assert!(expected.iter().all(|(run, ..)| *run != rejected));
    for limit in [1, 3, 7, 1000] {
        assert_eq!(read_feed(&store, "a", None, limit), expected, "{limit}");
    }
    // From any cursor: the rest, neither skipped nor repeated.
    for at in [0, 4, 5, 4100, expected.len() - 1] {
        let (run, id, _) = &expected[at];
        let cursor = FeedCursor {
            run: *run,
            id: id.clone(),
        };
        assert_eq!(
            read_feed(&store, "a", Some(cursor), 7),
            expected[at + 1..],
            "{at}"
        );
    }
    // The held run stops the feed; confirmed, it follows.
    let last = expected.last().unwrap();
    let cursor = FeedCursor {
        run: last.0,
        id: last.1.clone(),
    };
    let page = store.changes_after("a", Some(&cursor), 10).unwrap();
    assert!(page.changes.is_empty() && !page.more);
    assert_eq!(page.held_run, Some(held));
    let mut confirmed = store.get_run(held).unwrap();
    confirmed.state = RunState::Applied;
    confirmed.confirmed_at = Some("2026-01-01T00:00:00Z".into());
    store.update_run(&confirmed).unwrap();
    let page = store.changes_after("a", Some(&cursor), 10).unwrap();
    assert_eq!(page.held_run, None);
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].run, held);
    assert_eq!(page.changes[0].committed_at, "2026-01-01T00:00:00Z");

    // The other feed's changes are its own.
    assert_eq!(
        read_feed(&store, "b", None, 3),
        [(other_feed, "A0".to_string(), "added")]
    );
    assert!(store
        .changes_after("c", None, 3)
        .unwrap()
        .changes
        .is_empty());
}

#[test]
fn a_cursor_of_another_feed_or_past_the_retention_is_refused() {
    let (_dir, path) = temp_store();
    let store = Store::open(&path).unwrap();
    let ids = vec!["A".to_string()];
    let ancient = record_changes(
        &store,
        run_of("a", RunState::Applied, 500, None),
        &ids,
        &[],
        &[],
    );
    let of_b = record_changes(
        &store,
        run_of("b", RunState::Applied, 5, None),
        &ids,
        &[],
        &[],
    );
    let kept = record_changes(
        &store,
        run_of("a", RunState::Applied, 5, None),
        &ids,
        &[],
        &[],
    );
    let at = |run: u64| FeedCursor {
        run,
        id: "A".into(),
    };
    assert_eq!(
        store
            .changes_after("a", Some(&at(ancient)), 5)
            .unwrap()
            .changes
            .len(),
        1
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store
        .prune_history(now - 30 * 86_400, now - 400 * 86_400)
        .unwrap();
    let refused = |run: u64| store.changes_after("a", Some(&at(run)), 5).unwrap_err();
    assert!(matches!(refused(ancient), FeedError::Gone { .. }));
    assert!(matches!(refused(of_b), FeedError::NotOfFeed { .. }));
    assert!(matches!(refused(kept + 10), FeedError::NotOfFeed { .. }));
    let from_start = store.changes_after("a", None, 5).unwrap();
    assert_eq!(from_start.changes.len(), 1);
    assert_eq!(from_start.changes[0].run, kept);
}

#[test]
fn a_feed_cursor_has_one_spelling_and_garbage_is_refused() {
    for id in ["E00001", "", "José", "a.b"] {
        let cursor = FeedCursor {
            run: 42,
            id: id.into(),
        };
        assert_eq!(FeedCursor::parse(&cursor.encode()), Ok(cursor));
    }
    assert_eq!(
        FeedCursor {
            run: 12,
            id: "E001".into()
        }
        .encode(),
        "12.45303031"
    );
    for garbage in [
        "",
        "12",
        ".45",
        "012.45",
        "-1.45",
        "+1.45",
        "0.45",
        "12.4",
        "12.4G",
        "12.4A",
        "12.ff",
        "99999999999999999999999.45",
        "12.45 ",
    ] {
        assert!(FeedCursor::parse(garbage).is_err(), "{garbage:?}");
    }
}

/// A run record stored before OpenPGP files were read (no `pgp`) still
/// reads; one with it keeps it.
#[test]
fn run_records_without_and_with_the_openpgp_fields_read() {
    let mut run = Run::new("hr", "hr.csv", "2026-01-01T00:00:00Z".into());
    let old = serde_json::to_value(&run).unwrap();
    assert!(old.get("pgp").is_none(), "left out when empty: {old}");
    let read: Run = serde_json::from_value(old).unwrap();
    assert_eq!(read.pgp, None);
    run.container = Some("pgp, gzip".into());
    run.pgp = Some(crate::import::pgp::PgpRecord {
        decrypted_with: Some("AB12".into()),
        signature: crate::import::pgp::SignatureState::Unchecked,
        signer: Some("CD34".into()),
        signer_user_id: None,
    });
    let read: Run = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
    assert_eq!(read.pgp, run.pgp);
    assert_eq!(
        read.pgp_description().as_deref(),
        Some("encrypted for this feed's key AB12; signed by key CD34, not checked (the feed has no pgp_signer_key_file)")
    );
}
