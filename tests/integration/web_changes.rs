//! The change log on the status page: a run's changes (paged, by kind, as
//! CSV, would-be changes of held and rejected runs) and a person's
//! timeline (removed people too), over curl and in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::server::run_tool;
use crate::util::*;
use crate::web::{csrf_in, import_via_cli, Web, ADMIN, ADMIN_PASSWORD};

/// A file of people `people` with some rows replaced: (person, row).
fn hr_file_with(people: impl IntoIterator<Item = usize>, replaced: &[(usize, String)]) -> String {
    let mut s = String::from(HR_HEADER);
    s.push('\n');
    for i in people {
        match replaced.iter().find(|(p, _)| *p == i) {
            Some((_, row)) => s += row,
            None => s += &hr_row(i),
        }
        s.push('\n');
    }
    s
}

/// A page's body, asserting its status.
fn page(web: &Web, path: &str, status: u16) -> String {
    let (code, headers, body) = web.curl(&[&web.url(path)]);
    assert_eq!(code, status, "{path}: {headers}\n{body}");
    body
}

/// The link the run page gives a person's ID.
fn person_link(id: &str) -> String {
    format!("href=\"/recipients/view?feed=hr&amp;id={id}\"")
}

/// What the CSV download holds for removing standard person `i`: one row
/// per non-empty value, in field order.
fn removed_rows(i: usize) -> Vec<Vec<String>> {
    let fields: Vec<&str> = HR_FIELDS.split(',').collect();
    let row = hr_row(i);
    let values: Vec<&str> = row.split(',').collect();
    fields
        .iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(f, v)| {
            vec![
                "removed".into(),
                hr_id(i),
                f.to_string(),
                v.into(),
                "".into(),
            ]
        })
        .collect()
}

fn post_decision(web: &Web, run: &str, decision: &str) {
    let token = csrf_in(&page(web, &format!("/runs/{run}"), 200));
    let (code, _, body) = web.curl(&[
        "-d",
        &format!("csrf={token}"),
        &web.url(&format!("/runs/{run}/{decision}")),
    ]);
    assert_eq!(code, 303, "{decision}: {body}");
}

