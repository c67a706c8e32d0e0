// Long file: the block store's format, recovery and install in one place.
//! The block store: every committed block with the commit that decided it, appended to one
//! file, so a validator that restarts resumes from its disk and answers sync requests for any
//! height it stored (all of them, unless it took a peer's checkpoint: then from that height
//! on), not only the last few it keeps in memory.
//!
//! Format: an 88-byte header (magic, version, the chain id, the base height and the hash of
//! the block at it), then one record per height from base + 1 up (the base is 0 and its hash
//! the chain id for a store that started at genesis; a node that took a peer's checkpoint
//! instead of the blocks before it starts its store at the checkpoint's height), each `len: u32 LE | checksum: first 8 bytes of SHA-256(payload) | payload`, the
//! payload a [`NetMsg::SyncResponse`] encoding of (block, commit) — the bounded decoder the
//! network already uses.
//!
//! Crash argument: a record is written whole and then the file is `fdatasync`ed before
//! [`BlockStore::append`] returns, so every block it acknowledged is on disk. A crash during an
//! append leaves at most one incomplete record, at the end: on open, a bad record (cut short
//! or failing its checksum) within one record's maximum size of the end is that
//! torn append and is dropped (the file is truncated to the last good record; the height it
//! held is synced again from the peers). More than that after a bad record is damage to
//! acknowledged data: opening refuses, saying where. Heights must follow each other (an
//! append of another height is a bug: asserted).
//!
//! Opening reads every record once to index it (checksums only; 8 bytes of memory per block);
//! a block is decoded, and its height checked, when it is read. Replaying the ledger from it is
//! [`replay`]'s.

use crate::bft::{Block, CommitRecord, NetMsg};
use crate::tx::Hash32;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 12] = b"cess-blocks\0";
const VERSION: u32 = 2;
const HEADER_BYTES: u64 = 12 + 4 + 32 + 8 + 32;
const RECORD_HEAD_BYTES: u64 = 4 + 8;
/// A record's payload: a block (at most `BLOCK_BYTES_MAX`) and its commit, framed.
const PAYLOAD_BYTES_MAX: u64 = crate::bft::MESSAGE_BYTES_MAX as u64;

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: in use by another process (a validator already runs on this directory)")]
    Locked { path: PathBuf },
    #[error("{path}: not a block store (bad header)")]
    NotAStore { path: PathBuf },
    #[error("{path}: the block store of another chain")]
    OtherChain { path: PathBuf },
    #[error(
        "{path}: record {height} at byte {offset} is damaged and good records follow it: \
         acknowledged blocks were lost; move the file away to sync from the peers"
    )]
    Damaged {
        path: PathBuf,
        height: u64,
        offset: u64,
    },
}

/// Committed blocks on disk, and where each is.
#[derive(Debug)]
pub struct BlockStore {
    path: PathBuf,
    file: File,
    /// The height before the first record, and the hash of its block (the chain id at 0).
    base: u64,
    base_hash: Hash32,
    /// Offset of the record of height `base + i + 1`.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
}

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Blocks on disk.
    pub height: u64,
    /// Bytes of an incomplete last record dropped (a crash during an append).
    pub torn_bytes: u64,
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    digest[..8].try_into().expect("8 of 32 bytes")
}

fn encode_record(block: &Block, commit: &CommitRecord) -> Vec<u8> {
    let payload = NetMsg::SyncResponse {
        block: Box::new(block.clone()),
        commit: commit.clone(),
    }
    .encode();
    let mut record = Vec::with_capacity(RECORD_HEAD_BYTES as usize + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&checksum(&payload));
    record.extend_from_slice(&payload);
    record
}

/// A record read back: its block and commit, or why not.
fn decode_payload(payload: &[u8]) -> Option<(Block, CommitRecord)> {
    match NetMsg::decode(payload).ok()? {
        NetMsg::SyncResponse { block, commit } => Some((*block, commit)),
        _ => None,
    }
}

