//! The on-disk layout: geometry, the superblock, and foreign-signature detection.
//!
//! ```text
//! block 0, 1          superblock copies A and B
//! per shard s         [journal copy A][journal copy B][checkpoint slot 0][checkpoint slot 1][data]
//! last 2 blocks       superblock copies C and D
//! ```
//! All integers are little-endian. Byte-level details are in `engine/DESIGN.md`.

use crate::aligned::BLOCK_BYTES;
use crate::error::CorruptKind;
use crate::wire::{Reader, Writer};

/// The format version this build writes and the newest it opens.
pub const FORMAT_VERSION: u32 = 1;
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"CESSSTOR";
pub const SUPERBLOCK_COPIES: usize = 4;
const CHECKSUM_AT: usize = BLOCK_BYTES - 32;
const BLOCK: u64 = BLOCK_BYTES as u64;

/// The identity of the node a store belongs to (its public-key hash, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of the node whose identity (its PeerId's bytes) is `identity_bytes`: their
    /// SHA-256, so a store opens only for the node it was formatted for.
    pub fn of(identity_bytes: &[u8]) -> NodeId {
        use sha2::Digest;
        NodeId(sha2::Sha256::digest(identity_bytes).into())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// The parameters chosen at format time; every region's place derives from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub device_bytes: u64,
    pub shard_count: u32,
    /// Bytes of each journal copy, per shard.
    pub journal_bytes: u64,
    /// Bytes of each checkpoint slot, per shard.
    pub checkpoint_bytes: u64,
    pub max_object_bytes: u64,
    pub max_meta_bytes: u32,
}

/// Where one shard's regions lie, in absolute device bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRegions {
    pub journal_a: u64,
    pub journal_b: u64,
    pub journal_bytes: u64,
    pub checkpoints: [u64; 2],
    pub checkpoint_bytes: u64,
    pub data_start: u64,
    pub data_bytes: u64,
}

impl ShardRegions {
    /// The whole byte range the shard owns.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.journal_a..self.data_start + self.data_bytes
    }
}

impl Geometry {
    /// Offsets of the superblock copies.
    pub fn superblock_offsets(device_bytes: u64) -> [u64; SUPERBLOCK_COPIES] {
        let last = device_bytes / BLOCK - 1;
        [0, BLOCK, (last - 1) * BLOCK, last * BLOCK]
    }

    /// The regions of every shard. Panics on a geometry that `validate` rejects.
    pub fn shards(&self) -> Vec<ShardRegions> {
        let usable_blocks = self.device_bytes / BLOCK - SUPERBLOCK_COPIES as u64;
        let per_shard_blocks = usable_blocks / u64::from(self.shard_count);
        (0..u64::from(self.shard_count))
            .map(|s| {
                let start = (2 + s * per_shard_blocks) * BLOCK;
                let journal_a = start;
                let journal_b = journal_a + self.journal_bytes;
                let cp0 = journal_b + self.journal_bytes;
                let cp1 = cp0 + self.checkpoint_bytes;
                let data_start = cp1 + self.checkpoint_bytes;
                let data_bytes = start + per_shard_blocks * BLOCK - data_start;
                ShardRegions {
                    journal_a,
                    journal_b,
                    journal_bytes: self.journal_bytes,
                    checkpoints: [cp0, cp1],
                    checkpoint_bytes: self.checkpoint_bytes,
                    data_start,
                    data_bytes,
                }
            })
            .collect()
    }

