//! Runs: the history, one run's page with its change list (paged, by
//! kind), a held run's removal list (worked out once per store state),
//! confirm and reject, and the downloads (the error report, the removals
//! CSV, the changes CSV).

use super::*;

/// A run as the templates use it: its record, its times in the configured
/// time zone, and whether its counts are what it *would* have done (held,
/// rejected, superseded: nothing of it was applied).
pub(super) fn run_value(
    config: &crate::config::Config,
    run: &crate::store::Run,
) -> serde_json::Value {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        let local = |t: &str| crate::worker::status::local_time(config, t);
        map.insert("started_local".into(), local(&run.started_at).into());
        for (key, at) in [
            ("confirmed_local", &run.confirmed_at),
            ("rejected_local", &run.rejected_at),
        ] {
            if let Some(at) = at {
                map.insert(key.into(), local(at).into());
            }
        }
        map.insert("would".into(), run.state.nothing_applied().into());
        map.insert("pgp_text".into(), run.pgp_description().into());
        // Left out of the stored JSON when empty; the template asks.
        for key in [
            "undo_of",
            "undone_by",
            "restored_id",
            "requested_by",
            "conflicts",
            "upload",
            "container",
            "encoding",
        ] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    value
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct RunsQuery {
    pub feed: Option<String>,
}

pub(super) async fn runs_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    if let Some(f) = &q.feed {
        if state.engine.config.feed(f).is_none() {
            return message(StatusCode::NOT_FOUND, format!("there is no feed '{f}'"));
        }
    }
    match state
        .engine
        .store
        .latest_runs(q.feed.as_deref(), RUNS_SHOWN)
    {
        Ok(runs) => {
            let config = &state.engine.config;
            let runs: Vec<serde_json::Value> = runs.iter().map(|r| run_value(config, r)).collect();
            state.render(
                "runs.html",
                context! { admin => admin, csrf => csrf, runs => runs, feed => q.feed },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "the runs cannot be read");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log",
            )
        }
    }
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct PageQuery {
    /// The page of a held run's removal list.
    pub page: Option<usize>,
    /// The page of the run's change list.
    pub changes_page: Option<usize>,
    /// Only changes of this kind (added, updated, removed).
    pub kind: Option<String>,
}

pub(super) fn get_run(state: &WebState, id: u64) -> Result<crate::store::Run, Refused> {
    match state.engine.store.get_run(id) {
        Ok(run) => Ok(run),
        Err(crate::store::StoreError::UnknownRun(_)) => {
            Err((StatusCode::NOT_FOUND, format!("there is no run {id}")))
        }
        Err(e) => {
            tracing::error!(error = %e, "a run cannot be read");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log".into(),
            ))
        }
    }
}

/// Who a held run would remove, computed from its kept file on a
/// blocking thread.
pub(super) async fn removals_of(
    state: &Arc<WebState>,
    run: crate::store::Run,
) -> Result<Removals, Refused> {
    let engine = state.engine.clone();
    let generation = engine.store.feed_generation(&run.feed).ok();
    let key = generation.zip(run.run_id);
    if let Some(key) = key {
        if let Some(known) = lock(&state.removals).get(&(key.1, key.0)) {
            return Ok(known.clone());
        }
    }
    let computed = tokio::task::spawn_blocking(move || {
        crate::worker::held_removals(&engine.config, &engine.store, &run)
    })
    .await;
    match computed {
        Ok(Ok(all)) => {
            let all = Arc::new(all);
            if let Some((generation, id)) = key {
                let mut cache = lock(&state.removals);
                // Held runs are few; older states of the store are stale.
                cache.retain(|&(run, _), _| run != id);
                if cache.len() >= REMOVAL_LISTS_KEPT {
                    cache.clear();
                }
                cache.insert((id, generation), all.clone());
            }
            Ok(all)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the removal list cannot be computed");
            Err((
                StatusCode::CONFLICT,
                format!("the removal list cannot be computed: {e}"),
            ))
        }
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the removal list failed; see the server log".into(),
        )),
    }
}

