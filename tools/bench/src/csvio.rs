//! Minimal RFC 4180 helpers for the generator: writing a field with quoting
//! only where needed, reading whole records (quoted line breaks included)
//! from a stream, and splitting a record into fields.
//!
//! The generator and the next-day rewriter use the same quoting rule, so a
//! field written by one and re-encoded by the other is byte-identical.

use std::io::{self, BufRead};

/// True when a field must be quoted: it holds a comma, a double quote, CR or LF.
#[inline]
pub fn needs_quotes(field: &[u8]) -> bool {
    field
        .iter()
        .any(|&b| b == b',' || b == b'"' || b == b'\n' || b == b'\r')
}

/// Append one field to `out`, quoted (and inner quotes doubled) only if needed.
#[inline]
pub fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    if needs_quotes(field) {
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field);
    }
}

/// Encode a whole record (fields joined by commas, LF-terminated).
pub fn push_record<F: AsRef<[u8]>>(out: &mut Vec<u8>, fields: &[F]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_field(out, f.as_ref());
    }
    out.push(b'\n');
}

/// Reads one CSV record at a time, raw bytes and terminator included, joining
/// physical lines while a quoted field is open.
pub struct RecordReader<R> {
    inner: R,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader { inner }
    }

    /// Reads the next record into `buf` (cleared first). Returns false at EOF.
    pub fn read_record(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        let mut quotes = 0usize;
        loop {
            let start = buf.len();
            let n = self.inner.read_until(b'\n', buf)?;
            if n == 0 {
                return Ok(!buf.is_empty());
            }
            quotes += memcount(&buf[start..], b'"');
            if quotes.is_multiple_of(2) {
                return Ok(true);
            }
        }
    }
}

#[inline]
fn memcount(hay: &[u8], needle: u8) -> usize {
    hay.iter().filter(|&&b| b == needle).count()
}

/// Strip the record terminator (LF or CRLF).
#[inline]
pub fn trim_eol(rec: &[u8]) -> &[u8] {
    let mut end = rec.len();
    if end > 0 && rec[end - 1] == b'\n' {
        end -= 1;
        if end > 0 && rec[end - 1] == b'\r' {
            end -= 1;
        }
    }
    &rec[..end]
}

/// Split one record (without terminator) into unquoted field values.
/// `fields` is reused: its vectors keep their capacity.
pub fn split_record(rec: &[u8], fields: &mut Vec<Vec<u8>>) -> usize {
    let mut n = 0usize;
    let mut i = 0usize;
    loop {
        if fields.len() <= n {
            fields.push(Vec::new());
        }
        let f = &mut fields[n];
        f.clear();
        n += 1;
        if i < rec.len() && rec[i] == b'"' {
            i += 1;
            while i < rec.len() {
                if rec[i] == b'"' {
                    if i + 1 < rec.len() && rec[i + 1] == b'"' {
                        f.push(b'"');
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    f.push(rec[i]);
                    i += 1;
                }
            }
            // Anything after the closing quote up to the comma is kept as is.
            while i < rec.len() && rec[i] != b',' {
                f.push(rec[i]);
                i += 1;
            }
        } else {
            while i < rec.len() && rec[i] != b',' {
                f.push(rec[i]);
                i += 1;
            }
        }
        if i >= rec.len() {
            return n;
        }
        i += 1; // the comma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trip() {
        let fields: Vec<&[u8]> = vec![
            b"E0000001",
            b"Smith, \"Jr.\"",
            b"",
            b"plain",
            "Zoë".as_bytes(),
        ];
        let mut out = Vec::new();
        push_record(&mut out, &fields);
        assert_eq!(
            out,
            "E0000001,\"Smith, \"\"Jr.\"\"\",,plain,Zoë\n".as_bytes()
        );
        let mut parsed = Vec::new();
        let n = split_record(trim_eol(&out), &mut parsed);
        assert_eq!(n, 5);
        for (a, b) in fields.iter().zip(&parsed) {
            assert_eq!(*a, &b[..]);
        }
    }

    #[test]
    fn record_reader_joins_quoted_newlines() {
        let data = b"a,b\n\"x\ny\",z\nlast,1";
        let mut r = RecordReader::new(&data[..]);
        let mut buf = Vec::new();
        assert!(r.read_record(&mut buf).unwrap());
        assert_eq!(buf, b"a,b\n");
        assert!(r.read_record(&mut buf).unwrap());
        assert_eq!(buf, b"\"x\ny\",z\n");
        assert!(r.read_record(&mut buf).unwrap());
        assert_eq!(buf, b"last,1");
        assert!(!r.read_record(&mut buf).unwrap());
    }
}
