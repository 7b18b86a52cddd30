//! The server's log: tracing's text lines on stderr, each line made safe
//! before it is written.
//!
//! Why a writer and not care at every call site: login names, file names
//! and header cells come from outside, and one of them holding a line
//! break or a terminal escape code would forge a log line or rewrite the
//! operator's terminal. Escaping the whole formatted line catches every
//! field, `Display` ones included, and errors that quote a value.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::import::printable;

/// Logs go to stderr, one event per line with its wall-clock time in
/// RFC 3339 (UTC); `FLAGSYNC_LOG` (or `RUST_LOG`) sets the filter,
/// `default` otherwise; `FLAGSYNC_LOG_FORMAT=json` writes JSON lines for
/// log shippers.
pub fn init(default: &str) {
    let filter = std::env::var("FLAGSYNC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(SafeLines)
        // Colour codes would be escaped like any other control character.
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::SystemTime);
    match log_format() {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

enum LogFormat {
    Text,
    Json,
}

/// `FLAGSYNC_LOG_FORMAT`: `json`, or text (anything else, with a warning
/// once logging is up, so a typo does not go unseen).
fn log_format() -> LogFormat {
    match std::env::var("FLAGSYNC_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") | Ok("") | Err(_) => LogFormat::Text,
        Ok(other) => {
            eprintln!(
                "flagsync: FLAGSYNC_LOG_FORMAT={} is not known; logging as text (use json or text)",
                printable(other)
            );
            LogFormat::Text
        }
    }
}

/// Hands tracing one [`SafeLine`] per event.
struct SafeLines;

impl<'a> MakeWriter<'a> for SafeLines {
    type Writer = SafeLine;

    fn make_writer(&'a self) -> SafeLine {
        SafeLine(Vec::with_capacity(256))
    }
}

/// One event's text, collected, then written to stderr as one escaped line
/// when tracing drops it.
struct SafeLine(Vec<u8>);

impl Write for SafeLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SafeLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = safe_line(&self.0);
        // Nowhere to report a failed log write.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// `raw` as exactly one line: every control character but the final line
/// break escaped, invalid UTF-8 replaced.
fn safe_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    format!("{}\n", printable(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_or_escape_code_stays_inside_one_escaped_line() {
        assert_eq!(
            safe_line(b"INFO upload file=\"a\nINFO fake\" done\n"),
            "INFO upload file=\"a\\u{A}INFO fake\" done\n"
        );
        assert_eq!(safe_line(b"x \x1b[2J y\n"), "x \\u{1B}[2J y\n");
        assert_eq!(safe_line(b"no newline"), "no newline\n");
        assert_eq!(safe_line(b"bad \xff byte\n"), "bad \u{FFFD} byte\n");
    }
}