    /// Checks that every region is block-aligned and each shard can hold at least two
    /// maximum-size objects (one of them the replacement reserve).
    pub fn validate(&self) -> Result<(), String> {
        let aligned = |v: u64| v.is_multiple_of(BLOCK);
        if self.shard_count == 0 || self.shard_count > 256 {
            return Err(format!(
                "shard count {} is not in 1..=256",
                self.shard_count
            ));
        }
        if !aligned(self.journal_bytes) || !aligned(self.checkpoint_bytes) {
            return Err("journal and checkpoint sizes must be multiples of 4 KiB".into());
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > 1 << 30 {
            return Err(format!(
                "max object size {} is not in 1..=1 GiB",
                self.max_object_bytes
            ));
        }
        if self.max_meta_bytes > 1 << 20 {
            return Err(format!(
                "max metadata size {} exceeds 1 MiB",
                self.max_meta_bytes
            ));
        }
        let min_journal = 4 * max_record_bytes(self.max_object_bytes, self.max_meta_bytes);
        if self.journal_bytes < min_journal {
            return Err(format!(
                "journal of {} bytes is below {min_journal} (four maximum-size records)",
                self.journal_bytes
            ));
        }
        let needed_per_shard = 2 * self.journal_bytes
            + 2 * self.checkpoint_bytes
            + 2 * self.max_object_bytes.div_ceil(BLOCK) * BLOCK;
        let usable = (self.device_bytes / BLOCK).saturating_sub(SUPERBLOCK_COPIES as u64) * BLOCK;
        let per_shard = usable / u64::from(self.shard_count) / BLOCK * BLOCK;
        if per_shard < needed_per_shard {
            return Err(format!(
                "target of {} bytes is too small: each of {} shards needs at least {} bytes \
                 (journal, checkpoints and two maximum-size objects), has {}",
                self.device_bytes, self.shard_count, needed_per_shard, per_shard
            ));
        }
        Ok(())
    }
}

/// The largest encoded size of one journal record (a put carrying maximal metadata).
pub fn max_record_bytes(max_object_bytes: u64, max_meta_bytes: u32) -> u64 {
    let crcs = max_object_bytes.div_ceil(BLOCK) * 4;
    let fixed = 1 + 32 + 32 + 1 + 8 + 8 + 4 + 4;
    crcs + u64::from(max_meta_bytes) + fixed + 128
}

/// The superblock: what a device is and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub node_id: NodeId,
    /// Random at format: tells this store's journal and checkpoints from a previous format's.
    pub store_id: [u8; 16],
    pub geometry: Geometry,
}

/// Why a superblock copy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockFault {
    /// No magic: never formatted, or wiped.
    NoMagic,
    Corrupt(CorruptKind),
    /// Valid, but written by a newer format version.
    NewerVersion(u32),
}

impl Superblock {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(BLOCK_BYTES);
        w.bytes(&SUPERBLOCK_MAGIC);
        w.u32(self.version);
        w.u32(BLOCK_BYTES as u32);
        w.bytes(&self.node_id.0);
        w.bytes(&self.store_id);
        let g = &self.geometry;
        w.u64(g.device_bytes);
        w.u32(g.shard_count);
        w.u64(g.journal_bytes);
        w.u64(g.checkpoint_bytes);
        w.u64(g.max_object_bytes);
        w.u32(g.max_meta_bytes);
        let mut block = w.into_inner();
        assert!(block.len() <= CHECKSUM_AT);
        block.resize(BLOCK_BYTES, 0);
        let sum = blake3::hash(&block[..CHECKSUM_AT]);
        block[CHECKSUM_AT..].copy_from_slice(sum.as_bytes());
        block
    }

    pub fn decode(block: &[u8]) -> Result<Superblock, SuperblockFault> {
        assert_eq!(block.len(), BLOCK_BYTES);
        if block[..8] != SUPERBLOCK_MAGIC {
            return Err(SuperblockFault::NoMagic);
        }
        if blake3::hash(&block[..CHECKSUM_AT]).as_bytes() != &block[CHECKSUM_AT..] {
            return Err(SuperblockFault::Corrupt(CorruptKind::Checksum));
        }
        let mut r = Reader::new(&block[8..CHECKSUM_AT]);
        let parse = |r: &mut Reader<'_>| -> Option<Result<Superblock, SuperblockFault>> {
            let version = r.u32()?;
            if version > FORMAT_VERSION {
                return Some(Err(SuperblockFault::NewerVersion(version)));
            }
            if version == 0 || r.u32()? != BLOCK_BYTES as u32 {
                return Some(Err(SuperblockFault::Corrupt(CorruptKind::Field)));
            }
            let node_id = NodeId(r.array()?);
            let store_id = r.array()?;
            let geometry = Geometry {
                device_bytes: r.u64()?,
                shard_count: r.u32()?,
                journal_bytes: r.u64()?,
                checkpoint_bytes: r.u64()?,
                max_object_bytes: r.u64()?,
                max_meta_bytes: r.u32()?,
            };
            if geometry.validate().is_err() {
                return Some(Err(SuperblockFault::Corrupt(CorruptKind::Field)));
            }
            Some(Ok(Superblock {
                version,
                node_id,
                store_id,
                geometry,
            }))
        };
        parse(&mut r).unwrap_or(Err(SuperblockFault::Corrupt(CorruptKind::Truncated)))
    }
}

