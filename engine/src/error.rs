//! Typed errors at the engine's boundary: one enum per kind of call.

use crate::layout::NodeId;
use crate::types::FragmentId;
use std::io;
use thiserror::Error;

/// What was wrong with a piece of metadata that failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptKind {
    /// The checksum does not match the bytes.
    Checksum,
    /// The checksum matches but a field holds an impossible value.
    Field,
    /// The bytes end before the structure does.
    Truncated,
}

/// Why `format` refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The target could not be opened, read or written.
    #[error("cannot {action} {target}: {source}")]
    Io {
        action: &'static str,
        target: String,
        source: io::Error,
    },
    /// The target holds something we would destroy; `force` overrides.
    #[error("{target} holds {found}; refusing to overwrite it (pass force to format anyway)")]
    ForeignSignature { target: String, found: &'static str },
    /// The requested geometry does not fit the target or is invalid.
    #[error("invalid layout for {target}: {reason}")]
    Geometry { target: String, reason: String },
}

/// Why `open` refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot {action} {target}: {source}")]
    Io {
        action: &'static str,
        target: String,
        source: io::Error,
    },
    /// No copy of the superblock carries our magic: the target was never formatted.
    #[error("{target} is not a CESS fragment store (no superblock found; format it first)")]
    NotFormatted { target: String },
    /// Formatted for another node: opening it would mix two nodes' data.
    #[error("{target} belongs to node {found}, not to this node {expected}")]
    WrongNode {
        target: String,
        expected: NodeId,
        found: NodeId,
    },
    /// Written by a newer format version than this build understands.
    #[error("{target} has format version {found}; this build opens up to version {supported}")]
    NewerVersion {
        target: String,
        found: u32,
        supported: u32,
    },
    /// Every superblock copy failed its checksum.
    #[error("{target}: all {copies} superblock copies are corrupt")]
    SuperblockCorrupt { target: String, copies: usize },
    /// Valid superblock copies disagree with each other.
    #[error("{target}: superblock copies disagree; refusing to guess which is right")]
    SuperblockConflict { target: String },
    /// The target is shorter than the geometry its superblock records.
    #[error("{target} is {actual} bytes but was formatted as {expected} bytes")]
    SizeChanged {
        target: String,
        expected: u64,
        actual: u64,
    },
    /// A shard's journal or checkpoints cannot be trusted.
    #[error("{target}: shard {shard} metadata is unrecoverable: {cause}")]
    Metadata {
        target: String,
        shard: u32,
        cause: RecoveryError,
    },
}

/// Why a data operation (put, get, read, delete, …) failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No fragment with this key.
    #[error("fragment {0} not found")]
    NotFound(FragmentId),
    /// The bytes do not hash to the key they were put under.
    #[error("fragment bytes hash to {actual}, not to the key {expected}")]
    HashMismatch {
        expected: FragmentId,
        actual: FragmentId,
    },
    /// Larger than the store's maximum object size.
    #[error("fragment of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    TooLarge { len_bytes: u64, max_bytes: u64 },
    /// A request whose journal record alone is more than one round may write (the store's
    /// journal is too small for it); refused, nothing changed.
    #[error(
        "a journal record of {len_bytes} bytes exceeds the {max_bytes} bytes a round may \
         write (the journal is too small for it)"
    )]
    RecordTooLarge { len_bytes: u64, max_bytes: u64 },
    /// Metadata blob larger than the configured maximum.
    #[error("metadata of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    MetaTooLarge { len_bytes: u64, max_bytes: u64 },
    /// Not enough contiguous free space in the fragment's shard; nothing was written.
    #[error(
        "no space in shard {shard}: need {needed_bytes} bytes, {free_bytes} free, \
         largest free extent {largest_extent_bytes}"
    )]
    NoSpace {
        shard: u32,
        needed_bytes: u64,
        free_bytes: u64,
        largest_extent_bytes: u64,
    },
    /// The shard's checkpoint area cannot describe more fragments; nothing was written.
    #[error("shard {shard} metadata area is full ({used_bytes} of {capacity_bytes} bytes)")]
    MetadataFull {
        shard: u32,
        used_bytes: u64,
        capacity_bytes: u64,
    },
    /// Stored bytes failed verification; they were not returned.
    #[error("fragment {key} is corrupt: block {block} failed its checksum")]
    Corrupt { key: FragmentId, block: u64 },
    /// A read failed at the device.
    #[error("read of fragment {key} failed: {reason}")]
    ReadFailed { key: FragmentId, reason: String },
    /// An earlier write or flush failed; the shard refuses writes until reopened.
    #[error("shard {shard} refuses writes after an earlier failure: {cause}")]
    Poisoned { shard: u32, cause: PoisonCause },
    /// A helper thread could not be started (the process is out of threads or memory).
    #[error("could not start a helper thread: {0}")]
    Thread(String),
    /// Replace named a fragment that is not idle.
    #[error("fragment {0} is not an idle fragment")]
    NotIdle(FragmentId),
    /// A range outside the fragment.
    #[error("range {offset}+{len_bytes} is outside fragment {key} of {fragment_bytes} bytes")]
    OutOfRange {
        key: FragmentId,
        offset: u64,
        len_bytes: u64,
        fragment_bytes: u64,
    },
    /// The store is shutting down or its shard thread is gone.
    #[error("store is closed")]
    Closed,
}

