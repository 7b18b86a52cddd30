//! Crash safety: an import killed with SIGKILL at any moment leaves the
//! store exactly as before the run or exactly as after it, the run's
//! change log included.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::changes::{by_id, model_changes};
use crate::util::*;

/// People in the base file. Sized so the whole test stays well under two
/// minutes in a debug build on two cores.
const ROWS: usize = 60_000;
/// How many times the second import is killed.
const KILLS: u32 = 20;

/// The second day's file: every 33rd person gone (~3%), every 20th renamed,
/// 2% new people.
fn updated_file() -> String {
    let mut s = String::from(HR_HEADER);
    s.push('\n');
    for i in 1..=ROWS {
        if i.is_multiple_of(33) {
            continue;
        }
        let row = hr_row(i);
        if i % 20 == 1 {
            s += &row.replace(&format!(",Last{i},"), &format!(",Renamed{i},"));
        } else {
            s += &row;
        }
        s.push('\n');
    }
    for i in ROWS + 1..=ROWS + ROWS / 50 {
        s += &hr_row(i);
        s.push('\n');
    }
    s
}

/// Run `id`'s change log as `runs changes --json` lists it; the output
/// when the command fails (e.g. no such run).
fn logged_changes(env: &Env, id: &str) -> Result<Vec<Value>, Out> {
    let out = env.run(&["runs", "changes", id, "--json"]);
    if out.code != 0 {
        return Err(out);
    }
    let v = out.json("runs changes");
    Ok(v["changes"].as_array().cloned().unwrap_or_default())
}

/// What is wrong with the change log of a store left as it was after
/// the run (`run` is its record): it must be the uninterrupted run's.
fn after_log_problem(env: &Env, run: &Value, expected: &[Value]) -> Option<String> {
    match logged_changes(env, &run_id_of(run)) {
        Ok(logged) if logged == expected => None,
        Ok(logged) => Some(format!(
            "the run's change log has {} changes, not the {} of the exports' diff",
            logged.len(),
            expected.len()
        )),
        Err(out) => Some(format!("`runs changes` fails: {}", out.stderr.trim())),
    }
}

/// What is wrong with a store left as it was before the run: the run
/// that did not commit (its ID `unrecorded`) is unknown, and no entry of
/// any table (a change log without its run record) is left of it.
fn before_log_problem(
    env: &Env,
    unrecorded: &str,
    entries: Option<&str>,
    before_entries: &str,
) -> Option<String> {
    if let Ok(logged) = logged_changes(env, unrecorded) {
        return Some(format!(
            "run {unrecorded} is not recorded, yet lists {} changes",
            logged.len()
        ));
    }
    match entries {
        Some(entries) if entries != before_entries => Some(format!(
            "the store has {entries} instead of the {before_entries} before the run: \
             something of the killed run is left"
        )),
        _ => None,
    }
}

fn restore(env: &Env, saved: &std::path::Path) {
    fs::remove_dir_all(&env.data_dir).expect("remove data dir");
    copy_dir(saved, &env.data_dir);
}

