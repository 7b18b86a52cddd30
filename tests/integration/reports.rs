//! Error reports: one per run (a daily file of the same name never
//! overwrites or deletes an earlier run's report), a report for a file
//! rejected on the server, BOM and formula neutralising, and the
//! neutralised `recipients export`.

use std::path::Path;

use serde_json::Value;

use crate::server::*;
use crate::util::*;

/// `hr_file(1..=20)` plus one row with a bad email for each of `bad`.
fn daily_with_bad(bad: &[usize]) -> String {
    let mut content = hr_file(1..=20);
    for &i in bad {
        content += &format!("E{:05},Bad{i},Mail,bad{i}@,,,Sales,Active\n", 900 + i);
    }
    content
}

/// The data rows of a report (after its header row) as (line, ID).
fn report_rows(text: &str) -> Vec<(String, String)> {
    csv_records(text.as_bytes(), b',')
        .into_iter()
        .skip(1)
        .map(|(_, r)| (r[0].clone(), r[2].clone()))
        .collect()
}

fn report_names(env: &Env) -> Vec<String> {
    names_in(&env.data_dir.join("hr/errors"))
}

#[test]
fn a_daily_file_of_the_same_name_keeps_each_runs_own_report() {
    let env = Env::hr();
    // Three "days" of daily.csv, each with other bad rows, then a day
    // without errors.
    let days = [vec![1, 2], vec![3], vec![4, 5, 6]];
    // (run ID, its report's path, the (line, ID) rows it must list)
    type DayRun = (String, String, Vec<(String, String)>);
    let mut runs: Vec<DayRun> = Vec::new();
    for bad in &days {
        let run = env.import_text("hr", "daily.csv", daily_with_bad(bad));
        run.assert_counts(&[("flagged", bad.len() as u64)]);
        let id = run.id();
        let path = run.json["error_report"]
            .as_str()
            .unwrap_or_else(|| panic!("no error report: {:#}", run.json))
            .to_string();
        // Data rows start at line 2; the bad rows follow the 20 good ones.
        let want: Vec<(String, String)> = bad
            .iter()
            .enumerate()
            .map(|(k, i)| ((22 + k).to_string(), format!("E{:05}", 900 + i)))
            .collect();
        runs.push((id, path, want));
    }
    let clean = env.import_text("hr", "daily.csv", hr_file(1..=20));
    assert_eq!(clean.json["error_report"], Value::Null, "{:#}", clean.json);
    assert_eq!(clean.n("flagged"), 0);

    // Three separate files, named by the run's UTC start, its ID and the
    // file's name; the error-free run deleted none of them.
    let names = report_names(&env);
    assert_eq!(names.len(), 3, "{names:?}");
    let mut sorted_by_run = names.clone();
    sorted_by_run.sort_by_key(|n| report_name_parts(n).expect("a report name").1);
    assert_eq!(sorted_by_run, names, "the names sort by time");
    for (id, path, want) in &runs {
        // The run record points at its own report.
        let shown = env.run_show(id);
        assert_eq!(shown["error_report"].as_str(), Some(path.as_str()));
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
        let (_, report_run, file) = report_name_parts(name).expect("a report name");
        assert_eq!(
            (report_run.to_string(), file.as_str()),
            (id.clone(), "daily.csv")
        );
        // Exactly that run's rows, with a BOM.
        let text = report_text(Path::new(path));
        assert!(
            text.starts_with(&format!("line,reasons,{HR_HEADER}\n")),
            "{text}"
        );
        assert_eq!(&report_rows(&text), want, "run {id}: {text}");
        assert!(text.contains("invalid email"), "{text}");
    }
    // `runs show` (human) names the same file.
    let out = env.run(&["runs", "show", &runs[0].0]);
    assert!(
        out.stdout.contains(&format!("error report: {}", runs[0].1)),
        "{out:#?}"
    );
}

#[test]
#[cfg(feature = "e2e")]
fn a_file_rejected_on_the_server_gets_a_report_with_its_reason() {
    let s = Setup::standard();
    // No ID column; a formula-looking header cell too.
    let content = hr_file(1..=5)
        .replacen("Employee ID", "Staff Number", 1)
        .replacen("Status", "=Status", 1);
    ok(
        &s.key_client()
            .session(vec![put("/upload/noid.csv", &content)])[0],
        "upload",
    );
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "noid.csv", "failed", &[]);
    let reason = runs[0]["reason"].as_str().expect("reason").to_string();
    assert!(reason.contains("Employee ID"), "{reason}");
    let path = runs[0]["error_report"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed run has its report: {:#}", runs[0]))
        .to_string();
    let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
    assert_eq!(
        Path::new(&path).parent().unwrap(),
        s.env.data_dir.join("hr/errors")
    );
    let (_, report_run, file) = report_name_parts(name).expect("a report name");
    assert_eq!(report_run.to_string(), run_id_of(&runs[0]));
    assert_eq!(file, "noid.csv");

    // `line,reasons,<the header found>`, then the reason with an empty
    // line cell.
    let text = report_text(Path::new(&path));
    let records = csv_records(text.as_bytes(), b',');
    let mut want_header: Vec<String> = vec!["line".into(), "reasons".into()];
    want_header.extend(
        "Staff Number,First Name,Last Name,Email,Mobile Phone,Office Phone,Department,'=Status"
            .split(',')
            .map(String::from),
    );
    assert_eq!(records[0].1, want_header, "{text}");
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[1].1[0], "");
    assert_eq!(
        records[1].1[1],
        format!("the whole file was rejected (nothing was imported): {reason}")
    );

    // The account sees it in /errors and downloads it, BOM included.
    let results = s.key_client().session(vec![
        serde_json::json!({"op": "listdir", "path": "/errors"}),
        serde_json::json!({"op": "get", "path": format!("/errors/{name}")}),
    ]);
    assert_eq!(
        ok(&results[0], "listdir /errors"),
        serde_json::json!([name])
    );
    assert_eq!(
        ok(&results[1], "download the report"),
        serde_json::json!(format!("\u{feff}{text}"))
    );
    // `runs show` names it.
    assert_eq!(
        s.env.run_show(&run_id_of(&runs[0]))["error_report"].as_str(),
        Some(path.as_str())
    );
    // Nothing was imported.
    assert_eq!(s.env.exported_ids("hr"), Vec::<String>::new());
}

