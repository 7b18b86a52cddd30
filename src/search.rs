//! The recipient search, pure: which index keys a recipient is found by, and
//! which key ranges a query reads. `store` keeps the keys in a redb table;
//! `worker::indexer` keeps that table in step with the recipients.
//!
//! A key is `[slot] term 0x00 ID`:
//! - slot = the field's position, term = the field's whole value in lower
//!   case (each item of a multi field). A filter reads the exact term; a
//!   search reads every term that starts with the query.
//! - slot = [`WORD_SLOT`] + the field's position, term = the second and
//!   later words of a searched text field, so that "doe" finds "Jane Doe".
//!
//! Values never hold control characters (validation refuses them), so the
//! 0x00 separator sorts every key of one term before any longer term.
//!
//! Invariants:
//! 1. A search finds a recipient when the query, in lower case, starts one
//!    of its searched terms; a phone-like query also as E.164 (with or
//!    without the feed's country code, trunk zero dropped).
//! 2. A filter finds exactly the recipients whose field value (or one of
//!    its items) equals the value in lower case, cut at [`MAX_TERM`] bytes.

use crate::config::{Feed, FieldKind};

/// Longer values are cut (at a character boundary) before indexing: a key
/// stays small, and a filter on such a value matches its first bytes.
pub const MAX_TERM: usize = 96;
/// Slots at and above this hold words, below it whole values.
const WORD_SLOT: u8 = 64;
/// Separates the term from the ID in a key.
const END_OF_TERM: u8 = 0x00;

#[derive(Debug, Clone)]
struct FieldUse {
    search: bool,
    filter: bool,
    text: bool,
    separator: Option<String>,
}

impl FieldUse {
    fn indexed(&self) -> bool {
        self.search || self.filter
    }
}

/// A feed's fields as the search sees them.
#[derive(Debug, Clone)]
pub struct SearchLayout {
    fields: Vec<FieldUse>,
    /// The feed's country calling code, for national phone numbers.
    country_code: Option<u16>,
}

/// A half-open range of index keys, `[start, end)`.
pub type KeyRange = (Vec<u8>, Vec<u8>);

