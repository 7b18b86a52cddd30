//! Real sFTP clients against `flagsync serve`: OpenSSH `sftp` (key and
//! password), curl/libssh2 (password and key), paramiko (password, key,
//! WinSCP-style temp-then-rename, setstat, error reports) and lftp. Every
//! test checks what the upload did to the store (runs, recipients), not
//! just that the client was happy; then what the feed's folders hold.

use std::collections::BTreeSet;
use std::fs;

use serde_json::json;

use crate::server::*;
use crate::util::*;

/// A file of the `hr` feed with `people` valid rows and one row without
/// the required first name at its end; returns the text and the bad row's
/// line number.
fn with_one_bad_row(people: std::ops::RangeInclusive<usize>) -> (String, u64) {
    let n = people.clone().count() as u64;
    let mut text = hr_file(people);
    text += "E99999,,Nameless,nobody@example.com,,,Sales,Active\n";
    (text, n + 2)
}

#[test]
fn openssh_sftp_with_a_key_uploads_and_the_file_is_imported() {
    let s = Setup::standard();
    let content = hr_file(1..=3000);
    let local = s.env.input("sftp-key.csv", &content);

    let out = openssh_sftp_key(
        &s.env,
        s.server.port,
        USER,
        &s.key,
        &format!("put {} /upload/sftp-key.csv\n", local.display()),
    );
    assert_eq!(
        out.code,
        0,
        "OpenSSH sftp put with a key: {out:#?}\n{}",
        s.server.context()
    );

    let runs = s.wait_for_exactly(1);
    assert_run(
        &runs[0],
        "sftp-key.csv",
        "applied",
        &[("rows", 3000), ("added", 3000)],
    );
    assert_eq!(
        s.env.exported_ids("hr"),
        (1..=3000).map(hr_id).collect::<Vec<_>>()
    );

    // The processed file left upload/ for archive/, byte for byte.
    wait_for_upload_dir(&s.env, "hr", &[]);
    let archived = archived_name(&s.env, "hr", "sftp-key.csv");
    assert_eq!(
        fs::read_to_string(archive_dir(&s.env, "hr").join(&archived)).expect("archived file"),
        content
    );

    // A second session sees it in /archive and downloads it.
    let copy = s.env.root.join("archived-copy.csv");
    let out = openssh_sftp_key(
        &s.env,
        s.server.port,
        USER,
        &s.key,
        &format!(
            "ls -1 /archive\nget /archive/{archived} {}\n",
            copy.display()
        ),
    );
    assert_eq!(out.code, 0, "OpenSSH sftp ls/get: {out:#?}");
    assert!(out.stdout.contains(&archived), "ls -1 /archive: {out:#?}");
    assert_eq!(fs::read_to_string(&copy).expect("downloaded copy"), content);
}

/// A session starts in /upload: `put file.csv` with no `cd` is imported.
/// Scripts written when sessions started at `/` (`cd upload`) still work,
/// and `..` leads to the other folders.
#[test]
fn openssh_sftp_starts_in_upload_so_a_bare_put_is_imported() {
    let s = Setup::standard();
    let content = hr_file(1..=7);
    let local = s.env.input("bare.csv", &content);

    let batch = format!(
        "pwd\nput {} bare.csv\ncd upload\npwd\ncd ../errors\npwd\ncd ..\npwd\nls -1\n",
        local.display()
    );
    let out = openssh_sftp_key(&s.env, s.server.port, USER, &s.key, &batch);
    assert_eq!(
        out.code,
        0,
        "OpenSSH sftp put with no cd: {out:#?}\n{}",
        s.server.context()
    );
    let folders: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Remote working directory: "))
        .collect();
    assert_eq!(
        folders,
        ["/upload", "/upload", "/errors", "/"],
        "pwd after: login, cd upload, cd ../errors, cd ..: {out:#?}"
    );
    for area in ["archive", "errors", "upload"] {
        assert!(
            out.stdout.lines().any(|l| l.trim() == area),
            "ls -1 in / lists {area}: {out:#?}"
        );
    }

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "bare.csv", "applied", &[("added", 7)]);
    assert_eq!(
        s.env.exported_ids("hr"),
        (1..=7).map(hr_id).collect::<Vec<_>>()
    );
    wait_for_upload_dir(&s.env, "hr", &[]);
    archived_name(&s.env, "hr", "bare.csv");
}

