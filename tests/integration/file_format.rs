//! Reading files: encodings, delimiters, quoting, header matching, phones,
//! and files rejected as a whole.

use crate::util::*;

#[test]
fn windows_1252_file_is_decoded_and_reported() {
    let env = Env::hr();
    let mut content = Vec::new();
    content.extend_from_slice(HR_HEADER.as_bytes());
    content.extend_from_slice(b"\nE1,Jos\xe9,Mu\xf1oz,jose@example.com,,,Ventas,Active\n");
    content.extend_from_slice(b"E2,Ren\xe9e,M\xfcller,renee@example.com,,,R\x80D,Active\n");
    let run = env.import_text("hr", "cp1252.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["encoding"], "windows-1252", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);

    let export = env.export("hr");
    assert!(export.contains("José,Muñoz"), "{export}");
    let e1 = env.recipient("hr", "E1").unwrap();
    assert_eq!(e1["first_name"], "José");
    assert_eq!(e1["last_name"], "Muñoz");
    let e2 = env.recipient("hr", "E2").unwrap();
    assert_eq!(e2["first_name"], "Renée");
    assert_eq!(e2["last_name"], "Müller");
    assert_eq!(e2["department"], "R€D");
}

#[test]
fn utf8_file_is_reported_as_utf8() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,José,Muñoz,jose@example.com,,,Ventas,Active",
        "E2,Zoë,Ødegård,zoe@example.com,,,Ventas,Active",
    ]);
    let run = env.import_text("hr", "utf8.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["encoding"], "utf-8");
    assert_eq!(env.recipient("hr", "E1").unwrap()["first_name"], "José");
    assert_eq!(env.recipient("hr", "E2").unwrap()["last_name"], "Ødegård");
}

#[test]
fn utf8_bom_does_not_hide_the_first_column() {
    let env = Env::hr();
    let mut content = b"\xef\xbb\xbf".to_vec();
    content.extend_from_slice(hr_file(1..=3).as_bytes());
    let run = env.import_text("hr", "bom.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["encoding"], "utf-8");
    run.assert_counts(&[("rows", 3), ("added", 3)]);
    assert_eq!(env.exported_ids("hr"), [hr_id(1), hr_id(2), hr_id(3)]);
    let export = env.export("hr");
    assert!(!export.contains('\u{feff}'), "BOM leaked into the store");
}

#[test]
fn utf16_files_with_a_byte_order_mark_are_read() {
    // Excel's "Unicode text": UTF-16 with a BOM, tab-separated.
    let text = hr_file(1..=2).replace(',', "\t").replace("Ann", "Zoë");
    for (bom, big_endian, name) in [
        ([0xff, 0xfe], false, "utf-16le"),
        ([0xfe, 0xff], true, "utf-16be"),
    ] {
        let env = Env::hr();
        let mut content = bom.to_vec();
        for unit in text.encode_utf16() {
            let bytes = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            content.extend_from_slice(&bytes);
        }
        let run = env.import_text("hr", "unicode.txt", content);
        assert_eq!(run.state(), "applied", "{:#}", run.json);
        assert_eq!(run.json["encoding"], name);
        run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);
        assert_eq!(env.exported_ids("hr"), [hr_id(1), hr_id(2)]);
    }
}

#[test]
fn utf16_without_a_byte_order_mark_fails_with_advice() {
    let env = Env::hr();
    let mut content = Vec::new();
    for unit in hr_file(1..=2).encode_utf16() {
        content.extend_from_slice(&unit.to_le_bytes());
    }
    let run = env.import_text("hr", "utf16.csv", content);
    assert_eq!(run.state(), "failed");
    let reason = run.reason();
    assert!(
        reason.contains("UTF-16") && reason.contains("save it as") && reason.contains("CSV UTF-8"),
        "{reason}"
    );
    assert!(!reason.contains('\0'), "{reason:?}");
}

#[test]
fn semicolon_file_is_detected() {
    let env = Env::hr();
    let content = lines(&[
        &HR_HEADER.replace(',', ";"),
        "E1;Ann;Lee;ann@example.com;;;Sales, EMEA;Active",
        "E2;Bob;\"Ray; Jr\";bob@example.com;;;Sales;Active",
    ]);
    let run = env.import_text("hr", "semi.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);
    assert_eq!(
        env.recipient("hr", "E1").unwrap()["department"],
        "Sales, EMEA"
    );
    assert_eq!(env.recipient("hr", "E2").unwrap()["last_name"], "Ray; Jr");
    assert_eq!(
        env.recipient("hr", "E2").unwrap()["email"],
        "bob@example.com"
    );
}

#[test]
fn tab_file_is_detected() {
    let env = Env::hr();
    let content = lines(&[
        &HR_HEADER.replace(',', "\t"),
        "E1\tAnn\tLee\tann@example.com\t\t\tSales, EMEA\tActive",
        "E2\tBob\tRay\tbob@example.com\t(415) 555-0123\t\tSales\tActive",
    ]);
    let run = env.import_text("hr", "tab.tsv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);
    assert_eq!(
        env.recipient("hr", "E1").unwrap()["department"],
        "Sales, EMEA"
    );
    assert_eq!(env.recipient("hr", "E2").unwrap()["mobile"], "+14155550123");
}

#[test]
fn pipe_file_is_detected() {
    let env = Env::hr();
    let content = lines(&[
        &HR_HEADER.replace(',', "|"),
        "E1|Ann|Lee|ann@example.com|||Sales, EMEA|Active",
        "E2|Bob|\"Ray | Jr\"|bob@example.com|||Sales|Active",
    ]);
    let run = env.import_text("hr", "pipe.txt", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);
    assert_eq!(
        env.recipient("hr", "E1").unwrap()["department"],
        "Sales, EMEA"
    );
    assert_eq!(env.recipient("hr", "E2").unwrap()["last_name"], "Ray | Jr");
}

#[test]
fn fixed_delimiter_overrides_detection() {
    // The header has more commas (8) than pipes (7), so detection would
    // pick the comma; the feed says pipe.
    let fields = |feed: Feed| {
        feed.replace_field(Field::new(
            "department",
            "Dept, Team, Unit, Sub, Group, Area, Zone, Cell, Pod",
            "text",
        ))
    };
    let env = Env::new(&[
        fields(Feed::hr("piped").delimiter("|")),
        fields(Feed::hr("auto")),
    ]);
    let header = "Employee ID|First Name|Last Name|Email|Mobile Phone|Office Phone|Dept, Team, Unit, Sub, Group, Area, Zone, Cell, Pod|Status";
    let content = lines(&[
        header,
        "E1|Ann|Lee|ann@example.com|||Sales|Active",
        "E2|Bob|Ray, Jr|bob@example.com|||Sales|Active",
    ]);
    let run = env.import_text("piped", "fixed.csv", &content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 2), ("flagged", 0)]);
    assert_eq!(
        env.recipient("piped", "E2").unwrap()["last_name"],
        "Ray, Jr"
    );
    assert_eq!(env.recipient("piped", "E1").unwrap()["department"], "Sales");

    let auto = env.import_text("auto", "fixed.csv", &content);
    assert_eq!(
        auto.state(),
        "failed",
        "read with commas this file has no ID column: {:#}",
        auto.json
    );
}

