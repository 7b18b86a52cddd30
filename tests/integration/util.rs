//! The harness every test uses: a fresh temp dir per test, a configuration
//! written by the test (its `data_dir` inside that temp dir), and helpers
//! that run the real `flagsync` binary and read what it leaves behind
//! (`--json` output, `recipients export`, `groups list`, `runs`, error
//! reports, the whole data folder).
//!
//! Every command run through [`Env::run`] is checked for panics and stack
//! traces, and every import through [`Env::import`] is checked for the
//! counting invariant and for an exit code that matches its state.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_flagsync");

/// Header of the standard `hr` feed's files ([`Feed::hr`]).
pub const HR_HEADER: &str =
    "Employee ID,First Name,Last Name,Email,Mobile Phone,Office Phone,Department,Status";

/// Field names of the standard `hr` feed, in configuration order: the
/// header of its `recipients export`.
pub const HR_FIELDS: &str =
    "employee_id,first_name,last_name,email,mobile,office_phone,department,status";

const DEPARTMENTS: [&str; 4] = ["Sales", "Engineering", "Finance", "Support"];

// ---------------------------------------------------------------------------
// Configuration builders
// ---------------------------------------------------------------------------

/// One `[[feed.field]]` table.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub column: String,
    pub kind: String,
    pub aliases: Vec<String>,
    pub required: bool,
    pub separator: Option<String>,
    pub max_length: Option<usize>,
}

