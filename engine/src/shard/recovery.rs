//! Recovery at open, as pure decisions over what was read. The caller (`open.rs`) does the
//! I/O: it reads both checkpoint slots and both journal copies, hands the bytes and read
//! results here, and issues the repairs the returned [`Recovery`] lists. Each decision is a
//! function with its cases named, and the tests below walk every row of its table (as
//! TigerBeetle's journal does for its recovery cases).
//!
//! | decision | input | cases |
//! |---|---|---|
//! | [`checkpoint_frame_len`], [`decode_checkpoint_slot`] | one slot's bytes | usable, or a [`SlotDefect`] |
//! | [`journal_copies`] | both copies' read results | both, only A, only B, neither (refused) |
//! | [`batch_source`] | one batch position in both copies | both, only A (rewrite B), only B (rewrite A), neither (journal ends) |
//! | [`replay`] | a checkpoint and the journal | the index, or why not |
//! | [`recover`] | both slots and the journal | which checkpoint, what to repair, or why not |

use super::index::Index;
use crate::alloc::Allocator;
use crate::error::{IoFailure, JournalCopy, RecoveryError, SlotDefect};
use crate::record::{self, CHECKPOINT_MAGIC, Entry, FrameHeader, JOURNAL_MAGIC, Limits, Record};
use crate::types::Key;
use crate::wire::Reader;

const BLOCK: usize = crate::aligned::BLOCK_BYTES;

/// Who is recovering: frames of other stores or shards are not ours.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub store_id: [u8; 16],
    pub shard: u32,
}

/// A checkpoint slot that decoded.
#[derive(Debug, Clone)]
pub(crate) struct LoadedCheckpoint {
    pub header: FrameHeader,
    pub cursor: (Option<Key>, u64),
    pub entries: Vec<(Key, Entry)>,
}

/// The length of the frame a slot's first block announces, if the slot holds one of ours
/// that fits it.
pub(crate) fn checkpoint_frame_len(
    head: &[u8],
    owner: Owner,
    slot_bytes: u64,
) -> Result<usize, SlotDefect> {
    let Some(header) =
        record::decode_frame_header(head, CHECKPOINT_MAGIC, owner.store_id, owner.shard)
    else {
        return Err(SlotDefect::Empty);
    };
    let len_bytes = record::frame_bytes(
        usize::try_from(header.payload_len)
            .unwrap_or(usize::MAX)
            .min(1 << 40),
    );
    if len_bytes > slot_bytes {
        return Err(SlotDefect::Oversized { len_bytes });
    }
    Ok(len_bytes as usize)
}

/// A whole checkpoint frame, checked and decoded.
pub(crate) fn decode_checkpoint_slot(
    frame: &[u8],
    owner: Owner,
    limits: &Limits,
) -> Result<LoadedCheckpoint, SlotDefect> {
    let Some((header, payload)) =
        record::check_frame(frame, CHECKPOINT_MAGIC, owner.store_id, owner.shard)
    else {
        return Err(SlotDefect::Checksum);
    };
    let Some((cursor, entries)) = record::decode_checkpoint(payload, header.count, limits) else {
        return Err(SlotDefect::Undecodable);
    };
    Ok(LoadedCheckpoint {
        header,
        cursor,
        entries,
    })
}

/// Which journal copies recovery reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JournalCopies {
    Both,
    /// B could not be read: it counts as empty, and every batch found in A is rewritten to B.
    OnlyA {
        b: IoFailure,
    },
    /// A could not be read: the mirror of `OnlyA`.
    OnlyB {
        a: IoFailure,
    },
}

pub(crate) fn journal_copies(
    a: Result<(), IoFailure>,
    b: Result<(), IoFailure>,
) -> Result<JournalCopies, RecoveryError> {
    match (a, b) {
        (Ok(()), Ok(())) => Ok(JournalCopies::Both),
        (Ok(()), Err(b)) => Ok(JournalCopies::OnlyA { b }),
        (Err(a), Ok(())) => Ok(JournalCopies::OnlyB { a }),
        (Err(a), Err(b)) => Err(RecoveryError::JournalUnreadable { a, b }),
    }
}

