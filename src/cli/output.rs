//! What commands print: human summaries, `--json`, and the export.

use std::io::Write;

use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::config::Feed;
use crate::import::{printable, thousands};
use crate::store::{
    fields_text, Delivery, FeedCursor, FeedPage, HookMessage, HookState, LoggedChange, LoggedValue,
    Message, Run, RunState, Store,
};

use super::Format;

/// Errors writing the output; a closed pipe (`| head`) is not one.
fn write_result(r: std::io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn print_json(out: &mut dyn Write, v: &Value) -> anyhow::Result<()> {
    write_result(
        serde_json::to_writer_pretty(&mut *out, v)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
    )
}

/// The outcome of `import`, `runs confirm` and `runs reject`.
pub fn print_run_outcome(w: &mut dyn Write, run: &Run, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(w, &run.to_json(false));
    }
    let mut out = String::new();
    let id = run
        .run_id
        .map_or_else(|| "not recorded".to_string(), |id| format!("run {id}"));
    let dry = if run.dry_run {
        " (dry run: nothing committed)"
    } else {
        ""
    };
    out.push_str(&format!(
        "{}: {} — {} ({id}){dry}\n",
        run.feed,
        run.state.as_str(),
        printable(&run.file)
    ));
    if let Some(reason) = &run.reason {
        out.push_str(&format!("  reason: {}\n", printable(reason)));
    }
    if run.undo_of.is_some() {
        let c = &run.counts;
        out.push_str(&format!(
            "  people: {} added, {} updated, {} removed, {} conflicts\n",
            thousands(c.added),
            thousands(c.updated),
            thousands(c.removed),
            thousands(run.conflicts)
        ));
    } else if run.state != RunState::Failed {
        let c = &run.counts;
        out.push_str(&format!(
            "  {} rows: {} added, {} updated, {} removed, {} unchanged, {} flagged, {} with warnings, {} filtered\n",
            thousands(c.rows),
            thousands(c.added),
            thousands(c.updated),
            thousands(c.removed),
            thousands(c.unchanged),
            thousands(c.flagged),
            thousands(c.warnings),
            thousands(c.filtered)
        ));
        out.push_str(&format!(
            "  groups: {} created, {} removed\n",
            c.groups_created, c.groups_removed
        ));
    }
    if let Some(enc) = run.encoding {
        let note = if enc == crate::import::Encoding::Windows1252 {
            " (the file is not UTF-8; read as Windows-1252)"
        } else {
            ""
        };
        out.push_str(&format!("  encoding: {}{note}\n", enc.as_str()));
    }
    if let Some(container) = &run.container {
        // `pgp, gzip`: the layers the file was read through, outside in.
        let (label, how) = if crate::import::is_workbook_container(container) {
            (
                "workbook",
                "its sheet read as CSV; rows are the sheet's rows",
            )
        } else {
            match (run.pgp.is_some(), container.contains(", ")) {
                (false, _) => ("compressed", "read expanded"),
                (true, false) => ("packed", "read decrypted"),
                (true, true) => ("packed", "read decrypted and expanded"),
            }
        };
        out.push_str(&format!(
            "  {label}: {} ({how})\n",
            crate::import::printable(container)
        ));
    }
    if let Some(pgp) = run.pgp_description() {
        out.push_str(&format!("  OpenPGP: {}\n", crate::import::printable(&pgp)));
    }
    out.push_str(&format!("  duration: {} ms\n", run.duration_ms));
    if let Some(by) = &run.confirmed_by {
        out.push_str(&format!(
            "  confirmed by {by} at {}\n",
            run.confirmed_at.as_deref().unwrap_or("")
        ));
    }
    if let Some(by) = &run.rejected_by {
        out.push_str(&format!(
            "  rejected by {by} at {}\n",
            run.rejected_at.as_deref().unwrap_or("")
        ));
    }
    push_undo_lines(&mut out, run);
    if let Some(report) = &run.error_report {
        out.push_str(&format!("  error report: {}\n", printable(report)));
    }
    push_first_errors(&mut out, run, 20);
    if run.state == RunState::Held && !run.dry_run {
        if let Some(id) = run.run_id {
            out.push_str(&format!(
                "  nothing was applied: confirm with `flagsync runs confirm {id}` or reject with `flagsync runs reject {id}`\n"
            ));
        }
    }
    write_result(w.write_all(out.as_bytes()))
}

