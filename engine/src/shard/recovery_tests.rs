//! Every row of every decision table in `recovery.rs`, on frames built in memory.

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

fn key(n: u8) -> FragmentId {
    FragmentId([n; 32])
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
fn checkpoint_frame(seq: u64, pos: u64, next_seq: u64, entries: &[(FragmentId, Entry)]) -> Vec<u8> {
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

fn checkpoint(
    seq: u64,
    pos: u64,
    next_seq: u64,
    entries: &[(FragmentId, Entry)],
) -> LoadedCheckpoint {
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
    let keys: Vec<FragmentId> = replayed.index.iter().map(|(k, _)| *k).collect();
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
#[test]
fn forged_headers_are_refused_without_a_panic_or_a_huge_allocation() {
    // A checkpoint at a position the engine never writes (unaligned, or near overflow).
    for pos in [1, u64::MAX - 4095] {
        let cp = checkpoint(1, pos, 0, &[]);
        assert_eq!(
            replay(OWNER, &limits(), &cp, Copies::new().journal()).unwrap_err(),
            RecoveryError::ImpossibleCheckpoint { seq: 1, pos }
        );
    }
    let cp = checkpoint(u64::MAX, 0, 0, &[]);
    assert!(matches!(
        replay(OWNER, &limits(), &cp, Copies::new().journal()),
        Err(RecoveryError::ImpossibleCheckpoint { .. })
    ));
    // A checksum-valid batch claiming 2^32 - 1 records in a one-byte payload.
    let mut copies = Copies::new();
    let header = FrameHeader {
        shard: OWNER.shard,
        count: u32::MAX,
        seq: 0,
        pos: 0,
        next_seq: 0,
        payload_len: 1,
    };
    let frame = record::encode_frame(JOURNAL_MAGIC, OWNER.store_id, &header, &[0]);
    copies.a[..frame.len()].copy_from_slice(&frame);
    copies.b[..frame.len()].copy_from_slice(&frame);
    assert_eq!(
        replay(
            OWNER,
            &limits(),
            &checkpoint(1, 0, 0, &[]),
            copies.journal()
        )
        .unwrap_err(),
        RecoveryError::UndecodableRecord { seq: 0 }
    );
}
