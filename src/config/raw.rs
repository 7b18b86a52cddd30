//! The configuration as written (serde), and its validation into [`Config`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod scim;
mod webhook;

use super::{
    parse_size, Config, Feed, Field, FieldKind, Filter, Schedule, SftpSettings, Smtp, Source,
    Threshold, MAX_FIELDS, MAX_GROUP_FIELDS,
};

const DEFAULT_MAX_FILE_SIZE: u64 = 2 << 30;
const DEFAULT_MAX_ROWS: u64 = 10_000_000;
const DEFAULT_MAX_LENGTH: usize = 255;
const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(48 * 3600);
const DEFAULT_RETRY_PAUSE: Duration = Duration::from_secs(30);
const DEFAULT_HELD_REMINDER: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);
/// The run states a report can be mailed for (`report_on`).
const REPORT_STATES: [&str; 6] = [
    "applied",
    "unchanged",
    "held",
    "failed",
    "rejected",
    "superseded",
];
/// Every state but `unchanged`: a daily "nothing changed" mail teaches
/// people to ignore the ones that matter.
const DEFAULT_REPORT_ON: [&str; 5] = ["applied", "held", "failed", "rejected", "superseded"];
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<String>,
    retention: Option<Spanned<String>>,
    history_retention: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    held_reminder: Option<Spanned<String>>,
    sftp: Option<RawSftp>,
    web: Option<RawWeb>,
    smtp: Option<RawSmtp>,
    #[serde(default)]
    feed: Vec<Spanned<RawFeed>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: Option<String>,
    /// How users reach the page (for links in emails).
    public_url: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    session_lifetime: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSftp {
    listen: Option<String>,
    max_upload_size: Option<Spanned<NumberOrText>>,
    max_sessions: Option<Spanned<i64>>,
    max_sessions_per_account: Option<Spanned<i64>>,
    max_connections_per_address: Option<Spanned<i64>>,
    lockout_failures: Option<Spanned<i64>>,
    lockout_window: Option<Spanned<String>>,
    lockout_duration: Option<Spanned<String>>,
    login_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    temporary_suffixes: Option<Vec<Spanned<String>>>,
    legacy_algorithms: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    security: Option<Spanned<String>>,
    username: Option<String>,
    password_file: Option<String>,
    from: String,
    timeout: Option<Spanned<String>>,
    ca_file: Option<String>,
    retry_for: Option<Spanned<String>>,
    retry_pause: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: Spanned<String>,
    id_field: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    sheet: Option<Spanned<String>>,
    default_country: Option<Spanned<String>>,
    delete_threshold: Option<Spanned<NumberOrText>>,
    clear_threshold: Option<Spanned<NumberOrText>>,
    schedule: Option<Spanned<String>>,
    expect_every: Option<Spanned<String>>,
    #[serde(default)]
    report_to: Vec<String>,
    report_on: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    group_fields: Vec<Spanned<String>>,
    require_channel: Option<bool>,
    max_file_size: Option<Spanned<NumberOrText>>,
    max_rows: Option<Spanned<i64>>,
    pgp_private_key_file: Option<Spanned<String>>,
    pgp_signer_key_file: Option<Spanned<String>>,
    require_signature: Option<Spanned<bool>>,
    #[serde(default)]
    field: Vec<Spanned<RawField>>,
    #[serde(default)]
    filter: Vec<Spanned<RawFilter>>,
    #[serde(default)]
    webhook: Vec<Spanned<webhook::RawWebhook>>,
    scim: Option<Spanned<scim::RawScim>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    column: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    required: bool,
    separator: Option<String>,
    max_length: Option<Spanned<i64>>,
    search: Option<bool>,
    filter: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    field: Spanned<String>,
    equals: Vec<String>,
}

/// Collects problems with the line each one is on.
struct Problems<'t> {
    text: &'t str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl std::fmt::Display) {
        let line = self.line_of(spanned.span().start);
        self.list.push(format!("line {line}: {message}"));
    }
}