impl Field {
    pub fn new(name: &str, column: &str, kind: &str) -> Field {
        Field {
            name: name.into(),
            column: column.into(),
            kind: kind.into(),
            aliases: Vec::new(),
            required: false,
            separator: None,
            max_length: None,
        }
    }

    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub fn aliases(mut self, aliases: &[&str]) -> Field {
        self.aliases = aliases.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn separator(mut self, separator: &str) -> Field {
        self.separator = Some(separator.into());
        self
    }

    pub fn max_length(mut self, max_length: usize) -> Field {
        self.max_length = Some(max_length);
        self
    }

    fn to_toml(&self) -> String {
        let mut s = String::from("  [[feed.field]]\n");
        s += &format!("  name = {}\n", toml_str(&self.name));
        s += &format!("  column = {}\n", toml_str(&self.column));
        if !self.aliases.is_empty() {
            let aliases: Vec<String> = self.aliases.iter().map(|a| toml_str(a)).collect();
            s += &format!("  aliases = [{}]\n", aliases.join(", "));
        }
        s += &format!("  type = {}\n", toml_str(&self.kind));
        if self.required {
            s += "  required = true\n";
        }
        if let Some(sep) = &self.separator {
            s += &format!("  separator = {}\n", toml_str(sep));
        }
        if let Some(n) = self.max_length {
            s += &format!("  max_length = {n}\n");
        }
        s
    }
}

/// One `[[feed]]` table with its fields and filters.
#[derive(Clone, Debug)]
pub struct Feed {
    pub name: String,
    /// Left out of the file when empty.
    pub id_field: String,
    pub delimiter: String,
    /// The raw TOML value, e.g. `"10%"` (with quotes) or `5`.
    pub delete_threshold: String,
    pub require_channel: bool,
    pub group_fields: Vec<String>,
    pub fields: Vec<Field>,
    pub filters: Vec<(String, Vec<String>)>,
    /// Raw `key = value` lines added to the `[[feed]]` table.
    pub extra: Vec<String>,
}

impl Feed {
    /// The standard feed: the columns of [`HR_HEADER`], `department` as the
    /// group field, a required first name, a delivery channel required, the
    /// default 10% delete threshold, delimiter auto-detected, no filter.
    pub fn hr(name: &str) -> Feed {
        Feed {
            name: name.into(),
            id_field: "employee_id".into(),
            delimiter: "auto".into(),
            delete_threshold: "\"10%\"".into(),
            require_channel: true,
            group_fields: vec!["department".into()],
            fields: vec![
                Field::new("employee_id", "Employee ID", "id").aliases(&["EmpID"]),
                Field::new("first_name", "First Name", "text").required(),
                Field::new("last_name", "Last Name", "text"),
                Field::new("email", "Email", "email"),
                Field::new("mobile", "Mobile Phone", "sms"),
                Field::new("office_phone", "Office Phone", "voice"),
                Field::new("department", "Department", "text"),
                Field::new("status", "Status", "text"),
            ],
            filters: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn threshold(mut self, raw_toml_value: &str) -> Feed {
        self.delete_threshold = raw_toml_value.into();
        self
    }

    pub fn delimiter(mut self, delimiter: &str) -> Feed {
        self.delimiter = delimiter.into();
        self
    }

    pub fn require_channel(mut self, yes: bool) -> Feed {
        self.require_channel = yes;
        self
    }

    pub fn groups(mut self, fields: &[&str]) -> Feed {
        self.group_fields = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    pub fn field(mut self, field: Field) -> Feed {
        self.fields.push(field);
        self
    }

    /// Replaces the field called `field.name`.
    pub fn replace_field(mut self, field: Field) -> Feed {
        let slot = self
            .fields
            .iter_mut()
            .find(|f| f.name == field.name)
            .expect("no such field to replace");
        *slot = field;
        self
    }

    pub fn filter(mut self, field: &str, equals: &[&str]) -> Feed {
        self.filters
            .push((field.into(), equals.iter().map(|v| v.to_string()).collect()));
        self
    }

    pub fn extra(mut self, line: &str) -> Feed {
        self.extra.push(line.into());
        self
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::from("[[feed]]\n");
        s += &format!("name = {}\n", toml_str(&self.name));
        if !self.id_field.is_empty() {
            s += &format!("id_field = {}\n", toml_str(&self.id_field));
        }
        s += &format!("delimiter = {}\n", toml_str(&self.delimiter));
        s += "default_country = \"US\"\n";
        s += &format!("delete_threshold = {}\n", self.delete_threshold);
        s += "schedule = \"on_arrival\"\n";
        s += "expect_every = \"24h\"\n";
        s += "report_to = []\n";
        let groups: Vec<String> = self.group_fields.iter().map(|g| toml_str(g)).collect();
        s += &format!("group_fields = [{}]\n", groups.join(", "));
        s += &format!("require_channel = {}\n", self.require_channel);
        for line in &self.extra {
            s += line;
            s += "\n";
        }
        s += "\n";
        for field in &self.fields {
            s += &field.to_toml();
        }
        for (field, equals) in &self.filters {
            let equals: Vec<String> = equals.iter().map(|e| toml_str(e)).collect();
            s += &format!(
                "\n  [[feed.filter]]\n  field = {}\n  equals = [{}]\n",
                toml_str(field),
                equals.join(", ")
            );
        }
        s += "\n";
        s
    }
}

/// A TOML basic string holding `s`.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\t' => out += "\\t",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A whole configuration file: `data_dir`, `[sftp]`, `[web]`, the feeds.
pub fn config_text(data_dir: &Path, feeds: &[Feed]) -> String {
    let mut s = format!(
        "data_dir = {}\n\n[sftp]\nlisten = \"127.0.0.1:2222\"\n\n[web]\nlisten = \"127.0.0.1:8080\"\n\n",
        toml_str(&data_dir.display().to_string())
    );
    for feed in feeds {
        s += &feed.to_toml();
    }
    s
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// What a finished command left: exit code and output.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from_output(what: &str, output: std::process::Output) -> Out {
        let out = Out {
            code: output
                .status
                .code()
                .unwrap_or_else(|| panic!("{what}: killed by a signal: {:?}", output.status)),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        out.assert_no_panic(what);
        out
    }

    /// Bad input must never end in a panic or a stack trace.
    pub fn assert_no_panic(&self, what: &str) {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked")
                    && !text.contains("RUST_BACKTRACE")
                    && !text.contains("flagsync: internal error"),
                "{what}: the binary panicked:\n{self:#?}"
            );
        }
    }

    pub fn json(&self, what: &str) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON value ({e}):\n{self:#?}"))
    }
}

/// The outcome of one `flagsync import ... --json`.
#[derive(Debug, Clone)]
pub struct Run {
    pub json: Value,
    pub code: i32,
    pub stderr: String,
}

/// The count fields every run reports.
pub const COUNTS: [&str; 9] = [
    "rows",
    "added",
    "updated",
    "removed",
    "unchanged",
    "flagged",
    "filtered",
    "groups_created",
    "groups_removed",
];

impl Run {
    pub fn state(&self) -> &str {
        self.json["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `state` in {:#}", self.json))
    }

    pub fn n(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer `{key}` in {:#}", self.json))
    }

    pub fn reason(&self) -> String {
        self.json["reason"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "no string `reason` in {:#}\nstderr: {}",
                    self.json, self.stderr
                )
            })
            .to_string()
    }

