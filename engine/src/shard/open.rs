//! Opening a shard: the I/O around recovery. It reads both checkpoint slots and both
//! journal copies, lets `recovery::recover` decide (pure), then issues the repairs decided
//! (damaged journal copies rewritten, a checkpoint written again) before the shard serves.

use super::journal::JournalState;
use super::recovery::{self, CheckpointChoice, Journal, LoadedCheckpoint, Owner, Recovery};
use super::scrub::ScrubState;
use super::{BLOCK, Shard};
use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::device::{Device, IoOp, execute_one};
use crate::error::{IoFailure, JournalCopy, PoisonCause, RecoveryError, SlotDefect};
use crate::layout::ShardRegions;
use crate::record::{self, CHECKPOINT_MAGIC, FrameHeader, Limits};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

impl Shard {
    /// Writes the empty initial state of a shard (one empty checkpoint; journal slots are
    /// told apart from older formats by the store id).
    pub(crate) fn format(
        id: u32,
        dev: &mut dyn Device,
        regions: &ShardRegions,
        store_id: [u8; 16],
    ) -> std::io::Result<()> {
        let (payload, count) = record::encode_checkpoint((None, 0), std::iter::empty(), 0);
        let header = FrameHeader {
            shard: id,
            count,
            seq: 1,
            pos: 0,
            next_seq: 0,
            payload_len: payload.len() as u64,
        };
        let frame = record::encode_frame(CHECKPOINT_MAGIC, store_id, &header, &payload);
        let buf = AlignedBuf::copy_from(&frame);
        // Slot 1 holds seq 1; slot 0 is zeroed so no earlier format's checkpoint survives.
        let zero = AlignedBuf::zeroed(BLOCK_BYTES);
        let mut ops = [
            IoOp::write(regions.checkpoints[1], buf.as_blocks()),
            IoOp::write(regions.checkpoints[0], zero.as_blocks()),
        ];
        dev.execute(&mut ops);
        for op in &mut ops {
            op.take_result()?;
        }
        Ok(())
    }

    /// Opens a shard: recovery decides from what the slots and the journal hold, then the
    /// repairs it asks for are written before the shard serves.
    pub(crate) fn open(
        id: u32,
        mut dev: Box<dyn Device>,
        regions: ShardRegions,
        store_id: [u8; 16],
        max_object_bytes: u64,
        max_meta_bytes: u32,
    ) -> Result<Shard, RecoveryError> {
        let limits = Limits {
            max_object_bytes,
            max_meta_bytes,
            data_blocks: regions.data_bytes / BLOCK,
        };
        let owner = Owner {
            store_id,
            shard: id,
        };
        let slots =
            [0, 1].map(|slot| read_checkpoint(dev.as_mut(), &regions, slot, owner, &limits));
        if let [Err(s0), Err(s1)] = &slots {
            // Nothing to replay from: refused before the journal is read.
            return Err(RecoveryError::NoCheckpoint(*s0, *s1));
        }
        let journal_len = regions.journal_bytes as usize;
        let mut journal_a = AlignedBuf::zeroed(journal_len);
        let mut journal_b = AlignedBuf::zeroed(journal_len);
        let (a, b) = {
            let mut ops = [
                IoOp::read(regions.journal_a, journal_a.as_blocks_mut()),
                IoOp::read(regions.journal_b, journal_b.as_blocks_mut()),
            ];
            dev.execute(&mut ops);
            let [a, b] = &mut ops;
            (
                a.take_result().map_err(IoFailure::from),
                b.take_result().map_err(IoFailure::from),
            )
        };
        match recovery::journal_copies(a, b)? {
            recovery::JournalCopies::Both => {}
            recovery::JournalCopies::OnlyA { b } => {
                tracing::warn!(shard = id, "journal copy B unreadable ({b}); using copy A");
                journal_b.fill(0);
            }
            recovery::JournalCopies::OnlyB { a } => {
                tracing::warn!(shard = id, "journal copy A unreadable ({a}); using copy B");
                journal_a.fill(0);
            }
        }
        let journal = Journal {
            a: journal_a.as_blocks(),
            b: journal_b.as_blocks(),
        };
        let recovered = recovery::recover(owner, &limits, slots, journal)?;
        if let CheckpointChoice::Older { newest_seq, newest } = &recovered.choice {
            tracing::warn!(
                shard = id,
                "newest checkpoint (seq {newest_seq}) unusable ({newest}); recovered from seq {}",
                recovered.ckpt_seq
            );
        }
        drop((journal_a, journal_b));
        let rewrite_checkpoint = recovered.rewrite_checkpoint;
        let mut shard = Shard::recovered(id, dev, regions, store_id, recovered, max_object_bytes);
        shard.repair_journal().map_err(RecoveryError::Repair)?;
        if rewrite_checkpoint {
            // Restore two good checkpoints now rather than at the next threshold.
            shard.checkpoint().map_err(RecoveryError::Repair)?;
        }
        Ok(shard)
    }

