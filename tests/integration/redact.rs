//! `support bundle --redact`: bundles of every kind of run that hold none
//! of the file's or the store's personal values, and still replay
//! identically.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::server::*;
use crate::support::{bundle_with, entries, replay, serve_files};
use crate::util::*;

const FIRST: [&str; 8] = [
    "José",
    "Zoë",
    "Siobhán",
    "Mary-Jane",
    "Jean-Luc",
    "Ana",
    "Björn",
    "Øyvind",
];
const LAST: [&str; 8] = [
    "García",
    "O'Brien",
    "Müller",
    "Nguyen",
    "Smith, Jr.",
    "van der Berg",
    "Østergaard",
    "Kowalski",
];
const HEADER: &str =
    "Employee ID,First Name,Last Name,Email,Mobile Phone,Office Phone,Department,Status,Notes";

/// One person's cells (not yet CSV-quoted).
struct Person {
    id: String,
    first: String,
    last: String,
    email: String,
    mobile: String,
    office: String,
    department: &'static str,
    status: &'static str,
    notes: String,
}

fn person(i: usize) -> Person {
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / 3) % LAST.len()];
    let ascii = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_lowercase()
    };
    Person {
        id: format!("{:06}", 1000 + i * 7),
        first: first.to_string(),
        last: last.to_string(),
        email: format!("{}.{}{i}@acme-corp.com", ascii(first), ascii(last)),
        mobile: format!("(212) {}-{:04}", 240 + i, 1000 + i * 37),
        office: if i.is_multiple_of(4) {
            format!("+44 20 7946 {:04}", 1000 + i)
        } else {
            String::new()
        },
        department: ["Sales", "Engineering", "Finance", "Support"][i % 4],
        status: "Active",
        notes: format!("lives at {} Elm Street", 10 + i),
    }
}

fn csv_cell(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn csv_row(p: &Person) -> String {
    [
        p.id.as_str(),
        &p.first,
        &p.last,
        &p.email,
        &p.mobile,
        &p.office,
        p.department,
        p.status,
        &p.notes,
    ]
    .iter()
    .map(|c| csv_cell(c))
    .collect::<Vec<_>>()
    .join(",")
}

/// People that make every kind of row: a warning for an invalid email, an
/// extension dropped, a national number that is not American, a repeated
/// ID, an empty ID, a quoted name with an escaped quote, a filtered row.
fn odd_people() -> Vec<Person> {
    let mut warned = person(101);
    warned.email = "maria@@acme-corp".into();
    let mut extension = person(102);
    extension.mobile = "(212) 264-0142 ext. 204".into();
    let mut foreign = person(103);
    foreign.office = "06 12 34 56 78".into();
    let repeated = Person {
        first: "Repeated".into(),
        ..person(1)
    };
    let empty_id = Person {
        id: String::new(),
        ..person(104)
    };
    let mut quoted = person(105);
    quoted.first = "Robert \"Bob\"".into();
    let mut filtered = person(106);
    filtered.status = "Inactive";
    vec![
        warned, extension, foreign, repeated, empty_id, quoted, filtered,
    ]
}

fn file(people: impl Iterator<Item = Person>) -> String {
    let mut text = format!("{HEADER}\r\n");
    for p in people {
        text += &csv_row(&p);
        text += "\r\n";
    }
    text
}

/// Every personal value of these people as a file or the store holds it.
fn personal_values(people: &[Person]) -> Vec<String> {
    let mut values = Vec::new();
    for p in people {
        values.extend([
            p.first.clone(),
            p.last.clone(),
            p.email.clone(),
            p.mobile.clone(),
            p.notes.clone(),
        ]);
        if !p.office.is_empty() {
            values.push(p.office.clone());
        }
        for phone in [&p.mobile, &p.office] {
            let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
            if phone.starts_with('(') {
                values.push(format!("+1{}", &digits[..10]));
            } else if phone.starts_with("+44") {
                values.push(format!("+{digits}"));
            }
        }
    }
    values.retain(|v| v.len() > 2);
    values.sort();
    values.dedup();
    values
}

fn all_people() -> Vec<Person> {
    (1..=32).map(person).chain(odd_people()).collect()
}

fn feed() -> Feed {
    Feed::hr("hr").filter("status", &["Active"])
}

/// The ID column of a CSV text, row by row.
fn ids_of(text: &str) -> Vec<String> {
    csv::ReaderBuilder::new()
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().get(0).unwrap_or("").to_string())
        .collect()
}

