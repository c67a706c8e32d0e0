//! The ledger's canonical binary encoding: fixed-width little-endian integers, length-prefixed
//! byte strings and lists, nothing optional. Hashes and signatures cover these bytes exactly,
//! so every value has one encoding: decoding refuses trailing bytes, over-long fields and
//! non-canonical values, and `encode(decode(b)) == b` for every `b` that decodes.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated: {what} needs {needed_bytes} more bytes")]
    Truncated {
        what: &'static str,
        needed_bytes: usize,
    },
    #[error("{extra_bytes} trailing bytes")]
    Trailing { extra_bytes: usize },
    #[error("{what} is {len}, at most {max} allowed")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Appends values in the canonical encoding.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn with_domain(domain: &[u8]) -> Writer {
        let mut writer = Writer::new();
        writer.bytes.extend_from_slice(domain);
        writer
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn u8(&mut self, value: u8) -> &mut Writer {
        self.bytes.push(value);
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Writer {
        self.u8(u8::from(value))
    }

    pub fn u16(&mut self, value: u16) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u128(&mut self, value: u128) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A fragment id: its 32 bytes.
    pub fn fragment_id(&mut self, id: &crate::tx::FragmentId) -> &mut Writer {
        self.fixed(&id.0)
    }

    /// Bytes whose length the reader knows (ids, keys, signatures).
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Writer {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Bytes with a u32 length prefix.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Writer {
        let len = u32::try_from(bytes.len()).expect("encoded fields are bounded far below 4 GiB");
        self.u32(len);
        self.fixed(bytes)
    }

    pub fn str(&mut self, text: &str) -> &mut Writer {
        self.bytes(text.as_bytes())
    }

    /// A list's element count; the caller writes the elements.
    pub fn count(&mut self, count: usize) -> &mut Writer {
        self.u32(u32::try_from(count).expect("lists are bounded far below 2^32"))
    }
}

/// Reads values in the canonical encoding, bounding every length before allocating.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Refuses what is left over: a value has exactly one encoding.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                extra_bytes: self.bytes.len(),
            })
        }
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated {
                what,
                needed_bytes: len - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    /// A fragment id: its 32 bytes.
    pub fn fragment_id(
        &mut self,
        what: &'static str,
    ) -> Result<crate::tx::FragmentId, DecodeError> {
        self.array(what).map(crate::tx::FragmentId)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
        }
        self.take(len, what)
    }

    /// Exactly `len` bytes (a length read before; refused when fewer remain).
    pub fn bytes_exact(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(len).map_err(|_| DecodeError::Invalid(what))?;
        self.take(len, what)
    }

    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(max, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid(what))
    }

    /// A list's element count, at most `max` and at most what the remaining bytes can hold
    /// at `min_element_bytes` each, so a forged count cannot make the caller allocate.
    pub fn count(
        &mut self,
        max: usize,
        min_element_bytes: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        if count > max {
            return Err(DecodeError::TooLong {
                what,
                len: count as u64,
                max: max as u64,
            });
        }
        let needed = count.saturating_mul(min_element_bytes.max(1));
        if needed > self.bytes.len() {
            return Err(DecodeError::Truncated {
                what,
                needed_bytes: needed - self.bytes.len(),
            });
        }
        Ok(count)
    }
}

/// SHA-256 of `domain ‖ parts…`.
pub fn hash(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(domain);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Hex for logs and errors (the one spelling every crate shares).
pub use cess_types::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut w = Writer::new();
        w.u8(7)
            .bool(true)
            .u16(0x1234)
            .u64(u64::MAX)
            .u128(5)
            .bytes(b"abc")
            .str("é");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.u16("c").unwrap(), 0x1234);
        assert_eq!(r.u64("d").unwrap(), u64::MAX);
        assert_eq!(r.u128("e").unwrap(), 5);
        assert_eq!(r.bytes(3, "f").unwrap(), b"abc");
        assert_eq!(r.string(8, "g").unwrap(), "é");
        r.finish().unwrap();

        assert!(matches!(
            Reader::new(&[2]).bool("x"),
            Err(DecodeError::Invalid("x"))
        ));
        let long = Writer::new().bytes(b"abcd").as_bytes().to_vec();
        assert!(matches!(
            Reader::new(&long).bytes(3, "x"),
            Err(DecodeError::TooLong { len: 4, max: 3, .. })
        ));
        // A count the remaining bytes cannot hold is refused before anything is allocated.
        let forged = Writer::new().u32(1000).as_bytes().to_vec();
        assert!(matches!(
            Reader::new(&forged).count(10_000, 32, "x"),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::new(&[0, 0]).finish(),
            Err(DecodeError::Trailing { extra_bytes: 2 })
        ));
    }
}
