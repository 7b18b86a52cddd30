//! Phone numbers to E.164, valid as libphonenumber means it.
//!
//! A number is stored only when it is *valid* for its region's numbering
//! plan: its national significant number matches the region's general
//! pattern and one of its number-type patterns (fixed line, mobile, toll
//! free, ...), as libphonenumber's `isValidNumber` decides. A possible
//! length is not enough: `(555) 555-5555` has one, but 555 is no US area
//! code.
//!
//! Why not simply call the phonenumber crate (0.3.10): its `is_valid` costs
//! ~265 µs a number behind a global Mutex'd cache of 100 regexes, so rayon's
//! threads queue on it, and `parse` + `format` add ~46 µs; a 1M-row load
//! checks ~2.2M numbers. The crate also reads the national prefix of the
//! *default* country off international numbers (`+44 1…` under US loses its
//! `1`) and matches patterns as prefixes rather than whole numbers.
//!
//! So `phone_tables.rs` (written by `phone_tables_gen`) holds the crate's
//! metadata (patterns, prefixes, lengths) as static tables, and this module parses as libphonenumber's
//! `parseHelper` does and validates as its `isValidNumber` does, compiling a
//! region's patterns once, on the first number of that region (a `OnceLock`
//! per region), and giving each thread its own copy of them (see
//! `THREAD_PLANS`). Numbers written
//! with letters, non-ASCII digits or `tel:` URIs still go through the crate's
//! parser, but their validity is decided here too.
//!
//! Measured with `tools/bench`'s `phonebench` (release, 1M numbers of the
//! generator's mix: E.164 of eight countries, 0.2% US national forms; a
//! shared 2-core machine, so ±15%): the possible-length check this replaces
//! took ~85 ns a number, this module takes ~230-250 ns (2.2M numbers: about
//! half a second on one core); the crate's parse + is_valid + format
//! ~300 µs.
//! `rlibphonenumber` 2.2.15 (a libphonenumber port) was measured too: ~1.0
//! µs a number for parse + is_valid + E.164 on a similar mix, 2.5x slower;
//! it also ships newer metadata (9.0.42) than the crate we are checked
//! against (9.0.33) and builds a protobuf tool chain (prost-build, protox),
//! so these tables were kept.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::rc::Rc;
use std::sync::OnceLock;

use phonenumber::country::Id;
use regex::{Regex, RegexBuilder};

/// One region's numbering plan, as the metadata writes it (`phone_tables.rs`).
struct RegionTable {
    /// The region's name (`GB`, `001` for non-geographic codes): the tests
    /// look regions up by it.
    #[cfg_attr(not(test), allow(dead_code))]
    id: &'static str,
    code: u16,
    /// What is dialled before a country code from this region (`011`, `00`).
    international_prefix: Option<&'static str>,
    /// What may precede a national number (a trunk `0` or `1`, carrier codes).
    prefix_for_parsing: Option<&'static str>,
    /// How to rewrite a number whose prefix matched (Argentina, Brazil, ...).
    transform_rule: Option<&'static str>,
    /// Which numbers of a shared country code belong to this region.
    leading_digits: Option<&'static str>,
    general: &'static str,
    /// Bit sets of national number lengths.
    lengths: u32,
    local_lengths: u32,
    /// Each number type's pattern and possible lengths (0: any of `lengths`).
    types: &'static [(&'static str, u32)],
}

mod tables {
    use super::RegionTable;
    include!("phone_tables.rs");
}

/// A stored phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    pub e164: String,
    /// The extension that was dropped, digits only.
    pub extension: Option<String>,
}

/// Why a phone number is refused; reads after "invalid phone in 'Mobile': ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("'{0}' is not a phone number")]
    NotANumber(String),
    #[error("'{0}' is not a possible phone number")]
    Impossible(String),
    #[error("'{0}' is not a valid number in its numbering plan")]
    Invalid(String),
    #[error(
        "'{raw}' is not a valid {country} number; if it is a foreign number, \
         write it in international form such as +33 6 12 34 56 78"
    )]
    NotNational { raw: String, country: String },
    /// `4.91512E+12`: a number column saved as text by Excel.
    #[error(
        "'{0}': Excel turned this phone number into scientific notation and lost digits; \
         format the column as Text and type the numbers again"
    )]
    ExcelScientific(String),
    /// More than 15 digits ending in zeros: Excel kept 15 of them.
    #[error(
        "'{0}': Excel keeps only 15 digits of a number and lost the rest of this phone number; \
         format the column as Text and type the numbers again"
    )]
    ExcelDigitsLost(String),
}

/// The calling code of a country (44 for GB), from the crate's metadata.
pub fn country_code_of(id: Id) -> Option<u16> {
    region_index(id).map(|i| tables::REGIONS[i].code)
}

/// A valid number of `country` in E.164, from libphonenumber's own example
/// numbers: a mobile one when `mobile`, a fixed line otherwise (either,
/// where the country has only one). For sample files.
pub fn example_number(country: Id, mobile: bool) -> Option<String> {
    let index = region_index(country)?;
    let table = &tables::REGIONS[index];
    let meta = phonenumber::metadata::DATABASE
        .by_code(&table.code)?
        .into_iter()
        .find(|m| m.id() == table.id)?;
    let d = meta.descriptors();
    let (first, second) = if mobile {
        (d.mobile(), d.fixed_line())
    } else {
        (d.fixed_line(), d.mobile())
    };
    let example = first
        .and_then(|t| t.example())
        .or_else(|| second.and_then(|t| t.example()))?;
    Some(format!("+{}{example}", table.code))
}

