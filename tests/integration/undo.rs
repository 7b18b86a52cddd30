//! Undo and restore from the change log: checked against the exports taken
//! before and after each run, never against the log itself.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::*;

type Export = BTreeMap<String, BTreeMap<String, String>>;

fn export_by_id(env: &Env) -> Export {
    env.export_records("hr")
        .into_iter()
        .map(|r| (r["employee_id"].clone(), r))
        .collect()
}

/// Runs `flagsync <args> --json` and returns the run it printed.
fn run_json(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = env.run(&args);
    (out.code, out.json(&args.join(" ")))
}

fn undo(env: &Env, id: &str) -> (i32, Value) {
    run_json(env, &["runs", "undo", id, "--by", "carol"])
}

/// A row of person `i` with the email and department given.
fn row(i: usize, email: &str, department: &str) -> String {
    format!("E{i:05},First{i},Last{i},{email},,,{department},Active")
}

/// The second day: new emails, a department move, a cleared email, five
/// new people and three gone.
fn day2() -> String {
    let mut text = hr_file((4..=100).filter(|i| ![10, 20, 30].contains(i)));
    text += &format!("{}\n", row(10, "new10@example.com", "Sales"));
    text += &format!("{}\n", row(20, "user20@example.com", "Finance"));
    text += "E00030,First30,Last30,,+12015550123,,Support,Active\n";
    for i in 101..=105 {
        text += &format!("{}\n", hr_row(i));
    }
    text
}

#[test]
fn undoing_the_last_run_gives_back_the_state_before_it() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=100));
    let before = export_by_id(&env);
    let groups_before = env.groups("hr");
    let day = env.import_text("hr", "day2.csv", day2());
    assert_eq!(day.state(), "applied", "{:#}", day.json);
    let after = export_by_id(&env);
    assert_ne!(before, after);

    let (code, u) = undo(&env, &day.id());
    assert_eq!(code, 0, "{u:#}");
    assert_eq!(u["state"], "applied", "{u:#}");
    assert_eq!(u["undo_of"].as_u64(), day.json["run_id"].as_u64());
    assert_eq!(u["requested_by"], "carol");
    // What day 2 added goes, what it removed comes back, what it updated
    // is put back.
    assert_eq!(u["removed"], day.json["added"], "{u:#}");
    assert_eq!(u["added"], day.json["removed"], "{u:#}");
    assert_eq!(u["updated"], day.json["updated"], "{u:#}");
    assert_eq!(export_by_id(&env), before);
    assert_eq!(env.groups("hr"), groups_before);
    assert_eq!(
        env.run_show(&day.id())["undone_by"].as_u64(),
        u["run_id"].as_u64()
    );

    // The undo's own change log is the reverse of day 2's.
    let out = env.run(&[
        "runs",
        "changes",
        &run_id_of(&u),
        "--kind",
        "added",
        "--json",
    ]);
    let added: Vec<String> = out.json("changes")["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(added, ["E00001", "E00002", "E00003"]);
    let history = env.run(&["recipients", "history", "--feed", "hr", "E00010", "--json"]);
    let history = history.json("history")["history"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history.len(), 3, "{history:#?}");
    assert_eq!(
        history[2]["change"]["fields"][0]["new"],
        "user10@example.com"
    );

    // The same day-2 file again applies it again: the people the undo put
    // back are read and compared, not taken as unchanged by their old
    // row's hash.
    let again = env.import_text("hr", "day2-again.csv", day2());
    assert_eq!(again.state(), "applied", "{:#}", again.json);
    assert_eq!(export_by_id(&env), after);
}

#[test]
fn undoing_an_undo_puts_the_run_back() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=100));
    let day = env.import_text("hr", "day2.csv", day2());
    let after = export_by_id(&env);
    let (_, u) = undo(&env, &day.id());
    let (code, redo) = undo(&env, &run_id_of(&u));
    assert_eq!(code, 0, "{redo:#}");
    assert_eq!(redo["state"], "applied");
    assert_eq!(export_by_id(&env), after);
    // The first undo is undone: day 2 can be undone again, its own undos
    // not counting as later changes.
    let before_day = {
        let (_, again) = undo(&env, &day.id());
        assert_eq!(again["state"], "applied", "{again:#}");
        assert_eq!(again["conflicts"].as_u64(), None, "{again:#}");
        export_by_id(&env)
    };
    let out = env.run(&["runs", "undo", &day.id()]);
    assert_eq!(out.code, 2, "undone again: {out:#?}");
    assert_eq!(export_by_id(&env), before_day);
}

