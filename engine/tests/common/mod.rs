//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use cess_engine::{
    Class, FormatOptions, FragmentId, NodeId, OpenOptions, SimDisk, Store, Target, format,
};
use rand::{Rng, RngCore};

pub const NODE: NodeId = NodeId([0x11; 32]);
pub const OTHER_NODE: NodeId = NodeId([0x22; 32]);

/// Small geometry so journals wrap and checkpoints happen often.
pub fn small_options() -> FormatOptions {
    let mut o = FormatOptions::new(NODE);
    o.shard_count = 2;
    o.max_object_bytes = 64 << 10;
    o.max_meta_bytes = 1024;
    o.journal_bytes = Some(64 << 10);
    o.checkpoint_bytes = Some(64 << 10);
    o.store_id = Some([0x5a; 16]);
    o
}

pub fn sim_store(len_bytes: u64, seed: u64) -> (SimDisk, Store) {
    let disk = SimDisk::new(len_bytes, seed);
    let target = Target::Sim(disk.clone());
    format(&target, &small_options()).expect("format");
    let store = Store::open(&target, &OpenOptions::new(NODE)).expect("open");
    (disk, store)
}

pub fn reopen(disk: &SimDisk) -> Store {
    Store::open(&Target::Sim(disk.clone()), &OpenOptions::new(NODE)).expect("reopen")
}

pub fn fragment(rng: &mut impl RngCore, len: usize) -> (FragmentId, Vec<u8>) {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    (FragmentId::of(&data), data)
}

pub fn random_class(rng: &mut impl Rng) -> Class {
    if rng.random_bool(0.5) {
        Class::Active
    } else {
        Class::Idle
    }
}

/// Offset of `needle` on the simulated disk (to aim at-rest faults at a fragment).
pub fn find_on_disk(disk: &SimDisk, len_bytes: u64, needle: &[u8]) -> u64 {
    let image = disk.peek(0, len_bytes as usize);
    let probe = &needle[..needle.len().min(256)];
    let block = image
        .chunks(cess_engine::BLOCK_BYTES)
        .position(|c| c.starts_with(probe))
        .expect("fragment bytes are on the disk");
    (block * cess_engine::BLOCK_BYTES) as u64
}
