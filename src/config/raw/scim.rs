//! `[feed.scim]`: as written, and checked into [`Scim`]. The token file is
//! not read here (configuration reads no other file): `flagsync check` and
//! the sender do.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{duration_or, Problems};
use crate::config::{Field, HookUrl, Scim, ScimAttribute, ScimRemove, SCIM_ATTRIBUTES};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScim {
    base_url: Spanned<String>,
    token_file: Option<String>,
    ca_file: Option<String>,
    timeout: Option<Spanned<String>>,
    insecure_http: Option<bool>,
    groups: Option<bool>,
    bulk: Option<bool>,
    scim_remove: Option<Spanned<String>>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, Spanned<String>>,
}

pub(super) fn validate_scim(
    feed: &str,
    raw: Option<&Spanned<RawScim>>,
    fields: &[Field],
    problems: &mut Problems,
) -> Option<Scim> {
    let spanned = raw?;
    let raw = spanned.get_ref();
    let at = format!("feed '{feed}', [feed.scim]");
    check_url(
        &at,
        &raw.base_url,
        raw.insecure_http.unwrap_or(false),
        problems,
    );
    if raw.token_file.is_none() {
        problems.at(
            spanned,
            format!("{at}: token_file is required; write the target's bearer token to a file readable by flagsync only and name it here"),
        );
    }
    Some(Scim {
        base_url: raw.base_url.get_ref().trim_end_matches('/').to_string(),
        token_file: PathBuf::from(raw.token_file.clone().unwrap_or_default()),
        ca_file: raw.ca_file.as_ref().map(PathBuf::from),
        timeout: duration_or(
            &format!("{at}: timeout"),
            raw.timeout.as_ref(),
            DEFAULT_TIMEOUT,
            problems,
        ),
        groups: raw.groups.unwrap_or(false),
        bulk: raw.bulk.unwrap_or(true),
        remove: validate_remove(&at, raw.scim_remove.as_ref(), problems),
        attributes: validate_attributes(&at, &raw.attributes, fields, problems),
    })
}

fn check_url(at: &str, url: &Spanned<String>, insecure_http: bool, problems: &mut Problems) {
    match HookUrl::parse(url.get_ref()) {
        Err(why) => problems.at(
            url,
            format!("{at}: base_url = \"{}\" cannot be used: {why}", url.get_ref()),
        ),
        Ok(parsed) if !parsed.https && !insecure_http => problems.at(
            url,
            format!(
                "{at}: base_url = \"{}\" is not https; use an https:// URL (set insecure_http = true only for a target on this machine, e.g. in tests)",
                url.get_ref()
            ),
        ),
        Ok(parsed) if parsed.target.contains('?') => problems.at(
            url,
            format!("{at}: base_url = \"{}\" holds a query; give the SCIM base (the part before /Users)", url.get_ref()),
        ),
        Ok(_) => {}
    }
}

fn validate_remove(
    at: &str,
    value: Option<&Spanned<String>>,
    problems: &mut Problems,
) -> ScimRemove {
    match value.map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "delete")) => ScimRemove::Delete,
        Some((_, "deactivate")) => ScimRemove::Deactivate,
        Some((v, other)) => {
            problems.at(
                v,
                format!("{at}: scim_remove = \"{other}\" is not known; use \"delete\" or \"deactivate\""),
            );
            ScimRemove::Delete
        }
    }
}

/// The attribute table, with `userName` and `externalId` defaulting to the
/// ID field.
fn validate_attributes(
    at: &str,
    raw: &std::collections::BTreeMap<String, Spanned<String>>,
    fields: &[Field],
    problems: &mut Problems,
) -> Vec<(ScimAttribute, Option<usize>)> {
    let mut out = Vec::new();
    for (name, field) in raw {
        let Some(attribute) = ScimAttribute::parse(name) else {
            problems.at(
                field,
                format!(
                    "{at}: attribute \"{name}\" is not known; use one of {}",
                    SCIM_ATTRIBUTES.join(", ")
                ),
            );
            continue;
        };
        match fields.iter().position(|f| f.name == *field.get_ref()) {
            Some(i) => out.push((attribute, Some(i))),
            None => problems.at(
                field,
                format!(
                    "{at}: attribute \"{name}\" names field '{}', which the feed does not have; use one of its [[feed.field]] names",
                    field.get_ref()
                ),
            ),
        }
    }
    for default in [ScimAttribute::UserName, ScimAttribute::ExternalId] {
        if !out.iter().any(|(a, _)| *a == default) {
            // `None`: the recipient's ID.
            out.push((default, None));
        }
    }
    out
}
