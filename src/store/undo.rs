//! What an undo needs to know from the change log: which of the people a
//! run changed were changed again by a later applied run.

use std::collections::{HashMap, HashSet};

use redb::TableDefinition;

use super::changes::{added_def, changes_def, take_str};
use super::{optional, runs, RunState, StoreError, RUNS};

impl super::Store {
    /// For each of `ids`, the first applied run of `feed` after `run` that
    /// changed it (added, updated or removed it). The undos in `run`'s own
    /// chain (an undo of it, the undo of that undo, ...) do not count: after
    /// them the people are as `run` left them, which the undo plan checks
    /// value by value anyway.
    pub fn changed_after(
        &self,
        feed: &str,
        run: u64,
        ids: &HashSet<&str>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let txn = self.begin_read()?;
        let mut found = HashMap::new();
        let Some(index) = optional(txn.open_table(runs::RUNS_BY_FEED))? else {
            return Ok(found);
        };
        let records = txn.open_table(RUNS)?;
        let open =
            |name: String| optional(txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)));
        let (changes, added) = (open(changes_def(feed))?, open(added_def(feed))?);
        let mut later = runs::feed_run_ids(&index, feed, usize::MAX)?;
        later.retain(|&id| id > run);
        later.sort_unstable();
        let mut chain = vec![run];
        for id in later {
            let record = runs::get_run_in(&records, id)?;
            if record.state != RunState::Applied {
                continue;
            }
            let undoes_chain = record.restored_id.is_none()
                && record.undo_of.is_some_and(|of| chain.contains(&of));
            if undoes_chain {
                chain.push(id);
                continue;
            }
            let (from, to) = (id.to_be_bytes(), (id + 1).to_be_bytes());
            let mut note = |changed: &str| {
                if ids.contains(changed) && !found.contains_key(changed) {
                    found.insert(changed.to_string(), id);
                }
            };
            if let Some(t) = &changes {
                for entry in t.range(from.as_slice()..to.as_slice())? {
                    let (key, _) = entry?;
                    if let Ok(changed) = std::str::from_utf8(&key.value()[8..]) {
                        note(changed);
                    }
                }
            }
            if let Some(t) = &added {
                for entry in t.range(from.as_slice()..to.as_slice())? {
                    let (_, chunk) = entry?;
                    let mut cursor = chunk.value();
                    while !cursor.is_empty() {
                        note(take_str(&mut cursor)?);
                    }
                }
            }
        }
        Ok(found)
    }
}
