//! The delete guard: a run that would remove too many recipients is held
//! until an administrator confirms it.

use crate::config::{Feed, Threshold};

use super::diff::Diff;
use super::header::{column_names, Header};
use super::text::printable;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Proceed,
    Hold { reason: String },
}

/// Holds the run when it would remove more than the threshold of the feed's
/// current recipients, or when a file without data rows meets a non-empty
/// feed. The first file of an empty feed is never held.
pub fn judge_delete_guard(diff: &Diff, threshold: Threshold) -> Verdict {
    let current = diff.stored_count;
    if current == 0 {
        return Verdict::Proceed;
    }
    if diff.rows_read == 0 {
        return Verdict::Hold {
            reason: format!(
                "the file has no data rows and the feed has {} recipients; confirm only if the feed really is to be emptied",
                thousands(current)
            ),
        };
    }
    judge_removals(diff.removed.len() as u64, current, threshold)
}

/// Holds a run that would remove `removed` of the feed's `current`
/// recipients when that is over the threshold.
pub fn judge_removals(removed: u64, current: u64, threshold: Threshold) -> Verdict {
    if current == 0 {
        return Verdict::Proceed;
    }
    let share = removed as f64 * 100.0 / current as f64;
    let over = match threshold {
        Threshold::Percent(p) => share > p,
        Threshold::Count(n) => removed > n,
    };
    if !over {
        return Verdict::Proceed;
    }
    let limit = match threshold {
        Threshold::Percent(p) => format!("{share:.1}% > {p}%"),
        Threshold::Count(n) => format!("{} > {} allowed", thousands(removed), thousands(n)),
    };
    Verdict::Hold {
        reason: format!(
            "would remove {} of {} recipients, {limit}",
            thousands(removed),
            thousands(current)
        ),
    }
}

/// Why a run must be held for what it does to stored values (none: it may
/// proceed): each mapped column missing from the file, which confirming
/// clears for everyone, and each delivery channel field that would lose
/// more than the feed's `clear_threshold` of its stored values.
///
/// `cleared` is the run's [`super::Applied::cleared`]; `filled(field,
/// limit)` counts the stored non-empty values of a field before the run,
/// up to `limit` (only whether there are that many matters).
pub fn judge_clearing<E>(
    feed: &Feed,
    header: &Header,
    cleared: &[u64],
    filled: &mut dyn FnMut(usize, u64) -> Result<u64, E>,
) -> Result<Vec<String>, E> {
    let mut reasons = Vec::new();
    let cleared_at = |i: usize| cleared.get(i).copied().unwrap_or(0);
    for &i in &header.missing_fields {
        let field = &feed.fields[i];
        let filter = feed.filters.iter().any(|f| f.field == i);
        let mut reason = format!(
            "the column {} (field '{}') is missing from the file, whose header has: {}; confirming clears that field for everyone: {} stored values",
            column_names(field),
            field.name,
            header
                .columns
                .iter()
                .map(|c| printable(c).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
            thousands(cleared_at(i))
        );
        if filter {
            reason.push_str(", and its filter then leaves out every row");
        }
        reasons.push(reason);
    }
    let Some(threshold) = feed.clear_threshold else {
        return Ok(reasons);
    };
    for (i, field) in feed.fields.iter().enumerate() {
        let emptied = cleared_at(i);
        if emptied == 0 || !field.kind.is_channel() || header.missing_fields.contains(&i) {
            continue;
        }
        let reason = match threshold {
            Threshold::Count(n) if emptied > n => format!(
                "would empty {} stored values of '{}' (a delivery channel), {} > {} allowed",
                thousands(emptied),
                field.column,
                thousands(emptied),
                thousands(n)
            ),
            Threshold::Count(_) => continue,
            Threshold::Percent(p) => {
                // More than p% of the filled values means fewer filled
                // values than this: count that far at most.
                let enough = if p > 0.0 {
                    ((emptied as f64) * 100.0 / p).floor() as u64 + 1
                } else {
                    u64::MAX
                };
                let stored = filled(i, enough)?.max(emptied);
                let share = emptied as f64 * 100.0 / stored as f64;
                if share <= p {
                    continue;
                }
                format!(
                    "would empty {} of {} stored values of '{}' (a delivery channel), {share:.1}% > {p}%",
                    thousands(emptied),
                    thousands(stored),
                    field.column
                )
            }
        };
        reasons.push(reason);
    }
    Ok(reasons)
}

/// `10950` → `10,950`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(stored: u64, rows: u64, removed: usize) -> Diff {
        Diff {
            stored_count: stored,
            rows_read: rows,
            removed: (0..removed).map(|i| i.to_string().into()).collect(),
            ..Diff::default()
        }
    }

    #[test]
    fn percent_is_strictly_more_than() {
        let t = Threshold::Percent(10.0);
        assert_eq!(judge_delete_guard(&diff(100, 90, 10), t), Verdict::Proceed);
        match judge_delete_guard(&diff(10_950, 9_746, 1_204), t) {
            Verdict::Hold { reason } => {
                assert_eq!(
                    reason,
                    "would remove 1,204 of 10,950 recipients, 11.0% > 10%"
                )
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn counts_empty_files_and_empty_feeds() {
        let t = Threshold::Count(5);
        assert_eq!(judge_delete_guard(&diff(100, 95, 5), t), Verdict::Proceed);
        assert!(matches!(
            judge_delete_guard(&diff(100, 94, 6), t),
            Verdict::Hold { .. }
        ));
        assert!(matches!(
            judge_delete_guard(&diff(3, 0, 0), t),
            Verdict::Hold { .. }
        ));
        assert_eq!(judge_delete_guard(&diff(0, 0, 0), t), Verdict::Proceed);
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
