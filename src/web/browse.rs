//! Browsing what a feed holds: groups and their members, the recipients
//! search, one recipient with their history, and the sFTP accounts.

use super::*;

#[doc(hidden)]
#[derive(Deserialize)]
pub struct GroupQuery {
    pub feed: String,
    pub group: Option<String>,
    pub page: Option<String>,
}

/// The feed's groups; with `group`, also a page of that group's members.
pub(super) async fn groups_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<GroupQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let Some(feed) = state.engine.config.feed(&q.feed) else {
        return message(
            StatusCode::NOT_FOUND,
            format!("there is no feed '{}'", q.feed),
        );
    };
    let groups = match state.engine.store.groups(&q.feed) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "the groups cannot be read");
            return message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read");
        }
    };
    let mut members = None;
    if let Some(group) = &q.group {
        if !groups.iter().any(|(g, _)| g == group) {
            return message(
                StatusCode::NOT_FOUND,
                format!("there is no group '{group}' in feed '{}'", q.feed),
            );
        }
        let page = match whole_number("page", q.page.as_deref(), 1) {
            Ok(p) => p,
            Err(r) => return refused(r),
        };
        let lookup = match recipients::Lookup::group_members(
            &state.engine.config,
            &q.feed,
            group,
            page,
            recipients::DEFAULT_PER_PAGE,
        ) {
            Ok(l) => l,
            Err(r) => return refused(r),
        };
        let (lookup, found) = match lookup.run(&state.engine).await {
            Ok(found) => found,
            Err(r) => return refused(r),
        };
        let count = groups
            .iter()
            .find(|(g, _)| g == group)
            .map_or(0, |(_, n)| *n);
        members = Some(context! {
            rows => table_rows(feed, &found),
            total => count,
            page => lookup.page,
            pages => lookup.last_page(&found),
        });
    }
    state.render(
        "groups.html",
        context! {
            admin => admin, csrf => csrf, feed => q.feed, groups => groups, group => q.group,
            members => members,
            columns => table_columns(feed).iter().map(|&i| feed.fields[i].name.clone()).collect::<Vec<_>>(),
            index => state.engine.search.status(&feed.name, &state.engine.store),
        },
    )
}

/// Columns of the recipients tables: the ID, the searched fields, the group
/// fields; eight at most (the record page shows them all).
pub(super) fn table_columns(feed: &crate::config::Feed) -> Vec<usize> {
    let mut columns = vec![feed.id_field];
    let searched = feed.fields.iter().enumerate().filter(|(_, f)| f.search);
    for i in searched
        .map(|(i, _)| i)
        .chain(feed.group_fields.iter().copied())
    {
        if !columns.contains(&i) && columns.len() < 8 {
            columns.push(i);
        }
    }
    columns
}

