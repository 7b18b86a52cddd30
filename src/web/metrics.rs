//! `GET /metrics`: the server's state in the Prometheus text format, for
//! an API token (`Authorization: Bearer …`, made with `flagsync admins
//! token create`) or a logged-in session. Without either: 401.
//!
//! Why not open: the names of feeds, the counts of recipients and the
//! failed logins say more about a customer than a probe needs; Prometheus
//! sends a bearer token with `authorization: credentials_file`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::WebState;
use crate::metrics::{self as m, Exposition};
use crate::store::{RunState, StoreError};
use crate::worker::engine::Engine;

const STATES: [RunState; 6] = [
    RunState::Applied,
    RunState::Unchanged,
    RunState::Held,
    RunState::Failed,
    RunState::Rejected,
    RunState::Superseded,
];

pub async fn metrics(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if super::api::caller(&state, &headers).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "/metrics needs an API token: send `Authorization: Bearer TOKEN` (make one with `flagsync admins token create NAME`)\n",
        )
            .into_response();
    }
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || render(&engine)).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the metrics cannot be read from the store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log\n",
            )
                .into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "see the server log\n").into_response(),
    }
}

/// Per feed, what the store says about it.
struct FeedFigures {
    runs: BTreeMap<&'static str, u64>,
    last_run: Option<(f64, &'static str)>,
    held: u64,
    overdue: bool,
    recipients: u64,
    search_current: bool,
}

fn feed_figures(engine: &Engine, feed: &crate::config::Feed) -> Result<FeedFigures, StoreError> {
    let store = &engine.store;
    let runs = store.list_runs(Some(&feed.name))?;
    let mut by_state: BTreeMap<&'static str, u64> =
        STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for r in &runs {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    let last_run = runs.first().map(|r| {
        let at = r
            .finished_at
            .parse::<jiff::Timestamp>()
            .map_or(0.0, |t| t.as_second() as f64);
        (at, r.state.as_str())
    });
    let health = crate::worker::status::feed_health(&engine.config, feed, Some(store))?;
    Ok(FeedFigures {
        runs: by_state,
        last_run,
        held: store.held_runs(&feed.name)?.len() as u64,
        overdue: health.overdue,
        recipients: store.recipient_count(&feed.name)?,
        search_current: engine.search.status(&feed.name, store).current,
    })
}

fn render(engine: &Engine) -> Result<String, StoreError> {
    let feeds: Vec<(String, FeedFigures)> = engine
        .config
        .feeds
        .iter()
        .map(|f| Ok((f.name.clone(), feed_figures(engine, f)?)))
        .collect::<Result<_, StoreError>>()?;
    let mut e = Exposition::new();
    e.family(
        "flagsync_runs",
        "gauge",
        "Runs recorded (within the history kept), by feed and state.",
    );
    for (feed, f) in &feeds {
        for (state, n) in &f.runs {
            e.sample(
                "flagsync_runs",
                &[("feed", feed), ("state", state)],
                *n as f64,
            );
        }
    }
    e.family(
        "flagsync_last_run_timestamp_seconds",
        "gauge",
        "When the feed's last run finished (Unix seconds).",
    );
    for (feed, f) in &feeds {
        if let Some((at, _)) = f.last_run {
            e.sample("flagsync_last_run_timestamp_seconds", &[("feed", feed)], at);
        }
    }
    e.family(
        "flagsync_last_run_state",
        "gauge",
        "The feed's last run's state (1 for its state, 0 for the others).",
    );
    for (feed, f) in &feeds {
        if let Some((_, last)) = f.last_run {
            for state in STATES {
                let now = f64::from(u8::from(state.as_str() == last));
                e.sample(
                    "flagsync_last_run_state",
                    &[("feed", feed), ("state", state.as_str())],
                    now,
                );
            }
        }
    }
    e.family(
        "flagsync_held_runs",
        "gauge",
        "Held runs waiting for a decision.",
    );
    for (feed, f) in &feeds {
        e.sample("flagsync_held_runs", &[("feed", feed)], f.held as f64);
    }
    e.family(
        "flagsync_feed_overdue",
        "gauge",
        "1 when the feed got no file within expect_every.",
    );
    for (feed, f) in &feeds {
        e.sample(
            "flagsync_feed_overdue",
            &[("feed", feed)],
            f64::from(u8::from(f.overdue)),
        );
    }
    e.family(
        "flagsync_recipients",
        "gauge",
        "Recipients stored per feed.",
    );
    for (feed, f) in &feeds {
        e.sample(
            "flagsync_recipients",
            &[("feed", feed)],
            f.recipients as f64,
        );
    }
    e.family(
        "flagsync_search_index_current",
        "gauge",
        "1 when the feed's search index holds its last run.",
    );
    for (feed, f) in &feeds {
        e.sample(
            "flagsync_search_index_current",
            &[("feed", feed)],
            f64::from(u8::from(f.search_current)),
        );
    }
    let mut outbox: BTreeMap<&'static str, u64> = ["queued", "sent", "failing", "gave_up"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for message in engine.store.messages()? {
        *outbox.entry(message.state.as_str()).or_default() += 1;
    }
    e.family(
        "flagsync_outbox_messages",
        "gauge",
        "Report emails in the outbox, by delivery state.",
    );
    for (state, n) in &outbox {
        e.sample("flagsync_outbox_messages", &[("state", state)], *n as f64);
    }
    webhook_families(&mut e, engine)?;
    scim_families(&mut e, engine)?;
    e.family(
        "flagsync_intake_queue_length",
        "gauge",
        "Files handed to the import worker and not finished yet.",
    )
    .sample(
        "flagsync_intake_queue_length",
        &[],
        m::read_gauge(&m::INTAKE_QUEUED) as f64,
    );
    e.family(
        "flagsync_sftp_sessions",
        "gauge",
        "sFTP sessions logged in now.",
    )
    .sample(
        "flagsync_sftp_sessions",
        &[],
        m::read_gauge(&m::SFTP_SESSIONS) as f64,
    );
    e.family(
        "flagsync_failed_logins_total",
        "counter",
        "Failed logins since the server started, by service.",
    )
    .sample(
        "flagsync_failed_logins_total",
        &[("service", "sftp")],
        m::read_counter(&m::SFTP_FAILED_LOGINS) as f64,
    )
    .sample(
        "flagsync_failed_logins_total",
        &[("service", "web")],
        m::read_counter(&m::WEB_FAILED_LOGINS) as f64,
    );
    Ok(e.finish())
}

/// `flagsync_scim_changes_behind{feed}` (changes of the log the target has
/// not received; -1 while it needs a full sync),
/// `flagsync_scim_failed_users{feed}` and
/// `flagsync_scim_requests_total{feed}`.
fn scim_families(e: &mut Exposition, engine: &Engine) -> Result<(), StoreError> {
    let mut figures = Vec::new();
    for feed in engine.config.feeds.iter().filter(|f| f.scim.is_some()) {
        figures.push((
            feed.name.clone(),
            crate::scim::status(&engine.store, &feed.name)?,
        ));
    }
    if figures.is_empty() {
        return Ok(());
    }
    e.family(
        "flagsync_scim_changes_behind",
        "gauge",
        "Changes the feed's SCIM target has not received yet (-1: it needs a full sync).",
    );
    for (feed, status) in &figures {
        let behind = if status.state == "needs_full_sync" {
            -1.0
        } else {
            status.behind as f64
        };
        e.sample("flagsync_scim_changes_behind", &[("feed", feed)], behind);
    }
    e.family(
        "flagsync_scim_failed_users",
        "gauge",
        "People whose last push the feed's SCIM target refused.",
    );
    for (feed, status) in &figures {
        e.sample(
            "flagsync_scim_failed_users",
            &[("feed", feed)],
            status.failures.len() as f64,
        );
    }
    e.family(
        "flagsync_scim_requests_total",
        "counter",
        "HTTP requests this server sent to the feed's SCIM target since it started (a Bulk request counts once).",
    );
    for (feed, _) in &figures {
        e.sample(
            "flagsync_scim_requests_total",
            &[("feed", feed)],
            crate::scim::requests_made(feed) as f64,
        );
    }
    Ok(())
}

/// `flagsync_webhook_messages{feed, state}`: the webhook queue by feed
/// and delivery state (every configured feed and state, zeros included,
/// so that an alert on `gave_up` or `failing` has a series to watch).
fn webhook_families(e: &mut Exposition, engine: &Engine) -> Result<(), StoreError> {
    use crate::store::HookState;
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for feed in engine
        .config
        .feeds
        .iter()
        .filter(|f| !f.webhooks.is_empty())
    {
        for state in HookState::ALL {
            counts.insert((feed.name.clone(), state.as_str()), 0);
        }
    }
    for message in engine.store.webhook_messages()? {
        *counts
            .entry((message.feed.clone(), message.state.as_str()))
            .or_default() += 1;
    }
    e.family(
        "flagsync_webhook_messages",
        "gauge",
        "Webhook messages in the store, by feed and delivery state.",
    );
    for ((feed, state), n) in &counts {
        e.sample(
            "flagsync_webhook_messages",
            &[("feed", feed), ("state", state)],
            *n as f64,
        );
    }
    Ok(())
}
