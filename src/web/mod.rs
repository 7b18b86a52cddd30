//! The status web page (axum): login for administrators, the feeds'
//! health, held runs with confirm/reject, run history, recipients (search
//! through the store's index), groups, sFTP accounts, and the JSON API
//! (`api`). It reads the store; its only writes are confirm/reject, through
//! `worker`.
//!
//! Invariants:
//! 1. Every page but `/login`, `/healthz` and the stylesheet needs a
//!    session; every POST needs the session's CSRF token (for `/login`, a
//!    token bound to a pre-login cookie).
//! 2. Session cookies are HttpOnly, SameSite=Strict, and over TLS Secure
//!    and named `__Host-…` (with HSTS on every response); a session ends
//!    after [`SESSION_IDLE`] without use, after `[web] session_lifetime`
//!    in all, and at once when its administrator is removed or gets a new
//!    password (each request checks the store: the command line that
//!    changes administrators is another process).
//! 3. Every response the router makes carries the security headers (the
//!    outermost layer), errors of axum's extractors included; pages behind
//!    the login are `no-store`.
//! 4. Bad input is a 4xx with a message, never a 500 or a panic.
//! 5. A request head arrives within `limits::HEADER_TIMEOUT` or the
//!    connection is closed; connections are capped per address and in all
//!    (`limits`), and a new connection over a cap never closes an open one.
//!    A body declared over [`MAX_FORM`] is refused before it is read; a
//!    body must arrive whole within [`BODY_TIMEOUT`].
//! 6. A login checks one password (argon2id) whether the name exists or
//!    not, and only after reserving its place under the lockout
//!    (`lockout`): concurrent attempts cannot pass its limits.
//! 7. Names, file names and header values from outside are logged through
//!    `import::printable` (control characters escaped).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::{context, Environment};
use serde::Deserialize;

use crate::sftp::refusals::{shown_name, RefusalLog, Verdict};
use crate::worker::engine::Engine;

// Public, with the forms and queries below and `whole_number`, for the
// fuzzer (fuzz/fuzz_targets/web_params.rs): it runs the handlers' own
// parsing and checks. Not an API.
#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod recipients;

mod limits;
mod lockout;
mod metrics;
mod session;
mod trend;

use session::{CheckedForm, LoggedIn};

const SESSION_COOKIE: &str = "flagsync_session";
const PRE_LOGIN_COOKIE: &str = "flagsync_login";
/// Over TLS the cookies carry this prefix: browsers then take them only
/// with Secure, Path=/ and no Domain, so no other host or plain-HTTP page
/// can set or shadow them.
const SECURE_COOKIE_PREFIX: &str = "__Host-";
/// A session unused for this long is gone.
const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// Forms are small; anything bigger is refused before it is read.
const MAX_FORM: usize = 16 * 1024;
/// A request body must arrive whole within this long (a form is a few
/// hundred bytes; a client that trickles one holds a connection no longer).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Browsers keep to HTTPS for a year once they saw the page over it.
const HSTS: &str = "max-age=31536000";

const BASE_HTML: &str = include_str!("../../assets/web/base.html");
const LOGIN_HTML: &str = include_str!("../../assets/web/login.html");
const DASHBOARD_HTML: &str = include_str!("../../assets/web/dashboard.html");
const RUNS_HTML: &str = include_str!("../../assets/web/runs.html");
const RUN_HTML: &str = include_str!("../../assets/web/run.html");
const GROUPS_HTML: &str = include_str!("../../assets/web/groups.html");
const ACCOUNTS_HTML: &str = include_str!("../../assets/web/accounts.html");
const RECIPIENTS_HTML: &str = include_str!("../../assets/web/recipients.html");
const RECIPIENT_HTML: &str = include_str!("../../assets/web/recipient.html");
/// Runs listed on the history page, newest first.
const RUNS_SHOWN: usize = 200;
/// Who a held run would remove: (ID, name), in ID order.
type Removals = Arc<Vec<(String, String)>>;

