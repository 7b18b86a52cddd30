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
    if serving {
        keep_freed_memory();
    }
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

/// mimalloc.h (v3): `mi_option_purge_delay` is entry 15 of `mi_option_e`,
/// which libmimalloc-sys does not name (the test below checks it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The server keeps the memory a run or the search indexer frees, for the
/// next run, instead of handing it back to the system a second later.
/// Handed back, a run seconds later had to fault it all in again: on a VM
/// whose host reclaims the guest's free pages (virtio-balloon free page
/// reporting) that was 0.4-1.2 s of system time in a 0.7 s delta run
/// (docs/BENCHMARKS.md). The cost: the process keeps the size of its
/// biggest run (about 300 MB for a million rows). `MIMALLOC_PURGE_DELAY`
/// (milliseconds; mimalloc's own variable) chooses otherwise.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a process-wide allocator option; mimalloc reads its
    // options atomically and allows setting them at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    /// The option numbered 15 is the purge delay: no other option of
    /// mimalloc v3 defaults to 1000 (ms).
    #[test]
    fn option_15_is_mimallocs_purge_delay() {
        // SAFETY: reads a process-wide allocator option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000, "run without MIMALLOC_PURGE_DELAY set");
    }
}
