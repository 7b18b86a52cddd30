//! OpenPGP-encrypted files (as Workday, ADP and most HR platforms send
//! them): decrypted as a stream into a writer the caller gives (the
//! worker's unnamed temporary file in the data folder), the signature
//! checked against the sender's key, so that the rest of the reader sees
//! the clear file (itself perhaps a gzip file or a ZIP archive) as if it
//! had been sent as it is. Also the feed's keys: reading them for a run
//! and for `flagsync check`, their expiry, and making a new key pair.
//!
//! Invariants:
//! 1. Never more than `limit` + one buffer of clear bytes is written, and
//!    memory does not grow with the file: the message is read as a stream
//!    (SEIPDv1 in rpgp's streaming mode; its integrity code is checked at
//!    the end, and the caller uses nothing of the copy before `decrypt`
//!    returned `Ok`).
//! 2. The signature is judged only once the whole message was read, and a
//!    file whose signature the feed's signer key does not verify is
//!    refused (with `require_signature`, an unsigned file too).
//! 3. A damaged, cut-short, mis-keyed or oversized message is a
//!    [`Refusal::Refused`] with a reason that says what to do; reasons
//!    never hold the file's clear bytes. A panic inside the OpenPGP
//!    library is caught and refused like damage.

use std::io::{self, Write};
use std::path::Path;

use pgp::composed::{
    ArmorOptions, DecryptionOptions, EncryptionCaps, Esk, KeyType, Message, PublicOrSecret,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder, TheRing,
};
use pgp::crypto::{ecc_curve::ECCCurve, hash::HashAlgorithm, sym::SymmetricKeyAlgorithm};
use pgp::packet::Signature;
use pgp::types::{CompressionAlgorithm, KeyDetails, Password, Seipdv1ReadMode, VerifyingKey};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

use super::container::{copy_counted, InputReader, Refusal};
use super::input::Input;
use super::text::printable;
use crate::config::Feed;

/// File name endings that say "OpenPGP" (gpg writes `.gpg` and, armoured,
/// `.asc`; Workday and most platforms name files `.pgp`).
const PGP_SUFFIXES: [&str; 3] = [".pgp", ".gpg", ".asc"];
const ARMOR_MESSAGE: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Whether a file is to be read as an OpenPGP message: its content starts
/// like one (see [`starts_like_openpgp`]), or its name ends in `.pgp`,
/// `.gpg` or `.asc` and its first byte is an OpenPGP packet header of any
/// kind (so that a damaged encrypted file gets an OpenPGP reason, not a
/// CSV one). A CSV file, whatever its name, starts with text or a BOM.
pub fn is_openpgp(input: &dyn Input, name: &str) -> bool {
    let mut head = [0u8; 64];
    let n = input.len().min(head.len() as u64) as usize;
    if input.read_exact_at(0, &mut head[..n]).is_err() {
        return false;
    }
    let head = &head[..n];
    if starts_like_openpgp(head) {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    PGP_SUFFIXES.iter().any(|s| lower.ends_with(s))
        && head.first().is_some_and(|&b| b & 0x80 != 0)
        && !is_bom(head)
}

fn is_bom(head: &[u8]) -> bool {
    head.starts_with(b"\xEF\xBB\xBF")
        || head.starts_with(b"\xFF\xFE")
        || head.starts_with(b"\xFE\xFF")
}

/// Whether `head` (a file's first bytes) starts like an OpenPGP message:
/// ASCII armour (`-----BEGIN PGP MESSAGE-----`, after blank lines at most),
/// or a packet header of a message's first packet (a session key for a
/// key or a password, a one-pass signature, compressed or literal data)
/// followed by a first body byte that packet must have (its version, its
/// algorithm, its format). Some of those header bytes are also UTF-8
/// lead bytes (0xC3 is that of "É"), hence the check of the body.
pub fn starts_like_openpgp(head: &[u8]) -> bool {
    let text = head
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .map_or(&[][..], |at| &head[at..]);
    // A file cut inside the armour line still says what it was meant to be.
    let cut_armor = text.len() >= 10 && ARMOR_MESSAGE.starts_with(text);
    if text.starts_with(ARMOR_MESSAGE) || cut_armor {
        return true;
    }
    let Some((tag, body)) = packet_start(head) else {
        return false;
    };
    let Some(&first) = body.first() else {
        return false;
    };
    match tag {
        // Public-key encrypted session key: version 3 or 6.
        1 => matches!(first, 3 | 6),
        // Password-encrypted session key: version 4, 5 or 6.
        3 => matches!(first, 4..=6),
        // One-pass signature: version 3 or 6.
        4 => matches!(first, 3 | 6),
        // Compressed data: uncompressed, ZIP, ZLIB or BZip2.
        8 => first <= 3,
        // Literal data: its format.
        11 => matches!(first, b'b' | b't' | b'u' | b'l' | b'1' | b'm'),
        _ => false,
    }
}

/// The tag of the packet `head` starts with and the start of its body.
fn packet_start(head: &[u8]) -> Option<(u8, &[u8])> {
    let &first = head.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    if first & 0x40 == 0 {
        // Old format: the tag in bits 5-2, the length's size in bits 1-0.
        let tag = (first >> 2) & 0x0F;
        let length_bytes = match first & 0x03 {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => 0,
        };
        Some((tag, head.get(1 + length_bytes..)?))
    } else {
        let tag = first & 0x3F;
        let length_bytes = match *head.get(1)? {
            0..=191 => 1,
            192..=223 => 2,
            255 => 5,
            _ => 1,
        };
        Some((tag, head.get(1 + length_bytes..)?))
    }
}

/// What a run records of an OpenPGP file (`Run::pgp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgpRecord {
    /// The fingerprint of the feed's key the file was decrypted with;
    /// `None`: the message was signed only, not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypted_with: Option<String>,
    /// What was found of a signature.
    pub signature: SignatureState,
    /// `Verified`: the signer key's fingerprint; `Unchecked`: the key ID
    /// the signature names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// `Verified`: the signer key's first user ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_user_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    /// Signed, and the feed's `pgp_signer_key_file` verified it.
    Verified,
    /// Not signed (and the feed does not require it).
    Unsigned,
    /// Signed, but the feed has no `pgp_signer_key_file` to check it with.
    Unchecked,
}