/// Where one journal batch is read from, given which copies hold it intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchSource {
    Both,
    /// B is damaged or stale at this place: replay A's batch and rewrite it to B.
    OnlyA,
    /// A is damaged or stale at this place: replay B's batch and rewrite it to A.
    OnlyB,
}

impl BatchSource {
    /// The copy to rewrite from the other, if one is damaged.
    pub fn damaged(self) -> Option<JournalCopy> {
        match self {
            BatchSource::Both => None,
            BatchSource::OnlyA => Some(JournalCopy::B),
            BatchSource::OnlyB => Some(JournalCopy::A),
        }
    }
}

/// `None`: neither copy holds the expected batch, so the journal ends here.
pub(crate) fn batch_source(a_intact: bool, b_intact: bool) -> Option<BatchSource> {
    match (a_intact, b_intact) {
        (true, true) => Some(BatchSource::Both),
        (true, false) => Some(BatchSource::OnlyA),
        (false, true) => Some(BatchSource::OnlyB),
        (false, false) => None,
    }
}

/// One damaged journal batch copy to rewrite from the intact one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// Offset inside the journal region.
    pub phys: u64,
    pub frame: Vec<u8>,
    pub copy: JournalCopy,
}

/// What a replay from one checkpoint yields.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub index: Index,
    pub cursor: (Option<Key>, u64),
    pub head: u64,
    pub next_seq: u64,
    pub repairs: Vec<Repair>,
}

/// The journal as read: both copies (an unreadable one zeroed) and the region's size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Journal<'a> {
    pub a: &'a [u8],
    pub b: &'a [u8],
}

/// Rebuilds the index from a checkpoint and the journal batches after it, applying records
/// through [`Index::apply`] as the live path does.
pub(crate) fn replay(
    owner: Owner,
    limits: &Limits,
    cp: &LoadedCheckpoint,
    journal: Journal<'_>,
) -> Result<Replayed, RecoveryError> {
    assert_eq!(journal.a.len(), journal.b.len(), "two copies of one region");
    let size = journal.a.len() as u64;
    let mut index = Index::default();
    for (key, entry) in &cp.entries {
        index
            .insert(*key, entry.clone())
            .map_err(|_| RecoveryError::DuplicateInCheckpoint(*key))?;
    }
    let mut cursor = cp.cursor;
    let mut pos = cp.header.pos;
    let mut seq = cp.header.next_seq;
    let mut repairs = Vec::new();
    /// The batch `seq` at `pos`, if this copy holds it intact at `phys`.
    fn intact(
        copy: &[u8],
        owner: Owner,
        phys: u64,
        pos: u64,
        seq: u64,
    ) -> Option<(FrameHeader, &[u8])> {
        record::check_frame(
            &copy[phys as usize..],
            JOURNAL_MAGIC,
            owner.store_id,
            owner.shard,
        )
        .filter(|(h, _)| h.seq == seq && h.pos == pos)
    }
    let find = |phys: u64, pos: u64, seq: u64| {
        let a = intact(journal.a, owner, phys, pos, seq);
        let b = intact(journal.b, owner, phys, pos, seq);
        let source = batch_source(a.is_some(), b.is_some())?;
        let (header, payload) = a.or(b).expect("a source holds the batch");
        Some((header, payload, source))
    };
    loop {
        let phys = pos % size;
        let mut found = find(phys, pos, seq);
        if found.is_none() && phys != 0 {
            // A batch that did not fit before the end of the region starts the next lap.
            let lap = pos + (size - phys);
            found = find(0, lap, seq);
        }
        let Some((header, payload, source)) = found else {
            break;
        };
        let mut r = Reader::new(payload);
        let mut records = Vec::with_capacity(header.count as usize);
        for _ in 0..header.count {
            records.push(
                Record::decode(&mut r, limits).ok_or(RecoveryError::UndecodableRecord { seq })?,
            );
        }
        for record in &records {
            if let Record::ScrubCursor { after, pass } = record {
                cursor = (*after, *pass);
            }
            index
                .apply(record)
                .map_err(|present| RecoveryError::PutOfPresentKey {
                    seq,
                    key: present.0,
                })?;
        }
        let frame_len = record::frame_bytes(payload.len());
        if let Some(copy) = source.damaged() {
            let phys = header.pos % size;
            let intact_copy = match copy {
                JournalCopy::A => journal.b,
                JournalCopy::B => journal.a,
            };
            repairs.push(Repair {
                phys,
                frame: intact_copy[phys as usize..(phys + frame_len) as usize].to_vec(),
                copy,
            });
        }
        pos = header.pos + frame_len;
        seq += 1;
        if pos - cp.header.pos > size {
            return Err(RecoveryError::PastOneLap);
        }
    }
    // A valid batch beyond the end means a batch in the middle was lost in both copies:
    // refuse rather than silently drop acknowledged writes.
    for (copy, bytes) in [(JournalCopy::A, journal.a), (JournalCopy::B, journal.b)] {
        for at in (0..bytes.len()).step_by(BLOCK) {
            if let Some((h, _)) =
                record::check_frame(&bytes[at..], JOURNAL_MAGIC, owner.store_id, owner.shard)
                && h.seq >= seq
                && h.pos >= pos
            {
                return Err(RecoveryError::MissingBatch {
                    seq,
                    follows: h.seq,
                    copy,
                });
            }
        }
    }
    Ok(Replayed {
        index,
        cursor,
        head: pos,
        next_seq: seq,
        repairs,
    })
}

