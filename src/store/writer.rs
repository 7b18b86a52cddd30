//! [`FeedWriter`] over redb: the real one over a write transaction, and a
//! read-only one for dry and held runs (its writes are dropped).

use std::ops::Bound;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction,
};

use crate::import::{Change, FeedWriter};

use super::changes::ChangeLog;
use super::{optional, table_name, StoreError};

/// The table names of one feed.
struct Names {
    recipients: String,
    groups: String,
}

impl Names {
    fn of(feed: &str) -> Names {
        Names {
            recipients: table_name("recipients", feed),
            groups: table_name("groups", feed),
        }
    }
}

/// The feed's tables inside a run's write transaction.
pub struct WriteFeed<'txn> {
    recipients: Table<'txn, &'static str, &'static [u8]>,
    groups: Table<'txn, &'static str, u64>,
    /// The run's ID and change log, when the writer keeps one.
    log: Option<(u64, ChangeLog)>,
}

impl<'txn> WriteFeed<'txn> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        feed: &str,
        run: Option<u64>,
    ) -> Result<Self, StoreError> {
        let n = Names::of(feed);
        Ok(WriteFeed {
            recipients: txn.open_table(TableDefinition::new(&n.recipients))?,
            groups: txn.open_table(TableDefinition::new(&n.groups))?,
            log: run.map(|run| (run, ChangeLog::default())),
        })
    }

    /// Writes what the log gathered (a run's additions).
    pub(super) fn finish(self, txn: &WriteTransaction, feed: &str) -> Result<(), StoreError> {
        match self.log {
            Some((run, log)) => log.write(txn, feed, run),
            None => Ok(()),
        }
    }
}

impl FeedWriter for WriteFeed<'_> {
    type Error = StoreError;

    fn stored_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.recipients.get(id)?.map(|v| v.value().to_vec()))
    }

    fn put_record(&mut self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.recipients.insert(id, record)?;
        Ok(())
    }

    fn put_sorted_records(&mut self, records: &[(&str, &[u8])]) -> Result<(), StoreError> {
        // IDs past the table's last one go in through a cursor at its end:
        // redb buffers such an ascending run and splices it in as packed
        // pages, one parent update per MiB instead of a descent and a
        // rebuilt path per insert (1M ID-sorted rows: the same leaves, half
        // the branch pages).
        let last = self
            .recipients
            .last()?
            .map(|(id, _)| id.value().to_string());
        let past_last = match &last {
            Some(last) => records.partition_point(|(id, _)| *id <= last.as_str()),
            None => 0,
        };
        for (id, record) in &records[..past_last] {
            self.recipients.insert(*id, *record)?;
        }
        if past_last < records.len() {
            let mut end = self.recipients.upper_bound_mut(Bound::<&str>::Unbounded)?;
            for (id, record) in &records[past_last..] {
                end.insert_before(*id, *record).map_err(redb::Error::from)?;
            }
            end.close()?;
        }
        Ok(())
    }

    fn remove_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.recipients.remove(id)?.map(|v| v.value().to_vec()))
    }

    fn group_count(&mut self, group: &str) -> Result<u64, StoreError> {
        Ok(self.groups.get(group)?.map_or(0, |v| v.value()))
    }

    fn set_group_count(&mut self, group: &str, count: u64) -> Result<(), StoreError> {
        if count == 0 {
            self.groups.remove(group)?;
        } else {
            self.groups.insert(group, count)?;
        }
        Ok(())
    }

    fn log_change(&mut self, change: Change<'_>) -> Result<(), StoreError> {
        if let Some((_, log)) = &mut self.log {
            log.log(change);
        }
        Ok(())
    }
}

/// The feed's tables in a read transaction; a table that does not exist yet
/// reads as empty.
pub struct ReadFeed {
    recipients: Option<ReadOnlyTable<&'static str, &'static [u8]>>,
    groups: Option<ReadOnlyTable<&'static str, u64>>,
    /// What a held run would change, when it is gathered.
    pub(super) log: Option<ChangeLog>,
}

impl ReadFeed {
    pub(super) fn open(txn: &ReadTransaction, feed: &str) -> Result<Self, StoreError> {
        let n = Names::of(feed);
        Ok(ReadFeed {
            recipients: optional(txn.open_table(TableDefinition::new(&n.recipients)))?,
            groups: optional(txn.open_table(TableDefinition::new(&n.groups)))?,
            log: None,
        })
    }

    /// A feed with nothing stored (no store file yet).
    pub fn empty() -> ReadFeed {
        ReadFeed {
            recipients: None,
            groups: None,
            log: None,
        }
    }
}

impl FeedWriter for ReadFeed {
    type Error = StoreError;

    fn stored_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.recipients {
            Some(t) => Ok(t.get(id)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        }
    }

    fn put_record(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_record(&mut self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.stored_record(id)
    }

    fn group_count(&mut self, group: &str) -> Result<u64, StoreError> {
        match &self.groups {
            Some(t) => Ok(t.get(group)?.map_or(0, |v| v.value())),
            None => Ok(0),
        }
    }

    fn log_change(&mut self, change: Change<'_>) -> Result<(), StoreError> {
        if let Some(log) = &mut self.log {
            log.log(change);
        }
        Ok(())
    }

    fn set_group_count(&mut self, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The feed's records as committed before a run, shared by the threads
/// that validate the run's rows.
pub struct Snapshot {
    recipients: Option<ReadOnlyTable<&'static str, &'static [u8]>>,
}

impl Snapshot {
    pub(super) fn open(txn: &ReadTransaction, feed: &str) -> Result<Self, StoreError> {
        let n = Names::of(feed);
        Ok(Snapshot {
            recipients: optional(txn.open_table(TableDefinition::new(&n.recipients)))?,
        })
    }
}

impl Snapshot {
    /// How many records have a non-empty value at field position `field`,
    /// counting no further than `limit` (the clear guard needs to know
    /// only whether there are that many).
    pub fn count_filled(&self, field: usize, limit: u64) -> Result<u64, StoreError> {
        let Some(table) = &self.recipients else {
            return Ok(0);
        };
        let mut filled = 0;
        for entry in table.iter()? {
            if filled >= limit {
                break;
            }
            let (_, value) = entry?;
            let value = crate::import::record::Record::value_at(value.value(), field)
                .map_err(|e| StoreError::Damaged(e.to_string()))?;
            filled += u64::from(value.is_some_and(|v| !v.is_empty()));
        }
        Ok(filled)
    }
}

impl crate::import::StoredRecords for Snapshot {
    fn stored_record(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        match &self.recipients {
            Some(t) => t
                .get(id)
                .map(|v| v.map(|v| v.value().to_vec()))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}
