//! csvfloor: the floor for an import. Reads the whole file with the `csv`
//! crate (one reused `ByteRecord`), counts records and fields, prints them.
//! Single-threaded and nothing else: no import can read a file faster than
//! this, so it is the yardstick for flagsync's delta and no-op imports.
//!
//! ```text
//! csvfloor FILE
//! ```

use std::fs::File;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = match (args.next(), args.next()) {
        (Some(p), None) if p != "-h" && p != "--help" => p,
        _ => {
            eprintln!("usage: csvfloor FILE\n\nParses FILE with the csv crate and prints its record and field counts.");
            return ExitCode::from(2);
        }
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("csvfloor: cannot open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let mut record = csv::ByteRecord::new();
    let (mut records, mut fields) = (0u64, 0u64);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {
                records += 1;
                fields += record.len() as u64;
            }
            Ok(false) => break,
            Err(e) => {
                eprintln!("csvfloor: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("records={records} fields={fields}");
    ExitCode::SUCCESS
}
