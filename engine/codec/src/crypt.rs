//! Keys and the per-segment AEAD (XChaCha20-Poly1305).
//!
//! Every key used is derived from one 32-byte file key with BLAKE3's `derive_key`, under a
//! context string naming this codec version and the key's purpose, so no key serves two uses.
//!
//! Nonces are synthetic: nonce = BLAKE3-keyed(nonce key, associated data ‖ plaintext), cut to
//! 24 bytes. The same key, position and plaintext give the same ciphertext (so identical files
//! deduplicate); two different plaintexts under one key get the same nonce only by a 192-bit
//! collision. The associated data binds the codec parameters, the file length, the segment
//! count and the segment index, so a truncated, extended or reordered file fails to decrypt;
//! the manifest's MAC (see `Manifest`) binds the segment ids, so a segment from another file
//! under the same key is refused too.

use super::{CodecError, CodecParams};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use std::path::Path;
use zeroize::Zeroizing;

pub const NONCE_BYTES: usize = 24;
pub const TAG_BYTES: usize = 16;
const CONTEXT_AEAD: &str = "cess codec v1 2026-11 segment aead key";
const CONTEXT_NONCE: &str = "cess codec v1 2026-11 segment nonce key";
const CONTEXT_CHECK: &str = "cess codec v1 2026-11 key check value";
const CONTEXT_MAC: &str = "cess codec v1 2026-11 manifest mac key";

/// Argon2id cost for passphrases; stored in the manifest with the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id floor is 19 MiB, 2 passes; we spend 64 MiB and 3.
    fn default() -> KdfParams {
        KdfParams {
            memory_kib: 64 << 10,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Bounds a manifest may ask for (a hostile manifest must not make us allocate 1 TiB).
    pub fn validate(&self) -> Result<(), CodecError> {
        let ok = (8..=(4 << 20)).contains(&self.memory_kib)
            && (1..=64).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism);
        if ok {
            Ok(())
        } else {
            Err(CodecError::BadManifest(format!(
                "argon2id parameters out of bounds: {self:?}"
            )))
        }
    }
}

/// The secret a file is encrypted under. Wiped from memory when dropped.
#[derive(Clone)]
pub struct FileKey {
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    pub fn from_bytes(bytes: [u8; 32]) -> FileKey {
        FileKey {
            master: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> FileKey {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        FileKey::from_bytes(bytes)
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding whitespace allowed).
    pub fn from_key_file(path: &Path) -> Result<FileKey, CodecError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(CodecError::io(format!(
            "reading key file {}",
            path.display()
        )))?);
        if bytes.len() == 32 {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(FileKey::from_bytes(key));
        }
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(crate::parse_hex32);
        parsed.map(FileKey::from_bytes).ok_or_else(|| {
            CodecError::Kdf(format!(
                "key file {} holds {} bytes: expected 32 raw bytes or 64 hex digits",
                path.display(),
                bytes.len()
            ))
        })
    }

    /// Writes the key as 64 hex digits to a new file readable by its owner only.
    pub fn write_key_file(&self, path: &Path) -> Result<(), CodecError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(CodecError::io(format!(
                "creating key file {}",
                path.display()
            )))?;
        let hex = Zeroizing::new(super::hex(self.master.as_slice()));
        file.write_all(format!("{}\n", *hex).as_bytes())
            .map_err(CodecError::io(format!(
                "writing key file {}",
                path.display()
            )))
    }

    /// Argon2id of the passphrase with this salt and cost.
    pub fn from_passphrase(
        passphrase: &[u8],
        salt: &[u8; 16],
        params: KdfParams,
    ) -> Result<FileKey, CodecError> {
        params.validate()?;
        if passphrase.is_empty() {
            return Err(CodecError::Kdf("empty passphrase".into()));
        }
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(
                params.memory_kib,
                params.iterations,
                params.parallelism,
                Some(32),
            )
            .map_err(|e| CodecError::Kdf(e.to_string()))?,
        );
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase, salt, &mut key)
            .map_err(|e| CodecError::Kdf(e.to_string()))?;
        Ok(FileKey::from_bytes(key))
    }

    fn subkey(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(context, &*self.master))
    }

    /// Stored in the manifest so a wrong key is named as such before any segment is read.
    pub(crate) fn check_value(&self) -> [u8; 16] {
        let full = self.subkey(CONTEXT_CHECK);
        let mut check = [0u8; 16];
        check.copy_from_slice(&full[..16]);
        check
    }

    pub(crate) fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.subkey(CONTEXT_MAC), bytes).as_bytes()
    }

    /// The per-segment cipher under this key (low level: `encode` and `decode` use it).
    pub fn sealer(&self) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&*self.subkey(CONTEXT_AEAD))),
            nonce_key: self.subkey(CONTEXT_NONCE),
        }
    }
}

/// The associated data of one segment.
pub(crate) fn segment_ad(
    params: CodecParams,
    file_bytes: u64,
    segment_count: u64,
    index: u64,
) -> [u8; 44] {
    let mut ad = [0u8; 44];
    ad[..12].copy_from_slice(b"cess-codec/1");
    ad[12..16].copy_from_slice(&params.segment_bytes.to_le_bytes());
    ad[16..18].copy_from_slice(&params.data_shards.to_le_bytes());
    ad[18..20].copy_from_slice(&params.parity_shards.to_le_bytes());
    ad[20..28].copy_from_slice(&file_bytes.to_le_bytes());
    ad[28..36].copy_from_slice(&segment_count.to_le_bytes());
    ad[36..44].copy_from_slice(&index.to_le_bytes());
    ad
}

/// Seals and opens segments in place: `nonce ‖ ciphertext ‖ tag`.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    nonce_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Encrypts the plaintext already in `segment[24..len-16]`, writing nonce and tag.
    pub fn seal(&self, ad: &[u8], segment: &mut [u8]) {
        let end = segment.len() - TAG_BYTES;
        let mut h = blake3::Hasher::new_keyed(&self.nonce_key);
        h.update(ad);
        h.update(&segment[NONCE_BYTES..end]);
        let mut nonce = [0u8; NONCE_BYTES];
        h.finalize_xof().fill(&mut nonce);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                ad,
                &mut segment[NONCE_BYTES..end],
            )
            .expect("a segment is far below the AEAD's length limit");
        segment[..NONCE_BYTES].copy_from_slice(&nonce);
        segment[end..].copy_from_slice(&tag);
    }

    /// Decrypts in place; `false` when the segment or its associated data was altered.
    pub fn open(&self, ad: &[u8], segment: &mut [u8]) -> bool {
        let end = segment.len() - TAG_BYTES;
        let nonce = *XNonce::from_slice(&segment[..NONCE_BYTES]);
        let tag = *Tag::from_slice(&segment[end..]);
        self.cipher
            .decrypt_in_place_detached(&nonce, ad, &mut segment[NONCE_BYTES..end], &tag)
            .is_ok()
    }
}
