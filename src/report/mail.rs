//! The run report email: subject, plain text and HTML, from the templates
//! in `assets/mail/`. Pure: what to say, not how to send it.

use minijinja::{context, Environment};
use serde::Serialize;

use crate::import::{printable, thousands};
use crate::store::{fields_text, LoggedChange, Run, RunState};

const RUN_TXT: &str = include_str!("../../assets/mail/run.txt");
const RUN_HTML: &str = include_str!("../../assets/mail/run.html");
/// Errors listed in the mail; the rest are in the attachment.
pub const ERRORS_SHOWN: usize = 20;
/// Changes listed in the mail (who was added, updated, removed); the rest
/// are on the run's page and in `flagsync runs changes ID`.
pub const CHANGES_SHOWN: usize = 20;
/// An error report larger than this is attached zipped.
pub const ZIP_ABOVE: u64 = 1 << 20;

/// How the error report at `path` is attached: under which name, and
/// whether zipped (above [`ZIP_ABOVE`]). Decided here only: the mail's
/// text names the attachment when the run is queued, the sender attaches
/// it later, and both must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPlan {
    pub name: String,
    pub zipped: bool,
    pub size: u64,
}

pub fn plan_attachment(path: &std::path::Path) -> Option<AttachmentPlan> {
    let file_name = path.file_name()?.to_string_lossy().into_owned();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let zipped = size > ZIP_ABOVE;
    Some(AttachmentPlan {
        name: if zipped {
            format!("{file_name}.zip")
        } else {
            file_name
        },
        zipped,
        size,
    })
}

/// The name the error report at `path` is attached under.
pub fn attachment_label(path: &std::path::Path) -> Option<String> {
    plan_attachment(path).map(|p| p.name)
}

/// A message's three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    line: u32,
    id: Option<&'a str>,
    reasons: &'a [String],
    /// Imported with warnings rather than flagged.
    warning: bool,
}

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // Unknown variables are mistakes in our templates, not empty text.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("run.txt", RUN_TXT)?;
    env.add_template("run.html", RUN_HTML)?;
    Ok(env)
}

/// `[flagsync] hr: applied — 12 added, 3 removed`: the feed and the state
/// first, so that mail rules can sort on them.
pub fn subject(run: &Run) -> String {
    let c = &run.counts;
    let what = match run.state {
        RunState::Applied | RunState::Unchanged => {
            let mut parts: Vec<String> = [
                (c.added, "added"),
                (c.updated, "updated"),
                (c.removed, "removed"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, w)| format!("{} {w}", thousands(*n)))
            .collect();
            if parts.is_empty() {
                parts.push("no changes".into());
            }
            if c.flagged > 0 {
                parts.push(format!("{} flagged", thousands(c.flagged)));
            }
            if c.warnings > 0 {
                parts.push(format!("{} with warnings", thousands(c.warnings)));
            }
            parts.join(", ")
        }
        RunState::Held | RunState::Failed => {
            let reason = run.reason.clone().unwrap_or_default();
            let mut short: String = reason.chars().take(100).collect();
            if short.len() < reason.len() {
                short.push('…');
            }
            short
        }
        RunState::Rejected | RunState::Superseded => run.file.clone(),
    };
    format!("[flagsync] {}: {} — {what}", run.feed, run.state.as_str())
}

fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The first changes of a run as the mail lists them, one line each:
/// `added E1`, `updated E2: email: a → b`, `removed E3 (Ann Smith)` (the
/// name from `name_fields`, the feed's fields called `*name*`), worded
/// `would add` … for a run of which nothing was applied. No more than the
/// run's page shows: an update's fields, a removal's name.
pub fn change_lines(changes: &[LoggedChange], name_fields: &[&str], would: bool) -> Vec<String> {
    let verb = |done: &'static str, would_do: &'static str| if would { would_do } else { done };
    changes
        .iter()
        .map(|change| {
            let id = printable(change.id());
            match change {
                LoggedChange::Added { .. } => format!("{} {id}", verb("added", "would add")),
                LoggedChange::Updated { fields, .. } => format!(
                    "{} {id}: {}",
                    verb("updated", "would update"),
                    fields_text(fields)
                ),
                LoggedChange::Removed { values, .. } => {
                    let name: Vec<String> = values
                        .iter()
                        .filter(|v| name_fields.contains(&v.field.as_str()) && !v.value.is_empty())
                        .map(|v| printable(&v.value).into_owned())
                        .collect();
                    let removed = verb("removed", "would remove");
                    if name.is_empty() {
                        format!("{removed} {id}")
                    } else {
                        format!("{removed} {id} ({})", name.join(" "))
                    }
                }
            }
        })
        .collect()
}

