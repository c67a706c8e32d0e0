//! One test per fault kind of eco-reliability §B5: each is detected, corrupt bytes are never
//! returned, and no acknowledged data is lost where the fault leaves one good copy.

mod common;

use cess_engine::{
    Class, FragmentId, Geometry, OpenError, OpenOptions, PoisonCause, RecoveryError, SimDisk,
    SimFaults, Store, StoreError, Target,
};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const DISK: u64 = 4 << 20;

fn filled(seed: u64, count: usize) -> (SimDisk, Store, Vec<(FragmentId, Vec<u8>)>) {
    let (disk, store) = sim_store(DISK, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let frags: Vec<_> = (0..count)
        .map(|i| fragment(&mut rng, 20_000 + i * 1000))
        .collect();
    for (key, data) in &frags {
        store.put(*key, Class::Active, data).wait().expect("put");
    }
    (disk, store, frags)
}

/// Every read either returns exactly the stored bytes or an error; counts the errors.
fn read_all(store: &Store, frags: &[(FragmentId, Vec<u8>)]) -> usize {
    let mut errors = 0;
    for (key, data) in frags {
        match store.get(*key).wait() {
            Ok(bytes) => assert!(*bytes == data[..], "wrong bytes returned for {key}"),
            Err(StoreError::Corrupt { .. } | StoreError::ReadFailed { .. }) => errors += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    errors
}

fn shard_regions() -> Vec<cess_engine::layout::ShardRegions> {
    let sb = {
        let (_, store) = sim_store(DISK, 0);
        store.superblock().clone()
    };
    sb.geometry.shards()
}

#[test]
fn bit_flip_at_rest_is_detected_and_localised() {
    let (disk, store, frags) = filled(1, 4);
    let (key, data) = &frags[0];
    let at = find_on_disk(&disk, DISK, data);
    disk.flip_bit(at + 3 * 4096 + 17, 5);
    assert!(matches!(
        store.get(*key).wait(),
        Err(StoreError::Corrupt { block: 3, .. })
    ));
    // A range read that avoids the damaged block still succeeds: checksums are per block.
    assert_eq!(&*store.read(*key, 0, 4096).wait().unwrap(), &data[..4096]);
    assert!(matches!(
        store.read(*key, 3 * 4096 + 10, 5).wait(),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.stats().unwrap().read_verify_failures, 2);
    let progress = store.scrub_step(u64::MAX).unwrap();
    assert_eq!(progress.corrupt, vec![*key]);
    assert_eq!(read_all(&store, &frags[1..]), 0);
}

#[test]
fn read_bit_flips_and_garbage_sectors_are_never_returned() {
    for faults in [
        SimFaults {
            read_bit_flip: 1.0,
            ..SimFaults::default()
        },
        SimFaults {
            read_sector_garbage: 1.0,
            ..SimFaults::default()
        },
        SimFaults {
            misdirected_read: 1.0,
            ..SimFaults::default()
        },
    ] {
        let (disk, store, frags) = filled(2, 6);
        disk.set_faults(faults.clone());
        assert_eq!(read_all(&store, &frags), frags.len(), "{faults:?}");
        disk.set_faults(SimFaults::default());
        assert_eq!(
            read_all(&store, &frags),
            0,
            "transient read faults lose nothing"
        );
        assert!(store.stats().unwrap().read_verify_failures >= frags.len() as u64);
    }
}

#[test]
fn misdirected_write_and_copied_chunk_are_detected() {
    // A valid-looking chunk from elsewhere (Jepsen's `copy`): the checksum, kept apart from
    // the block, does not match.
    let (disk, store, frags) = filled(3, 3);
    let from = find_on_disk(&disk, DISK, &frags[0].1);
    let to = find_on_disk(&disk, DISK, &frags[1].1);
    disk.copy_at_rest(from, to, 4096);
    assert!(matches!(
        store.get(frags[1].0).wait(),
        Err(StoreError::Corrupt { block: 0, .. })
    ));

    // A misdirected write: the target keeps old bytes, which fail their checksums.
    let (disk, store, _) = filled(4, 1);
    disk.set_faults(SimFaults {
        misdirected_write: 1.0,
        ..SimFaults::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    let (key, data) = fragment(&mut rng, 30_000);
    store
        .put(key, Class::Active, &data)
        .wait()
        .expect("the device reported success");
    disk.set_faults(SimFaults::default());
    match store.get(key).wait() {
        Ok(bytes) => panic!(
            "misdirected write went unnoticed ({} bytes returned)",
            bytes.len()
        ),
        Err(e) => assert!(matches!(e, StoreError::Corrupt { .. }), "{e}"),
    }
}

#[test]
fn lost_write_is_detected() {
    let (disk, store, frags) = filled(5, 2);
    disk.set_faults(SimFaults {
        lost_write: 1.0,
        ..SimFaults::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let (key, data) = fragment(&mut rng, 12_345);
    store
        .put(key, Class::Idle, &data)
        .wait()
        .expect("the device reported success");
    disk.set_faults(SimFaults::default());
    assert!(matches!(
        store.get(key).wait(),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, &frags), 0);
}

#[test]
fn write_error_poisons_the_shard_and_loses_nothing_acknowledged() {
    let (disk, store, frags) = filled(6, 5);
    disk.set_faults(SimFaults {
        write_error: 1.0,
        ..SimFaults::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(60);
    let (key, data) = fragment(&mut rng, 9_000);
    let err = store.put(key, Class::Active, &data).wait().unwrap_err();
    // The error says why: the data write failed, with the device's error kind.
    assert!(
        matches!(
            err,
            StoreError::Poisoned {
                cause: PoisonCause::DataWrite { .. },
                ..
            }
        ),
        "{err}"
    );
    disk.set_faults(SimFaults::default());
    // Still refused: the shard does not trust its device until reopened.
    let again = store.put(key, Class::Active, &data).wait().unwrap_err();
    assert!(matches!(again, StoreError::Poisoned { .. }));
    assert_eq!(read_all(&store, &frags), 0, "reads keep working");
    assert_eq!(store.stats().unwrap().poisoned_shards, 1);
    drop(store);
    let store = reopen(&disk);
    assert_eq!(read_all(&store, &frags), 0);
    store
        .put(key, Class::Active, &data)
        .wait()
        .expect("writes work after reopen");
}

#[test]
fn flush_error_and_read_error() {
    let (disk, store, frags) = filled(7, 3);
    disk.set_faults(SimFaults {
        flush_error: 1.0,
        ..SimFaults::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(70);
    let (key, data) = fragment(&mut rng, 9_000);
    let err = store.put(key, Class::Active, &data).wait().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Poisoned {
                cause: PoisonCause::DataFlush(_),
                ..
            }
        ),
        "{err}"
    );
    disk.set_faults(SimFaults {
        read_error: 1.0,
        ..SimFaults::default()
    });
    assert!(matches!(
        store.get(frags[0].0).wait(),
        Err(StoreError::ReadFailed { .. })
    ));
    disk.set_faults(SimFaults::default());
    assert_eq!(read_all(&store, &frags), 0);
}

#[test]
fn disk_full_at_an_arbitrary_write() {
    for space_left in [0u64, 4096, 20_000, 60_000] {
        let (disk, store, frags) = filled(8, 3);
        disk.set_space_left(Some(space_left));
        let mut rng = ChaCha8Rng::seed_from_u64(80 + space_left);
        let mut failed = false;
        for _ in 0..6 {
            let (key, data) = fragment(&mut rng, 30_000);
            if store.put(key, Class::Active, &data).wait().is_err() {
                failed = true;
            }
        }
        assert!(
            failed,
            "ENOSPC after {space_left} bytes surfaced as an error"
        );
        disk.set_space_left(None);
        drop(store);
        let store = reopen(&disk);
        assert_eq!(read_all(&store, &frags), 0);
    }
}

#[test]
fn one_superblock_copy_corrupted_still_opens_and_is_repaired() {
    let (disk, store, frags) = filled(9, 2);
    drop(store);
    for (copy, offset) in Geometry::superblock_offsets(DISK).into_iter().enumerate() {
        disk.flip_bit(offset + 40, 1);
        let store = reopen(&disk);
        assert_eq!(read_all(&store, &frags), 0, "copy {copy}");
        drop(store);
        // Repaired on open: the copy is intact again.
        let block = disk.peek(offset, 4096);
        assert!(
            cess_engine::Superblock::decode(&block).is_ok(),
            "copy {copy} repaired"
        );
    }
    for offset in Geometry::superblock_offsets(DISK) {
        disk.flip_bit(offset + 40, 1);
    }
    let err = Store::open(&Target::Sim(disk.clone()), &OpenOptions::new(NODE)).unwrap_err();
    assert!(
        matches!(err, OpenError::SuperblockCorrupt { copies: 4, .. }),
        "{err}"
    );
}

#[test]
fn metadata_corruption_with_one_good_copy_loses_nothing() {
    let regions = shard_regions();
    // One journal copy damaged everywhere: the other copy carries every batch.
    for damage_b in [false, true] {
        let (disk, store, frags) = filled(10, 6);
        drop(store);
        for r in &regions {
            let base = if damage_b { r.journal_b } else { r.journal_a };
            for block in 0..(r.journal_bytes / 4096) {
                disk.flip_bit(base + block * 4096 + 130, 0);
            }
        }
        let store = reopen(&disk);
        assert_eq!(read_all(&store, &frags), 0);
        drop(store);
        // The damaged copy was rewritten at open: damage the other copy and still recover.
        for r in &regions {
            let base = if damage_b { r.journal_a } else { r.journal_b };
            for block in 0..(r.journal_bytes / 4096) {
                disk.flip_bit(base + block * 4096 + 130, 0);
            }
        }
        let store = reopen(&disk);
        assert_eq!(read_all(&store, &frags), 0);
    }

    // The newest checkpoint corrupted: the older one plus the retained journal recover.
    let (disk, store, frags) = filled(11, 6);
    store.checkpoint().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(110);
    let more: Vec<_> = (0..4).map(|_| fragment(&mut rng, 5_000)).collect();
    for (key, data) in &more {
        store.put(*key, Class::Idle, data).wait().unwrap();
    }
    store.checkpoint().unwrap();
    drop(store);
    for r in &regions {
        for slot in r.checkpoints {
            let header = disk.peek(slot, 64);
            // Only the slot with the higher sequence number (bytes 32..40) is damaged.
            let other = if slot == r.checkpoints[0] {
                r.checkpoints[1]
            } else {
                r.checkpoints[0]
            };
            let seq = |h: &[u8]| u64::from_le_bytes(h[32..40].try_into().unwrap());
            if seq(&header) > seq(&disk.peek(other, 64)) {
                disk.flip_bit(slot + 200, 3);
            }
        }
    }
    let store = reopen(&disk);
    assert_eq!(read_all(&store, &frags), 0);
    assert_eq!(read_all(&store, &more), 0);
}

#[test]
fn a_batch_lost_in_both_journal_copies_refuses_to_open() {
    let regions = shard_regions();
    let (disk, store, _) = filled(12, 8);
    drop(store);
    // Damage the first batch of shard 0 in both copies while later batches survive.
    let r = &regions[0];
    disk.flip_bit(r.journal_a + 130, 0);
    disk.flip_bit(r.journal_b + 130, 0);
    let err = Store::open(&Target::Sim(disk.clone()), &OpenOptions::new(NODE)).unwrap_err();
    let OpenError::Metadata {
        shard: 0,
        cause: RecoveryError::NoCheckpointReplays { failures },
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert!(
        failures
            .iter()
            .all(|(_, e)| matches!(e, RecoveryError::MissingBatch { .. })),
        "{err}"
    );
}

#[test]
fn torn_writes_at_crash_keep_acknowledged_data() {
    for seed in 0..40 {
        let (disk, store, frags) = filled(100 + seed, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (key, data) = fragment(&mut rng, 40_000);
        disk.crash_after_ops(seed % 5);
        let acked = store.put(key, Class::Active, &data).wait().is_ok();
        disk.crash_now();
        drop(store);
        disk.restart();
        let store = reopen(&disk);
        assert_eq!(read_all(&store, &frags), 0, "seed {seed}");
        match store.get(key).wait() {
            Ok(bytes) => assert!(*bytes == data[..]),
            Err(StoreError::NotFound(_)) => assert!(!acked, "seed {seed}: acknowledged put lost"),
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
}