/// Bytes to read from the start of a target to look for foreign signatures.
pub const SIGNATURE_PROBE_BYTES: usize = 17 * BLOCK_BYTES;

/// The first foreign signature found in the start of a target, named for the operator.
pub fn foreign_signature(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let checks: [(usize, &[u8], &'static str); 12] = [
        (0, &SUPERBLOCK_MAGIC, "a CESS fragment store"),
        (0x438, &[0x53, 0xEF], "an ext2/ext3/ext4 file system"),
        (0, b"XFSB", "an XFS file system"),
        (0x10040, b"_BHRfS_M", "a btrfs file system"),
        (512, b"EFI PART", "a GPT partition table"),
        (4096, b"EFI PART", "a GPT partition table (4 KiB sectors)"),
        (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
        (4086, b"SWAPSPACE2", "a swap area"),
        (536, b"LVM2 001", "an LVM physical volume"),
        (3, b"NTFS    ", "an NTFS file system"),
        (0x8001, b"CD001", "an ISO 9660 image"),
        (
            510,
            &[0x55, 0xAA],
            "an MBR partition table or FAT boot sector",
        ),
    ];
    checks
        .iter()
        .find(|(offset, magic, _)| at(*offset, magic))
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_geometry() -> Geometry {
        Geometry {
            device_bytes: 64 << 20,
            shard_count: 2,
            journal_bytes: 1 << 20,
            checkpoint_bytes: 1 << 20,
            max_object_bytes: 1 << 20,
            max_meta_bytes: 4096,
        }
    }

    #[test]
    fn superblock_round_trip_and_corruption() {
        let sb = Superblock {
            version: FORMAT_VERSION,
            node_id: NodeId([7; 32]),
            store_id: [9; 16],
            geometry: sample_geometry(),
        };
        let block = sb.encode();
        assert_eq!(Superblock::decode(&block), Ok(sb.clone()));
        for byte in [8usize, 20, 100, 4000, 4090] {
            let mut bad = block.clone();
            bad[byte] ^= 1;
            assert!(matches!(
                Superblock::decode(&bad),
                Err(SuperblockFault::Corrupt(_))
            ));
        }
        let mut newer = sb.clone();
        newer.version = FORMAT_VERSION + 1;
        assert_eq!(
            Superblock::decode(&newer.encode()),
            Err(SuperblockFault::NewerVersion(FORMAT_VERSION + 1))
        );
        assert_eq!(
            Superblock::decode(&[0; BLOCK_BYTES]),
            Err(SuperblockFault::NoMagic)
        );
    }

    #[test]
    fn regions_do_not_overlap_and_stay_inside() {
        let g = sample_geometry();
        g.validate().unwrap();
        let shards = g.shards();
        let sbs = Geometry::superblock_offsets(g.device_bytes);
        let mut end = 2 * BLOCK;
        for s in &shards {
            assert_eq!(s.range().start, end);
            assert!(s.data_bytes >= 2 * g.max_object_bytes);
            end = s.range().end;
        }
        assert!(end <= sbs[2]);
    }

    #[test]
    fn too_small_is_refused_with_reason() {
        let mut g = sample_geometry();
        g.device_bytes = 4 << 20;
        assert!(g.validate().unwrap_err().contains("too small"));
    }

    #[test]
    fn signatures() {
        let mut head = vec![0u8; SIGNATURE_PROBE_BYTES];
        assert_eq!(foreign_signature(&head), None);
        head[0x438] = 0x53;
        head[0x439] = 0xEF;
        assert_eq!(
            foreign_signature(&head),
            Some("an ext2/ext3/ext4 file system")
        );
    }
}