pub(super) async fn run_page(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let run = match get_run(&state, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let changes = match changes_view(&state, &run, &q).await {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let (mut removals, mut total, mut page, mut pages) = (Vec::new(), 0usize, 1usize, 1usize);
    if run.state == crate::store::RunState::Held {
        let all = match removals_of(&state, run.clone()).await {
            Ok(all) => all,
            Err(r) => return refused(r),
        };
        total = all.len();
        pages = total.div_ceil(REMOVALS_PAGE).max(1);
        page = q.page.unwrap_or(1);
        if page == 0 || page > pages {
            return message(
                StatusCode::NOT_FOUND,
                format!("there is no page {page} of removals (pages 1 to {pages})"),
            );
        }
        removals = all
            .iter()
            .skip((page - 1) * REMOVALS_PAGE)
            .take(REMOVALS_PAGE)
            .cloned()
            .collect();
    }
    // The deliveries are shown as far as they can be read: the page
    // itself does not depend on them.
    let webhooks: Vec<serde_json::Value> = state
        .engine
        .store
        .webhooks_of_run(id)
        .unwrap_or_default()
        .iter()
        .map(crate::store::HookMessage::delivery_json)
        .collect();
    state.render(
        "run.html",
        context! {
            admin => admin, csrf => csrf, run => run_value(&state.engine.config, &run),
            line_word => run.line_word(),
            removals => removals, removals_total => total, page => page, pages => pages,
            changes => changes, webhooks => webhooks,
        },
    )
}

/// How the change list of a run in `state` is headed: what it changed,
/// or (nothing of it applied) what it would change.
fn changes_heading(state: crate::store::RunState) -> &'static str {
    use crate::store::RunState;
    match state {
        RunState::Held => "What this run would change if confirmed",
        RunState::Rejected => "What this run would have changed (rejected: nothing applied)",
        RunState::Superseded => "What this run would have changed (superseded: nothing applied)",
        _ => "What this run changed",
    }
}

/// One page of the run's changes for its page (`changes_page`, `kind`),
/// read on a blocking thread: a run of a million changes is counted, not
/// loaded.
async fn changes_view(
    state: &Arc<WebState>,
    run: &crate::store::Run,
    q: &PageQuery,
) -> Result<serde_json::Value, Refused> {
    let kind = q.kind.clone().filter(|k| !k.is_empty());
    if let Some(k) = &kind {
        if !crate::store::CHANGE_KINDS.contains(&k.as_str()) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("kind is one of added, updated, removed, not '{k}'"),
            ));
        }
    }
    let page = q.changes_page.unwrap_or(1);
    if page == 0 {
        return Err((StatusCode::BAD_REQUEST, "changes_page starts at 1".into()));
    }
    let engine = state.engine.clone();
    let (feed, id, wanted) = (
        run.feed.clone(),
        run.run_id.unwrap_or_default(),
        kind.clone(),
    );
    let offset = (page - 1).saturating_mul(CHANGES_PAGE);
    let read = tokio::task::spawn_blocking(move || {
        engine
            .store
            .run_changes_page(&feed, id, wanted.as_deref(), offset, CHANGES_PAGE)
    })
    .await;
    let found = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a run's changes cannot be read");
            return Err(store_unreadable());
        }
        Err(_) => return Err(store_unreadable()),
    };
    let total = found.counts.of(kind.as_deref());
    let pages = (total as usize).div_ceil(CHANGES_PAGE).max(1);
    if page > pages {
        return Err((
            StatusCode::NOT_FOUND,
            format!("there is no page {page} of changes (pages 1 to {pages})"),
        ));
    }
    Ok(serde_json::json!({
        "heading": changes_heading(run.state),
        "counts": found.counts,
        "all": found.counts.total(),
        "kind": kind,
        "total": total,
        "page": page,
        "pages": pages,
        "list": found.changes,
    }))
}

fn store_unreadable() -> Refused {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the store cannot be read; see the server log".into(),
    )
}

/// Every change of run `id` as CSV, one row per changed field of an
/// update, per added ID and per kept value of a removal; cells
/// neutralised as in the error report.
pub(super) async fn changes_csv(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let run = match download_run(&state, &headers, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let engine = state.engine.clone();
    let feed = run.feed.clone();
    let written =
        tokio::task::spawn_blocking(move || changes_csv_body(&engine.store, &feed, id)).await;
    let body = match written {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a run's changes cannot be read");
            return refused(store_unreadable());
        }
        Err(_) => return refused(store_unreadable()),
    };
    let name = if run.state.nothing_applied() {
        format!("run-{id}-would-change.csv")
    } else {
        format!("run-{id}-changes.csv")
    };
    csv_download(&name, body)
}

