//! The JSON API under `/api/`: the same data as the pages, for scripts.
//! Authenticated by the page's session cookie or by an API token
//! (`Authorization: Bearer …`, made with `flagsync admins token`).
//! Without either: 401 with a JSON error.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{recipients, WebState};
use crate::store::{FeedCursor, FeedError, RunState, StoreError};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The administrator behind the request, by session or API token.
pub(super) fn caller(state: &WebState, headers: &HeaderMap) -> Option<String> {
    if let Some((admin, _)) = state.session(headers) {
        return Some(admin);
    }
    token_admin(state, headers)
}

/// The administrator whose API token the request carries, if any.
fn token_admin(state: &WebState, headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    state.engine.store.admin_for_token(bearer).ok().flatten()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::UnknownRun(id) => error(StatusCode::NOT_FOUND, format!("there is no run {id}")),
        other => {
            tracing::error!(error = %other, "the API cannot read the store");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log",
            )
        }
    }
}

macro_rules! authenticated {
    ($state:expr, $headers:expr) => {
        if caller(&$state, &$headers).is_none() {
            return error(
                StatusCode::UNAUTHORIZED,
                "log in or send an API token (Authorization: Bearer …; `flagsync admins token create NAME`)",
            );
        }
    };
}

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/api/feeds", get(feeds))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/errors", get(run_errors))
        .route("/api/runs/{id}/changes", get(run_changes))
        .route("/api/runs/{id}/confirm", axum::routing::post(confirm))
        .route("/api/runs/{id}/reject", axum::routing::post(reject))
        .route("/api/runs/{id}/undo", axum::routing::post(undo))
        .route("/api/groups", get(groups))
        .route("/api/recipients", get(recipients))
        .route("/api/recipients/{id}", get(recipient))
        .route("/api/recipients/{id}/history", get(recipient_history))
        .route("/api/changes", get(change_feed))
}

/// A POST's caller: a bearer token, or a session whose CSRF token is in
/// the `X-CSRF-Token` header (a cookie alone never changes anything).
fn deciding_caller(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<String, (StatusCode, &'static str)> {
    if let Some((admin, csrf)) = state.session(headers) {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return if super::same_token(&csrf, sent) {
            Ok(admin)
        } else {
            Err((
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header",
            ))
        };
    }
    match token_admin(state, headers) {
        Some(admin) => Ok(admin),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "log in or send an API token (Authorization: Bearer …)",
        )),
    }
}

async fn decide(
    state: Arc<WebState>,
    headers: HeaderMap,
    id: u64,
    action: super::RunAction,
) -> Response {
    let admin = match deciding_caller(&state, &headers) {
        Ok(a) => a,
        Err((status, text)) => return error(status, text),
    };
    let decided = super::decide_run(state.engine.clone(), id, admin, action).await;
    match decided {
        Ok(run) => Json(run.to_json(false)).into_response(),
        Err(e) if e.is_usage() => error(StatusCode::CONFLICT, e.to_string()),
        Err(crate::worker::WorkerError::Store(e)) => store_error(e),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the decision failed: {e}"),
        ),
    }
}

async fn confirm(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    decide(state, headers, id, super::RunAction::Confirm).await
}

async fn reject(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    decide(state, headers, id, super::RunAction::Reject).await
}