impl PgpRecord {
    /// One line for `runs show`: how it was encrypted and who signed it.
    pub fn describe(&self) -> String {
        let encrypted = match &self.decrypted_with {
            Some(fpr) => format!("encrypted for this feed's key {fpr}"),
            None => "signed, not encrypted".to_string(),
        };
        let signer = self.signer.as_deref().unwrap_or("?");
        let signed = match self.signature {
            SignatureState::Verified => match &self.signer_user_id {
                Some(uid) => format!("signature verified: signed by {signer} ({uid})"),
                None => format!("signature verified: signed by {signer}"),
            },
            SignatureState::Unsigned => "not signed".to_string(),
            SignatureState::Unchecked => {
                format!("signed by key {signer}, not checked (the feed has no pgp_signer_key_file)")
            }
        };
        format!("{encrypted}; {signed}")
    }
}

/// A feed's keys, read from its key files for one run.
pub struct FeedKeys {
    feed: String,
    own: SignedSecretKey,
    signer: Option<SignedPublicKey>,
    require_signature: bool,
}

/// A key file's trouble, naming the feed and the setting.
fn key_problem(feed: &str, setting: &str, path: &Path, what: impl std::fmt::Display) -> String {
    format!(
        "feed '{feed}': {setting} {}: {what}",
        printable(&path.display().to_string())
    )
}

/// Reads the feed's key files; `Ok(None)` when it has no
/// `pgp_private_key_file`.
pub fn load_keys(feed: &Feed) -> Result<Option<FeedKeys>, String> {
    let Some(own_path) = &feed.pgp_private_key_file else {
        return Ok(None);
    };
    let own = read_secret_key(own_path)
        .map_err(|e| key_problem(&feed.name, "pgp_private_key_file", own_path, e))?;
    let signer = match &feed.pgp_signer_key_file {
        None => None,
        Some(path) => Some(
            read_public_key(path)
                .map_err(|e| key_problem(&feed.name, "pgp_signer_key_file", path, e))?,
        ),
    };
    Ok(Some(FeedKeys {
        feed: feed.name.clone(),
        own,
        signer,
        require_signature: feed.require_signature,
    }))
}

