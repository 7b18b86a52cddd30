//! Every kind of row error: the row is flagged (left out, the rest of the
//! file applied), or, for an invalid optional value, imported without it
//! with a warning; the error report names the physical line the record
//! starts on, the reason, and the original record.

use crate::util::*;

/// Imports `content` as `name` into a fresh standard `hr` feed and checks
/// the state, the flagged count and the error report.
fn import_with_flags(env: &Env, name: &str, content: &str, flags: &[Flag<'_>]) -> Run {
    import_with_flags_in_state(env, name, content, flags, "applied")
}

/// As [`import_with_flags`], for a run that ends in `state`.
fn import_with_flags_in_state(
    env: &Env,
    name: &str,
    content: &str,
    flags: &[Flag<'_>],
    state: &str,
) -> Run {
    let run = env.import_text("hr", name, content);
    assert_eq!(run.state(), state, "{:#}", run.json);
    assert_eq!(
        run.n("flagged") + run.n("warnings"),
        flags.len() as u64,
        "rows in the report (flagged and with warnings): {:#}",
        run.json
    );
    assert_error_report(env, "hr", name, content, b',', flags);
    run
}

#[test]
fn empty_id_is_flagged_with_its_line() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        ",Bob,Ray,bob@example.com,,,Sales,Active",
        "   ,Cat,Ng,cat@example.com,,,Sales,Active",
        "E2,Dan,Oh,dan@example.com,,,Sales,Active",
    ]);
    let run = import_with_flags(
        &env,
        "empty-id.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["empty ID"],
            },
            Flag {
                line: 4,
                reasons: &["empty ID"],
            },
        ],
    );
    run.assert_counts(&[("rows", 4), ("added", 2), ("flagged", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E2"]);
}

#[test]
fn repeated_id_is_flagged_naming_the_first_line() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,,,Sales,Active",
        "E1,Other,Person,other@example.com,,,Finance,Active",
        "E4,Dan,Oh,dan@example.com,,,Sales,Active",
    ]);
    let run = import_with_flags(
        &env,
        "repeated.csv",
        &content,
        &[Flag {
            line: 5,
            reasons: &["repeated ID", "first occurrence on line 2"],
        }],
    );
    run.assert_counts(&[("rows", 5), ("added", 4), ("flagged", 1)]);
    // The first occurrence is the one used.
    let e1 = env.recipient("hr", "E1").expect("E1 imported");
    assert_eq!(e1["first_name"], "Ann");
    assert_eq!(e1["department"], "Sales");
}

