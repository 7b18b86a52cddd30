//! SCIM 2.0 provisioning: each feed with `[feed.scim]` has its people (and,
//! with `groups = true`, its groups) pushed to a SCIM service provider, in
//! the order of the feed's change log, from a cursor kept in the store
//! (`store::scim`).
//!
//! An adapter like `webhook` (whose HTTP client it uses): the sender is a
//! thread of `flagsync serve` with its own runtime, woken after each
//! committed run; `flagsync scim sync` reconciles a whole feed.
//!
//! Invariants:
//! 1. Never blocks, slows or fails a run: the sender reads the change log
//!    and writes its own tables, outside every run's transaction.
//! 2. In order: a target gets the feed's changes in change-log order; a
//!    target that is unwell (no answer, 401, 403, 408, 429, 5xx, a 404 on
//!    a collection) stops the push where it is, and it is tried again
//!    after a doubling pause (`retry_pause`), from the same change.
//! 3. A change is pushed as the person is *now* (created, replaced, or
//!    removed when no longer stored): pushing a change again, or a later
//!    state early, converges on the store.
//! 4. Another 4xx answer about one person marks that person failed (kept
//!    with the reason in the target's state) and the push goes on.
//! 5. Only users flagsync provisioned are removed: those it remembers, or
//!    whose `externalId` is one of its people's (see [`sync_feed`]).

mod bulk;
mod user;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Feed, HookUrl, Scim, ScimRemove};
use crate::store::{FeedCursor, FeedError, ScimPosition, ScimState, ScimUser, Store, StoreError};
use crate::webhook::client::{self, Answer};

/// The sender looks at each target at least this often (every committed
/// run also wakes it).
const POLL: Duration = Duration::from_secs(2);
/// The pause after the first failed attempt; it doubles, up to an hour.
const FIRST_PAUSE: Duration = Duration::from_secs(2);
/// Changes read from the log at a time (one request each).
const PAGE: usize = 200;
/// The same when the target takes SCIM Bulk (a few requests a page).
const BULK_PAGE: usize = 1000;
/// Users asked of the target per page.
const LIST_PAGE: usize = 100;
/// Groups asked per page: each comes with all its members.
const GROUP_LIST_PAGE: usize = 10;
/// An answer is read whole up to this size (a page of big groups).
const MAX_ANSWER: usize = 64 << 20;
/// A backlog this long defers group moves to one put of each group.
const DEFER_GROUPS_AT: usize = 10_000;
/// Users written to the store in one transaction by `scim sync`.
const STORE_BATCH: usize = 1000;
/// How far "behind by N changes" counts.
const MAX_COUNTED: usize = 100_000;

/// One per target task of the sender: every committed run wakes them all.
static WAKES: std::sync::Mutex<Vec<Arc<Notify>>> = std::sync::Mutex::new(Vec::new());

/// Requests sent to each feed's target by this process (`/metrics`).
static REQUESTS: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// Requests this process sent to `feed`'s target since it started.
pub fn requests_made(feed: &str) -> u64 {
    REQUESTS
        .lock()
        .map(|counts| counts.get(feed).copied().unwrap_or(0))
        .unwrap_or(0)
}

fn count_request(feed: &str) {
    if let Ok(mut counts) = REQUESTS.lock() {
        *counts.entry(feed.to_string()).or_default() += 1;
    }
}

/// One push or sync of a feed at a time in this process: the sender and a
/// `scim sync` sent to the server would otherwise both move the cursor.
/// Per feed: one tenant's long push never holds up another's.
static BUSY: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn busy_lock(feed: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = BUSY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(feed.to_string()).or_default().clone()
}

/// Tells the sender that a run committed (a no-op without a sender).
pub fn wake() {
    let wakes = WAKES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for wake in wakes.iter() {
        // A permit is kept when the task is busy: no wake-up is missed.
        wake.notify_one();
    }
}

/// Why a request did not do its part.
#[derive(Debug)]
pub enum Fault {
    /// The target is unwell: stop and try again later.
    Target(String),
    /// The target refused this one person (or group).
    User(String),
    Store(StoreError),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Fault {
        Fault::Store(e)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Target(e) | Fault::User(e) => f.write_str(e),
            Fault::Store(e) => write!(f, "{e}"),
        }
    }
}

/// Problems `flagsync check` reports: token and CA files that cannot be
/// used, each naming its feed and setting.
pub fn config_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for feed in &config.feeds {
        let Some(scim) = &feed.scim else { continue };
        let at = format!("feed '{}', [feed.scim]", feed.name);
        if let Err(e) = read_token(scim) {
            problems.push(format!("{at}: {e}"));
        }
        if let Err(e) = client::tls_connector(scim.ca_file.as_deref()) {
            problems.push(format!("{at}: {e}"));
        }
    }
    problems
}

fn read_token(scim: &Scim) -> Result<String, String> {
    let path = &scim.token_file;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "token_file {}: {e}; write the target's bearer token there (readable by flagsync only)",
            path.display()
        )
    })?;
    let token = text.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!(
            "token_file {} must hold the bearer token alone, on one line",
            path.display()
        ));
    }
    Ok(token)
}

/// A feed's target, ready to send.
pub struct Target {
    feed: Feed,
    scim: Scim,
    base: HookUrl,
    tls: tokio_rustls::TlsConnector,
    /// The target's Bulk limits once asked (`Some(None)`: no Bulk).
    bulk: std::sync::Mutex<Option<Option<bulk::Limits>>>,
}