impl SearchLayout {
    pub fn of(feed: &Feed) -> SearchLayout {
        let fields = feed
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldUse {
                search: f.search,
                filter: f.filter || feed.group_fields.contains(&i),
                text: f.kind == FieldKind::Text,
                separator: f.separator.clone(),
            })
            .collect();
        SearchLayout {
            fields,
            country_code: crate::import::phone::country_code_of(feed.default_country),
        }
    }

    /// Changes whenever the keys of a record would: the index is built again.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::from("search-v1");
        for f in &self.fields {
            text.push_str(&format!(
                "|{}{}{}{:?}",
                f.search as u8, f.filter as u8, f.text as u8, f.separator
            ));
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// Every index key of one recipient, sorted, without repeats.
    pub fn keys<S: AsRef<str>>(&self, id: &str, values: &[S]) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for slot in self.slots() {
            if let Some(value) = values.get(slot.field) {
                self.push_slot_keys(slot, id, value.as_ref(), &mut keys);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The slots that hold keys, in key order.
    pub fn slots(&self) -> Vec<Slot> {
        let values = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.indexed())
            .map(|(field, _)| Slot {
                field,
                words: false,
            });
        let words = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.search && f.text)
            .map(|(field, _)| Slot { field, words: true });
        values.chain(words).collect()
    }

    /// Appends the keys one slot holds for a recipient whose field has
    /// `value` (unsorted; a multi field's repeated items repeat).
    pub fn push_slot_keys(&self, slot: Slot, id: &str, value: &str, out: &mut Vec<Vec<u8>>) {
        let Some(field) = self.fields.get(slot.field) else {
            return;
        };
        if value.is_empty() {
            return;
        }
        if slot.words {
            for word in words(value).skip(1) {
                out.push(key(WORD_SLOT + slot.field as u8, &fold(word), id));
            }
            return;
        }
        match &field.separator {
            Some(sep) => {
                for item in value.split(sep.as_str()).map(str::trim) {
                    if !item.is_empty() {
                        out.push(key(slot.field as u8, &fold(item), id));
                    }
                }
            }
            None => out.push(key(slot.field as u8, &fold(value), id)),
        }
    }

    /// The key ranges a search for `query` reads; empty for a blank query.
    pub fn search_ranges(&self, query: &str) -> Vec<KeyRange> {
        let terms = self.query_terms(query);
        let mut ranges = Vec::new();
        for (i, field) in self.fields.iter().enumerate() {
            if !field.search {
                continue;
            }
            for term in &terms {
                ranges.push(prefix_range(i as u8, term));
                if field.text {
                    ranges.push(prefix_range(WORD_SLOT + i as u8, term));
                }
            }
        }
        ranges
    }

    /// Whether a filter on field `i` can use the index (a group field, or
    /// one marked `filter`).
    pub fn filterable(&self, i: usize) -> bool {
        self.fields.get(i).is_some_and(|f| f.filter)
    }

    /// A filter on field `i` equal to `value` (any case); `None` when the
    /// field is not indexed for filtering.
    pub fn filter(&self, i: usize, value: &str) -> Option<Filter> {
        let field = self.fields.get(i).filter(|f| f.filter)?;
        Some(Filter {
            field: i,
            value: fold(value.trim()),
            separator: field.separator.clone(),
        })
    }

    /// The query as the terms it may start: lower case, and for something
    /// that looks like a phone number, its E.164 forms.
    fn query_terms(&self, query: &str) -> Vec<String> {
        let query = query.trim();
        if query.is_empty() {
            return Vec::new();
        }
        let mut terms = vec![fold(query)];
        if let Some(digits) = phone_digits(query) {
            if query.starts_with('+') {
                terms.push(format!("+{digits}"));
            } else {
                terms.push(format!("+{digits}"));
                if let Some(cc) = self.country_code {
                    let national = digits.strip_prefix('0').unwrap_or(&digits);
                    terms.push(format!("+{cc}{national}"));
                }
            }
        }
        terms.sort();
        terms.dedup();
        terms
    }
}

/// One slot of the index: a field's whole values, or its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub field: usize,
    pub words: bool,
}

/// Recipients whose field equals a value, in any case.
#[derive(Debug, Clone)]
pub struct Filter {
    field: usize,
    value: String,
    separator: Option<String>,
}

impl Filter {
    /// The index keys of the recipients it lets through, in ID order.
    pub fn range(&self) -> KeyRange {
        let mut start = vec![self.field as u8];
        start.extend_from_slice(self.value.as_bytes());
        start.push(END_OF_TERM);
        let mut end = start.clone();
        end.pop();
        end.push(END_OF_TERM + 1);
        (start, end)
    }

    /// Whether a stored record (encoded) passes.
    pub fn passes(&self, record: &[u8]) -> bool {
        let Ok(Some(value)) = crate::import::record::Record::value_at(record, self.field) else {
            return false;
        };
        match &self.separator {
            Some(sep) => value
                .split(sep.as_str())
                .any(|item| fold(item.trim()) == self.value),
            None => fold(value) == self.value,
        }
    }
}

/// The ID at the end of an index key.
pub fn id_of_key(key: &[u8]) -> Option<&str> {
    // The slot byte may itself be 0 (the first field).
    let term_and_id = key.get(1..)?;
    let at = term_and_id.iter().position(|&b| b == END_OF_TERM)?;
    std::str::from_utf8(&term_and_id[at + 1..]).ok()
}