pub(super) fn parse(text: &str) -> Result<Config, Vec<String>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| vec![describe_toml_error(text, &e)])?;
    let mut problems = Problems {
        text,
        list: Vec::new(),
    };
    let config = validate(raw, &mut problems);
    if problems.list.is_empty() {
        Ok(config)
    } else {
        Err(problems.list)
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let line = Problems {
                text,
                list: Vec::new(),
            }
            .line_of(span.start);
            let hint = if message.contains("unknown field") {
                "; remove it or check its spelling"
            } else {
                ""
            };
            format!("line {line}: {message}{hint}")
        }
        None => message.to_string(),
    }
}

fn validate(raw: RawConfig, problems: &mut Problems) -> Config {
    let mut feeds = Vec::new();
    let mut names = HashSet::new();
    if raw.feed.is_empty() {
        problems
            .list
            .push("no [[feed]] is configured; add at least one".to_string());
    }
    for raw_feed in &raw.feed {
        let name = raw_feed.get_ref().name.get_ref().clone();
        if !names.insert(name.clone()) {
            problems.at(
                &raw_feed.get_ref().name,
                format!("feed name '{name}' is used twice; feed names must be unique"),
            );
        }
        if let Some(feed) = validate_feed(raw_feed.get_ref(), problems) {
            feeds.push(feed);
        }
    }
    let smtp = raw.smtp.map(|s| validate_smtp(s, problems));
    let retention = duration_or(
        "retention",
        raw.retention.as_ref(),
        DEFAULT_RETENTION,
        problems,
    );
    // The history outlives the files it tells of.
    let history_retention = duration_or(
        "history_retention",
        raw.history_retention.as_ref(),
        DEFAULT_HISTORY_RETENTION,
        problems,
    )
    .max(retention);
    let timezone = raw.timezone.as_ref().map(|tz| {
        let name = tz.get_ref().trim().to_string();
        if jiff::tz::TimeZone::get(&name).is_err() {
            problems.at(
                tz,
                format!("timezone = \"{name}\" is not an IANA time zone such as \"Europe/Berlin\" or \"UTC\""),
            );
        }
        name
    });
    let held_reminder = duration_or(
        "held_reminder",
        raw.held_reminder.as_ref(),
        DEFAULT_HELD_REMINDER,
        problems,
    );
    let web_session_lifetime = duration_or(
        "web.session_lifetime",
        raw.web.as_ref().and_then(|w| w.session_lifetime.as_ref()),
        DEFAULT_SESSION_LIFETIME,
        problems,
    );
    Config {
        source: Source::Embedded,
        timezone,
        held_reminder,
        data_dir: PathBuf::from(raw.data_dir.unwrap_or_else(|| "./flagsync-data".into())),
        retention,
        history_retention,
        sftp: validate_sftp(raw.sftp, problems),
        web_listen: raw
            .web
            .as_ref()
            .and_then(|w| w.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".into()),
        web_tls: raw
            .web
            .as_ref()
            .and_then(|w| match (&w.tls_cert, &w.tls_key) {
                (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
                (None, None) => None,
                _ => {
                    problems.list.push(
                        "[web] needs both tls_cert and tls_key (PEM files), or neither".into(),
                    );
                    None
                }
            }),
        web_public_url: raw.web.and_then(|w| w.public_url),
        web_session_lifetime,
        smtp,
        feeds,
    }
}

fn validate_sftp(raw: Option<RawSftp>, problems: &mut Problems) -> SftpSettings {
    let defaults = SftpSettings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let count =
        |key: &str, v: &Option<Spanned<i64>>, default: usize, problems: &mut Problems| match v {
            None => default,
            Some(n) if *n.get_ref() > 0 => *n.get_ref() as usize,
            Some(n) => {
                problems.at(n, format!("sftp.{key} must be a positive number"));
                default
            }
        };
    let max_upload_size = match &raw.max_upload_size {
        None => defaults.max_upload_size,
        Some(m) => positive_size(m.get_ref()).unwrap_or_else(|| {
            problems.at(
                m,
                "sftp.max_upload_size must be a positive size such as \"2GiB\", \"500MB\" or a number of bytes",
            );
            defaults.max_upload_size
        }),
    };
    let temporary_suffixes = match &raw.temporary_suffixes {
        None => defaults.temporary_suffixes.clone(),
        Some(list) => validate_temporary_suffixes(list, problems),
    };
    SftpSettings {
        temporary_suffixes,
        listen: raw.listen.unwrap_or(defaults.listen),
        max_upload_size,
        max_sessions: count(
            "max_sessions",
            &raw.max_sessions,
            defaults.max_sessions,
            problems,
        ),
        max_sessions_per_account: count(
            "max_sessions_per_account",
            &raw.max_sessions_per_account,
            defaults.max_sessions_per_account,
            problems,
        ),
        max_connections_per_address: count(
            "max_connections_per_address",
            &raw.max_connections_per_address,
            defaults.max_connections_per_address,
            problems,
        ),
        lockout_failures: count(
            "lockout_failures",
            &raw.lockout_failures,
            defaults.lockout_failures,
            problems,
        ),
        lockout_window: duration_or(
            "sftp.lockout_window",
            raw.lockout_window.as_ref(),
            defaults.lockout_window,
            problems,
        ),
        lockout_duration: duration_or(
            "sftp.lockout_duration",
            raw.lockout_duration.as_ref(),
            defaults.lockout_duration,
            problems,
        ),
        login_timeout: duration_or(
            "sftp.login_timeout",
            raw.login_timeout.as_ref(),
            defaults.login_timeout,
            problems,
        ),
        idle_timeout: duration_or(
            "sftp.idle_timeout",
            raw.idle_timeout.as_ref(),
            defaults.idle_timeout,
            problems,
        ),
        legacy_algorithms: raw.legacy_algorithms.unwrap_or(defaults.legacy_algorithms),
    }
}

/// Lower-cased (names compare in any case); each one an ending of a file
/// name, never a path or an empty string that would hold back every file.
fn validate_temporary_suffixes(list: &[Spanned<String>], problems: &mut Problems) -> Vec<String> {
    let mut out = Vec::new();
    for suffix in list {
        let text = suffix.get_ref();
        if text.is_empty() || text.contains(['/', '\\', '\0']) {
            problems.at(
                suffix,
                format!(
                    "sftp.temporary_suffixes: {text:?} is not the ending of a file name; \
                     write endings such as \".part\" or \".tmp\""
                ),
            );
        } else {
            out.push(text.to_ascii_lowercase());
        }
    }
    out
}

fn positive_size(v: &NumberOrText) -> Option<u64> {
    match v {
        NumberOrText::Number(n) if *n > 0 => Some(*n as u64),
        NumberOrText::Number(_) => None,
        NumberOrText::Text(s) => parse_size(s).filter(|&n| n > 0),
    }
}

/// A positive duration such as "10m" or "30days", or `default` when unset.
fn duration_or(
    key: &str,
    value: Option<&Spanned<String>>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let Some(v) = value else {
        return default;
    };
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            problems.at(
                v,
                format!(
                    "{key} = \"{}\" is not a duration such as \"15m\", \"24h\" or \"30days\"",
                    v.get_ref()
                ),
            );
            default
        }
    }
}

