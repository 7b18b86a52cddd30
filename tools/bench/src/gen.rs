//! The row generator. Every row is generated from its own PRNG, seeded by the
//! file seed and the row's employee number, so a row can be regenerated on
//! its own (the next-day file adds rows with the same function) and the
//! output for a seed is byte-identical on every run.

use crate::csvio::push_field;
use crate::data::*;
use crate::rng::Rng;

/// PRNG streams: one per purpose, so changing one never shifts another.
pub const STREAM_ROW: u64 = 1;
pub const STREAM_NEXT_DAY: u64 = 2;
pub const STREAM_CHANGE: u64 = 3;

/// Company email domain.
pub const COMPANY_DOMAIN: &str = "northwind-traders.com";

/// Width of the digits in employee IDs for a file of `rows` rows: 7 (as in
/// `E0000001`), more only when the IDs (with head-room for additions) would
/// not fit, so that IDs stay in ascending byte order.
pub fn id_width(rows: u64) -> usize {
    let mut width = 7;
    let mut limit = 10_000_000u64;
    while rows.saturating_mul(2) >= limit {
        width += 1;
        limit = limit.saturating_mul(10);
    }
    width
}

/// Append `n` in decimal, zero-padded to `width`.
#[inline]
pub fn push_num(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = tmp.len() - i;
    for _ in digits..width {
        out.push(b'0');
    }
    out.extend_from_slice(&tmp[i..]);
}

#[inline]
fn push_rand_digits(out: &mut Vec<u8>, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        out.push(b'0' + rng.below(10) as u8);
    }
}

#[inline]
fn push_digit_in(out: &mut Vec<u8>, rng: &mut Rng, lo: u8, hi: u8) {
    out.push(b'0' + lo + rng.below((hi - lo + 1) as u64) as u8);
}

pub fn format_id(out: &mut Vec<u8>, n: u64, width: usize) {
    out.push(b'E');
    push_num(out, n, width);
}

/// Parse `E0001234` → (1234, width 7).
pub fn parse_id(id: &[u8]) -> Option<(u64, usize)> {
    if id.len() < 2 || id[0] != b'E' {
        return None;
    }
    let mut n = 0u64;
    for &b in &id[1..] {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some((n, id.len() - 1))
}

/// Kind of phone line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Mobile,
    Landline,
}

fn nanp_area_codes(country: Country) -> impl Iterator<Item = &'static str> {
    LOCATIONS
        .iter()
        .filter(move |l| l.country == country)
        .flat_map(|l| l.area.iter().copied())
}

