//! The login and logout: the form with its pre-login CSRF token, the
//! password check (the same argon2id cost for unknown names) under the
//! lockout, and the session cookie.

use super::*;
use crate::auth::{LockoutPolicy, Service};

/// 5 failed logins from one address, or 20 for one administrator name
/// from anywhere, within 10 minutes lock it out for 15, even with the
/// right password. The name's limit is higher: it slows guessing from
/// many addresses, while one address cannot lock an administrator out
/// alone.
pub(super) const LOCKOUT_POLICY: LockoutPolicy = LockoutPolicy {
    address_failures: 5,
    account_failures: 20,
    window: Duration::from_secs(600),
    duration: Duration::from_secs(900),
};

pub(super) const LOCKOUT_SERVICE: Service = Service {
    name: "web",
    failed_logins: &crate::metrics::WEB_FAILED_LOGINS,
    account_locked: "web logins as this administrator are locked out for a while",
};

/// Administrator names are at most 64 characters: a longer name cannot
/// exist, and its lockout key need not be longer.
fn name_key(name: &str) -> &str {
    shown_name(name)
}

pub(super) async fn login_page(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if state.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&state, None, StatusCode::OK)
}

pub(super) fn login_form(state: &WebState, error: Option<&str>, status: StatusCode) -> Response {
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
pub(super) fn password_is_right(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        crate::auth::hash_password("no such administrator").unwrap_or_default()
    });
    match hash {
        Some(h) => crate::auth::password_matches(password, h),
        None => {
            let _ = crate::auth::password_matches(password, &DUMMY);
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

pub(super) async fn login(
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
    let Ok(attempt) = state.lockout.begin(ip, name_key(&form.name)) else {
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
            attempt.withdraw();
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
        attempt.settle(false);
        state.log_login_refusal(ip, &form.name, "wrong name or password");
        return login_form(
            &state,
            Some("Wrong name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    attempt.settle(true);
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

pub(super) async fn logout(
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
