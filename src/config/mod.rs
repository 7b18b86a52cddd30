//! The configuration file: reading, validating, and the embedded default.
//!
//! Owns: the TOML shape (docs/CONFIGURATION.md; serde, unknown keys rejected) and its
//! translation into a checked [`Config`]. Never touches the store or files
//! other than the configuration itself.
//!
//! Invariants:
//! 1. A `Config` that exists is valid: every feed has exactly one `id` field,
//!    at most 33 fields, at most 3 group fields, unique names.
//! 2. Every problem found is reported at once, each naming the key and the
//!    line where it can be found.

mod hook_url;
mod raw;
mod size;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use hook_url::{shown_url, HookUrl};
pub use size::parse_size;

/// At most this many mapped fields per feed, the ID included.
pub const MAX_FIELDS: usize = 33;
/// At most this many group fields per feed.
pub const MAX_GROUP_FIELDS: usize = 3;
/// `[sftp] temporary_suffixes` by default: WinSCP's `.filepart`, rclone's
/// `NAME.<random>.partial`, and the usual `.part` and `.tmp`.
pub const DEFAULT_TEMPORARY_SUFFIXES: [&str; 4] = [".part", ".filepart", ".tmp", ".partial"];

const EMBEDDED_DEFAULT: &str = include_str!("../../assets/default.toml");

/// Where the configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("the embedded default configuration"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}: {}", problems.join("\n  "))]
    Invalid {
        source_name: String,
        problems: Vec<String>,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub data_dir: PathBuf,
    /// How long archived files and error reports are kept.
    pub retention: Duration,
    /// Runs' records and the change log are kept this long (never less
    /// than `retention`).
    pub history_retention: Duration,
    /// IANA time zone of `daily` schedules; `None`: the server's.
    pub timezone: Option<String>,
    /// A held run still waiting after this long gets one reminder email.
    pub held_reminder: Duration,
    pub sftp: SftpSettings,
    pub web_listen: String,
    /// The status page's address as users reach it, for links in emails.
    pub web_public_url: Option<String>,
    /// `[web] tls_cert` and `tls_key`: serve the page over HTTPS.
    pub web_tls: Option<(PathBuf, PathBuf)>,
    /// `[web] session_lifetime`: a page session ends this long after its
    /// login, in use or not.
    pub web_session_lifetime: Duration,
    pub smtp: Option<Smtp>,
    pub feeds: Vec<Feed>,
}

/// The `[sftp]` table.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    pub listen: String,
    /// An upload that grows past this fails while it is written.
    pub max_upload_size: u64,
    /// Sessions at once, over all accounts.
    pub max_sessions: usize,
    pub max_sessions_per_account: usize,
    /// Connections at once from one address, logged in or not.
    pub max_connections_per_address: usize,
    /// This many failed logins from one address within `lockout_window`
    /// lock the address out for `lockout_duration`.
    pub lockout_failures: usize,
    pub lockout_window: Duration,
    pub lockout_duration: Duration,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A session with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Uploads whose names end in one of these (lower case) wait for a
    /// rename to a final name; hidden names always wait.
    pub temporary_suffixes: Vec<String>,
    /// Also offer the SHA-1 algorithms old clients need (JSch 0.1.55:
    /// `ssh-rsa` signatures, `diffie-hellman-group14-sha1`).
    pub legacy_algorithms: bool,
}