/// Append a valid, possible phone number of `country` to `out`. `area` is the
/// landline area code to use (taken from the location) when it belongs to
/// `country`. US numbers come in E.164 or national `(415) 555-0123` format
/// (the benchmark feed's default country is US); all others in E.164.
pub fn push_phone(
    out: &mut Vec<u8>,
    rng: &mut Rng,
    country: Country,
    line: Line,
    area: Option<&str>,
) {
    match country {
        Country::Us | Country::Ca => {
            let area = match area {
                Some(a) => a,
                None => {
                    let n = nanp_area_codes(country).count() as u64;
                    nanp_area_codes(country)
                        .nth(rng.below(n) as usize)
                        .unwrap_or("415")
                }
            };
            // Exchange 2xx-9xx, never an N11 service code.
            let mut exch = rng.range(200, 999);
            if exch % 100 == 11 {
                exch += 1;
            }
            let national = country == Country::Us && rng.chance(500);
            if national {
                out.push(b'(');
                out.extend_from_slice(area.as_bytes());
                out.extend_from_slice(b") ");
                push_num(out, exch, 3);
                out.push(b'-');
                push_rand_digits(out, rng, 4);
            } else {
                out.extend_from_slice(b"+1");
                out.extend_from_slice(area.as_bytes());
                push_num(out, exch, 3);
                push_rand_digits(out, rng, 4);
            }
        }
        // Ranges below avoid numbers the phonenumber crate (0.3.10) rejects
        // although they are valid: with default country US it strips a
        // leading "1" from `+44 1…`, `+33 1…`, `+49 1x0 1…` (US national
        // prefix applied to a foreign number), so no such numbers here.
        // Ofcom's drama range +44 7700 900xxx is not valid either.
        Country::Gb => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+447");
                out.push(*rng.pick(b"579"));
                push_digit_in(out, rng, 2, 7);
                push_rand_digits(out, rng, 7);
            }
            Line::Landline => {
                out.extend_from_slice(b"+4420");
                out.push(*rng.pick(b"378"));
                push_rand_digits(out, rng, 7);
            }
        },
        Country::Fr => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+336");
                out.push(*rng.pick(b"01245678"));
                push_rand_digits(out, rng, 7);
            }
            Line::Landline => {
                out.extend_from_slice(b"+33");
                if area == Some("4") {
                    out.extend_from_slice(b"4");
                    out.push(*rng.pick(b"2379"));
                } else {
                    out.extend_from_slice(b"97");
                }
                push_rand_digits(out, rng, 7);
            }
        },
        Country::De => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+49");
                let prefix = *rng.pick(&["151", "152", "160", "162", "171"]);
                out.extend_from_slice(prefix.as_bytes());
                push_digit_in(out, rng, 2, 9);
                push_rand_digits(out, rng, 7);
            }
            Line::Landline => {
                out.extend_from_slice(b"+49");
                out.extend_from_slice(area.unwrap_or("30").as_bytes());
                push_digit_in(out, rng, 2, 9);
                push_rand_digits(out, rng, 7);
            }
        },
        Country::Es => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+346");
                push_rand_digits(out, rng, 8);
            }
            Line::Landline => {
                out.extend_from_slice(b"+34");
                out.extend_from_slice(area.unwrap_or("91").as_bytes());
                push_digit_in(out, rng, 2, 8);
                push_rand_digits(out, rng, 6);
            }
        },
        Country::Au => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+614");
                push_digit_in(out, rng, 0, 3);
                push_rand_digits(out, rng, 7);
            }
            Line::Landline => {
                out.extend_from_slice(b"+61");
                // 9 national digits: area and first digits, then the rest.
                let (prefix, rest): (&[u8], usize) = match area.unwrap_or("2") {
                    "3" => (b"39", 7),
                    "7" => (b"73", 7),
                    "8" => (b"892", 6),
                    _ => (b"29", 7),
                };
                out.extend_from_slice(prefix);
                push_rand_digits(out, rng, rest);
            }
        },
        Country::Jp => match line {
            Line::Mobile => {
                out.extend_from_slice(b"+81");
                let prefix = *rng.pick(&["90", "80", "70"]);
                out.extend_from_slice(prefix.as_bytes());
                push_digit_in(out, rng, 1, 9);
                push_rand_digits(out, rng, 7);
            }
            Line::Landline => {
                out.extend_from_slice(b"+81");
                match area.unwrap_or("3") {
                    "6" => out.extend_from_slice(b"66"),
                    "45" => out.extend_from_slice(b"452"),
                    _ => out.extend_from_slice(b"35"),
                }
                if out.ends_with(b"452") {
                    push_rand_digits(out, rng, 6);
                } else {
                    push_rand_digits(out, rng, 7);
                }
            }
        },
    }
}

/// A phone of the location's country most of the time, another country's
/// otherwise (people keep their home-country mobile).
pub fn push_person_phone(out: &mut Vec<u8>, rng: &mut Rng, loc: &Location, line: Line) {
    if line == Line::Landline || rng.chance(880) {
        let area = if loc.area.is_empty() {
            None
        } else {
            Some(*rng.pick(loc.area))
        };
        push_phone(out, rng, loc.country, line, area);
    } else {
        let c = *rng.pick(&Country::ALL);
        push_phone(out, rng, c, line, None);
    }
}

