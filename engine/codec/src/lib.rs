//! `cess-codec`, the file codec: a file becomes segments, each segment `k` data and `m` parity fragments.
//!
//! Encode, per segment of `segment_bytes` (32 MiB by default):
//! 1. Fill the segment with the next payload bytes; the last one is padded (the manifest
//!    records the true file length): with zeros before encryption, and for a plain file with a
//!    keystream keyed by its tail (`pipeline::fill_pad`), so that no two pad-only fragments share an id.
//! 2. With a key, encrypt it with XChaCha20-Poly1305 (see [`crypt`]): the segment is then
//!    `nonce (24) ‖ ciphertext ‖ tag (16)`, so its payload is 40 bytes short of a plain one.
//! 3. Segment id = SHA-256 of the segment. Its `k` data fragments are the segment cut in `k`
//!    equal parts; Reed-Solomon (reed-solomon-simd) computes the `m` parity fragments, fed in
//!    256 KiB stripes that stay in cache while each fragment's SHA-256 absorbs them.
//! 4. Fragment id = SHA-256 of the fragment. File id = SHA-256 Merkle root of the segment ids,
//!    as in CESS: a lone node is paired with itself, at every level (so a one-segment file's id
//!    is SHA-256(id ‖ id)).
//!
//! Decode takes any `k` fragments of a segment whose SHA-256 matches the manifest (a fragment
//! that does not match counts as missing), rebuilds the segment, checks its id, and decrypts.
//! Segments run in parallel on every core with a bounded pool of buffers, and come out in order.

#![forbid(unsafe_code)]

mod crypt;
mod manifest;
mod pipeline;
mod stripes;

pub use crypt::{FileKey, KdfParams, Sealer};
pub use manifest::{Encryption, Manifest, SegmentEntry};
pub use pipeline::{
    DirFragments, EncodeOptions, FragmentSink, FragmentSource, Progress, decode, decode_segments,
    encode, read_manifest, repair_segment, segment_span,
};
pub use stripes::{STRIPE_BYTES, SegmentCoder};

use sha2::{Digest, Sha256};

/// A SHA-256 digest naming a segment or a file (a fragment is named by its [`FragmentId`], the
/// engine key it is stored under and the id its tags are bound to).
pub type Id = [u8; 32];

pub use cess_types::{FragmentId, hex, parse_hex32};

/// Bytes an AEAD-protected segment spends on its nonce and tag.
pub const SEAL_BYTES: u64 = crypt::NONCE_BYTES as u64 + crypt::TAG_BYTES as u64;

/// How files are cut and coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecParams {
    pub segment_bytes: u32,
    pub data_shards: u16,
    pub parity_shards: u16,
}

impl Default for CodecParams {
    /// CESS's current parameters: 32 MiB segments, 4 data + 8 parity fragments of 8 MiB.
    fn default() -> CodecParams {
        CodecParams {
            segment_bytes: 32 << 20,
            data_shards: 4,
            parity_shards: 8,
        }
    }
}

impl CodecParams {
    pub const SEGMENT_BYTES_MAX: u32 = 1 << 30;
    pub const SHARDS_MAX: u32 = 256;

    /// Checks what the coder needs: even, equal fragments; a segment larger than its seal.
    pub fn validate(&self) -> Result<(), CodecError> {
        let (k, m) = (u32::from(self.data_shards), u32::from(self.parity_shards));
        let bad = |why: String| Err(CodecError::InvalidParams(why));
        if k == 0 || m == 0 {
            return bad(format!(
                "need at least 1 data and 1 parity shard, got {k}+{m}"
            ));
        }
        if k + m > Self::SHARDS_MAX {
            return bad(format!("{k}+{m} shards exceed {}", Self::SHARDS_MAX));
        }
        if self.segment_bytes > Self::SEGMENT_BYTES_MAX
            || u64::from(self.segment_bytes) <= 2 * SEAL_BYTES
        {
            return bad(format!(
                "segment of {} bytes outside {}..={}",
                self.segment_bytes,
                2 * SEAL_BYTES + 1,
                Self::SEGMENT_BYTES_MAX
            ));
        }
        if !self.segment_bytes.is_multiple_of(2 * k) {
            return bad(format!(
                "segment of {} bytes does not split into {k} fragments of an even size",
                self.segment_bytes
            ));
        }
        Ok(())
    }

    pub fn shard_count(&self) -> usize {
        usize::from(self.data_shards) + usize::from(self.parity_shards)
    }

