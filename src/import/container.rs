//! Compressed files: a gzip file, or a ZIP archive holding one CSV file,
//! expanded into a writer the caller gives (the worker's unnamed temporary
//! file), so that the rest of the reader sees the CSV as if it had been
//! sent as it is.
//!
//! Invariants:
//! 1. Never more than `limit` + one buffer of expanded bytes is written:
//!    bytes are counted as they come out of the decompressor, whatever a
//!    header declares (a ZIP entry's declared size is checked first too).
//! 2. A damaged, cut-short, encrypted, empty or many-file container is a
//!    [`Refusal::Refused`] with a reason that says what to do; reasons
//!    never hold the file's bytes, and entry names pass through
//!    [`printable`].
//! 3. An Office file (a ZIP with `xl/`, `word/` entries…) keeps the reason
//!    it had before archives were read.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::input::Input;
use super::text::{office_zip_reason, printable};

/// What a file's first bytes say it is packed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Gzip,
    Zip,
}

/// The container a file starts like, if any.
pub fn container_of(input: &dyn Input) -> Option<Container> {
    let mut head = [0u8; 4];
    let n = input.len().min(4) as usize;
    input.read_exact_at(0, &mut head[..n]).ok()?;
    let head = &head[..n];
    if head.starts_with(b"\x1F\x8B") {
        Some(Container::Gzip)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Container::Zip)
    } else {
        None
    }
}

/// Why a container was not expanded.
#[derive(Debug)]
pub enum Refusal {
    /// The file: the run fails with this reason.
    Refused(String),
    /// Writing the expanded copy failed (the disk, not the file).
    Write(io::Error),
}

/// What was expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// `gzip`, or `zip: <entry name>`, for the run record.
    pub container: String,
    /// Bytes written.
    pub size: u64,
}

/// Expands `input` (which [`container_of`] named `kind`) into `out`,
/// refusing it when it expands to more than `limit` bytes.
pub fn expand(
    input: &dyn Input,
    kind: Container,
    limit: u64,
    out: &mut dyn Write,
) -> Result<Expanded, Refusal> {
    match kind {
        Container::Gzip => expand_gzip(input, limit, out),
        Container::Zip => expand_zip(input, limit, out),
    }
}

fn expand_gzip(input: &dyn Input, limit: u64, out: &mut dyn Write) -> Result<Expanded, Refusal> {
    let reader = io::BufReader::with_capacity(1 << 16, InputReader::new(input));
    // Concatenated members are one file, as `gzip -d` reads them.
    let mut decoder = flate2::read::MultiGzDecoder::new(reader);
    let damaged = |e: io::Error| {
        let what = if e.kind() == io::ErrorKind::UnexpectedEof {
            "cut short (an interrupted upload or copy)".to_string()
        } else {
            format!("damaged ({})", printable(&e.to_string()))
        };
        format!("the gzip file is {what}; send it again, or unpack it and send the CSV file")
    };
    let too_big = || {
        format!(
            "the gzip file ({} bytes) expands to more than {limit} bytes, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size",
            input.len()
        )
    };
    let size = copy_counted(&mut decoder, out, limit, damaged, too_big)?;
    Ok(Expanded {
        container: "gzip".into(),
        size,
    })
}

/// Entries a ZIP tool adds beside the file that are not files of their
/// own: folders, and macOS Finder's resource forks.
fn is_packing_noise(name: &str) -> bool {
    name.ends_with('/')
        || name.starts_with("__MACOSX/")
        || name
            .rsplit('/')
            .next()
            .is_some_and(|base| base.starts_with("._"))
}

