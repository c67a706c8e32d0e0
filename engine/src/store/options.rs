//! What to format and open, and how: the target, the format options and the open options.

use crate::aligned::{BLOCK_BYTES, round_up};
use crate::device::{Device, SimDisk, open_target};
use crate::layout::{self, Geometry, NodeId};
use std::path::PathBuf;

/// Where a store lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A block device or a preallocated regular file, driven by io_uring with O_DIRECT.
    Path(PathBuf),
    /// The deterministic simulated disk.
    Sim(SimDisk),
}

impl Target {
    pub(super) fn open_device(&self) -> std::io::Result<Box<dyn Device>> {
        match self {
            Target::Path(path) => Ok(Box::new(open_target(path)?)),
            Target::Sim(disk) => Ok(disk.device()),
        }
    }
    pub(super) fn name(&self) -> String {
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

    pub(super) fn geometry(&self, device_bytes: u64) -> Geometry {
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
