//! The change log: each run's changes, checked against a model made from
//! the exports before and after the run (not from the import's own code).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::util::*;

pub(crate) type Export = BTreeMap<String, BTreeMap<String, String>>;

pub(crate) fn export_by_id(env: &Env) -> Export {
    by_id(env.export_records("hr"))
}

/// Exported records (of the `hr` feed) by their ID.
pub(crate) fn by_id(records: Vec<BTreeMap<String, String>>) -> Export {
    records
        .into_iter()
        .map(|r| (r["employee_id"].clone(), r))
        .collect()
}

/// What a run that turned `before` into `after` changed, as `runs changes
/// --json` lists it: additions, then updates and removals, each in ID
/// order; fields in configuration order.
pub(crate) fn model_changes(before: &Export, after: &Export) -> Vec<Value> {
    let fields: Vec<&str> = HR_FIELDS.split(',').collect();
    let mut added = Vec::new();
    let mut others: BTreeMap<&String, Value> = BTreeMap::new();
    for (id, now) in after {
        match before.get(id) {
            None => added.push(json!({"kind": "added", "id": id})),
            Some(was) if was != now => {
                let changed: Vec<Value> = fields
                    .iter()
                    .filter(|f| was[**f] != now[**f])
                    .map(|f| json!({"field": f, "old": was[*f], "new": now[*f]}))
                    .collect();
                others.insert(id, json!({"kind": "updated", "id": id, "fields": changed}));
            }
            Some(_) => {}
        }
    }
    for (id, was) in before.iter().filter(|(id, _)| !after.contains_key(*id)) {
        let values: Vec<Value> = fields
            .iter()
            .filter(|f| !was[**f].is_empty())
            .map(|f| json!({"field": f, "value": was[*f]}))
            .collect();
        others.insert(id, json!({"kind": "removed", "id": id, "values": values}));
    }
    added.extend(others.into_values());
    added
}

fn logged_changes(env: &Env, id: &str, kind: Option<&str>) -> Vec<Value> {
    let mut args = vec!["runs", "changes", id, "--json"];
    if let Some(kind) = kind {
        args.extend(["--kind", kind]);
    }
    let out = env.run(&args);
    assert_eq!(out.code, 0, "{out:#?}");
    let v = out.json("runs changes");
    assert_eq!(run_id_of(&v), id);
    v["changes"].as_array().cloned().unwrap_or_default()
}

/// A row of person `i` with the email and department given.
fn row(i: usize, email: &str, department: &str) -> String {
    format!("E{i:05},First{i},Last{i},{email},,,{department},Active")
}

/// The day after a base file of people 1 to `people`: new emails, a
/// department move (a group change), a cleared email, `new` people and
/// three gone (1 to 3).
pub(crate) fn second_day(people: usize, new: usize) -> String {
    let mut text = hr_file((4..=people).filter(|i| ![10, 20, 30].contains(i)));
    text += &format!("{}\n", row(10, "new10@example.com", "Sales"));
    text += &format!("{}\n", row(20, "user20@example.com", "Finance"));
    text += "E00030,First30,Last30,,+12015550123,,Support,Active\n";
    for i in people + 1..=people + new {
        text += &format!("{}\n", hr_row(i));
    }
    text
}

/// The runs applied so far in the model: (run ID, its changes in feed
/// order, i.e. by ID).
#[derive(Default)]
pub(crate) struct Model {
    before: Export,
    pub(crate) applied: Vec<(u64, Vec<Value>)>,
}

impl Model {
    /// Takes in the state after run `run` (applied).
    pub(crate) fn applied(&mut self, env: &Env, run: &str) {
        let after = export_by_id(env);
        let mut changes = model_changes(&self.before, &after);
        changes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        assert!(!changes.is_empty(), "run {run} changed nothing");
        self.applied.push((run.parse().unwrap(), changes));
        self.before = after;
    }

    /// What the feed should give: each change with its run, an addition
    /// with the person's values as stored now (`null` once removed).
    pub(crate) fn feed(&self) -> Vec<Value> {
        let fields: Vec<&str> = HR_FIELDS.split(',').collect();
        let mut out = Vec::new();
        for (run, changes) in &self.applied {
            for change in changes {
                let mut entry = change.clone();
                entry["run_id"] = json!(run);
                if change["kind"] == "added" {
                    entry["values"] = match self.before.get(change["id"].as_str().unwrap()) {
                        Some(now) => fields
                            .iter()
                            .filter(|f| !now[**f].is_empty())
                            .map(|f| json!({"field": f, "value": now[*f]}))
                            .collect(),
                        None => Value::Null,
                    };
                }
                out.push(entry);
            }
        }
        out
    }
}

