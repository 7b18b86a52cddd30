//! `flagsync admins`: administrators of the status page.

use clap::Subcommand;
use serde_json::json;

use super::accounts::{new_password, valid_name, with_store, PasswordArgs};
use super::{output, Backend, Failure, Io};
use crate::config::Config;
use crate::store::Admin;

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum AdminsCommand {
    /// Add an administrator (the password is generated and printed unless
    /// --password-stdin).
    Add {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a new password (generated and printed unless --password-stdin).
    Password {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove an administrator.
    Remove { name: String },
    /// The administrators and their last logins.
    List {
        #[arg(long)]
        json: bool,
    },
    /// API tokens for `/api/` (sent as `Authorization: Bearer TOKEN`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum TokenCommand {
    /// Make a token acting as administrator NAME; it is printed once.
    Create { name: String },
    /// The tokens (their IDs, not the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its ID (from `token list`).
    Revoke { id: String },
}

fn usage(message: String) -> Failure {
    Failure::Usage(anyhow::anyhow!(message))
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn run(
    config: &Config,
    cmd: AdminsCommand,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    match cmd {
        AdminsCommand::Add { name, password } => {
            if !valid_name(&name) {
                return Err(usage(format!(
                    "administrator name '{name}' must be 1-64 letters, digits, '.', '-' or '_'"
                )));
            }
            let (hash, shown) = new_password(&password, true, io)?;
            let admin = Admin {
                name: name.clone(),
                password_hash: hash.unwrap_or_default(),
                created_at: now_text(),
                last_login: None,
            };
            with_store(config, backend, |store| {
                if store.admin(&name)?.is_some() {
                    return Err(usage(format!(
                        "administrator '{name}' already exists; `flagsync admins password {name}` sets a new password"
                    )));
                }
                Ok(store.put_admin(&admin)?)
            })?;
            let mut text = format!("administrator {name} added\n");
            if let Some(p) = shown {
                text.push_str(&format!("password: {p}\n"));
            }
            output::print_text(io.out, &text)?;
            Ok(0)
        }
        AdminsCommand::Password { name, password } => {
            let (hash, shown) = new_password(&password, true, io)?;
            with_store(config, backend, |store| {
                let Some(mut admin) = store.admin(&name)? else {
                    return Err(no_such_admin(&name));
                };
                admin.password_hash = hash.clone().unwrap_or_default();
                Ok(store.put_admin(&admin)?)
            })?;
            let mut text = format!("administrator {name}: password changed\n");
            if let Some(p) = shown {
                text.push_str(&format!("password: {p}\n"));
            }
            output::print_text(io.out, &text)?;
            Ok(0)
        }
        AdminsCommand::Remove { name } => {
            let existed = with_store(config, backend, |store| Ok(store.remove_admin(&name)?))?;
            if !existed {
                return Err(no_such_admin(&name));
            }
            output::print_text(io.out, &format!("administrator {name} removed\n"))?;
            Ok(0)
        }
        AdminsCommand::Token(TokenCommand::Create { name }) => {
            let token = crate::auth::random_token().map_err(|e| Failure::Runtime(e.into()))?;
            let record = with_store(config, backend, |store| {
                if store.admin(&name)?.is_none() {
                    return Err(no_such_admin(&name));
                }
                Ok(store.add_api_token(&token, &name, &now_text())?)
            })?;
            output::print_text(
                io.out,
                &format!(
                    "token {} for {name} (shown once):\ntoken: {token}\n",
                    record.id
                ),
            )?;
            Ok(0)
        }
        AdminsCommand::Token(TokenCommand::List { json }) => {
            let tokens = match super::read_store(config, backend)?.get() {
                Some(store) => store.api_tokens()?,
                None => Vec::new(),
            };
            if json {
                let v: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| json!({"id": t.id, "admin": t.admin, "created_at": t.created_at}))
                    .collect();
                output::print_value(io.out, &serde_json::Value::Array(v))?;
            } else {
                let mut text = String::new();
                for t in &tokens {
                    text.push_str(&format!(
                        "{}  {}  created {}\n",
                        t.id, t.admin, t.created_at
                    ));
                }
                output::print_text(io.out, &text)?;
            }
            Ok(0)
        }
        AdminsCommand::Token(TokenCommand::Revoke { id }) => {
            if id.len() < 6 {
                return Err(usage("give at least 6 characters of the token's ID".into()));
            }
            let removed = with_store(config, backend, |store| Ok(store.revoke_api_token(&id)?))?;
            if !removed {
                return Err(usage(format!(
                    "there is no token with ID {id}; `flagsync admins token list` shows them"
                )));
            }
            output::print_text(io.out, &format!("token {id} revoked\n"))?;
            Ok(0)
        }
        AdminsCommand::List { json } => {
            let admins = match super::read_store(config, backend)?.get() {
                Some(store) => store.admins()?,
                None => Vec::new(),
            };
            if json {
                let v: Vec<serde_json::Value> = admins
                    .iter()
                    .map(|a| json!({"name": a.name, "created_at": a.created_at, "last_login": a.last_login}))
                    .collect();
                output::print_value(io.out, &serde_json::Value::Array(v))?;
            } else {
                let mut text = String::new();
                for a in &admins {
                    text.push_str(&format!(
                        "{}  last login: {}\n",
                        a.name,
                        a.last_login.as_deref().unwrap_or("never")
                    ));
                }
                if admins.is_empty() {
                    text.push_str("no administrators; add one with `flagsync admins add NAME`\n");
                }
                output::print_text(io.out, &text)?;
            }
            Ok(0)
        }
    }
}

fn no_such_admin(name: &str) -> Failure {
    usage(format!(
        "there is no administrator '{name}'; `flagsync admins list` shows them"
    ))
}
