//! flagsync: keeps a mass-notification recipient list in step with an HR or
//! property system.
//!
//! Layout (arrows are "may use"; ARCHITECTURE.md has the whole picture):
//! `cli` → `worker` → `store`, `report` → `import`, `config`.
//! - [`config`]: the TOML file, validated into a [`config::Config`].
//! - [`import`]: the pure core (parse → validate → diff → plan): no redb,
//!   no tokio, no network.
//! - [`store`]: the redb file, its tables, one write transaction per run.
//! - [`report`]: the error report CSV and the report email's text.
//! - [`search`]: the recipient search's keys and query ranges (pure).
//! - [`webhook`]: signed run events POSTed to each feed's targets.
//! - [`scim`]: each feed's people and groups pushed to a SCIM 2.0 target.
//! - [`worker`]: the order of a run's steps, shared by CLI and server.
//! - [`cli`]: arguments, output for people and scripts, exit codes.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod import;
pub mod layout;
mod listen;
pub mod mail;
pub mod metrics;
pub mod report;
pub mod scim;
pub mod search;
pub mod sftp;
pub mod store;
pub mod support;
pub mod web;
pub mod webhook;
pub mod worker;
