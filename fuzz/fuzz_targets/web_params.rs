//! Any bytes as the query string and as the form body of the status page's
//! and the API's requests: axum's own extractors turn them into each
//! handler's form or query type, then the handlers' checks run on them
//! (`Lookup::from_params`, `whole_number`, `feed_of`, `group_members`).
//! Each answers with a value or a 4xx refusal, never a panic or a 5xx.

#![no_main]

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{Form, FromRequest, Query};
use axum::http::{header, Method, Request, Uri};
use flagsync::config::{Config, Source};
use flagsync::store::RunState;
use flagsync::web::recipients::{feed_of, Lookup, DEFAULT_PER_PAGE, MAX_PER_PAGE};
use flagsync::web::{api, whole_number, Refused};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// A second feed, so that "which feed" is a question, with a multi field
/// that can be filtered on and searched fields of every kind.
const SECOND_FEED: &str = r#"
[[feed]]
name = "sites"
group_fields = ["region", "tags"]
  [[feed.field]]
  name = "site_id"
  column = "Site"
  type = "id"
  [[feed.field]]
  name = "name"
  column = "Name"
  search = true
  [[feed.field]]
  name = "phone"
  column = "Phone"
  type = "voice"
  [[feed.field]]
  name = "region"
  column = "Region"
  [[feed.field]]
  name = "tags"
  column = "Tags"
  type = "multi"
  separator = ";"
  filter = true
"#;

/// The embedded configuration (one feed: requests may leave the feed out)
/// and one with a second feed.
fn configs() -> &'static [Config; 2] {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let one = Config::embedded().expect("the embedded configuration is valid");
        let text = format!(
            "{}\n{SECOND_FEED}",
            include_str!("../../assets/default.toml")
        );
        let two = Config::parse(&text, Source::Embedded).expect("the fuzz configuration is valid");
        [one, two]
    })
}

/// Polls a future that never waits: the extractors' bodies are in memory.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// What `Query<T>` makes of the address, as the router hands it over.
fn query<T: DeserializeOwned>(uri: &Uri) -> Option<T> {
    Query::<T>::try_from_uri(uri).ok().map(|Query(q)| q)
}

/// What `Form<T>` makes of a posted body.
fn form<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_vec()))
        .expect("a request from parts that are valid");
    ready(Form::<T>::from_request(request, &()))
        .ok()
        .map(|Form(f)| f)
}

fn refusal(r: Refused) {
    assert!(r.0.is_client_error(), "{} for a bad request: {}", r.0, r.1);
    assert!(!r.1.is_empty());
}

fn number(name: &str, text: Option<&str>, default: usize) -> Option<usize> {
    match whole_number(name, text, default) {
        Ok(n) => {
            assert!(n >= 1, "{name} = {n}");
            Some(n)
        }
        Err(r) => {
            refusal(r);
            None
        }
    }
}

fn lookup(config: &Config, result: Result<Lookup, Refused>) {
    match result {
        Ok(l) => {
            assert!(config.feed(&l.feed).is_some(), "feed {:?}", l.feed);
            assert!(l.page >= 1);
            assert!((1..=MAX_PER_PAGE).contains(&l.per_page));
        }
        Err(r) => refusal(r),
    }
}

fn group_members(config: &Config, feed: &str, group: &str, page: usize, per_page: usize) {
    let result = Lookup::group_members(config, feed, group, page, per_page);
    lookup(config, result);
}

fn queries(config: &Config, uri: &Uri) {
    // GET /recipients and /api/v1/recipients.
    if let Some(params) = query::<HashMap<String, String>>(uri) {
        lookup(config, Lookup::from_params(config, &params));
    }
    // GET /groups: the page number only once the group is known.
    if let Some(q) = query::<flagsync::web::GroupQuery>(uri) {
        if let (Some(_), Some(group)) = (config.feed(&q.feed), &q.group) {
            if let Some(page) = number("page", q.page.as_deref(), 1) {
                group_members(config, &q.feed, group, page, DEFAULT_PER_PAGE);
            }
        }
    }
    // GET /api/v1/groups.
    if let Some(q) = query::<api::GroupsQuery>(uri) {
        if let (Some(_), Some(group)) = (config.feed(&q.feed), &q.group) {
            let page = number("page", q.page.as_deref(), 1);
            let per_page = number("per_page", q.per_page.as_deref(), DEFAULT_PER_PAGE);
            if let (Some(page), Some(per_page)) = (page, per_page) {
                group_members(config, &q.feed, group, page, per_page);
            }
        }
    }
    // GET /recipient and /api/v1/recipients/{id}.
    if let Some(q) = query::<flagsync::web::RecipientQuery>(uri) {
        if let Err(r) = feed_of(config, q.feed.as_deref()) {
            refusal(r);
        }
    }
    if let Some(q) = query::<api::FeedParam>(uri) {
        if let Err(r) = feed_of(config, q.feed.as_deref()) {
            refusal(r);
        }
    }
    // GET /api/v1/runs: a state is one of the run states' names.
    if let Some(q) = query::<api::RunsQuery>(uri) {
        if let Some(state) = q.state.as_deref().and_then(RunState::parse) {
            assert_eq!(state.as_str(), q.state.as_deref().unwrap_or_default());
        }
    }
    let _ = query::<flagsync::web::RunsQuery>(uri);
    let _ = query::<flagsync::web::PageQuery>(uri);
}

fuzz_target!(|bytes: &[u8]| {
    for config in configs() {
        // An address hyper would refuse never reaches a handler.
        let mut address = b"/recipients?".to_vec();
        address.extend_from_slice(bytes);
        if let Ok(uri) = Uri::try_from(address) {
            queries(config, &uri);
        }
    }
    // POST /login, /logout, /runs/{id}/confirm and /reject.
    let _ = form::<flagsync::web::LoginForm>(bytes);
    let _ = form::<flagsync::web::CsrfForm>(bytes);
});