/// The changes CSV of run `id`: a BOM (for Excel), the header, then
/// [`change_rows`] of each change, read one change at a time.
fn changes_csv_body(
    store: &crate::store::Store,
    feed: &str,
    id: u64,
) -> Result<Vec<u8>, crate::store::StoreError> {
    // Writing to memory does not fail; should it, the download says the
    // store could not be read rather than sending half a file.
    let unwritable = |e: csv::Error| crate::store::StoreError::Damaged(e.to_string());
    let mut w = csv::Writer::from_writer(crate::report::BOM.to_vec());
    w.write_record(["kind", "id", "field", "old", "new"])
        .map_err(unwritable)?;
    store.for_each_run_change(feed, id, |change| {
        for cells in change_rows(&change) {
            let cells = cells.map(crate::report::neutralize);
            w.write_record(cells.iter().map(|c| c.as_bytes()))
                .map_err(unwritable)?;
        }
        Ok(())
    })?;
    w.into_inner()
        .map_err(|e| crate::store::StoreError::Damaged(e.to_string()))
}

/// A change's CSV rows: `kind,id,field,old,new`.
fn change_rows(change: &crate::store::LoggedChange) -> Vec<[&str; 5]> {
    use crate::store::LoggedChange;
    match change {
        LoggedChange::Added { id } => vec![["added", id, "", "", ""]],
        LoggedChange::Updated { id, fields } => fields
            .iter()
            .map(|f| ["updated", id.as_str(), &f.field, &f.old, &f.new])
            .collect(),
        LoggedChange::Removed { id, values } if values.is_empty() => {
            vec![["removed", id, "", "", ""]]
        }
        LoggedChange::Removed { id, values } => values
            .iter()
            .map(|v| ["removed", id.as_str(), &v.field, &v.value, ""])
            .collect(),
    }
}

pub(super) async fn decide(
    state: Arc<WebState>,
    admin: String,
    id: u64,
    action: RunAction,
) -> Response {
    let decided = decide_run(state.engine.clone(), id, admin, action).await;
    match decided {
        Ok(run) => {
            tracing::info!(
                run_id = id,
                action = action.as_str(),
                state = run.state.as_str(),
                "run decided on the status page"
            );
            // An undo is a run of its own: its page says what it did.
            let shown = run
                .run_id
                .filter(|_| action == RunAction::Undo)
                .unwrap_or(id);
            let mut response = Redirect::to(&format!("/runs/{shown}")).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
        }
        Err(e) if e.is_usage() => message(StatusCode::CONFLICT, e.to_string()),
        Err(e) => {
            tracing::error!(run_id = id, error = %e, "a decision failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the decision failed: {e}"),
            )
        }
    }
}

/// What an administrator does to a run from the page or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAction {
    Confirm,
    Reject,
    /// Put back what an applied run changed (a new run).
    Undo,
}

impl RunAction {
    fn as_str(self) -> &'static str {
        match self {
            RunAction::Confirm => "confirm",
            RunAction::Reject => "reject",
            RunAction::Undo => "undo",
        }
    }
}

/// Confirms, rejects or undoes a run as `admin` on a blocking thread,
/// under the engine's gate: the same worker functions as `flagsync runs
/// confirm|reject|undo`, for the page and the API alike.
pub(crate) async fn decide_run(
    engine: Arc<Engine>,
    id: u64,
    admin: String,
    action: RunAction,
) -> Result<crate::store::Run, crate::worker::WorkerError> {
    tokio::task::spawn_blocking(move || {
        let _gate = engine.exclusive();
        match action {
            RunAction::Confirm => crate::worker::confirm_run_in(
                &engine.config,
                &engine.store,
                id,
                &admin,
                crate::worker::ImportOptions::default(),
            ),
            RunAction::Reject => {
                crate::worker::reject_run_in(&engine.config, &engine.store, id, &admin)
            }
            RunAction::Undo => {
                crate::worker::undo_run_in(&engine.config, &engine.store, id, &admin)
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(crate::worker::WorkerError::Internal(
            "the decision was interrupted; see the server log".into(),
        ))
    })
}

pub(super) async fn confirm(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    form: CheckedForm,
) -> Response {
    decide(state, form.admin, id, RunAction::Confirm).await
}

pub(super) async fn reject(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    form: CheckedForm,
) -> Response {
    decide(state, form.admin, id, RunAction::Reject).await
}

pub(super) async fn undo(
    State(state): State<Arc<WebState>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    form: CheckedForm,
) -> Response {
    decide(state, form.admin, id, RunAction::Undo).await
}

pub(super) fn csv_download(name: &str, body: Vec<u8>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, attachment(name)),
        ],
        body,
    )
        .into_response()
}

