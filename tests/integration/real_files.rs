//! Files as Excel, HR systems and people really write them: line ends,
//! encodings, damage, renamed and repeated columns, mass clearing, invalid
//! and foreign phones. Each case checks the state, the counts and the
//! recipients exported afterwards, through the real binary.

use crate::server::*;
use crate::util::*;

/// `hr_file(people)` with every person's mobile set.
fn with_mobiles(people: std::ops::RangeInclusive<usize>) -> String {
    let mut s = format!("{HR_HEADER}\n");
    for i in people {
        s +=
            &format!("E{i:05},First{i},Last{i},user{i}@example.com,+1212555{i:04},,Sales,Active\n");
    }
    s
}

#[test]
fn cr_only_and_mixed_line_ends_import_like_lf() {
    let lf = Env::hr();
    let want = lf.import_text("hr", "lf.csv", hr_file(1..=30));
    for (name, content) in [
        ("mac.csv", hr_file(1..=30).replace('\n', "\r")),
        ("mixed.csv", {
            let mut s = String::new();
            for (k, line) in hr_file(1..=30).lines().enumerate() {
                s += line;
                s += ["\n", "\r", "\r\n"][k % 3];
            }
            s
        }),
    ] {
        let env = Env::hr();
        let run = env.import_text("hr", name, content);
        assert_eq!(run.state(), "applied", "{:#}", run.json);
        run.assert_counts(&[("rows", 30), ("added", 30), ("flagged", 0)]);
        assert_eq!(env.export("hr"), lf.export("hr"), "{name}");
    }
    assert_eq!(want.n("added"), 30);
    // Against a filled feed, the CR-only file is the same data: unchanged.
    let again = lf.import_text("hr", "mac.csv", hr_file(1..=30).replace('\n', "\r"));
    assert_eq!(again.state(), "unchanged", "{:#}", again.json);
}

#[test]
fn a_renamed_column_holds_the_run_and_confirming_clears_it() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", with_mobiles(1..=20));
    let renamed = with_mobiles(1..=20).replacen("Mobile Phone", "Cell", 1);
    let run = env.import_text("hr", "day2.csv", renamed);
    assert_eq!(run.state(), "held", "{:#}", run.json);
    let reason = run.reason();
    assert!(
        reason.contains("'Mobile Phone' (field 'mobile') is missing")
            && reason.contains("Cell")
            && reason.contains("20 stored values"),
        "{reason}"
    );
    assert_eq!(
        env.recipient("hr", "E00001").unwrap()["mobile"],
        "+12125550001"
    );
    let out = env.run(&["runs", "confirm", &run.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(env.recipient("hr", "E00001").unwrap()["mobile"], "");
}

#[test]
fn emptying_a_channel_field_is_held_past_the_clear_threshold() {
    let env = Env::new(&[
        Feed::hr("hr"),
        Feed::hr("off").extra("clear_threshold = \"none\""),
    ]);
    let mut day2 = with_mobiles(1..=20);
    for i in 1..=5 {
        day2 = day2.replace(&format!("+1212555{i:04}"), "");
    }
    for feed in ["hr", "off"] {
        env.import_text(feed, "day1.csv", with_mobiles(1..=20));
        let run = env.import_text(feed, "day2.csv", &day2);
        if feed == "hr" {
            assert_eq!(run.state(), "held", "{:#}", run.json);
            assert_eq!(
                run.reason(),
                "would empty 5 of 20 stored values of 'Mobile Phone' (a delivery channel), 25.0% > 10%"
            );
            run.assert_counts(&[("updated", 5)]);
            assert_eq!(
                env.recipient(feed, "E00001").unwrap()["mobile"],
                "+12125550001"
            );
        } else {
            assert_eq!(run.state(), "applied", "{:#}", run.json);
            assert_eq!(env.recipient(feed, "E00001").unwrap()["mobile"], "");
        }
    }
    // A dry run says the same, and changes nothing.
    let dry = env.import("hr", &env.input("again.csv", &day2), &["--dry-run"]);
    assert_eq!(dry.state(), "held");
}

#[test]
fn an_open_quote_or_a_cut_off_upload_fails_the_file_and_removes_no_one() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=300));
    let before = env.export("hr");
    let open = hr_file(1..=300).replacen("First280,", "\"First280,", 1);
    let run = env.import_text("hr", "open.csv", open);
    assert_eq!(run.state(), "failed");
    assert!(
        run.reason()
            .contains("line 281, column 2 ('First Name') is never closed"),
        "{}",
        run.reason()
    );
    let swallowing = hr_file(1..=300)
        .replacen("First100,", "\"First100,", 1)
        .replacen("First104,", "First104\",", 1);
    let run = env.import_text("hr", "middle.csv", swallowing);
    assert_eq!(run.state(), "failed");
    assert!(
        run.reason().contains("runs on to line 105"),
        "{}",
        run.reason()
    );
    let full = hr_file(1..=300);
    let cut = &full[..full.len() - 20];
    let run = env.import_text("hr", "cut.csv", cut);
    assert_eq!(run.state(), "failed");
    assert!(run.reason().contains("looks cut off"), "{}", run.reason());
    assert_eq!(env.export("hr"), before);
}