    /// The shard recovery describes, not yet repaired.
    fn recovered(
        id: u32,
        dev: Box<dyn Device>,
        regions: ShardRegions,
        store_id: [u8; 16],
        recovered: Recovery,
        max_object_bytes: u64,
    ) -> Shard {
        let Recovery {
            replayed,
            alloc,
            ckpt_seq,
            latest_ckpt_pos,
            older_ckpt_pos,
            ..
        } = recovered;
        replayed.index.assert_consistent();
        let used_blocks =
            replayed.index.counters().active_blocks + replayed.index.counters().idle_blocks;
        assert_eq!(
            used_blocks + alloc.free_blocks(),
            alloc.total_blocks(),
            "every block is exactly one of free, active, idle"
        );
        Shard {
            id,
            dev,
            regions,
            store_id,
            index: replayed.index,
            alloc,
            journal: JournalState {
                head: replayed.head,
                next_seq: replayed.next_seq,
                latest_ckpt_pos,
                older_ckpt_pos,
                ckpt_seq,
            },
            scrub: ScrubState {
                cursor: replayed.cursor.0,
                pass: replayed.cursor.1,
                corrupt: BTreeSet::new(),
            },
            journal_repairs: replayed.repairs,
            read_verify_failures: 0,
            poisoned: None,
            reserve_blocks: max_object_bytes.div_ceil(BLOCK),
            streaming: HashMap::new(),
            next_stream_tag: 0,
            batches: VecDeque::new(),
            reaped: Vec::new(),
            reaped_reads: Vec::new(),
            pool: Arc::new(BufPool::new(0)),
            read_pool: Arc::new(BufPool::new(0)),
        }
    }

    /// Rewrites the damaged journal batch copies recovery found, from the intact ones.
    fn repair_journal(&mut self) -> Result<(), PoisonCause> {
        let repairs = std::mem::take(&mut self.journal_repairs);
        for repair in &repairs {
            let base = match repair.copy {
                JournalCopy::A => self.regions.journal_a,
                JournalCopy::B => self.regions.journal_b,
            };
            let buf = AlignedBuf::copy_from(&repair.frame);
            execute_one(
                self.dev.as_mut(),
                IoOp::write(base + repair.phys, buf.as_blocks()),
            )
            .map_err(|e| PoisonCause::JournalWrite(IoFailure::from(e)))?;
        }
        if !repairs.is_empty() {
            tracing::warn!(
                shard = self.id,
                "repaired {} damaged journal batch copies",
                repairs.len()
            );
            execute_one(self.dev.as_mut(), IoOp::flush())
                .map_err(|e| PoisonCause::JournalFlush(IoFailure::from(e)))?;
        }
        Ok(())
    }
}

/// Reads one checkpoint slot: its first block, then the whole frame it announces.
fn read_checkpoint(
    dev: &mut dyn Device,
    regions: &ShardRegions,
    slot: usize,
    owner: Owner,
    limits: &Limits,
) -> Result<LoadedCheckpoint, SlotDefect> {
    let offset = regions.checkpoints[slot];
    let shard = owner.shard;
    let mut head = AlignedBuf::zeroed(BLOCK_BYTES);
    let defect = |defect: SlotDefect| {
        if !matches!(defect, SlotDefect::Empty) {
            tracing::warn!(shard, slot, "checkpoint slot {defect}");
        }
        defect
    };
    execute_one(dev, IoOp::read(offset, head.as_blocks_mut()))
        .map_err(|e| defect(SlotDefect::Unreadable(IoFailure::from(e))))?;
    let len_bytes =
        recovery::checkpoint_frame_len(head.as_blocks(), owner, regions.checkpoint_bytes)
            .map_err(defect)?;
    let mut frame = AlignedBuf::zeroed(len_bytes);
    execute_one(dev, IoOp::read(offset, frame.as_blocks_mut()))
        .map_err(|e| defect(SlotDefect::Unreadable(IoFailure::from(e))))?;
    recovery::decode_checkpoint_slot(frame.as_blocks(), owner, limits).map_err(defect)
}