impl Target {
    /// `None` for a feed without `[feed.scim]`.
    pub fn new(feed: &Feed) -> Result<Option<Target>, String> {
        let Some(scim) = &feed.scim else {
            return Ok(None);
        };
        Ok(Some(Target {
            feed: feed.clone(),
            scim: scim.clone(),
            base: HookUrl::parse(&scim.base_url).map_err(|e| format!("base_url: {e}"))?,
            tls: client::tls_connector(scim.ca_file.as_deref())?,
            bulk: std::sync::Mutex::new(None),
        }))
    }

    fn name(&self) -> &str {
        &self.feed.name
    }

    /// One request to `path` (below the base); an answer of any status is
    /// `Ok`, none is the target's fault.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, Fault> {
        let token = read_token(&self.scim).map_err(Fault::Target)?;
        let mut url = self.base.clone();
        url.target = format!("{}{path}", url.target.trim_end_matches('/'));
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("accept", "application/scim+json".to_string()),
        ];
        let body = body.map(Value::to_string);
        count_request(self.name());
        let answer = client::send(
            method,
            &url,
            &self.tls,
            &headers,
            body,
            self.scim.timeout,
            MAX_ANSWER,
        )
        .await
        .map_err(|e| Fault::Target(format!("{method} {path}: {e}")))?;
        if !answer.complete {
            return Err(Fault::Target(format!(
                "{method} {path}: {}, and its body is larger than {} MiB or broke off",
                answer.status_line(),
                MAX_ANSWER >> 20
            )));
        }
        Ok(answer)
    }

    /// `call`, with an answer other than 2xx judged into a fault.
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        collection: bool,
    ) -> Result<Value, Fault> {
        let answer = self.call(method, path, body).await?;
        judge(&answer, &format!("{method} {path}"), collection)?;
        Ok(serde_json::from_slice(&answer.full_body).unwrap_or(Value::Null))
    }

    /// The target's Bulk limits, asked of its `/ServiceProviderConfig`
    /// once; `None`: one request per change (`bulk = false`, or the
    /// target does not announce Bulk).
    async fn bulk_limits(&self) -> Result<Option<bulk::Limits>, Fault> {
        if !self.scim.bulk {
            return Ok(None);
        }
        if let Some(known) = self.bulk.lock().ok().and_then(|b| *b) {
            return Ok(known);
        }
        let answer = self.call("GET", "/ServiceProviderConfig", None).await?;
        let limits = match judge(&answer, "GET /ServiceProviderConfig", false) {
            Ok(()) => serde_json::from_slice::<Value>(&answer.full_body)
                .ok()
                .as_ref()
                .and_then(bulk::limits_of),
            // No discovery document: no Bulk.
            Err(Fault::User(_)) => None,
            Err(fault) => return Err(fault),
        };
        if let Ok(mut known) = self.bulk.lock() {
            *known = Some(limits);
        }
        Ok(limits)
    }

    fn forget_bulk(&self) {
        if let Ok(mut known) = self.bulk.lock() {
            *known = Some(None);
        }
    }

    /// Every resource of `/Users` or `/Groups`, paged.
    async fn list(&self, kind: &str) -> Result<Vec<Value>, Fault> {
        let mut all = Vec::new();
        loop {
            let count = if kind == "Groups" {
                GROUP_LIST_PAGE
            } else {
                LIST_PAGE
            };
            let path = format!("/{kind}?startIndex={}&count={count}", all.len() + 1);
            let page = self.expect("GET", &path, None, true).await?;
            let resources = page
                .get("Resources")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = page
                .get("totalResults")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let got = resources.len();
            all.extend(resources);
            if got == 0 || all.len() as u64 >= total {
                return Ok(all);
            }
        }
    }

    /// The id of the `kind` resource whose `attribute` is `value`, if any.
    async fn find(
        &self,
        kind: &str,
        attribute: &str,
        value: &str,
    ) -> Result<Option<String>, Fault> {
        let filter = format!(
            "{attribute} eq \"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let path = format!("/{kind}?filter={}", percent_encode(&filter));
        let page = self.expect("GET", &path, None, true).await?;
        Ok(page
            .pointer("/Resources/0/id")
            .and_then(Value::as_str)
            .map(String::from))
    }
}

/// What an answer means: 2xx is done; 401, 403, 408, 429, 5xx, a redirect
/// and a 404 on a collection say the target is unwell; another 4xx refuses
/// this one request.
fn judge(answer: &Answer, what: &str, collection: bool) -> Result<(), Fault> {
    let said = if answer.body.is_empty() {
        format!("{what}: {}", answer.status_line())
    } else {
        format!("{what}: {}: {}", answer.status_line(), answer.body)
    };
    match answer.status {
        200..=299 => Ok(()),
        401 | 403 => Err(Fault::Target(format!("{said} (check token_file)"))),
        404 if collection => Err(Fault::Target(format!("{said} (check base_url)"))),
        300..=399 | 408 | 429 | 500.. => Err(Fault::Target(said)),
        _ => Err(Fault::User(said)),
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn id_of(resource: &Value) -> Result<String, Fault> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| Fault::Target("the target answered without the resource's id".into()))
}

fn user_path(id: &str) -> String {
    format!("/Users/{}", percent_encode(id))
}

fn group_path(id: &str) -> String {
    format!("/Groups/{}", percent_encode(id))
}