fn validate_smtp(s: RawSmtp, problems: &mut Problems) -> Smtp {
    let security = match &s.security {
        Some(sec) => {
            let v = sec.get_ref().as_str();
            if !matches!(v, "starttls" | "tls" | "none") {
                problems.at(
                    sec,
                    format!("smtp.security = \"{v}\" is not known; use \"starttls\", \"tls\" or \"none\""),
                );
            }
            v.to_string()
        }
        None => "starttls".to_string(),
    };
    let port = s.port.unwrap_or(match security.as_str() {
        "tls" => 465,
        "none" => 25,
        _ => 587,
    });
    Smtp {
        timeout: duration_or(
            "smtp.timeout",
            s.timeout.as_ref(),
            DEFAULT_SMTP_TIMEOUT,
            problems,
        ),
        retry_for: duration_or(
            "smtp.retry_for",
            s.retry_for.as_ref(),
            DEFAULT_RETRY_FOR,
            problems,
        ),
        retry_pause: duration_or(
            "smtp.retry_pause",
            s.retry_pause.as_ref(),
            DEFAULT_RETRY_PAUSE,
            problems,
        ),
        host: s.host,
        port,
        security,
        username: s.username,
        password_file: s.password_file.map(PathBuf::from),
        ca_file: s.ca_file.map(PathBuf::from),
        from: s.from,
    }
}

