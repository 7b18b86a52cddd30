//! A feed's trend as a small SVG drawn on the server (no JavaScript): the
//! recipients after each of the latest runs as a line, and each applied
//! run's additions (up, green) and removals (down, red) as bars.

use crate::worker::status::TrendPoint;

const WIDTH: f64 = 300.0;
const LINE_HEIGHT: f64 = 48.0;
const BAR_HEIGHT: f64 = 16.0;

/// The SVG of `points` (oldest first, as `worker::status::trend` gives
/// them); `None` with fewer than two runs (nothing to compare yet).
pub fn svg(points: &[TrendPoint]) -> Option<String> {
    if points.len() < 2 {
        return None;
    }
    let counts: Vec<f64> = points.iter().map(|p| p.recipients as f64).collect();
    let (low, high) = counts
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &c| (l.min(c), h.max(c)));
    let span = (high - low).max(1.0);
    let step = WIDTH / (points.len() - 1) as f64;
    let y_of = |c: f64| 2.0 + (LINE_HEIGHT - 4.0) * (1.0 - (c - low) / span);
    let line: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| format!("{:.1},{:.1}", i as f64 * step, y_of(c)))
        .collect();
    let biggest = points
        .iter()
        .map(|p| p.added.max(p.removed) as f64)
        .fold(1.0, f64::max);
    let mid = LINE_HEIGHT + BAR_HEIGHT;
    let mut bars = String::new();
    for (i, p) in points.iter().enumerate() {
        let x = (i as f64 * step - 2.0).clamp(0.0, WIDTH - 4.0);
        let up = BAR_HEIGHT * p.added as f64 / biggest;
        let down = BAR_HEIGHT * p.removed as f64 / biggest;
        if up > 0.0 {
            bars.push_str(&format!(
                r##"<rect x="{x:.1}" y="{:.1}" width="4" height="{up:.1}" fill="#1f7a4d"/>"##,
                mid - up
            ));
        }
        if down > 0.0 {
            bars.push_str(&format!(
                r##"<rect x="{x:.1}" y="{mid:.1}" width="4" height="{down:.1}" fill="#b3261e"/>"##
            ));
        }
    }
    let first = counts[0];
    let last = counts[counts.len() - 1];
    let label = format!(
        "Recipients over the last {} runs: from {first} to {last} (lowest {low}, highest {high}); bars: added and removed per run",
        points.len()
    );
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h}" width="{WIDTH}" height="{h}" role="img" aria-label="{label}"><title>{label}</title><polyline points="{line}" fill="none" stroke="#1d2330" stroke-width="1.5"/><line x1="0" y1="{mid}" x2="{WIDTH}" y2="{mid}" stroke="#ccc" stroke-width="0.5"/>{bars}</svg>"##,
        h = LINE_HEIGHT + 2.0 * BAR_HEIGHT,
        line = line.join(" "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(recipients: u64, added: u64, removed: u64) -> TrendPoint {
        TrendPoint {
            run_id: None,
            state: "applied",
            recipients,
            added,
            removed,
        }
    }

    #[test]
    fn a_trend_needs_two_runs_and_draws_counts_and_changes() {
        assert_eq!(svg(&[point(5, 5, 0)]), None);
        let drawn = svg(&[point(100, 100, 0), point(90, 0, 10), point(95, 5, 0)]).expect("an svg");
        assert!(drawn.starts_with("<svg") && drawn.ends_with("</svg>"));
        assert!(
            drawn.contains("from 100 to 95 (lowest 90, highest 100)"),
            "{drawn}"
        );
        assert_eq!(drawn.matches("<rect").count(), 3, "{drawn}");
        assert!(
            drawn.contains("<polyline points=\"0.0,2.0 150.0,46.0 300.0,24.0\""),
            "{drawn}"
        );
    }
}
