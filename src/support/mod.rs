//! Support bundles: one file that lets support reproduce a customer's run
//! on a laptop (`flagsync support bundle`, then `flagsync replay`).
//!
//! A bundle is a zip of:
//! - `manifest.json`: format and version, the flagsync that made it, when,
//!   the run, what the state before it is worth, warnings, and the SHA-256
//!   of every other entry;
//! - `config.toml`: the run's feed and the settings a run reads, nothing
//!   else (no `[sftp]`, `[web]`, `[smtp]`, no data folder, no key named
//!   like a secret);
//! - `file/<name>`: the run's file as it arrived;
//! - `before/people.jsonl`: the feed's people just before the run, one
//!   JSON object a line (`id`, `values` in field order, `hash`: the row
//!   hash the store held, when the log proves it was the same then);
//!   rebuilt from the store as it is now by putting back, newest first,
//!   what the run and every later applied run changed (the change log);
//! - `before/fingerprints.json`: the run and mapping fingerprints the
//!   hashes were made under;
//! - `run.json`, `emails.json` (the run's report mails: state, attempts,
//!   last error), `error-report.csv` when the run has one, and
//!   `doctor.txt`: `flagsync doctor`'s checks (`doctor`) where the bundle
//!   was made, by the command line or by the server for the run page's
//!   download, computed before the engine's gate is taken.
//!
//! With `--redact` (the page's `?redact=personal`) the file, the people
//! before, `run.json` and the report hold pseudonyms that validation
//! treats as it treated the real values (see `redact`); email addresses in
//! `emails.json`, `doctor.txt` and `config.toml` are replaced.
//! `--redact-groups` (`?redact=groups`) replaces the group fields' values
//! too.
//!
//! Entries are streamed into the zip (the people straight from the store),
//! each one's SHA-256 taken as it is written; `manifest.json` comes last.
//!
//! A replay seeds a store in a temporary folder with that state, runs the
//! file through the same worker as the server, and compares outcomes.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::{Config, Feed};
use crate::import::revert_change;
use crate::store::{Run, RunState, Store, StoreError};

pub mod doctor;
mod redact;
mod replay;

pub use replay::{replay, Replayed};

/// What `manifest.json` says a bundle is.
pub const FORMAT: &str = "flagsync-support-bundle";
/// The newest bundle format this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub flagsync_version: String,
    pub created_at: String,
    pub run_id: u64,
    pub feed: String,
    /// The run's file, as it arrived.
    pub file_name: String,
    /// People in the state before the run.
    pub people_before: u64,
    /// What the bundle could not do exactly, in words.
    pub warnings: Vec<String>,
    /// Personal values are pseudonyms (`--redact`).
    #[serde(default)]
    pub redacted: bool,
    /// The group fields' values are pseudonyms too (`--redact-groups`).
    #[serde(default)]
    pub groups_redacted: bool,
    /// SHA-256 (hex) of every other entry.
    pub checksums: BTreeMap<String, String>,
}

/// One person of the state before the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersonBefore {
    pub id: String,
    pub values: Vec<String>,
    /// The raw row hash the store held for them before the run, as hex;
    /// none when a run since changed them (the replay reads their row
    /// again instead of trusting it).
    pub hash: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Fingerprints {
    pub run: Option<u64>,
    pub mapping: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// The request or the bundle is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Run(#[from] crate::worker::WorkerError),
}

impl SupportError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupportError {
        let what = what.into();
        move |source| SupportError::Io { what, source }
    }
}

/// What personal data a bundle carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Redaction {
    /// The real values.
    #[default]
    None,
    /// Pseudonyms for personal values; group fields' values kept.
    Personal,
    /// Pseudonyms for group fields' values too.
    PersonalAndGroups,
}

