//! `[[feed.webhook]]`: as written, and checked into [`Webhook`]. The
//! secret file is not read here (configuration reads no other file):
//! `flagsync check` and the sender do.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{duration_or, Problems};
use crate::config::{HookUrl, IncludeChanges, Webhook, WEBHOOK_EVENTS};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RETRY_PAUSE: Duration = Duration::from_secs(10);
const DEFAULT_PAGE_SIZE: usize = 1000;
const MAX_PAGE_SIZE: i64 = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Spanned<String>,
    secret_file: Option<String>,
    events: Option<Vec<Spanned<String>>>,
    include_changes: Option<Spanned<String>>,
    page_size: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    retry_for: Option<Spanned<String>>,
    retry_pause: Option<Spanned<String>>,
    ca_file: Option<String>,
    insecure_http: Option<bool>,
}

pub(super) fn validate_webhooks(
    feed: &str,
    raw: &[Spanned<RawWebhook>],
    problems: &mut Problems,
) -> Vec<Webhook> {
    let mut urls = std::collections::HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, hook)| {
            let at = format!("feed '{feed}', webhook {}", i + 1);
            let url = &hook.get_ref().url;
            // A target is its feed and URL: its queue and its order.
            if !urls.insert(url.get_ref().clone()) {
                problems.at(
                    url,
                    format!("{at}: url = \"{}\" is configured twice for the feed; keep one [[feed.webhook]] per receiver", url.get_ref()),
                );
            }
            validate_webhook(&at, hook, problems)
        })
        .collect()
}

fn validate_webhook(at: &str, spanned: &Spanned<RawWebhook>, problems: &mut Problems) -> Webhook {
    let raw = spanned.get_ref();
    check_url(at, &raw.url, raw.insecure_http.unwrap_or(false), problems);
    if raw.secret_file.is_none() {
        problems.at(
            spanned,
            format!("{at}: secret_file is required; write one with `flagsync webhooks secret > FILE` and give the receiver the same secret"),
        );
    }
    Webhook {
        url: raw.url.get_ref().clone(),
        secret_file: PathBuf::from(raw.secret_file.clone().unwrap_or_default()),
        events: validate_events(at, raw.events.as_deref(), problems),
        include_changes: validate_include_changes(at, raw.include_changes.as_ref(), problems),
        page_size: validate_page_size(at, raw.page_size.as_ref(), problems),
        timeout: duration_or(
            &format!("{at}: timeout"),
            raw.timeout.as_ref(),
            DEFAULT_TIMEOUT,
            problems,
        ),
        retry_for: duration_or(
            &format!("{at}: retry_for"),
            raw.retry_for.as_ref(),
            DEFAULT_RETRY_FOR,
            problems,
        ),
        retry_pause: duration_or(
            &format!("{at}: retry_pause"),
            raw.retry_pause.as_ref(),
            DEFAULT_RETRY_PAUSE,
            problems,
        ),
        ca_file: raw.ca_file.as_ref().map(PathBuf::from),
    }
}

fn check_url(at: &str, url: &Spanned<String>, insecure_http: bool, problems: &mut Problems) {
    match HookUrl::parse(url.get_ref()) {
        Err(why) => problems.at(
            url,
            format!("{at}: url = \"{}\" cannot be used: {why}", url.get_ref()),
        ),
        Ok(parsed) if !parsed.https && !insecure_http => problems.at(
            url,
            format!(
                "{at}: url = \"{}\" is not https; use an https:// URL (set insecure_http = true only for a receiver on this machine, e.g. in tests)",
                url.get_ref()
            ),
        ),
        Ok(_) => {}
    }
}

fn validate_events(
    at: &str,
    events: Option<&[Spanned<String>]>,
    problems: &mut Problems,
) -> Vec<String> {
    let Some(events) = events else {
        return WEBHOOK_EVENTS.map(String::from).to_vec();
    };
    for e in events {
        if !WEBHOOK_EVENTS.contains(&e.get_ref().as_str()) {
            problems.at(
                e,
                format!(
                    "{at}: event '{}' is not known; use some of {}",
                    e.get_ref(),
                    WEBHOOK_EVENTS.join(", ")
                ),
            );
        }
    }
    events.iter().map(|e| e.get_ref().clone()).collect()
}

fn validate_include_changes(
    at: &str,
    value: Option<&Spanned<String>>,
    problems: &mut Problems,
) -> IncludeChanges {
    match value.map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "summary")) => IncludeChanges::Summary,
        Some((_, "none")) => IncludeChanges::None,
        Some((_, "full")) => IncludeChanges::Full,
        Some((v, other)) => {
            problems.at(
                v,
                format!("{at}: include_changes = \"{other}\" is not known; use \"none\", \"summary\" or \"full\""),
            );
            IncludeChanges::Summary
        }
    }
}

fn validate_page_size(at: &str, value: Option<&Spanned<i64>>, problems: &mut Problems) -> usize {
    match value {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=MAX_PAGE_SIZE).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            problems.at(
                n,
                format!(
                    "{at}: page_size = {} is out of range; use 1-{MAX_PAGE_SIZE}",
                    n.get_ref()
                ),
            );
            DEFAULT_PAGE_SIZE
        }
    }
}
