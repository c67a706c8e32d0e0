//! One shard: its index, allocator, journal and checkpoints, driven in rounds.
//!
//! A shard owns one region of the device and is run by one thread. The driver hands it a
//! batch of requests; [`Shard::run_round`] serves them in one pass:
//!
//! 1. Answer what the index alone can answer; allocate extents for puts (refusing, before any
//!    write, what does not fit); defer a request whose key an earlier request of this round
//!    mutates.
//! 2. One device batch: every data write and every read, concurrently.
//! 3. Verify reads against their block checksums; corrupt bytes are never returned.
//! 4. Group commit: flush (data durable), append one journal batch holding every record of the
//!    round to both journal copies, flush (records durable), apply the records to the index,
//!    release freed extents, acknowledge.
//!
//! Gets and range reads do not wait for a round: [`Shard::stream_read`] starts them on the
//! device at once and [`Shard::reap_reads`] verifies and answers each as it completes, so the
//! device queue stays full. Before a round runs, every streamed read finishes, because the
//! round may free and reuse the extents they read.
//!
//! The files: this one is the protocol (the requests a shard serves, its state, its answers);
//! `round.rs` serves a batch; `index.rs` is the pure index both the live path and replay apply
//! records to; `reads.rs` streams and verifies reads; `journal.rs` writes batches and
//! checkpoints; `recovery.rs` decides, as pure functions over what was read, how to open; and
//! `open.rs` does that I/O and issues the repairs; `scrub.rs` plans the scrub.
//!
//! Order argument: a record is written only after its data is durable, and acknowledged only
//! after the record is durable; an extent is reused only after the record freeing it is
//! durable. So after any crash, every acknowledged fragment is in the index with intact data,
//! and the index never points at bytes that were not fully written.

mod index;
mod journal;
mod open;
mod reads;
pub(crate) mod recovery;
mod round;
mod scrub;

use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::alloc::Allocator;
use crate::device::{Device, ReadDone};
use crate::error::{PoisonCause, StoreError};
use crate::layout::ShardRegions;
use crate::record::{CURSOR_BYTES, Entry, FRAME_HEADER_BYTES, Record};
use crate::types::{Class, FragmentId, FragmentInfo, PutOutcome, Stats};
use index::Index;
use journal::JournalState;
use scrub::ScrubState;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

const BLOCK: u64 = BLOCK_BYTES as u64;
/// Data bytes written in one round at most (more is deferred to the next round).
const ROUND_WRITE_BYTES_MAX: u64 = 64 << 20;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Bytes read from a fragment: the requested range inside a block-aligned buffer, which goes
/// back to the store's read pool when this is dropped.
#[derive(Debug)]
pub struct ReadBuf {
    /// Always `Some` until dropped or taken apart.
    buf: Option<AlignedBuf>,
    start: usize,
    len: usize,
    pool: Arc<BufPool>,
}

