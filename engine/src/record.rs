//! Durable metadata formats: index entries, journal records, and the checksummed frames
//! that carry them (journal batches and checkpoints). Decoding is bounded by the store's
//! limits and rejects anything it cannot trust.

use crate::aligned::BLOCK_BYTES;
use crate::types::{Class, FragmentId};
use crate::wire::{Reader, Writer};

/// What the index knows about one stored fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub class: Class,
    pub len_bytes: u64,
    /// First block of the fragment's extent, counted from the shard's data region start.
    pub extent_block: u64,
    /// CRC32C of each 4 KiB block of the extent (the last block zero-padded).
    pub crcs: Box<[u32]>,
    pub meta: Box<[u8]>,
}

/// Bytes an entry of `blocks` blocks with `meta_bytes` of metadata takes in a checkpoint, key
/// included: key, class, length, extent, metadata length, metadata, a CRC32C per block. The
/// one formula for placement's budget and the checkpoint's size (what `encode_checkpoint`
/// writes is asserted to match).
pub fn footprint_bytes(blocks: u64, meta_bytes: u64) -> u64 {
    32 + 1 + 8 + 8 + 4 + meta_bytes + 4 * blocks
}

impl Entry {
    pub fn blocks(&self) -> u64 {
        blocks_for(self.len_bytes)
    }
    /// Bytes this entry takes in a checkpoint (key included).
    pub fn footprint_bytes(&self) -> u64 {
        footprint_bytes(self.crcs.len() as u64, self.meta.len() as u64)
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.class.to_byte());
        w.u64(self.len_bytes);
        w.u64(self.extent_block);
        w.u32(self.meta.len() as u32);
        w.bytes(&self.meta);
        for crc in &self.crcs {
            w.u32(*crc);
        }
    }
    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Option<Entry> {
        let class = Class::from_byte(r.u8()?)?;
        let len_bytes = r.u64()?;
        if len_bytes > limits.max_object_bytes {
            return None;
        }
        let extent_block = r.u64()?;
        let blocks = blocks_for(len_bytes);
        if extent_block.checked_add(blocks)? > limits.data_blocks {
            return None;
        }
        let meta_len = r.u32()?;
        if meta_len > limits.max_meta_bytes {
            return None;
        }
        let meta = r.take(meta_len as usize)?.into();
        let crcs = (0..blocks)
            .map(|_| r.u32())
            .collect::<Option<Vec<u32>>>()?
            .into();
        Some(Entry {
            class,
            len_bytes,
            extent_block,
            crcs,
            meta,
        })
    }
}

/// Number of 4 KiB blocks a fragment of `len_bytes` occupies.
pub fn blocks_for(len_bytes: u64) -> u64 {
    len_bytes.div_ceil(BLOCK_BYTES as u64)
}

/// The bounds a decoded record must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_object_bytes: u64,
    pub max_meta_bytes: u32,
    pub data_blocks: u64,
}

/// One change to a shard's index. A journal batch holds several, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Put {
        key: FragmentId,
        entry: Entry,
    },
    Delete {
        key: FragmentId,
    },
    SetMeta {
        key: FragmentId,
        meta: Box<[u8]>,
    },
    /// Removes an idle fragment and adds an active one, atomically.
    Replace {
        idle_key: FragmentId,
        key: FragmentId,
        entry: Entry,
    },
    /// The scrub verified every key up to and including `after` in pass `pass`.
    ScrubCursor {
        after: Option<FragmentId>,
        pass: u64,
    },
}

impl Record {
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Record::Put { key, entry } => {
                w.u8(1);
                w.bytes(&key.0);
                entry.encode(w);
            }
            Record::Delete { key } => {
                w.u8(2);
                w.bytes(&key.0);
            }
            Record::SetMeta { key, meta } => {
                w.u8(3);
                w.bytes(&key.0);
                w.u32(meta.len() as u32);
                w.bytes(meta);
            }
            Record::Replace {
                idle_key,
                key,
                entry,
            } => {
                w.u8(4);
                w.bytes(&idle_key.0);
                w.bytes(&key.0);
                entry.encode(w);
            }
            Record::ScrubCursor { after, pass } => {
                w.u8(5);
                encode_cursor(w, *after, *pass);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>, limits: &Limits) -> Option<Record> {
        Some(match r.u8()? {
            1 => Record::Put {
                key: FragmentId(r.array()?),
                entry: Entry::decode(r, limits)?,
            },
            2 => Record::Delete {
                key: FragmentId(r.array()?),
            },
            3 => {
                let key = FragmentId(r.array()?);
                let len = r.u32()?;
                if len > limits.max_meta_bytes {
                    return None;
                }
                Record::SetMeta {
                    key,
                    meta: r.take(len as usize)?.into(),
                }
            }
            4 => Record::Replace {
                idle_key: FragmentId(r.array()?),
                key: FragmentId(r.array()?),
                entry: Entry::decode(r, limits)?,
            },
            5 => {
                let (after, pass) = decode_cursor(r)?;
                Record::ScrubCursor { after, pass }
            }
            _ => return None,
        })
    }
}

