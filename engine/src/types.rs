//! The public vocabulary of the store: fragment ids (the keys), classes, stats, progress.

use std::fmt;

pub use cess_types::FragmentId;

/// The shard a fragment lives in: ids are uniform, so any 8 bytes spread them evenly.
pub fn shard_of(key: &FragmentId, shard_count: u32) -> u32 {
    let prefix = u64::from_le_bytes(key.0[..8].try_into().expect("8 bytes"));
    (prefix % u64::from(shard_count)) as u32
}

/// What a fragment is for; the two classes are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// User data under a storage order.
    Active,
    /// Space-proof (PoIS) filler, replaceable by active data.
    Idle,
}

impl Class {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Class::Active => 1,
            Class::Idle => 2,
        }
    }
    pub(crate) fn from_byte(b: u8) -> Option<Class> {
        match b {
            1 => Some(Class::Active),
            2 => Some(Class::Idle),
            _ => None,
        }
    }
}

/// The result of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written and durable.
    Stored,
    /// Already present (puts are idempotent); nothing was written. Holds the stored class.
    AlreadyPresent(Class),
}

/// A listed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    pub key: FragmentId,
    pub class: Class,
    pub len_bytes: u64,
    pub meta_len_bytes: u32,
}

/// Space and health figures. Byte figures count allocated space (whole 4 KiB blocks), so
/// `active_bytes + idle_bytes + free_bytes == total_bytes` always holds exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub active_bytes: u64,
    pub idle_bytes: u64,
    pub active_count: u64,
    pub idle_count: u64,
    /// Sum of the fragments' own lengths (without block rounding).
    pub active_logical_bytes: u64,
    pub idle_logical_bytes: u64,
    /// Reads whose bytes failed verification since open (they returned an error).
    pub read_verify_failures: u64,
    /// Shards that refuse writes after a write or flush failure.
    pub poisoned_shards: u32,
}

impl Stats {
    pub(crate) fn add(&mut self, other: &Stats) {
        self.total_bytes += other.total_bytes;
        self.free_bytes += other.free_bytes;
        self.active_bytes += other.active_bytes;
        self.idle_bytes += other.idle_bytes;
        self.active_count += other.active_count;
        self.idle_count += other.idle_count;
        self.active_logical_bytes += other.active_logical_bytes;
        self.idle_logical_bytes += other.idle_logical_bytes;
        self.read_verify_failures += other.read_verify_failures;
        self.poisoned_shards += other.poisoned_shards;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total {} B, free {} B, active {} B in {} fragments, idle {} B in {} fragments, \
             {} failed verifications, {} poisoned shards",
            self.total_bytes,
            self.free_bytes,
            self.active_bytes,
            self.active_count,
            self.idle_bytes,
            self.idle_count,
            self.read_verify_failures,
            self.poisoned_shards
        )
    }
}

/// Where the background scrub stands, summed over shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubProgress {
    /// Completed full passes (the minimum over shards).
    pub passes_completed: u64,
    /// Bytes verified in the current pass, and the bytes stored.
    pub pass_verified_bytes: u64,
    pub stored_bytes: u64,
    /// Fragments found corrupt since open.
    pub corrupt: Vec<FragmentId>,
}
