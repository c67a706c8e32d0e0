//! The store: format and open a target, route requests to shard threads, scrub.
//!
//! Each shard runs on its own thread with its own device handle (its own io_uring ring) and
//! receives requests through a bounded queue. Every call returns a [`Pending`] that a blocking
//! caller `.wait()`s and an async caller `.await`s. A full queue is backpressure that never
//! blocks an async runtime: the request then waits inside its `Pending`, which a `.wait()`
//! sends blocking and a poll sends as soon as the shard has taken a request off the queue
//! (the shard wakes the waiting tasks). Two calls are ordered only once the first is sent:
//! await (or wait for) one before making a call that must follow it.
//!
//! The files: this one is the API (`Store`: open, put, get, read, delete, …); `options.rs`
//! the target and options; `format.rs` formatting and reading the superblock copies, with
//! `superblock.rs` the pure decision over what they hold; `driver.rs` the queues, `Pending`
//! and the shard threads' loop; `scrub.rs` the scrub; `list.rs` listing.

mod driver;
mod format;
mod list;
mod options;
mod scrub;
mod superblock;

pub use driver::Pending;
pub use format::format;
pub use list::ListIter;
pub use options::{FormatOptions, OpenOptions, Target};

use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::device::Bell;
use crate::error::{OpenError, RecoveryError, StoreError};
use crate::layout::Superblock;
use crate::shard::{ReadBuf, Request, Shard};
use crate::types::{Class, FragmentId, FragmentInfo, PutOutcome, Stats};
use driver::{PendingState, Room, ShardHandle, ShardSender, shard_loop};
use format::read_superblock;
use scrub::Scrubber;
use sha2::Digest;
use std::sync::mpsc::{TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// An open fragment store. Dropping it finishes queued requests and stops its threads.
#[derive(Debug)]
pub struct Store {
    shards: Vec<ShardHandle>,
    superblock: Superblock,
    target: String,
    scrubber: Mutex<Option<Scrubber>>,
    pool: Arc<BufPool>,
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

    fn shard_of(&self, key: &FragmentId) -> u32 {
        crate::types::shard_of(key, self.superblock.geometry.shard_count)
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
    pub fn put(&self, key: FragmentId, class: Class, data: &[u8]) -> Pending<PutOutcome> {
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
    pub fn put_buf(&self, key: FragmentId, class: Class, data: AlignedBuf) -> Pending<PutOutcome> {
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
    pub fn replace_idle(&self, idle_key: FragmentId, key: FragmentId, data: &[u8]) -> Pending<()> {
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
    fn replace_across_shards(
        &self,
        idle_key: FragmentId,
        key: FragmentId,
        data: &[u8],
    ) -> Pending<()> {
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
    pub fn get(&self, key: FragmentId) -> Pending<ReadBuf> {
        self.call(self.shard_of(&key), |reply| Request::Get { key, reply })
    }

    /// `len_bytes` bytes at `offset`, verified block by block (only the covering blocks are read).
    pub fn read(&self, key: FragmentId, offset: u64, len_bytes: u64) -> Pending<ReadBuf> {
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
    pub fn read_batch(
        &self,
        reads: &[(FragmentId, u64, u64)],
        in_flight: usize,
    ) -> Vec<Pending<ReadBuf>> {
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
        reads: &[(FragmentId, u64, u64)],
        in_flight: usize,
    ) -> Vec<Result<ReadBuf, StoreError>> {
        self.read_batch(reads, in_flight)
            .into_iter()
            .map(Pending::wait)
            .collect()
    }

    /// Deletes a fragment; `Ok(false)` if it was not there.
    pub fn delete(&self, key: FragmentId) -> Pending<bool> {
        self.call(self.shard_of(&key), |reply| Request::Delete { key, reply })
    }

    pub fn contains(&self, key: FragmentId) -> Pending<Option<FragmentInfo>> {
        self.call(self.shard_of(&key), |reply| Request::Contains {
            key,
            reply,
        })
    }

    /// Sets the fragment's metadata blob (proof tags live here), durably.
    pub fn set_meta(&self, key: FragmentId, meta: &[u8]) -> Pending<()> {
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

    pub fn meta(&self, key: FragmentId) -> Pending<Vec<u8>> {
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

    /// Writes a checkpoint in every shard now (normally done when the journal is half full).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let pendings: Vec<_> = (0..self.shards.len() as u32)
            .map(|s| self.call(s, |reply| Request::Checkpoint { reply }))
            .collect();
        pendings.into_iter().try_for_each(Pending::wait)
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

/// Copies `data` into an aligned buffer (when `copy`), hashing it with SHA-256 and taking the
/// CRC32C of each 4 KiB block in the same pass, while each chunk is still in cache.
fn prepare(
    key: FragmentId,
    data: &[u8],
    copy: bool,
) -> Result<(AlignedBuf, Box<[u32]>), StoreError> {
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
    let actual = FragmentId(sha.finalize().into());
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