/// Writes the bundle of run `run_id` to `out` (a new file), with
/// `doctor`'s text when given; returns its manifest. Nothing is left at
/// `out` when it fails. The people before the run are streamed from the
/// store into the zip, never held all at once.
pub fn make_bundle(
    config: &Config,
    store: &Store,
    run_id: u64,
    out: &Path,
    version: &str,
    doctor: Option<String>,
    redaction: Redaction,
) -> Result<Manifest, SupportError> {
    if out.exists() {
        return Err(SupportError::Usage(format!(
            "{} exists already; choose a new file name",
            out.display()
        )));
    }
    let run = match store.get_run(run_id) {
        Err(StoreError::UnknownRun(id)) => {
            return Err(SupportError::Usage(format!(
                "run {id} does not exist (or went with the history); `flagsync runs list` shows the runs"
            )))
        }
        other => other?,
    };
    let feed = config.feed(&run.feed).ok_or_else(|| {
        SupportError::Usage(format!(
            "feed '{}' of run {run_id} is no longer configured",
            run.feed
        ))
    })?;
    if run.state == RunState::Superseded && run.held_file.is_none() {
        return Err(SupportError::Usage(format!(
            "run {run_id} never ran ({}); bundle the run that did",
            run.reason.as_deref().unwrap_or("a newer file replaced it")
        )));
    }
    let file = run_file(config, &run)?;
    let mut warnings = Vec::new();
    let file = clear_file(config, feed, &file, &mut warnings)?;
    let before = state_before(store, feed, &run, &mut warnings)?;
    let report = run
        .error_report
        .as_deref()
        .and_then(|report| std::fs::read(report).ok());
    let mut zip = BundleWriter::create(out)?;
    let written = (|| -> Result<u64, SupportError> {
        let config_text = bundled_config(config, feed)?;
        let emails = emails_json(store, run_id)?;
        let file_entry = format!("file/{}", run.file);
        if redaction == Redaction::None {
            zip.add("config.toml", config_text.as_bytes())?;
            zip.add_file(&file_entry, file.open()?)?;
            let people = zip.add_with("before/people.jsonl", |w| {
                before.for_each(store, feed, |p| person_line(w, &p))
            })?;
            zip.add("before/fingerprints.json", &to_json(&before.fingerprints)?)?;
            zip.add("run.json", &to_json(&run)?)?;
            zip.add("emails.json", &emails)?;
            if let Some(bytes) = &report {
                zip.add("error-report.csv", bytes)?;
            }
            if let Some(text) = &doctor {
                zip.add("doctor.txt", text.as_bytes())?;
            }
            return Ok(people);
        }
        let mut file_bytes = Vec::new();
        file.open()?
            .read_to_end(&mut file_bytes)
            .map_err(SupportError::io(format!(
                "cannot read the run's file {}",
                file.path.display()
            )))?;
        let mut r = redact::Redactor::new(feed, redaction == Redaction::PersonalAndGroups, &run);
        let text = r.collect_file(file_bytes, report.as_deref());
        before.for_each(store, feed, |p| {
            r.collect_person(&p);
            Ok(())
        })?;
        r.collect_run(&run);
        r.build_id_map();
        let redacted_file = r.rewrite_file(&text);
        drop(text);
        zip.add(
            "config.toml",
            redact::config_addresses(&config_text).as_bytes(),
        )?;
        zip.add(&file_entry, &redacted_file)?;
        drop(redacted_file);
        let people = zip.add_with("before/people.jsonl", |w| {
            before.for_each(store, feed, |p| person_line(w, &r.person(&p)))
        })?;
        zip.add("before/fingerprints.json", &to_json(&before.fingerprints)?)?;
        zip.add("run.json", &to_json(&r.run(&run))?)?;
        let emails = redact::addresses_in(&String::from_utf8_lossy(&emails));
        zip.add("emails.json", emails.as_bytes())?;
        if let Some(bytes) = &report {
            zip.add("error-report.csv", &r.report(bytes))?;
        }
        if let Some(text) = &doctor {
            zip.add("doctor.txt", redact::addresses_in(text).as_bytes())?;
        }
        warnings.extend(r.finish_warnings());
        Ok(people)
    })();
    let people_before = match written {
        Ok(n) => n,
        Err(e) => {
            zip.abandon();
            return Err(e);
        }
    };
    if doctor.is_none() {
        warnings.push(
            "no doctor.txt: run `flagsync doctor` on the server and send its output along".into(),
        );
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        flagsync_version: version.into(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        run_id,
        feed: feed.name.clone(),
        file_name: run.file.clone(),
        people_before,
        warnings,
        redacted: redaction != Redaction::None,
        groups_redacted: redaction == Redaction::PersonalAndGroups,
        checksums: BTreeMap::new(),
    };
    zip.finish(manifest, out)
}

fn person_line(out: &mut dyn Write, person: &PersonBefore) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, person).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