/// `Content-Disposition: attachment` for any file name (RFC 6266): an
/// ASCII `filename` every client reads (other characters as `_`, quotes
/// and backslashes escaped) and the exact name as `filename*`, UTF-8
/// percent-encoded, which current browsers prefer.
pub(super) fn attachment(name: &str) -> HeaderValue {
    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                ascii.push('\\');
                ascii.push(c);
            }
            c if c.is_ascii() && !c.is_ascii_control() => ascii.push(c),
            _ => ascii.push('_'),
        }
    }
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 8187's attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The run a download is for: 401 without a session (a download is no
/// page to redirect from), 404 for an unknown run.
pub(super) fn download_run(
    state: &WebState,
    headers: &HeaderMap,
    id: u64,
) -> Result<crate::store::Run, Refused> {
    if state.session(headers).is_none() {
        return Err((StatusCode::UNAUTHORIZED, "log in first".into()));
    }
    get_run(state, id)
}

pub(super) async fn error_report(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let run = match download_run(&state, &headers, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let Some(path) = run.error_report else {
        return message(
            StatusCode::NOT_FOUND,
            format!("run {id} has no error report"),
        );
    };
    match tokio::fs::read(&path).await {
        Ok(mut bytes) => {
            // Reports written before they started with a BOM get one.
            if !bytes.starts_with(crate::report::BOM) {
                bytes.splice(0..0, crate::report::BOM.iter().copied());
            }
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}.errors.csv", run.file));
            csv_download(&name, bytes)
        }
        Err(_) => message(
            StatusCode::NOT_FOUND,
            format!("the error report of run {id} is gone (older than the retention period?)"),
        ),
    }
}

pub(super) async fn removals_csv(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let run = match download_run(&state, &headers, id) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    if run.state != crate::store::RunState::Held {
        return message(
            StatusCode::CONFLICT,
            format!("run {id} is {}, not held", run.state.as_str()),
        );
    }
    let all = match removals_of(&state, run).await {
        Ok(all) => all,
        Err(r) => return refused(r),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["id", "name"]);
    for (id, name) in all.iter() {
        let _ = w.write_record([
            crate::report::neutralize(id).as_bytes(),
            crate::report::neutralize(name).as_bytes(),
        ]);
    }
    csv_download(
        &format!("run-{id}-would-remove.csv"),
        w.into_inner().unwrap_or_default(),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct BundleQuery {
    /// `personal` or `groups`: pseudonyms as `--redact` and
    /// `--redact-groups` make them.
    #[serde(default)]
    redact: Option<String>,
}

/// The run's support bundle (`flagsync support bundle`, `doctor.txt`
/// included), made under the engine's gate into a temporary file and sent
/// as a download.
pub(super) async fn support_bundle(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
    axum::extract::Query(query): axum::extract::Query<BundleQuery>,
) -> Response {
    let redaction = match query.redact.as_deref() {
        None | Some("") => crate::support::Redaction::None,
        Some("personal") => crate::support::Redaction::Personal,
        Some("groups") => crate::support::Redaction::PersonalAndGroups,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "redact is 'personal' or 'groups'").into_response()
        }
    };
    if let Err(r) = download_run(&state, &headers, id) {
        return refused(r);
    }
    let engine = state.engine.clone();
    let made = tokio::task::spawn_blocking(move || {
        // Before the gate, as the command line does: the doctor verifies
        // the store, which takes a while, and no run should wait for it.
        let doctor = crate::support::doctor::report(&engine.config, Some(&*engine));
        let _gate = engine.exclusive();
        let dir = engine.config.data_dir.join(".support");
        std::fs::create_dir_all(&dir).map_err(|e| {
            crate::support::SupportError::Usage(format!("cannot make {}: {e}", dir.display()))
        })?;
        let out = dir.join(format!("run-{id}-{}.zip", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let made = crate::support::make_bundle(
            &engine.config,
            &engine.store,
            id,
            &out,
            crate::cli::VERSION,
            Some(doctor),
            redaction,
        )
        .map(|_| std::fs::read(&out));
        let _ = std::fs::remove_file(&out);
        made
    })
    .await;
    match made {
        Ok(Ok(Ok(bytes))) => {
            tracing::info!(run_id = id, "support bundle downloaded");
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/zip"),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        attachment(&format!("flagsync-run-{id}.bundle.zip")),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(Ok(Err(e))) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the bundle was written but cannot be read back: {e}"),
        ),
        Ok(Err(crate::support::SupportError::Usage(why))) => message(StatusCode::CONFLICT, why),
        Ok(Err(e)) => {
            tracing::error!(run_id = id, error = %e, "a support bundle failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the bundle failed: {e}"),
            )
        }
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the bundle was interrupted; see the server log",
        ),
    }
}
