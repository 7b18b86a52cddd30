//! The `flagsync` binary: maps [`flagsync::cli::run`] to exit codes.

use std::process::ExitCode;

use clap::Parser;
use flagsync::cli;

fn main() -> ExitCode {
    init_logging();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(cli::Failure::Usage(e)) => {
            cli::print_error(&e);
            ExitCode::from(2)
        }
        Err(cli::Failure::Runtime(e)) => {
            cli::print_error(&e);
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `FLAGSYNC_LOG` (or `RUST_LOG`) sets the filter,
/// `warn` by default so that commands print only their own output.
fn init_logging() {
    let filter = std::env::var("FLAGSYNC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .init();
}