/// Which checkpoint recovery started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckpointChoice {
    /// The newest valid one.
    Newest,
    /// The older one, because the newest failed to replay for this reason.
    Older {
        newest_seq: u64,
        newest: RecoveryError,
    },
}

/// The outcome of recovery: the state to open with and the repairs to issue first.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub replayed: Replayed,
    pub alloc: Allocator,
    pub choice: CheckpointChoice,
    /// The checkpoint replay started from.
    pub ckpt_seq: u64,
    pub latest_ckpt_pos: u64,
    /// The journal keeps everything from here on (see `JournalState`).
    pub older_ckpt_pos: u64,
    /// Write a checkpoint at once, so that two good ones exist again: recovery used the
    /// older one, found only one valid slot, or repaired the journal.
    pub rewrite_checkpoint: bool,
}

/// Chooses the checkpoint and replays the journal after it.
///
/// | valid slots | newest replays | older replays | decision |
/// |---|---|---|---|
/// | 0 | – | – | refused: `NoCheckpoint` with both slots' defects |
/// | 1 | yes | – | that one; rewrite a checkpoint |
/// | 1 | no | – | refused: `NoCheckpointReplays` |
/// | 2 | yes, no repairs | – | the newest; nothing to rewrite |
/// | 2 | yes, with repairs | – | the newest; repair the journal, rewrite a checkpoint |
/// | 2 | no | yes | the older; rewrite a checkpoint |
/// | 2 | no | no | refused: `NoCheckpointReplays` with both reasons |
///
/// A replay whose extents overlap or leave the region counts as failed like any other.
pub(crate) fn recover(
    owner: Owner,
    limits: &Limits,
    slots: [Result<LoadedCheckpoint, SlotDefect>; 2],
    journal: Journal<'_>,
) -> Result<Recovery, RecoveryError> {
    let [s0, s1] = slots;
    let mut valid: Vec<LoadedCheckpoint> = Vec::new();
    let mut defects = Vec::new();
    for slot in [s0, s1] {
        match slot {
            Ok(cp) => valid.push(cp),
            Err(defect) => defects.push(defect),
        }
    }
    if valid.is_empty() {
        return Err(RecoveryError::NoCheckpoint(defects[0], defects[1]));
    }
    valid.sort_by_key(|cp| std::cmp::Reverse(cp.header.seq));
    let slots_valid = valid.len();
    let mut failures: Vec<(u64, RecoveryError)> = Vec::new();
    for (i, cp) in valid.iter().enumerate() {
        let attempt = replay(owner, limits, cp, journal).and_then(|replayed| {
            let used = replayed
                .index
                .iter()
                .map(|(_, e)| (e.extent_block, e.blocks()))
                .collect();
            let alloc = Allocator::from_used(limits.data_blocks, used)
                .ok_or(RecoveryError::OverlappingExtents)?;
            Ok((replayed, alloc))
        });
        match attempt {
            Ok((replayed, alloc)) => {
                let older_ckpt_pos = if i == 0 && slots_valid == 2 {
                    valid[1].header.pos.min(cp.header.pos)
                } else {
                    cp.header.pos
                };
                let choice = match failures.pop() {
                    None => CheckpointChoice::Newest,
                    Some((newest_seq, newest)) => CheckpointChoice::Older { newest_seq, newest },
                };
                let rewrite_checkpoint = i > 0 || slots_valid < 2 || !replayed.repairs.is_empty();
                return Ok(Recovery {
                    replayed,
                    alloc,
                    choice,
                    ckpt_seq: cp.header.seq,
                    latest_ckpt_pos: cp.header.pos,
                    older_ckpt_pos,
                    rewrite_checkpoint,
                });
            }
            Err(reason) => failures.push((cp.header.seq, reason)),
        }
    }
    Err(RecoveryError::NoCheckpointReplays { failures })
}

