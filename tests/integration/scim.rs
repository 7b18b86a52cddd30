//! SCIM provisioning against a real third-party SCIM 2.0 server
//! (`scim2-server`, in memory, on loopback), read back with an independent
//! client (`clients/scim_target.py`, plain urllib): a sequence of runs
//! (adds, field changes, removals, group moves, a held run confirmed, an
//! undo) leaves the target equal to the store; a target that is down gets
//! everything once up; `scim sync` repairs a target changed behind
//! flagsync's back (served and stopped); a person the target refuses is
//! marked failed while the rest arrive; and what `flagsync check` refuses.

use crate::util::*;

const TOKEN: &str = "scim-test-token-1";

/// The `hr` feed with `scim` (a `[feed.scim]` table; `TOKEN_FILE` names
/// the token file written here).
fn scim_env(scim: &str) -> Env {
    let env = crate::server::sftp_env_with(&[Feed::hr("hr")], &[], &[]);
    let token = env.root.join("scim.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let scim = scim.replace("TOKEN_FILE", &toml_str(&token.display().to_string()));
    env.write_config(&format!("{text}\n{scim}"));
    env
}

/// `[feed.scim]` for a target at `base`, groups on, and `attributes`
/// (lines of `[feed.scim.attributes]`).
fn scim_table(base: &str, attributes: &str) -> String {
    format!(
        "[feed.scim]\nbase_url = {}\ntoken_file = TOKEN_FILE\ninsecure_http = true\ntimeout = \"3s\"\ngroups = true\n\
         [feed.scim.attributes]\n\"name.givenName\" = \"first_name\"\n\"name.familyName\" = \"last_name\"\n\
         \"emails[work]\" = \"email\"\n\"phoneNumbers[mobile]\" = \"mobile\"\n{attributes}\n",
        toml_str(base)
    )
}

#[test]
fn check_names_each_scim_problem() {
    let env = scim_env(
        "[feed.scim]\nbase_url = \"http://127.0.0.1:9/scim\"\ntoken_file = \"/nonexistent/scim.token\"\n\
         [feed.scim.attributes]\n\"nickName\" = \"first_name\"\n\"emails[work]\" = \"e_mail\"\n",
    );
    let out = env.run(&["check"]);
    assert_eq!(out.code, 2, "{out:#?}");
    for says in [
        "feed 'hr', [feed.scim]: base_url = \"http://127.0.0.1:9/scim\" is not https",
        "insecure_http = true",
        "attribute \"nickName\" is not known; use one of userName",
        "attribute \"emails[work]\" names field 'e_mail', which the feed does not have",
    ] {
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
    }
    // The settings right, the token file is read.
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace("http://127.0.0.1:9/scim", "https://127.0.0.1:9/scim")
        .replace("\"nickName\"", "\"displayName\"")
        .replace("\"e_mail\"", "\"email\"");
    env.write_config(&text);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .contains("feed 'hr', [feed.scim]: token_file /nonexistent/scim.token")
            && out.stderr.contains("bearer token"),
        "{}",
        out.stderr
    );
    let token = env.root.join("scim.token");
    env.write_config(&text.replace("/nonexistent/scim.token", &token.display().to_string()));
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
}

#[cfg(feature = "e2e")]
mod e2e {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::*;
    use crate::mail::{free_port, import_cli};
    use crate::server::*;

    const WAIT: Duration = Duration::from_secs(60);
    const LONG_WAIT: Duration = Duration::from_secs(300);

    /// A running `scim2-server` (in memory) on loopback; its request log
    /// (one line per request, `"POST /Bulk HTTP/1.1" 200`) in `log`.
    struct Target {
        child: Child,
        base: String,
        log: tempfile::NamedTempFile,
    }

    impl Target {
        fn start(port: u16) -> Target {
            let log = tempfile::NamedTempFile::new().expect("log file");
            let child = Command::new("python3")
                .args([
                    "-c",
                    "import sys; from scim2_server.testserver.cli import main; sys.argv[0] = 'scim2-server'; main()",
                    "--hostname",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--bearer-token",
                    TOKEN,
                ])
                .stdout(Stdio::null())
                .stderr(log.reopen().expect("log file"))
                .spawn()
                .expect("python3 with scim2-server (installed by scripts/test)");
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "scim2-server did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            Target {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
            }
        }