/// Normalises `raw` (already trimmed, not empty) to E.164 such as
/// `+12125550198`, reading national numbers against `country`. An extension
/// is not part of the stored number: it is returned for the caller to warn
/// about.
pub fn normalize_phone(raw: &str, country: Id) -> Result<Phone, PhoneError> {
    if is_scientific_notation(raw) {
        return Err(PhoneError::ExcelScientific(raw.to_string()));
    }
    normalize_plain(raw, country).map_err(|e| {
        if lost_digits_in_excel(raw) {
            PhoneError::ExcelDigitsLost(raw.to_string())
        } else {
            e
        }
    })
}

/// `4.91512E+12`, `4,9E12`: how Excel shows a long number in a narrow
/// column, and saves it in a CSV file; the digits past the first few are
/// gone.
fn is_scientific_notation(raw: &str) -> bool {
    let Some((mantissa, exponent)) = raw.trim().split_once(['e', 'E']) else {
        return false;
    };
    let mantissa = mantissa.strip_prefix(['+', '-']).unwrap_or(mantissa);
    let (whole, fraction) = mantissa.split_once(['.', ',']).unwrap_or((mantissa, "0"));
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction) && digits(exponent)
}

/// More than 15 digits, all zeros past the 15th: a number
/// typed into a number cell, of which Excel kept 15 digits. (No phone
/// number has more than 15 digits, so this never hides a valid one.)
fn lost_digits_in_excel(raw: &str) -> bool {
    const EXCEL_DIGITS: usize = 15;
    let digits: Vec<u8> = raw.bytes().filter(u8::is_ascii_digit).collect();
    digits.len() > EXCEL_DIGITS && digits[EXCEL_DIGITS..].iter().all(|&d| d == b'0')
}

fn normalize_plain(raw: &str, country: Id) -> Result<Phone, PhoneError> {
    let (number, extension) = split_extension(raw);
    let digits = plain_digits(number);
    let (parsed, crate_extension) = match &digits {
        Some(digits) => (parse_digits(digits, country), None),
        None => parse_with_crate(number, country),
    };
    let parsed = parsed.map_err(|failure| failure.error(raw))?;
    if is_valid(parsed.code, &parsed.nsn) {
        let mut e164 = String::with_capacity(parsed.nsn.len() + 4);
        e164.push('+');
        e164.push_str(itoa_u16(parsed.code).as_str());
        e164.push_str(&parsed.nsn);
        Ok(Phone {
            e164,
            extension: extension.or(crate_extension),
        })
    } else if parsed.national {
        Err(PhoneError::NotNational {
            raw: raw.to_string(),
            country: country.as_ref().to_string(),
        })
    } else if is_possible(parsed.code, parsed.nsn.len()) {
        Err(PhoneError::Invalid(raw.to_string()))
    } else {
        Err(PhoneError::Impossible(raw.to_string()))
    }
}

/// A parsed number, not yet validated.
struct Parsed<'a> {
    code: u16,
    /// The national significant number.
    nsn: Cow<'a, str>,
    /// Read against the default country (no `+`, no international prefix).
    national: bool,
}

/// Why a number could not be parsed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NotANumber,
    TooLong,
}

impl Failure {
    fn error(self, raw: &str) -> PhoneError {
        match self {
            Failure::NotANumber => PhoneError::NotANumber(raw.to_string()),
            Failure::TooLong => PhoneError::Impossible(raw.to_string()),
        }
    }
}

/// libphonenumber's bounds on a national significant number.
const MIN_NSN: usize = 2;
const MAX_NSN: usize = 17;

/// Fewer digits than this are not a phone number in any form.
const MIN_DIGITS: usize = 3;

// ------------------------------------------------------------------------
// Extensions
// ------------------------------------------------------------------------

/// Extension labels, lower case, with the most digits libphonenumber reads
/// after each (an explicit label allows more than a lone `x` or `#`).
const EXTENSION_LABELS: &[(&str, usize)] = &[
    (";ext", 20),
    ("extension", 20),
    ("extn", 20),
    ("ext", 20),
    ("x", 9),
    ("#", 9),
];

/// Splits `x123`, `ext. 5`, `;ext=5`, `#5`, `extension 12` off the end of a
/// number: (the number, the extension's digits).
fn split_extension(raw: &str) -> (&str, Option<String>) {
    let text = raw.trim_end();
    let digits_start = text.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let digits = &text[digits_start..];
    if digits.is_empty() {
        return (raw, None);
    }
    // Between label and digits: `ext. 5`, `ext: 5`, `;ext=5`, `x-5`.
    let before = text[..digits_start].trim_end_matches([' ', '\t', '.', ':', '=', '-']);
    for &(label, max_digits) in EXTENSION_LABELS {
        let Some(label_start) = before.len().checked_sub(label.len()) else {
            continue;
        };
        if digits.len() > max_digits
            || !before.is_char_boundary(label_start)
            || !before[label_start..].eq_ignore_ascii_case(label)
        {
            continue;
        }
        let number = before[..label_start].trim_end_matches([' ', '\t', ',']);
        // `ext` must not be the tail of a longer word, and a number must be
        // left in front of the label.
        let word_before = number.len() == label_start
            && label.starts_with(|c: char| c.is_ascii_alphabetic())
            && number.ends_with(|c: char| c.is_ascii_alphabetic());
        if !word_before && number.contains(|c: char| c.is_ascii_digit()) {
            return (number, Some(digits.to_string()));
        }
    }
    (raw, None)
}

