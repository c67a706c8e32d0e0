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
use crate::types::FragmentId;
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
    pub cursor: (Option<FragmentId>, u64),
    pub entries: Vec<(FragmentId, Entry)>,
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
    pub cursor: (Option<FragmentId>, u64),
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
    // Positions are block-aligned (every frame is whole blocks) and, like sequence numbers,
    // far from overflowing: a checksum-valid header saying otherwise was not written by us.
    let header = &cp.header;
    if !header.pos.is_multiple_of(BLOCK as u64)
        || header.pos > u64::MAX / 4
        || header.next_seq > u64::MAX / 4
        || header.seq > u64::MAX / 4
    {
        return Err(RecoveryError::ImpossibleCheckpoint {
            seq: header.seq,
            pos: header.pos,
        });
    }
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
        // Each record takes at least one byte: a forged count sizes nothing beyond the payload.
        let mut records = Vec::with_capacity((header.count as usize).min(payload.len()));
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
            let frame = intact_copy
                .get(phys as usize..(phys + frame_len) as usize)
                .expect("an intact frame at an aligned place lies within the region");
            repairs.push(Repair {
                phys,
                frame: frame.to_vec(),
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
#[path = "recovery_tests.rs"]
mod tests;
