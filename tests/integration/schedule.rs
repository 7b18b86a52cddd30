//! Schedules, overdue feeds and held-run reminders, driven by near-future
//! times and short periods rather than long sleeps.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mail::*;
use crate::server::*;
use crate::util::*;

/// `daily HH:MM:SS` (UTC) `ahead` from now.
fn utc_time_in(ahead: Duration) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + ahead.as_secs();
    let of_day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

fn set_in_config(env: &Env, from: &str, to: &str) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    assert!(text.contains(from), "{from} in {text}");
    env.write_config(&text.replacen(from, to, 1));
}

fn messages_with(sink: &SmtpSink, needle: &str) -> Vec<Value> {
    sink.messages()
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap_or("").contains(needle))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_daily_feed_processes_only_the_newest_file_at_its_time() {
    let env = sftp_env_with(&[Feed::hr("hr")], &["timezone = \"UTC\""], &[]);
    let at = utc_time_in(Duration::from_secs(12));
    set_in_config(
        &env,
        "schedule = \"on_arrival\"",
        &format!("schedule = \"daily {at}\""),
    );
    let key = keygen(&env, "k");
    add_account(&env, "up", "hr", None, &[&pub_of(&key)], &[]);
    let server = Server::start(&env);

    for (i, n) in [(1, 5), (2, 6), (3, 7)] {
        let file = env.input(&format!("day{i}.csv"), hr_file(1..=n));
        let out = openssh_sftp_key(
            &env,
            server.port,
            "up",
            &key,
            &format!("put {} /upload/day{i}.csv\n", file.display()),
        );
        assert_eq!(out.code, 0, "{out:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        env.runs_list().is_empty(),
        "nothing is processed before {at}"
    );
    assert_eq!(
        names_in(&upload_dir(&env, "hr")).len(),
        3,
        "the files wait in upload/"
    );

    let runs = oldest_first(server.wait_for_runs(&env, 3, Duration::from_secs(30)));
    let states: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("day1.csv", "superseded"),
            ("day2.csv", "superseded"),
            ("day3.csv", "applied")
        ],
        "{runs:#?}"
    );
    assert_eq!(runs[2]["added"], 7);
    // A file that never ran has nothing to reproduce: its bundle is refused.
    let out_file = env.root.join("day1.bundle.zip");
    let out = env.run(&[
        "support",
        "bundle",
        "--run",
        &run_id_of(&runs[0]),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("never ran (a newer file"), "{out:#?}");
    assert!(!out_file.exists());
    let feeds = env.run(&["feeds", "--json"]).json("feeds");
    assert!(
        feeds[0]["schedule"]
            .as_str()
            .unwrap_or("")
            .starts_with("daily "),
        "{feeds:#}"
    );
    assert!(feeds[0]["next_scheduled"].is_string(), "{feeds:#}");
    assert_eq!(env.exported_ids("hr").len(), 7);
    drop(server);
}

#[test]
fn an_overdue_feed_raises_one_alert_not_two() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    set_in_config(&env, "expect_every = \"24h\"", "expect_every = \"3s\"");
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let server = Server::start(&env);

    let alerts = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = messages_with(&sink, "overdue");
            if !found.is_empty() {
                break found;
            }
            assert!(Instant::now() < deadline, "no overdue alert");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(alerts[0]["subject"]
        .as_str()
        .unwrap_or("")
        .starts_with("[flagsync] hr: overdue"));
    assert!(
        alerts[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("expected every 3s"),
        "{alerts:#?}"
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        messages_with(&sink, "overdue").len(),
        1,
        "one alert, not one per check"
    );
    drop(server);
}

#[test]
fn a_held_run_gets_one_reminder() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    let text = std::fs::read_to_string(&env.config).expect("config");
    let at = text.find("\n[").expect("a table");
    env.write_config(&format!(
        "{}\nheld_reminder = \"2s\"{}",
        &text[..at],
        &text[at..]
    ));
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let server = Server::start(&env);

    let id = held_run(&env);

    wait_until("a reminder", Duration::from_secs(30), || {
        !messages_with(&sink, "reminder").is_empty()
    });
    let reminder = &messages_with(&sink, "reminder")[0];
    assert_eq!(
        reminder["subject"],
        format!("[flagsync] hr: reminder — run {id} is still held")
    );
    assert!(reminder["text"]
        .as_str()
        .unwrap_or("")
        .contains(&format!("flagsync runs confirm {id}")));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        messages_with(&sink, "reminder").len(),
        1,
        "the reminder is sent once"
    );
    let shown = env.run(&["runs", "show", &id, "--json"]).json("runs show");
    assert!(shown["reminded_at"].is_string(), "{shown:#}");
    drop(server);
}
