//! The delete threshold and the life of a held run: confirm, reject,
//! superseded.

use crate::util::*;

/// A feed of 100 people (E00001..E00100) already imported.
fn hundred(feed: Feed) -> Env {
    let env = Env::new(&[feed]);
    let run = env.import_text("hr", "base.csv", hr_file(1..=100));
    assert_eq!(run.state(), "applied");
    run.assert_counts(&[("added", 100)]);
    env
}

#[test]
fn removing_more_than_ten_percent_is_held_then_confirmed() {
    let env = hundred(Feed::hr("hr"));
    let export = env.export("hr");
    let tree_runs = env.runs_list().len();

    let held = env.import_text("hr", "cut.csv", hr_file(12..=100));
    assert_eq!(held.state(), "held", "{:#}", held.json);
    assert_eq!(held.code, 3);
    held.assert_counts(&[
        ("rows", 89),
        ("removed", 11),
        ("unchanged", 89),
        ("added", 0),
    ]);
    let reason = held.reason();
    assert!(
        reason.contains("11") && reason.contains("100"),
        "reason should give the counts: {reason}"
    );
    assert_eq!(env.export("hr"), export, "a held run changes nothing");
    assert_eq!(
        env.runs_list().len(),
        tree_runs + 1,
        "held runs are recorded"
    );

    let id = held.id();
    let shown = env.run_show(&id);
    assert_eq!(shown["state"], "held");
    assert_eq!(shown["removed"], 11);

    // Confirming applies exactly the held file, not whatever is at the
    // original path by then.
    env.input("cut.csv", hr_file(1..=100));

    let out = env.run(&["runs", "confirm", &id, "--by", "alice", "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("runs confirm");
    assert_eq!(confirmed["state"], "applied", "{confirmed:#}");
    assert_eq!(run_id_of(&confirmed), id, "the confirmed run keeps its ID");
    assert_eq!(confirmed["removed"], 11);
    assert_eq!(confirmed["unchanged"], 89);
    assert_eq!(confirmed["added"], 0);
    assert_count_invariant(&confirmed);

    assert_eq!(
        env.exported_ids("hr"),
        (12..=100).map(hr_id).collect::<Vec<_>>()
    );
    let shown = env.run_show(&id);
    assert_eq!(shown["state"], "applied", "{shown:#}");
    assert_eq!(shown["confirmed_by"], "alice", "{shown:#}");
    assert!(
        shown["confirmed_at"].is_string() || shown["confirmed_at"].is_number(),
        "confirmed_at is set: {shown:#}"
    );

    // Only a held run can be confirmed.
    let again = env.run(&["runs", "confirm", &id, "--by", "alice"]);
    assert_eq!(again.code, 2, "{again:#?}");
}

#[test]
fn rejecting_a_held_run_changes_nothing() {
    let env = hundred(Feed::hr("hr"));
    let export = env.export("hr");
    let held = env.import_text("hr", "cut.csv", hr_file(21..=100));
    assert_eq!(held.state(), "held");
    held.assert_counts(&[("removed", 20)]);
    let id = held.id();

    let out = env.run(&["runs", "reject", &id, "--by", "bob", "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.json("runs reject")["state"], "rejected");
    assert_eq!(env.export("hr"), export);
    assert_eq!(env.run_show(&id)["state"], "rejected");

    let held_dir = env.data_dir.join("hr/held");
    let left = std::fs::read_dir(&held_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the held copy is deleted on reject");

    let confirm = env.run(&["runs", "confirm", &id]);
    assert_eq!(
        confirm.code, 2,
        "a rejected run cannot be confirmed: {confirm:#?}"
    );
    assert_eq!(env.export("hr"), export);
}

#[test]
fn a_newer_file_supersedes_a_held_run_and_is_judged_on_its_own() {
    let env = hundred(Feed::hr("hr"));
    let export = env.export("hr");

    let first = env.import_text("hr", "monday.csv", hr_file(12..=100));
    assert_eq!(first.state(), "held");

    // A dry run supersedes nothing.
    let path = env.input("sunday.csv", hr_file(1..=99));
    let dry = env.import("hr", &path, &["--dry-run"]);
    assert_eq!(dry.state(), "applied", "{:#}", dry.json);
    assert_eq!(env.run_show(&first.id())["state"], "held");

    // Judged on its own: it too removes too many, so it is held as well.
    let second = env.import_text("hr", "tuesday.csv", hr_file(1..=85));
    assert_eq!(second.state(), "held", "{:#}", second.json);
    second.assert_counts(&[("removed", 15)]);
    assert_eq!(env.run_show(&first.id())["state"], "superseded");
    assert_eq!(env.export("hr"), export);

    // And a harmless one applies, superseding the second.
    let third = env.import_text("hr", "wednesday.csv", hr_file(1..=98));
    assert_eq!(third.state(), "applied", "{:#}", third.json);
    third.assert_counts(&[("removed", 2), ("unchanged", 98)]);
    assert_eq!(env.run_show(&second.id())["state"], "superseded");
    assert_eq!(env.run_show(&first.id())["state"], "superseded");

    let out = env.run(&["runs", "confirm", &first.id()]);
    assert_eq!(
        out.code, 2,
        "a superseded run cannot be confirmed: {out:#?}"
    );
    assert_eq!(env.exported_ids("hr").len(), 98);
}

#[test]
fn removing_exactly_ten_percent_is_not_held() {
    let env = hundred(Feed::hr("hr"));
    let run = env.import_text("hr", "cut.csv", hr_file(11..=100));
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("removed", 10), ("unchanged", 90)]);
    assert_eq!(env.exported_ids("hr").len(), 90);
}

#[test]
fn absolute_threshold_holds_above_the_count_only() {
    let env = hundred(Feed::hr("hr").threshold("5"));
    let six = env.import_text("hr", "six.csv", hr_file(7..=100));
    assert_eq!(six.state(), "held", "{:#}", six.json);
    six.assert_counts(&[("removed", 6)]);
    assert_eq!(env.exported_ids("hr").len(), 100);

    let five = env.import_text("hr", "five.csv", hr_file(6..=100));
    assert_eq!(five.state(), "applied", "{:#}", five.json);
    five.assert_counts(&[("removed", 5)]);
    assert_eq!(env.exported_ids("hr").len(), 95);
    assert_eq!(env.run_show(&six.id())["state"], "superseded");
}

#[test]
fn a_file_without_data_rows_is_held_against_a_non_empty_feed() {
    // Even a threshold that allows removing everyone does not let an
    // empty file through.
    let env = hundred(Feed::hr("hr").threshold("\"100%\""));
    let export = env.export("hr");
    let run = env.import_text("hr", "empty.csv", lines(&[HR_HEADER]));
    assert_eq!(run.state(), "held", "{:#}", run.json);
    assert_eq!(run.code, 3);
    run.assert_counts(&[("rows", 0), ("removed", 100)]);
    assert_eq!(env.export("hr"), export);
}

#[test]
fn the_first_file_of_an_empty_feed_is_never_held() {
    let env = Env::new(&[Feed::hr("hr").threshold("0")]);
    let run = env.import_text("hr", "empty.csv", lines(&[HR_HEADER]));
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
    run.assert_counts(&[("rows", 0), ("added", 0), ("removed", 0)]);

    let run = env.import_text("hr", "first.csv", hr_file(1..=30));
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("added", 30)]);
}

#[test]
fn runs_list_and_show_use_the_import_names() {
    let env = Env::hr();
    let mut content = hr_file(1..=3);
    content += "E00009,Bad,Mail,bad@,,,Sales,Active\n";
    let run = env.import_text("hr", "one.csv", content);
    let runs = env.runs_list();
    assert_eq!(runs.len(), 1);
    let listed = &runs[0];
    for key in COUNTS {
        assert_eq!(listed[key], run.json[key], "`{key}` in runs list");
    }
    for key in ["feed", "state", "encoding", "started_at", "finished_at"] {
        assert!(
            !listed[key].is_null(),
            "`{key}` missing in runs list: {listed:#}"
        );
    }
    let shown = env.run_show(&run.id());
    assert_eq!(shown["state"], "applied");
    let errors = shown["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{shown:#}");
    assert_eq!(errors[0]["line"], 5);
    assert_eq!(errors[0]["id"], "E00009");
    let reasons = errors[0]["reasons"].to_string();
    assert!(reasons.contains("invalid email"), "{reasons}");

    let unknown = env.run(&["runs", "show", "999999"]);
    assert_eq!(unknown.code, 2, "unknown run ID: {unknown:#?}");
}

#[test]
fn file_names_and_cells_with_control_characters_are_escaped_in_cli_output() {
    let env = Env::hr();
    // A name with a terminal escape and a line break, a row that quotes one.
    let name = "day\u{1b}[2J\nfake.csv";
    let mut text = hr_file(1..=3);
    text += "E00009,Bad,Row,x\u{1b}]0;owned\u{7}@,,,Sales,Active\n";
    let file = env.input(name, text);
    let shown = env.run(&["import", "--feed", "hr", file.to_str().expect("utf-8")]);
    assert_eq!(shown.code, 0, "{shown:#?}");
    let list = env.run(&["runs", "list"]);
    let id = run_id_of(&env.runs_list()[0]);
    let detail = env.run(&["runs", "show", &id]);
    for out in [&shown, &list, &detail] {
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
            "{out:#?}"
        );
        assert!(
            out.stdout.contains("day\\u{1B}[2J\\u{A}fake.csv"),
            "{out:#?}"
        );
        assert!(
            !out.stdout.lines().any(|l| l.starts_with("fake.csv")),
            "{out:#?}"
        );
    }
    assert!(
        detail.stdout.contains("-run1-day_[2J_fake.csv.errors.csv"),
        "the report's own name has no control characters: {detail:#?}"
    );
}
