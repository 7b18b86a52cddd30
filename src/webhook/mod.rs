//! Webhooks: run events POSTed as signed JSON (Standard Webhooks) to each
//! feed's `[[feed.webhook]]` targets, from the durable queue in the store
//! (`store::webhooks`).
//!
//! An adapter like `mail`: `events` decides what a run sends (the worker
//! queues it in the run's transaction), the sender here delivers it.
//!
//! Invariants:
//! 1. Delivery never blocks, slows or undoes an import: the sender is its
//!    own task in the server and reads the queue from the store.
//! 2. In order per target: only a target's oldest pending message is
//!    attempted, so a failing message holds back its target's later ones;
//!    targets are attempted concurrently, so one slow or down target never
//!    delays another.
//! 3. At least once: a message's state is in the store after every
//!    attempt; one attempted but not recorded (a stop mid-attempt) is sent
//!    again after the restart, with the same `webhook-id`.
//! 4. A 2xx answer delivers; anything else (a redirect included: never
//!    followed) is retried with growing pauses (`retry_pause`, doubling up
//!    to an hour) until `retry_for` has passed since it was queued.
//! 5. A page of changes is built from the change log at each attempt,
//!    the same bytes every time (see `body_to_send`); a page whose run
//!    is no longer kept is given up, saying so, never sent short.

pub(crate) mod client;
pub mod events;
mod sign;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{shown_url, Config, Feed, HookUrl, Webhook};
use crate::store::{target_key, HookMessage, HookState, Store};

use crate::mail::pause_after;

pub use client::Answer;
pub use sign::Secret;

/// A target whose last attempt could not be recorded waits this long.
const UNRECORDED_PAUSE: Duration = Duration::from_secs(60);
/// The sender looks at the queue at least this often: a safety net, as
/// every run this process records wakes it (and events queued while no
/// server ran, by `flagsync import`, are read when it starts).
const POLL: Duration = Duration::from_secs(2);

/// Wakes the sender when a run queued events. A static: runs are recorded
/// in several places of the worker, and a process has one sender at most.
static WAKE: Notify = Notify::const_new();

/// Tells the sender that events were queued (a no-op without a sender).
pub fn wake() {
    WAKE.notify_one();
}

/// Problems `flagsync check` reports: secret and CA files that cannot be
/// used, each naming its feed and setting.
pub fn config_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for feed in &config.feeds {
        for (i, hook) in feed.webhooks.iter().enumerate() {
            let at = format!(
                "feed '{}', webhook {} ({})",
                feed.name,
                i + 1,
                shown_url(&hook.url)
            );
            if let Err(e) = Secret::read(&hook.secret_file) {
                problems.push(format!("{at}: {e}"));
            }
            if let Err(e) = client::tls_connector(hook.ca_file.as_deref()) {
                problems.push(format!("{at}: {e}"));
            }
        }
    }
    problems
}

/// A configured target, ready to send.
struct Target {
    hook: Webhook,
    url: Result<HookUrl, String>,
    tls: Result<tokio_rustls::TlsConnector, String>,
}

impl Target {
    fn new(hook: &Webhook) -> Target {
        Target {
            hook: hook.clone(),
            url: HookUrl::parse(&hook.url),
            tls: client::tls_connector(hook.ca_file.as_deref()),
        }
    }

    /// One signed POST of `body` as message `id`, now.
    async fn post(&self, id: &str, body: &str) -> Result<Answer, String> {
        let url = self.url.as_ref().map_err(|e| format!("url: {e}"))?;
        let tls = self.tls.as_ref().map_err(Clone::clone)?;
        let secret = Secret::read(&self.hook.secret_file)?;
        let timestamp = crate::mail::unix_now();
        let headers = [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", secret.sign(id, timestamp, body)),
        ];
        client::post(url, tls, &headers, body.to_string(), self.hook.timeout).await
    }
}

