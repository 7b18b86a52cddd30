//! Recipients on the page and in the API: search (ID, names, phones,
//! emails), a filter on one field's value, paging, and one recipient's
//! record; a group's members are the same lookup with the group's field.
//! Every lookup reads the search index (`store::search`), never all
//! records.
//!
//! Invariants:
//! 1. A bad parameter (unknown feed or field, a field that cannot be
//!    filtered, a page past the last, a page size out of range, an
//!    overlong query) is a 4xx that says what to change.
//! 2. A search counts at most [`SEARCH_CAP`] matches and says when there
//!    are more; a filter alone or a group's members are counted whole.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::Refused;
use crate::config::{Config, Feed};
use crate::search::SearchLayout;
use crate::store::{SearchPage, SearchQuery};
use crate::worker::engine::Engine;
use crate::worker::indexer::IndexStatus;

/// Matches a search collects at most: a query that finds more asks to be
/// refined rather than paged through.
pub const SEARCH_CAP: usize = 1_000;
pub const DEFAULT_PER_PAGE: usize = 50;
pub const MAX_PER_PAGE: usize = 500;
const MAX_QUERY: usize = 200;

/// A validated lookup.
pub struct Lookup {
    pub feed: String,
    pub q: String,
    pub field: Option<String>,
    pub value: Option<String>,
    pub page: usize,
    pub per_page: usize,
    query: SearchQuery,
}

fn bad(text: impl Into<String>) -> Refused {
    (StatusCode::BAD_REQUEST, text.into())
}

/// The feed a request names, or the only one.
pub fn feed_of<'c>(config: &'c Config, named: Option<&str>) -> Result<&'c Feed, Refused> {
    match named {
        Some(name) => config
            .feed(name)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("there is no feed '{name}'"))),
        None if config.feeds.len() == 1 => Ok(&config.feeds[0]),
        None => Err(bad("name a feed: add feed=NAME to the address")),
    }
}

fn number(params: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, Refused> {
    super::whole_number(name, params.get(name).map(String::as_str), default)
}

impl Lookup {
    /// Reads and checks the parameters of a recipients request.
    pub fn from_params(
        config: &Config,
        params: &HashMap<String, String>,
    ) -> Result<Lookup, Refused> {
        let feed = feed_of(config, params.get("feed").map(String::as_str))?;
        let layout = SearchLayout::of(feed);
        let q = params
            .get("q")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if q.chars().count() > MAX_QUERY {
            return Err(bad(format!(
                "the search is longer than {MAX_QUERY} characters; shorten it"
            )));
        }
        let field = params
            .get("field")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        let value = params
            .get("value")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        let filter = match (field, value) {
            (None, None) => None,
            (Some(f), Some(v)) => Some(filter_of(feed, &layout, f, v)?),
            (Some(f), None) => {
                return Err(bad(format!(
                    "give the value to filter '{f}' on: add value=…"
                )))
            }
            (None, Some(_)) => return Err(bad("name the field to filter on: add field=…")),
        };
        let page = number(params, "page", 1)?;
        let per_page = number(params, "per_page", DEFAULT_PER_PAGE)?;
        if per_page > MAX_PER_PAGE {
            return Err(bad(format!("per_page can be at most {MAX_PER_PAGE}")));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| bad(format!("page {page} is past the last page")))?;
        let cap = if q.is_empty() { usize::MAX } else { SEARCH_CAP };
        Ok(Lookup {
            feed: feed.name.clone(),
            query: SearchQuery {
                ranges: layout.search_ranges(&q),
                filter,
                offset,
                limit: per_page,
                cap,
            },
            q,
            field: field.map(str::to_string),
            value: value.map(str::to_string),
            page,
            per_page,
        })
    }

    /// A group's members: the group's field filtered on its value.
    pub fn group_members(
        config: &Config,
        feed: &str,
        group: &str,
        page: usize,
        per_page: usize,
    ) -> Result<Lookup, Refused> {
        let feed = feed_of(config, Some(feed))?;
        let (field, value) = group_field(feed, group).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("there is no group '{group}' in feed '{}'", feed.name),
            )
        })?;
        let mut params = HashMap::new();
        params.insert("feed".to_string(), feed.name.clone());
        params.insert("field".to_string(), feed.fields[field].name.clone());
        params.insert("value".to_string(), value.to_string());
        params.insert("page".to_string(), page.to_string());
        params.insert("per_page".to_string(), per_page.to_string());
        Lookup::from_params(config, &params)
    }

    /// Runs the lookup on a blocking thread. A page past the last (other
    /// than the first) is refused.
    pub async fn run(self, engine: &Arc<Engine>) -> Result<(Lookup, SearchPage), Refused> {
        let engine = engine.clone();
        let (lookup, page) = tokio::task::spawn_blocking(move || {
            let page = engine.store.search_recipients(&self.feed, &self.query);
            (self, page)
        })
        .await
        .map_err(|_| unavailable())?;
        let page = page.map_err(|e| {
            tracing::error!(error = %e, "the recipients cannot be read");
            unavailable()
        })?;
        if lookup.page > 1 && page.recipients.is_empty() {
            let last = page.total.div_ceil(lookup.per_page as u64).max(1);
            return Err((
                StatusCode::NOT_FOUND,
                format!("page {} is past the last page ({last})", lookup.page),
            ));
        }
        Ok((lookup, page))
    }

    /// The last page's number.
    pub fn last_page(&self, page: &SearchPage) -> u64 {
        page.total.div_ceil(self.per_page as u64).max(1)
    }
}