/// What makes the file a setting names, for a file that does not exist.
const MAKE_OWN_KEY: &str = "`flagsync pgp keygen --feed NAME` makes one";
const MAKE_SIGNER_KEY: &str = "the sender exports it with `gpg --export --armor THEIR_KEY > FILE`";

fn read_key_file(path: &Path, how_to_make: &str) -> Result<PublicOrSecret, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            format!("does not exist: correct the path ({how_to_make})")
        }
        io::ErrorKind::PermissionDenied => format!(
            "cannot be read by flagsync's user ({e}); give it that user (chown) and mode 0600"
        ),
        _ => format!("cannot be read ({e})"),
    })?;
    let not_a_key = |e: &dyn std::fmt::Display| {
        format!(
            "is not an OpenPGP key ({}); export one with `gpg --export-secret-keys --armor KEYID` (our key) or `gpg --export --armor KEYID` (the sender's)",
            printable(&e.to_string())
        )
    };
    let caught = std::panic::catch_unwind(|| {
        let (mut keys, _) = PublicOrSecret::from_reader_many(&bytes[..])?;
        keys.next()
            .unwrap_or_else(|| Err(pgp::errors::Error::MissingKey))
    });
    match caught {
        Ok(Ok(key)) => Ok(key),
        Ok(Err(e)) => Err(not_a_key(&e)),
        Err(_) => Err(not_a_key(&"unreadable")),
    }
}

fn read_secret_key(path: &Path) -> Result<SignedSecretKey, String> {
    let key = match read_key_file(path, MAKE_OWN_KEY)? {
        PublicOrSecret::Secret(key) => key,
        PublicOrSecret::Public(key) => {
            return Err(format!(
                "holds a public key ({:X}), and decrypting needs the secret key: export it with `gpg --export-secret-keys --armor {:X}`, or make a key pair with `flagsync pgp keygen --feed NAME`",
                key.fingerprint(),
                key.fingerprint()
            ))
        }
    };
    let fpr = key.fingerprint();
    let protected = key.primary_key.secret_params().is_encrypted()
        || key
            .secret_subkeys
            .iter()
            .any(|s| s.key.secret_params().is_encrypted());
    if protected {
        return Err(format!(
            "is protected by a passphrase, which flagsync does not take (the file is readable by flagsync's user only, mode 0600): remove it with `gpg --pinentry-mode loopback --passwd {fpr:X}` (leave the new passphrase empty), then export it again with `gpg --export-secret-keys --armor {fpr:X}`"
        ));
    }
    if decryption_key_ids(&key).is_empty() {
        return Err(format!(
            "({fpr:X}) has no key for encryption, only for signing: add one with `gpg --quick-add-key {fpr:X} rsa3072 encr` and export again, or make a key pair with `flagsync pgp keygen --feed NAME`"
        ));
    }
    Ok(key)
}

fn read_public_key(path: &Path) -> Result<SignedPublicKey, String> {
    Ok(match read_key_file(path, MAKE_SIGNER_KEY)? {
        PublicOrSecret::Public(key) => key,
        PublicOrSecret::Secret(key) => key.to_public_key(),
    })
}

/// The key IDs of the keys of `key` that may decrypt: its subkeys bound
/// for encryption, or the primary key when its self-signature says so.
fn decryption_key_ids(key: &SignedSecretKey) -> Vec<String> {
    let mut ids: Vec<String> = key
        .secret_subkeys
        .iter()
        .filter(|s| s.signatures.iter().any(can_encrypt))
        .map(|s| key_id_text(s.key.legacy_key_id().as_ref()))
        .collect();
    let primary_encrypts = key
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(key.details.direct_signatures.iter())
        .any(can_encrypt);
    if primary_encrypts {
        ids.insert(0, key_id_text(key.primary_key.legacy_key_id().as_ref()));
    }
    ids
}

fn can_encrypt(signature: &Signature) -> bool {
    let flags = signature.key_flags();
    flags.encrypt_comms() || flags.encrypt_storage()
}

fn key_id_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn first_user_id(users: &[pgp::types::SignedUser]) -> Option<String> {
    users
        .iter()
        .find(|u| u.is_primary())
        .or_else(|| users.first())
        .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
}

