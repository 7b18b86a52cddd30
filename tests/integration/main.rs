//! End-to-end tests against the built `flagsync` binary.
//!
//! Each test gets a fresh temp dir with its own configuration and data
//! folder (see `util`), runs the real binary and checks what users see:
//! exit codes, `--json` output, `recipients export`, `groups list`, `runs`,
//! error reports and the data folder on disk.
//!
//! Two tiers. Plain `cargo test` runs the command-line tests: they need
//! nothing but the binary (a contributor's quick loop). The `e2e` feature
//! (`./scripts/test`, what CI runs) adds everything that meets a real
//! client or needs the machine: the server with OpenSSH, curl, paramiko,
//! rclone, PuTTY, Go, Node, PHP and Java clients, Chromium, an SMTP server
//! in Python, tmpfs mounts as root, crash loops.

// Helpers the command-line tier does not use.
#![cfg_attr(not(feature = "e2e"), allow(dead_code, unused_imports))]

mod bad_input;
mod changes;
mod compressed;
mod config;
mod crash;
mod diff;
mod docs;
mod doctor;
mod feeds;
mod file_format;
mod real_files;
mod reports;
mod row_errors;
mod runs;
mod scim;
mod server;
mod undo;
mod util;
mod webhooks;

#[cfg(feature = "e2e")]
mod change_feed;
#[cfg(feature = "e2e")]
mod crash_loop;
#[cfg(feature = "e2e")]
mod load;
#[cfg(feature = "e2e")]
mod logs;
#[cfg(feature = "e2e")]
mod mail;
#[cfg(feature = "e2e")]
mod pgp;
#[cfg(feature = "e2e")]
mod redact;
#[cfg(feature = "e2e")]
mod schedule;
#[cfg(feature = "e2e")]
mod serve;
#[cfg(feature = "e2e")]
mod sftp;
#[cfg(feature = "e2e")]
mod sftp_attacks;
#[cfg(feature = "e2e")]
mod sftp_clients;
#[cfg(feature = "e2e")]
mod sftp_faults;
#[cfg(feature = "e2e")]
mod store_faults;
#[cfg(feature = "e2e")]
mod support;
#[cfg(feature = "e2e")]
mod web;
#[cfg(feature = "e2e")]
mod web_changes;
// openpyxl and xlwt, which ./scripts/test installs.
#[cfg(feature = "e2e")]
mod workbooks;
