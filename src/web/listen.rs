//! The accept loop: plain or TLS, connection caps and deadlines
//! (`limits`), hyper HTTP/1.1 serving the router.

use super::*;

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

/// Our own accept loop (`crate::listen`), plain or TLS: connection caps
/// per address and in all (over them a connection is closed at once), the
/// TLS handshake's deadline, then hyper's HTTP/1.1 with the request head's
/// deadline, which also ends idle kept-alive connections (`limits`). At
/// `shutdown` the listener closes, each connection finishes its request in
/// flight and closes; after [`limits::SHUTDOWN_GRACE`] the rest are
/// dropped.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let app = router(state);
    let connections = limits::connections();
    let settings = crate::listen::Settings {
        accept_failed: "web accept failed; retrying",
        grace: limits::SHUTDOWN_GRACE,
        still_open: "web connections still open at shutdown were closed",
    };
    // A refusal is logged, at most every few seconds, by `try_take`.
    let admit = |peer: SocketAddr| connections.try_take(peer.ip()).ok();
    let stop = shutdown.clone();
    let serve = |tcp: tokio::net::TcpStream, peer: SocketAddr, slot| {
        let _ = tcp.set_nodelay(true);
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let tls = tls.clone();
        let stop = stop.clone();
        async move {
            // Counted until the connection ends.
            let _slot = slot;
            serve_connection(tcp, peer, app, tls, stop).await
        }
    };
    crate::listen::accept_loop(listener, shutdown, settings, admit, serve).await
}

/// One connection: the TLS handshake within its deadline if there is TLS,
/// then HTTP/1.1.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(acceptor) = tls else {
        return serve_http(tcp, peer, app, stop).await;
    };
    match tokio::time::timeout(limits::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_http(tls, peer, app, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// HTTP/1.1 on one connection until the client or `shutdown` ends it.
pub(super) async fn serve_http<I>(
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