// ------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------

/// The digits of a number written only with ASCII digits, a leading `+` and
/// the usual separators.
struct Digits {
    plus: bool,
    buf: [u8; Digits::CAPACITY],
    len: usize,
}

impl Digits {
    /// More digits than this are too long for any number and are cut off.
    const CAPACITY: usize = 32;

    fn as_str(&self) -> &str {
        // Only ASCII digits are ever pushed.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, digit: u8) {
        if self.len < Self::CAPACITY {
            self.buf[self.len] = digit;
        }
        self.len = (self.len + 1).min(Self::CAPACITY);
    }
}

/// `None` when `raw` holds anything but digits, a leading `+` and the usual
/// separators (letters, non-ASCII digits): the crate's parser reads those.
/// A `(0)` after a country code (`+49 (0)151 …`) is the trunk prefix that
/// is not dialled from abroad, and is dropped.
fn plain_digits(raw: &str) -> Option<Digits> {
    let mut digits = Digits {
        plus: false,
        buf: [0; Digits::CAPACITY],
        len: 0,
    };
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b @ b'0'..=b'9' => digits.push(b),
            b'+' if i == 0 => digits.plus = true,
            b'(' if digits.plus && digits.len > 0 && bytes[i..].starts_with(b"(0)") => i += 2,
            b' ' | b'-' | b'.' | b'(' | b')' | b'/' => {}
            _ => return None,
        }
        i += 1;
    }
    Some(digits)
}

/// Parses the digits as libphonenumber's `parseHelper` does.
fn parse_digits(digits: &Digits, country: Id) -> Result<Parsed<'_>, Failure> {
    let all = digits.as_str();
    if digits.len < MIN_DIGITS {
        return Err(Failure::NotANumber);
    }
    if digits.len > Digits::CAPACITY - 1 {
        return Err(Failure::TooLong);
    }
    let default = region_index(country).map(plan);
    let parsed = if digits.plus {
        match split_country_code(all) {
            Some((code, rest)) => international(code, rest),
            // libphonenumber tries again as if the `+` were not there.
            None => default
                .and_then(|d| without_plus(&d, all))
                .ok_or(Failure::NotANumber)?,
        }
    } else {
        match default {
            Some(d) => from_default(&d, all)?,
            None => return Err(Failure::NotANumber),
        }
    };
    checked_nsn(parsed.code, parsed.nsn, parsed.national)
}

/// `+` was followed by no known country code: the digits may still start
/// with the default country's international prefix or its country code.
fn without_plus<'a>(default: &Plan, all: &'a str) -> Option<Parsed<'a>> {
    let parsed = from_default(default, all).ok()?;
    (!parsed.national).then_some(parsed)
}

/// A number written without `+`: after an international prefix, with the
/// default country's code in front, or national.
fn from_default<'a>(default: &Plan, all: &'a str) -> Result<Parsed<'a>, Failure> {
    if let Some(rest) = default.strip_international_prefix(all) {
        let (code, rest) = split_country_code(rest).ok_or(Failure::NotANumber)?;
        return Ok(international(code, rest));
    }
    let code = default.table.code;
    let mut national = Cow::Borrowed(all);
    let main_region;
    let mut region = default;
    // `1 212 555 0198` in the US, `44 20 7946 0958` in GB: the country code
    // is there, without a `+`, when reading it so gives a better number.
    let code_digits = itoa_u16(code);
    if let Some(rest) = all.strip_prefix(code_digits.as_str()) {
        let potential = default
            .strip_national_prefix(rest)
            .unwrap_or(Cow::Borrowed(rest));
        if (!default.general_pattern_matches(all) && default.general_pattern_matches(&potential))
            || default.test_length(all.len()) == Length::TooLong
        {
            national = potential;
            main_region = main_plan(code);
            region = main_region.as_deref().unwrap_or(default);
        }
    }
    Ok(Parsed {
        code,
        nsn: region.strip_national_prefix_if_possible(national),
        national: true,
    })
}

/// `+<code><rest>`: the rest is national, perhaps with a trunk prefix that
/// the number's own region (not the default country) defines.
fn international(code: u16, rest: &str) -> Parsed<'_> {
    let nsn = match main_plan(code) {
        Some(region) => region.strip_national_prefix_if_possible(Cow::Borrowed(rest)),
        None => Cow::Borrowed(rest),
    };
    Parsed {
        code,
        nsn,
        national: false,
    }
}

