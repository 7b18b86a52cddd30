//! `flagsync support bundle` and `flagsync replay`.
//!
//! A bundle is made wherever the store is open: sent to a running server
//! (under its gate, so no run commits while the bundle reads) or here on
//! the store opened read-only, with the data lock held. A replay needs no
//! data folder and no configuration: it works on a support engineer's
//! laptop in a temporary folder.

use std::path::Path;

use super::{read_store, Backend, Failure, Io};
use crate::config::Config;
use crate::import::printable;
use crate::support::{make_bundle, replay, Redaction, Replayed, SupportError};

impl From<SupportError> for Failure {
    fn from(e: SupportError) -> Self {
        match e {
            SupportError::Usage(_) => Failure::Usage(e.into()),
            SupportError::Run(w) => w.into(),
            other => Failure::Runtime(other.into()),
        }
    }
}

pub fn bundle(
    config: &Config,
    run_id: u64,
    out: &Path,
    redaction: Redaction,
    backend: &Backend,
    io: &mut Io,
) -> Result<u8, Failure> {
    // Before the gate: the doctor verifies the store, which takes a while.
    let doctor = super::doctor::report(config, backend);
    let _gate = match backend {
        Backend::Server(engine) => Some(engine.exclusive()),
        Backend::Local => None,
    };
    let _lock = match backend {
        Backend::Local => Some(crate::store::DataLock::acquire(&config.data_dir)?),
        Backend::Server(_) => None,
    };
    let store = read_store(config, backend)?;
    let Some(store) = store.get() else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "no runs yet: the store {} does not exist",
            config.store_path().display()
        )));
    };
    let manifest = make_bundle(
        config,
        store,
        run_id,
        out,
        super::VERSION,
        Some(doctor),
        redaction,
    )?;
    let mut text = format!(
        "bundle of run {run_id} (feed {}, file {}) written to {}: {} people before the run\n",
        manifest.feed,
        printable(&manifest.file_name),
        out.display(),
        manifest.people_before
    );
    for w in &manifest.warnings {
        text += &format!("warning: {w}\n");
    }
    text += if manifest.redacted {
        "personal values are pseudonyms (the header, and the filter fields' values, are as they were; group fields' values too unless --redact-groups)\n"
    } else {
        "it holds personal data (the file and the people before the run): send it only where that may go, or make it with --redact\n"
    };
    io.out
        .write_all(text.as_bytes())
        .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(0)
}

/// Exit 0 when the replay reached the same outcome, 1 when not.
pub fn replay_bundle(path: &Path, json: bool, out: &mut dyn std::io::Write) -> Result<u8, Failure> {
    let replayed = replay(path)?;
    let text = if json {
        format!("{:#}\n", replayed.to_json())
    } else {
        side_by_side(&replayed)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::Runtime(e.into()))?;
    Ok(if replayed.identical() { 0 } else { 1 })
}

fn side_by_side(r: &Replayed) -> String {
    let o = &r.original;
    let mut text = format!(
        "replay of run {} (feed {}, file {})\n",
        o.run_id.unwrap_or_default(),
        o.feed,
        printable(&o.file)
    );
    if r.bundle_version != r.this_version {
        text += &format!(
            "NOTE: DIFFERENT FLAGSYNC VERSION: the bundle was made by {}, this is {}\n",
            r.bundle_version, r.this_version
        );
    } else {
        text += &format!(
            "flagsync {} (the same version made the bundle)\n",
            r.this_version
        );
    }
    let (oc, rc) = (&o.counts, &r.replayed.counts);
    let mut rows: Vec<(&str, String, String)> = vec![(
        "state",
        o.state.as_str().into(),
        r.replayed.state.as_str().into(),
    )];
    for (what, a, b) in [
        ("added", oc.added, rc.added),
        ("updated", oc.updated, rc.updated),
        ("removed", oc.removed, rc.removed),
        ("unchanged", oc.unchanged, rc.unchanged),
        ("flagged", oc.flagged, rc.flagged),
        ("warnings", oc.warnings, rc.warnings),
    ] {
        rows.push((what, a.to_string(), b.to_string()));
    }
    text += &format!("  {:<12} {:>14} {:>14}\n", "", "original", "replayed");
    for (what, a, b) in rows {
        let mark = if a == b { "" } else { "  <- differs" };
        text += &format!("  {what:<12} {a:>14} {b:>14}{mark}\n");
    }
    if r.identical() {
        text += "verdict: identical\n";
    } else {
        text += "verdict: DIFFERENT\n";
        for (what, a, b) in &r.differences {
            text += &format!(
                "  {what}:\n    original: {}\n    replayed: {}\n",
                printable(a),
                printable(b)
            );
        }
    }
    text
}