        /// Requests the target logged whose line holds `what` (e.g.
        /// `"POST /Bulk `).
        fn requests(&self, what: &str) -> usize {
            std::fs::read_to_string(self.log.path())
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(what))
                .count()
        }

        fn client(&self, args: &[&str]) -> String {
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/integration/clients/scim_target.py");
            let out = Command::new("python3")
                .arg(script)
                .arg(&self.base)
                .arg(TOKEN)
                .args(args)
                .output()
                .expect("scim_target.py");
            assert!(
                out.status.success(),
                "scim_target.py {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// The target's users and groups.
        fn list(&self) -> (Vec<Value>, Vec<Value>) {
            let all: Value = serde_json::from_str(&self.client(&["list"])).expect("list JSON");
            let of = |k: &str| all[k].as_array().cloned().unwrap_or_default();
            (of("users"), of("groups"))
        }
    }

    impl Drop for Target {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn status(env: &Env) -> Value {
        let out = env.run(&["scim", "status", "--feed", "hr", "--json"]);
        assert_eq!(out.code, 0, "{out:#?}");
        out.json("scim status")
    }

    /// Waits until `scim status` says `state`.
    fn wait_state(env: &Env, state: &str) -> Value {
        wait_state_within(env, state, WAIT)
    }

    fn wait_state_within(env: &Env, state: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let now = status(env);
            if now["state"] == state {
                return now;
            }
            assert!(Instant::now() < deadline, "waiting for {state}: {now:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A user as compared: userName, given and family name, work email,
    /// mobile phone, active.
    fn shape(user: &Value) -> Vec<String> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let typed = |key: &str, kind: &str| {
            user[key]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["type"] == kind))
                .map(|e| text(e.get("value")))
                .unwrap_or_default()
        };
        vec![
            text(user.get("userName")),
            text(user.pointer("/name/givenName")),
            text(user.pointer("/name/familyName")),
            typed("emails", "work"),
            typed("phoneNumbers", "mobile"),
            user.get("active")
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ]
    }

    /// The store's people as the target should hold them, and the groups
    /// (department → IDs).
    fn store_view(
        env: &Env,
    ) -> (
        BTreeMap<String, Vec<String>>,
        BTreeMap<String, BTreeSet<String>>,
    ) {
        let out = env.run(&["recipients", "export", "--feed", "hr", "--format", "json"]);
        assert_eq!(out.code, 0, "{out:#?}");
        let mut people = BTreeMap::new();
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in out.json("export").as_array().expect("people") {
            let f = |k: &str| p[k].as_str().unwrap_or("").to_string();
            let id = f("employee_id");
            let mobile = f("mobile");
            people.insert(
                id.clone(),
                vec![
                    id.clone(),
                    f("first_name"),
                    f("last_name"),
                    f("email"),
                    mobile,
                    "true".into(),
                ],
            );
            if !f("department").is_empty() {
                // A group is named after its field's column.
                let group = format!("Department: {}", f("department"));
                groups.entry(group).or_default().insert(id);
            }
        }
        (people, groups)
    }

    /// The target's users by userName (only those `keep` accepts) and its
    /// groups as department → userNames.
    fn target_view(
        target: &Target,
        keep: impl Fn(&Value) -> bool,
    ) -> (
        BTreeMap<String, Vec<String>>,
        BTreeMap<String, BTreeSet<String>>,
    ) {
        let (users, groups) = target.list();
        let names: BTreeMap<String, String> = users
            .iter()
            .map(|u| {
                (
                    u["id"].as_str().unwrap_or("").to_string(),
                    u["userName"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let people = users
            .iter()
            .filter(|u| keep(u))
            .map(|u| (u["userName"].as_str().unwrap_or("").to_string(), shape(u)))
            .collect();
        let groups = groups
            .iter()
            .map(|g| {
                let members = g["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .map(|m| {
                                names
                                    .get(m["value"].as_str().unwrap_or(""))
                                    .cloned()
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (g["displayName"].as_str().unwrap_or("").to_string(), members)
            })
            .collect();
        (people, groups)
    }

    fn assert_target_is_store(env: &Env, target: &Target) {
        let (want_people, want_groups) = store_view(env);
        let (people, groups) = target_view(target, |_| true);
        assert_eq!(people, want_people);
        assert_eq!(groups, want_groups);
    }

    /// Person `i`'s standard row in department `dept`.
    fn moved(i: usize, dept: &str) -> String {
        let row = hr_row(i);
        let at = row.rfind(",Active").expect("status");
        let start = row[..at].rfind(',').expect("department");
        format!("{},{dept},Active", &row[..start])
    }

    fn file_of(rows: &[String]) -> String {
        format!("{HR_HEADER}\n{}\n", rows.join("\n"))
    }

    #[test]
    fn runs_reach_the_target_in_order_and_it_equals_the_store() {
        let target = runs_in_order("");
        // scim2-server announces Bulk: users and group moves went by Bulk.
        assert!(target.requests("\"POST /Bulk ") >= 4, "Bulk requests");
        assert_eq!(target.requests("\"POST /Users "), 0, "no single create");
    }

    #[test]
    fn without_bulk_each_change_is_its_own_request() {
        let target = runs_in_order("bulk = false");
        assert_eq!(target.requests("\"POST /Bulk "), 0);
        assert!(target.requests("\"POST /Users ") >= 21, "one create each");
        assert!(target.requests("\"PATCH /Groups/") >= 21, "one move each");
    }

    /// Adds, field changes, removals and group moves, a held run confirmed
    /// and an undo, the target down at first: it ends equal to the store.
    fn runs_in_order(settings: &str) -> Target {
        let port = free_port();
        let table = scim_table(&format!("http://127.0.0.1:{port}"), "")
            .replace("groups = true\n", &format!("groups = true\n{settings}\n"));
        let env = scim_env(&table);
        // The target is down at first: everything arrives once it is up.
        let server = Server::start(&env);
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=20))["state"],
            "applied"
        );
        let failing = wait_state(&env, "failing");
        assert!(
            failing["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("cannot connect"),
            "{failing:#}"
        );
        let feeds = env.run(&["feeds"]);
        assert!(
            feeds
                .stdout
                .contains("SCIM target: failing (20 changes behind)"),
            "{}",
            feeds.stdout
        );

        // Changes: 3's email and 4's department, 21 added in a new group,
        // 5 removed.
        let mut rows: Vec<String> = (1..=21).filter(|i| *i != 5).map(hr_row).collect();
        rows[2] = rows[2].replace("user3@example.com", "third@example.com");
        rows[3] = moved(4, "Legal");
        rows[19] = moved(21, "Board");
        assert_eq!(
            import_cli(&env, "day2.csv", &file_of(&rows))["state"],
            "applied"
        );
        let target = Target::start(port);
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);

        // The Board's only member leaves: the group goes too.
        rows.remove(19);
        assert_eq!(
            import_cli(&env, "day3.csv", &file_of(&rows))["state"],
            "applied"
        );
        // A held run (half the people removed), confirmed; then undone.
        let held = import_cli(&env, "day4.csv", &file_of(&rows[..8]));
        assert_eq!(held["state"], "held");
        let confirmed = env
            .run(&["runs", "confirm", &run_id_of(&held), "--json"])
            .json("confirm");
        assert_eq!(confirmed["state"], "applied");
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);
        let (_, groups) = target_view(&target, |_| true);
        assert!(!groups.contains_key("Department: Board"), "{groups:?}");
        let undo = env
            .run(&["runs", "undo", &run_id_of(&confirmed), "--json"])
            .json("undo");
        assert_eq!(undo["state"], "applied", "{undo:#}");
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);
        let (people, _) = target_view(&target, |_| true);
        assert_eq!(people.len(), 19);

        let metrics = env.run(&["scim", "status", "--feed", "hr"]);
        assert!(
            metrics.stdout.contains("SCIM target in sync"),
            "{metrics:#?}"
        );
        server.stop();
        target
    }

    #[test]
    fn a_long_backlog_goes_users_first_then_each_group_whole() {
        let port = free_port();
        let target = Target::start(port);
        let env = scim_env(&scim_table(&target.base, ""));
        let server = Server::start(&env);
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=10_000))["state"],
            "applied"
        );
        // 10,000 people: minutes on a loaded CI machine.
        wait_state_within(&env, "in_sync", LONG_WAIT);
        assert_target_is_store(&env, &target);
        // Ten pages of users by Bulk, no group moves among them: each
        // group put once, whole.
        assert_eq!(target.requests("\"POST /Bulk "), 10);
        let groups = store_view(&env).1.len();
        assert_eq!(target.requests("\"POST /Groups "), groups);
        assert_eq!(status(&env)["groups_pending"], false);

        // A short backlog moves memberships again: a PATCH per group, or
        // a PUT of a group that loses many (300 people leave).
        let mut rows: Vec<String> = (1..=10_000).map(hr_row).collect();
        rows[0] = moved(1, "Legal");
        rows.truncate(9_700);
        assert_eq!(
            import_cli(&env, "day2.csv", &file_of(&rows))["state"],
            "applied"
        );
        wait_state_within(&env, "in_sync", LONG_WAIT);
        assert_target_is_store(&env, &target);
        assert_eq!(target.requests("\"POST /Bulk "), 11, "the users");
        assert!(target.requests("\"PATCH /Groups/") >= 1, "Legal joined");
        assert!(target.requests("\"PUT /Groups/") >= 1, "a group put whole");
        server.stop();
    }

    #[test]
    fn a_feeds_hanging_target_does_not_hold_up_another_feeds() {
        // The `slow` feed's target accepts connections and never answers.
        let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let hang_port = hang.local_addr().expect("port").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in hang.incoming().flatten() {
                held.push(stream);
            }
        });
        let port = free_port();
        let target = Target::start(port);
        let slow = Feed::hr("slow").extra(&format!(
            "scim = {{ base_url = \"http://127.0.0.1:{hang_port}\", token_file = TOKEN_FILE, insecure_http = true, timeout = \"120s\" }}"
        ));
        let env = crate::server::sftp_env_with(&[slow, Feed::hr("hr")], &[], &[]);
        let token = env.root.join("scim.token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
        let text = std::fs::read_to_string(&env.config).expect("config");
        let table = scim_table(&target.base, "");
        let text = format!("{text}\n{table}")
            .replace("TOKEN_FILE", &toml_str(&token.display().to_string()));
        env.write_config(&text);
        let server = Server::start(&env);

        let file = env.input("slow.csv", hr_file(1..=5));
        let out = env.run(&[
            "import",
            "--feed",
            "slow",
            file.to_str().expect("path"),
            "--json",
        ]);
        assert_eq!(out.json("import")["state"], "applied", "{out:#?}");
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=20))["state"],
            "applied"
        );
        wait_state(&env, "in_sync");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hr waited {:?} for the slow feed's target",
            started.elapsed()
        );
        assert_target_is_store(&env, &target);
        let slow = env.run(&["scim", "status", "--feed", "slow", "--json"]);
        assert_eq!(slow.json("scim status")["state"], "behind", "{slow:#?}");
        server.stop();
    }

    #[test]
    fn scim_sync_repairs_a_target_changed_behind_flagsyncs_back() {
        let port = free_port();
        let target = Target::start(port);
        let env = scim_env(&scim_table(&target.base, ""));
        // Imported before any server ran: the target was never synced
        // while the feed had people, so it needs a full sync.
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=8))["state"],
            "applied"
        );
        let server = Server::start(&env);
        wait_state(&env, "needs_full_sync");
        let feeds = env.run(&["feeds"]);
        assert!(
            feeds
                .stdout
                .contains("needs a full sync: run `flagsync scim sync --feed hr`"),
            "{}",
            feeds.stdout
        );
        let out = env.run(&["scim", "sync", "--feed", "hr", "--json"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(out.json("sync")["created"], 8);
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);

        // Behind flagsync's back: a user deleted, an email changed, a
        // duplicate with one of our externalIds, and users of others.
        target.client(&["delete", &hr_id(2)]);
        target.client(&["set-email", &hr_id(3), "changed@elsewhere.org"]);
        let user = |name: &str, ext: Option<&str>| {
            let mut u = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
            if let Some(ext) = ext {
                u["externalId"] = ext.into();
            }
            u.to_string()
        };
        target.client(&["create", &user("impostor", Some(&hr_id(4)))]);
        target.client(&["create", &user("someone-else", Some("CRM-77"))]);
        target.client(&["create", &user("no-external-id", None)]);
        let out = env.run(&["scim", "sync", "--feed", "hr", "--json"]);
        assert_eq!(out.code, 0, "{out:#?}");
        let report = out.json("sync");
        assert_eq!(
            (
                report["created"].as_u64(),
                report["replaced"].as_u64(),
                report["removed"].as_u64()
            ),
            (Some(1), Some(1), Some(1)),
            "{report:#}"
        );
        let others = ["someone-else", "no-external-id"];
        let (want_people, want_groups) = store_view(&env);
        let (people, groups) = target_view(&target, |u| {
            !others.contains(&u["userName"].as_str().unwrap_or(""))
        });
        assert_eq!(people, want_people);
        assert_eq!(groups, want_groups);
        let (all, _) = target_view(&target, |_| true);
        assert!(
            others.iter().all(|o| all.contains_key(*o)),
            "others' users are never touched: {all:?}"
        );
        server.stop();

        // With the server stopped, the command runs here.
        target.client(&["delete", &hr_id(5)]);
        let out = env.run(&["scim", "sync", "--feed", "hr"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert!(out.stdout.contains("1 created"), "{}", out.stdout);
        let (people, _) = target_view(&target, |u| {
            !others.contains(&u["userName"].as_str().unwrap_or(""))
        });
        assert_eq!(people, want_people);
    }

    #[test]
    fn a_person_the_target_refuses_is_marked_failed_and_the_rest_arrive() {
        let port = free_port();
        let target = Target::start(port);
        // `active` from Status: "Maybe" is sent as written; the target
        // answers 400 for that one person.
        let env = scim_env(&scim_table(&target.base, "\"active\" = \"status\""));
        let server = Server::start(&env);
        let mut rows: Vec<String> = (1..=5).map(hr_row).collect();
        rows[2] = rows[2].replace(",Active", ",Maybe");
        assert_eq!(
            import_cli(&env, "day1.csv", &file_of(&rows))["state"],
            "applied"
        );
        let state = wait_state(&env, "in_sync");
        let failure = state["failures"][hr_id(3)]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(failure.contains("400"), "{state:#}");
        let (people, _) = target_view(&target, |_| true);
        let names: Vec<&String> = people.keys().collect();
        assert_eq!(names, [&hr_id(1), &hr_id(2), &hr_id(4), &hr_id(5)]);
        let doctor = env.run(&["doctor"]);
        assert!(
            doctor.stdout.contains("feed hr: SCIM")
                && doctor.stdout.contains("1 person refused by the target"),
            "{}",
            doctor.stdout
        );
        let shown = env.run(&["scim", "status", "--feed", "hr"]);
        assert!(
            shown
                .stdout
                .contains(&format!("refused: {}: POST /Users: HTTP 400", hr_id(3))),
            "{}",
            shown.stdout
        );

        // Fixed in the next file: it arrives, the failure is cleared.
        rows[2] = hr_row(3);
        assert_eq!(
            import_cli(&env, "day2.csv", &file_of(&rows))["state"],
            "applied"
        );
        let deadline = Instant::now() + WAIT;
        while status(&env)["failures"]
            .as_object()
            .is_some_and(|f| !f.is_empty())
        {
            assert!(Instant::now() < deadline, "{:#}", status(&env));
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);
        server.stop();
    }

    #[test]
    fn the_page_and_metrics_show_the_targets_state() {
        let port = free_port();
        let env = scim_env(&scim_table(&format!("http://127.0.0.1:{port}"), ""));
        let web = crate::web::Web::start_in(env);
        let token = web.create_token();
        assert_eq!(
            import_cli(&web.env, "day1.csv", &hr_file(1..=20))["state"],
            "applied"
        );
        wait_state(&web.env, "failing");
        let (code, _, _) = web.login(crate::web::ADMIN_PASSWORD);
        assert!(code == 303 || code == 302, "login: {code}");
        let (code, _, page) = web.curl(&[&web.url("/")]);
        assert_eq!(code, 200);
        assert!(
            page.contains("scim-failing")
                && page.contains(
                    "failing (20 changes behind): GET &#x2f;ServiceProviderConfig: cannot connect"
                ),
            "{page}"
        );
        let metrics = |web: &crate::web::Web| {
            let (code, _, body) = web.curl(&[
                "-H",
                &format!("Authorization: Bearer {token}"),
                &web.url("/metrics"),
            ]);
            assert_eq!(code, 200, "{body}");
            body
        };
        assert!(
            metrics(&web).contains("flagsync_scim_changes_behind{feed=\"hr\"} 20"),
            "{}",
            metrics(&web)
        );

        let target = Target::start(port);
        wait_state(&web.env, "in_sync");
        assert_target_is_store(&web.env, &target);
        let (_, _, page) = web.curl(&[&web.url("/")]);
        assert!(page.contains("scim-in_sync"), "{page}");
        let body = metrics(&web);
        assert!(
            body.contains("flagsync_scim_changes_behind{feed=\"hr\"} 0"),
            "{body}"
        );
        assert!(
            body.contains("flagsync_scim_failed_users{feed=\"hr\"} 0"),
            "{body}"
        );
        let requests = body
            .lines()
            .find_map(|l| l.strip_prefix("flagsync_scim_requests_total{feed=\"hr\"} "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .expect("flagsync_scim_requests_total");
        // Attempts while it was down, then discovery and a few Bulk requests.
        assert!(requests >= 2.0, "{body}");
    }

    #[test]
    fn deactivate_keeps_a_removed_person_inactive_and_a_return_reactivates() {
        let port = free_port();
        let target = Target::start(port);
        let table = scim_table(&target.base, "").replace(
            "groups = true\n",
            "groups = true\nscim_remove = \"deactivate\"\n",
        );
        let env = scim_env(&table);
        let server = Server::start(&env);
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=20))["state"],
            "applied"
        );
        wait_state(&env, "in_sync");
        assert_eq!(
            import_cli(&env, "day2.csv", &hr_file(1..=19))["state"],
            "applied"
        );
        wait_state(&env, "in_sync");
        let (users, groups) = target.list();
        let gone = users
            .iter()
            .find(|u| u["userName"] == hr_id(20).as_str())
            .expect("kept, inactive");
        assert_eq!(gone["active"], false, "{gone:#}");
        let gone_id = gone["id"].as_str().unwrap_or("");
        assert!(
            groups.iter().all(|g| g["members"]
                .as_array()
                .is_none_or(|m| m.iter().all(|m| m["value"] != gone_id))),
            "{groups:#?}"
        );
        assert_eq!(
            import_cli(&env, "day3.csv", &hr_file(1..=20))["state"],
            "applied"
        );
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);
        let (users, _) = target.list();
        assert_eq!(users.len(), 20, "the same user came back");
        server.stop();
    }

    #[test]
    fn a_backlog_past_the_change_logs_retention_needs_a_full_sync() {
        let port = free_port();
        let target = Target::start(port);
        let env = crate::server::sftp_env_with(
            &[Feed::hr("hr")],
            &["retention = \"1s\"", "history_retention = \"1s\""],
            &[],
        );
        let token = env.root.join("scim.token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
        let text = std::fs::read_to_string(&env.config).expect("config");
        let table = scim_table(&target.base, "")
            .replace("TOKEN_FILE", &toml_str(&token.display().to_string()));
        env.write_config(&format!("{text}\n{table}"));
        let server = Server::start(&env);
        assert_eq!(
            import_cli(&env, "day1.csv", &hr_file(1..=6))["state"],
            "applied"
        );
        wait_state(&env, "in_sync");
        // The target goes away while the next changes wait, longer than
        // the change log keeps them.
        drop(target);
        assert_eq!(
            import_cli(&env, "day2.csv", &hr_file(1..=7))["state"],
            "applied"
        );
        wait_state(&env, "failing");
        server.stop();
        std::thread::sleep(Duration::from_millis(2500));
        let target = Target::start(port);
        let server = Server::start(&env);
        wait_state(&env, "needs_full_sync");
        let out = env.run(&["scim", "sync", "--feed", "hr", "--json"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(out.json("sync")["created"], 7, "a new, empty target");
        wait_state(&env, "in_sync");
        assert_target_is_store(&env, &target);
        server.stop();
    }
}
