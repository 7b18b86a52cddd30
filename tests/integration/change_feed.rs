//! The change feed (`GET /api/changes`): every applied run's changes once,
//! in commit order, from a cursor that survives restarts; checked against
//! a model made from the exports before and after each run (the one of
//! `changes`), not from the server's own code.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::changes::{second_day, without_position, Model};
use crate::server::*;
use crate::util::*;
use crate::web::{import_via_cli, Web};

/// Calls the feed with an API token.
struct Reader {
    bearer: String,
}

impl Reader {
    fn new(web: &Web) -> Reader {
        Reader {
            bearer: format!("Authorization: Bearer {}", web.create_token()),
        }
    }

    fn get(&self, web: &Web, query: &str) -> (u16, Value) {
        let path = format!("/api/changes?feed=hr{query}");
        let (code, _, body) = web.curl(&["-g", "-H", &self.bearer, &web.url(&path)]);
        let v = serde_json::from_str(&body).unwrap_or_else(|_| json!({ "body": body }));
        (code, v)
    }

    fn page(&self, web: &Web, after: Option<&str>, limit: usize) -> Value {
        let after = after.map_or(String::new(), |a| format!("&after={a}"));
        let (code, page) = self.get(web, &format!("{after}&limit={limit}"));
        assert_eq!(code, 200, "{page:#}");
        page
    }

    /// Everything after `after`, `limit` a time: the changes and the last
    /// page (its `next`, `held_run`).
    fn read_all(&self, web: &Web, after: Option<&str>, limit: usize) -> (Vec<Value>, Value) {
        let mut after = after.map(str::to_string);
        let mut all = Vec::new();
        loop {
            let page = self.page(web, after.as_deref(), limit);
            let changes = page["changes"].as_array().expect("changes").clone();
            assert!(changes.len() <= limit, "{page:#}");
            match changes.last() {
                Some(last) => assert_eq!(page["next"], last["cursor"], "{page:#}"),
                None => assert_eq!(page["next"].as_str(), after.as_deref(), "{page:#}"),
            }
            after = page["next"].as_str().map(str::to_string);
            all.extend(changes);
            if page["more"] != true {
                return (all, page);
            }
            assert_eq!(page["changes"].as_array().unwrap().len(), limit);
        }
    }
}

fn cursors(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|c| c["cursor"].as_str().unwrap().to_string())
        .collect()
}

fn run_cli(env: &Env, args: &[&str]) {
    let out = env.run(args);
    assert_eq!(out.code, 0, "{args:?}: {out:#?}");
}