/// Whether an answer delivers the message; the error says why not.
fn judge(answer: &Answer) -> Result<(), String> {
    match answer.status {
        200..=299 => Ok(()),
        300..=399 => Err(format!(
            "{}: redirects are not followed; configure the final URL{}",
            answer.status_line(),
            answer
                .location
                .as_deref()
                .map(|l| format!(" (it points to {})", shown_url(l)))
                .unwrap_or_default()
        )),
        _ if answer.body.is_empty() => Err(answer.status_line()),
        _ => Err(format!("{}: {}", answer.status_line(), answer.body)),
    }
}

/// The configured targets by queue key.
fn targets_of(config: &Config) -> HashMap<String, Arc<Target>> {
    config
        .feeds
        .iter()
        .flat_map(|feed| {
            feed.webhooks.iter().map(|hook| {
                (
                    target_key(&feed.name, &hook.url),
                    Arc::new(Target::new(hook)),
                )
            })
        })
        .collect()
}

/// Delivers queued messages until `shutdown` (the server's task).
pub async fn run_sender(store: Arc<Store>, config: Arc<Config>, shutdown: CancellationToken) {
    // What `flagsync check` would refuse, said once at the start: each
    // attempt of such a target fails with it too.
    for problem in config_problems(&config) {
        tracing::warn!(%problem, "a webhook cannot be delivered as configured");
    }
    let targets = targets_of(&config);
    let mut busy: HashSet<String> = HashSet::new();
    let mut attempts: JoinSet<String> = JoinSet::new();
    loop {
        let next_due = match store.webhook_heads() {
            Ok(heads) => start_due(heads, &targets, &store, &mut busy, &mut attempts),
            Err(e) => {
                tracing::error!(error = %e, "the webhook queue cannot be read");
                None
            }
        };
        let wait = next_due
            .map(|due| Duration::from_secs(due.saturating_sub(crate::mail::unix_now())))
            .unwrap_or(POLL)
            .min(POLL);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = WAKE.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(done) = attempts.join_next() => {
                if let Ok(target) = done {
                    busy.remove(&target);
                }
            }
        }
    }
    // An attempt cut short is not recorded: its message is sent again
    // after the restart (at least once).
    attempts.abort_all();
}

/// Starts an attempt for each target whose head is due and which has none
/// under way; returns when the next head is due.
fn start_due(
    heads: Vec<HookMessage>,
    targets: &HashMap<String, Arc<Target>>,
    store: &Arc<Store>,
    busy: &mut HashSet<String>,
    attempts: &mut JoinSet<String>,
) -> Option<u64> {
    let now = crate::mail::unix_now();
    let mut next_due: Option<u64> = None;
    for message in heads {
        let key = message.target();
        if busy.contains(&key) {
            continue;
        }
        if message.next_attempt > now {
            next_due = Some(next_due.map_or(message.next_attempt, |n| n.min(message.next_attempt)));
            continue;
        }
        busy.insert(key.clone());
        let target = targets.get(&key).cloned();
        attempts.spawn(attempt(store.clone(), target, message, key));
    }
    next_due
}