impl BlockStore {
    /// Opens (or creates) the store at `path` for the chain `chain_id`: indexes every record,
    /// drops a torn tail, refuses damage before the tail.
    pub fn open(path: &Path, chain_id: &Hash32) -> Result<(BlockStore, Opened), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        // One writer: a second validator on the same directory would interleave records.
        let mut file = lock_store(path)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_BYTES {
            // New, or a crash before the header was durable: nothing was acknowledged yet.
            let store = Self::start_file(path, file, chain_id, 0, *chain_id)?;
            return Ok((
                store,
                Opened {
                    height: 0,
                    torn_bytes: len,
                },
            ));
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        file.read_exact(&mut header).map_err(io)?;
        if &header[..12] != MAGIC || header[12..16] != VERSION.to_le_bytes() {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
            });
        }
        if header[16..48] != chain_id[..] {
            return Err(StoreError::OtherChain {
                path: path.to_path_buf(),
            });
        }
        let base = u64::from_le_bytes(header[48..56].try_into().expect("8 bytes"));
        let base_hash: Hash32 = header[56..88].try_into().expect("32 bytes");
        let mut offsets = Vec::new();
        let mut at = HEADER_BYTES;
        let mut reader = std::io::BufReader::new(&file);
        let mut head = [0u8; RECORD_HEAD_BYTES as usize];
        let mut payload = Vec::new();
        // Scans records until the first that is not whole and good.
        let good_end = loop {
            if at + RECORD_HEAD_BYTES > len {
                break at;
            }
            reader.read_exact(&mut head).map_err(io)?;
            let payload_len = u64::from(u32::from_le_bytes(head[..4].try_into().expect("4")));
            if payload_len > PAYLOAD_BYTES_MAX || at + RECORD_HEAD_BYTES + payload_len > len {
                break at;
            }
            payload.resize(payload_len as usize, 0);
            reader.read_exact(&mut payload).map_err(io)?;
            // The checksum tells a whole record from a torn one; blocks are decoded (and
            // their heights checked) once, when read.
            if head[4..] != checksum(&payload) {
                break at;
            }
            offsets.push(at);
            at += RECORD_HEAD_BYTES + payload_len;
        };
        drop(reader);
        // A crash tears at most the one record being appended: more than a whole record's
        // worth after the last good one is damage, not a tear.
        if len - good_end > RECORD_HEAD_BYTES + PAYLOAD_BYTES_MAX {
            return Err(StoreError::Damaged {
                path: path.to_path_buf(),
                height: base + offsets.len() as u64 + 1,
                offset: good_end,
            });
        }
        let torn_bytes = len - good_end;
        if torn_bytes > 0 {
            file.set_len(good_end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let height = base + offsets.len() as u64;
        Ok((
            BlockStore {
                path: path.to_path_buf(),
                file,
                base,
                base_hash,
                offsets,
                end: good_end,
            },
            Opened { height, torn_bytes },
        ))
    }

    /// A new, empty store at `path` (whatever was there is dropped) whose first record will
    /// be of height `base + 1`, after the block `base_hash`: for a node that took a peer's
    /// checkpoint at `base` (written beside it before this is called).
    pub fn create_at(
        path: &Path,
        chain_id: &Hash32,
        base: u64,
        base_hash: Hash32,
    ) -> Result<BlockStore, StoreError> {
        Self::start_file(path, lock_store(path)?, chain_id, base, base_hash)
    }

    /// Writes the header of an empty store, durably.
    fn start_file(
        path: &Path,
        mut file: File,
        chain_id: &Hash32,
        base: u64,
        base_hash: Hash32,
    ) -> Result<BlockStore, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(chain_id);
        header.extend_from_slice(&base.to_le_bytes());
        header.extend_from_slice(&base_hash);
        debug_assert_eq!(header.len() as u64, HEADER_BYTES);
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(BlockStore {
            path: path.to_path_buf(),
            file,
            base,
            base_hash,
            offsets: Vec::new(),
            end: HEADER_BYTES,
        })
    }

    /// Blocks on disk: heights `base() + 1..=height()`.
    pub fn height(&self) -> u64 {
        self.base + self.offsets.len() as u64
    }

    /// The height before the first record (0 for a store started at genesis).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The hash of the block at [`Self::base`] (the chain id at 0).
    pub fn base_hash(&self) -> Hash32 {
        self.base_hash
    }

    /// Appends the block of the next height with its commit; durable when this returns.
    pub fn append(&mut self, block: &Block, commit: &CommitRecord) -> Result<(), StoreError> {
        assert_eq!(
            block.height,
            self.height() + 1,
            "blocks are stored in height order"
        );
        let record = encode_record(block, commit);
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(self.end)).map_err(io)?;
        self.file.write_all(&record).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.offsets.push(self.end);
        self.end += record.len() as u64;
        Ok(())
    }

    /// Appends blocks of the next heights in order with one `fdatasync` at the end (tools and
    /// tests building a store); all durable when this returns. Not for a running validator: a
    /// power loss before it returns may leave more than one bad record at the tail, which the
    /// next open refuses as damage.
    pub fn append_all<'a>(
        &mut self,
        blocks: impl IntoIterator<Item = (&'a Block, &'a CommitRecord)>,
    ) -> Result<(), StoreError> {
        let io = |path: &Path, source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.end))
            .map_err(|e| io(&self.path, e))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &self.file);
        let mut offsets = Vec::new();
        let mut end = self.end;
        for (block, commit) in blocks {
            assert_eq!(
                block.height,
                self.height() + offsets.len() as u64 + 1,
                "blocks are stored in height order"
            );
            let record = encode_record(block, commit);
            writer.write_all(&record).map_err(|e| io(&self.path, e))?;
            offsets.push(end);
            end += record.len() as u64;
        }
        writer.flush().map_err(|e| io(&self.path, e))?;
        drop(writer);
        self.file.sync_data().map_err(|e| io(&self.path, e))?;
        self.offsets.extend(offsets);
        self.end = end;
        Ok(())
    }

    /// The block at `height` and its commit, read back and checked.
    pub fn read(&self, height: u64) -> Result<Option<(Arc<Block>, CommitRecord)>, StoreError> {
        let Some(&offset) = height
            .checked_sub(self.base + 1)
            .and_then(|i| self.offsets.get(i as usize))
        else {
            return Ok(None);
        };
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut head = [0u8; RECORD_HEAD_BYTES as usize];
        read_exact_at(&self.file, &mut head, offset).map_err(io)?;
        let payload_len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let mut payload = vec![0u8; payload_len];
        read_exact_at(&self.file, &mut payload, offset + RECORD_HEAD_BYTES).map_err(io)?;
        let damaged = || StoreError::Damaged {
            path: self.path.clone(),
            height,
            offset,
        };
        if head[4..] != checksum(&payload) {
            return Err(damaged());
        }
        let (block, commit) = decode_payload(&payload)
            .filter(|(block, _)| block.height == height)
            .ok_or_else(damaged)?;
        Ok(Some((Arc::new(block), commit)))
    }
}