/// Where the run's file is kept: `held/` while held, `archive/` once the
/// server processed it.
/// The run's file as a bundle carries it.
struct BundledFile {
    path: PathBuf,
    /// An OpenPGP file's clear content (an unnamed file in the data
    /// folder), carried in its place.
    clear: Option<std::fs::File>,
}

impl BundledFile {
    fn open(&self) -> Result<std::fs::File, SupportError> {
        use std::io::Seek;
        let fail = || {
            SupportError::io(format!(
                "cannot read the run's file {}",
                self.path.display()
            ))
        };
        match &self.clear {
            Some(clear) => {
                let mut clear = clear.try_clone().map_err(fail())?;
                clear.rewind().map_err(fail())?;
                Ok(clear)
            }
            None => std::fs::File::open(&self.path).map_err(fail()),
        }
    }
}

/// An OpenPGP file is carried decrypted with the feed's key: the key never
/// leaves the server (the bundle's configuration has no key files), and a
/// replay elsewhere could not read the file otherwise. One that no longer
/// decrypts (the key changed since) is carried as sent, with a warning.
fn clear_file(
    config: &Config,
    feed: &Feed,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<BundledFile, SupportError> {
    let as_sent = BundledFile {
        path: path.to_owned(),
        clear: None,
    };
    let sent = crate::import::FileInput::open(path).map_err(SupportError::io(format!(
        "cannot read the run's file {}",
        path.display()
    )))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Only an encrypted file, as the run read it: the signature rule is
    // the run's business, not the bundle's.
    let mut feed = feed.clone();
    feed.require_signature = false;
    match crate::worker::decrypted_copy(&sent, &name, &feed, &config.data_dir) {
        Ok(None) => Ok(as_sent),
        Ok(Some((clear, _))) => Ok(BundledFile {
            path: path.to_owned(),
            clear: Some(clear),
        }),
        Err(crate::import::Refusal::Refused(reason)) => {
            warnings.push(format!(
                "the file is OpenPGP-encrypted and does not decrypt now ({reason}): it is carried as sent, and a replay cannot read it"
            ));
            Ok(as_sent)
        }
        Err(crate::import::Refusal::Write(e)) => Err(SupportError::Io {
            what: format!(
                "cannot write the decrypted copy in {}",
                config.data_dir.display()
            ),
            source: e,
        }),
    }
}

fn run_file(config: &Config, run: &Run) -> Result<PathBuf, SupportError> {
    let folders = crate::layout::FeedFolders::new(config.feed_dir(&run.feed));
    let candidates = [
        run.held_file.as_ref().map(PathBuf::from),
        run.upload
            .as_ref()
            .map(|claim| folders.archive().join(claim)),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Ok(found);
    }
    let why = match (&run.upload, &run.undo_of) {
        (_, Some(of)) => format!("it is an undo or a restore of run {of}, which no file started"),
        (Some(claim), _) => format!(
            "archive/{claim} is gone (archived files are kept for `retention`)"
        ),
        (None, _) => "it was imported from the command line, which keeps no copy (the server keeps every file in archive/ for `retention`)".into(),
    };
    Err(SupportError::Usage(format!(
        "run {} has no file to bundle: {why}",
        run.run_id.unwrap_or_default()
    )))
}

/// The feed's people just before a run, as the store and the change log
/// say: the people a run since then changed, put back as they were (`None`:
/// not there then), and the stored row hashes, trusted only for people no
/// run changed since.
struct Before {
    changed: BTreeMap<String, Option<Vec<String>>>,
    hashes: HashMap<CompactString, u64>,
    fingerprints: Fingerprints,
}

impl Before {
    /// Calls `each` with every person before the run, in ID order, and
    /// returns how many there were.
    fn for_each(
        &self,
        store: &Store,
        feed: &Feed,
        mut each: impl FnMut(PersonBefore) -> std::io::Result<()>,
    ) -> Result<u64, SupportError> {
        let mut count = 0u64;
        let mut changed = self.changed.iter().peekable();
        let mut emit = |id: &str, values: Vec<String>, count: &mut u64| {
            *count += 1;
            let hash = (!self.changed.contains_key(id))
                .then(|| self.hashes.get(id))
                .flatten()
                .map(|h| format!("{h:016x}"));
            each(PersonBefore {
                id: id.to_string(),
                values,
                hash,
            })
        };
        store.for_each_recipient(&feed.name, |id, record| {
            // People a later run removed (put back here) come in ID order.
            while let Some((other, values)) = changed.next_if(|(other, _)| other.as_str() < id) {
                if let Some(values) = values {
                    emit(other, values.clone(), &mut count)?;
                }
            }
            match changed.next_if(|(other, _)| other.as_str() == id) {
                Some((_, Some(values))) => emit(id, values.clone(), &mut count),
                Some((_, None)) => Ok(()),
                None => emit(id, record.values, &mut count),
            }
        })?;
        for (other, values) in changed {
            if let Some(values) = values {
                emit(other, values.clone(), &mut count)
                    .map_err(SupportError::io("cannot write the people before the run"))?;
            }
        }
        Ok(count)
    }
}

/// What [`Before`] needs: the run's and every later applied run's changes
/// put back, newest first, on the people they touched.
fn state_before(
    store: &Store,
    feed: &Feed,
    run: &Run,
    warnings: &mut Vec<String>,
) -> Result<Before, SupportError> {
    let run_id = run.run_id.unwrap_or_default();
    let mut since: Vec<Run> = store
        .list_runs(Some(&feed.name))?
        .into_iter()
        .filter(|r| r.run_id.is_some_and(|id| id >= run_id) && r.state == RunState::Applied)
        .collect();
    since.sort_by_key(|r| std::cmp::Reverse(r.run_id));
    let mut logs = Vec::new();
    for later in &since {
        let id = later.run_id.unwrap_or_default();
        let changes = store.run_changes(&feed.name, id)?;
        if changes.is_empty() && later.counts.changes() > 0 {
            warnings.push(format!(
                "run {id} changed {} people but logged nothing (recorded before the change log existed, or its log went with `history_retention`): the state before run {run_id} is the state after it for them",
                later.counts.changes()
            ));
        }
        logs.push(changes);
    }
    let touched: Vec<String> = logs
        .iter()
        .flatten()
        .map(|c| c.id().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut people: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, values) in touched
        .iter()
        .zip(store.recipients_values(&feed.name, &touched)?)
    {
        if let Some(values) = values {
            people.insert(id.clone(), values);
        }
    }
    for changes in &logs {
        for change in changes.iter().rev() {
            revert_change(&mut people, feed, change);
        }
    }
    let changed = touched
        .into_iter()
        .map(|id| {
            let values = people.remove(&id);
            (id, values)
        })
        .collect();
    let index = store.feed_index(&feed.name)?;
    Ok(Before {
        changed,
        fingerprints: Fingerprints {
            run: index.fingerprint,
            mapping: index.mapping,
        },
        hashes: index.hashes.into_iter().collect(),
    })
}

/// The configuration a replay needs: the top-level settings a run reads
/// and the run's feed. Sections with addresses, paths and secrets are left
/// out, and so is any key whose name looks like a secret.
fn bundled_config(config: &Config, feed: &Feed) -> Result<String, SupportError> {
    let text = config
        .source_text()
        .map_err(SupportError::io("cannot read the configuration"))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| SupportError::Usage(format!("the configuration cannot be read again: {e}")))?;
    let mut kept = toml::Table::new();
    for key in [
        "timezone",
        "retention",
        "history_retention",
        "held_reminder",
    ] {
        if let Some(v) = table.get(key) {
            kept.insert(key.into(), v.clone());
        }
    }
    let feeds: Vec<toml::Value> = table
        .get("feed")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("name").and_then(toml::Value::as_str) == Some(feed.name.as_str()))
        .cloned()
        .map(without_secrets)
        .map(without_signature_rule)
        .map(without_webhooks)
        .collect();
    kept.insert("feed".into(), toml::Value::Array(feeds));
    toml::to_string(&kept)
        .map_err(|e| SupportError::Usage(format!("the configuration cannot be written: {e}")))
}

