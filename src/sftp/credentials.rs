//! Public keys and address allow-lists: what an sFTP account is made of,
//! checked (passwords are `crate::auth`'s). Used by the server at login
//! and by `flagsync accounts`.

pub use crate::auth::{address_key, canonical_ip};

use std::net::IpAddr;

use ipnet::IpNet;
use russh::keys::{HashAlg, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("'{0}' is not an OpenSSH public key (expected a line such as 'ssh-ed25519 AAAA... comment')")]
    Key(String),
    #[error("'{0}' is not an IP address or CIDR range (such as 192.0.2.10, 192.0.2.0/24 or 2001:db8::/32)")]
    Address(String),
}

/// One public key line of an `authorized_keys`-style file.
pub fn parse_public_key(line: &str) -> Result<PublicKey, CredentialError> {
    let shown = line.chars().take(40).collect::<String>();
    PublicKey::from_openssh(line.trim()).map_err(|_| CredentialError::Key(shown))
}

/// The public keys of a file: every non-empty, non-comment line.
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, CredentialError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_public_key)
        .collect()
}

/// `SHA256:...`, as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// An address or a CIDR range, in its canonical form (`192.0.2.10/32`).
pub fn parse_allow(text: &str) -> Result<IpNet, CredentialError> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| CredentialError::Address(text.to_string()))
}

/// Whether `ip` may log in to an account with this allow-list. An empty
/// list allows any address. IPv4 peers seen as IPv4-mapped IPv6 addresses
/// (on a dual-stack listener) are matched as IPv4.
pub fn address_allowed(allow: &[String], ip: IpAddr) -> bool {
    if allow.is_empty() {
        return true;
    }
    let ip = canonical_ip(ip);
    allow
        .iter()
        .filter_map(|a| parse_allow(a).ok())
        .any(|net| net.contains(&ip))
}

/// An account as `accounts list --json` and the status page show it:
/// never the password hash, keys as fingerprints.
pub fn account_summary(a: &crate::store::Account) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = a
        .keys
        .iter()
        .filter_map(|k| parse_public_key(k).ok())
        .map(|k| {
            serde_json::json!({
                "fingerprint": fingerprint(&k),
                "algorithm": k.algorithm().as_str(),
            })
        })
        .collect();
    serde_json::json!({
        "name": a.name,
        "feed": a.feed,
        "password": a.password_hash.is_some(),
        "keys": keys,
        "allow": a.allow,
        "created_at": a.created_at,
        "last_login": a.last_login,
        "last_login_from": a.last_login_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_addresses_and_ranges() {
        let allow = vec![
            "127.0.0.1/32".to_string(),
            "10.1.0.0/16".into(),
            "2001:db8::/32".into(),
        ];
        let ok = |s: &str| address_allowed(&allow, s.parse().unwrap());
        assert!(ok("127.0.0.1"));
        assert!(!ok("127.0.0.2"));
        assert!(ok("10.1.200.3"));
        assert!(!ok("10.2.0.1"));
        assert!(ok("2001:db8::5"));
        assert!(ok("::ffff:127.0.0.1"), "IPv4-mapped IPv6 matches as IPv4");
        assert!(address_allowed(&[], "192.0.2.1".parse().unwrap()));
        assert_eq!(
            parse_allow("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_allow("192.0.2.7/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert!(parse_allow("192.0.2.300").is_err());
        assert!(parse_allow("example.com").is_err());
    }

    #[test]
    fn public_keys_parse_from_openssh_lines() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHg3RXm1ONdyzFMyxhCMCOanUWTMSyhKRD+7+XoxOzNA test@example";
        let key = parse_public_key(line).unwrap();
        assert!(fingerprint(&key).starts_with("SHA256:"));
        assert!(parse_public_key("ssh-ed25519 garbage").is_err());
        let keys = parse_public_keys(&format!("# mine\n\n{line}\n")).unwrap();
        assert_eq!(keys.len(), 1);
    }
}
