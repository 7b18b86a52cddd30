//! Report emails through a real SMTP server (aiosmtpd, see
//! `clients/smtp_sink.py`) on loopback: plain, STARTTLS with a private CA
//! trusted through `ca_file`, implicit TLS, AUTH; a mail server that is
//! down while runs happen; `flagsync mail test`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::*;
use crate::util::*;

const MAIL_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port below Linux's ephemeral range (32768+), so that no server
/// of another test, bound to port 0, takes it between now and the moment
/// a test (re)starts its SMTP server on it.
pub fn free_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos ^ (unique() << 20);
    for i in 0..1000u64 {
        let port =
            20_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// A running aiosmtpd that writes each message it accepts as JSON.
pub struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    pub fn start(dir: &Path, port: u16, mode: &str, auth: Option<&str>) -> SmtpSink {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/smtp_sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).arg(dir).arg(mode);
        if let Some(a) = auth {
            cmd.arg(a);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (installed by scripts/test)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("smtp sink output");
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start ({mode})");
        SmtpSink {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "json"));
        names.sort();
        names
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("message")).expect("json")
            })
            .collect()
    }

    pub fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + MAIL_TIMEOUT;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} message(s) expected within {MAIL_TIMEOUT:?}, got {got:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `hr` feed reporting to two addresses, with an `[smtp]` table.
pub fn mail_env(smtp: &str) -> Env {
    let env = sftp_env_with(&[Feed::hr("hr")], &[], &[]);
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace(
            "report_to = []",
            "report_to = [\"it@example.com\", \"hr@example.com\"]",
        );
    // [smtp] goes before the first [[feed]].
    let at = text.find("[[feed]]").expect("a feed");
    env.write_config(&format!("{}{smtp}\n{}", &text[..at], &text[at..]));
    env
}

pub fn smtp_table(port: u16, security: &str, extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\nfrom = \"flagsync@example.com\"\ntimeout = \"5s\"\nretry_pause = \"1s\"\n{extra}\n"
    )
}

pub fn import_cli(env: &Env, name: &str, content: &str) -> Value {
    let path = env.input(name, content);
    let out = env.run(&[
        "import",
        "--feed",
        "hr",
        path.to_str().expect("path"),
        "--json",
    ]);
    out.json("import")
}

