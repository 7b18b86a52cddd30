//! Writes `phone_tables.rs`, the phone validation tables, from the
//! phonenumber crate's own metadata. The tables are committed rather than
//! built by a build script: as a build dependency the phonenumber crate and
//! its regex crates were compiled a second time in every profile (lints,
//! tests, fuzzing, the release build). The test below fails when the
//! committed tables no longer match the crate (after an upgrade of it);
//! `FLAGSYNC_WRITE_PHONE_TABLES=1 cargo test --lib phone_tables` writes
//! them again.
//!
//! The tables keep each region's patterns as strings; `phone` compiles a
//! region's patterns the first time a number of that region is checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};

/// The tables, as `src/import/phone_tables.rs` holds them.
pub fn generate() -> String {
    let mut out = String::new();
    let mut regions: Vec<String> = Vec::new();
    let mut codes: Vec<(u16, usize, usize)> = Vec::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    // Country calling codes have at most three digits; `by_code` lists the
    // main region of a code first, the others in the metadata's order, which
    // is the order libphonenumber tries them in.
    for code in 1..1000u16 {
        let Some(metas) = DATABASE.by_code(&code) else {
            continue;
        };
        codes.push((code, regions.len(), metas.len()));
        for meta in metas {
            if meta.id() != "001" {
                ids.insert(meta.id().to_string(), regions.len());
            }
            regions.push(region_entry(meta));
        }
    }
    let _ = writeln!(out, "pub const REGION_COUNT: usize = {};", regions.len());
    out.push_str("/// Every region, grouped by country calling code, main region first.\n");
    out.push_str("pub static REGIONS: [RegionTable; REGION_COUNT] = [\n");
    for region in &regions {
        out.push_str(region);
    }
    out.push_str("];\n/// (country calling code, first index in REGIONS, count), sorted.\n");
    out.push_str("pub static CODES: &[(u16, u16, u16)] = &[\n");
    for (code, first, count) in &codes {
        let _ = writeln!(out, "    ({code}, {first}, {count}),");
    }
    out.push_str("];\n/// (region, index in REGIONS), sorted; non-geographic entities left out.\n");
    out.push_str("pub static REGION_IDS: &[(&str, u16)] = &[\n");
    for (id, index) in &ids {
        let _ = writeln!(out, "    ({id:?}, {index}),");
    }
    out.push_str("];\n");
    out
}

/// One `RegionTable { .. },` literal.
fn region_entry(meta: &Metadata) -> String {
    let d = meta.descriptors();
    // The order in which a valid number most likely matches first: the
    // answer (valid or not) does not depend on it.
    let types = [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ];
    let types: Vec<&Descriptor> = types.into_iter().flatten().collect();
    // As libphonenumber's metadata build does: the general description's
    // possible lengths are the union of its types' lengths, and a local-only
    // length that is also a full length counts as a full length.
    let lengths = types.iter().fold(0, |m, t| m | mask(t.possible_length()));
    let local = types
        .iter()
        .fold(0, |m, t| m | mask(t.possible_local_length()))
        & !lengths;
    let prefix_for_parsing = meta
        .national_prefix_for_parsing()
        .map(|re| pattern(re.as_str()))
        .or_else(|| meta.national_prefix().map(str::to_string));
    let mut s = String::from("    RegionTable {\n");
    let _ = writeln!(s, "        id: {:?},", meta.id());
    let _ = writeln!(s, "        code: {},", meta.country_code());
    let _ = writeln!(
        s,
        "        international_prefix: {:?},",
        meta.international_prefix().map(|re| pattern(re.as_str()))
    );
    let _ = writeln!(s, "        prefix_for_parsing: {prefix_for_parsing:?},");
    let _ = writeln!(
        s,
        "        transform_rule: {:?},",
        meta.national_prefix_transform_rule().map(replacement)
    );
    let _ = writeln!(
        s,
        "        leading_digits: {:?},",
        meta.leading_digits().map(|re| pattern(re.as_str()))
    );
    let _ = writeln!(
        s,
        "        general: {:?},",
        pattern(d.general().national_number().as_str())
    );
    let _ = writeln!(s, "        lengths: {lengths:#x},");
    let _ = writeln!(s, "        local_lengths: {local:#x},");
    s.push_str("        types: &[\n");
    for t in types {
        let _ = writeln!(
            s,
            "            ({:?}, {:#x}),",
            pattern(t.national_number().as_str()),
            mask(t.possible_length())
        );
    }
    s.push_str("        ],\n    },\n");
    s
}

/// A bit set of lengths (all below 32: national numbers have at most 17
/// digits).
fn mask(lengths: &[u16]) -> u32 {
    lengths
        .iter()
        .filter(|&&len| len < 32)
        .fold(0, |m, &len| m | 1 << len)
}

/// The metadata's patterns are laid out over several lines for reading;
/// libphonenumber removes the white space before compiling them.
fn pattern(source: &str) -> String {
    source.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Java's `$1` group references as the regex crate spells them (`${1}`), so
/// that a digit after the reference is not read as part of the group number.
fn replacement(rule: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern(rule)
        .chars()
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn the_committed_phone_tables_match_the_phonenumber_crate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/import/phone_tables.rs");
    let fresh = generate();
    if std::env::var_os("FLAGSYNC_WRITE_PHONE_TABLES").is_some() {
        std::fs::write(path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == fresh,
        "{path} is out of date with the phonenumber crate; write it again with \
         FLAGSYNC_WRITE_PHONE_TABLES=1 cargo test --lib phone_tables"
    );
}