#[cfg(test)]
mod tests {
    //! Every row of every decision table above, on frames built in memory.

    use super::*;
    use crate::types::Class;
    use crate::wire::Writer;

    const OWNER: Owner = Owner {
        store_id: [7; 16],
        shard: 3,
    };
    const JOURNAL_BYTES: usize = 64 << 10;
    const SLOT_BYTES: u64 = 64 << 10;
    const IO: IoFailure = IoFailure {
        kind: std::io::ErrorKind::Other,
        os_code: Some(5),
    };

    fn limits() -> Limits {
        Limits {
            max_object_bytes: 1 << 20,
            max_meta_bytes: 1024,
            data_blocks: 1024,
        }
    }

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    fn entry(extent_block: u64) -> Entry {
        Entry {
            class: Class::Active,
            len_bytes: BLOCK as u64,
            extent_block,
            crcs: vec![0].into(),
            meta: Box::new([]),
        }
    }

    fn put(n: u8, extent_block: u64) -> Record {
        Record::Put {
            key: key(n),
            entry: entry(extent_block),
        }
    }

    /// A checkpoint frame: `seq`, replay from `pos` at batch `next_seq`, holding `entries`.
    fn checkpoint_frame(seq: u64, pos: u64, next_seq: u64, entries: &[(Key, Entry)]) -> Vec<u8> {
        let footprint = entries.iter().map(|(_, e)| e.footprint_bytes()).sum();
        let (payload, count) =
            record::encode_checkpoint((None, 0), entries.iter().map(|(k, e)| (k, e)), footprint);
        let header = FrameHeader {
            shard: OWNER.shard,
            count,
            seq,
            pos,
            next_seq,
            payload_len: payload.len() as u64,
        };
        record::encode_frame(CHECKPOINT_MAGIC, OWNER.store_id, &header, &payload)
    }

    fn checkpoint(seq: u64, pos: u64, next_seq: u64, entries: &[(Key, Entry)]) -> LoadedCheckpoint {
        decode_checkpoint_slot(
            &checkpoint_frame(seq, pos, next_seq, entries),
            OWNER,
            &limits(),
        )
        .expect("a checkpoint built here decodes")
    }