/// The national significant number's length bounds (as parse errors: too
/// short is no number, too long is not possible).
fn checked_nsn(code: u16, nsn: Cow<'_, str>, national: bool) -> Result<Parsed<'_>, Failure> {
    if nsn.len() < MIN_NSN {
        Err(Failure::NotANumber)
    } else if nsn.len() > MAX_NSN {
        Err(Failure::TooLong)
    } else {
        Ok(Parsed {
            code,
            nsn,
            national,
        })
    }
}

/// Country codes are prefix-free: at most one of the first 1-3 digits is one.
fn split_country_code(digits: &str) -> Option<(u16, &str)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=3.min(digits.len())).find_map(|len| {
        let code = digits[..len].parse::<u16>().ok()?;
        regions_of(code).map(|_| (code, &digits[len..]))
    })
}

/// Numbers the simple reader leaves out (letters as in `1-800-FLOWERS`,
/// non-ASCII digits, `tel:` URIs) are parsed by the crate; their validity is
/// still checked here.
fn parse_with_crate(
    number: &str,
    country: Id,
) -> (Result<Parsed<'static>, Failure>, Option<String>) {
    // Without a default country the crate reads an international number's
    // trunk prefix with its own region, not with the default country's.
    let default = (!number.starts_with(['+', '\u{ff0b}'])).then_some(country);
    let Ok(number) = phonenumber::parse(default, number) else {
        return (Err(Failure::NotANumber), None);
    };
    let national = number.national();
    let mut nsn = "0".repeat(national.zeros() as usize);
    nsn.push_str(&national.value().to_string());
    let extension = number.extension().map(|e| {
        let digits: String = e.chars().filter(char::is_ascii_digit).collect();
        digits
    });
    let source = number.code().source();
    let parsed = checked_nsn(
        number.code().value(),
        Cow::Owned(nsn),
        source == phonenumber::country::Source::Default,
    );
    (parsed, extension.filter(|e| !e.is_empty()))
}

// ------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------

/// libphonenumber's `isValidNumber`: the number's region is the only region
/// of its code, or the first region of a shared code whose leading digits
/// match (or, without leading digits, whose patterns match); the number must
/// match one of that region's number types.
fn is_valid(code: u16, nsn: &str) -> bool {
    valid_region(code, nsn).is_some()
}

/// The region (index) a number is valid in, chosen as [`is_valid`] says.
fn valid_region(code: u16, nsn: &str) -> Option<usize> {
    let regions = regions_of(code)?;
    if regions.len() == 1 {
        return plan(regions.start).is_valid(nsn).then_some(regions.start);
    }
    for index in regions {
        let region = plan(index);
        match &region.leading_digits {
            Some(leading) => {
                if leading.is_match(nsn) {
                    return region.is_valid(nsn).then_some(index);
                }
            }
            None => {
                if region.is_valid(nsn) {
                    return Some(index);
                }
            }
        }
    }
    None
}

/// What kind of number a valid E.164 number is: its region and the set of
/// its region's number types it matches (mobile, fixed line, toll free…),
/// a bit each. Two numbers of the same kind give the same pair; an invalid
/// number gives `None`.
pub fn number_kind(e164: &str) -> Option<(usize, u32)> {
    let digits = e164.strip_prefix('+')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (code, nsn) = split_country_code(digits)?;
    let index = valid_region(code, nsn)?;
    let region = plan(index);
    let len = nsn.len();
    let types = region
        .types
        .iter()
        .enumerate()
        .filter(|(_, (pattern, lengths))| {
            (*lengths == 0 || lengths & (1 << len) != 0) && full_match(pattern, nsn)
        })
        .fold(0u32, |mask, (i, _)| mask | 1 << i.min(31));
    Some((index, types))
}

/// A possible length for any region of `code`.
fn is_possible(code: u16, len: usize) -> bool {
    regions_of(code).is_some_and(|regions| {
        regions
            .into_iter()
            .any(|i| len < 32 && tables::REGIONS[i].lengths & (1 << len) != 0)
    })
}

/// libphonenumber's length check against a region's possible lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Possible,
    PossibleLocalOnly,
    TooShort,
    Invalid,
    TooLong,
}

/// A region's patterns, compiled.
#[derive(Clone)]
struct Plan {
    table: &'static RegionTable,
    /// Whole-number patterns (`^(?:…)$`).
    general: Option<Regex>,
    types: Vec<(Option<Regex>, u32)>,
    /// Prefix patterns (`^(?:…)`).
    leading_digits: Option<Regex>,
    prefix_for_parsing: Option<Regex>,
    international_prefix: Option<Regex>,
}

impl Plan {
    fn compile(table: &'static RegionTable) -> Plan {
        Plan {
            table,
            general: whole(table.general),
            types: table.types.iter().map(|&(p, l)| (whole(p), l)).collect(),
            leading_digits: table.leading_digits.and_then(prefix),
            prefix_for_parsing: table.prefix_for_parsing.and_then(prefix),
            international_prefix: table.international_prefix.and_then(prefix),
        }
    }

    /// libphonenumber's `getNumberTypeHelper(..) != UNKNOWN`: the general
    /// description and one type's description match (lengths and pattern).
    fn is_valid(&self, nsn: &str) -> bool {
        let len = nsn.len();
        if len >= 32 || self.table.lengths & (1 << len) == 0 || !self.general_pattern_matches(nsn) {
            return false;
        }
        self.types.iter().any(|(pattern, lengths)| {
            (*lengths == 0 || lengths & (1 << len) != 0) && full_match(pattern, nsn)
        })
    }