/// Held runs whose removal lists are kept worked out.
const REMOVAL_LISTS_KEPT: usize = 16;
/// People per page in a held run's removal list.
const REMOVALS_PAGE: usize = 100;
const STYLE_CSS: &str = include_str!("../../assets/web/style.css");

#[derive(Clone)]
struct Session {
    admin: String,
    /// Of the administrator's password hash when the session was made: a
    /// new password ends the session.
    password: PasswordFingerprint,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

type PasswordFingerprint = [u8; 32];

fn password_fingerprint(password_hash: &str) -> PasswordFingerprint {
    use sha2::Digest;
    sha2::Sha256::digest(password_hash.as_bytes()).into()
}

/// What every request handler shares.
pub struct WebState {
    engine: Arc<Engine>,
    templates: Environment<'static>,
    sessions: Mutex<HashMap<String, Session>>,
    lockout: Arc<lockout::Lockout>,
    /// Refused logins, logged at most once a minute per address (an IPv6
    /// /64), the rest summed up: a locked-out address cannot flood the log.
    refusals: Mutex<RefusalLog>,
    /// Who held runs would remove, by (run, feed generation): the list is
    /// a whole diff of the held file, worked out once per state of the
    /// store, not on every view or page.
    removals: Mutex<HashMap<(u64, u64), Removals>>,
    /// The page is reached over TLS (inside flagsync or in front of it):
    /// Secure `__Host-` cookies and HSTS.
    secure: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_token() -> String {
    // Without randomness no session can be safe: an empty token is never
    // accepted (see `same_token`).
    crate::sftp::credentials::random_token().unwrap_or_default()
}

/// Constant-time comparison of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl WebState {
    /// `secure`: the page is reached over TLS, served by flagsync
    /// (`tls_cert`) or by a proxy in front of it (`public_url` https).
    pub fn new(engine: Arc<Engine>, secure: bool) -> Result<WebState, minijinja::Error> {
        let mut templates = Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        templates.add_template("base.html", BASE_HTML)?;
        templates.add_template("login.html", LOGIN_HTML)?;
        templates.add_template("dashboard.html", DASHBOARD_HTML)?;
        templates.add_template("runs.html", RUNS_HTML)?;
        templates.add_template("run.html", RUN_HTML)?;
        templates.add_template("groups.html", GROUPS_HTML)?;
        templates.add_template("accounts.html", ACCOUNTS_HTML)?;
        templates.add_template("recipients.html", RECIPIENTS_HTML)?;
        templates.add_template("recipient.html", RECIPIENT_HTML)?;
        Ok(WebState {
            engine,
            templates,
            sessions: Mutex::new(HashMap::new()),
            lockout: lockout::Lockout::new(),
            refusals: Mutex::new(RefusalLog::default()),
            removals: Mutex::new(HashMap::new()),
            secure,
        })
    }

    /// Logs a refused login unless its address (`limits::address_key`)
    /// had a line within the minute; the name cut to 64 characters (no
    /// administrator's is longer). Refusals not logged are summed up once
    /// a minute, at the next refusal.
    fn log_login_refusal(&self, ip: IpAddr, name: &str, why: &str) {
        let now = Instant::now();
        let (verdict, due) = {
            let mut log = lock(&self.refusals);
            let verdict = log.refused(limits::address_key(ip), now);
            (verdict, log.due_at_most_once_a_minute(now))
        };
        for summary in due {
            match summary.address {
                Some(address) => tracing::warn!(
                    %address,
                    "{} more refused web logins from this address (not logged one by one)",
                    summary.not_logged
                ),
                None => tracing::warn!(
                    "{} more refused web logins from other addresses (not logged one by one)",
                    summary.not_logged
                ),
            }
        }
        if verdict == Verdict::Log {
            let user = crate::import::printable(shown_name(name));
            tracing::warn!(%user, %ip, "web login refused: {why} (further refusals from this address within a minute are summed up)");
        }
    }

    /// A cookie's name as sent: `__Host-` prefixed over TLS.
    fn cookie_name(&self, base: &str) -> String {
        if self.secure {
            format!("{SECURE_COOKIE_PREFIX}{base}")
        } else {
            base.to_string()
        }
    }

