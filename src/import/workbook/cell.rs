//! One cell of a workbook as text, the way the customer sees it in the
//! spreadsheet: a text cell as typed, a number without a trailing `.0`,
//! dates in ISO 8601.
//!
//! Invariants:
//! 1. A text cell is written as it is (`000123` stays `000123`).
//! 2. A number is what Excel shows with its "General" format: at most 15
//!    significant digits (Excel keeps no more), in plain decimal notation,
//!    never in scientific notation and never with a trailing `.0`.
//! 3. An integer in a zero-padded format (`000000`) keeps its leading zeros.

use calamine::{CellErrorType, DataRef, ExcelDateTime};

/// Excel's precision: it keeps 15 significant digits of a number.
const EXCEL_DIGITS: usize = 15;

/// The text of `cell`; `zero_pad`: the number of digits of the cell's
/// zero-padded number format (`000000` → 6), if it has one.
pub fn cell_text(cell: &DataRef<'_>, zero_pad: Option<usize>) -> String {
    match cell {
        DataRef::Empty => String::new(),
        DataRef::String(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_string(),
        DataRef::Int(n) => padded(n.to_string(), zero_pad),
        DataRef::Float(x) => {
            let text = number_text(*x);
            if x.fract() == 0.0 {
                padded(text, zero_pad)
            } else {
                text
            }
        }
        DataRef::Bool(true) => "TRUE".into(),
        DataRef::Bool(false) => "FALSE".into(),
        DataRef::DateTime(d) => date_time_text(d),
        // OpenDocument's own ISO 8601 text, as stored.
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => error_text(e),
    }
}

/// A number as Excel's "General" format shows it: rounded to 15
/// significant digits, then in the shortest decimal form that reads back
/// as that value (`123`, `0.1`, `4915112345678`).
pub fn number_text(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    // `{:.14e}` rounds to 15 significant digits; reading it back gives the
    // nearest double, whose Display is the shortest exact decimal form
    // (plain notation, no `.0` for an integral value).
    let rounded: f64 = format!("{:.*e}", EXCEL_DIGITS - 1, x).parse().unwrap_or(x);
    let text = rounded.to_string();
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// `text` (the digits of a non-negative integer) with leading zeros up to
/// `width` digits.
fn padded(text: String, width: Option<usize>) -> String {
    match width {
        Some(w) if text.len() < w && !text.starts_with('-') => {
            format!("{}{text}", "0".repeat(w - text.len()))
        }
        _ => text,
    }
}

/// The number of digits of a number format that only pads with zeros
/// (`000000`, `"00000"`), which makes 123 show as `000123`.
pub fn zero_pad_width(format_code: &str) -> Option<usize> {
    let code = format_code.trim_matches('"');
    (code.len() > 1 && code.bytes().all(|b| b == b'0')).then_some(code.len())
}

/// A date `2026-01-31`, a date and time `2026-01-31T08:30:00`, a time of
/// day `08:30:00`, or a duration in hours `36:00:00`, to the second (with
/// milliseconds when it has some).
fn date_time_text(d: &ExcelDateTime) -> String {
    if d.is_duration() {
        return duration_text(d.as_f64());
    }
    let (year, month, day, hour, minute, second, milli) = d.to_ymd_hms_milli();
    let time = time_text(hour, minute, second, milli);
    let serial = d.as_f64();
    if (0.0..1.0).contains(&serial) {
        // A time without a date (the serial number's day is 0).
        time
    } else if (hour, minute, second, milli) == (0, 0, 0, 0) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{time}")
    }
}

fn time_text(hour: u8, minute: u8, second: u8, milli: u16) -> String {
    if milli == 0 {
        format!("{hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{hour:02}:{minute:02}:{second:02}.{milli:03}")
    }
}

/// A duration (`[h]:mm:ss`) in days, as hours that may pass 24.
fn duration_text(days: f64) -> String {
    let millis = (days.abs() * 86_400_000.0).round() as u64;
    let sign = if days < 0.0 { "-" } else { "" };
    let (seconds, milli) = (millis / 1000, (millis % 1000) as u16);
    format!(
        "{sign}{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        if milli == 0 {
            String::new()
        } else {
            format!(".{milli:03}")
        }
    )
}

