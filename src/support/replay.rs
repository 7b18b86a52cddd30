//! `flagsync replay`: a bundle's run again, in a temporary data folder,
//! through the same worker as the server, compared with what the server
//! recorded.

use std::path::{Path, PathBuf};

use compact_str::CompactString;
use serde_json::{json, Value};

use super::{Bundle, Fingerprints, PersonBefore, SupportError};
use crate::config::{Config, Source};
use crate::import::encode_values;
use crate::store::{Run, RunState, Store};
use crate::worker::ImportOptions;

/// The outcome of a replay.
#[derive(Debug)]
pub struct Replayed {
    pub original: Run,
    pub replayed: Run,
    /// What differs: (what, original, replayed), empty when identical.
    pub differences: Vec<(String, String, String)>,
    /// The flagsync that made the bundle, and this one.
    pub bundle_version: String,
    pub this_version: String,
}

impl Replayed {
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }

    pub fn to_json(&self) -> Value {
        let differences: Vec<Value> = self
            .differences
            .iter()
            .map(|(what, o, r)| json!({"what": what, "original": o, "replayed": r}))
            .collect();
        json!({
            "verdict": if self.identical() { "identical" } else { "different" },
            "bundle_version": self.bundle_version,
            "this_version": self.this_version,
            "same_version": self.bundle_version == self.this_version,
            "original": self.original.to_json(true),
            "replayed": self.replayed.to_json(true),
            "differences": differences,
        })
    }
}

/// A folder removed when dropped, whatever happened.
struct TempFolder(PathBuf);

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_folder() -> Result<TempFolder, SupportError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!("flagsync-replay-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&path).map_err(SupportError::io(format!(
        "cannot make the replay's folder {}",
        path.display()
    )))?;
    Ok(TempFolder(path))
}

/// Replays the bundle at `path`.
pub fn replay(path: &Path) -> Result<Replayed, SupportError> {
    let bundle = Bundle::read(path)?;
    let original = bundle.run()?;
    let folder = temp_folder()?;
    let config = replay_config(&bundle, &folder.0)?;
    let feed = config.feed(&bundle.manifest.feed).ok_or_else(|| {
        SupportError::Usage(format!(
            "the bundle's configuration has no feed '{}': it is damaged",
            bundle.manifest.feed
        ))
    })?;
    seed_store(&bundle, &config, feed)?;
    let file = folder.0.join("in").join(&bundle.manifest.file_name);
    write_file(
        &file,
        bundle.entry(&format!("file/{}", bundle.manifest.file_name))?,
    )?;
    let options = ImportOptions {
        dry_run: false,
        progress: false,
        record_failure: false,
    };
    let mut replayed = crate::worker::import_file(&config, feed, &file, options)?;
    // A confirmed held run: held again here, then confirmed, as it was.
    if let (RunState::Held, Some(by), Some(id)) = (
        replayed.state,
        original.confirmed_by.as_deref(),
        replayed.run_id,
    ) {
        replayed = crate::worker::confirm_run(&config, id, by, options)?;
    }
    Ok(Replayed {
        differences: differences(&original, &replayed),
        original,
        replayed,
        bundle_version: bundle.manifest.flagsync_version.clone(),
        this_version: crate::cli::VERSION.to_string(),
    })
}

fn replay_config(bundle: &Bundle, folder: &Path) -> Result<Config, SupportError> {
    let text = std::str::from_utf8(bundle.entry("config.toml")?)
        .map_err(|_| SupportError::Usage("the bundle's config.toml is not UTF-8".into()))?;
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| SupportError::Usage(format!("the bundle's config.toml: {e}")))?;
    let data = folder.join("data");
    table.insert(
        "data_dir".into(),
        toml::Value::String(data.display().to_string()),
    );
    let text = toml::to_string(&table)
        .map_err(|e| SupportError::Usage(format!("the bundle's config.toml: {e}")))?;
    let path = folder.join("flagsync.toml");
    write_file(&path, text.as_bytes())?;
    Config::parse(&text, Source::File(path)).map_err(|e| {
        SupportError::Usage(format!(
            "this build does not accept the bundle's configuration: {e}"
        ))
    })
}

