//! Typed errors at the engine's boundary: one enum per kind of call.

use crate::layout::NodeId;
use crate::types::Key;
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
    #[error("{target}: shard {shard} metadata is unrecoverable: {detail}")]
    Metadata {
        target: String,
        shard: u32,
        detail: String,
    },
}

/// Why a data operation (put, get, read, delete, …) failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No fragment with this key.
    #[error("fragment {0} not found")]
    NotFound(Key),
    /// The bytes do not hash to the key they were put under.
    #[error("fragment bytes hash to {actual}, not to the key {expected}")]
    HashMismatch { expected: Key, actual: Key },
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
    Corrupt { key: Key, block: u64 },
    /// A read failed at the device.
    #[error("read of fragment {key} failed: {reason}")]
    ReadFailed { key: Key, reason: String },
    /// An earlier write or flush failed; the shard refuses writes until reopened.
    #[error("shard {shard} refuses writes after an earlier failure: {reason}")]
    Poisoned { shard: u32, reason: String },
    /// A helper thread could not be started (the process is out of threads or memory).
    #[error("could not start a helper thread: {0}")]
    Thread(String),
    /// Replace named a fragment that is not idle.
    #[error("fragment {0} is not an idle fragment")]
    NotIdle(Key),
    /// A range outside the fragment.
    #[error("range {offset}+{len_bytes} is outside fragment {key} of {fragment_bytes} bytes")]
    OutOfRange {
        key: Key,
        offset: u64,
        len_bytes: u64,
        fragment_bytes: u64,
    },
    /// The store is shutting down or its shard thread is gone.
    #[error("store is closed")]
    Closed,
}