/// What [`decrypt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub record: PgpRecord,
    /// Clear bytes written.
    pub size: u64,
}

/// Decrypts the OpenPGP message `input` (which [`is_openpgp`] accepted)
/// with the feed's keys into `out`, refusing it when its clear content is
/// more than `limit` bytes, when it is not for the feed's key, or when
/// its signature does not satisfy the feed.
pub fn decrypt(
    input: &dyn Input,
    keys: &FeedKeys,
    limit: u64,
    out: &mut dyn Write,
) -> Result<Decrypted, Refusal> {
    // rpgp is meant not to panic on any input; should it, the file is
    // refused as damaged rather than stopping the run's thread.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decrypt_stream(input, keys, limit, out)
    }))
    .unwrap_or_else(|_| {
        Err(Refusal::Refused(
            "the OpenPGP file is damaged (it could not be read); send it again".to_string(),
        ))
    })
}

fn damaged(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    // rpgp's words for a message without an integrity code (RFC 2440's
    // SED packet), which GnuPG refuses too.
    if lower.contains("symencrypteddata") {
        return "the OpenPGP file is encrypted without an integrity check (an old format that a changed file passes unnoticed), which flagsync refuses: ask the sender to encrypt with current settings (every OpenPGP tool of the last 20 years adds the check unless told not to)".to_string();
    }
    // The armour's parser names its grammar, which tells a user nothing.
    if lower.contains("armor") {
        return "the armoured OpenPGP file is cut short or damaged (it does not run whole from `-----BEGIN PGP MESSAGE-----` to `-----END PGP MESSAGE-----`): send it again".to_string();
    }
    // rpgp's words for a message that ends early.
    let cut = [
        "eof",
        "unexpected end",
        "too short",
        "shorter than expected",
        "incomplete",
        "no more data",
    ];
    let what = if cut.iter().any(|c| lower.contains(c)) {
        "cut short (an interrupted upload or copy?)".to_string()
    } else {
        format!("damaged ({})", printable(&text))
    };
    format!("the OpenPGP file is {what}: send it again")
}

fn decrypt_stream(
    input: &dyn Input,
    keys: &FeedKeys,
    limit: u64,
    out: &mut dyn Write,
) -> Result<Decrypted, Refusal> {
    let refuse = Refusal::Refused;
    let reader = io::BufReader::with_capacity(1 << 16, InputReader::new(input));
    let (message, _) = Message::from_reader(reader).map_err(|e| refuse(damaged(e)))?;
    let (message, decrypted_with) = if message.is_encrypted() {
        let message = decrypt_message(message, keys)?;
        (message, Some(format!("{:X}", keys.own.fingerprint())))
    } else {
        (message, None)
    };
    let mut message = decompress(message)?;
    let too_big = || {
        format!(
            "the OpenPGP file ({} bytes) decrypts to more than {limit} bytes, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size",
            input.len()
        )
    };
    let size = copy_counted(&mut message, out, limit, damaged, too_big)?;
    let (signature, signer, signer_user_id) = judge_signature(&message, keys)?;
    Ok(Decrypted {
        record: PgpRecord {
            decrypted_with,
            signature,
            signer,
            signer_user_id,
        },
        size,
    })
}

/// The message decrypted with the feed's key, or why it cannot be.
fn decrypt_message<'a>(message: Message<'a>, keys: &FeedKeys) -> Result<Message<'a>, Refusal> {
    let (recipients, passwords) = match &message {
        Message::Encrypted { esk, .. } => recipients_of(esk),
        _ => (Vec::new(), 0),
    };
    let no_password = Password::empty();
    let ring = TheRing {
        secret_keys: vec![&keys.own],
        key_passwords: vec![&no_password],
        // Streaming: the clear text goes to the run's temporary file, and
        // the run uses it only after the integrity code at the end was
        // checked. GnuPG 2.3+ writes its own AEAD (OCB) packets to keys
        // that announce it.
        decrypt_options: DecryptionOptions::new()
            .enable_gnupg_aead()
            .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
        ..Default::default()
    };
    match message.decrypt_the_ring(ring, true) {
        Ok((message, _)) => Ok(message),
        Err(pgp::errors::Error::MissingKey) => Err(Refusal::Refused(wrong_key_reason(
            keys,
            &recipients,
            passwords,
        ))),
        Err(e) => Err(Refusal::Refused(damaged(e))),
    }
}

