//! Webhooks against a real receiver (`clients/webhook_receiver.py`, a
//! Python `http.server` that checks each signature with the independent
//! `standardwebhooks` package) on loopback: an event of every state in
//! order, paged changes, a wrong secret (401) and a redirect shown as
//! failing, a receiver that is down (and a restart of flagsync) before
//! the event arrives, HTTPS with and without the receiver's CA,
//! `flagsync webhooks test`, and what `flagsync check` refuses.

use std::path::Path;

use crate::util::*;

/// The receiver's and flagsync's shared secret (Standard Webhooks form).
const SECRET: &str = "whsec_ZmxhZ3N5bmMtd2ViaG9vay10ZXN0LWtleS0wMDE=";
/// Another one: a receiver with it refuses flagsync's signatures.
const OTHER_SECRET: &str = "whsec_c29tZXRoaW5nLWVsc2UtZW50aXJlbHktMDAwMDA=";

/// The `hr` feed with `hooks` (`[[feed.webhook]]` tables) and the secret
/// file `hooks` name as `SECRET_FILE`.
fn hook_env(hooks: &str) -> Env {
    let env = crate::server::sftp_env_with(&[Feed::hr("hr")], &[], &[]);
    let secret = env.root.join("hook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let hooks = hooks.replace("SECRET_FILE", &toml_str(&secret.display().to_string()));
    env.write_config(&format!("{text}\n{hooks}"));
    env
}

fn webhook_table(url: &str, extra: &str) -> String {
    format!(
        "[[feed.webhook]]\nurl = {}\nsecret_file = SECRET_FILE\ninsecure_http = true\nretry_pause = \"1s\"\ntimeout = \"3s\"\n{extra}\n",
        toml_str(url)
    )
}

#[test]
fn check_names_each_webhook_problem() {
    let env = hook_env(
        "[[feed.webhook]]\nurl = \"http://127.0.0.1:9/in\"\nsecret_file = \"/nonexistent/hook.secret\"\nevents = [\"applied\", \"aplied\"]\ninclude_changes = \"everything\"\n\
         [[feed.webhook]]\nurl = \"https://127.0.0.1:9/b\"\nsecret_file = BAD_FILE\n\
         [[feed.webhook]]\nurl = \"https://127.0.0.1:9/b\"\nsecret_file = BAD_FILE\n",
    );
    let bad = env.root.join("bad.secret");
    std::fs::write(&bad, "whsec_%%%not-base64\n").expect("bad secret");
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace("BAD_FILE", &toml_str(&bad.display().to_string()));
    env.write_config(&text);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 2, "{out:#?}");
    for says in [
        "feed 'hr', webhook 1: url = \"http://127.0.0.1:9/in\" is not https",
        "insecure_http = true",
        "event 'aplied' is not known",
        "include_changes = \"everything\" is not known; use \"none\", \"summary\" or \"full\"",
        "webhook 3: url = \"https://127.0.0.1:9/b\" is configured twice for the feed",
    ] {
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
    }
    // The duplicate gone, the rest as it was.
    let at = text.rfind("[[feed.webhook]]").expect("the third webhook");
    let text = text[..at].to_string();
    // With the settings right, the files are read: each problem names its
    // feed, webhook and setting.
    let fixed = text
        .replace("http://127.0.0.1:9/in", "https://127.0.0.1:9/in")
        .replace("\"aplied\"", "\"held\"")
        .replace("\"everything\"", "\"full\"");
    env.write_config(&fixed);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.contains(
            "feed 'hr', webhook 1 (https://127.0.0.1:9/in): secret_file /nonexistent/hook.secret"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("webhook 2 (https://127.0.0.1:9/b): secret_file")
            && out.stderr.contains("flagsync webhooks secret >"),
        "{}",
        out.stderr
    );

    // A secret made by `webhooks secret` is accepted.
    let made = env.run(&["webhooks", "secret"]);
    assert_eq!(made.code, 0, "{made:#?}");
    assert!(made.stdout.starts_with("whsec_"), "{}", made.stdout);
    std::fs::write(&bad, &made.stdout).expect("secret");
    std::fs::write(env.root.join("hook.secret"), &made.stdout).expect("secret");
    let out = env.run(&["check"]);
    assert_eq!(
        out.code, 2,
        "the first webhook's file still does not exist: {out:#?}"
    );
    let fixed = fixed.replace(
        "/nonexistent/hook.secret",
        &env.root.join("hook.secret").display().to_string(),
    );
    env.write_config(&fixed);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!Path::new("/nonexistent/hook.secret").exists());
}