#[test]
fn redacted_bundles_hold_no_personal_value_and_replay_identically() {
    let env = sftp_env_with(&[feed()], &[], &[]);
    let day1 = file((1..=30).map(person).chain(odd_people()));
    // Two removed, an email and a mobile changed, two added.
    let day2 = file(
        (1..=32)
            .filter(|i| ![7, 8].contains(i))
            .map(|i| {
                let mut p = person(i);
                if i == 5 {
                    p.email = "jose.new5@acme-corp.com".into();
                }
                if i == 6 {
                    p.mobile = "(212) 246-7777".into();
                }
                p
            })
            .chain(odd_people()),
    );
    let held = file((1..=12).map(person));
    let mut broken = file((1..=10).map(person));
    broken += "0099,\"Unclosed, Name,x@acme-corp.com\r\n";
    let files = vec![
        ("day1.csv", day1.clone()),
        ("day2.csv", day2.clone()),
        ("day3.csv", day2.clone()),
        ("held.csv", held),
        ("broken.csv", broken),
    ];
    let runs = serve_files(&env, &files);
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["applied", "applied", "unchanged", "held", "failed"],
        "{runs:#?}"
    );
    assert!(runs[0]["warnings"].as_u64().unwrap() >= 3, "{:#}", runs[0]);
    assert!(runs[0]["flagged"].as_u64().unwrap() >= 2, "{:#}", runs[0]);
    assert!(runs[1]["removed"].as_u64() == Some(2) && runs[1]["added"].as_u64() == Some(2));

    let mut people = all_people();
    people.push(Person {
        email: "jose.new5@acme-corp.com".into(),
        mobile: "(212) 246-7777".into(),
        ..person(5)
    });
    let personal = personal_values(&people);
    for run in &runs {
        let id = run_id_of(run);
        // The real bundle holds the values (the search below can find them).
        let (plain, out) = bundle_with(&env, &id, &[], "plain");
        assert_eq!(out.code, 0, "{out:#?}");
        let plain_text = bundle_text(&plain);
        assert!(plain_text.contains("Müller"), "run {id}");

        let (path, out) = bundle_with(&env, &id, &["--redact"], "redacted");
        assert_eq!(out.code, 0, "bundle --redact of run {id}: {out:#?}");
        assert!(out.stdout.contains("pseudonyms"), "{out:#?}");
        let found: Vec<(String, &String)> = entries(&path)
            .into_iter()
            .flat_map(|(name, bytes)| {
                let entry = String::from_utf8_lossy(&bytes).into_owned();
                personal
                    .iter()
                    .filter(move |v| entry.contains(v.as_str()))
                    .map(move |v| (name.clone(), v))
            })
            .collect();
        assert!(
            found.is_empty(),
            "run {id}'s redacted bundle holds {found:?}"
        );
        let text = bundle_text(&path);
        assert!(text.contains("Engineering"), "departments stay");
        let manifest: Value = serde_json::from_slice(&entries(&path)["manifest.json"]).unwrap();
        assert_eq!(manifest["redacted"], true);
        assert_eq!(
            manifest["warnings"].as_array().map(Vec::len),
            Some(0),
            "{manifest:#}"
        );

        let (code, replayed) = replay(&env, &path);
        assert_eq!(code, 0, "run {id} ({}): {replayed:#}", run["state"]);
        assert_eq!(replayed["verdict"], "identical");
    }

    // IDs keep their order, repeats and empties; values stay the same
    // pseudonym throughout (day 2's file against its people before).
    let (path, _) = bundle_with(&env, &run_id_of(&runs[1]), &["--redact"], "order");
    let all = entries(&path);
    let file = String::from_utf8(all["file/day2.csv"].clone()).unwrap();
    let (old, new) = (ids_of(&day2), ids_of(&file));
    assert_eq!(old.len(), new.len());
    for i in 0..old.len() {
        assert_eq!(old[i].is_empty(), new[i].is_empty());
        assert_eq!(old[i].len(), new[i].len());
        for j in 0..old.len() {
            assert_eq!(
                old[i].cmp(&old[j]),
                new[i].cmp(&new[j]),
                "IDs {} and {} became {} and {}",
                old[i],
                old[j],
                new[i],
                new[j]
            );
        }
    }
    assert_ne!(old, new, "IDs are pseudonyms");
    // --redact-groups: the departments are pseudonyms too.
    let (path, out) = bundle_with(&env, &run_id_of(&runs[1]), &["--redact-groups"], "groups");
    assert_eq!(out.code, 0, "{out:#?}");
    let text = bundle_text(&path);
    for department in ["Sales", "Engineering", "Finance", "Support"] {
        assert!(!text.contains(department), "{department} is still there");
    }
    let (code, replayed) = replay(&env, &path);
    assert_eq!(code, 0, "{replayed:#}");
}

