//! Bad input never panics: it fails the file with a reason, flags rows, or
//! exits with a message. (Every command run through the harness is checked
//! for "panicked" and "RUST_BACKTRACE".)

use crate::util::*;

/// Deterministic junk bytes, NULs and high bytes included.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_garbage_fails_the_file() {
    let env = Env::hr();
    let run = env.import_text("hr", "garbage.bin", garbage(8192));
    assert_eq!(run.state(), "failed", "{:#}", run.json);
    assert!(!run.reason().is_empty());
    assert!(!env.data_dir.join("hr/errors").exists());
}

#[test]
fn empty_file_fails_with_unreadable_header() {
    let env = Env::hr();
    let run = env.import_text("hr", "empty.csv", b"");
    assert_eq!(run.state(), "failed", "{:#}", run.json);
    assert!(
        run.reason().to_lowercase().contains("header"),
        "reason: {}",
        run.reason()
    );

    let run = env.import_text("hr", "bom-only.csv", b"\xef\xbb\xbf");
    assert_eq!(run.state(), "failed", "{:#}", run.json);
    let run = env.import_text("hr", "blank-lines.csv", b"\n\n\r\n");
    assert_eq!(run.state(), "failed", "{:#}", run.json);
}

#[test]
fn header_only_file_into_an_empty_feed_changes_nothing() {
    let env = Env::hr();
    let run = env.import_text("hr", "header.csv", format!("{HR_HEADER}\n"));
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
    run.assert_counts(&[("rows", 0), ("added", 0), ("removed", 0)]);
    let run = env.import_text("hr", "header-no-newline.csv", HR_HEADER);
    assert_eq!(run.state(), "unchanged", "{:#}", run.json);
    assert_eq!(env.exported_ids("hr").len(), 0);
}

#[test]
fn nonexistent_file_exits_1_naming_it() {
    let env = Env::hr();
    let missing = env.root.join("in/nope.csv");
    let out = env.run(&["import", "--feed", "hr", missing.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("nope.csv"), "{}", out.stderr);

    let dir = env.root.join("in");
    let out = env.run(&["import", "--feed", "hr", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "a folder is not a file: {out:#?}");
}

/// A valid `hr` file of exactly `size` bytes.
fn file_of_size(size: usize) -> String {
    let mut k = 0;
    while hr_file(1..=k + 1).len() + 100 < size {
        k += 1;
    }
    let head = hr_file(1..=k);
    let row = |pad: &str| format!("E99999,Pad,{pad},pad@example.com,,,Sales,Active\n");
    let pad = size - head.len() - row("").len();
    assert!((1..=255).contains(&pad));
    let file = head + &row(&"x".repeat(pad));
    assert_eq!(file.len(), size);
    file
}

#[test]
fn a_file_over_max_file_size_fails() {
    let env = Env::new(&[
        Feed::hr("hr").extra("max_file_size = \"1KiB\""),
        Feed::hr("bytes").extra("max_file_size = 1024"),
        Feed::hr("big").extra("max_file_size = \"2GiB\""),
    ]);
    for feed in ["hr", "bytes"] {
        let run = env.import_text(feed, "over.csv", file_of_size(1025));
        assert_eq!(run.state(), "failed", "{feed}: {:#}", run.json);
        assert!(
            run.reason().to_lowercase().contains("size"),
            "{feed}: reason: {}",
            run.reason()
        );
        assert_eq!(env.exported_ids(feed).len(), 0);

        let run = env.import_text(feed, "exact.csv", file_of_size(1024));
        assert_eq!(
            run.state(),
            "applied",
            "{feed}: 1024 bytes is not over: {:#}",
            run.json
        );
    }
    let run = env.import_text("big", "small.csv", file_of_size(1025));
    assert_eq!(run.state(), "applied", "{:#}", run.json);
}

#[test]
fn a_file_over_max_rows_fails() {
    let env = Env::new(&[Feed::hr("hr").extra("max_rows = 5")]);
    let run = env.import_text("hr", "six.csv", hr_file(1..=6));
    assert_eq!(run.state(), "failed", "{:#}", run.json);
    assert!(
        run.reason().to_lowercase().contains("row"),
        "reason: {}",
        run.reason()
    );
    assert_eq!(env.exported_ids("hr").len(), 0);

    let run = env.import_text("hr", "five.csv", hr_file(1..=5));
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[("rows", 5), ("added", 5)]);
}

#[test]
fn odd_files_never_panic() {
    let env = Env::hr();
    let long_field = format!(
        "{HR_HEADER}\nE1,{},Lee,a@example.com,,,Sales,Active\n",
        "z".repeat(1 << 20)
    );
    let odd: Vec<(&str, Vec<u8>)> = vec![
        (
            "unterminated.csv",
            format!("{HR_HEADER}\nE1,\"Ann,Lee,a@example.com,,,Sales,Active\n").into_bytes(),
        ),
        ("nuls.csv", vec![0u8; 4096]),
        ("newlines.csv", vec![b'\n'; 4096]),
        ("quotes.csv", vec![b'"'; 4096]),
        ("long-field.csv", long_field.into_bytes()),
        ("header-garbage.csv", {
            let mut v = HR_HEADER.as_bytes().to_vec();
            v.push(b'\n');
            v.extend(garbage(4096));
            v
        }),
        ("utf16be.csv", {
            let mut v = vec![0xfe, 0xff];
            for unit in hr_file(1..=2).encode_utf16() {
                v.extend_from_slice(&unit.to_be_bytes());
            }
            v
        }),
    ];
    // The harness checks for panics, JSON output and an exit code that
    // matches the state; collect every file's failure before failing.
    let mut failures = Vec::new();
    for (name, content) in odd {
        let result = std::panic::catch_unwind(|| {
            let run = env.import_text("hr", name, content);
            if run.state() == "failed" {
                assert!(!run.reason().is_empty(), "{name}: failed without a reason");
            }
        });
        if result.is_err() {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "odd files not handled: {failures:?}");
}

#[test]
fn an_export_to_a_full_disk_says_so_and_never_blames_the_store() {
    let env = Env::hr();
    assert_eq!(
        env.import_text("hr", "a.csv", hr_file(1..=3000)).state(),
        "applied"
    );
    for format in ["csv", "json"] {
        let mut cmd = env.command();
        cmd.arg("--config")
            .arg(&env.config)
            .args(["recipients", "export", "--feed", "hr", "--format", format])
            .stdout(std::fs::File::create("/dev/full").expect("/dev/full"));
        let out = cmd.output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot write the recipients to the output"),
            "{stderr}"
        );
        assert!(stderr.contains("No space left"), "{stderr}");
        assert!(
            !stderr.contains("restore"),
            "not the store's fault: {stderr}"
        );
    }
}
