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

#[test]
fn the_log_says_which_configuration_was_loaded_with_wall_clock_times_or_as_json() {
    let env = sftp_env();
    let server = Server::start(&env);
    let log = server.stop();
    let first = log.lines().next().unwrap_or_default();
    let stamp = first.split_whitespace().next().unwrap_or_default();
    assert!(
        stamp.len() >= 20 && stamp.starts_with("20") && stamp.ends_with('Z') && stamp.contains('T'),
        "an RFC 3339 UTC time starts each line: {first}"
    );
    let config = env.config.display().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("configuration loaded") && l.contains(&config)),
        "{log}"
    );

    let mut cmd = env.command();
    cmd.env("FLAGSYNC_LOG_FORMAT", "json")
        .arg("--config")
        .arg(&env.config)
        .arg("serve");
    let server = Server::spawn(cmd, "flagsync serve (json log)");
    let log = server.stop();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "configuration loaded" && e["path"] == config.as_str()),
        "{log}"
    );
    assert!(events
        .iter()
        .all(|e| e["timestamp"].is_string() && e["level"].is_string()));
}