#[test]
fn openssh_sftp_with_a_password_uploads_and_renames_into_place() {
    let s = Setup::standard();
    let content = hr_file(1..=40);
    let local = s.env.input("sftp-pw.csv", &content);

    // Upload under a temporary name, then rename it to its final name.
    let batch = format!(
        "put {} /upload/sftp-pw.csv.part\nrename /upload/sftp-pw.csv.part /upload/sftp-pw.csv\n",
        local.display()
    );
    let out = openssh_sftp_password(&s.env, s.server.port, USER, PASSWORD, &batch);
    assert_eq!(
        out.code,
        0,
        "sshpass + OpenSSH sftp with a password: {out:#?}\n{}",
        s.server.context()
    );

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "sftp-pw.csv", "applied", &[("added", 40)]);
    assert_eq!(s.env.exported_ids("hr").len(), 40);
    wait_for_upload_dir(&s.env, "hr", &[]);
    archived_name(&s.env, "hr", "sftp-pw.csv");

    // A wrong password is refused and changes nothing.
    let out = openssh_sftp_password(&s.env, s.server.port, USER, "wrong-password", "ls /\n");
    assert_ne!(out.code, 0, "a wrong password must be refused: {out:#?}");
    assert_eq!(s.env.runs_list().len(), 1);
}

#[test]
fn curl_with_a_password_uploads_and_downloads() {
    let s = Setup::standard();
    let content = hr_file(1..=25);
    let local = s.env.input("curl-pw.csv", &content);

    let mut cmd = tool(&s.env, "curl");
    cmd.args(["-sS", "-k", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("-T")
        .arg(&local)
        .arg(format!(
            "sftp://{HOST}:{}/upload/curl-pw.csv",
            s.server.port
        ));
    let out = run_tool(cmd, "curl -T (password)", None, TOOL_TIMEOUT);
    assert_eq!(
        out.code,
        0,
        "curl upload with a password: {out:#?}\n{}",
        s.server.context()
    );

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "curl-pw.csv", "applied", &[("added", 25)]);
    assert_eq!(s.env.exported_ids("hr").len(), 25);

    // curl downloads the archived copy.
    let archived = archived_name(&s.env, "hr", "curl-pw.csv");
    let mut cmd = tool(&s.env, "curl");
    cmd.args(["-sS", "-k", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!(
            "sftp://{HOST}:{}/archive/{archived}",
            s.server.port
        ));
    let out = run_tool(cmd, "curl download", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "curl download: {out:#?}");
    assert_eq!(out.stdout, content);
}

#[test]
fn curl_with_a_key_uploads_and_the_file_is_imported() {
    let s = Setup::standard();
    let content = hr_file(1..=30);
    let local = s.env.input("curl-key.csv", &content);

    let mut cmd = tool(&s.env, "curl");
    cmd.args(["-sS", "-k", "--user"])
        .arg(format!("{USER}:"))
        .arg("--key")
        .arg(&s.key)
        .arg("--pubkey")
        .arg(pub_of(&s.key))
        .arg("-T")
        .arg(&local)
        .arg(format!(
            "sftp://{HOST}:{}/upload/curl-key.csv",
            s.server.port
        ));
    let out = run_tool(cmd, "curl -T (key)", None, TOOL_TIMEOUT);
    assert_eq!(
        out.code,
        0,
        "curl upload with a key: {out:#?}\n{}",
        s.server.context()
    );

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "curl-key.csv", "applied", &[("added", 30)]);
    assert_eq!(s.env.exported_ids("hr").len(), 30);
}

#[test]
fn paramiko_with_a_password_uploads_and_downloads_the_error_report() {
    let s = Setup::standard();
    let (content, bad_line) = with_one_bad_row(1..=20);

    // putfo with confirm=True, paramiko's default for put(): it stats the
    // file right after closing it.
    let results = s.password_client().session(vec![json!({
        "op": "put", "path": "/upload/pm.csv", "data": content, "confirm": true
    })]);
    ok(&results[0], "paramiko put(confirm=True) with a password");

    let runs = s.wait_for_exactly(1);
    assert_run(
        &runs[0],
        "pm.csv",
        "applied",
        &[("rows", 21), ("added", 20), ("flagged", 1)],
    );
    assert_eq!(s.env.exported_ids("hr").len(), 20);
    assert_error_report(
        &s.env,
        "hr",
        "pm.csv",
        &content,
        b',',
        &[Flag {
            line: bad_line,
            reasons: &[],
        }],
    );
    let report_path = s.env.error_report_path("hr", "pm.csv");
    let report_name = report_path.file_name().unwrap().to_str().unwrap();
    let report = format!("\u{feff}{}", s.env.error_report_text("hr", "pm.csv"));
    let archived = archived_name(&s.env, "hr", "pm.csv");

    wait_for_upload_dir(&s.env, "hr", &[]);

    // The account lists /errors and /archive and downloads both files.
    let results = s.password_client().session(vec![
        json!({"op": "listdir", "path": "/errors"}),
        json!({"op": "get", "path": format!("/errors/{report_name}")}),
        json!({"op": "listdir", "path": "/archive"}),
        json!({"op": "get", "path": format!("/archive/{archived}")}),
        json!({"op": "listdir", "path": "/upload"}),
        json!({"op": "stat", "path": format!("/errors/{report_name}")}),
    ]);
    assert_eq!(ok(&results[0], "listdir /errors"), json!([report_name]));
    assert_eq!(ok(&results[1], "download the error report"), json!(report));
    assert_eq!(ok(&results[2], "listdir /archive"), json!([archived]));
    assert_eq!(
        ok(&results[3], "download the archived file"),
        json!(content)
    );
    assert_eq!(ok(&results[4], "listdir /upload"), json!([]));
    assert_eq!(
        ok(&results[5], "stat the error report")["size"],
        json!(report.len())
    );
}

#[test]
fn paramiko_with_a_key_uploads_to_filepart_then_renames_like_winscp() {
    let s = Setup::standard();
    let content = hr_file(1..=15);

    // What WinSCP does: write to NAME.filepart (setting times and mode on
    // the open handle), close, set attributes, rename to the final name,
    // set its times again.
    let results = s.key_client().session(vec![
        json!({"op": "write_open", "path": "/upload/w.csv.filepart", "data": content, "fsetstat": true}),
        json!({"op": "write_close"}),
        json!({"op": "stat", "path": "/upload/w.csv.filepart"}),
        json!({"op": "chmod", "path": "/upload/w.csv.filepart", "mode": 0o644}),
        json!({"op": "utime", "path": "/upload/w.csv.filepart", "times": [1_600_000_000, 1_600_000_000]}),
        json!({"op": "rename", "src": "/upload/w.csv.filepart", "dst": "/upload/w.csv"}),
        json!({"op": "utime", "path": "/upload/w.csv", "times": [1_600_000_000, 1_600_000_000]}),
    ]);
    ok(&results[0], "open and write w.csv.filepart");
    ok(&results[1], "close w.csv.filepart");
    assert_eq!(
        ok(&results[2], "stat w.csv.filepart after close")["size"],
        json!(content.len()),
        "a .filepart is not picked up: it is still there, whole"
    );
    ok(&results[3], "chmod (setstat) after upload");
    ok(&results[4], "utime (setstat) after upload");
    ok(&results[5], "rename w.csv.filepart to w.csv");
    ok(
        &results[6],
        "utime on the final name right after the rename (WinSCP preserves timestamps)",
    );

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "w.csv", "applied", &[("added", 15)]);
    assert_eq!(
        s.env.exported_ids("hr"),
        (1..=15).map(hr_id).collect::<Vec<_>>()
    );
    wait_for_upload_dir(&s.env, "hr", &[]);
    archived_name(&s.env, "hr", "w.csv");
}

