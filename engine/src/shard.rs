// Long file: to be split along its seams (issue 26: protocol, index, reads, journal, recovery,
// scrub).
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
//! Order argument: a record is written only after its data is durable, and acknowledged only
//! after the record is durable; an extent is reused only after the record freeing it is
//! durable. So after any crash, every acknowledged fragment is in the index with intact data,
//! and the index never points at bytes that were not fully written.

use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::alloc::Allocator;
use crate::device::{Device, IoOp, ReadDone, execute_one};
use crate::error::StoreError;
use crate::layout::ShardRegions;
use crate::record::{
    self, CHECKPOINT_MAGIC, CURSOR_BYTES, Entry, FRAME_HEADER_BYTES, FrameHeader, JOURNAL_MAGIC,
    Limits, Record,
};
use crate::types::{Class, FragmentInfo, Key, PutOutcome, Stats};
use crate::wire::{Reader, Writer};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    pub corrupt: Vec<Key>,
}

/// One range read of a [`Request::ReadBatch`]: key, offset, length and where its answer goes.
pub(crate) type BatchedRead = (Key, u64, u64, Reply<ReadBuf>);

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
        key: Key,
        class: Class,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<PutOutcome>,
    },
    Replace {
        idle_key: Key,
        key: Key,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<()>,
    },
    Get {
        key: Key,
        reply: Reply<ReadBuf>,
    },
    Read {
        key: Key,
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
        key: Key,
        reply: Reply<bool>,
    },
    Contains {
        key: Key,
        reply: Reply<Option<FragmentInfo>>,
    },
    SetMeta {
        key: Key,
        meta: Box<[u8]>,
        reply: Reply<()>,
    },
    GetMeta {
        key: Key,
        reply: Reply<Vec<u8>>,
    },
    List {
        after: Option<Key>,
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
    fn mutated_keys(&self) -> [Option<Key>; 2] {
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

#[derive(Debug, Default)]
struct Counters {
    active_count: u64,
    idle_count: u64,
    active_blocks: u64,
    idle_blocks: u64,
    active_logical_bytes: u64,
    idle_logical_bytes: u64,
}

impl Counters {
    fn add(&mut self, entry: &Entry, sign: i8) {
        let (count, blocks, logical) = match entry.class {
            Class::Active => (
                &mut self.active_count,
                &mut self.active_blocks,
                &mut self.active_logical_bytes,
            ),
            Class::Idle => (
                &mut self.idle_count,
                &mut self.idle_blocks,
                &mut self.idle_logical_bytes,
            ),
        };
        if sign > 0 {
            *count += 1;
            *blocks += entry.blocks();
            *logical += entry.len_bytes;
        } else {
            *count -= 1;
            *blocks -= entry.blocks();
            *logical -= entry.len_bytes;
        }
    }
}

#[derive(Debug)]
struct JournalState {
    /// Logical position (bytes, ever increasing) where the next batch goes.
    head: u64,
    next_seq: u64,
    /// Replay start of the newest checkpoint, and of the one before it. The journal keeps
    /// everything from `older_ckpt_pos` on, so a corrupt newest checkpoint can be skipped.
    latest_ckpt_pos: u64,
    older_ckpt_pos: u64,
    ckpt_seq: u64,
}

#[derive(Debug, Default)]
struct ScrubState {
    cursor: Option<Key>,
    pass: u64,
    corrupt: BTreeSet<Key>,
}

/// One shard's state. See the module docs for how a round runs.
#[derive(Debug)]
pub(crate) struct Shard {
    id: u32,
    dev: Box<dyn Device>,
    regions: ShardRegions,
    store_id: [u8; 16],
    index: BTreeMap<Key, Entry>,
    alloc: Allocator,
    counters: Counters,
    /// Checkpoint payload bytes the index needs (entries only).
    footprint_bytes: u64,
    journal: JournalState,
    scrub: ScrubState,
    read_verify_failures: u64,
    /// Set after a failed write or flush; the shard then refuses all writes.
    poisoned: Option<String>,
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
    key: Key,
    first_block: u64,
    start: usize,
    len: usize,
    target: ReadTarget,
}

#[derive(Debug)]
struct PendingRead {
    key: Key,
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

    /// Opens a shard: newest valid checkpoint, then the journal after it.
    pub(crate) fn open(
        id: u32,
        mut dev: Box<dyn Device>,
        regions: ShardRegions,
        store_id: [u8; 16],
        max_object_bytes: u64,
        max_meta_bytes: u32,
    ) -> Result<Shard, String> {
        let limits = Limits {
            max_object_bytes,
            max_meta_bytes,
            data_blocks: regions.data_bytes / BLOCK,
        };
        let mut checkpoints = Vec::new();
        for slot in 0..2 {
            if let Some(cp) = read_checkpoint(dev.as_mut(), &regions, slot, store_id, id, &limits)?
            {
                checkpoints.push(cp);
            }
        }
        checkpoints.sort_by_key(|cp| std::cmp::Reverse(cp.header.seq));
        if checkpoints.is_empty() {
            return Err("no valid checkpoint in either slot".into());
        }
        let journal_len = regions.journal_bytes as usize;
        let mut journal_a = AlignedBuf::zeroed(journal_len);
        let mut journal_b = AlignedBuf::zeroed(journal_len);
        {
            let mut ops = [
                IoOp::read(regions.journal_a, journal_a.as_blocks_mut()),
                IoOp::read(regions.journal_b, journal_b.as_blocks_mut()),
            ];
            dev.execute(&mut ops);
            let a = ops[0].take_result();
            let b = ops[1].take_result();
            match (a, b) {
                (Err(e), Err(_)) => return Err(format!("cannot read either journal copy: {e}")),
                (Err(e), Ok(())) => {
                    tracing::warn!(shard = id, "journal copy A unreadable ({e}); using copy B");
                    journal_a.fill(0);
                }
                (Ok(()), Err(e)) => {
                    tracing::warn!(shard = id, "journal copy B unreadable ({e}); using copy A");
                    journal_b.fill(0);
                }
                (Ok(()), Ok(())) => {}
            }
        }
        let mut failures = Vec::new();
        let newest_seq = checkpoints[0].header.seq;
        let slots_valid = checkpoints.len();
        for (i, cp) in checkpoints.iter().enumerate() {
            match replay(id, store_id, &limits, &regions, cp, &journal_a, &journal_b) {
                Ok(replayed) => {
                    let older_ckpt_pos = if i == 0 && slots_valid == 2 {
                        checkpoints[1].header.pos.min(cp.header.pos)
                    } else {
                        cp.header.pos
                    };
                    let degraded = i > 0 || slots_valid < 2 || !replayed.repairs.is_empty();
                    if i > 0 {
                        tracing::warn!(
                            shard = id,
                            "newest checkpoint (seq {newest_seq}) unusable ({}); recovered from seq {}",
                            failures.join("; "),
                            cp.header.seq
                        );
                    }
                    let mut shard = Shard::from_replay(
                        id,
                        dev,
                        regions,
                        store_id,
                        limits,
                        replayed.index,
                        replayed.cursor,
                        JournalState {
                            head: replayed.head,
                            next_seq: replayed.next_seq,
                            latest_ckpt_pos: cp.header.pos,
                            older_ckpt_pos,
                            ckpt_seq: cp.header.seq,
                        },
                        max_object_bytes,
                    )?;
                    shard.repair_journal(&replayed.repairs)?;
                    if degraded {
                        // Restore two good checkpoints now rather than at the next threshold.
                        shard
                            .checkpoint()
                            .map_err(|e| format!("checkpoint after recovery: {e}"))?;
                    }
                    return Ok(shard);
                }
                Err(reason) => failures.push(format!("seq {}: {reason}", cp.header.seq)),
            }
        }
        Err(failures.join("; "))
    }

    #[allow(clippy::too_many_arguments)]
    fn from_replay(
        id: u32,
        dev: Box<dyn Device>,
        regions: ShardRegions,
        store_id: [u8; 16],
        limits: Limits,
        index: BTreeMap<Key, Entry>,
        cursor: (Option<Key>, u64),
        journal: JournalState,
        max_object_bytes: u64,
    ) -> Result<Shard, String> {
        let used = index
            .values()
            .map(|e| (e.extent_block, e.blocks()))
            .collect();
        let alloc = Allocator::from_used(limits.data_blocks, used)
            .ok_or("index holds overlapping or out-of-region extents")?;
        let mut counters = Counters::default();
        let mut footprint_bytes = 0;
        for entry in index.values() {
            counters.add(entry, 1);
            footprint_bytes += entry.footprint_bytes();
        }
        Ok(Shard {
            id,
            dev,
            regions,
            store_id,
            index,
            alloc,
            counters,
            footprint_bytes,
            journal,
            scrub: ScrubState {
                cursor: cursor.0,
                pass: cursor.1,
                corrupt: BTreeSet::new(),
            },
            read_verify_failures: 0,
            poisoned: None,
            reserve_blocks: max_object_bytes.div_ceil(BLOCK),
            streaming: HashMap::new(),
            next_stream_tag: 0,
            batches: std::collections::VecDeque::new(),
            reaped: Vec::new(),
            reaped_reads: Vec::new(),
            pool: Arc::new(BufPool::new(0)),
            read_pool: Arc::new(BufPool::new(0)),
        })
    }

    fn repair_journal(&mut self, repairs: &[(u64, Vec<u8>, bool)]) -> Result<(), String> {
        for (phys, frame, to_a) in repairs {
            let base = if *to_a {
                self.regions.journal_a
            } else {
                self.regions.journal_b
            };
            let buf = AlignedBuf::copy_from(frame);
            execute_one(self.dev.as_mut(), IoOp::write(base + phys, buf.as_blocks()))
                .map_err(|e| format!("rewriting a damaged journal copy: {e}"))?;
        }
        if !repairs.is_empty() {
            tracing::warn!(
                shard = self.id,
                "repaired {} damaged journal batch copies",
                repairs.len()
            );
            execute_one(self.dev.as_mut(), IoOp::flush())
                .map_err(|e| format!("flushing journal repairs: {e}"))?;
        }
        Ok(())
    }

    fn data_offset(&self, block: u64) -> u64 {
        let offset = self.regions.data_start + block * BLOCK;
        assert!(offset < self.regions.data_start + self.regions.data_bytes || block == 0);
        offset
    }

    fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            tracing::error!(shard = self.id, "refusing further writes: {reason}");
            self.poisoned = Some(reason);
        }
    }

    fn poisoned_error(&self) -> Option<StoreError> {
        self.poisoned.as_ref().map(|reason| StoreError::Poisoned {
            shard: self.id,
            reason: reason.clone(),
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
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

    fn info(key: &Key, entry: &Entry) -> FragmentInfo {
        FragmentInfo {
            key: *key,
            class: entry.class,
            len_bytes: entry.len_bytes,
            meta_len_bytes: entry.meta.len() as u32,
        }
    }

    /// Serves one batch of requests (see the module docs). Returns the requests deferred to
    /// the next round because an earlier request in this batch mutates the same key.
    pub(crate) fn run_round(&mut self, batch: Vec<Request>) -> Vec<Request> {
        let mut deferred = Vec::new();
        let mut touched: HashSet<Key> = HashSet::new();
        let mut writes: Vec<(u64, AlignedBuf)> = Vec::new();
        let mut write_bytes = 0u64;
        let mut reads: Vec<PendingRead> = Vec::new();
        let mut mutations: Vec<Mutation> = Vec::new();
        let mut pending_footprint = self.footprint_bytes;
        let mut scrub_replies: Vec<Reply<ShardScrub>> = Vec::new();
        let mut scrub_advanced = false;
        let mut checkpoint_replies: Vec<Reply<()>> = Vec::new();
        // Answered after the commit: a put placed in this round has its blocks allocated
        // and not yet counted until then.
        let mut stats_replies: Vec<Reply<Stats>> = Vec::new();
        let mut reads_after: Vec<Request> = Vec::new();
        // A round's records go to the journal as one frame, which must fit in half of it
        // (`append`); the rest of the batch waits for the next round.
        let record_bytes_max = (self.regions.journal_bytes / 2)
            .saturating_sub((record::FRAME_HEADER_BYTES + BLOCK_BYTES) as u64);
        let mut record_bytes = 0u64;

        for request in batch {
            let keys = request.mutated_keys();
            if keys.iter().flatten().any(|k| touched.contains(k)) {
                deferred.push(request);
                continue;
            }
            let request_record_bytes = request.record_bytes_bound();
            if request_record_bytes > 0 && record_bytes + request_record_bytes > record_bytes_max {
                if record_bytes > 0 {
                    deferred.push(request);
                    continue;
                }
                // Alone over the bound: no round could take it. Refused, the shard lives on.
                request.refuse(StoreError::RecordTooLarge {
                    len_bytes: request_record_bytes,
                    max_bytes: record_bytes_max,
                });
                continue;
            }
            record_bytes += request_record_bytes;
            let write_len = match &request {
                Request::Put { data, .. } | Request::Replace { data, .. } => {
                    data.as_blocks().len() as u64
                }
                _ => 0,
            };
            if write_len > 0 && write_bytes > 0 && write_bytes + write_len > ROUND_WRITE_BYTES_MAX {
                deferred.push(request);
                continue;
            }
            match request {
                Request::Put {
                    key,
                    class,
                    data,
                    crcs,
                    reply,
                } => {
                    if let Some(existing) = self.index.get(&key) {
                        let _ = reply.send(Ok(PutOutcome::AlreadyPresent(existing.class)));
                        continue;
                    }
                    if let Some(e) = self.poisoned_error() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let entry = match self.place(class, &data, crcs, &mut pending_footprint) {
                        Ok(entry) => entry,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    };
                    touched.insert(key);
                    write_bytes += write_len;
                    if entry.len_bytes > 0 {
                        writes.push((self.data_offset(entry.extent_block), data));
                    }
                    mutations.push(Mutation {
                        record: Record::Put { key, entry },
                        reply: MutationReply::Put(reply),
                    });
                }
                Request::Replace {
                    idle_key,
                    key,
                    data,
                    crcs,
                    reply,
                } => {
                    match self.index.get(&idle_key) {
                        None => {
                            let _ = reply.send(Err(StoreError::NotFound(idle_key)));
                            continue;
                        }
                        Some(e) if e.class != Class::Idle => {
                            let _ = reply.send(Err(StoreError::NotIdle(idle_key)));
                            continue;
                        }
                        Some(_) => {}
                    }
                    if self.index.contains_key(&key) {
                        // The active fragment is already stored; replacing adds nothing.
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    if let Some(e) = self.poisoned_error() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let entry = match self.place(Class::Active, &data, crcs, &mut pending_footprint)
                    {
                        Ok(entry) => entry,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    };
                    touched.insert(key);
                    touched.insert(idle_key);
                    write_bytes += write_len;
                    if entry.len_bytes > 0 {
                        writes.push((self.data_offset(entry.extent_block), data));
                    }
                    mutations.push(Mutation {
                        record: Record::Replace {
                            idle_key,
                            key,
                            entry,
                        },
                        reply: MutationReply::Replace(reply),
                    });
                }
                Request::Delete { key, reply } => {
                    if !self.index.contains_key(&key) {
                        let _ = reply.send(Ok(false));
                        continue;
                    }
                    if let Some(e) = self.poisoned_error() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    touched.insert(key);
                    mutations.push(Mutation {
                        record: Record::Delete { key },
                        reply: MutationReply::Delete(reply),
                    });
                }
                Request::SetMeta { key, meta, reply } => {
                    let Some(entry) = self.index.get(&key) else {
                        let _ = reply.send(Err(StoreError::NotFound(key)));
                        continue;
                    };
                    if let Some(e) = self.poisoned_error() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let grow = (meta.len() as u64).saturating_sub(entry.meta.len() as u64);
                    let capacity = checkpoint_capacity(&self.regions);
                    if pending_footprint + grow > capacity {
                        let _ = reply.send(Err(StoreError::MetadataFull {
                            shard: self.id,
                            used_bytes: pending_footprint,
                            capacity_bytes: capacity,
                        }));
                        continue;
                    }
                    pending_footprint += grow;
                    touched.insert(key);
                    mutations.push(Mutation {
                        record: Record::SetMeta { key, meta },
                        reply: MutationReply::SetMeta(reply),
                    });
                }
                // Gets and reads normally bypass rounds (see `stream_read`); one that reaches a
                // round starts streaming once the round is done with the device.
                read @ (Request::Get { .. } | Request::Read { .. } | Request::ReadBatch { .. }) => {
                    reads_after.push(read)
                }
                Request::Contains { key, reply } => {
                    let _ = reply.send(Ok(self.index.get(&key).map(|e| Self::info(&key, e))));
                }
                Request::GetMeta { key, reply } => {
                    let result = self
                        .index
                        .get(&key)
                        .map(|e| e.meta.to_vec())
                        .ok_or(StoreError::NotFound(key));
                    let _ = reply.send(result);
                }
                Request::List {
                    after,
                    limit,
                    reply,
                } => {
                    let range = match after {
                        Some(k) => self
                            .index
                            .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
                        None => self.index.range(..),
                    };
                    let page = range.take(limit).map(|(k, e)| Self::info(k, e)).collect();
                    let _ = reply.send(Ok(page));
                }
                Request::Stats { reply } => stats_replies.push(reply),
                Request::Scrub { max_bytes, reply } => {
                    // A zero budget only reports where the scrub stands.
                    if max_bytes > 0 {
                        self.plan_scrub(max_bytes, &mut reads);
                        scrub_advanced = true;
                    }
                    scrub_replies.push(reply);
                }
                Request::Checkpoint { reply } => checkpoint_replies.push(reply),
            }
        }

        self.execute_data(&mut writes, &mut reads);
        for (_, buf) in writes {
            self.pool.give(buf);
        }
        self.finish_reads(reads);
        self.commit(mutations, scrub_advanced);

        for reply in stats_replies {
            let _ = reply.send(Ok(self.stats()));
        }
        for reply in scrub_replies {
            let _ = reply.send(Ok(self.scrub_report()));
        }
        for reply in checkpoint_replies {
            let result = match self.poisoned_error() {
                Some(e) => Err(e),
                None => self.checkpoint().map_err(|reason| {
                    self.poison(reason.clone());
                    StoreError::Poisoned {
                        shard: self.id,
                        reason,
                    }
                }),
            };
            let _ = reply.send(result);
        }
        for read in reads_after {
            let not_a_read = self.stream_read(read);
            debug_assert!(not_a_read.is_none());
        }
        deferred
    }

    /// Turns a get (`range` None) or a range read into a planned read, or answers at once
    /// when the key is unknown or the range is out of bounds.
    fn plan_read(
        &mut self,
        key: Key,
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
    fn start_read(&mut self, key: Key, range: Option<(u64, u64)>, reply: Reply<ReadBuf>) {
        let Some(read) = self.plan_read(key, range, reply) else {
            return;
        };
        if read.buf.is_empty() {
            self.finish_reads([read]);
            return;
        }
        let entry = &self.index[&read.key];
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

    /// Allocates an extent and builds the index entry for new data, or says why not.
    fn place(
        &mut self,
        class: Class,
        data: &AlignedBuf,
        crcs: Box<[u32]>,
        pending_footprint: &mut u64,
    ) -> Result<Entry, StoreError> {
        let len_bytes = data.len() as u64;
        let blocks = record::blocks_for(len_bytes);
        assert_eq!(crcs.len() as u64, blocks, "one checksum per block");
        let free = self.alloc.free_blocks();
        let reserve = if class == Class::Idle {
            self.reserve_blocks
        } else {
            0
        };
        let largest = self.alloc.largest_extent_blocks();
        let shard = self.id;
        let no_space = || StoreError::NoSpace {
            shard,
            needed_bytes: (blocks + reserve) * BLOCK,
            free_bytes: free * BLOCK,
            largest_extent_bytes: largest * BLOCK,
        };
        if free < blocks + reserve {
            return Err(no_space());
        }
        // A new entry has no metadata yet.
        let footprint = record::footprint_bytes(blocks, 0);
        let capacity = checkpoint_capacity(&self.regions);
        if *pending_footprint + footprint > capacity {
            return Err(StoreError::MetadataFull {
                shard: self.id,
                used_bytes: *pending_footprint,
                capacity_bytes: capacity,
            });
        }
        let Some(extent_block) = self.alloc.alloc(blocks) else {
            return Err(no_space());
        };
        *pending_footprint += footprint;
        Ok(Entry {
            class,
            len_bytes,
            extent_block,
            crcs,
            meta: Box::new([]),
        })
    }

    fn plan_scrub(&mut self, max_bytes: u64, reads: &mut Vec<PendingRead>) {
        let start = match self.scrub.cursor {
            Some(k) => self
                .index
                .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => self.index.range(..),
        };
        let mut planned = 0u64;
        let mut last = None;
        let mut reached_end = true;
        for (key, entry) in start {
            if planned > 0 && planned + entry.len_bytes > max_bytes {
                reached_end = false;
                break;
            }
            planned += entry.len_bytes.max(1);
            last = Some(*key);
            if entry.len_bytes > 0 {
                reads.push(PendingRead {
                    key: *key,
                    first_block: 0,
                    buf: AlignedBuf::zeroed(entry.len_bytes as usize),
                    start: 0,
                    len: 0,
                    target: ReadTarget::Scrub,
                    io_error: None,
                });
            }
        }
        if reached_end {
            self.scrub.pass += 1;
            self.scrub.cursor = None;
        } else {
            self.scrub.cursor = last;
        }
    }

    fn scrub_report(&self) -> ShardScrub {
        let stored_bytes = self.counters.active_logical_bytes + self.counters.idle_logical_bytes;
        let pass_verified_bytes = match self.scrub.cursor {
            Some(k) => self.index.range(..=k).map(|(_, e)| e.len_bytes).sum(),
            None => 0,
        };
        ShardScrub {
            passes_completed: self.scrub.pass,
            pass_verified_bytes,
            stored_bytes,
            corrupt: self.scrub.corrupt.iter().copied().collect(),
        }
    }

    /// Step 2: all data writes and reads of the round in one device batch.
    fn execute_data(&mut self, writes: &mut [(u64, AlignedBuf)], reads: &mut [PendingRead]) {
        if writes.is_empty() && reads.is_empty() {
            return;
        }
        let mut read_offsets = Vec::with_capacity(reads.len());
        for read in reads.iter() {
            let entry = &self.index[&read.key];
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
                write_failure
                    .get_or_insert(format!("data write at byte {} failed: {e}", writes[i].0));
            }
        }
        let results: Vec<Option<std::io::Result<()>>> = read_slots
            .iter()
            .map(|slot| slot.map(|i| ops[i].take_result()))
            .collect();
        drop(ops);
        if let Some(reason) = write_failure {
            self.poison(reason);
        }
        for (read, result) in reads.iter_mut().zip(results) {
            if let Some(Err(e)) = result {
                read.io_error = Some(e.to_string());
            }
        }
    }

    /// Step 3: verify every block read against its checksum, then answer.
    fn finish_reads(&mut self, reads: impl IntoIterator<Item = PendingRead>) {
        for read in reads {
            let outcome = if let Some(reason) = read.io_error {
                Err(StoreError::ReadFailed {
                    key: read.key,
                    reason,
                })
            } else {
                let entry = &self.index[&read.key];
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

    /// Step 4: group commit of the round's records, then acknowledgement.
    fn commit(&mut self, mutations: Vec<Mutation>, scrub_advanced: bool) {
        if mutations.is_empty() && !scrub_advanced {
            return;
        }
        if self.poisoned.is_some() {
            self.fail_all(mutations);
            return;
        }
        let has_data = mutations.iter().any(|m| {
            matches!(&m.record, Record::Put { entry, .. } | Record::Replace { entry, .. } if entry.len_bytes > 0)
        });
        if has_data && let Err(e) = execute_one(self.dev.as_mut(), IoOp::flush()) {
            self.poison(format!("flush of fragment data failed: {e}"));
            self.fail_all(mutations);
            return;
        }
        let mut records: Vec<Record> = mutations.iter().map(|m| m.record.clone()).collect();
        if scrub_advanced {
            records.push(Record::ScrubCursor {
                after: self.scrub.cursor,
                pass: self.scrub.pass,
            });
        }
        if let Err(reason) = self.append(&records) {
            self.poison(reason);
            self.fail_all(mutations);
            return;
        }
        for m in mutations {
            self.apply(&m.record, true);
            m.succeed();
        }
        let since_checkpoint = self.journal.head - self.journal.latest_ckpt_pos;
        if since_checkpoint > self.regions.journal_bytes / 2
            && let Err(reason) = self.checkpoint()
        {
            self.poison(reason);
        }
    }

    /// Fails every mutation of a round that could not commit, returning the extents the
    /// round allocated (the shard is poisoned, so nothing reuses them before a reopen).
    fn fail_all(&mut self, mutations: Vec<Mutation>) {
        let error = self
            .poisoned_error()
            .expect("a round fails only on a poisoned shard");
        for m in mutations {
            if let Record::Put { entry, .. } | Record::Replace { entry, .. } = &m.record {
                self.alloc.release(entry.extent_block, entry.blocks());
            }
            m.fail(error.clone());
        }
    }

    /// Applies a durable record to the index. `live` releases freed extents (at replay the
    /// allocator is rebuilt from the final index instead).
    fn apply(&mut self, record: &Record, live: bool) {
        match record {
            Record::Put { key, entry } => self.insert(*key, entry.clone()),
            Record::Delete { key } => self.remove(key, live),
            Record::SetMeta { key, meta } => {
                if let Some(entry) = self.index.get_mut(key) {
                    self.footprint_bytes =
                        self.footprint_bytes - entry.meta.len() as u64 + meta.len() as u64;
                    entry.meta = meta.clone();
                }
            }
            Record::Replace {
                idle_key,
                key,
                entry,
            } => {
                self.remove(idle_key, live);
                self.insert(*key, entry.clone());
            }
            Record::ScrubCursor { .. } => {}
        }
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        self.counters.add(&entry, 1);
        self.footprint_bytes += entry.footprint_bytes();
        if let Some(old) = self.index.insert(key, entry) {
            unreachable!(
                "put of present key {key} reached the index (was {:?})",
                old.class
            );
        }
    }

    fn remove(&mut self, key: &Key, live: bool) {
        if let Some(entry) = self.index.remove(key) {
            self.counters.add(&entry, -1);
            self.footprint_bytes -= entry.footprint_bytes();
            if live {
                self.alloc.release(entry.extent_block, entry.blocks());
            }
            self.scrub.corrupt.remove(key);
        }
    }

    /// Appends one batch to both journal copies and makes it durable.
    fn append(&mut self, records: &[Record]) -> Result<(), String> {
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
                .map_err(|e| format!("journal write failed: {e}"))?;
        }
        execute_one(self.dev.as_mut(), IoOp::flush())
            .map_err(|e| format!("journal flush failed: {e}"))?;
        self.journal.head = pos + bytes;
        self.journal.next_seq += 1;
        Ok(())
    }

    /// Writes the whole index to the checkpoint slot not holding the newest checkpoint.
    fn checkpoint(&mut self) -> Result<(), String> {
        let (payload, count) = record::encode_checkpoint(
            (self.scrub.cursor, self.scrub.pass),
            self.index.iter(),
            self.footprint_bytes,
        );
        let bytes = record::frame_bytes(payload.len());
        if bytes > self.regions.checkpoint_bytes {
            return Err(format!(
                "checkpoint of {bytes} bytes exceeds its slot of {}",
                self.regions.checkpoint_bytes
            ));
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
            .map_err(|e| format!("checkpoint write failed: {e}"))?;
        execute_one(self.dev.as_mut(), IoOp::flush())
            .map_err(|e| format!("checkpoint flush failed: {e}"))?;
        self.journal.older_ckpt_pos = self.journal.latest_ckpt_pos;
        self.journal.latest_ckpt_pos = self.journal.head;
        self.journal.ckpt_seq = seq;
        Ok(())
    }
}

struct LoadedCheckpoint {
    header: FrameHeader,
    cursor: (Option<Key>, u64),
    entries: Vec<(Key, Entry)>,
}

fn read_checkpoint(
    dev: &mut dyn Device,
    regions: &ShardRegions,
    slot: usize,
    store_id: [u8; 16],
    shard: u32,
    limits: &Limits,
) -> Result<Option<LoadedCheckpoint>, String> {
    let offset = regions.checkpoints[slot];
    let mut head = AlignedBuf::zeroed(BLOCK_BYTES);
    if let Err(e) = execute_one(dev, IoOp::read(offset, head.as_blocks_mut())) {
        tracing::warn!(shard, slot, "checkpoint slot unreadable: {e}");
        return Ok(None);
    }
    let Some(header) = record::decode_frame_header(&head, CHECKPOINT_MAGIC, store_id, shard) else {
        return Ok(None);
    };
    let total = record::frame_bytes(
        usize::try_from(header.payload_len)
            .unwrap_or(usize::MAX)
            .min(1 << 40),
    );
    if total > regions.checkpoint_bytes {
        return Ok(None);
    }
    let mut frame = AlignedBuf::zeroed(total as usize);
    if let Err(e) = execute_one(dev, IoOp::read(offset, frame.as_blocks_mut())) {
        tracing::warn!(shard, slot, "checkpoint slot unreadable: {e}");
        return Ok(None);
    }
    let Some((header, payload)) = record::check_frame(&frame, CHECKPOINT_MAGIC, store_id, shard)
    else {
        tracing::warn!(shard, slot, "checkpoint slot fails its checksum");
        return Ok(None);
    };
    let Some((cursor, entries)) = record::decode_checkpoint(payload, header.count, limits) else {
        tracing::warn!(
            shard,
            slot,
            "checkpoint slot has a valid checksum but undecodable entries"
        );
        return Ok(None);
    };
    Ok(Some(LoadedCheckpoint {
        header,
        cursor,
        entries,
    }))
}

struct Replayed {
    index: BTreeMap<Key, Entry>,
    cursor: (Option<Key>, u64),
    head: u64,
    next_seq: u64,
    /// (physical offset, frame bytes, whether copy A is the damaged one).
    repairs: Vec<(u64, Vec<u8>, bool)>,
}

/// Rebuilds the index from a checkpoint and the journal batches after it.
fn replay(
    shard: u32,
    store_id: [u8; 16],
    limits: &Limits,
    regions: &ShardRegions,
    cp: &LoadedCheckpoint,
    journal_a: &[u8],
    journal_b: &[u8],
) -> Result<Replayed, String> {
    let mut index = BTreeMap::new();
    for (key, entry) in &cp.entries {
        if index.insert(*key, entry.clone()).is_some() {
            return Err(format!("checkpoint lists fragment {key} twice"));
        }
    }
    let size = regions.journal_bytes;
    let mut cursor = cp.cursor;
    let mut pos = cp.header.pos;
    let mut seq = cp.header.next_seq;
    let mut repairs = Vec::new();
    let find = |phys: u64, pos: u64, seq: u64| -> Option<(FrameHeader, Vec<u8>, Option<bool>)> {
        let at = phys as usize;
        let a = record::check_frame(&journal_a[at..], JOURNAL_MAGIC, store_id, shard)
            .filter(|(h, _)| h.seq == seq && h.pos == pos);
        let b = record::check_frame(&journal_b[at..], JOURNAL_MAGIC, store_id, shard)
            .filter(|(h, _)| h.seq == seq && h.pos == pos);
        match (a, b) {
            (Some((h, p)), b) => {
                let damaged = b.is_none().then_some(false);
                Some((h, p.to_vec(), damaged))
            }
            (None, Some((h, p))) => Some((h, p.to_vec(), Some(true))),
            (None, None) => None,
        }
    };
    loop {
        let phys = pos % size;
        let mut found = find(phys, pos, seq);
        if found.is_none() && phys != 0 {
            let lap = pos + (size - phys);
            found = find(0, lap, seq);
        }
        let Some((header, payload, damaged)) = found else {
            break;
        };
        let mut r = Reader::new(&payload);
        let mut records = Vec::with_capacity(header.count as usize);
        for _ in 0..header.count {
            records.push(
                Record::decode(&mut r, limits)
                    .ok_or("journal batch holds an undecodable record")?,
            );
        }
        for record in records {
            match record {
                Record::Put { key, entry } => {
                    index.insert(key, entry);
                }
                Record::Delete { key } => {
                    index.remove(&key);
                }
                Record::SetMeta { key, meta } => {
                    if let Some(e) = index.get_mut(&key) {
                        e.meta = meta;
                    }
                }
                Record::Replace {
                    idle_key,
                    key,
                    entry,
                } => {
                    index.remove(&idle_key);
                    index.insert(key, entry);
                }
                Record::ScrubCursor { after, pass } => cursor = (after, pass),
            }
        }
        let frame_len = record::frame_bytes(payload.len());
        if let Some(damaged_a) = damaged {
            let phys = header.pos % size;
            let source = if damaged_a { journal_b } else { journal_a };
            repairs.push((
                phys,
                source[phys as usize..(phys + frame_len) as usize].to_vec(),
                damaged_a,
            ));
        }
        pos = header.pos + frame_len;
        seq += 1;
        if pos - cp.header.pos > size {
            return Err("journal replay ran past one full lap".into());
        }
    }
    // A valid batch beyond the end means a batch in the middle was lost in both copies:
    // refuse rather than silently drop acknowledged writes.
    for (name, copy) in [("A", journal_a), ("B", journal_b)] {
        for at in (0..size as usize).step_by(BLOCK_BYTES) {
            if let Some((h, _)) = record::check_frame(&copy[at..], JOURNAL_MAGIC, store_id, shard)
                && h.seq >= seq
                && h.pos >= pos
            {
                return Err(format!(
                    "journal batch {seq} is missing in both copies but batch {} follows (copy {name})",
                    h.seq
                ));
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
