//! `flagsync webhooks`: a fresh secret, and a signed ping to a feed's
//! targets. Neither needs the store, so neither is sent to a running
//! server.

use clap::Subcommand;

use super::{feed_of, Failure};
use crate::config::Config;
use crate::import::printable_lines;

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum WebhooksCommand {
    /// Send a signed `ping` to each of a feed's webhooks now.
    ///
    /// Prints each target's answer; exits 1 when one did not answer 2xx.
    /// Nothing is queued: the ping is sent once.
    Test {
        /// The feed whose `[[feed.webhook]]` targets are pinged.
        #[arg(long, value_name = "NAME")]
        feed: String,
    },
    /// Print a new Standard Webhooks secret (`whsec_` + base64).
    ///
    /// Write it to the file `secret_file` names (readable by flagsync
    /// only) and give the receiver the same text.
    Secret,
}

/// Runs a webhooks command; returns the exit code.
pub fn run(config: Option<&Config>, command: &WebhooksCommand) -> Result<u8, Failure> {
    match command {
        WebhooksCommand::Secret => {
            let secret = crate::webhook::Secret::generate()
                .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
            println!("{secret}");
            Ok(0)
        }
        WebhooksCommand::Test { feed } => {
            let config = config.ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!("webhooks test needs the configuration"))
            })?;
            test(config, feed)
        }
    }
}

fn test(config: &Config, feed: &str) -> Result<u8, Failure> {
    let feed = feed_of(config, feed)?;
    if feed.webhooks.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "feed '{}' has no [[feed.webhook]] in {}; add one first",
            feed.name,
            config.source
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot start the HTTP client: {e}")))?;
    let mut failed = false;
    for result in runtime.block_on(crate::webhook::ping(feed)) {
        let said = match &result.outcome {
            Ok(answer) => format!("delivered: {}", answer.status_line()),
            Err(e) => {
                failed = true;
                format!("FAILED: {e}")
            }
        };
        println!("{}: {}", result.url, printable_lines(&said));
    }
    Ok(u8::from(failed))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::WebhooksCommand;

    #[test]
    fn webhooks_test_needs_a_feed_and_secret_takes_nothing() {
        let cli = Cli::try_parse_from(["flagsync", "webhooks", "test", "--feed", "hr"]).unwrap();
        match cli.command {
            Command::Webhooks(WebhooksCommand::Test { feed }) => assert_eq!(feed, "hr"),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["flagsync", "webhooks", "test"]).is_err());
        let cli = Cli::try_parse_from(["flagsync", "webhooks", "secret"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Webhooks(WebhooksCommand::Secret)
        ));
        assert!(Cli::try_parse_from(["flagsync", "webhooks", "secret", "x"]).is_err());
    }
}