#[test]
fn lftp_with_a_password_uploads_and_the_file_is_imported() {
    let s = Setup::standard();
    let content = hr_file(1..=12);
    let local = s.env.input("lftp.csv", &content);

    let connect_program = "ssh -a -x -F /dev/null -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o PubkeyAuthentication=no \
         -o PreferredAuthentications=password,keyboard-interactive";
    let script = format!(
        "set sftp:auto-confirm yes; set sftp:connect-program \"{connect_program}\"; \
         set net:max-retries 1; set net:timeout 20; set net:reconnect-interval-base 1; \
         put {} -o /upload/lftp.csv || exit 1; bye",
        local.display()
    );
    let mut cmd = tool(&s.env, "lftp");
    require_tool("ssh");
    cmd.arg("-u")
        .arg(format!("{USER},{PASSWORD}"))
        .arg("-e")
        .arg(&script)
        .arg(format!("sftp://{HOST}:{}", s.server.port));
    let out = run_tool(cmd, "lftp put", None, TOOL_TIMEOUT);
    assert_eq!(
        out.code,
        0,
        "lftp upload with a password: {out:#?}\n{}",
        s.server.context()
    );

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "lftp.csv", "applied", &[("added", 12)]);
    assert_eq!(s.env.exported_ids("hr").len(), 12);
    archived_name(&s.env, "hr", "lftp.csv");
}

