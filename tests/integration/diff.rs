//! The diff against the store: counts, re-imports, flagged people kept,
//! filters, groups, and dry runs.

use crate::util::*;

fn file_of(rows: &[String]) -> String {
    let mut all = vec![HR_HEADER.to_string()];
    all.extend_from_slice(rows);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    lines(&refs)
}

#[test]
fn reimporting_the_same_file_changes_nothing_and_says_so() {
    let env = Env::new(&[Feed::hr("hr").filter("status", &["Active"])]);
    let mut rows: Vec<String> = (1..=5).map(hr_row).collect();
    rows.push("E00006,Fay,Lin,fay@,,,Sales,Active".into());
    rows.push("E00007,Gus,Kim,gus@example.com,,,Sales,Inactive".into());
    let content = file_of(&rows);

    let first = env.import_text("hr", "people.csv", &content);
    assert_eq!(first.state(), "applied");
    first.assert_counts(&[
        ("rows", 7),
        ("added", 5),
        ("updated", 0),
        ("removed", 0),
        ("unchanged", 0),
        ("flagged", 1),
        ("filtered", 1),
        // Departments of people 1-5: Engineering, Finance, Support, Sales.
        ("groups_created", 4),
        ("groups_removed", 0),
    ]);
    let export = env.export("hr");
    let groups = env.groups("hr");

    let again = env.import_text("hr", "people.csv", &content);
    assert_eq!(again.state(), "unchanged", "{:#}", again.json);
    assert_eq!(again.code, 0);
    again.assert_counts(&[
        ("rows", 7),
        ("added", 0),
        ("updated", 0),
        ("removed", 0),
        ("unchanged", 5),
        ("flagged", 1),
        ("filtered", 1),
        ("groups_created", 0),
        ("groups_removed", 0),
    ]);
    assert_eq!(env.export("hr"), export);
    assert_eq!(env.groups("hr"), groups);

    let runs = env.runs_list();
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["unchanged", "applied"], "runs list newest first");
    assert_eq!(run_id_of(&runs[0]), again.id());
    assert_eq!(run_id_of(&runs[1]), first.id());
}

#[test]
fn flagged_row_keeps_the_existing_person_exactly() {
    let env = Env::hr();
    let day1 = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,(415) 555-0123,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,+1 415 555 0124,,Finance,Active",
        "E4,Dan,Oh,dan@example.com,,,Finance,Active",
        "E5,Eve,Poe,eve@example.com,,,Support,Active",
    ]);
    env.import_text("hr", "day1.csv", day1);
    let before = env.export("hr");
    let groups = env.groups("hr");

    // E3 comes with a new name but a broken email and no other channel
    // (an invalid optional value alone would be a warning); E4 with an
    // empty required first name and a new department. Neither may change.
    let day2 = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,(415) 555-0123,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,,,Sales,Active",
        "E3,Catherine,Ng,cat@,,,Finance,Active",
        "E4,,Oh,dan@example.com,,,Legal,Active",
        "E5,Eve,Poe,eve@example.com,,,Support,Active",
    ]);
    let run = env.import_text("hr", "day2.csv", day2);
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
    run.assert_counts(&[
        ("rows", 5),
        ("added", 0),
        ("updated", 0),
        ("removed", 0),
        ("unchanged", 3),
        ("flagged", 2),
        ("groups_created", 0),
        ("groups_removed", 0),
    ]);
    assert_eq!(env.export("hr"), before);
    assert_eq!(env.groups("hr"), groups);
}

