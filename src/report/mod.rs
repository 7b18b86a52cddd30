//! Run outputs for people: the error report CSV and the report email
//! (`mail`).
//!
//! Owns: the error report's format and name. Invariants: a cell a
//! spreadsheet would run as a formula never reaches the file unneutralised;
//! every report starts with a UTF-8 BOM; each run's report has its own name
//! ([`report_name`]), so no run overwrites or removes another's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::import::{ErrorSink, RowError};
use crate::store::Run;

pub mod mail;

/// UTF-8 byte-order mark: every report starts with it, so that Excel reads
/// the file as UTF-8 (without it, it guesses the local code page).
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Longest file name most file systems take (bytes).
const MAX_NAME: usize = 255;

/// The name of a run's error report in `errors/`:
/// `<UTC start, seconds>-run<run id>-<file name>.errors.csv`, e.g.
/// `20261204T020000Z-run42-hr.csv.errors.csv`. Every run has its own (a
/// daily file of the same name never overwrites an earlier run's report;
/// the run ID tells apart runs that started in the same second), and the
/// names sort by time. A very long file name is shortened to keep the
/// whole within 255 bytes.
pub fn report_name(started: SystemTime, run_id: Option<u64>, file_name: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(started)
        .to_string()
        .replace(['-', ':'], "");
    let prefix = match run_id {
        Some(id) => format!("{stamp}-run{id}-"),
        None => format!("{stamp}-"),
    };
    const SUFFIX: &str = ".errors.csv";
    // A control character in a name is taken by the disk, but not by every
    // client, terminal or download header that later shows it.
    let file_name: String = file_name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let file_name = file_name.as_str();
    let room = MAX_NAME.saturating_sub(prefix.len() + SUFFIX.len());
    let mut end = file_name.len().min(room);
    while !file_name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{prefix}{}{SUFFIX}", &file_name[..end])
}

/// Keeps the first errors for the run record, and writes every error to the
/// error report when there is a place for it (not in a dry run).
pub struct ErrorCollector {
    pub first: Vec<RowError>,
    report: Option<ErrorReport>,
}

impl ErrorCollector {
    /// Collects the first errors only.
    pub fn in_memory() -> ErrorCollector {
        ErrorCollector {
            first: Vec::new(),
            report: None,
        }
    }

    /// Also writes the report, to a hidden temporary file in `dir` until
    /// [`ErrorCollector::finish`] names it; `line_word` heads its first
    /// column ([`Run::line_word`]).
    pub fn with_report(dir: &Path, line_word: &str, header: &[String]) -> std::io::Result<Self> {
        Ok(ErrorCollector {
            first: Vec::new(),
            report: Some(ErrorReport::create(dir, line_word, header)?),
        })
    }

    /// Finishes the report: moves it into place as `<dir>/<name>` (see
    /// [`report_name`]) when rows were flagged, and returns its path. When
    /// none were, no report is written (and no other report is touched).
    pub fn finish(self, name: &str) -> std::io::Result<Option<PathBuf>> {
        match self.report {
            Some(report) => report.finish(name),
            None => Ok(None),
        }
    }
}

impl ErrorSink for ErrorCollector {
    fn row_error(&mut self, error: &RowError) -> std::io::Result<()> {
        if self.first.len() < Run::KEPT_ERRORS {
            self.first.push(error.clone());
        }
        match &mut self.report {
            Some(report) => report.write(error),
            None => Ok(()),
        }
    }
}

/// A BOM, `line,reasons,<the file's header>` (`row,…` for a workbook's
/// sheet), then one row per flagged record.
struct ErrorReport {
    writer: csv::Writer<BufWriter<File>>,
    dir: PathBuf,
    temp: PathBuf,
    rows: u64,
}

/// A CSV writer for a report at `path`: the BOM is already written; rows
/// keep their own width (too many or too few columns).
fn report_writer(path: &Path) -> std::io::Result<csv::Writer<BufWriter<File>>> {
    let mut file = BufWriter::new(File::create(path)?);
    file.write_all(BOM)?;
    Ok(csv::WriterBuilder::new().flexible(true).from_writer(file))
}

fn header_row(line_word: &str, header: &[String]) -> Vec<String> {
    let mut row: Vec<String> = vec![line_word.into(), "reasons".into()];
    row.extend(header.iter().map(|h| neutralize(h).into_owned()));
    row
}

