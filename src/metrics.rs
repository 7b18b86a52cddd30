//! Process-wide counters for `/metrics`, and the Prometheus text format.
//!
//! Why globals: the counts are bumped where things happen (an sFTP
//! session starts, a login fails, a file is queued) by modules that know
//! nothing of the page, and there is one server per process. Everything
//! else `/metrics` shows is read from the store at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// sFTP sessions logged in now.
pub static SFTP_SESSIONS: AtomicI64 = AtomicI64::new(0);
/// Failed sFTP logins since the start.
pub static SFTP_FAILED_LOGINS: AtomicU64 = AtomicU64::new(0);
/// Failed status page logins since the start.
pub static WEB_FAILED_LOGINS: AtomicU64 = AtomicU64::new(0);
/// Files handed to the intake and not yet finished.
pub static INTAKE_QUEUED: AtomicI64 = AtomicI64::new(0);

pub fn add(counter: &AtomicI64, by: i64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn read_gauge(counter: &AtomicI64) -> i64 {
    counter.load(Ordering::Relaxed).max(0)
}

pub fn read_counter(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One metric family being written: its HELP and TYPE lines, then samples.
pub struct Exposition {
    text: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            text: String::with_capacity(4096),
        }
    }

    /// Starts a family; `kind` is `gauge` or `counter`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and line breaks (the text format's rule).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_follow_the_text_format() {
        let mut e = Exposition::new();
        e.family("flagsync_runs", "gauge", "Runs by feed and state.")
            .sample("flagsync_runs", &[("feed", "h\"r"), ("state", "held")], 2.0)
            .family("flagsync_up", "gauge", "Up.")
            .sample("flagsync_up", &[], 1.0)
            .sample("flagsync_ratio", &[], 0.5);
        assert_eq!(
            e.finish(),
            "# HELP flagsync_runs Runs by feed and state.\n# TYPE flagsync_runs gauge\n\
             flagsync_runs{feed=\"h\\\"r\",state=\"held\"} 2\n\
             # HELP flagsync_up Up.\n# TYPE flagsync_up gauge\nflagsync_up 1\nflagsync_ratio 0.5\n"
        );
    }
}
