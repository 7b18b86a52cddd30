//! Byte sizes as users write them: `500`, `"10MB"`, `"2GiB"`.

/// Parses a size with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("500"), Some(500));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("2 parsecs"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999TiB"), None);
    }
}
