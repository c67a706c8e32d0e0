//! `cess-engine`: the fragment store on raw disks.
//!
//! Fragments are keyed by their SHA-256 and live on a block device or preallocated file,
//! written through io_uring with O_DIRECT, one shard per core. Each 4 KiB block has a CRC32C
//! kept in the index, apart from the block, so misdirected and lost writes are caught and
//! corrupt bytes are never returned. Metadata is a mirrored journal plus two alternating
//! checkpoints per shard, so opening reads metadata only. See `engine/DESIGN.md`.
//!
//! Unsafe code lives only in [`aligned`] (aligned allocations) and the io_uring driver
//! (`device/uring.rs`); the rest of the crate is fenced off from it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod aligned;
mod alloc;
pub mod device;
mod error;
pub mod layout;
mod record;
mod shard;
mod store;
mod types;
mod wire;

pub use aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
pub use device::{SimDisk, SimFaults};
pub use error::{
    CorruptKind, FormatError, IoFailure, JournalCopy, OpenError, PoisonCause, RecoveryError,
    SlotDefect, StoreError,
};
pub use layout::{FORMAT_VERSION, Geometry, NodeId, Superblock};
pub use shard::ReadBuf;
pub use store::{FormatOptions, ListIter, OpenOptions, Pending, Store, Target, format};
pub use types::{Class, FragmentId, FragmentInfo, PutOutcome, ScrubProgress, Stats, shard_of};