/// Puts `want` on the target: replaces user `known` when it still exists,
/// else creates it (adopting a user of the same `userName` on a 409).
/// Returns the target's id of the user.
async fn upsert(target: &Target, known: Option<&str>, want: &Value) -> Result<String, Fault> {
    if let Some(id) = known {
        let answer = target.call("PUT", &user_path(id), Some(want)).await?;
        if answer.status != 404 {
            judge(&answer, "PUT /Users/{id}", false)?;
            return Ok(id.to_string());
        }
    }
    let answer = target.call("POST", "/Users", Some(want)).await?;
    if answer.status == 409 {
        return adopt(target, want).await;
    }
    judge(&answer, "POST /Users", true)?;
    let created: Value = serde_json::from_slice(&answer.full_body).unwrap_or(Value::Null);
    id_of(&created)
}

/// A 409 on create: the target has a user of that `userName`; it becomes
/// ours and is replaced.
async fn adopt(target: &Target, want: &Value) -> Result<String, Fault> {
    let user_name = want
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(id) = target.find("Users", "userName", user_name).await? else {
        return Err(Fault::User(format!(
            "POST /Users: 409 Conflict, and no user named '{user_name}' is listed; another attribute (externalId, an email) is taken on the target"
        )));
    };
    target
        .expect("PUT", &user_path(&id), Some(want), false)
        .await?;
    Ok(id)
}

/// The target's id of group `name`, created when first seen.
async fn ensure_group(store: &Store, target: &Target, name: &str) -> Result<String, Fault> {
    if let Some(id) = store.scim_groups(target.name())?.get(name) {
        return Ok(id.clone());
    }
    let body = user::group_json(name, &[]);
    let answer = target.call("POST", "/Groups", Some(&body)).await?;
    let id = if answer.status == 409 {
        target
            .find("Groups", "displayName", name)
            .await?
            .ok_or_else(|| {
                Fault::User(format!(
                    "POST /Groups '{name}': 409 Conflict, and no group of that name is listed"
                ))
            })?
    } else {
        judge(&answer, "POST /Groups", true)?;
        id_of(&serde_json::from_slice(&answer.full_body).unwrap_or(Value::Null))?
    };
    store.put_scim_group(target.name(), name, Some(&id))?;
    Ok(id)
}

/// Moves user `user_id` from the groups `old` to `new` (added to new ones,
/// removed from gone ones); a group the feed no longer has is deleted.
async fn move_groups(
    store: &Store,
    target: &Target,
    user_id: &str,
    old: &[String],
    new: &[String],
) -> Result<(), Fault> {
    for group in new.iter().filter(|g| !old.contains(g)) {
        let mut id = ensure_group(store, target, group).await?;
        let patch = user::membership_patch(user_id, true);
        let mut answer = target.call("PATCH", &group_path(&id), Some(&patch)).await?;
        if answer.status == 404 {
            // Deleted there behind our back: made again.
            store.put_scim_group(target.name(), group, None)?;
            id = ensure_group(store, target, group).await?;
            answer = target.call("PATCH", &group_path(&id), Some(&patch)).await?;
        }
        judge(&answer, &format!("PATCH /Groups ('{group}')"), false)?;
    }
    let feed_groups: BTreeSet<String> = store
        .groups(target.name())?
        .into_iter()
        .filter(|(_, members)| *members > 0)
        .map(|(name, _)| name)
        .collect();
    for group in old.iter().filter(|g| !new.contains(g)) {
        let Some(id) = store.scim_groups(target.name())?.get(group).cloned() else {
            continue;
        };
        if !feed_groups.contains(group) {
            delete_group(store, target, group, &id).await?;
            continue;
        }
        let patch = user::membership_patch(user_id, false);
        let answer = target.call("PATCH", &group_path(&id), Some(&patch)).await?;
        if answer.status != 404 {
            judge(&answer, &format!("PATCH /Groups ('{group}')"), false)?;
        }
    }
    Ok(())
}

async fn delete_group(store: &Store, target: &Target, name: &str, id: &str) -> Result<(), Fault> {
    let answer = target.call("DELETE", &group_path(id), None).await?;
    if answer.status != 404 {
        judge(&answer, &format!("DELETE /Groups ('{name}')"), false)?;
    }
    store.put_scim_group(target.name(), name, None)?;
    Ok(())
}

/// Pushes recipient `id` as it is stored now (invariant 3), moving its
/// group memberships when `groups`.
async fn push_recipient(
    store: &Store,
    target: &Target,
    id: &str,
    groups: bool,
) -> Result<(), Fault> {
    let feed = target.name();
    let known = store.scim_user(feed, id)?;
    let Some(record) = store.recipient(feed, id)? else {
        return match known {
            Some(known) => remove_user(store, target, id, known, groups).await,
            None => Ok(()),
        };
    };
    let want = user::user_json(&target.scim, id, &record);
    let user_id = upsert(target, known.as_ref().map(|k| k.id.as_str()), &want).await?;
    // A user made anew (deleted there behind our back) is in no group yet.
    let old_groups = known
        .filter(|k| k.id == user_id)
        .map(|k| k.groups)
        .unwrap_or_default();
    // Remembered before the groups are moved: a failure there must not
    // lose the user's id.
    let mut remembered = ScimUser {
        id: user_id.clone(),
        groups: old_groups.clone(),
    };
    store.put_scim_user(feed, id, Some(&remembered))?;
    if groups {
        move_groups(store, target, &user_id, &old_groups, &record.groups).await?;
        remembered.groups = record.groups;
        store.put_scim_user(feed, id, Some(&remembered))?;
    }
    Ok(())
}