/// The key IDs a message was encrypted for, and how many password
/// session keys it has.
fn recipients_of(esk: &[Esk]) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut passwords = 0;
    for e in esk {
        match e {
            Esk::PublicKeyEncryptedSessionKey(k) => match k.id() {
                Ok(id) => ids.push(key_id_text(id.as_ref())),
                Err(_) => ids.push("(hidden recipient)".to_string()),
            },
            Esk::SymKeyEncryptedSessionKey(_) => passwords += 1,
        }
    }
    (ids, passwords)
}

fn wrong_key_reason(keys: &FeedKeys, recipients: &[String], passwords: usize) -> String {
    let ours = decryption_key_ids(&keys.own).join(", ");
    let fix = format!(
        "ask the sender to encrypt to the key `flagsync feeds show {} --pgp-public-key` prints",
        keys.feed
    );
    if recipients.is_empty() && passwords > 0 {
        return format!("the OpenPGP file was encrypted with a password, not to a key: {fix}");
    }
    format!(
        "this file was encrypted for key {}, but this feed's key is {:X} (encryption key {ours}): {fix}",
        recipients.join(", "),
        keys.own.fingerprint()
    )
}

fn decompress(mut message: Message<'_>) -> Result<Message<'_>, Refusal> {
    // Compression inside compression is legal; a few layers at most.
    for _ in 0..4 {
        if !message.is_compressed() && !message.is_signed() {
            break;
        }
        let signed = message.is_signed();
        message = message
            .decompress()
            .map_err(|e| Refusal::Refused(damaged(e)))?;
        if signed {
            break;
        }
    }
    Ok(message)
}

type SignatureJudgement = (SignatureState, Option<String>, Option<String>);

/// Judges a message read to its end against the feed's signer key.
fn judge_signature(message: &Message<'_>, keys: &FeedKeys) -> Result<SignatureJudgement, Refusal> {
    let signatures = match message {
        Message::Signed { reader, .. } => (0..reader.num_signatures())
            .filter_map(|i| reader.signature(i).map(|s| (i, s)))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let Some(signer) = &keys.signer else {
        if keys.require_signature {
            // Config validation makes this impossible; refuse anyway.
            return Err(Refusal::Refused(format!(
                "feed '{}' sets require_signature but no pgp_signer_key_file",
                keys.feed
            )));
        }
        return Ok(match signatures.first() {
            None => (SignatureState::Unsigned, None, None),
            Some((_, s)) => (SignatureState::Unchecked, issuer_of(s), None),
        });
    };
    let signer_fpr = format!("{:X}", signer.fingerprint());
    if signatures.is_empty() {
        if keys.require_signature {
            return Err(Refusal::Refused(format!(
                "the file is not signed, and this feed requires files signed by {signer_fpr} (require_signature): ask the sender to sign and encrypt it (as `gpg --sign --encrypt` does)"
            )));
        }
        return Ok((SignatureState::Unsigned, None, None));
    }
    let verifiers = signer_keys(signer);
    for (i, _) in &signatures {
        if verifiers
            .iter()
            .any(|k| message.verify_nested_explicit(*i, *k).is_ok())
        {
            return Ok((
                SignatureState::Verified,
                Some(signer_fpr),
                first_user_id(&signer.details.users),
            ));
        }
    }
    let our_ids = signer_key_ids(signer);
    let issuers: Vec<String> = signatures
        .iter()
        .filter_map(|(_, s)| issuer_of(s))
        .collect();
    let by_signer = issuers
        .iter()
        .any(|id| our_ids.iter().any(|o| id.ends_with(o.as_str())));
    Err(Refusal::Refused(if by_signer {
        format!(
            "the file's signature by {signer_fpr} does not match its content (changed after signing, or damaged): ask the sender to send it again"
        )
    } else {
        format!(
            "the file is signed by key {}, not by this feed's signer key {signer_fpr} (pgp_signer_key_file): ask the sender to sign with that key, or, if their key changed, set pgp_signer_key_file to their new public key",
            if issuers.is_empty() { "(unnamed)".to_string() } else { issuers.join(", ") }
        )
    }))
}

fn signer_keys(signer: &SignedPublicKey) -> Vec<&dyn VerifyingKey> {
    let mut keys: Vec<&dyn VerifyingKey> = vec![&signer.primary_key];
    for sub in &signer.public_subkeys {
        keys.push(&sub.key);
    }
    keys
}

fn signer_key_ids(signer: &SignedPublicKey) -> Vec<String> {
    std::iter::once(key_id_text(signer.primary_key.legacy_key_id().as_ref()))
        .chain(
            signer
                .public_subkeys
                .iter()
                .map(|s| key_id_text(s.key.legacy_key_id().as_ref())),
        )
        .collect()
}

/// The key a signature names: its issuer fingerprint, or its key ID.
fn issuer_of(signature: &Signature) -> Option<String> {
    if let Some(fpr) = signature.issuer_fingerprint().first() {
        return Some(format!("{fpr:X}"));
    }
    signature
        .issuer_key_id()
        .first()
        .map(|id| key_id_text(id.as_ref()))
}

/// The algorithms `flagsync pgp keygen` makes keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA 3072 (primary and encryption subkey): what every HR platform
    /// and older PGP tool takes.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
    /// Ed25519 primary, Curve25519 (cv25519) encryption subkey: small and
    /// fast, read by GnuPG 2.1+ and most current tools.
    Ed25519,
}

/// A new key pair for `feed`, without a passphrase and without expiry:
/// the secret key (binary, as `gpg --export-secret-keys` writes it) and
/// the armoured public key to hand to the sender.
pub fn generate_key(feed: &str, algorithm: KeyAlgorithm) -> Result<GeneratedKey, String> {
    let (primary, encryption) = match algorithm {
        KeyAlgorithm::Rsa3072 => (KeyType::Rsa(3072), KeyType::Rsa(3072)),
        KeyAlgorithm::Rsa4096 => (KeyType::Rsa(4096), KeyType::Rsa(4096)),
        KeyAlgorithm::Ed25519 => (
            KeyType::Ed25519Legacy,
            KeyType::ECDH(ECCCurve::Curve25519Legacy),
        ),
    };
    let failed = |e: &dyn std::fmt::Display| format!("the key could not be made: {e}");
    let subkey = SubkeyParamsBuilder::default()
        .key_type(encryption)
        .can_encrypt(EncryptionCaps::All)
        .build()
        .map_err(|e| failed(&e))?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(primary)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("flagsync feed {feed}"))
        .preferred_symmetric_algorithms(smallvec![
            SymmetricKeyAlgorithm::AES256,
            SymmetricKeyAlgorithm::AES128,
        ])
        .preferred_hash_algorithms(smallvec![HashAlgorithm::Sha256, HashAlgorithm::Sha512])
        .preferred_compression_algorithms(smallvec![
            CompressionAlgorithm::ZLIB,
            CompressionAlgorithm::ZIP,
        ])
        .subkeys(vec![subkey])
        .build()
        .map_err(|e| failed(&e))?;
    let key = params
        .generate(rand_core_06::OsRng)
        .map_err(|e| failed(&e))?;
    let mut secret = Vec::new();
    pgp::ser::Serialize::to_writer(&key, &mut secret).map_err(|e| failed(&e))?;
    let public = public_armor(&key)?;
    Ok(GeneratedKey {
        fingerprint: format!("{:X}", key.fingerprint()),
        secret,
        public,
    })
}