#[test]
fn temporary_and_hidden_names_are_never_picked_up() {
    let s = Setup::standard();
    let file = hr_file(1..=5);
    let temporary = [
        ".hidden.csv",
        "a.part",
        "b.csv.part",
        "c.filepart",
        "d.csv.filepart",
        "e.tmp",
        "f.csv.tmp",
        "g.csv.Ab3xQ9zK.partial",
    ];
    let mut steps: Vec<_> = temporary
        .iter()
        .map(|name| put(&format!("/upload/{name}"), &file))
        .collect();
    // Then one final name: the feed's queue is in arrival order, so once
    // this one has run, any temporary name picked up would have run too.
    steps.push(put("/upload/real.csv", &hr_file(1..=8)));
    let results = s.key_client().session(steps);
    for (i, r) in results.iter().enumerate() {
        ok(r, &format!("upload #{i}"));
    }

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "real.csv", "applied", &[("added", 8)]);
    // Give a wrongly queued temporary file the time to show up.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        run_files(&s.env.runs_list()),
        vec!["real.csv"],
        "only the final name is imported"
    );
    // Temporary and hidden files stay in upload/, untouched.
    wait_for_upload_dir(&s.env, "hr", &temporary);
}

#[test]
fn rename_overwrites_an_existing_target() {
    let s = Setup::standard();
    // Two temporary files; renaming the second onto the first replaces it
    // (WinSCP and FileZilla rely on this: there is no posix-rename
    // extension to ask for it), then the result is renamed to a final
    // name and imported.
    let results = s.key_client().session(vec![
        put("/upload/one.tmp", &hr_file(1..=3)),
        put("/upload/two.tmp", &hr_file(1..=9)),
        json!({"op": "rename", "src": "/upload/two.tmp", "dst": "/upload/one.tmp"}),
        json!({"op": "listdir", "path": "/upload"}),
        json!({"op": "rename", "src": "/upload/one.tmp", "dst": "/upload/final.csv"}),
    ]);
    ok(&results[0], "put one.tmp");
    ok(&results[1], "put two.tmp");
    ok(&results[2], "rename two.tmp onto the existing one.tmp");
    assert_eq!(ok(&results[3], "listdir /upload"), json!(["one.tmp"]));
    ok(&results[4], "rename one.tmp to final.csv");

    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "final.csv", "applied", &[("added", 9)]);
    assert_eq!(s.env.exported_ids("hr").len(), 9);
}

