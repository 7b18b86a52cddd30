//! The Standard Webhooks signature: a secret `whsec_` + base64 of the
//! HMAC key, and `webhook-signature: v1,<base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}"))>`, as the `standardwebhooks` libraries
//! verify it.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Bytes of a new secret's key (the libraries' own generators use 24).
const NEW_KEY_BYTES: usize = 32;

/// A webhook's HMAC key.
pub struct Secret(Vec<u8>);

/// Never the key itself, in a log line or a test failure.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// `whsec_` + base64 (the prefix may be left out, as the libraries
    /// allow); surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err("it is empty".into());
        }
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| format!("it is not \"{PREFIX}\" followed by base64 ({e})"))?;
        if key.is_empty() {
            return Err("its key is empty".into());
        }
        Ok(Secret(key))
    }

    /// The secret in `path`; the error names the file and what to do.
    pub fn read(path: &Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("secret_file {}: {e}", path.display()))?;
        Secret::parse(&text).map_err(|why| {
            format!(
                "secret_file {}: {why}; write a new one with `flagsync webhooks secret > {}`",
                path.display(),
                path.display()
            )
        })
    }

    /// A fresh secret, as written to a secret file.
    pub fn generate() -> Result<String, String> {
        let mut key = [0u8; NEW_KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| format!("no random bytes: {e}"))?;
        Ok(format!("{PREFIX}{}", STANDARD.encode(key)))
    }

    /// The `webhook-signature` header of `body` sent as message `id` at
    /// `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        // Any key length is valid for HMAC: this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of the Standard Webhooks libraries' own tests.
    #[test]
    fn signs_as_the_standard_webhooks_libraries_do() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_new_secret_reads_back_and_bad_ones_say_why() {
        let new = Secret::generate().unwrap();
        assert!(new.starts_with("whsec_"));
        assert_eq!(
            Secret::parse(&format!("{new}\n")).unwrap().0.len(),
            NEW_KEY_BYTES
        );
        assert!(Secret::parse("  ").unwrap_err().contains("empty"));
        assert!(Secret::parse("whsec_not base64!")
            .unwrap_err()
            .contains("base64"));
    }
}