/// What an undo or restore put back, or that a run was undone.
fn push_undo_lines(out: &mut String, run: &Run) {
    match (&run.restored_id, run.undo_of) {
        (Some(id), Some(of)) => out.push_str(&format!(
            "  restores {} as run {of} removed them\n",
            printable(id)
        )),
        (None, Some(of)) => out.push_str(&format!("  undoes run {of}\n")),
        _ => {}
    }
    if let Some(by) = &run.requested_by {
        out.push_str(&format!("  requested by {}\n", printable(by)));
    }
    if run.conflicts > 0 {
        out.push_str(&format!(
            "  {} conflicts: people changed again since, left as they are (listed below and in the error report)\n",
            thousands(run.conflicts)
        ));
    }
    if let Some(undo) = run.undone_by {
        out.push_str(&format!("  undone by run {undo}\n"));
    }
}

fn push_first_errors(out: &mut String, run: &Run, limit: usize) {
    if run.errors.is_empty() {
        return;
    }
    out.push_str("  first errors:\n");
    for e in run.errors.iter().take(limit) {
        let kind = if e.warning { "warning: " } else { "" };
        out.push_str(&format!(
            "    {} {}: {kind}{}\n",
            run.line_word(),
            e.line,
            printable(&e.reasons.join("; "))
        ));
    }
    if run.counts.flagged as usize > limit.min(run.errors.len()) {
        out.push_str(&format!(
            "    … {} flagged rows in all\n",
            thousands(run.counts.flagged)
        ));
    }
}

pub fn print_run_list(w: &mut dyn Write, runs: &[Run], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(
            w,
            &Value::Array(runs.iter().map(|r| r.to_json(false)).collect()),
        );
    }
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs yet\n");
    } else {
        out.push_str(&format!(
            "{:>5}  {:<10} {:<10} {:<20}  {:>7} {:>7} {:>7} {:>9} {:>7}  FILE\n",
            "RUN",
            "FEED",
            "STATE",
            "STARTED (UTC)",
            "ADDED",
            "UPDATED",
            "REMOVED",
            "UNCHANGED",
            "FLAGGED"
        ));
    }
    for r in runs {
        let c = &r.counts;
        // Counts of runs that changed nothing are what they would have done.
        let would = r.state.nothing_applied();
        out.push_str(&format!(
            "{:>5}  {:<10} {:<10} {:<20}  {:>7} {:>7} {:>7} {:>9} {:>7}  {}{}\n",
            r.run_id.unwrap_or_default(),
            r.feed,
            r.state.as_str(),
            r.started_at,
            c.added,
            c.updated,
            c.removed,
            c.unchanged,
            c.flagged,
            printable(&r.file),
            if would {
                "  (would have; nothing applied)"
            } else {
                ""
            }
        ));
    }
    write_result(w.write_all(out.as_bytes()))
}

fn email_line(m: &Message) -> String {
    let state = match m.state {
        Delivery::Queued => "queued".to_string(),
        Delivery::Sent => format!("sent at {}", m.sent_at.as_deref().unwrap_or("?")),
        Delivery::Failing => format!(
            "failing ({} attempts): {}",
            m.attempts,
            printable(m.last_error.as_deref().unwrap_or("?"))
        ),
        Delivery::GaveUp => format!(
            "given up after {} attempts: {}",
            m.attempts,
            printable(m.last_error.as_deref().unwrap_or("?"))
        ),
    };
    format!("  email to {}: {state}\n", m.to.join(", "))
}

pub fn print_run_detail(
    w: &mut dyn Write,
    run: &Run,
    emails: &[Message],
    webhooks: &[HookMessage],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = run.to_json(true);
        if let Value::Object(map) = &mut v {
            map.insert(
                "emails".into(),
                Value::Array(emails.iter().map(Message::delivery_json).collect()),
            );
            map.insert(
                "webhooks".into(),
                Value::Array(webhooks.iter().map(HookMessage::delivery_json).collect()),
            );
        }
        return print_json(w, &v);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "run {}: {} — {} — {}\n  started {}, finished {}\n",
        run.run_id.unwrap_or_default(),
        run.feed,
        printable(&run.file),
        run.state.as_str(),
        run.started_at,
        run.finished_at
    ));
    write_result(w.write_all(out.as_bytes()))?;
    let mut rest = run.clone();
    rest.errors = Vec::new();
    print_run_outcome(w, &rest, false)?;
    let mut errors = String::new();
    push_first_errors(&mut errors, run, Run::KEPT_ERRORS);
    for m in emails {
        errors.push_str(&email_line(m));
    }
    for m in webhooks {
        errors.push_str(&webhook_line(m));
    }
    write_result(w.write_all(errors.as_bytes()))
}

