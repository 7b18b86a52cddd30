//! `flagsync accounts`: sFTP accounts in the store.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{feed_of, output, Backend, Failure, Io};
use crate::auth::{generate_password, hash_password};
use crate::config::Config;
use crate::sftp::credentials::{fingerprint, parse_allow, parse_public_key, parse_public_keys};
use crate::store::{Account, DataLock, Store};

/// A password shorter than this gets a warning (the customer's system
/// may impose one; refusing it would only move the problem).
const SHORT_PASSWORD_LEN: usize = 12;

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum AccountsCommand {
    /// Add an account for one feed.
    ///
    /// It logs in with a password (`--password-stdin` or
    /// `--generate-password`, which prints it once), public keys (`--key`),
    /// or both. Without `--allow` it may connect from any address.
    Add(AddArgs),
    /// The accounts, their feeds, keys and allowed addresses.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (generated and printed, unless --password-stdin).
    Password {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Add or remove public keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Add or remove allowed addresses (IP or CIDR).
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Remove an account.
    Remove { name: String },
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct AddArgs {
    /// The login name (letters, digits, '.', '-', '_').
    pub name: String,
    /// The feed whose folder the account sees.
    #[arg(long, value_name = "FEED")]
    pub feed: String,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// A public key file (OpenSSH format, one key a line); may be repeated.
    #[arg(long = "key", value_name = "PUBKEY_FILE")]
    pub keys: Vec<PathBuf>,
    /// An address or CIDR range allowed to connect; may be repeated.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
#[group(multiple = false)]
pub struct PasswordArgs {
    /// Read the password from standard input (its first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Generate a password and print it once.
    #[arg(long)]
    pub generate_password: bool,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum KeysCommand {
    /// Add the keys of a public key file.
    Add {
        name: String,
        #[arg(value_name = "PUBKEY_FILE")]
        file: PathBuf,
    },
    /// Remove a key by its fingerprint (`SHA256:...`, as `accounts list` shows).
    Remove { name: String, fingerprint: String },
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum AllowCommand {
    Add { name: String, cidr: String },
    Remove { name: String, cidr: String },
}

fn usage(message: String) -> Failure {
    Failure::Usage(anyhow::anyhow!(message))
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The store open for writing: the server's, or this process's with the
/// data lock held.
pub(super) fn with_store<T>(
    config: &Config,
    backend: &Backend,
    f: impl FnOnce(&Store) -> Result<T, Failure>,
) -> Result<T, Failure> {
    match backend {
        Backend::Server(engine) => f(&engine.store),
        Backend::Local => {
            let _lock = DataLock::acquire(&config.data_dir)?;
            let store = Store::open(&config.store_path())?;
            f(&store)
        }
    }
}

pub fn run(
    config: &Config,
    cmd: AccountsCommand,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    match cmd {
        AccountsCommand::Add(args) => add(config, args, backend, io),
        AccountsCommand::List { json } => list(config, json, backend, io),
        AccountsCommand::Password { name, password } => {
            let (hash, shown) = new_password(&password, true, io)?;
            with_store(config, backend, |store| {
                change(store, &name, |a| a.password_hash = hash.clone())
            })?;
            let mut text = format!("account {name}: password changed\n");
            if let Some(p) = shown {
                text.push_str(&format!("password: {p}\n"));
            }
            output::print_text(io.out, &text)?;
            Ok(0)
        }
        AccountsCommand::Keys(KeysCommand::Add { name, file }) => {
            let keys = read_keys(io, &file)?;
            let count = keys.len();
            with_store(config, backend, |store| {
                change(store, &name, |a| {
                    for k in keys {
                        if !a.keys.contains(&k) {
                            a.keys.push(k);
                        }
                    }
                })
            })?;
            output::print_text(io.out, &format!("account {name}: {count} key(s) added\n"))?;
            Ok(0)
        }
        AccountsCommand::Keys(KeysCommand::Remove {
            name,
            fingerprint: fp,
        }) => {
            let mut found = false;
            with_store(config, backend, |store| {
                change(store, &name, |a| {
                    let before = a.keys.len();
                    a.keys.retain(|k| !key_has_fingerprint(k, &fp));
                    found = a.keys.len() < before;
                })
            })?;
            if !found {
                return Err(usage(format!(
                    "account {name} has no key {fp}; `flagsync accounts list` shows its keys"
                )));
            }
            output::print_text(io.out, &format!("account {name}: key {fp} removed\n"))?;
            Ok(0)
        }
        AccountsCommand::Allow(AllowCommand::Add { name, cidr }) => {
            let net = parse_allow(&cidr)
                .map_err(|e| usage(e.to_string()))?
                .to_string();
            with_store(config, backend, |store| {
                change(store, &name, |a| {
                    if !a.allow.contains(&net) {
                        a.allow.push(net.clone());
                    }
                })
            })?;
            output::print_text(io.out, &format!("account {name}: {net} allowed\n"))?;
            Ok(0)
        }
        AccountsCommand::Allow(AllowCommand::Remove { name, cidr }) => {
            let net = parse_allow(&cidr)
                .map_err(|e| usage(e.to_string()))?
                .to_string();
            let mut found = false;
            with_store(config, backend, |store| {
                change(store, &name, |a| {
                    let before = a.allow.len();
                    a.allow.retain(|n| n != &net);
                    found = a.allow.len() < before;
                })
            })?;
            if !found {
                return Err(usage(format!("account {name} does not list {net}")));
            }
            let mut text = format!("account {name}: {net} no longer allowed\n");
            text.push_str("(an account with an empty allow-list accepts any address)\n");
            output::print_text(io.out, &text)?;
            Ok(0)
        }
        AccountsCommand::Remove { name } => {
            let existed = with_store(config, backend, |store| Ok(store.remove_account(&name)?))?;
            if !existed {
                return Err(no_such_account(&name));
            }
            output::print_text(io.out, &format!("account {name} removed\n"))?;
            Ok(0)
        }
    }
}

fn no_such_account(name: &str) -> Failure {
    usage(format!(
        "there is no account '{name}'; `flagsync accounts list` shows the accounts"
    ))
}

fn change(store: &Store, name: &str, f: impl FnOnce(&mut Account)) -> Result<(), Failure> {
    if store.update_account(name, f)? {
        Ok(())
    } else {
        Err(no_such_account(name))
    }
}

fn key_has_fingerprint(line: &str, fp: &str) -> bool {
    parse_public_key(line).is_ok_and(|k| fingerprint(&k) == fp)
}

/// The keys of a file, each as one canonical OpenSSH line.
fn read_keys(io: &Io, file: &std::path::Path) -> Result<Vec<String>, Failure> {
    let text = io.read_file(file).map_err(Failure::Usage)?;
    let keys = parse_public_keys(&text).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    if keys.is_empty() {
        return Err(usage(format!("{} holds no public key", file.display())));
    }
    keys.iter()
        .map(|k| {
            k.to_openssh()
                .map_err(|e| usage(format!("{}: {e}", file.display())))
        })
        .collect()
}

/// The new password's hash, and the password to print when generated.
pub(super) fn new_password(
    args: &PasswordArgs,
    generate_by_default: bool,
    io: &mut Io,
) -> Result<(Option<String>, Option<String>), Failure> {
    let (password, shown) = if args.password_stdin {
        let text = io.read_stdin()?;
        let first = text.lines().next().unwrap_or("").to_string();
        if first.is_empty() {
            return Err(usage(
                "standard input holds no password (its first line is empty)".into(),
            ));
        }
        if first.chars().count() < SHORT_PASSWORD_LEN {
            tracing::warn!(
                "the password is shorter than {SHORT_PASSWORD_LEN} characters; a long or generated one (--generate-password) is safer"
            );
        }
        (first, None)
    } else if args.generate_password || generate_by_default {
        let p = generate_password().map_err(|e| Failure::Runtime(e.into()))?;
        (p.clone(), Some(p))
    } else {
        return Ok((None, None));
    };
    let hash = hash_password(&password).map_err(|e| Failure::Runtime(e.into()))?;
    Ok((Some(hash), shown))
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn add(config: &Config, args: AddArgs, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    if !valid_name(&args.name) {
        return Err(usage(format!(
            "account name '{}' must be 1-64 letters, digits, '.', '-' or '_', not starting with '-' or '.'",
            args.name
        )));
    }
    feed_of(config, &args.feed)?;
    let allow = args
        .allow
        .iter()
        .map(|a| parse_allow(a).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(e.to_string()))?;
    let mut keys = Vec::new();
    for file in &args.keys {
        keys.extend(read_keys(io, file)?);
    }
    let (password_hash, shown) = new_password(&args.password, false, io)?;
    if password_hash.is_none() && keys.is_empty() {
        return Err(usage(
            "an account needs a way to log in: give --password-stdin, --generate-password or --key FILE".into(),
        ));
    }
    let account = Account {
        name: args.name.clone(),
        feed: args.feed.clone(),
        password_hash,
        keys,
        allow,
        created_at: now_text(),
        last_login: None,
        last_login_from: None,
    };
    with_store(config, backend, |store| {
        if store.account(&account.name)?.is_some() {
            return Err(usage(format!(
                "account '{}' already exists; use `flagsync accounts password|keys|allow` to change it",
                account.name
            )));
        }
        Ok(store.put_account(&account)?)
    })?;
    let mut text = format!(
        "account {} added for feed {} ({})\n",
        account.name,
        account.feed,
        allow_text(&account.allow)
    );
    if let Some(p) = shown {
        text.push_str(&format!("password: {p}\n"));
    }
    output::print_text(io.out, &text)?;
    Ok(0)
}

fn allow_text(allow: &[String]) -> String {
    if allow.is_empty() {
        "from any address".into()
    } else {
        format!("from {}", allow.join(", "))
    }
}

fn list(config: &Config, json: bool, backend: &Backend, io: &mut Io) -> Result<u8, Failure> {
    let accounts = match super::read_store(config, backend)?.get() {
        Some(store) => store.accounts()?,
        None => Vec::new(),
    };
    if json {
        let v: Vec<serde_json::Value> = accounts
            .iter()
            .map(crate::sftp::credentials::account_summary)
            .collect();
        output::print_value(io.out, &serde_json::Value::Array(v))?;
        return Ok(0);
    }
    let mut text = String::new();
    if accounts.is_empty() {
        text.push_str("no accounts; add one with `flagsync accounts add NAME --feed FEED --generate-password`\n");
    }
    for a in &accounts {
        text.push_str(&format!(
            "{}  feed {}  password: {}  keys: {}  {}  last login: {}\n",
            a.name,
            a.feed,
            if a.password_hash.is_some() {
                "yes"
            } else {
                "no"
            },
            a.keys.len(),
            allow_text(&a.allow),
            a.last_login.as_deref().unwrap_or("never")
        ));
        for k in &a.keys {
            if let Ok(key) = parse_public_key(k) {
                text.push_str(&format!(
                    "    {} {}\n",
                    key.algorithm().as_str(),
                    fingerprint(&key)
                ));
            }
        }
    }
    output::print_text(io.out, &text)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["demo", "hr-upload", "acme.hr_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