fn push_postal(out: &mut Vec<u8>, rng: &mut Rng, pattern: &str) {
    for &b in pattern.as_bytes() {
        match b {
            b'#' => out.push(b'0' + rng.below(10) as u8),
            b'@' => out.push(b'A' + rng.below(26) as u8),
            other => out.push(other),
        }
    }
}

fn push_address(out: &mut Vec<u8>, rng: &mut Rng, loc: &Location) {
    match loc.country {
        Country::Us | Country::Ca => {
            push_num(out, rng.range(1, 9999), 1);
            out.push(b' ');
            out.extend_from_slice(rng.pick(US_STREETS).as_bytes());
            out.push(b' ');
            out.extend_from_slice(rng.pick(US_STREET_TYPES).as_bytes());
        }
        Country::Gb => {
            push_num(out, rng.range(1, 250), 1);
            out.push(b' ');
            out.extend_from_slice(rng.pick(GB_STREETS).as_bytes());
        }
        Country::Fr => {
            push_num(out, rng.range(1, 120), 1);
            if rng.chance(80) {
                out.extend_from_slice(b" bis");
            }
            out.push(b' ');
            out.extend_from_slice(rng.pick(FR_STREETS).as_bytes());
        }
        Country::De => {
            out.extend_from_slice(rng.pick(DE_STREETS).as_bytes());
            out.push(b' ');
            push_num(out, rng.range(1, 180), 1);
        }
        Country::Es => {
            out.extend_from_slice(rng.pick(ES_STREETS).as_bytes());
            out.extend_from_slice(b", ");
            push_num(out, rng.range(1, 150), 1);
        }
        Country::Au => {
            push_num(out, rng.range(1, 400), 1);
            out.push(b' ');
            out.extend_from_slice(rng.pick(AU_STREETS).as_bytes());
        }
        Country::Jp => {
            push_num(out, rng.range(1, 9), 1);
            out.push(b'-');
            push_num(out, rng.range(1, 30), 1);
            out.push(b'-');
            push_num(out, rng.range(1, 20), 1);
            out.push(b' ');
            out.extend_from_slice(rng.pick(JP_DISTRICTS).as_bytes());
        }
    }
}

/// Generates rows of one file.
pub struct RowGen {
    seed: u64,
    width: usize,
    /// One field being built, reused for every field of every row.
    field: Vec<u8>,
}

/// What the generator decided for a row that callers need to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowInfo {
    /// The Status is one the benchmark feed keeps (`Active` or `Leave`).
    pub kept_by_filter: bool,
}

impl RowGen {
    pub fn new(seed: u64, width: usize) -> Self {
        RowGen {
            seed,
            width,
            field: Vec::with_capacity(256),
        }
    }

    /// The header row.
    pub fn push_header(out: &mut Vec<u8>) {
        crate::csvio::push_record(out, &HEADER);
    }

    #[inline]
    fn emit(&mut self, out: &mut Vec<u8>, last: bool) {
        push_field(out, &self.field);
        out.push(if last { b'\n' } else { b',' });
        self.field.clear();
    }

    #[inline]
    fn emit_str(&mut self, out: &mut Vec<u8>, s: &str) {
        self.field.extend_from_slice(s.as_bytes());
        self.emit(out, false);
    }