/// Bytes of checkpoint payload taken by the scrub cursor ([`encode_cursor`] writes exactly
/// this many: asserted there).
pub const CURSOR_BYTES: u64 = 1 + 32 + 8;

fn encode_cursor(w: &mut Writer, after: Option<FragmentId>, pass: u64) {
    let start = w.len();
    w.u8(u8::from(after.is_some()));
    w.bytes(&after.unwrap_or_default().0);
    w.u64(pass);
    // The checkpoint slot's capacity is computed with CURSOR_BYTES.
    assert_eq!(
        (w.len() - start) as u64,
        CURSOR_BYTES,
        "cursor encoding size"
    );
}

fn decode_cursor(r: &mut Reader<'_>) -> Option<(Option<FragmentId>, u64)> {
    let has = r.u8()?;
    let key = FragmentId(r.array()?);
    let pass = r.u64()?;
    match has {
        0 => Some((None, pass)),
        1 => Some((Some(key), pass)),
        _ => None,
    }
}

/// Encodes a checkpoint payload: scrub cursor, then every entry in key order.
pub fn encode_checkpoint<'a>(
    cursor: (Option<FragmentId>, u64),
    entries: impl Iterator<Item = (&'a FragmentId, &'a Entry)>,
    footprint_bytes: u64,
) -> (Vec<u8>, u32) {
    let mut w = Writer::with_capacity(64 + footprint_bytes as usize);
    encode_cursor(&mut w, cursor.0, cursor.1);
    let mut count = 0u32;
    for (key, entry) in entries {
        let start = w.len();
        w.bytes(&key.0);
        entry.encode(&mut w);
        // Placement budgets checkpoint space with the same formula.
        assert_eq!(
            (w.len() - start) as u64,
            entry.footprint_bytes(),
            "entry footprint"
        );
        count += 1;
    }
    (w.into_inner(), count)
}

/// What a decoded checkpoint payload holds.
pub type CheckpointContents = ((Option<FragmentId>, u64), Vec<(FragmentId, Entry)>);

pub fn decode_checkpoint(
    payload: &[u8],
    count: u32,
    limits: &Limits,
) -> Option<CheckpointContents> {
    let mut r = Reader::new(payload);
    let cursor = decode_cursor(&mut r)?;
    let mut entries = Vec::with_capacity((count as usize).min(payload.len() / 57 + 1));
    for _ in 0..count {
        let key = FragmentId(r.array()?);
        entries.push((key, Entry::decode(&mut r, limits)?));
    }
    (r.remaining() == 0).then_some((cursor, entries))
}

pub const JOURNAL_MAGIC: [u8; 8] = *b"CESSJRNL";
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"CESSCKPT";
pub const FRAME_HEADER_BYTES: usize = 128;
const FRAME_CHECKSUM_AT: usize = 96;
// The header ends with its 32-byte checksum, and a header fits in the first block of a frame.
const _: () = assert!(FRAME_CHECKSUM_AT + 32 == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_HEADER_BYTES <= crate::aligned::BLOCK_BYTES);

/// The header of a checksummed frame (a journal batch or a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub shard: u32,
    /// Records in a batch, entries in a checkpoint.
    pub count: u32,
    /// Batch sequence number, or checkpoint sequence number.
    pub seq: u64,
    /// Journal position of the batch, or where replay starts for a checkpoint.
    pub pos: u64,
    /// Checkpoints only: the sequence number of the first batch to replay.
    pub next_seq: u64,
    pub payload_len: u64,
}

/// Frames `payload` into whole blocks: header, payload, zero padding.
pub fn encode_frame(
    magic: [u8; 8],
    store_id: [u8; 16],
    header: &FrameHeader,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(header.payload_len, payload.len() as u64);
    let total = crate::aligned::round_up(FRAME_HEADER_BYTES + payload.len(), BLOCK_BYTES);
    let mut w = Writer::with_capacity(total);
    w.bytes(&magic);
    w.bytes(&store_id);
    w.u32(header.shard);
    w.u32(header.count);
    w.u64(header.seq);
    w.u64(header.pos);
    w.u64(header.next_seq);
    w.u64(header.payload_len);
    let mut out = w.into_inner();
    out.resize(FRAME_HEADER_BYTES, 0);
    out.extend_from_slice(payload);
    let sum = frame_checksum(&out[..FRAME_CHECKSUM_AT], payload);
    out[FRAME_CHECKSUM_AT..FRAME_HEADER_BYTES].copy_from_slice(&sum);
    out.resize(total, 0);
    // What is written must read back through the reader recovery uses, to the same header
    // and payload (one more hash of the payload: metadata only, never fragment data).
    let back = check_frame(&out, magic, store_id, header.shard);
    assert!(
        back.is_some_and(|(h, p)| h == *header && p == payload),
        "a frame that does not decode is never written"
    );
    out
}

