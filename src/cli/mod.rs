//! The command line: argument parsing, configuration lookup, output for
//! people (summaries) and for scripts (`--json`), and exit codes.
//!
//! Owns: nothing of the domain; every command calls `worker` or `store`.
//! Exit codes (README, Command line): 0 applied/unchanged or
//! success, 1 failed run or operational error, 2 usage or configuration
//! error, 3 held.

mod accounts;
mod admins;
mod backup;
mod doctor;
mod health;
mod support;

/// `0.1.0 (git 1a2b3c4)`: the crate's version and the revision it was built
/// from (`unknown` outside a git checkout; `FLAGSYNC_GIT_REV` overrides).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("FLAGSYNC_GIT_REV"),
    ")"
);
mod control;
mod feed_show;
pub mod logging;
mod output;
mod pgp;
mod scim;
mod serve;
mod webhooks;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Source};
use crate::store::{ReadStore, RunState, Store};
use crate::support::Redaction;
use crate::worker::{self, ImportOptions, WorkerError};

/// Keeps a mass-notification recipient list in step with an HR or property
/// system: validates each CSV file, diffs it against the store, applies it
/// atomically, and holds back a file that would delete too many people.
#[derive(Debug, Parser)]
#[command(name = "flagsync", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML).
    ///
    /// Default: ./flagsync.toml, or /etc/flagsync/flagsync.toml when
    /// installed under /usr; when that file does not exist, the embedded
    /// default (one demo feed, data in ./flagsync-data) is used.
    #[arg(long, global = true, env = "FLAGSYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Process a file exactly as the server would.
    ///
    /// Validates the file, diffs it against the feed's stored recipients and
    /// applies the changes in one transaction, unless the run would remove
    /// more than the feed's delete threshold (then it is held until
    /// `flagsync runs confirm`). Exit code: 0 applied or unchanged, 3 held,
    /// 1 failed, 2 usage or configuration error.
    Import(ImportArgs),
    /// List, show, confirm or reject runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Recipients of a feed.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Groups of a feed.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Run the server: sFTP, the import worker, the status page, email.
    ///
    /// Stops cleanly on SIGTERM or Ctrl-C: no new connections, a running
    /// import commits or does not start.
    Serve,
    /// sFTP accounts: add, list, passwords, keys, allow-lists, remove.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Administrators of the status page: add, password, remove, list.
    #[command(subcommand)]
    Admins(admins::AdminsCommand),
    /// Each feed's health: last file, overdue, last run, held runs, next
    /// scheduled time; `feeds show NAME`: what a feed's file must hold.
    #[command(args_conflicts_with_subcommands = true)]
    Feeds {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<FeedsCommand>,
    },
    /// Email: send a test message.
    #[command(subcommand)]
    Mail(MailCommand),
    /// OpenPGP: `pgp keygen --feed NAME` makes a feed's key pair for
    /// encrypted files.
    #[command(subcommand)]
    Pgp(pgp::PgpCommand),
    /// Webhooks: ping a feed's targets, make a secret.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// SCIM provisioning: reconcile a feed's target (`scim sync`), show
    /// its state (`scim status`).
    #[command(subcommand)]
    Scim(scim::ScimCommand),
    /// Validate the configuration (and open the store read-only).
    ///
    /// Exits 0 when everything is in order, 2 with every problem listed
    /// otherwise.
    Check,
    /// What support asks for: `support bundle --run ID --out FILE`.
    #[command(subcommand)]
    Support(SupportCommand),
    /// Run a support bundle's file again, here, and compare the outcome.
    ///
    /// Restores the bundle's state before the run into a temporary folder
    /// (no data folder or configuration of this machine is used), runs the
    /// file exactly as the server did (confirming it again if it was
    /// confirmed) and prints the original and the replayed outcome side by
    /// side. Exit 0 when identical, 1 when not, 2 for a bundle that cannot
    /// be read.
    Replay {
        /// A file written by `flagsync support bundle`.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the whole store to a new file.
    ///
    /// Works while the server runs (the server writes the file, as its own
    /// user, so choose a folder it may write) and while it is stopped.
    /// The copy holds recipients, groups, runs, accounts, administrators,
    /// tokens and the outbox; not the data folder's other files (archive,
    /// error reports, held files, host keys).
    Backup {
        /// The file to write; it must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the store by a backup (stop the server first).
    ///
    /// Checks the backup first; the store it replaces is kept beside it as
    /// flagsync.redb.before-restore-<time>.
    Restore {
        /// A file written by `flagsync backup`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check what support asks first: the configuration, the store, the
    /// data folder (owner, mode, free space), the ports, the host keys,
    /// the SMTP server (nothing is sent), the clock and each feed.
    ///
    /// Each line is OK, WARN or FAIL, with what to do for WARN and FAIL.
    /// Sent to the running server like other commands. Exit code: 0
    /// without a FAIL, 1 with one.
    Doctor {
        /// Print {"checks": [{"name", "status", "detail", "fix"}], "ok",
        /// "version"}.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running server's /healthz (for container health checks: the
    /// OCI image has no curl). Exits 0 when it answers 200, 1 otherwise.
    Health {
        /// The address to ask; default: http://<[web] listen>/healthz
        /// (0.0.0.0 asked as 127.0.0.1).
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum MailCommand {
    /// Send a test message with the [smtp] settings and print the
    /// server's answer.
    Test {
        /// The address to send it to.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
    },
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct ImportArgs {
    /// The feed the file belongs to (its `name` in the configuration).
    #[arg(long, value_name = "NAME")]
    pub feed: String,
    /// The CSV file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Show what would change; commit nothing.
    ///
    /// The exit code and the counts are those the real run would have.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum RunsCommand {
    /// Run history, newest first.
    List {
        /// Only this feed's runs.
        #[arg(long, value_name = "NAME")]
        feed: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// One run, with its first errors.
    Show {
        /// The run ID (from `runs list`).
        id: u64,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Who a run added, updated (which fields, old and new) and removed.
    Changes {
        /// The run ID (from `runs list`).
        id: u64,
        /// Only changes of this kind.
        #[arg(long, value_enum)]
        kind: Option<ChangeKind>,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Apply a held run.
    ///
    /// Applies exactly the held file, diffed against the store as it is now.
    Confirm(DecideArgs),
    /// Reject a held run: nothing is applied.
    Reject(DecideArgs),
    /// Put back what an applied run changed, as a new run.
    ///
    /// For every person the run added, updated or removed, the values from
    /// before it come back, unless a later run changed that person again:
    /// then the person is left as is and listed as a conflict. An undo that
    /// would remove more than the feed's delete threshold is held like a
    /// file (exit 3). The next file from the source system applies its
    /// contents again: correct the source first.
    Undo(UndoArgs),
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct UndoArgs {
    /// The applied run's ID.
    pub id: u64,
    /// Who asks for the undo (recorded with the run). Default: the OS user.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A kind of change in a run's change log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Updated => "updated",
            ChangeKind::Removed => "removed",
        }
    }
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct DecideArgs {
    /// The held run's ID.
    pub id: u64,
    /// Who decides (recorded with the run). Default: the OS user.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum RecipientsCommand {
    /// Write the feed's recipients to standard output, sorted by ID.
    ///
    /// CSV: a header of the feed's field names in configuration order, then
    /// one row per recipient, values as stored (phones in E.164,
    /// multi-values joined by their separator), except that a cell a
    /// spreadsheet would run as a formula (starting with = + - @, tab or
    /// CR) is written with a leading ' (a phone +15551234567 as
    /// '+15551234567), as in the error reports; --raw writes them as
    /// stored. JSON: an array of objects with the same names, values
    /// always as stored.
    Export {
        #[arg(long, value_name = "NAME")]
        feed: String,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// CSV: values exactly as stored, for programs (no ' before cells
        /// that start with = + - @).
        ///
        /// Without it, the CSV is safe to open in a spreadsheet: formula-
        /// looking cells are neutralised with a leading '. Programs that
        /// read the export (and compare phones in E.164) want --raw.
        /// JSON is never neutralised.
        #[arg(long)]
        #[serde(default)]
        raw: bool,
    },
    /// What each run did to one person, oldest first (also after they
    /// were removed, while the runs are kept: `history_retention`).
    History {
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// The person's ID, as the feed's ID column holds it.
        id: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Put back one removed person with the values they had when a run
    /// removed them (the latest removal in the kept history), as a new
    /// run.
    Restore {
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// The person's ID, as the feed's ID column holds it.
        id: String,
        /// Who asks for it (recorded with the run). Default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The change feed (as `GET /api/changes`): the applied runs' changes
    /// after a cursor, in the order they committed; it stops at a held
    /// run until that is decided.
    Changes {
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// A cursor from an earlier answer (a line's first column, or
        /// `next`); without it, from the oldest change kept.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// At most this many changes (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print the JSON object of `/api/changes`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum SupportCommand {
    /// One file for support to reproduce a run: the run's file, the feed's
    /// people just before it, its record, report and emails, and the
    /// feed's configuration without secrets.
    ///
    /// Works while the server runs (the server writes the file, as its
    /// own user). The bundle holds personal data unless `--redact`.
    Bundle {
        /// The run (from `runs list`).
        #[arg(long, value_name = "ID")]
        run: u64,
        /// The file to write; it must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace every personal value (file, people before the run,
        /// record, report) by a pseudonym that validation treats the same
        /// way, so the bundle can travel by email or a ticket system.
        #[arg(long)]
        redact: bool,
        /// With --redact (which it implies): the group fields' values
        /// (departments, sites) become pseudonyms too.
        #[arg(long)]
        redact_groups: bool,
    },
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum FeedsCommand {
    /// A feed's mapping: its columns (and aliases), types, required
    /// fields, groups and filters.
    Show {
        /// The feed's name.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
        /// Write a CSV with the feed's header and two rows that import
        /// cleanly, to start an export from.
        #[arg(long, conflicts_with = "json")]
        sample: bool,
        /// Print the ASCII-armoured public key of the feed's
        /// pgp_private_key_file, to send to whoever encrypts its files.
        #[arg(long, conflicts_with_all = ["json", "sample"])]
        #[serde(default)]
        pgp_public_key: bool,
    },
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum GroupsCommand {
    /// The feed's groups with their member counts.
    List {
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// Print a JSON array of {"group", "members"}.
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended, mapped to the exit code by `main`.
pub enum Failure {
    /// Usage or configuration: exit 2.
    Usage(anyhow::Error),
    /// Anything else that went wrong: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<WorkerError> for Failure {
    fn from(e: WorkerError) -> Self {
        match e {
            e if e.is_usage() => Failure::Usage(e.into()),
            other => Failure::Runtime(other.into()),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Runtime(e.into())
    }
}

/// Runs the parsed command; returns the exit code on success. While a
/// server holds the data folder, commands that need the store are sent to
/// it (see `control`) and run there, on its open store.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    // Everything flagsync writes (the store, host keys, uploads, reports)
    // is its own user's alone, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    install_panic_hook();
    // A replay needs no configuration and no data folder (a laptop).
    if let Command::Replay { bundle, json } = &cli.command {
        return support::replay_bundle(bundle, *json, &mut std::io::stdout().lock());
    }
    if let Command::Webhooks(command @ webhooks::WebhooksCommand::Secret) = &cli.command {
        return webhooks::run(None, command);
    }
    let config = load_config(cli.config.as_deref()).map_err(Failure::Usage)?;
    match cli.command {
        Command::Webhooks(command) => return webhooks::run(Some(&config), &command),
        Command::Serve => return serve::serve(config),
        Command::Check => return check(&config),
        Command::Mail(MailCommand::Test { to }) => return mail_test(&config, &to),
        Command::Health { url } => return health::check(&config, url.as_deref()),
        Command::Feeds {
            command:
                Some(FeedsCommand::Show {
                    name,
                    json,
                    sample,
                    pgp_public_key,
                }),
            ..
        } => {
            let feed = feed_of(&config, &name)?;
            let out = &mut std::io::stdout().lock();
            if pgp_public_key {
                return pgp::print_public_key(feed, out);
            }
            feed_show::show(&config, feed, json, sample, out)?;
            return Ok(0);
        }
        _ => {}
    }
    let command = match control::forward_if_serving(&config, cli.command)? {
        control::Forwarded::Done(code) => return Ok(code),
        control::Forwarded::NoServer(command) => command,
    };
    let stdout = std::io::stdout();
    let mut io = Io {
        out: &mut stdout.lock(),
        stdin: None,
        files: Default::default(),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(&config, command, Backend::Local, &mut io)
    }))
    .unwrap_or_else(|_| {
        Err(Failure::Runtime(anyhow::anyhow!(
            "stopped after the internal error above; nothing was half-applied (a run commits whole or not at all)"
        )))
    })
}

/// A panic is a bug, or redb meeting a damaged file: one line that says
/// what to do instead of a stack trace (`FLAGSYNC_BACKTRACE=1` adds it, for
/// a bug report).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if crate::store::verifying() {
            return;
        }
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "flagsync: internal error{place}: {}. If the store file is damaged, `flagsync check` says so (restore it with `flagsync restore BACKUP_FILE`); otherwise please report this with the line above",
            crate::store::panic_text(info.payload())
        );
        if std::env::var_os("FLAGSYNC_BACKTRACE").is_some() {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// Where a command finds the store.
pub enum Backend<'a> {
    /// This process opens it (and takes the data lock to write).
    Local,
    /// The server's open store; writers pass its gate.
    Server(&'a worker::engine::Engine),
}

/// A command's input and output, so that it can run in this process or,
/// sent by the command line, in the server.
pub struct Io<'a> {
    pub out: &'a mut dyn std::io::Write,
    /// Standard input, when the command reads it (`--password-stdin`).
    pub stdin: Option<String>,
    /// Files the command line read for the server (public keys).
    pub files: std::collections::HashMap<PathBuf, String>,
}

impl Io<'_> {
    fn read_stdin(&mut self) -> anyhow::Result<String> {
        match self.stdin.take() {
            Some(s) => Ok(s),
            None => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                Ok(s)
            }
        }
    }

    fn read_file(&self, path: &Path) -> anyhow::Result<String> {
        if let Some(text) = self.files.get(path) {
            return Ok(text.clone());
        }
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
    }
}

/// Runs a command against `backend`.
pub fn execute(
    config: &Config,
    command: Command,
    backend: Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    match command {
        Command::Import(args) => import(config, args, &backend, io),
        Command::Runs(cmd) => runs(config, cmd, &backend, io),
        Command::Recipients(RecipientsCommand::Export { feed, format, raw }) => {
            export(config, &feed, format, raw, &backend, io)
        }
        Command::Recipients(RecipientsCommand::History { feed, id, json }) => {
            history(config, &feed, &id, json, &backend, io)
        }
        Command::Recipients(RecipientsCommand::Restore { feed, id, by, json }) => {
            feed_of(config, &feed)?;
            let by = decided_by(by);
            let run = match &backend {
                Backend::Local => worker::restore_recipient(config, &feed, &id, &by)?,
                Backend::Server(engine) => {
                    let _gate = engine.exclusive();
                    worker::restore_recipient_in(config, &engine.store, &feed, &id, &by)?
                }
            };
            output::print_run_outcome(io.out, &run, json)?;
            Ok(exit_code_of(run.state))
        }
        Command::Recipients(RecipientsCommand::Changes {
            feed,
            after,
            limit,
            json,
        }) => change_feed(config, &feed, after.as_deref(), limit, json, &backend, io),
        Command::Groups(GroupsCommand::List { feed, json }) => {
            groups(config, &feed, json, &backend, io)
        }
        Command::Accounts(cmd) => accounts::run(config, cmd, &backend, io),
        Command::Feeds {
            command:
                Some(FeedsCommand::Show {
                    name,
                    json,
                    sample,
                    pgp_public_key,
                }),
            ..
        } => {
            let feed = feed_of(config, &name)?;
            if pgp_public_key {
                return pgp::print_public_key(feed, io.out);
            }
            feed_show::show(config, feed, json, sample, io.out)?;
            Ok(0)
        }
        Command::Pgp(cmd) => pgp::run(config, cmd, io.out),
        Command::Feeds { json, .. } => feeds(config, json, &backend, io),
        Command::Admins(cmd) => admins::run(config, cmd, &backend, io),
        Command::Check => check(config),
        Command::Mail(MailCommand::Test { to }) => mail_test(config, &to),
        Command::Webhooks(command) => webhooks::run(Some(config), &command),
        Command::Scim(command) => scim::run(config, command, &backend, io),
        Command::Health { url } => health::check(config, url.as_deref()),
        Command::Doctor { json } => doctor::doctor(config, json, &backend, io),
        Command::Backup { out } => backup::backup(config, &out, &backend, io),
        Command::Support(SupportCommand::Bundle {
            run,
            out,
            redact,
            redact_groups,
        }) => {
            let redaction = match (redact, redact_groups) {
                (_, true) => Redaction::PersonalAndGroups,
                (true, false) => Redaction::Personal,
                (false, false) => Redaction::None,
            };
            support::bundle(config, run, &out, redaction, &backend, io)
        }
        Command::Replay { bundle, json } => support::replay_bundle(&bundle, json, io.out),
        Command::Restore { file } => backup::restore(config, &file, &backend, io),
        Command::Serve => Err(Failure::Usage(anyhow::anyhow!(
            "a server is already running on this data folder"
        ))),
    }
}

fn read_store<'a>(config: &Config, backend: &Backend<'a>) -> Result<ReadStore<'a>, Failure> {
    Ok(match backend {
        Backend::Server(engine) => ReadStore::Borrowed(&engine.store),
        Backend::Local => match Store::open_read_only(&config.store_path())? {
            Some(s) => ReadStore::Owned(s),
            None => ReadStore::Empty,
        },
    })
}

/// The configuration file's default place.
fn default_config_path() -> PathBuf {
    let installed = std::env::current_exe()
        .map(|p| p.starts_with("/usr"))
        .unwrap_or(false);
    if installed {
        PathBuf::from("/etc/flagsync/flagsync.toml")
    } else {
        PathBuf::from("flagsync.toml")
    }
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let config = match explicit {
        Some(path) => Config::load(path)?,
        None => {
            let path = default_config_path();
            if path.exists() {
                Config::load(&path)?
            } else {
                tracing::info!(
                    "no configuration at {}; using the embedded default",
                    path.display()
                );
                Config::embedded()?
            }
        }
    };
    Ok(config)
}

fn feed_of<'c>(config: &'c Config, name: &str) -> Result<&'c crate::config::Feed, Failure> {
    config.feed(name).ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "feed '{name}' is not configured in {}; configured feeds: {}",
            config.source,
            config.feed_names()
        ))
    })
}

fn exit_code_of(state: RunState) -> u8 {
    match state {
        RunState::Applied | RunState::Unchanged | RunState::Rejected | RunState::Superseded => 0,
        RunState::Held => 3,
        RunState::Failed => 1,
    }
}

fn import(
    config: &Config,
    args: ImportArgs,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    let feed = feed_of(config, &args.feed)?;
    let run = match backend {
        Backend::Local => {
            let options = ImportOptions {
                dry_run: args.dry_run,
                progress: !args.json,
                ..Default::default()
            };
            worker::import_file(config, feed, &args.file, options)?
        }
        Backend::Server(engine) => {
            let options = ImportOptions {
                dry_run: args.dry_run,
                ..Default::default()
            };
            let _gate = engine.exclusive();
            worker::import_file_in(config, &engine.store, feed, &args.file, options)?
        }
    };
    output::print_run_outcome(io.out, &run, args.json)?;
    Ok(exit_code_of(run.state))
}

/// The store and its run `id`; a usage error when there is no such run.
fn find_run<'s>(
    config: &Config,
    store: Option<&'s Store>,
    id: u64,
) -> Result<(&'s Store, crate::store::Run), Failure> {
    let store = store.ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "run {id} does not exist: the store {} has no runs yet",
            config.store_path().display()
        ))
    })?;
    let run = store.get_run(id).map_err(|e| match e {
        crate::store::StoreError::UnknownRun(_) => Failure::Usage(e.into()),
        other => other.into(),
    })?;
    Ok((store, run))
}

