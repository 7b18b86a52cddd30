//! Generates the phone fast path's tables from the phonenumber crate's own
//! metadata at build time: loading that metadata at run time costs tens of
//! milliseconds per import (it compiles regular expressions), and the fast
//! path needs only each country code's possible number lengths.

use std::collections::BTreeMap;
use std::fmt::Write as _;

fn main() {
    git_revision();
    let mut lengths: BTreeMap<u16, u32> = BTreeMap::new();
    let mut regions: BTreeMap<String, u16> = BTreeMap::new();
    for meta in phonenumber::metadata::DATABASE.iter() {
        let d = meta.descriptors();
        let descriptors = [
            Some(d.general()),
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
        let mask = lengths.entry(meta.country_code()).or_insert(0);
        for desc in descriptors.into_iter().flatten() {
            for &len in desc.possible_length() {
                if len < 32 {
                    *mask |= 1 << len;
                }
            }
        }
        regions.insert(meta.id().to_string(), meta.country_code());
    }
    let mut out =
        String::from("/// (country calling code, bit set of possible national lengths), sorted.\n");
    out.push_str("pub static POSSIBLE_LENGTHS: &[(u16, u32)] = &[\n");
    for (code, mask) in &lengths {
        let _ = writeln!(out, "    ({code}, {mask:#x}),");
    }
    out.push_str("];\n/// (region, country calling code), sorted.\n");
    out.push_str("pub static REGION_CODES: &[(&str, u16)] = &[\n");
    for (region, code) in &regions {
        let _ = writeln!(out, "    ({region:?}, {code}),");
    }
    out.push_str("];\n");
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("phone_tables.rs");
    std::fs::write(path, out).unwrap_or_else(|e| panic!("cannot write phone tables: {e}"));
    println!("cargo::rerun-if-changed=build.rs");
}

/// The git revision for `flagsync --version`.
fn git_revision() {
    println!("cargo:rerun-if-env-changed=FLAGSYNC_GIT_REV");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let rev = std::env::var("FLAGSYNC_GIT_REV").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !rev.is_empty()).then_some(rev)
    });
    println!(
        "cargo:rustc-env=FLAGSYNC_GIT_REV={}",
        rev.as_deref().unwrap_or("unknown")
    );
}
