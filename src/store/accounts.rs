//! sFTP accounts: `accounts` table, name → JSON [`Account`].
//!
//! The store keeps what an account is; checking a password or a key is the
//! `sftp` module's business.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{optional, Store, StoreError};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// One sFTP login. It belongs to exactly one feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub feed: String,
    /// argon2id PHC string; `None` for a key-only account.
    pub password_hash: Option<String>,
    /// Public keys in OpenSSH format (`ssh-ed25519 AAAA... comment`).
    pub keys: Vec<String>,
    /// Addresses and CIDR ranges allowed to log in; empty means any.
    pub allow: Vec<String>,
    pub created_at: String,
    pub last_login: Option<String>,
    pub last_login_from: Option<String>,
}

fn decode(bytes: &[u8]) -> Result<Account, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("an account record is unreadable: {e}")))
}

impl Store {
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(ACCOUNTS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(ACCOUNTS))? else {
            return Ok(None);
        };
        let found = table.get(name)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// Writes an account, replacing one of the same name.
    pub fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        let json = serde_json::to_vec(account).map_err(|e| StoreError::Internal(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(ACCOUNTS)?
            .insert(account.name.as_str(), json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Changes one account in a single write transaction; `false` when it
    /// does not exist.
    pub fn update_account(
        &self,
        name: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let found = {
            let mut table = txn.open_table(ACCOUNTS)?;
            let current = table.get(name)?.map(|v| decode(v.value())).transpose()?;
            match current {
                Some(mut account) => {
                    change(&mut account);
                    let json = serde_json::to_vec(&account)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    table.insert(name, json.as_slice())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }

    /// `false` when there was no such account.
    pub fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let existed = txn.open_table(ACCOUNTS)?.remove(name)?.is_some();
        txn.commit()?;
        Ok(existed)
    }
}
