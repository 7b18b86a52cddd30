//! What wraps every response: the security headers (outermost), and the
//! request body's size and deadline.

use super::*;

/// Security headers on every response (invariant 3).
pub(super) async fn security_headers(
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
pub(super) async fn bounded_body(request: Request, next: Next) -> Response {
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

pub(super) fn body_too_large() -> Response {
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
pub(super) fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