/// The store as it was before the run: its people, their groups, the row
/// hashes known to be the same then, and the fingerprints.
fn seed_store(
    bundle: &Bundle,
    config: &Config,
    feed: &crate::config::Feed,
) -> Result<(), SupportError> {
    let fingerprints: Fingerprints = bundle.json("before/fingerprints.json")?;
    let mut people = Vec::new();
    let mut hashes = Vec::new();
    for line in bundle.entry("before/people.jsonl")?.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let person: PersonBefore = serde_json::from_slice(line)
            .map_err(|e| SupportError::Usage(format!("the bundle's before/people.jsonl: {e}")))?;
        let values: Vec<&str> = person.values.iter().map(String::as_str).collect();
        // A person whose row hash is not known gets one no row has: the
        // replay reads their row again.
        let hash = person
            .hash
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        hashes.push((CompactString::from(person.id.as_str()), hash));
        people.push((person.id, encode_values(&values, feed)));
    }
    people.sort_by(|a, b| a.0.cmp(&b.0));
    hashes.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(&config.data_dir).map_err(SupportError::io(format!(
        "cannot make {}",
        config.data_dir.display()
    )))?;
    let store = Store::open(&config.store_path())?;
    if !people.is_empty() || fingerprints.run.is_some() {
        store.seed_feed(
            &feed.name,
            &people,
            &hashes,
            fingerprints.run.unwrap_or(0),
            fingerprints.mapping.unwrap_or(feed.mapping_fingerprint()),
        )?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SupportError> {
    let fail = SupportError::io(format!("cannot write {}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(SupportError::io(format!("cannot make {}", dir.display())))?;
    }
    std::fs::write(path, bytes).map_err(fail)
}

/// The state a replay should reach: a run rejected or superseded was held
/// when it ran.
fn expected_state(original: &Run) -> RunState {
    match original.state {
        RunState::Rejected | RunState::Superseded => RunState::Held,
        other => other,
    }
}

/// What differs between the two outcomes: state, reason, counts, the row
/// errors by line, and who would be removed.
fn differences(original: &Run, replayed: &Run) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut compare = |what: &str, o: String, r: String| {
        if o != r {
            out.push((what.to_string(), o, r));
        }
    };
    compare(
        "state",
        expected_state(original).as_str().into(),
        replayed.state.as_str().into(),
    );
    compare(
        "reason",
        original.reason.clone().unwrap_or_default(),
        replayed.reason.clone().unwrap_or_default(),
    );
    let counts = |run: &Run| serde_json::to_value(run.counts).unwrap_or_default();
    let (o, r) = (counts(original), counts(replayed));
    if let (Some(o), Some(r)) = (o.as_object(), r.as_object()) {
        for (key, value) in o {
            let other = r.get(key).cloned().unwrap_or(Value::Null);
            compare(key, value.to_string(), other.to_string());
        }
    }
    let errors = |run: &Run| -> Vec<String> {
        run.errors
            .iter()
            .map(|e| {
                format!(
                    "line {} {}: {}{}",
                    e.line,
                    e.id.as_deref().unwrap_or(""),
                    if e.warning { "warning: " } else { "" },
                    e.reasons.join("; ")
                )
            })
            .collect()
    };
    let (o, r) = (errors(original), errors(replayed));
    for i in 0..o.len().max(r.len()) {
        compare(
            &format!("error {}", i + 1),
            o.get(i).cloned().unwrap_or_default(),
            r.get(i).cloned().unwrap_or_default(),
        );
    }
    compare(
        "would remove",
        original.would_remove.join(", "),
        replayed.would_remove.join(", "),
    );
    out
}
