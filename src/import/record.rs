//! How a recipient is stored: its normalised values in the feed's field
//! order, and the groups it belongs to (kept with the record so that a later
//! run knows which memberships to move, even after the mapping changed).
//!
//! Layout: `u8` version (1), `u16` (LE) value count, each value as a LEB128
//! length + UTF-8 bytes, `u16` group count, each group likewise. (Varint
//! lengths: most values are short, and a million records' worth of 4-byte
//! lengths was a quarter of the store.)

/// A recipient as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub values: Vec<String>,
    /// Sorted and without repeats.
    pub groups: Vec<String>,
}

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("a stored recipient record is damaged ({0})")]
pub struct DecodeError(&'static str);

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = 5
            + self.values.iter().map(|v| 2 + v.len()).sum::<usize>()
            + self.groups.iter().map(|g| 2 + g.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(VERSION);
        put_list(&mut out, &self.values);
        put_list(&mut out, &self.groups);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(1)? != [VERSION] {
            return Err(DecodeError("unknown record version"));
        }
        let values = cursor.list()?;
        let groups = cursor.list()?;
        Ok(Record { values, groups })
    }

    /// One value (by field position), borrowed, without decoding the rest;
    /// `None` past the last value.
    pub fn value_at(bytes: &[u8], i: usize) -> Result<Option<&str>, DecodeError> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(1)? != [VERSION] {
            return Err(DecodeError("unknown record version"));
        }
        let n = cursor.u16()? as usize;
        if i >= n {
            return Ok(None);
        }
        for _ in 0..i {
            let len = cursor.len()?;
            cursor.take(len)?;
        }
        let len = cursor.len()?;
        std::str::from_utf8(cursor.take(len)?)
            .map(Some)
            .map_err(|_| DecodeError("not UTF-8"))
    }

    /// The values, borrowed (one allocation instead of one per value).
    pub fn borrowed_values(bytes: &[u8]) -> Result<Vec<&str>, DecodeError> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(1)? != [VERSION] {
            return Err(DecodeError("unknown record version"));
        }
        let n = cursor.u16()? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = cursor.len()?;
            out.push(std::str::from_utf8(cursor.take(len)?).map_err(|_| DecodeError("not UTF-8"))?);
        }
        Ok(out)
    }

    /// Only the groups, without allocating the values.
    pub fn decode_groups(bytes: &[u8]) -> Result<Vec<String>, DecodeError> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(1)? != [VERSION] {
            return Err(DecodeError("unknown record version"));
        }
        cursor.skip_list()?;
        cursor.list()
    }
}

/// Builds an encoded record value by value, without a `String` per value
/// (validation is the import's hot loop).
pub struct RecordBuilder {
    buf: Vec<u8>,
    values: u16,
}

impl RecordBuilder {
    pub fn with_capacity(bytes: usize) -> RecordBuilder {
        let mut buf = Vec::with_capacity(bytes + 16);
        buf.push(VERSION);
        buf.extend_from_slice(&[0, 0]);
        RecordBuilder { buf, values: 0 }
    }

    pub fn push_value(&mut self, value: &str) {
        put_len(&mut self.buf, value.len());
        self.buf.extend_from_slice(value.as_bytes());
        self.values += 1;
    }

    /// The encoded record, as [`Record::encode`] would write it.
    pub fn finish(mut self, groups: &[String]) -> Vec<u8> {
        self.buf[1..3].copy_from_slice(&self.values.to_le_bytes());
        put_list(&mut self.buf, groups);
        self.buf
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u16).to_le_bytes());
    for item in items {
        put_len(out, item.len());
        out.extend_from_slice(item.as_bytes());
    }
}

/// LEB128: seven bits a byte, high bit set on all but the last.
fn put_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError("truncated"))?;
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= ((byte & 0x7F) as usize) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("length too long"))
    }

    fn list(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = self.len()?;
            let s = std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("not UTF-8"))?;
            out.push(s.to_string());
        }
        Ok(out)
    }

    fn skip_list(&mut self) -> Result<(), DecodeError> {
        let n = self.u16()?;
        for _ in 0..n {
            let len = self.len()?;
            self.take(len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let r = Record {
            values: vec!["E1".into(), "José".into(), String::new(), "x".repeat(300)],
            groups: vec!["Department: Sales".into()],
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        assert_eq!(Record::decode_groups(&bytes).unwrap(), r.groups);
        for (i, v) in r.values.iter().enumerate() {
            assert_eq!(Record::value_at(&bytes, i).unwrap(), Some(v.as_str()));
        }
        assert_eq!(Record::value_at(&bytes, r.values.len()).unwrap(), None);
        assert_eq!(Record::borrowed_values(&bytes).unwrap(), r.values);
        let mut b = RecordBuilder::with_capacity(8);
        for v in &r.values {
            b.push_value(v);
        }
        assert_eq!(b.finish(&r.groups), bytes);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err());
        }
    }
}