fn key(slot: u8, term: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + term.len() + id.len());
    k.push(slot);
    k.extend_from_slice(term.as_bytes());
    k.push(END_OF_TERM);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Every key of `slot` whose term starts with `prefix`. (UTF-8 never holds
/// the byte 0xFF, so it closes the range.)
fn prefix_range(slot: u8, prefix: &str) -> KeyRange {
    let mut start = vec![slot];
    start.extend_from_slice(prefix.as_bytes());
    let mut end = start.clone();
    end.push(0xFF);
    (start, end)
}

/// Lower case, cut at [`MAX_TERM`] bytes on a character boundary.
pub fn fold(value: &str) -> String {
    let mut folded = value.to_lowercase();
    if folded.len() > MAX_TERM {
        let mut cut = MAX_TERM;
        while !folded.is_char_boundary(cut) {
            cut -= 1;
        }
        folded.truncate(cut);
    }
    folded
}

fn words(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c.is_whitespace() || c == '-' || c == ',')
        .filter(|w| !w.is_empty())
}

/// The digits of a query written like a phone number (digits, a leading
/// `+`, spaces, dashes, dots, brackets), with at least three digits.
fn phone_digits(query: &str) -> Option<String> {
    let body = query.strip_prefix('+').unwrap_or(query);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 3).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn layout() -> (SearchLayout, Feed) {
        let config = Config::embedded().unwrap();
        let feed = config.feeds[0].clone();
        (SearchLayout::of(&feed), feed)
    }

    fn found(layout: &SearchLayout, keys: &[Vec<u8>], query: &str) -> bool {
        layout
            .search_ranges(query)
            .iter()
            .any(|(s, e)| keys.iter().any(|k| k >= s && k < e))
    }

    fn values_for(feed: &Feed, pairs: &[(&str, &str)]) -> Vec<String> {
        feed.fields
            .iter()
            .map(|f| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn finds_by_id_name_phone_and_email_prefix_in_any_case() {
        let (layout, feed) = layout();
        let values = values_for(
            &feed,
            &[
                ("employee_id", "E1042"),
                ("first_name", "Anne-Marie"),
                ("last_name", "van der Berg"),
                ("email", "Anne.Berg@Example.com"),
                ("mobile", "+15551234567"),
            ],
        );
        assert!(values.iter().filter(|v| !v.is_empty()).count() == 5);
        let keys = layout.keys("E1042", &values);
        assert!(found(&layout, &keys, "e10"));
        assert!(found(&layout, &keys, "E1042"));
        assert!(!found(&layout, &keys, "E1043"));
        assert!(!found(&layout, &keys, "   "));
        assert!(found(&layout, &keys, "VAN"));
        assert!(found(&layout, &keys, "berg"));
        assert!(found(&layout, &keys, "marie"));
        assert!(found(&layout, &keys, "anne.berg@"));
        assert!(!found(&layout, &keys, "example.com"));
        assert!(found(&layout, &keys, "+1 555 123"));
        assert!(found(&layout, &keys, "(555) 123-4567"));
        assert!(found(&layout, &keys, "1555123"));
        assert!(keys.iter().all(|k| id_of_key(k) == Some("E1042")));
    }

    #[test]
    fn filter_is_exact_in_any_case() {
        let (layout, feed) = layout();
        let g = feed.group_fields[0];
        let name = feed.fields[g].name.clone();
        let values = values_for(&feed, &[(feed.id().name.as_str(), "E1"), (&name, "Sales")]);
        let keys = layout.keys("E1", &values);
        let record = crate::import::record::Record {
            values: values.clone(),
            groups: Vec::new(),
        }
        .encode();
        let hit = |v: &str| {
            let filter = layout.filter(g, v).unwrap();
            let (s, e) = filter.range();
            let in_range = keys.iter().any(|k| *k >= s && *k < e);
            assert_eq!(in_range, filter.passes(&record), "{v}");
            in_range
        };
        assert!(hit("sales"));
        assert!(hit(" SALES "));
        assert!(!hit("sale"));
        assert!(!hit("sales team"));
        assert!(
            layout.filter(feed.id_field, "E1").is_none(),
            "IDs are searched, not filtered"
        );
        assert_eq!(keys.iter().filter_map(|k| id_of_key(k)).next(), Some("E1"));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let folded = fold(&long);
        assert!(folded.len() <= MAX_TERM);
        assert!(long.starts_with(&folded));
    }
}
