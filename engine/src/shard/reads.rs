//! Reads: gets and range reads streamed on the device outside rounds (their depth kept by
//! the shard itself for batches), the round's own reads, and the verification of every block
//! read against its checksum before a byte is returned.

use super::{
    BLOCK, PendingRead, QueuedBatch, ReadBuf, ReadTarget, Reply, Request, Shard, StreamedRead,
};
use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::device::IoOp;
use crate::error::{IoFailure, PoisonCause, StoreError};
use crate::types::FragmentId;
use std::sync::Arc;

impl Shard {
    /// Turns a get (`range` None) or a range read into a planned read, or answers at once
    /// when the key is unknown or the range is out of bounds.
    fn plan_read(
        &mut self,
        key: FragmentId,
        range: Option<(u64, u64)>,
        reply: Reply<ReadBuf>,
    ) -> Option<PendingRead> {
        let Some(entry) = self.index.get(&key) else {
            let _ = reply.send(Err(StoreError::NotFound(key)));
            return None;
        };
        let Some((offset, len_bytes)) = range else {
            let len = entry.len_bytes as usize;
            return Some(PendingRead {
                key,
                first_block: 0,
                buf: self.read_pool.take(len),
                start: 0,
                len,
                target: ReadTarget::Reply(reply),
                io_error: None,
            });
        };
        let end = offset.checked_add(len_bytes);
        if end.is_none_or(|end| end > entry.len_bytes) {
            let _ = reply.send(Err(StoreError::OutOfRange {
                key,
                offset,
                len_bytes,
                fragment_bytes: entry.len_bytes,
            }));
            return None;
        }
        let first_block = offset / BLOCK;
        let last_block = (offset + len_bytes).div_ceil(BLOCK).max(first_block + 1);
        let span = ((last_block - first_block) * BLOCK) as usize;
        // Every byte of it is read from the device before it is returned.
        let mut buf = self.read_pool.take(span);
        // A zero-length read at the very end touches no block.
        if first_block >= entry.blocks() {
            buf.set_len(0);
        }
        Some(PendingRead {
            key,
            first_block,
            buf,
            start: (offset - first_block * BLOCK) as usize,
            len: len_bytes as usize,
            target: ReadTarget::Reply(reply),
            io_error: None,
        })
    }

