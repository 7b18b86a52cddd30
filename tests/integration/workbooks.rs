//! Spreadsheet workbooks (issue 21, part 3): an `.xlsx` (or `.xls`) is
//! read as the CSV of one of its sheets, cells as the customer sees them,
//! and its reports say "row N" of the sheet. The workbooks are written by
//! real spreadsheet writers (Python's openpyxl, and xlwt for `.xls`, which
//! `./scripts/test` installs); each case checks the stored recipients
//! through `recipients export`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::server::*;
use crate::util::*;

/// The columns of the `hr` feed's files, as a Python list.
fn hr_columns() -> String {
    let quoted: Vec<String> = HR_HEADER.split(',').map(|c| format!("{c:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Runs `script` with Python (`sys`, `datetime` and `module` imported, the
/// target path in `path`), in the test's input folder; it must succeed.
fn python(env: &Env, module: &str, name: &str, script: &str) -> PathBuf {
    require_tool("python3");
    let path = env.root.join("in").join(name);
    fs::create_dir_all(env.root.join("in")).expect("the input folder");
    let program = format!(
        "import sys, datetime\ntry:\n    import {module}\nexcept ImportError:\n    sys.exit('python3 has no {module}: ./scripts/test installs it (pip install {module})')\npath = sys.argv[1]\nHEADER = {}\n{script}",
        hr_columns()
    );
    let out = Command::new("python3")
        .args(["-c", &program, path.to_str().expect("a UTF-8 path")])
        .output()
        .expect("start python3");
    assert!(
        out.status.success(),
        "python3 failed writing {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// An `.xlsx` written by openpyxl: `script` fills the workbook `wb` (its
/// first sheet, `ws`, is named "Staff"); `put(ws, row, values)` writes a
/// row's cells at the sheet row given.
fn openpyxl(env: &Env, name: &str, script: &str) -> PathBuf {
    let program = format!(
        "wb = openpyxl.Workbook()\nws = wb.active\nws.title = 'Staff'\n\
         def put(ws, row, values):\n    for column, value in enumerate(values, 1):\n        if value is not None:\n            ws.cell(row=row, column=column, value=value)\n\
         {script}\nwb.save(path)\n"
    );
    python(env, "openpyxl", name, &program)
}

/// The `hr` feed with a date column (`start`, "Start Date").
fn feed_with_dates() -> Feed {
    let mut feed = Feed::hr("hr");
    feed.fields.push(Field::new("start", "Start Date", "text"));
    feed
}

#[test]
fn cells_are_read_as_the_customer_sees_them() {
    let env = Env::new(&[feed_with_dates()]);
    let xlsx = openpyxl(
        &env,
        "hr.xlsx",
        "put(ws, 1, HEADER + ['Start Date'])\n\
         put(ws, 2, ['000123', 'Ann', 'Lee', 'ann@example.com', 2125550198, None, 'Sales', 'Active', datetime.date(2026, 1, 31)])\n\
         put(ws, 3, [124, 'Bob', 'Ray', 'bob@example.com', None, 12125550199, 'Sales', True, datetime.datetime(2026, 1, 31, 8, 30)])\n\
         put(ws, 4, [125, 'Cy', 'Day', 'cy@example.com', None, None, 'Sales', 2.5, None])\n\
         ws.cell(row=4, column=1).number_format = '000000'\n",
    );
    let run = env.import("hr", &xlsx, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 3), ("added", 3), ("flagged", 0)]);
    assert_eq!(run.json["container"], "xlsx: Staff");
    let ann = env
        .recipient("hr", "000123")
        .expect("a text ID keeps its zeros");
    assert_eq!(ann["mobile"], "+12125550198", "a phone stored as a number");
    assert_eq!(ann["start"], "2026-01-31");
    let bob = env.recipient("hr", "124").expect("a number ID without .0");
    assert_eq!(bob["office_phone"], "+12125550199");
    assert_eq!(bob["status"], "TRUE");
    assert_eq!(bob["start"], "2026-01-31T08:30:00");
    let cy = env
        .recipient("hr", "000125")
        .expect("a number formatted 000000 shows its zeros");
    assert_eq!(cy["status"], "2.5");

    // The same people as the CSV file Excel would save: nothing to do.
    let csv = lines(&[
        &format!("{HR_HEADER},Start Date"),
        "000123,Ann,Lee,ann@example.com,2125550198,,Sales,Active,2026-01-31",
        "124,Bob,Ray,bob@example.com,,12125550199,Sales,TRUE,2026-01-31T08:30:00",
        "000125,Cy,Day,cy@example.com,,,Sales,2.5,",
    ]);
    let again = env.import_text("hr", "hr.csv", csv);
    assert_eq!(again.state(), "unchanged", "{:#}", again.json);

    let shown = env.run(&["runs", "show", &run.id()]);
    assert!(
        shown.stdout.contains("workbook: xlsx: Staff"),
        "{}",
        shown.stdout
    );
}

/// Three sheets: a hidden one first, "Staff", "Leavers".
fn three_sheets(env: &Env) -> PathBuf {
    openpyxl(
        env,
        "hr.xlsx",
        "put(ws, 1, HEADER)\n\
         for i in range(1, 4):\n    put(ws, i + 1, ['E%05d' % i, 'First%d' % i, 'Last', 'u%d@example.com' % i, None, None, 'Sales', 'Active'])\n\
         old = wb.create_sheet('Old', 0)\n\
         old.sheet_state = 'hidden'\n\
         put(old, 1, ['not', 'the', 'people'])\n\
         leavers = wb.create_sheet('Leavers')\n\
         put(leavers, 1, HEADER)\n\
         for i in range(4, 6):\n    put(leavers, i - 2, ['E%05d' % i, 'First%d' % i, 'Last', 'u%d@example.com' % i, None, None, 'Sales', 'Left'])\n",
    )
}

#[test]
fn the_first_visible_sheet_is_read_unless_the_feed_names_one() {
    let env = Env::hr();
    let run = env.import("hr", &three_sheets(&env), &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "xlsx: Staff");
    assert_eq!(env.exported_ids("hr"), vec![hr_id(1), hr_id(2), hr_id(3)]);

    let env = Env::new(&[Feed::hr("hr").extra("sheet = \"Leavers\"")]);
    let shown = env.run(&["feeds", "show", "hr"]);
    assert!(
        shown.stdout.contains("a workbook's sheet read: 'Leavers'"),
        "{shown:#?}"
    );
    let run = env.import("hr", &three_sheets(&env), &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "xlsx: Leavers");
    assert_eq!(env.exported_ids("hr"), vec![hr_id(4), hr_id(5)]);
}

#[test]
fn a_sheet_the_workbook_lacks_fails_listing_its_sheets() {
    let env = Env::new(&[Feed::hr("hr").extra("sheet = \"Personal\"")]);
    env.import_text("hr", "day1.csv", hr_file(1..=10));
    let stored = env.export("hr");
    let reason = refused_import(&env, &three_sheets(&env));
    assert!(
        reason.contains("no sheet named 'Personal'")
            && reason.contains("'Old' (hidden), 'Staff', 'Leavers'"),
        "{reason}"
    );
    assert_eq!(env.export("hr"), stored);
}

#[test]
fn a_phone_excel_put_in_scientific_notation_says_so() {
    let reason = "Excel turned this phone number into scientific notation";
    let env = Env::hr();
    let xlsx = openpyxl(
        &env,
        "hr.xlsx",
        "put(ws, 1, HEADER)\n\
         put(ws, 2, ['E00001', 'Ann', 'Lee', 'ann@example.com', None, None, 'Sales', 'Active'])\n\
         put(ws, 3, ['E00002', 'Bob', 'Ray', 'bob@example.com', '4.91512E+12', None, 'Sales', 'Active'])\n\
         put(ws, 4, ['E00003', 'Cy', 'Day', 'cy@example.com', 4915112345678901, None, 'Sales', 'Active'])\n",
    );
    let run = env.import("hr", &xlsx, &[]);
    let errors = env.run_show(&run.id())["errors"]
        .as_array()
        .expect("errors")
        .clone();
    assert_eq!(errors.len(), 2, "{:#}", run.json);
    assert_eq!(errors[0]["line"], 3, "{:#}", run.json);
    assert!(
        errors[0]["reasons"].to_string().contains(reason),
        "{errors:#?}"
    );
    assert_eq!(errors[1]["line"], 4, "{:#}", run.json);
    assert!(
        errors[1]["reasons"]
            .to_string()
            .contains("Excel keeps only 15 digits"),
        "{errors:#?}"
    );
    let report = env.error_report_text("hr", "hr.xlsx");
    assert!(report.starts_with("row,reasons,"), "{report}");
    assert!(report.contains("\n3,"), "{report}");

    // A CSV file Excel saved carries the same text.
    let env = Env::hr();
    let run = env.import_text(
        "hr",
        "hr.csv",
        lines(&[
            HR_HEADER,
            "E00001,Ann,Lee,ann@example.com,,,Sales,Active",
            "E00002,Bob,Ray,bob@example.com,4.91512E+12,,Sales,Active",
        ]),
    );
    let errors = env.run_show(&run.id())["errors"]
        .as_array()
        .expect("errors")
        .clone();
    assert_eq!(errors.len(), 1, "{:#}", run.json);
    assert_eq!(errors[0]["line"], 3);
    assert!(
        errors[0]["reasons"].to_string().contains(reason),
        "{errors:#?}"
    );
    let report = env.error_report_text("hr", "hr.csv");
    assert!(report.starts_with("line,reasons,"), "{report}");
}

#[test]
fn an_invalid_row_is_reported_by_its_sheet_row() {
    let env = Env::hr();
    // Rows 3 and 4 are empty: the report's row is still the sheet's.
    let xlsx = openpyxl(
        &env,
        "hr.xlsx",
        "put(ws, 1, HEADER)\n\
         put(ws, 2, ['E00001', 'Ann', 'Lee', 'ann@example.com', None, None, 'Sales', 'Active'])\n\
         put(ws, 5, ['E00002', 'Bob', 'Ray', 'bob@', None, None, 'Sales', 'Active'])\n\
         put(ws, 6, ['E00001', 'Ann', 'Again', 'ann@example.com', None, None, 'Sales', 'Active'])\n",
    );
    let run = env.import("hr", &xlsx, &[]);
    let errors = env.run_show(&run.id())["errors"]
        .as_array()
        .expect("errors")
        .clone();
    let lines: Vec<&serde_json::Value> = errors.iter().map(|e| &e["line"]).collect();
    assert!(lines.contains(&&serde_json::json!(5)), "{:#}", run.json);
    let repeated = errors
        .iter()
        .find(|e| e["reasons"].to_string().contains("repeated ID"))
        .expect("the repeated ID");
    assert!(
        repeated["reasons"].to_string().contains("on row 2"),
        "{repeated:#}"
    );
    let report = env.error_report_text("hr", "hr.xlsx");
    assert!(report.starts_with("row,reasons,"), "{report}");
    assert!(report.contains("\n5,"), "{report}");
    let shown = env.run(&["runs", "show", &run.id()]);
    assert!(shown.stdout.contains("    row 5: "), "{}", shown.stdout);
}

#[test]
fn an_empty_workbook_and_a_header_only_sheet_fare_as_their_csv() {
    for (name, script, csv) in [
        ("empty.xlsx", "pass\n", String::new()),
        (
            "header.xlsx",
            "put(ws, 1, HEADER)\n",
            format!("{HR_HEADER}\n"),
        ),
    ] {
        let plain = Env::hr();
        let want = plain.import_text("hr", "hr.csv", &csv);
        let env = Env::hr();
        let run = env.import("hr", &openpyxl(&env, name, script), &[]);
        assert_eq!(run.state(), want.state(), "{name}: {:#}", run.json);
        if want.state() == "failed" {
            assert_eq!(run.reason(), want.reason(), "{name}");
        }
        assert!(env.exported_ids("hr").is_empty());
    }
}

#[test]
fn a_packed_workbook_is_read_through_its_archive() {
    let env = Env::hr();
    let xlsx = three_sheets(&env);
    let gz = env.root.join("in/hr.xlsx.gz");
    let status = Command::new("gzip")
        .args(["-k", "-f"])
        .arg(&xlsx)
        .status()
        .expect("gzip");
    assert!(status.success());
    let run = env.import("hr", &gz, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "xlsx: Staff, in gzip");
    assert_eq!(env.exported_ids("hr").len(), 3);
}

#[test]
fn an_xls_workbook_is_read() {
    let env = Env::hr();
    let xls = python(
        &env,
        "xlwt",
        "hr.xls",
        "wb = xlwt.Workbook()\nws = wb.add_sheet('Staff')\n\
         rows = [HEADER, ['000123', 'Ann', 'Lee', 'ann@example.com', 2125550198, '', 'Sales', 'Active'],\n\
                 [124, 'Bob', 'Ray', 'bob@example.com', '', '', 'Sales', 'Active']]\n\
         for r, row in enumerate(rows):\n    for c, value in enumerate(row):\n        ws.write(r, c, value)\n\
         wb.save(path)\n",
    );
    let run = env.import("hr", &xls, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "xls: Staff");
    assert_eq!(env.exported_ids("hr"), vec!["000123", "124"]);
    let ann = env.recipient("hr", "000123").expect("Ann");
    assert_eq!(ann["mobile"], "+12125550198");
}

#[test]
fn a_word_file_keeps_its_reason() {
    let env = Env::hr();
    let docx = python(
        &env,
        "zipfile",
        "letter.docx",
        "z = zipfile.ZipFile(path, 'w')\nz.writestr('[Content_Types].xml', '<Types/>')\nz.writestr('word/document.xml', '<w/>')\nz.close()\n",
    );
    let reason = refused_import(&env, &docx);
    assert!(reason.contains("a Word document"), "{reason}");

    // A workbook cut short (an interrupted upload) is not read as one.
    let xlsx = fs::read(three_sheets(&env)).expect("the workbook");
    let cut = env.input("cut.xlsx", &xlsx[..xlsx.len() / 2]);
    let reason = refused_import(&env, &cut);
    assert!(
        reason.contains("Excel workbook (.xlsx) that cannot be read (damaged or cut short)"),
        "{reason}"
    );
}

/// On the server: an `.xlsx` uploaded over sFTP is read as its sheet, and
/// the archive keeps it as sent.
#[test]
fn an_xlsx_uploaded_over_sftp() {
    let s = Setup::standard();
    let env = &s.env;
    let xlsx = three_sheets(env);
    let sent = fs::read(&xlsx).unwrap();
    let results = s.key_client().session(vec![serde_json::json!({
        "op": "put", "path": "/upload/hr.xlsx", "local": xlsx.to_str().unwrap()
    })]);
    ok(&results[0], "upload hr.xlsx");
    let runs = s.wait_for_exactly(1);
    assert_eq!(runs[0]["state"], "applied", "{:#}", runs[0]);
    assert_eq!(runs[0]["container"], "xlsx: Staff");
    assert_eq!(env.exported_ids("hr"), vec![hr_id(1), hr_id(2), hr_id(3)]);
    let archived = archived_name(env, "hr", "hr.xlsx");
    assert_eq!(
        fs::read(archive_dir(env, "hr").join(archived)).unwrap(),
        sent,
        "the archive keeps the workbook as uploaded"
    );
}

/// The status page's run page heads its error list "Row" for a workbook.
#[test]
fn the_run_page_numbers_a_workbooks_rows() {
    use crate::web::{Web, ADMIN_PASSWORD};
    let web = Web::start();
    let xlsx = openpyxl(
        &web.env,
        "hr.xlsx",
        "put(ws, 1, HEADER)\n\
         put(ws, 3, ['E00001', 'Ann', 'Lee', 'ann@', None, None, 'Sales', 'Active'])\n",
    );
    let run = web.env.import("hr", &xlsx, &[]);
    assert_eq!(web.env.run_show(&run.id())["errors"][0]["line"], 3);
    let (code, _, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303);
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{}", run.id()))]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<th>Row</th>"), "{page}");
    assert!(page.contains("<tr><td>3</td>"), "{page}");
}

/// A workbook held by the delete guard is read again from its kept copy
/// when confirmed.
#[test]
fn a_held_workbook_is_confirmed_from_its_kept_copy() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=40));
    let xlsx = openpyxl(
        &env,
        "day2.xlsx",
        "put(ws, 1, HEADER)\n\
         for i in range(1, 21):\n    put(ws, i + 1, ['E%05d' % i, 'First%d' % i, 'Last', 'u%d@example.com' % i, None, None, 'Sales', 'Active'])\n",
    );
    let run = env.import("hr", &xlsx, &[]);
    assert_eq!(run.state(), "held", "{:#}", run.json);
    assert_eq!(run.json["container"], "xlsx: Staff");
    assert_eq!(env.exported_ids("hr").len(), 40);
    let out = env.run(&["runs", "confirm", &run.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("runs confirm");
    assert_eq!(confirmed["state"], "applied", "{confirmed:#}");
    assert_eq!(confirmed["removed"], 20, "{confirmed:#}");
    assert_eq!(env.exported_ids("hr").len(), 20);
}

/// A redacted support bundle carries the sheet as the redacted CSV that
/// was read: no name of the workbook is in it, and it replays identically.
#[test]
fn a_workbooks_redacted_bundle_replays_identically() {
    let env = sftp_env();
    let xlsx = openpyxl(
        &env,
        "hr.xlsx",
        "put(ws, 1, HEADER)\n\
         put(ws, 2, ['E00001', 'Quentin', 'Zabriskie', 'quentin.zabriskie@example.com', 2125550198, None, 'Sales', 'Active'])\n\
         put(ws, 3, ['E00002', 'Bob', 'Ray', 'bob@', None, None, 'Sales', 'Active'])\n\
         put(ws, 5, ['E00004', 'Cy', 'Day', 'cy@example.com', None, None, 'Sales', 'Active'])\n",
    );
    let files = [
        ("day1.csv", hr_file(1..=2).into_bytes()),
        ("hr.xlsx", fs::read(&xlsx).unwrap()),
    ];
    let runs = crate::support::serve_files(&env, &files);
    assert_eq!(runs[1]["state"], "applied", "{:#}", runs[1]);
    assert_eq!(runs[1]["container"], "xlsx: Staff", "{:#}", runs[1]);
    let id = run_id_of(&runs[1]);
    for (flags, tag) in [(&[][..], "plain"), (&["--redact"][..], "redacted")] {
        let (bundle, out) = crate::support::bundle_with(&env, &id, flags, tag);
        assert_eq!(out.code, 0, "{out:#?}");
        let (code, replayed) = crate::support::replay(&env, &bundle);
        assert_eq!(code, 0, "{flags:?}: {replayed:#}");
        assert_eq!(replayed["verdict"], "identical", "{flags:?}: {replayed:#}");
        if tag == "redacted" {
            for (name, bytes) in crate::support::entries(&bundle) {
                let text = String::from_utf8_lossy(&bytes);
                for secret in ["Quentin", "Zabriskie", "2125550198"] {
                    assert!(!text.contains(secret), "{secret} in {name}");
                }
            }
        }
    }
}

/// A report title and an empty row above the header, as HR reports come
/// out of a spreadsheet: the header is found under them, and rows keep
/// the sheet's numbers.
#[test]
fn a_title_above_the_header_is_skipped() {
    let env = Env::hr();
    let xlsx = openpyxl(
        &env,
        "hr.xlsx",
        "ws['A1'] = 'Active employees'\n\
         ws['C1'] = datetime.date(2026, 12, 1)\n\
         put(ws, 3, HEADER)\n\
         put(ws, 4, ['E00001', 'Ann', 'Lee', 'ann@example.com', None, None, 'Sales', 'Active'])\n\
         put(ws, 5, ['E00002', 'Bob', 'Ray', 'bob@', None, None, 'Sales', 'Active'])\n",
    );
    let run = env.import("hr", &xlsx, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 2), ("added", 1), ("flagged", 1)]);
    let shown = env.run(&["runs", "show", &run.id()]);
    assert!(shown.stdout.contains("row 5"), "{shown:#?}");
    assert_eq!(env.exported_ids("hr"), vec![hr_id(1)]);
}

/// A password-protected workbook (encrypted by msoffcrypto-tool as Excel
/// does it) fails with the reason that says to remove the password.
#[test]
fn a_password_protected_workbook_says_so() {
    let env = Env::hr();
    let plain = openpyxl(
        &env,
        "plain.xlsx",
        "put(ws, 1, HEADER)\n\
         put(ws, 2, ['E00001', 'Ann', 'Lee', 'ann@example.com', None, None, 'Sales', 'Active'])\n",
    );
    let locked = python(
        &env,
        "msoffcrypto",
        "locked.xlsx",
        &format!(
            "from msoffcrypto.format.ooxml import OOXMLFile\n\
             with open({:?}, 'rb') as f, open(path, 'wb') as out:\n    OOXMLFile(f).encrypt('secret', out)\n",
            plain.to_str().unwrap()
        ),
    );
    let reason = refused_import(&env, &locked);
    assert!(
        reason.contains("the workbook is password-protected")
            && reason.contains("without a password"),
        "{reason}"
    );
}