#[test]
fn a_killed_import_leaves_the_store_before_or_after() {
    let started = Instant::now();
    // A second feed gives a way to open the store for writing without
    // touching `hr` (see below).
    let env = Env::new(&[Feed::hr("hr"), Feed::hr("other")]);
    let base = env.input("base.csv", hr_file(1..=ROWS));
    let run = env.import("hr", &base, &[]);
    assert_eq!(run.state(), "applied");
    run.assert_counts(&[("added", ROWS as u64)]);

    let saved = env.root.join("saved-data");
    copy_dir(&env.data_dir, &saved);
    let before_export = env.export("hr");
    let before_runs = env.runs_list();
    let before_entries = env.store_entries();

    // One uninterrupted run, timed, on a copy of the base store (restored
    // from `saved` before every kill).
    let update = env.input("update.csv", updated_file());
    let t = Instant::now();
    let after = env.import("hr", &update, &[]);
    let duration = t.elapsed();
    assert_eq!(after.state(), "applied", "{:#}", after.json);
    let removed = (ROWS / 33) as u64;
    let added = (ROWS / 50) as u64;
    let renamed = (1..=ROWS)
        .filter(|i| i % 20 == 1 && !i.is_multiple_of(33))
        .count() as u64;
    after.assert_counts(&[
        ("added", added),
        ("removed", removed),
        ("updated", renamed),
        ("flagged", 0),
    ]);
    let after_export = env.export("hr");
    let after_runs = env.runs_list();
    assert_ne!(before_export, after_export);
    assert_eq!(after_runs.len(), before_runs.len() + 1);
    // The run's change log is what the exports say it changed.
    let after_changes = model_changes(
        &by_id(parse_export(&before_export)),
        &by_id(parse_export(&after_export)),
    );
    assert_eq!(
        logged_changes(&env, &after.id()).expect("the run's changes"),
        after_changes
    );
    let after_entries = env.store_entries();

    let update_arg = update.to_str().unwrap().to_string();
    let config = env.config.to_str().unwrap().to_string();
    let (mut befores, mut afters) = (0, 0);
    let mut problems: Vec<String> = Vec::new();
    for i in 0..KILLS {
        restore(&env, &saved);
        // Spread evenly across (0, 1.25 x duration): the last few land
        // around and after the commit, so both outcomes are checked.
        let delay = duration * 5 * (2 * i + 1) / (8 * KILLS);
        let mut child = env
            .command()
            .args([
                "--config",
                &config,
                "import",
                "--feed",
                "hr",
                &update_arg,
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start import");
        std::thread::sleep(delay);
        // SIGKILL; an error only means it had already finished.
        let _ = child.kill();
        child.wait().expect("reap import");
        let at = format!("kill {i} after {delay:?} (of {duration:?})");

        // Set when a write to the other feed was needed to recover: the
        // store's entries then count that run too.
        let mut wrote_other = false;
        let export = match env.try_export("hr") {
            Ok(export) => export,
            Err(out) => {
                wrote_other = true;
                problems.push(format!(
                    "{at}: `recipients export` fails: {}",
                    out.stderr.trim()
                ));
                // Still find out whether the commit was atomic: any write
                // (here to the other feed) lets the store recover.
                let other = env.input("other.csv", hr_file(1..=2));
                env.import("other", &other, &[]);
                match env.try_export("hr") {
                    Ok(export) => export,
                    Err(out) => {
                        problems.push(format!(
                            "{at}: store unreadable even after a write: {out:?}"
                        ));
                        continue;
                    }
                }
            }
        };
        let runs = match env.try_runs_list(&["--feed", "hr"]) {
            Ok(runs) => runs,
            Err(out) => {
                problems.push(format!("{at}: `runs list` fails: {}", out.stderr.trim()));
                continue;
            }
        };
        let entries = match wrote_other {
            false => env.try_store_entries().ok(),
            true => None,
        };
        if export == before_export {
            befores += 1;
            if runs != before_runs {
                problems.push(format!(
                    "{at}: store as before, but the run history changed: {runs:#?}"
                ));
            }
            let problem =
                before_log_problem(&env, &after.id(), entries.as_deref(), &before_entries);
            problems.extend(problem.map(|p| format!("{at}: store as before, but {p}")));
        } else if export == after_export {
            afters += 1;
            let complete = runs.len() == before_runs.len() + 1
                && runs[0]["state"] == "applied"
                && COUNTS.iter().all(|k| runs[0][*k] == after_runs[0][*k])
                && runs[1..] == before_runs[..];
            if !complete {
                problems.push(format!(
                    "{at}: store as after, but the run history is {runs:#?}"
                ));
            } else if let Some(p) = after_log_problem(&env, &runs[0], &after_changes) {
                problems.push(format!("{at}: store as after, but {p}"));
            }
            if entries.as_ref().is_some_and(|e| *e != after_entries) {
                problems.push(format!(
                    "{at}: store as after, but it has {entries:?} instead of {after_entries}"
                ));
            }
        } else {
            problems.push(format!(
                "{at}: the export is neither the before nor the after state \
                 ({} lines; before {}, after {})",
                export.lines().count(),
                before_export.lines().count(),
                after_export.lines().count()
            ));
        }
    }

    eprintln!(
        "crash test: {ROWS} rows, import {duration:?}, {KILLS} kills: \
         {befores} before, {afters} after; whole test {:?}",
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) after killing the import:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The store is still usable: the file processed again gets to the
    // after state.
    let again = env.import("hr", &update, &[]);
    assert!(
        ["applied", "unchanged"].contains(&again.state()),
        "{:#}",
        again.json
    );
    assert_eq!(env.export("hr"), after_export);
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "crash test too slow: {:?}",
        started.elapsed()
    );
}