async fn undo(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    decide(state, headers, id, super::RunAction::Undo).await
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct GroupsQuery {
    pub feed: String,
    pub group: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

/// The feed's groups and member counts; with `group`, a page of its
/// members.
async fn groups(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(q): Query<GroupsQuery>,
) -> Response {
    authenticated!(state, headers);
    let Some(feed) = state.engine.config.feed(&q.feed) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("there is no feed '{}'", q.feed),
        );
    };
    let all = match state.engine.store.groups(&q.feed) {
        Ok(all) => all,
        Err(e) => return store_error(e),
    };
    let Some(group) = &q.group else {
        return Json(Value::Array(
            all.iter()
                .map(|(g, n)| json!({"group": g, "members": n}))
                .collect(),
        ))
        .into_response();
    };
    let Some((_, count)) = all.iter().find(|(g, _)| g == group) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("there is no group '{group}' in feed '{}'", q.feed),
        );
    };
    let numbers = super::whole_number("page", q.page.as_deref(), 1).and_then(|page| {
        let per_page = super::whole_number(
            "per_page",
            q.per_page.as_deref(),
            recipients::DEFAULT_PER_PAGE,
        )?;
        Ok((page, per_page))
    });
    let (page, per_page) = match numbers {
        Ok(n) => n,
        Err((status, text)) => return error(status, text),
    };
    let lookup = match recipients::Lookup::group_members(
        &state.engine.config,
        &q.feed,
        group,
        page,
        per_page,
    ) {
        Ok(l) => l,
        Err((status, text)) => return error(status, text),
    };
    match lookup.run(&state.engine).await {
        Ok((lookup, found)) => Json(json!({
            "feed": q.feed,
            "group": group,
            "members": count,
            "page": lookup.page,
            "per_page": lookup.per_page,
            "pages": lookup.last_page(&found),
            "index": recipients::index_json(state.engine.search.status(&feed.name, &state.engine.store)),
            "recipients": recipients::page_json(feed, &found),
        }))
        .into_response(),
        Err((status, text)) => error(status, text),
    }
}