#[cfg(feature = "e2e")]
mod e2e {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::*;
    use crate::mail::{free_port, import_cli};
    use crate::server::*;

    const WAIT: Duration = Duration::from_secs(30);

    /// A running `webhook_receiver.py` and its log.
    struct Receiver {
        child: Child,
        log: PathBuf,
        /// Where an HTTPS receiver wrote its CA.
        dir: PathBuf,
    }

    impl Receiver {
        fn start(dir: &Path, port: u16, secret: &str, https: bool) -> Receiver {
            std::fs::create_dir_all(dir).expect("dir");
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/integration/clients/webhook_receiver.py");
            let log = dir.join("received.jsonl");
            let mut cmd = Command::new("python3");
            cmd.arg(script).arg(port.to_string()).arg(&log).arg(secret);
            if https {
                cmd.arg("https").arg(dir);
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("python3 with standardwebhooks (installed by scripts/test)");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("receiver output");
            assert_eq!(line.trim(), "ready", "the webhook receiver did not start");
            Receiver {
                child,
                log,
                dir: dir.to_path_buf(),
            }
        }

        /// Every request it got, oldest first.
        fn entries(&self) -> Vec<Value> {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a log line"))
                .collect()
        }

        /// The accepted requests to `path`, once there are `n`.
        fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
            let deadline = Instant::now() + WAIT;
            loop {
                let got: Vec<Value> = self
                    .entries()
                    .into_iter()
                    .filter(|e| e["path"] == path && e["answer"] == 200)
                    .collect();
                if got.len() >= n {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} deliveries to {path} expected, got {:#?}",
                    self.entries()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn body(entry: &Value) -> Value {
        serde_json::from_str(entry["body"].as_str().expect("body")).expect("a JSON body")
    }

    fn types(entries: &[Value]) -> Vec<String> {
        entries
            .iter()
            .map(|e| body(e)["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    fn webhooks_of(env: &Env, run_id: &str) -> Vec<Value> {
        let out = env.run(&["runs", "show", run_id, "--json"]);
        assert_eq!(out.code, 0, "runs show: {out:#?}");
        out.json("runs show")["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Run `run_id`'s deliveries once `ready` holds for them.
    fn wait_webhooks(env: &Env, run_id: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let hooks = webhooks_of(env, run_id);
            if ready(&hooks) {
                return hooks;
            }
            assert!(Instant::now() < deadline, "run {run_id}: {hooks:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn decide(env: &Env, verb: &str, id: &str) -> Value {
        let out = env.run(&["runs", verb, id, "--json"]);
        out.json(verb)
    }

    #[test]
    fn every_state_sends_its_event_signed_and_in_order() {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let env = hook_env(&format!(
            "{}{}",
            webhook_table(&format!("{url}/all"), ""),
            webhook_table(
                &format!("{url}/full"),
                "events = [\"applied\"]\ninclude_changes = \"full\"\npage_size = 8"
            )
        ));
        let dir = tempfile::tempdir().expect("dir");
        let receiver = Receiver::start(dir.path(), port, SECRET, false);
        let server = Server::start(&env);

        let applied = import_cli(&env, "day1.csv", &hr_file(1..=20));
        assert_eq!(applied["state"], "applied");
        assert_eq!(
            import_cli(&env, "day1b.csv", &hr_file(1..=20))["state"],
            "unchanged"
        );
        let held = import_cli(&env, "day2.csv", &hr_file(1..=10));
        assert_eq!(held["state"], "held");
        assert_eq!(
            decide(&env, "reject", &run_id_of(&held))["state"],
            "rejected"
        );
        let held = import_cli(&env, "day2b.csv", &hr_file(1..=10));
        assert_eq!(held["state"], "held");
        let confirmed = decide(&env, "confirm", &run_id_of(&held));
        assert_eq!(confirmed["state"], "applied");
        let undo = decide(&env, "undo", &run_id_of(&confirmed));
        assert_eq!(undo["state"], "applied", "{undo:#}");
        // A failed run is recorded for a file that arrived (the command
        // line's `import` records none).
        let key = keygen(&env, "k");
        add_account(&env, "up", "hr", None, &[&pub_of(&key)], &[]);
        let bad = env.input("nohead.csv", "Name,Email\nAnn,a@example.com\n");
        let put = format!("put {} /upload/nohead.csv\n", bad.display());
        let out = openssh_sftp_key(&env, server.port, "up", &key, &put);
        assert_eq!(out.code, 0, "{out:#?}");

        let all = receiver.wait_for("/all", 8);
        assert_eq!(
            types(&all),
            [
                "run.applied",
                "run.unchanged",
                "run.held",
                "run.rejected",
                "run.held",
                "run.confirmed",
                "run.undone",
                "run.failed"
            ]
        );
        let first = body(&all[0]);
        assert_eq!(first["data"]["feed"], "hr");
        assert_eq!(first["data"]["run_id"], applied["run_id"]);
        assert_eq!(first["data"]["file"], "day1.csv");
        assert_eq!(first["data"]["counts"]["added"], 20);
        assert!(first["data"].get("changes").is_none(), "summary by default");
        assert_eq!(all[0]["content_type"], "application/json");
        let undone = body(&all[6]);
        assert_eq!(undone["data"]["undo_of"], confirmed["run_id"]);
        assert_eq!(body(&all[5])["data"]["state"], "applied");
        assert!(body(&all[3])["data"]["rejected_by"].is_string());

        // The full target: the applied run's 20 additions in 3 pages, in
        // order; the undo (also applied) is `undone`, not sent to it.
        let full = receiver.wait_for("/full", 3);
        let pages: Vec<(u64, u64, usize)> = full
            .iter()
            .map(|e| {
                let data = &body(e)["data"];
                (
                    data["page"].as_u64().unwrap_or(0),
                    data["pages"].as_u64().unwrap_or(0),
                    data["changes"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        assert_eq!(pages, [(1, 3, 8), (2, 3, 8), (3, 3, 4)]);
        assert_eq!(body(&full[0])["data"]["changes"][0]["kind"], "added");

        // At least once, and in normal operation exactly once.
        let entries = receiver.entries();
        let mut ids: Vec<&str> = entries.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids.len(), 11, "{entries:#?}");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 11, "a message was delivered twice: {entries:#?}");

        let shown = wait_webhooks(&env, &run_id_of(&applied), |h| {
            h.len() == 4 && h.iter().all(|w| w["state"] == "delivered")
        });
        assert_eq!(shown[0]["last_status"], 200);
        assert_eq!(shown[0]["event"], "run.applied");
        assert_eq!(shown[0]["url"], format!("http://127.0.0.1:{port}/all"));
        let text = env.run(&["runs", "show", &run_id_of(&applied)]);
        assert!(
            text.stdout.contains(&format!(
                "webhook run.applied to http://127.0.0.1:{port}/all: delivered at"
            )),
            "{}",
            text.stdout
        );
        assert!(text.stdout.contains("(page 3/3)"), "{}", text.stdout);

        // A ping to each target, now.
        let out = env.run(&["webhooks", "test", "--feed", "hr"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(
            out.stdout.matches("delivered: HTTP 200 OK").count(),
            2,
            "{}",
            out.stdout
        );
        let pings: Vec<Value> = receiver
            .entries()
            .into_iter()
            .filter(|e| body(e)["type"] == "ping")
            .collect();
        assert_eq!(pings.len(), 2, "{pings:#?}");
        drop(server);
    }

    #[test]
    fn a_wrong_secret_and_a_redirect_fail_and_say_why() {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let env = hook_env(&format!(
            "{}{}",
            webhook_table(&format!("{url}/in"), ""),
            webhook_table(&format!("{url}/redirect"), "")
        ));
        let dir = tempfile::tempdir().expect("dir");
        let receiver = Receiver::start(dir.path(), port, OTHER_SECRET, false);
        let server = Server::start(&env);
        let run = import_cli(&env, "day1.csv", &hr_file(1..=3));
        let id = run_id_of(&run);
        let hooks = wait_webhooks(&env, &id, |h| {
            h.len() == 2 && h.iter().all(|w| w["state"] == "failing")
        });
        assert_eq!(hooks[0]["last_status"], 401, "{hooks:#?}");
        assert!(
            hooks[0]["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("HTTP 401"),
            "{hooks:#?}"
        );
        assert_eq!(hooks[1]["last_status"], 302, "{hooks:#?}");
        assert!(
            hooks[1]["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("redirects are not followed; configure the final URL"),
            "{hooks:#?}"
        );
        let refused: Vec<Value> = receiver
            .entries()
            .into_iter()
            .filter(|e| e["path"] == "/in")
            .collect();
        assert!(
            refused.iter().all(|e| e["answer"] == 401),
            "the receiver refused the signature: {refused:#?}"
        );
        assert!(
            !receiver.entries().iter().any(|e| e["path"] == "/elsewhere"),
            "the redirect was not followed"
        );
        let doctor = env.run(&["doctor", "--json"]).json("doctor --json");
        let line = doctor["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "feed hr: webhooks"))
            .cloned()
            .unwrap_or_else(|| panic!("a webhooks line: {doctor:#}"));
        assert_eq!(line["status"], "warn", "{line:#}");
        assert!(
            line["detail"]
                .as_str()
                .unwrap_or("")
                .contains("2 not delivered"),
            "{line:#}"
        );
        let out = env.run(&["webhooks", "test", "--feed", "hr"]);
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(
            out.stdout.contains("/in: FAILED: HTTP 401"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("/redirect: FAILED: HTTP 302"),
            "{}",
            out.stdout
        );
        drop(server);
    }

    #[test]
    fn events_wait_for_a_receiver_that_is_down_and_survive_a_restart() {
        let port = free_port();
        let env = hook_env(&webhook_table(&format!("http://127.0.0.1:{port}/in"), ""));
        let dir = tempfile::tempdir().expect("dir");
        let server = Server::start(&env);

        // Nothing listens: the run is recorded, its event waits.
        let run = import_cli(&env, "day1.csv", &hr_file(1..=3));
        assert_eq!(run["state"], "applied");
        let hooks = wait_webhooks(&env, &run_id_of(&run), |h| {
            h.first().is_some_and(|w| w["state"] == "failing")
        });
        assert!(
            hooks[0]["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("cannot connect"),
            "{hooks:#?}"
        );
        let receiver = Receiver::start(dir.path(), port, SECRET, false);
        let got = receiver.wait_for("/in", 1);
        assert_eq!(types(&got), ["run.applied"]);
        drop(receiver);

        // Down again; flagsync stops with the next event pending.
        let second = import_cli(&env, "day2.csv", &hr_file(1..=4));
        wait_webhooks(&env, &run_id_of(&second), |h| {
            h.first().is_some_and(|w| w["state"] == "failing")
        });
        server.stop();
        // A run of the command line while no server runs queues its event
        // too; the server sends it after the older one.
        assert_eq!(
            import_cli(&env, "day3.csv", &hr_file(1..=5))["state"],
            "applied"
        );
        let receiver = Receiver::start(dir.path(), port, SECRET, false);
        let server = Server::start(&env);
        let got = receiver.wait_for("/in", 3);
        assert_eq!(types(&got), ["run.applied", "run.applied", "run.applied"]);
        assert_eq!(body(&got[1])["data"]["file"], "day2.csv");
        assert_eq!(body(&got[2])["data"]["file"], "day3.csv");
        let mut ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3, "{got:#?}");
        drop(server);
    }

    /// Past `retry_for` a message is given up with its last error, and
    /// the receiver's next message goes on.
    #[test]
    fn a_message_failing_past_retry_for_is_given_up_and_the_next_goes_on() {
        let port = free_port();
        let env = hook_env(&webhook_table(
            &format!("http://127.0.0.1:{port}/in"),
            "retry_for = \"2s\"",
        ));
        let dir = tempfile::tempdir().expect("dir");
        let server = Server::start(&env);
        let first = import_cli(&env, "day1.csv", &hr_file(1..=3));
        let hooks = wait_webhooks(&env, &run_id_of(&first), |h| {
            h.first().is_some_and(|w| w["state"] == "gave_up")
        });
        assert!(
            hooks[0]["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("cannot connect"),
            "{hooks:#?}"
        );
        assert!(
            hooks[0]["attempts"].as_u64().unwrap_or(0) >= 2,
            "{hooks:#?}"
        );
        let text = env.run(&["runs", "show", &run_id_of(&first)]).stdout;
        assert!(text.contains("given up after"), "{text}");

        let receiver = Receiver::start(dir.path(), port, SECRET, false);
        import_cli(&env, "day2.csv", &hr_file(1..=4));
        let got = receiver.wait_for("/in", 1);
        assert_eq!(body(&got[0])["data"]["file"], "day2.csv");
        drop(server);
    }

    /// A receiver that takes the connection and never answers holds back
    /// only its own messages; the page, the API and `/metrics` show both.
    #[test]
    fn a_receiver_that_never_answers_delays_no_other() {
        let port = free_port();
        // Connections complete in the kernel's backlog; nothing answers.
        let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent = black_hole.local_addr().expect("address").port();
        let env = hook_env(&format!(
            "{}{}",
            webhook_table(
                &format!("http://127.0.0.1:{silent}/never"),
                "timeout = \"60s\""
            )
            .replace("timeout = \"3s\"\n", ""),
            webhook_table(&format!("http://127.0.0.1:{port}/ok"), "")
        ));
        let dir = tempfile::tempdir().expect("dir");
        let receiver = Receiver::start(dir.path(), port, SECRET, false);
        let web = crate::web::Web::start_in(env);
        let started = Instant::now();
        let first = import_cli(&web.env, "day1.csv", &hr_file(1..=3));
        import_cli(&web.env, "day2.csv", &hr_file(1..=4));
        let got = receiver.wait_for("/ok", 2);
        assert_eq!(types(&got), ["run.applied", "run.applied"]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the silent receiver delayed the other one: {:?}",
            started.elapsed()
        );
        let id = run_id_of(&first);
        let hooks = wait_webhooks(&web.env, &id, |h| {
            h.len() == 2 && h[1]["state"] == "delivered"
        });
        assert_eq!(
            hooks[0]["state"], "queued",
            "its attempt is under way: {hooks:#?}"
        );

        let token = web.create_token();
        let bearer = format!("Authorization: Bearer {token}");
        let (code, _, metrics) = web.curl(&["-H", &bearer, &web.url("/metrics")]);
        assert_eq!(code, 200, "{metrics}");
        for line in [
            "flagsync_webhook_messages{feed=\"hr\",state=\"delivered\"} 2",
            "flagsync_webhook_messages{feed=\"hr\",state=\"queued\"} 2",
            "flagsync_webhook_messages{feed=\"hr\",state=\"gave_up\"} 0",
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
        let (code, _, api) = web.curl(&["-H", &bearer, &web.url(&format!("/api/runs/{id}"))]);
        assert_eq!(code, 200, "{api}");
        let api: Value = serde_json::from_str(&api).expect("json");
        assert_eq!(api["webhooks"][1]["state"], "delivered", "{api:#}");

        let (code, _, _) = web.login(crate::web::ADMIN_PASSWORD);
        assert!(code == 303 || code == 200, "login: {code}");
        let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("Webhook deliveries"), "{page}");
        assert!(
            page.contains(&format!("127.0.0.1:{port}&#x2f;ok")),
            "{page}"
        );
        assert!(page.contains("webhook-delivered"), "{page}");
        drop(black_hole);
    }

    #[test]
    fn https_is_refused_without_the_receivers_ca_and_works_with_it() {
        let port = free_port();
        let dir = tempfile::tempdir().expect("dir");
        let receiver = Receiver::start(dir.path(), port, SECRET, true);
        let ca = receiver.dir.join("ca.pem");
        let url = format!("https://127.0.0.1:{port}");
        let env = hook_env(&format!(
            "{}{}",
            webhook_table(&format!("{url}/plain"), ""),
            webhook_table(
                &format!("{url}/trusted"),
                &format!("ca_file = {}", toml_str(&ca.display().to_string()))
            )
        ));
        let server = Server::start(&env);
        let run = import_cli(&env, "day1.csv", &hr_file(1..=3));
        let got = receiver.wait_for("/trusted", 1);
        assert_eq!(types(&got), ["run.applied"]);
        let hooks = wait_webhooks(&env, &run_id_of(&run), |h| {
            h.len() == 2 && h[0]["state"] == "failing" && h[1]["state"] == "delivered"
        });
        let error = hooks[0]["last_error"].as_str().unwrap_or("");
        assert!(error.contains("certificate"), "{hooks:#?}");
        assert!(hooks[0]["last_status"].is_null(), "{hooks:#?}");
        assert!(
            !receiver.entries().iter().any(|e| e["path"] == "/plain"),
            "nothing was sent over the untrusted connection"
        );
        drop(server);
    }
}
