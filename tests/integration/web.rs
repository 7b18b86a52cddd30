//! The status page over real HTTP (curl) and in headless Chromium: login
//! with CSRF, sessions, security headers, health, and bad requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::server::*;
use crate::util::*;

pub(crate) const ADMIN: &str = "boss";
pub(crate) const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// A server with the `hr` feed and one administrator; its page's base URL.
pub(crate) struct Web {
    pub(crate) env: Env,
    pub(crate) server: Server,
    pub(crate) base: String,
    pub(crate) jar: PathBuf,
}

impl Web {
    pub(crate) fn start() -> Web {
        Web::start_in(sftp_env())
    }

    /// A server on `env` with one administrator.
    pub(crate) fn start_in(env: Env) -> Web {
        let out = run_with_stdin(
            &env,
            &["admins", "add", ADMIN, "--password-stdin"],
            &format!("{ADMIN_PASSWORD}\n"),
        );
        assert_eq!(out.code, 0, "{out:#?}");
        Web::serve(env)
    }

    /// Starts the server on `env` as it is.
    fn serve(env: Env) -> Web {
        let server = Server::start(&env);
        let base = server
            .stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix("web: listening on ").map(str::to_string))
            .unwrap_or_else(|| panic!("no web line: {}", server.context()));
        let jar = env.root.join("cookies.txt");
        Web {
            env,
            server,
            base,
            jar,
        }
    }

    /// Stops the server (SIGTERM, a clean exit) and starts it again on
    /// the same data folder; the web port may change.
    pub(crate) fn restart(self) -> Web {
        let Web { env, server, .. } = self;
        server.stop();
        Web::serve(env)
    }

    /// curl with the cookie jar; returns (status, headers, body).
    pub(crate) fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let headers = self.env.root.join(format!("headers-{}.txt", unique()));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-D"])
            .arg(&headers)
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(args);
        let out = run_tool(cmd, "curl", None, TOOL_TIMEOUT);
        assert_eq!(out.code, 0, "curl {args:?}: {out:#?}");
        let (body, code) = out.stdout.rsplit_once('\n').expect("status line");
        let code: u16 = code.trim().parse().expect("status code");
        let headers = std::fs::read_to_string(&headers).unwrap_or_default();
        (code, headers, body.to_string())
    }

    /// A new API token of the administrator (`flagsync admins token create`).
    pub(crate) fn create_token(&self) -> String {
        let out = self.env.run(&["admins", "token", "create", ADMIN]);
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .expect("the token")
            .to_string()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The CSRF token of the login form (sets the pre-login cookie).
    fn login_token(&self) -> String {
        let (code, _, body) = self.curl(&[&self.url("/login")]);
        assert_eq!(code, 200);
        csrf_in(&body)
    }

    pub(crate) fn login(&self, password: &str) -> (u16, String, String) {
        let token = self.login_token();
        self.curl(&[
            "--data-urlencode",
            &format!("csrf={token}"),
            "--data-urlencode",
            &format!("name={ADMIN}"),
            "--data-urlencode",
            &format!("password={password}"),
            &self.url("/login"),
        ])
    }
}

pub(crate) fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

fn header_line<'h>(headers: &'h str, name: &str) -> Vec<&'h str> {
    headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .collect()
}

#[test]
fn health_headers_and_login_with_csrf() {
    let web = Web::start();
    let (code, headers, body) = web.curl(&[&web.url("/healthz")]);
    assert_eq!((code, body.trim()), (200, "ok"));
    // `flagsync health` (the container's health check) asks the same.
    let out = web.env.run(&["health", &web.url("/healthz")]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "healthy: ok"),
        "{out:#?}"
    );
    let out = web.env.run(&["health", "http://127.0.0.1:9/healthz"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.starts_with("unhealthy"), "{out:#?}");
    for h in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert_eq!(header_line(&headers, h).len(), 1, "{h} in {headers}");
    }
    assert!(headers.contains("frame-ancestors 'none'"));
    assert!(
        header_line(&headers, "strict-transport-security").is_empty(),
        "no HSTS over plain HTTP: {headers}"
    );

    // Not logged in: the page sends to the login form.
    let (code, headers, _) = web.curl(&[&web.url("/")]);
    assert_eq!(code, 303, "{headers}");
    assert!(
        headers.to_lowercase().contains("location: /login"),
        "{headers}"
    );

    // A login without the form's token is refused.
    let (code, _, _) = web.curl(&[
        "-d",
        &format!("csrf=00&name={ADMIN}&password={ADMIN_PASSWORD}"),
        &web.url("/login"),
    ]);
    assert_eq!(code, 403);
    // A wrong password.
    let (code, _, body) = web.login("wrong-password");
    assert_eq!(code, 401);
    assert!(body.contains("Wrong name or password"));
    // The right one: a session cookie, HttpOnly and SameSite=Strict.
    let (code, headers, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303, "{headers}");
    let cookie = header_line(&headers, "set-cookie")
        .into_iter()
        .find(|l| l.contains("flagsync_session="))
        .unwrap_or_else(|| panic!("no session cookie: {headers}"))
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let (code, headers, body) = web.curl(&[&web.url("/")]);
    assert_eq!(code, 200);
    assert!(
        body.contains("<h2>hr <span class=\"badge badge-new\">New</span></h2>"),
        "{body}"
    );
    assert_eq!(
        header_line(&headers, "cache-control"),
        ["cache-control: no-store"]
    );

    // Logging out needs the session's CSRF token.
    let (code, _, _) = web.curl(&["-d", "csrf=nope", &web.url("/logout")]);
    assert_eq!(code, 403);
    let token = csrf_in(&body);
    let (code, _, _) = web.curl(&["-d", &format!("csrf={token}"), &web.url("/logout")]);
    assert_eq!(code, 303);
    let (code, _, _) = web.curl(&[&web.url("/")]);
    assert_eq!(code, 303, "logged out");
    drop(web.server);
}

#[test]
fn bad_requests_get_a_clear_4xx() {
    let web = Web::start();
    let token = web.login_token();
    let big = "x".repeat(64 * 1024);
    let (code, _, _) = web.curl(&[
        "--data-urlencode",
        &format!("csrf={token}"),
        "--data-urlencode",
        &format!("name={big}"),
        "--data-urlencode",
        "password=x",
        &web.url("/login"),
    ]);
    assert_eq!(code, 413, "an oversized form");
    let (code, _, _) = web.curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"name\":\"x\"}",
        &web.url("/login"),
    ]);
    assert_eq!(code, 415, "a wrong content type");
    let (code, _, _) = web.curl(&["-d", "csrf=%zz&&&=", &web.url("/login")]);
    assert!((400..500).contains(&code), "a malformed form: {code}");
    let (code, _, _) = web.curl(&[&web.url("/no/such/page?x=%%%")]);
    assert_eq!(code, 404);
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

/// Where screenshots go: `target/test-output/` (kept after the run).
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).expect("test output dir");
    dir
}

#[test]
fn the_login_page_renders_in_headless_chromium() {
    let web = Web::start();
    let shot = screenshot_dir().join("login.png");
    let _ = std::fs::remove_file(&shot);
    let profile = web.env.root.join("chromium-profile");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=900,600",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--screenshot={}", shot.display()))
    .arg(web.url("/login"));
    let out = run_tool(cmd, "chromium --screenshot", None, Duration::from_secs(90));
    assert_eq!(out.code, 0, "{out:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    drop(web.server);
}

