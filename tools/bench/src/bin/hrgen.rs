//! hrgen: deterministic generator of realistic 33-column HR CSV files.
//!
//! ```text
//! hrgen --rows N --seed S --out FILE [--meta FILE]
//! hrgen next-day --base FILE --seed S --out FILE [--meta FILE]
//! ```
//!
//! The same arguments always give byte-identical output. `--meta` writes
//! `key=value` lines describing the file (rows, bytes, seed) and the counts a
//! flagsync import of it should report with the benchmark configuration
//! (`tools/bench/flagsync-bench.toml`, whose filter keeps Status `Active` and
//! `Leave`).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use flagsync_bench::csvio::{push_record, split_record, trim_eol, RecordReader};
use flagsync_bench::data::*;
use flagsync_bench::gen::*;
use flagsync_bench::rng::Rng;

const VERSION: &str = "hrgen-1";
const CHUNK: usize = 4 << 20;

const USAGE: &str = "\
usage: hrgen --rows N --seed S --out FILE [--meta FILE]
       hrgen next-day --base FILE --seed S --out FILE [--meta FILE]

Writes a deterministic HR CSV file (33 columns, header row, IDs E0000001...
in ascending order). next-day streams a base file and writes its next-day
variant: ~1% of rows changed (mobile phone, department or job title), ~0.5%
removed, 0.5% added with new IDs beyond the base's maximum.
--meta FILE writes key=value facts about the output (rows, bytes, expected
flagsync counts with the benchmark configuration). --version prints the
output version (it changes whenever the bytes for a seed change).";

struct Args {
    next_day: bool,
    rows: Option<u64>,
    seed: u64,
    out: PathBuf,
    base: Option<PathBuf>,
    meta: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1).peekable();
    let mut next_day = false;
    if it.peek().map(String::as_str) == Some("next-day") {
        next_day = true;
        it.next();
    }
    let (mut rows, mut seed, mut out, mut base, mut meta) = (None, None, None, None, None);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "-V" || flag == "--version" {
            // The generator's output version: bumped whenever the bytes for
            // a given seed change (scripts/bench re-generates cached files).
            println!("{VERSION}");
            std::process::exit(0);
        }
        if flag == "--next-day" {
            next_day = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--rows" => {
                rows = Some(parse_count(&value).ok_or(format!("bad --rows: {value}"))?);
            }
            "--seed" => {
                seed = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("bad --seed: {value}"))?,
                )
            }
            "--out" | "-o" => out = Some(PathBuf::from(value)),
            "--base" => base = Some(PathBuf::from(value)),
            "--meta" => meta = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument: {flag}")),
        }
    }
    let out = out.ok_or("--out is required")?;
    let seed = seed.unwrap_or(1);
    if next_day {
        if base.is_none() {
            return Err("next-day needs --base FILE".into());
        }
        if rows.is_some() {
            return Err("next-day takes its rows from --base; drop --rows".into());
        }
    } else if rows.is_none() {
        return Err("--rows is required".into());
    }
    Ok(Args {
        next_day,
        rows,
        seed,
        out,
        base,
        meta,
    })
}

