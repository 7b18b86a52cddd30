//! What the server's log shows of values from outside: a file name or a
//! login name with a line break or a terminal escape code stays inside one
//! escaped log line.

use crate::server::*;
use crate::util::*;

#[test]
fn a_file_name_cannot_forge_a_log_line_or_send_escape_codes() {
    let s = Setup::new(&[], &[]);
    let forged = "day.csv\n2026-12-04T00:00:00Z  WARN forged line \u{1b}[2J";
    let results = s
        .password_client()
        .session(vec![put(&format!("/upload/{forged}.csv"), &hr_file(1..=2))]);
    assert_eq!(results[0]["ok"], true, "{results:?}");
    s.wait_for_exactly(1);
    let log = s.server.stderr();
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("WARN forged"))
            .all(|l| l.contains("INFO ") && !l.trim_start().starts_with("2026-12-04T00")),
        "the forged text stays on the line of the real entry: {log}"
    );
    assert!(log.contains("WARN forged line \\u{1B}[2J"), "{log}");
}