/// Whether a configuration key names a secret or a file that holds one.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key_file",
        "private",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// `require_signature` needs `pgp_signer_key_file`, which the bundle
/// leaves out with the other key files: kept, the replay could not load
/// the configuration.
fn without_signature_rule(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(mut t) => {
            t.remove("require_signature");
            toml::Value::Table(t)
        }
        other => other,
    }
}

/// A feed without its `[[feed.webhook]]` tables: a replay sends nothing,
/// a URL may carry a token, and a webhook without its `secret_file` (left
/// out above) would not even load.
fn without_webhooks(mut feed: toml::Value) -> toml::Value {
    if let Some(table) = feed.as_table_mut() {
        table.remove("webhook");
    }
    feed
}

fn without_secrets(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(t) => toml::Value::Table(
            t.into_iter()
                .filter(|(k, _)| !is_secret_key(k))
                .map(|(k, v)| (k, without_secrets(v)))
                .collect(),
        ),
        toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(without_secrets).collect()),
        other => other,
    }
}

fn emails_json(store: &Store, run_id: u64) -> Result<Vec<u8>, SupportError> {
    let emails: Vec<serde_json::Value> = store
        .messages_of_run(run_id)?
        .iter()
        .map(|m| {
            serde_json::json!({
                "kind": m.kind, "state": m.state, "attempts": m.attempts,
                "last_error": m.last_error, "queued_at": m.queued_at, "sent_at": m.sent_at,
                "subject": m.subject,
            })
        })
        .collect();
    to_json(&emails)
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, SupportError> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| SupportError::Usage(format!("cannot write JSON: {e}")))
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A zip being written under a temporary name beside its final one: each
/// entry's SHA-256 is taken as it is written, and the manifest, which lists
/// them, comes last.
struct BundleWriter {
    zip: zip::ZipWriter<std::io::BufWriter<std::fs::File>>,
    temp: PathBuf,
    checksums: BTreeMap<String, String>,
}

