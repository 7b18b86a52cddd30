//! `flagsync doctor`: prints the checks of `support::doctor` (one line
//! each, or `--json`) and exits 0 without a FAIL (warnings allowed), 1 with
//! one.
//!
//! Like `backup`, it is sent to a running server (see `control`): there the
//! checks read the server's open store and connect to the addresses the
//! server bound; without a server they open the store read-only here.

use super::{Backend, Failure, Io};
use crate::config::Config;
use crate::support::doctor::{all_checks, any_failed, text, Check};
use crate::worker::engine::Engine;

/// Runs every check and prints them; 1 when one failed.
pub fn doctor(config: &Config, json: bool, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    let checks = all_checks(config, server(backend));
    print(io.out, &checks, json)?;
    Ok(if any_failed(&checks) { 1 } else { 0 })
}

/// The checks' text as `flagsync doctor` prints it (for a support bundle).
pub fn report(config: &Config, backend: &Backend) -> String {
    crate::support::doctor::report(config, server(backend))
}

fn server<'a>(backend: &Backend<'a>) -> Option<&'a Engine> {
    match backend {
        Backend::Server(engine) => Some(engine),
        Backend::Local => None,
    }
}

fn print(out: &mut dyn std::io::Write, checks: &[Check], json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({
            "checks": checks,
            "ok": !any_failed(checks),
            "version": super::VERSION,
        });
        return super::output::print_value(out, &value);
    }
    super::output::print_text(out, &text(checks))
}