#[test]
fn only_upload_is_writable_and_mkdir_is_refused() {
    let s = Setup::standard();
    let (content, _) = with_one_bad_row(1..=6);
    ok(
        &s.key_client()
            .session(vec![put("/upload/first.csv", &content)])[0],
        "first upload",
    );
    s.wait_for_exactly(1);
    let archived = archived_name(&s.env, "hr", "first.csv");
    let report_path = s.env.error_report_path("hr", "first.csv");
    let report = report_path.file_name().unwrap().to_str().unwrap();
    wait_for_upload_dir(&s.env, "hr", &[]);
    let feed_folders = names_in(&s.env.data_dir.join("hr"));
    let before_archive = snapshot(&archive_dir(&s.env, "hr"));
    let before_errors = snapshot(&errors_dir(&s.env, "hr"));

    let file = hr_file(1..=2);
    let results = s.key_client().session(vec![
        json!({"op": "realpath", "path": "."}),
        json!({"op": "realpath", "path": ""}),
        json!({"op": "listdir", "path": "/"}),
        json!({"op": "stat", "path": "/upload"}),
        // 4: writes outside /upload
        put("/errors/x.csv", &file),
        put("/archive/x.csv", &file),
        put("/x.csv", &file),
        put("/nowhere/x.csv", &file),
        put(&format!("/errors/{report}"), &file),
        // 9: folders
        json!({"op": "mkdir", "path": "/upload/sub"}),
        json!({"op": "mkdir", "path": "/newdir"}),
        json!({"op": "rmdir", "path": "/upload"}),
        json!({"op": "rmdir", "path": "/archive"}),
        // 13: removing and renaming in the read-only areas
        json!({"op": "remove", "path": format!("/archive/{archived}")}),
        json!({"op": "remove", "path": format!("/errors/{report}")}),
        json!({"op": "rename", "src": format!("/archive/{archived}"), "dst": "/upload/again.csv"}),
        json!({"op": "rename", "src": format!("/errors/{report}"), "dst": "/upload/again.tmp"}),
        put("/upload/keep.tmp", &file),
        json!({"op": "rename", "src": "/upload/keep.tmp", "dst": "/archive/keep.tmp"}),
        json!({"op": "rename", "src": "/upload/keep.tmp", "dst": "/errors/keep.tmp"}),
        json!({"op": "rename", "src": "/upload/keep.tmp", "dst": "/keep.tmp"}),
        // 21: what is allowed
        json!({"op": "get", "path": format!("/archive/{archived}")}),
        json!({"op": "get", "path": format!("/errors/{report}")}),
        json!({"op": "remove", "path": "/upload/keep.tmp"}),
        json!({"op": "listdir", "path": "/upload"}),
    ]);
    assert_eq!(ok(&results[0], "realpath ."), json!("/upload"));
    assert_eq!(
        ok(&results[1], "realpath of the empty path"),
        json!("/upload")
    );
    assert_eq!(
        name_set(&ok(&results[2], "listdir /")),
        BTreeSet::from(["archive", "errors", "upload"].map(String::from)),
        "the account sees its three folders and nothing else"
    );
    assert_eq!(ok(&results[3], "stat /upload")["is_dir"], true);
    for (i, what) in [
        (4, "upload into /errors"),
        (5, "upload into /archive"),
        (6, "upload into /"),
        (7, "upload into a folder that does not exist"),
        (8, "overwrite an error report"),
        (9, "mkdir in /upload"),
        (10, "mkdir in /"),
        (11, "rmdir /upload"),
        (12, "rmdir /archive"),
        (13, "remove in /archive"),
        (14, "remove in /errors"),
        (15, "rename out of /archive"),
        (16, "rename out of /errors"),
        (18, "rename into /archive"),
        (19, "rename into /errors"),
        (20, "rename into /"),
    ] {
        refused(&results[i], what);
    }
    ok(&results[17], "put keep.tmp");
    assert_eq!(ok(&results[21], "download from /archive"), json!(content));
    ok(&results[22], "download from /errors");
    ok(&results[23], "remove in /upload");
    assert_eq!(ok(&results[24], "listdir /upload"), json!([]));

    assert_same_tree(
        &before_archive,
        &snapshot(&archive_dir(&s.env, "hr")),
        "archive/",
    );
    assert_same_tree(
        &before_errors,
        &snapshot(&errors_dir(&s.env, "hr")),
        "errors/",
    );
    assert_eq!(
        names_in(&s.env.data_dir.join("hr")),
        feed_folders,
        "no new folder in the feed's folder"
    );
    wait_for_upload_dir(&s.env, "hr", &[]);

    // None of the refused writes was queued: a new final file is the
    // second run, not the third.
    ok(
        &s.key_client()
            .session(vec![put("/upload/second.csv", &hr_file(1..=6))])[0],
        "second upload",
    );
    let runs = s.wait_for_exactly(2);
    assert_eq!(run_files(&runs), vec!["first.csv", "second.csv"]);
}