/// `1000000`, `1_000_000`, `100k`, `1M`, `10m`.
fn parse_count(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1_000),
        'm' | 'M' => (&s[..s.len() - 1], 1_000_000),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hrgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = if args.next_day {
        next_day(&args)
    } else {
        base(&args)
    };
    match result {
        Ok(facts) => {
            let bytes = fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
            let mut lines = facts;
            lines.push(("bytes".into(), bytes.to_string()));
            let summary: Vec<String> = lines.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!(
                "hrgen: wrote {} in {:.2}s: {}",
                args.out.display(),
                started.elapsed().as_secs_f64(),
                summary.join(" ")
            );
            if let Some(meta) = &args.meta {
                let mut text = String::new();
                for l in &summary {
                    text.push_str(l);
                    text.push('\n');
                }
                if let Err(e) = fs::write(meta, text) {
                    eprintln!("hrgen: cannot write {}: {e}", meta.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hrgen: {e}");
            let _ = fs::remove_file(tmp_path(&args.out));
            ExitCode::FAILURE
        }
    }
}

type Facts = Vec<(String, String)>;

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}

/// Writes through a temporary name, renamed into place when complete, so an
/// existing output file is always a whole one.
struct Output {
    w: BufWriter<File>,
    tmp: PathBuf,
    out: PathBuf,
}

impl Output {
    fn create(out: &Path) -> Result<Self, String> {
        let tmp = tmp_path(out);
        let f = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(Output {
            w: BufWriter::with_capacity(1 << 20, f),
            tmp,
            out: out.to_path_buf(),
        })
    }

    fn write(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        self.w
            .write_all(buf)
            .map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))?;
        buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        self.w
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))?;
        drop(self.w);
        fs::rename(&self.tmp, &self.out)
            .map_err(|e| format!("cannot rename to {}: {e}", self.out.display()))
    }
}

fn base(args: &Args) -> Result<Facts, String> {
    let rows = args.rows.unwrap_or(0);
    let width = id_width(rows);
    let mut out = Output::create(&args.out)?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    RowGen::push_header(&mut buf);
    let mut gen = RowGen::new(args.seed, width);
    let mut kept = 0u64;
    for n in 1..=rows {
        if gen.push_row(&mut buf, n).kept_by_filter {
            kept += 1;
        }
        if buf.len() >= CHUNK {
            out.write(&mut buf)?;
        }
    }
    out.write(&mut buf)?;
    out.finish()?;
    let filtered = rows - kept;
    Ok(vec![
        ("generator".into(), VERSION.into()),
        ("kind".into(), "base".into()),
        ("seed".into(), args.seed.to_string()),
        ("rows".into(), rows.to_string()),
        // A first import into an empty store:
        ("expect_added".into(), kept.to_string()),
        ("expect_filtered".into(), filtered.to_string()),
        // Importing it again into a store that holds it:
        ("expect_unchanged".into(), kept.to_string()),
    ])
}

/// What next-day does with one base row.
enum Fate {
    Keep,
    Change,
    Remove,
}

fn fate(seed: u64, n: u64) -> Fate {
    match Rng::for_item(seed, STREAM_NEXT_DAY, n).below(10_000) {
        0..=49 => Fate::Remove,
        50..=149 => Fate::Change,
        _ => Fate::Keep,
    }
}

/// The last 7 digits of a phone value (to tell two numbers apart whatever
/// their format).
fn phone_tail(p: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = p.iter().copied().filter(u8::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(7)..].to_vec()
}

/// Change one of mobile phone, department, job title (always to a value that
/// differs from the old one).
fn change_row(fields: &mut [Vec<u8>], seed: u64, n: u64) {
    let mut rng = Rng::for_item(seed, STREAM_CHANGE, n);
    match rng.below(3) {
        0 => {
            let loc = location_by_name(&fields[COL_LOCATION]).unwrap_or(&LOCATIONS[0]);
            let old_tail = phone_tail(&fields[COL_MOBILE]);
            let mut new = Vec::with_capacity(20);
            for _ in 0..100 {
                new.clear();
                push_person_phone(&mut new, &mut rng, loc, Line::Mobile);
                if phone_tail(&new) != old_tail {
                    break;
                }
            }
            fields[COL_MOBILE] = new;
        }
        1 => loop {
            let d = rng.pick(DEPARTMENTS).as_bytes();
            if d != &fields[COL_DEPARTMENT][..] {
                fields[COL_DEPARTMENT] = d.to_vec();
                break;
            }
        },
        _ => loop {
            let t = rng.pick(TITLES).as_bytes();
            if t != &fields[COL_TITLE][..] {
                fields[COL_TITLE] = t.to_vec();
                break;
            }
        },
    }
}