/// Search and filter a feed's recipients, a page at a time.
async fn recipients(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    authenticated!(state, headers);
    let config = &state.engine.config;
    let lookup = match recipients::Lookup::from_params(config, &params) {
        Ok(l) => l,
        Err((status, text)) => return error(status, text),
    };
    let Some(feed) = config.feed(&lookup.feed) else {
        return error(StatusCode::NOT_FOUND, "there is no such feed");
    };
    match lookup.run(&state.engine).await {
        Ok((lookup, found)) => Json(json!({
            "feed": lookup.feed,
            "q": lookup.q,
            "field": lookup.field,
            "value": lookup.value,
            "page": lookup.page,
            "per_page": lookup.per_page,
            "pages": lookup.last_page(&found),
            "total": found.total,
            "more": found.capped,
            "index": recipients::index_json(state.engine.search.status(&feed.name, &state.engine.store)),
            "recipients": recipients::page_json(feed, &found),
        }))
        .into_response(),
        Err((status, text)) => error(status, text),
    }
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct FeedParam {
    pub feed: Option<String>,
}

/// One recipient: its values by field name and its groups.
async fn recipient(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FeedParam>,
) -> Response {
    authenticated!(state, headers);
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f,
        Err((status, text)) => return error(status, text),
    };
    match state.engine.store.recipient(&feed.name, &id) {
        Ok(Some(record)) => Json(json!({
            "feed": feed.name,
            "id": id,
            "values": recipients::recipient_json(feed, &record.values),
            "groups": record.groups,
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("feed '{}' has no recipient '{id}'", feed.name),
        ),
        Err(e) => store_error(e),
    }
}

async fn feeds(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authenticated!(state, headers);
    let config = &state.engine.config;
    let all: Result<Vec<_>, StoreError> = config
        .feeds
        .iter()
        .map(|f| crate::worker::status::feed_health(config, f, Some(&state.engine.store)))
        .collect();
    match all {
        Ok(all) => Json(all).into_response(),
        Err(e) => store_error(e),
    }
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct RunsQuery {
    pub feed: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
}

async fn runs(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    authenticated!(state, headers);
    if let Some(f) = &q.feed {
        if state.engine.config.feed(f).is_none() {
            return error(StatusCode::NOT_FOUND, format!("there is no feed '{f}'"));
        }
    }
    let wanted: Option<RunState> = match q.state.as_deref() {
        None => None,
        Some(s) => match RunState::parse(s) {
            Some(st) => Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("state '{s}' is not one of applied, unchanged, held, failed, rejected, superseded"),
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let found = match (wanted, q.feed.as_deref()) {
        (None, feed) => state.engine.store.latest_runs(feed, limit),
        (Some(RunState::Held), Some(feed)) => state.engine.store.held_runs(feed),
        (Some(_), feed) => state.engine.store.list_runs(feed),
    };
    match found {
        Ok(all) => Json(Value::Array(
            all.iter()
                .filter(|r| wanted.is_none_or(|w| r.state == w))
                .take(limit)
                .map(|r| r.to_json(false))
                .collect(),
        ))
        .into_response(),
        Err(e) => store_error(e),
    }
}

async fn run(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    authenticated!(state, headers);
    match state.engine.store.get_run(id) {
        Ok(run) => {
            let mut v = run.to_json(true);
            let emails = state.engine.store.messages_of_run(id).unwrap_or_default();
            if let Value::Object(map) = &mut v {
                map.insert(
                    "emails".into(),
                    Value::Array(emails.iter().map(|m| m.delivery_json()).collect()),
                );
                let webhooks = state.engine.store.webhooks_of_run(id).unwrap_or_default();
                map.insert(
                    "webhooks".into(),
                    Value::Array(webhooks.iter().map(|m| m.delivery_json()).collect()),
                );
            }
            Json(v).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn run_errors(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    authenticated!(state, headers);
    match state.engine.store.get_run(id) {
        Ok(run) => Json(json!({
            "run_id": id,
            "flagged": run.counts.flagged,
            "warnings": run.counts.warnings,
            "errors": run.errors,
            "error_report": run.error_report.as_ref().map(|_| format!("/runs/{id}/errors.csv")),
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    kind: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Changes a page holds at most.
const MAX_CHANGES: usize = 1000;

/// Who run `id` added, updated and removed (as `flagsync runs changes
/// --json`), `limit` at a time from `offset`.
async fn run_changes(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(q): Query<ChangesQuery>,
) -> Response {
    authenticated!(state, headers);
    let kind = q.kind.as_deref();
    if kind.is_some_and(|k| !crate::store::CHANGE_KINDS.contains(&k)) {
        return error(
            StatusCode::BAD_REQUEST,
            "kind is one of added, updated, removed",
        );
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_CHANGES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit is 1 to {MAX_CHANGES}"),
        );
    }
    let offset = q.offset.unwrap_or(0);
    let run = match state.engine.store.get_run(id) {
        Ok(run) => run,
        Err(e) => return store_error(e),
    };
    let page = match state
        .engine
        .store
        .run_changes_page(&run.feed, id, kind, offset, limit)
    {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    Json(json!({
        "run_id": id,
        "feed": run.feed,
        "state": run.state.as_str(),
        "total": page.counts.of(kind),
        "offset": offset,
        "changes": page.changes,
    }))
    .into_response()
}

/// What each run did to one person (as `flagsync recipients history
/// --json`), removed people included.
async fn recipient_history(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FeedParam>,
) -> Response {
    authenticated!(state, headers);
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f,
        Err((status, text)) => return error(status, text),
    };
    let history = match state.engine.store.recipient_history(&feed.name, &id) {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let entries: Vec<Value> = history
        .iter()
        .map(|(run, change)| change.history_json(run))
        .collect();
    Json(json!({"feed": feed.name, "id": id, "history": entries})).into_response()
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct ChangeFeedQuery {
    pub feed: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// The feed's changes after a cursor, for a downstream system that keeps
/// its copy in step: applied runs only, in commit order, stopping at a
/// held run (see `Store::changes_after`).
async fn change_feed(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(q): Query<ChangeFeedQuery>,
) -> Response {
    authenticated!(state, headers);
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f,
        Err((status, text)) => return error(status, text),
    };
    let limit = match super::whole_number("limit", q.limit.as_deref(), 100) {
        Ok(n) if n <= MAX_CHANGES => n,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit is 1 to {MAX_CHANGES}"),
            )
        }
        Err((status, text)) => return error(status, text),
    };
    let after = match q.after.as_deref().map(FeedCursor::parse).transpose() {
        Ok(after) => after,
        Err(text) => return error(StatusCode::BAD_REQUEST, text),
    };
    let page = match state
        .engine
        .store
        .changes_after(&feed.name, after.as_ref(), limit)
    {
        Ok(page) => page,
        Err(e @ FeedError::Gone { .. }) => return error(StatusCode::GONE, e.to_string()),
        Err(e @ FeedError::NotOfFeed { .. }) => {
            return error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(FeedError::Store(e)) => return store_error(e),
    };
    let fields: Vec<&str> = feed.fields.iter().map(|f| f.name.as_str()).collect();
    Json(page.to_json(&feed.name, &fields, after.as_ref())).into_response()
}