/// Removes a recipient no longer stored: out of its groups, then deleted
/// or deactivated (`scim_remove`).
async fn remove_user(
    store: &Store,
    target: &Target,
    id: &str,
    known: ScimUser,
    groups: bool,
) -> Result<(), Fault> {
    let feed = target.name();
    if groups {
        move_groups(store, target, &known.id, &known.groups, &[]).await?;
    }
    let path = user_path(&known.id);
    let answer = match target.scim.remove {
        ScimRemove::Delete => target.call("DELETE", &path, None).await?,
        ScimRemove::Deactivate => {
            target
                .call("PATCH", &path, Some(&user::deactivate_patch()))
                .await?
        }
    };
    if answer.status != 404 {
        judge(&answer, &format!("removing user {}", known.id), false)?;
    }
    let kept = ScimUser {
        id: known.id,
        groups: Vec::new(),
    };
    // A deactivated user stays ours (a later return replaces it).
    let keep = target.scim.remove == ScimRemove::Deactivate && answer.status != 404;
    store.put_scim_user(feed, id, keep.then_some(&kept))?;
    Ok(())
}

/// Where the push starts (`None`: the first change kept); `None` when
/// only a full sync can go on.
fn start_of(state: &ScimState) -> Option<Option<FeedCursor>> {
    match &state.position {
        ScimPosition::Start => Some(None),
        ScimPosition::At(text) => FeedCursor::parse(text).ok().map(Some),
        // Not started by the server while the feed had nobody
        // (`start_if_empty`): the people already there need a full sync.
        ScimPosition::Never => None,
    }
}

/// Pushes the feed's changes after the target's cursor, in order, saving
/// the cursor after each; stops at the first fault of the target.
pub async fn push_feed(store: &Store, target: &Target, state: &mut ScimState) -> Result<(), Fault> {
    let feed = target.name().to_string();
    defer_groups_of_a_long_backlog(store, target, state)?;
    loop {
        if state.needs_full_sync {
            return Ok(());
        }
        let after = match start_of(state) {
            Some(after) => after,
            None => {
                state.needs_full_sync = true;
                store.put_scim_state(&feed, state)?;
                return Ok(());
            }
        };
        let limits = target.bulk_limits().await?;
        let size = if limits.is_some() { BULK_PAGE } else { PAGE };
        let page = match store.changes_after(&feed, after.as_ref(), size) {
            Ok(page) => page,
            Err(FeedError::Store(e)) => return Err(Fault::Store(e)),
            Err(FeedError::Gone { .. } | FeedError::NotOfFeed { .. }) => {
                state.needs_full_sync = true;
                store.put_scim_state(&feed, state)?;
                return Ok(());
            }
        };
        let pushed = match limits {
            Some(limits) => push_page_by_bulk(store, target, limits, &page.changes, state).await,
            None => push_page_alone(store, target, &page.changes, state).await,
        };
        if let Err(fault) = pushed {
            store.put_scim_state(&feed, state)?;
            return Err(fault);
        }
        // Saved once a page: a stop before it pushes the page's changes
        // again, which converges (invariant 3).
        store.put_scim_state(&feed, state)?;
        if !page.more {
            break;
        }
    }
    if state.groups_deferred {
        put_all_groups(store, target, state).await?;
        state.groups_deferred = false;
        store.put_scim_state(&feed, state)?;
    }
    Ok(())
}

/// Whether the push moves each person's group memberships as it goes
/// (not while a long backlog defers them to [`put_all_groups`]).
fn moves_groups(target: &Target, state: &ScimState) -> bool {
    target.scim.groups && !state.groups_deferred
}

/// A backlog of [`DEFER_GROUPS_AT`] changes or more (an initial load, a
/// long outage) is pushed users first, then every group is put whole
/// once: membership PATCHes page after page would have the target rewrite
/// its biggest groups again and again (quadratic in a target that stores a
/// group as one document).
fn defer_groups_of_a_long_backlog(
    store: &Store,
    target: &Target,
    state: &mut ScimState,
) -> Result<(), Fault> {
    if !target.scim.groups || state.groups_deferred || state.needs_full_sync {
        return Ok(());
    }
    let Some(after) = start_of(state) else {
        return Ok(());
    };
    let backlog = match store.changes_after(target.name(), after.as_ref(), DEFER_GROUPS_AT) {
        Ok(page) => page.changes.len(),
        Err(FeedError::Store(e)) => return Err(Fault::Store(e)),
        Err(_) => return Ok(()),
    };
    if backlog >= DEFER_GROUPS_AT {
        tracing::info!(
            feed = target.name(),
            "a long SCIM backlog: users first, then each group put whole"
        );
        state.groups_deferred = true;
        store.put_scim_state(target.name(), state)?;
    }
    Ok(())
}