#[test]
fn counts_cover_every_row_of_a_mixed_file() {
    let env = Env::new(&[Feed::hr("hr")
        .filter("status", &["Active"])
        .threshold("\"50%\"")]);
    env.import_text("hr", "day1.csv", hr_file(1..=6));
    let e4_before = env.recipient("hr", &hr_id(4)).unwrap();

    let rows = vec![
        hr_row(1),                             // unchanged
        hr_row(2).replace("Last2", "Newname"), // updated
        // person 3 is absent                                // removed
        hr_row(4).replace("user4@example.com", "user4@"), // flagged, kept
        hr_row(5).replace("Active", "Inactive"),          // filtered, removed
        hr_row(6),                                        // unchanged
        hr_row(7),                                        // added
    ];
    let run = env.import_text("hr", "day2.csv", file_of(&rows));
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[
        ("rows", 6),
        ("added", 1),
        ("updated", 1),
        ("removed", 2),
        ("unchanged", 2),
        ("flagged", 1),
        ("filtered", 1),
        ("groups_created", 0),
        ("groups_removed", 0),
    ]);
    assert_eq!(
        env.exported_ids("hr"),
        [hr_id(1), hr_id(2), hr_id(4), hr_id(6), hr_id(7)]
    );
    assert_eq!(
        env.recipient("hr", &hr_id(2)).unwrap()["last_name"],
        "Newname"
    );
    assert_eq!(env.recipient("hr", &hr_id(4)).unwrap(), e4_before);
}

#[test]
fn filters_count_rows_and_remove_people_filtered_out() {
    let env = Env::new(&[Feed::hr("hr")
        .filter("status", &["Active"])
        .threshold("\"50%\"")]);
    let day1 = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E2,Bob,Ray,bob@example.com,,,Sales,Inactive",
        "E3,Cat,Ng,cat@example.com,,,Sales, active ",
        "E4,Dan,Oh,dan@example.com,,,Sales,Leave",
        "E5,Eve,Poe,eve@example.com,,,Sales,ACTIVE",
        // Filtered before any field check: not flagged.
        "E6,Fay,Lin,fay@,,,Sales,Terminated",
    ]);
    let run = env.import_text("hr", "day1.csv", day1);
    assert_eq!(run.state(), "applied");
    run.assert_counts(&[("rows", 6), ("added", 3), ("filtered", 3), ("flagged", 0)]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E3", "E5"]);

    let day2 = lines(&[
        HR_HEADER,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active",
        "E3,Cat,Ng,cat@example.com,,,Sales,Terminated",
        "E5,Eve,Poe,eve@example.com,,,Sales,ACTIVE",
    ]);
    let run = env.import_text("hr", "day2.csv", day2);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[
        ("rows", 3),
        ("added", 0),
        ("updated", 0),
        ("removed", 1),
        ("unchanged", 2),
        ("flagged", 0),
        ("filtered", 1),
    ]);
    assert_eq!(env.exported_ids("hr"), ["E1", "E5"]);
}

