//! OpenPGP-encrypted files (issue 21): files encrypted and signed by real
//! GnuPG (RSA and Ed25519/Curve25519 keys, binary and armoured, compressed
//! or not, a `.csv.gz.pgp`) decrypt and import like the plain file; keys
//! made by `flagsync pgp keygen` work in GnuPG both ways; a file signed by
//! another key, unsigned where a signature is required, encrypted for
//! another key, damaged, sent to a feed without a key or decrypting past
//! `max_file_size` is a failed run that changes nothing; `flagsync check`
//! refuses unusable key files and warns of expiring ones.
//!
//! Each test has its own GnuPG home (`--batch`, empty passphrases, RSA
//! 2048 to keep key generation quick); its agent is stopped when the test
//! ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::server::*;
use crate::util::*;

/// A GnuPG home of its own.
struct Gpg {
    home: TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        require_tool("gpg");
        // Short: the agent's socket path must fit in 108 bytes.
        let home = tempfile::Builder::new()
            .prefix("fs-gpg-")
            .tempdir_in("/tmp")
            .expect("a GnuPG home");
        Gpg { home }
    }

    /// Runs `gpg --batch ... ARGS`; it must succeed. Returns stdout.
    #[track_caller]
    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--yes",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--trust-model",
                "always",
            ])
            .args(args)
            .output()
            .expect("cannot start gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// An RSA 2048 key pair (sign and encrypt) for `email`, expiring after
    /// `expire` (`never`, `10d`).
    fn rsa(&self, email: &str, expire: &str) {
        self.run(&[
            "--quick-gen-key",
            &format!("Test <{email}>"),
            "rsa2048",
            "sign,encr",
            expire,
        ]);
    }

    /// An Ed25519 primary key (signing) with a Curve25519 subkey
    /// (encryption) for `email`.
    fn ed25519(&self, email: &str) {
        self.run(&[
            "--quick-gen-key",
            &format!("Test <{email}>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let fpr = self.fingerprint(email);
        self.run(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
    }

    fn fingerprint(&self, email: &str) -> String {
        let listing = self.run(&["--with-colons", "--list-keys", email]);
        String::from_utf8_lossy(&listing)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').nth(8))
            .expect("a fingerprint")
            .to_string()
    }

    /// `--export-secret-keys` of `email` into `path` (armoured or binary).
    fn export_secret(&self, email: &str, path: &Path, armor: bool) -> PathBuf {
        let mut args = vec!["--export-secret-keys"];
        if armor {
            args.push("--armor");
        }
        args.push(email);
        fs::write(path, self.run(&args)).expect("write the secret key");
        path.to_path_buf()
    }

    /// `--export` (the public key) of `email` into `path`, armoured.
    fn export_public(&self, email: &str, path: &Path) -> PathBuf {
        fs::write(path, self.run(&["--export", "--armor", email])).expect("write the public key");
        path.to_path_buf()
    }

    /// Encrypts `input` to `to` (signed by `signer` when given) into
    /// `output`, with the extra options given.
    fn encrypt(
        &self,
        input: &Path,
        to: &str,
        signer: Option<&str>,
        extra: &[&str],
        output: &Path,
    ) -> PathBuf {
        let mut args = vec!["--recipient", to];
        if let Some(signer) = signer {
            args.extend(["--local-user", signer, "--sign"]);
        }
        args.extend(["--encrypt", "--output", output.to_str().unwrap()]);
        args.extend_from_slice(extra);
        args.push(input.to_str().unwrap());
        self.run(&args);
        output.to_path_buf()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // The agent the commands started would outlive the test.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// The feed `hr` decrypting with `own`, checking signatures with `signer`.
fn pgp_feed(own: &Path, signer: Option<&Path>, require: bool) -> Feed {
    let mut feed = Feed::hr("hr").extra(&format!(
        "pgp_private_key_file = {}",
        toml_str(own.to_str().unwrap())
    ));
    if let Some(signer) = signer {
        feed = feed.extra(&format!(
            "pgp_signer_key_file = {}",
            toml_str(signer.to_str().unwrap())
        ));
    }
    if require {
        feed = feed.extra("require_signature = true");
    }
    feed
}

/// Our key and the sender's, made by `make`, exported to `dir`: our
/// secret key (armoured or binary) and the sender's public key.
fn keys(gpg: &Gpg, dir: &Path, make: fn(&Gpg, &str), armor: bool) -> (PathBuf, PathBuf) {
    make(gpg, "flagsync@example.com");
    make(gpg, "sender@example.com");
    let own = gpg.export_secret("flagsync@example.com", &dir.join("own.key"), armor);
    let signer = gpg.export_public("sender@example.com", &dir.join("sender.asc"));
    (own, signer)
}

fn rsa_key(gpg: &Gpg, email: &str) {
    gpg.rsa(email, "never");
}

fn ed25519_key(gpg: &Gpg, email: &str) {
    gpg.ed25519(email);
}

/// Each variant of a signed and encrypted file imports like the plain
/// file, and its run records the key and the verified signer.
fn variants_import(make: fn(&Gpg, &str), variants: &[(&str, &[&str])]) {
    let gpg = Gpg::new();
    let content = hr_file(1..=30);
    let want = plain_export(&content);
    let keys_dir = tempfile::tempdir().unwrap();
    let (own, signer) = keys(&gpg, keys_dir.path(), make, false);
    let own_fpr = gpg.fingerprint("flagsync@example.com");
    let signer_fpr = gpg.fingerprint("sender@example.com");
    for (name, options) in variants {
        let env = Env::new(&[pgp_feed(&own, Some(&signer), true)]);
        let clear = env.input("hr.csv", &content);
        let clear = if name.contains(".gz.") {
            let gz = env.root.join("in/hr.csv.gz");
            let out = Command::new("gzip")
                .args(["-k", "-f"])
                .arg(&clear)
                .output()
                .unwrap();
            assert!(out.status.success());
            gz
        } else {
            clear
        };
        let file = gpg.encrypt(
            &clear,
            "flagsync@example.com",
            Some("sender@example.com"),
            options,
            &env.root.join("in").join(name),
        );
        let run = env.import("hr", &file, &[]);
        assert_eq!(run.state(), "applied", "{name}: {:#}", run.json);
        run.assert_counts(&[("rows", 30), ("added", 30), ("flagged", 0)]);
        assert_eq!(env.export("hr"), want, "{name}");
        let container = if name.contains(".gz.") {
            "pgp, gzip"
        } else {
            "pgp"
        };
        assert_eq!(run.json["container"], container, "{name}");
        let pgp = &run.json["pgp"];
        assert_eq!(pgp["decrypted_with"], own_fpr.as_str(), "{name}: {pgp:#}");
        assert_eq!(pgp["signature"], "verified", "{name}: {pgp:#}");
        assert_eq!(pgp["signer"], signer_fpr.as_str(), "{name}: {pgp:#}");
        assert_eq!(
            pgp["signer_user_id"], "Test <sender@example.com>",
            "{name}: {pgp:#}"
        );
        // `runs show` says it, text and JSON.
        let shown = env.run(&["runs", "show", &run.id()]);
        assert!(
            shown.stdout.contains(&format!("signed by {signer_fpr}"))
                && shown.stdout.contains(&format!("packed: {container}")),
            "{}",
            shown.stdout
        );
        assert_eq!(env.run_show(&run.id())["pgp"], *pgp);
    }
}

const VARIANTS: [(&str, &[&str]); 4] = [
    // gpg's default: ZIP-compressed, binary.
    ("hr.csv.pgp", &[]),
    ("hr.csv.asc", &["--armor"]),
    ("hr.csv.gpg", &["--compress-algo", "none"]),
    ("hr.csv.gz.pgp", &["--compress-algo", "none"]),
];

#[test]
fn rsa_signed_and_encrypted_files_import() {
    variants_import(rsa_key, &VARIANTS);
}

#[test]
fn ed25519_signed_and_encrypted_files_import() {
    variants_import(ed25519_key, &VARIANTS[..3]);
}

/// What other senders' settings make: every cipher and compression GnuPG
/// writes (BZip2 too), the recipient's key ID hidden, a file encrypted to
/// the sender's own key as well (ours second).
#[test]
fn what_other_senders_settings_make_is_read() {
    variants_import(
        rsa_key,
        &[
            ("bzip2.csv.pgp", &["--compress-algo", "bzip2"]),
            ("zlib.csv.pgp", &["--compress-algo", "zlib"]),
            ("cast5.csv.pgp", &["--cipher-algo", "CAST5"]),
            ("3des.csv.pgp", &["--cipher-algo", "3DES"]),
            ("camellia.csv.pgp", &["--cipher-algo", "CAMELLIA256"]),
            ("hidden.csv.pgp", &["--throw-keyids"]),
            ("two.csv.pgp", &["--recipient", "sender@example.com"]),
        ],
    );
}

/// A file without an integrity check (RFC 2440's format, which GnuPG
/// refuses too) and one encrypted with a password only fail, saying what
/// to ask of the sender.
#[test]
fn old_and_password_encrypted_files_fail_clearly() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, _) = keys(&gpg, dir.path(), rsa_key, false);
    let env = Env::new(&[pgp_feed(&own, None, false)]);
    let clear = env.input("hr.csv", hr_file(1..=5));
    let old = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        None,
        &["--rfc2440"],
        &env.root.join("in/old.pgp"),
    );
    let reason = refused_import(&env, &old);
    assert!(reason.contains("without an integrity check"), "{reason}");
    let symmetric = env.root.join("in/password.gpg");
    gpg.run(&[
        "--symmetric",
        "--passphrase",
        "secret",
        "--output",
        symmetric.to_str().unwrap(),
        clear.to_str().unwrap(),
    ]);
    let reason = refused_import(&env, &symmetric);
    assert!(reason.contains("with a password"), "{reason}");
}

/// Our key exported armoured works too, and a file that is encrypted but
/// not signed imports where no signature is required (recorded as such).
#[test]
fn an_armoured_key_and_an_unsigned_file() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, _) = keys(&gpg, dir.path(), rsa_key, true);
    let env = Env::new(&[pgp_feed(&own, None, false)]);
    let clear = env.input("hr.csv", hr_file(1..=5));
    let file = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        None,
        &[],
        &env.root.join("in/hr.pgp"),
    );
    let run = env.import("hr", &file, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["pgp"]["signature"], "unsigned", "{:#}", run.json);
    // Signed, but nothing to check it with: imported, marked unchecked.
    let clear = env.input("hr2.csv", hr_file(1..=6));
    let file = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/hr2.pgp"),
    );
    let run = env.import("hr", &file, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(run.json["pgp"]["signature"], "unchecked", "{:#}", run.json);
    assert_eq!(
        run.json["pgp"]["signer"],
        gpg.fingerprint("sender@example.com").as_str()
    );
}