#[test]
fn each_account_sees_only_its_own_feed() {
    let env = sftp_env_with(&[Feed::hr("hr"), Feed::hr("crm")], &[], &[]);
    let hr_key = keygen(&env, "hr-key");
    let crm_key = keygen(&env, "crm-key");
    add_account(&env, "hr-up", "hr", None, &[&pub_of(&hr_key)], &[]);
    add_account(&env, "crm-up", "crm", None, &[&pub_of(&crm_key)], &[]);
    let server = Server::start(&env);
    let hr = Client::key(server.port, "hr-up", &hr_key);
    let crm = Client::key(server.port, "crm-up", &crm_key);

    ok(
        &hr.session(vec![put("/upload/hr.csv", &hr_file(1..=4))])[0],
        "hr upload",
    );
    let runs = server.wait_for_exactly(&env, 1, RUN_TIMEOUT);
    assert_eq!(runs[0]["feed"], "hr");
    ok(
        &crm.session(vec![put("/upload/crm.csv", &hr_file(10..=16))])[0],
        "crm upload",
    );
    let runs = server.wait_for_exactly(&env, 2, RUN_TIMEOUT);
    assert_eq!(runs[1]["feed"], "crm", "{runs:#?}");
    assert_eq!(runs[1]["file"], "crm.csv");
    assert_eq!(runs[1]["added"], 7);

    assert_eq!(
        env.exported_ids("hr"),
        (1..=4).map(hr_id).collect::<Vec<_>>()
    );
    assert_eq!(
        env.exported_ids("crm"),
        (10..=16).map(hr_id).collect::<Vec<_>>()
    );
    assert_eq!(names_in(&archive_dir(&env, "hr")).len(), 1);
    assert_eq!(names_in(&archive_dir(&env, "crm")).len(), 1);

    // crm's account sees only crm's archive, whatever path it tries.
    let hr_archived = archived_name(&env, "hr", "hr.csv");
    let results = crm.session(vec![
        json!({"op": "listdir", "path": "/archive"}),
        json!({"op": "listdir", "path": "/../hr/archive"}),
        json!({"op": "listdir", "path": "../hr"}),
        json!({"op": "get", "path": format!("/../hr/archive/{hr_archived}")}),
        json!({"op": "get", "path": format!("../../hr/archive/{hr_archived}")}),
        json!({"op": "get", "path": format!("/archive/../../hr/archive/{hr_archived}")}),
        put("/../hr/upload/sneaky.csv", &hr_file(1..=1)),
        put("../hr/upload/sneaky.csv", &hr_file(1..=1)),
    ]);
    let archive = ok(&results[0], "crm lists its /archive");
    assert_eq!(archive.as_array().map(Vec::len), Some(1));
    assert!(
        archive[0]
            .as_str()
            .unwrap_or_default()
            .ends_with("-crm.csv"),
        "{archive:#}"
    );
    for (i, what) in [(1, "list hr's archive"), (2, "list hr's folder")] {
        if results[i]["ok"] == true {
            let names = name_set(&results[i]["value"]);
            assert!(
                !names.contains(&hr_archived) && !names.contains("hr.csv"),
                "crm could {what}: {names:?}"
            );
        }
    }
    for r in &results[3..=7] {
        refused(r, "crm reaching into hr's folders");
    }
    wait_for_upload_dir(&env, "hr", &[]);
    wait_for_upload_dir(&env, "crm", &[]);
    assert_eq!(env.runs_list().len(), 2);
}

#[test]
fn three_files_uploaded_quickly_are_processed_in_arrival_order() {
    let s = Setup::standard();
    // Names in the opposite order of arrival, and contents such that any
    // other order holds a run: 30 people then 20 would remove a third.
    let results = s.key_client().session(vec![
        put("/upload/c.csv", &hr_file(1..=10)),
        put("/upload/b.csv", &hr_file(1..=20)),
        put("/upload/a.csv", &hr_file(1..=30)),
    ]);
    for r in &results {
        ok(r, "quick upload");
    }

    let runs = s.wait_for_exactly(3);
    assert_eq!(
        run_files(&runs),
        vec!["c.csv", "b.csv", "a.csv"],
        "runs in arrival order: {runs:#?}"
    );
    for run in &runs {
        assert_eq!(run["state"], "applied", "{run:#}");
        assert_eq!(run["added"], 10, "{run:#}");
        assert_eq!(run["removed"], 0, "{run:#}");
    }
    assert_eq!(
        s.env.exported_ids("hr"),
        (1..=30).map(hr_id).collect::<Vec<_>>()
    );
}

#[test]
fn the_same_name_uploaded_twice_is_two_runs_and_two_archived_files() {
    let s = Setup::standard();
    let first = hr_file(1..=10);
    let second = hr_file(1..=12);
    // An HR system that always writes the same name, twice in a row.
    let results = s.key_client().session(vec![
        put("/upload/same.csv", &first),
        put("/upload/same.csv", &second),
    ]);
    ok(&results[0], "first upload");
    ok(&results[1], "second upload of the same name");

    let runs = s.wait_for_exactly(2);
    assert_run(&runs[0], "same.csv", "applied", &[("added", 10)]);
    assert_run(
        &runs[1],
        "same.csv",
        "applied",
        &[("added", 2), ("unchanged", 10)],
    );
    assert_eq!(s.env.exported_ids("hr").len(), 12);

    let archived: Vec<String> = names_in(&archive_dir(&s.env, "hr"))
        .into_iter()
        .filter(|n| n.ends_with("-same.csv"))
        .collect();
    assert_eq!(archived.len(), 2, "both files are archived: {archived:?}");
    let mut contents: Vec<String> = archived
        .iter()
        .map(|n| fs::read_to_string(archive_dir(&s.env, "hr").join(n)).expect("archived"))
        .collect();
    contents.sort_by_key(String::len);
    assert_eq!(contents, vec![first, second]);
}