/// Passes bytes on to the zip and into the entry's checksum.
struct Summing<'w, W: Write> {
    inner: &'w mut W,
    sum: sha2::Sha256,
}

impl<W: Write> Write for Summing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl BundleWriter {
    fn create(out: &Path) -> Result<BundleWriter, SupportError> {
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = dir.join(format!(".flagsync-bundle-{}.tmp", std::process::id()));
        let file = std::fs::File::create(&temp)
            .map_err(SupportError::io(format!("cannot write {}", temp.display())))?;
        Ok(BundleWriter {
            zip: zip::ZipWriter::new(std::io::BufWriter::with_capacity(1 << 20, file)),
            temp,
            checksums: BTreeMap::new(),
        })
    }

    /// Adds an entry whose bytes `write` produces; returns what it returned.
    fn add_with<T>(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> Result<T, SupportError>,
    ) -> Result<T, SupportError> {
        // The default deflate level: level 1 took 13 s instead of 20 s
        // for a 1M-person bundle but made it 313 MB instead of 213 MB, and
        // a bundle is made to be sent.
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        self.zip
            .start_file(name, options)
            .map_err(|e| SupportError::Io {
                what: format!("cannot write {}", self.temp.display()),
                source: std::io::Error::other(e),
            })?;
        let mut summing = Summing {
            inner: &mut self.zip,
            sum: sha2::Sha256::new(),
        };
        let value = write(&mut summing)?;
        let sum = summing.sum.finalize();
        self.checksums.insert(
            name.to_string(),
            sum.iter().map(|b| format!("{b:02x}")).collect(),
        );
        Ok(value)
    }

    fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), SupportError> {
        self.add_with(name, |w| {
            w.write_all(bytes)
                .map_err(SupportError::io("cannot write the bundle"))
        })
    }

    fn add_file(&mut self, name: &str, mut file: std::fs::File) -> Result<(), SupportError> {
        self.add_with(name, |w| {
            std::io::copy(&mut file, w)
                .map(|_| ())
                .map_err(SupportError::io("cannot write the bundle"))
        })
    }

    /// Writes the manifest (with the checksums), syncs, and renames the
    /// zip to `out`.
    fn finish(mut self, mut manifest: Manifest, out: &Path) -> Result<Manifest, SupportError> {
        manifest.checksums = std::mem::take(&mut self.checksums);
        let temp = self.temp.clone();
        let done = (|| -> Result<(), SupportError> {
            let json = to_json(&manifest)?;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            let zipped = |e: zip::result::ZipError| SupportError::Io {
                what: format!("cannot write {}", temp.display()),
                source: std::io::Error::other(e),
            };
            self.zip
                .start_file("manifest.json", options)
                .map_err(zipped)?;
            self.zip
                .write_all(&json)
                .map_err(SupportError::io("cannot write the bundle"))?;
            let inner = self.zip.finish().map_err(zipped)?;
            let file = inner
                .into_inner()
                .map_err(|e| SupportError::io("cannot write the bundle")(e.into_error()))?;
            file.sync_all()
                .map_err(SupportError::io("cannot write the bundle"))?;
            std::fs::rename(&temp, out).map_err(SupportError::io(format!(
                "cannot move the bundle to {}",
                out.display()
            )))
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        done.map(|()| manifest)
    }

    fn abandon(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// A bundle read back: its manifest and entries, checksums verified.
pub struct Bundle {
    pub manifest: Manifest,
    entries: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads and checks `path`: a zip with a manifest of this format, of a
    /// version this build reads, whose entries match their checksums.
    pub fn read(path: &Path) -> Result<Bundle, SupportError> {
        let not_a_bundle = |why: String| {
            SupportError::Usage(format!(
                "{} is not a flagsync support bundle ({why}); make one with `flagsync support bundle --run ID --out FILE`",
                path.display()
            ))
        };
        let file = std::fs::File::open(path)
            .map_err(|e| SupportError::Usage(format!("cannot open {}: {e}", path.display())))?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
            .map_err(|e| not_a_bundle(format!("not a readable zip: {e}")))?;
        let mut entries = BTreeMap::new();
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| not_a_bundle(format!("entry {i} cannot be read: {e}")))?;
            let name = entry
                .name()
                .map_err(|e| not_a_bundle(format!("entry {i} has no readable name: {e}")))?
                .to_string();
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| not_a_bundle(format!("{name} cannot be read: {e}")))?;
            entries.insert(name, bytes);
        }
        let manifest: Manifest = entries
            .get("manifest.json")
            .ok_or_else(|| not_a_bundle("no manifest.json".into()))
            .and_then(|m| {
                serde_json::from_slice(m).map_err(|e| not_a_bundle(format!("manifest.json: {e}")))
            })?;
        if manifest.format != FORMAT {
            return Err(not_a_bundle(format!("its format is '{}'", manifest.format)));
        }
        if manifest.format_version > FORMAT_VERSION {
            return Err(SupportError::Usage(format!(
                "{} was made by a newer flagsync ({}, bundle format {}); this build ({}) reads format {FORMAT_VERSION}: replay it with that version or newer",
                path.display(),
                manifest.flagsync_version,
                manifest.format_version,
                crate::cli::VERSION
            )));
        }
        for (name, sum) in &manifest.checksums {
            match entries.get(name) {
                Some(bytes) if sha256_hex(bytes) == *sum => {}
                Some(_) => {
                    return Err(not_a_bundle(format!(
                        "{name} does not match its checksum: the bundle is damaged"
                    )))
                }
                None => {
                    return Err(not_a_bundle(format!(
                        "{name} is missing: the bundle is damaged"
                    )))
                }
            }
        }
        Ok(Bundle { manifest, entries })
    }

    fn entry(&self, name: &str) -> Result<&[u8], SupportError> {
        self.entries
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| SupportError::Usage(format!("the bundle has no {name}: it is damaged")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, SupportError> {
        serde_json::from_slice(self.entry(name)?)
            .map_err(|e| SupportError::Usage(format!("the bundle's {name} cannot be read: {e}")))
    }

    pub fn run(&self) -> Result<Run, SupportError> {
        self.json("run.json")
    }
}
