//! SCIM Bulk (RFC 7644 section 3.7): a page of the change log pushed in a
//! few requests when the target announces Bulk in its
//! `/ServiceProviderConfig` (and `bulk` is not turned off).
//!
//! A fast path only: an operation the target did not do (any status but
//! 2xx, or no result for it) is pushed again alone by the one-request path,
//! which judges it, adopts a user on a 409 and recreates one on a 404. So
//! Bulk changes the number of requests, never an outcome.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::user::{self, PATCH_SCHEMA};
use super::{ensure_group, group_path, judge, push_recipient, put_group, user_path, Fault, Target};
use crate::config::ScimRemove;
use crate::import::record::Record;
use crate::store::{ScimState, ScimUser, Store};

pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// A group that loses more members than this in one page is put whole
/// (one request whose cost is the group's size) rather than sent a remove
/// per member (each costing about as much at some targets).
const MANY_LEAVERS: usize = 20;
/// At most this many operations in one request, whatever the target allows.
const MOST_OPERATIONS: usize = 1000;
/// Of the target's `maxPayloadSize`, this share is filled: the request's
/// own envelope and a size counted a little differently there stay under it.
const PAYLOAD_SHARE: f64 = 0.9;

/// What the target accepts in one Bulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_operations: usize,
    pub max_payload: usize,
}

