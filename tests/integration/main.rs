//! End-to-end tests against the built `flagsync` binary.
//!
//! Each test gets a fresh temp dir with its own configuration and data
//! folder (see `util`), runs the real binary and checks what users see:
//! exit codes, `--json` output, `recipients export`, `groups list`, `runs`,
//! error reports and the data folder on disk.

mod bad_input;
mod config;
mod crash;
mod crash_loop;
mod diff;
mod docs;
mod feeds;
mod file_format;
mod load;
mod logs;
mod mail;
mod real_files;
mod reports;
mod row_errors;
mod runs;
mod schedule;
mod serve;
mod server;
mod sftp;
mod sftp_attacks;
mod sftp_clients;
mod sftp_faults;
mod store_faults;
mod util;
mod web;