/// A ledger brought back from a block store.
#[derive(Debug)]
pub struct Restored {
    /// After the last stored block.
    pub ledger: crate::ledger::Ledger,
    /// The set that decided the last stored block (none at genesis).
    pub previous_validators: Option<crate::bft::ValidatorSet>,
    /// The last blocks with their commits, oldest first (at most the `recent` asked for).
    pub recent: Vec<(Arc<Block>, CommitRecord)>,
    /// Hash of the last stored block (the chain id when there is none).
    pub last_hash: Hash32,
}

/// Why a stored chain could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "block {height} in the store does not follow the ledger (its parent {what} differs): \
         the store belongs to another history; move it away to sync from the peers"
    )]
    Diverged { height: u64, what: &'static str },
}

/// What a validator keeps on disk: its block store and its write-ahead log.
#[derive(Debug)]
pub struct Disk {
    /// Its height must be the core's.
    pub store: BlockStore,
    /// Where the driver writes a [`crate::checkpoint`] after every `checkpoint_every_blocks`
    /// blocks (0: never).
    pub dir: PathBuf,
    pub checkpoint_every_blocks: u64,
    /// Opened at the store's height + 1, its entries already handed to the core
    /// ([`crate::bft::Core::recover`]). `None` runs without one (benchmarks: a crash may then
    /// make this validator sign twice).
    pub wal: Option<crate::wal::Wal<crate::wal::FileMedium>>,
}

