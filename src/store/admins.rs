//! Administrators of the status page: `admins`: name → JSON [`Admin`].

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{optional, Store, StoreError};

const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admins");

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
        let json = serde_json::to_vec(admin).map_err(|e| StoreError::Damaged(e.to_string()))?;
        let txn = self.writable()?.begin_write()?;
        txn.open_table(ADMINS)?
            .insert(admin.name.as_str(), json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// `false` when there was no such admin.
    pub fn remove_admin(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.writable()?.begin_write()?;
        let existed = txn.open_table(ADMINS)?.remove(name)?.is_some();
        txn.commit()?;
        Ok(existed)
    }
}