/// Puts each of the feed's groups whole (`PUT`, or `POST` for a group not
/// there yet) with the users flagsync keeps for its members, deletes the
/// remembered groups the feed no longer has, and remembers each user's
/// groups. A group the target refuses is recorded as `group NAME` among
/// the failures (and left out of its members' remembered groups, so a
/// later push or `scim sync` puts it again).
async fn put_all_groups(
    store: &Store,
    target: &Target,
    state: &mut ScimState,
) -> Result<(), Fault> {
    let feed = target.name().to_string();
    let users = store.scim_users(&feed)?;
    let mut people: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    store.for_each_recipient(&feed, |id, record| {
        if let Some(user) = users.get(id) {
            for group in &record.groups {
                wanted
                    .entry(group.clone())
                    .or_default()
                    .push(user.id.clone());
            }
            people.insert(id.to_string(), record.groups);
        }
        Ok(())
    })?;
    let mut refused: BTreeSet<String> = BTreeSet::new();
    for (name, members) in &wanted {
        match put_group(store, target, name, members).await {
            Ok(()) => {
                state.failures.remove(&format!("group {name}"));
            }
            Err(Fault::User(reason)) => {
                state.fail_user(&format!("group {name}"), reason);
                refused.insert(name.clone());
            }
            Err(fault) => return Err(fault),
        }
    }
    for (name, id) in store.scim_groups(&feed)? {
        if !wanted.contains_key(&name) {
            delete_group(store, target, &name, &id).await?;
        }
    }
    let kept: Vec<(String, Option<ScimUser>)> = people
        .into_iter()
        .filter_map(|(id, groups)| {
            let user = ScimUser {
                id: users.get(&id)?.id.clone(),
                groups: groups
                    .into_iter()
                    .filter(|g| !refused.contains(g))
                    .collect(),
            };
            Some((id, Some(user)))
        })
        .collect();
    for chunk in kept.chunks(STORE_BATCH) {
        store.put_scim_users(&feed, chunk)?;
    }
    Ok(())
}

/// Group `name` on the target with exactly `members`: replaced when
/// remembered and still there, else created (adopted by name on a 409).
pub(super) async fn put_group(
    store: &Store,
    target: &Target,
    name: &str,
    members: &[String],
) -> Result<(), Fault> {
    let body = user::group_json(name, members);
    if let Some(id) = store.scim_groups(target.name())?.get(name) {
        let answer = target.call("PUT", &group_path(id), Some(&body)).await?;
        if answer.status != 404 {
            return judge(&answer, &format!("PUT /Groups ('{name}')"), false);
        }
        store.put_scim_group(target.name(), name, None)?;
    }
    let answer = target.call("POST", "/Groups", Some(&body)).await?;
    let id = if answer.status == 409 {
        let id = target
            .find("Groups", "displayName", name)
            .await?
            .ok_or_else(|| {
                Fault::User(format!(
                    "POST /Groups '{name}': 409 Conflict, and no group of that name is listed"
                ))
            })?;
        target
            .expect("PUT", &group_path(&id), Some(&body), false)
            .await?;
        id
    } else {
        judge(&answer, "POST /Groups", true)?;
        id_of(&serde_json::from_slice(&answer.full_body).unwrap_or(Value::Null))?
    };
    store.put_scim_group(target.name(), name, Some(&id))?;
    Ok(())
}

/// A page's changes, one request each, the cursor moved after each.
async fn push_page_alone(
    store: &Store,
    target: &Target,
    changes: &[crate::store::FeedChange],
    state: &mut ScimState,
) -> Result<(), Fault> {
    let groups = moves_groups(target, state);
    for change in changes {
        let id = change.change.id();
        match push_recipient(store, target, id, groups).await {
            Ok(()) => {
                state.failures.remove(id);
            }
            Err(Fault::User(reason)) => {
                tracing::warn!(feed = target.name(), id = %crate::import::printable(id), %reason, "the SCIM target refused a person");
                state.fail_user(id, reason);
            }
            Err(fault) => return Err(fault),
        }
        state.position = ScimPosition::At(change.cursor().encode());
    }
    Ok(())
}

/// A page's changes by SCIM Bulk; the cursor moves past the page once
/// all of it is pushed.
async fn push_page_by_bulk(
    store: &Store,
    target: &Target,
    limits: bulk::Limits,
    changes: &[crate::store::FeedChange],
    state: &mut ScimState,
) -> Result<(), Fault> {
    let ids: Vec<String> = changes.iter().map(|c| c.change.id().to_string()).collect();
    let groups = moves_groups(target, state);
    bulk::push_page(store, target, limits, &ids, groups, state).await?;
    if let Some(last) = changes.last() {
        state.position = ScimPosition::At(last.cursor().encode());
    }
    Ok(())
}

/// One push of a feed by the sender, its outcome recorded in the state.
async fn push_once(store: &Store, target: &Target) {
    let busy = busy_lock(target.name());
    let _busy = busy.lock().await;
    let feed = target.name();
    let mut state = match store.scim_state(feed) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(feed, error = %e, "the SCIM state cannot be read");
            return;
        }
    };
    if state.next_attempt > crate::mail::unix_now() || state.needs_full_sync {
        return;
    }
    let outcome = push_feed(store, target, &mut state).await;
    record_outcome(&mut state, outcome.err());
    if let Err(e) = store.put_scim_state(feed, &state) {
        tracing::error!(feed, error = %e, "the SCIM state cannot be written");
    }
}

/// An attempt's outcome in the state: a fault sets the error and the next
/// attempt after a doubling pause; success clears them.
fn record_outcome(state: &mut ScimState, fault: Option<Fault>) {
    match fault {
        None => {
            if state.attempts > 0 || state.last_error.is_some() {
                tracing::info!("the SCIM target is reachable again");
            }
            state.attempts = 0;
            state.last_error = None;
            state.next_attempt = 0;
            state.last_success_at =
                Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        }
        Some(fault) => {
            state.attempts = state.attempts.saturating_add(1);
            let pause = pause_after(state.attempts);
            state.next_attempt = crate::mail::unix_now() + pause.as_secs();
            tracing::warn!(error = %fault, attempts = state.attempts, "the SCIM target failed; trying again later");
            state.last_error = Some(fault.to_string());
        }
    }
}