impl Default for SftpSettings {
    fn default() -> Self {
        SftpSettings {
            listen: "0.0.0.0:2222".into(),
            max_upload_size: 2 << 30,
            max_sessions: 100,
            max_sessions_per_account: 10,
            max_connections_per_address: 100,
            lockout_failures: 5,
            lockout_window: Duration::from_secs(600),
            lockout_duration: Duration::from_secs(900),
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(900),
            temporary_suffixes: DEFAULT_TEMPORARY_SUFFIXES.map(String::from).to_vec(),
            legacy_algorithms: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    /// For connecting and for each SMTP command.
    pub timeout: Duration,
    /// How long a message is retried before it is given up.
    pub retry_for: Duration,
    /// The pause after the first failed attempt; it doubles, up to an hour.
    pub retry_pause: Duration,
}

/// The run events a webhook can subscribe to (`events`), in the order
/// the README lists them.
pub const WEBHOOK_EVENTS: [&str; 7] = [
    "applied",
    "unchanged",
    "held",
    "failed",
    "confirmed",
    "rejected",
    "undone",
];

/// One `[[feed.webhook]]` target.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `https://`, or `http://` with `insecure_http`.
    pub url: String,
    /// A file holding the Standard Webhooks secret (`whsec_` + base64),
    /// read when sending (`flagsync check` reads it too).
    pub secret_file: PathBuf,
    /// Of [`WEBHOOK_EVENTS`]; all by default.
    pub events: Vec<String>,
    pub include_changes: IncludeChanges,
    /// Changes per delivery with `include_changes = "full"`.
    pub page_size: usize,
    /// For connecting, TLS and the whole answer, per attempt.
    pub timeout: Duration,
    /// How long a message is retried before it is given up.
    pub retry_for: Duration,
    /// The pause after the first failed attempt; it doubles, up to an hour.
    pub retry_pause: Duration,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// `[feed.scim]`: a SCIM 2.0 service provider the feed's people (and
/// groups) are provisioned to.
#[derive(Debug, Clone)]
pub struct Scim {
    /// The SCIM base, without a trailing `/` (`/Users` is appended).
    pub base_url: String,
    /// A file holding the bearer token, read when sending.
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    /// For connecting, TLS and the whole answer, per request.
    pub timeout: Duration,
    /// Provision the feed's groups as SCIM Groups.
    pub groups: bool,
    /// Send a page of changes as SCIM Bulk requests when the target
    /// announces Bulk support (`false`: one request per change always).
    pub bulk: bool,
    pub remove: ScimRemove,
    /// Each attribute sent and the field it is read from (`None`: the
    /// recipient's ID); `userName` and `externalId` are always there.
    pub attributes: Vec<(ScimAttribute, Option<usize>)>,
}

/// What a removed recipient becomes on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimRemove {
    /// `DELETE /Users/{id}`.
    Delete,
    /// The user is replaced with `active = false`.
    Deactivate,
}

/// The SCIM User attributes a field can be mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScimAttribute {
    UserName,
    ExternalId,
    DisplayName,
    GivenName,
    FamilyName,
    Active,
    /// `emails[TYPE]`.
    Email(String),
    /// `phoneNumbers[TYPE]`.
    Phone(String),
}

/// How the attributes are spelled in `[feed.scim.attributes]`.
pub const SCIM_ATTRIBUTES: [&str; 9] = [
    "userName",
    "externalId",
    "displayName",
    "name.givenName",
    "name.familyName",
    "active",
    "emails[work]",
    "emails[home]",
    "phoneNumbers[mobile]",
];

/// The multi-valued attributes' types (RFC 7643 4.1.2).
const EMAIL_TYPES: [&str; 3] = ["work", "home", "other"];
const PHONE_TYPES: [&str; 6] = ["work", "home", "mobile", "fax", "pager", "other"];

impl ScimAttribute {
    pub fn parse(name: &str) -> Option<ScimAttribute> {
        let typed = |prefix: &str, types: &[&str]| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|t| types.contains(t))
                .map(String::from)
        };
        Some(match name {
            "userName" => ScimAttribute::UserName,
            "externalId" => ScimAttribute::ExternalId,
            "displayName" => ScimAttribute::DisplayName,
            "name.givenName" => ScimAttribute::GivenName,
            "name.familyName" => ScimAttribute::FamilyName,
            "active" => ScimAttribute::Active,
            _ => {
                if let Some(t) = typed("emails[", &EMAIL_TYPES) {
                    ScimAttribute::Email(t)
                } else {
                    ScimAttribute::Phone(typed("phoneNumbers[", &PHONE_TYPES)?)
                }
            }
        })
    }
}

/// What a webhook's payload says of the run's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeChanges {
    /// The run's state only.
    None,
    /// The counts (added, updated, removed, ...).
    Summary,
    /// The counts and every change, `page_size` per delivery.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    Id,
    Text,
    Email,
    Sms,
    Voice,
    Multi,
}