/// Sends `message` once and records the outcome; returns its target's key.
async fn attempt(
    store: Arc<Store>,
    target: Option<Arc<Target>>,
    mut message: HookMessage,
    key: String,
) -> String {
    match &target {
        Some(target) => match body_to_send(&store, &message).await {
            Ok(body) => {
                let outcome = target.post(&message.webhook_id(), &body).await;
                record_attempt(&mut message, outcome, &target.hook);
            }
            Err(Unsendable::ForNow(error)) => {
                record_attempt(&mut message, Err(error), &target.hook)
            }
            Err(Unsendable::Never(reason)) => give_up(&mut message, reason),
        },
        None => give_up_unconfigured(&mut message),
    }
    // redb's writer may be busy with a run: wait for it off the runtime.
    let recorded = tokio::task::spawn_blocking(move || store.update_webhook(&message)).await;
    let error = match recorded {
        Ok(Ok(())) => return key,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    // The store still says "due now": without a pause the target would
    // be sent the same message again and again while the store cannot be
    // written (a full disk). It stays busy for the pause.
    tracing::error!(%error, "a webhook attempt cannot be recorded; the target waits");
    tokio::time::sleep(UNRECORDED_PAUSE).await;
    key
}

/// Why a message's body cannot be built.
enum Unsendable {
    /// The store cannot be read now: an attempt that failed.
    ForNow(String),
    /// It never will be: the message is given up.
    Never(String),
}

/// The payload to sign and send: the queued body, or for a page of
/// changes its body with the page read from the change log.
///
/// Built on every attempt, never stored: the log of a kept run does not
/// change (a confirmation, the one thing that rewrites it, first writes
/// the pages still pending into their bodies), so every attempt builds
/// the same bytes, and the `webhooks` table (read whole by `/metrics` and
/// `runs show`) never holds a run's changes. A page costs one read of the
/// log up to its end, off the import's path.
async fn body_to_send(store: &Arc<Store>, message: &HookMessage) -> Result<String, Unsendable> {
    let Some(page) = message.changes else {
        return Ok(message.body.clone());
    };
    let Some(run_id) = message.run_id else {
        return Err(Unsendable::Never(
            "a page of changes of no run (the queued message is damaged); not sent".into(),
        ));
    };
    let (reader, feed) = (store.clone(), message.feed.clone());
    let read = tokio::task::spawn_blocking(move || {
        reader.kept_run_changes(&feed, run_id, page.offset, page.limit())
    })
    .await;
    let changes = match read {
        Ok(Ok(Some(changes))) => changes,
        Ok(Ok(None)) => return Err(Unsendable::Never(pruned_reason(message, run_id))),
        Ok(Err(e)) => return Err(Unsendable::ForNow(unreadable_reason(run_id, &e))),
        Err(e) => return Err(Unsendable::ForNow(unreadable_reason(run_id, &e))),
    };
    if changes.len() as u64 != page.len() {
        return Err(Unsendable::Never(format!(
            "run {run_id}'s change log no longer holds the {} changes of page {}/{} \
             (it has {} from change {}); not sent: `flagsync runs changes {run_id}` \
             shows what it holds",
            page.len(),
            message.page,
            message.pages,
            changes.len(),
            page.offset + 1
        )));
    }
    events::page_body(&message.body, &changes).map_err(Unsendable::Never)
}

fn pruned_reason(message: &HookMessage, run_id: u64) -> String {
    format!(
        "run {run_id}'s changes are no longer in the change log (history_retention \
         deleted the run before page {}/{} was delivered); not sent: `flagsync recipients \
         export --feed {feed}` or GET /api/recipients?feed={feed} gives the current list",
        message.page,
        message.pages,
        feed = message.feed
    )
}

fn unreadable_reason(run_id: u64, error: &dyn std::fmt::Display) -> String {
    format!("run {run_id}'s changes cannot be read from the store: {error}")
}

/// Gives `message` up without sending it, for `reason`.
fn give_up(message: &mut HookMessage, reason: String) {
    tracing::error!(id = message.id, feed = %message.feed, %reason, "webhook given up");
    message.state = HookState::GaveUp;
    message.last_error = Some(reason);
}

fn give_up_unconfigured(message: &mut HookMessage) {
    message.state = HookState::GaveUp;
    message.last_error = Some(format!(
        "feed '{}' has no webhook {} any more; not sent",
        message.feed,
        shown_url(&message.url)
    ));
    tracing::warn!(id = message.id, feed = %message.feed, "webhook message of a removed target given up");
}

fn record_attempt(message: &mut HookMessage, outcome: Result<Answer, String>, hook: &Webhook) {
    message.attempts += 1;
    let now = crate::mail::unix_now();
    message.last_status = outcome.as_ref().ok().map(|a| a.status);
    let error = match outcome.and_then(|answer| judge(&answer)) {
        Ok(()) => {
            tracing::info!(id = message.id, feed = %message.feed, event = %message.event, "webhook delivered");
            message.state = HookState::Delivered;
            message.delivered_at =
                Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
            message.last_error = None;
            return;
        }
        Err(e) => e,
    };
    let url = shown_url(&message.url);
    message.last_error = Some(error.clone());
    if now.saturating_sub(message.queued_unix) >= hook.retry_for.as_secs() {
        tracing::error!(id = message.id, feed = %message.feed, %url, %error, "webhook given up");
        message.state = HookState::GaveUp;
    } else {
        message.state = HookState::Failing;
        message.next_attempt = now
            + pause_after(hook.retry_pause, message.attempts)
                .as_secs()
                .max(1);
        tracing::warn!(id = message.id, feed = %message.feed, %url, %error, attempt = message.attempts, "webhook not delivered; will retry");
    }
}

/// What one target answered a ping.
pub struct PingResult {
    pub url: String,
    pub outcome: Result<Answer, String>,
}

/// Sends a signed `ping` to each of `feed`'s targets at once (`flagsync
/// webhooks test`); each target's answer, or why it failed.
pub async fn ping(feed: &Feed) -> Vec<PingResult> {
    let body = events::ping_body(feed, SystemTime::now());
    let mut results = Vec::new();
    for hook in &feed.webhooks {
        let id = format!("msg_ping_{}", crate::mail::unix_now());
        let outcome = Target::new(hook).post(&id, &body).await;
        let outcome = outcome.and_then(|answer| judge(&answer).map(|()| answer));
        results.push(PingResult {
            url: shown_url(&hook.url),
            outcome,
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            reason: String::new(),
            location: Some("https://elsewhere/x?t=1".into()),
            body: "no".into(),
            full_body: Default::default(),
            complete: true,
        }
    }

    #[test]
    fn only_2xx_delivers_and_a_redirect_says_what_to_do() {
        assert!(judge(&answer(204)).is_ok());
        let e = judge(&answer(301)).unwrap_err();
        assert!(e.contains("configure the final URL"), "{e}");
        assert!(e.contains("https://elsewhere/x?…"), "{e}");
        assert!(judge(&answer(401)).unwrap_err().contains("401"));
    }

    fn failing_message(queued_unix: u64) -> HookMessage {
        HookMessage {
            id: 1,
            feed: "hr".into(),
            url: "https://a/".into(),
            run_id: Some(1),
            event: "run.applied".into(),
            page: 1,
            pages: 1,
            body: "{}".into(),
            changes: None,
            state: HookState::Queued,
            queued_at: String::new(),
            queued_unix,
            next_attempt: queued_unix,
            attempts: 0,
            last_error: None,
            last_status: None,
            delivered_at: None,
        }
    }

    fn hook() -> Webhook {
        let text = "[[feed]]\nname = \"hr\"\n[[feed.field]]\nname = \"id\"\ntype = \"id\"\n\
            [[feed.webhook]]\nurl = \"https://a/\"\nsecret_file = \"s\"\nretry_for = \"1h\"\n";
        let config = Config::parse(text, crate::config::Source::Embedded).unwrap();
        config.feeds[0].webhooks[0].clone()
    }

    #[test]
    fn a_failure_is_retried_until_retry_for_then_given_up_and_2xx_delivers() {
        let now = crate::mail::unix_now();
        let mut young = failing_message(now);
        record_attempt(&mut young, Ok(answer(503)), &hook());
        assert_eq!(young.state, HookState::Failing);
        assert_eq!((young.attempts, young.last_status), (1, Some(503)));
        assert!(
            young.next_attempt >= now + 10,
            "the first pause is retry_pause"
        );
        let mut old = failing_message(now - 3600);
        record_attempt(&mut old, Err("cannot connect".into()), &hook());
        assert_eq!(old.state, HookState::GaveUp);
        assert_eq!(old.last_error.as_deref(), Some("cannot connect"));
        assert_eq!(old.last_status, None);
        record_attempt(&mut young, Ok(answer(200)), &hook());
        assert_eq!(young.state, HookState::Delivered);
        assert!(young.last_error.is_none() && young.delivered_at.is_some());
    }

    /// A store with an applied run of feed "hr" (started `started_at`)
    /// that added E1..E3, its full pages of 2 queued.
    fn store_with_pages(dir: &std::path::Path, started_at: &str) -> (Arc<Store>, Config) {
        let text = "[[feed]]\nname = \"hr\"\n[[feed.field]]\nname = \"id\"\ntype = \"id\"\n\
            [[feed.webhook]]\nurl = \"https://a/\"\nsecret_file = \"s\"\n\
            include_changes = \"full\"\npage_size = 2\n";
        let config = Config::parse(text, crate::config::Source::Embedded).unwrap();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        let txn = store.begin_run().unwrap();
        let mut run = crate::store::Run::new("hr", "hr.csv", started_at.into());
        run.run_id = Some(txn.next_run_id().unwrap());
        run.state = crate::store::RunState::Applied;
        txn.with_feed("hr", run.run_id, |w| {
            use crate::import::FeedWriter;
            for id in ["E1", "E2", "E3"] {
                w.log_change(crate::import::Change::Added { id }).unwrap();
            }
        })
        .unwrap();
        txn.put_run(&run).unwrap();
        let messages = events::run_messages(&config.feeds[0], &run, 3, SystemTime::now());
        txn.queue_webhooks(messages).unwrap();
        txn.commit().unwrap();
        (Arc::new(store), config)
    }

    #[tokio::test]
    async fn a_page_is_built_from_the_log_when_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_pages(dir.path(), "2026-12-05T00:00:00Z");
        let heads = store.webhook_heads().unwrap();
        let Ok(body) = body_to_send(&store, &heads[0]).await else {
            panic!("the first page cannot be built");
        };
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["data"]["changes"][1]["id"], "E2");
        assert_eq!(
            (&body["data"]["page"], &body["data"]["pages"]),
            (&1.into(), &2.into())
        );
    }

    #[tokio::test]
    async fn a_page_the_log_no_longer_fills_is_never_sent_short() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_pages(dir.path(), "2026-12-05T00:00:00Z");
        let mut message = store.webhook_heads().unwrap().remove(0);
        // Queued when the run had logged 5 changes; its log holds 3.
        message.changes = Some(crate::store::PageOfChanges {
            offset: 2,
            page_size: 2,
            run_changes: 5,
        });
        let Err(Unsendable::Never(reason)) = body_to_send(&store, &message).await else {
            panic!("a page of 1 change sent for one of 2");
        };
        assert!(
            reason.contains("no longer holds the 2 changes of page 1/2 (it has 1 from change 3)"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_page_whose_run_was_pruned_is_given_up_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let (store, config) = store_with_pages(dir.path(), "2020-01-01T00:00:00Z");
        let now = crate::mail::unix_now();
        let pruned = store.prune_history(now, now).unwrap();
        assert_eq!(pruned.deleted, 1, "the run went with history_retention");
        let head = store.webhook_heads().unwrap().remove(0);
        let key = head.target();
        let target = Arc::new(Target::new(&config.feeds[0].webhooks[0]));
        attempt(store.clone(), Some(target), head, key).await;
        let message = store.webhook_messages().unwrap().remove(0);
        assert_eq!(message.state, HookState::GaveUp);
        assert_eq!(message.attempts, 0, "nothing was sent");
        let error = message.last_error.unwrap_or_default();
        assert!(error.contains("no longer in the change log"), "{error}");
        assert!(error.contains("history_retention"), "{error}");
        assert!(error.contains("recipients export --feed hr"), "{error}");
        assert!(error.contains("/api/recipients"), "{error}");
    }

    #[test]
    fn pauses_grow_to_an_hour() {
        let first = Duration::from_secs(10);
        assert_eq!(pause_after(first, 1), first);
        assert_eq!(pause_after(first, 3), Duration::from_secs(40));
        assert_eq!(pause_after(first, 40), crate::mail::LONGEST_PAUSE);
    }
}