/// Every entry of a bundle as text, one after the other.
fn bundle_text(path: &std::path::Path) -> String {
    entries(path)
        .values()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

// ------------------------------------------------------------------------
// Files as customers send them
// ------------------------------------------------------------------------

/// Employee ID, first, last, email, mobile, office, department, status.
type Row = [&'static str; 8];

const CUSTOMER_HEADER: Row = [
    "Employee ID",
    "First Name",
    "Last Name",
    "Email",
    "Mobile Phone",
    "Office Phone",
    "Department",
    "Status",
];

/// People whose names need more than ASCII (every letter in Latin-1, so
/// that a Windows-1252 file writes each as one byte).
const CUSTOMERS: [Row; 6] = [
    [
        "100101",
        "José",
        "Muñoz",
        "jose.munoz@acme-corp.com",
        "(212) 555-0101",
        "+44 20 7946 0101",
        "Sales",
        "Active",
    ],
    [
        "100102",
        "Zoë",
        "Müller",
        "zoe.mueller@acme-corp.com",
        "+1 646 555 0102",
        "",
        "Engineering",
        "Active",
    ],
    [
        "100103",
        "Renée",
        "Peña",
        "renee.pena@acme-corp.com",
        "212.555.0103",
        "",
        "Finance",
        "Active",
    ],
    [
        "100104",
        "Jürgen",
        "Ibáñez",
        "jurgen.ibanez@acme-corp.com",
        "(917) 555-0104",
        "",
        "Engineering",
        "Active",
    ],
    [
        "100105",
        "Françoise",
        "Ødegård",
        "f.odegard@acme-corp.com",
        "(212) 555-0105",
        "",
        "Support",
        "Active",
    ],
    [
        "100106",
        "Ñuño",
        "Sørensen",
        "nuno.sorensen@acme-corp.com",
        "(718) 555-0106",
        "",
        "Sales",
        "Inactive",
    ],
];

/// The second day: José's email changed, Inés added.
fn customers_day2() -> Vec<Row> {
    let mut rows = CUSTOMERS.to_vec();
    rows[0][3] = "jose.new@acme-corp.com";
    rows.push([
        "100107",
        "Inés",
        "Castaño",
        "ines.castano@acme-corp.com",
        "(212) 555-0107",
        "",
        "Finance",
        "Active",
    ]);
    rows
}

/// One number, three people, three spellings.
const SHARED_PHONE: [Row; 3] = [
    [
        "100201",
        "Anabel",
        "Quiñones",
        "anabel.q@acme-corp.com",
        "+1 212 555 0134",
        "",
        "Sales",
        "Active",
    ],
    [
        "100202",
        "Beatriz",
        "Lindqvist",
        "beatriz.l@acme-corp.com",
        "(212) 555-0134",
        "",
        "Finance",
        "Active",
    ],
    [
        "100203",
        "Cleopatra",
        "Hartmann",
        "cleo.h@acme-corp.com",
        "212.555.0134",
        "",
        "Support",
        "Active",
    ],
];

/// The rows as text: cells joined by `delimiter`, lines ended by `end`.
fn customer_text(rows: &[Row], delimiter: &str, end: &str) -> String {
    std::iter::once(&CUSTOMER_HEADER)
        .chain(rows)
        .map(|row| row.join(delimiter) + end)
        .collect()
}

/// Windows-1252 (Latin-1's letters are the same code points).
fn windows_1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 letter"))
        .collect()
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

/// A phone as the store holds it (national ones are American).
fn e164(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if phone.starts_with('+') {
        format!("+{digits}")
    } else {
        format!("+1{digits}")
    }
}

/// Every name, email and phone (as written and in E.164) of the rows.
fn customer_values(rows: &[Row]) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for row in rows {
        values.extend(row[1..=3].iter().map(|v| v.to_string()));
        for phone in &row[4..=5] {
            if !phone.is_empty() {
                values.push(phone.to_string());
                values.push(e164(phone));
            }
        }
    }
    values.sort();
    values.dedup();
    values
}

/// The rows the feed's filter lets in.
fn stored(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| r[7] == "Active").copied().collect()
}