fn decided_by(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn runs(config: &Config, cmd: RunsCommand, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    match cmd {
        RunsCommand::List { feed, json } => {
            if let Some(f) = &feed {
                feed_of(config, f)?;
            }
            let runs = match read_store(config, backend)?.get() {
                Some(store) => store.list_runs(feed.as_deref())?,
                None => Vec::new(),
            };
            output::print_run_list(io.out, &runs, json)?;
            Ok(0)
        }
        RunsCommand::Show { id, json } => {
            let store = read_store(config, backend)?;
            let (store, run) = find_run(config, store.get(), id)?;
            let emails = store.messages_of_run(id)?;
            let webhooks = store.webhooks_of_run(id)?;
            output::print_run_detail(io.out, &run, &emails, &webhooks, json)?;
            Ok(0)
        }
        RunsCommand::Changes { id, kind, json } => {
            let store = read_store(config, backend)?;
            let (store, run) = find_run(config, store.get(), id)?;
            let mut changes = store.run_changes(&run.feed, id)?;
            if let Some(kind) = kind {
                changes.retain(|c| c.kind() == kind.as_str());
            }
            output::print_run_changes(io.out, &run, &changes, json)?;
            Ok(0)
        }
        RunsCommand::Confirm(args) => {
            let by = decided_by(args.by);
            let run = match backend {
                Backend::Local => {
                    let options = ImportOptions {
                        progress: !args.json,
                        ..Default::default()
                    };
                    worker::confirm_run(config, args.id, &by, options)?
                }
                Backend::Server(engine) => {
                    let _gate = engine.exclusive();
                    let options = ImportOptions::default();
                    worker::confirm_run_in(config, &engine.store, args.id, &by, options)?
                }
            };
            output::print_run_outcome(io.out, &run, args.json)?;
            Ok(exit_code_of(run.state))
        }
        RunsCommand::Reject(args) => {
            let by = decided_by(args.by);
            let run = match backend {
                Backend::Local => worker::reject_run(config, args.id, &by)?,
                Backend::Server(engine) => {
                    let _gate = engine.exclusive();
                    worker::reject_run_in(config, &engine.store, args.id, &by)?
                }
            };
            output::print_run_outcome(io.out, &run, args.json)?;
            Ok(0)
        }
        RunsCommand::Undo(args) => {
            let by = decided_by(args.by);
            let run = match backend {
                Backend::Local => worker::undo_run(config, args.id, &by)?,
                Backend::Server(engine) => {
                    let _gate = engine.exclusive();
                    worker::undo_run_in(config, &engine.store, args.id, &by)?
                }
            };
            output::print_run_outcome(io.out, &run, args.json)?;
            Ok(exit_code_of(run.state))
        }
    }
}

fn export(
    config: &Config,
    feed_name: &str,
    format: Format,
    raw: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    let feed = feed_of(config, feed_name)?;
    let store = read_store(config, backend)?;
    output::export_recipients(io.out, feed, store.get(), format, raw)?;
    Ok(0)
}

fn history(
    config: &Config,
    feed_name: &str,
    id: &str,
    json: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    feed_of(config, feed_name)?;
    let store = read_store(config, backend)?;
    let entries = match store.get() {
        Some(store) => store.recipient_history(feed_name, id)?,
        None => Vec::new(),
    };
    output::print_history(io.out, feed_name, id, &entries, json)?;
    Ok(0)
}

fn change_feed(
    config: &Config,
    feed_name: &str,
    after: Option<&str>,
    limit: u16,
    json: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    let feed = feed_of(config, feed_name)?;
    let after = after
        .map(crate::store::FeedCursor::parse)
        .transpose()
        .map_err(|text| Failure::Usage(anyhow::anyhow!(text)))?;
    let page = match read_store(config, backend)?.get() {
        Some(store) => match store.changes_after(feed_name, after.as_ref(), limit.into()) {
            Ok(page) => page,
            Err(crate::store::FeedError::Store(e)) => return Err(e.into()),
            Err(refused) => return Err(Failure::Usage(refused.into())),
        },
        // No store yet: no run, so no cursor is one of this feed's.
        None if after.is_some() => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "there are no runs yet, so no cursor; leave out --after"
            )))
        }
        None => Default::default(),
    };
    output::print_feed_page(io.out, feed, &page, after.as_ref(), json)?;
    Ok(0)
}

