//! The delete guard: a run that would remove too many recipients is held
//! until an administrator confirms it.

use crate::config::Threshold;

use super::diff::Diff;

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
    let removed = diff.removed.len() as u64;
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