    /// Append the row for employee number `n` to `out`.
    pub fn push_row(&mut self, out: &mut Vec<u8>, n: u64) -> RowInfo {
        let mut rng = Rng::for_item(self.seed, STREAM_ROW, n);
        let rng = &mut rng;
        let width = self.width;
        self.field.clear();

        // Employee ID
        format_id(&mut self.field, n, width);
        self.emit(out, false);

        // First Name, Last Name, Preferred Name
        let first = *rng.pick(FIRST_NAMES);
        let last = *rng.pick(LAST_NAMES);
        self.emit_str(out, first.0);
        self.field.extend_from_slice(last.0.as_bytes());
        let r = rng.below(1000);
        if r < 4 {
            self.field.extend_from_slice(b", \"");
            self.field.extend_from_slice(rng.pick(SUFFIXES).as_bytes());
            self.field.push(b'"');
        } else if r < 30 {
            self.field.extend_from_slice(b", ");
            self.field.extend_from_slice(rng.pick(SUFFIXES).as_bytes());
        }
        self.emit(out, false);
        if rng.chance(250) {
            let nick = *rng.pick(NICKNAMES);
            self.emit_str(out, nick);
        } else {
            self.emit(out, false);
        }

        // Email, Personal Email
        self.field.extend_from_slice(first.1.as_bytes());
        self.field.push(b'.');
        self.field.extend_from_slice(last.1.as_bytes());
        if rng.chance(400) {
            push_num(&mut self.field, rng.range(1, 999), 1);
        }
        self.field.push(b'@');
        self.field.extend_from_slice(COMPANY_DOMAIN.as_bytes());
        self.emit(out, false);

        let loc = rng.pick(LOCATIONS);
        if rng.chance(700) {
            self.field.extend_from_slice(first.1.as_bytes());
            self.field.push(*rng.pick(b"._-x"));
            self.field.extend_from_slice(last.1.as_bytes());
            push_num(&mut self.field, rng.range(0, 99), 2);
            self.field.push(b'@');
            self.field
                .extend_from_slice(rng.pick(loc.country.personal_domains()).as_bytes());
        }
        self.emit(out, false);

        // Mobile, Office, Home phones
        if rng.chance(950) {
            push_person_phone(&mut self.field, rng, loc, Line::Mobile);
        }
        self.emit(out, false);
        if rng.chance(850) {
            push_person_phone(&mut self.field, rng, loc, Line::Landline);
        }
        self.emit(out, false);
        if rng.chance(400) {
            push_person_phone(&mut self.field, rng, loc, Line::Landline);
        }
        self.emit(out, false);

        // Department, Location, Region, Job Title
        let dept = rng.below(DEPARTMENTS.len() as u64) as usize;
        self.emit_str(out, DEPARTMENTS[dept]);
        self.emit_str(out, loc.name);
        self.emit_str(out, REGIONS[loc.region]);
        let title = *rng.pick(TITLES);
        self.emit_str(out, title);

        // Manager ID
        if n > 1 && rng.chance(970) {
            let back = rng.range(1, (n - 1).min(5000));
            format_id(&mut self.field, n - back, width);
        }
        self.emit(out, false);

        // Cost Center, Employment Type, Status, Hire Date
        self.field.extend_from_slice(b"CC-");
        push_num(
            &mut self.field,
            1000 + dept as u64 * 100 + loc.region as u64 * 10,
            4,
        );
        self.emit(out, false);
        let et = *rng.weighted(EMPLOYMENT_TYPES);
        self.emit_str(out, et);
        let status = *rng.weighted(STATUSES);
        self.emit_str(out, status);
        push_num(&mut self.field, rng.range(1985, 2024), 4);
        self.field.push(b'-');
        push_num(&mut self.field, rng.range(1, 12), 2);
        self.field.push(b'-');
        push_num(&mut self.field, rng.range(1, 28), 2);
        self.emit(out, false);

        // Building, Floor, Desk
        self.field.push(b'B');
        push_num(&mut self.field, rng.range(1, 12), 1);
        self.emit(out, false);
        let floor = rng.range(1, 30);
        push_num(&mut self.field, floor, 1);
        self.emit(out, false);
        push_num(&mut self.field, floor, 1);
        self.field.push(b'-');
        push_num(&mut self.field, rng.range(100, 399), 3);
        self.emit(out, false);

        // Address Line 1, Address Line 2, City, State, Postal Code, Country
        push_address(&mut self.field, rng, loc);
        self.emit(out, false);
        if rng.chance(300) {
            let l2 = *rng.pick(ADDRESS_LINE2);
            self.emit_str(out, l2);
        } else {
            self.emit(out, false);
        }
        self.emit_str(out, loc.city);
        self.emit_str(out, loc.state);
        push_postal(&mut self.field, rng, loc.postal);
        self.emit(out, false);
        self.emit_str(out, loc.country.iso());

        // Emergency Contact, Emergency Phone
        if rng.chance(800) {
            let ef = rng.pick(FIRST_NAMES).0;
            let el = if rng.chance(600) {
                last.0
            } else {
                rng.pick(LAST_NAMES).0
            };
            if rng.chance(150) {
                self.field.extend_from_slice(el.as_bytes());
                self.field.extend_from_slice(b", ");
                self.field.extend_from_slice(ef.as_bytes());
            } else {
                self.field.extend_from_slice(ef.as_bytes());
                self.field.push(b' ');
                self.field.extend_from_slice(el.as_bytes());
            }
            self.field.extend_from_slice(b" (");
            self.field.extend_from_slice(rng.pick(RELATIONS).as_bytes());
            self.field.push(b')');
            self.emit(out, false);
            push_person_phone(&mut self.field, rng, loc, Line::Mobile);
            self.emit(out, false);
        } else {
            self.emit(out, false);
            self.emit(out, false);
        }

        // Language, Shift, Union, Notes
        let lang = *rng.pick(loc.country.languages());
        self.emit_str(out, lang);
        let shift = *rng.weighted(SHIFTS);
        self.emit_str(out, shift);
        if rng.chance(250) {
            let u = *rng.pick(UNIONS);
            self.emit_str(out, u);
        } else {
            self.emit(out, false);
        }
        if rng.chance(NOTES_PER_MILLE) {
            self.field.extend_from_slice(rng.pick(NOTES).as_bytes());
            if rng.chance(400) {
                self.field.extend_from_slice(b". Reviewed ");
                push_num(&mut self.field, rng.range(2019, 2025), 4);
                self.field.push(b'-');
                push_num(&mut self.field, rng.range(1, 12), 2);
                self.field.extend_from_slice(b" by HR");
            }
        }
        self.emit(out, true);

        RowInfo {
            kept_by_filter: status == "Active" || status == "Leave",
        }
    }
}