/// What an undo or a restore is, in words (none for a file's run).
fn undo_note(run: &Run) -> Option<String> {
    let of = run.undo_of?;
    let by = run.requested_by.as_deref().unwrap_or("unknown");
    let mut note = match &run.restored_id {
        Some(id) => format!(
            "restores {} as run {of} removed them, asked by {by}",
            printable(id)
        ),
        None => format!("undoes run {of}, asked by {by}"),
    };
    if run.conflicts > 0 {
        note += &format!(
            "; {} people changed again since were left as they are (listed in the attached report)",
            thousands(run.conflicts)
        );
    }
    Some(note)
}

/// Renders a run's report. `link` is the run's page on the status site;
/// `changes` the first of the run's changes ([`change_lines`]).
pub fn render_run(
    run: &Run,
    link: Option<String>,
    attachment: Option<&str>,
    changes: &[String],
) -> Result<Rendered, String> {
    render_run_with_notices(run, link, attachment, changes, &[])
}

/// [`render_run`], with notices about the feed itself (its OpenPGP keys
/// that expire soon), shown whatever the run's state.
pub fn render_run_with_notices(
    run: &Run,
    link: Option<String>,
    attachment: Option<&str>,
    changes: &[String],
    notices: &[String],
) -> Result<Rendered, String> {
    let env = environment().map_err(|e| format!("mail template: {e}"))?;
    let c = &run.counts;
    let errors: Vec<ErrorLine> = run
        .errors
        .iter()
        .take(ERRORS_SHOWN)
        .map(|e| ErrorLine {
            line: e.line,
            id: e.id.as_deref(),
            reasons: &e.reasons,
            warning: e.warning,
        })
        .collect();
    let encoding_note = match run.encoding.map(|e| e.as_str()) {
        Some("windows-1252") => {
            Some("the file is not UTF-8; it was read as Windows-1252 (what Excel writes)")
        }
        _ => None,
    };
    let shown = run.would_remove.len() as u64;
    let more_changes = c.changes().saturating_sub(changes.len() as u64);
    let ctx = context! {
        feed => run.feed,
        file => run.file,
        undo_note => undo_note(run),
        state => run.state.as_str(),
        run_id => run.run_id,
        reason => run.reason.clone().unwrap_or_default(),
        started_at => run.started_at,
        duration => duration_text(run.duration_ms),
        encoding_note => encoding_note,
        container => run.container.as_deref().map(crate::import::printable),
        pgp_note => run.pgp_description(),
        notices => notices,
        rows => thousands(c.rows),
        added => thousands(c.added),
        updated => thousands(c.updated),
        removed => thousands(c.removed),
        unchanged => thousands(c.unchanged),
        flagged => thousands(c.flagged),
        warnings => thousands(c.warnings),
        filtered => thousands(c.filtered),
        groups_created => thousands(c.groups_created),
        groups_removed => thousands(c.groups_removed),
        errors => errors,
        line_word => run.line_word(),
        would_remove => run.would_remove,
        more_removed => c.removed.saturating_sub(shown),
        changes => changes,
        changes_total => thousands(c.changes()),
        more_changes => more_changes,
        more_changes_text => thousands(more_changes),
        would => run.state.nothing_applied(),
        confirmed_by => run.confirmed_by,
        confirmed_at => run.confirmed_at,
        link => link,
        attachment => attachment,
    };
    let render = |name: &str| {
        env.get_template(name)
            .and_then(|t| t.render(&ctx))
            .map_err(|e| format!("mail template {name}: {e}"))
    };
    Ok(Rendered {
        subject: subject(run),
        text: render("run.txt")?,
        html: render("run.html")?,
    })
}

/// Plain text and the same as simple HTML.
fn plain(subject: String, text: String) -> Rendered {
    let escaped = minijinja::HtmlEscape(&text).to_string();
    Rendered {
        subject,
        html: format!("<!doctype html><html><body><pre style=\"font-family: sans-serif; white-space: pre-wrap;\">{escaped}</pre></body></html>"),
        text,
    }
}

/// The one alert of a feed that has gone quiet.
pub fn render_overdue(feed: &str, last_file: &str, expect_every: &str) -> Rendered {
    plain(
        format!("[flagsync] {feed}: overdue — no file since {last_file}"),
        format!(
            "flagsync has received no file for feed {feed} since {last_file}; one is expected every {expect_every}.\n\n\
             The recipient list is not being kept up to date. Check that the system that sends the file is running \
             and can still log in to flagsync's sFTP server.\n\n\
             This alert is sent once; the next one only after a file has arrived again and the feed goes quiet again.\n\n-- \nflagsync\n"
        ),
    )
}

