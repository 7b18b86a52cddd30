//! Random access to the bytes of a file, so that pass 2 can re-read just the
//! rows it needs (the file is never held in memory as a whole).

use std::io;

/// Bytes that can be read at any offset. Implemented for files and for
/// in-memory buffers (tests).
pub trait Input: Sync {
    fn len(&self) -> u64;

    /// True for the UTF-8 copy of a UTF-16 file: it is Unicode whatever
    /// its bytes look like (a malformed sequence is the byte 0xFF there).
    fn is_utf8_copy(&self) -> bool {
        false
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; an error if the input ends before.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Input for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Input for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

/// A file and its length at the time it was opened: a file that grows while
/// it is read is read up to that length only.
pub struct FileInput {
    file: std::fs::File,
    len: u64,
    utf8_copy: bool,
}

impl FileInput {
    pub fn open(path: &std::path::Path) -> io::Result<FileInput> {
        FileInput::from_file(std::fs::File::open(path)?)
    }

    pub fn from_file(file: std::fs::File) -> io::Result<FileInput> {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::other("it is a folder, not a file"));
        }
        Ok(FileInput {
            file,
            len: meta.len(),
            utf8_copy: false,
        })
    }

    /// A file written by [`transcode_utf16`].
    pub fn utf8_copy(file: std::fs::File) -> io::Result<FileInput> {
        let mut input = FileInput::from_file(file)?;
        input.utf8_copy = true;
        Ok(input)
    }
}

impl Input for FileInput {
    fn len(&self) -> u64 {
        self.len
    }

    fn is_utf8_copy(&self) -> bool {
        self.utf8_copy
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }
}

/// The byte order of a file that starts with a UTF-16 byte-order mark.
pub fn utf16_byte_order(input: &dyn Input) -> Option<super::Encoding> {
    let mut bom = [0u8; 2];
    input.read_exact_at(0, &mut bom).ok()?;
    match bom {
        [0xFF, 0xFE] => Some(super::Encoding::Utf16Le),
        [0xFE, 0xFF] => Some(super::Encoding::Utf16Be),
        _ => None,
    }
}

/// Writes a UTF-16 file (`order` from [`utf16_byte_order`]) to `out` as
/// UTF-8 without its byte-order mark, in pieces. A malformed sequence (a
/// lone surrogate) becomes the byte 0xFF, which is never UTF-8, so that the
/// row holding it is flagged rather than stored with a guess.
pub fn transcode_utf16(
    input: &dyn Input,
    order: super::Encoding,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    let encoding = match order {
        super::Encoding::Utf16Be => encoding_rs::UTF_16BE,
        _ => encoding_rs::UTF_16LE,
    };
    let mut decoder = encoding.new_decoder_with_bom_removal();
    let mut raw = vec![0u8; 1 << 20];
    let mut utf8 = vec![0u8; (1 << 20) * 3 / 2 + 16];
    let mut at = 0u64;
    loop {
        let take = (input.len() - at).min(raw.len() as u64) as usize;
        input.read_exact_at(at, &mut raw[..take])?;
        at += take as u64;
        let last = at == input.len();
        let mut read = 0;
        loop {
            let (result, r, w) =
                decoder.decode_to_utf8_without_replacement(&raw[read..take], &mut utf8, last);
            read += r;
            out.write_all(&utf8[..w])?;
            match result {
                encoding_rs::DecoderResult::InputEmpty => break,
                encoding_rs::DecoderResult::OutputFull => {}
                encoding_rs::DecoderResult::Malformed(_, _) => out.write_all(b"\xFF")?,
            }
        }
        if last {
            return Ok(());
        }
    }
}