    /// The journal's two copies, batches written into them at their positions.
    struct Copies {
        a: Vec<u8>,
        b: Vec<u8>,
        /// Where the next batch goes, and its sequence number.
        pos: u64,
        seq: u64,
    }

    impl Copies {
        fn new() -> Copies {
            Copies {
                a: vec![0; JOURNAL_BYTES],
                b: vec![0; JOURNAL_BYTES],
                pos: 0,
                seq: 0,
            }
        }

        /// Appends a batch of `records` to the copies named; returns its position.
        fn batch(&mut self, records: &[Record], into_a: bool, into_b: bool) -> u64 {
            let mut w = Writer::default();
            for r in records {
                r.encode(&mut w);
            }
            let payload = w.into_inner();
            let header = FrameHeader {
                shard: OWNER.shard,
                count: records.len() as u32,
                seq: self.seq,
                pos: self.pos,
                next_seq: 0,
                payload_len: payload.len() as u64,
            };
            let frame = record::encode_frame(JOURNAL_MAGIC, OWNER.store_id, &header, &payload);
            let at = self.pos as usize;
            for (copy, write) in [(&mut self.a, into_a), (&mut self.b, into_b)] {
                if write {
                    copy[at..at + frame.len()].copy_from_slice(&frame);
                }
            }
            let pos = self.pos;
            self.pos += frame.len() as u64;
            self.seq += 1;
            pos
        }

