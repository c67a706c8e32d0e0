// Long file: to be split (issue 26: options, format, driver, scrub, list).
//! The store: format and open a target, route requests to shard threads, scrub.
//!
//! Each shard runs on its own thread with its own device handle (its own io_uring ring) and
//! receives requests through a bounded queue. Every call returns a [`Pending`] that a blocking
//! caller `.wait()`s and an async caller `.await`s. A full queue is backpressure that never
//! blocks an async runtime: the request then waits inside its `Pending`, which a `.wait()`
//! sends blocking and a poll sends as soon as the shard has taken a request off the queue
//! (the shard wakes the waiting tasks). Two calls are ordered only once the first is sent:
//! await (or wait for) one before making a call that must follow it.

use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool, round_up};
use crate::device::{Bell, Device, IoOp, SimDisk, execute_one, open_target};
use crate::error::{FormatError, OpenError, RecoveryError, StoreError};
use crate::layout::{
    self, FORMAT_VERSION, Geometry, NodeId, SIGNATURE_PROBE_BYTES, Superblock, SuperblockFault,
};
use crate::shard::{ReadBuf, Request, Shard};
use crate::types::{Class, FragmentInfo, Key, PutOutcome, ScrubProgress, Stats};
use sha2::Digest;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a store lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A block device or a preallocated regular file, driven by io_uring with O_DIRECT.
    Path(PathBuf),
    /// The deterministic simulated disk.
    Sim(SimDisk),
}

impl Target {
    fn open_device(&self) -> std::io::Result<Box<dyn Device>> {
        match self {
            Target::Path(path) => Ok(Box::new(open_target(path)?)),
            Target::Sim(disk) => Ok(disk.device()),
        }
    }
    fn name(&self) -> String {
        match self {
            Target::Path(path) => path.display().to_string(),
            Target::Sim(_) => "simulated disk".into(),
        }
    }
}

/// How to lay out a new store.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub node_id: NodeId,
    /// One shard per core by default.
    pub shard_count: u32,
    pub max_object_bytes: u64,
    pub max_meta_bytes: u32,
    /// Per shard, per copy; derived from the shard size when `None`.
    pub journal_bytes: Option<u64>,
    /// Per shard, per slot; derived from the shard size when `None`.
    pub checkpoint_bytes: Option<u64>,
    /// Overwrite a target that carries a file system, partition table or store.
    pub force: bool,
    /// Tells this format's metadata from an earlier one's; random when `None`.
    pub store_id: Option<[u8; 16]>,
}

impl FormatOptions {
    pub fn new(node_id: NodeId) -> FormatOptions {
        FormatOptions {
            node_id,
            shard_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            max_object_bytes: 8 << 20,
            max_meta_bytes: 16 << 10,
            journal_bytes: None,
            checkpoint_bytes: None,
            force: false,
            store_id: None,
        }
    }