fn is_valid_feed_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_feed(raw: &RawFeed, problems: &mut Problems) -> Option<Feed> {
    let name = raw.name.get_ref().clone();
    let before = problems.list.len();
    if !is_valid_feed_name(&name) {
        problems.at(
            &raw.name,
            format!("feed name '{name}' must be 1-64 letters, digits, '-' or '_' (it is also a folder name)"),
        );
    }
    let mut fields = validate_fields(&name, &raw.field, problems);
    let id_field = find_id_field(&name, raw, &fields, problems);
    if let Some(i) = id_field {
        let said = raw
            .field
            .iter()
            .find(|r| *r.get_ref().name.get_ref() == fields[i].name);
        promote_to_id(&mut fields[i], said.and_then(|r| r.get_ref().search));
    }
    let group_fields = validate_group_fields(&name, raw, &fields, problems);
    let filters = validate_filters(&name, raw, &fields, problems);
    let feed = Feed {
        delimiter: validate_delimiter(&name, raw, problems),
        sheet: validate_sheet(&name, raw, problems),
        default_country: validate_country(&name, raw, problems),
        delete_threshold: validate_threshold(
            &name,
            "delete_threshold",
            &raw.delete_threshold,
            problems,
        )
        .unwrap_or(Threshold::Percent(10.0)),
        clear_threshold: validate_threshold(
            &name,
            "clear_threshold",
            &raw.clear_threshold,
            problems,
        ),
        schedule: validate_schedule(&name, raw, problems),
        expect_every: validate_expect_every(&name, raw, problems),
        max_file_size: validate_max_file_size(&name, raw, problems),
        max_rows: validate_max_rows(&name, raw, problems),
        webhooks: webhook::validate_webhooks(&name, &raw.webhook, problems),
        scim: scim::validate_scim(&name, raw.scim.as_ref(), &fields, problems),
        report_to: raw.report_to.clone(),
        report_on: validate_report_on(&name, raw, problems),
        require_channel: raw.require_channel.unwrap_or(false),
        pgp_private_key_file: raw
            .pgp_private_key_file
            .as_ref()
            .map(|p| PathBuf::from(p.get_ref())),
        pgp_signer_key_file: raw
            .pgp_signer_key_file
            .as_ref()
            .map(|p| PathBuf::from(p.get_ref())),
        require_signature: validate_pgp(&name, raw, problems),
        name,
        fields,
        id_field: id_field.unwrap_or(0),
        group_fields,
        filters,
    };
    (problems.list.len() == before).then_some(feed)
}

