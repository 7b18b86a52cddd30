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
    cli::logging::init(if serving { "info" } else { "warn" });
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