/// `flagsync pgp keygen` makes a key GnuPG reads both ways: its public
/// key (printed, and by `feeds show --pgp-public-key`) imports into gpg,
/// which encrypts to it, and its secret key imports into gpg too.
#[test]
fn keygen_keys_work_with_gnupg() {
    let gpg = Gpg::new();
    let env = Env::hr();
    let made = env.run(&["pgp", "keygen", "--feed", "hr"]);
    assert_eq!(made.code, 0, "{made:#?}");
    let path = env.data_dir.join("hr/pgp.key");
    assert!(
        made.stdout
            .contains(&format!("pgp_private_key_file = \"{}\"", path.display())),
        "{}",
        made.stdout
    );
    assert!(made.stdout.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    let before = fs::read(&path).unwrap();
    let again = env.run(&["pgp", "keygen", "--feed", "hr"]);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("never overwritten"), "{again:#?}");
    assert_eq!(fs::read(&path).unwrap(), before);

    env.write_config(&config_text(&env.data_dir, &[pgp_feed(&path, None, false)]));
    let check = env.run(&["check"]);
    assert_eq!(check.code, 0, "{check:#?}");
    let shown = env.run(&["feeds", "show", "hr"]);
    assert!(
        shown.stdout.contains(&format!(
            "OpenPGP files are decrypted with {}",
            path.display()
        )),
        "{shown:#?}"
    );
    let public = env.run(&["feeds", "show", "hr", "--pgp-public-key"]);
    assert_eq!(public.code, 0, "{public:#?}");
    let public_file = env.input("hr-public.asc", &public.stdout);
    gpg.run(&["--import", public_file.to_str().unwrap()]);
    let clear = env.input("hr.csv", hr_file(1..=8));
    gpg.rsa("sender@example.com", "never");
    let file = gpg.encrypt(
        &clear,
        "flagsync feed hr",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/hr.csv.pgp"),
    );
    let run = env.import("hr", &file, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    assert_eq!(env.exported_ids("hr").len(), 8);

    // gpg reads the secret key file as it is, and decrypts with it.
    gpg.run(&["--import", path.to_str().unwrap()]);
    let clear_again = gpg.run(&["--decrypt", file.to_str().unwrap()]);
    assert_eq!(clear_again, fs::read(&clear).unwrap());

    // The Ed25519 option, for another feed.
    let ed = Env::hr();
    let made = ed.run(&["pgp", "keygen", "--feed", "hr", "--algorithm", "ed25519"]);
    assert_eq!(made.code, 0, "{made:#?}");
    let path = ed.data_dir.join("hr/pgp.key");
    ed.write_config(&config_text(&ed.data_dir, &[pgp_feed(&path, None, false)]));
    let public = ed.run(&["feeds", "show", "hr", "--pgp-public-key"]);
    let public_file = ed.input("public.asc", &public.stdout);
    let gpg2 = Gpg::new();
    gpg2.run(&["--import", public_file.to_str().unwrap()]);
    let clear = ed.input("hr.csv", hr_file(1..=4));
    let file = gpg2.encrypt(
        &clear,
        "flagsync feed hr",
        None,
        &[],
        &ed.root.join("in/x.gpg"),
    );
    let run = ed.import("hr", &file, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
}

/// Every mis-keyed, unsigned, damaged or oversized file fails with a
/// reason that says what to do, and changes nothing.
#[test]
fn bad_files_fail_and_change_nothing() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, signer) = keys(&gpg, dir.path(), rsa_key, false);
    gpg.rsa("other@example.com", "never");
    let env = Env::new(&[pgp_feed(&own, Some(&signer), true).extra("max_file_size = \"200KB\"")]);
    let good = env.input("day1.csv", hr_file(1..=10));
    let good = gpg.encrypt(
        &good,
        "flagsync@example.com",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/day1.pgp"),
    );
    assert_eq!(env.import("hr", &good, &[]).state(), "applied");
    // Different people, so that a half-read file would show.
    let clear = env.input("hr.csv", hr_file(100..=400));

    let other_signer = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        Some("other@example.com"),
        &[],
        &env.root.join("in/other-signer.pgp"),
    );
    let reason = refused_import(&env, &other_signer);
    assert!(
        reason.contains(&format!(
            "signed by key {}",
            gpg.fingerprint("other@example.com")
        )) && reason.contains("not by this feed's signer key"),
        "{reason}"
    );

    let unsigned = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        None,
        &[],
        &env.root.join("in/unsigned.pgp"),
    );
    let reason = refused_import(&env, &unsigned);
    assert!(
        reason.contains("not signed") && reason.contains("require_signature"),
        "{reason}"
    );

    // Not encrypted at all, where signatures are required.
    let reason = refused_import(&env, &clear);
    assert!(reason.contains("not an OpenPGP message"), "{reason}");

    let for_other = gpg.encrypt(
        &clear,
        "other@example.com",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/for-other.pgp"),
    );
    let reason = refused_import(&env, &for_other);
    assert!(
        reason.contains("was encrypted for key")
            && reason.contains(&gpg.fingerprint("flagsync@example.com"))
            && reason.contains("flagsync feeds show hr --pgp-public-key"),
        "{reason}"
    );

    let whole = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        Some("sender@example.com"),
        &["--compress-algo", "none"],
        &env.root.join("in/whole.pgp"),
    );
    let bytes = fs::read(&whole).unwrap();
    for cut_at in [bytes.len() / 2, bytes.len() - 30, 200] {
        let cut = env.input("cut.pgp", &bytes[..cut_at]);
        let reason = refused_import(&env, &cut);
        assert!(
            reason.contains("OpenPGP file is cut short") && reason.contains("send it again"),
            "cut at {cut_at}: {reason}"
        );
    }
    let armoured = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        Some("sender@example.com"),
        &["--armor"],
        &env.root.join("in/whole.asc"),
    );
    let text = fs::read(&armoured).unwrap();
    let cut = env.input("cut.asc", &text[..text.len() - 40]);
    let reason = refused_import(&env, &cut);
    assert!(
        reason.contains("armoured OpenPGP file is cut short or damaged"),
        "{reason}"
    );
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0xFF;
    let flipped = env.input("flipped.pgp", flipped);
    let reason = refused_import(&env, &flipped);
    assert!(reason.contains("damaged"), "{reason}");

    // Decrypting past max_file_size (200 KB): zeros compress well.
    let big = env.input("big.csv", format!("{HR_HEADER}\n{}", "0".repeat(1_000_000)));
    let bomb = gpg.encrypt(
        &big,
        "flagsync@example.com",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/big.pgp"),
    );
    assert!(fs::metadata(&bomb).unwrap().len() < 200_000);
    let reason = refused_import(&env, &bomb);
    assert!(
        reason.contains("decrypts to more than 200000 bytes") && reason.contains("max_file_size"),
        "{reason}"
    );
    assert_eq!(env.exported_ids("hr").len(), 10);
}