    fn set_cookie(&self, base: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let name = self.cookie_name(base);
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn session_token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        cookie(headers, &self.cookie_name(SESSION_COOKIE))
    }

    /// The logged-in administrator and the session's CSRF token.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let token = self.session_token(headers)?;
        let session = self.live_session(token)?;
        match self.account_unchanged(&session) {
            Ok(true) => Some((session.admin, session.csrf)),
            Ok(false) => {
                lock(&self.sessions).remove(token);
                tracing::info!(
                    user = %crate::import::printable(&session.admin),
                    "a web session ended: its administrator was removed or has a new password"
                );
                None
            }
            // The session is kept for when the store answers again.
            Err(e) => {
                tracing::error!(error = %e, "a web session cannot be checked: the store cannot be read");
                None
            }
        }
    }

    /// The session of `token` if it is neither idle too long nor too old;
    /// it counts as used now.
    fn live_session(&self, token: &str) -> Option<Session> {
        let lifetime = self.engine.config.web_session_lifetime;
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| {
            now.duration_since(s.last_used) < SESSION_IDLE
                && now.duration_since(s.created) < lifetime
        });
        let s = sessions.get_mut(token)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// Whether the session's administrator still exists with the password
    /// the session was made with.
    fn account_unchanged(&self, session: &Session) -> Result<bool, crate::store::StoreError> {
        let admin = self.engine.store.admin(&session.admin)?;
        Ok(admin.is_some_and(|a| password_fingerprint(&a.password_hash) == session.password))
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Response {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "a page cannot be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page cannot be shown; see the server log",
                )
                    .into_response()
            }
        }
    }
}

/// Security headers on every response (invariant 3).
async fn security_headers(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if state.secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Every body the page takes is a small form, read whole here: one
/// declared over [`MAX_FORM`] is refused before any of it is read, and it
/// must arrive within [`BODY_TIMEOUT`] (invariant 5).
async fn bounded_body(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM as u64) {
        return closing(body_too_large());
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_FORM)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => closing(body_too_large()),
        Err(_) => closing(message(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s; send it again",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn body_too_large() -> Response {
    message(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over {} KiB (or was cut short); the page's forms are smaller",
            MAX_FORM / 1024
        ),
    )
}

/// The connection closes after this response: what is left of the
/// request's body is never read.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .merge(api::routes())
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/confirm", post(confirm))
        .route("/runs/{id}/reject", post(reject))
        .route("/runs/{id}/errors.csv", get(error_report))
        .route("/runs/{id}/removals.csv", get(removals_csv))
        .route("/groups", get(groups_page))
        .route("/groups/members", get(groups_page))
        .route("/accounts", get(accounts_page))
        .route("/recipients", get(recipients_page))
        .route("/recipients/view", get(recipient_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/assets/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::from_fn(bounded_body))
        // Added last, so it is the outermost: it sees every response the
        // layers and extractors inside make.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page").into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

/// 200 when the store answers and the intake runs; 503 otherwise.
async fn healthz(State(state): State<Arc<WebState>>) -> Response {
    let store_ok = state.engine.store.feed_state("").is_ok();
    let intake_ok = state.engine.intake_running();
    let indexer_ok = state.engine.search.running();
    let word = |ok: bool| if ok { "running" } else { "stopped" };
    if store_ok && intake_ok && indexer_ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "store: {}, intake: {}, search indexer: {}\n",
                if store_ok { "ok" } else { "failing" },
                word(intake_ok),
                word(indexer_ok)
            ),
        )
            .into_response()
    }
}

async fn login_page(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if state.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&state, None, StatusCode::OK)
}

fn login_form(state: &WebState, error: Option<&str>, status: StatusCode) -> Response {
    let token = random_token();
    let mut response = state.render("login.html", context! { csrf => token, error => error });
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::SET_COOKIE,
        state.set_cookie(PRE_LOGIN_COOKIE, &token, Some(3600)),
    );
    response
}

