//! What an undo needs to know from the change log: which of the people a
//! run changed were changed again by a later applied run.

use std::collections::{HashMap, HashSet};

use redb::TableDefinition;

use super::changes::{added_def, changes_def, take_str};
use super::{optional, runs, RunState, StoreError, RUNS};

impl super::Store {
    /// Fills feed `feed` of a new store with `people` (ID-sorted encoded
    /// records) and their group counts, the hash list `hashes` (ID-sorted)
    /// and the fingerprints, in one transaction: the state a replay starts
    /// from.
    pub fn seed_feed(
        &self,
        feed: &str,
        people: &[(String, Vec<u8>)],
        hashes: &[(compact_str::CompactString, u64)],
        fingerprint: u64,
        mapping: u64,
    ) -> Result<(), StoreError> {
        use crate::import::FeedWriter;
        let txn = self.begin_run()?;
        txn.with_feed(feed, None, |w| -> Result<(), StoreError> {
            let records: Vec<(&str, &[u8])> = people
                .iter()
                .map(|(id, r)| (id.as_str(), r.as_slice()))
                .collect();
            w.put_sorted_records(&records)?;
            let mut groups: HashMap<String, u64> = HashMap::new();
            for (_, record) in people {
                let decoded = crate::import::record::Record::decode_groups(record)
                    .map_err(|e| StoreError::Damaged(e.to_string()))?;
                for g in decoded {
                    *groups.entry(g).or_default() += 1;
                }
            }
            for (group, count) in groups {
                w.set_group_count(&group, count)?;
            }
            Ok(())
        })??;
        txn.put_hash_list(feed, hashes)?;
        txn.set_fingerprint(feed, fingerprint, mapping)?;
        txn.commit()
    }

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