#[test]
fn an_encrypted_file_for_a_feed_without_a_key_fails() {
    let gpg = Gpg::new();
    gpg.rsa("flagsync@example.com", "never");
    let env = Env::hr();
    let clear = env.input("hr.csv", hr_file(1..=5));
    let file = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        None,
        &["--armor"],
        &env.root.join("in/hr.csv.asc"),
    );
    let reason = refused_import(&env, &file);
    assert!(
        reason.contains("has no pgp_private_key_file")
            && reason.contains("flagsync pgp keygen --feed hr"),
        "{reason}"
    );
    assert!(env.exported_ids("hr").is_empty());
}

/// `flagsync check` names the feed and the setting of a key file it
/// cannot use, and warns of a key that expires within 30 days.
#[test]
fn check_refuses_unusable_keys_and_warns_of_expiry() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, signer) = keys(&gpg, dir.path(), rsa_key, false);
    let env = Env::new(&[pgp_feed(&own, Some(&signer), true)]);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&own, fs::Permissions::from_mode(0o600)).unwrap();
    let ok = env.run(&["check"]);
    assert_eq!(ok.code, 0, "{ok:#?}");
    assert!(!ok.stderr.contains("warning"), "{ok:#?}");
    assert!(
        ok.stdout.contains(&gpg.fingerprint("flagsync@example.com")),
        "{ok:#?}"
    );

    let check_with = |feed: Feed| {
        env.write_config(&config_text(&env.data_dir, &[feed]));
        env.run(&["check"])
    };
    // Readable by others: a warning with the command that fixes it.
    fs::set_permissions(&own, fs::Permissions::from_mode(0o644)).unwrap();
    let open = env.run(&["check"]);
    assert_eq!(open.code, 0, "{open:#?}");
    assert!(
        open.stderr
            .contains("can be read by other users (mode 0644): `chmod 600"),
        "{open:#?}"
    );
    fs::set_permissions(&own, fs::Permissions::from_mode(0o600)).unwrap();

    let missing = check_with(pgp_feed(&dir.path().join("nope.key"), None, false));
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(
        missing.stderr.contains("feed 'hr': pgp_private_key_file")
            && missing.stderr.contains("does not exist"),
        "{missing:#?}"
    );
    let public = check_with(pgp_feed(&signer, None, false));
    assert_eq!(public.code, 2, "{public:#?}");
    assert!(
        public.stderr.contains("holds a public key")
            && public.stderr.contains("--export-secret-keys"),
        "{public:#?}"
    );
    let not_a_key = env.input("not-a-key.asc", "id,name\n1,Ann\n");
    let garbage = check_with(pgp_feed(&not_a_key, None, false));
    assert_eq!(garbage.code, 2, "{garbage:#?}");
    assert!(
        garbage.stderr.contains("is not an OpenPGP key"),
        "{garbage:#?}"
    );
    let unreadable_signer = check_with(pgp_feed(&own, Some(&not_a_key), false));
    assert!(
        unreadable_signer.stderr.contains("pgp_signer_key_file"),
        "{unreadable_signer:#?}"
    );

    // require_signature without a signer key: a configuration error.
    let no_signer = check_with(
        Feed::hr("hr")
            .extra("require_signature = true")
            .extra(&format!(
                "pgp_private_key_file = {}",
                toml_str(own.to_str().unwrap())
            )),
    );
    assert_eq!(no_signer.code, 2, "{no_signer:#?}");
    assert!(
        no_signer
            .stderr
            .contains("require_signature = true needs pgp_signer_key_file"),
        "{no_signer:#?}"
    );

    // A key protected by a passphrase: refused with the way out.
    gpg.rsa("locked@example.com", "never");
    let locked = dir.path().join("locked.key");
    let out = Command::new("gpg")
        .env("GNUPGHOME", gpg.home.path())
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "secret",
            "--passwd",
            "locked@example.com",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("gpg")
        .env("GNUPGHOME", gpg.home.path())
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "secret",
            "--export-secret-keys",
            "locked@example.com",
        ])
        .output()
        .unwrap();
    fs::write(&locked, out.stdout).unwrap();
    let protected = check_with(pgp_feed(&locked, None, false));
    assert_eq!(protected.code, 2, "{protected:#?}");
    assert!(
        protected.stderr.contains("protected by a passphrase")
            && protected.stderr.contains("--passwd"),
        "{protected:#?}"
    );

    // Expiring in 10 days: check passes and warns.
    gpg.rsa("soon@example.com", "10d");
    let soon = gpg.export_secret("soon@example.com", &dir.path().join("soon.key"), false);
    let warned = check_with(pgp_feed(&soon, None, false));
    assert_eq!(warned.code, 0, "{warned:#?}");
    assert!(
        warned
            .stderr
            .contains("warning: feed 'hr': the key in pgp_private_key_file expires on"),
        "{warned:#?}"
    );

    // Made in 2020 for a day: expired, said loudly, and check still passes
    // (decrypting works; the sender's tools refuse the key).
    gpg.run(&[
        "--faked-system-time",
        "20200101T000000",
        "--quick-gen-key",
        "Test <old@example.com>",
        "rsa2048",
        "sign,encr",
        "1d",
    ]);
    let old = gpg.export_secret("old@example.com", &dir.path().join("old.key"), false);
    let expired = check_with(pgp_feed(&own, Some(&old), false));
    assert_eq!(expired.code, 0, "{expired:#?}");
    assert!(
        expired.stderr.contains(
            "warning: EXPIRED: feed 'hr': the key in pgp_signer_key_file expired on 2020-01-02"
        ),
        "{expired:#?}"
    );
    let doctor = env.run(&["doctor"]);
    assert!(doctor.stdout.contains("EXPIRED: feed 'hr'"), "{doctor:#?}");
}