    /// Starts a get or range read without waiting for a round, so reads keep the device's
    /// queue full; hands back any other request. Streamed reads are answered by
    /// [`Shard::reap_reads`], and every one finishes before the next round runs (a round may
    /// free and reuse the extents they read).
    ///
    /// A batch's reads are started by [`Shard::start_batched_reads`] as earlier ones finish,
    /// so the device queue stays at the batch's depth without a round trip to the caller per
    /// read. Each is planned when it starts: a batched read sees the rounds before it, like a
    /// read sent at that moment.
    pub(crate) fn stream_read(&mut self, request: Request) -> Option<Request> {
        match request {
            Request::Get { key, reply } => self.start_read(key, None, reply),
            Request::Read {
                key,
                offset,
                len_bytes,
                reply,
            } => self.start_read(key, Some((offset, len_bytes)), reply),
            Request::ReadBatch { reads, depth } => {
                if !reads.is_empty() {
                    self.batches.push_back(QueuedBatch {
                        reads: reads.into(),
                        depth: depth.max(1),
                    });
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Starts queued batched reads while fewer than the oldest batch's depth are streaming.
    /// Afterwards no batch waits unless a read is streaming (a read that fails at once frees
    /// its place at once), so a shard with batches always has a completion to wait for.
    pub(crate) fn start_batched_reads(&mut self) {
        while let Some(front) = self.batches.front_mut() {
            if self.streaming.len() >= front.depth {
                break;
            }
            match front.reads.pop_front() {
                Some((key, offset, len_bytes, reply)) => {
                    self.start_read(key, Some((offset, len_bytes)), reply)
                }
                None => {
                    self.batches.pop_front();
                }
            }
        }
        debug_assert!(self.batches.is_empty() || !self.streaming.is_empty());
    }

    /// Plans a get (`range` None) or range read and starts it on the device.
    fn start_read(&mut self, key: FragmentId, range: Option<(u64, u64)>, reply: Reply<ReadBuf>) {
        let Some(read) = self.plan_read(key, range, reply) else {
            return;
        };
        if read.buf.is_empty() {
            self.finish_reads([read]);
            return;
        }
        let entry = self
            .index
            .get(&read.key)
            .expect("a planned read's fragment is indexed");
        let offset = self.data_offset(entry.extent_block + read.first_block);
        let PendingRead {
            key,
            first_block,
            buf,
            start,
            len,
            target,
            ..
        } = read;
        let tag = self.next_stream_tag;
        self.next_stream_tag += 1;
        self.dev.start_read(tag, offset, buf);
        self.streaming.insert(
            tag,
            StreamedRead {
                key,
                first_block,
                start,
                len,
                target,
            },
        );
    }

    /// Answers the streamed reads that have finished; with `wait`, waits for at least one.
    /// Batched reads take the places of finished ones on the device before any answer is
    /// sent: waking a caller can cost this thread its core for a while.
    pub(crate) fn reap_reads(&mut self, wait: bool) {
        self.reap(wait, true);
    }

    fn reap(&mut self, wait: bool, refill: bool) {
        let mut done = std::mem::take(&mut self.reaped);
        self.dev.reap_reads(wait, &mut done);
        let mut finished = std::mem::take(&mut self.reaped_reads);
        for d in done.drain(..) {
            let s = self
                .streaming
                .remove(&d.tag)
                .expect("a reaped read was started");
            finished.push(PendingRead {
                key: s.key,
                first_block: s.first_block,
                buf: d.buf,
                start: s.start,
                len: s.len,
                target: s.target,
                io_error: d.result.err().map(|e| e.to_string()),
            });
        }
        self.reaped = done;
        if refill && !self.batches.is_empty() {
            self.start_batched_reads();
        }
        self.finish_reads(finished.drain(..));
        self.reaped_reads = finished;
    }

    /// Gives written put buffers back to `pool`, and takes read buffers from `read_pool`, from
    /// now on.
    pub(crate) fn recycle_into(&mut self, pool: Arc<BufPool>, read_pool: Arc<BufPool>) {
        self.pool = pool;
        self.read_pool = read_pool;
    }

    /// Streamed reads on the device or batched reads waiting to start.
    pub(crate) fn reads_in_flight(&self) -> bool {
        !self.streaming.is_empty() || !self.batches.is_empty()
    }

    /// Waits for every streamed read and answers it. Batched reads not yet started stay
    /// queued (they are planned when they start).
    pub(crate) fn finish_streamed_reads(&mut self) {
        while !self.streaming.is_empty() {
            self.reap(true, false);
        }
    }

    /// Step 2: all data writes and reads of the round in one device batch.
    pub(super) fn execute_data(
        &mut self,
        writes: &mut [(u64, AlignedBuf)],
        reads: &mut [PendingRead],
    ) {
        if writes.is_empty() && reads.is_empty() {
            return;
        }
        let mut read_offsets = Vec::with_capacity(reads.len());
        for read in reads.iter() {
            let entry = self
                .index
                .get(&read.key)
                .expect("a planned read's fragment is indexed");
            read_offsets.push(self.data_offset(entry.extent_block + read.first_block));
        }
        let mut ops: Vec<IoOp<'_>> = Vec::with_capacity(writes.len() + reads.len());
        for (offset, data) in writes.iter() {
            ops.push(IoOp::write(*offset, data.as_blocks()));
        }
        let mut read_slots = Vec::new();
        for (read, offset) in reads.iter_mut().zip(read_offsets) {
            if read.buf.is_empty() {
                read_slots.push(None);
                continue;
            }
            read_slots.push(Some(ops.len()));
            ops.push(IoOp::read(offset, read.buf.as_blocks_mut()));
        }
        self.dev.execute(&mut ops);
        let mut write_failure = None;
        for (i, op) in ops.iter_mut().enumerate().take(writes.len()) {
            if let Err(e) = op.take_result() {
                write_failure.get_or_insert(PoisonCause::DataWrite {
                    offset: writes[i].0,
                    failure: IoFailure::from(e),
                });
            }
        }
        let results: Vec<Option<std::io::Result<()>>> = read_slots
            .iter()
            .map(|slot| slot.map(|i| ops[i].take_result()))
            .collect();
        drop(ops);
        if let Some(cause) = write_failure {
            self.poison(cause);
        }
        for (read, result) in reads.iter_mut().zip(results) {
            if let Some(Err(e)) = result {
                read.io_error = Some(e.to_string());
            }
        }
    }

    /// Step 3: verify every block read against its checksum, then answer.
    pub(super) fn finish_reads(&mut self, reads: impl IntoIterator<Item = PendingRead>) {
        for read in reads {
            let outcome = if let Some(reason) = read.io_error {
                Err(StoreError::ReadFailed {
                    key: read.key,
                    reason,
                })
            } else {
                let entry = self
                    .index
                    .get(&read.key)
                    .expect("a planned read's fragment is indexed");
                let bad_block = read
                    .buf
                    .as_blocks()
                    .chunks(BLOCK_BYTES)
                    .enumerate()
                    .find(|(i, block)| {
                        crc32c::crc32c(block) != entry.crcs[read.first_block as usize + i]
                    })
                    .map(|(i, _)| read.first_block + i as u64);
                match bad_block {
                    Some(block) => {
                        self.read_verify_failures += 1;
                        tracing::warn!(shard = self.id, key = %read.key, block, "checksum mismatch; bytes withheld");
                        Err(StoreError::Corrupt {
                            key: read.key,
                            block,
                        })
                    }
                    None => Ok(()),
                }
            };
            match read.target {
                ReadTarget::Scrub => {
                    if outcome.is_err() {
                        self.scrub.corrupt.insert(read.key);
                    }
                }
                ReadTarget::Reply(reply) => {
                    let answer = outcome.map(|()| ReadBuf {
                        buf: Some(read.buf),
                        start: read.start,
                        len: read.len,
                        pool: self.read_pool.clone(),
                    });
                    let _ = reply.send(answer);
                }
            }
        }
    }
}
