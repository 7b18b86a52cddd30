//! Compressed files: a gzip file, a ZIP archive or a tar archive (plain or
//! gzipped) holding one CSV file, expanded into a writer the caller gives (the worker's unnamed temporary
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
//! 3. An Office file (a ZIP with `xl/`, `word/` entries…) is not expanded:
//!    a workbook is read by `import::workbook` (the worker asks it first),
//!    and any other keeps its "save it as CSV" reason.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::input::Input;
use super::text::{office_zip_reason, printable};

/// What a file's first bytes say it is packed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Gzip,
    Zip,
    Tar,
}

/// The container a file starts like, if any.
pub fn container_of(input: &dyn Input) -> Option<Container> {
    let mut head = [0u8; TAR_BLOCK];
    let n = input.len().min(TAR_BLOCK as u64) as usize;
    input.read_exact_at(0, &mut head[..n]).ok()?;
    let head = &head[..n];
    if head.starts_with(b"\x1F\x8B") {
        Some(Container::Gzip)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Container::Zip)
    } else if is_tar_header(head) {
        Some(Container::Tar)
    } else {
        None
    }
}

const TAR_BLOCK: usize = 512;

/// A tar header block: its checksum field (octal, at 148) matches the sum
/// of its bytes with that field read as spaces. Checked, not just the
/// `ustar` magic, so that no CSV file can pass for one (and old v7 tar
/// files, without the magic, are still known).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < TAR_BLOCK || block[0] == 0 {
        return false;
    }
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(stated) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| u32::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let sum: u32 = block[..TAR_BLOCK]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stated
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
        Container::Tar => expand_tar(&mut InputReader::new(input), "tar", input.len(), limit, out),
    }
}

fn expand_gzip(input: &dyn Input, limit: u64, out: &mut dyn Write) -> Result<Expanded, Refusal> {
    let reader = io::BufReader::with_capacity(1 << 16, InputReader::new(input));
    // Concatenated members are one file, as `gzip -d` reads them.
    let mut decoder = flate2::read::MultiGzDecoder::new(reader);
    let mut head = Vec::with_capacity(TAR_BLOCK);
    (&mut decoder)
        .take(TAR_BLOCK as u64)
        .read_to_end(&mut head)
        .map_err(|e| Refusal::Refused(gzip_damaged(e)))?;
    if let Some(reason) = packed_twice_reason(&head) {
        return Err(Refusal::Refused(reason));
    }
    let tar = is_tar_header(&head);
    let mut expanded = io::Cursor::new(head).chain(decoder);
    if tar {
        return expand_tar(&mut expanded, "tar.gz", input.len(), limit, out);
    }
    let too_big = || {
        format!(
            "the gzip file ({} bytes) expands to more than {limit} bytes, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size",
            input.len()
        )
    };
    let size = copy_counted(&mut expanded, out, limit, gzip_damaged, too_big)?;
    Ok(Expanded {
        container: "gzip".into(),
        size,
    })
}

fn gzip_damaged(e: io::Error) -> String {
    damaged_reason("the gzip file", e)
}

/// `what` ("the gzip file") could not be read to its end.
fn damaged_reason(what: &str, e: io::Error) -> String {
    let how = if e.kind() == io::ErrorKind::UnexpectedEof {
        "cut short (an interrupted upload or copy)".to_string()
    } else {
        format!("damaged ({})", printable(&e.to_string()))
    };
    format!("{what} is {how}; send it again, or unpack it and send the CSV file")
}

/// A gzip file compressed again (as a transfer tool that compresses what
/// it sends makes): one layer is read, and the sender is told what to send
/// instead. (A ZIP inside is left to the reader: a workbook is read, any
/// other ZIP gets the reader's reason.)
fn packed_twice_reason(head: &[u8]) -> Option<String> {
    head.starts_with(b"\x1F\x8B").then(|| {
        "the gzip file holds another gzip file (it was compressed twice); send the CSV file compressed once, as a .csv.gz or a ZIP holding the CSV file".to_string()
    })
}

