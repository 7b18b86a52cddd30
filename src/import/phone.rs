//! Phone numbers to E.164.
//!
//! The phonenumber crate is the authority, but it is slow (tens of µs a
//! number and a global lock, see CRATES.md), so numbers that already look
//! like E.164, or like a 10-digit NANP number when the feed's country uses
//! +1, are checked here against the crate's own metadata (the possible
//! lengths of each country code, extracted at build time by `build.rs`) and
//! only the rest go to the crate. "Valid"
//! means a possible number: right country code and a possible length.

use phonenumber::country::Id;

mod tables {
    include!(concat!(env!("OUT_DIR"), "/phone_tables.rs"));
}

fn lengths_of(code: u16) -> Option<u32> {
    tables::POSSIBLE_LENGTHS
        .binary_search_by_key(&code, |&(c, _)| c)
        .ok()
        .map(|i| tables::POSSIBLE_LENGTHS[i].1)
}

/// The calling code of a country (44 for GB), from the crate's metadata.
pub fn country_code_of(id: Id) -> Option<u16> {
    tables::REGION_CODES
        .binary_search_by_key(&id.as_ref(), |&(r, _)| r)
        .ok()
        .map(|i| tables::REGION_CODES[i].1)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("'{0}' is not a phone number")]
    NotANumber(String),
    #[error("'{0}' is not a possible phone number")]
    Impossible(String),
}

/// Normalises `raw` (already trimmed, not empty) to E.164 such as
/// `+15551234567`, reading national numbers against `country`.
pub fn normalize_phone(raw: &str, country: Id) -> Result<String, PhoneError> {
    if let Some(e164) = fast_path(raw, country) {
        return Ok(e164);
    }
    // `+44 (0) 20 …`: the bracketed trunk zero is not dialled after a
    // country code.
    if raw.starts_with('+') && raw.contains("(0)") {
        let without = raw.replacen("(0)", "", 1);
        if let Some(e164) = fast_path(&without, country) {
            return Ok(e164);
        }
    }
    slow_path(raw, country).map_err(|e| match e {
        PhoneError::NotANumber(_) => PhoneError::NotANumber(raw.to_string()),
        PhoneError::Impossible(_) => PhoneError::Impossible(raw.to_string()),
    })
}

/// Digits of a number written only with digits, a leading `+` and the usual
/// separators; `None` when it holds anything else (letters, extensions).
fn plain_digits(raw: &str) -> Option<(bool, String)> {
    let mut plus = false;
    // Room for the `+` that the caller puts in front.
    let mut digits = String::with_capacity(raw.len() + 1);
    for (i, c) in raw.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return None,
        }
    }
    Some((plus, digits))
}

fn is_possible(code: u16, national_len: usize) -> bool {
    lengths_of(code).is_some_and(|mask| national_len < 32 && mask & (1 << national_len) != 0)
}

fn fast_path(raw: &str, country: Id) -> Option<String> {
    let (plus, digits) = plain_digits(raw)?;
    if plus {
        // Country codes are prefix-free: at most one of 1-3 digits is one.
        for cc_len in 1..=3 {
            if digits.len() <= cc_len {
                break;
            }
            let Ok(code) = digits[..cc_len].parse::<u16>() else {
                break;
            };
            if lengths_of(code).is_some() {
                return is_possible(code, digits.len() - cc_len).then(|| {
                    let mut digits = digits;
                    digits.insert(0, '+');
                    digits
                });
            }
        }
        return None;
    }
    if country_code_of(country) == Some(1) {
        let national = match digits.len() {
            10 => &digits[..],
            11 if digits.starts_with('1') => &digits[1..],
            _ => return None,
        };
        if !national.starts_with(['0', '1']) {
            return Some(format!("+1{national}"));
        }
    }
    None
}

fn slow_path(raw: &str, country: Id) -> Result<String, PhoneError> {
    let number = phonenumber::parse(Some(country), raw)
        .map_err(|_| PhoneError::NotANumber(raw.to_string()))?;
    let code = number.code().value();
    let national = number.national();
    let mut digits = "0".repeat(national.zeros() as usize);
    digits.push_str(&national.value().to_string());
    if is_possible(code, digits.len()) {
        Ok(format!("+{code}{digits}"))
    } else {
        Err(PhoneError::Impossible(raw.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms() {
        let cases = [
            ("(555) 123-4567", Id::US, "+15551234567"),
            ("+1 555 123 4567", Id::US, "+15551234567"),
            ("1-415-555-0123", Id::US, "+14155550123"),
            ("+44 20 7946 0958", Id::US, "+442079460958"),
            ("+44 (0) 20 7946 0958", Id::US, "+442079460958"),
            ("07700 900123", Id::GB, "+447700900123"),
            ("+39 06 6982 1234", Id::US, "+390669821234"),
            ("0033 6 12 34 56 78", Id::FR, "+33612345678"),
        ];
        for (raw, country, e164) in cases {
            assert_eq!(normalize_phone(raw, country).as_deref(), Ok(e164), "{raw}");
        }
    }

    #[test]
    fn impossible_and_garbage() {
        assert!(normalize_phone("12", Id::US).is_err());
        assert!(matches!(
            normalize_phone("+1 555", Id::US),
            Err(PhoneError::Impossible(_)) | Err(PhoneError::NotANumber(_))
        ));
        assert!(normalize_phone("call me", Id::US).is_err());
        assert!(normalize_phone("+999 1234567", Id::US).is_err());
        assert!(normalize_phone("+4420794609581234567", Id::US).is_err());
    }
}