fn groups(
    config: &Config,
    feed_name: &str,
    json: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    feed_of(config, feed_name)?;
    let groups = match read_store(config, backend)?.get() {
        Some(store) => store.groups(feed_name)?,
        None => Vec::new(),
    };
    output::print_groups(io.out, &groups, json)?;
    Ok(0)
}

fn feeds(config: &Config, json: bool, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    let store = read_store(config, backend)?;
    let all = config
        .feeds
        .iter()
        .map(|f| crate::worker::status::feed_health(config, f, store.get()).map_err(Failure::from))
        .collect::<Result<Vec<_>, _>>()?;
    if json {
        output::print_value(
            io.out,
            &serde_json::to_value(&all).map_err(anyhow::Error::from)?,
        )?;
        return Ok(0);
    }
    let mut text = String::new();
    for f in &all {
        text.push_str(&feed_in_words(f));
    }
    output::print_text(io.out, &text)?;
    Ok(0)
}

/// One feed's health as `flagsync feeds` prints it: the same facts as the
/// page's card, in the same order.
fn feed_in_words(f: &crate::worker::status::FeedHealth) -> String {
    use crate::import::printable;
    let mut out = format!("{}: {}\n", f.feed, printable(&f.health.text));
    out.push_str(&format!(
        "  recipients: {} in {} groups\n",
        f.recipients, f.groups
    ));
    let last = match &f.last_run {
        None => "none yet".to_string(),
        Some(r) => {
            let counts = format!(
                "{} added, {} updated, {} removed",
                r.added, r.updated, r.removed
            );
            let counts = match r.state {
                "applied" => format!(", {counts}"),
                "held" | "rejected" | "superseded" => format!(", would have {counts}"),
                _ => String::new(),
            };
            format!(
                "run {} {}{counts} ({}, {})",
                r.run_id.unwrap_or_default(),
                r.state,
                printable(&r.file),
                r.finished_local
            )
        }
    };
    out.push_str(&format!("  last run: {last}\n"));
    if let Some(scim) = &f.scim {
        out.push_str(&format!("  SCIM target: {}", printable(&scim.text)));
        if scim.failed > 0 {
            out.push_str(&format!(
                "; {} refused (`flagsync scim status --feed {}`)",
                scim.failed, f.feed
            ));
        }
        out.push('\n');
    }
    if !f.held_runs.is_empty() {
        let ids: Vec<String> = f.held_runs.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "  held runs waiting: {} (`flagsync runs show ID`, then confirm or reject)\n",
            ids.join(", ")
        ));
    }
    let last_file = match (&f.last_file_local, &f.watched_since_local) {
        (Some(at), _) => at.clone(),
        (None, Some(since)) => format!("none yet (watched since {since})"),
        (None, None) => "none yet".to_string(),
    };
    out.push_str(&format!(
        "  last file: {last_file}{}; expected every {}\n",
        if f.overdue { " — OVERDUE" } else { "" },
        f.expect_every
    ));
    out.push_str(&format!(
        "  schedule: {}{}\n",
        f.schedule,
        f.next_scheduled_local
            .as_deref()
            .map(|n| format!(", next {n}"))
            .unwrap_or_default()
    ));
    out
}