/// A feed entry without its cursor and commit time, to compare with the
/// model.
pub(crate) fn without_position(changes: &[Value]) -> Vec<Value> {
    changes
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let map = c.as_object_mut().expect("an object");
            assert!(map.remove("cursor").is_some_and(|v| v.is_string()));
            assert!(map.remove("committed_at").is_some_and(|v| v.is_string()));
            c
        })
        .collect()
}

/// Each person's history in the model: (run ID, change), oldest first.
type Histories = BTreeMap<String, Vec<(String, Value)>>;

fn add_to_histories(histories: &mut Histories, run: &str, changes: &[Value]) {
    for change in changes {
        let id = change["id"].as_str().unwrap().to_string();
        histories
            .entry(id)
            .or_default()
            .push((run.to_string(), change.clone()));
    }
}

fn logged_history(env: &Env, id: &str) -> Vec<(String, Value)> {
    let out = env.run(&["recipients", "history", "--feed", "hr", id, "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v = out.json("recipients history");
    assert_eq!(v["id"], id);
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (run_id_of(e), e["change"].clone()))
        .collect()
}

#[test]
fn each_runs_changes_match_the_exports_before_and_after_it() {
    let env = Env::new(&[Feed::hr("hr")]);
    let mut before = Export::new();
    let mut histories = Histories::new();
    let mut check = |env: &Env, run: &Run, before: &mut Export| {
        let after = export_by_id(env);
        let logged = logged_changes(env, &run.id(), None);
        let model = model_changes(before, &after);
        assert_eq!(logged, model, "run {}", run.id());
        add_to_histories(&mut histories, &run.id(), &model);
        *before = after;
    };

    let first = env.import_text("hr", "base.csv", hr_file(1..=100));
    assert_eq!(first.state(), "applied");
    check(&env, &first, &mut before);

    let second = env.import_text("hr", "day2.csv", second_day(100, 5));
    assert_eq!(second.state(), "applied", "{:#}", second.json);
    check(&env, &second, &mut before);
    assert_eq!(logged_changes(&env, &second.id(), Some("removed")).len(), 3);
    assert_eq!(logged_changes(&env, &second.id(), Some("added")).len(), 5);

    // Held (15 of 102 go): it lists what it would change and changes
    // nobody; confirmed, what it did (the same here), under its own ID.
    let cut: Vec<usize> = (19..=105).filter(|i| ![10, 20, 30].contains(i)).collect();
    let held = env.import_text("hr", "cut.csv", hr_file(cut));
    assert_eq!(held.state(), "held", "{:#}", held.json);
    let would = logged_changes(&env, &held.id(), None);
    assert_eq!(export_by_id(&env), before);
    let out = env.run(&["runs", "confirm", &held.id(), "--by", "alice", "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let after = export_by_id(&env);
    let model = model_changes(&before, &after);
    assert_eq!(would, model);
    assert_eq!(logged_changes(&env, &held.id(), None), model);
    add_to_histories(&mut histories, &held.id(), &model);
    before = after;

    // Rejected: what it would have done stays with the run (as many
    // changes of each kind as its counts), nobody's history gets it, and
    // nothing changed.
    let rejected = env.import_text("hr", "empty.csv", hr_file(1..=2));
    assert_eq!(rejected.state(), "held");
    let out = env.run(&["runs", "reject", &rejected.id(), "--by", "bob"]);
    assert_eq!(out.code, 0, "{out:#?}");
    // The decisions are in the log: who, what, when.
    for (run, action, by) in [
        (&held, "confirmed", "alice"),
        (&rejected, "rejected", "bob"),
    ] {
        let out = env.run(&["runs", "changes", &run.id(), "--json"]);
        let decision = out.json("runs changes")["decision"].clone();
        assert_eq!(decision["action"], action, "{decision:#}");
        assert_eq!(decision["by"], by, "{decision:#}");
        assert!(
            decision["at"].as_str().is_some_and(|t| t.starts_with("20")),
            "{decision:#}"
        );
    }
    let out = env.run(&["runs", "changes", &rejected.id()]);
    assert!(
        out.stdout
            .starts_with(&format!("run {}: rejected by bob at 20", rejected.id())),
        "{out:#?}"
    );
    for kind in ["added", "updated", "removed"] {
        let logged = logged_changes(&env, &rejected.id(), Some(kind)).len() as u64;
        assert_eq!(Some(logged), rejected.json[kind].as_u64(), "{kind}");
    }
    assert_eq!(
        rejected.json["removed"],
        before.len() as u64,
        "{:#}",
        rejected.json
    );
    assert_eq!(export_by_id(&env), before);

    // The same file again: unchanged, nothing logged.
    let same: Vec<usize> = (19..=105).filter(|i| ![10, 20, 30].contains(i)).collect();
    let again = env.import_text("hr", "again.csv", hr_file(same));
    assert_eq!(again.state(), "unchanged", "{:#}", again.json);
    assert!(logged_changes(&env, &again.id(), None).is_empty());

    // Each person's history, removed people included, and one never
    // seen; E00005 went with the confirmed run.
    assert!(histories.len() > 100, "{}", histories.len());
    for (id, history) in &histories {
        assert_eq!(&logged_history(&env, id), history, "{id}");
    }
    assert!(logged_history(&env, "E99999").is_empty());
    let out = env.run(&["recipients", "history", "--feed", "hr", "E00005", "--json"]);
    let v = out.json("recipients history");
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["change"]["kind"], "removed", "{v:#}");
    assert_eq!(last["confirmed_by"], "alice", "{v:#}");
    assert_eq!(last["file"], "cut.csv", "{v:#}");
    let out = env.run(&["recipients", "history", "--feed", "hr", "E00010"]);
    assert!(
        out.stdout
            .contains("email: user10@example.com → new10@example.com"),
        "{out:#?}"
    );
    let out = env.run(&["recipients", "history", "--feed", "nope", "E00010"]);
    assert_eq!(out.code, 2, "{out:#?}");
}

#[test]
fn changes_of_an_unknown_run_or_kind_are_refused() {
    let env = Env::new(&[Feed::hr("hr")]);
    let out = env.run(&["runs", "changes", "1"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("no runs yet"), "{out:#?}");
    env.import_text("hr", "base.csv", hr_file(1..=3));
    let out = env.run(&["runs", "changes", "9"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("run 9 does not exist"), "{out:#?}");
    let out = env.run(&["runs", "changes", "1", "--kind", "moved"]);
    assert_eq!(out.code, 2, "{out:#?}");
    let out = env.run(&["runs", "changes", "1"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        out.stdout,
        "added    E00001\nadded    E00002\nadded    E00003\n"
    );
}

/// The change feed from the command line (`recipients changes`), read
/// `limit` at a time: every change and the last answer.
fn read_feed_cli(env: &Env, limit: usize) -> (Vec<Value>, Value) {
    let mut after: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let limit = limit.to_string();
        let mut args = vec![
            "recipients",
            "changes",
            "--feed",
            "hr",
            "--json",
            "--limit",
            &limit,
        ];
        if let Some(after) = &after {
            args.extend(["--after", after]);
        }
        let out = env.run(&args);
        assert_eq!(out.code, 0, "{out:#?}");
        let page = out.json("recipients changes");
        all.extend(page["changes"].as_array().unwrap().iter().cloned());
        after = page["next"].as_str().map(str::to_string);
        if page["more"] != true {
            return (all, page);
        }
    }
}

#[test]
fn the_change_feed_from_the_command_line_gives_applied_changes_and_stops_at_a_held_run() {
    let env = Env::new(&[Feed::hr("hr")]);
    let mut model = Model::default();
    let first = env.import_text("hr", "base.csv", hr_file(1..=100));
    model.applied(&env, &first.id());
    let second = env.import_text("hr", "day2.csv", second_day(100, 5));
    model.applied(&env, &second.id());
    let held = env.import_text("hr", "cut.csv", hr_file(30..=105));
    assert_eq!(held.state(), "held", "{:#}", held.json);

    let (read, last) = read_feed_cli(&env, 7);
    assert_eq!(without_position(&read), model.feed());
    assert_eq!(last["held_run"].to_string(), held.id(), "{last:#}");
    let out = env.run(&["runs", "confirm", &held.id(), "--by", "alice"]);
    assert_eq!(out.code, 0, "{out:#?}");
    model.applied(&env, &held.id());
    let (read, last) = read_feed_cli(&env, 1000);
    assert_eq!(without_position(&read), model.feed());
    assert_eq!(last["held_run"], Value::Null);

    // Lines for people, and where to go on from.
    let out = env.run(&["recipients", "changes", "--feed", "hr", "--limit", "2"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert!(lines[0].ends_with("added    E00001"), "{out:#?}");
    assert!(
        lines[2].starts_with("more: go on with --after "),
        "{out:#?}"
    );
    let out = env.run(&[
        "recipients",
        "changes",
        "--feed",
        "hr",
        "--after",
        "nonsense",
    ]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("is not a cursor"), "{out:#?}");
}
