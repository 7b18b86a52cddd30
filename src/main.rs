//! The `flagsync` binary: maps [`flagsync::cli::run`] to exit codes.

use std::process::ExitCode;

use clap::Parser;
use flagsync::cli;

/// See Cargo.toml: why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
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

/// Asks Linux to back this process's memory with ordinary 4 KiB pages.
///
/// A run touches a few hundred MB of fresh memory once (row lists, read
/// blocks, the index). With transparent huge pages set to `always` (the
/// default of many distributions) each first touch of a 2 MiB region zeroes
/// all of it, and on a VM whose host reclaims free guest memory (balloon
/// free-page reporting) the host has to provide it again too: measured
/// here, the 1M-row daily delta took 1.29-2.37 s with huge pages and
/// 0.83-0.87 s without, the initial load 6.1-6.4 s against 3.5-3.7 s
/// (same binary, same machine, taking turns). Nothing flagsync does gains
/// from huge pages. Failing (an old kernel) changes nothing else.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments
    // and only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