/// A failed device operation: its kind (what code matches on) and, when the OS gave one, its
/// error number (what an operator reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoFailure {
    pub kind: io::ErrorKind,
    pub os_code: Option<i32>,
}

impl From<&io::Error> for IoFailure {
    fn from(e: &io::Error) -> IoFailure {
        IoFailure {
            kind: e.kind(),
            os_code: e.raw_os_error(),
        }
    }
}

impl From<io::Error> for IoFailure {
    fn from(e: io::Error) -> IoFailure {
        IoFailure::from(&e)
    }
}

impl std::fmt::Display for IoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.os_code {
            Some(code) => write!(f, "{}", io::Error::from_raw_os_error(code)),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Why a shard stopped taking writes: the write or flush that failed. After it the shard
/// cannot tell what reached the device, so it refuses writes until it is reopened and
/// recovered from what is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PoisonCause {
    #[error("data write at byte {offset} failed: {failure}")]
    DataWrite { offset: u64, failure: IoFailure },
    #[error("flush of fragment data failed: {0}")]
    DataFlush(IoFailure),
    #[error("journal write failed: {0}")]
    JournalWrite(IoFailure),
    #[error("journal flush failed: {0}")]
    JournalFlush(IoFailure),
    #[error("checkpoint write failed: {0}")]
    CheckpointWrite(IoFailure),
    #[error("checkpoint flush failed: {0}")]
    CheckpointFlush(IoFailure),
    /// The index outgrew its checkpoint slot (puts and metadata are refused before this).
    #[error("checkpoint of {len_bytes} bytes exceeds its slot of {slot_bytes}")]
    CheckpointTooLarge { len_bytes: u64, slot_bytes: u64 },
}

/// Why a checkpoint slot was not used at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SlotDefect {
    #[error("unreadable ({0})")]
    Unreadable(IoFailure),
    /// No frame header of this store and shard: never written, or an older format's.
    #[error("empty")]
    Empty,
    #[error("its frame of {len_bytes} bytes exceeds the slot")]
    Oversized { len_bytes: u64 },
    #[error("fails its checksum")]
    Checksum,
    #[error("has a valid checksum but undecodable entries")]
    Undecodable,
}

/// Which copy of the mirrored journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalCopy {
    A,
    B,
}

impl std::fmt::Display for JournalCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JournalCopy::A => "A",
            JournalCopy::B => "B",
        })
    }
}

/// Why a shard's metadata could not be recovered at open (see `engine/DESIGN.md`, recovery).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("no valid checkpoint in either slot (slot 0 {0}, slot 1 {1})")]
    NoCheckpoint(SlotDefect, SlotDefect),
    #[error("cannot read either journal copy (A: {a}, B: {b})")]
    JournalUnreadable { a: IoFailure, b: IoFailure },
    #[error("checkpoint lists fragment {0} twice")]
    DuplicateInCheckpoint(FragmentId),
    #[error("journal batch {seq} holds an undecodable record")]
    UndecodableRecord { seq: u64 },
    /// The live path never journals a put of a present key: the journal is inconsistent.
    #[error("journal batch {seq} puts fragment {key}, which the index already holds")]
    PutOfPresentKey { seq: u64, key: FragmentId },
    #[error("journal replay ran past one full lap")]
    PastOneLap,
    /// A checksum-valid checkpoint whose position or sequence numbers the engine never
    /// writes (unaligned, or near overflow).
    #[error("checkpoint seq {seq} at journal position {pos} is impossible")]
    ImpossibleCheckpoint { seq: u64, pos: u64 },
    /// A batch lost in both copies while a later one survives: acknowledged writes would be
    /// dropped silently, so opening is refused.
    #[error(
        "journal batch {seq} is missing in both copies but batch {follows} follows (copy {copy})"
    )]
    MissingBatch {
        seq: u64,
        follows: u64,
        copy: JournalCopy,
    },
    #[error("index holds overlapping or out-of-region extents")]
    OverlappingExtents,
    /// Every valid checkpoint failed to replay: each one's sequence number and reason.
    #[error("{}", failures.iter().map(|(seq, e)| format!("seq {seq}: {e}")).collect::<Vec<_>>().join("; "))]
    NoCheckpointReplays { failures: Vec<(u64, RecoveryError)> },
    /// Recovery decided, but a repair it issued (a journal copy rewritten, a checkpoint
    /// written again) failed.
    #[error("repair after recovery: {0}")]
    Repair(PoisonCause),
    #[error("the shard thread exited while opening")]
    ShardThreadExited,
}