impl ErrorReport {
    fn create(dir: &Path, line_word: &str, header: &[String]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Runs are one at a time (the data folder's lock and the server's
        // gate): one fixed temporary name is enough, and it stays short
        // whatever the file's name.
        let temp = dir.join(".flagsync-report.tmp");
        let mut writer = report_writer(&temp)?;
        writer
            .write_record(header_row(line_word, header))
            .map_err(std::io::Error::other)?;
        Ok(ErrorReport {
            writer,
            dir: dir.to_path_buf(),
            temp,
            rows: 0,
        })
    }

    fn write(&mut self, e: &RowError) -> std::io::Result<()> {
        let mut row: Vec<String> = Vec::with_capacity(e.cells.len() + 2);
        row.push(e.line.to_string());
        // A row imported with warnings says so: it is not left out.
        let kind = if e.warning { "warning: " } else { "" };
        row.push(neutralize(&format!("{kind}{}", e.reasons.join("; "))).into_owned());
        row.extend(e.cells.iter().map(|c| neutralize(c).into_owned()));
        self.writer
            .write_record(&row)
            .map_err(std::io::Error::other)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self, name: &str) -> std::io::Result<Option<PathBuf>> {
        let file = close(self.writer)?;
        if self.rows == 0 {
            drop(file);
            std::fs::remove_file(&self.temp)?;
            return Ok(None);
        }
        file.sync_all()?;
        let path = self.dir.join(name);
        std::fs::rename(&self.temp, &path)?;
        Ok(Some(path))
    }
}

fn close(writer: csv::Writer<BufWriter<File>>) -> std::io::Result<File> {
    let mut inner = writer
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    inner.flush()?;
    inner.into_inner().map_err(|e| e.into_error())
}

/// The report of a file rejected as a whole (a failed run), written to
/// `<dir>/<name>` (see [`report_name`]). The same shape as a row report, so
/// that it opens the same way: a BOM, the header row `line,reasons,` plus
/// the header cells found in the file (none when no header was read),
/// then one row with an empty `line` and the reason.
pub fn write_rejection_report(
    dir: &Path,
    name: &str,
    reason: &str,
    line_word: &str,
    header: Option<&[String]>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    // Runs are one at a time; a fixed name stays within 255 bytes.
    let temp = dir.join(".flagsync-rejection-report.tmp");
    let mut writer = report_writer(&temp)?;
    let header = header_row(line_word, header.unwrap_or_default());
    let reason = format!("the whole file was rejected (nothing was imported): {reason}");
    writer
        .write_record(&header)
        .and_then(|_| writer.write_record(["", neutralize(&reason).as_ref()]))
        .map_err(std::io::Error::other)?;
    close(writer)?.sync_all()?;
    let path = dir.join(name);
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// A cell starting with `=`, `+`, `-`, `@`, tab or CR is run as a formula by
/// spreadsheets: prefix it with `'` so it shows as text.
pub fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralize("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(neutralize("+15551234567"), "'+15551234567");
        assert_eq!(neutralize("-1"), "'-1");
        assert_eq!(neutralize("@cmd"), "'@cmd");
        assert_eq!(neutralize("Ada"), "Ada");
        assert_eq!(neutralize(""), "");
    }

    #[test]
    fn report_is_written_only_with_errors() {
        let dir = tempfile::tempdir().unwrap();
        let header = vec!["ID".to_string(), "Name".to_string()];
        let mut c = ErrorCollector::with_report(dir.path(), "line", &header).unwrap();
        c.row_error(&RowError {
            warning: false,
            line: 3,
            id: Some("E1".into()),
            reasons: vec!["a".into(), "b".into()],
            cells: vec!["E1".into(), "=cmd".into()],
        })
        .unwrap();
        let path = c.finish("1-f.csv.errors.csv").unwrap().unwrap();
        assert_eq!(path, dir.path().join("1-f.csv.errors.csv"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "\u{feff}line,reasons,ID,Name\n3,a; b,E1,'=cmd\n");
        // A later run without errors writes nothing and removes nothing.
        let c = ErrorCollector::with_report(dir.path(), "line", &header).unwrap();
        assert_eq!(c.finish("2-f.csv.errors.csv").unwrap(), None);
        assert!(path.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }

    #[test]
    fn report_names_sort_by_time_and_never_repeat() {
        use std::time::Duration;
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_349_600_123);
        assert_eq!(
            report_name(t, Some(42), "hr.csv"),
            "20261204T020000Z-run42-hr.csv.errors.csv"
        );
        assert_ne!(
            report_name(t, Some(42), "hr.csv"),
            report_name(t, Some(43), "hr.csv")
        );
        assert!(
            report_name(t + Duration::from_secs(1), Some(1), "a.csv")
                > report_name(t, Some(99), "z.csv")
        );
        assert_eq!(report_name(t, None, "x"), "20261204T020000Z-x.errors.csv");
        let long = "é".repeat(200);
        let name = report_name(t, Some(7), &long);
        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.starts_with("20261204T020000Z-run7-é") && name.ends_with("é.errors.csv"));
        assert_eq!(
            report_name(t, Some(8), "a\x1b[2J\nb.csv"),
            "20261204T020000Z-run8-a_[2J_b.csv.errors.csv"
        );
    }

    #[test]
    fn a_rejected_file_gets_a_report_with_its_reason_and_header() {
        let dir = tempfile::tempdir().unwrap();
        let header = ["Name", "=Email", "Caf\u{e9}"].map(String::from);
        let path = write_rejection_report(
            dir.path(),
            "r.errors.csv",
            "missing column \"Employee ID\"",
            "line",
            Some(&header),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "\u{feff}line,reasons,Name,'=Email,Caf\u{e9}\n,\"the whole file was rejected (nothing was imported): missing column \"\"Employee ID\"\"\"\n"
        );
        let path = write_rejection_report(
            dir.path(),
            "e.errors.csv",
            "the file is empty",
            "line",
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "\u{feff}line,reasons\n,the whole file was rejected (nothing was imported): the file is empty\n"
        );
    }
}