/// Checks `password` against the administrator's hash, or against a
/// dummy hash when there is no such administrator: an unknown name costs
/// the same argon2id check as a known one, so the answer's time does not
/// tell which names exist.
fn password_is_right(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        crate::sftp::credentials::hash_password("no such administrator").unwrap_or_default()
    });
    match hash {
        Some(h) => crate::sftp::credentials::password_matches(password, h),
        None => {
            let _ = crate::sftp::credentials::password_matches(password, &DUMMY);
            false
        }
    }
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct LoginForm {
    pub csrf: String,
    pub name: String,
    pub password: String,
}

async fn login(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = crate::sftp::credentials::canonical_ip(peer.ip());
    let pre_login = state.cookie_name(PRE_LOGIN_COOKIE);
    let expected = cookie(&headers, &pre_login).unwrap_or("");
    if !same_token(expected, &form.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the form has expired or was not sent by this page; reload it and log in again",
        )
            .into_response();
    }
    // Reserved before the password is checked (invariant 6).
    let Some(attempt) = state.lockout.try_attempt(ip, &form.name) else {
        state.log_login_refusal(ip, &form.name, "locked out");
        return login_form(
            &state,
            Some("Too many failed logins from this address or for this name; try again later."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    };
    let hash = match state.engine.store.admin(&form.name) {
        Ok(admin) => admin.map(|a| a.password_hash),
        Err(e) => {
            tracing::error!(error = %e, "a web login cannot read the administrators");
            attempt.withdrawn();
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; try again later",
            );
        }
    };
    let fingerprint = hash.as_deref().map(password_fingerprint);
    let password = form.password.clone();
    // argon2id takes 19 MiB and ~20 ms a check: a flood of logins waits
    // for one of a few checks at once instead of filling memory and the
    // blocking pool (`limits::CONCURRENT_PASSWORD_CHECKS`).
    let Ok(_check) = limits::PASSWORD_CHECKS.acquire().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    };
    let matches =
        tokio::task::spawn_blocking(move || password_is_right(&password, hash.as_deref()))
            .await
            .unwrap_or(false);
    let Some(fingerprint) = fingerprint.filter(|_| matches) else {
        attempt.failed();
        state.log_login_refusal(ip, &form.name, "wrong name or password");
        return login_form(
            &state,
            Some("Wrong name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    attempt.succeeded();
    let token = random_token();
    let now = Instant::now();
    lock(&state.sessions).insert(
        token.clone(),
        Session {
            admin: form.name.clone(),
            password: fingerprint,
            csrf: random_token(),
            created: now,
            last_used: now,
        },
    );
    let user = crate::import::printable(&form.name);
    tracing::info!(%user, %ip, "web login");
    let mut response = Redirect::to("/").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        state.set_cookie(SESSION_COOKIE, &token, None),
    );
    h.append(
        header::SET_COOKIE,
        state.set_cookie(PRE_LOGIN_COOKIE, "", Some(0)),
    );
    response
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

async fn logout(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((_, csrf)) = state.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !same_token(&csrf, &form.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    if let Some(token) = state.session_token(&headers) {
        lock(&state.sessions).remove(token);
    }
    let mut response = Redirect::to("/login").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(
        header::SET_COOKIE,
        state.set_cookie(SESSION_COOKIE, "", Some(0)),
    );
    response
}

/// A feed's card on the dashboard: its health and what only the page shows.
#[derive(serde::Serialize)]
struct FeedCard {
    #[serde(flatten)]
    health: crate::worker::status::FeedHealth,
    trend_svg: Option<String>,
    search_behind: bool,
    search_done: u64,
    search_todo: u64,
}

async fn dashboard(
    State(state): State<Arc<WebState>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let config = &state.engine.config;
    let feeds: Result<Vec<FeedCard>, _> = config
        .feeds
        .iter()
        .map(|f| {
            let health = crate::worker::status::feed_health(config, f, Some(&state.engine.store))?;
            let search = state.engine.search.status(&f.name, &state.engine.store);
            Ok::<_, crate::store::StoreError>(FeedCard {
                trend_svg: trend::svg(&health.trend),
                search_behind: !search.current,
                search_done: search.done,
                search_todo: search.todo,
                health,
            })
        })
        .collect();
    match feeds {
        Ok(feeds) => state.render(
            "dashboard.html",
            context! { admin => admin, csrf => csrf, feeds => feeds },
        ),
        Err(e) => {
            tracing::error!(error = %e, "the feeds cannot be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log",
            )
                .into_response()
        }
    }
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

/// A run as the templates use it: the record with its counts at the top.
/// A run as the templates use it: its record, its times in the configured
/// time zone, and whether its counts are what it *would* have done (held,
/// rejected, superseded: nothing of it was applied).
fn run_value(config: &crate::config::Config, run: &crate::store::Run) -> serde_json::Value {
    use crate::store::RunState;
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        let local = |t: &str| crate::worker::status::local_time(config, t);
        map.insert("started_local".into(), local(&run.started_at).into());
        for (key, at) in [
            ("confirmed_local", &run.confirmed_at),
            ("rejected_local", &run.rejected_at),
        ] {
            if let Some(at) = at {
                map.insert(key.into(), local(at).into());
            }
        }
        let would = matches!(
            run.state,
            RunState::Held | RunState::Rejected | RunState::Superseded
        );
        map.insert("would".into(), would.into());
    }
    value
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct RunsQuery {
    pub feed: Option<String>,
}

async fn runs_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    if let Some(f) = &q.feed {
        if state.engine.config.feed(f).is_none() {
            return message(StatusCode::NOT_FOUND, format!("there is no feed '{f}'"));
        }
    }
    match state
        .engine
        .store
        .latest_runs(q.feed.as_deref(), RUNS_SHOWN)
    {
        Ok(runs) => {
            let config = &state.engine.config;
            let runs: Vec<serde_json::Value> = runs.iter().map(|r| run_value(config, r)).collect();
            state.render(
                "runs.html",
                context! { admin => admin, csrf => csrf, runs => runs, feed => q.feed },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "the runs cannot be read");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log",
            )
        }
    }
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct PageQuery {
    pub page: Option<usize>,
}

/// A request that cannot be answered: the status and what to say.
pub type Refused = (StatusCode, String);

fn refused(r: Refused) -> Response {
    message(r.0, r.1)
}

fn get_run(state: &WebState, id: u64) -> Result<crate::store::Run, Refused> {
    match state.engine.store.get_run(id) {
        Ok(run) => Ok(run),
        Err(crate::store::StoreError::UnknownRun(_)) => {
            Err((StatusCode::NOT_FOUND, format!("there is no run {id}")))
        }
        Err(e) => {
            tracing::error!(error = %e, "a run cannot be read");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log".into(),
            ))
        }
    }
}

/// Who a held run would remove, computed from its kept file on a
/// blocking thread.
async fn removals_of(state: &Arc<WebState>, run: crate::store::Run) -> Result<Removals, Refused> {
    let engine = state.engine.clone();
    let generation = engine.store.feed_generation(&run.feed).ok();
    let key = generation.zip(run.run_id);
    if let Some(key) = key {
        if let Some(known) = lock(&state.removals).get(&(key.1, key.0)) {
            return Ok(known.clone());
        }
    }
    let computed = tokio::task::spawn_blocking(move || {
        crate::worker::held_removals(&engine.config, &engine.store, &run)
    })
    .await;
    match computed {
        Ok(Ok(all)) => {
            let all = Arc::new(all);
            if let Some((generation, id)) = key {
                let mut cache = lock(&state.removals);
                // Held runs are few; older states of the store are stale.
                cache.retain(|&(run, _), _| run != id);
                if cache.len() >= REMOVAL_LISTS_KEPT {
                    cache.clear();
                }
                cache.insert((id, generation), all.clone());
            }
            Ok(all)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the removal list cannot be computed");
            Err((
                StatusCode::CONFLICT,
                format!("the removal list cannot be computed: {e}"),
            ))
        }
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the removal list failed; see the server log".into(),
        )),
    }
}

