//! Row validation and normalisation: one row's raw cells in, either the
//! stored [`Record`] or every reason the row is flagged.

use crate::config::{Feed, FieldKind};

use super::phone::normalize_phone;
use super::record::Record;
use super::scan::{decode_field, Encoding};

/// What validating a row needs besides the row.
pub struct RowContext<'a> {
    pub feed: &'a Feed,
    pub field_columns: &'a [Option<usize>],
    pub encoding: Encoding,
}

/// Validates a row that has as many columns as the header and a non-empty,
/// first-seen ID. Collects every reason rather than stopping at the first.
pub fn validate_row(record: &csv::ByteRecord, ctx: &RowContext) -> Result<Record, Vec<String>> {
    let feed = ctx.feed;
    let mut values = Vec::with_capacity(feed.fields.len());
    let mut reasons = Vec::new();
    let mut has_channel = false;
    for (field, col) in feed.fields.iter().zip(ctx.field_columns) {
        let raw = col.and_then(|c| record.get(c)).unwrap_or(b"");
        let decoded = decode_field(raw, ctx.encoding);
        let value = decoded.trim();
        match check_value(value, field, feed) {
            Ok(v) => {
                if field.kind.is_channel() && !v.is_empty() {
                    has_channel = true;
                }
                values.push(v);
            }
            Err(reason) => {
                if field.kind.is_channel() {
                    has_channel = true;
                }
                reasons.push(reason);
                values.push(String::new());
            }
        }
    }
    if feed.require_channel && !has_channel {
        reasons.push("no delivery channel: SMS, Voice and email are all empty".to_string());
    }
    if !reasons.is_empty() {
        return Err(reasons);
    }
    let groups = groups_of(&values, feed);
    Ok(Record { values, groups })
}

fn check_value(value: &str, field: &crate::config::Field, feed: &Feed) -> Result<String, String> {
    let column = &field.column;
    if let Some(c) = value.chars().find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(format!(
            "control character U+{:04X} in '{column}'",
            c as u32
        ));
    }
    let length = value.chars().count();
    if length > field.max_length {
        return Err(format!(
            "value too long in '{column}': {length} characters, at most {}",
            field.max_length
        ));
    }
    if value.is_empty() {
        return if field.required {
            Err(format!("required field '{column}' is empty"))
        } else {
            Ok(String::new())
        };
    }
    match field.kind {
        FieldKind::Id | FieldKind::Text => Ok(value.to_string()),
        FieldKind::Email => check_email(value)
            .then(|| value.to_string())
            .ok_or_else(|| format!("invalid email in '{column}': '{value}' is not an email address")),
        FieldKind::Sms | FieldKind::Voice => normalize_phone(value, feed.default_country)
            .map_err(|e| format!("invalid phone in '{column}': {e}")),
        FieldKind::Multi => {
            let separator = field.separator.as_deref().unwrap_or(";");
            let parts = split_multi(value, separator);
            if parts.is_empty() && field.required {
                return Err(format!("required field '{column}' is empty"));
            }
            Ok(parts.join(separator))
        }
    }
}

/// Splits, trims, drops empty parts and repeats (the first one is kept).
pub fn split_multi<'v>(value: &'v str, separator: &str) -> Vec<&'v str> {
    let mut out: Vec<&str> = Vec::new();
    for part in value.split(separator).map(str::trim) {
        if !part.is_empty() && !out.contains(&part) {
            out.push(part);
        }
    }
    out
}

/// A syntactically valid address whose domain has a dot (`bob@example` is
/// almost always a typo in an HR file).
fn check_email(value: &str) -> bool {
    let Some((_, domain)) = value.rsplit_once('@') else {
        return false;
    };
    domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email_address::EmailAddress::is_valid(value)
}

/// `<column>: <value>` for each group field's value (several for a multi
/// field), sorted, without repeats.
pub fn groups_of(values: &[String], feed: &Feed) -> Vec<String> {
    let mut groups = Vec::new();
    for &g in &feed.group_fields {
        let field = &feed.fields[g];
        let value = &values[g];
        if value.is_empty() {
            continue;
        }
        match (field.kind, &field.separator) {
            (FieldKind::Multi, Some(sep)) => {
                for part in split_multi(value, sep) {
                    groups.push(format!("{}: {part}", field.column));
                }
            }
            _ => groups.push(format!("{}: {value}", field.column)),
        }
    }
    groups.sort();
    groups.dedup();
    groups
}
