//! Compressed files: a `.gz` file or a ZIP archive holding one CSV file is
//! read as that CSV; a ZIP with several files, a damaged or cut-short
//! archive, an encrypted entry and a bomb (expanding past the feed's
//! `max_file_size`) are failed runs that change nothing. The files are
//! made by the usual tools (the gzip and zip programs, Python's zipfile),
//! and each case checks the stored recipients through `recipients export`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::server::*;
use crate::util::*;

/// Runs `program ARGS` in the test's input folder; it must succeed.
fn make(env: &Env, program: &str, args: &[&str]) {
    require_tool(program);
    let out = Command::new(program)
        .args(args)
        .current_dir(env.root.join("in"))
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gzip -k NAME`: `in/NAME.gz` beside the file.
fn gzip(env: &Env, name: &str) -> PathBuf {
    make(env, "gzip", &["-k", "-f", name]);
    env.root.join("in").join(format!("{name}.gz"))
}

/// Python's zipfile: `in/ZIP` holding `entries` (name, content) in order,
/// deflated.
fn py_zip(env: &Env, zip: &str, entries: &[(&str, &[u8])]) -> PathBuf {
    let mut script = String::from(
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n",
    );
    for (i, (name, content)) in entries.iter().enumerate() {
        let source = format!("{zip}.entry{i}");
        fs::write(env.root.join("in").join(&source), content).expect("write an entry");
        script += &format!("z.writestr({name:?}, open({source:?}, 'rb').read())\n");
    }
    script += "z.close()\n";
    make(env, "python3", &["-c", &script, zip]);
    env.root.join("in").join(zip)
}

#[test]
fn a_gzip_file_imports_like_the_plain_file() {
    let content = hr_file(1..=40);
    let want = plain_export(&content);
    let env = Env::hr();
    env.input("hr.csv", &content);
    let gz = gzip(&env, "hr.csv");
    let run = env.import("hr", &gz, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 40), ("added", 40), ("flagged", 0)]);
    assert_eq!(run.json["file"], "hr.csv.gz");
    assert_eq!(run.json["container"], "gzip");
    assert_eq!(env.export("hr"), want);
    // The same people, plain, the next day: nothing to do.
    let again = env.import_text("hr", "hr2.csv", &content);
    assert_eq!(again.state(), "unchanged", "{:#}", again.json);
    // `runs show` says it.
    let shown = env.run(&["runs", "show", &run.id()]);
    assert!(
        shown.stdout.contains("compressed: gzip"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_zip_with_one_csv_imports_like_the_plain_file() {
    let content = hr_file(1..=25);
    let want = plain_export(&content);

    // The zip program.
    let env = Env::hr();
    env.input("hr.csv", &content);
    make(&env, "zip", &["-q", "hr.zip", "hr.csv"]);
    let run = env.import("hr", &env.root.join("in/hr.zip"), &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["file"], "hr.zip");
    assert_eq!(run.json["container"], "zip: hr.csv");
    assert_eq!(env.export("hr"), want);

    // As macOS's Finder packs it: a folder, the file, and its resource
    // fork under __MACOSX/.
    let env = Env::hr();
    let zip = py_zip(
        &env,
        "Archive.zip",
        &[
            ("hr/", b""),
            ("hr/hr.csv", content.as_bytes()),
            ("__MACOSX/", b""),
            ("__MACOSX/hr/", b""),
            (
                "__MACOSX/hr/._hr.csv",
                b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X",
            ),
        ],
    );
    let run = env.import("hr", &zip, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "zip: hr/hr.csv");
    assert_eq!(env.export("hr"), want);
}

#[test]
fn a_zip_with_two_files_fails_naming_them() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=10));
    let stored = env.export("hr");
    env.input("a.csv", hr_file(1..=5));
    env.input("b.csv", hr_file(6..=9));
    make(&env, "zip", &["-q", "two.zip", "a.csv", "b.csv"]);
    let reason = refused_import(&env, &env.root.join("in/two.zip"));
    assert!(
        reason.contains("holds 2 files ('a.csv', 'b.csv')") && reason.contains("on its own"),
        "{reason}"
    );
    assert_eq!(env.export("hr"), stored);

    // None at all.
    let empty = py_zip(&env, "empty.zip", &[("folder/", b"")]);
    let reason = refused_import(&env, &empty);
    assert!(reason.contains("holds no file"), "{reason}");
    assert_eq!(env.export("hr"), stored);
}

#[test]
fn a_gzip_bomb_fails_quickly_and_stores_nothing() {
    let env = Env::new(&[Feed::hr("hr").extra("max_file_size = \"10MB\"")]);
    // 200 MB: the header row, then zeros.
    make(
        &env,
        "sh",
        &[
            "-c",
            &format!(
                "{{ echo '{HR_HEADER}'; head -c 200000000 /dev/zero; }} | gzip -c > bomb.csv.gz"
            ),
        ],
    );
    let bomb = env.root.join("in/bomb.csv.gz");
    assert!(fs::metadata(&bomb).unwrap().len() < 1_000_000);
    let t0 = Instant::now();
    let reason = refused_import(&env, &bomb);
    assert!(
        reason.contains("expands to more than 10") && reason.contains("max_file_size"),
        "{reason}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert!(env.exported_ids("hr").is_empty());

    // A ZIP whose entry says so: refused before expanding.
    let big = format!("{HR_HEADER}\n{}", "x".repeat(11_000_000));
    let zip = py_zip(&env, "big.zip", &[("big.csv", big.as_bytes())]);
    let reason = refused_import(&env, &zip);
    assert!(
        reason.contains("'big.csv' expands to 11000") && reason.contains("max_file_size"),
        "{reason}"
    );
}

#[test]
fn a_cut_short_or_damaged_gzip_fails() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=10));
    let stored = env.export("hr");
    // Different people, so that a half-read file would show.
    env.input("hr.csv", hr_file(100..=3000));
    let gz = gzip(&env, "hr.csv");
    let bytes = fs::read(&gz).unwrap();
    let cut = env.input("cut.csv.gz", &bytes[..bytes.len() / 2]);
    let reason = refused_import(&env, &cut);
    assert!(reason.contains("gzip file is cut short"), "{reason}");
    let mut bad = bytes.clone();
    let at = bad.len() - 8; // the CRC of the content
    bad[at] ^= 0xFF;
    let bad = env.input("bad.csv.gz", bad);
    let reason = refused_import(&env, &bad);
    assert!(reason.contains("gzip file is damaged"), "{reason}");
    assert_eq!(env.export("hr"), stored);

    // A ZIP cut short.
    make(&env, "zip", &["-q", "hr.zip", "hr.csv"]);
    let zip = fs::read(env.root.join("in/hr.zip")).unwrap();
    let cut = env.input("cut.zip", &zip[..zip.len() / 2]);
    let reason = refused_import(&env, &cut);
    assert!(
        reason.contains("ZIP archive is damaged or cut short"),
        "{reason}"
    );
    assert_eq!(env.export("hr"), stored);
}

#[test]
fn an_encrypted_zip_fails() {
    let env = Env::hr();
    env.input("hr.csv", hr_file(1..=5));
    make(&env, "zip", &["-q", "-P", "secret", "locked.zip", "hr.csv"]);
    let reason = refused_import(&env, &env.root.join("in/locked.zip"));
    assert!(
        reason.contains("'hr.csv' is encrypted") && reason.contains("without a password"),
        "{reason}"
    );
    assert!(env.exported_ids("hr").is_empty());
}

/// A workbook is read (tests/integration/workbooks.rs); one whose parts
/// are not a workbook's is refused with a reason that says what to do.
#[test]
fn a_damaged_xlsx_is_refused_as_a_workbook() {
    let env = Env::hr();
    let xlsx = py_zip(
        &env,
        "hr.xlsx",
        &[
            ("[Content_Types].xml", b"<Types/>"),
            ("_rels/.rels", b"<Relationships/>"),
            ("xl/workbook.xml", b"<workbook/>"),
            ("xl/worksheets/sheet1.xml", b"<worksheet/>"),
        ],
    );
    let reason = refused_import(&env, &xlsx);
    assert!(
        reason.contains("the Excel workbook cannot be read") && reason.contains("CSV UTF-8"),
        "{reason}"
    );
}

#[test]
fn a_gzip_of_a_utf16_csv_imports() {
    let content = format!("{HR_HEADER}\nE00001,Zoë,Ångström,zoe@example.com,,,Sales,Active\n");
    let want = plain_export(&content);
    let env = Env::hr();
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in content.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    env.input("hr.csv", utf16);
    let gz = gzip(&env, "hr.csv");
    let run = env.import("hr", &gz, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["encoding"], "utf-16le");
    assert_eq!(run.json["container"], "gzip");
    assert_eq!(env.export("hr"), want);
}

#[test]
fn the_error_report_of_a_gzip_file_quotes_the_decoded_rows() {
    let env = Env::hr();
    let content = lines(&[HR_HEADER, &hr_row(1), "E00002,Bob,Bad,bob@,,,Sales,Active"]);
    env.input("hr.csv", &content);
    let gz = gzip(&env, "hr.csv");
    let run = env.import("hr", &gz, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("added", 1), ("flagged", 1)]);
    let report = env.error_report_text("hr", "hr.csv.gz");
    assert!(report.contains("E00002,Bob,Bad,bob@"), "{report}");
    assert_eq!(env.exported_ids("hr"), vec![hr_id(1)]);
}

/// On the server: a `.csv.gz` upload is read expanded, keeps its name in
/// the run and its bytes in the archive; a ZIP with two files is a failed
/// run with its error report.
#[cfg(feature = "e2e")]
#[test]
fn uploads_of_compressed_files_over_sftp() {
    let s = Setup::standard();
    let env = &s.env;
    env.input("hr.csv", hr_file(1..=12));
    let gz = gzip(env, "hr.csv");
    let sent = fs::read(&gz).unwrap();
    let results = s.key_client().session(vec![serde_json::json!({
        "op": "put", "path": "/upload/hr.csv.gz", "local": gz.to_str().unwrap()
    })]);
    ok(&results[0], "upload hr.csv.gz");
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "hr.csv.gz", "applied", &[("added", 12)]);
    assert_eq!(runs[0]["container"], "gzip");
    assert_eq!(env.exported_ids("hr").len(), 12);
    let archived = archived_name(env, "hr", "hr.csv.gz");
    assert_eq!(
        fs::read(archive_dir(env, "hr").join(archived)).unwrap(),
        sent,
        "the archive keeps the file as uploaded"
    );

    // Its support bundle, as sent and redacted, replays identically.
    let id = run_id_of(&runs[0]);
    for (flags, tag) in [(&[][..], "plain"), (&["--redact"][..], "redacted")] {
        let (bundle, out) = crate::support::bundle_with(env, &id, flags, tag);
        assert_eq!(out.code, 0, "{out:#?}");
        let (code, replayed) = crate::support::replay(env, &bundle);
        assert_eq!(code, 0, "{flags:?}: {replayed:#}");
        assert_eq!(replayed["verdict"], "identical", "{replayed:#}");
    }

    env.input("a.csv", hr_file(1..=3));
    env.input("b.csv", hr_file(4..=5));
    make(env, "zip", &["-q", "two.zip", "a.csv", "b.csv"]);
    let two = env.root.join("in/two.zip");
    let results = s.key_client().session(vec![serde_json::json!({
        "op": "put", "path": "/upload/two.zip", "local": two.to_str().unwrap()
    })]);
    ok(&results[0], "upload two.zip");
    let runs = s.wait_for_exactly(2);
    let failed = runs
        .iter()
        .find(|r| r["file"] == "two.zip")
        .expect("the zip's run");
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let report = env.error_report_text("hr", "two.zip");
    assert!(
        report.contains("the whole file was rejected") && report.contains("holds 2 files"),
        "{report}"
    );
    assert_eq!(env.exported_ids("hr").len(), 12);
}

#[test]
fn a_held_gzip_file_is_confirmed_from_its_kept_copy() {
    let env = Env::hr();
    env.import_text("hr", "day1.csv", hr_file(1..=40));
    env.input("day2.csv", hr_file(1..=20));
    let gz = gzip(&env, "day2.csv");
    let run = env.import("hr", &gz, &[]);
    assert_eq!(run.state(), "held", "{:#}", run.json);
    assert_eq!(run.json["container"], "gzip");
    assert_eq!(env.exported_ids("hr").len(), 40);
    let out = env.run(&["runs", "confirm", &run.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("runs confirm");
    assert_eq!(confirmed["state"], "applied", "{confirmed:#}");
    assert_eq!(confirmed["removed"], 20, "{confirmed:#}");
    assert_eq!(env.exported_ids("hr").len(), 20);
}

/// The expanded copy is made in the data folder, not the system's
/// temporary folder (often memory): with TMPDIR pointing nowhere, a gzip
/// file and a UTF-16 one inside it still import.
#[test]
fn expanded_copies_are_made_in_the_data_folder() {
    let content = hr_file(1..=10);
    let env = Env::hr();
    // A first run makes the data folder.
    let first = env.import_text("hr", "first.csv", hr_file(1..=3));
    assert_eq!(first.state(), "applied", "{:#}", first.json);
    env.input("hr.csv", &content);
    let gz = gzip(&env, "hr.csv");
    let mut cmd = env.command();
    cmd.env("TMPDIR", env.root.join("no-such-folder"))
        .arg("--config")
        .arg(&env.config)
        .args(["import", "--feed", "hr", gz.to_str().unwrap(), "--json"]);
    let out = run_command(cmd, "import with TMPDIR nowhere");
    assert_eq!(out.code, 0, "{out:#?}");
    let json = out.json("import");
    assert_eq!(json["state"], "applied", "{json:#}");
    assert_eq!(json["container"], "gzip");
    assert_eq!(json["added"], 7);
}

/// The run's page says what the file was packed in.
#[cfg(feature = "e2e")]
#[test]
fn the_run_page_says_a_file_was_packed() {
    use crate::web::{Web, ADMIN_PASSWORD};
    let env = sftp_env();
    env.input("hr.csv", hr_file(1..=5));
    let gz = fs::read(gzip(&env, "hr.csv")).unwrap();
    let runs = crate::support::serve_files(&env, &[("hr.csv.gz", gz)]);
    assert_eq!(runs[0]["container"], "gzip", "{:#}", runs[0]);
    let id = run_id_of(&runs[0]);
    let web = Web::start_in(env);
    web.login(ADMIN_PASSWORD);
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
    assert_eq!(code, 200);
    assert!(
        page.contains("<dt>Packed as</dt><dd id=\"container\">gzip (read unpacked"),
        "{page}"
    );
    assert!(!page.contains("id=\"encoding\""), "UTF-8 is not mentioned");
}

/// A `.tar.gz` (or `.tgz`, or a plain `.tar`) made by GNU tar holding one
/// CSV file is read as that file; one holding two is a failed run.
#[test]
fn tar_archives_made_by_tar_are_read() {
    let env = Env::hr();
    env.input("hr.csv", hr_file(1..=6));
    make(&env, "tar", &["czf", "hr.tar.gz", "hr.csv"]);
    let run = env.import("hr", &env.root.join("in/hr.tar.gz"), &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "tar.gz: hr.csv");
    assert_eq!(env.exported_ids("hr").len(), 6);

    env.input("hr.csv", hr_file(1..=7));
    make(&env, "tar", &["cf", "hr.tar", "hr.csv"]);
    let run = env.import("hr", &env.root.join("in/hr.tar"), &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["container"], "tar: hr.csv");
    assert_eq!(env.exported_ids("hr").len(), 7);

    env.input("other.csv", hr_file(8..=9));
    make(&env, "tar", &["czf", "two.tgz", "hr.csv", "other.csv"]);
    let reason = refused_import(&env, &env.root.join("in/two.tgz"));
    assert!(reason.contains("more than one file"), "{reason}");
    assert_eq!(env.exported_ids("hr").len(), 7);
}