#[test]
fn invalid_optional_phone_is_a_warning_and_the_person_is_imported_without_it() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,(415) 555-0123,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,12345,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,,not a phone,Sales,Active",
        "E4,Dan,Oh,dan@example.com,,+1 415 555 0124,Sales,Active",
    ]);
    let run = import_with_flags(
        &env,
        "phones.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["invalid phone"],
            },
            Flag {
                line: 4,
                reasons: &["invalid phone"],
            },
        ],
    );
    run.assert_counts(&[("rows", 4), ("added", 4), ("flagged", 0), ("warnings", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E2", "E3", "E4"]);
    let e2 = env.recipient("hr", "E2").unwrap();
    assert_eq!(
        (e2["mobile"].as_str(), e2["email"].as_str()),
        ("", "bob@example.com")
    );
    assert_eq!(env.recipient("hr", "E3").unwrap()["office_phone"], "");
}

#[test]
fn invalid_email_is_flagged() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,bob@,,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,,,Sales,Active",
        "E4,Dan,Oh,dan.example.com,,,Sales,Active",
    ]);
    let run = import_with_flags(
        &env,
        "emails.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["invalid email"],
            },
            Flag {
                line: 5,
                reasons: &["invalid email"],
            },
        ],
    );
    run.assert_counts(&[("rows", 4), ("added", 2), ("flagged", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E3"]);
}

#[test]
fn empty_required_field_is_flagged() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,,Ray,bob@example.com,,,Sales,Active",
        "E3,   ,Ng,cat@example.com,,,Sales,Active",
        // last_name is not required: empty is fine.
        "E4,Dan,,dan@example.com,,,Sales,Active",
    ]);
    let run = import_with_flags(
        &env,
        "required.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["required field"],
            },
            Flag {
                line: 4,
                reasons: &["required field"],
            },
        ],
    );
    run.assert_counts(&[("rows", 4), ("added", 2), ("flagged", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E4"]);
}

#[test]
fn value_too_long_is_flagged_at_default_and_configured_limits() {
    let feed =
        Feed::hr("hr").replace_field(Field::new("department", "Department", "text").max_length(10));
    let env = Env::new(&[feed]);
    let l255 = "x".repeat(255);
    let l256 = "y".repeat(256);
    let content = lines(&[
        HR_HEADER,
        &format!("E1,Ann,{l255},ann@example.com,,,Sales,Active"),
        &format!("E2,Bob,{l256},bob@example.com,,,Sales,Active"),
        "E3,Cat,Ng,cat@example.com,,,Engineering,Active",
        "E4,Dan,Oh,dan@example.com,,,Accounting,Active",
    ]);
    let run = import_with_flags(
        &env,
        "long.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["too long"],
            },
            Flag {
                line: 4,
                reasons: &["too long"],
            },
        ],
    );
    // Both fields are optional: the rows are imported without the values.
    run.assert_counts(&[("rows", 4), ("added", 4), ("flagged", 0), ("warnings", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E2", "E3", "E4"]);
    assert_eq!(env.recipient("hr", "E2").unwrap()["last_name"], "");
    assert_eq!(env.recipient("hr", "E3").unwrap()["department"], "");
    assert_eq!(env.recipient("hr", "E1").unwrap()["last_name"], l255);
    assert_eq!(
        env.recipient("hr", "E4").unwrap()["department"],
        "Accounting"
    );
}

#[test]
fn control_character_is_flagged_but_quoted_line_breaks_are_not() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bo\u{7}b,Ray,bob@example.com,,,Sales,Active",
        "E3,Cat,\"N\u{1}g\",cat@example.com,,,Sales,Active",
        "E4,Dan,\"Oh\nSecond line\",dan@example.com,,,Sales,Active",
        "E5,Eve,Poe,eve@example.com,,,Sal\u{1b}es,Active",
    ]);
    let run = import_with_flags(
        &env,
        "control.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["control character"],
            },
            Flag {
                line: 4,
                reasons: &["control character"],
            },
            // E4 spans lines 5 and 6, so E5 starts on line 7.
            Flag {
                line: 7,
                reasons: &["control character"],
            },
        ],
    );
    // The first name is required (flagged); last name and department are
    // not (imported without them, with a warning).
    run.assert_counts(&[("rows", 5), ("added", 4), ("flagged", 1), ("warnings", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E3", "E4", "E5"]);
    assert_eq!(env.recipient("hr", "E5").unwrap()["department"], "");
    assert_eq!(
        env.recipient("hr", "E4").unwrap()["last_name"],
        "Oh\nSecond line"
    );
}

#[test]
fn wrong_column_count_is_flagged_and_keeps_existing_people() {
    let env = Env::hr();
    let first = env.import_text("hr", "day1.csv", hr_file(1..=10));
    first.assert_counts(&[("added", 10)]);
    let before = env.export("hr");

    let mut rows: Vec<String> = vec![HR_HEADER.to_string()];
    rows.extend((1..=10).map(hr_row));
    // Person 3 with a ninth column, person 7 with only seven.
    rows[3] = format!("{},Extra", hr_row(3));
    rows[7] = "E00007,First7,Last7,user7@example.com,,,Finance".to_string();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let content = lines(&refs);

    // Unchanged as a whole: the flagged people stay exactly as they were.
    let run = import_with_flags_in_state(
        &env,
        "day2.csv",
        &content,
        &[
            Flag {
                line: 4,
                reasons: &["wrong column count"],
            },
            Flag {
                line: 8,
                reasons: &["wrong column count"],
            },
        ],
        "unchanged",
    );
    run.assert_counts(&[
        ("rows", 10),
        ("added", 0),
        ("updated", 0),
        ("removed", 0),
        ("unchanged", 8),
        ("flagged", 2),
    ]);
    assert_eq!(env.export("hr"), before);
}

#[test]
fn no_delivery_channel_is_flagged_only_when_required() {
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,,,,Sales,Active",
        "E3,Cat,Ng,,(415) 555-0123,,Sales,Active",
        "E4,Dan,Oh,,,+1 415 555 0124,Sales,Active",
        "E5,Eve,Poe,  ,,,Sales,Active",
    ]);

    let env = Env::hr();
    let run = import_with_flags(
        &env,
        "channels.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["no delivery channel"],
            },
            Flag {
                line: 6,
                reasons: &["no delivery channel"],
            },
        ],
    );
    run.assert_counts(&[("rows", 5), ("added", 3), ("flagged", 2)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E3", "E4"]);

    let relaxed = Env::new(&[Feed::hr("hr").require_channel(false)]);
    let run = relaxed.import_text("hr", "channels.csv", &content);
    assert_eq!(run.state(), "applied");
    run.assert_counts(&[("rows", 5), ("added", 5), ("flagged", 0)]);
    assert_eq!(relaxed.exported_ids("hr"), ["E1", "E2", "E3", "E4", "E5"]);
}

#[test]
fn several_failing_checks_are_all_listed() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,,Ray,bob@,12345,,Sales,Active",
    ]);
    import_with_flags(
        &env,
        "many.csv",
        &content,
        &[Flag {
            line: 3,
            reasons: &["required field", "invalid phone", "invalid email", "; "],
        }],
    );
}