/// What [`generate_key`] made.
pub struct GeneratedKey {
    pub fingerprint: String,
    /// The secret key, binary.
    pub secret: Vec<u8>,
    /// The public key, ASCII-armoured.
    pub public: String,
}

fn public_armor(key: &SignedSecretKey) -> Result<String, String> {
    key.to_public_key()
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| format!("the public key could not be written: {e}"))
}

/// The armoured public key of the feed's `pgp_private_key_file`, for
/// `flagsync feeds show NAME --pgp-public-key`.
pub fn feed_public_key(feed: &Feed) -> Result<String, String> {
    let Some(path) = &feed.pgp_private_key_file else {
        return Err(format!(
            "feed '{}' has no pgp_private_key_file; make a key pair with `flagsync pgp keygen --feed {}`",
            feed.name, feed.name
        ));
    };
    let key = read_secret_key(path)
        .map_err(|e| key_problem(&feed.name, "pgp_private_key_file", path, e))?;
    public_armor(&key)
}

/// Within this of its expiry, a key is warned about.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A key's expiry as `flagsync check`, the status page and the run email
/// tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExpiry {
    /// `pgp_private_key_file` or `pgp_signer_key_file`.
    pub setting: &'static str,
    /// Seconds since the epoch.
    pub expires_at: u64,
    pub expired: bool,
    /// What to show: names the feed, the setting, the date and the fix.
    pub message: String,
}