/// Imports 20 people, then a file with 10 of them, which the delete
/// threshold holds; the held run's ID.
pub fn held_run(env: &Env) -> String {
    assert_eq!(
        import_cli(env, "day1.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    let held = import_cli(env, "day2.csv", &hr_file(1..=10));
    assert_eq!(held["state"], "held");
    run_id_of(&held)
}

fn email_state(env: &Env, run_id: &str) -> Vec<Value> {
    let out = env.run(&["runs", "show", run_id, "--json"]);
    assert_eq!(out.code, 0, "runs show: {out:#?}");
    out.json("runs show")["emails"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn plain_smtp_reports_an_applied_run_with_its_error_report_attached() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let server = Server::start(&env);

    let mut content = hr_file(1..=3);
    content += "E77,Bad,Mail,bob@,,,Sales,Active\n";
    let run = import_cli(&env, "daily.csv", &content);
    assert_eq!(run["state"], "applied");

    let mail = &sink.wait_for(1)[0];
    assert_eq!(
        mail["subject"],
        "[flagsync] hr: applied — 3 added, 1 flagged"
    );
    let rcpt: Vec<&str> = mail["rcpt_tos"]
        .as_array()
        .expect("rcpt")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(rcpt, ["it@example.com", "hr@example.com"]);
    let text = mail["text"].as_str().expect("text");
    assert!(text.contains("File:      daily.csv"), "{text}");
    assert!(text.contains("added             3"), "{text}");
    assert!(text.contains("flagged (errors)  1"), "{text}");
    assert!(
        text.contains("line 5 (E77)"),
        "the first errors with their lines: {text}"
    );
    assert!(mail["html"].as_str().expect("html").contains("<table"));
    // The headers RFC 5322 wants, read by Python's strict parser.
    assert_eq!(mail["strict"], "ok", "{mail:#}");
    let message_id = mail["message_id"].as_str().unwrap_or_default();
    assert!(
        message_id.starts_with("<flagsync.") && message_id.ends_with("@example.com>"),
        "{mail:#}"
    );
    assert!(
        mail["date"].as_str().is_some_and(|d| d.starts_with("20")),
        "{mail:#}"
    );
    assert_eq!(mail["mime_version"], "1.0", "{mail:#}");
    let attachments = mail["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{mail:#}");
    // The run's own report, under its own name (the run's UTC start, its
    // ID and the file's name), BOM included.
    let path = run["error_report"].as_str().expect("error_report");
    let name = Path::new(path).file_name().unwrap().to_str().unwrap();
    let (_, report_run, file) = report_name_parts(name).expect("a report name");
    assert_eq!(
        (report_run.to_string(), file.as_str()),
        (run_id_of(&run), "daily.csv")
    );
    assert_eq!(attachments[0]["name"], name);
    let report = std::fs::read_to_string(path).expect("report");
    assert!(report.starts_with('\u{feff}'), "{report:?}");
    assert!(report.contains("\n5,\"invalid email"), "{report}");
    assert_eq!(attachments[0]["content"], report.as_str());

    // `runs show` says it was sent, with the server's answer.
    let id = run_id_of(&run);
    let deadline = Instant::now() + MAIL_TIMEOUT;
    loop {
        let emails = email_state(&env, &id);
        if emails.first().is_some_and(|e| e["state"] == "sent") {
            assert!(
                emails[0]["server_reply"]
                    .as_str()
                    .unwrap_or("")
                    .contains("250"),
                "{emails:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not marked sent: {emails:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
}

#[test]
fn starttls_with_a_private_ca_and_auth_reports_a_held_run_with_how_to_decide() {
    let port = free_port();
    let mail_dir = tempfile::tempdir().expect("dir");
    let sink = SmtpSink::start(
        mail_dir.path(),
        port,
        "starttls",
        Some("flagsync:s3cret-pw"),
    );
    let secret = mail_dir.path().join("smtp.pass");
    std::fs::write(&secret, "s3cret-pw\n").expect("secret");
    let extra = format!(
        "username = \"flagsync\"\npassword_file = {}\nca_file = {}",
        toml_str(&secret.display().to_string()),
        toml_str(&sink.ca().display().to_string())
    );
    let env = mail_env(&smtp_table(port, "starttls", &extra));
    assert_eq!(env.run(&["check"]).code, 0, "check accepts the settings");
    let server = Server::start(&env);

    let id = held_run(&env);

    let mails = sink.wait_for(2);
    assert!(
        mails
            .iter()
            .all(|m| m["tls"] == true && m["authenticated"] == true),
        "{mails:#?}"
    );
    let held_mail = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains(": held"))
        .expect("the held run's mail");
    assert_eq!(
        held_mail["subject"],
        "[flagsync] hr: held — would remove 10 of 20 recipients, 50.0% > 10%"
    );
    let text = held_mail["text"].as_str().expect("text");
    assert!(text.contains("NOTHING WAS APPLIED"), "{text}");
    assert!(
        text.contains(&format!("flagsync runs confirm {id}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("flagsync runs reject {id}")),
        "{text}"
    );
    assert!(
        text.contains(&hr_id(11)),
        "names who would be removed: {text}"
    );
    drop(server);
}

#[test]
fn implicit_tls_with_auth_reports_a_failed_run_with_its_reason() {
    let port = free_port();
    let mail_dir = tempfile::tempdir().expect("dir");
    let sink = SmtpSink::start(mail_dir.path(), port, "tls", Some("flagsync:s3cret-pw"));
    let secret = mail_dir.path().join("smtp.pass");
    std::fs::write(&secret, "s3cret-pw").expect("secret");
    let extra = format!(
        "username = \"flagsync\"\npassword_file = {}\nca_file = {}",
        toml_str(&secret.display().to_string()),
        toml_str(&sink.ca().display().to_string())
    );
    let env = mail_env(&smtp_table(port, "tls", &extra));
    let server = Server::start(&env);
    let key = keygen(&env, "k");
    add_account(&env, "up", "hr", None, &[&pub_of(&key)], &[]);
    let bad = env.input("nohead.csv", "Name,Email\nAnn,a@example.com\n");
    let out = openssh_sftp_key(
        &env,
        server.port,
        "up",
        &key,
        &format!("put {} /upload/nohead.csv\n", bad.display()),
    );
    assert_eq!(out.code, 0, "{out:#?}");

    let mail = &sink.wait_for(1)[0];
    assert_eq!(mail["tls"], true);
    let subject = mail["subject"].as_str().expect("subject");
    assert!(subject.starts_with("[flagsync] hr: failed — "), "{subject}");
    let text = mail["text"].as_str().expect("text");
    assert!(text.contains("THE FILE WAS REJECTED AS A WHOLE"), "{text}");
    assert!(
        text.contains("Employee ID"),
        "the reason names the missing column: {text}"
    );
    // The failed run's own report is attached: the header found, then the
    // reason.
    let attachments = mail["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{mail:#}");
    let name = attachments[0]["name"].as_str().expect("name");
    let (_, _, file) = report_name_parts(name).expect("a report name");
    assert_eq!(file, "nohead.csv");
    assert!(
        text.contains(&format!(
            "The reason and the header found are attached ({name})"
        )),
        "{text}"
    );
    let report = attachments[0]["content"].as_str().expect("content");
    assert!(
        report.starts_with(
            "\u{feff}line,reasons,Name,Email\n,\"the whole file was rejected (nothing was imported): the ID column"
        ),
        "{report:?}"
    );
    assert!(report.contains("Employee ID"), "{report:?}");
    assert_eq!(
        report,
        std::fs::read_to_string(env.data_dir.join("hr/errors").join(name)).expect("report")
    );
    drop(server);
}

#[test]
fn a_mail_server_that_is_down_delays_the_report_but_never_the_import() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    let server = Server::start(&env);

    // No SMTP server yet: the import is applied at once.
    let started = Instant::now();
    let run = import_cli(&env, "one.csv", &hr_file(1..=5));
    assert_eq!(run["state"], "applied");
    assert!(started.elapsed() < Duration::from_secs(20));
    let id = run_id_of(&run);
    let deadline = Instant::now() + MAIL_TIMEOUT;
    loop {
        let emails = email_state(&env, &id);
        if emails.first().is_some_and(|e| e["state"] == "failing") {
            assert!(
                emails[0]["last_error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{emails:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not marked failing: {emails:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The server comes back: the report goes out, once.
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let mails = sink.wait_for(1);
    assert_eq!(mails[0]["subject"], "[flagsync] hr: applied — 5 added");

    // Across a restart: a report queued while the mail server is down is
    // sent by the next process.
    drop(sink);
    let run = import_cli(&env, "two.csv", &hr_file(1..=7));
    assert_eq!(run["state"], "applied");
    drop(server);
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let server = Server::start(&env);
    let mails = sink.wait_for(2);
    assert_eq!(mails[1]["subject"], "[flagsync] hr: applied — 2 added");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.messages().len(), 2, "no report is sent twice");
    drop(server);
}

#[test]
fn mail_test_sends_and_prints_the_answer_and_a_bad_certificate_is_a_clear_error() {
    let port = free_port();
    let mail_dir = tempfile::tempdir().expect("dir");
    let sink = SmtpSink::start(mail_dir.path(), port, "starttls", None);
    let with_ca = format!("ca_file = {}", toml_str(&sink.ca().display().to_string()));
    let env = mail_env(&smtp_table(port, "starttls", &with_ca));
    let out = env.run(&["mail", "test", "--to", "ops@example.com"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("250"),
        "prints the server's answer: {out:#?}"
    );
    let mails = sink.wait_for(1);
    assert_eq!(mails[0]["subject"], "[flagsync] test message");
    assert_eq!(mails[0]["rcpt_tos"][0], "ops@example.com");

    // Without the CA the certificate does not verify.
    let env = mail_env(&smtp_table(port, "starttls", ""));
    let out = env.run(&["mail", "test", "--to", "ops@example.com"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("not sent"), "{out:#?}");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "says why: {}",
        out.stderr
    );
    out.assert_no_panic("mail test with an untrusted certificate");
}

/// A TCP server on `port` that answers every connection with `greeting`
/// (or nothing at all) and then keeps it open.
fn broken_smtp_server(port: u16, greeting: Option<&'static [u8]>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            if let Some(g) = greeting {
                let _ = std::io::Write::write_all(&mut &stream, g);
            }
            open.push(stream);
        }
    });
}

#[test]
fn a_mail_server_that_hangs_or_answers_garbage_leaves_a_clear_state_and_the_import_applied() {
    for (what, greeting) in [
        ("hangs", None),
        (
            "answers garbage",
            Some(&b"HELLO this is not SMTP\r\n\x00\xff\r\n"[..]),
        ),
    ] {
        let port = free_port();
        broken_smtp_server(port, greeting);
        let env =
            mail_env(&smtp_table(port, "none", "").replace("timeout = \"5s\"", "timeout = \"2s\""));
        let server = Server::start(&env);
        let run = import_cli(&env, "one.csv", &hr_file(1..=4));
        assert_eq!(run["state"], "applied", "{what}");
        let id = run_id_of(&run);
        let deadline = Instant::now() + MAIL_TIMEOUT;
        loop {
            let emails = email_state(&env, &id);
            if let Some(e) = emails.first().filter(|e| e["state"] == "failing") {
                let error = e["last_error"].as_str().unwrap_or("");
                assert!(!error.is_empty(), "{what}: {emails:#?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not marked failing: {emails:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(env.exported_ids("hr").len(), 4, "{what}: the import stands");
        let log = server.stderr();
        assert!(log.contains("report not sent"), "{what}: logged: {log}");
        assert!(!log.contains("panicked"), "{what}: {log}");
        drop(server);
    }
}

#[test]
fn report_on_chooses_the_states_that_send_mail_and_unchanged_is_quiet_by_default() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let key = keygen(&env, "k");
    add_account(&env, "up", "hr", None, &[&pub_of(&key)], &[]);
    let upload_failing = |server: &Server, name: &str| {
        let bad = env.input(name, "Name,Email\nAnn,a@example.com\n");
        let put = format!("put {} /upload/{name}\n", bad.display());
        let out = openssh_sftp_key(&env, server.port, "up", &key, &put);
        assert_eq!(out.code, 0, "{out:#?}");
    };
    let subjects = |n: usize| -> Vec<String> {
        sink.wait_for(n);
        // Anything more would have come within a few outbox polls.
        std::thread::sleep(Duration::from_secs(5));
        sink.messages()
            .iter()
            .map(|m| m["subject"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // By default: applied and failed mail, unchanged does not.
    let server = Server::start(&env);
    assert_eq!(
        import_cli(&env, "a.csv", &hr_file(1..=3))["state"],
        "applied"
    );
    assert_eq!(
        import_cli(&env, "b.csv", &hr_file(1..=3))["state"],
        "unchanged"
    );
    upload_failing(&server, "c.csv");
    server.wait_for_runs(&env, 3, RUN_TIMEOUT);
    let got = subjects(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains("applied") && got[1].contains("failed"),
        "{got:?}"
    );
    drop(server);

    // Only failures.
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = text.replace("report_to = [", "report_on = [\"failed\"]\nreport_to = [");
    env.write_config(&text);
    let server = Server::start(&env);
    assert_eq!(
        import_cli(&env, "d.csv", &hr_file(1..=4))["state"],
        "applied"
    );
    upload_failing(&server, "e.csv");
    server.wait_for_runs(&env, 5, RUN_TIMEOUT);
    let got = subjects(3);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[2].contains("failed"), "{got:?}");
    drop(server);

    // A state that does not exist is a configuration error naming it.
    env.write_config(&text.replace(
        "report_on = [\"failed\"]",
        "report_on = [\"failed\", \"aplied\"]",
    ));
    let out = env.run(&["check"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.contains("report_on") && out.stderr.contains("aplied"),
        "{out:#?}"
    );
}

#[test]
fn check_warns_when_reports_cannot_link_to_the_page() {
    let env = mail_env(&smtp_table(free_port(), "none", ""));
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr
            .contains("warning: feed 'hr' mails reports but [web] public_url is not set"),
        "{out:#?}"
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = if text.contains("[web]\n") {
        text.replace(
            "[web]\n",
            "[web]\npublic_url = \"https://flagsync.example.com\"\n",
        )
    } else {
        let at = text.find("[[feed]]").expect("a feed");
        format!(
            "{}[web]\npublic_url = \"https://flagsync.example.com\"\n{}",
            &text[..at],
            &text[at..]
        )
    };
    env.write_config(&text);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!out.stderr.contains("warning"), "{out:#?}");
}

#[test]
fn the_report_lists_the_first_changes_and_how_many_more_and_a_held_run_says_would() {
    let port = free_port();
    let env = mail_env(&smtp_table(port, "none", ""));
    let sink = SmtpSink::start(&env.root.join("mail"), port, "plain", None);
    let server = Server::start(&env);

    // 30 additions: the first 20 listed, the rest counted, with the command
    // that lists them all (no public_url, so no link).
    let first = import_cli(&env, "day1.csv", &hr_file(1..=30));
    assert_eq!(first["state"], "applied");
    let id = run_id_of(&first);
    let mail = sink.wait_for(1)[0].clone();
    let text = mail["text"].as_str().expect("text");
    assert!(
        text.contains("What changed (the first 20 of 30):"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert!(
        lines.contains(&"  added E00001") && lines.contains(&"  added E00020"),
        "{text:?}"
    );
    assert!(!text.contains("E00021"), "only the first 20: {text}");
    assert!(
        text.contains(&format!("  … and 10 more — see flagsync runs changes {id}")),
        "{text}"
    );
    let html = mail["html"].as_str().expect("html");
    assert!(html.contains("<li>added E00020</li>"), "{html}");
    assert!(html.contains("… and 10 more"), "{html}");

    // Held: 15 new emails and 10 removals, worded as what it would do;
    // a removal shows the name, not the other values.
    let mut day2 = String::from(HR_HEADER);
    day2.push('\n');
    for i in 1..=20 {
        let row = hr_row(i);
        if i <= 15 {
            day2 += &row.replace(&format!("user{i}@"), &format!("new{i}@"));
        } else {
            day2 += &row;
        }
        day2.push('\n');
    }
    let held = import_cli(&env, "day2.csv", &day2);
    assert_eq!(held["state"], "held", "{held:#}");
    let held_id = run_id_of(&held);
    let mails = sink.wait_for(2);
    let held_mail = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains(": held"))
        .expect("the held run's mail");
    let text = held_mail["text"].as_str().expect("text");
    assert!(
        text.contains("What it would change (the first 20 of 25):"),
        "{text}"
    );
    assert!(
        text.contains("  would update E00001: email: user1@example.com → new1@example.com"),
        "{text}"
    );
    assert!(
        text.contains("  would remove E00021 (First21 Last21)"),
        "{text}"
    );
    assert!(!text.contains("user21@example.com"), "{text}");
    assert!(
        text.contains(&format!(
            "  … and 5 more — see flagsync runs changes {held_id}"
        )),
        "{text}"
    );
    let html = held_mail["html"].as_str().expect("html");
    assert!(html.contains("What it would change"), "{html}");
    drop(server);
}