async fn run_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let run = match get_run(&state, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let (mut removals, mut total, mut page, mut pages) = (Vec::new(), 0usize, 1usize, 1usize);
    if run.state == crate::store::RunState::Held {
        let all = match removals_of(&state, run.clone()).await {
            Ok(all) => all,
            Err(r) => return refused(r),
        };
        total = all.len();
        pages = total.div_ceil(REMOVALS_PAGE).max(1);
        page = q.page.unwrap_or(1);
        if page == 0 || page > pages {
            return message(
                StatusCode::NOT_FOUND,
                format!("there is no page {page} of removals (pages 1 to {pages})"),
            );
        }
        removals = all
            .iter()
            .skip((page - 1) * REMOVALS_PAGE)
            .take(REMOVALS_PAGE)
            .cloned()
            .collect();
    }
    state.render(
        "run.html",
        context! {
            admin => admin, csrf => csrf, run => run_value(&state.engine.config, &run),
            removals => removals, removals_total => total, page => page, pages => pages,
        },
    )
}

async fn decide(state: Arc<WebState>, admin: String, id: u64, confirm: bool) -> Response {
    let decided = decide_run(state.engine.clone(), id, admin, confirm).await;
    match decided {
        Ok(run) => {
            tracing::info!(
                run_id = id,
                state = run.state.as_str(),
                "decided on the status page"
            );
            let mut response = Redirect::to(&format!("/runs/{id}")).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
        }
        Err(e) if e.is_usage() => message(StatusCode::CONFLICT, e.to_string()),
        Err(e) => {
            tracing::error!(run_id = id, error = %e, "a decision failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the decision failed: {e}"),
            )
        }
    }
}