/// The feed's keys that expire within [`EXPIRY_WARNING`] of `now`
/// (seconds since the epoch) or have expired. Key files that cannot be
/// read are left to [`load_keys`]'s errors.
pub fn expiring_keys(feed: &Feed, now: u64) -> Vec<KeyExpiry> {
    let mut found = Vec::new();
    if let Some(path) = &feed.pgp_private_key_file {
        if let Ok(key) = read_secret_key(path) {
            let public = key.to_public_key();
            if let Some(at) = expiry_of(&public, true) {
                found.extend(judge_expiry(feed, "pgp_private_key_file", at, now));
            }
        }
    }
    if let Some(path) = &feed.pgp_signer_key_file {
        if let Ok(key) = read_public_key(path) {
            if let Some(at) = expiry_of(&key, false) {
                found.extend(judge_expiry(feed, "pgp_signer_key_file", at, now));
            }
        }
    }
    found
}

fn judge_expiry(feed: &Feed, setting: &'static str, at: u64, now: u64) -> Option<KeyExpiry> {
    if at > now.saturating_add(EXPIRY_WARNING.as_secs()) {
        return None;
    }
    let date = jiff::Timestamp::from_second(at as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| at.to_string());
    let expired = at <= now;
    let fix = if setting == "pgp_private_key_file" {
        format!(
            "make a new key pair (`flagsync pgp keygen --feed {}`) or extend it (`gpg --quick-set-expire FPR 2y` and export again), and send the sender the new public key",
            feed.name
        )
    } else {
        "ask the sender for their renewed public key and put it in that file".to_string()
    };
    let when = if expired {
        format!("expired on {date}")
    } else {
        format!("expires on {date}")
    };
    Some(KeyExpiry {
        setting,
        expires_at: at,
        expired,
        message: format!("feed '{}': the key in {setting} {when}: {fix}", feed.name),
    })
}

/// When `key` stops being usable for the feed: the earliest of the
/// primary key's expiry and that of its subkeys for encryption (`ours`)
/// or its subkeys for signing (the sender's); `None`: never.
fn expiry_of(key: &SignedPublicKey, ours: bool) -> Option<u64> {
    let created = u64::from(key.primary_key.created_at().as_secs());
    let primary = latest_expiry(
        key.details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(key.details.direct_signatures.iter()),
    )
    .map(|d| created + d);
    let wanted = |s: &Signature| {
        let flags = s.key_flags();
        if ours {
            flags.encrypt_comms() || flags.encrypt_storage()
        } else {
            flags.sign()
        }
    };
    // A key is usable while one of its usable subkeys is: the latest.
    let subkeys = key
        .public_subkeys
        .iter()
        .filter(|s| s.signatures.iter().any(wanted))
        .map(|s| {
            let created = u64::from(s.key.created_at().as_secs());
            latest_expiry(s.signatures.iter()).map(|d| created + d)
        })
        .collect::<Vec<_>>();
    let subkey = if subkeys.is_empty() || subkeys.iter().any(Option::is_none) {
        None
    } else {
        subkeys.into_iter().flatten().max()
    };
    match (primary, subkey) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The key expiration (seconds after the key's creation) of the newest of
/// `signatures`; `None` when it sets none.
fn latest_expiry<'s>(signatures: impl Iterator<Item = &'s Signature>) -> Option<u64> {
    signatures
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
        .and_then(|s| s.key_expiration_time())
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d > 0)
}

/// For `flagsync check`: the feed's key files read as a run would read
/// them; the problem, naming the feed and the setting, if any.
pub fn check_keys(feed: &Feed) -> Result<(), String> {
    load_keys(feed).map(|_| ())
}