#[test]
fn a_mixed_encoding_file_keeps_utf8_and_its_correction_fixes_the_row() {
    let env = Env::hr();
    let day1 = lines(&[
        HR_HEADER,
        "E1,José,Lee,a@example.com,,,Sales,Active",
        "E2,Zoë,Ray,b@example.com,,,Sales,Active",
        "E3,Renée,Ng,c@example.com,,,Sales,Active",
    ]);
    env.import_text("hr", "day1.csv", &day1);
    // Day 2: E2 renamed, E3 typed in Windows-1252 by another tool.
    let mut day2 = day1.replace("Zoë", "Zoë Ann").into_bytes();
    let at = day2
        .windows("Renée".len())
        .position(|w| w == "Renée".as_bytes())
        .expect("Renée");
    day2.splice(at + 3..at + 5, [0xE9]);
    let run = env.import_text("hr", "day2.csv", &day2);
    assert_eq!(run.json["encoding"], "utf-8");
    run.assert_counts(&[("updated", 1), ("flagged", 1)]);
    assert_eq!(env.recipient("hr", "E2").unwrap()["first_name"], "Zoë Ann");
    assert_eq!(env.recipient("hr", "E3").unwrap()["first_name"], "Renée");
    // A whole Windows-1252 file is read as one, and the next UTF-8 file
    // (the same people) changes nothing.
    let cp1252 = day1.replace("Zoë", "Zoë Ann");
    let cp1252: Vec<u8> = cp1252
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1"))
        .collect();
    let run = env.import_text("hr", "day3.csv", &cp1252);
    assert_eq!(run.json["encoding"], "windows-1252");
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
    let run = env.import_text("hr", "day4.csv", day1.replace("Zoë", "Zoë Ann"));
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
}

#[test]
fn files_that_are_not_csv_and_repeated_columns_fail_with_words() {
    let env = Env::hr();
    for (name, bytes, words) in [
        (
            "book.xlsx",
            b"PK\x03\x04\x14\x00\x06\x00\x08\x00[Content_Types].xml\x1b[31mxl/workbook.xml"
                .to_vec(),
            "Excel workbook (.xlsx)",
        ),
        ("scan.pdf", b"%PDF-1.7\n\x1b]0;x\x07".to_vec(), "PDF"),
        (
            "data.csv.gz",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(),
            "gzip",
        ),
    ] {
        let run = env.import_text("hr", name, bytes);
        assert_eq!(run.state(), "failed");
        assert!(run.reason().contains(words), "{}", run.reason());
        assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    }
    let twice = hr_file(1..=3).replacen("Status", "EmpID", 1);
    let run = env.import_text("hr", "twice.csv", twice);
    assert_eq!(run.state(), "failed");
    assert!(
        run.reason().contains(
            "columns 1 ('Employee ID') and 8 ('EmpID') both map to the field 'employee_id'"
        ),
        "{}",
        run.reason()
    );
    assert!(env.exported_ids("hr").is_empty());
}