/// `  webhook run.applied (page 1/2) to https://…: failing (3 attempts, HTTP 401): …`
fn webhook_line(m: &HookMessage) -> String {
    let status = m
        .last_status
        .map(|s| format!(", HTTP {s}"))
        .unwrap_or_default();
    let error = printable(m.last_error.as_deref().unwrap_or("?"));
    let state = match m.state {
        HookState::Queued => "queued".to_string(),
        HookState::Delivered => format!(
            "delivered at {} ({} attempts{status})",
            m.delivered_at.as_deref().unwrap_or("?"),
            m.attempts
        ),
        HookState::Failing => format!("failing ({} attempts{status}): {error}", m.attempts),
        HookState::GaveUp => format!("given up after {} attempts{status}: {error}", m.attempts),
    };
    let page = if m.pages > 1 {
        format!(" (page {}/{})", m.page, m.pages)
    } else {
        String::new()
    };
    format!(
        "  webhook {}{page} to {}: {state}\n",
        m.event,
        printable(&crate::config::shown_url(&m.url))
    )
}

pub fn print_groups(w: &mut dyn Write, groups: &[(String, u64)], json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<Value> = groups
            .iter()
            .map(|(g, n)| serde_json::json!({"group": g, "members": n}))
            .collect();
        return print_json(w, &Value::Array(v));
    }
    let mut out = String::new();
    for (g, n) in groups {
        out.push_str(&format!("{n:>8}  {}\n", printable(g)));
    }
    write_result(w.write_all(out.as_bytes()))
}

/// One recipient as a JSON object with the feed's field names, in order.
struct Recipient<'a> {
    names: &'a [String],
    values: &'a [String],
}

impl serde::Serialize for Recipient<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.names.len()))?;
        for (i, name) in self.names.iter().enumerate() {
            map.serialize_entry(name, self.values.get(i).map_or("", String::as_str))?;
        }
        map.end()
    }
}

pub fn export_recipients(
    w: &mut dyn Write,
    feed: &Feed,
    store: Option<&Store>,
    format: Format,
    raw: bool,
) -> anyhow::Result<()> {
    let names: Vec<String> = feed.fields.iter().map(|f| f.name.clone()).collect();
    let mut out = std::io::BufWriter::new(w);
    let result = match format {
        Format::Csv => export_csv(&names, store, &feed.name, raw, &mut out),
        Format::Json => export_json(&names, store, &feed.name, &mut out),
    };
    let result = match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => write_result(out.flush()),
    };
    result.map_err(|e| {
        // A write that failed is the output's trouble, not the store's.
        let store_error = e.downcast_ref::<crate::store::StoreError>();
        let output_failed = match store_error {
            Some(crate::store::StoreError::Output { .. }) => true,
            Some(_) => false,
            None => e.downcast_ref::<std::io::Error>().is_some(),
        };
        if output_failed {
            anyhow::anyhow!(
                "cannot write the recipients to the output: {e}; check that there is room and that it can be written (the store is not affected)"
            )
        } else {
            e
        }
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe")
    })
}

/// CSV of the recipients: cells a spreadsheet would run as a formula are
/// neutralised (`report::neutralize`) unless `raw`.
fn export_csv(
    names: &[String],
    store: Option<&Store>,
    feed: &str,
    raw: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(names.iter().map(|n| export_cell(n, raw).into_owned()))?;
    if let Some(store) = store {
        store.for_each_recipient(feed, |_, record| {
            let mut row: Vec<std::borrow::Cow<'_, str>> =
                record.values.iter().map(|v| export_cell(v, raw)).collect();
            row.resize(names.len(), "".into());
            w.write_record(row.iter().map(|c| c.as_bytes()))
                .map_err(std::io::Error::other)
        })?;
    }
    w.flush()?;
    Ok(())
}

fn export_cell(value: &str, raw: bool) -> std::borrow::Cow<'_, str> {
    if raw {
        value.into()
    } else {
        crate::report::neutralize(value)
    }
}

fn export_json(
    names: &[String],
    store: Option<&Store>,
    feed: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    out.write_all(b"[")?;
    let mut first = true;
    if let Some(store) = store {
        store.for_each_recipient(feed, |_, record| {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            out.write_all(b"\n  ")?;
            serde_json::to_writer(
                &mut *out,
                &Recipient {
                    names,
                    values: &record.values,
                },
            )
            .map_err(std::io::Error::other)
        })?;
    }
    out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    Ok(())
}

/// Writes text to the output, a closed pipe being no error.
pub fn print_text(w: &mut dyn Write, text: &str) -> anyhow::Result<()> {
    write_result(w.write_all(text.as_bytes()))
}

/// Any serialisable value as pretty JSON.
pub fn print_value(w: &mut dyn Write, v: &Value) -> anyhow::Result<()> {
    print_json(w, v)
}

