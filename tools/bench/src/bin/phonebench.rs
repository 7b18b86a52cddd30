//! phonebench: what flagsync's phone normaliser (src/import/phone.rs, built
//! into this binary from the same source) costs per number, on the phones
//! the benchmark generator writes (E.164 of eight countries, 0.2% of US
//! numbers in national form), and whether each of them is valid.
//!
//! ```text
//! cargo run --release -p flagsync-bench --bin phonebench [NUMBERS]
//! ```

#[path = "../../../../src/import/phone.rs"]
#[allow(dead_code)]
mod phone;

use std::process::ExitCode;
use std::time::Instant;

use flagsync_bench::data::LOCATIONS;
use flagsync_bench::gen::{push_person_phone, Line};
use flagsync_bench::rng::Rng;
use phonenumber::country::Id;

fn main() -> ExitCode {
    let count = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 1_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: phonebench [NUMBERS]");
            return ExitCode::from(2);
        }
    };
    let numbers = mix(count);
    // The first number of each region compiles that region's patterns: a
    // one-off cost, measured apart.
    let start = Instant::now();
    let invalid = numbers
        .iter()
        .filter(|n| phone::normalize_phone(n, Id::US).is_err())
        .count();
    let first = start.elapsed();
    let start = Instant::now();
    let mut bytes = 0;
    for n in &numbers {
        if let Ok(p) = phone::normalize_phone(n, Id::US) {
            bytes += p.e164.len();
        }
    }
    let again = start.elapsed();
    let per = |d: std::time::Duration| d.as_nanos() as f64 / numbers.len() as f64;
    println!(
        "{} numbers, {invalid} invalid: {:.0} ns/number (first pass, compiling patterns), \
         {:.0} ns/number (second pass); {bytes} bytes stored",
        numbers.len(),
        per(first),
        per(again)
    );
    for n in numbers
        .iter()
        .filter(|n| phone::normalize_phone(n, Id::US).is_err())
        .take(10)
    {
        println!("invalid: {n}");
    }
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Phones as the generator writes them for people of random offices.
fn mix(count: usize) -> Vec<String> {
    let mut rng = Rng::new(20_240_601);
    let mut out = Vec::new();
    (0..count)
        .map(|i| {
            let loc = rng.pick(LOCATIONS);
            let line = if i % 2 == 0 {
                Line::Mobile
            } else {
                Line::Landline
            };
            out.clear();
            push_person_phone(&mut out, &mut rng, loc, line);
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}