    /// The run's ID as it is typed on the command line.
    pub fn id(&self) -> String {
        run_id_of(&self.json)
    }

    /// All counts by name, for comparing two runs of the same file.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        COUNTS.iter().map(|k| (*k, self.n(k))).collect()
    }

    /// Asserts the exact counts given (others are not checked).
    #[track_caller]
    pub fn assert_counts(&self, expected: &[(&str, u64)]) {
        for (key, want) in expected {
            assert_eq!(
                self.n(key),
                *want,
                "count `{key}` differs; whole run: {:#}",
                self.json
            );
        }
    }
}

/// The run ID from a run object, whether the binary uses numbers or strings.
pub fn run_id_of(run: &Value) -> String {
    match &run["run_id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("run_id is {other} in {run:#}"),
    }
}

/// rows = added + updated + unchanged + flagged + filtered, on any run that
/// read the file.
#[track_caller]
pub fn assert_count_invariant(run: &Value) {
    let n = |k: &str| {
        run[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer `{k}` in {run:#}"))
    };
    assert_eq!(
        n("rows"),
        n("added") + n("updated") + n("unchanged") + n("flagged") + n("filtered"),
        "rows != added + updated + unchanged + flagged + filtered in {run:#}"
    );
}

/// The exit code flagsync gives for a run state (README, Command line).
pub fn exit_code_for(state: &str) -> i32 {
    match state {
        "applied" | "unchanged" => 0,
        "held" => 3,
        "failed" => 1,
        other => panic!("import reported state {other:?}"),
    }
}

/// A fresh temp dir with a config file, a data dir and an input folder.
pub struct Env {
    _dir: TempDir,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
}

impl Env {
    /// A temp dir with no configuration file yet.
    pub fn bare() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("flagsync-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("in")).expect("input dir");
        Env {
            data_dir: root.join("data"),
            config: root.join("flagsync-test.toml"),
            root,
            _dir: dir,
        }
    }

    pub fn new(feeds: &[Feed]) -> Env {
        let env = Env::bare();
        env.write_config(&config_text(&env.data_dir, feeds));
        env
    }

    /// The standard configuration: one [`Feed::hr`] called `hr`.
    pub fn hr() -> Env {
        Env::new(&[Feed::hr("hr")])
    }

    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).expect("write config");
    }

    /// The binary with the working directory set to the temp dir and no
    /// configuration taken from the environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.root)
            .env_remove("FLAGSYNC_CONFIG")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LOG")
            .env("USER", "tester")
            .env("LOGNAME", "tester")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `flagsync --config <config> ARGS...`.
    pub fn run(&self, args: &[&str]) -> Out {
        let mut cmd = self.command();
        cmd.arg("--config").arg(&self.config).args(args);
        run_command(cmd, &args.join(" "))
    }

    /// Writes an input file outside the data dir and returns its path.
    pub fn input(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.join("in").join(name);
        fs::write(&path, content).expect("write input");
        path
    }

    /// `flagsync import --feed FEED FILE --json EXTRA...`, checked for an
    /// exit code matching the state, `dry_run`, `feed` and the counting
    /// invariant.
    pub fn import(&self, feed: &str, file: &Path, extra: &[&str]) -> Run {
        let file = file.to_str().expect("utf-8 path");
        let mut args = vec!["import", "--feed", feed, file, "--json"];
        args.extend_from_slice(extra);
        let what = args.join(" ");
        let out = self.run(&args);
        let json = out.json(&what);
        let run = Run {
            json,
            code: out.code,
            stderr: out.stderr,
        };
        let state = run.state().to_string();
        assert_eq!(
            run.code,
            exit_code_for(&state),
            "{what}: exit code does not match state {state}: {run:#?}"
        );
        assert_eq!(run.json["feed"], feed, "{what}: feed: {:#}", run.json);
        let dry = extra.contains(&"--dry-run");
        assert_eq!(run.json["dry_run"], dry, "{what}: dry_run: {:#}", run.json);
        if state != "failed" {
            assert_count_invariant(&run.json);
        }
        run
    }

    /// Writes `content` as `in/<name>` and imports it into `feed`.
    pub fn import_text(&self, feed: &str, name: &str, content: impl AsRef<[u8]>) -> Run {
        let path = self.input(name, content);
        self.import(feed, &path, &[])
    }

    /// `recipients export --feed FEED --raw` (CSV, values exactly as
    /// stored) as text.
    pub fn export(&self, feed: &str) -> String {
        let out = self.run(&["recipients", "export", "--feed", feed, "--raw"]);
        assert_eq!(out.code, 0, "recipients export failed: {out:#?}");
        out.stdout
    }

    /// The export parsed: field name → value, one map per recipient, in the
    /// order written.
    pub fn export_records(&self, feed: &str) -> Vec<BTreeMap<String, String>> {
        parse_export(&self.export(feed))
    }

    /// One recipient of the export by ID.
    pub fn recipient(&self, feed: &str, id: &str) -> Option<BTreeMap<String, String>> {
        self.export_records(feed)
            .into_iter()
            .find(|r| r.get("employee_id").map(String::as_str) == Some(id))
    }

    /// IDs in the export, in export order.
    pub fn exported_ids(&self, feed: &str) -> Vec<String> {
        self.export_records(feed)
            .into_iter()
            .map(|r| r["employee_id"].clone())
            .collect()
    }

    /// `groups list --feed FEED --json` as group name → member count.
    pub fn groups(&self, feed: &str) -> BTreeMap<String, u64> {
        let out = self.run(&["groups", "list", "--feed", feed, "--json"]);
        assert_eq!(out.code, 0, "groups list failed: {out:#?}");
        let json = out.json("groups list");
        let list = match &json {
            Value::Array(a) => a.clone(),
            Value::Object(o) if o.get("groups").is_some_and(Value::is_array) => {
                o["groups"].as_array().cloned().unwrap_or_default()
            }
            other => panic!("groups list --json is not an array: {other:#}"),
        };
        list.iter()
            .map(|g| {
                let name = ["name", "group"]
                    .iter()
                    .find_map(|k| g[*k].as_str())
                    .unwrap_or_else(|| panic!("group without a name: {g:#}"));
                let count = ["members", "member_count", "count", "recipients"]
                    .iter()
                    .find_map(|k| g[*k].as_u64())
                    .unwrap_or_else(|| panic!("group without a member count: {g:#}"));
                (name.to_string(), count)
            })
            .collect()
    }

    /// `runs list --json`, newest first.
    pub fn runs_list(&self) -> Vec<Value> {
        self.try_runs_list(&[])
            .unwrap_or_else(|out| panic!("runs list failed: {out:#?}"))
    }

    /// `runs list --json EXTRA...`, or the failed command.
    pub fn try_runs_list(&self, extra: &[&str]) -> Result<Vec<Value>, Out> {
        let mut args = vec!["runs", "list", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        if out.code != 0 {
            return Err(out);
        }
        match out.json("runs list") {
            Value::Array(a) => Ok(a),
            other => panic!("runs list --json is not an array: {other:#}"),
        }
    }

    /// `recipients export --feed FEED --raw`, or the failed command.
    pub fn try_export(&self, feed: &str) -> Result<String, Out> {
        let out = self.run(&["recipients", "export", "--feed", feed, "--raw"]);
        if out.code == 0 {
            Ok(out.stdout)
        } else {
            Err(out)
        }
    }

    /// `runs show ID --json`.
    /// `check`'s entry count (every entry of every table), as it prints
    /// it; the output when `check` fails.
    pub fn try_store_entries(&self) -> Result<String, Out> {
        let out = self.run(&["check"]);
        let line = out.stdout.lines().find(|l| l.contains("entries"));
        match (out.code, line) {
            (0, Some(line)) => Ok(line.split('(').nth(1).unwrap_or(line).to_string()),
            _ => Err(out),
        }
    }

    /// [`Env::try_store_entries`], which must succeed.
    pub fn store_entries(&self) -> String {
        self.try_store_entries()
            .unwrap_or_else(|out| panic!("check names no entry count: {out:#?}"))
    }

    pub fn run_show(&self, id: &str) -> Value {
        let out = self.run(&["runs", "show", id, "--json"]);
        assert_eq!(out.code, 0, "runs show {id} failed: {out:#?}");
        out.json("runs show")
    }

    /// Path of the newest error report for `file_name` of `feed`
    /// (`errors/<UTC start>-run<ID>-<file name>.errors.csv`).
    pub fn error_report_path(&self, feed: &str, file_name: &str) -> PathBuf {
        let dir = self.data_dir.join(feed).join("errors");
        let names: Vec<String> = fs::read_dir(&dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let newest = names
            .iter()
            .filter_map(|n| report_name_parts(n).map(|p| (p, n)))
            .filter(|((_, _, file), _)| file == file_name)
            .max_by(|((s1, id1, _), _), ((s2, id2, _), _)| (s1, id1).cmp(&(s2, id2)))
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| panic!("no error report for {file_name} in {names:?}"));
        dir.join(newest)
    }

    /// The newest error report of `file_name` as text, without its BOM
    /// (asserted).
    pub fn error_report_text(&self, feed: &str, file_name: &str) -> String {
        report_text(&self.error_report_path(feed, file_name))
    }
}

/// An error report's text without its BOM; panics when it does not start
/// with one.
#[track_caller]
pub fn report_text(path: &Path) -> String {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("error report {} not readable: {e}", path.display()));
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => panic!(
            "error report {} does not start with a UTF-8 BOM: {:?}",
            path.display(),
            &text[..text.len().min(40)]
        ),
    }
}