    pub fn fragment_bytes(&self) -> usize {
        (self.segment_bytes / u32::from(self.data_shards)) as usize
    }

    /// File bytes one segment carries.
    pub fn payload_bytes(&self, encrypted: bool) -> u64 {
        u64::from(self.segment_bytes) - if encrypted { SEAL_BYTES } else { 0 }
    }

    /// Segments a file of `file_bytes` takes; an empty file still takes one.
    pub fn segment_count(&self, file_bytes: u64, encrypted: bool) -> u64 {
        file_bytes.div_ceil(self.payload_bytes(encrypted)).max(1)
    }
}

/// SHA-256 of `bytes`: the engine key of a fragment with these bytes.
pub fn sha256(bytes: &[u8]) -> Id {
    Sha256::digest(bytes).into()
}

/// The file id: SHA-256 Merkle root of the segment ids, a lone node paired with itself.
/// `None` for no segments.
pub fn file_id(segment_ids: &[Id]) -> Option<Id> {
    let pair = |a: &Id, b: &Id| -> Id {
        let mut h = Sha256::new();
        h.update(a);
        h.update(b);
        h.finalize().into()
    };
    let mut level: Vec<Id> = segment_ids.to_vec();
    if level.is_empty() {
        return None;
    }
    loop {
        level = level
            .chunks(2)
            .map(|c| pair(&c[0], c.get(1).unwrap_or(&c[0])))
            .collect();
        if level.len() == 1 {
            return Some(level[0]);
        }
    }
}

/// Everything the codec can refuse, each with what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid codec parameters: {0}")]
    InvalidParams(String),
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    #[error(
        "input length changed while encoding: expected {expected_bytes} bytes, read {read_bytes}"
    )]
    InputLength {
        expected_bytes: u64,
        read_bytes: u64,
    },
    #[error("the file is encrypted: a key or passphrase is needed")]
    KeyRequired,
    #[error("the file is not encrypted, but a key was given")]
    KeyNotExpected,
    #[error("wrong key or passphrase for this file")]
    WrongKey,
    #[error("the manifest was altered (its authenticator does not match this key)")]
    ManifestTampered,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error(
        "segment {segment} cannot be rebuilt: {good} good fragments, {needed} needed \
         ({missing} missing, {corrupt} not matching their ids)"
    )]
    SegmentUnrecoverable {
        segment: u64,
        good: usize,
        needed: usize,
        missing: usize,
        corrupt: usize,
    },
    #[error("segment {segment} rebuilt from verified fragments does not match its id")]
    SegmentMismatch { segment: u64 },
    #[error("segment {segment} failed authentication (tampered, reordered or from another file)")]
    SegmentAuth { segment: u64 },
    #[error("fragment {index} of segment {segment} does not exist (the segment has {count})")]
    NoSuchFragment {
        segment: u64,
        index: usize,
        count: usize,
    },
    #[error("reed-solomon: {0}")]
    ReedSolomon(String),
}

impl CodecError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> CodecError {
        let action = action.into();
        move |source| CodecError::Io { action, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_pairs_a_lone_node_with_itself() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let c = [3u8; 32];
        let h = |x: &Id, y: &Id| sha256(&[x.as_slice(), y.as_slice()].concat());
        assert_eq!(file_id(&[]), None);
        assert_eq!(file_id(&[a]), Some(h(&a, &a)));
        assert_eq!(file_id(&[a, b]), Some(h(&a, &b)));
        assert_eq!(file_id(&[a, b, c]), Some(h(&h(&a, &b), &h(&c, &c))));
    }

    #[test]
    fn params_are_checked() {
        assert!(CodecParams::default().validate().is_ok());
        assert_eq!(CodecParams::default().fragment_bytes(), 8 << 20);
        let mut p = CodecParams {
            parity_shards: 0,
            ..CodecParams::default()
        };
        assert!(p.validate().is_err());
        p = CodecParams {
            segment_bytes: 1001,
            ..CodecParams::default()
        };
        assert!(p.validate().is_err());
        p = CodecParams {
            segment_bytes: 80,
            ..CodecParams::default()
        };
        assert!(p.validate().is_err());
        assert_eq!(CodecParams::default().segment_count(0, false), 1);
        assert_eq!(CodecParams::default().segment_count(32 << 20, false), 1);
        assert_eq!(CodecParams::default().segment_count(32 << 20, true), 2);
    }
}