/// Share of rows with a note, tuned so rows average ~320 bytes.
pub const NOTES_PER_MILLE: u64 = 350;

/// Is this Status value kept by the benchmark feed's filter?
pub fn status_kept(status: &[u8]) -> bool {
    let s = trim_ascii(status);
    s.eq_ignore_ascii_case(b"Active") || s.eq_ignore_ascii_case(b"Leave")
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The location with this Location column value.
pub fn location_by_name(name: &[u8]) -> Option<&'static Location> {
    LOCATIONS.iter().find(|l| l.name.as_bytes() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let mut v = Vec::new();
        format_id(&mut v, 1, 7);
        assert_eq!(v, b"E0000001");
        assert_eq!(parse_id(b"E0000001"), Some((1, 7)));
        assert_eq!(parse_id(b"X1"), None);
        assert_eq!(id_width(100_000), 7);
        assert_eq!(id_width(1_000_000), 7);
        assert_eq!(id_width(4_999_999), 7);
        assert_eq!(id_width(10_000_000), 8);
    }

    #[test]
    fn rows_are_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut g1 = RowGen::new(9, 7);
        let mut g2 = RowGen::new(9, 7);
        for n in 1..500 {
            g1.push_row(&mut a, n);
        }
        for n in 1..500 {
            g2.push_row(&mut b, n);
        }
        assert_eq!(a, b);
        let mut c = Vec::new();
        RowGen::new(10, 7).push_row(&mut c, 1);
        assert_ne!(&a[..c.len().min(a.len())], &c[..]);
    }
}