fn mail_test(config: &Config, to: &str) -> Result<u8, Failure> {
    let smtp = config.smtp.as_ref().ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "there is no [smtp] table in {}; add one to send email",
            config.source
        ))
    })?;
    let mailer = crate::mail::Mailer::new(smtp).map_err(|e| Failure::Usage(e.into()))?;
    let text = format!(
        "This is a test message from flagsync.\n\nSMTP server: {}:{} ({})\n",
        smtp.host, smtp.port, smtp.security
    );
    let html = format!(
        "<p>This is a test message from flagsync.</p><p>SMTP server: {}:{} ({})</p>",
        smtp.host, smtp.port, smtp.security
    );
    let reply = mailer
        .send(
            &format!(
                "flagsync.test.{}",
                crate::auth::random_token().map_err(|e| Failure::Runtime(e.into()))?
            ),
            &[to.to_string()],
            "[flagsync] test message",
            &text,
            &html,
            None,
        )
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("the test message was not sent: {e}")))?;
    println!("sent to {to}; the server answered: {reply}");
    Ok(0)
}

fn check(config: &Config) -> Result<u8, Failure> {
    let mut problems = crate::support::doctor::smtp_problems(config);
    problems.extend(crate::support::doctor::key_problems(config));
    problems.extend(crate::webhook::config_problems(config));
    problems.extend(crate::scim::config_problems(config));
    if !problems.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{}: {}",
            config.source,
            problems.join("\n  ")
        )));
    }
    let store_path = config.store_path();
    let opened = crate::store::guard_damage(&store_path, || {
        let store = Store::open_read_only(&store_path)?;
        let entries = match &store {
            Some(s) => s.verify()?,
            None => 0,
        };
        Ok(store.map(|_| entries))
    });
    let store_note = match opened {
        Ok(Some(entries)) => format!(
            "store {} opens and reads whole ({entries} entries)",
            store_path.display()
        ),
        Ok(None) => format!(
            "store {} will be created at the first run",
            store_path.display()
        ),
        Err(crate::store::StoreError::InUse { .. }) => {
            format!(
                "store {} is in use by a running flagsync",
                store_path.display()
            )
        }
        Err(e) => {
            return Err(Failure::Usage(
                anyhow::Error::from(e).context("the store cannot be opened"),
            ))
        }
    };
    let source = match &config.source {
        Source::File(p) => p.display().to_string(),
        Source::Embedded => "embedded default".to_string(),
    };
    println!(
        "configuration OK ({source}): {} feed(s): {}; {store_note}",
        config.feeds.len(),
        config.feed_names()
    );
    for warning in crate::support::doctor::config_warnings(config) {
        eprintln!("warning: {warning}");
    }
    print_key_notes(config);
    Ok(0)
}