impl FieldKind {
    fn parse(s: &str) -> Option<FieldKind> {
        Some(match s {
            "id" => FieldKind::Id,
            "text" => FieldKind::Text,
            "email" => FieldKind::Email,
            "sms" => FieldKind::Sms,
            "voice" => FieldKind::Voice,
            "multi" => FieldKind::Multi,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Id => "id",
            FieldKind::Text => "text",
            FieldKind::Email => "email",
            FieldKind::Sms => "sms",
            FieldKind::Voice => "voice",
            FieldKind::Multi => "multi",
        }
    }

    pub fn is_channel(self) -> bool {
        matches!(self, FieldKind::Sms | FieldKind::Voice | FieldKind::Email)
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub column: String,
    pub aliases: Vec<String>,
    pub kind: FieldKind,
    pub required: bool,
    /// Only for `multi` fields.
    pub separator: Option<String>,
    pub max_length: usize,
    /// The status page's search looks in this field (prefix, any case).
    pub search: bool,
    /// The status page can filter on this field's exact value (any case);
    /// group fields always can.
    pub filter: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Percent(f64),
    Count(u64),
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Percent(p) => write!(f, "{p}%"),
            Threshold::Count(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    OnArrival,
    /// Daily at this time of day, in [`Config::timezone`] (server local
    /// time by default).
    Daily {
        hour: u8,
        minute: u8,
        second: u8,
    },
}

#[derive(Debug, Clone)]
pub struct Filter {
    /// Index into `Feed::fields`.
    pub field: usize,
    /// Compared trimmed and case-insensitively.
    pub equals: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Feed {
    pub name: String,
    pub fields: Vec<Field>,
    /// Index of the `id` field in `fields`.
    pub id_field: usize,
    /// `None` means detect from the header.
    pub delimiter: Option<u8>,
    /// The sheet of a workbook to read (`sheet`); `None`: its first
    /// visible worksheet.
    pub sheet: Option<String>,
    pub default_country: phonenumber::country::Id,
    pub delete_threshold: Threshold,
    /// Holds a run that would empty more than this of the stored values of
    /// a delivery channel field; `None` (`"none"`): never.
    pub clear_threshold: Option<Threshold>,
    pub schedule: Schedule,
    pub expect_every: Duration,
    pub report_to: Vec<String>,
    /// The run states whose report is mailed (`report_on`).
    pub report_on: Vec<String>,
    /// Indexes into `fields`, at most three.
    pub group_fields: Vec<usize>,
    pub require_channel: bool,
    pub filters: Vec<Filter>,
    pub max_file_size: u64,
    pub max_rows: u64,
    /// flagsync's own OpenPGP secret key: encrypted files are decrypted
    /// with it (`import::pgp`).
    pub pgp_private_key_file: Option<PathBuf>,
    /// The sender's OpenPGP public key: signatures are checked with it.
    pub pgp_signer_key_file: Option<PathBuf>,
    /// Refuse files that are not signed by `pgp_signer_key_file`.
    pub require_signature: bool,
    /// `[[feed.webhook]]`: where the feed's run events are POSTed.
    pub webhooks: Vec<Webhook>,
    /// `[feed.scim]`: the SCIM 2.0 target the feed's people are pushed to.
    pub scim: Option<Scim>,
}

impl Feed {
    /// Whether a run that ended in `state` mails its report.
    pub fn reports_on(&self, state: &str) -> bool {
        !self.report_to.is_empty() && self.report_on.iter().any(|s| s == state)
    }

    pub fn id(&self) -> &Field {
        &self.fields[self.id_field]
    }

    /// A fingerprint of everything that decides whether a stored row is still
    /// valid, imported at all, and how it is stored. When it changes, every row is validated
    /// again instead of trusting the stored raw hashes.
    pub fn mapping_fingerprint(&self) -> u64 {
        let mut text = String::new();
        for f in &self.fields {
            text.push_str(&format!(
                "{}|{}|{:?}|{}|{:?}|{}\u{1e}",
                f.name, f.column, f.kind, f.required, f.separator, f.max_length
            ));
        }
        text.push_str(&format!(
            "id={}|groups={:?}|channel={}|country={}|delimiter={:?}",
            self.id_field,
            self.group_fields,
            self.require_channel,
            self.default_country.as_ref(),
            self.delimiter
        ));
        // Filters too: a row whose raw text is as stored is taken as
        // unchanged without being parsed, so without being filtered.
        for f in &self.filters {
            text.push_str(&format!("|filter={}:{:?}", f.field, f.equals));
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, Source::Embedded)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, Source::File(path.to_owned()))
    }

    pub fn parse(text: &str, source: Source) -> Result<Config, ConfigError> {
        raw::parse(text)
            .map_err(|problems| ConfigError::Invalid {
                source_name: source.to_string(),
                problems,
            })
            .map(|mut c| {
                c.source = source;
                c
            })
    }

    /// The configuration's text: its file as it is now, or the embedded
    /// default.
    pub fn source_text(&self) -> std::io::Result<String> {
        match &self.source {
            Source::File(path) => std::fs::read_to_string(path),
            Source::Embedded => Ok(EMBEDDED_DEFAULT.to_string()),
        }
    }

    pub fn feed(&self, name: &str) -> Option<&Feed> {
        self.feeds.iter().find(|f| f.name == name)
    }

    pub fn feed_names(&self) -> String {
        self.feeds
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The time zone `daily` schedules are in.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.timezone
            .as_deref()
            .and_then(|name| jiff::tz::TimeZone::get(name).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system)
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("flagsync.redb")
    }

    /// The feed's folder: its error reports and held files (and later its
    /// sFTP `upload/`, `errors/`, `archive/`). Feed names are letters,
    /// digits, `-` and `_`, so they never meet the store's own files.
    pub fn feed_dir(&self, feed: &str) -> PathBuf {
        self.data_dir.join(feed)
    }
}

#[cfg(test)]
mod tests;