/// Over sFTP: a `.csv.gz.pgp` upload is decrypted, expanded and applied;
/// the archive keeps it as sent.
#[test]
fn an_encrypted_upload_over_sftp() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, signer) = keys(&gpg, dir.path(), rsa_key, false);
    let s = Setup::with_feed(pgp_feed(&own, Some(&signer), true), &[], &[]);
    let env = &s.env;
    let clear = env.input("hr.csv", hr_file(1..=12));
    let out = Command::new("gzip")
        .args(["-k", "-f"])
        .arg(&clear)
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = gpg.encrypt(
        &env.root.join("in/hr.csv.gz"),
        "flagsync@example.com",
        Some("sender@example.com"),
        &[],
        &env.root.join("in/hr.csv.gz.pgp"),
    );
    let sent = fs::read(&file).unwrap();
    let results = s.key_client().session(vec![serde_json::json!({
        "op": "put", "path": "/upload/hr.csv.gz.pgp", "local": file.to_str().unwrap()
    })]);
    ok(&results[0], "upload hr.csv.gz.pgp");
    let runs = s.wait_for_exactly(1);
    assert_run(&runs[0], "hr.csv.gz.pgp", "applied", &[("added", 12)]);
    assert_eq!(runs[0]["container"], "pgp, gzip");
    assert_eq!(runs[0]["pgp"]["signature"], "verified", "{:#}", runs[0]);
    assert_eq!(env.exported_ids("hr").len(), 12);
    let archived = archived_name(env, "hr", "hr.csv.gz.pgp");
    assert_eq!(
        fs::read(archive_dir(env, "hr").join(archived)).unwrap(),
        sent,
        "the archive keeps the file as uploaded"
    );

    // Its support bundles carry the file decrypted (the key stays here;
    // the bundle's configuration has no key file) and replay identically.
    let id = run_id_of(&runs[0]);
    for (flags, tag) in [(&[][..], "plain"), (&["--redact"][..], "redacted")] {
        let (bundle, out) = crate::support::bundle_with(env, &id, flags, tag);
        assert_eq!(out.code, 0, "{out:#?}");
        let entries = crate::support::entries(&bundle);
        let carried = &entries["file/hr.csv.gz.pgp"];
        assert!(
            carried.starts_with(b"\x1F\x8B"),
            "{tag}: a gzip file, decrypted"
        );
        if tag == "plain" {
            assert_eq!(carried, &fs::read(env.root.join("in/hr.csv.gz")).unwrap());
        }
        let config = String::from_utf8_lossy(&entries["config.toml"]).into_owned();
        assert!(!config.contains("pgp_private_key_file"), "{config}");
        let (code, replayed) = crate::support::replay(env, &bundle);
        assert_eq!(code, 0, "{tag}: {replayed:#}");
        assert_eq!(replayed["verdict"], "identical", "{tag}: {replayed:#}");
    }

    // Signed by another key, armoured: a failed run whose report gives the
    // reason and takes no armour line for a header.
    gpg.rsa("other@example.com", "never");
    let forged = gpg.encrypt(
        &clear,
        "flagsync@example.com",
        Some("other@example.com"),
        &["--armor"],
        &env.root.join("in/forged.csv.asc"),
    );
    let results = s.key_client().session(vec![serde_json::json!({
        "op": "put", "path": "/upload/forged.csv.asc", "local": forged.to_str().unwrap()
    })]);
    ok(&results[0], "upload forged.csv.asc");
    let runs = s.wait_for_exactly(2);
    let failed = runs
        .iter()
        .find(|r| r["file"] == "forged.csv.asc")
        .expect("the forged file's run");
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let report = env.error_report_text("hr", "forged.csv.asc");
    assert!(
        report.contains("not by this feed's signer key") && !report.contains("BEGIN PGP"),
        "{report}"
    );
    assert_eq!(env.exported_ids("hr").len(), 12);
}