#[test]
fn groups_are_created_moved_and_removed_with_multi_values() {
    let env = Env::new(&[Feed::hr("hr")
        .field(Field::new("teams", "Teams", "multi").separator(";"))
        .groups(&["department", "teams"])
        .threshold("\"50%\"")]);
    let header = format!("{HR_HEADER},Teams");

    let day1 = lines(&[
        &header,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active, Red; Blue ;Red;; ",
        "E2,Bob,Ray,bob@example.com,,,Sales,Active,Blue",
        "E3,Cat,Ng,cat@example.com,,,Legal,Active,",
        "E4,Dan,Oh,dan@example.com,,,Eng,Active,Green",
    ]);
    let run = env.import_text("hr", "day1.csv", day1);
    assert_eq!(run.state(), "applied");
    run.assert_counts(&[("added", 4), ("groups_created", 6), ("groups_removed", 0)]);
    assert_eq!(
        env.groups("hr"),
        [
            ("Department: Eng", 1),
            ("Department: Legal", 1),
            ("Department: Sales", 2),
            ("Teams: Blue", 2),
            ("Teams: Green", 1),
            ("Teams: Red", 1),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into()
    );
    assert_eq!(env.recipient("hr", "E1").unwrap()["teams"], "Red;Blue");

    // E2 and E3 move to Eng (Sales shrinks, Eng grows, Legal empties), E1
    // leaves Red (empties it), E4 joins a new team.
    let day2 = lines(&[
        &header,
        "E1,Ann,Lee,ann@example.com,,,Sales,Active,Blue",
        "E2,Bob,Ray,bob@example.com,,,Eng,Active,Blue",
        "E3,Cat,Ng,cat@example.com,,,Eng,Active,",
        "E4,Dan,Oh,dan@example.com,,,Eng,Active,Green;Yellow",
    ]);
    let run = env.import_text("hr", "day2.csv", day2);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[
        ("updated", 4),
        ("unchanged", 0),
        ("groups_created", 1),
        ("groups_removed", 2),
    ]);
    assert_eq!(
        env.groups("hr"),
        [
            ("Department: Eng", 3),
            ("Department: Sales", 1),
            ("Teams: Blue", 2),
            ("Teams: Green", 1),
            ("Teams: Yellow", 1),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into()
    );
    assert_eq!(env.recipient("hr", "E4").unwrap()["teams"], "Green;Yellow");

    // E1, Sales' last member, leaves the company.
    let day3 = lines(&[
        &header,
        "E2,Bob,Ray,bob@example.com,,,Eng,Active,Blue",
        "E3,Cat,Ng,cat@example.com,,,Eng,Active,",
        "E4,Dan,Oh,dan@example.com,,,Eng,Active,Green;Yellow",
    ]);
    let run = env.import_text("hr", "day3.csv", day3);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[
        ("removed", 1),
        ("unchanged", 3),
        ("groups_created", 0),
        ("groups_removed", 1),
    ]);
    assert_eq!(
        env.groups("hr"),
        [
            ("Department: Eng", 3),
            ("Teams: Blue", 1),
            ("Teams: Green", 1),
            ("Teams: Yellow", 1),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into()
    );
}

#[test]
fn feeds_do_not_touch_each_other() {
    let env = Env::new(&[Feed::hr("hr"), Feed::hr("site")]);
    env.import_text("hr", "a.csv", hr_file(1..=10));
    let site = env.import_text("site", "b.csv", hr_file(5..=8));
    assert_eq!(site.state(), "applied");
    site.assert_counts(&[("added", 4), ("removed", 0)]);
    assert_eq!(env.exported_ids("hr").len(), 10);
    assert_eq!(
        env.exported_ids("site"),
        [hr_id(5), hr_id(6), hr_id(7), hr_id(8)]
    );
}

// --- dry runs --------------------------------------------------------------

/// Dry-runs `content`, checks nothing changed on disk or in the run
/// history, then runs it for real and checks it got the same outcome.
fn dry_run_then_real(env: &Env, name: &str, content: &str, want_state: &str) {
    let tree = env.tree();
    let runs = env.runs_list();
    let export = env.export("hr");
    let path = env.input(name, content);

    let dry = env.import("hr", &path, &["--dry-run"]);
    assert_eq!(dry.state(), want_state, "{:#}", dry.json);
    assert!(
        dry.json["run_id"].is_null(),
        "dry runs are not recorded: {:#}",
        dry.json
    );
    assert_same_tree(&tree, &env.tree(), "dry run");
    assert_eq!(env.runs_list(), runs, "dry run changed the run history");
    assert_eq!(env.export("hr"), export);

    let real = env.import("hr", &path, &[]);
    assert_eq!(real.code, dry.code);
    for key in ["state", "reason", "encoding"] {
        assert_eq!(
            dry.json[key], real.json[key],
            "`{key}` of dry and real runs"
        );
    }
    if want_state != "failed" {
        assert_eq!(dry.counts(), real.counts(), "counts of dry and real runs");
    }
}

#[test]
fn dry_run_of_an_applied_file_changes_nothing_and_predicts_the_run() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=50));
    let mut rows: Vec<String> = (1..=48).chain(51..=53).map(hr_row).collect();
    for row in rows.iter_mut().take(10) {
        *row = row.replace("Active", "Active ").replace("First", "Given");
    }
    rows.push("E00099,Bad,Email,bad@,,,Sales,Active".into());
    dry_run_then_real(&env, "day2.csv", &file_of(&rows), "applied");
    let runs = env.runs_list();
    assert_eq!(runs[0]["added"], 3);
    assert_eq!(runs[0]["updated"], 10);
    assert_eq!(runs[0]["removed"], 2);
    assert_eq!(runs[0]["flagged"], 1);
}

#[test]
fn dry_run_of_an_unchanged_file() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=20));
    dry_run_then_real(&env, "day1.csv", &hr_file(1..=20), "unchanged");
}

#[test]
fn dry_run_of_a_held_file_exits_3_and_changes_nothing() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=50));
    dry_run_then_real(&env, "day2.csv", &hr_file(1..=40), "held");
}