#[test]
fn an_older_run_is_undone_except_for_people_changed_since() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=50));
    let before = export_by_id(&env);
    // Run A: ten new emails.
    let mut a = hr_file(11..=50);
    for i in 1..=10 {
        a += &format!("{}\n", row(i, &format!("a{i}@example.com"), "Sales"));
    }
    let run_a = env.import_text("hr", "a.csv", a.clone());
    assert_eq!(run_a.n("updated"), 10, "{:#}", run_a.json);
    // Run B: 1–3 changed again, 4 removed, 45 (untouched by A) changed.
    let mut b = hr_file((11..=50).filter(|&i| i != 45));
    for i in 5..=10 {
        b += &format!("{}\n", row(i, &format!("a{i}@example.com"), "Sales"));
    }
    for i in 1..=3 {
        b += &format!("{}\n", row(i, &format!("b{i}@example.com"), "Finance"));
    }
    b += &format!("{}\n", row(45, "b45@example.com", "Sales"));
    let run_b = env.import_text("hr", "b.csv", b);
    assert_eq!(run_b.state(), "applied", "{:#}", run_b.json);
    let after_b = export_by_id(&env);

    let (code, u) = undo(&env, &run_a.id());
    assert_eq!(code, 0, "{u:#}");
    assert_eq!(u["state"], "applied");
    assert_eq!(u["updated"], 6, "{u:#}");
    assert_eq!(u["conflicts"], 4, "{u:#}");
    let shown = env.run_show(&run_id_of(&u));
    let conflicts: Vec<&str> = shown["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts, ["E00001", "E00002", "E00003", "E00004"]);
    assert!(
        shown["errors"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains(&format!("changed again by run {}", run_b.id())),
        "{u:#}"
    );
    // Expected: B's state, with 5–10 as before A.
    let mut expected = after_b.clone();
    for i in 5..=10 {
        let id = hr_id(i);
        expected.insert(id.clone(), before[&id].clone());
    }
    assert_eq!(export_by_id(&env), expected);
    // The conflicts are in the run's error report too.
    let report = report_text(std::path::Path::new(u["error_report"].as_str().unwrap()));
    for id in conflicts {
        assert!(report.contains(id), "{report}");
    }
}

#[test]
fn an_undo_that_removes_too_many_is_held_until_confirmed() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=100));
    let before = export_by_id(&env);
    // 20 new people: undoing them removes 20 of 120 (16.7% > 10%).
    let grow = env.import_text("hr", "grow.csv", hr_file(1..=120));
    assert_eq!(grow.n("added"), 20);
    let after = export_by_id(&env);

    let (code, u) = undo(&env, &grow.id());
    assert_eq!(code, 3, "{u:#}");
    assert_eq!(u["state"], "held", "{u:#}");
    assert!(
        u["reason"]
            .as_str()
            .unwrap()
            .contains("would remove 20 of 120"),
        "{u:#}"
    );
    assert_eq!(export_by_id(&env), after, "nothing applied while held");
    let shown = env.run_show(&run_id_of(&u));
    let named = shown["would_remove"].as_array().unwrap();
    assert_eq!(named.len(), 20, "{shown:#}");
    assert_eq!(named[0], "E00101 First101 Last101");
    // It lists what it would do, like a held file.
    let out = env.run(&[
        "runs",
        "changes",
        &run_id_of(&u),
        "--kind",
        "removed",
        "--json",
    ]);
    assert_eq!(out.json("changes")["changes"].as_array().unwrap().len(), 20);
    // While it is held, no other undo starts.
    let out = env.run(&["runs", "undo", &grow.id()]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("held run"), "{out:#?}");

    let out = env.run(&["runs", "confirm", &run_id_of(&u), "--by", "dave", "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("confirm");
    assert_eq!(confirmed["state"], "applied", "{confirmed:#}");
    assert_eq!(confirmed["removed"], 20);
    assert_eq!(confirmed["confirmed_by"], "dave");
    assert_eq!(confirmed["undo_of"].as_u64(), grow.json["run_id"].as_u64());
    assert_eq!(export_by_id(&env), before);
}

#[test]
fn a_removed_person_is_restored_alone() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=20));
    let was = export_by_id(&env)["E00007"].clone();
    let cut = env.import_text(
        "hr",
        "cut.csv",
        hr_file((1..=20).filter(|&i| i != 7 && i != 8)),
    );
    assert_eq!(cut.state(), "applied", "{:#}", cut.json);
    let (code, r) = run_json(&env, &["recipients", "restore", "--feed", "hr", "E00007"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["state"], "applied");
    assert_eq!(r["added"], 1);
    assert_eq!(r["restored_id"], "E00007");
    assert_eq!(r["undo_of"].as_u64(), cut.json["run_id"].as_u64());
    let now = export_by_id(&env);
    assert_eq!(now["E00007"], was);
    assert!(!now.contains_key("E00008"));
    let history = env.run(&["recipients", "history", "--feed", "hr", "E00007", "--json"]);
    let history = history.json("history")["history"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = history
        .iter()
        .map(|h| h["change"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["added", "removed", "added"]);
    // The run that removed both can still be undone: E00007 is a conflict.
    let (code, u) = undo(&env, &cut.id());
    assert_eq!(code, 0, "{u:#}");
    assert_eq!(
        (u["added"].as_u64(), u["conflicts"].as_u64()),
        (Some(1), Some(1)),
        "{u:#}"
    );
}

#[test]
fn bad_undo_and_restore_requests_are_refused_and_change_nothing() {
    let env = Env::new(&[Feed::hr("hr")]);
    let out = env.run(&["runs", "undo", "1"]);
    assert_eq!(out.code, 2, "{out:#?}");
    env.import_text("hr", "base.csv", hr_file(1..=100));
    let same = env.import_text("hr", "same.csv", hr_file(1..=100));
    assert_eq!(same.state(), "unchanged");
    let held = env.import_text("hr", "cut.csv", hr_file(1..=50));
    assert_eq!(held.state(), "held");
    let export = env.export("hr");
    let runs = env.runs_list();

    let (held_id, same_id) = (held.id(), same.id());
    let refusals: Vec<(Vec<&str>, &str)> = vec![
        (vec!["runs", "undo", "99"], "run 99 does not exist"),
        (vec!["runs", "undo", &held_id], "only applied runs"),
        (vec!["runs", "undo", &same_id], "only applied runs"),
        (vec!["runs", "undo", "1"], "held run"),
        (vec!["runs", "undo", "x"], "invalid value"),
        (
            vec!["recipients", "restore", "--feed", "hr", "E00001"],
            "is in feed 'hr' now",
        ),
        (
            vec!["recipients", "restore", "--feed", "hr", "E99999"],
            "no removal of 'E99999'",
        ),
        (
            vec!["recipients", "restore", "--feed", "nope", "E00001"],
            "nope",
        ),
    ];
    for (args, says) in refusals {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(out.stderr.contains(says), "{args:?}: {out:#?}");
    }
    assert_eq!(env.export("hr"), export);
    assert_eq!(env.runs_list(), runs);

    // Decided, the feed can be undone again; twice it cannot.
    env.run(&["runs", "reject", &held.id()]);
    let (code, u) = undo(&env, "1");
    assert_eq!(
        code, 3,
        "undoing the first load removes everyone: held {u:#}"
    );
    env.run(&["runs", "reject", &run_id_of(&u)]);
    let day = env.import_text("hr", "day.csv", hr_file(1..=101));
    let (code, _) = undo(&env, &day.id());
    assert_eq!(code, 0);
    let out = env.run(&["runs", "undo", &day.id()]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("already undid it"), "{out:#?}");
}

#[test]
fn an_undo_waits_for_a_file_after_a_mapping_change() {
    let env = Env::new(&[Feed::hr("hr")]);
    env.import_text("hr", "base.csv", hr_file(1..=20));
    let day = env.import_text("hr", "day.csv", hr_file(1..=21));
    let site = Field::new("site", "Site", "text");
    env.write_config(&config_text(&env.data_dir, &[Feed::hr("hr").field(site)]));
    let export = env.export("hr");
    let out = env.run(&["runs", "undo", &day.id()]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("mapping changed"), "{out:#?}");
    assert_eq!(env.export("hr"), export);
    // A file under the new mapping, then the undo works.
    let mut text = hr_file(1..=21).replacen("Status\n", "Status,Site\n", 1);
    text = text.replace("Active\n", "Active,HQ\n");
    let run = env.import_text("hr", "day-site.csv", text);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    let out = env.run(&["runs", "undo", &day.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let u = out.json("undo");
    assert_eq!(
        (u["removed"].as_u64(), u["conflicts"].as_u64()),
        (Some(0), Some(1)),
        "E00021 changed since (its site): {u:#}"
    );
}