/// A key that expires within 30 days shows on the feed's card of the
/// status page; an encrypted run's page says how it was read.
#[test]
fn the_status_page_warns_of_an_expiring_key() {
    use crate::web::{Web, ADMIN_PASSWORD};
    let gpg = Gpg::new();
    gpg.rsa("soon@example.com", "10d");
    let dir = tempfile::tempdir().unwrap();
    let soon = gpg.export_secret("soon@example.com", &dir.path().join("soon.key"), false);
    let web = Web::start_in(sftp_env_with(&[pgp_feed(&soon, None, false)], &[], &[]));
    let (code, _, _) = web.login(ADMIN_PASSWORD);
    assert_eq!(code, 303);
    let (code, _, page) = web.curl(&[&web.url("/")]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("the key in pgp_private_key_file expires on"),
        "{page}"
    );
    let clear = web.env.input("hr.csv", hr_file(1..=3));
    let file = gpg.encrypt(
        &clear,
        "soon@example.com",
        None,
        &[],
        &web.env.root.join("in/hr.csv.gpg"),
    );
    let run = web.env.import("hr", &file, &[]);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    let (code, _, page) = web.curl(&[&web.url(&format!("/runs/{}", run.id()))]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<dt>Packed as</dt><dd id=\"container\">pgp (read decrypted; the archive keeps the file as sent)</dd>")
            && page.contains("encrypted for this feed&#x27;s key")
            && page.contains("not signed"),
        "{page}"
    );
}

