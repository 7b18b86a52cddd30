//! `support bundle --redact`: bundles of every kind of run that hold none
//! of the file's or the store's personal values, and still replay
//! identically.

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