/// `<UTC start>-run<ID>-<file name>.errors.csv` → (start, ID, file name).
pub fn report_name_parts(name: &str) -> Option<(String, u64, String)> {
    let rest = name.strip_suffix(".errors.csv")?;
    let (stamp, rest) = rest.split_once("-run")?;
    let (id, file) = rest.split_once('-')?;
    let ok_stamp = stamp.len() == 16
        && stamp.ends_with('Z')
        && stamp.as_bytes()[8] == b'T'
        && stamp.bytes().filter(u8::is_ascii_digit).count() == 14;
    if !ok_stamp {
        return None;
    }
    Some((stamp.to_string(), id.parse().ok()?, file.to_string()))
}

impl Env {
    /// Every file and folder under the data dir with its content: two equal
    /// snapshots mean the store and folders are byte-for-byte the same.
    pub fn tree(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        tree_of(&self.data_dir)
    }
}

/// Runs a prepared command, returning its exit code and output.
pub fn run_command(mut cmd: Command, what: &str) -> Out {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {BIN}: {e}"));
    Out::from_output(what, output)
}

/// Parses a CSV export with its header into field → value maps.
pub fn parse_export(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader.headers().expect("export header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("export record");
            header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Every record of a CSV text (no header handling, any width), with the
/// physical line each starts on (header = line 1).
pub fn csv_records(text: &[u8], delimiter: u8) -> Vec<(u64, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text);
    reader
        .byte_records()
        .map(|r| {
            let r = r.expect("csv record");
            // The csv crate's own line count is one short after a CRLF, and
            // its byte offset may point at the previous record's line end:
            // skip line ends, then count the LFs before the record.
            let mut start = r.position().expect("position").byte() as usize;
            while start < text.len() && matches!(text[start], b'\r' | b'\n') {
                start += 1;
            }
            let line = 1 + text[..start].iter().filter(|&&b| b == b'\n').count() as u64;
            let fields = r
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            (line, fields)
        })
        .collect()
}

/// Snapshot of a folder tree: relative path → content (`None` for folders).
pub fn tree_of(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .expect("under base")
                .display()
                .to_string();
            if entry.file_type().expect("file type").is_dir() {
                out.insert(rel, None);
                walk(base, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).expect("read file")));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Asserts two tree snapshots are equal, naming the paths that differ.
#[track_caller]
pub fn assert_same_tree(
    before: &BTreeMap<String, Option<Vec<u8>>>,
    after: &BTreeMap<String, Option<Vec<u8>>>,
    what: &str,
) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    for (path, content) in before {
        match after.get(path) {
            None => diffs.push(format!("removed: {path}")),
            Some(c) if c != content => diffs.push(format!("changed: {path}")),
            _ => {}
        }
    }
    for path in after.keys() {
        if !before.contains_key(path) {
            diffs.push(format!("added: {path}"));
        }
    }
    panic!(
        "{what}: the data dir changed on disk:\n{}",
        diffs.join("\n")
    );
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

// ---------------------------------------------------------------------------
// Test files
// ---------------------------------------------------------------------------

/// The standard row for person `i` of the `hr` feed: valid, with an email,
/// no phones, status Active, one of four departments.
pub fn hr_row(i: usize) -> String {
    format!(
        "E{i:05},First{i},Last{i},user{i}@example.com,,,{},Active",
        DEPARTMENTS[i % DEPARTMENTS.len()]
    )
}

/// The ID [`hr_row`] gives person `i`.
pub fn hr_id(i: usize) -> String {
    format!("E{i:05}")
}

/// A file of the `hr` feed: header, then [`hr_row`] for each `i`, LF line
/// ends.
pub fn hr_file(people: impl IntoIterator<Item = usize>) -> String {
    let mut s = String::from(HR_HEADER);
    s.push('\n');
    for i in people {
        s += &hr_row(i);
        s.push('\n');
    }
    s
}

/// A file of the `hr` feed from a header and literal rows, LF line ends.
pub fn lines(rows: &[&str]) -> String {
    let mut s = String::new();
    for row in rows {
        s += row;
        s.push('\n');
    }
    s
}

/// What the error report holds for an original cell: formula-like cells
/// get a leading `'`.
pub fn neutralised(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

/// One expected line of an error report.
pub struct Flag<'a> {
    pub line: u64,
    /// Substrings the `reasons` cell must contain.
    pub reasons: &'a [&'a str],
}