/// What `flagsync check` prints of a feed's keys: the fingerprints.
pub fn describe_keys(feed: &Feed) -> Option<String> {
    let keys = load_keys(feed).ok()??;
    let mut text = format!(
        "feed '{}': OpenPGP key {:X}",
        feed.name,
        keys.own.fingerprint()
    );
    if let Some(signer) = &keys.signer {
        text.push_str(&format!(
            ", sender's key {:X}{}",
            signer.fingerprint(),
            if keys.require_signature {
                " (signature required)"
            } else {
                ""
            }
        ));
    }
    Some(text)
}

/// A warning when the feed's secret key file may be read by other users
/// than flagsync's (group or others): whoever reads it reads every file.
pub fn key_file_mode_warning(feed: &Feed) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = feed.pgp_private_key_file.as_ref()?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        let shown = printable(&path.display().to_string()).into_owned();
        format!(
            "feed '{}': pgp_private_key_file {shown} can be read by other users (mode {mode:04o}): `chmod 600 {shown}`",
            feed.name
        )
    })
}

/// Whether `name` ends like an OpenPGP file's.
pub fn has_openpgp_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    PGP_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_boms_are_not_openpgp() {
        for head in [
            &b"id,name\n1,Ann\n"[..],
            b"\xEF\xBB\xBFid,name\n",
            b"\xFF\xFEi\x00d\x00",
            b"\xFE\xFF\x00i\x00d",
            // "Émile" in UTF-8: 0xC3 is also a new-format SKESK header.
            "\u{C9}mile,Zola\n".as_bytes(),
            "\u{C4}sa,\u{C5}berg\n".as_bytes(),
            b"\x1F\x8B\x08\x00",
            b"PK\x03\x04",
            b"",
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
        ] {
            assert!(!starts_like_openpgp(head), "{head:?}");
            assert!(!is_openpgp(&head.to_vec(), "hr.csv"), "{head:?}");
        }
        // Even named .pgp: a BOM or text is a CSV file.
        assert!(!is_openpgp(&b"\xEF\xBB\xBFid\n".to_vec(), "hr.csv.pgp"));
        assert!(!is_openpgp(&b"id,name\n".to_vec(), "hr.pgp"));
    }

    #[test]
    fn openpgp_messages_are_recognised() {
        // gpg 2.2: an old-format PKESK (RSA: two length bytes), version 3.
        assert!(starts_like_openpgp(b"\x85\x01\x8c\x03\x3d\x5e"));
        // cv25519: one length byte.
        assert!(starts_like_openpgp(b"\x84\x5e\x03\xae\x80"));
        // New format PKESK, SKESK, one-pass signature, compressed, literal.
        assert!(starts_like_openpgp(b"\xc1\x5e\x03\x00"));
        assert!(starts_like_openpgp(b"\xc3\x0d\x04\x09"));
        assert!(starts_like_openpgp(b"\x90\x0d\x03\x00"));
        assert!(starts_like_openpgp(b"\xa3\x01\x78\x9c"));
        assert!(starts_like_openpgp(b"\xcb\x10b\x06hr.csv"));
        assert!(starts_like_openpgp(b"-----BEGIN PGP MESSAGE-----\n"));
        assert!(starts_like_openpgp(b"\r\n-----BEGIN PGP MESSAGE-----\r\n"));
        // Named .gpg, a packet header whose body is damaged: still OpenPGP
        // (so the reason speaks of OpenPGP).
        assert!(is_openpgp(&b"\x85\x01\x8c\xff".to_vec(), "hr.csv.gpg"));
        assert!(!is_openpgp(&b"\x85\x01\x8c\xff".to_vec(), "hr.csv"));
    }

    #[test]
    fn a_record_reads_as_a_sentence() {
        let record = PgpRecord {
            decrypted_with: Some("AB12".into()),
            signature: SignatureState::Verified,
            signer: Some("CD34".into()),
            signer_user_id: Some("HR <hr@example.com>".into()),
        };
        assert_eq!(
            record.describe(),
            "encrypted for this feed's key AB12; signature verified: signed by CD34 (HR <hr@example.com>)"
        );
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"signature\":\"verified\""), "{json}");
    }
}