/// A validator's files in its directory: the block store and the write-ahead log.
pub const BLOCKS_FILE: &str = "blocks";
pub const WAL_FILE: &str = "wal";
/// A block store being installed beside a taken checkpoint (see [`install_based`]).
pub const PENDING_BLOCKS_FILE: &str = "blocks.new";

/// Replaces `dir`'s block store and checkpoint with `checkpoint` and an empty store after
/// it, crash-safely: the new store is created as [`PENDING_BLOCKS_FILE`] (durable), the
/// checkpoint written (atomically), then the new store renamed over the old and the directory
/// synced. [`open_disk`] finishes an install a crash interrupted: a pending store whose base is
/// the checkpoint's block is renamed into place, any other is removed (the old state stays).
pub fn install_based(
    dir: &Path,
    checkpoint: &crate::checkpoint::Checkpoint,
) -> Result<(), DiskError> {
    let pending = dir.join(PENDING_BLOCKS_FILE);
    drop(BlockStore::create_at(
        &pending,
        &checkpoint.ledger.chain_id(),
        checkpoint.ledger.height(),
        checkpoint.last_hash,
    )?);
    crate::checkpoint::write(dir, checkpoint).map_err(|e| DiskError::Install(e.to_string()))?;
    finish_rename(dir)
}

fn finish_rename(dir: &Path) -> Result<(), DiskError> {
    let io = |source| {
        DiskError::Store(StoreError::Io {
            path: dir.join(PENDING_BLOCKS_FILE),
            source,
        })
    };
    std::fs::rename(dir.join(PENDING_BLOCKS_FILE), dir.join(BLOCKS_FILE)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Finishes or undoes an install a crash interrupted ([`install_based`]).
fn finish_install(dir: &Path, chain_id: &Hash32) -> Result<(), DiskError> {
    let pending = dir.join(PENDING_BLOCKS_FILE);
    if !pending.exists() {
        return Ok(());
    }
    let (store, _) = BlockStore::open(&pending, chain_id)?;
    let complete = crate::checkpoint::read(dir, chain_id)
        .ok()
        .flatten()
        .is_some_and(|c| c.ledger.height() == store.base() && c.last_hash == store.base_hash());
    drop(store);
    if complete {
        finish_rename(dir)
    } else {
        std::fs::remove_file(&pending).map_err(|source| {
            DiskError::Store(StoreError::Io {
                path: pending.clone(),
                source,
            })
        })
    }
}

/// Why a validator's disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error(transparent)]
    LogAhead(#[from] crate::bft::LogAhead),
    #[error(
        "the block store starts after height {base} (its blocks before came as a checkpoint) \
         and no usable checkpoint at or after it is on disk ({reason}); move the directory's \
         files away to sync again"
    )]
    NoBaseCheckpoint { base: u64, reason: String },
    #[error("installing a taken checkpoint: {0}")]
    Install(String),
}

/// A validator's disk, opened and read back: the ledger replayed from its blocks and the
/// write-ahead log's entries for the height after them.
#[derive(Debug)]
pub struct OpenedDisk {
    pub restored: Restored,
    pub disk: Disk,
    pub wal_entries: Vec<(u64, crate::wal::WalEntry)>,
    /// Bytes of a torn last block record dropped (its block is synced again).
    pub store_torn_bytes: u64,
    /// Bytes of a torn log tail dropped (never synced, so never sent).
    pub wal_torn_bytes: u64,
    /// The checkpoint the ledger was resumed from (its height), if one was used.
    pub checkpoint_height: Option<u64>,
    /// Why the checkpoint on disk was not used, if there is one and it was not.
    pub checkpoint_refused: Option<String>,
    /// Blocks replayed on top of the checkpoint (or genesis).
    pub replayed_blocks: u64,
}