    fn geometry(&self, device_bytes: u64) -> Geometry {
        let usable = (device_bytes / BLOCK_BYTES as u64).saturating_sub(4) * BLOCK_BYTES as u64;
        let per_shard = usable / u64::from(self.shard_count.max(1));
        let block = |v: u64| round_up(v as usize, BLOCK_BYTES) as u64;
        let min_journal = 4 * layout::max_record_bytes(self.max_object_bytes, self.max_meta_bytes);
        let journal_bytes = self
            .journal_bytes
            .unwrap_or_else(|| block(min_journal.max((per_shard / 128).min(64 << 20))));
        let checkpoint_bytes = self
            .checkpoint_bytes
            .unwrap_or_else(|| block(per_shard / 256 + (64 << 10)));
        Geometry {
            device_bytes: device_bytes / BLOCK_BYTES as u64 * BLOCK_BYTES as u64,
            shard_count: self.shard_count,
            journal_bytes,
            checkpoint_bytes,
            max_object_bytes: self.max_object_bytes,
            max_meta_bytes: self.max_meta_bytes,
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The store must have been formatted for this node.
    pub node_id: NodeId,
    /// Requests waiting per shard before senders block.
    pub queue_depth: usize,
    /// Idle put buffers kept for [`Store::buffer`], in bytes (8 fragments of 8 MiB by default).
    pub buffer_pool_bytes: usize,
    /// Idle read buffers kept for reuse, in bytes (512 reads of 8 KiB by default).
    pub read_pool_bytes: usize,
}

impl OpenOptions {
    pub fn new(node_id: NodeId) -> OpenOptions {
        OpenOptions {
            node_id,
            queue_depth: 1024,
            buffer_pool_bytes: 64 << 20,
            read_pool_bytes: 4 << 20,
        }
    }
}

/// Formats `target`: shard metadata first, then the superblock copies, each flushed, so an
/// interrupted format leaves no superblock rather than one pointing at garbage.
pub fn format(target: &Target, options: &FormatOptions) -> Result<Superblock, FormatError> {
    let name = target.name();
    let io = |action: &'static str| {
        let name = name.clone();
        move |source| FormatError::Io {
            action,
            target: name,
            source,
        }
    };
    let mut dev = target.open_device().map_err(io("open"))?;
    let device_bytes = dev.len_bytes();
    if device_bytes >= SIGNATURE_PROBE_BYTES as u64 {
        let mut head = AlignedBuf::zeroed(SIGNATURE_PROBE_BYTES);
        execute_one(dev.as_mut(), IoOp::read(0, head.as_blocks_mut())).map_err(io("read"))?;
        if let Some(found) = layout::foreign_signature(&head) {
            if !options.force {
                return Err(FormatError::ForeignSignature {
                    target: name,
                    found,
                });
            }
            tracing::warn!(target = %name, "overwriting {found} (forced)");
        }
    }
    let geometry = options.geometry(device_bytes);
    geometry
        .validate()
        .map_err(|reason| FormatError::Geometry {
            target: name.clone(),
            reason,
        })?;
    let store_id = options.store_id.unwrap_or_else(rand::random);
    for (id, regions) in geometry.shards().iter().enumerate() {
        Shard::format(id as u32, dev.as_mut(), regions, store_id).map_err(io("write"))?;
    }
    execute_one(dev.as_mut(), IoOp::flush()).map_err(io("flush"))?;
    let superblock = Superblock {
        version: FORMAT_VERSION,
        node_id: options.node_id,
        store_id,
        geometry,
    };
    let block = AlignedBuf::copy_from(&superblock.encode());
    let offsets = Geometry::superblock_offsets(superblock.geometry.device_bytes);
    let mut ops: Vec<IoOp<'_>> = offsets
        .iter()
        .map(|&o| IoOp::write(o, block.as_blocks()))
        .collect();
    dev.execute(&mut ops);
    for op in &mut ops {
        op.take_result().map_err(io("write"))?;
    }
    execute_one(dev.as_mut(), IoOp::flush()).map_err(io("flush"))?;
    Ok(superblock)
}

/// Reads the superblock copies, checks identity and version, and rewrites damaged copies.
fn read_superblock(
    dev: &mut dyn Device,
    name: &str,
    node_id: NodeId,
) -> Result<Superblock, OpenError> {
    let read_at = |dev: &mut dyn Device, offsets: &[u64]| {
        offsets
            .iter()
            .map(|&offset| {
                let mut buf = AlignedBuf::zeroed(BLOCK_BYTES);
                match execute_one(dev, IoOp::read(offset, buf.as_blocks_mut())) {
                    Ok(()) => Superblock::decode(&buf),
                    Err(_) => Err(SuperblockFault::Corrupt(
                        crate::error::CorruptKind::Truncated,
                    )),
                }
            })
            .collect::<Vec<_>>()
    };
    let len = dev.len_bytes();
    if len < 4 * BLOCK_BYTES as u64 {
        return Err(OpenError::NotFormatted {
            target: name.into(),
        });
    }
    let mut offsets = Geometry::superblock_offsets(len);
    let mut copies = read_at(dev, &offsets);
    // The tail copies sit at the formatted size; if the target changed size, look there.
    if let Some(sb) = copies.iter().flatten().next() {
        let formatted = sb.geometry.device_bytes;
        if formatted > len {
            return Err(OpenError::SizeChanged {
                target: name.into(),
                expected: formatted,
                actual: len,
            });
        }
        if formatted != len {
            offsets = Geometry::superblock_offsets(formatted);
            copies = read_at(dev, &offsets);
        }
    }
    if let Some(found) = copies.iter().find_map(|c| match c {
        Err(SuperblockFault::NewerVersion(v)) => Some(*v),
        _ => None,
    }) {
        return Err(OpenError::NewerVersion {
            target: name.into(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    let valid: Vec<&Superblock> = copies.iter().flatten().collect();
    let Some(&superblock) = valid.first() else {
        if copies
            .iter()
            .all(|c| matches!(c, Err(SuperblockFault::NoMagic)))
        {
            return Err(OpenError::NotFormatted {
                target: name.into(),
            });
        }
        return Err(OpenError::SuperblockCorrupt {
            target: name.into(),
            copies: copies.len(),
        });
    };
    if valid.iter().any(|sb| *sb != superblock) {
        return Err(OpenError::SuperblockConflict {
            target: name.into(),
        });
    }
    let superblock = superblock.clone();
    if superblock.node_id != node_id {
        return Err(OpenError::WrongNode {
            target: name.into(),
            expected: node_id,
            found: superblock.node_id,
        });
    }
    let damaged: Vec<u64> = offsets
        .iter()
        .zip(&copies)
        .filter(|(_, c)| c.is_err())
        .map(|(&o, _)| o)
        .collect();
    if !damaged.is_empty() {
        tracing::warn!(target = %name, "rewriting {} damaged superblock copies", damaged.len());
        let block = AlignedBuf::copy_from(&superblock.encode());
        let repaired = damaged
            .iter()
            .try_for_each(|&o| execute_one(dev, IoOp::write(o, block.as_blocks())))
            .and_then(|()| execute_one(dev, IoOp::flush()));
        if let Err(e) = repaired {
            tracing::warn!(target = %name, "superblock repair failed ({e}); continuing on the good copies");
        }
    }
    Ok(superblock)
}

/// A call in flight: `.wait()` blocks, `.await` suspends. A call whose shard queue was full
/// is sent only when waited for or polled, so a dropped `Pending` may never have been sent.
#[must_use = "a call may not be sent until it is awaited or waited for"]
pub struct Pending<T> {
    state: PendingState<T>,
}

enum PendingState<T> {
    /// The shard's queue was full: the request waits here to be sent.
    Queued {
        sender: ShardSender,
        request: Option<Request>,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    },
    Sent(oneshot::Receiver<Result<T, StoreError>>),
    Failed(StoreError),
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            PendingState::Queued { .. } => "queued",
            PendingState::Sent(_) => "sent",
            PendingState::Failed(_) => "failed",
        };
        f.debug_struct("Pending").field("state", &state).finish()
    }
}

impl<T> Pending<T> {
    fn failed(error: StoreError) -> Pending<T> {
        Pending {
            state: PendingState::Failed(error),
        }
    }

    fn sent(rx: oneshot::Receiver<Result<T, StoreError>>) -> Pending<T> {
        Pending {
            state: PendingState::Sent(rx),
        }
    }

    /// Blocks until the answer arrives (and, when the shard's queue was full, until there is
    /// room for the request). Must not be called inside an async runtime.
    pub fn wait(self) -> Result<T, StoreError> {
        match self.state {
            PendingState::Queued {
                sender,
                request,
                rx,
            } => {
                let request = request.expect("a queued call holds its request until sent");
                sender.send(request)?;
                rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
            }
            PendingState::Sent(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
            PendingState::Failed(e) => Err(e),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let PendingState::Queued {
            sender, request, ..
        } = &mut this.state
        {
            let queued = request.take().expect("a queued call holds its request");
            match sender.try_send_or_register(queued, cx.waker()) {
                Attempt::Sent => {}
                Attempt::Full(back) => {
                    *request = Some(*back);
                    return Poll::Pending;
                }
                Attempt::Closed => {
                    this.state = PendingState::Failed(StoreError::Closed);
                }
            }
            if let PendingState::Queued { .. } = this.state {
                let PendingState::Queued { rx, .. } =
                    std::mem::replace(&mut this.state, PendingState::Failed(StoreError::Closed))
                else {
                    unreachable!("matched above")
                };
                this.state = PendingState::Sent(rx);
            }
        }
        match &mut this.state {
            PendingState::Sent(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
            PendingState::Failed(e) => Poll::Ready(Err(e.clone())),
            PendingState::Queued { .. } => unreachable!("sent or failed above"),
        }
    }
}

/// Tasks waiting for room in a shard's queue; the shard wakes them when it takes requests.
#[derive(Debug, Default)]
struct Room {
    any: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Room {
    /// Called by the shard after it took requests off its queue.
    fn wake(&self) {
        if self.any.swap(false, Ordering::SeqCst) {
            let wakers =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

/// The sending side of a shard's queue: a sender rings the shard's bell after queueing.
#[derive(Debug, Clone)]
struct ShardSender {
    tx: SyncSender<Request>,
    bell: Arc<Bell>,
    room: Arc<Room>,
}

impl ShardSender {
    /// Queues `request`, waiting for room when the queue is full (backpressure, for blocking
    /// callers); fails only when the shard has stopped.
    fn send(&self, request: Request) -> Result<(), StoreError> {
        let sent = match self.tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(request)) => self.tx.send(request).map_err(|_| ()),
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        sent.map_err(|()| StoreError::Closed)?;
        self.bell.ring();
        Ok(())
    }

    /// Queues `request` if there is room; otherwise registers `waker` for the shard to wake
    /// when there is, and gives the request back. Never blocks.
    fn try_send_or_register(&self, request: Request, waker: &Waker) -> Attempt {
        let request = match self.tx.try_send(request) {
            Ok(()) => {
                self.bell.ring();
                return Attempt::Sent;
            }
            Err(TrySendError::Full(request)) => request,
            Err(TrySendError::Disconnected(_)) => return Attempt::Closed,
        };
        {
            let mut waiting = self.room.waiting.lock().unwrap_or_else(|p| p.into_inner());
            // A task polled again while the queue stays full is registered once.
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            self.room.any.store(true, Ordering::SeqCst);
        }
        // The shard may have made room between the first try and the registration: look once
        // more, so that no wake-up is lost.
        match self.tx.try_send(request) {
            Ok(()) => {
                self.bell.ring();
                Attempt::Sent
            }
            Err(TrySendError::Full(request)) => Attempt::Full(Box::new(request)),
            Err(TrySendError::Disconnected(_)) => Attempt::Closed,
        }
    }
}

/// What one non-blocking send did.
enum Attempt {
    Sent,
    /// No room: the request comes back, and the task is woken when there is.
    Full(Box<Request>),
    Closed,
}

#[derive(Debug)]
struct ShardHandle {
    tx: Option<ShardSender>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Scrubber {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// An open fragment store. Dropping it finishes queued requests and stops its threads.
#[derive(Debug)]
pub struct Store {
    shards: Vec<ShardHandle>,
    superblock: Superblock,
    target: String,
    scrubber: Mutex<Option<Scrubber>>,
    pool: Arc<BufPool>,
}

/// Wakes every task waiting for room when the shard's loop ends (even by a panic): their
/// next poll finds the queue closed and fails with `Closed` instead of waiting for ever.
struct WakeOnExit<'a>(&'a Room);

impl Drop for WakeOnExit<'_> {
    fn drop(&mut self) {
        self.0.any.store(true, Ordering::SeqCst);
        self.0.wake();
    }
}

fn shard_loop(mut shard: Shard, rx: Receiver<Request>, bell: &Bell, room: &Room) {
    let _wake_on_exit = WakeOnExit(room);
    // Declared after the guard, so dropped before it: the queue is closed by the time the
    // waiting tasks look again.
    let rx = rx;
    const ROUND_REQUESTS_MAX: usize = 256;
    let mut carry: VecDeque<Request> = VecDeque::new();
    let mut batch: Vec<Request> = Vec::new();
    loop {
        batch.extend(carry.drain(..));
        // Block for a request only when nothing else can make progress: with reads in
        // flight, their completions wake the loop instead.
        if batch.is_empty() && !shard.reads_in_flight() {
            match rx.recv() {
                Ok(request) => batch.push(request),
                Err(_) => return,
            }
        }
        while batch.len() < ROUND_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Requests left the queue: senders waiting for room may go on.
        room.wake();
        // Reads start at once; everything else waits for a round.
        let round: Vec<Request> = batch
            .drain(..)
            .filter_map(|request| shard.stream_read(request))
            .collect();
        shard.start_batched_reads();
        if round.is_empty() {
            // Sleep on the device until a read finishes or a request rings the bell; a
            // request queued before the bell was armed is seen by this last look.
            bell.arm();
            match rx.try_recv() {
                Ok(request) => carry.push_back(request),
                Err(_) => shard.reap_reads(true),
            }
            bell.disarm();
            continue;
        }
        // A round may free extents that a streamed read is still reading.
        shard.finish_streamed_reads();
        carry.extend(shard.run_round(round));
    }
}

impl Store {
    /// Opens a formatted target: checks the superblock, then each shard replays its
    /// checkpoint and journal on its own thread (no fragment data is read).
    pub fn open(target: &Target, options: &OpenOptions) -> Result<Store, OpenError> {
        let name = target.name();
        let mut dev = target.open_device().map_err(|source| OpenError::Io {
            action: "open",
            target: name.clone(),
            source,
        })?;
        let superblock = read_superblock(dev.as_mut(), &name, options.node_id)?;
        let g = &superblock.geometry;
        let mut pending_opens = Vec::new();
        let mut shards = Vec::new();
        let pool = Arc::new(BufPool::new(options.buffer_pool_bytes));
        let read_pool = Arc::new(BufPool::new(options.read_pool_bytes));
        for (id, regions) in g.shards().into_iter().enumerate() {
            let id = id as u32;
            let mut shard_dev = dev.try_clone().map_err(|source| OpenError::Io {
                action: "open a device handle for",
                target: name.clone(),
                source,
            })?;
            let (tx, rx) = sync_channel(options.queue_depth.max(1));
            let (bell, bell_reader) = Bell::new().map_err(|source| OpenError::Io {
                action: "create a shard's wake-up pipe for",
                target: name.clone(),
                source,
            })?;
            let bell = Arc::new(bell);
            shard_dev.attach_bell(bell_reader);
            let shard_bell = bell.clone();
            let room = Arc::new(Room::default());
            let shard_room = room.clone();
            let (opened_tx, opened_rx) = std::sync::mpsc::channel();
            let (store_id, max_object, max_meta) =
                (superblock.store_id, g.max_object_bytes, g.max_meta_bytes);
            let (shard_pool, shard_read_pool) = (pool.clone(), read_pool.clone());
            let thread = std::thread::Builder::new()
                .name(format!("cess-shard-{id}"))
                .spawn(move || {
                    match Shard::open(id, shard_dev, regions, store_id, max_object, max_meta) {
                        Ok(mut shard) => {
                            shard.recycle_into(shard_pool, shard_read_pool);
                            let _ = opened_tx.send(Ok(()));
                            shard_loop(shard, rx, &shard_bell, &shard_room);
                        }
                        Err(cause) => drop(opened_tx.send(Err(cause))),
                    }
                })
                .map_err(|source| OpenError::Io {
                    action: "start a shard thread for",
                    target: name.clone(),
                    source,
                })?;
            pending_opens.push((id, opened_rx));
            shards.push(ShardHandle {
                tx: Some(ShardSender { tx, bell, room }),
                thread: Some(thread),
            });
        }
        let store = Store {
            shards,
            superblock,
            target: name.clone(),
            scrubber: Mutex::new(None),
            pool,
        };
        for (id, opened) in pending_opens {
            let result = opened
                .recv()
                .unwrap_or(Err(RecoveryError::ShardThreadExited));
            if let Err(cause) = result {
                return Err(OpenError::Metadata {
                    target: name,
                    shard: id,
                    cause,
                });
            }
        }
        Ok(store)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    fn call<T>(
        &self,
        shard: u32,
        make: impl FnOnce(crate::shard::Reply<T>) -> Request,
    ) -> Pending<T> {
        let (reply, rx) = oneshot::channel();
        let Some(sender) = self.shards[shard as usize].tx.as_ref() else {
            return Pending::failed(StoreError::Closed);
        };
        match sender.tx.try_send(make(reply)) {
            Ok(()) => {
                sender.bell.ring();
                Pending::sent(rx)
            }
            // Full: the request waits in its Pending (see the module's comment).
            Err(TrySendError::Full(request)) => Pending {
                state: PendingState::Queued {
                    sender: sender.clone(),
                    request: Some(request),
                    rx,
                },
            },
            Err(TrySendError::Disconnected(_)) => Pending::failed(StoreError::Closed),
        }
    }

    fn shard_of(&self, key: &Key) -> u32 {
        key.shard(self.superblock.geometry.shard_count)
    }

    fn check_len(&self, len: usize) -> Result<(), StoreError> {
        let max = self.superblock.geometry.max_object_bytes;
        if len as u64 > max {
            return Err(StoreError::TooLarge {
                len_bytes: len as u64,
                max_bytes: max,
            });
        }
        Ok(())
    }

    /// Stores `data` under `key`, which must be its SHA-256. Returns once data and metadata
    /// are durable. Idempotent: a present key answers `AlreadyPresent` and writes nothing.
    pub fn put(&self, key: Key, class: Class, data: &[u8]) -> Pending<PutOutcome> {
        if let Err(e) = self.check_len(data.len()) {
            return Pending::failed(e);
        }
        let (buf, crcs) = match prepare(key, data, true) {
            Ok(prepared) => prepared,
            Err(e) => return Pending::failed(e),
        };
        self.call(self.shard_of(&key), |reply| Request::Put {
            key,
            class,
            data: buf,
            crcs,
            reply,
        })
    }

    /// A buffer for `len` bytes to fill and hand to [`Store::put_buf`]: one a put left behind
    /// when there is one (its bytes are stale, so fill all `len` of them), else a new one.
    /// Reusing buffers spares the page faults and page clearing of fresh memory.
    pub fn buffer(&self, len: usize) -> AlignedBuf {
        self.pool.take(len)
    }

    /// Like [`Store::put`] for data already in an aligned buffer (no copy).
    pub fn put_buf(&self, key: Key, class: Class, data: AlignedBuf) -> Pending<PutOutcome> {
        if let Err(e) = self.check_len(data.len()) {
            return Pending::failed(e);
        }
        let crcs = match prepare(key, &data, false) {
            Ok((_, crcs)) => crcs,
            Err(e) => return Pending::failed(e),
        };
        self.call(self.shard_of(&key), |reply| Request::Put {
            key,
            class,
            data,
            crcs,
            reply,
        })
    }

    /// Replaces the idle fragment `idle_key` by the active fragment `key`. When both keys fall
    /// in one shard this is one durable step: after a crash exactly one of them is stored.
    /// Across shards the active fragment is written before the idle one is deleted, so a crash
    /// may leave both; never neither.
    pub fn replace_idle(&self, idle_key: Key, key: Key, data: &[u8]) -> Pending<()> {
        if let Err(e) = self.check_len(data.len()) {
            return Pending::failed(e);
        }
        if self.shard_of(&idle_key) != self.shard_of(&key) {
            // Different shards cannot commit atomically together: write first, then delete.
            return self.replace_across_shards(idle_key, key, data);
        }
        let (buf, crcs) = match prepare(key, data, true) {
            Ok(prepared) => prepared,
            Err(e) => return Pending::failed(e),
        };
        self.call(self.shard_of(&key), |reply| Request::Replace {
            idle_key,
            key,
            data: buf,
            crcs,
            reply,
        })
    }

    /// The three steps run on a helper thread that waits for each answer in turn, so the
    /// caller never blocks (an async caller awaits the one answer at the end).
    fn replace_across_shards(&self, idle_key: Key, key: Key, data: &[u8]) -> Pending<()> {
        let senders = (
            self.shards[self.shard_of(&idle_key) as usize].tx.clone(),
            self.shards[self.shard_of(&key) as usize].tx.clone(),
        );
        let (Some(idle_shard), Some(shard)) = senders else {
            return Pending::failed(StoreError::Closed);
        };
        let (buf, crcs) = match prepare(key, data, true) {
            Ok(prepared) => prepared,
            Err(e) => return Pending::failed(e),
        };
        fn ask<T>(
            sender: &ShardSender,
            make: impl FnOnce(crate::shard::Reply<T>) -> Request,
        ) -> Result<T, StoreError> {
            let (reply, rx) = oneshot::channel();
            sender.send(make(reply))?;
            rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
        }
        let (answer, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("cess-replace".into())
            .spawn(move || {
                let result = (|| {
                    match ask(&idle_shard, |reply| Request::Contains {
                        key: idle_key,
                        reply,
                    })? {
                        Some(info) if info.class == Class::Idle => {}
                        Some(_) => return Err(StoreError::NotIdle(idle_key)),
                        None => return Err(StoreError::NotFound(idle_key)),
                    }
                    ask(&shard, |reply| Request::Put {
                        key,
                        class: Class::Active,
                        data: buf,
                        crcs,
                        reply,
                    })?;
                    ask(&idle_shard, |reply| Request::Delete {
                        key: idle_key,
                        reply,
                    })?;
                    Ok(())
                })();
                let _ = answer.send(result);
            });
        match spawned {
            Ok(_) => Pending::sent(rx),
            Err(e) => Pending::failed(StoreError::Thread(e.to_string())),
        }
    }

    /// The whole fragment, verified.
    pub fn get(&self, key: Key) -> Pending<ReadBuf> {
        self.call(self.shard_of(&key), |reply| Request::Get { key, reply })
    }

    /// `len_bytes` bytes at `offset`, verified block by block (only the covering blocks are read).
    pub fn read(&self, key: Key, offset: u64, len_bytes: u64) -> Pending<ReadBuf> {
        self.call(self.shard_of(&key), |reply| Request::Read {
            key,
            offset,
            len_bytes,
            reply,
        })
    }

    /// Many range reads (key, offset, length) issued together, with `in_flight` of them on
    /// the device at a time (split between the shards by their share of the reads); the
    /// answers come back in request order, one [`Pending`] each. A bad read fails alone.
    ///
    /// Each shard starts its next read as soon as one of its reads finishes, without waiting
    /// for the caller, so the device queue stays full however slowly the caller collects the
    /// answers; their buffers are held until the caller takes them.
    pub fn read_batch(&self, reads: &[(Key, u64, u64)], in_flight: usize) -> Vec<Pending<ReadBuf>> {
        let mut per_shard: Vec<Vec<crate::shard::BatchedRead>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut answers = Vec::with_capacity(reads.len());
        for &(key, offset, len_bytes) in reads {
            let (reply, rx) = oneshot::channel();
            per_shard[self.shard_of(&key) as usize].push((key, offset, len_bytes, reply));
            answers.push(Pending::sent(rx));
        }
        let depths = split_depth(
            in_flight.max(1),
            &per_shard.iter().map(Vec::len).collect::<Vec<_>>(),
        );
        for ((shard, reads), depth) in per_shard.into_iter().enumerate().zip(depths) {
            if reads.is_empty() {
                continue;
            }
            // A shard that has stopped drops the replies, so its answers read `Closed`.
            if let Some(tx) = self.shards[shard].tx.as_ref() {
                let _ = tx.send(Request::ReadBatch { reads, depth });
            }
        }
        answers
    }

    /// [`Store::read_batch`] for a blocking caller: every answer, in request order.
    pub fn read_many(
        &self,
        reads: &[(Key, u64, u64)],
        in_flight: usize,
    ) -> Vec<Result<ReadBuf, StoreError>> {
        self.read_batch(reads, in_flight)
            .into_iter()
            .map(Pending::wait)
            .collect()
    }

    /// Deletes a fragment; `Ok(false)` if it was not there.
    pub fn delete(&self, key: Key) -> Pending<bool> {
        self.call(self.shard_of(&key), |reply| Request::Delete { key, reply })
    }

    pub fn contains(&self, key: Key) -> Pending<Option<FragmentInfo>> {
        self.call(self.shard_of(&key), |reply| Request::Contains {
            key,
            reply,
        })
    }

    /// Sets the fragment's metadata blob (proof tags live here), durably.
    pub fn set_meta(&self, key: Key, meta: &[u8]) -> Pending<()> {
        let max = self.superblock.geometry.max_meta_bytes;
        if meta.len() as u64 > u64::from(max) {
            return Pending::failed(StoreError::MetaTooLarge {
                len_bytes: meta.len() as u64,
                max_bytes: u64::from(max),
            });
        }
        let meta = meta.into();
        self.call(self.shard_of(&key), |reply| Request::SetMeta {
            key,
            meta,
            reply,
        })
    }

    pub fn meta(&self, key: Key) -> Pending<Vec<u8>> {
        self.call(self.shard_of(&key), |reply| Request::GetMeta { key, reply })
    }

    /// Space and health, summed over shards; the one source of every figure shown.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let pendings: Vec<_> = (0..self.shards.len() as u32)
            .map(|s| self.call(s, |reply| Request::Stats { reply }))
            .collect();
        let mut total = Stats::default();
        for p in pendings {
            total.add(&p.wait()?);
        }
        Ok(total)
    }

    /// Every fragment, shard by shard in key order, fetched in pages.
    pub fn list(&self) -> ListIter<'_> {
        ListIter {
            store: self,
            shard: 0,
            after: None,
            page: VecDeque::new(),
        }
    }

    /// Writes a checkpoint in every shard now (normally done when the journal is half full).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let pendings: Vec<_> = (0..self.shards.len() as u32)
            .map(|s| self.call(s, |reply| Request::Checkpoint { reply }))
            .collect();
        pendings.into_iter().try_for_each(Pending::wait)
    }

    /// Verifies up to about `max_bytes` per shard, continuing where the last step stopped
    /// (also across restarts), and returns the progress. Zero only reports.
    pub fn scrub_step(&self, max_bytes: u64) -> Result<ScrubProgress, StoreError> {
        scrub_step(&self.senders(), max_bytes)
    }

    pub fn scrub_progress(&self) -> Result<ScrubProgress, StoreError> {
        self.scrub_step(0)
    }

    fn senders(&self) -> Vec<ShardSender> {
        self.shards.iter().filter_map(|s| s.tx.clone()).collect()
    }

    /// Starts the background scrub at about `rate_bytes_per_sec`; it logs each finished pass.
    pub fn start_scrub(&self, rate_bytes_per_sec: u64) {
        self.stop_scrub();
        let senders = self.senders();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let step_bytes = (rate_bytes_per_sec / 4).max(BLOCK_BYTES as u64);
        let thread = std::thread::spawn(move || {
            let mut last_passes = None;
            while !stop_flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                match scrub_step(&senders, step_bytes) {
                    Ok(progress) => {
                        if last_passes.is_some_and(|p| p < progress.passes_completed) {
                            tracing::info!(
                                passes = progress.passes_completed,
                                corrupt = progress.corrupt.len(),
                                "scrub pass complete"
                            );
                        }
                        last_passes = Some(progress.passes_completed);
                    }
                    Err(e) => {
                        tracing::warn!("scrub stopped: {e}");
                        return;
                    }
                }
                let budget = Duration::from_secs_f64(
                    step_bytes as f64 * senders.len() as f64 / rate_bytes_per_sec.max(1) as f64,
                );
                let sleep_until = started + budget;
                while Instant::now() < sleep_until && !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20).min(sleep_until - Instant::now()));
                }
            }
        });
        *self.scrubber.lock().unwrap_or_else(|p| p.into_inner()) = Some(Scrubber { stop, thread });
    }

    pub fn stop_scrub(&self) {
        if let Some(s) = self
            .scrubber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            s.stop.store(true, Ordering::Relaxed);
            let _ = s.thread.join();
        }
    }
}

/// Splits a depth of `total` between shards holding `counts` reads: in proportion, at least
/// one and at most its reads for each shard with reads, adding up to `total` where those
/// bounds allow.
fn split_depth(total: usize, counts: &[usize]) -> Vec<usize> {
    let reads: usize = counts.iter().sum();
    if reads == 0 {
        return vec![0; counts.len()];
    }
    let mut depths: Vec<usize> = counts
        .iter()
        .map(|&n| (total * n / reads).clamp(n.min(1), n))
        .collect();
    let mut given: usize = depths.iter().sum();
    // Floors leave a remainder: hand it out one by one to shards with reads left to run.
    let mut shard = 0;
    while given < total && depths.iter().zip(counts).any(|(d, &n)| *d < n) {
        if depths[shard] < counts[shard] {
            depths[shard] += 1;
            given += 1;
        }
        shard = (shard + 1) % counts.len();
    }
    depths
}

fn scrub_step(senders: &[ShardSender], max_bytes: u64) -> Result<ScrubProgress, StoreError> {
    let mut receivers = Vec::new();
    for tx in senders {
        let (reply, rx) = oneshot::channel();
        tx.send(Request::Scrub { max_bytes, reply })?;
        receivers.push(rx);
    }
    let mut shards = Vec::with_capacity(receivers.len());
    for rx in receivers {
        shards.push(rx.blocking_recv().unwrap_or(Err(StoreError::Closed))?);
    }
    // The store's pass is the slowest shard's; a shard already past it counts as verified.
    let passes_completed = shards.iter().map(|s| s.passes_completed).min().unwrap_or(0);
    let mut progress = ScrubProgress {
        passes_completed,
        ..ScrubProgress::default()
    };
    for shard in shards {
        progress.pass_verified_bytes += if shard.passes_completed > passes_completed {
            shard.stored_bytes
        } else {
            shard.pass_verified_bytes
        };
        progress.stored_bytes += shard.stored_bytes;
        progress.corrupt.extend(shard.corrupt);
    }
    Ok(progress)
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_scrub();
        for shard in &mut self.shards {
            shard.tx = None;
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Streams [`FragmentInfo`]s page by page; see [`Store::list`].
#[derive(Debug)]
pub struct ListIter<'a> {
    store: &'a Store,
    shard: usize,
    after: Option<Key>,
    page: VecDeque<FragmentInfo>,
}

impl Iterator for ListIter<'_> {
    type Item = Result<FragmentInfo, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        const PAGE: usize = 1024;
        loop {
            if let Some(info) = self.page.pop_front() {
                return Some(Ok(info));
            }
            if self.shard >= self.store.shards.len() {
                return None;
            }
            let after = self.after;
            let page = self
                .store
                .call(self.shard as u32, |reply| Request::List {
                    after,
                    limit: PAGE,
                    reply,
                })
                .wait();
            match page {
                Err(e) => {
                    self.shard = self.store.shards.len();
                    return Some(Err(e));
                }
                Ok(page) => {
                    if page.len() < PAGE {
                        self.shard += 1;
                        self.after = None;
                    } else {
                        self.after = page.last().map(|i| i.key);
                    }
                    self.page = page.into();
                }
            }
        }
    }
}

/// Copies `data` into an aligned buffer (when `copy`), hashing it with SHA-256 and taking the
/// CRC32C of each 4 KiB block in the same pass, while each chunk is still in cache.
fn prepare(key: Key, data: &[u8], copy: bool) -> Result<(AlignedBuf, Box<[u32]>), StoreError> {
    const CHUNK: usize = 64 << 10;
    let mut buf = if copy {
        AlignedBuf::zeroed(data.len())
    } else {
        AlignedBuf::zeroed(0)
    };
    let mut sha = sha2::Sha256::new();
    let mut crcs = Vec::with_capacity(data.len().div_ceil(BLOCK_BYTES));
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + CHUNK).min(data.len());
        let chunk = &data[offset..end];
        sha.update(chunk);
        if copy {
            buf[offset..end].copy_from_slice(chunk);
        }
        for block_start in (offset..end).step_by(BLOCK_BYTES) {
            let block_end = (block_start + BLOCK_BYTES).min(data.len());
            let crc = crc32c::crc32c(&data[block_start..block_end]);
            // The last block is zero-padded on disk; extend its CRC over the padding.
            let pad = BLOCK_BYTES - (block_end - block_start);
            crcs.push(if pad == 0 {
                crc
            } else {
                crc32c::crc32c_append(crc, &ZEROS[..pad])
            });
        }
        offset = end;
    }
    let actual = Key(sha.finalize().into());
    if actual != key {
        return Err(StoreError::HashMismatch {
            expected: key,
            actual,
        });
    }
    Ok((buf, crcs.into()))
}