fn expand_zip(input: &dyn Input, limit: u64, out: &mut dyn Write) -> Result<Expanded, Refusal> {
    let refuse = |r: String| Refusal::Refused(r);
    let mut archive = match zip::ZipArchive::new(InputReader::new(input)) {
        Ok(archive) => archive,
        Err(e) => {
            // A cut-short workbook still gets the workbook's reason.
            let mut head = vec![0u8; input.len().min(4096) as usize];
            let office = input
                .read_exact_at(0, &mut head)
                .ok()
                .and_then(|()| office_zip_reason(&head, &[]));
            return Err(refuse(match office {
                Some(what) => format!("the file is {what}"),
                None => format!(
                    "the ZIP archive is damaged or cut short ({}); send it again, or unpack it and send the CSV file",
                    printable(&zip_error(&e))
                ),
            }));
        }
    };
    let names: Vec<String> = archive
        .file_names_raw()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    if let Some(what) = office_zip_reason(&[], &names) {
        return Err(refuse(format!("the file is {what}")));
    }
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| {
            refuse(format!(
                "the ZIP archive is damaged ({}); send it again, or unpack it and send the CSV file",
                printable(&zip_error(&e))
            ))
        })?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if !entry.is_dir() && !is_packing_noise(&name) {
            files.push((i, name));
        }
    }
    let (index, name) = match files.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(refuse(
                "the ZIP archive holds no file; send the CSV file itself, or a ZIP holding just that file".into(),
            ))
        }
        many => {
            const SHOWN: usize = 10;
            let mut listed: Vec<String> = many
                .iter()
                .take(SHOWN)
                .map(|(_, n)| format!("'{}'", printable(n)))
                .collect();
            if many.len() > SHOWN {
                listed.push(format!("and {} more", many.len() - SHOWN));
            }
            return Err(refuse(format!(
                "the ZIP archive holds {} files ({}), and only a ZIP holding one CSV file can be read; send each file on its own",
                many.len(),
                listed.join(", ")
            )));
        }
    };
    let shown = printable(&name).into_owned();
    {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| refuse(format!("the ZIP archive is damaged ({})", zip_error(&e))))?;
        if entry.encrypted() {
            return Err(refuse(format!(
                "the ZIP archive's file '{shown}' is encrypted (password-protected); send it without a password"
            )));
        }
        if entry.size() > limit {
            return Err(refuse(format!(
                "the ZIP archive's file '{shown}' expands to {} bytes, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size",
                entry.size()
            )));
        }
    }
    let mut entry = archive.by_index(index).map_err(|e| {
        refuse(match e {
            zip::result::ZipError::UnsupportedArchive(_)
            | zip::result::ZipError::CompressionMethodNotSupported(_) => format!(
                "the ZIP archive's file '{shown}' is packed in a way flagsync cannot read ({}); zip it with the usual Deflate method, or send the CSV file itself",
                zip_error(&e)
            ),
            _ => format!(
                "the ZIP archive is damaged ({}); send it again, or unpack it and send the CSV file",
                printable(&zip_error(&e))
            ),
        })
    })?;
    let damaged = |e: io::Error| {
        format!(
            "the ZIP archive's file '{shown}' is damaged or cut short ({}); send it again, or unpack it and send the CSV file",
            printable(&e.to_string())
        )
    };
    let too_big = || {
        format!(
            "the ZIP archive's file '{shown}' expands to more than {limit} bytes (more than its header says), over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size"
        )
    };
    let size = copy_counted(&mut entry, out, limit, damaged, too_big)?;
    Ok(Expanded {
        container: format!("zip: {name}"),
        size,
    })
}

fn zip_error(e: &zip::result::ZipError) -> String {
    e.to_string()
}

/// Copies `from` into `out`, stopping as soon as more than `limit` bytes
/// came out.
pub(super) fn copy_counted(
    from: &mut dyn Read,
    out: &mut dyn Write,
    limit: u64,
    damaged: impl Fn(io::Error) -> String,
    too_big: impl Fn() -> String,
) -> Result<u64, Refusal> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Refusal::Refused(damaged(e))),
        };
        total += n as u64;
        if total > limit {
            return Err(Refusal::Refused(too_big()));
        }
        out.write_all(&buf[..n]).map_err(Refusal::Write)?;
    }
}

/// An [`Input`] as a reader with a position.
pub(super) struct InputReader<'a> {
    input: &'a dyn Input,
    at: u64,
}

impl<'a> InputReader<'a> {
    pub(super) fn new(input: &'a dyn Input) -> Self {
        InputReader { input, at: 0 }
    }
}

// The OpenPGP reader wants its source to be `Debug`.
impl std::fmt::Debug for InputReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputReader").field("at", &self.at).finish()
    }
}

