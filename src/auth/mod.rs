//! What sFTP, the web page and the command line share about who may log
//! in: argon2id password hashes, generated passwords and tokens, the key
//! an address counts under in lockouts and per-address caps, and the
//! lockouts themselves (`lockout`).

pub mod lockout;

use std::net::IpAddr;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

pub use lockout::{Lockout, LockoutPolicy, PasswordCheck, Refused, Service};

/// Letters and digits that cannot be mistaken for each other when read out
/// or typed from a printout (no 0/O, 1/l/I).
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const GENERATED_PASSWORD_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the password cannot be hashed: {0}")]
    Hash(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

/// An argon2id PHC string with a fresh salt and the crate's recommended
/// parameters (19 MiB, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks a password against a stored PHC string, with the parameters the
/// string names. A damaged hash never matches.
pub fn password_matches(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

pub fn generate_password() -> Result<String, AuthError> {
    let mut bytes = [0u8; GENERATED_PASSWORD_LEN * 2];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % PASSWORD_ALPHABET.len();
    let password: String = bytes
        .iter()
        .filter(|&&b| (b as usize) < limit)
        .take(GENERATED_PASSWORD_LEN)
        .map(|&b| PASSWORD_ALPHABET[b as usize % PASSWORD_ALPHABET.len()] as char)
        .collect();
    if password.len() < GENERATED_PASSWORD_LEN {
        return generate_password();
    }
    Ok(password)
}

/// 256 random bits as 64 hex digits: session, CSRF and API tokens.
pub fn random_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What a client counts against in lockouts and per-address caps (sFTP
/// and web alike): its IPv4 address (an IPv4-mapped one as IPv4), or for
/// IPv6 its /64 (one host usually has a whole /64 to pick addresses
/// from).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_only() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(password_matches("correct horse", &phc));
        assert!(!password_matches("correct horse ", &phc));
        assert!(!password_matches("correct horse", "not a hash"));
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
    }
}
