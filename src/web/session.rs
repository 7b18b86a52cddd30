//! Who is asking: extractors that give a handler a logged-in administrator
//! (and, for forms that change something, one whose CSRF token matched),
//! so that no handler checks the session by hand and none can forget to.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{message, same_token, CsrfForm, WebState};

/// A page request with a live session: its administrator and the
/// session's CSRF token (for the forms the page shows). Without one the
/// browser is sent to the login page.
pub struct LoggedIn {
    pub admin: String,
    pub csrf: String,
}

impl FromRequestParts<Arc<WebState>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<WebState>,
    ) -> Result<Self, Self::Rejection> {
        match state.session(&parts.headers) {
            Some((admin, csrf)) => Ok(LoggedIn { admin, csrf }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// A form POST that changes something: a live session and the session's
/// own CSRF token in the form's `csrf` field. Without a session: 401;
/// with another token: 403.
pub struct CheckedForm {
    pub admin: String,
}

impl FromRequest<Arc<WebState>> for CheckedForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<WebState>) -> Result<Self, Self::Rejection> {
        let Some((admin, csrf)) = state.session(req.headers()) else {
            return Err(message(StatusCode::UNAUTHORIZED, "log in first"));
        };
        let Form(form) = Form::<CsrfForm>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same_token(&csrf, &form.csrf) {
            return Err(message(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token; reload the page",
            ));
        }
        Ok(CheckedForm { admin })
    }
}