/// The one reminder of a held run still waiting for a decision.
pub fn render_reminder(run: &Run, link: Option<String>) -> Rendered {
    let id = run.run_id.unwrap_or_default();
    let mut text = format!(
        "Run {id} of feed {} ({}) is still held since {}: it {}.\nNothing has been applied; newer files of the feed are still processed.\n\n\
         If it is right, confirm it:  flagsync runs confirm {id}\nIf not, reject it:  flagsync runs reject {id}\n",
        run.feed,
        run.file,
        run.started_at,
        run.reason.as_deref().unwrap_or("was held")
    );
    if let Some(link) = link {
        text.push_str(&format!("Or decide on the status page: {link}\n"));
    }
    text.push_str("\nThis reminder is sent once.\n\n-- \nflagsync\n");
    plain(
        format!("[flagsync] {}: reminder — run {id} is still held", run.feed),
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{ApplyCounts, RowError};

    fn run(state: RunState) -> Run {
        Run {
            run_id: Some(7),
            state,
            counts: ApplyCounts {
                rows: 100,
                added: 12,
                removed: 3,
                unchanged: 85,
                ..Default::default()
            },
            finished_at: "2026-11-25T10:00:01Z".into(),
            duration_ms: 1234,
            ..Run::new("hr", "hr.csv", "2026-11-25T10:00:00Z".into())
        }
    }

    #[test]
    fn subjects_can_be_filtered_on() {
        assert_eq!(
            subject(&run(RunState::Applied)),
            "[flagsync] hr: applied — 12 added, 3 removed"
        );
        let mut held = run(RunState::Held);
        held.reason = Some("would remove 1,204 of 10,950 recipients, 11.0% > 10%".into());
        assert_eq!(
            subject(&held),
            "[flagsync] hr: held — would remove 1,204 of 10,950 recipients, 11.0% > 10%"
        );
    }

    #[test]
    fn an_undo_report_says_what_it_undoes_and_its_conflicts() {
        let mut undo = run(RunState::Applied);
        undo.undo_of = Some(5);
        undo.requested_by = Some("carol".into());
        undo.conflicts = 3;
        let r = render_run(&undo, None, None, &[]).unwrap();
        assert!(
            r.text
                .contains("Undo:      undoes run 5, asked by carol; 3 people changed again since"),
            "{}",
            r.text
        );
        assert!(r.html.contains("undoes run 5"));
        let plain = render_run(&run(RunState::Applied), None, None, &[]).unwrap();
        assert!(!plain.text.contains("Undo:"));
    }

    #[test]
    fn a_packed_file_says_what_it_was_packed_in() {
        let mut packed = run(RunState::Applied);
        packed.container = Some("zip: hr/\u{1b}[31m.csv".into());
        let r = render_run(&packed, None, None, &[]).unwrap();
        assert!(r.text.contains("Packed as: zip: hr/"), "{}", r.text);
        assert!(r.html.contains("Packed as: zip: hr"), "{}", r.html);
        assert!(!r.text.contains('\u{1b}'), "printable: {}", r.text);
        let plain = render_run(&run(RunState::Applied), None, None, &[]).unwrap();
        assert!(!plain.text.contains("Packed as"), "{}", plain.text);
    }

    #[test]
    fn a_held_report_says_why_and_how_to_decide() {
        let mut held = run(RunState::Held);
        held.reason = Some("would remove 3 of 10 recipients, 30.0% > 10%".into());
        held.would_remove = vec!["E1 Ann Smith".into(), "E2 <b>Bob</b>".into()];
        let r = render_run(&held, Some("http://x/runs/7".into()), None, &[]).unwrap();
        assert!(r.text.contains("flagsync runs confirm 7"), "{}", r.text);
        assert!(r.text.contains("flagsync runs reject 7"));
        assert!(r.text.contains("E1 Ann Smith"));
        assert!(r.text.contains("… and 1 more"), "{}", r.text);
        assert!(
            r.html.contains("E2 &lt;b&gt;Bob"),
            "HTML is escaped: {}",
            r.html
        );
        assert!(!r.html.contains("<b>Bob"));
        assert!(
            r.html
                .contains("<a href=\"http:&#x2f;&#x2f;x&#x2f;runs&#x2f;7\">"),
            "{}",
            r.html
        );
    }

    #[test]
    fn the_first_changes_are_listed_and_the_rest_counted() {
        use crate::store::{LoggedField, LoggedValue};
        let changes = vec![
            LoggedChange::Added { id: "E1".into() },
            LoggedChange::Updated {
                id: "E2".into(),
                fields: vec![LoggedField {
                    field: "email".into(),
                    old: "a@x".into(),
                    new: "".into(),
                }],
            },
            LoggedChange::Removed {
                id: "E3".into(),
                values: vec![
                    LoggedValue {
                        field: "first_name".into(),
                        value: "<b>Ann</b>".into(),
                    },
                    LoggedValue {
                        field: "email".into(),
                        value: "ann@x".into(),
                    },
                ],
            },
        ];
        let lines = change_lines(&changes, &["first_name"], false);
        assert_eq!(
            lines,
            [
                "added E1",
                "updated E2: email: a@x → (empty)",
                "removed E3 (<b>Ann</b>)"
            ]
        );
        // 12 added and 3 removed: 15 changes, 3 shown.
        let m = render_run(&run(RunState::Applied), None, None, &lines).unwrap();
        assert!(
            m.text.contains("What changed (the first 3 of 15):"),
            "{}",
            m.text
        );
        assert!(m.text.contains("  updated E2: email: a@x → (empty)"));
        assert!(
            m.text
                .contains("… and 12 more — see flagsync runs changes 7"),
            "{}",
            m.text
        );
        assert!(
            m.html.contains("removed E3 (&lt;b&gt;Ann&lt;&#x2f;b&gt;)"),
            "{}",
            m.html
        );
        assert!(!m.text.contains("ann@x"), "a removal shows only the name");
        let held = change_lines(&changes, &["first_name"], true);
        assert_eq!(held[0], "would add E1");
        let m = render_run(
            &run(RunState::Held),
            Some("http://x/runs/7".into()),
            None,
            &held,
        )
        .unwrap();
        assert!(
            m.text.contains("What it would change (the first 3 of 15):"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("the run's page: http://x/runs/7"),
            "{}",
            m.text
        );
    }

    #[test]
    fn an_encrypted_runs_mail_says_who_signed_it_and_warns_of_expiring_keys() {
        let mut r = run(RunState::Applied);
        r.pgp = Some(crate::import::pgp::PgpRecord {
            decrypted_with: Some("AB12".into()),
            signature: crate::import::pgp::SignatureState::Verified,
            signer: Some("CD34".into()),
            signer_user_id: Some("HR <hr@example.com>".into()),
        });
        let notice = "feed 'hr': the key in pgp_private_key_file expires on 2027-01-01: renew it";
        let m = render_run_with_notices(&r, None, None, &[], &[notice.to_string()]).unwrap();
        assert!(
            m.text
                .contains("OpenPGP:   encrypted for this feed's key AB12; signature verified: signed by CD34 (HR <hr@example.com>)"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains(&format!("WARNING:   {notice}")),
            "{}",
            m.text
        );
        assert!(m.html.contains("expires on 2027-01-01"), "{}", m.html);
        let plain = render_run(&run(RunState::Applied), None, None, &[]).unwrap();
        assert!(!plain.text.contains("OpenPGP") && !plain.text.contains("WARNING"));
    }

    #[test]
    fn errors_are_listed_with_their_lines() {
        let mut r = run(RunState::Applied);
        r.counts.flagged = 1;
        r.counts.warnings = 1;
        r.errors = vec![
            RowError {
                warning: false,
                line: 14,
                id: Some("E9".into()),
                reasons: vec!["email: 'bob@' is not an address".into()],
                cells: Vec::new(),
            },
            RowError {
                warning: true,
                line: 15,
                id: Some("E10".into()),
                reasons: vec!["invalid email; imported without it".into()],
                cells: Vec::new(),
            },
        ];
        let m = render_run(&r, None, Some("hr.csv.errors.csv"), &[]).unwrap();
        assert!(
            m.text
                .contains("line 15 (E10): warning: invalid email; imported without it"),
            "{}",
            m.text
        );
        assert!(m.html.contains("line 15 (E10): warning: invalid email"));
        assert!(
            m.text
                .contains("line 14 (E9): email: 'bob@' is not an address"),
            "{}",
            m.text
        );
        assert!(m.text.contains("attached (hr.csv.errors.csv)"));
        // A workbook's rows are the sheet's.
        r.container = Some("xlsx: Staff".into());
        let m = render_run(&r, None, None, &[]).unwrap();
        assert!(m.text.contains("row 14 (E9): email:"), "{}", m.text);
        assert!(m.html.contains("row 15 (E10): warning:"), "{}", m.html);
        let failed = Run {
            reason: Some("the ID column 'Employee ID' is missing".into()),
            ..run(RunState::Failed)
        };
        let m = render_run(&failed, None, None, &[]).unwrap();
        assert!(m
            .text
            .contains("Why: the ID column 'Employee ID' is missing"));
        assert!(m
            .subject
            .starts_with("[flagsync] hr: failed — the ID column"));
    }
}