/// A held encrypted file is decrypted again from its kept copy when
/// confirmed.
#[test]
fn a_held_encrypted_file_is_confirmed_from_its_kept_copy() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let (own, signer) = keys(&gpg, dir.path(), rsa_key, false);
    let env = Env::new(&[pgp_feed(&own, Some(&signer), true)]);
    let encrypt = |name: &str, content: String, signer: &str| {
        let clear = env.input(&format!("{name}.csv"), content);
        gpg.encrypt(
            &clear,
            "flagsync@example.com",
            Some(signer),
            &["--armor"],
            &env.root.join(format!("in/{name}.csv.asc")),
        )
    };
    let day1 = encrypt("day1", hr_file(1..=40), "sender@example.com");
    assert_eq!(env.import("hr", &day1, &[]).state(), "applied");
    let day2 = encrypt("day2", hr_file(1..=20), "sender@example.com");
    let run = env.import("hr", &day2, &[]);
    assert_eq!(run.state(), "held", "{:#}", run.json);
    assert_eq!(run.json["pgp"]["signature"], "verified", "{:#}", run.json);
    let out = env.run(&["runs", "confirm", &run.id(), "--json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let confirmed = out.json("runs confirm");
    assert_eq!(confirmed["state"], "applied", "{confirmed:#}");
    assert_eq!(env.exported_ids("hr").len(), 20);
}
