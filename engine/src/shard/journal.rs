//! The mirrored journal and the alternating checkpoints: a round's records as one batch
//! written to both journal copies and flushed, and the whole index written to the slot not
//! holding the newest checkpoint once half the journal is used (see `engine/DESIGN.md`).

use super::Shard;
use crate::aligned::AlignedBuf;
use crate::device::{IoOp, execute_one};
use crate::error::{IoFailure, PoisonCause};
use crate::record::{self, CHECKPOINT_MAGIC, FrameHeader, JOURNAL_MAGIC, Record};
use crate::wire::Writer;

/// Where the journal stands.
#[derive(Debug)]
pub(super) struct JournalState {
    /// Logical position (bytes, ever increasing) where the next batch goes.
    pub head: u64,
    pub next_seq: u64,
    /// Replay start of the newest checkpoint, and of the one before it. The journal keeps
    /// everything from `older_ckpt_pos` on, so a corrupt newest checkpoint can be skipped.
    pub latest_ckpt_pos: u64,
    pub older_ckpt_pos: u64,
    pub ckpt_seq: u64,
}

impl Shard {
    /// Appends one batch to both journal copies and makes it durable.
    pub(super) fn append(&mut self, records: &[Record]) -> Result<(), PoisonCause> {
        let mut w = Writer::default();
        for r in records {
            r.encode(&mut w);
        }
        let payload = w.into_inner();
        let bytes = record::frame_bytes(payload.len());
        let size = self.regions.journal_bytes;
        assert!(
            bytes <= size / 2,
            "a round's records exceed half the journal"
        );
        let place = |head: u64| {
            let phys = head % size;
            if phys + bytes > size {
                head + (size - phys)
            } else {
                head
            }
        };
        let mut pos = place(self.journal.head);
        for _ in 0..2 {
            if pos + bytes - self.journal.older_ckpt_pos <= size {
                break;
            }
            self.checkpoint()?;
            pos = place(self.journal.head);
        }
        assert!(
            pos + bytes - self.journal.older_ckpt_pos <= size,
            "journal space after checkpoints"
        );
        let header = FrameHeader {
            shard: self.id,
            count: records.len() as u32,
            seq: self.journal.next_seq,
            pos,
            next_seq: 0,
            payload_len: payload.len() as u64,
        };
        let frame = AlignedBuf::copy_from(&record::encode_frame(
            JOURNAL_MAGIC,
            self.store_id,
            &header,
            &payload,
        ));
        let phys = pos % size;
        let mut ops = [
            IoOp::write(self.regions.journal_a + phys, frame.as_blocks()),
            IoOp::write(self.regions.journal_b + phys, frame.as_blocks()),
        ];
        self.dev.execute(&mut ops);
        for op in &mut ops {
            op.take_result()
                .map_err(|e| PoisonCause::JournalWrite(IoFailure::from(e)))?;
        }
        execute_one(self.dev.as_mut(), IoOp::flush())
            .map_err(|e| PoisonCause::JournalFlush(IoFailure::from(e)))?;
        self.journal.head = pos + bytes;
        self.journal.next_seq += 1;
        Ok(())
    }

    /// Writes the whole index to the checkpoint slot not holding the newest checkpoint.
    pub(super) fn checkpoint(&mut self) -> Result<(), PoisonCause> {
        let (payload, count) = record::encode_checkpoint(
            (self.scrub.cursor, self.scrub.pass),
            self.index.iter(),
            self.index.footprint_bytes(),
        );
        let bytes = record::frame_bytes(payload.len());
        if bytes > self.regions.checkpoint_bytes {
            return Err(PoisonCause::CheckpointTooLarge {
                len_bytes: bytes,
                slot_bytes: self.regions.checkpoint_bytes,
            });
        }
        let seq = self.journal.ckpt_seq + 1;
        let header = FrameHeader {
            shard: self.id,
            count,
            seq,
            pos: self.journal.head,
            next_seq: self.journal.next_seq,
            payload_len: payload.len() as u64,
        };
        let frame = AlignedBuf::copy_from(&record::encode_frame(
            CHECKPOINT_MAGIC,
            self.store_id,
            &header,
            &payload,
        ));
        let offset = self.regions.checkpoints[(seq % 2) as usize];
        execute_one(self.dev.as_mut(), IoOp::write(offset, frame.as_blocks()))
            .map_err(|e| PoisonCause::CheckpointWrite(IoFailure::from(e)))?;
        execute_one(self.dev.as_mut(), IoOp::flush())
            .map_err(|e| PoisonCause::CheckpointFlush(IoFailure::from(e)))?;
        self.journal.older_ckpt_pos = self.journal.latest_ckpt_pos;
        self.journal.latest_ckpt_pos = self.journal.head;
        self.journal.ckpt_seq = seq;
        Ok(())
    }
}