impl ReadBuf {
    /// The underlying aligned buffer and the range of it holding the requested bytes.
    pub fn into_parts(mut self) -> (AlignedBuf, std::ops::Range<usize>) {
        let buf = self.buf.take().expect("a live read buffer");
        (buf, self.start..self.start + self.len)
    }
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let buf = self.buf.as_ref().expect("a live read buffer");
        &buf.as_blocks()[self.start..self.start + self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

/// A shard's scrub position and findings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardScrub {
    pub passes_completed: u64,
    pub pass_verified_bytes: u64,
    pub stored_bytes: u64,
    pub corrupt: Vec<FragmentId>,
}

/// One range read of a [`Request::ReadBatch`]: key, offset, length and where its answer goes.
pub(crate) type BatchedRead = (FragmentId, u64, u64, Reply<ReadBuf>);

/// The reads of a batch not yet started.
#[derive(Debug)]
struct QueuedBatch {
    reads: std::collections::VecDeque<BatchedRead>,
    depth: usize,
}

/// A request to a shard. Each carries the channel its answer goes back on.
#[derive(Debug)]
pub(crate) enum Request {
    Put {
        key: FragmentId,
        class: Class,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<PutOutcome>,
    },
    Replace {
        idle_key: FragmentId,
        key: FragmentId,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<()>,
    },
    Get {
        key: FragmentId,
        reply: Reply<ReadBuf>,
    },
    Read {
        key: FragmentId,
        offset: u64,
        len_bytes: u64,
        reply: Reply<ReadBuf>,
    },
    /// Range reads the shard itself keeps `depth` of in flight (see [`Shard::stream_read`]).
    ReadBatch {
        reads: Vec<BatchedRead>,
        depth: usize,
    },
    Delete {
        key: FragmentId,
        reply: Reply<bool>,
    },
    Contains {
        key: FragmentId,
        reply: Reply<Option<FragmentInfo>>,
    },
    SetMeta {
        key: FragmentId,
        meta: Box<[u8]>,
        reply: Reply<()>,
    },
    GetMeta {
        key: FragmentId,
        reply: Reply<Vec<u8>>,
    },
    List {
        after: Option<FragmentId>,
        limit: usize,
        reply: Reply<Vec<FragmentInfo>>,
    },
    Stats {
        reply: Reply<Stats>,
    },
    Scrub {
        max_bytes: u64,
        reply: Reply<ShardScrub>,
    },
    Checkpoint {
        reply: Reply<()>,
    },
}

impl Request {
    /// The key this request changes, if it changes one.
    fn mutated_keys(&self) -> [Option<FragmentId>; 2] {
        match self {
            Request::Put { key, .. }
            | Request::Delete { key, .. }
            | Request::SetMeta { key, .. } => [Some(*key), None],
            Request::Replace { idle_key, key, .. } => [Some(*idle_key), Some(*key)],
            _ => [None, None],
        }
    }