fn validate_fields(
    feed: &str,
    raw_fields: &[Spanned<RawField>],
    problems: &mut Problems,
) -> Vec<Field> {
    if raw_fields.len() > MAX_FIELDS {
        problems.at(
            &raw_fields[MAX_FIELDS],
            format!(
                "feed '{feed}' maps {} fields; at most {MAX_FIELDS} are allowed (the ID included): remove {}",
                raw_fields.len(),
                raw_fields.len() - MAX_FIELDS
            ),
        );
    }
    let mut names = HashSet::new();
    let mut columns = HashSet::new();
    let mut fields = Vec::new();
    for spanned in raw_fields {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        if name.trim().is_empty() {
            problems.at(
                &raw.name,
                format!("feed '{feed}': a field has an empty name"),
            );
        }
        if !names.insert(name.clone()) {
            problems.at(
                &raw.name,
                format!(
                    "feed '{feed}': field name '{name}' is used twice; field names must be unique"
                ),
            );
        }
        let kind = match &raw.kind {
            None => FieldKind::Text,
            Some(k) => match FieldKind::parse(k.get_ref()) {
                Some(kind) => kind,
                None => {
                    problems.at(
                        k,
                        format!(
                            "feed '{feed}', field '{name}': unknown type '{}'; use one of id, text, email, sms, voice, multi",
                            k.get_ref()
                        ),
                    );
                    FieldKind::Text
                }
            },
        };
        let column = raw.column.clone().unwrap_or_else(|| name.clone());
        for header in std::iter::once(&column).chain(raw.aliases.iter()) {
            if !columns.insert(normalize_header(header)) {
                problems.at(
                    spanned,
                    format!(
                        "feed '{feed}', field '{name}': column or alias '{header}' is mapped twice"
                    ),
                );
            }
        }
        let separator = match (kind, &raw.separator) {
            (FieldKind::Multi, Some(s)) if !s.is_empty() => Some(s.clone()),
            (FieldKind::Multi, _) => {
                problems.at(
                    spanned,
                    format!("feed '{feed}', field '{name}': a multi field needs a non-empty separator, e.g. separator = \";\""),
                );
                None
            }
            (_, Some(_)) => {
                problems.at(
                    spanned,
                    format!(
                        "feed '{feed}', field '{name}': separator is only for type = \"multi\""
                    ),
                );
                None
            }
            (_, None) => None,
        };
        let max_length = match &raw.max_length {
            None => DEFAULT_MAX_LENGTH,
            Some(m) if (1..=65_535).contains(m.get_ref()) => *m.get_ref() as usize,
            Some(m) => {
                problems.at(
                    m,
                    format!(
                        "feed '{feed}', field '{name}': max_length = {} is out of range; use 1-65535",
                        m.get_ref()
                    ),
                );
                DEFAULT_MAX_LENGTH
            }
        };
        let search = raw
            .search
            .unwrap_or_else(|| searched_by_default(kind, &name));
        fields.push(Field {
            name,
            column,
            aliases: raw.aliases.clone(),
            kind,
            required: raw.required,
            separator,
            max_length,
            search,
            filter: raw.filter.unwrap_or(kind == FieldKind::Multi),
        });
    }
    fields
}

/// The status page searches IDs, names, phones and emails unless the
/// field says otherwise: a name is a text field whose name says so.
fn searched_by_default(kind: FieldKind, name: &str) -> bool {
    match kind {
        FieldKind::Id | FieldKind::Email | FieldKind::Sms | FieldKind::Voice => true,
        FieldKind::Text => name.to_lowercase().contains("name"),
        FieldKind::Multi => false,
    }
}

/// Header names match ignoring case and surrounding spaces.
pub fn normalize_header(h: &str) -> String {
    h.trim().to_lowercase()
}

/// A text field named by `id_field` is the feed's ID from here on, as if
/// it said `type = "id"`: a file without its column fails, it cannot be a
/// group field, and it is searched unless it says otherwise.
fn promote_to_id(field: &mut Field, search: Option<bool>) {
    field.kind = FieldKind::Id;
    field.search = search.unwrap_or(true);
}