/// An error cell as Excel shows it (`#N/A`): kept, so that a required or
/// checked column names it in the report, as a CSV saved by Excel would.
fn error_text(e: &CellErrorType) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::ExcelDateTimeType;

    fn text(cell: DataRef<'_>) -> String {
        cell_text(&cell, None)
    }

    #[test]
    fn text_cells_keep_their_leading_zeros() {
        assert_eq!(text(DataRef::SharedString("000123")), "000123");
        assert_eq!(text(DataRef::String("4.91512E+12".into())), "4.91512E+12");
        assert_eq!(text(DataRef::Empty), "");
    }

    #[test]
    fn integral_numbers_have_no_trailing_point_zero() {
        assert_eq!(text(DataRef::Float(123.0)), "123");
        assert_eq!(text(DataRef::Float(4915112345678.0)), "4915112345678");
        assert_eq!(text(DataRef::Int(42)), "42");
        assert_eq!(text(DataRef::Float(-7.0)), "-7");
        assert_eq!(text(DataRef::Float(-0.0)), "0");
        assert_eq!(text(DataRef::Float(1e20)), "100000000000000000000");
    }

    #[test]
    fn other_numbers_in_their_shortest_form_to_excels_precision() {
        assert_eq!(text(DataRef::Float(0.1)), "0.1");
        assert_eq!(text(DataRef::Float(2.5)), "2.5");
        assert_eq!(text(DataRef::Float(0.1 + 0.2)), "0.3");
        assert_eq!(text(DataRef::Float(1e-7)), "0.0000001");
        assert_eq!(text(DataRef::Float(123456.789)), "123456.789");
    }

    #[test]
    fn numbers_past_fifteen_digits_lose_them_as_in_excel() {
        assert_eq!(text(DataRef::Float(4915112345678901.0)), "4915112345678900");
        assert_eq!(
            text(DataRef::Float(123456789012345.0)),
            "123456789012345",
            "fifteen digits are kept"
        );
    }

    #[test]
    fn a_zero_padded_format_keeps_leading_zeros() {
        assert_eq!(zero_pad_width("000000"), Some(6));
        assert_eq!(zero_pad_width("0"), None);
        assert_eq!(zero_pad_width("0.00"), None);
        assert_eq!(zero_pad_width("General"), None);
        assert_eq!(cell_text(&DataRef::Float(123.0), Some(6)), "000123");
        assert_eq!(cell_text(&DataRef::Int(123), Some(6)), "000123");
        assert_eq!(cell_text(&DataRef::Float(1234567.0), Some(6)), "1234567");
        assert_eq!(cell_text(&DataRef::Float(1.5), Some(6)), "1.5");
    }

    #[test]
    fn booleans_and_errors_as_excel_shows_them() {
        assert_eq!(text(DataRef::Bool(true)), "TRUE");
        assert_eq!(text(DataRef::Bool(false)), "FALSE");
        assert_eq!(text(DataRef::Error(CellErrorType::NA)), "#N/A");
        assert_eq!(text(DataRef::Error(CellErrorType::Ref)), "#REF!");
    }

    #[test]
    fn dates_and_times_in_iso_8601() {
        let date = |serial: f64| {
            text(DataRef::DateTime(ExcelDateTime::new(
                serial,
                ExcelDateTimeType::DateTime,
                false,
            )))
        };
        assert_eq!(date(46053.0), "2026-01-31");
        assert_eq!(date(46053.5), "2026-01-31T12:00:00");
        assert_eq!(date(0.25), "06:00:00");
        let duration =
            DataRef::DateTime(ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false));
        assert_eq!(text(duration), "36:00:00");
        assert_eq!(
            text(DataRef::DateTimeIso("2026-01-31".into())),
            "2026-01-31"
        );
    }
}