/// The feeds' OpenPGP keys (fingerprints); those near their expiry are
/// among `config_warnings`.
fn print_key_notes(config: &Config) {
    for feed in &config.feeds {
        if let Some(text) = crate::import::pgp::describe_keys(feed) {
            println!("{text}");
        }
    }
}

/// Prints an error chain once, ripgrep style.
pub fn print_error(e: &anyhow::Error) {
    // Errors quote file names and values from files.
    eprintln!("{}", crate::import::printable_lines(&error_text(e)));
}

fn error_text(e: &anyhow::Error) -> String {
    let mut text = format!("flagsync: {e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!(": {cause}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_global_before_or_after_the_subcommand() {
        for args in [
            &[
                "flagsync", "--config", "f.toml", "import", "--feed", "hr", "x.csv",
            ][..],
            &[
                "flagsync", "import", "--config", "f.toml", "--feed", "hr", "x.csv",
            ][..],
            &[
                "flagsync",
                "import",
                "--feed",
                "hr",
                "x.csv",
                "--config=f.toml",
            ][..],
        ] {
            let cli = parse(args);
            assert_eq!(cli.config.as_deref(), Some(Path::new("f.toml")), "{args:?}");
        }
    }

    #[test]
    fn import_flags() {
        let cli = parse(&[
            "flagsync",
            "import",
            "--feed",
            "hr",
            "x.csv",
            "--dry-run",
            "--json",
        ]);
        match cli.command {
            Command::Import(a) => {
                assert_eq!(a.feed, "hr");
                assert_eq!(a.file, PathBuf::from("x.csv"));
                assert!(a.dry_run && a.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["flagsync", "import", "x.csv"]).is_err(),
            "--feed is required"
        );
    }

    #[test]
    fn runs_and_exports() {
        match parse(&[
            "flagsync", "runs", "confirm", "7", "--by", "alice", "--json",
        ])
        .command
        {
            Command::Runs(RunsCommand::Confirm(a)) => {
                assert_eq!((a.id, a.by.as_deref(), a.json), (7, Some("alice"), true))
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "flagsync",
            "recipients",
            "export",
            "--feed",
            "hr",
            "--format",
            "json",
        ])
        .command
        {
            Command::Recipients(RecipientsCommand::Export { feed, format, raw }) => {
                assert_eq!(feed, "hr");
                assert!(matches!(format, Format::Json));
                assert!(!raw, "neutralised unless asked");
            }
            other => panic!("{other:?}"),
        }
        match parse(&["flagsync", "recipients", "export", "--feed", "hr", "--raw"]).command {
            Command::Recipients(RecipientsCommand::Export { format, raw, .. }) => {
                assert!(matches!(format, Format::Csv));
                assert!(raw);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["flagsync", "runs", "show", "seven"]).is_err());
        assert!(Cli::try_parse_from([
            "flagsync",
            "recipients",
            "export",
            "--feed",
            "hr",
            "--format",
            "xml"
        ])
        .is_err());
    }

    #[test]
    fn pgp_flags() {
        match parse(&["flagsync", "pgp", "keygen", "--feed", "hr"]).command {
            Command::Pgp(pgp::PgpCommand::Keygen { feed, algorithm }) => {
                assert_eq!(feed, "hr");
                assert!(
                    matches!(algorithm, pgp::Algorithm::Rsa3072),
                    "RSA by default"
                );
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "flagsync",
            "pgp",
            "keygen",
            "--feed",
            "hr",
            "--algorithm",
            "ed25519",
        ])
        .command
        {
            Command::Pgp(pgp::PgpCommand::Keygen { algorithm, .. }) => {
                assert!(matches!(algorithm, pgp::Algorithm::Ed25519))
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["flagsync", "pgp", "keygen"]).is_err());
        assert!(Cli::try_parse_from([
            "flagsync",
            "pgp",
            "keygen",
            "--feed",
            "hr",
            "--algorithm",
            "dsa"
        ])
        .is_err());
        match parse(&["flagsync", "feeds", "show", "hr", "--pgp-public-key"]).command {
            Command::Feeds {
                command: Some(FeedsCommand::Show { pgp_public_key, .. }),
                ..
            } => assert!(pgp_public_key),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from([
            "flagsync",
            "feeds",
            "show",
            "hr",
            "--pgp-public-key",
            "--json"
        ])
        .is_err());
    }

    #[test]
    fn decided_by_defaults_to_the_os_user() {
        assert_eq!(decided_by(Some("bob".into())), "bob");
        assert!(!decided_by(None).is_empty());
    }
}