        fn journal(&self) -> Journal<'_> {
            Journal {
                a: &self.a,
                b: &self.b,
            }
        }
    }

    #[test]
    fn checkpoint_slots_usable_or_named_defects() {
        let frame = checkpoint_frame(4, 0, 0, &[(key(1), entry(0))]);
        // Usable.
        let len = checkpoint_frame_len(&frame[..BLOCK], OWNER, SLOT_BYTES).unwrap();
        assert_eq!(len, frame.len());
        let cp = decode_checkpoint_slot(&frame, OWNER, &limits()).unwrap();
        assert_eq!((cp.header.seq, cp.entries.len()), (4, 1));
        // Empty: zeros, another store's or another shard's frame.
        let zeros = vec![0u8; BLOCK];
        assert_eq!(
            checkpoint_frame_len(&zeros, OWNER, SLOT_BYTES),
            Err(SlotDefect::Empty)
        );
        let other_store = Owner {
            store_id: [8; 16],
            ..OWNER
        };
        let other_shard = Owner { shard: 4, ..OWNER };
        for other in [other_store, other_shard] {
            assert_eq!(
                checkpoint_frame_len(&frame[..BLOCK], other, SLOT_BYTES),
                Err(SlotDefect::Empty)
            );
        }
        // Oversized: a frame longer than its slot.
        assert_eq!(
            checkpoint_frame_len(&frame[..BLOCK], OWNER, BLOCK as u64 - 1),
            Err(SlotDefect::Oversized {
                len_bytes: frame.len() as u64
            })
        );
        // Checksum: one payload bit flipped.
        let mut flipped = frame.clone();
        flipped[record::FRAME_HEADER_BYTES + 3] ^= 1;
        assert_eq!(
            decode_checkpoint_slot(&flipped, OWNER, &limits()).unwrap_err(),
            SlotDefect::Checksum
        );
        // Undecodable: a valid checksum over a payload that is not a checkpoint.
        let header = FrameHeader {
            shard: OWNER.shard,
            count: 5,
            seq: 4,
            pos: 0,
            next_seq: 0,
            payload_len: 3,
        };
        let junk = record::encode_frame(CHECKPOINT_MAGIC, OWNER.store_id, &header, &[1, 2, 3]);
        assert_eq!(
            decode_checkpoint_slot(&junk, OWNER, &limits()).unwrap_err(),
            SlotDefect::Undecodable
        );
    }

    #[test]
    fn journal_copies_table() {
        assert_eq!(journal_copies(Ok(()), Ok(())), Ok(JournalCopies::Both));
        assert_eq!(
            journal_copies(Ok(()), Err(IO)),
            Ok(JournalCopies::OnlyA { b: IO })
        );
        assert_eq!(
            journal_copies(Err(IO), Ok(())),
            Ok(JournalCopies::OnlyB { a: IO })
        );
        assert_eq!(
            journal_copies(Err(IO), Err(IO)),
            Err(RecoveryError::JournalUnreadable { a: IO, b: IO })
        );
    }

    #[test]
    fn batch_source_table() {
        let rows = [
            (true, true, Some(BatchSource::Both), None),
            (true, false, Some(BatchSource::OnlyA), Some(JournalCopy::B)),
            (false, true, Some(BatchSource::OnlyB), Some(JournalCopy::A)),
            (false, false, None, None),
        ];
        for (a, b, source, damaged) in rows {
            assert_eq!(batch_source(a, b), source, "a {a} b {b}");
            assert_eq!(source.and_then(BatchSource::damaged), damaged);
        }
    }

    #[test]
    fn replay_applies_records_and_refuses_what_the_live_path_never_writes() {
        let cp = checkpoint(1, 0, 0, &[(key(1), entry(0))]);
        // Applied in order, through the live path's index.
        let mut copies = Copies::new();
        copies.batch(&[put(2, 1), Record::Delete { key: key(1) }], true, true);
        copies.batch(
            &[Record::ScrubCursor {
                after: Some(key(2)),
                pass: 9,
            }],
            true,
            true,
        );
        let replayed = replay(OWNER, &limits(), &cp, copies.journal()).unwrap();
        let keys: Vec<Key> = replayed.index.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [key(2)]);
        assert_eq!(replayed.cursor, (Some(key(2)), 9));
        assert_eq!((replayed.head, replayed.next_seq), (copies.pos, 2));
        assert!(replayed.repairs.is_empty());
        // A put of a key the checkpoint holds.
        let mut copies = Copies::new();
        copies.batch(&[put(1, 5)], true, true);
        assert_eq!(
            replay(OWNER, &limits(), &cp, copies.journal()).unwrap_err(),
            RecoveryError::PutOfPresentKey {
                seq: 0,
                key: key(1)
            }
        );
        // A checkpoint naming a key twice.
        let twice = checkpoint(1, 0, 0, &[(key(1), entry(0)), (key(1), entry(1))]);
        assert_eq!(
            replay(OWNER, &limits(), &twice, Copies::new().journal()).unwrap_err(),
            RecoveryError::DuplicateInCheckpoint(key(1))
        );
        // A batch lost in both copies with a later one intact.
        let mut copies = Copies::new();
        copies.batch(&[put(2, 1)], false, false);
        copies.batch(&[put(3, 2)], true, false);
        assert_eq!(
            replay(OWNER, &limits(), &cp, copies.journal()).unwrap_err(),
            RecoveryError::MissingBatch {
                seq: 0,
                follows: 1,
                copy: JournalCopy::A
            }
        );
        // One damaged copy: replayed from the other, and the damaged one listed for repair.
        let mut copies = Copies::new();
        copies.batch(&[put(2, 1)], true, true);
        let at = copies.batch(&[put(3, 2)], false, true);
        let replayed = replay(OWNER, &limits(), &cp, copies.journal()).unwrap();
        assert_eq!(replayed.index.iter().count(), 3);
        assert_eq!(replayed.repairs.len(), 1);
        assert_eq!(replayed.repairs[0].copy, JournalCopy::A);
        assert_eq!(replayed.repairs[0].phys, at);
        assert_eq!(
            replayed.repairs[0].frame,
            copies.b[at as usize..copies.pos as usize]
        );
    }

    #[test]
    fn recover_table() {
        let empty = || Err(SlotDefect::Empty);
        // Row 1: no valid slot.
        let copies = Copies::new();
        assert_eq!(
            recover(
                OWNER,
                &limits(),
                [empty(), Err(SlotDefect::Checksum)],
                copies.journal()
            )
            .unwrap_err(),
            RecoveryError::NoCheckpoint(SlotDefect::Empty, SlotDefect::Checksum)
        );
        // Row 2: one valid slot that replays: used, and a checkpoint rewritten.
        let mut copies = Copies::new();
        copies.batch(&[put(1, 0)], true, true);
        let r = recover(
            OWNER,
            &limits(),
            [empty(), Ok(checkpoint(1, 0, 0, &[]))],
            copies.journal(),
        )
        .unwrap();
        assert_eq!(r.choice, CheckpointChoice::Newest);
        assert!(r.rewrite_checkpoint);
        assert_eq!((r.ckpt_seq, r.older_ckpt_pos), (1, 0));
        assert_eq!(r.alloc.free_blocks(), 1023);
        // Row 3: one valid slot that does not replay.
        let mut copies = Copies::new();
        copies.batch(&[put(1, 0)], false, false);
        copies.batch(&[put(2, 1)], true, true);
        let err = recover(
            OWNER,
            &limits(),
            [Ok(checkpoint(1, 0, 0, &[])), empty()],
            copies.journal(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RecoveryError::NoCheckpointReplays { failures }
                if matches!(failures[..], [(1, RecoveryError::MissingBatch { seq: 0, follows: 1, .. })])),
            "{err}"
        );
        // Rows 4 and 5: two valid slots, the newest replays; with a damaged batch copy the
        // journal is repaired and a checkpoint rewritten.
        for damaged in [false, true] {
            let mut copies = Copies::new();
            copies.batch(&[put(1, 0)], true, true);
            let newest_pos = copies.pos;
            copies.batch(&[put(2, 1)], true, !damaged);
            let older = checkpoint(1, 0, 0, &[]);
            let newest = checkpoint(2, newest_pos, 1, &[(key(1), entry(0))]);
            let r = recover(OWNER, &limits(), [Ok(older), Ok(newest)], copies.journal()).unwrap();
            assert_eq!(r.choice, CheckpointChoice::Newest);
            assert_eq!(
                (r.ckpt_seq, r.latest_ckpt_pos, r.older_ckpt_pos),
                (2, newest_pos, 0)
            );
            assert_eq!(r.replayed.index.iter().count(), 2);
            assert_eq!(r.replayed.repairs.len(), usize::from(damaged));
            assert_eq!(r.rewrite_checkpoint, damaged);
        }
        // Row 6: the newest does not replay, the older does.
        let mut copies = Copies::new();
        copies.batch(&[put(1, 0)], true, true);
        let bad_newest = checkpoint(2, copies.pos, 1, &[(key(1), entry(0)), (key(1), entry(0))]);
        let r = recover(
            OWNER,
            &limits(),
            [Ok(bad_newest), Ok(checkpoint(1, 0, 0, &[]))],
            copies.journal(),
        )
        .unwrap();
        assert_eq!(
            r.choice,
            CheckpointChoice::Older {
                newest_seq: 2,
                newest: RecoveryError::DuplicateInCheckpoint(key(1))
            }
        );
        assert_eq!((r.ckpt_seq, r.older_ckpt_pos), (1, 0));
        assert!(r.rewrite_checkpoint);
        // Row 7: neither replays; both reasons are kept, newest first. Overlapping extents
        // count as a failed replay.
        let overlapping = checkpoint(2, 0, 0, &[(key(1), entry(0)), (key(2), entry(0))]);
        let twice = checkpoint(1, 0, 0, &[(key(1), entry(0)), (key(1), entry(0))]);
        let err = recover(
            OWNER,
            &limits(),
            [Ok(twice), Ok(overlapping)],
            Copies::new().journal(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            RecoveryError::NoCheckpointReplays {
                failures: vec![
                    (2, RecoveryError::OverlappingExtents),
                    (1, RecoveryError::DuplicateInCheckpoint(key(1))),
                ]
            }
        );
    }
}