/// Opens `dir`'s block store ([`BLOCKS_FILE`]) and, with `wal`, its write-ahead log
/// ([`WAL_FILE`]) at the store's next height, replaying the blocks on `genesis` and keeping the
/// last `recent` in memory. Either file in use by another process is
/// [`StoreError::Locked`] / [`crate::wal::WalError::Locked`].
pub fn open_disk(
    dir: &Path,
    genesis: crate::ledger::Ledger,
    recent: usize,
    wal: bool,
) -> Result<OpenedDisk, DiskError> {
    let chain_id = genesis.chain_id();
    finish_install(dir, &chain_id)?;
    let (store, opened) = BlockStore::open(&dir.join(BLOCKS_FILE), &chain_id)?;
    // A checkpoint only saves replay time: one that is unreadable, damaged or ahead of the
    // store is set aside and the store replayed from genesis; a store that starts at a taken
    // checkpoint has no genesis to replay from, and is refused without one.
    let stored_hash = |height: u64| -> Option<Hash32> {
        if height == store.base() {
            return Some(store.base_hash());
        }
        store
            .read(height)
            .ok()
            .flatten()
            .map(|(block, _)| block.hash().0)
    };
    let (checkpoint, checkpoint_refused) = match crate::checkpoint::read(dir, &chain_id) {
        Ok(Some(c)) if c.ledger.height() < store.base() => (
            None,
            Some(format!(
                "checkpoint at height {} is before the block store's first block ({})",
                c.ledger.height(),
                store.base() + 1
            )),
        ),
        Ok(Some(c))
            if c.ledger.height() <= store.height()
                && stored_hash(c.ledger.height()) != Some(c.last_hash) =>
        {
            (
                None,
                Some(format!(
                    "checkpoint at height {} is of another block than the store's",
                    c.ledger.height()
                )),
            )
        }
        Ok(Some(c)) if c.ledger.height() <= store.height() => (Some(c), None),
        Ok(Some(c)) => (
            None,
            Some(format!(
                "checkpoint at height {} is ahead of the block store ({})",
                c.ledger.height(),
                store.height()
            )),
        ),
        Ok(None) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let checkpoint_height = checkpoint.as_ref().map(|c| c.ledger.height());
    if checkpoint.is_none() && store.base() > 0 {
        return Err(DiskError::NoBaseCheckpoint {
            base: store.base(),
            reason: checkpoint_refused.unwrap_or_else(|| "none".into()),
        });
    }
    let start = checkpoint.unwrap_or(crate::checkpoint::Checkpoint {
        last_hash: chain_id,
        ledger: genesis,
        previous_validators: None,
    });
    let replayed_blocks = store.height() - start.ledger.height();
    let restored = replay_from(&store, start, recent)?;
    let (wal, wal_entries, wal_torn_bytes) = if wal {
        let (wal, recovered) =
            crate::wal::open_file(&dir.join(WAL_FILE), &chain_id, store.height() + 1)?;
        (Some(wal), recovered.entries, recovered.torn_bytes)
    } else {
        (None, Vec::new(), 0)
    };
    Ok(OpenedDisk {
        restored,
        disk: Disk {
            store,
            dir: dir.to_path_buf(),
            checkpoint_every_blocks: crate::checkpoint::CHECKPOINT_EVERY_BLOCKS,
            wal,
        },
        wal_entries,
        store_torn_bytes: opened.torn_bytes,
        wal_torn_bytes,
        checkpoint_height,
        checkpoint_refused,
        replayed_blocks,
    })
}

impl OpenedDisk {
    /// The validator's core resumed from this disk, its log handed to it, and the disk for its
    /// driver.
    pub fn into_core(
        self,
        key: crate::keys::ValidatorKey,
        account: crate::keys::AccountId,
        config: crate::bft::CoreConfig,
    ) -> Result<(crate::bft::Core, Disk), crate::bft::LogAhead> {
        let mut core = crate::bft::Core::restore(self.restored, key, account, config, 0);
        core.recover(self.wal_entries)?;
        Ok((core, self.disk))
    }
}

/// Applies every stored block to `genesis`, checking that each links to the one before (its
/// parent hash, and the state root it certifies), and keeps the last `recent` of them.
/// Signatures were verified when the blocks were committed and are not checked again.
pub fn replay(
    store: &BlockStore,
    genesis: crate::ledger::Ledger,
    recent: usize,
) -> Result<Restored, ReplayError> {
    replay_from(
        store,
        crate::checkpoint::Checkpoint {
            last_hash: genesis.chain_id(),
            ledger: genesis,
            previous_validators: None,
        },
        recent,
    )
}

/// [`replay`] from a checkpoint: the stored blocks after its height applied to its ledger,
/// the last `recent` blocks kept (read from the store when fewer were replayed).
pub fn replay_from(
    store: &BlockStore,
    start: crate::checkpoint::Checkpoint,
    recent: usize,
) -> Result<Restored, ReplayError> {
    let from = start.ledger.height() + 1;
    assert!(
        from <= store.height() + 1,
        "a checkpoint is never ahead of its store"
    );
    let blocks = (from..=store.height()).map(|height| {
        store
            .read(height)
            .map(|found| found.expect("indexed heights are readable"))
    });
    let mut restored = replay_blocks_from(blocks, start, recent)?;
    let mut older = Vec::new();
    let first_kept = restored
        .recent
        .first()
        .map_or(store.height() + 1, |(b, _)| b.height);
    let wanted = recent.saturating_sub(restored.recent.len()) as u64;
    for height in first_kept.saturating_sub(wanted).max(store.base() + 1)..first_kept {
        if let Some(found) = store.read(height)? {
            older.push(found);
        }
    }
    older.append(&mut restored.recent);
    restored.recent = older;
    Ok(restored)
}

/// [`replay`] over blocks from anywhere (the simulator's disks), heights 1, 2, … in order.
pub fn replay_blocks(
    blocks: impl IntoIterator<Item = Result<(Arc<Block>, CommitRecord), StoreError>>,
    genesis: crate::ledger::Ledger,
    recent: usize,
) -> Result<Restored, ReplayError> {
    replay_blocks_from(
        blocks,
        crate::checkpoint::Checkpoint {
            last_hash: genesis.chain_id(),
            ledger: genesis,
            previous_validators: None,
        },
        recent,
    )
}

/// [`replay_blocks`] on a checkpoint: the blocks are those after its height, in order.
pub fn replay_blocks_from(
    blocks: impl IntoIterator<Item = Result<(Arc<Block>, CommitRecord), StoreError>>,
    start: crate::checkpoint::Checkpoint,
    recent: usize,
) -> Result<Restored, ReplayError> {
    let crate::checkpoint::Checkpoint {
        mut ledger,
        last_hash: mut parent,
        mut previous_validators,
    } = start;
    let mut kept = std::collections::VecDeque::with_capacity(recent.min(4096));
    for stored in blocks {
        let height = ledger.height() + 1;
        let (block, commit) = stored?;
        if block.height != height {
            return Err(ReplayError::Diverged {
                height,
                what: "height",
            });
        }
        if block.parent != parent {
            return Err(ReplayError::Diverged {
                height,
                what: "hash",
            });
        }
        if block.parent_root != ledger.root() {
            return Err(ReplayError::Diverged {
                height,
                what: "state root",
            });
        }
        if block.next_validators != ledger.elected_by_next_block() {
            return Err(ReplayError::Diverged {
                height,
                what: "next validator set",
            });
        }
        previous_validators = Some(crate::bft::validator_set(&ledger));
        let checked = vec![true; block.txs.len()];
        ledger.apply_block_checked(
            &crate::bft::block_info(&block),
            &block.txs,
            &checked,
            &cess_proofs::CpuBackend,
        );
        parent = block.hash().0;
        if recent > 0 {
            if kept.len() == recent {
                kept.pop_front();
            }
            kept.push_back((block, commit));
        }
    }
    Ok(Restored {
        ledger,
        previous_validators,
        recent: kept.into(),
        last_hash: parent,
    })
}

/// Opens (or creates) `path` for reading and writing, locked against every other opener:
/// `Err(None)` when another process holds it.
/// The store's file at `path`, locked for this process.
fn lock_store(path: &Path) -> Result<File, StoreError> {
    open_locked(path).map_err(|e| match e {
        None => StoreError::Locked {
            path: path.to_path_buf(),
        },
        Some(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

pub(crate) fn open_locked(path: &Path) -> Result<File, Option<std::io::Error>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Some)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Some(e)),
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{AccountId, ValidatorKey};

    const CHAIN: Hash32 = [7; 32];

    fn block(height: u64) -> (Block, CommitRecord) {
        let key = ValidatorKey::from_seed(&[height as u8; 32]);
        let block = Block {
            height,
            parent: [height as u8; 32],
            parent_root: [1; 32],
            next_validators: None,
            time_ms: height * 1000,
            proposer: AccountId([2; 32]),
            vrf_proof: key.sign(b"test", &height.to_le_bytes()),
            last_commit: None,
            txs: Vec::new(),
        };
        let commit = CommitRecord {
            round: height as u32 % 3,
            signatures: vec![(AccountId([3; 32]), key.sign(b"commit", &[1]))],
        };
        (block, commit)
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cess-block-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn filled(path: &Path, blocks: u64) -> BlockStore {
        let (mut store, opened) = BlockStore::open(path, &CHAIN).unwrap();
        assert_eq!(opened.height, 0);
        for h in 1..=blocks {
            let (b, c) = block(h);
            store.append(&b, &c).unwrap();
        }
        store
    }

    #[test]
    fn blocks_come_back_after_a_reopen_by_height() {
        let path = dir("reopen").join("blocks");
        drop(filled(&path, 5));
        let (store, opened) = BlockStore::open(&path, &CHAIN).unwrap();
        assert_eq!(
            opened,
            Opened {
                height: 5,
                torn_bytes: 0
            }
        );
        for h in 1..=5 {
            let (b, c) = store.read(h).unwrap().unwrap();
            assert_eq!((b.as_ref(), &c), (&block(h).0, &block(h).1));
        }
        assert!(store.read(0).unwrap().is_none());
        assert!(store.read(6).unwrap().is_none());
        assert!(
            matches!(
                BlockStore::open(&path, &CHAIN),
                Err(StoreError::Locked { .. })
            ),
            "one writer at a time"
        );
        drop(store);
        assert!(matches!(
            BlockStore::open(&path, &[8; 32]),
            Err(StoreError::OtherChain { .. })
        ));
    }

    /// A crash during an append, cut at every byte of the last record: that record is dropped,
    /// the others stay, and the store takes the same height again.
    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut() {
        let dir = dir("torn");
        let path = dir.join("blocks");
        drop(filled(&path, 3));
        let whole = std::fs::read(&path).unwrap();
        let (store, _) = BlockStore::open(&path, &CHAIN).unwrap();
        let last_at = store.offsets[2] as usize;
        drop(store);
        for cut in last_at..whole.len() {
            let torn = dir.join(format!("cut-{cut}"));
            std::fs::write(&torn, &whole[..cut]).unwrap();
            let (mut store, opened) = BlockStore::open(&torn, &CHAIN).unwrap();
            assert_eq!(opened.height, 2, "cut at {cut}");
            assert_eq!(opened.torn_bytes as usize, cut - last_at);
            let (b, c) = block(3);
            store.append(&b, &c).unwrap();
            drop(store);
            assert_eq!(std::fs::read(&torn).unwrap(), whole, "cut at {cut}");
            std::fs::remove_file(&torn).unwrap();
        }
        // A flipped bit in the last record is a torn tail too.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(BlockStore::open(&path, &CHAIN).unwrap().1.height, 2);
    }

    /// Damage with more than a record's worth of data after it is not a torn append: the
    /// store refuses to open rather than drop acknowledged blocks silently.
    #[test]
    fn damage_before_the_tail_refuses_to_open() {
        let path = dir("damage").join("blocks");
        drop(filled(&path, 3));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES as usize + 20] ^= 0xFF;
        // Pad past one record's maximum so the damage cannot be a tear.
        bytes.resize(bytes.len() + PAYLOAD_BYTES_MAX as usize + 64, 0xAB);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            BlockStore::open(&path, &CHAIN),
            Err(StoreError::Damaged { height: 1, .. })
        ));
    }
}
