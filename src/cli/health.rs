//! `flagsync health`: one GET of a running server's `/healthz`, for
//! container health checks (the OCI image holds nothing but flagsync).
//! Plain HTTP on purpose: it asks the server on its own address; a server
//! with TLS is asked with an `https://` URL by a real client instead.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::Failure;
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn check(config: &Config, url: Option<&str>) -> Result<u8, Failure> {
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let listen = config.web_listen.replace("0.0.0.0", "127.0.0.1");
            format!("http://{listen}/healthz")
        }
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "'{url}': flagsync health asks plain http:// addresses; use curl for https"
        )));
    };
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/healthz"),
    };
    match get(host, path) {
        Ok((200, body)) => {
            println!("healthy: {}", body.trim());
            Ok(0)
        }
        Ok((status, body)) => {
            println!("unhealthy ({status}): {}", body.trim());
            Ok(1)
        }
        Err(e) => {
            println!("unhealthy: {url}: {e}");
            Ok(1)
        }
    }
}

fn get(host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let address = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}