/// A run's change log: one line per person, or a JSON object.
pub fn print_run_changes(
    w: &mut dyn Write,
    run: &Run,
    changes: &[LoggedChange],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "run_id": run.run_id,
            "feed": run.feed,
            "state": run.state.as_str(),
            "decision": run.decision(),
            "undo_of": run.undo_of,
            "requested_by": run.requested_by,
            "changes": changes,
        });
        writeln!(w, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let run_id = run.run_id.unwrap_or_default();
    if let Some(line) = decision_line(run) {
        writeln!(w, "run {run_id}: {line}")?;
    }
    if changes.is_empty() {
        writeln!(w, "run {run_id}: no changes")?;
        return Ok(());
    }
    for change in changes {
        let id = printable(change.id());
        match change {
            LoggedChange::Added { .. } => writeln!(w, "added    {id}")?,
            LoggedChange::Updated { fields, .. } => {
                writeln!(w, "updated  {id}  {}", fields_text(fields))?
            }
            LoggedChange::Removed { values, .. } => {
                writeln!(w, "removed  {id}  ({})", removed_values_text(values))?
            }
        }
    }
    Ok(())
}

/// Whether a run's changes are done or would be, and who decided.
fn decision_line(run: &Run) -> Option<String> {
    let by = |who: &Option<String>, at: &Option<String>| {
        format!(
            "{} at {}",
            printable(who.as_deref().unwrap_or("")),
            at.as_deref().unwrap_or("")
        )
    };
    match run.state {
        RunState::Held => Some("held; what it would change if confirmed".into()),
        RunState::Rejected => Some(format!(
            "rejected by {}; what it would have changed",
            by(&run.rejected_by, &run.rejected_at)
        )),
        RunState::Superseded => Some(format!(
            "superseded by run {}; what it would have changed",
            run.superseded_by.unwrap_or_default()
        )),
        _ => run.confirmed_by.as_ref().map(|_| {
            format!(
                "held, then confirmed by {}",
                by(&run.confirmed_by, &run.confirmed_at)
            )
        }),
    }
}

/// A removed person's values: `field=value, …`.
fn removed_values_text(values: &[LoggedValue]) -> String {
    let each: Vec<String> = values
        .iter()
        .map(|v| format!("{}={}", v.field, printable(&v.value)))
        .collect();
    each.join(", ")
}

/// A page of the change feed: one line per change with its cursor, then
/// where to go on from; or the JSON object of `/api/changes`.
pub fn print_feed_page(
    w: &mut dyn Write,
    feed: &Feed,
    page: &FeedPage,
    after: Option<&FeedCursor>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let fields: Vec<&str> = feed.fields.iter().map(|f| f.name.as_str()).collect();
        let v = page.to_json(&feed.name, &fields, after);
        writeln!(w, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    for change in &page.changes {
        let id = printable(change.change.id());
        let what = match &change.change {
            LoggedChange::Added { .. } => format!("added    {id}"),
            LoggedChange::Updated { fields, .. } => {
                format!("updated  {id}  {}", fields_text(fields))
            }
            LoggedChange::Removed { values, .. } => {
                format!("removed  {id}  ({})", removed_values_text(values))
            }
        };
        writeln!(
            w,
            "{}  run {:>5}  {what}",
            change.cursor().encode(),
            change.run
        )?;
    }
    let next = page.next(after).map(|c| c.encode());
    match (&next, page.more, page.held_run) {
        (None, _, None) => writeln!(w, "{}: no changes yet", feed.name)?,
        (None, _, Some(held)) => writeln!(
            w,
            "{}: held run {held} waits for a decision; its changes come first once confirmed",
            feed.name
        )?,
        (Some(next), true, _) => writeln!(w, "more: go on with --after {next}")?,
        (Some(next), false, None) => writeln!(w, "up to date: next time --after {next}")?,
        (Some(next), false, Some(held)) => writeln!(
            w,
            "up to date until held run {held} is decided: next time --after {next}"
        )?,
    }
    Ok(())
}

/// A person's history: one line per run, or a JSON object.
pub fn print_history(
    w: &mut dyn Write,
    feed: &str,
    id: &str,
    entries: &[(Run, LoggedChange)],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let history: Vec<Value> = entries
            .iter()
            .map(|(run, change)| change.history_json(run))
            .collect();
        let v = serde_json::json!({"feed": feed, "id": id, "history": history});
        writeln!(w, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(
            w,
            "{}: no run changed {} (or its runs are past history_retention)",
            feed,
            printable(id)
        )?;
        return Ok(());
    }
    for (run, change) in entries {
        let what = match change {
            LoggedChange::Added { .. } => "added".to_string(),
            LoggedChange::Updated { fields, .. } => {
                format!("updated  {}", fields_text(fields))
            }
            LoggedChange::Removed { .. } => "removed".to_string(),
        };
        let confirmed = run
            .confirmed_by
            .as_deref()
            .map(|by| format!(" (confirmed by {})", printable(by)))
            .unwrap_or_default();
        writeln!(
            w,
            "run {:>5}  {}  {}{}  {}",
            run.run_id.unwrap_or_default(),
            run.started_at,
            printable(&run.file),
            confirmed,
            what
        )?;
    }
    Ok(())
}