#[test]
fn a_failed_cli_import_writes_no_report() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", daily_with_bad(&[1]));
    let tree = env.tree();
    let run = env.import_text(
        "hr",
        "noid.csv",
        hr_file(1..=5).replacen("Employee ID", "Staff Number", 1),
    );
    assert_eq!(run.state(), "failed");
    assert_eq!(run.json["error_report"], Value::Null);
    assert_same_tree(&tree, &env.tree(), "failed import from the command line");
}

#[test]
fn formula_cells_are_neutralised_in_reports_and_exports_unless_raw() {
    let env = Env::hr();
    let content = lines(&[
        HR_HEADER,
        "E1,=HYPERLINK(\"x\"),Lee,ann@example.com,+1 415 555 2671,,Sales,Active",
        "E2,@SUM(A1),-Ng,bad@,,,Sales,Active",
    ]);
    let run = env.import_text("hr", "formula.csv", &content);
    run.assert_counts(&[("added", 1), ("flagged", 1)]);

    // The report: BOM (asserted by report_text), formula cells with a '.
    let text = report_text(Path::new(
        run.json["error_report"].as_str().expect("error_report"),
    ));
    let report = csv_records(text.as_bytes(), b',');
    let row = &report[1].1;
    assert!(row[1].contains("invalid email"), "{text}");
    assert_eq!(
        [&row[..1], &row[2..]].concat(),
        [
            "3",
            "E2",
            "'@SUM(A1)",
            "'-Ng",
            "bad@",
            "",
            "",
            "Sales",
            "Active"
        ]
        .map(String::from)
        .to_vec(),
        "{text}"
    );

    // The export: neutralised by default.
    let out = env.run(&["recipients", "export", "--feed", "hr"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        out.stdout,
        format!(
            "{HR_FIELDS}\nE1,\"'=HYPERLINK(\"\"x\"\")\",Lee,ann@example.com,'+14155552671,,Sales,Active\n"
        )
    );
    // --raw: exactly as stored.
    let out = env.run(&["recipients", "export", "--feed", "hr", "--raw"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        out.stdout,
        format!(
            "{HR_FIELDS}\nE1,\"=HYPERLINK(\"\"x\"\")\",Lee,ann@example.com,+14155552671,,Sales,Active\n"
        )
    );
    // JSON is never neutralised.
    let out = env.run(&["recipients", "export", "--feed", "hr", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let json: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(json[0]["first_name"], "=HYPERLINK(\"x\")");
    assert_eq!(json[0]["mobile"], "+14155552671");
}

#[test]
#[cfg(feature = "e2e")]
fn past_the_retention_reports_and_their_runs_links_go_together_and_no_orphan_is_left() {
    let s = Setup::new(&["retention = \"2s\""], &[]);
    let client = s.key_client();
    ok(
        &client.session(vec![put("/upload/day1.csv", &daily_with_bad(&[3]))])[0],
        "day 1",
    );
    let first = s.wait_for_exactly(1);
    let old_report = first[0]["error_report"]
        .as_str()
        .expect("a report")
        .to_string();
    assert!(Path::new(&old_report).exists());
    std::thread::sleep(std::time::Duration::from_secs(4));
    ok(
        &client.session(vec![put("/upload/day2.csv", &daily_with_bad(&[4]))])[0],
        "day 2",
    );
    let runs = s.wait_for_exactly(2);
    // The sweep and the pruning run after the run is recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let day1 = loop {
        let day1 = s.env.run_show(&run_id_of(&first[0]));
        if day1["error_report"].is_null() || std::time::Instant::now() > deadline {
            break day1;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        !Path::new(&old_report).exists(),
        "the old report is deleted"
    );
    assert!(day1["error_report"].is_null(), "{day1:#}");
    assert_eq!(day1["errors"].as_array().map(Vec::len), Some(0), "{day1:#}");
    assert_eq!(day1["state"], "applied", "the summary stays: {day1:#}");
    // Every report left belongs to a run that names it, and every run
    // that names a report has it.
    let names = report_names(&s.env);
    let newest = runs
        .iter()
        .find(|r| r["file"] == "day2.csv")
        .expect("day 2's run");
    let kept = newest["error_report"].as_str().expect("day 2's report");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(kept.ends_with(&names[0]), "{kept} {names:?}");
    for run in s.env.runs_list() {
        if let Some(report) = run["error_report"].as_str() {
            assert!(Path::new(report).exists(), "{run:#}");
        }
    }
}
