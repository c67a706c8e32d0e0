//! PoDR²: publicly verifiable storage proofs on BLS12-381 (Shacham–Waters, public variant).
//!
//! A fragment is cut into blocks of s sectors (sector = 31 bytes, one scalar m_ij). A tagger
//! holding x and α_1..α_s tags block i of fragment `id` with
//! σ_i = (H(id‖i) · Π_j u_j^{m_ij})^x, computed as x·(H(id‖i) + (Σ_j α_j m_ij)·g₁): s field
//! multiply-adds and two scalar multiplications, not an s-term MSM. A challenge (derived from
//! a transcript binding epoch randomness, miner, round, tagger and fragment set) picks blocks
//! and coefficients ν; the miner answers with μ_j = Σ ν·m_ij and σ = Π σ_i^ν, one proof for
//! all its challenged fragments; anyone checks e(σ, g₂) = e(Π H(id‖i)^ν · Π u_j^{μ_j}, pk).
//!
//! Layout: [`curve`] wraps blst (the crate's only unsafe code) with checked decodes;
//! [`keys`], [`tag`], [`challenge`], [`proof`] are the scheme; [`backend`] holds the heavy
//! operations behind a trait: [`CpuBackend`] on blst, and with the `gpu` feature
//! [`GpuBackend`] on `cess-kernels`.
#![deny(unsafe_code)]

pub mod backend;
pub mod challenge;
pub mod check;
pub mod curve;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod keys;
pub mod pois;
pub mod proof;
pub mod tag;

pub use backend::{Backend, CpuBackend};
pub use challenge::{
    BLOCKS_PER_CHALLENGE_MAX, Challenge, ChallengeInputs, ChallengeParams,
    FRAGMENTS_PER_CHALLENGE_MAX, FragmentSet,
};
pub use check::{TagCheckError, check_tags};
pub use curve::PointError;
#[cfg(feature = "gpu")]
pub use gpu::GpuBackend;
pub use keys::{PublicKey, SecretKey, TaggerId};
pub use proof::{
    BatchItem, InvalidReason, MemorySource, NotHeld, Proof, ProofSource, ProveError, ProveStats,
    Verdict, batch_verify, prove, verify,
};
pub use tag::{Tags, tag_fragment};

use curve::{G1_BYTES, SCALAR_BYTES, SECTOR_BYTES, Scalar};

/// Domain separation tag for H: hash-to-G1 per RFC 9380, naming this protocol and version.
pub const HASH_DST: &[u8] = b"CESS-PODR2-V01-CS01-with-BLS12381G1_XMD:SHA-256_SSWU_RO_";

/// Largest s accepted in a key or proof (a public key is then 384 KiB).
pub const SECTORS_PER_BLOCK_MAX: u32 = 8192;
/// Default s: chosen by `cess-bench proofs` (tagging speed against proof size and
/// verification cost; see ARCHITECTURE.md).
pub const SECTORS_PER_BLOCK_DEFAULT: u32 = 1024;
/// Largest fragment a set or tag blob may describe.
pub const FRAGMENT_BYTES_MAX: u64 = 64 << 20;
/// Most blocks one fragment may have (bounds tag blobs whatever s is).
pub const BLOCKS_PER_FRAGMENT_MAX: u64 = 1 << 16;

/// A fragment's id: the SHA-256 of its bytes (as the codec names fragments); the one type every
/// crate names a fragment by.
pub use cess_types::FragmentId;

/// Bytes covered by one block of `sectors_per_block` sectors.
pub fn block_bytes(sectors_per_block: u32) -> u64 {
    SECTOR_BYTES as u64 * u64::from(sectors_per_block)
}

/// Number of blocks of a fragment of `len_bytes` (the last one may be short).
pub fn block_count(len_bytes: u64, sectors_per_block: u32) -> u64 {
    len_bytes.div_ceil(block_bytes(sectors_per_block))
}

/// The message hashed to G1 for block `index` of fragment `id`.
pub(crate) fn block_point(id: &FragmentId, index: u32) -> curve::G1 {
    let mut msg = [0u8; 36];
    msg[..32].copy_from_slice(id.as_bytes());
    msg[32..].copy_from_slice(&index.to_le_bytes());
    curve::G1::hash(&msg, HASH_DST)
}

/// Why an encoded key, tag blob, challenge or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("wrong magic: not a {0}")]
    Magic(&'static str),
    #[error("truncated: needed {needed_bytes} more bytes")]
    Truncated { needed_bytes: usize },
    #[error("{extra_bytes} trailing bytes")]
    Trailing { extra_bytes: usize },
    #[error("invalid: {0}")]
    Invalid(&'static str),
    #[error("{0}: {1}")]
    Point(&'static str, PointError),
}

pub(crate) use cess_types::hex;

/// A bounds-checked reader for the fixed little-endian encodings of this crate.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated {
                needed_bytes: len - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub(crate) fn magic(&mut self, magic: &'static [u8; 8]) -> Result<(), DecodeError> {
        let what = std::str::from_utf8(magic).unwrap_or("known encoding");
        if self.bytes.len() < magic.len() || &self.bytes[..magic.len()] != magic {
            return Err(DecodeError::Magic(what));
        }
        self.take(magic.len()).map(|_| ())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(*self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(*self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(*self.array()?))
    }

    pub(crate) fn scalar(&mut self) -> Result<Scalar, DecodeError> {
        Scalar::from_le_bytes(self.array::<SCALAR_BYTES>()?)
            .map_err(|e| DecodeError::Point("scalar", e))
    }

    pub(crate) fn g1(&mut self, what: &'static str) -> Result<curve::G1Affine, DecodeError> {
        curve::G1Affine::decode(self.array::<G1_BYTES>()?).map_err(|e| DecodeError::Point(what, e))
    }

    /// Refuse early, before allocating, when the rest is not exactly `len` bytes.
    pub(crate) fn expect_remaining(&self, len: usize) -> Result<(), DecodeError> {
        match self.bytes.len().cmp(&len) {
            std::cmp::Ordering::Less => Err(DecodeError::Truncated {
                needed_bytes: len - self.bytes.len(),
            }),
            std::cmp::Ordering::Greater => Err(DecodeError::Trailing {
                extra_bytes: self.bytes.len() - len,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        self.expect_remaining(0)
    }
}
