//! The status web page (axum): login for administrators, the feeds'
//! health, held runs with confirm/reject, run history, recipients (search
//! through the store's index), groups, sFTP accounts, and the JSON API
//! (`api`). It reads the store; its only writes are confirm/reject, through
//! `worker`.
//!
//! This file holds the shared state (sessions, templates, cookies) and the
//! router; the pages are one file each group: `login`, `dashboard`, `runs`,
//! `browse` (groups, recipients, accounts); `session` has the extractors
//! every page uses, `layers` what wraps every response, `listen` how a
//! connection is served (TLS, HTTP/1.1) from the shared accept loop
//! (`crate::listen`).
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
//!    (`auth::lockout`, with `login`'s policy): concurrent attempts cannot
//!    pass its limits.
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

mod browse;
mod dashboard;
mod layers;
mod limits;
mod listen;
mod login;
mod metrics;
mod runs;
mod session;
mod trend;

pub use browse::{GroupQuery, RecipientQuery};
pub use listen::{run, run_tls, tls_acceptor};
pub use login::{CsrfForm, LoginForm};
pub(crate) use runs::{decide_run, RunAction};
pub use runs::{PageQuery, RunsQuery};

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
/// Changes per page in a run's change list.
const CHANGES_PAGE: usize = 100;
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
    lockout: Arc<crate::auth::Lockout>,
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
    crate::auth::random_token().unwrap_or_default()
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
            lockout: crate::auth::Lockout::new(login::LOCKOUT_POLICY, login::LOCKOUT_SERVICE),
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

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .merge(api::routes())
        .route("/", get(dashboard::dashboard))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/runs", get(runs::runs_page))
        .route("/runs/{id}", get(runs::run_page))
        .route("/runs/{id}/confirm", post(runs::confirm))
        .route("/runs/{id}/reject", post(runs::reject))
        .route("/runs/{id}/undo", post(runs::undo))
        .route("/runs/{id}/errors.csv", get(runs::error_report))
        .route("/runs/{id}/removals.csv", get(runs::removals_csv))
        .route("/runs/{id}/bundle.zip", get(runs::support_bundle))
        .route("/runs/{id}/changes.csv", get(runs::changes_csv))
        .route("/groups", get(browse::groups_page))
        .route("/groups/members", get(browse::groups_page))
        .route("/accounts", get(browse::accounts_page))
        .route("/recipients", get(browse::recipients_page))
        .route("/recipients/view", get(browse::recipient_page))
        .route("/recipients/restore", post(browse::restore_recipient))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/assets/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::from_fn(layers::bounded_body))
        // Added last, so it is the outermost: it sees every response the
        // layers and extractors inside make.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::security_headers,
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

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

/// A request that cannot be answered: the status and what to say.
pub type Refused = (StatusCode, String);

fn refused(r: Refused) -> Response {
    message(r.0, r.1)
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
