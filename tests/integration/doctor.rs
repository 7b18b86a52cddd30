//! `flagsync doctor`: every check on a healthy running server, SMTP down
//! and up (nothing sent), a nearly full disk, a data folder others may
//! read or write or that belongs to someone else, a held run and an
//! undelivered report email as warnings, and no secret in the output.

use serde_json::Value;

use crate::util::*;

/// The checks every report has, whatever the feeds.
const CHECKS: [&str; 10] = [
    "configuration",
    "store",
    "data folder",
    "data folder writable",
    "free space",
    "sftp port",
    "web port",
    "host keys",
    "smtp",
    "clock",
];

/// `doctor --json`: the exit code and the report.
fn doctor(env: &Env) -> (i32, Value) {
    let out = env.run(&["doctor", "--json"]);
    let report = out.json("doctor --json");
    assert_eq!(
        report["ok"],
        out.code == 0,
        "ok matches the exit code: {out:#?}"
    );
    assert!(
        report["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{report:#}"
    );
    for c in report["checks"].as_array().expect("checks") {
        let status = c["status"].as_str().expect("status");
        assert!(matches!(status, "ok" | "warn" | "fail"), "{c:#}");
        assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()), "{c:#}");
        assert_eq!(
            c["fix"].is_string(),
            status != "ok",
            "a fix exactly for WARN and FAIL: {c:#}"
        );
    }
    (out.code, report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["status"].as_str().expect("status")
}

fn detail<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["detail"].as_str().expect("detail")
}