#[test]
fn dry_run_of_a_failed_file_exits_1() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=10));
    let content = hr_file(1..=10).replacen("Employee ID", "Number", 1);
    dry_run_then_real(&env, "bad.csv", &content, "failed");
}

// --- against a reference model ---------------------------------------------

use std::collections::BTreeMap;

use proptest::prelude::*;

/// One row of a generated file: first name, department, valid email.
type Row = (usize, usize, bool);

const NAMES: [&str; 3] = ["Ann", "Bob", "Cat"];
const DEPTS: [&str; 2] = ["Sales", "Eng"];

fn model_line(id: usize, (name, dept, valid): Row) -> String {
    let email = if valid {
        format!("p{id}@example.com")
    } else {
        "bad@".to_string()
    };
    format!(
        "P{id:03},{},Last,{email},,,{},Active",
        NAMES[name], DEPTS[dept]
    )
}

/// A stored person as the export shows it (the standard `hr` fields).
fn model_export_line(id: usize, (name, dept, _): Row) -> String {
    format!(
        "P{id:03},{},Last,p{id}@example.com,,,{},Active",
        NAMES[name], DEPTS[dept]
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A series of files, each diffed against a naive model of the store:
    /// valid rows are the new truth, a flagged row keeps its stored person,
    /// everyone else goes; the counts, the export and the groups follow.
    #[test]
    fn prop_imports_match_a_reference_model(
        files in prop::collection::vec(
            prop::collection::btree_map(0usize..30, (0usize..3, 0usize..2, prop::bool::weighted(0.8)), 1..20),
            1..4,
        )
    ) {
        let env = Env::new(&[Feed::hr("hr").threshold("\"100%\"")]);
        let mut store: BTreeMap<usize, Row> = BTreeMap::new();
        for (n, file) in files.iter().enumerate() {
            let mut text = format!("{HR_HEADER}\n");
            // Newest IDs first: input order must not matter.
            for (id, row) in file.iter().rev() {
                text += &model_line(*id, *row);
                text.push('\n');
            }
            let mut next = BTreeMap::new();
            let (mut added, mut updated, mut unchanged, mut flagged) = (0u64, 0u64, 0u64, 0u64);
            for (id, row) in file {
                if row.2 {
                    match store.get(id) {
                        None => added += 1,
                        Some(old) if (old.0, old.1) != (row.0, row.1) => updated += 1,
                        Some(_) => unchanged += 1,
                    }
                    next.insert(*id, *row);
                } else {
                    flagged += 1;
                    if let Some(old) = store.get(id) {
                        next.insert(*id, *old);
                    }
                }
            }
            let removed = store.keys().filter(|id| !next.contains_key(id)).count() as u64;
            let groups = |s: &BTreeMap<usize, Row>| -> BTreeMap<String, u64> {
                let mut g = BTreeMap::new();
                for row in s.values() {
                    *g.entry(format!("Department: {}", DEPTS[row.1])).or_insert(0) += 1;
                }
                g
            };
            let (old_groups, new_groups) = (groups(&store), groups(&next));
            let created = new_groups.keys().filter(|g| !old_groups.contains_key(*g)).count() as u64;
            let dropped = old_groups.keys().filter(|g| !new_groups.contains_key(*g)).count() as u64;

            let run = env.import_text("hr", &format!("file{n}.csv"), &text);
            let changed = added + updated + removed > 0;
            prop_assert_eq!(run.state(), if changed { "applied" } else { "unchanged" });
            prop_assert_eq!(
                run.counts(),
                BTreeMap::from([
                    ("rows", file.len() as u64),
                    ("added", added),
                    ("updated", updated),
                    ("removed", removed),
                    ("unchanged", unchanged),
                    ("flagged", flagged),
                    ("filtered", 0),
                    ("groups_created", created),
                    ("groups_removed", dropped),
                ])
            );
            let mut want = format!("{HR_FIELDS}\n");
            for (id, row) in &next {
                want += &model_export_line(*id, *row);
                want.push('\n');
            }
            prop_assert_eq!(env.export("hr").replace("\r\n", "\n"), want);
            prop_assert_eq!(env.groups("hr"), new_groups);
            store = next;
        }
    }
}
