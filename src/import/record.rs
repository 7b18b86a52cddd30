//! How a recipient is stored: its normalised values in the feed's field
//! order, and the groups it belongs to (kept with the record so that a later
//! run knows which memberships to move, even after the mapping changed).
//!
//! Layout (little-endian): `u8` version (1), `u16` value count, each value as
//! `u32` length + UTF-8 bytes, `u16` group count, each group likewise.

/// A recipient as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub values: Vec<String>,
    /// Sorted and without repeats.
    pub groups: Vec<String>,
}

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("a stored recipient record is damaged ({0}); restore the store from a backup")]
pub struct DecodeError(&'static str);

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = 5
            + self.values.iter().map(|v| 4 + v.len()).sum::<usize>()
            + self.groups.iter().map(|g| 4 + g.len()).sum::<usize>();
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
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
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
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item.as_bytes());
    }
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

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn list(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = self.u32()? as usize;
            let s = std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("not UTF-8"))?;
            out.push(s.to_string());
        }
        Ok(out)
    }

    fn skip_list(&mut self) -> Result<(), DecodeError> {
        let n = self.u16()?;
        for _ in 0..n {
            let len = self.u32()? as usize;
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
            values: vec!["E1".into(), "José".into(), String::new()],
            groups: vec!["Department: Sales".into()],
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        assert_eq!(Record::decode_groups(&bytes).unwrap(), r.groups);
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