/// Confirms or rejects a held run as `admin` on a blocking thread, under
/// the engine's gate: the same worker functions as `flagsync runs
/// confirm|reject`, for the page and the API alike.
pub(crate) async fn decide_run(
    engine: Arc<Engine>,
    id: u64,
    admin: String,
    confirm: bool,
) -> Result<crate::store::Run, crate::worker::WorkerError> {
    tokio::task::spawn_blocking(move || {
        let _gate = engine.exclusive();
        if confirm {
            crate::worker::confirm_run_in(
                &engine.config,
                &engine.store,
                id,
                &admin,
                crate::worker::ImportOptions::default(),
            )
        } else {
            crate::worker::reject_run_in(&engine.store, id, &admin)
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(crate::worker::WorkerError::Internal(
            "the decision was interrupted; see the server log".into(),
        ))
    })
}

async fn confirm(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    form: CheckedForm,
) -> Response {
    decide(state, form.admin, id, true).await
}

async fn reject(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    form: CheckedForm,
) -> Response {
    decide(state, form.admin, id, false).await
}

fn csv_download(name: &str, body: Vec<u8>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, attachment(name)),
        ],
        body,
    )
        .into_response()
}

/// `Content-Disposition: attachment` for any file name (RFC 6266): an
/// ASCII `filename` every client reads (other characters as `_`, quotes
/// and backslashes escaped) and the exact name as `filename*`, UTF-8
/// percent-encoded, which current browsers prefer.
fn attachment(name: &str) -> HeaderValue {
    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                ascii.push('\\');
                ascii.push(c);
            }
            c if c.is_ascii() && !c.is_ascii_control() => ascii.push(c),
            _ => ascii.push('_'),
        }
    }
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 8187's attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The run a download is for: 401 without a session (a download is no
/// page to redirect from), 404 for an unknown run.
fn download_run(
    state: &WebState,
    headers: &HeaderMap,
    id: u64,
) -> Result<crate::store::Run, Refused> {
    if state.session(headers).is_none() {
        return Err((StatusCode::UNAUTHORIZED, "log in first".into()));
    }
    get_run(state, id)
}

async fn error_report(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let run = match download_run(&state, &headers, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let Some(path) = run.error_report else {
        return message(
            StatusCode::NOT_FOUND,
            format!("run {id} has no error report"),
        );
    };
    match tokio::fs::read(&path).await {
        Ok(mut bytes) => {
            // Reports written before they started with a BOM get one.
            if !bytes.starts_with(crate::report::BOM) {
                bytes.splice(0..0, crate::report::BOM.iter().copied());
            }
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}.errors.csv", run.file));
            csv_download(&name, bytes)
        }
        Err(_) => message(
            StatusCode::NOT_FOUND,
            format!("the error report of run {id} is gone (older than the retention period?)"),
        ),
    }
}

