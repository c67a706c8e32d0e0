//! The manifest: everything decoding needs except fragment bytes and the key, as protobuf.
//!
//! Decoding a manifest checks every bound before anything is sized by it: the parameters, the
//! segment count implied by the file length, k + m ids of 32 bytes per segment, the file id as
//! the Merkle root of the segment ids. With encryption, a MAC under the file key covers the
//! whole manifest, so its segment list cannot be spliced from another file's.

use super::crypt::{FileKey, KdfParams};
use super::{CodecError, CodecParams, FragmentId, Id, file_id};
use prost::Message;

/// Manifests above this are refused unread (a 1 TiB file's manifest is about 13 MiB).
pub const MANIFEST_BYTES_MAX: usize = 256 << 20;
const VERSION: u32 = 1;

mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Manifest {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(uint64, tag = "2")]
        pub file_bytes: u64,
        #[prost(uint32, tag = "3")]
        pub segment_bytes: u32,
        #[prost(uint32, tag = "4")]
        pub data_shards: u32,
        #[prost(uint32, tag = "5")]
        pub parity_shards: u32,
        #[prost(bytes = "vec", tag = "6")]
        pub file_id: Vec<u8>,
        #[prost(message, repeated, tag = "7")]
        pub segments: Vec<Segment>,
        #[prost(message, optional, tag = "8")]
        pub encryption: Option<Encryption>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Segment {
        #[prost(bytes = "vec", tag = "1")]
        pub id: Vec<u8>,
        /// k + m fragment ids, data fragments first.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub fragments: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Encryption {
        /// Always "xchacha20poly1305-siv-blake3" in version 1.
        #[prost(string, tag = "1")]
        pub aead: String,
        #[prost(bytes = "vec", tag = "2")]
        pub key_check: Vec<u8>,
        /// Present when the key came from a passphrase.
        #[prost(message, optional, tag = "3")]
        pub kdf: Option<Kdf>,
        /// BLAKE3-keyed MAC of the manifest encoded with this field empty.
        #[prost(bytes = "vec", tag = "4")]
        pub mac: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Kdf {
        #[prost(bytes = "vec", tag = "1")]
        pub salt: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub memory_kib: u32,
        #[prost(uint32, tag = "3")]
        pub iterations: u32,
        #[prost(uint32, tag = "4")]
        pub parallelism: u32,
    }
}

const AEAD_NAME: &str = "xchacha20poly1305-siv-blake3";

/// One segment: its id and its fragments' ids, data fragments first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub id: Id,
    pub fragments: Vec<FragmentId>,
}

/// How a file was encrypted (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub key_check: [u8; 16],
    /// Salt and cost when the key came from a passphrase.
    pub kdf: Option<([u8; 16], KdfParams)>,
    pub mac: [u8; 32],
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub params: CodecParams,
    pub file_bytes: u64,
    pub file_id: Id,
    pub segments: Vec<SegmentEntry>,
    pub encryption: Option<Encryption>,
}

fn id_of(bytes: &[u8], what: &str) -> Result<Id, CodecError> {
    bytes
        .try_into()
        .map_err(|_| CodecError::BadManifest(format!("{what} has {} bytes, not 32", bytes.len())))
}