    /// Answers a mutation with `error` instead of running it.
    fn refuse(self, error: StoreError) {
        match self {
            Request::Put { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Replace { reply, .. } | Request::SetMeta { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Delete { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            _ => unreachable!("only mutations write journal records"),
        }
    }

    /// The data bytes this request writes (whole blocks).
    fn write_bytes(&self) -> u64 {
        match self {
            Request::Put { data, .. } | Request::Replace { data, .. } => {
                data.as_blocks().len() as u64
            }
            _ => 0,
        }
    }

    /// At least the bytes the journal record of this request takes (see `Record::encode`:
    /// tag, keys, an entry's fixed fields, its meta and a CRC per block), so a round can be
    /// cut before its records outgrow the journal.
    fn record_bytes_bound(&self) -> u64 {
        const ENTRY_FIXED: u64 = 1 + 8 + 8 + 4;
        match self {
            Request::Put { crcs, .. } => 1 + 32 + ENTRY_FIXED + 4 * crcs.len() as u64,
            Request::Replace { crcs, .. } => 1 + 64 + ENTRY_FIXED + 4 * crcs.len() as u64,
            Request::Delete { .. } => 1 + 32,
            Request::SetMeta { meta, .. } => 1 + 32 + 4 + meta.len() as u64,
            _ => 0,
        }
    }
}

/// One shard's state. See the module docs for how a round runs.
#[derive(Debug)]
pub(crate) struct Shard {
    id: u32,
    dev: Box<dyn Device>,
    regions: ShardRegions,
    store_id: [u8; 16],
    index: Index,
    alloc: Allocator,
    journal: JournalState,
    /// Damaged journal batch copies recovery found, until `open` rewrites them.
    journal_repairs: Vec<recovery::Repair>,
    scrub: ScrubState,
    read_verify_failures: u64,
    /// Set after a failed write or flush; the shard then refuses all writes.
    poisoned: Option<PoisonCause>,
    /// Blocks idle puts must leave free, so an idle fragment can always be replaced.
    reserve_blocks: u64,
    /// Reads started by [`Shard::stream_read`], by device tag.
    streaming: HashMap<u64, StreamedRead>,
    next_stream_tag: u64,
    /// Batched reads waiting for room under their batch's depth, oldest batch first.
    batches: std::collections::VecDeque<QueuedBatch>,
    /// Reused buffers for reaped reads: as the device hands them back, then ready to answer.
    reaped: Vec<ReadDone>,
    reaped_reads: Vec<PendingRead>,
    /// Where written put buffers go back for reuse (see [`Store::buffer`]).
    ///
    /// [`Store::buffer`]: crate::Store::buffer
    pool: Arc<BufPool>,
    /// Where read buffers come from and go back to (a [`ReadBuf`] returns its own on drop).
    read_pool: Arc<BufPool>,
}

/// What a streamed read needs back when its bytes arrive (the device holds the buffer).
#[derive(Debug)]
struct StreamedRead {
    key: FragmentId,
    first_block: u64,
    start: usize,
    len: usize,
    target: ReadTarget,
}

#[derive(Debug)]
struct PendingRead {
    key: FragmentId,
    first_block: u64,
    buf: AlignedBuf,
    start: usize,
    len: usize,
    target: ReadTarget,
    /// Set when the device failed the read.
    io_error: Option<String>,
}

#[derive(Debug)]
enum ReadTarget {
    Reply(Reply<ReadBuf>),
    Scrub,
}

enum MutationReply {
    Put(Reply<PutOutcome>),
    Replace(Reply<()>),
    Delete(Reply<bool>),
    SetMeta(Reply<()>),
}

struct Mutation {
    record: Record,
    reply: MutationReply,
}

impl Mutation {
    fn fail(self, error: StoreError) {
        match self.reply {
            MutationReply::Put(r) => drop(r.send(Err(error))),
            MutationReply::Replace(r) => drop(r.send(Err(error))),
            MutationReply::Delete(r) => drop(r.send(Err(error))),
            MutationReply::SetMeta(r) => drop(r.send(Err(error))),
        }
    }
    fn succeed(self) {
        match self.reply {
            MutationReply::Put(r) => drop(r.send(Ok(PutOutcome::Stored))),
            MutationReply::Replace(r) => drop(r.send(Ok(()))),
            MutationReply::Delete(r) => drop(r.send(Ok(true))),
            MutationReply::SetMeta(r) => drop(r.send(Ok(()))),
        }
    }
}

/// Checkpoint payload capacity of one slot.
fn checkpoint_capacity(regions: &ShardRegions) -> u64 {
    regions.checkpoint_bytes - FRAME_HEADER_BYTES as u64 - CURSOR_BYTES
}

impl Shard {
    fn data_offset(&self, block: u64) -> u64 {
        let offset = self.regions.data_start + block * BLOCK;
        assert!(offset < self.regions.data_start + self.regions.data_bytes || block == 0);
        offset
    }

    fn poison(&mut self, cause: PoisonCause) {
        if self.poisoned.is_none() {
            tracing::error!(shard = self.id, "refusing further writes: {cause}");
            self.poisoned = Some(cause);
        }
    }

    fn poisoned_error(&self) -> Option<StoreError> {
        self.poisoned.map(|cause| StoreError::Poisoned {
            shard: self.id,
            cause,
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = self.index.counters();
        let total = self.alloc.total_blocks();
        // Durability-path invariant: every block is exactly one of free, active, idle.
        assert_eq!(
            c.active_blocks + c.idle_blocks + self.alloc.free_blocks(),
            total
        );
        Stats {
            total_bytes: total * BLOCK,
            free_bytes: self.alloc.free_blocks() * BLOCK,
            active_bytes: c.active_blocks * BLOCK,
            idle_bytes: c.idle_blocks * BLOCK,
            active_count: c.active_count,
            idle_count: c.idle_count,
            active_logical_bytes: c.active_logical_bytes,
            idle_logical_bytes: c.idle_logical_bytes,
            read_verify_failures: self.read_verify_failures,
            poisoned_shards: u32::from(self.poisoned.is_some()),
        }
    }

    fn info(key: &FragmentId, entry: &Entry) -> FragmentInfo {
        FragmentInfo {
            key: *key,
            class: entry.class,
            len_bytes: entry.len_bytes,
            meta_len_bytes: entry.meta.len() as u32,
        }
    }
}
