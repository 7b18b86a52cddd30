//! `flagsync pgp keygen`: a feed's OpenPGP key pair, made in the data
//! folder; `flagsync feeds show NAME --pgp-public-key`: its public key,
//! to hand to the sender.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};

use super::{feed_of, Failure};
use crate::config::{Config, Feed};
use crate::import::pgp::{self, KeyAlgorithm};
use crate::layout::FeedFolders;

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum PgpCommand {
    /// Make an OpenPGP key pair for a feed's encrypted files.
    ///
    /// Writes the secret key to <data_dir>/<feed>/pgp.key (mode 0600; an
    /// existing file is never overwritten), then prints the line to add to
    /// the feed's configuration and the public key to send to whoever
    /// encrypts the files. The key has no passphrase (the file is
    /// flagsync's user's only) and no expiry (an expired key stops a
    /// nightly feed without warning on the sender's side; replace keys by
    /// making a new one).
    Keygen {
        /// The feed the key is for.
        #[arg(long, value_name = "NAME")]
        feed: String,
        /// rsa3072 (the default) is taken by every HR platform and older
        /// PGP tool; ed25519 (Curve25519 for encryption) is smaller and
        /// faster, read by GnuPG 2.1+ and most current tools.
        #[arg(long, value_enum, default_value_t = Algorithm::Rsa3072)]
        algorithm: Algorithm,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    Rsa3072,
    Rsa4096,
    Ed25519,
}

impl From<Algorithm> for KeyAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Rsa3072 => KeyAlgorithm::Rsa3072,
            Algorithm::Rsa4096 => KeyAlgorithm::Rsa4096,
            Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
        }
    }
}

pub fn run(config: &Config, command: PgpCommand, out: &mut dyn Write) -> Result<u8, Failure> {
    match command {
        PgpCommand::Keygen { feed, algorithm } => {
            let feed = feed_of(config, &feed)?;
            keygen(config, feed, algorithm.into(), out)
        }
    }
}

fn keygen(
    config: &Config,
    feed: &Feed,
    algorithm: KeyAlgorithm,
    out: &mut dyn Write,
) -> Result<u8, Failure> {
    let path = absolute(&FeedFolders::new(config.feed_dir(&feed.name)).pgp_key());
    if path.exists() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} exists already, and a key is never overwritten (the sender may encrypt to it): use it (`flagsync feeds show {} --pgp-public-key` prints its public key), or move it away first",
            path.display(),
            feed.name
        )));
    }
    let key = pgp::generate_key(&feed.name, algorithm)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
    write_secret(&path, &key.secret).map_err(|e| {
        Failure::Runtime(anyhow::anyhow!(
            "cannot write the secret key to {}: {e}",
            path.display()
        ))
    })?;
    writeln!(
        out,
        "secret key (fingerprint {}) written to {}",
        key.fingerprint,
        path.display()
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    writeln!(
        out,
        "add this line to feed '{}' in the configuration:\n\n  pgp_private_key_file = \"{}\"\n\nand send this public key to whoever encrypts the files:\n",
        feed.name,
        path.display()
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    out.write_all(key.public.as_bytes())
        .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(0)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Creates `path` (and its folder, 0700) with mode 0600; fails when it
/// exists.
fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `feeds show NAME --pgp-public-key`.
pub fn print_public_key(feed: &Feed, out: &mut dyn Write) -> Result<u8, Failure> {
    let armored = pgp::feed_public_key(feed).map_err(|e| Failure::Usage(anyhow::anyhow!(e)))?;
    out.write_all(armored.as_bytes())
        .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(0)
}