#[test]
fn line_numbers_count_physical_lines_with_crlf_and_quoted_breaks() {
    let env = Env::hr();
    // CRLF line ends; E2 holds a quoted CRLF and E3 a quoted LF (two extra
    // physical lines), so the bad rows E4 and E5 start on lines 7 and 8.
    let content = [
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,\"Ray\r\nJunior\",bob@example.com,,,Sales,Active",
        "E3,Cat,\"Ng\nSenior\",cat@example.com,,,Sales,Active",
        ",Dan,Oh,dan@example.com,,,Sales,Active",
        "E5,Eve,Poe,eve@,,,Sales,Active",
        "",
    ]
    .join("\r\n");
    let run = import_with_flags(
        &env,
        "crlf.csv",
        &content,
        &[
            Flag {
                line: 7,
                reasons: &["empty ID"],
            },
            Flag {
                line: 8,
                reasons: &["invalid email"],
            },
        ],
    );
    run.assert_counts(&[("rows", 5), ("added", 3), ("flagged", 2)]);
    let e1 = env.recipient("hr", "E1").unwrap();
    assert_eq!(e1["status"], "Active", "CR must not stay in the last value");
}

#[test]
fn error_report_neutralises_formula_cells() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,=1+2,@SUM(A1),bad@,+44 20 7946 0958,,-Sales,Active",
        "E3,\"=HYPERLINK(\"\"http://x\"\")\",Ng,cat@,,,Sales,Active",
    ]);
    import_with_flags(
        &env,
        "formula.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["invalid email"],
            },
            Flag {
                line: 4,
                reasons: &["invalid email"],
            },
        ],
    );
    // Spelled out once, independent of the helper's neutralisation.
    let report = csv_records(env.error_report_text("hr", "formula.csv").as_bytes(), b',');
    assert_eq!(
        report[1].1[2..],
        [
            "E2",
            "'=1+2",
            "'@SUM(A1)",
            "bad@",
            "'+44 20 7946 0958",
            "",
            "'-Sales",
            "Active"
        ]
    );
    assert_eq!(report[2].1[3], "'=HYPERLINK(\"http://x\")");
}

#[test]
fn line_numbers_in_a_plain_crlf_file() {
    let env = Env::hr();
    let content = [
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,bob@,,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,,,Sales,Active",
        ",Dan,Oh,dan@example.com,,,Sales,Active",
        "",
    ]
    .join("\r\n");
    let run = import_with_flags(
        &env,
        "plain-crlf.csv",
        &content,
        &[
            Flag {
                line: 3,
                reasons: &["invalid email"],
            },
            Flag {
                line: 5,
                reasons: &["empty ID"],
            },
        ],
    );
    run.assert_counts(&[("rows", 4), ("added", 2), ("flagged", 2)]);
}