#[test]
fn a_runs_page_lists_its_changes_paged_by_kind_and_as_csv_and_held_runs_say_would() {
    let web = Web::start();
    let first = import_via_cli(&web.env, "day1.csv", &hr_file(1..=150));
    assert_eq!(first["state"], "applied");
    let first = run_id_of(&first);
    let day2 = hr_file_with(
        (1..=148).chain([151]),
        &[
            (
                5,
                "E00005,First5,Last5,new5@example.com,,,Engineering,Active".into(),
            ),
            (
                7,
                "E00007,<i>Seven</i>,Last7,user7@example.com,,,Support,Active".into(),
            ),
            (
                9,
                "E00009,First9,Last9,user9@example.com,,,=SUM(A1),Active".into(),
            ),
        ],
    );
    let second = import_via_cli(&web.env, "day2.csv", &day2);
    assert_eq!(second["state"], "applied", "{second:#}");
    let second = run_id_of(&second);

    // Logged out: the page sends to the login, the download is refused.
    let (code, headers, _) = web.curl(&[&web.url(&format!("/runs/{second}"))]);
    assert_eq!(code, 303, "{headers}");
    assert!(headers.contains("/login"), "{headers}");
    let (code, _, _) = web.curl(&[&web.url(&format!("/runs/{second}/changes.csv"))]);
    assert_eq!(code, 401);
    let (code, _, _) = web.curl(&[&web.url("/recipients/view?feed=hr&id=E00005")]);
    assert_eq!(code, 303);
    assert_eq!(web.login(ADMIN_PASSWORD).0, 303);

    // The applied run: who, which fields, old → new, values escaped.
    let body = page(&web, &format!("/runs/{second}"), 200);
    assert!(body.contains("What this run changed (6)"), "{body}");
    assert!(body.contains("added 1</a>"), "{body}");
    assert!(body.contains("updated 3</a>"), "{body}");
    assert!(body.contains("removed 2</a>"), "{body}");
    assert!(
        body.contains("<span class=\"field\">email</span>: user5@example.com → new5@example.com"),
        "{body}"
    );
    assert!(body.contains("&lt;i&gt;Seven"), "{body}");
    assert!(!body.contains("<i>Seven"), "values are escaped: {body}");
    for id in ["E00005", "E00007", "E00009", "E00149", "E00150", "E00151"] {
        assert!(body.contains(&person_link(id)), "{id}: {body}");
    }
    assert!(body.contains("page 1 of 1 (6 changes)"), "{body}");

    // By kind.
    let removed = page(&web, &format!("/runs/{second}?kind=removed"), 200);
    assert!(removed.contains(&person_link("E00149")), "{removed}");
    assert!(removed.contains("<span class=\"field\">email</span>: user150@example.com"));
    assert!(!removed.contains(&person_link("E00005")), "{removed}");
    assert!(
        removed.contains("page 1 of 1 (2 of 6 changes)"),
        "{removed}"
    );
    page(&web, &format!("/runs/{second}?kind=moved"), 400);

    // Paged: 150 additions are two pages of 100.
    let one = page(&web, &format!("/runs/{first}"), 200);
    assert!(one.contains("page 1 of 2 (150 changes)"), "{one}");
    assert!(one.contains(&person_link("E00100")) && !one.contains(&person_link("E00101")));
    assert!(one.contains("changes_page=2#changes\">next</a>"), "{one}");
    let two = page(&web, &format!("/runs/{first}?changes_page=2"), 200);
    assert!(two.contains(&person_link("E00101")) && two.contains(&person_link("E00150")));
    assert!(!two.contains(&person_link("E00001")), "{two}");
    assert!(
        two.contains("changes_page=1#changes\">previous</a>"),
        "{two}"
    );
    page(&web, &format!("/runs/{first}?changes_page=3"), 404);
    let updated = page(&web, &format!("/runs/{first}?kind=updated"), 200);
    assert!(updated.contains("None of this kind."), "{updated}");

    // The CSV: every change, one row per field, formulas neutralised.
    let (code, headers, csv) = web.curl(&[&web.url(&format!("/runs/{second}/changes.csv"))]);
    assert_eq!(code, 200, "{headers}");
    assert!(
        headers.contains(&format!("filename=\"run-{second}-changes.csv\"")),
        "{headers}"
    );
    let csv = csv.strip_prefix('\u{feff}').expect("a BOM");
    let rows: Vec<Vec<String>> = csv_records(csv.as_bytes(), b',')
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let owned = |r: [&str; 5]| r.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut expected = vec![
        owned(["kind", "id", "field", "old", "new"]),
        owned(["added", "E00151", "", "", ""]),
        owned([
            "updated",
            "E00005",
            "email",
            "user5@example.com",
            "new5@example.com",
        ]),
        owned(["updated", "E00007", "first_name", "First7", "<i>Seven</i>"]),
        owned([
            "updated",
            "E00009",
            "department",
            "Engineering",
            "'=SUM(A1)",
        ]),
    ];
    expected.extend(removed_rows(149));
    expected.extend(removed_rows(150));
    assert_eq!(rows, expected);

    // A held run lists what it would change, worded so; rejected, it keeps
    // the list, labelled.
    let day3 = hr_file_with(
        1..=100,
        &[(
            10,
            "E00010,First10,Last10,held10@example.com,,,Finance,Active".into(),
        )],
    );
    let held = import_via_cli(&web.env, "day3.csv", &day3);
    assert_eq!(held["state"], "held", "{held:#}");
    let held = run_id_of(&held);
    let body = page(&web, &format!("/runs/{held}"), 200);
    assert!(
        body.contains("What this run would change if confirmed"),
        "{body}"
    );
    assert!(body.contains("would remove 49</a>"), "{body}");
    assert!(body.contains("<td>would update</td>"), "{body}");
    assert!(
        body.contains("user10@example.com → held10@example.com"),
        "{body}"
    );
    let (code, headers, csv) = web.curl(&[&web.url(&format!("/runs/{held}/changes.csv"))]);
    assert_eq!(code, 200);
    assert!(
        headers.contains(&format!("run-{held}-would-change.csv")),
        "{headers}"
    );
    assert!(csv.contains("updated,E00010,email,user10@example.com,held10@example.com"));
    post_decision(&web, &held, "reject");
    let body = page(&web, &format!("/runs/{held}"), 200);
    assert!(
        body.contains("What this run would have changed (rejected: nothing applied)"),
        "{body}"
    );
    assert!(body.contains("<td>would remove</td>"), "{body}");
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

#[test]
fn a_persons_page_shows_their_timeline_and_removed_people_are_found_by_id() {
    let web = Web::start();
    let runs: Vec<String> = [
        ("r1.csv", hr_file(1..=30)),
        (
            "r2.csv",
            hr_file_with(
                1..=30,
                &[(
                    2,
                    "E00002,First2,Last2,changed2@example.com,,,Finance,Active".into(),
                )],
            ),
        ),
        (
            "r3.csv",
            hr_file_with(
                1..=29,
                &[(
                    2,
                    "E00002,First2,Last2,changed2@example.com,,,Support,Active".into(),
                )],
            ),
        ),
    ]
    .iter()
    .map(|(name, text)| {
        let run = import_via_cli(&web.env, name, text);
        assert_eq!(run["state"], "applied", "{run:#}");
        run_id_of(&run)
    })
    .collect();
    // Removing 21..29 of 29 is held; the administrator confirms it.
    let held = import_via_cli(
        &web.env,
        "r4.csv",
        &hr_file_with(
            1..=20,
            &[(
                2,
                "E00002,First2,Last2,changed2@example.com,,,Support,Active".into(),
            )],
        ),
    );
    assert_eq!(held["state"], "held", "{held:#}");
    let held = run_id_of(&held);
    assert_eq!(web.login(ADMIN_PASSWORD).0, 303);
    post_decision(&web, &held, "confirm");

    // Someone in the feed: every run that changed them, newest first.
    let body = page(&web, "/recipients/view?feed=hr&id=E00002", 200);
    let at = |run: &str| {
        body.find(&format!("<a href=\"/runs/{run}\">Run {run}</a>"))
            .unwrap_or_else(|| panic!("run {run} in {body}"))
    };
    assert!(
        at(&runs[2]) < at(&runs[1]) && at(&runs[1]) < at(&runs[0]),
        "{body}"
    );
    assert!(!body.contains(&format!("/runs/{held}\"")), "{body}");
    assert!(
        body.contains(
            "<span class=\"field\">email</span>: user2@example.com → changed2@example.com"
        ),
        "{body}"
    );
    assert!(body.contains("<span class=\"field\">department</span>: Finance → Support"));
    assert!(body.contains("r2.csv") && body.contains("<strong>added</strong>"));
    assert!(!body.contains("Not in the feed now"), "{body}");

    // Removed by an applied run: found by ID, with the run that removed
    // them and the values they had.
    let body = page(&web, "/recipients/view?feed=hr&id=E00030", 200);
    assert!(body.contains("Not in the feed now"), "{body}");
    assert!(
        body.contains(&format!(
            "removed by <a href=\"/runs/{0}\">run {0}</a> at ",
            runs[2]
        )),
        "{body}"
    );
    assert!(body.contains("<span class=\"field\">email</span>: user30@example.com"));
    assert!(body.contains(&format!(
        "<a href=\"/runs/{}\">Run {}</a>",
        runs[0], runs[0]
    )));
    // Removed by a confirmed held run: who confirmed it.
    let body = page(&web, "/recipients/view?feed=hr&id=E00025", 200);
    assert!(
        body.contains(&format!(
            "removed by <a href=\"/runs/{held}\">run {held}</a>"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("confirmed by {ADMIN} at ")),
        "{body}"
    );

    // Nobody ever had this ID: a clear 404.
    let body = page(&web, "/recipients/view?feed=hr&id=E99999", 404);
    assert!(body.contains("has no recipient 'E99999'"), "{body}");
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

/// Where the screenshots are also copied for people to look at (not kept
/// in git).
fn shared_shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-shots");
    std::fs::create_dir_all(&dir).expect("target-shots");
    dir
}

#[test]
fn in_chromium_a_runs_changes_and_a_persons_timeline_render() {
    let web = Web::start();
    let first = run_id_of(&import_via_cli(&web.env, "r1.csv", &hr_file(1..=100)));
    let day2 = hr_file_with(
        (1..=99).chain([101]),
        &[
            (
                2,
                "E00002,First2,Last2,changed2@example.com,,,Support,Active".into(),
            ),
            (3, "E00003,Third,Last3,,+12015550123,,Support,Active".into()),
        ],
    );
    let second = import_via_cli(&web.env, "r2.csv", &day2);
    assert_eq!(second["state"], "applied", "{second:#}");
    let second = run_id_of(&second);

    let held = import_via_cli(&web.env, "r3.csv", &hr_file(1..=50));
    assert_eq!(held["state"], "held", "{held:#}");
    let held = run_id_of(&held);

    let shots = web.env.root.join("shots");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/changes_shot.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(&web.base)
        .arg(ADMIN)
        .arg(ADMIN_PASSWORD)
        .arg(&shots)
        .arg(format!("run-changes=/runs/{second}"))
        .arg(format!("run-added=/runs/{first}"))
        .arg("timeline=/recipients/view?feed=hr&id=E00002")
        .arg("removed-person=/recipients/view?feed=hr&id=E00100")
        .arg(format!("run-changes-phone=/runs/{second}@phone"))
        .arg(format!("held-run=/runs/{held}?kind=updated#changes"));
    let out = run_tool(cmd, "selenium + chromium", None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{out:#?}");
    let seen: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");

    let rows = |shot: &str| -> Vec<String> {
        seen[shot]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{shot}: {seen:#}"))
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect()
    };
    let changes = rows("run-changes");
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert!(changes[0].starts_with("added\tE00101"), "{changes:?}");
    assert!(
        changes[1].contains("E00002")
            && changes[1].contains("email: user2@example.com → changed2@example.com")
            && changes[1].contains("department: Finance → Support"),
        "{changes:?}"
    );
    assert!(
        changes[2].contains("first_name: First3 → Third")
            && changes[2].contains("email: user3@example.com → (empty)"),
        "{changes:?}"
    );
    assert!(changes[3].starts_with("removed\tE00100"), "{changes:?}");
    assert_eq!(rows("run-added").len(), 100);
    let timeline = seen["timeline"]["section"].as_str().unwrap_or("");
    assert!(
        timeline.contains(&format!("Run {second}")) && timeline.contains(&format!("Run {first}")),
        "{timeline}"
    );
    assert!(timeline.contains("email: user2@example.com → changed2@example.com"));
    let removed = seen["removed-person"]["text"].as_str().unwrap_or("");
    assert!(
        removed.contains(&format!("Not in the feed now (removed by run {second} at ")),
        "{removed}"
    );
    assert_eq!(
        seen["run-changes-phone"]["fits"], true,
        "the change list fits a phone: {seen:#}"
    );
    let held_rows = rows("held-run");
    assert!(
        held_rows.len() == 2 && held_rows.iter().all(|r| r.starts_with("would update\t")),
        "E00002 and E00003 would be set back: {held_rows:?}"
    );
    let held_text = seen["held-run"]["text"].as_str().unwrap_or("");
    assert!(held_text.contains("would remove 50"), "{held_text}");
    let shared = shared_shots();
    for shot in [
        "run-changes",
        "run-added",
        "timeline",
        "removed-person",
        "run-changes-phone",
        "held-run",
    ] {
        let path = shots.join(format!("{shot}.png"));
        let png = std::fs::read(&path).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{shot}");
        std::fs::copy(&path, shared.join(format!("changes-{shot}.png"))).expect("copy");
    }
    drop(web.server);
}