#[test]
fn phones_must_be_valid_in_their_numbering_plan() {
    for (country, numbers) in [
        (
            "US",
            vec![
                ("(212) 555-0123", Some("+12125550123")),
                ("+49 (0)151 23456789", Some("+4915123456789")),
                ("+44 (0) 20 7946 0958", Some("+442079460958")),
                ("06 12 34 56 78", None),
                ("(555) 555-5555", None),
                ("+33 6 12 34 56 78", Some("+33612345678")),
                ("212-555-0123 ext. 45", Some("+12125550123")),
            ],
        ),
        (
            "GB",
            vec![
                ("020 7946 0958", Some("+442079460958")),
                ("07912 345678", Some("+447912345678")),
                ("(212) 555-0123", None),
                ("+1 212 555 0123", Some("+12125550123")),
            ],
        ),
    ] {
        let env = Env::hr();
        // Feed::hr reads phones against the US; the GB feed's file says GB.
        let config = std::fs::read_to_string(&env.config).expect("config");
        env.write_config(&config.replace(
            "default_country = \"US\"",
            &format!("default_country = \"{country}\""),
        ));
        let mut content = format!("{HR_HEADER}\n");
        for (i, (number, _)) in numbers.iter().enumerate() {
            content += &format!("P{i},First,Last,p{i}@example.com,\"{number}\",,Sales,Active\n");
        }
        let run = env.import_text("hr", "phones.csv", &content);
        // Every person has an email: an invalid phone is a warning.
        run.assert_counts(&[("added", numbers.len() as u64), ("flagged", 0)]);
        let invalid = numbers.iter().filter(|(_, want)| want.is_none()).count();
        // The extension is a warning too.
        let extensions = numbers.iter().filter(|(n, _)| n.contains("ext")).count();
        assert_eq!(
            run.n("warnings"),
            (invalid + extensions) as u64,
            "{:#}",
            run.json
        );
        for (i, (number, want)) in numbers.iter().enumerate() {
            let stored = env.recipient("hr", &format!("P{i}")).unwrap()["mobile"].clone();
            assert_eq!(stored, want.unwrap_or(""), "{country} {number}");
        }
        let show = env.run_show(&run.id());
        let reasons: Vec<String> = show["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .flat_map(|e| e["reasons"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
        if country == "US" {
            assert!(
                reasons
                    .iter()
                    .any(|r| r.contains("'06 12 34 56 78' is not a valid US number")
                        && r.contains("international form")),
                "{reasons:?}"
            );
            assert!(
                reasons.iter().any(|r| r.contains("extension 45")),
                "{reasons:?}"
            );
        }
    }
}

#[test]
#[cfg(feature = "e2e")]
fn an_open_quote_uploaded_over_sftp_fails_and_keeps_everyone() {
    let s = Setup::standard();
    ok(
        &s.key_client()
            .session(vec![put("/upload/day1.csv", &hr_file(1..=300))])[0],
        "upload day 1",
    );
    s.wait_for_exactly(1);
    let before = s.env.export("hr");
    let open = hr_file(1..=300).replacen("First290,", "\"First290,", 1);
    ok(
        &s.key_client().session(vec![put("/upload/day2.csv", &open)])[0],
        "upload day 2",
    );
    let runs = s.wait_for_exactly(2);
    assert_run(&runs[1], "day2.csv", "failed", &[]);
    let reason = runs[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("line 291"), "{reason}");
    assert_eq!(s.env.export("hr"), before);
    assert!(runs[1]["error_report"].is_string(), "{:#}", runs[1]);
}

#[test]
fn a_confirmed_run_without_errors_keeps_no_stale_report_of_its_hold() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", with_mobiles(1..=20));
    // Held (a renamed column), with one row warned about (a department
    // over the 255 characters a field takes by default).
    let long = "D".repeat(300);
    let day2 = with_mobiles(1..=20)
        .replacen("Mobile Phone", "Cell", 1)
        .replacen(
            "user3@example.com,+12125550003,,Sales",
            &format!("user3@example.com,+12125550003,,{long}"),
            1,
        );
    let held = env.import_text("hr", "day2.csv", day2);
    assert_eq!(held.state(), "held", "{:#}", held.json);
    let report = held.json["error_report"]
        .as_str()
        .expect("a report")
        .to_string();
    assert!(std::path::Path::new(&report).exists());
    // The administrator allows longer departments before confirming: the
    // confirmed run has no row errors, so the hold's report goes.
    let config = std::fs::read_to_string(&env.config).expect("config");
    let relaxed = config.replacen(
        "column = \"Department\"",
        "column = \"Department\"\n  max_length = 400",
        1,
    );
    assert_ne!(relaxed, config);
    env.write_config(&relaxed);
    let out = env.run(&["runs", "confirm", &held.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("confirm");
    assert_eq!(
        confirmed["error_report"],
        serde_json::Value::Null,
        "{confirmed:#}"
    );
    assert!(!std::path::Path::new(&report).exists(), "{report} is stale");
}
