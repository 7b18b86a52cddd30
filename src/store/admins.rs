//! Administrators of the status page: `admins`: name → JSON [`Admin`].

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{optional, Store, StoreError};

const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admins");
/// SHA-256 (hex) of an API token → JSON [`ApiToken`]. Tokens are 256
/// random bits, so a fast hash is enough; the token itself is never kept.
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub admin: String,
    /// The first 12 hex digits of the hash: how `token list` and
    /// `token revoke` name it.
    pub id: String,
    pub created_at: String,
}

pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: String,
    pub last_login: Option<String>,
}

fn decode(bytes: &[u8]) -> Result<Admin, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("an admin record is unreadable: {e}")))
}

impl Store {
    pub fn admins(&self) -> Result<Vec<Admin>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(ADMINS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    pub fn admin(&self, name: &str) -> Result<Option<Admin>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(ADMINS))? else {
            return Ok(None);
        };
        let found = table.get(name)?;
        found.map(|v| decode(v.value())).transpose()
    }

    pub fn put_admin(&self, admin: &Admin) -> Result<(), StoreError> {
        let json = serde_json::to_vec(admin).map_err(|e| StoreError::Internal(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(ADMINS)?
            .insert(admin.name.as_str(), json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// `false` when there was no such admin. Its API tokens go with it.
    pub fn remove_admin(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let existed = txn.open_table(ADMINS)?.remove(name)?.is_some();
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            tokens.retain(|_, v| {
                serde_json::from_slice::<ApiToken>(v).map_or(true, |t| t.admin != name)
            })?;
        }
        txn.commit()?;
        Ok(existed)
    }

    pub fn add_api_token(
        &self,
        token: &str,
        admin: &str,
        created_at: &str,
    ) -> Result<ApiToken, StoreError> {
        let hash = token_hash(token);
        let record = ApiToken {
            admin: admin.to_string(),
            id: hash[..12].to_string(),
            created_at: created_at.to_string(),
        };
        let json = serde_json::to_vec(&record).map_err(|e| StoreError::Internal(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(API_TOKENS)?
            .insert(hash.as_str(), json.as_slice())?;
        txn.commit()?;
        Ok(record)
    }

    pub fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(API_TOKENS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let v = entry?.1;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Damaged(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// `false` when no token has that ID.
    pub fn revoke_api_token(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let mut removed = false;
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            tokens.retain(|k, _| {
                let keep = !k.starts_with(id) || id.is_empty();
                removed |= !keep;
                keep
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }

    /// The administrator an API token belongs to, if it is valid.
    pub fn admin_for_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        if token.len() < 32 {
            return Ok(None);
        }
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(API_TOKENS))? else {
            return Ok(None);
        };
        let found = table.get(token_hash(token).as_str())?;
        let Some(v) = found else { return Ok(None) };
        let record: ApiToken =
            serde_json::from_slice(v.value()).map_err(|e| StoreError::Damaged(e.to_string()))?;
        Ok(self.admin(&record.admin)?.map(|a| a.name))
    }
}