pub(super) fn table_rows(
    feed: &crate::config::Feed,
    found: &crate::store::SearchPage,
) -> Vec<Vec<String>> {
    let columns = table_columns(feed);
    found
        .recipients
        .iter()
        .map(|(_, r)| {
            columns
                .iter()
                .map(|&i| r.values.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect()
}

/// Search and filter the recipients of a feed.
pub(super) async fn recipients_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let config = &state.engine.config;
    let lookup = match recipients::Lookup::from_params(config, &params) {
        Ok(l) => l,
        Err(r) => return refused(r),
    };
    let Some(feed) = config.feed(&lookup.feed) else {
        return message(StatusCode::NOT_FOUND, "there is no such feed");
    };
    let (lookup, found) = match lookup.run(&state.engine).await {
        Ok(found) => found,
        Err(r) => return refused(r),
    };
    let columns: Vec<String> = table_columns(feed)
        .iter()
        .map(|&i| feed.fields[i].name.clone())
        .collect();
    let feeds: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    state.render(
        "recipients.html",
        context! {
            admin => admin, csrf => csrf, feed => lookup.feed, feeds => feeds,
            q => lookup.q, field => lookup.field, value => lookup.value,
            filterable => recipients::filterable_fields(feed),
            columns => columns, rows => table_rows(feed, &found),
            total => found.total, more => found.capped,
            page => lookup.page, pages => lookup.last_page(&found),
            index => state.engine.search.status(&feed.name, &state.engine.store),
        },
    )
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct RecipientQuery {
    pub feed: Option<String>,
    pub id: String,
}

/// One recipient: every field and its groups, and the timeline of what
/// the applied runs did to them. Someone removed is still found by ID
/// while their history is kept.
pub(super) async fn recipient_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<RecipientQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f,
        Err(r) => return refused(r),
    };
    let store = &state.engine.store;
    let read = store
        .recipient(&feed.name, &q.id)
        .and_then(|record| Ok((record, store.recipient_history(&feed.name, &q.id)?)));
    let (record, history) = match read {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "a recipient cannot be read");
            return message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read");
        }
    };
    if record.is_none() && history.is_empty() {
        return message(
            StatusCode::NOT_FOUND,
            format!(
                "feed '{}' has no recipient '{}', and no kept run changed one with this ID",
                feed.name, q.id
            ),
        );
    }
    let config = &state.engine.config;
    let removed_by = match (&record, history.last()) {
        (None, Some((run, crate::store::LoggedChange::Removed { .. }))) => {
            Some(runs::run_value(config, run))
        }
        _ => None,
    };
    let (fields, groups) = match record {
        Some(record) => {
            let fields: Vec<(String, String)> = feed
                .fields
                .iter()
                .zip(record.values)
                .map(|(f, v)| (f.name.clone(), v))
                .collect();
            (Some(fields), record.groups)
        }
        None => (None, Vec::new()),
    };
    let timeline: Vec<serde_json::Value> = history
        .iter()
        .rev()
        .map(|(run, change)| timeline_entry(config, run, change))
        .collect();
    state.render(
        "recipient.html",
        context! {
            admin => admin, csrf => csrf, feed => feed.name, id => q.id, fields => fields,
            groups => groups, removed_by => removed_by, timeline => timeline,
        },
    )
}

/// One entry of a person's timeline: the run as the run pages show it and
/// what it did to them.
fn timeline_entry(
    config: &crate::config::Config,
    run: &crate::store::Run,
    change: &crate::store::LoggedChange,
) -> serde_json::Value {
    serde_json::json!({ "run": runs::run_value(config, run), "change": change })
}

pub(super) async fn accounts_page(
    State(state): State<Arc<WebState>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    match state.engine.store.accounts() {
        Ok(all) => {
            let accounts: Vec<serde_json::Value> = all
                .iter()
                .map(crate::sftp::credentials::account_summary)
                .collect();
            state.render(
                "accounts.html",
                context! { admin => admin, csrf => csrf, accounts => accounts },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "the accounts cannot be read");
            message(StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read")
        }
    }
}

/// Puts back a removed person (the Restore button of their page): the
/// same worker function as `flagsync recipients restore`, under the
/// engine's gate; then the restore's own run page.
pub(super) async fn restore_recipient(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<RecipientQuery>,
    form: CheckedForm,
) -> Response {
    let feed = match recipients::feed_of(&state.engine.config, q.feed.as_deref()) {
        Ok(f) => f.name.clone(),
        Err(r) => return refused(r),
    };
    let engine = state.engine.clone();
    let admin = form.admin;
    let id = q.id.clone();
    let restored = tokio::task::spawn_blocking(move || {
        let _gate = engine.exclusive();
        crate::worker::restore_recipient_in(&engine.config, &engine.store, &feed, &id, &admin)
    })
    .await;
    match restored {
        Ok(Ok(run)) => {
            let to = format!("/runs/{}", run.run_id.unwrap_or_default());
            let mut response = Redirect::to(&to).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
        }
        Ok(Err(e)) if e.is_usage() => message(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a restore failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the restore failed: {e}"),
            )
        }
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the restore was interrupted; see the server log",
        ),
    }
}