/// Checks the error report of an import in full: its header is
/// `line,reasons,` plus the file's own header, it lists exactly the expected
/// lines (in file order), each with its reasons, followed by the original
/// record cell for cell (neutralised). `content` is the UTF-8 file as
/// imported, `delimiter` its delimiter.
#[track_caller]
pub fn assert_error_report(
    env: &Env,
    feed: &str,
    file_name: &str,
    content: &str,
    delimiter: u8,
    expected: &[Flag<'_>],
) {
    let originals: BTreeMap<u64, Vec<String>> = csv_records(content.as_bytes(), delimiter)
        .into_iter()
        .collect();
    let file_header = &originals[&1];

    let text = env.error_report_text(feed, file_name);
    let first_line = text.lines().next().unwrap_or_default();
    let mut want_header = vec!["line".to_string(), "reasons".to_string()];
    want_header.extend(file_header.iter().cloned());
    let report = csv_records(text.as_bytes(), b',');
    assert!(!report.is_empty(), "empty error report");
    assert_eq!(
        report[0].1, want_header,
        "error report header (first line {first_line:?})"
    );

    let rows: Vec<&Vec<String>> = report[1..].iter().map(|(_, r)| r).collect();
    let lines: Vec<u64> = rows
        .iter()
        .map(|r| {
            r[0].parse()
                .unwrap_or_else(|_| panic!("line cell {:?} is not a number", r[0]))
        })
        .collect();
    let want_lines: Vec<u64> = expected.iter().map(|f| f.line).collect();
    assert_eq!(
        lines, want_lines,
        "lines listed in the error report:\n{text}"
    );
    for (row, flag) in rows.iter().zip(expected) {
        for reason in flag.reasons {
            assert!(
                row[1].contains(reason),
                "line {}: reasons {:?} do not contain {reason:?}\n{text}",
                flag.line,
                row[1]
            );
        }
        let original: Vec<String> = originals
            .get(&flag.line)
            .unwrap_or_else(|| panic!("the test file has no record on line {}", flag.line))
            .iter()
            .map(|c| neutralised(c))
            .collect();
        assert_eq!(
            row[2..].to_vec(),
            original,
            "line {}: the record in the error report is not the original record\n{text}",
            flag.line
        );
    }
}

/// The pre-login cookie (`flagsync_login=…`) a login page's response head
/// sets, as a `Cookie:` value.
pub fn pre_login_cookie(head: &str) -> String {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next())
        .find(|kv| kv.starts_with("flagsync_login="))
        .expect("the pre-login cookie")
        .to_string()
}

/// The `hr` feed's export after importing `content` into a new store: what
/// every packed or encrypted copy of it must store.
pub fn plain_export(content: &str) -> String {
    let env = Env::hr();
    let run = env.import_text("hr", "hr.csv", content);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    env.export("hr")
}

/// Imports `path` into feed `hr`, expecting a failed run that changed
/// nothing (the data folder and the store), and returns its reason.
#[track_caller]
pub fn refused_import(env: &Env, path: &std::path::Path) -> String {
    // The data folder's lock file is made by the first command that locks.
    let tree = || {
        let mut tree = env.tree();
        tree.remove("flagsync.lock");
        tree
    };
    let before = tree();
    let stored = env.try_export("hr").ok();
    let run = env.import("hr", path, &[]);
    assert_eq!(run.state(), "failed", "{:#}", run.json);
    assert_eq!(tree(), before, "a refused file changed the data folder");
    assert_eq!(env.try_export("hr").ok(), stored, "the store changed");
    let reason = run.reason();
    assert!(
        !reason.contains('\u{0}') && !reason.contains('\u{FFFD}'),
        "binary bytes in the reason: {reason}"
    );
    reason
}