/// Whether `value` is in `bytes` as UTF-8, Windows-1252 or UTF-16 LE.
fn holds(bytes: &[u8], value: &str) -> bool {
    let mut needles = vec![
        value.as_bytes().to_vec(),
        utf16le_with_bom(value)[2..].to_vec(),
    ];
    if value.chars().all(|c| u32::from(c) < 0x100) {
        needles.push(windows_1252(value));
    }
    needles
        .iter()
        .any(|needle| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
}

/// Serves `files` (in order), bundles each run with `--redact` and checks
/// that none of `personal` is left and that it replays identically;
/// returns the redacted bundles (with the environment they are in).
/// `before_last`: values the last run's real
/// bundle holds (its people before), to show the search finds them.
fn redacts_and_replays(
    files: &[(&str, Vec<u8>)],
    personal: &[String],
    before_last: &[String],
) -> (Env, Vec<PathBuf>) {
    let env = sftp_env_with(&[feed()], &[], &[]);
    let runs = serve_files(&env, files);
    for run in &runs {
        assert_eq!(run["state"], "applied", "{runs:#?}");
        assert_eq!(run["warnings"].as_u64(), Some(0), "{run:#}");
        assert_eq!(run["flagged"].as_u64(), Some(0), "{run:#}");
    }
    // The search below finds the values where they are.
    let last = run_id_of(runs.last().unwrap());
    let (plain, out) = bundle_with(&env, &last, &[], "plain");
    assert_eq!(out.code, 0, "{out:#?}");
    let plain = entries(&plain);
    for value in before_last {
        assert!(
            plain.values().any(|bytes| holds(bytes, value)),
            "{value} is not in the real bundle"
        );
    }
    let mut bundles = Vec::new();
    for run in &runs {
        let id = run_id_of(run);
        let (path, out) = bundle_with(&env, &id, &["--redact"], "redacted");
        assert_eq!(out.code, 0, "bundle --redact of run {id}: {out:#?}");
        let all = entries(&path);
        let found: Vec<(&String, &String)> = all
            .iter()
            .flat_map(|(name, bytes)| {
                personal
                    .iter()
                    .filter(|v| holds(bytes, v))
                    .map(move |v| (name, v))
            })
            .collect();
        assert!(
            found.is_empty(),
            "run {id}'s redacted bundle holds {found:?}"
        );
        let manifest: Value = serde_json::from_slice(&all["manifest.json"]).unwrap();
        assert_eq!(manifest["redacted"], true);
        assert_eq!(
            manifest["warnings"].as_array().map(Vec::len),
            Some(0),
            "{manifest:#}"
        );
        let (code, replayed) = replay(&env, &path);
        assert_eq!(code, 0, "run {id}: {replayed:#}");
        assert_eq!(replayed["verdict"], "identical", "run {id}: {replayed:#}");
        bundles.push(path);
    }
    (env, bundles)
}

/// The encoding the run read its file in, from a bundle's run record.
fn encoding_of(bundle: &Path) -> Value {
    let run: Value = serde_json::from_slice(&entries(bundle)["run.json"]).unwrap();
    run["encoding"].clone()
}

/// The run's file in a bundle.
fn bundled_file(bundle: &Path) -> Vec<u8> {
    entries(bundle)
        .into_iter()
        .find(|(name, _)| name.starts_with("file/"))
        .expect("the run's file")
        .1
}

#[test]
fn a_windows_1252_file_with_semicolons_is_redacted_and_replays() {
    let day1 = windows_1252(&customer_text(&CUSTOMERS, ";", "\r\n"));
    let day2 = windows_1252(&customer_text(&customers_day2(), ";", "\r\n"));
    let (_env, bundles) = redacts_and_replays(
        &[("day1.csv", day1), ("day2.csv", day2.clone())],
        &customer_values(&customers_day2()),
        &customer_values(&stored(&CUSTOMERS)),
    );
    let file = bundled_file(&bundles[1]);
    assert_eq!(encoding_of(&bundles[1]), "windows-1252");
    assert!(std::str::from_utf8(&file).is_err(), "still Windows-1252");
    assert_eq!(file.len(), day2.len(), "one byte a letter still");
    assert!(file.starts_with(&windows_1252(&CUSTOMER_HEADER.join(";"))));
}

#[test]
fn a_utf16_tab_separated_file_is_redacted_and_replays() {
    let day1 = utf16le_with_bom(&customer_text(&CUSTOMERS, "\t", "\r\n"));
    let day2 = utf16le_with_bom(&customer_text(&customers_day2(), "\t", "\r\n"));
    let (_env, bundles) = redacts_and_replays(
        &[("day1.txt.csv", day1), ("day2.txt.csv", day2.clone())],
        &customer_values(&customers_day2()),
        &customer_values(&stored(&CUSTOMERS)),
    );
    let file = bundled_file(&bundles[1]);
    assert_eq!(encoding_of(&bundles[1]), "utf-16le");
    assert!(file.starts_with(&[0xFF, 0xFE]), "still UTF-16 LE");
    assert_eq!(file.len(), day2.len());
}

#[test]
fn a_file_with_cr_line_ends_is_redacted_and_replays() {
    let day1 = customer_text(&CUSTOMERS, ",", "\r").into_bytes();
    let day2 = customer_text(&customers_day2(), ",", "\r").into_bytes();
    let (_env, bundles) = redacts_and_replays(
        &[("day1.csv", day1), ("day2.csv", day2.clone())],
        &customer_values(&customers_day2()),
        &customer_values(&stored(&CUSTOMERS)),
    );
    let file = bundled_file(&bundles[1]);
    assert!(!file.contains(&b'\n'), "still CR only");
    assert_eq!(
        file.iter().filter(|&&b| b == b'\r').count(),
        day2.iter().filter(|&&b| b == b'\r').count()
    );
}

#[test]
fn one_number_in_three_spellings_gets_one_pseudonym() {
    let rows: Vec<Row> = CUSTOMERS.iter().chain(&SHARED_PHONE).copied().collect();
    let mut day2_rows = customers_day2();
    day2_rows.extend(SHARED_PHONE);
    let day1 = customer_text(&rows, ",", "\r\n").into_bytes();
    let day2 = customer_text(&day2_rows, ",", "\r\n").into_bytes();
    let (_env, bundles) = redacts_and_replays(
        &[("day1.csv", day1), ("day2.csv", day2)],
        &customer_values(&day2_rows),
        &customer_values(&stored(&rows)),
    );
    let all = entries(&bundles[1]);
    // The file: three spellings kept, one number.
    let file = String::from_utf8(bundled_file(&bundles[1])).unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(file.as_bytes());
    let mobiles: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[4].to_string())
        .skip(CUSTOMERS.len() + 1)
        .collect();
    assert_eq!(mobiles.len(), 3, "{file}");
    assert!(mobiles[0].starts_with("+1 212 "), "{mobiles:?}");
    assert!(mobiles[1].starts_with("(212) "), "{mobiles:?}");
    assert!(mobiles[2].starts_with("212."), "{mobiles:?}");
    let numbers: Vec<String> = mobiles.iter().map(|m| e164(m)).collect();
    assert!(
        numbers.iter().all(|n| *n == numbers[0]) && numbers[0] != "+12125550134",
        "{mobiles:?}"
    );
    // The people before: the stored number is that one for all three.
    let people = String::from_utf8(all["before/people.jsonl"].clone()).unwrap();
    let stored: Vec<String> = people
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|p| p["values"][4].as_str().map(str::to_string))
        .filter(|n| *n == numbers[0])
        .collect();
    assert_eq!(stored.len(), 3, "{people}");
}