/// Expands the one file of a tar stream (`label`: `tar` or `tar.gz`, for
/// the run record; `sent`: the size of the file as sent). Folders, links
/// and macOS's `._*` files do not count; a second file stops the reading
/// at once, so a many-file bomb is never read through.
fn expand_tar(
    from: &mut dyn Read,
    label: &str,
    sent: u64,
    limit: u64,
    out: &mut dyn Write,
) -> Result<Expanded, Refusal> {
    let refuse = |r: String| Refusal::Refused(r);
    // Bounds what a stream of headers without files may make the reader
    // go through.
    let mut bounded = from.take(limit.saturating_add(1 << 20));
    let mut archive = tar::Archive::new(&mut bounded);
    let mut found: Option<(String, u64)> = None;
    for entry in archive.entries().map_err(|e| refuse(tar_damaged(e)))? {
        let mut entry = entry.map_err(|e| refuse(tar_damaged(e)))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !entry.header().entry_type().is_file() || is_packing_noise(&name) {
            continue;
        }
        let shown = printable(&name).into_owned();
        if let Some((first, _)) = found {
            return Err(refuse(format!(
                "the tar archive holds more than one file ('{}', '{shown}'…), and only an archive holding one CSV file can be read; send each file on its own",
                printable(&first)
            )));
        }
        if entry.size() > limit {
            return Err(refuse(format!(
                "the tar archive's file '{shown}' is {} bytes, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size",
                entry.size()
            )));
        }
        let too_big = || {
            format!(
                "the tar archive ({sent} bytes sent) expands to more than {limit} bytes before its file '{shown}' ends, over this feed's max_file_size of {limit} bytes; send a smaller file, or ask for a larger max_file_size"
            )
        };
        let size = copy_counted(&mut entry, out, limit, tar_damaged, too_big)?;
        found = Some((name, size));
    }
    let (name, size) = found.ok_or_else(|| {
        refuse("the tar archive holds no file; send the CSV file itself, or an archive holding just that file".into())
    })?;
    Ok(Expanded {
        container: format!("{label}: {name}"),
        size,
    })
}

fn tar_damaged(e: io::Error) -> String {
    damaged_reason("the tar archive", e)
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

/// An [`Input`] as a reader with a position (also read by
/// [`super::workbook`]).
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

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
            }
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tar_and_a_tar_gz_with_one_file_expand() {
        let t = tar_of(&[("hr/", b""), ("hr/._hr.csv", b"\0\x05"), ("hr/hr.csv", CSV)]);
        let (e, out) = run(&t, 1000).unwrap();
        assert_eq!(
            (e.container.as_str(), out.as_slice()),
            ("tar: hr/hr.csv", CSV)
        );
        let (e, out) = run(&gzip(&t), 1000).unwrap();
        assert_eq!(
            (e.container.as_str(), out.as_slice()),
            ("tar.gz: hr/hr.csv", CSV)
        );
    }

    #[test]
    fn a_tar_with_several_files_no_file_or_too_big_a_file_is_refused() {
        let reason = run(&gzip(&tar_of(&[("a.csv", CSV), ("b.csv", CSV)])), 1000).unwrap_err();
        assert!(
            reason.contains("more than one file ('a.csv', 'b.csv'"),
            "{reason}"
        );
        let reason = run(&tar_of(&[("hr/", b"")]), 1000).unwrap_err();
        assert!(reason.contains("holds no file"), "{reason}");
        let reason = run(&tar_of(&[("big.csv", &vec![b'a'; 5000])]), 1000).unwrap_err();
        assert!(reason.contains("'big.csv' is 5000 bytes"), "{reason}");
        let whole = gzip(&tar_of(&[("hr.csv", &vec![b'a'; 5000])]));
        let reason = run(&whole[..whole.len() - 30], 10_000).unwrap_err();
        assert!(
            reason.contains("cut short") || reason.contains("damaged"),
            "{reason}"
        );
    }

    #[test]
    fn no_csv_passes_for_a_tar_header() {
        let mut text = b"id,name".to_vec();
        text.extend(std::iter::repeat_n(b'x', 250));
        text.extend(b"ustar  00");
        text.extend(std::iter::repeat_n(b' ', 300));
        assert_eq!(container_of(&text), None);
        let mut block = tar_of(&[("hr.csv", CSV)]);
        block[0] ^= 1;
        assert_eq!(container_of(&block), None, "a wrong checksum");
    }

    #[test]
    fn a_gzip_of_a_gzip_says_so() {
        let reason = run(&gzip(&gzip(CSV)), 1000).unwrap_err();
        assert!(reason.contains("compressed twice"), "{reason}");
    }
}
