//! The change log as read back, and undo: putting back, for every person a
//! run changed, the values from before it.
//!
//! Pure like the rest of the core: the store hands in what the run logged,
//! which people a later run changed again and the stored records; the plan
//! says, person by person, what the undo writes or which conflict leaves
//! the person as is. Applying the plan goes through the same
//! [`FeedWriter`] as a file's run, so its changes, groups and change log
//! are written the same way.

use compact_str::CompactString;

use crate::config::Feed;

use super::apply::{add_to_group, FeedWriter, GroupDeltas};
use super::apply::{field_changes, named_values, settle_groups, ApplyCounts, ApplyError, Change};
use super::record::{DecodeError, Record};
use super::validate::encode_values;

/// One logged change, as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LoggedChange {
    Added {
        id: String,
    },
    Updated {
        id: String,
        fields: Vec<LoggedField>,
    },
    Removed {
        id: String,
        values: Vec<LoggedValue>,
    },
}

impl LoggedChange {
    pub fn id(&self) -> &str {
        match self {
            LoggedChange::Added { id }
            | LoggedChange::Updated { id, .. }
            | LoggedChange::Removed { id, .. } => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            LoggedChange::Added { .. } => "added",
            LoggedChange::Updated { .. } => "updated",
            LoggedChange::Removed { .. } => "removed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoggedField {
    pub field: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoggedValue {
    pub field: String,
    pub value: String,
}

/// What an undo does to one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoTarget {
    /// Store this record (the person's values before the run).
    Restore(Vec<u8>),
    /// Remove the person (the run added them).
    Remove,
}

/// A person the undo leaves as is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoConflict {
    pub id: String,
    pub reason: String,
}

/// What an undo would do: targets sorted by ID, and the conflicts.
#[derive(Debug, Default)]
pub struct UndoPlan {
    pub targets: Vec<(CompactString, UndoTarget)>,
    pub conflicts: Vec<UndoConflict>,
}

impl UndoPlan {
    /// Stored people the undo removes (for the delete guard).
    pub fn removals(&self) -> u64 {
        self.targets
            .iter()
            .filter(|(_, t)| *t == UndoTarget::Remove)
            .count() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UndoError<E> {
    #[error(transparent)]
    Store(E),
    #[error(transparent)]
    Damaged(#[from] DecodeError),
}

/// Plans the undo of the run whose log is `changes`. `changed_later(id)`
/// names a later applied run that changed `id` again; `current(id)` reads
/// the stored record. A person is put back only when the store holds
/// exactly what the run left: otherwise the undo would overwrite someone
/// else's change, and the person is a conflict.
pub fn plan_undo<E>(
    feed: &Feed,
    run_id: u64,
    changes: &[LoggedChange],
    changed_later: impl Fn(&str) -> Option<u64>,
    mut current: impl FnMut(&str) -> Result<Option<Vec<u8>>, E>,
) -> Result<UndoPlan, UndoError<E>> {
    let mut plan = UndoPlan::default();
    for change in changes {
        let id = change.id();
        let conflict = |reason: String| UndoConflict {
            id: id.to_string(),
            reason,
        };
        if let Some(later) = changed_later(id) {
            plan.conflicts.push(conflict(format!(
                "changed again by run {later}; left as it is now"
            )));
            continue;
        }
        let stored = current(id).map_err(UndoError::Store)?;
        let target = match (change, stored) {
            (LoggedChange::Added { .. }, Some(_)) => Ok(UndoTarget::Remove),
            (LoggedChange::Updated { fields, .. }, Some(stored)) => {
                reverted(feed, &stored, fields, run_id)?.map(UndoTarget::Restore)
            }
            (LoggedChange::Removed { values, .. }, None) => {
                restored(feed, values, run_id).map(UndoTarget::Restore)
            }
            (LoggedChange::Removed { .. }, Some(_)) => Err(format!(
                "stored again since run {run_id} removed them; left as it is now"
            )),
            (_, None) => Err(format!(
                "no longer stored since run {run_id}; left as it is now"
            )),
        };
        match target {
            Ok(t) => plan.targets.push((CompactString::from(id), t)),
            Err(reason) => plan.conflicts.push(conflict(reason)),
        }
    }
    plan.targets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(plan)
}

/// The field's position in the feed, or why the undo cannot use it.
fn position(feed: &Feed, field: &str, run_id: u64) -> Result<usize, String> {
    feed.fields.iter().position(|f| f.name == field).ok_or_else(|| {
        format!("the feed has no field '{field}' any more (it changed since run {run_id}); left as it is now")
    })
}

/// `stored` with each of the run's fields set back to its old value; an
/// error when a value is no longer what the run wrote.
fn reverted(
    feed: &Feed,
    stored: &[u8],
    fields: &[LoggedField],
    run_id: u64,
) -> Result<Result<Vec<u8>, String>, DecodeError> {
    let mut values: Vec<&str> = Record::borrowed_values(stored)?;
    values.resize(feed.fields.len(), "");
    for f in fields {
        let i = match position(feed, &f.field, run_id) {
            Ok(i) => i,
            Err(reason) => return Ok(Err(reason)),
        };
        if values[i] != f.new {
            return Ok(Err(format!(
                "'{}' changed since run {run_id}; left as it is now",
                f.field
            )));
        }
        values[i] = &f.old;
    }
    Ok(Ok(encode_values(&values, feed)))
}

/// The record of a removed person from the values the log kept.
fn restored(feed: &Feed, kept: &[LoggedValue], run_id: u64) -> Result<Vec<u8>, String> {
    let mut values = vec![""; feed.fields.len()];
    for v in kept {
        values[position(feed, &v.field, run_id)?] = &v.value;
    }
    Ok(encode_values(&values, feed))
}

/// Puts back, in `people` (ID → values in the feed's field order), what
/// one logged change did: run over a run's changes and every later one's,
/// newest first, it gives the feed as it was before that run. Fields the
/// feed no longer has are skipped.
pub fn revert_change(
    people: &mut std::collections::BTreeMap<String, Vec<String>>,
    feed: &Feed,
    change: &LoggedChange,
) {
    let position = |field: &str| feed.fields.iter().position(|f| f.name == field);
    match change {
        LoggedChange::Added { id } => {
            people.remove(id);
        }
        LoggedChange::Updated { id, fields } => {
            if let Some(values) = people.get_mut(id) {
                values.resize(feed.fields.len(), String::new());
                for f in fields {
                    if let Some(i) = position(&f.field) {
                        values[i] = f.old.clone();
                    }
                }
            }
        }
        LoggedChange::Removed { id, values: kept } => {
            let mut values = vec![String::new(); feed.fields.len()];
            for v in kept {
                if let Some(i) = position(&v.field) {
                    values[i] = v.value.clone();
                }
            }
            people.insert(id.clone(), values);
        }
    }
}

/// What applying an undo did.
#[derive(Debug, Default)]
pub struct UndoApplied {
    pub counts: ApplyCounts,
    /// Hash-list edits, sorted by ID: a new hash for a person put back,
    /// none for one removed.
    pub hashes: Vec<(CompactString, Option<u64>)>,
}

/// Writes `plan` through `writer`, logging each change like a file's run.
/// A person put back gets a hash no row of a file has (made from the run's
/// ID and the record), so the next file's row for them is read and
/// compared instead of trusted.
pub fn apply_undo<W: FeedWriter>(
    feed: &Feed,
    run_id: u64,
    plan: &UndoPlan,
    writer: &mut W,
) -> Result<UndoApplied, ApplyError<W::Error>> {
    let mut out = UndoApplied::default();
    let mut group_delta = GroupDeltas::default();
    for (id, target) in &plan.targets {
        let old = writer.stored_record(id).map_err(ApplyError::Writer)?;
        let old_groups = match &old {
            Some(old) => Record::decode_groups(old)?,
            None => Vec::new(),
        };
        let new_groups = match target {
            UndoTarget::Remove => {
                let Some(old) = old else { continue };
                writer.remove_record(id).map_err(ApplyError::Writer)?;
                let values = named_values(&old, feed)?;
                writer
                    .log_change(Change::Removed { id, values })
                    .map_err(ApplyError::Writer)?;
                out.counts.removed += 1;
                out.hashes.push((id.clone(), None));
                Vec::new()
            }
            UndoTarget::Restore(record) => {
                if old.as_deref() == Some(record.as_slice()) {
                    out.counts.unchanged += 1;
                    continue;
                }
                writer.put_record(id, record).map_err(ApplyError::Writer)?;
                let change = match &old {
                    Some(old) => {
                        out.counts.updated += 1;
                        Change::Updated {
                            id,
                            fields: field_changes(old, record, feed)?,
                        }
                    }
                    None => {
                        out.counts.added += 1;
                        Change::Added { id }
                    }
                };
                writer.log_change(change).map_err(ApplyError::Writer)?;
                let hash = xxhash_rust::xxh3::xxh3_64_with_seed(record, run_id);
                out.hashes.push((id.clone(), Some(hash)));
                Record::decode_groups(record)?
            }
        };
        for g in old_groups.iter().filter(|g| !new_groups.contains(g)) {
            add_to_group(&mut group_delta, g, -1);
        }
        for g in new_groups.iter().filter(|g| !old_groups.contains(g)) {
            add_to_group(&mut group_delta, g, 1);
        }
    }
    settle_groups(group_delta, writer, &mut out.counts)?;
    Ok(out)
}

/// The feed's (ID, hash) list with an undo's edits applied; both sorted.
pub fn edit_hash_list(
    list: Vec<(CompactString, u64)>,
    edits: &[(CompactString, Option<u64>)],
) -> Vec<(CompactString, u64)> {
    let mut out = Vec::with_capacity(list.len() + edits.len());
    let mut edits = edits.iter().peekable();
    for (id, hash) in list {
        while let Some((e, new)) = edits.next_if(|(e, _)| *e < id) {
            out.extend(new.map(|h| (e.clone(), h)));
        }
        match edits.next_if(|(e, _)| *e == id) {
            Some((_, new)) => out.extend(new.map(|h| (id, h))),
            None => out.push((id, hash)),
        }
    }
    for (e, new) in edits {
        out.extend(new.map(|h| (e.clone(), h)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, u64)]) -> Vec<(CompactString, u64)> {
        entries.iter().map(|(id, h)| ((*id).into(), *h)).collect()
    }

    #[test]
    fn hash_list_edits_replace_insert_and_remove_in_order() {
        let before = list(&[("b", 1), ("d", 2), ("f", 3)]);
        let edits: Vec<(CompactString, Option<u64>)> = vec![
            ("a".into(), Some(10)),
            ("b".into(), None),
            ("c".into(), Some(11)),
            ("d".into(), Some(12)),
            ("g".into(), Some(13)),
        ];
        assert_eq!(
            edit_hash_list(before, &edits),
            list(&[("a", 10), ("c", 11), ("d", 12), ("f", 3), ("g", 13)])
        );
        assert_eq!(edit_hash_list(Vec::new(), &[]), Vec::new());
    }

    fn feed() -> Feed {
        crate::config::Config::embedded()
            .expect("the embedded default is valid")
            .feeds
            .into_iter()
            .next()
            .expect("the default has a feed")
    }

    #[test]
    fn a_person_whose_value_moved_on_or_whose_field_is_gone_is_a_conflict() {
        let feed = feed();
        let id_field = feed.fields[feed.id_field].name.clone();
        let other = feed
            .fields
            .iter()
            .find(|f| f.name != id_field)
            .expect("a second field")
            .name
            .clone();
        let mut values = vec![""; feed.fields.len()];
        values[feed.id_field] = "7";
        let pos = feed.fields.iter().position(|f| f.name == other).unwrap();
        values[pos] = "now";
        let stored = encode_values(&values, &feed);
        let change = |old: &str, new: &str, field: &str| LoggedChange::Updated {
            id: "7".into(),
            fields: vec![LoggedField {
                field: field.into(),
                old: old.into(),
                new: new.into(),
            }],
        };
        let plan = |c: LoggedChange| {
            plan_undo::<()>(&feed, 3, &[c], |_| None, |_| Ok(Some(stored.clone()))).unwrap()
        };
        let reverted = plan(change("before", "now", &other));
        assert!(reverted.conflicts.is_empty());
        values[pos] = "before";
        assert_eq!(
            reverted.targets,
            vec![(
                "7".into(),
                UndoTarget::Restore(encode_values(&values, &feed))
            )]
        );
        let moved_on = plan(change("before", "then", &other));
        assert!(moved_on.targets.is_empty());
        assert!(moved_on.conflicts[0].reason.contains("changed since run 3"));
        let gone = plan(change("a", "b", "no_such_field"));
        assert!(gone.conflicts[0]
            .reason
            .contains("no field 'no_such_field'"));
        let later = plan_undo::<()>(
            &feed,
            3,
            &[change("before", "now", &other)],
            |_| Some(9),
            |_| panic!("a person changed later is not read"),
        )
        .unwrap();
        assert!(later.conflicts[0].reason.contains("changed again by run 9"));
    }
}