fn pause_after(attempts: u32) -> Duration {
    crate::mail::pause_after(FIRST_PAUSE, attempts)
}

/// Starts the sender thread of `flagsync serve` when a feed has a target;
/// it ends when `shutdown` is cancelled.
pub fn spawn_sender(
    store: Arc<Store>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Option<std::thread::JoinHandle<()>> {
    let mut targets = Vec::new();
    for feed in &config.feeds {
        match Target::new(feed) {
            Ok(Some(target)) => targets.push(target),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(feed = %feed.name, error = %e, "the SCIM target cannot be used as configured")
            }
        }
    }
    for problem in config_problems(&config) {
        tracing::warn!(%problem, "a SCIM target cannot be reached as configured");
    }
    if targets.is_empty() {
        return None;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the SCIM sender cannot start");
            return None;
        }
    };
    let thread = std::thread::Builder::new()
        .name("scim".into())
        .spawn(move || runtime.block_on(run_sender(store, targets, shutdown)));
    thread.ok()
}

/// Called by `serve` before it takes its first file (intake, control
/// socket): a target first seen while its feed has nobody starts from the
/// first change, as every run goes through the server from then on.
pub fn prepare_targets(store: &Store, config: &Config) {
    for feed in config.feeds.iter().filter(|f| f.scim.is_some()) {
        if let Err(e) = start_if_empty(store, &feed.name) {
            tracing::error!(feed = %feed.name, error = %e, "the SCIM state cannot be written");
        }
    }
}

fn start_if_empty(store: &Store, feed: &str) -> Result<(), StoreError> {
    let mut state = store.scim_state(feed)?;
    if state.position == ScimPosition::Never && store.recipient_count(feed)? == 0 {
        state.position = ScimPosition::Start;
        store.put_scim_state(feed, &state)?;
    }
    Ok(())
}

