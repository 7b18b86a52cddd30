//! The server's host keys: generated once, at first start, into the data
//! folder (mode 0600), and read back on every start after. A changed host
//! key makes every client refuse to connect, so an existing key file is
//! never replaced: one that cannot be read stops the server with a message.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};

/// RSA for clients that know nothing newer (old JSch, old WinSCP); 3072
/// bits as OpenSSH's `ssh-keygen` makes by default.
const RSA_BITS: usize = 3072;

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("the host key {path} cannot be read: {detail}. Restore it from a backup (clients will refuse a new one), or delete it to generate a new key")]
    Read { path: PathBuf, detail: String },
    #[error("the host key {path} cannot be written: {detail}")]
    Write { path: PathBuf, detail: String },
}

struct KeyKind {
    file: &'static str,
    generate: fn() -> Result<PrivateKey, String>,
}

const KINDS: [KeyKind; 3] = [
    KeyKind {
        file: "ssh_host_ed25519_key",
        generate: || random(Algorithm::Ed25519),
    },
    KeyKind {
        file: "ssh_host_ecdsa_key",
        generate: || {
            random(Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            })
        },
    },
    KeyKind {
        file: "ssh_host_rsa_key",
        generate: || {
            let pair = RsaKeypair::random(&mut rand::rng(), RSA_BITS).map_err(|e| e.to_string())?;
            PrivateKey::new(KeypairData::from(pair), "flagsync").map_err(|e| e.to_string())
        },
    },
];

fn random(algorithm: Algorithm) -> Result<PrivateKey, String> {
    PrivateKey::random(&mut rand::rng(), algorithm).map_err(|e| e.to_string())
}

/// The host keys in `dir`, generating any that are missing.
pub fn load_or_generate(dir: &Path) -> Result<Vec<PrivateKey>, HostKeyError> {
    KINDS
        .iter()
        .map(|kind| load_or_generate_one(&dir.join(kind.file), kind.generate))
        .collect()
}

/// The host keys already in `dir`, without generating any: each file's
/// name and its public key, or why it cannot be read (`flagsync doctor`).
pub fn existing(dir: &Path) -> Vec<(&'static str, Result<russh::keys::PublicKey, HostKeyError>)> {
    KINDS
        .iter()
        .filter_map(|kind| {
            let path = dir.join(kind.file);
            let read_error = |detail: String| HostKeyError::Read {
                path: path.clone(),
                detail,
            };
            let key = match std::fs::read_to_string(&path) {
                Ok(text) => PrivateKey::from_openssh(&text)
                    .map(|k| k.public_key().clone())
                    .map_err(|e| read_error(e.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => Err(read_error(e.to_string())),
            };
            Some((kind.file, key))
        })
        .collect()
}

fn load_or_generate_one(
    path: &Path,
    generate: fn() -> Result<PrivateKey, String>,
) -> Result<PrivateKey, HostKeyError> {
    let read_error = |detail: String| HostKeyError::Read {
        path: path.to_owned(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(&text).map_err(|e| read_error(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate().map_err(|detail| HostKeyError::Write {
                path: path.to_owned(),
                detail,
            })?;
            write_private(path, &key)?;
            tracing::info!(path = %path.display(), "generated a host key");
            Ok(key)
        }
        Err(e) => Err(read_error(e.to_string())),
    }
}

/// Written to a temporary name with mode 0600 from the start, synced, then
/// renamed: a crash leaves either no key or a whole one.
fn write_private(path: &Path, key: &PrivateKey) -> Result<(), HostKeyError> {
    let fail = |detail: String| HostKeyError::Write {
        path: path.to_owned(),
        detail,
    };
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail(e.to_string()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
    crate::layout::sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path()).unwrap();
        let second = load_or_generate(dir.path()).unwrap();
        assert_eq!(first.len(), 3);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.public_key(), b.public_key());
        }
        let mode = std::fs::metadata(dir.path().join("ssh_host_ed25519_key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ssh_host_ed25519_key"), "garbage").unwrap();
        let err = load_or_generate(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ssh_host_ed25519_key")).unwrap(),
            "garbage"
        );
    }
}