fn next_day(args: &Args) -> Result<Facts, String> {
    let base_path = args.base.as_ref().expect("checked in parse_args");
    let f =
        File::open(base_path).map_err(|e| format!("cannot open {}: {e}", base_path.display()))?;
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 20, f));
    let mut out = Output::create(&args.out)?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut rec = Vec::with_capacity(1024);
    let mut fields: Vec<Vec<u8>> = Vec::with_capacity(40);
    let read_err = |e: std::io::Error| format!("cannot read {}: {e}", base_path.display());

    if !reader.read_record(&mut rec).map_err(read_err)? {
        return Err(format!("{} is empty", base_path.display()));
    }
    buf.extend_from_slice(&rec);
    if !rec.ends_with(b"\n") {
        buf.push(b'\n');
    }

    let (mut base_rows, mut kept_rows, mut changed, mut removed) = (0u64, 0u64, 0u64, 0u64);
    // Expected flagsync counts (rows whose Status the filter keeps).
    let (mut e_unchanged, mut e_updated, mut e_removed, mut e_filtered) = (0u64, 0u64, 0u64, 0u64);
    let mut max_id = 0u64;
    let mut width = 7usize;

    while reader.read_record(&mut rec).map_err(read_err)? {
        let line = trim_eol(&rec);
        if line.is_empty() {
            continue;
        }
        base_rows += 1;
        let nf = split_record(line, &mut fields);
        let (n, w) = parse_id(&fields[COL_ID]).ok_or_else(|| {
            format!(
                "record {}: ID {:?} is not like E0000001",
                base_rows,
                String::from_utf8_lossy(&fields[COL_ID])
            )
        })?;
        width = w;
        max_id = max_id.max(n);
        let active = nf > COL_STATUS && status_kept(&fields[COL_STATUS]);
        let fate = if nf == HEADER.len() {
            fate(args.seed, n)
        } else {
            Fate::Keep
        };
        match fate {
            Fate::Remove => {
                removed += 1;
                if active {
                    e_removed += 1;
                }
                continue;
            }
            Fate::Keep => {
                kept_rows += 1;
                buf.extend_from_slice(line);
                buf.push(b'\n');
                if active {
                    e_unchanged += 1;
                }
            }
            Fate::Change => {
                changed += 1;
                change_row(&mut fields[..nf], args.seed, n);
                push_record(&mut buf, &fields[..nf]);
                if active {
                    e_updated += 1;
                }
            }
        }
        if !active {
            e_filtered += 1;
        }
        if buf.len() >= CHUNK {
            out.write(&mut buf)?;
        }
    }

    let added = (base_rows + 100) / 200; // 0.5%, rounded
    let mut gen = RowGen::new(args.seed ^ 0x6e65_7874_6461_7973, width);
    let mut e_added = 0u64;
    for n in max_id + 1..=max_id + added {
        if gen.push_row(&mut buf, n).kept_by_filter {
            e_added += 1;
        } else {
            e_filtered += 1;
        }
        if buf.len() >= CHUNK {
            out.write(&mut buf)?;
        }
    }
    out.write(&mut buf)?;
    out.finish()?;

    let rows = kept_rows + changed + added;
    let base_bytes = fs::metadata(base_path).map(|m| m.len()).unwrap_or(0);
    Ok(vec![
        ("generator".into(), VERSION.into()),
        ("kind".into(), "next-day".into()),
        ("seed".into(), args.seed.to_string()),
        ("base_bytes".into(), base_bytes.to_string()),
        ("base_rows".into(), base_rows.to_string()),
        ("rows".into(), rows.to_string()),
        ("changed".into(), changed.to_string()),
        ("removed".into(), removed.to_string()),
        ("added".into(), added.to_string()),
        // Importing this file into a store that holds the base:
        ("expect_added".into(), e_added.to_string()),
        ("expect_updated".into(), e_updated.to_string()),
        ("expect_removed".into(), e_removed.to_string()),
        ("expect_unchanged".into(), e_unchanged.to_string()),
        ("expect_filtered".into(), e_filtered.to_string()),
    ])
}