async fn removals_csv(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let run = match download_run(&state, &headers, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    if run.state != crate::store::RunState::Held {
        return message(
            StatusCode::CONFLICT,
            format!("run {id} is {}, not held", run.state.as_str()),
        );
    }
    let all = match removals_of(&state, run).await {
        Ok(all) => all,
        Err(r) => return refused(r),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["id", "name"]);
    for (id, name) in all.iter() {
        let _ = w.write_record([
            crate::report::neutralize(id).as_bytes(),
            crate::report::neutralize(name).as_bytes(),
        ]);
    }
    csv_download(
        &format!("run-{id}-would-remove.csv"),
        w.into_inner().unwrap_or_default(),
    )
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct GroupQuery {
    pub feed: String,
    pub group: Option<String>,
    pub page: Option<String>,
}

/// The feed's groups; with `group`, also a page of that group's members.
async fn groups_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<GroupQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let Some(feed) = state.engine.config.feed(&q.feed) else {
        return message(
            StatusCode::NOT_FOUND,
            format!("there is no feed '{}'", q.feed),
        );
    };
    let groups = match state.engine.store.groups(&q.feed) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "the groups cannot be read");
            return message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read");
        }
    };
    let mut members = None;
    if let Some(group) = &q.group {
        if !groups.iter().any(|(g, _)| g == group) {
            return message(
                StatusCode::NOT_FOUND,
                format!("there is no group '{group}' in feed '{}'", q.feed),
            );
        }
        let page = match whole_number("page", q.page.as_deref(), 1) {
            Ok(p) => p,
            Err(r) => return refused(r),
        };
        let lookup = match recipients::Lookup::group_members(
            &state.engine.config,
            &q.feed,
            group,
            page,
            recipients::DEFAULT_PER_PAGE,
        ) {
            Ok(l) => l,
            Err(r) => return refused(r),
        };
        let (lookup, found) = match lookup.run(&state.engine).await {
            Ok(found) => found,
            Err(r) => return refused(r),
        };
        let count = groups
            .iter()
            .find(|(g, _)| g == group)
            .map_or(0, |(_, n)| *n);
        members = Some(context! {
            rows => table_rows(feed, &found),
            total => count,
            page => lookup.page,
            pages => lookup.last_page(&found),
        });
    }
    state.render(
        "groups.html",
        context! {
            admin => admin, csrf => csrf, feed => q.feed, groups => groups, group => q.group,
            members => members,
            columns => table_columns(feed).iter().map(|&i| feed.fields[i].name.clone()).collect::<Vec<_>>(),
            index => state.engine.search.status(&feed.name, &state.engine.store),
        },
    )
}

/// A whole number from 1 in the address (a page, a page size); `default`
/// when absent.
#[doc(hidden)]
pub fn whole_number(name: &str, text: Option<&str>, default: usize) -> Result<usize, Refused> {
    match text.map(str::trim) {
        None | Some("") => Ok(default),
        Some(t) => t.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("{name} must be a whole number from 1, not '{t}'"),
            )
        }),
    }
}

/// Columns of the recipients tables: the ID, the searched fields, the group
/// fields; eight at most (the record page shows them all).
fn table_columns(feed: &crate::config::Feed) -> Vec<usize> {
    let mut columns = vec![feed.id_field];
    let searched = feed.fields.iter().enumerate().filter(|(_, f)| f.search);
    for i in searched
        .map(|(i, _)| i)
        .chain(feed.group_fields.iter().copied())
    {
        if !columns.contains(&i) && columns.len() < 8 {
            columns.push(i);
        }
    }
    columns
}