fn unavailable() -> Refused {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the store cannot be read; see the server log".to_string(),
    )
}

fn filter_of(
    feed: &Feed,
    layout: &SearchLayout,
    field: &str,
    value: &str,
) -> Result<crate::search::Filter, Refused> {
    let Some(i) = feed.fields.iter().position(|f| f.name == field) else {
        return Err(bad(format!(
            "feed '{}' has no field '{field}'; filter on one of: {}",
            feed.name,
            filterable_fields(feed).join(", ")
        )));
    };
    layout.filter(i, value).ok_or_else(|| {
        bad(format!(
            "field '{field}' cannot be filtered on; filter on one of: {} (or set filter = true on it in the configuration)",
            filterable_fields(feed).join(", ")
        ))
    })
}

/// Names of the fields a filter can use.
pub fn filterable_fields(feed: &Feed) -> Vec<String> {
    let layout = SearchLayout::of(feed);
    feed.fields
        .iter()
        .enumerate()
        .filter(|(i, _)| layout.filterable(*i))
        .map(|(_, f)| f.name.clone())
        .collect()
}

/// One page of recipients as the API shows them.
pub fn page_json(feed: &Feed, found: &SearchPage) -> Value {
    Value::Array(
        found
            .recipients
            .iter()
            .map(|(_, r)| recipient_json(feed, &r.values))
            .collect(),
    )
}

/// The group field and value a group name (`<column>: <value>`) stands
/// for; the longest matching column wins.
pub fn group_field<'g>(feed: &Feed, group: &'g str) -> Option<(usize, &'g str)> {
    feed.group_fields
        .iter()
        .filter_map(|&i| {
            let rest = group.strip_prefix(feed.fields[i].column.as_str())?;
            Some((i, rest.strip_prefix(": ")?))
        })
        .max_by_key(|(i, _)| feed.fields[*i].column.len())
}

/// A recipient as the API and `recipients export --format json` show it:
/// its values by field name.
pub fn recipient_json(feed: &Feed, values: &[String]) -> Value {
    let mut object = Map::new();
    for (field, value) in feed.fields.iter().zip(values) {
        object.insert(field.name.clone(), Value::String(value.clone()));
    }
    Value::Object(object)
}

/// The index's state for the page and the API.
pub fn index_json(status: IndexStatus) -> Value {
    json!({ "current": status.current, "done": status.done, "todo": status.todo })
}
