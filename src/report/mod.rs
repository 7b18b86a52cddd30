//! Run outputs for people: the error report CSV (and, in later issues, the
//! status email).
//!
//! Owns: the error report's format. Invariant: a cell a spreadsheet would
//! run as a formula never reaches the file unneutralised.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::import::{ErrorSink, RowError};
use crate::store::Run;

pub mod mail;

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

    /// Also writes `<dir>/<file name>.errors.csv`.
    pub fn with_report(dir: &Path, file_name: &str, header: &[String]) -> std::io::Result<Self> {
        Ok(ErrorCollector {
            first: Vec::new(),
            report: Some(ErrorReport::create(dir, file_name, header)?),
        })
    }

    /// Finishes the report: moves it into place when rows were flagged, and
    /// removes an older report of the same name when none were. Returns its
    /// path.
    pub fn finish(self) -> std::io::Result<Option<PathBuf>> {
        match self.report {
            Some(report) => report.finish(),
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

/// `line,reasons,<the file's header>`, then one row per flagged record.
struct ErrorReport {
    writer: csv::Writer<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl ErrorReport {
    fn create(dir: &Path, file_name: &str, header: &[String]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{file_name}.errors.csv"));
        let temp = dir.join(format!(".{file_name}.errors.csv.tmp"));
        // Flagged rows keep their own width (too many or too few columns).
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(BufWriter::new(File::create(&temp)?));
        let mut row: Vec<String> = vec!["line".into(), "reasons".into()];
        row.extend(header.iter().map(|h| neutralize(h).into_owned()));
        writer.write_record(&row).map_err(std::io::Error::other)?;
        Ok(ErrorReport {
            writer,
            temp,
            path,
            rows: 0,
        })
    }

    fn write(&mut self, e: &RowError) -> std::io::Result<()> {
        let mut row: Vec<String> = Vec::with_capacity(e.cells.len() + 2);
        row.push(e.line.to_string());
        row.push(neutralize(&e.reasons.join("; ")).into_owned());
        row.extend(e.cells.iter().map(|c| neutralize(c).into_owned()));
        self.writer
            .write_record(&row)
            .map_err(std::io::Error::other)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> std::io::Result<Option<PathBuf>> {
        let mut inner = self
            .writer
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        inner.flush()?;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        if self.rows == 0 {
            drop(file);
            std::fs::remove_file(&self.temp)?;
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            return Ok(None);
        }
        file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        Ok(Some(self.path))
    }
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
        let mut c = ErrorCollector::with_report(dir.path(), "f.csv", &header).unwrap();
        c.row_error(&RowError {
            warning: false,
            line: 3,
            id: Some("E1".into()),
            reasons: vec!["a".into(), "b".into()],
            cells: vec!["E1".into(), "=cmd".into()],
        })
        .unwrap();
        let path = c.finish().unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "line,reasons,ID,Name\n3,a; b,E1,'=cmd\n");
        let c = ErrorCollector::with_report(dir.path(), "f.csv", &header).unwrap();
        assert_eq!(c.finish().unwrap(), None);
        assert!(!path.exists());
    }
}
