//! csvdiff-peer: the peer for a delta import. Diffs two CSV files with the
//! `csv-diff` crate keyed on the first column, consumes every difference and
//! prints the counts. This is what a plain "diff two CSV files" costs, without
//! validation, a store or a commit.
//!
//! ```text
//! csvdiff-peer [--lazy] OLD NEW
//! ```
//!
//! By default it uses `CsvByteDiffLocal` (the blocking variant for seekable
//! local files: it hashes both files in parallel and re-reads only the
//! records that differ). `--lazy` uses the iterator variant `CsvByteDiff`.

use std::fs::File;
use std::process::ExitCode;

use csv_diff::csv::Csv;
use csv_diff::csv_diff::{CsvByteDiff, CsvByteDiffLocal};
use csv_diff::diff_row::DiffByteRecord;

const USAGE: &str = "usage: csvdiff-peer [--lazy] OLD NEW\n\nDiffs OLD and NEW with the csv-diff crate (key: first column) and prints added/modified/deleted counts.";

#[derive(Default)]
struct Counts {
    added: u64,
    modified: u64,
    deleted: u64,
}

impl Counts {
    fn count(&mut self, d: &DiffByteRecord) {
        match d {
            DiffByteRecord::Add(_) => self.added += 1,
            DiffByteRecord::Modify { .. } => self.modified += 1,
            DiffByteRecord::Delete(_) => self.deleted += 1,
        }
    }
}

fn open(path: &str) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot open {path}: {e}"))
}

fn run(lazy: bool, old: &str, new: &str) -> Result<Counts, String> {
    let (left, right) = (open(old)?, open(new)?);
    let mut counts = Counts::default();
    if lazy {
        let differ = CsvByteDiff::new().map_err(|e| e.to_string())?;
        for d in differ.diff(Csv::with_reader(left), Csv::with_reader(right)) {
            counts.count(&d.map_err(|e| e.to_string())?);
        }
    } else {
        let differ = CsvByteDiffLocal::new().map_err(|e| e.to_string())?;
        let diffs = differ
            .diff(Csv::with_reader_seek(left), Csv::with_reader_seek(right))
            .map_err(|e| e.to_string())?;
        for d in diffs.iter() {
            counts.count(d);
        }
    }
    Ok(counts)
}

fn main() -> ExitCode {
    let mut lazy = false;
    let mut paths = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--lazy" => lazy = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => paths.push(a),
        }
    }
    if paths.len() != 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match run(lazy, &paths[0], &paths[1]) {
        Ok(c) => {
            println!(
                "added={} modified={} deleted={}",
                c.added, c.modified, c.deleted
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("csvdiff-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
