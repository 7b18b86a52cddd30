//! The `flagsync` binary: maps [`flagsync::cli::run`] to exit codes.

use std::process::ExitCode;

use clap::Parser;
use flagsync::cli;

/// See Cargo.toml: why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The server reports what it does; other commands print only their
    // own output.
    let serving = matches!(cli.command, cli::Command::Serve);
    init_logging(if serving { "info" } else { "warn" });
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
/// `default` otherwise.
fn init_logging(default: &str) {
    let filter = std::env::var("FLAGSYNC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .init();
}
