//! SCIM targets' state: how far each feed's target has received the change
//! log (its cursor), the target's ids of our people and groups, and the
//! people whose last push the target refused.
//!
//! Tables:
//! - `scim_state`: feed → JSON [`ScimState`] (cursor, failing, failures);
//! - `scim_users/<feed>`: recipient ID → JSON [`ScimUser`] (the target's
//!   id of the user, and the groups it was last put in there);
//! - `scim_groups/<feed>`: group name → the target's id of the group.
//!
//! Invariants:
//! 1. The cursor only moves forward over changes that were pushed (or
//!    whose user was refused and recorded in `failures`): the target has
//!    every change up to it.
//! 2. These tables are written by the SCIM sender and `flagsync scim
//!    sync` only, never in a run's transaction: a target never slows or
//!    fails a run.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{optional, table_name, Store, StoreError};

const SCIM_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("scim_state");
/// Failures kept per target: the newest replace the oldest.
pub const MAX_SCIM_FAILURES: usize = 200;

/// Where a target stands in its feed's change log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "cursor")]
pub enum ScimPosition {
    /// Never synced: the sender decides (from the oldest change when the
    /// feed has nobody yet, else a full sync is needed).
    #[default]
    Never,
    /// Before the first change kept.
    Start,
    /// Just after this change (a [`super::FeedCursor`], encoded).
    At(String),
}

/// One target's delivery state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimState {
    pub position: ScimPosition,
    /// The cursor went out of the change log (`history_retention`), or
    /// the target was never synced while the feed had people: only
    /// `flagsync scim sync` brings it back.
    pub needs_full_sync: bool,
    /// Why the target was unwell at the last attempt (`None`: it was not).
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Unix seconds before which the sender does not try again.
    pub next_attempt: u64,
    pub last_success_at: Option<String>,
    /// Recipient ID (or `group NAME`) → why the target refused its last
    /// push (cleared when a later push of it succeeds).
    pub failures: BTreeMap<String, String>,
    /// A long backlog is being pushed users first: once it is through,
    /// every group is put whole (kept across a restart).
    #[serde(default)]
    pub groups_deferred: bool,
}

impl ScimState {
    /// Records that the target refused `id`'s change.
    pub fn fail_user(&mut self, id: &str, reason: String) {
        if self.failures.len() >= MAX_SCIM_FAILURES && !self.failures.contains_key(id) {
            if let Some(first) = self.failures.keys().next().cloned() {
                self.failures.remove(&first);
            }
        }
        self.failures.insert(id.to_string(), reason);
    }
}

/// The target's user for one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimUser {
    /// The target's `id`.
    pub id: String,
    /// The groups the user was last made a member of there.
    #[serde(default)]
    pub groups: Vec<String>,
}

fn users_def(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Values as bytes: a layout the store's backup already knows.
fn groups_def(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(e.to_string()))
}

fn unjson<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Damaged(format!("{what} is unreadable: {e}")))
}

impl Store {
    /// The feed's target state (the default before its first push).
    pub fn scim_state(&self, feed: &str) -> Result<ScimState, StoreError> {
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(SCIM_STATE))? else {
            return Ok(ScimState::default());
        };
        let found = table.get(feed)?;
        match found {
            Some(v) => unjson(v.value(), "a SCIM target's state"),
            None => Ok(ScimState::default()),
        }
    }

    pub fn put_scim_state(&self, feed: &str, state: &ScimState) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(SCIM_STATE)?
            .insert(feed, json(state)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The target's user of recipient `id`, if one is remembered.
    pub fn scim_user(&self, feed: &str, id: &str) -> Result<Option<ScimUser>, StoreError> {
        let name = table_name("scim_users", feed);
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(users_def(&name)))? else {
            return Ok(None);
        };
        let found = table.get(id)?;
        found.map(|v| unjson(v.value(), "a SCIM user")).transpose()
    }

    /// Every remembered user of the feed's target, by recipient ID.
    pub fn scim_users(&self, feed: &str) -> Result<BTreeMap<String, ScimUser>, StoreError> {
        let name = table_name("scim_users", feed);
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(users_def(&name)))? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.insert(k.value().to_string(), unjson(v.value(), "a SCIM user")?);
        }
        Ok(out)
    }

    /// Remembers (`Some`) or forgets the target's user of recipient `id`.
    pub fn put_scim_user(
        &self,
        feed: &str,
        id: &str,
        user: Option<&ScimUser>,
    ) -> Result<(), StoreError> {
        let name = table_name("scim_users", feed);
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(users_def(&name))?;
            match user {
                Some(user) => {
                    table.insert(id, json(user)?.as_slice())?;
                }
                None => {
                    table.remove(id)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// [`Store::put_scim_user`] for many people, in one transaction.
    pub fn put_scim_users(
        &self,
        feed: &str,
        users: &[(String, Option<ScimUser>)],
    ) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let name = table_name("scim_users", feed);
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(users_def(&name))?;
            for (id, user) in users {
                match user {
                    Some(user) => {
                        table.insert(id.as_str(), json(user)?.as_slice())?;
                    }
                    None => {
                        table.remove(id.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every remembered group of the feed's target: name → the target's id.
    pub fn scim_groups(&self, feed: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let name = table_name("scim_groups", feed);
        let txn = self.begin_read()?;
        let Some(table) = optional(txn.open_table(groups_def(&name)))? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let id = String::from_utf8(v.value().to_vec())
                .map_err(|_| StoreError::Damaged("a SCIM group id is not UTF-8".into()))?;
            out.insert(k.value().to_string(), id);
        }
        Ok(out)
    }

    /// Remembers (`Some`) or forgets the target's id of group `group`.
    pub fn put_scim_group(
        &self,
        feed: &str,
        group: &str,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = table_name("scim_groups", feed);
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(groups_def(&name))?;
            match id {
                Some(id) => {
                    table.insert(group, id.as_bytes())?;
                }
                None => {
                    table.remove(group)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_users_and_groups_are_remembered_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.scim_state("hr").unwrap(), ScimState::default());
        let mut state = ScimState {
            position: ScimPosition::At("3.41".into()),
            ..ScimState::default()
        };
        state.fail_user("A", "HTTP 400".into());
        store.put_scim_state("hr", &state).unwrap();
        assert_eq!(store.scim_state("hr").unwrap(), state);
        let user = ScimUser {
            id: "x1".into(),
            groups: vec!["g".into()],
        };
        store.put_scim_user("hr", "A", Some(&user)).unwrap();
        assert_eq!(store.scim_user("hr", "A").unwrap(), Some(user.clone()));
        store.put_scim_user("hr", "A", None).unwrap();
        assert!(store.scim_users("hr").unwrap().is_empty());
        let many = vec![
            ("A".to_string(), Some(user.clone())),
            ("B".to_string(), Some(user.clone())),
        ];
        store.put_scim_users("hr", &many).unwrap();
        store
            .put_scim_users("hr", &[("A".to_string(), None)])
            .unwrap();
        assert_eq!(store.scim_users("hr").unwrap().len(), 1);
        store.put_scim_group("hr", "g", Some("gid")).unwrap();
        assert_eq!(store.scim_groups("hr").unwrap()["g"], "gid");
        store.put_scim_group("hr", "g", None).unwrap();
        assert!(store.scim_groups("hr").unwrap().is_empty());
    }

    #[test]
    fn failures_are_bounded() {
        let mut state = ScimState::default();
        for i in 0..MAX_SCIM_FAILURES + 5 {
            state.fail_user(&format!("{i:04}"), "no".into());
        }
        assert_eq!(state.failures.len(), MAX_SCIM_FAILURES);
    }
}