impl Read for InputReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.input.len().saturating_sub(self.at);
        let n = (buf.len() as u64).min(left) as usize;
        self.input.read_exact_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for InputReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.input.len() as i128;
        let to = match pos {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => len + d as i128,
            SeekFrom::Current(d) => self.at as i128 + d as i128,
        };
        if to < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.at = to as u64;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
            } else {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn run(bytes: &[u8], limit: u64) -> Result<(Expanded, Vec<u8>), String> {
        let kind = container_of(&bytes.to_vec()).expect("a container");
        let mut out = Vec::new();
        match expand(&bytes.to_vec(), kind, limit, &mut out) {
            Ok(e) => Ok((e, out)),
            Err(Refusal::Refused(r)) => Err(r),
            Err(Refusal::Write(e)) => panic!("{e}"),
        }
    }

    const CSV: &[u8] = b"id,name\n1,Ann\n";

    #[test]
    fn a_gzip_file_expands() {
        let (e, out) = run(&gzip(CSV), 1000).unwrap();
        assert_eq!(out, CSV);
        assert_eq!(e.container, "gzip");
        assert_eq!(container_of(&CSV.to_vec()), None);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 4 << 20]);
        let reason = run(&bomb, 1 << 20).unwrap_err();
        assert!(
            reason.contains("expands to more than 1048576 bytes"),
            "{reason}"
        );
    }

    #[test]
    fn a_damaged_gzip_is_refused() {
        let good = gzip(CSV);
        let cut = &good[..good.len() - 6];
        let reason = run(cut, 1000).unwrap_err();
        assert!(reason.contains("cut short"), "{reason}");
        let mut bad_crc = good.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 0xFF;
        let reason = run(&bad_crc, 1000).unwrap_err();
        assert!(reason.contains("damaged"), "{reason}");
    }

    #[test]
    fn a_zip_with_one_file_expands_and_noise_is_ignored() {
        let z = zip_of(&[
            ("hr/", b""),
            ("hr/hr.csv", CSV),
            ("__MACOSX/hr/._hr.csv", b"\0\x05\x16\x07"),
        ]);
        let (e, out) = run(&z, 1000).unwrap();
        assert_eq!(out, CSV);
        assert_eq!(e.container, "zip: hr/hr.csv");
    }

    #[test]
    fn a_zip_with_several_or_no_files_names_them() {
        let reason = run(&zip_of(&[("a.csv", CSV), ("b\x1b.csv", CSV)]), 1000).unwrap_err();
        assert!(
            reason.contains("holds 2 files ('a.csv', 'b\\u{1B}.csv')"),
            "{reason}"
        );
        let reason = run(&zip_of(&[("empty/", b"")]), 1000).unwrap_err();
        assert!(reason.contains("holds no file"), "{reason}");
    }

    #[test]
    fn a_zip_entry_over_the_limit_is_refused_before_expanding() {
        let reason = run(&zip_of(&[("big.csv", &vec![b'a'; 5000])]), 1000).unwrap_err();
        assert!(reason.contains("expands to 5000 bytes"), "{reason}");
    }

    #[test]
    fn a_zip_entry_that_lies_about_its_size_is_still_stopped() {
        let mut z = zip_of(&[("big.csv", &vec![b'a'; 5000])]);
        let local = 0;
        assert_eq!(&z[local..local + 4], b"PK\x03\x04");
        z[local + 22..local + 26].copy_from_slice(&10u32.to_le_bytes());
        let central = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        z[central + 24..central + 28].copy_from_slice(&10u32.to_le_bytes());
        let mut out = Vec::new();
        let refused = expand(&z, Container::Zip, 1000, &mut out);
        assert!(matches!(refused, Err(Refusal::Refused(_))), "{refused:?}");
        assert!(out.len() <= 1000 + (1 << 16));
    }

    #[test]
    fn a_workbook_keeps_its_reason() {
        let z = zip_of(&[
            ("[Content_Types].xml", b"<x/>"),
            ("xl/workbook.xml", b"<x/>"),
        ]);
        let reason = run(&z, 1000).unwrap_err();
        assert!(reason.contains("Excel workbook"), "{reason}");
    }
}
