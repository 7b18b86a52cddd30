//! The generated data is what the benchmark says it is: 33 columns, unique
//! ascending IDs, valid phones (checked with the phonenumber crate, default
//! country US) and emails, the promised mix of quoting and non-ASCII text,
//! and the next-day rewrite keeps unchanged rows byte-identical.

use std::collections::HashSet;

use flagsync_bench::csvio::{push_record, split_record, trim_eol};
use flagsync_bench::data::*;
use flagsync_bench::gen::*;

fn generate(seed: u64, rows: u64) -> Vec<u8> {
    let mut out = Vec::new();
    RowGen::push_header(&mut out);
    let mut g = RowGen::new(seed, id_width(rows));
    for n in 1..=rows {
        g.push_row(&mut out, n);
    }
    out
}

fn records(data: &[u8]) -> Vec<csv::StringRecord> {
    let mut r = csv::ReaderBuilder::new().from_reader(data);
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        HEADER.to_vec()
    );
    r.records().map(|r| r.expect("valid CSV")).collect()
}

#[test]
fn header_columns_ids_and_determinism() {
    let a = generate(5, 3000);
    assert_eq!(a, generate(5, 3000), "same seed, same bytes");
    assert_ne!(a, generate(6, 3000));
    let recs = records(&a);
    assert_eq!(recs.len(), 3000);
    let mut prev = String::new();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.len(), 33, "row {i}");
        let id = &r[0];
        assert_eq!(id, format!("E{:07}", i + 1));
        assert!(*id > *prev.as_str(), "ascending IDs");
        prev = id.to_string();
        for f in r.iter() {
            assert!(f.chars().count() <= 255, "value too long: {f}");
            assert!(!f.chars().any(|c| c.is_control()), "control char in {f:?}");
            assert_eq!(f, f.trim(), "untrimmed value {f:?}");
        }
    }
    let avg = a.len() as f64 / 3000.0;
    assert!((290.0..350.0).contains(&avg), "average row {avg} bytes");
}

#[test]
fn phones_are_valid_for_the_phonenumber_crate() {
    let data = generate(11, 20_000);
    let recs = records(&data);
    let mut national_us = 0;
    let mut countries = HashSet::new();
    let mut bad = Vec::new();
    for r in &recs {
        for col in [6, 7, 8, 28] {
            let p = &r[col];
            if p.is_empty() {
                continue;
            }
            if p.starts_with('(') {
                national_us += 1;
            }
            match phonenumber::parse(Some(phonenumber::country::Id::US), p) {
                Ok(n) if phonenumber::is_valid(&n) => {
                    countries.insert(n.code().value());
                }
                _ => bad.push(p.chars().take(6).collect::<String>()),
            }
        }
    }
    let mut by_prefix = std::collections::BTreeMap::new();
    for p in &bad {
        *by_prefix.entry(p.as_str()).or_insert(0) += 1;
    }
    assert!(
        bad.is_empty(),
        "{} invalid, by prefix: {by_prefix:?}",
        bad.len()
    );
    assert!(national_us > 1000, "national US numbers: {national_us}");
    for cc in [1, 44, 33, 49, 61, 34, 81] {
        assert!(countries.contains(&cc), "no +{cc} numbers");
    }
}

#[test]
fn emails_are_valid() {
    let data = generate(12, 5000);
    for r in records(&data) {
        for col in [4, 5] {
            let e = &r[col];
            if col == 5 && e.is_empty() {
                continue;
            }
            assert!(
                e.parse::<email_address::EmailAddress>().is_ok(),
                "{} {}: {e}",
                &r[0],
                HEADER[col]
            );
        }
    }
}

#[test]
fn variety_quoting_and_group_values() {
    let data = generate(13, 20_000);
    let text = String::from_utf8(data.clone()).unwrap();
    assert!(text.contains("\"\""), "an embedded double quote somewhere");
    assert!(text.contains(", Jr.\""), "a quoted last name with a comma");
    let recs = records(&data);
    let distinct = |col: usize| {
        recs.iter()
            .map(|r| r[col].to_string())
            .collect::<HashSet<_>>()
    };
    assert_eq!(distinct(9).len(), 20);
    assert!((45..=55).contains(&distinct(10).len()));
    assert_eq!(distinct(11).len(), 6);
    let names: String = recs
        .iter()
        .map(|r| format!("{} {}", &r[1], &r[2]))
        .collect();
    for s in ["José", "Zoë", "Łukasz", "Søren", "Müller", "陈"] {
        assert!(names.contains(s), "{s}");
    }
    let active = recs.iter().filter(|r| &r[16] == "Active").count();
    assert!(active * 100 / recs.len() > 85);
}

#[test]
fn split_and_reencode_is_identity_on_generated_rows() {
    let data = generate(14, 5000);
    let mut fields = Vec::new();
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let n = split_record(trim_eol(line), &mut fields);
        assert_eq!(n, 33);
        out.clear();
        push_record(&mut out, &fields[..n]);
        assert_eq!(out, line);
    }
}