    /// libphonenumber's `matchNationalNumber` against the general pattern
    /// (lengths not checked).
    fn general_pattern_matches(&self, nsn: &str) -> bool {
        full_match(&self.general, nsn)
    }

    /// libphonenumber's `testNumberLength` with the general lengths.
    fn test_length(&self, len: usize) -> Length {
        let lengths = self.table.lengths;
        if lengths == 0 {
            return Length::Invalid;
        }
        if len < 32 && self.table.local_lengths & (1 << len) != 0 {
            return Length::PossibleLocalOnly;
        }
        let min = lengths.trailing_zeros() as usize;
        let max = 31 - lengths.leading_zeros() as usize;
        if len < min {
            Length::TooShort
        } else if len > max {
            Length::TooLong
        } else if lengths & (1 << len) != 0 {
            Length::Possible
        } else {
            Length::Invalid
        }
    }

    /// The digits after this region's international prefix (`011` in the US),
    /// unless a `0` follows it (then it is no international prefix).
    fn strip_international_prefix<'a>(&self, all: &'a str) -> Option<&'a str> {
        let end = self.international_prefix.as_ref()?.find(all)?.end();
        let rest = &all[end..];
        (!rest.starts_with('0')).then_some(rest)
    }

    /// libphonenumber's `maybeStripNationalPrefixAndCarrierCode`: the number
    /// without its trunk prefix (or transformed), `None` when nothing was
    /// stripped.
    fn strip_national_prefix<'a>(&self, number: &'a str) -> Option<Cow<'a, str>> {
        let pattern = self.prefix_for_parsing.as_ref()?;
        // Most numbers have no trunk prefix: a match test (a DFA) settles
        // them without the slower search for capture groups.
        if number.is_empty() || !pattern.is_match(number) {
            return None;
        }
        let captures = pattern.captures(number)?;
        let end = captures.get(0)?.end();
        let viable = self.general_pattern_matches(number);
        // Java's `group(groupCount())`: the whole match when there are no
        // groups.
        let last_group = captures.get(captures.len() - 1);
        let stripped = match (self.table.transform_rule, last_group) {
            (Some(rule), Some(_)) if !rule.is_empty() => {
                let mut transformed = String::new();
                captures.expand(rule, &mut transformed);
                transformed.push_str(&number[end..]);
                Cow::Owned(transformed)
            }
            _ => Cow::Borrowed(&number[end..]),
        };
        if viable && !self.general_pattern_matches(&stripped) {
            return None;
        }
        Some(stripped)
    }

    /// `parseHelper`'s use of the above: the prefix is stripped only when
    /// what is left has a full length for the region.
    fn strip_national_prefix_if_possible<'a>(&self, number: Cow<'a, str>) -> Cow<'a, str> {
        let stripped = match &number {
            Cow::Borrowed(n) => self.strip_national_prefix(n),
            Cow::Owned(n) => self
                .strip_national_prefix(n)
                .map(|s| Cow::Owned(s.into_owned())),
        };
        match stripped {
            Some(s)
                if matches!(
                    self.test_length(s.len()),
                    Length::Possible | Length::TooLong
                ) =>
            {
                s
            }
            _ => number,
        }
    }
}

fn full_match(pattern: &Option<Regex>, text: &str) -> bool {
    pattern.as_ref().is_some_and(|re| re.is_match(text))
}

/// Patterns come from the metadata at build time; one that does not compile
/// (the tests check that none fails) matches nothing.
fn compile(source: &str) -> Option<Regex> {
    // ASCII classes: only ASCII digits are ever matched, and `\d` then
    // compiles to a much smaller automaton.
    RegexBuilder::new(source).unicode(false).build().ok()
}

fn whole(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})$"))
}

fn prefix(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})"))
}

/// Region plans, compiled on first use; one `OnceLock` each so that threads
/// read a compiled plan without taking a lock.
static PLANS: [OnceLock<Plan>; tables::REGION_COUNT] =
    [const { OnceLock::new() }; tables::REGION_COUNT];

thread_local! {
    /// Each thread's own copies of the plans it uses. A `Regex` shared by
    /// threads hands its search cache out of a pool, and every thread but
    /// the first took the pool's slow path: a quarter of the phone check's
    /// time on a 1M-row load. A copy shares the compiled program and has a
    /// cache of its own.
    static THREAD_PLANS: RefCell<Vec<Option<Rc<Plan>>>> = const { RefCell::new(Vec::new()) };
}

fn plan(index: usize) -> Rc<Plan> {
    THREAD_PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if plans.len() <= index {
            plans.resize(tables::REGION_COUNT.max(index + 1), None);
        }
        plans[index]
            .get_or_insert_with(|| {
                let shared = PLANS[index].get_or_init(|| Plan::compile(&tables::REGIONS[index]));
                Rc::new(shared.clone())
            })
            .clone()
    })
}

/// The plan libphonenumber reads a code's national prefix with: its main
/// region's.
fn main_plan(code: u16) -> Option<Rc<Plan>> {
    regions_of(code).map(|r| plan(r.start))
}