impl Manifest {
    fn to_wire(&self, with_mac: bool) -> wire::Manifest {
        wire::Manifest {
            version: VERSION,
            file_bytes: self.file_bytes,
            segment_bytes: self.params.segment_bytes,
            data_shards: u32::from(self.params.data_shards),
            parity_shards: u32::from(self.params.parity_shards),
            file_id: self.file_id.to_vec(),
            segments: self
                .segments
                .iter()
                .map(|s| wire::Segment {
                    id: s.id.to_vec(),
                    fragments: s.fragments.iter().map(|f| f.0.to_vec()).collect(),
                })
                .collect(),
            encryption: self.encryption.as_ref().map(|e| wire::Encryption {
                aead: AEAD_NAME.into(),
                key_check: e.key_check.to_vec(),
                kdf: e.kdf.map(|(salt, p)| wire::Kdf {
                    salt: salt.to_vec(),
                    memory_kib: p.memory_kib,
                    iterations: p.iterations,
                    parallelism: p.parallelism,
                }),
                mac: if with_mac { e.mac.to_vec() } else { Vec::new() },
            }),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_wire(true).encode_to_vec()
    }

    /// Everything but the segment list, encoded: what a ledger keeps beside the segment and
    /// fragment ids it holds anyway, so a key holder can rebuild the manifest
    /// ([`Manifest::from_header`]).
    pub fn header(&self) -> Vec<u8> {
        let mut wire = self.to_wire(true);
        wire.segments.clear();
        wire.encode_to_vec()
    }

    /// The manifest from its [`Manifest::header`] and its segments, checked as
    /// [`Manifest::decode`] checks (and, under a key, [`Manifest::check_key`] then proves the
    /// segments are the ones the key holder encoded).
    pub fn from_header(header: &[u8], segments: &[SegmentEntry]) -> Result<Manifest, CodecError> {
        if header.len() > MANIFEST_BYTES_MAX {
            return Err(CodecError::BadManifest(format!(
                "a header of {} bytes exceeds the {MANIFEST_BYTES_MAX}-byte limit",
                header.len()
            )));
        }
        let mut wire = wire::Manifest::decode(header)
            .map_err(|e| CodecError::BadManifest(format!("not a manifest header: {e}")))?;
        if !wire.segments.is_empty() {
            return Err(CodecError::BadManifest("a header lists no segments".into()));
        }
        wire.segments = segments
            .iter()
            .map(|s| wire::Segment {
                id: s.id.to_vec(),
                fragments: s.fragments.iter().map(|f| f.0.to_vec()).collect(),
            })
            .collect();
        Manifest::decode(&wire.encode_to_vec())
    }

    /// Sets the MAC over everything else, under `key` (encode does this; a key holder who
    /// edits a manifest must do it again).
    pub fn authenticate(&mut self, key: &FileKey) {
        let mac = self.mac_under(key);
        if let Some(e) = &mut self.encryption {
            e.mac = mac;
        }
    }

    /// The MAC of everything but the MAC field.
    fn mac_under(&self, key: &FileKey) -> [u8; 32] {
        key.mac(&self.to_wire(false).encode_to_vec())
    }

    /// Checks `key` against this manifest: the right key, and an untouched manifest.
    pub fn check_key(&self, key: Option<&FileKey>) -> Result<(), CodecError> {
        match (&self.encryption, key) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(CodecError::KeyNotExpected),
            (Some(_), None) => Err(CodecError::KeyRequired),
            (Some(e), Some(key)) => {
                if key.check_value() != e.key_check {
                    return Err(CodecError::WrongKey);
                }
                if self.mac_under(key) != e.mac {
                    return Err(CodecError::ManifestTampered);
                }
                Ok(())
            }
        }
    }

    /// Decodes and checks a manifest; see the module docs for what is checked.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, CodecError> {
        let bad = |why: String| CodecError::BadManifest(why);
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(bad(format!(
                "{} bytes exceed the {MANIFEST_BYTES_MAX}-byte limit",
                bytes.len()
            )));
        }
        let w = wire::Manifest::decode(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if w.version != VERSION {
            return Err(bad(format!(
                "version {} (this build reads version {VERSION})",
                w.version
            )));
        }
        let shard =
            |n: u32, what: &str| u16::try_from(n).map_err(|_| bad(format!("{n} {what} shards")));
        let params = CodecParams {
            segment_bytes: w.segment_bytes,
            data_shards: shard(w.data_shards, "data")?,
            parity_shards: shard(w.parity_shards, "parity")?,
        };
        params.validate()?;
        let encryption = match &w.encryption {
            None => None,
            Some(e) => {
                if e.aead != AEAD_NAME {
                    return Err(bad(format!("unknown cipher {:?}", e.aead)));
                }
                let kdf = match &e.kdf {
                    None => None,
                    Some(k) => {
                        let salt: [u8; 16] =
                            k.salt.as_slice().try_into().map_err(|_| {
                                bad(format!("salt of {} bytes, not 16", k.salt.len()))
                            })?;
                        let p = KdfParams {
                            memory_kib: k.memory_kib,
                            iterations: k.iterations,
                            parallelism: k.parallelism,
                        };
                        p.validate()?;
                        Some((salt, p))
                    }
                };
                Some(Encryption {
                    key_check: e
                        .key_check
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad("key check value is not 16 bytes".into()))?,
                    kdf,
                    mac: id_of(&e.mac, "manifest MAC")?,
                })
            }
        };
        let expected = params.segment_count(w.file_bytes, encryption.is_some());
        if w.segments.len() as u64 != expected {
            return Err(bad(format!(
                "{} segments listed, a file of {} bytes has {expected}",
                w.segments.len(),
                w.file_bytes
            )));
        }
        let shards = params.shard_count();
        let mut segments = Vec::with_capacity(w.segments.len());
        for (i, s) in w.segments.iter().enumerate() {
            if s.fragments.len() != shards {
                return Err(bad(format!(
                    "segment {i} lists {} fragments, not {shards}",
                    s.fragments.len()
                )));
            }
            segments.push(SegmentEntry {
                id: id_of(&s.id, &format!("segment {i} id"))?,
                fragments: s
                    .fragments
                    .iter()
                    .map(|f| id_of(f, &format!("a fragment id of segment {i}")).map(FragmentId))
                    .collect::<Result<_, _>>()?,
            });
        }
        let claimed = id_of(&w.file_id, "file id")?;
        let ids: Vec<Id> = segments.iter().map(|s| s.id).collect();
        if file_id(&ids) != Some(claimed) {
            return Err(bad(
                "file id is not the Merkle root of the segment ids".into()
            ));
        }
        Ok(Manifest {
            params,
            file_bytes: w.file_bytes,
            file_id: claimed,
            segments,
            encryption,
        })
    }
}