#[test]
fn in_chromium_an_admin_sees_a_held_run_and_who_it_would_remove_and_confirms_it() {
    let web = Web::start();
    let mut day1 = hr_file(1..=20);
    day1 += "E99,Bad,Mail,bob@,,,Sales,Active\n";
    let run = import_via_cli(&web.env, "day1.csv", &day1);
    assert_eq!(run["state"], "applied");
    let day1_id = run_id_of(&run);
    let held = import_via_cli(&web.env, "day2.csv", &hr_file(1..=12));
    assert_eq!(held["state"], "held");
    let id = run_id_of(&held);
    let key = keygen(&web.env, "web-key");
    add_account(
        &web.env,
        "web-up",
        "hr",
        None,
        &[&pub_of(&key)],
        &["127.0.0.1/32"],
    );

    let shots = screenshot_dir().join("held-run");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/browser.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(&web.base)
        .arg(ADMIN)
        .arg(ADMIN_PASSWORD)
        .arg(&id)
        .arg(&shots)
        .arg(&day1_id);
    let out = run_tool(cmd, "selenium + chromium", None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{out:#?}");
    let seen: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert!(
        seen["dashboard_text"]
            .as_str()
            .unwrap_or("")
            .contains("Held run waiting"),
        "{seen:#}"
    );
    assert!(
        seen["held_title"].as_str().unwrap_or("").contains("held"),
        "{seen:#}"
    );
    let rows: Vec<&str> = seen["would_remove"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(rows.len(), 8, "E13..E20 would be removed: {rows:?}");
    assert!(rows.iter().any(|r| r.starts_with(&hr_id(13))), "{rows:?}");
    assert!(
        seen["after_title"]
            .as_str()
            .unwrap_or("")
            .contains("applied"),
        "{seen:#}"
    );
    assert!(
        seen["after_text"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("by {ADMIN}")),
        "{seen:#}"
    );
    // Searching the recipients: by name, then filtered, then one opened.
    let search: Vec<&str> = seen["search_rows"]
        .as_array()
        .expect("search rows")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let ids: Vec<&str> = search.iter().filter_map(|r| r.split(' ').next()).collect();
    assert_eq!(ids, [hr_id(1), hr_id(10), hr_id(11), hr_id(12)], "{seen:#}");
    assert_eq!(seen["search_count"], "4 recipients match.", "{seen:#}");
    let filtered: Vec<&str> = seen["filtered_rows"]
        .as_array()
        .expect("filtered rows")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(filtered.len(), 1, "only E00012 is in Sales: {filtered:?}");
    assert!(filtered[0].starts_with(&hr_id(12)), "{filtered:?}");
    let person = seen["recipient_text"].as_str().unwrap_or("");
    assert!(
        person.contains("user12@example.com") && person.contains("Department: Sales"),
        "{person}"
    );
    assert_eq!(seen["phone_width"], true, "the search page fits a phone");
    for shot in [
        "01-login",
        "02-dashboard",
        "03-held-run",
        "04-confirmed",
        "05-runs",
        "09-search",
        "10-search-filtered",
        "11-recipient",
        "12-search-phone",
        "13-run-with-errors",
    ] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{shot}");
    }

    // The store changed: confirmed by the admin, 12 people left.
    let shown = web
        .env
        .run(&["runs", "show", &id, "--json"])
        .json("runs show");
    assert_eq!(shown["state"], "applied");
    assert_eq!(shown["confirmed_by"], ADMIN);
    assert_eq!(web.env.exported_ids("hr").len(), 12);

    // The first run's error report, downloaded by Chromium from its page.
    let report_path = web.env.error_report_path("hr", "day1.csv");
    let report = std::fs::read_to_string(&report_path).expect("report");
    assert_eq!(
        seen["downloaded_name"].as_str(),
        report_path.file_name().and_then(|n| n.to_str()),
        "{seen:#}"
    );
    assert_eq!(
        seen["downloaded"].as_str().unwrap_or("").trim_end(),
        report.trim_end()
    );
    assert!(report.contains("E99"), "{report}");
    // And through curl, with its headers.
    let (code, _, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303);
    let (code, headers, body) = web.curl(&[&web.url(&format!("/runs/{day1_id}/errors.csv"))]);
    assert_eq!(code, 200, "{headers}");
    assert!(
        headers
            .to_lowercase()
            .contains("content-disposition: attachment"),
        "{headers}"
    );
    assert_eq!(body.trim_end(), report.trim_end());
    drop(web.server);
}

#[test]
fn confirm_and_reject_need_a_session_and_its_csrf_token() {
    let web = Web::start();
    assert_eq!(
        import_via_cli(&web.env, "a.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    let held = import_via_cli(&web.env, "b.csv", &hr_file(1..=5));
    let id = run_id_of(&held);
    let (code, _, _) = web.curl(&["-d", "csrf=x", &web.url(&format!("/runs/{id}/reject"))]);
    assert_eq!(code, 401, "no session");
    web.login(ADMIN_PASSWORD);
    let (code, _, _) = web.curl(&["-d", "csrf=x", &web.url(&format!("/runs/{id}/reject"))]);
    assert_eq!(code, 403, "a wrong CSRF token");
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
    assert_eq!(code, 200);
    let token = csrf_in(&page);
    let (code, _, _) = web.curl(&[
        "-d",
        &format!("csrf={token}"),
        &web.url(&format!("/runs/{id}/reject")),
    ]);
    assert_eq!(code, 303);
    let shown = web
        .env
        .run(&["runs", "show", &id, "--json"])
        .json("runs show");
    assert_eq!(shown["state"], "rejected");
    assert_eq!(shown["rejected_by"], ADMIN);
    // Deciding again is a clear conflict; unknown and malformed IDs are 4xx.
    let (code, _, _) = web.curl(&[
        "-d",
        &format!("csrf={token}"),
        &web.url(&format!("/runs/{id}/confirm")),
    ]);
    assert_eq!(code, 409);
    let (code, _, _) = web.curl(&[&web.url("/runs/99999")]);
    assert_eq!(code, 404);
    let (code, _, _) = web.curl(&[&web.url("/runs/abc")]);
    assert_eq!(code, 400);
    let (code, _, _) = web.curl(&[&web.url(&format!("/runs/{id}?page=999999999999999999999"))]);
    assert_eq!(code, 400);
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

pub(crate) fn import_via_cli(env: &Env, name: &str, content: &str) -> serde_json::Value {
    let path = env.input(name, content);
    env.run(&[
        "import",
        "--feed",
        "hr",
        path.to_str().expect("path"),
        "--json",
    ])
    .json("import")
}

/// The value of `filename="…"` in a Content-Disposition header (its
/// escapes undone).
fn download_name(headers: &str) -> String {
    let line = content_disposition(headers);
    let at = line.find("filename=\"").expect("a filename") + 10;
    let mut name = String::new();
    let mut chars = line[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return name,
            '\\' => name.extend(chars.next()),
            c => name.push(c),
        }
    }
    panic!("an unterminated filename: {line}")
}

fn content_disposition(headers: &str) -> String {
    header_line(headers, "content-disposition")
        .first()
        .map(|l| l.to_string())
        .unwrap_or_else(|| panic!("no content-disposition: {headers}"))
}

/// The value of `filename*=UTF-8''…` in a Content-Disposition header,
/// decoded.
fn download_name_utf8(headers: &str) -> String {
    let line = content_disposition(headers);
    let at = line.find("filename*=UTF-8''").expect("a filename*") + 17;
    let encoded = line[at..].trim_end().split(';').next().unwrap_or("");
    let bytes = encoded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn each_run_downloads_its_own_error_report_a_failed_upload_too() {
    let web = Web::start();
    // The same file name on two days, other bad rows each time.
    let mut days = Vec::new();
    for bad in ["E901", "E902"] {
        let mut content = hr_file(1..=20);
        content += &format!("{bad},Bad,Mail,bob@,,,Sales,Active\n");
        let run = import_via_cli(&web.env, "daily.csv", &content);
        assert_eq!(run["flagged"], 1, "{run:#}");
        days.push((run_id_of(&run), bad));
    }
    // A file without its ID column, uploaded over sFTP: a failed run.
    let key = keygen(&web.env, "up-key");
    add_account(&web.env, "up", "hr", None, &[&pub_of(&key)], &[]);
    let bad = web.env.input("noid.csv", "Name,Email\nAnn,a@example.com\n");
    let out = openssh_sftp_key(
        &web.env,
        web.server.port,
        "up",
        &key,
        &format!("put {} /upload/noid.csv\n", bad.display()),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let runs = web.server.wait_for_exactly(&web.env, 3, RUN_TIMEOUT);
    let failed = runs
        .iter()
        .find(|r| r["state"] == "failed")
        .expect("failed run");
    let failed_id = run_id_of(failed);

    web.login(ADMIN_PASSWORD);
    let download = |id: &str| {
        let (code, headers, body) = web.curl(&[&web.url(&format!("/runs/{id}/errors.csv"))]);
        assert_eq!(code, 200, "run {id}: {headers}{body}");
        let path = web.env.run_show(id)["error_report"]
            .as_str()
            .expect("error_report")
            .to_string();
        let on_disk = std::fs::read_to_string(&path).expect("report");
        assert_eq!(body, on_disk, "run {id}: the download is its own report");
        assert!(body.starts_with('\u{feff}'), "a BOM: {body:?}");
        assert_eq!(
            download_name(&headers),
            Path::new(&path).file_name().unwrap().to_str().unwrap()
        );
        body
    };
    for (id, bad) in &days {
        let body = download(id);
        let rows = csv_records(body.trim_start_matches('\u{feff}').as_bytes(), b',');
        let ids: Vec<&str> = rows[1..].iter().map(|(_, r)| r[2].as_str()).collect();
        assert_eq!(ids, [*bad], "run {id}: {body}");
    }
    let body = download(&failed_id);
    assert!(
        body.starts_with("\u{feff}line,reasons,Name,Email\n,\"the whole file was rejected"),
        "{body:?}"
    );
    assert!(body.contains("Employee ID"), "{body}");
}

#[test]
fn the_json_api_needs_a_session_or_a_token_and_answers_every_endpoint() {
    let web = Web::start();
    let mut day1 = hr_file(1..=20);
    day1 += "E99,Bad,Mail,bob@,,,Sales,Active\n";
    assert_eq!(
        import_via_cli(&web.env, "day1.csv", &day1)["state"],
        "applied"
    );
    let held = import_via_cli(&web.env, "day2.csv", &hr_file(1..=10));
    let held_id = run_id_of(&held);

    for path in [
        "/api/feeds",
        "/api/runs",
        "/api/runs/1",
        "/api/runs/1/errors",
    ] {
        let (code, _, body) = web.curl(&[&web.url(path)]);
        assert_eq!(code, 401, "{path} without login: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(v["error"].is_string(), "{body}");
    }

    let token = web.create_token();
    let bearer = format!("Authorization: Bearer {token}");
    let api = |path: &str| {
        let (code, _, body) = web.curl(&["-H", &bearer, &web.url(path)]);
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (code, feeds) = api("/api/feeds");
    assert_eq!(code, 200);
    assert_eq!(feeds[0]["feed"], "hr");
    assert_eq!(feeds[0]["held_runs"][0].to_string(), held_id);
    let (code, runs) = api("/api/runs?feed=hr");
    assert_eq!(code, 200);
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
    let (code, held_runs) = api("/api/runs?state=held");
    assert_eq!(code, 200);
    assert_eq!(held_runs.as_array().map(Vec::len), Some(1));
    let (code, run) = api("/api/runs/1");
    assert_eq!((code, run["state"].as_str()), (200, Some("applied")));
    let (code, errors) = api("/api/runs/1/errors");
    assert_eq!(code, 200);
    assert_eq!(errors["errors"][0]["line"], 22, "{errors:#}");
    assert_eq!(errors["error_report"], "/runs/1/errors.csv");
    assert_eq!(api("/api/runs/999").0, 404);
    assert_eq!(api("/api/runs/x").0, 400);
    assert_eq!(api("/api/runs?state=bogus").0, 400);
    assert_eq!(api("/api/runs?feed=nope").0, 404);
    assert_eq!(api("/api/runs?limit=-1").0, 400);

    // A revoked token no longer works.
    let listed = web
        .env
        .run(&["admins", "token", "list", "--json"])
        .json("token list");
    let id = listed[0]["id"].as_str().expect("token id").to_string();
    assert_eq!(web.env.run(&["admins", "token", "revoke", &id]).code, 0);
    assert_eq!(api("/api/feeds").0, 401);

    // The page's session works too.
    web.login(ADMIN_PASSWORD);
    let (code, _, _) = web.curl(&[&web.url("/api/feeds")]);
    assert_eq!(code, 200);
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

#[test]
fn the_api_confirms_and_rejects_with_a_token_or_a_session_and_its_csrf_header() {
    let web = Web::start();
    assert_eq!(
        import_via_cli(&web.env, "a.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    let first = run_id_of(&import_via_cli(&web.env, "b.csv", &hr_file(1..=10)));
    let token = web.create_token();
    let bearer = format!("Authorization: Bearer {token}");

    // Without credentials nothing happens.
    let (code, _, _) = web.curl(&["-X", "POST", &web.url(&format!("/api/runs/{first}/reject"))]);
    assert_eq!(code, 401);
    // With the token: rejected, by the token's administrator.
    let (code, _, body) = web.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &web.url(&format!("/api/runs/{first}/reject")),
    ]);
    assert_eq!(code, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (run["state"].as_str(), run["rejected_by"].as_str()),
        (Some("rejected"), Some(ADMIN))
    );
    let (code, _, _) = web.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &web.url(&format!("/api/runs/{first}/confirm")),
    ]);
    assert_eq!(code, 409, "a rejected run cannot be confirmed");

    // A session needs the CSRF header, not just the cookie.
    let second = run_id_of(&import_via_cli(&web.env, "c.csv", &hr_file(1..=10)));
    web.login(ADMIN_PASSWORD);
    let (code, _, _) = web.curl(&[
        "-X",
        "POST",
        &web.url(&format!("/api/runs/{second}/confirm")),
    ]);
    assert_eq!(code, 403);
    let (_, _, page) = web.curl(&[&web.url("/")]);
    let csrf = csrf_in(&page);
    let (code, _, body) = web.curl(&[
        "-X",
        "POST",
        "-H",
        &format!("X-CSRF-Token: {csrf}"),
        &web.url(&format!("/api/runs/{second}/confirm")),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        web.env.exported_ids("hr").len(),
        10,
        "the confirm changed the store"
    );

    // Groups with their member counts.
    let (code, _, body) = web.curl(&[&web.url("/api/groups?feed=hr")]);
    assert_eq!(code, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).expect("json");
    let total: u64 = groups
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|g| g["members"].as_u64())
        .sum();
    assert_eq!(total, 10, "{groups:#}");
    let (code, _, _) = web.curl(&[&web.url("/api/groups?feed=nope")]);
    assert_eq!(code, 404);
    let (code, _, _) = web.curl(&[&web.url("/api/groups")]);
    assert_eq!(code, 400);
    drop(web.server);
}

#[test]
fn the_page_is_served_over_tls_with_secure_cookies() {
    let env = sftp_env();
    let certs = env.root.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!(
        "import sys; sys.path.insert(0, {:?}); import smtp_sink; smtp_sink.make_certs({:?})",
        clients.display().to_string(),
        certs.display().to_string()
    ));
    let out = run_tool(cmd, "make test certificates", None, TOOL_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&text.replacen(
        "[web]\n",
        &format!(
            "[web]\ntls_cert = {}\ntls_key = {}\n",
            toml_str(&certs.join("cert.pem").display().to_string()),
            toml_str(&certs.join("key.pem").display().to_string())
        ),
        1,
    ));
    let web = Web::start_in(env);
    let base = web.base.clone();
    assert!(base.starts_with("https://"), "{base}");
    let ca = certs.join("ca.pem");
    let jar = web.env.root.join("tls-cookies.txt");
    let curl = |args: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-D", "-", "--cacert"])
            .arg(&ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args);
        run_tool(cmd, "curl https", None, TOOL_TIMEOUT)
    };
    let out = curl(&[&web.url("/healthz")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.starts_with("HTTP/") && out.stdout.contains(" 200"),
        "{out:#?}"
    );
    let page = curl(&[&web.url("/login")]).stdout;
    let token = csrf_in(&page);
    let out = curl(&[
        "-d",
        &format!("csrf={token}&name={ADMIN}&password={ADMIN_PASSWORD}"),
        &web.url("/login"),
    ]);
    let cookie = out
        .stdout
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-flagsync_session=")
        })
        .unwrap_or_else(|| panic!("over TLS the session cookie is __Host-: {out:#?}"))
        .to_string();
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"),
        "{cookie}"
    );
    // HSTS on every answer over TLS, the library's own errors too; the
    // __Host- cookie keeps the session.
    for (args, want) in [
        (vec![web.url("/")], " 200"),
        (vec![web.url("/no/such/page")], " 404"),
        (
            vec!["-X".to_string(), "PUT".to_string(), web.url("/login")],
            " 405",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&args);
        let head = out
            .stdout
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_string();
        assert!(
            head.lines().next().unwrap_or("").contains(want),
            "{args:?}: {out:#?}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "{args:?}: {head}"
        );
    }
    // Without the CA, the certificate is not trusted: no plain fallback.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", &web.url("/healthz")]);
    let out = run_tool(cmd, "curl without the CA", None, TOOL_TIMEOUT);
    assert_ne!(out.code, 0, "{out:#?}");
    drop(web.server);
}

/// The API's recipients once the search index has caught up with `total`.
fn wait_for_index(api: &dyn Fn(&str) -> (u16, serde_json::Value), total: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, page) = api("/api/recipients?feed=hr&per_page=1");
        assert_eq!(code, 200, "{page:#}");
        if page["index"]["current"] == true && page["total"] == total {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index did not catch up: {page:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ids_of(page: &serde_json::Value) -> Vec<String> {
    page["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients: {page:#}"))
        .iter()
        .map(|r| r["employee_id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn recipients_are_searched_filtered_and_paged_through_the_index() {
    let web = Web::start();
    let special =
        "E90001,Anne-Marie,van der Berg,Anne.Berg@Example.com,+1 212 555 0199,,Support,Active\n";
    let day1 = hr_file(1..=120) + special;
    let first = import_via_cli(&web.env, "day1.csv", &day1);
    assert_eq!(first["state"], "applied");
    let first = run_id_of(&first);
    for path in [
        "/api/recipients?feed=hr",
        "/api/recipients/E00001?feed=hr",
        "/api/groups?feed=hr",
        &format!("/api/runs/{first}/changes"),
        "/api/recipients/E00001/history?feed=hr",
    ] {
        assert_eq!(web.curl(&[&web.url(path)]).0, 401, "{path}");
    }
    let token = web.create_token();
    let bearer = format!("Authorization: Bearer {token}");
    let api = |path: &str| {
        let (code, _, body) = web.curl(&["-g", "-H", &bearer, &web.url(path)]);
        let v = serde_json::from_str::<serde_json::Value>(&body)
            .unwrap_or_else(|_| serde_json::json!({ "body": body }));
        (code, v)
    };
    wait_for_index(&api, 121);

    // By ID, name (any word, any case), email, phone (E.164 or national).
    for q in [
        "E9000",
        "berg",
        "ANNE",
        "marie",
        "van%20der",
        "anne.berg%40",
        "%2B1212555",
        "212-555-0199",
        "(212)%205550199",
    ] {
        let (code, page) = api(&format!("/api/recipients?feed=hr&q={q}"));
        assert_eq!(code, 200, "{q}: {page:#}");
        assert_eq!(ids_of(&page), ["E90001"], "{q}: {page:#}");
    }
    // First1, First10-19, First100-120: 32 people, 10 a page.
    let (_, page) = api("/api/recipients?feed=hr&q=first1&per_page=10&page=4");
    assert_eq!(
        (page["total"].as_u64(), page["pages"].as_u64()),
        (Some(32), Some(4)),
        "{page:#}"
    );
    assert_eq!(ids_of(&page), [hr_id(119), hr_id(120)]);
    assert_eq!(page["more"], false);
    // A filter on a group field, alone and with a search.
    let (_, page) = api("/api/recipients?feed=hr&field=department&value=support&per_page=500");
    assert_eq!(page["total"], 31, "30 of 1-120 and E90001: {page:#}");
    assert!(ids_of(&page).contains(&"E90001".to_string()));
    let (_, page) = api("/api/recipients?feed=hr&q=first1&field=department&value=Sales");
    let sales: Vec<String> = [12, 16, 100, 104, 108, 112, 116, 120].map(hr_id).to_vec();
    assert_eq!(ids_of(&page), sales, "{page:#}");
    // No search: everyone, in ID order.
    let (_, page) = api("/api/recipients?feed=hr&per_page=2&page=61");
    assert_eq!(ids_of(&page), ["E90001"], "{page:#}");
    assert_eq!(page["total"], 121);

    // A run's changes a page at a time, and one person's history.
    let (code, changes) = api(&format!(
        "/api/runs/{first}/changes?kind=added&limit=2&offset=1"
    ));
    assert_eq!(code, 200, "{changes:#}");
    assert_eq!(changes["total"], 121, "{changes:#}");
    let added: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["E00002", "E00003"], "{changes:#}");
    let (_, none) = api(&format!("/api/runs/{first}/changes?kind=removed"));
    assert_eq!(none["total"], 0, "{none:#}");
    let (code, history) = api("/api/recipients/E90001/history?feed=hr");
    assert_eq!(code, 200, "{history:#}");
    assert_eq!(
        history["history"][0]["change"]["kind"], "added",
        "{history:#}"
    );
    assert_eq!(history["history"][0]["file"], "day1.csv", "{history:#}");
    assert_eq!(run_id_of(&history["history"][0]), first);
    let (code, history) = api("/api/recipients/NOPE/history?feed=hr");
    assert_eq!(code, 200);
    assert_eq!(history["history"], serde_json::json!([]));

    // One recipient, and a group's members a page at a time.
    let (code, one) = api("/api/recipients/E90001?feed=hr");
    assert_eq!(code, 200);
    assert_eq!(one["values"]["last_name"], "van der Berg");
    assert_eq!(one["values"]["mobile"], "+12125550199");
    assert_eq!(one["groups"][0], "Department: Support");
    let (code, members) =
        api("/api/groups?feed=hr&group=Department%3A%20Support&per_page=10&page=4");
    assert_eq!(code, 200, "{members:#}");
    assert_eq!(members["members"], 31);
    assert_eq!(ids_of(&members), ["E90001"], "31 members, 10 a page");
    assert_eq!(members["pages"], 4);

    // Bad requests: a clear 4xx with a JSON error.
    for (path, want) in [
        ("/api/recipients?feed=hr&page=99", 404),
        ("/api/recipients?feed=hr&page=0", 400),
        ("/api/recipients?feed=hr&page=99999999999999999999999", 400),
        ("/api/recipients?feed=hr&per_page=501", 400),
        ("/api/recipients?feed=hr&field=nope&value=x", 400),
        ("/api/recipients?feed=hr&field=status&value=Active", 400),
        ("/api/recipients?feed=hr&field=department", 400),
        ("/api/recipients?feed=nope", 404),
        // A stray % is taken literally (form decoding), not a failure.
        ("/api/recipients?feed=hr&q=%zz", 200),
        ("/api/groups", 400),
        ("/api/groups?feed=hr&feed", 400),
        ("/api/recipients/NOPE?feed=hr", 404),
        ("/api/runs/999/changes", 404),
        ("/api/runs/1/changes?kind=moved", 400),
        ("/api/runs/1/changes?limit=0", 400),
        ("/api/runs/1/changes?limit=1001", 400),
        ("/api/recipients/E00001/history?feed=nope", 404),
        ("/api/groups?feed=hr&group=Department%3A%20Nope", 404),
        (
            "/api/groups?feed=hr&group=Department%3A%20Sales&page=x",
            400,
        ),
    ] {
        let (code, body) = api(path);
        assert_eq!(code, want, "{path}: {body:#}");
    }
    let long = "x".repeat(201);
    assert_eq!(api(&format!("/api/recipients?feed=hr&q={long}")).0, 400);

    // A changed name is found under its new name once the index catches up.
    let day2 = day1.replace(",Last5,", ",Zed,");
    assert_eq!(
        import_via_cli(&web.env, "day2.csv", &day2)["state"],
        "applied"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = api("/api/recipients?feed=hr&q=zed");
        if ids_of(&page) == [hr_id(5)] && page["index"]["current"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, page) = api("/api/recipients?feed=hr&q=last5");
    assert!(!ids_of(&page).contains(&hr_id(5)), "{page:#}");

    // The page shows the same.
    web.login(ADMIN_PASSWORD);
    let (code, _, html) = web.curl(&[&web.url("/recipients?feed=hr&q=berg")]);
    assert_eq!(code, 200);
    assert!(
        html.contains("van der Berg") && html.contains("1 recipient matches"),
        "{html}"
    );
    for (path, want) in [
        ("/recipients?feed=hr&page=99", 404),
        ("/recipients?feed=hr&per_page=abc", 400),
        ("/recipients?feed=hr&field=status&value=x", 400),
        ("/recipients/view?feed=hr&id=NOPE", 404),
        ("/recipients/view?feed=hr", 400),
        ("/groups/members?feed=hr&group=Department%3A%20Nope", 404),
        (
            "/groups/members?feed=hr&group=Department%3A%20Sales&page=999",
            404,
        ),
    ] {
        let (code, _, body) = web.curl(&[&web.url(path)]);
        assert_eq!(code, want, "{path}: {body}");
    }
    let (code, _, html) = web.curl(&[&web.url("/recipients/view?feed=hr&id=E90001")]);
    assert_eq!(code, 200);
    assert!(html.contains("Department: Support"), "{html}");
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

/// The page's `host:port`.
fn address_of(web: &Web) -> std::net::SocketAddr {
    web.base
        .strip_prefix("http://")
        .expect("plain HTTP")
        .parse()
        .expect("the web address")
}

/// One HTTP/1.1 request on its own connection from the local address
/// `from`; (status, head, body).
fn raw_request(
    to: std::net::SocketAddr,
    from: &str,
    head: &str,
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = crate::load::connect_from(from, to).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let text = format!(
        "{head}\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("an answer");
    split_response(&response)
}

fn split_response(response: &[u8]) -> (u16, String, String) {
    let response = String::from_utf8_lossy(response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// A login form fetched from `from`: its pre-login cookie and CSRF token.
fn login_form_from(to: std::net::SocketAddr, from: &str) -> (String, String) {
    let (status, head, body) = raw_request(to, from, "GET /login HTTP/1.1", "");
    assert_eq!(status, 200, "{head}");
    let cookie = pre_login_cookie(&head);
    (cookie, csrf_in(&body))
}

/// A login POST with a form fetched before; the status and the time the
/// answer took.
fn post_login(
    to: std::net::SocketAddr,
    from: &str,
    form: &(String, String),
    name: &str,
    password: &str,
) -> (u16, Duration) {
    let (cookie, csrf) = form;
    let started = std::time::Instant::now();
    let (status, _, _) = raw_request(
        to,
        from,
        &format!(
            "POST /login HTTP/1.1\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        &format!("csrf={csrf}&name={name}&password={password}"),
    );
    (status, started.elapsed())
}

#[test]
fn a_burst_of_wrong_logins_gets_at_most_the_lockout_limit_of_password_checks() {
    const LOGIN_FAILURES: usize = 5;
    const BURST: usize = 60;
    let web = Web::start();
    let to = address_of(&web);
    let form = login_form_from(to, "127.0.0.1");
    let start = std::sync::Barrier::new(BURST);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..BURST)
            .map(|_| {
                s.spawn(|| {
                    let (start, form) = (&start, &form);
                    start.wait();
                    post_login(to, "127.0.0.1", form, ADMIN, "wrong").0
                })
            })
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().expect("login"))
            .collect()
    });
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let locked = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        checked <= LOGIN_FAILURES && checked + locked == BURST,
        "{checked} password checks, {locked} lockout answers: {statuses:?}"
    );
    // Locked out: the right password is refused too.
    assert_eq!(
        post_login(to, "127.0.0.1", &form, ADMIN, ADMIN_PASSWORD).0,
        429
    );

    // From another address, a success between failures does not reset
    // their count.
    let other = "127.0.0.7";
    let form = login_form_from(to, other);
    for _ in 0..3 {
        assert_eq!(post_login(to, other, &form, ADMIN, "wrong").0, 401);
    }
    let form = login_form_from(to, other);
    assert_eq!(post_login(to, other, &form, ADMIN, ADMIN_PASSWORD).0, 303);
    let form = login_form_from(to, other);
    for _ in 0..2 {
        assert_eq!(post_login(to, other, &form, ADMIN, "wrong").0, 401);
    }
    assert_eq!(
        post_login(to, other, &form, ADMIN, ADMIN_PASSWORD).0,
        429,
        "five failures lock the address out though one login succeeded"
    );
    // Names are logged with their control characters escaped.
    let form = login_form_from(to, "127.0.0.8");
    assert_eq!(
        post_login(to, "127.0.0.8", &form, "evil%0Aname%1B", "x").0,
        401
    );
    let log = web.server.stderr_once_it_has("evil\\u{A}name\\u{1B}");
    assert!(log.contains("evil\\u{A}name\\u{1B}"), "{log}");
    assert!(!log.contains("evil\nname"), "{log}");
    drop(web.server);
}

#[test]
fn a_locked_out_address_cannot_flood_the_log() {
    let web = Web::start();
    let to = address_of(&web);
    let from = "127.0.0.9";
    let long_name = "x".repeat(5000);
    let form = login_form_from(to, from);
    let statuses: Vec<u16> = (0..40)
        .map(|_| post_login(to, from, &form, &long_name, "wrong").0)
        .collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 401).count(), 5);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 35);
    let log = web.server.stderr_once_it_has("web login refused");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("web login refused") && l.contains(from))
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "one line a minute per address, the rest summed up:\n{log}"
    );
    assert!(refusals[0].contains(&"x".repeat(64)), "{log}");
    assert!(
        !log.contains(&"x".repeat(65)),
        "a name is logged cut to 64 characters:\n{log}"
    );
    drop(web.server);
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn a_login_with_an_unknown_name_takes_as_long_as_with_a_known_one() {
    let web = Web::start();
    let to = address_of(&web);
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Each try from its own address: the lockout must not answer for it.
    for i in 0..10 {
        let from = format!("127.0.3.{}", 2 * i + 1);
        let form = login_form_from(to, &from);
        let (status, took) = post_login(to, &from, &form, ADMIN, "wrong-password");
        assert_eq!(status, 401);
        known.push(took);
        let from = format!("127.0.3.{}", 2 * i + 2);
        let form = login_form_from(to, &from);
        let (status, took) = post_login(to, &from, &form, &format!("nobody{i}"), "wrong-password");
        assert_eq!(status, 401);
        unknown.push(took);
    }
    let (known, unknown) = (median(known), median(unknown));
    assert!(
        unknown * 2 >= known,
        "an unknown name is answered in {unknown:?}, a known one in {known:?}: the time tells which names exist"
    );
    drop(web.server);
}

#[test]
fn sessions_end_when_their_administrator_is_removed_or_gets_a_new_password() {
    let web = Web::start();
    let token = web.create_token();
    let bearer = format!("Authorization: Bearer {token}");
    let (code, _, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303);
    assert_eq!(web.curl(&[&web.url("/")]).0, 200);

    // A new password ends the session at once; API tokens stay (they are
    // their own credentials, revoked with `admins token revoke`).
    let out = run_with_stdin(
        &web.env,
        &["admins", "password", ADMIN, "--password-stdin"],
        "a-new-password-here\n",
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let (code, headers, _) = web.curl(&[&web.url("/")]);
    assert_eq!(code, 303, "{headers}");
    assert!(
        headers.to_lowercase().contains("location: /login"),
        "{headers}"
    );
    assert_eq!(web.curl(&[&web.url("/api/feeds")]).0, 401);
    assert_eq!(web.curl(&["-H", &bearer, &web.url("/api/feeds")]).0, 200);
    assert_eq!(web.login(ADMIN_PASSWORD).0, 401, "the old password");
    assert_eq!(web.login("a-new-password-here").0, 303);
    assert_eq!(web.curl(&[&web.url("/")]).0, 200);

    // Removed: its session and its token end at once.
    assert_eq!(web.env.run(&["admins", "remove", ADMIN]).code, 0);
    assert_eq!(web.curl(&[&web.url("/")]).0, 303);
    assert_eq!(web.curl(&[&web.url("/api/feeds")]).0, 401);
    assert_eq!(web.curl(&["-H", &bearer, &web.url("/api/feeds")]).0, 401);
    // Added again under the same name: the old session is still gone.
    let out = run_with_stdin(
        &web.env,
        &["admins", "add", ADMIN, "--password-stdin"],
        "a-new-password-here\n",
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(web.curl(&[&web.url("/")]).0, 303);
    assert_eq!(web.curl(&["-H", &bearer, &web.url("/api/feeds")]).0, 401);
    drop(web.server);
}

#[test]
fn a_session_ends_after_its_lifetime_even_in_use() {
    let env = sftp_env();
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&text.replacen("[web]\n", "[web]\nsession_lifetime = \"nope\"\n", 1));
    let out = env.run(&["check"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("web.session_lifetime") && out.stderr.contains("nope"),
        "{out:#?}"
    );
    env.write_config(&text.replacen("[web]\n", "[web]\nsession_lifetime = \"3s\"\n", 1));
    let web = Web::start_in(env);
    let logged_in = std::time::Instant::now();
    assert_eq!(web.login(ADMIN_PASSWORD).0, 303);
    let mut statuses = Vec::new();
    while logged_in.elapsed() < Duration::from_secs(5) {
        statuses.push((logged_in.elapsed(), web.curl(&[&web.url("/")]).0));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(statuses.first().map(|s| s.1), Some(200), "{statuses:?}");
    assert_eq!(statuses.last().map(|s| s.1), Some(303), "{statuses:?}");
    drop(web.server);
}

#[test]
fn a_file_name_with_control_and_non_ascii_characters_downloads_its_error_report() {
    let web = Web::start();
    let name = "bad\u{7}näme \"q\".csv";
    let mut content = hr_file(1..=5);
    content += "E99,Bad,Mail,bob@,,,Sales,Active\n";
    let run = import_via_cli(&web.env, name, &content);
    assert_eq!(run["flagged"], 1, "{run:#}");
    let id = run_id_of(&run);
    web.login(ADMIN_PASSWORD);
    let (code, headers, body) = web.curl(&[&web.url(&format!("/runs/{id}/errors.csv"))]);
    assert_eq!(code, 200, "{headers}{body}");
    let path = web.env.run_show(&id)["error_report"]
        .as_str()
        .expect("error_report")
        .to_string();
    let on_disk = Path::new(&path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // On disk the report's own name has no control character.
    assert!(on_disk.contains("bad_näme \"q\".csv"), "{on_disk:?}");
    assert_eq!(download_name_utf8(&headers), on_disk, "{headers}");
    let ascii = download_name(&headers);
    assert!(
        ascii.is_ascii() && !ascii.chars().any(|c| c.is_control()),
        "{ascii:?}"
    );
    assert!(ascii.contains("bad_n_me \"q\".csv"), "{ascii:?}");
    assert!(body.contains("E99"), "{body}");
    drop(web.server);
}

#[test]
fn a_huge_declared_body_is_refused_before_it_is_read_and_library_errors_carry_the_headers() {
    use std::io::{Read, Write};
    let web = Web::start();
    // 10 GB declared, a few bytes sent: refused at once, not waited for.
    let mut stream = std::net::TcpStream::connect(address_of(&web)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000000\r\n\r\ncsrf=",
        )
        .expect("send");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to a 10 GB body: {e}"));
        assert!(n > 0, "closed without an answer");
        response.extend_from_slice(&buf[..n]);
    }
    let (status, head, _) = split_response(&response);
    assert_eq!(status, 413, "{head}");
    let mut errors = vec![("10 GB body".to_string(), head)];

    // Errors made by axum itself, not by our handlers.
    for (what, args, want) in [
        ("method", vec!["-X", "PUT", "/login"], 405),
        ("path", vec!["/runs/abc"], 400),
        ("query", vec!["/runs/1?page=abc"], 400),
        ("route", vec!["/no/such/page"], 404),
        (
            "content type",
            vec!["-H", "Content-Type: application/json", "-d", "{}", "/login"],
            415,
        ),
        ("form", vec!["-d", "csrf=1", "/login"], 422),
    ] {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let last = args.pop().expect("path");
        args.push(web.url(&last));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, headers, _) = web.curl(&args);
        assert_eq!(code, want, "{what}: {headers}");
        errors.push((what.to_string(), headers));
    }
    for (what, headers) in &errors {
        for h in [
            "content-security-policy",
            "x-frame-options",
            "x-content-type-options",
            "referrer-policy",
        ] {
            assert_eq!(header_line(headers, h).len(), 1, "{what}: {h} in {headers}");
        }
    }
    drop(web.server);
}

#[test]
fn a_body_that_does_not_arrive_within_its_deadline_is_answered_408() {
    use std::io::{Read, Write};
    const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    let web = Web::start();
    let mut stream = std::net::TcpStream::connect(address_of(&web)).expect("connect");
    stream
        .set_read_timeout(Some(BODY_TIMEOUT + Duration::from_secs(15)))
        .expect("timeout");
    let started = std::time::Instant::now();
    stream
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf=",
        )
        .expect("send");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("no answer after {:?}: {e}", started.elapsed()));
    let (status, head, _) = split_response(&response);
    assert_eq!(status, 408, "{head}");
    assert!(started.elapsed() >= BODY_TIMEOUT - Duration::from_secs(1));
    assert!(
        header_line(&head.to_ascii_lowercase(), "content-security-policy").len() == 1,
        "{head}"
    );
    drop(web.server);
}

#[test]
fn a_held_runs_removal_list_is_worked_out_once_not_on_every_view() {
    let web = Web::start();
    assert_eq!(
        import_via_cli(&web.env, "day1.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    let held = import_via_cli(&web.env, "day2.csv", &hr_file(1..=12));
    assert_eq!(held["state"], "held");
    let id = run_id_of(&held);
    let (code, _, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303);
    let (code, _, first) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
    assert_eq!(code, 200, "{first}");
    assert!(first.contains(&hr_id(13)), "{first}");
    // The held file goes (as if read again it could not be): the page and
    // its CSV still answer from the list worked out at the first view.
    let kept = web.env.run_show(&id)["held_file"]
        .as_str()
        .expect("held file")
        .to_string();
    let aside = format!("{kept}.aside");
    std::fs::rename(&kept, &aside).expect("move the held file aside");
    let (code, _, again) = web.curl(&[&web.url(&format!("/runs/{id}"))]);
    assert_eq!(code, 200, "{again}");
    assert!(again.contains(&hr_id(20)), "{again}");
    let (code, _, csv) = web.curl(&[&web.url(&format!("/runs/{id}/removals.csv"))]);
    assert_eq!(code, 200, "{csv}");
    assert_eq!(csv.lines().count(), 9, "a header and E13..E20: {csv}");
    std::fs::rename(&aside, &kept).expect("put the held file back");
}

#[test]
fn the_dashboard_says_the_worst_true_thing_about_each_feed_in_chromium() {
    let env = sftp_env_with(
        &[
            Feed::hr("good"),
            Feed::hr("bad"),
            Feed::hr("wait"),
            Feed::hr("late"),
        ],
        &["timezone = \"America/New_York\""],
        &[],
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    let at = text.find("name = \"late\"").expect("feed late");
    env.write_config(&format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("expect_every = \"24h\"", "expect_every = \"2s\"", 1)
    ));
    let web = Web::start_in(env);
    let import = |feed: &str, name: &str, content: &str| {
        let path = web.env.input(name, content);
        web.env
            .run(&[
                "import",
                "--feed",
                feed,
                path.to_str().expect("path"),
                "--json",
            ])
            .json("import")
    };
    assert_eq!(
        import("good", "g1.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    assert_eq!(
        import("good", "g2.csv", &hr_file(1..=22))["state"],
        "applied"
    );
    assert_eq!(
        import("wait", "w1.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    let held = import("wait", "w2.csv", &hr_file(1..=10));
    assert_eq!(held["state"], "held");
    assert_eq!(import("bad", "b1.csv", &hr_file(1..=5))["state"], "applied");
    let key = keygen(&web.env, "bad-key");
    add_account(&web.env, "bad-up", "bad", None, &[&pub_of(&key)], &[]);
    let broken = web
        .env
        .input("broken.csv", "Name,Email\nAnn,a@example.com\n");
    let out = openssh_sftp_key(
        &web.env,
        web.server.port,
        "bad-up",
        &key,
        &format!("put {} /upload/broken.csv\n", broken.display()),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    web.server.wait_for_runs(&web.env, 6, RUN_TIMEOUT);
    std::thread::sleep(Duration::from_secs(3)); // `late` is overdue after 2 s

    let shot = screenshot_dir().join("dashboard-health.png");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/dashboard_shot.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(&web.base)
        .arg(ADMIN)
        .arg(ADMIN_PASSWORD)
        .arg(&shot);
    let out = run_tool(cmd, "selenium + chromium", None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{out:#?}");
    let feeds: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let badge = |f: &str| feeds[f]["badge"].as_str().unwrap_or_default().to_string();
    assert_eq!(badge("good"), "OK", "{feeds:#}");
    assert_eq!(badge("bad"), "Failed", "{feeds:#}");
    assert_eq!(badge("wait"), "Review", "{feeds:#}");
    assert_eq!(badge("late"), "Overdue", "{feeds:#}");
    assert!(
        feeds["bad"]["health"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Last run failed:"),
        "{feeds:#}"
    );
    assert!(
        feeds["wait"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("review run {}", run_id_of(&held))),
        "{feeds:#}"
    );
    // What the held run would have done is said as such, not as done.
    assert!(
        feeds["wait"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("would have added 0, updated 0, removed 10"),
        "{feeds:#}"
    );
    assert!(
        feeds["good"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Recipients\n22 in"),
        "{feeds:#}"
    );
    // Times in the configured zone, with its offset.
    assert!(
        feeds["good"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains(" -05:00)")
            || feeds["good"]["text"]
                .as_str()
                .unwrap_or_default()
                .contains(" -04:00)"),
        "{feeds:#}"
    );
    assert_eq!(feeds["good"]["has_trend"], true, "{feeds:#}");
    // Red, amber and green are different colours.
    let colour = |f: &str| {
        feeds[f]["badge_colour"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(colour("good"), colour("bad"));
    assert_ne!(colour("wait"), colour("bad"));
    assert_eq!(colour("bad"), colour("late"));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // `flagsync feeds` says the same in words.
    let words = web.env.run(&["feeds"]);
    assert_eq!(words.code, 0, "{words:#?}");
    assert!(words.stdout.contains("bad: Last run failed:"), "{words:#?}");
    assert!(words.stdout.contains("late: Overdue"), "{words:#?}");
    assert!(
        words.stdout.contains("wait: Held run waiting for review"),
        "{words:#?}"
    );
    assert!(
        words
            .stdout
            .contains("good: OK: the last file was applied\n  recipients: 22 in"),
        "{words:#?}"
    );
    let list = web.env.run(&["runs", "list"]);
    assert!(list.stdout.starts_with("  RUN  FEED"), "{list:#?}");
    assert!(
        list.stdout.contains("(would have; nothing applied)"),
        "{list:#?}"
    );
}

/// `/metrics` read by prometheus_client's own parser.
fn parsed_metrics(web: &Web, token: &str) -> serde_json::Value {
    let (code, headers, body) = web.curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &web.url("/metrics"),
    ]);
    assert_eq!(code, 200, "{headers}{body}");
    assert!(
        header_line(&headers, "content-type")
            .iter()
            .any(|l| l.contains("text/plain; version=0.0.4")),
        "{headers}"
    );
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/metrics_parse.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    let out = run_tool(
        cmd,
        "prometheus_client parser",
        Some(body.as_bytes()),
        TOOL_TIMEOUT,
    );
    assert_eq!(out.code, 0, "{out:#?}\n{body}");
    serde_json::from_str(out.stdout.trim()).expect("json")
}

fn sample(parsed: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed["samples"].as_array()?.iter().find_map(|s| {
        let matches = s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v);
        matches.then(|| s["value"].as_f64()).flatten()
    })
}

#[test]
fn metrics_are_prometheus_text_for_a_token_and_refused_without_one() {
    let web = Web::start();
    let (code, headers, body) = web.curl(&[&web.url("/metrics")]);
    assert_eq!(code, 401, "{headers}{body}");
    assert!(body.contains("admins token create"), "{body}");
    let (code, _, _) = web.curl(&["-H", "Authorization: Bearer wrong", &web.url("/metrics")]);
    assert_eq!(code, 401);

    assert_eq!(
        import_via_cli(&web.env, "a.csv", &hr_file(1..=20))["state"],
        "applied"
    );
    assert_eq!(
        import_via_cli(&web.env, "b.csv", &hr_file(1..=10))["state"],
        "held"
    );
    // A failed sFTP login and a failed page login are counted.
    add_account(&web.env, "up", "hr", Some("right-password-1"), &[], &[]);
    let out = openssh_sftp_password(&web.env, web.server.port, "up", "wrong", "ls\n");
    assert_ne!(out.code, 0);
    let (code, _, _) = web.login("not the password");
    assert_ne!(code, 303);

    let token = web.create_token();
    let parsed = parsed_metrics(&web, &token);
    let hr = [("feed", "hr")];
    assert_eq!(
        sample(
            &parsed,
            "flagsync_runs",
            &[("feed", "hr"), ("state", "applied")]
        ),
        Some(1.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(
            &parsed,
            "flagsync_runs",
            &[("feed", "hr"), ("state", "held")]
        ),
        Some(1.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(
            &parsed,
            "flagsync_runs",
            &[("feed", "hr"), ("state", "failed")]
        ),
        Some(0.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(&parsed, "flagsync_held_runs", &hr),
        Some(1.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(&parsed, "flagsync_recipients", &hr),
        Some(20.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(&parsed, "flagsync_feed_overdue", &hr),
        Some(0.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(
            &parsed,
            "flagsync_last_run_state",
            &[("feed", "hr"), ("state", "held")]
        ),
        Some(1.0),
        "{parsed:#}"
    );
    let last = sample(&parsed, "flagsync_last_run_timestamp_seconds", &hr).expect("last run time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - last).abs() < 120.0, "{last} vs {now}");
    assert_eq!(
        sample(&parsed, "flagsync_intake_queue_length", &[]),
        Some(0.0),
        "{parsed:#}"
    );
    assert_eq!(
        sample(&parsed, "flagsync_sftp_sessions", &[]),
        Some(0.0),
        "{parsed:#}"
    );
    assert!(
        sample(
            &parsed,
            "flagsync_failed_logins_total",
            &[("service", "sftp")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{parsed:#}"
    );
    assert!(
        sample(
            &parsed,
            "flagsync_failed_logins_total",
            &[("service", "web")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{parsed:#}"
    );
    assert_eq!(
        parsed["types"]["flagsync_failed_logins"], "counter",
        "{parsed:#}"
    );
    assert_eq!(
        sample(&parsed, "flagsync_outbox_messages", &[("state", "queued")]),
        Some(0.0),
        "{parsed:#}"
    );
}

#[test]
fn the_undo_button_and_the_api_undo_a_run_as_a_new_run() {
    let web = Web::start();
    import_via_cli(&web.env, "a.csv", &hr_file(1..=20));
    let before = web.env.export("hr");
    let day = import_via_cli(&web.env, "b.csv", &hr_file(1..=21));
    assert_eq!(day["state"], "applied");
    let day_id = run_id_of(&day);

    let undo_url = web.url(&format!("/runs/{day_id}/undo"));
    let (code, _, _) = web.curl(&["-d", "csrf=x", &undo_url]);
    assert_eq!(code, 401, "no session");
    web.login(ADMIN_PASSWORD);
    let (code, _, _) = web.curl(&["-d", "csrf=x", &undo_url]);
    assert_eq!(code, 403, "a wrong CSRF token");
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{day_id}"))]);
    assert_eq!(code, 200);
    assert!(page.contains("id=\"undo\""), "an applied run offers Undo");
    let token = csrf_in(&page);
    // The button, clicked in Chromium, leads to the undo's own page.
    let undo_id = (day_id.parse::<u64>().unwrap() + 1).to_string();
    let shots = screenshot_dir().join("undo");
    let mut cmd = Command::new("python3");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/clients/changes_shot.py"),
    )
    .arg(&web.base)
    .arg(ADMIN)
    .arg(ADMIN_PASSWORD)
    .arg(&shots)
    .arg(format!("undone=/runs/{day_id}!click=undo"));
    let out = run_tool(cmd, "selenium + chromium", None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{out:#?}");
    let seen: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let undone = &seen["undone"];
    assert!(
        undone["url"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("/runs/{undo_id}")),
        "{seen:#}"
    );
    assert_eq!(
        undone["title"],
        format!("Run {undo_id}: applied"),
        "{seen:#}"
    );
    let text = undone["text"].as_str().unwrap_or("");
    assert!(
        text.contains(&format!("of run {day_id}, asked by {ADMIN}")),
        "{text}"
    );
    let rows: Vec<&str> = undone["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(rows, ["removed\tE00021\temployee_id: E00021\nfirst_name: First21\nlast_name: Last21\nemail: user21@example.com\ndepartment: Engineering\nstatus: Active"], "{seen:#}");
    assert_eq!(web.env.export("hr"), before);
    let shown = web.env.run_show(&undo_id);
    assert_eq!(
        (shown["state"].as_str(), shown["requested_by"].as_str()),
        (Some("applied"), Some(ADMIN))
    );
    let (_, _, page) = web.curl(&[&web.url(&format!("/runs/{undo_id}"))]);
    assert!(
        page.contains(&format!("href=\"/runs/{day_id}\">run {day_id}</a>")),
        "{page}"
    );
    let (_, _, page) = web.curl(&[&web.url(&format!("/runs/{day_id}"))]);
    assert!(!page.contains("id=\"undo\""), "undone once: no second Undo");
    assert!(page.contains(&format!("run {undo_id}</a>")), "{page}");
    // Twice is a clear conflict and changes nothing.
    let (code, _, body) = web.curl(&["-d", &format!("csrf={token}"), &undo_url]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already undid it"), "{body}");

    // The API undoes the undo with a token (no session: a session would
    // want its CSRF header); a held run cannot be undone.
    std::fs::remove_file(&web.jar).expect("the cookie jar");
    let bearer = format!("Authorization: Bearer {}", web.create_token());
    let (code, _, body) = web.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &web.url(&format!("/api/runs/{undo_id}/undo")),
    ]);
    assert_eq!(code, 200, "{body}");
    let redo: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(redo["undo_of"].as_u64(), undo_id.parse().ok());
    assert_eq!(web.env.exported_ids("hr").len(), 21);
    let held = run_id_of(&import_via_cli(&web.env, "c.csv", &hr_file(1..=5)));
    let (code, _, body) = web.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &web.url(&format!("/api/runs/{held}/undo")),
    ]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("only applied runs"), "{body}");
    // From the command line while the server runs (the control socket).
    let out = web.env.run(&["runs", "undo", &day_id]);
    assert_eq!(out.code, 2, "the held run comes first: {out:#?}");
    assert!(out.stderr.contains("held run"), "{out:#?}");
    assert_eq!(web.env.run(&["runs", "reject", &held]).code, 0);
    let out = web.env.run(&["runs", "undo", &day_id, "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.json("undo")["state"], "applied", "{out:#?}");
    assert_eq!(web.env.export("hr"), before);
    // A held undo's page lists who it would remove, like a held file's.
    let grow = run_id_of(&import_via_cli(&web.env, "d.csv", &hr_file(1..=30)));
    let out = web.env.run(&["runs", "undo", &grow, "--json"]);
    assert_eq!(out.code, 3, "{out:#?}");
    let held_undo = run_id_of(&out.json("undo"));
    web.login(ADMIN_PASSWORD);
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{held_undo}"))]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Who would be removed (10)"), "{page}");
    assert!(
        page.contains("href=\"/recipients/view?feed=hr&amp;id=E00021\">E00021</a>"),
        "each would-be removal links to the person: {page}"
    );
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}

#[test]
fn a_removed_persons_page_restores_them() {
    let web = Web::start();
    import_via_cli(&web.env, "a.csv", &hr_file(1..=20));
    let was = web.env.recipient("hr", "E00007").expect("stored");
    let cut = import_via_cli(&web.env, "b.csv", &hr_file((1..=20).filter(|&i| i != 7)));
    assert_eq!(cut["state"], "applied");
    let page_url = web.url("/recipients/view?feed=hr&id=E00007");
    let restore_url = web.url("/recipients/restore?feed=hr&id=E00007");
    let (code, _, _) = web.curl(&["-d", "csrf=x", &restore_url]);
    assert_eq!(code, 401, "no session");
    web.login(ADMIN_PASSWORD);
    let (code, _, page) = web.curl(&[&page_url]);
    assert_eq!(code, 200);
    assert!(page.contains("id=\"restore\""), "{page}");
    let token = csrf_in(&page);
    let (code, _, _) = web.curl(&["-d", "csrf=x", &restore_url]);
    assert_eq!(code, 403, "a wrong CSRF token");
    let (code, headers, _) = web.curl(&["-d", &format!("csrf={token}"), &restore_url]);
    assert_eq!(code, 303, "{headers}");
    let restore_id = (run_id_of(&cut).parse::<u64>().unwrap() + 1).to_string();
    assert!(
        headers.contains(&format!("/runs/{restore_id}")),
        "{headers}"
    );
    assert_eq!(web.env.recipient("hr", "E00007"), Some(was));
    let shown = web.env.run_show(&restore_id);
    assert_eq!(shown["restored_id"], "E00007");
    assert_eq!(shown["requested_by"], ADMIN);
    let (_, _, page) = web.curl(&[&page_url]);
    assert!(!page.contains("id=\"restore\""), "stored again: {page}");
    let (code, _, body) = web.curl(&["-d", &format!("csrf={token}"), &restore_url]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is in feed 'hr' now"), "{body}");
    let (code, _, _) = web.curl(&[
        "-d",
        &format!("csrf={token}"),
        &web.url("/recipients/restore?feed=nope&id=E00007"),
    ]);
    assert_eq!(code, 404);
    assert!(!web.server.stderr().contains("panicked"));
    drop(web.server);
}