fn frame_checksum(head: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Parses only the header at the start of `bytes`; `None` unless magic, store and shard match.
/// The checksum is checked by [`check_frame`] once the payload is at hand.
pub fn decode_frame_header(
    bytes: &[u8],
    magic: [u8; 8],
    store_id: [u8; 16],
    shard: u32,
) -> Option<FrameHeader> {
    let head = bytes.get(..FRAME_HEADER_BYTES)?;
    let mut r = Reader::new(head);
    if r.array::<8>()? != magic || r.array::<16>()? != store_id {
        return None;
    }
    let header = FrameHeader {
        shard: r.u32()?,
        count: r.u32()?,
        seq: r.u64()?,
        pos: r.u64()?,
        next_seq: r.u64()?,
        payload_len: r.u64()?,
    };
    (header.shard == shard).then_some(header)
}

/// The payload of the frame starting at `bytes`, if its header and checksum are valid.
pub fn check_frame(
    bytes: &[u8],
    magic: [u8; 8],
    store_id: [u8; 16],
    shard: u32,
) -> Option<(FrameHeader, &[u8])> {
    let header = decode_frame_header(bytes, magic, store_id, shard)?;
    let end = FRAME_HEADER_BYTES.checked_add(usize::try_from(header.payload_len).ok()?)?;
    let payload = bytes.get(FRAME_HEADER_BYTES..end)?;
    let sum = frame_checksum(&bytes[..FRAME_CHECKSUM_AT], payload);
    (sum[..] == bytes[FRAME_CHECKSUM_AT..FRAME_HEADER_BYTES]).then_some((header, payload))
}

/// Total bytes a frame with `payload_len` bytes of payload occupies.
pub fn frame_bytes(payload_len: usize) -> u64 {
    crate::aligned::round_up(FRAME_HEADER_BYTES + payload_len, BLOCK_BYTES) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_object_bytes: 1 << 20,
            max_meta_bytes: 1024,
            data_blocks: 1000,
        }
    }

    fn entry(len: u64) -> Entry {
        Entry {
            class: Class::Idle,
            len_bytes: len,
            extent_block: 3,
            crcs: (0..blocks_for(len) as u32).collect(),
            meta: vec![1, 2, 3].into(),
        }
    }

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record::Put {
                key: FragmentId([1; 32]),
                entry: entry(10_000),
            },
            Record::Delete {
                key: FragmentId([2; 32]),
            },
            Record::SetMeta {
                key: FragmentId([3; 32]),
                meta: vec![9; 100].into(),
            },
            Record::Replace {
                idle_key: FragmentId([4; 32]),
                key: FragmentId([5; 32]),
                entry: entry(0),
            },
            Record::ScrubCursor {
                after: Some(FragmentId([6; 32])),
                pass: 7,
            },
            Record::ScrubCursor {
                after: None,
                pass: 0,
            },
        ];
        let mut w = Writer::default();
        for r in &records {
            r.encode(&mut w);
        }
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        for expected in &records {
            assert_eq!(Record::decode(&mut r, &limits()).as_ref(), Some(expected));
        }
        assert_eq!(r.remaining(), 0);
        // Every truncation fails cleanly, never panics.
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            while Record::decode(&mut r, &limits()).is_some() {}
        }
    }

    #[test]
    fn decode_enforces_limits() {
        let mut w = Writer::default();
        Record::Put {
            key: FragmentId([1; 32]),
            entry: entry(10_000),
        }
        .encode(&mut w);
        let bytes = w.into_inner();
        let tight = Limits {
            data_blocks: 4,
            ..limits()
        };
        assert_eq!(Record::decode(&mut Reader::new(&bytes), &tight), None);
        let small = Limits {
            max_object_bytes: 9_999,
            ..limits()
        };
        assert_eq!(Record::decode(&mut Reader::new(&bytes), &small), None);
    }

    #[test]
    fn frames_detect_every_bit_flip_in_header_and_payload() {
        let header = FrameHeader {
            shard: 1,
            count: 2,
            seq: 3,
            pos: 4,
            next_seq: 0,
            payload_len: 50,
        };
        let frame = encode_frame(JOURNAL_MAGIC, [5; 16], &header, &[7; 50]);
        assert_eq!(frame.len(), BLOCK_BYTES);
        assert!(check_frame(&frame, JOURNAL_MAGIC, [5; 16], 1).is_some());
        assert!(check_frame(&frame, JOURNAL_MAGIC, [6; 16], 1).is_none());
        assert!(check_frame(&frame, CHECKPOINT_MAGIC, [5; 16], 1).is_none());
        for byte in 0..FRAME_HEADER_BYTES + 50 {
            let mut bad = frame.clone();
            bad[byte] ^= 0x10;
            assert!(
                check_frame(&bad, JOURNAL_MAGIC, [5; 16], 1).is_none(),
                "byte {byte}"
            );
        }
    }
}