#[test]
fn the_feed_gives_each_applied_change_once_in_order_from_any_cursor_across_a_restart() {
    let mut web = Web::start_in(sftp_env());
    let reader = Reader::new(&web);
    let mut model = Model::default();

    // Nothing yet: no cursor to give.
    let page = reader.page(&web, None, 5);
    assert_eq!(page["changes"], json!([]), "{page:#}");
    assert_eq!(
        (page["next"].clone(), page["more"].clone()),
        (Value::Null, json!(false))
    );

    let first = import_via_cli(&web.env, "base.csv", &hr_file(1..=60));
    assert_eq!(first["state"], "applied", "{first:#}");
    model.applied(&web.env, &run_id_of(&first));

    // New emails, a department move (a group change), a cleared email,
    // four new people and three gone.
    let second = import_via_cli(&web.env, "day2.csv", &second_day(60, 4));
    assert_eq!(second["state"], "applied", "{second:#}");
    model.applied(&web.env, &run_id_of(&second));
    let (read, last) = reader.read_all(&web, None, 3);
    assert_eq!(without_position(&read), model.feed());
    assert_eq!(last["held_run"], Value::Null);
    let caught_up = last["next"].as_str().unwrap().to_string();

    // Held (13 of 61 go): what it would change is not the feed's, and the
    // feed stops there, also after a restart.
    let cut: Vec<usize> = (16..=64).filter(|i| ![10, 20, 30].contains(i)).collect();
    let held = import_via_cli(&web.env, "cut.csv", &hr_file(cut));
    assert_eq!(held["state"], "held", "{held:#}");
    let held_id = run_id_of(&held);
    for _ in 0..2 {
        let page = reader.page(&web, Some(&caught_up), 7);
        assert_eq!(page["changes"], json!([]), "{page:#}");
        assert_eq!(page["next"], caught_up.as_str());
        assert_eq!(page["more"], false);
        assert_eq!(page["held_run"].to_string(), held_id, "{page:#}");
        web = web.restart();
    }
    // Confirmed: its changes follow the cursor given before the restarts.
    run_cli(&web.env, &["runs", "confirm", &held_id, "--by", "alice"]);
    model.applied(&web.env, &held_id);
    let (read, last) = reader.read_all(&web, Some(&caught_up), 7);
    let (_, held_changes) = model.applied.last().unwrap();
    assert_eq!(read.len(), held_changes.len());
    assert!(read
        .iter()
        .all(|c| c["run_id"] == json!(held_id.parse::<u64>().unwrap())));
    let confirmed_at = web.env.run_show(&held_id)["confirmed_at"].clone();
    assert_eq!(read[0]["committed_at"], confirmed_at);
    let caught_up = last["next"].as_str().unwrap().to_string();

    // Rejected: never in the feed, and it does not stop it.
    let rejected = import_via_cli(&web.env, "empty.csv", &hr_file(1..=2));
    assert_eq!(rejected["state"], "held", "{rejected:#}");
    run_cli(
        &web.env,
        &["runs", "reject", &run_id_of(&rejected), "--by", "bob"],
    );
    let page = reader.page(&web, Some(&caught_up), 7);
    assert_eq!(page["changes"], json!([]), "{page:#}");
    assert_eq!(page["held_run"], Value::Null, "{page:#}");

    // Applied after it: a rename, a newcomer, one gone; then the same file
    // again (unchanged, nothing in the feed).
    let mut text = hr_file((17..=64).filter(|i| ![10, 20, 30].contains(i)));
    text = text.replace(",Last40,", ",Renamed40,");
    text += &format!("{}\n", hr_row(65));
    let later = import_via_cli(&web.env, "later.csv", &text);
    assert_eq!(later["state"], "applied", "{later:#}");
    model.applied(&web.env, &run_id_of(&later));
    let again = import_via_cli(&web.env, "again.csv", &text);
    assert_eq!(again["state"], "unchanged", "{again:#}");
    // An undo (of day 2, people changed since left as they are) is a run
    // like the others in the feed.
    let out = web
        .env
        .run(&["runs", "undo", &run_id_of(&second), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let undo = out.json("undo");
    assert_eq!(undo["state"], "applied", "{undo:#}");
    assert!(undo["conflicts"].as_u64().unwrap_or(0) > 0, "{undo:#}");
    model.applied(&web.env, &run_id_of(&undo));

    // The whole feed, whatever the page size, and from any cursor: the
    // model's changes, none skipped or repeated.
    let expected = model.feed();
    assert!(expected.len() > 80, "{}", expected.len());
    let (whole, _) = reader.read_all(&web, None, 1000);
    assert_eq!(without_position(&whole), expected);
    let all_cursors = cursors(&whole);
    for limit in [1, 3, 7] {
        let (read, last) = reader.read_all(&web, None, limit);
        assert_eq!(cursors(&read), all_cursors, "limit {limit}");
        assert_eq!(
            last["next"].as_str(),
            all_cursors.last().map(String::as_str)
        );
    }
    for at in [0, 1, 59, 60, 61, expected.len() / 2, expected.len() - 2] {
        let (read, _) = reader.read_all(&web, Some(&all_cursors[at]), 7);
        assert_eq!(without_position(&read), expected[at + 1..], "after {at}");
    }
    let (read, last) = reader.read_all(&web, all_cursors.last().map(String::as_str), 7);
    assert!(read.is_empty() && last["more"] == false, "{last:#}");
    let mut sorted = all_cursors.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), all_cursors.len(), "a cursor per change");

    // Bad requests: a clear 4xx with a JSON error.
    for (query, want) in [
        ("&after=garbage", 400),
        ("&after=12", 400),
        ("&after=1.zz", 400),
        ("&after=01.4530303031", 400),
        ("&after=999.4530303031", 400),
        ("&limit=0", 400),
        ("&limit=1001", 400),
        ("&limit=x", 400),
    ] {
        let (code, body) = reader.get(&web, query);
        assert_eq!(code, want, "{query}: {body:#}");
        assert!(body["error"].is_string(), "{query}: {body:#}");
    }
    let (code, body) = reader.get(&web, "&after=garbage");
    assert!(
        body["error"].as_str().unwrap().contains("after"),
        "{code} {body:#}"
    );
    let (code, _, _) = web.curl(&[&web.url("/api/changes?feed=hr")]);
    assert_eq!(code, 401, "no session, no token");
    let (code, _, _) = web.curl(&["-H", &reader.bearer, &web.url("/api/changes?feed=nope")]);
    assert_eq!(code, 404);
}

#[test]
fn a_cursor_whose_run_went_with_the_history_is_gone() {
    let env = sftp_env_with(
        &[Feed::hr("hr")],
        &["retention = \"1s\"", "history_retention = \"1s\""],
        &[],
    );
    let web = Web::start_in(env);
    let reader = Reader::new(&web);
    let first = import_via_cli(&web.env, "base.csv", &hr_file(1..=5));
    assert_eq!(first["state"], "applied", "{first:#}");
    let (read, _) = reader.read_all(&web, None, 2);
    assert_eq!(read.len(), 5);
    let cursor = read[2]["cursor"].as_str().unwrap().to_string();
    assert_eq!(
        reader.page(&web, Some(&cursor), 10)["changes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Past `history_retention`, a start prunes the run and its log.
    std::thread::sleep(Duration::from_millis(2500));
    let web = web.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = reader.get(&web, &format!("&after={cursor}"));
        if code != 200 || Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 410, "{body:#}");
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("/api/recipients") && text.contains("without `after`"),
        "{body:#}"
    );
    // Starting again without a cursor works (nothing kept now).
    let page = reader.page(&web, None, 10);
    assert_eq!(page["changes"], json!([]), "{page:#}");
}
