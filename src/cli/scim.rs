//! `flagsync scim`: reconcile a feed's SCIM target (`sync`), and show how
//! far it has received the feed's changes (`status`). Both use the store:
//! sent to a running server like other commands, else run here.

use clap::Subcommand;

use super::{feed_of, output, read_store, Backend, Failure, Io};
use crate::config::Config;
use crate::store::{DataLock, Store};

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum ScimCommand {
    /// Reconcile the feed's whole SCIM target with the store now.
    ///
    /// Reads every User (and Group) of the target and fixes each
    /// difference: missing people are created, differing ones replaced,
    /// extra users flagsync provisioned removed (`scim_remove`); then the
    /// target's cursor is set to the change log's end. For the first
    /// connection and after a long outage ("needs a full sync"). Exits 1
    /// when the target failed or refused someone.
    Sync {
        /// The feed whose `[feed.scim]` target is reconciled.
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the target's state: in sync, behind by N changes, failing
    /// (with the last error) or needs a full sync; and the people it
    /// refused, with the reasons.
    Status {
        /// The feed whose `[feed.scim]` target is shown.
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    config: &Config,
    command: ScimCommand,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    match command {
        ScimCommand::Sync { feed, json } => sync(config, &feed, json, backend, io),
        ScimCommand::Status { feed, json } => status(config, &feed, json, backend, io),
    }
}

fn target_of(config: &Config, feed: &str) -> Result<crate::scim::Target, Failure> {
    let feed = feed_of(config, feed)?;
    match crate::scim::Target::new(feed) {
        Ok(Some(target)) => Ok(target),
        Ok(None) => Err(Failure::Usage(anyhow::anyhow!(
            "feed '{}' has no [feed.scim] in {}; add one first",
            feed.name,
            config.source
        ))),
        Err(e) => Err(Failure::Usage(anyhow::anyhow!(
            "feed '{}', [feed.scim]: {e}",
            feed.name
        ))),
    }
}

fn sync(
    config: &Config,
    feed: &str,
    json: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    let target = target_of(config, feed)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot start the HTTP client: {e}")))?;
    let outcome = match backend {
        Backend::Server(engine) => runtime.block_on(crate::scim::sync_feed(&engine.store, &target)),
        Backend::Local => {
            let _lock = DataLock::acquire(&config.data_dir)?;
            let store = Store::open(&config.store_path())?;
            runtime.block_on(crate::scim::sync_feed(&store, &target))
        }
    };
    let report = match outcome {
        Ok(report) => report,
        Err(crate::scim::Fault::Store(e)) => return Err(e.into()),
        Err(fault) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "the SCIM target of feed '{feed}' failed: {fault}; fix it and run `flagsync scim sync --feed {feed}` again"
            )))
        }
    };
    if json {
        output::print_value(
            io.out,
            &serde_json::to_value(&report).map_err(anyhow::Error::from)?,
        )?;
    } else {
        let mut text = format!(
            "feed '{feed}': {} created, {} replaced, {} unchanged, {} removed; groups: {} created, {} replaced, {} deleted\n",
            report.created, report.replaced, report.unchanged, report.removed,
            report.groups_created, report.groups_replaced, report.groups_deleted
        );
        text.push_str(&refused_lines(&report.failed));
        output::print_text(io.out, &text)?;
    }
    Ok(u8::from(!report.failed.is_empty()))
}

fn status(
    config: &Config,
    feed: &str,
    json: bool,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    target_of(config, feed)?;
    let store = read_store(config, backend)?;
    let Some(store) = store.get() else {
        output::print_text(
            io.out,
            &format!("feed '{feed}': SCIM target: no store yet, nothing pushed\n"),
        )?;
        return Ok(0);
    };
    let status = crate::scim::status(store, feed)?;
    if json {
        output::print_value(
            io.out,
            &serde_json::to_value(&status).map_err(anyhow::Error::from)?,
        )?;
        return Ok(0);
    }
    let mut text = format!("feed '{feed}': SCIM target {}\n", status.summary(feed));
    if let Some(at) = &status.last_success_at {
        text.push_str(&format!("  last success: {at}\n"));
    }
    text.push_str(&refused_lines(&status.failures));
    output::print_text(io.out, &text)?;
    Ok(0)
}

/// "  refused: WHO: WHY" lines, one per person (or group) the target refused.
fn refused_lines(refused: &std::collections::BTreeMap<String, String>) -> String {
    refused
        .iter()
        .map(|(who, why)| {
            format!(
                "  refused: {}: {}\n",
                crate::import::printable(who),
                crate::import::printable(why)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ScimCommand;
    use crate::cli::{Cli, Command};

    #[test]
    fn scim_commands_parse_and_need_a_feed() {
        let cli =
            Cli::try_parse_from(["flagsync", "scim", "sync", "--feed", "hr", "--json"]).unwrap();
        match cli.command {
            Command::Scim(ScimCommand::Sync { feed, json }) => {
                assert_eq!((feed.as_str(), json), ("hr", true))
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["flagsync", "scim", "status", "--feed", "hr"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Scim(ScimCommand::Status { json: false, .. })
        ));
        assert!(Cli::try_parse_from(["flagsync", "scim", "sync"]).is_err());
    }
}