#[test]
fn quoted_delimiters_quotes_and_line_breaks_are_preserved() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,\"Lee, Jr\",ann@example.com,,,\"Sales, EMEA\",Active",
        "E2,Bob,\"Two\nLines\",bob@example.com,,,Sales,Active",
        "E3,\"Cat \"\"Kit\"\"\",Ng,cat@example.com,,,Sales,Active",
    ]);
    let run = env.import_text("hr", "quoted.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 3), ("added", 3), ("flagged", 0)]);
    let e1 = env.recipient("hr", "E1").unwrap();
    assert_eq!(e1["last_name"], "Lee, Jr");
    assert_eq!(e1["department"], "Sales, EMEA");
    assert_eq!(
        env.recipient("hr", "E2").unwrap()["last_name"],
        "Two\nLines"
    );
    assert_eq!(
        env.recipient("hr", "E3").unwrap()["first_name"],
        "Cat \"Kit\""
    );
    assert!(env.groups("hr").contains_key("Department: Sales, EMEA"));
}

#[test]
fn phones_are_stored_in_e164() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,(415) 555-0123,+44 20 7946 0958,Sales,Active",
        "E2,Bob,Ray,bob@example.com,+1 415 555 0124,,Sales,Active",
    ]);
    let run = env.import_text("hr", "phones.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("added", 2), ("flagged", 0)]);
    let e1 = env.recipient("hr", "E1").unwrap();
    assert_eq!(e1["mobile"], "+14155550123");
    assert_eq!(e1["office_phone"], "+442079460958");
    assert_eq!(env.recipient("hr", "E2").unwrap()["mobile"], "+14155550124");
    let export = env.export("hr");
    assert!(
        export.contains("+14155550123,+442079460958"),
        "export:\n{export}"
    );
}

#[test]
fn values_are_trimmed_and_export_is_sorted_with_field_names() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E3,  Cat ,Ng,cat@example.com ,,,Sales,Active",
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,,,Sales,Active",
    ]);
    env.import_text("hr", "trim.csv", content);
    let export = env.export("hr").replace("\r\n", "\n");
    assert_eq!(
        export,
        lines(&[
            HR_FIELDS,
            "E1,Ann,Lee,ann@example.com,,,Sales,Active",
            "E2,Bob,Ray,bob@example.com,,,Sales,Active",
            "E3,Cat,Ng,cat@example.com,,,Sales,Active",
        ])
    );
}

#[test]
fn header_matches_ignoring_case_spaces_and_by_alias() {
    let env = Env::hr();
    let content = lines(&[
        "  empid ,FIRST NAME, last name ,email,mobile phone,OFFICE PHONE,department,status",
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
    ]);
    let run = env.import_text("hr", "aliases.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("added", 1)]);
    let e1 = env.recipient("hr", "E1").unwrap();
    assert_eq!(e1["first_name"], "Ann");
    assert_eq!(e1["last_name"], "Lee");
}

#[test]
fn missing_id_column_fails_and_changes_nothing() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=20));
    let export = env.export("hr");
    let tree = env.tree();

    let content = hr_file(1..=5).replacen("Employee ID", "Staff Number", 1);
    let run = env.import_text("hr", "noid.csv", content);
    assert_eq!(run.state(), "failed");
    assert_eq!(run.code, 1);
    assert!(
        run.reason().contains("Employee ID"),
        "reason should name the column: {}",
        run.reason()
    );
    assert_same_tree(&tree, &env.tree(), "failed import");
    assert_eq!(env.export("hr"), export);
}

#[test]
fn missing_required_column_fails() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=5));
    let tree = env.tree();
    let content = hr_file(1..=5).replacen("First Name", "Given", 1);
    let run = env.import_text("hr", "nofirst.csv", content);
    assert_eq!(run.state(), "failed");
    assert!(
        run.reason().contains("First Name"),
        "reason should name the column: {}",
        run.reason()
    );
    assert_same_tree(&tree, &env.tree(), "failed import");
}
