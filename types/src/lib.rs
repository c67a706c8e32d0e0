//! The vocabulary every crate shares, at the bottom of the dependency graph: the engine stores a
//! fragment under its [`FragmentId`], the codec names it by it in a manifest, the proofs hash it
//! into every tag, the transport asks for it, and the ledger records who holds it. One type, so a
//! fragment id cannot be confused with a file id, a segment id or a block hash (all plain 32-byte
//! digests), and so its hex spelling is written once.

#![forbid(unsafe_code)]

use std::fmt;

/// A fragment's id: the SHA-256 of its bytes for user data (the codec names fragments so, and a
/// reader checks what it fetched against it); an idle file's chunks are named by the node's idle
/// layout instead. The order is the byte order, so maps keyed by it iterate as they would by the
/// bare bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FragmentId(pub [u8; 32]);

impl FragmentId {
    /// The id of a fragment whose bytes are `bytes`: their SHA-256.
    pub fn of(bytes: &[u8]) -> FragmentId {
        use sha2::Digest;
        FragmentId(sha2::Sha256::digest(bytes).into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex (64 digits).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits, either case (surrounding whitespace allowed).
    pub fn from_hex(s: &str) -> Option<FragmentId> {
        parse_hex32(s).map(FragmentId)
    }
}

impl From<[u8; 32]> for FragmentId {
    fn from(bytes: [u8; 32]) -> FragmentId {
        FragmentId(bytes)
    }
}

/// From a decoded message field: exactly 32 bytes, or the slice error.
impl TryFrom<&[u8]> for FragmentId {
    type Error = std::array::TryFromSliceError;
    fn try_from(bytes: &[u8]) -> Result<FragmentId, Self::Error> {
        <[u8; 32]>::try_from(bytes).map(FragmentId)
    }
}

impl AsRef<[u8]> for FragmentId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The first 8 bytes and an ellipsis: enough to tell fragments apart in a log line.
impl fmt::Display for FragmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for FragmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FragmentId({self})")
    }
}

/// Lowercase hex of any bytes (an id spells itself with [`FragmentId::to_hex`]).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses exactly 64 hex digits, either case, into 32 bytes (surrounding whitespace allowed).
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    // Digits only: `from_str_radix` alone would take "+1" as a byte.
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obviously-right spelling the table-driven `hex` is checked against.
    fn hex_reference(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hex_matches_the_reference_and_parses_back() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        assert_eq!(hex(&bytes), hex_reference(&bytes));
        assert_eq!(hex(&[]), "");
        for start in [0usize, 7, 100, 224] {
            let id: [u8; 32] = bytes[start..start + 32].try_into().unwrap();
            assert_eq!(parse_hex32(&hex(&id)), Some(id));
            assert_eq!(parse_hex32(&hex(&id).to_uppercase()), Some(id));
            assert_eq!(
                FragmentId::from_hex(&format!("  {}\n", hex(&id))),
                Some(FragmentId(id))
            );
        }
    }

    #[test]
    fn parse_refuses_what_is_not_64_hex_digits() {
        let good = "ab".repeat(32);
        assert!(parse_hex32(&good).is_some());
        for bad in [
            String::new(),
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}zz", "ab".repeat(31)),
            format!("{}+1", "ab".repeat(31)),
            // 64 bytes but not 64 characters: must not panic on a char boundary.
            format!("{}é", "ab".repeat(31)),
        ] {
            assert_eq!(parse_hex32(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn id_is_the_sha256_and_orders_as_its_bytes() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            FragmentId::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let low = FragmentId([1; 32]);
        let mut high = [1; 32];
        high[31] = 2;
        assert!(low < FragmentId(high));
        assert_eq!(format!("{low}"), "0101010101010101…");
        assert_eq!(format!("{low:?}"), "FragmentId(0101010101010101…)");
    }
}