/// The Bulk limits a `/ServiceProviderConfig` announces; `None` when it
/// does not support Bulk (or announces limits no request fits in).
pub fn limits_of(config: &Value) -> Option<Limits> {
    let bulk = config.get("bulk")?;
    if bulk.get("supported").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let number = |key: &str| {
        bulk.get(key)
            .and_then(Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let limits = Limits {
        max_operations: number("maxOperations").min(MOST_OPERATIONS),
        max_payload: number("maxPayloadSize"),
    };
    (limits.max_operations > 1 && limits.max_payload >= 4096).then_some(limits)
}

/// One operation of a Bulk request.
fn operation(bulk_id: &str, method: &str, path: &str, data: Option<Value>) -> Value {
    let mut op = json!({"method": method, "bulkId": bulk_id, "path": path});
    if let Some(data) = data {
        op["data"] = data;
    }
    op
}

/// The operations split into request bodies within `limits`; an operation
/// too large for any request goes alone (the target refuses it, and it is
/// pushed again alone).
fn request_bodies(operations: Vec<Value>, limits: Limits) -> Vec<Value> {
    let budget = (limits.max_payload as f64 * PAYLOAD_SHARE) as usize;
    let mut bodies = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    let mut size = 0;
    for op in operations {
        let op_size = op.to_string().len() + 1;
        if !current.is_empty()
            && (current.len() >= limits.max_operations || size + op_size > budget)
        {
            bodies.push(bulk_body(std::mem::take(&mut current)));
            size = 0;
        }
        size += op_size;
        current.push(op);
    }
    if !current.is_empty() {
        bodies.push(bulk_body(current));
    }
    bodies
}

fn bulk_body(operations: Vec<Value>) -> Value {
    json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": operations})
}

/// What the target did with one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: u16,
    /// The resource's id, from its `location` (or the response's `id`).
    id: Option<String>,
}

impl Outcome {
    fn done(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Each operation's outcome in a Bulk response, by `bulkId` (a result
/// without one is matched by its position in `sent`).
fn outcomes(response: &Value, sent: &Value) -> BTreeMap<String, Outcome> {
    let sent_ids: Vec<&str> = sent["Operations"]
        .as_array()
        .map(|ops| ops.iter().filter_map(|op| op["bulkId"].as_str()).collect())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let Some(results) = response.get("Operations").and_then(Value::as_array) else {
        return out;
    };
    for (i, result) in results.iter().enumerate() {
        let bulk_id = result
            .get("bulkId")
            .and_then(Value::as_str)
            .or_else(|| sent_ids.get(i).copied());
        let Some(bulk_id) = bulk_id else { continue };
        let status = match result.get("status") {
            Some(Value::String(text)) => text.trim().get(..3).and_then(|s| s.parse().ok()),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(Value::Object(o)) => o
                .get("code")
                .and_then(|c| c.as_str().and_then(|s| s.parse().ok()).or(c.as_u64()))
                .and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        let id = result
            .get("location")
            .and_then(Value::as_str)
            .and_then(last_segment)
            .or_else(|| {
                result
                    .pointer("/response/id")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
        out.insert(
            bulk_id.to_string(),
            Outcome {
                status: status.unwrap_or(0),
                id,
            },
        );
    }
    out
}

/// `abc` of `https://t/scim/v2/Users/abc`, percent-decoded.
fn last_segment(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let segment = path.trim_end_matches('/').rsplit('/').next()?;
    if segment.is_empty() {
        return None;
    }
    Some(percent_decode(segment))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `operations` in as few requests as `limits` allow; the outcome of
/// each (by `bulkId`). A request the target refuses whole leaves its
/// operations without an outcome (pushed again alone); a target that is
/// unwell stops the page.
async fn send_all(
    target: &Target,
    limits: Limits,
    operations: Vec<Value>,
) -> Result<BTreeMap<String, Outcome>, Fault> {
    let mut all = BTreeMap::new();
    for body in request_bodies(operations, limits) {
        let answer = target.call("POST", "/Bulk", Some(&body)).await?;
        if matches!(answer.status, 404 | 405 | 501) {
            // Announced but not served: one request per change from now on.
            tracing::info!(
                feed = target.name(),
                status = answer.status,
                "the SCIM target has no /Bulk after all; changes are sent one by one"
            );
            target.forget_bulk();
            return Ok(all);
        }
        match judge(&answer, "POST /Bulk", true) {
            Ok(()) => {
                let response: Value =
                    serde_json::from_slice(&answer.full_body).unwrap_or(Value::Null);
                all.extend(outcomes(&response, &body));
            }
            // Refused whole (413, 400...): each operation goes alone.
            Err(Fault::User(reason)) => {
                tracing::info!(feed = target.name(), %reason, "a SCIM Bulk request was refused; its changes are sent one by one");
            }
            Err(fault) => return Err(fault),
        }
    }
    Ok(all)
}

/// A user `scim sync` creates (`known` none) or replaces.
pub(super) struct Put {
    pub id: String,
    /// The target's id of the user to replace.
    pub known: Option<String>,
    pub want: Value,
}

/// Creates or replaces `puts` by Bulk; recipient ID → the target's user id
/// of those the target did (the rest are for the caller to send alone).
pub(super) async fn put_users(
    target: &Target,
    limits: Limits,
    puts: &[Put],
) -> Result<BTreeMap<String, String>, Fault> {
    let operations = puts
        .iter()
        .enumerate()
        .map(|(i, put)| match &put.known {
            Some(known) => operation(
                &format!("u{i}"),
                "PUT",
                &user_path(known),
                Some(put.want.clone()),
            ),
            None => operation(&format!("u{i}"), "POST", "/Users", Some(put.want.clone())),
        })
        .collect();
    let results = send_all(target, limits, operations).await?;
    let mut done = BTreeMap::new();
    for (i, put) in puts.iter().enumerate() {
        let Some(outcome) = results.get(&format!("u{i}")).filter(|o| o.done()) else {
            continue;
        };
        let user_id = match &put.known {
            Some(known) => known.clone(),
            None => match &outcome.id {
                Some(id) => id.clone(),
                None => continue,
            },
        };
        done.insert(put.id.clone(), user_id);
    }
    Ok(done)
}

/// One person of the page: as remembered, as stored now.
struct Planned {
    id: String,
    bulk_id: String,
    known: Option<ScimUser>,
    record: Option<Record>,
}

/// The page's people (each once: a push sends the person as stored now),
/// without those neither stored nor remembered.
fn plan(store: &Store, feed: &str, ids: &[String]) -> Result<Vec<Planned>, Fault> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let known = store.scim_user(feed, id)?;
        let record = store.recipient(feed, id)?;
        if known.is_none() && record.is_none() {
            continue;
        }
        out.push(Planned {
            id: id.clone(),
            bulk_id: format!("u{}", out.len()),
            known,
            record,
        });
    }
    Ok(out)
}

/// The user operation that puts one person as stored now.
fn user_operation(target: &Target, p: &Planned) -> Value {
    match (&p.record, &p.known) {
        (Some(record), Some(known)) => operation(
            &p.bulk_id,
            "PUT",
            &user_path(&known.id),
            Some(user::user_json(&target.scim, &p.id, record)),
        ),
        (Some(record), None) => operation(
            &p.bulk_id,
            "POST",
            "/Users",
            Some(user::user_json(&target.scim, &p.id, record)),
        ),
        (None, known) => {
            let path = user_path(&known.as_ref().map(|k| k.id.clone()).unwrap_or_default());
            match target.scim.remove {
                ScimRemove::Delete => operation(&p.bulk_id, "DELETE", &path, None),
                ScimRemove::Deactivate => {
                    operation(&p.bulk_id, "PATCH", &path, Some(user::deactivate_patch()))
                }
            }
        }
    }
}

/// A person whose user operation the target did: its user id now (`None`:
/// removed there), and its groups before and now.
struct Done {
    id: String,
    user_id: Option<String>,
    old_groups: Vec<String>,
    new_groups: Vec<String>,
    /// Whether it is remembered afterwards (a deactivated user stays ours).
    kept: bool,
}

/// What an operation's outcome means for its person: done, or to be
/// pushed again alone.
fn judge_outcome(target: &Target, p: &Planned, outcome: Option<&Outcome>) -> Option<Done> {
    let outcome = outcome?;
    let removing = p.record.is_none();
    // A user already gone there is removed all the same.
    if !(outcome.done() || removing && outcome.status == 404) {
        return None;
    }
    let user_id = match (&p.known, removing) {
        (Some(known), _) => known.id.clone(),
        (None, false) => outcome.id.clone()?,
        (None, true) => return None,
    };
    let old_groups = p
        .known
        .as_ref()
        .map(|k| k.groups.clone())
        .unwrap_or_default();
    let kept = !removing || target.scim.remove == ScimRemove::Deactivate && outcome.status != 404;
    Some(Done {
        id: p.id.clone(),
        user_id: Some(user_id),
        old_groups,
        new_groups: p
            .record
            .as_ref()
            .map(|r| r.groups.clone())
            .unwrap_or_default(),
        kept,
    })
}

/// Pushes the people of one page of changes (`ids`, in log order) by Bulk,
/// and their group moves when `groups`.
pub(super) async fn push_page(
    store: &Store,
    target: &Target,
    limits: Limits,
    ids: &[String],
    groups: bool,
    state: &mut ScimState,
) -> Result<(), Fault> {
    let feed = target.name().to_string();
    let planned = plan(store, &feed, ids)?;
    let operations = planned.iter().map(|p| user_operation(target, p)).collect();
    let results = send_all(target, limits, operations).await?;
    let mut done = Vec::new();
    let mut alone = Vec::new();
    for p in &planned {
        match judge_outcome(target, p, results.get(&p.bulk_id)) {
            Some(d) => done.push(d),
            None => alone.push(p.id.clone()),
        }
    }
    // Remembered before the groups are moved: a failure there must not
    // lose a user's id (its old groups are kept until they moved).
    remember(store, &feed, &done, |d| d.old_groups.clone())?;
    for d in &done {
        state.failures.remove(&d.id);
    }
    if groups {
        let refused = move_page_groups(store, target, &done).await?;
        let moved: Vec<&Done> = done
            .iter()
            .filter(|d| !refused.contains_key(&d.id))
            .collect();
        remember_moved(store, &feed, &moved)?;
        for (id, reason) in refused {
            state.fail_user(&id, reason);
        }
    }
    for id in alone {
        match push_recipient(store, target, &id, groups).await {
            Ok(()) => {
                state.failures.remove(&id);
            }
            Err(Fault::User(reason)) => {
                tracing::warn!(feed = %feed, id = %crate::import::printable(&id), %reason, "the SCIM target refused a person");
                state.fail_user(&id, reason);
            }
            Err(fault) => return Err(fault),
        }
    }
    Ok(())
}

/// Writes the page's users in one transaction, each with `groups(d)`
/// (a user removed there is forgotten).
fn remember(
    store: &Store,
    feed: &str,
    done: &[Done],
    groups: impl Fn(&Done) -> Vec<String>,
) -> Result<(), Fault> {
    let users: Vec<(String, Option<ScimUser>)> = done
        .iter()
        .map(|d| {
            let user = d.user_id.clone().filter(|_| d.kept).map(|id| ScimUser {
                id,
                groups: groups(d),
            });
            (d.id.clone(), user)
        })
        .collect();
    store.put_scim_users(feed, &users)?;
    Ok(())
}

/// The page's users whose groups moved, remembered in their new groups.
fn remember_moved(store: &Store, feed: &str, moved: &[&Done]) -> Result<(), Fault> {
    let users: Vec<(String, Option<ScimUser>)> = moved
        .iter()
        .filter(|d| d.kept)
        .filter_map(|d| {
            let user = ScimUser {
                id: d.user_id.clone()?,
                groups: d.new_groups.clone(),
            };
            Some((d.id.clone(), Some(user)))
        })
        .collect();
    store.put_scim_users(feed, &users)?;
    Ok(())
}

/// Per group: the user ids that join it and those that leave it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Moves {
    join: Vec<String>,
    leave: Vec<String>,
    /// Recipient IDs of the people moved (to mark them if refused).
    people: Vec<String>,
}

fn group_moves(done: &[Done]) -> BTreeMap<String, Moves> {
    let mut moves: BTreeMap<String, Moves> = BTreeMap::new();
    for d in done {
        let Some(user_id) = &d.user_id else { continue };
        for group in d.new_groups.iter().filter(|g| !d.old_groups.contains(g)) {
            let m = moves.entry(group.clone()).or_default();
            m.join.push(user_id.clone());
            m.people.push(d.id.clone());
        }
        for group in d.old_groups.iter().filter(|g| !d.new_groups.contains(g)) {
            let m = moves.entry(group.clone()).or_default();
            m.leave.push(user_id.clone());
            m.people.push(d.id.clone());
        }
    }
    moves
}

/// One PATCH of a group: its joiners added, its leavers removed.
fn moves_patch(moves: &Moves) -> Value {
    let mut operations = Vec::new();
    if !moves.join.is_empty() {
        let members: Vec<Value> = moves.join.iter().map(|m| json!({"value": m})).collect();
        operations.push(json!({"op": "add", "path": "members", "value": members}));
    }
    for member in &moves.leave {
        operations.push(json!({
            "op": "remove",
            "path": format!("members[value eq \"{}\"]", member.replace('"', "\\\"")),
        }));
    }
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// Moves the page's people between groups: one request per group touched
/// (a PATCH of its joiners and leavers, or, with more than
/// [`MANY_LEAVERS`] leavers, a PUT of its whole membership), groups the
/// feed no longer has deleted. Returns the people a group change was
/// refused for, with the reason.
///
/// Not by Bulk: what a group change costs a target grows with the group
/// (scim2-server: about 0.2 s per member removed from a 10,000-member
/// group), so one Bulk request of all of a page's group changes could
/// outlast any timeout, and then fail again on every retry.
async fn move_page_groups(
    store: &Store,
    target: &Target,
    done: &[Done],
) -> Result<BTreeMap<String, String>, Fault> {
    let feed = target.name();
    let moves = group_moves(done);
    if moves.is_empty() {
        return Ok(BTreeMap::new());
    }
    let feed_groups: BTreeSet<String> = store
        .groups(feed)?
        .into_iter()
        .filter(|(_, members)| *members > 0)
        .map(|(name, _)| name)
        .collect();
    let heavy: BTreeSet<&str> = moves
        .iter()
        .filter(|(group, m)| m.leave.len() > MANY_LEAVERS && feed_groups.contains(*group))
        .map(|(group, _)| group.as_str())
        .collect();
    let whole = members_after(store, feed, done, &heavy)?;
    let mut refused = BTreeMap::new();
    for (group, m) in &moves {
        if !feed_groups.contains(group) {
            if let Some(id) = store.scim_groups(feed)?.get(group).cloned() {
                super::delete_group(store, target, group, &id).await?;
            }
            continue;
        }
        let outcome = match whole.get(group) {
            Some(members) => put_group(store, target, group, members).await,
            None => patch_group(store, target, group, m).await,
        };
        match outcome {
            Ok(()) => {}
            Err(Fault::User(reason)) => refuse(&mut refused, m, &reason),
            Err(fault) => return Err(fault),
        }
    }
    Ok(refused)
}

/// The whole membership (the target's user ids) of each of `groups` once
/// the page's people moved: the page's people in their new groups, every
/// other person in the groups remembered for them.
fn members_after(
    store: &Store,
    feed: &str,
    done: &[Done],
    groups: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Vec<String>>, Fault> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if groups.is_empty() {
        return Ok(out);
    }
    for group in groups {
        out.insert((*group).to_string(), Vec::new());
    }
    let moved: BTreeMap<&str, &Done> = done.iter().map(|d| (d.id.as_str(), d)).collect();
    for (id, user) in store.scim_users(feed)? {
        let now = match moved.get(id.as_str()) {
            Some(d) if !d.kept => continue,
            Some(d) => &d.new_groups,
            None => &user.groups,
        };
        for group in now.iter().filter(|g| groups.contains(g.as_str())) {
            if let Some(members) = out.get_mut(group) {
                members.push(user.id.clone());
            }
        }
    }
    Ok(out)
}

fn refuse(refused: &mut BTreeMap<String, String>, moves: &Moves, reason: &str) {
    for person in &moves.people {
        refused.insert(person.clone(), reason.to_string());
    }
}

/// One PATCH of group `group` with its joiners and leavers; a group
/// deleted there behind our back is made again (with the joiners).
async fn patch_group(
    store: &Store,
    target: &Target,
    group: &str,
    moves: &Moves,
) -> Result<(), Fault> {
    let what = format!("PATCH /Groups ('{group}')");
    let id = ensure_group(store, target, group).await?;
    let answer = target
        .call("PATCH", &group_path(&id), Some(&moves_patch(moves)))
        .await?;
    if answer.status != 404 {
        return judge(&answer, &what, false);
    }
    store.put_scim_group(target.name(), group, None)?;
    let id = ensure_group(store, target, group).await?;
    if moves.join.is_empty() {
        return Ok(());
    }
    let joiners = Moves {
        join: moves.join.clone(),
        ..Moves::default()
    };
    let answer = target
        .call("PATCH", &group_path(&id), Some(&moves_patch(&joiners)))
        .await?;
    judge(&answer, &what, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_the_service_provider_config() {
        let config =
            json!({"bulk": {"supported": true, "maxOperations": 5000, "maxPayloadSize": 1048576}});
        assert_eq!(
            limits_of(&config),
            Some(Limits {
                max_operations: MOST_OPERATIONS,
                max_payload: 1_048_576
            })
        );
        let off = json!({"bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0}});
        assert_eq!(limits_of(&off), None);
        assert_eq!(limits_of(&json!({"patch": {"supported": true}})), None);
        let tiny =
            json!({"bulk": {"supported": true, "maxOperations": 1, "maxPayloadSize": 1048576}});
        assert_eq!(limits_of(&tiny), None);
    }

    #[test]
    fn operations_are_split_within_count_and_size() {
        let ops: Vec<Value> = (0..25)
            .map(|i| {
                operation(
                    &format!("u{i}"),
                    "DELETE",
                    &format!("/Users/{i:0>200}"),
                    None,
                )
            })
            .collect();
        let by_count = request_bodies(
            ops.clone(),
            Limits {
                max_operations: 10,
                max_payload: 1 << 20,
            },
        );
        let counts: Vec<usize> = by_count
            .iter()
            .map(|b| b["Operations"].as_array().unwrap().len())
            .collect();
        assert_eq!(counts, [10, 10, 5]);
        let by_size = request_bodies(
            ops,
            Limits {
                max_operations: 1000,
                max_payload: 4096,
            },
        );
        assert!(by_size.len() > 1);
        for body in &by_size {
            assert!(body.to_string().len() <= 4096, "{}", body.to_string().len());
        }
        let total: usize = by_size
            .iter()
            .map(|b| b["Operations"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 25);
    }

    #[test]
    fn outcomes_are_matched_by_bulk_id_or_position() {
        let sent = bulk_body(vec![
            operation("u0", "POST", "/Users", Some(json!({}))),
            operation("u1", "PUT", "/Users/x", Some(json!({}))),
            operation("u2", "DELETE", "/Users/y", None),
        ]);
        let response = json!({"Operations": [
            {"method": "POST", "bulkId": "u0", "status": "201", "location": "https://t/v2/Users/a%20b"},
            {"method": "PUT", "status": "409", "response": {"detail": "taken"}},
            {"method": "DELETE", "status": 204},
        ]});
        let got = outcomes(&response, &sent);
        assert_eq!(
            got["u0"],
            Outcome {
                status: 201,
                id: Some("a b".into())
            }
        );
        assert_eq!(got["u1"].status, 409);
        assert!(!got["u1"].done());
        assert!(got["u2"].done());
    }

    #[test]
    fn a_group_patch_adds_joiners_at_once_and_removes_each_leaver() {
        let patch = moves_patch(&Moves {
            join: vec!["a".into(), "b".into()],
            leave: vec!["c\"".into()],
            people: Vec::new(),
        });
        let ops = patch["Operations"].as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["value"].as_array().unwrap().len(), 2);
        assert_eq!(ops[1]["path"], "members[value eq \"c\\\"\"]");
    }

    #[test]
    fn moves_follow_each_persons_old_and_new_groups() {
        let done = vec![
            Done {
                id: "E1".into(),
                user_id: Some("u1".into()),
                old_groups: vec!["a".into(), "b".into()],
                new_groups: vec!["b".into(), "c".into()],
                kept: true,
            },
            Done {
                id: "E2".into(),
                user_id: Some("u2".into()),
                old_groups: vec!["a".into()],
                new_groups: Vec::new(),
                kept: false,
            },
        ];
        let moves = group_moves(&done);
        assert_eq!(moves["a"].leave, ["u1", "u2"]);
        assert_eq!(moves["c"].join, ["u1"]);
        assert!(!moves.contains_key("b"));
    }
}