fn find_id_field(
    feed: &str,
    raw: &RawFeed,
    fields: &[Field],
    problems: &mut Problems,
) -> Option<usize> {
    let id_kinds: Vec<usize> = (0..fields.len())
        .filter(|&i| fields[i].kind == FieldKind::Id)
        .collect();
    if id_kinds.len() > 1 {
        problems.at(
            &raw.name,
            format!(
                "feed '{feed}' has {} fields of type \"id\"; exactly one is allowed",
                id_kinds.len()
            ),
        );
        return None;
    }
    match (&raw.id_field, id_kinds.first()) {
        (Some(named), Some(&i)) if fields[i].name != *named.get_ref() => {
            problems.at(
                named,
                format!(
                    "feed '{feed}': id_field = \"{}\" but the field of type \"id\" is '{}'; make them the same",
                    named.get_ref(),
                    fields[i].name
                ),
            );
            None
        }
        (_, Some(&i)) => Some(i),
        (Some(named), None) => match fields.iter().position(|f| f.name == *named.get_ref()) {
            Some(i) if fields[i].kind == FieldKind::Text => Some(i),
            Some(_) => {
                problems.at(
                    named,
                    format!(
                        "feed '{feed}': id_field '{}' must be of type \"id\" or \"text\"",
                        named.get_ref()
                    ),
                );
                None
            }
            None => {
                problems.at(named, format!("feed '{feed}': id_field = \"{}\" names no [[feed.field]]; add that field with type = \"id\"", named.get_ref()));
                None
            }
        },
        (None, None) => {
            problems.at(
                &raw.name,
                format!("feed '{feed}' has no id field; add a [[feed.field]] with type = \"id\" (the column that identifies a person)"),
            );
            None
        }
    }
}

fn validate_group_fields(
    feed: &str,
    raw: &RawFeed,
    fields: &[Field],
    problems: &mut Problems,
) -> Vec<usize> {
    if raw.group_fields.len() > MAX_GROUP_FIELDS {
        problems.at(
            &raw.group_fields[MAX_GROUP_FIELDS],
            format!(
                "feed '{feed}' has {} group_fields; at most {MAX_GROUP_FIELDS} are allowed",
                raw.group_fields.len()
            ),
        );
    }
    let mut out = Vec::new();
    for g in &raw.group_fields {
        match fields.iter().position(|f| f.name == *g.get_ref()) {
            Some(i) if fields[i].kind == FieldKind::Id => problems.at(
                g,
                format!(
                    "feed '{feed}': the id field '{}' cannot be a group field",
                    g.get_ref()
                ),
            ),
            Some(i) if out.contains(&i) => problems.at(
                g,
                format!(
                    "feed '{feed}': group field '{}' is listed twice",
                    g.get_ref()
                ),
            ),
            Some(i) => out.push(i),
            None => problems.at(
                g,
                format!(
                    "feed '{feed}': group field '{}' names no [[feed.field]]",
                    g.get_ref()
                ),
            ),
        }
    }
    out
}

fn validate_filters(
    feed: &str,
    raw: &RawFeed,
    fields: &[Field],
    problems: &mut Problems,
) -> Vec<Filter> {
    let mut out = Vec::new();
    for f in &raw.filter {
        let f_raw = f.get_ref();
        match fields.iter().position(|x| x.name == *f_raw.field.get_ref()) {
            Some(i) if f_raw.equals.is_empty() => problems.at(
                f,
                format!("feed '{feed}': the filter on '{}' has an empty equals list; list the values to import", fields[i].name),
            ),
            Some(i) => out.push(Filter {
                field: i,
                equals: f_raw.equals.iter().map(|v| v.trim().to_lowercase()).collect(),
            }),
            None => problems.at(
                &f_raw.field,
                format!("feed '{feed}': filter field '{}' names no [[feed.field]]; map its column first", f_raw.field.get_ref()),
            ),
        }
    }
    out
}

fn validate_delimiter(feed: &str, raw: &RawFeed, problems: &mut Problems) -> Option<u8> {
    let d = raw.delimiter.as_ref()?;
    match d.get_ref().as_str() {
        "auto" => None,
        "," => Some(b','),
        ";" => Some(b';'),
        "\t" | "tab" => Some(b'\t'),
        "|" => Some(b'|'),
        other => {
            problems.at(
                d,
                format!("feed '{feed}': delimiter = {other:?} is not supported; use \"auto\", \",\", \";\", \"\\t\" or \"|\""),
            );
            None
        }
    }
}