fn table_rows(feed: &crate::config::Feed, found: &crate::store::SearchPage) -> Vec<Vec<String>> {
    let columns = table_columns(feed);
    found
        .recipients
        .iter()
        .map(|(_, r)| {
            columns
                .iter()
                .map(|&i| r.values.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect()
}

/// Search and filter the recipients of a feed.
async fn recipients_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let config = &state.engine.config;
    let lookup = match recipients::Lookup::from_params(config, &params) {
        Ok(l) => l,
        Err(r) => return refused(r),
    };
    let Some(feed) = config.feed(&lookup.feed) else {
        return message(StatusCode::NOT_FOUND, "there is no such feed");
    };
    let (lookup, found) = match lookup.run(&state.engine).await {
        Ok(found) => found,
        Err(r) => return refused(r),
    };
    let columns: Vec<String> = table_columns(feed)
        .iter()
        .map(|&i| feed.fields[i].name.clone())
        .collect();
    let feeds: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    state.render(
        "recipients.html",
        context! {
            admin => admin, csrf => csrf, feed => lookup.feed, feeds => feeds,
            q => lookup.q, field => lookup.field, value => lookup.value,
            filterable => recipients::filterable_fields(feed),
            columns => columns, rows => table_rows(feed, &found),
            total => found.total, more => found.capped,
            page => lookup.page, pages => lookup.last_page(&found),
            index => state.engine.search.status(&feed.name, &state.engine.store),
        },
    )
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct RecipientQuery {
    pub feed: Option<String>,
    pub id: String,
}

/// One recipient: every field and its groups.
async fn recipient_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<RecipientQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f,
        Err(r) => return refused(r),
    };
    match state.engine.store.recipient(&feed.name, &q.id) {
        Ok(Some(record)) => {
            let fields: Vec<(String, String)> = feed
                .fields
                .iter()
                .zip(record.values)
                .map(|(f, v)| (f.name.clone(), v))
                .collect();
            state.render(
                "recipient.html",
                context! { admin => admin, csrf => csrf, feed => feed.name, id => q.id, fields => fields, groups => record.groups },
            )
        }
        Ok(None) => message(
            StatusCode::NOT_FOUND,
            format!("feed '{}' has no recipient '{}'", feed.name, q.id),
        ),
        Err(e) => {
            tracing::error!(error = %e, "a recipient cannot be read");
            message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read")
        }
    }
}

async fn accounts_page(
    State(state): State<Arc<WebState>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    match state.engine.store.accounts() {
        Ok(all) => {
            let accounts: Vec<serde_json::Value> = all
                .iter()
                .map(crate::sftp::credentials::account_summary)
                .collect();
            state.render(
                "accounts.html",
                context! { admin => admin, csrf => csrf, accounts => accounts },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "the accounts cannot be read");
            message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read")
        }
    }
}

/// The TLS settings from `[web] tls_cert` and `tls_key` (PEM files).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("web.tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "web.tls_cert {} holds no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("web.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("web.tls_cert and web.tls_key do not match: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the page over TLS until `shutdown` (see [`serve`]).
pub async fn run_tls(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: tokio_util::sync::CancellationToken,
) {
    serve(listener, state, Some(acceptor), shutdown).await
}

/// Serves the page until `shutdown` (see [`serve`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    serve(listener, state, None, shutdown).await
}

/// Our own accept loop, plain or TLS: connection caps per address and in
/// all (over them a connection is closed at once), the TLS handshake's
/// deadline, then hyper's HTTP/1.1 with the request head's deadline, which
/// also ends idle kept-alive connections (`limits`). At `shutdown` the
/// listener closes, each connection finishes its request in flight and
/// closes; after [`limits::SHUTDOWN_GRACE`] the rest are dropped.
async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let app = router(state);
    let connections = limits::Connections::new(
        limits::max_connections(),
        limits::MAX_CONNECTIONS_PER_ADDRESS,
    );
    let tracker = tokio_util::task::TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // EMFILE and friends pass; never stop listening.
                tracing::warn!(error = %e, "web accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = connections.try_take(peer.ip()) else {
            // Closed before anything is read (the refusal is logged, at
            // most every few seconds, by `try_take`).
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let tls = tls.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_http(tcp, peer, app, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(tls)) => serve_http(tls, peer, app, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // New clients are refused from now on, not left waiting.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits::SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("web connections still open at shutdown were closed");
    }
}

/// HTTP/1.1 on one connection until the client or `shutdown` ends it.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "web connection ended with an error");
    }
}