/// `bytes` expanded from a gzip file or a one-file ZIP archive.
fn unpacked(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if bytes.starts_with(b"\x1f\x8b") {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("a gzip file");
    } else {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        assert_eq!(zip.len(), 1);
        zip.by_index(0)
            .unwrap()
            .read_to_end(&mut out)
            .expect("its one file");
    }
    out
}

#[test]
fn a_compressed_file_is_redacted_inside_and_packed_again() {
    let day1 = customer_text(&CUSTOMERS, ",", "\n");
    let day2 = customer_text(&customers_day2(), ",", "\n");
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(day2.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let zip = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("customers.csv", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(day2.as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    };
    let personal = customer_values(&customers_day2());
    for (name, packed, magic) in [
        ("day2.csv.gz", gzip, &b"\x1f\x8b"[..]),
        ("day2.zip", zip, &b"PK\x03\x04"[..]),
    ] {
        let (_env, bundles) = redacts_and_replays(
            &[("day1.csv", day1.clone().into_bytes()), (name, packed)],
            &personal,
            // The real bundle's file is packed: its values are not found
            // as they are.
            &[],
        );
        let file = bundled_file(&bundles[1]);
        assert!(file.starts_with(magic), "{name}: packed as it was sent");
        let inside = unpacked(&file);
        assert!(inside.starts_with(CUSTOMER_HEADER.join(",").as_bytes()));
        let left: Vec<&String> = personal.iter().filter(|v| holds(&inside, v)).collect();
        assert!(left.is_empty(), "{name}: {left:?} left inside");
    }
}