/// The workbook sheet to read; a name of blanks is a mistake, not "the
/// first sheet".
fn validate_sheet(feed: &str, raw: &RawFeed, problems: &mut Problems) -> Option<String> {
    let sheet = raw.sheet.as_ref()?;
    if sheet.get_ref().trim().is_empty() {
        problems.at(
            sheet,
            format!("feed '{feed}': sheet = {:?} names no sheet; write the sheet's name as the workbook shows it on its tab, or remove the key to read the first visible sheet", sheet.get_ref()),
        );
        return None;
    }
    Some(sheet.get_ref().clone())
}

fn validate_country(
    feed: &str,
    raw: &RawFeed,
    problems: &mut Problems,
) -> phonenumber::country::Id {
    let Some(c) = &raw.default_country else {
        return phonenumber::country::Id::US;
    };
    match c.get_ref().trim().to_ascii_uppercase().parse() {
        Ok(id) => id,
        Err(_) => {
            problems.at(
                c,
                format!("feed '{feed}': default_country = \"{}\" is not a two-letter country code such as \"US\" or \"GB\"", c.get_ref()),
            );
            phonenumber::country::Id::US
        }
    }
}

/// A percentage or a count (10% when not set); `None` for `"none"`, which
/// only `clear_threshold` accepts.
fn validate_threshold(
    feed: &str,
    key: &str,
    value: &Option<Spanned<NumberOrText>>,
    problems: &mut Problems,
) -> Option<Threshold> {
    let Some(t) = value else {
        return Some(Threshold::Percent(10.0));
    };
    if key == "clear_threshold"
        && matches!(t.get_ref(), NumberOrText::Text(s) if s.trim().eq_ignore_ascii_case("none"))
    {
        return None;
    }
    let parsed = match t.get_ref() {
        NumberOrText::Number(n) if *n >= 0 => Some(Threshold::Count(*n as u64)),
        NumberOrText::Number(_) => None,
        NumberOrText::Text(s) => match s.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Threshold::Percent),
            None => s.trim().parse::<u64>().ok().map(Threshold::Count),
        },
    };
    let none = if key == "clear_threshold" {
        ", or \"none\""
    } else {
        ""
    };
    parsed.or_else(|| {
        problems.at(
            t,
            format!("feed '{feed}': {key} must be a percentage such as \"10%\" (0-100) or a count such as 500{none}"),
        );
        Some(Threshold::Percent(10.0))
    })
}

fn validate_schedule(feed: &str, raw: &RawFeed, problems: &mut Problems) -> Schedule {
    let Some(s) = &raw.schedule else {
        return Schedule::OnArrival;
    };
    let text = s.get_ref().trim();
    if text == "on_arrival" {
        return Schedule::OnArrival;
    }
    let daily = text
        .strip_prefix("daily ")
        .and_then(|hm| parse_time_of_day(hm.trim()));
    daily.unwrap_or_else(|| {
        problems.at(
            s,
            format!("feed '{feed}': schedule = \"{text}\" is not understood; use \"on_arrival\" or \"daily HH:MM\" such as \"daily 02:00\" (server local time, or [timezone])"),
        );
        Schedule::OnArrival
    })
}

/// `HH:MM` or `HH:MM:SS`.
fn parse_time_of_day(text: &str) -> Option<Schedule> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let numbers: Vec<u8> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hour, minute, second) = (numbers[0], numbers[1], numbers.get(2).copied().unwrap_or(0));
    (hour < 24 && minute < 60 && second < 60).then_some(Schedule::Daily {
        hour,
        minute,
        second,
    })
}

fn validate_expect_every(feed: &str, raw: &RawFeed, problems: &mut Problems) -> Duration {
    let Some(e) = &raw.expect_every else {
        return Duration::from_secs(24 * 3600);
    };
    match humantime::parse_duration(e.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            problems.at(
                e,
                format!("feed '{feed}': expect_every = \"{}\" is not a duration such as \"24h\" or \"7days\"", e.get_ref()),
            );
            Duration::from_secs(24 * 3600)
        }
    }
}