async fn run_sender(store: Arc<Store>, targets: Vec<Target>, shutdown: CancellationToken) {
    // A task per target: a target that is slow, down or far behind (a
    // million people to push) never delays another feed's.
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let wake = Arc::new(Notify::new());
        WAKES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(wake.clone());
        tasks.spawn(push_target(store.clone(), target, wake, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// Pushes one target after each committed run (and every [`POLL`]) until
/// `shutdown`.
async fn push_target(
    store: Arc<Store>,
    target: Target,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            // A push cut short is pushed again (from the saved cursor).
            _ = shutdown.cancelled() => return,
            _ = push_once(&store, &target) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// What `scim sync` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub created: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub groups_created: u64,
    pub groups_replaced: u64,
    pub groups_deleted: u64,
    /// Recipient ID (or `group NAME`) → why the target refused it.
    pub failed: BTreeMap<String, String>,
}

/// Reconciles the whole feed with the target: every stored person is
/// created or replaced where the target differs; "extra" users are
/// removed (`scim_remove`): users the target has for no stored person that
/// flagsync provisioned, i.e. that it remembers, or whose `externalId` is
/// one of the feed's people's (a duplicate); users the target has from
/// elsewhere (no such `externalId`) are never touched. Groups likewise
/// (their members replaced). Then the cursor is set to the log's end.
pub async fn sync_feed(store: &Store, target: &Target) -> Result<SyncReport, Fault> {
    let busy = busy_lock(target.name());
    let _busy = busy.lock().await;
    let feed = target.name().to_string();
    // The end is read first: a run committed during the sync is pushed
    // again afterwards, never skipped.
    let end = log_end(store, &feed)?;
    let mut people: BTreeMap<String, crate::import::record::Record> = BTreeMap::new();
    store.for_each_recipient(&feed, |id, record| {
        people.insert(id.to_string(), record);
        Ok(())
    })?;
    let mut report = SyncReport::default();
    let mut state = store.scim_state(&feed)?;
    let users = target.list("Users").await?;
    let mut remembered = store.scim_users(&feed)?;
    let user_ids = sync_users(
        store,
        target,
        &people,
        &users,
        &mut remembered,
        &mut report,
        &mut state,
    )
    .await?;
    if target.scim.groups {
        sync_groups(store, target, &people, &user_ids, &mut report).await?;
    }
    state.position = match end {
        Some(cursor) => ScimPosition::At(cursor.encode()),
        None => ScimPosition::Start,
    };
    state.needs_full_sync = false;
    record_outcome(&mut state, None);
    store.put_scim_state(&feed, &state)?;
    Ok(report)
}

/// The last change of the feed's log (`None`: none kept).
fn log_end(store: &Store, feed: &str) -> Result<Option<FeedCursor>, Fault> {
    let mut after: Option<FeedCursor> = None;
    loop {
        let page = store
            .changes_after(feed, after.as_ref(), 10_000)
            .map_err(|e| match e {
                FeedError::Store(e) => Fault::Store(e),
                other => Fault::Target(other.to_string()),
            })?;
        after = page.next(after.as_ref());
        if !page.more {
            return Ok(after);
        }
    }
}

/// The users half of [`sync_feed`]; returns recipient ID → the target's id.
async fn sync_users(
    store: &Store,
    target: &Target,
    people: &BTreeMap<String, crate::import::record::Record>,
    users: &[Value],
    remembered: &mut BTreeMap<String, ScimUser>,
    report: &mut SyncReport,
    state: &mut ScimState,
) -> Result<BTreeMap<String, String>, Fault> {
    let feed = target.name().to_string();
    let by_id: BTreeMap<&str, &Value> = users
        .iter()
        .filter_map(|u| Some((u.get("id")?.as_str()?, u)))
        .collect();
    let by_name: BTreeMap<&str, &Value> = users
        .iter()
        .filter_map(|u| Some((u.get("userName")?.as_str()?, u)))
        .collect();
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut external_ids: BTreeSet<String> = BTreeSet::new();
    let mut to_put: Vec<bulk::Put> = Vec::new();
    for (id, record) in people {
        let want = user::user_json(&target.scim, id, record);
        if let Some(ext) = want.get("externalId").and_then(Value::as_str) {
            external_ids.insert(ext.to_string());
        }
        let user_name = want
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let have = remembered
            .get(id)
            .and_then(|k| by_id.get(k.id.as_str()))
            .or_else(|| by_name.get(user_name))
            .copied();
        match have {
            Some(have) if !user::differs(&want, have) => {
                report.unchanged += 1;
                ours.insert(id.clone(), id_of(have)?);
            }
            have => to_put.push(bulk::Put {
                id: id.clone(),
                known: have.map(id_of).transpose()?,
                want,
            }),
        }
    }
    let put = put_users(target, to_put, report, state).await?;
    ours.extend(put);
    let mut kept = Vec::with_capacity(ours.len());
    for (id, user_id) in &ours {
        state.failures.remove(id);
        claimed.insert(user_id.clone());
        let groups = remembered
            .get(id)
            .map(|k| k.groups.clone())
            .unwrap_or_default();
        let user = ScimUser {
            id: user_id.clone(),
            groups,
        };
        kept.push((id.clone(), Some(user.clone())));
        remembered.insert(id.clone(), user);
    }
    for chunk in kept.chunks(STORE_BATCH) {
        store.put_scim_users(&feed, chunk)?;
    }
    let remembered_gone: BTreeMap<String, String> = remembered
        .iter()
        .filter(|(id, _)| !people.contains_key(*id))
        .map(|(id, k)| (k.id.clone(), id.clone()))
        .collect();
    for user in users {
        let Ok(user_id) = id_of(user) else { continue };
        if claimed.contains(&user_id) {
            continue;
        }
        let ext = user
            .get("externalId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let gone_recipient = remembered_gone.get(&user_id);
        if gone_recipient.is_none() && !external_ids.contains(ext) {
            continue;
        }
        if target.scim.remove == ScimRemove::Deactivate
            && user.get("active") == Some(&Value::Bool(false))
        {
            continue;
        }
        let known = ScimUser {
            id: user_id.clone(),
            groups: Vec::new(),
        };
        let recipient = gone_recipient
            .cloned()
            .unwrap_or_else(|| format!("(extra user {user_id})"));
        match remove_user(store, target, &recipient, known, target.scim.groups).await {
            Ok(()) => report.removed += 1,
            Err(Fault::User(reason)) => {
                report.failed.insert(recipient, reason);
            }
            Err(fault) => return Err(fault),
        }
    }
    // Remembered users of people gone that the target no longer lists.
    for (user_id, recipient) in &remembered_gone {
        if !by_id.contains_key(user_id.as_str()) {
            store.put_scim_user(&feed, recipient, None)?;
        }
    }
    Ok(ours)
}

/// Creates or replaces the users `to_put` (by Bulk when the target takes
/// it, what Bulk did not do alone); returns recipient ID → the target's id
/// of those done, counting them in `report` and recording refusals.
async fn put_users(
    target: &Target,
    to_put: Vec<bulk::Put>,
    report: &mut SyncReport,
    state: &mut ScimState,
) -> Result<BTreeMap<String, String>, Fault> {
    let mut done = match target.bulk_limits().await? {
        Some(limits) if !to_put.is_empty() => bulk::put_users(target, limits, &to_put).await?,
        _ => BTreeMap::new(),
    };
    for put in &to_put {
        let outcome = match done.get(&put.id) {
            Some(user_id) => Ok(user_id.clone()),
            None => upsert(target, put.known.as_deref(), &put.want).await,
        };
        match outcome {
            Ok(user_id) => {
                if put.known.is_some() {
                    report.replaced += 1;
                } else {
                    report.created += 1;
                }
                done.insert(put.id.clone(), user_id);
            }
            Err(Fault::User(reason)) => {
                state.fail_user(&put.id, reason.clone());
                report.failed.insert(put.id.clone(), reason);
            }
            Err(fault) => return Err(fault),
        }
    }
    Ok(done)
}

/// The groups half of [`sync_feed`]: each of the feed's groups with
/// exactly its members; remembered groups the feed no longer has deleted.
async fn sync_groups(
    store: &Store,
    target: &Target,
    people: &BTreeMap<String, crate::import::record::Record>,
    user_ids: &BTreeMap<String, String>,
    report: &mut SyncReport,
) -> Result<(), Fault> {
    let feed = target.name().to_string();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, record) in people {
        let Some(user_id) = user_ids.get(id) else {
            continue;
        };
        for group in &record.groups {
            wanted
                .entry(group.clone())
                .or_default()
                .push(user_id.clone());
        }
    }
    let groups = target.list("Groups").await?;
    let mut remembered = store.scim_groups(&feed)?;
    for (name, members) in &wanted {
        let have = groups
            .iter()
            .find(|g| {
                remembered.get(name).map(String::as_str) == g.get("id").and_then(Value::as_str)
            })
            .or_else(|| {
                groups
                    .iter()
                    .find(|g| g.get("displayName").and_then(Value::as_str) == Some(name))
            });
        let body = user::group_json(name, members);
        let outcome = match have {
            Some(have) => {
                let id = id_of(have)?;
                if members_of(have) == members.iter().cloned().collect::<BTreeSet<_>>() {
                    Ok(id)
                } else {
                    let put = target
                        .expect("PUT", &group_path(&id), Some(&body), false)
                        .await;
                    report.groups_replaced += u64::from(put.is_ok());
                    put.map(|_| id)
                }
            }
            None => {
                let made = target.expect("POST", "/Groups", Some(&body), true).await;
                report.groups_created += u64::from(made.is_ok());
                made.and_then(|v| id_of(&v))
            }
        };
        match outcome {
            Ok(id) => {
                store.put_scim_group(&feed, name, Some(&id))?;
                remembered.remove(name);
            }
            Err(Fault::User(reason)) => {
                report.failed.insert(format!("group {name}"), reason);
            }
            Err(fault) => return Err(fault),
        }
    }
    for (name, id) in remembered {
        if wanted.contains_key(&name) {
            continue;
        }
        delete_group(store, target, &name, &id).await?;
        report.groups_deleted += 1;
    }
    // Each person's groups as now on the target.
    let users: Vec<(String, Option<ScimUser>)> = people
        .iter()
        .filter_map(|(id, record)| {
            let user = ScimUser {
                id: user_ids.get(id)?.clone(),
                groups: record.groups.clone(),
            };
            Some((id.clone(), Some(user)))
        })
        .collect();
    for chunk in users.chunks(STORE_BATCH) {
        store.put_scim_users(&feed, chunk)?;
    }
    Ok(())
}

fn members_of(group: &Value) -> BTreeSet<String> {
    group
        .get("members")
        .and_then(Value::as_array)
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m.get("value")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A target's state as people read it.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// `in_sync`, `behind`, `failing`, `needs_full_sync`.
    pub state: &'static str,
    /// Changes not yet received (at most [`MAX_COUNTED`] counted).
    pub behind: u64,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
    pub failures: BTreeMap<String, String>,
    /// A long backlog went users first: the groups are still to be put.
    pub groups_pending: bool,
}

impl Status {
    /// One line: "in sync", "behind by 3 changes", "failing: …", "needs a
    /// full sync (…)".
    pub fn summary(&self, feed: &str) -> String {
        match self.state {
            "needs_full_sync" => {
                format!("needs a full sync: run `flagsync scim sync --feed {feed}`")
            }
            "failing" => format!(
                "failing ({} changes behind): {}",
                self.behind,
                self.last_error.as_deref().unwrap_or_default()
            ),
            "behind" if self.behind == 0 && self.groups_pending => {
                "behind: the users are there, the groups are being put".into()
            }
            "behind" => format!("behind by {} changes", self.behind),
            _ => "in sync".into(),
        }
    }
}

/// The feed's target state, read from the store.
pub fn status(store: &Store, feed: &str) -> Result<Status, StoreError> {
    let state = store.scim_state(feed)?;
    let behind = match start_of(&state) {
        Some(after) if !state.needs_full_sync => {
            match store.changes_after(feed, after.as_ref(), MAX_COUNTED) {
                Ok(page) => Some(page.changes.len() as u64),
                Err(FeedError::Store(e)) => return Err(e),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let name = match (behind, &state.last_error) {
        (None, _) => "needs_full_sync",
        (Some(_), Some(_)) => "failing",
        (Some(0), None) if !state.groups_deferred => "in_sync",
        (Some(_), None) => "behind",
    };
    Ok(Status {
        state: name,
        behind: behind.unwrap_or(0),
        last_error: state.last_error,
        last_success_at: state.last_success_at,
        failures: state.failures,
        groups_pending: state.groups_deferred,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            reason: String::new(),
            location: None,
            body: String::new(),
            full_body: Default::default(),
            complete: true,
        }
    }

    #[test]
    fn the_target_is_unwell_or_one_person_is_refused() {
        for status in [401, 403, 408, 429, 500, 503, 302] {
            assert!(
                matches!(judge(&answer(status), "x", false), Err(Fault::Target(_))),
                "{status}"
            );
        }
        assert!(matches!(
            judge(&answer(404), "x", true),
            Err(Fault::Target(_))
        ));
        for status in [400, 404, 409, 422] {
            assert!(
                matches!(judge(&answer(status), "x", false), Err(Fault::User(_))),
                "{status}"
            );
        }
        assert!(judge(&answer(204), "x", true).is_ok());
    }

    #[test]
    fn pauses_double_up_to_an_hour() {
        assert_eq!(pause_after(1), FIRST_PAUSE);
        assert_eq!(pause_after(3), FIRST_PAUSE * 4);
        assert_eq!(pause_after(40), crate::mail::LONGEST_PAUSE);
    }

    #[test]
    fn a_filter_is_percent_encoded() {
        assert_eq!(
            percent_encode("userName eq \"a b\""),
            "userName%20eq%20%22a%20b%22"
        );
    }
}