fn assert_every_check(report: &Value, feeds: &[&str]) {
    for name in CHECKS {
        check(report, name);
    }
    for feed in feeds {
        for part in ["last run", "held runs", "arrivals", "report emails"] {
            check(report, &format!("feed {feed}: {part}"));
        }
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn doctor_without_a_server_reads_the_store_here_and_warns_that_nothing_listens() {
    let env = Env::hr();
    assert_eq!(
        env.import_text("hr", "day1.csv", hr_file(1..=5)).state(),
        "applied"
    );
    let (code, report) = doctor(&env);
    assert_eq!(code, 0, "{report:#}");
    assert_every_check(&report, &["hr"]);
    assert_eq!(status(&report, "configuration"), "ok");
    assert!(
        detail(&report, "configuration").contains(&env.config.display().to_string()),
        "{report:#}"
    );
    assert_eq!(status(&report, "store"), "ok");
    assert!(detail(&report, "store").contains("entries"), "{report:#}");
    assert_eq!(status(&report, "data folder"), "ok", "{report:#}");
    assert_eq!(status(&report, "data folder writable"), "ok");
    assert_eq!(status(&report, "smtp"), "ok");
    assert!(detail(&report, "smtp").contains("not configured"));
    assert_eq!(status(&report, "clock"), "ok");
    assert_eq!(status(&report, "host keys"), "warn", "no server has run");
    assert_eq!(status(&report, "feed hr: last run"), "ok");
    assert!(
        detail(&report, "feed hr: last run").contains("applied"),
        "{report:#}"
    );
    // The probe file is gone.
    let left: Vec<String> = std::fs::read_dir(&env.data_dir)
        .expect("data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("doctor"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let text = env.run(&["doctor"]);
    assert_eq!(text.code, 0, "{text:#?}");
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains("store")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("→"),
        "a WARN says what to do: {}",
        text.stdout
    );
}

#[test]
fn doctor_warns_of_a_data_folder_others_may_read_and_fails_one_they_may_write() {
    let env = Env::hr();
    assert_eq!(
        env.import_text("hr", "day1.csv", hr_file(1..=2)).state(),
        "applied"
    );

    chmod(&env.data_dir, 0o755);
    let (code, report) = doctor(&env);
    assert_eq!(code, 0, "a warning only: {report:#}");
    assert_eq!(status(&report, "data folder"), "warn", "{report:#}");
    assert!(
        detail(&report, "data folder").contains("0755"),
        "{report:#}"
    );
    assert!(
        check(&report, "data folder")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("chmod 700")),
        "{report:#}"
    );

    chmod(&env.data_dir, 0o777);
    let (code, report) = doctor(&env);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(status(&report, "data folder"), "fail", "{report:#}");
    assert!(detail(&report, "data folder").contains("anyone may write"));

    chmod(&env.data_dir, 0o700);
    let (code, report) = doctor(&env);
    assert_eq!(status(&report, "data folder"), "ok", "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}

#[cfg(feature = "e2e")]
mod server {
    use std::os::unix::fs::chown;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::mail::{free_port, held_run, import_cli, mail_env, smtp_table, SmtpSink};
    use crate::server::*;
    use crate::sftp_faults::Tmpfs;

    const PASSWORD: &str = "doctor-s3cret-pw-417";

    /// An `[smtp]` table with a login whose password is in a file in `dir`.
    fn smtp_with_login(
        dir: &std::path::Path,
        port: u16,
        security: &str,
        ca: Option<&std::path::Path>,
    ) -> String {
        let secret = dir.join("smtp.pass");
        std::fs::write(&secret, format!("{PASSWORD}\n")).expect("secret");
        let mut extra = format!(
            "username = \"flagsync\"\npassword_file = {}",
            toml_str(&secret.display().to_string())
        );
        if let Some(ca) = ca {
            extra += &format!("\nca_file = {}", toml_str(&ca.display().to_string()));
        }
        smtp_table(port, security, &extra)
    }

    fn assert_no_secret(env: &Env) {
        for args in [&["doctor"][..], &["doctor", "--json"][..]] {
            let out = env.run(args);
            assert!(
                !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
                "{args:?} printed the SMTP password: {out:#?}"
            );
        }
    }

    #[test]
    fn doctor_on_a_healthy_running_server_lists_its_ports_and_host_keys() {
        let env = sftp_env();
        let server = Server::start(&env);
        let run = import_cli(&env, "day1.csv", &hr_file(1..=20));
        assert_eq!(run["state"], "applied");

        let (code, report) = doctor(&env);
        assert_eq!(code, 0, "{report:#}");
        assert_every_check(&report, &["hr"]);
        for name in CHECKS {
            assert_eq!(status(&report, name), "ok", "{name}: {report:#}");
        }
        assert!(
            detail(&report, "store").contains("running server"),
            "{report:#}"
        );
        assert!(
            detail(&report, "sftp port").contains(&format!(":{}", server.port)),
            "the port the server bound: {report:#}"
        );
        let keys = detail(&report, "host keys");
        assert_eq!(server.host_keys.len(), 3, "{:?}", server.host_keys);
        for (algorithm, fingerprint) in &server.host_keys {
            assert!(
                keys.contains(&format!("{algorithm} {fingerprint}")),
                "{algorithm} {fingerprint} in {keys}"
            );
        }
        // As ssh-keygen -l prints it.
        let keygen = run_tool(
            {
                let mut c = tool(&env, "ssh-keygen");
                c.arg("-lf").arg(env.data_dir.join("ssh_host_ed25519_key"));
                c
            },
            "ssh-keygen -l",
            None,
            TOOL_TIMEOUT,
        );
        assert_eq!(keygen.code, 0, "{keygen:#?}");
        let printed = keygen
            .stdout
            .split_whitespace()
            .nth(1)
            .expect("fingerprint");
        assert!(keys.contains(printed), "{printed} in {keys}");
        for part in ["last run", "held runs", "arrivals", "report emails"] {
            assert_eq!(
                status(&report, &format!("feed hr: {part}")),
                "ok",
                "{report:#}"
            );
        }

        let text = env.run(&["doctor"]);
        assert_eq!(text.code, 0, "{text:#?}");
        assert!(
            !text.stdout.contains("WARN") && !text.stdout.contains("FAIL"),
            "{}",
            text.stdout
        );
        drop(server);
    }

    #[test]
    fn doctor_fails_with_smtp_down_and_warns_of_a_held_run_and_an_undelivered_email() {
        let port = free_port();
        let secret_dir = tempfile::tempdir().expect("dir");
        let env = mail_env(&smtp_with_login(secret_dir.path(), port, "none", None));
        let server = Server::start(&env);
        let id = held_run(&env);

        // The sender tries the report and fails (nothing listens).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (code, report) = loop {
            let (code, report) = doctor(&env);
            if status(&report, "feed hr: report emails") == "warn" {
                break (code, report);
            }
            assert!(Instant::now() < deadline, "no failed email: {report:#}");
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(status(&report, "smtp"), "fail", "{report:#}");
        assert!(
            detail(&report, "smtp").contains(&format!("127.0.0.1:{port}")),
            "{report:#}"
        );
        assert_eq!(status(&report, "feed hr: held runs"), "warn", "{report:#}");
        assert!(
            check(&report, "feed hr: held runs")["fix"]
                .as_str()
                .is_some_and(|f| f.contains(&format!("flagsync runs show {id}"))),
            "{report:#}"
        );
        assert!(
            detail(&report, "feed hr: report emails").contains("not delivered"),
            "{report:#}"
        );
        assert_no_secret(&env);
        drop(server);
    }

    #[test]
    fn doctor_passes_smtp_through_a_real_server_and_sends_no_mail() {
        let port = free_port();
        let mail_dir = tempfile::tempdir().expect("dir");
        let sink = SmtpSink::start(
            mail_dir.path(),
            port,
            "starttls",
            Some(&format!("flagsync:{PASSWORD}")),
        );
        let env = mail_env(&smtp_with_login(
            mail_dir.path(),
            port,
            "starttls",
            Some(&sink.ca()),
        ));

        let (_, report) = doctor(&env);
        assert_eq!(status(&report, "smtp"), "ok", "{report:#}");
        assert!(
            detail(&report, "smtp").contains("accepted the login"),
            "{report:#}"
        );
        assert_no_secret(&env);

        let server = Server::start(&env);
        let (code, report) = doctor(&env);
        assert_eq!(
            status(&report, "smtp"),
            "ok",
            "from the server too: {report:#}"
        );
        assert_eq!(code, 0, "{report:#}");
        drop(server);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            sink.messages().is_empty(),
            "doctor sent mail: {:#?}",
            sink.messages()
        );
    }

    #[test]
    fn doctor_fails_on_a_nearly_full_disk_and_warns_on_a_small_one() {
        for (size, expected, says, code) in [
            ("50m", "fail", "under 100.0 MiB", 1),
            ("300m", "warn", "under 1.0 GiB", 0),
        ] {
            let env = Env::hr();
            let _disk = Tmpfs::mount(&env.data_dir, size);
            // A tmpfs root is mode 1777; flagsync's own folder is 0700.
            chmod(&env.data_dir, 0o700);
            let (exit, report) = doctor(&env);
            assert_eq!(
                status(&report, "free space"),
                expected,
                "{size}: {report:#}"
            );
            assert!(
                detail(&report, "free space").contains(says),
                "{size}: {report:#}"
            );
            assert_eq!(exit, code, "{size}: {report:#}");
        }
    }

    #[test]
    fn doctor_warns_of_a_data_folder_that_belongs_to_another_user() {
        let env = Env::hr();
        assert_eq!(
            env.import_text("hr", "day1.csv", hr_file(1..=2)).state(),
            "applied"
        );
        // nobody: not this user, not the packages' flagsync user.
        chown(&env.data_dir, Some(65534), Some(65534)).expect("chown (the e2e suite runs as root)");
        let (code, report) = doctor(&env);
        assert_eq!(status(&report, "data folder"), "warn", "{report:#}");
        assert!(
            detail(&report, "data folder").contains("uid 65534"),
            "{report:#}"
        );
        assert!(
            check(&report, "data folder")["fix"]
                .as_str()
                .is_some_and(|f| f.contains("chown -R")),
            "{report:#}"
        );
        assert_eq!(code, 0, "{report:#}");
    }
}