fn region_index(id: Id) -> Option<usize> {
    thread_local! {
        /// A feed's numbers are read against one default country: its
        /// index, found once instead of by a search per number.
        static LAST: Cell<Option<(Id, Option<usize>)>> = const { Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((seen, index)) if seen == id => index,
        _ => {
            let ids = tables::REGION_IDS;
            let index = ids
                .binary_search_by_key(&id.as_ref(), |&(r, _)| r)
                .ok()
                .map(|i| ids[i].1 as usize);
            last.set(Some((id, index)));
            index
        }
    })
}

fn regions_of(code: u16) -> Option<Range<usize>> {
    let codes = tables::CODES;
    let i = codes.binary_search_by_key(&code, |&(c, _, _)| c).ok()?;
    let (_, first, count) = codes[i];
    Some(first as usize..(first + count) as usize)
}

/// A country code in decimal, without allocating.
struct CodeDigits {
    buf: [u8; 5],
    start: usize,
}

impl CodeDigits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or_default()
    }
}

fn itoa_u16(mut n: u16) -> CodeDigits {
    let mut out = CodeDigits {
        buf: [b'0'; 5],
        start: 5,
    };
    loop {
        out.start -= 1;
        out.buf[out.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e164(raw: &str, country: Id) -> Result<String, PhoneError> {
        normalize_phone(raw, country).map(|p| p.e164)
    }

    fn ok(raw: &str, country: Id, expected: &str) {
        assert_eq!(
            e164(raw, country).as_deref(),
            Ok(expected),
            "{raw} in {country:?}"
        );
    }

    #[test]
    fn every_pattern_compiles() {
        for (i, table) in tables::REGIONS.iter().enumerate() {
            let plan = plan(i);
            let id = table.id;
            assert!(plan.general.is_some(), "{id} general");
            assert!(plan.types.iter().all(|(t, _)| t.is_some()), "{id} types");
            assert_eq!(
                plan.leading_digits.is_some(),
                table.leading_digits.is_some(),
                "{id}"
            );
            assert_eq!(
                plan.prefix_for_parsing.is_some(),
                table.prefix_for_parsing.is_some()
            );
            assert_eq!(
                plan.international_prefix.is_some(),
                table.international_prefix.is_some()
            );
            assert!(
                !table.types.is_empty() && table.lengths != 0,
                "{id} has no types"
            );
        }
        assert_eq!(country_code_of(Id::GB), Some(44));
        assert_eq!(country_code_of(Id::CA), Some(1));
    }

    #[test]
    fn us_numbers_in_many_formats() {
        for raw in [
            "(212) 555-0198",
            "212-555-0198",
            "212.555.0198",
            "212 555 0198",
            "2125550198",
            "1-212-555-0198",
            "1 (212) 555-0198",
            "+1 212 555 0198",
            "+1 (212) 555-0198",
            "+12125550198",
            "011 1 212 555 0198",
        ] {
            ok(raw, Id::US, "+12125550198");
        }
        ok("(212) 555-0123", Id::US, "+12125550123");
        // A Canadian number is valid for +1 whatever the default country.
        ok("(416) 555-0123", Id::US, "+14165550123");
        ok("+1 416 555 0123", Id::GB, "+14165550123");
        ok("212-555-0198", Id::CA, "+12125550198");
    }

    #[test]
    fn national_numbers_of_the_default_country() {
        ok("020 7946 0958", Id::GB, "+442079460958");
        ok("07912 345678", Id::GB, "+447912345678");
        ok("06 12 34 56 78", Id::FR, "+33612345678");
        ok("01 23 45 67 89", Id::FR, "+33123456789");
        ok("030 1234567", Id::DE, "+49301234567");
        ok("0151 23456789", Id::DE, "+4915123456789");
        ok("00 44 20 7946 0958", Id::GB, "+442079460958");
        ok("0033 6 12 34 56 78", Id::FR, "+33612345678");
        ok("011 44 20 7946 0958", Id::US, "+442079460958");
    }

    #[test]
    fn international_numbers() {
        ok("+44 20 7946 0958", Id::US, "+442079460958");
        ok("+33 6 12 34 56 78", Id::US, "+33612345678");
        ok("+33 1 23 45 67 89", Id::US, "+33123456789");
        ok("+49 30 1234567", Id::US, "+49301234567");
        ok("+61 2 9374 4000", Id::GB, "+61293744000");
        ok("+81 3-1234-5678", Id::US, "+81312345678");
        ok("+91 98765 43210", Id::US, "+919876543210");
        ok("+39 06 6982 1234", Id::US, "+390669821234");
        ok("+800 1234 5678", Id::US, "+80012345678");
        // The trunk prefix, written or bracketed, is not dialled from abroad.
        ok("+44 020 7946 0958", Id::US, "+442079460958");
        ok("+44 (0) 20 7946 0958", Id::US, "+442079460958");
        ok("+49 (0)151 23456789", Id::US, "+4915123456789");
        ok("+49 (0)30 1234567", Id::FR, "+49301234567");
        // The number's own trunk prefix, read once (libphonenumber's answers).
        ok("+7 8 811 000 0881", Id::GB, "+78110000881");
        ok("+1 1 250 200 0125", Id::GB, "+12502000125");
        ok("+247 040000", Id::GB, "+247040000");
        assert!(e164("+358 00 131 0000", Id::GB).is_err());
        assert!(e164("+855 00 1000 0000", Id::GB).is_err());
    }

    #[test]
    fn numbers_outside_the_numbering_plan_are_invalid() {
        // 555 is no area code: a possible length, not a valid number.
        assert_eq!(
            e164("(555) 555-5555", Id::US),
            Err(PhoneError::NotNational {
                raw: "(555) 555-5555".into(),
                country: "US".into()
            })
        );
        assert!(e164("(555) 123-4567", Id::US).is_err());
        assert_eq!(
            e164("+1 555 555 5555", Id::GB),
            Err(PhoneError::Invalid("+1 555 555 5555".into()))
        );
        // Ofcom's drama ranges are not valid numbers.
        assert!(e164("07700 900123", Id::GB).is_err());
        assert!(e164("+44 1632 960123", Id::US).is_err());
    }

    #[test]
    fn a_foreign_national_number_asks_for_the_international_form() {
        let error = e164("06 12 34 56 78", Id::US).unwrap_err();
        assert_eq!(
            error.to_string(),
            "'06 12 34 56 78' is not a valid US number; if it is a foreign number, \
             write it in international form such as +33 6 12 34 56 78"
        );
        assert_eq!(
            e164("+33 6 12 34 56 78", Id::US).as_deref(),
            Ok("+33612345678")
        );
    }

    #[test]
    fn extensions_are_returned_not_lost() {
        for (raw, extension) in [
            ("+1 212 555 0198 x123", "123"),
            ("+1 212 555 0198 X 123", "123"),
            ("(212) 555-0198 ext. 5", "5"),
            ("(212) 555-0198 ext 5", "5"),
            ("(212) 555-0198 Ext: 5", "5"),
            ("212-555-0198;ext=5", "5"),
            ("212-555-0198 #5", "5"),
            ("212-555-0198, extension 12", "12"),
            ("212-555-0198 extn 12", "12"),
        ] {
            assert_eq!(
                normalize_phone(raw, Id::US),
                Ok(Phone {
                    e164: "+12125550198".into(),
                    extension: Some(extension.into())
                }),
                "{raw}"
            );
        }
        assert_eq!(
            normalize_phone("+12125550198", Id::US).map(|p| p.extension),
            Ok(None)
        );
    }

    #[test]
    fn letters_go_through_the_crates_parser() {
        ok("1-800-FLOWERS", Id::US, "+18003569377");
        ok("tel:+1-212-555-0198", Id::GB, "+12125550198");
    }

    #[test]
    fn numbers_excel_mangled_say_so() {
        for raw in ["4.91512E+12", "4,91512E+12", "4.9E12", "+4.91512e+12"] {
            assert_eq!(
                normalize_phone(raw, Id::DE),
                Err(PhoneError::ExcelScientific(raw.into())),
                "{raw}"
            );
        }
        assert!(matches!(
            normalize_phone("4915112345678900", Id::DE),
            Err(PhoneError::ExcelDigitsLost(_))
        ));
        // Not Excel's doing: the usual reasons.
        let other = normalize_phone("4915112345678901", Id::DE).unwrap_err();
        assert!(
            !matches!(
                other,
                PhoneError::ExcelDigitsLost(_) | PhoneError::ExcelScientific(_)
            ),
            "{other:?}"
        );
        assert!(matches!(
            normalize_phone("E12", Id::DE),
            Err(PhoneError::NotANumber(_))
        ));
        let reason = normalize_phone("4.91512E+12", Id::DE)
            .unwrap_err()
            .to_string();
        assert!(reason.contains("format the column as Text"), "{reason}");
    }

    #[test]
    fn garbage_too_short_too_long_and_unknown_codes() {
        let not_a_number =
            |raw: &str| assert_eq!(e164(raw, Id::US), Err(PhoneError::NotANumber(raw.into())));
        not_a_number("12");
        not_a_number("call me");
        not_a_number("+999 1234567");
        not_a_number("+0 1234567");
        assert_eq!(
            e164("+1 555", Id::US),
            Err(PhoneError::Impossible("+1 555".into()))
        );
        assert_eq!(
            e164("+4420794609581234567", Id::US),
            Err(PhoneError::Impossible("+4420794609581234567".into()))
        );
        assert!(e164("+44 20 7946 0958 1234 5678 9012 3456 7890 1234", Id::US).is_err());
    }

    // --------------------------------------------------------------------
    // Against the reference crate
    // --------------------------------------------------------------------

    /// The phonenumber crate's answer: its parse and `is_valid`.
    fn reference(raw: &str, country: Option<Id>) -> Option<String> {
        let number = phonenumber::parse(country, raw).ok()?;
        (phonenumber::is_valid(&number) && !valid_only_by_prefix(&number)).then(|| {
            let national = number.national();
            format!(
                "+{}{}{}",
                number.code().value(),
                "0".repeat(national.zeros() as usize),
                national.value()
            )
        })
    }

    /// The country code of an international number (`+` or the default
    /// country's international prefix) and the digits after it.
    fn split_international(raw: &str, country: Id) -> Option<(u16, String)> {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        let international = if raw.starts_with('+') {
            digits.as_str()
        } else {
            digits.strip_prefix(if country == Id::US { "011" } else { "00" })?
        };
        split_country_code(international).map(|(code, rest)| (code, rest.to_string()))
    }

    /// The crate reads the trunk prefix of an international number its own
    /// way: with the *default* country's rules (`+44 1…` under US loses its
    /// `1`, `+7 8…` under GB keeps its `8`) and, where the metadata has no
    /// separate parsing pattern, twice (`+358 00…`). libphonenumber uses the
    /// number's own region, once. True for the international numbers whose
    /// digits after the country code start like either trunk prefix: the
    /// unit tests above check such numbers against libphonenumber's answers.
    fn trunk_prefix_quirk(raw: &str, country: Id) -> bool {
        let Some((code, rest)) = split_international(raw, country) else {
            return false;
        };
        let own = regions_of(code);
        let starts_like_trunk_prefix = |index: usize| {
            plan(index)
                .prefix_for_parsing
                .as_ref()
                .is_some_and(|re| re.is_match(&rest))
        };
        region_index(country).is_some_and(starts_like_trunk_prefix)
            || own.is_some_and(|r| starts_like_trunk_prefix(r.start))
    }

    /// The crate matches a pattern when it matches a *prefix* of the number
    /// (`[1-6]\\d{6}` accepts the 8-digit `10000000` in CD) and checks no
    /// length against the general description; libphonenumber matches whole
    /// numbers. True when the same tables read the crate's way accept the
    /// number: then the crate's verdict rests on that.
    fn valid_only_by_prefix(number: &phonenumber::PhoneNumber) -> bool {
        let national = number.national();
        let nsn = format!(
            "{}{}",
            "0".repeat(national.zeros() as usize),
            national.value()
        );
        let Some(regions) = regions_of(number.code().value()) else {
            return false;
        };
        let valid_by_prefix = |table: &RegionTable| {
            let matches = |pattern: &str| prefix(pattern).is_some_and(|re| re.is_match(&nsn));
            let len_ok =
                |lengths: u32| lengths == 0 || (nsn.len() < 32 && lengths & (1 << nsn.len()) != 0);
            matches(table.general) && table.types.iter().any(|&(p, l)| len_ok(l) && matches(p))
        };
        if is_valid(number.code().value(), &nsn) {
            return false;
        }
        regions
            .into_iter()
            .any(|i| valid_by_prefix(&tables::REGIONS[i]))
    }

    /// Some national significant number of a region: a type's example
    /// number or random digits of a possible length, with its last digits
    /// replaced.
    fn sample_nsn(region: usize, kind: usize, keep_from_end: usize, noise: &[u8]) -> String {
        let table = &tables::REGIONS[region];
        let meta = phonenumber::metadata::DATABASE
            .by_code(&table.code)
            .and_then(|metas| metas.into_iter().find(|m| m.id() == table.id));
        let d = meta.map(|m| m.descriptors());
        let examples: Vec<&str> = d
            .map(|d| {
                [
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.voip(),
                    d.premium_rate(),
                ]
                .into_iter()
                .flatten()
                .filter_map(|t| t.example())
                .collect()
            })
            .unwrap_or_default();
        let mut nsn = match examples.get(kind) {
            Some(example) => example.to_string(),
            None => {
                let lengths: Vec<usize> =
                    (0..32).filter(|l| table.lengths & (1 << l) != 0).collect();
                let len = lengths[kind % lengths.len()] + kind / 8 % 2;
                noise
                    .iter()
                    .cycle()
                    .take(len)
                    .map(|d| char::from(b'0' + d))
                    .collect()
            }
        };
        let keep = nsn.len().saturating_sub(keep_from_end);
        nsn.truncate(keep);
        nsn.extend(
            noise
                .iter()
                .rev()
                .take(keep_from_end)
                .map(|d| char::from(b'0' + d)),
        );
        nsn
    }

    /// The ways `sample_nsn` is written in a file.
    fn write(code: u16, nsn: &str, form: usize, region: &RegionTable) -> String {
        match form {
            0 => format!("+{code}{nsn}"),
            1 => format!(
                "+{code} {} {}",
                &nsn[..nsn.len() / 2],
                &nsn[nsn.len() / 2..]
            ),
            // National, with the trunk prefix when the region has a plain one.
            2 => match region
                .prefix_for_parsing
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(trunk) => format!("{trunk}{nsn}"),
                None => nsn.to_string(),
            },
            _ => nsn.to_string(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        })]

        /// Valid exactly when the phonenumber crate says so, with the same
        /// E.164, except where the crate departs from libphonenumber: it
        /// reads the trunk prefix of international numbers its own way (see
        /// `trunk_prefix_quirk`) and matches patterns as prefixes (see
        /// `valid_only_by_prefix`).
        #[test]
        fn agrees_with_the_reference_crate(
            region in 0..tables::REGION_COUNT,
            kind in 0usize..16,
            keep_from_end in 0usize..5,
            noise in proptest::collection::vec(0u8..10, 8),
            form in 0usize..4,
            us in any::<bool>(),
        ) {
            let table = &tables::REGIONS[region];
            let country = if us { Id::US } else { Id::GB };
            let nsn = sample_nsn(region, kind, keep_from_end, &noise);
            let raw = write(table.code, &nsn, form, table);
            let ours = e164(&raw, country).ok();
            if trunk_prefix_quirk(&raw, country) {
                return Ok(());
            }
            let theirs = reference(&raw, Some(country));
            prop_assert_eq!(ours, theirs, "{} in {:?}", raw, country);
        }
    }
}