fn validate_report_on(feed: &str, raw: &RawFeed, problems: &mut Problems) -> Vec<String> {
    let Some(states) = &raw.report_on else {
        return DEFAULT_REPORT_ON.iter().map(|s| s.to_string()).collect();
    };
    let mut chosen = Vec::new();
    for state in states {
        if REPORT_STATES.contains(&state.get_ref().as_str()) {
            chosen.push(state.get_ref().clone());
        } else {
            problems.at(
                state,
                format!(
                    "feed '{feed}': report_on holds \"{}\", which is not a run state; use some of {}",
                    state.get_ref(),
                    REPORT_STATES.join(", ")
                ),
            );
        }
    }
    chosen
}

fn validate_max_file_size(feed: &str, raw: &RawFeed, problems: &mut Problems) -> u64 {
    let Some(m) = &raw.max_file_size else {
        return DEFAULT_MAX_FILE_SIZE;
    };
    positive_size(m.get_ref()).unwrap_or_else(|| {
        problems.at(
            m,
            format!("feed '{feed}': max_file_size must be a positive size such as \"2GiB\", \"500MB\" or a number of bytes"),
        );
        DEFAULT_MAX_FILE_SIZE
    })
}

/// The OpenPGP settings' combinations (the key files themselves are read
/// by `flagsync check` and each run); returns `require_signature`.
fn validate_pgp(feed: &str, raw: &RawFeed, problems: &mut Problems) -> bool {
    for path in [&raw.pgp_private_key_file, &raw.pgp_signer_key_file]
        .into_iter()
        .flatten()
    {
        if path.get_ref().trim().is_empty() {
            problems.at(
                path,
                format!("feed '{feed}': a key file's path cannot be empty"),
            );
        }
    }
    if let (Some(signer), None) = (&raw.pgp_signer_key_file, &raw.pgp_private_key_file) {
        problems.at(
            signer,
            format!("feed '{feed}': pgp_signer_key_file is set without pgp_private_key_file; signatures are checked on encrypted files: set pgp_private_key_file too (`flagsync pgp keygen --feed {feed}` makes one)"),
        );
    }
    let Some(require) = &raw.require_signature else {
        return false;
    };
    if *require.get_ref() && raw.pgp_signer_key_file.is_none() {
        problems.at(
            require,
            format!("feed '{feed}': require_signature = true needs pgp_signer_key_file, the sender's public key to check signatures with: set it (`gpg --export --armor THEIR_KEY > FILE`), or remove require_signature"),
        );
    }
    *require.get_ref()
}

fn validate_max_rows(feed: &str, raw: &RawFeed, problems: &mut Problems) -> u64 {
    match &raw.max_rows {
        None => DEFAULT_MAX_ROWS,
        Some(m) if *m.get_ref() > 0 => *m.get_ref() as u64,
        Some(m) => {
            problems.at(
                m,
                format!("feed '{feed}': max_rows must be a positive number of rows"),
            );
            DEFAULT_MAX_ROWS
        }
    }
}

/// Every key of each table, read off the serde definitions themselves (for
/// the test that the configuration reference names them all).
#[cfg(test)]
pub(super) fn known_keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("top level", struct_keys::<RawConfig>()),
        ("[sftp]", struct_keys::<RawSftp>()),
        ("[web]", struct_keys::<RawWeb>()),
        ("[smtp]", struct_keys::<RawSmtp>()),
        ("[[feed]]", struct_keys::<RawFeed>()),
        ("[[feed.field]]", struct_keys::<RawField>()),
        ("[[feed.filter]]", struct_keys::<RawFilter>()),
        ("[[feed.webhook]]", struct_keys::<webhook::RawWebhook>()),
        ("[feed.scim]", struct_keys::<scim::RawScim>()),
    ]
}

/// The field names serde passes to `deserialize_struct`: a deserializer
/// that only listens for them.
#[cfg(test)]
fn struct_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use std::cell::Cell;

    struct Listener<'a>(&'a Cell<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for Listener<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("only structs are listened to"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(serde::de::Error::custom("heard"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let heard = Cell::new(&[][..]);
    let _ = T::deserialize(Listener(&heard));
    heard.get()
}
