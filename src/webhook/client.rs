//! The HTTP client: one POST per connection (hyper's HTTP/1.1 client over
//! a tokio TCP stream, in TLS with rustls for `https://`), with the
//! system's CA certificates plus the target's `ca_file`, the URL's host
//! as SNI, and one deadline for the whole exchange. Redirects are never
//! followed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::config::HookUrl;

/// Of a webhook receiver's answer, this much is read (and its start kept
/// for the error message); a SCIM target's answers are read whole up to
/// the caller's limit.
const MAX_ANSWER_BODY: usize = 4 << 20;
const SHOWN_ANSWER_CHARS: usize = 200;

/// The receiver's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    /// `location` of a redirect.
    pub location: Option<String>,
    /// The body's start, on one line.
    pub body: String,
    /// The whole body (up to the limit), for a caller that reads it (SCIM).
    pub full_body: Bytes,
    /// False when the body was larger than the limit or broke off:
    /// `full_body` is then empty.
    pub complete: bool,
}

impl Answer {
    /// `HTTP 200 OK`.
    pub fn status_line(&self) -> String {
        format!("HTTP {} {}", self.status, self.reason)
    }
}

/// TLS settings of one target: the system's roots and `ca_file`'s.
pub fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates leave the ones that read; a target
    // with its own CA still works.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POSTs `body` with `headers` to `url`; any answer is `Ok` (the caller
/// judges its status), no answer within `timeout` is an error.
pub async fn post(
    url: &HookUrl,
    tls: &TlsConnector,
    headers: &[(&str, String)],
    body: String,
    timeout: Duration,
) -> Result<Answer, String> {
    send(
        "POST",
        url,
        tls,
        headers,
        Some(body),
        timeout,
        MAX_ANSWER_BODY,
    )
    .await
}

/// Sends one `method` request (with a JSON `body` when given); any answer
/// is `Ok` (its body read up to `max_body` bytes), no answer within
/// `timeout` is an error.
pub async fn send(
    method: &str,
    url: &HookUrl,
    tls: &TlsConnector,
    headers: &[(&str, String)],
    body: Option<String>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, String> {
    let exchange = exchange(method, url, tls, headers, body, max_body);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "no answer within {} (the target's timeout)",
            humantime::format_duration(timeout)
        )),
    }
}

async fn exchange(
    method: &str,
    url: &HookUrl,
    tls: &TlsConnector,
    headers: &[(&str, String)],
    body: Option<String>,
    max_body: usize,
) -> Result<Answer, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host, url.port))?;
    if !url.https {
        return request(TokioIo::new(tcp), method, url, headers, body, max_body).await;
    }
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| format!("'{}' is not a host name for TLS: {e}", url.host))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {}: {e}", url.host))?;
    request(TokioIo::new(stream), method, url, headers, body, max_body).await
}

async fn request<T>(
    io: T,
    method: &str,
    url: &HookUrl,
    headers: &[(&str, String)],
    body: Option<String>,
    max_body: usize,
) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP with {}: {e}", url.host))?;
    // Drives the connection; it ends when `sender` is dropped.
    let driver = tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(url.target.as_str())
        .header("host", host_header(url))
        .header(
            "user-agent",
            concat!("flagsync/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("the request cannot be built: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP with {}: {e}", url.host))?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let read = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let complete = read.is_ok();
    let bytes = read.unwrap_or_default();
    drop(sender);
    driver.abort();
    Ok(Answer {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        location,
        body: one_line(&String::from_utf8_lossy(&bytes)),
        full_body: bytes,
        complete,
    })
}

/// `host[:port]`, the port only when not the scheme's own.
fn host_header(url: &HookUrl) -> String {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let default = if url.https { 443 } else { 80 };
    if url.port == default {
        host
    } else {
        format!("{host}:{}", url.port)
    }
}

fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SHOWN_ANSWER_CHARS)
        .collect();
    line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that answers one request with 200 and `body`.
    async fn answering(body: &'static str) -> HookUrl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
        HookUrl::parse(&format!("http://127.0.0.1:{port}/x")).unwrap()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_marked_incomplete_not_cut() {
        let tls = tls_connector(None).unwrap();
        let timeout = Duration::from_secs(5);
        let url = answering("{\"Resources\": []}").await;
        let whole = send("GET", &url, &tls, &[], None, timeout, 1024)
            .await
            .unwrap();
        assert!(whole.complete);
        assert_eq!(&whole.full_body[..], b"{\"Resources\": []}");
        let url = answering("{\"Resources\": []}").await;
        let over = send("GET", &url, &tls, &[], None, timeout, 8)
            .await
            .unwrap();
        assert_eq!(over.status, 200);
        assert!(!over.complete);
        assert!(over.full_body.is_empty());
    }
}