static ZEROS: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];

#[cfg(test)]
mod tests {
    use super::split_depth;

    #[test]
    fn a_batch_depth_is_split_by_share_and_adds_up() {
        assert_eq!(split_depth(32, &[500, 500]), vec![16, 16]);
        assert_eq!(split_depth(32, &[300, 100]), vec![24, 8]);
        // Floors leave 2 over; they go to shards with reads to spare.
        assert_eq!(split_depth(32, &[1, 1, 1]), vec![1, 1, 1]);
        assert_eq!(split_depth(8, &[10, 10, 10]), vec![3, 3, 2]);
        // A shard with no reads gets no depth; one with few gets at least one.
        assert_eq!(split_depth(4, &[0, 1000, 1]), vec![0, 3, 1]);
        // Fewer places than shards with reads: one each all the same.
        assert_eq!(split_depth(1, &[5, 5]), vec![1, 1]);
        // An empty batch gives every shard nothing (and divides by nothing).
        assert_eq!(split_depth(32, &[0, 0]), vec![0, 0]);
        for total in 1..40 {
            for counts in [[7, 0, 90], [1, 1, 1], [40, 40, 1]] {
                let depths = split_depth(total, &counts);
                let shards_with_reads = counts.iter().filter(|&&n| n > 0).count();
                let sum: usize = depths.iter().sum();
                let runnable: usize = counts.iter().sum();
                assert_eq!(
                    sum,
                    total.max(shards_with_reads).min(runnable),
                    "{total} {counts:?}"
                );
            }
        }
    }
}
