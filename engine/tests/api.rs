//! The store's contract on good and bad input, on the simulated disk.

mod common;

use cess_engine::device::IoOp;
use cess_engine::{
    Class, FORMAT_VERSION, FormatError, FragmentId, Geometry, OpenError, OpenOptions, PutOutcome,
    SimDisk, Store, StoreError, Superblock, Target, format,
};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const DISK: u64 = 4 << 20;

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let (_disk, store) = sim_store(DISK, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (key, data) = fragment(&mut rng, 5000);
    let wrong = FragmentId([9; 32]);
    let err = store.put(wrong, Class::Active, &data).wait().unwrap_err();
    assert_eq!(
        err,
        StoreError::HashMismatch {
            expected: wrong,
            actual: key
        }
    );
    let (big_key, big) = fragment(&mut rng, (64 << 10) + 1);
    assert!(matches!(
        store.put(big_key, Class::Active, &big).wait(),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(
        store.get(key).wait().unwrap_err(),
        StoreError::NotFound(key)
    );
    assert_eq!(
        store.stats().unwrap().active_count,
        0,
        "nothing was written"
    );

    assert_eq!(
        store.put(key, Class::Active, &data).wait(),
        Ok(PutOutcome::Stored)
    );
    assert_eq!(
        store.put(key, Class::Idle, &data).wait(),
        Ok(PutOutcome::AlreadyPresent(Class::Active))
    );
    assert_eq!(
        store.stats().unwrap().active_count,
        1,
        "repeated put is idempotent"
    );

    assert!(matches!(
        store.read(key, 4990, 11).wait(),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.read(key, u64::MAX, 2).wait(),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.set_meta(key, &[0; 1025]).wait(),
        Err(StoreError::MetaTooLarge { .. })
    ));
    assert_eq!(store.delete(wrong).wait(), Ok(false));
}

#[test]
fn ranges_meta_list_and_exact_stats() {
    let (disk, store) = sim_store(DISK, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let frags: Vec<_> = (0..20).map(|i| fragment(&mut rng, i * 3001)).collect();
    for (i, (key, data)) in frags.iter().enumerate() {
        let class = if i % 3 == 0 {
            Class::Idle
        } else {
            Class::Active
        };
        store.put(*key, class, data).wait().unwrap();
    }
    let (key, data) = &frags[19];
    for (offset, len) in [
        (0, 1),
        (4095, 2),
        (4096, 4096),
        (100, 20_000),
        (data.len() - 7, 7),
        (data.len(), 0),
    ] {
        let got = store.read(*key, offset as u64, len as u64).wait().unwrap();
        assert_eq!(&*got, &data[offset..offset + len], "range {offset}+{len}");
    }
    // Batched range reads across fragments and shards come back in request order; a bad
    // one fails alone.
    let mut requests: Vec<(FragmentId, u64, u64)> = frags[1..]
        .iter()
        .map(|(k, d)| (*k, (d.len() / 3) as u64, (d.len() / 2) as u64))
        .collect();
    requests.push((*key, data.len() as u64 + 1, 1));
    assert!(
        store.read_many(&[], 4).is_empty(),
        "an empty batch is answered empty"
    );
    for in_flight in [1, 4, 64] {
        let results = store.read_many(&requests, in_flight);
        assert_eq!(results.len(), requests.len());
        for ((_, d), got) in frags[1..].iter().zip(&results) {
            assert_eq!(
                &**got.as_ref().unwrap(),
                &d[d.len() / 3..d.len() / 3 + d.len() / 2]
            );
        }
        assert!(results.last().unwrap().is_err());
    }
    store.set_meta(*key, b"tags").wait().unwrap();
    assert_eq!(store.meta(*key).wait().unwrap(), b"tags");
    let listed: Vec<_> = store.list().map(Result::unwrap).collect();
    assert_eq!(listed.len(), 20);
    let stats = store.stats().unwrap();
    let blocks = |len: usize| len.div_ceil(4096) as u64 * 4096;
    let idle: u64 = frags
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, (_, d))| blocks(d.len()))
        .sum();
    let active: u64 = frags
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, (_, d))| blocks(d.len()))
        .sum();
    assert_eq!((stats.idle_bytes, stats.active_bytes), (idle, active));
    assert_eq!(stats.free_bytes, stats.total_bytes - idle - active);
    assert_eq!((stats.idle_count, stats.active_count), (7, 13));
    drop(store);
    let store = reopen(&disk);
    assert_eq!(
        store.stats().unwrap(),
        stats,
        "the same figures after reopen"
    );
    assert_eq!(store.meta(*key).wait().unwrap(), b"tags");
}

#[test]
fn full_store_refuses_before_writing_and_replace_uses_the_reserve() {
    let (_disk, store) = sim_store(DISK, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut idle = Vec::new();
    let mut full_shards = std::collections::BTreeSet::new();
    while full_shards.len() < 2 {
        let (key, data) = fragment(&mut rng, 64 << 10);
        match store.put(key, Class::Idle, &data).wait() {
            Ok(_) => idle.push(key),
            Err(StoreError::NoSpace {
                shard,
                needed_bytes,
                free_bytes,
                ..
            }) => {
                assert!(needed_bytes > free_bytes);
                full_shards.insert(shard);
            }
            Err(e) => panic!("{e}"),
        }
    }
    let before = store.stats().unwrap();
    let (key, data) = fragment(&mut rng, 64 << 10);
    let err = store.put(key, Class::Idle, &data).wait().unwrap_err();
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert_eq!(
        store.stats().unwrap(),
        before,
        "a refused put changes nothing"
    );
    // Idle fill leaves one maximum-size object per shard free, so active data replaces idle.
    let mut replaced = 0;
    for idle_key in idle.iter().take(6) {
        let (key, data) = fragment(&mut rng, 64 << 10);
        store.replace_idle(*idle_key, key, &data).wait().unwrap();
        assert_eq!(*store.get(key).wait().unwrap(), data[..]);
        assert!(store.contains(*idle_key).wait().unwrap().is_none());
        replaced += 1;
    }
    let after = store.stats().unwrap();
    assert_eq!(after.active_count, replaced);
    assert_eq!(after.idle_count, before.idle_count - replaced);
    let (active_key, _) = (store
        .list()
        .find(|i| i.as_ref().unwrap().class == Class::Active))
    .unwrap()
    .map(|i| (i.key, ()))
    .unwrap();
    let (key, data) = fragment(&mut rng, 100);
    assert_eq!(
        store.replace_idle(active_key, key, &data).wait(),
        Err(StoreError::NotIdle(active_key))
    );
}

#[test]
fn format_and_open_refusals() {
    // Too small.
    let disk = SimDisk::new(64 << 10, 4);
    let err = format(&Target::Sim(disk), &small_options()).unwrap_err();
    assert!(
        matches!(err, FormatError::Geometry { .. }) && err.to_string().contains("too small"),
        "{err}"
    );

    // A file-system signature is refused unless forced.
    let disk = SimDisk::new(DISK, 5);
    let mut dev = disk.device();
    let mut block = cess_engine::AlignedBuf::zeroed(4096);
    block[0x438] = 0x53;
    block[0x439] = 0xEF;
    cess_engine::device::execute_one(dev.as_mut(), IoOp::write(0, block.as_blocks())).unwrap();
    let err = format(&Target::Sim(disk.clone()), &small_options()).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::ForeignSignature {
                found: "an ext2/ext3/ext4 file system",
                ..
            }
        ),
        "{err}"
    );
    let mut forced = small_options();
    forced.force = true;
    format(&Target::Sim(disk.clone()), &forced).unwrap();
    // Formatting over an existing store also needs force.
    let err = format(&Target::Sim(disk.clone()), &small_options()).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::ForeignSignature {
                found: "a CESS fragment store",
                ..
            }
        ),
        "{err}"
    );

    // Wrong identity.
    let err = Store::open(&Target::Sim(disk.clone()), &OpenOptions::new(OTHER_NODE)).unwrap_err();
    assert!(matches!(err, OpenError::WrongNode { .. }), "{err}");

    // Never formatted.
    let blank = SimDisk::new(DISK, 6);
    let err = Store::open(&Target::Sim(blank), &OpenOptions::new(NODE)).unwrap_err();
    assert!(matches!(err, OpenError::NotFormatted { .. }), "{err}");

    // A newer format version.
    let store = Store::open(&Target::Sim(disk.clone()), &OpenOptions::new(NODE)).unwrap();
    let mut newer: Superblock = store.superblock().clone();
    drop(store);
    newer.version = FORMAT_VERSION + 1;
    let block = cess_engine::AlignedBuf::copy_from(&newer.encode());
    for offset in Geometry::superblock_offsets(DISK) {
        cess_engine::device::execute_one(dev.as_mut(), IoOp::write(offset, block.as_blocks()))
            .unwrap();
    }
    let err = Store::open(&Target::Sim(disk), &OpenOptions::new(NODE)).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
}

#[test]
fn scrub_reports_progress_and_resumes_after_restart() {
    let (disk, store) = sim_store(DISK, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..16 {
        let (key, data) = fragment(&mut rng, 40_000);
        store.put(key, Class::Active, &data).wait().unwrap();
    }
    let first = store.scrub_step(50_000).unwrap();
    assert!(first.pass_verified_bytes > 0 && first.pass_verified_bytes < first.stored_bytes);
    assert_eq!(first.passes_completed, 0);
    drop(store);
    let store = reopen(&disk);
    let resumed = store.scrub_progress().unwrap();
    assert_eq!(
        resumed.pass_verified_bytes, first.pass_verified_bytes,
        "cursor survived the restart"
    );
    let mut last = resumed;
    while last.passes_completed == 0 {
        let next = store.scrub_step(50_000).unwrap();
        assert!(next.passes_completed > 0 || next.pass_verified_bytes > last.pass_verified_bytes);
        last = next;
    }
    assert!(last.corrupt.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn async_callers() {
    let (_disk, store) = sim_store(DISK, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (key, data) = fragment(&mut rng, 10_000);
    store.put(key, Class::Active, &data).await.unwrap();
    assert_eq!(*store.get(key).await.unwrap(), data[..]);
    assert!(store.delete(key).await.unwrap());
}

#[test]
fn concurrent_puts_commit_in_groups() {
    let (disk, store) = sim_store(DISK, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let frags: Vec<_> = (0..40).map(|_| fragment(&mut rng, 20_000)).collect();
    let ops_before = disk.ops_executed();
    // The disk stalls while the puts arrive (as a real one is slower than the callers), so
    // grouping does not depend on how the threads are scheduled.
    disk.hold();
    let pendings: Vec<_> = frags
        .iter()
        .map(|(k, d)| store.put(*k, Class::Active, d))
        .collect();
    disk.release();
    for p in pendings {
        p.wait().unwrap();
    }
    let ops = disk.ops_executed() - ops_before;
    // One put alone costs 4 device ops (data, flush, 2 journal copies, flush = 5). Grouped,
    // 40 puts must need far fewer than 40 × 5.
    assert!(
        ops < 40 * 5,
        "{ops} device ops for 40 puts: no group commit"
    );
    for (k, d) in &frags {
        assert_eq!(*store.get(*k).wait().unwrap(), d[..]);
    }
}

#[test]
fn put_buffers_are_reused_and_stale_bytes_never_reach_the_disk() {
    let (disk, store) = sim_store(16 << 20, 41);
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    // A full-block fragment, then a shorter one in the same-capacity buffer: its tail past
    // `len` must be zero on disk (checksums cover whole blocks), not the first one's bytes.
    let (k1, d1) = fragment(&mut rng, 3 * 4096);
    let mut b1 = store.buffer(d1.len());
    b1.copy_from_slice(&d1);
    let first_ptr = b1.as_ptr();
    store.put_buf(k1, Class::Active, b1).wait().unwrap();
    let (k2, d2) = fragment(&mut rng, 2 * 4096 + 100);
    let mut b2 = store.buffer(d2.len());
    assert_eq!(
        b2.as_ptr(),
        first_ptr,
        "the written buffer came back from the pool"
    );
    b2.copy_from_slice(&d2);
    store.put_buf(k2, Class::Active, b2).wait().unwrap();
    drop(store);
    let store = reopen(&disk);
    assert_eq!(&store.get(k1).wait().unwrap()[..], &d1[..]);
    assert_eq!(&store.get(k2).wait().unwrap()[..], &d2[..]);
    assert!(store.scrub_step(u64::MAX).unwrap().corrupt.is_empty());
    let at = find_on_disk(&disk, 16 << 20, &d2);
    let tail = disk.peek(at + d2.len() as u64, 4096 - 100);
    assert!(
        tail.iter().all(|&b| b == 0),
        "stale bytes after the fragment"
    );
}

#[test]
fn read_buffers_are_reused_and_only_ever_hold_the_bytes_asked_for() {
    let (_disk, store) = sim_store(16 << 20, 43);
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let (k1, d1) = fragment(&mut rng, 5 * 4096);
    let (k2, d2) = fragment(&mut rng, 5 * 4096);
    store.put(k1, Class::Active, &d1).wait().unwrap();
    store.put(k2, Class::Active, &d2).wait().unwrap();
    let first = store.read(k1, 4096 + 10, 6000).wait().unwrap();
    assert_eq!(&first[..], &d1[4096 + 10..4096 + 6010]);
    let first_ptr = first.as_ptr();
    drop(first);
    // The same span of another fragment lands in the same buffer, filled with its own bytes.
    let second = store.read(k2, 4096 + 10, 6000).wait().unwrap();
    assert_eq!(
        second.as_ptr(),
        first_ptr,
        "the dropped read's buffer was reused"
    );
    assert_eq!(&second[..], &d2[4096 + 10..4096 + 6010]);
    // Taken apart, a buffer leaves the pool's hands; the bytes are still the right ones.
    let (buf, range) = second.into_parts();
    assert_eq!(&buf[range], &d2[4096 + 10..4096 + 6010]);
}

/// Issue 22, item 6: 32 concurrent 16 KiB `set_meta` calls on a 128 KiB journal. Before, the
/// shard put them all in one round whose records exceeded half the journal and its thread
/// died on an assertion (every later call on that shard failed). Now a round takes what fits
/// and the rest follow in the next rounds; all succeed, and the metadata reads back after a
/// reopen.
#[test]
fn a_burst_of_large_metadata_writes_never_kills_a_shard() {
    let disk = SimDisk::new(16 << 20, 31);
    let target = Target::Sim(disk.clone());
    let mut options = small_options();
    options.max_meta_bytes = 16 << 10;
    options.journal_bytes = Some(128 << 10);
    options.checkpoint_bytes = Some(1 << 20);
    format(&target, &options).expect("format");
    let store = Store::open(&target, &OpenOptions::new(NODE)).expect("open");
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let frags: Vec<_> = (0..32).map(|_| fragment(&mut rng, 4096)).collect();
    for (k, d) in &frags {
        store.put(*k, Class::Active, d).wait().unwrap();
    }
    let metas: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 16 << 10]).collect();
    let pendings: Vec<_> = frags
        .iter()
        .zip(&metas)
        .map(|((k, _), m)| store.set_meta(*k, m))
        .collect();
    for p in pendings {
        p.wait().unwrap();
    }
    // The shards are alive and answer.
    store.stats().unwrap();
    drop(store);
    let store = reopen(&disk);
    for ((k, _), m) in frags.iter().zip(&metas) {
        assert_eq!(&store.meta(*k).wait().unwrap()[..], &m[..]);
    }
}

/// A full shard queue is backpressure for blocking callers only: an async caller's call
/// returns at once, its request waits inside its `Pending` and goes as soon as the shard takes
/// requests again; nothing is lost or reordered per key.
#[test]
fn a_full_shard_queue_never_blocks_an_async_caller() {
    let disk = SimDisk::new(DISK, 5);
    let target = Target::Sim(disk.clone());
    format(&target, &small_options()).unwrap();
    let mut options = OpenOptions::new(NODE);
    options.queue_depth = 2;
    let store = std::sync::Arc::new(Store::open(&target, &options).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let fragments: Vec<(FragmentId, Vec<u8>)> = (0..64).map(|_| fragment(&mut rng, 8192)).collect();
    disk.hold();
    let (made_tx, made_rx) = std::sync::mpsc::channel();
    let worker = {
        let (store, fragments) = (store.clone(), fragments.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // 64 calls to stalled shards with room for 2 each: made without waiting.
                let pendings: Vec<_> = fragments
                    .iter()
                    .map(|(key, data)| store.put(*key, Class::Active, data))
                    .collect();
                made_tx.send(()).unwrap();
                for pending in pendings {
                    pending.await.unwrap();
                }
            });
        })
    };
    let made = made_rx.recv_timeout(std::time::Duration::from_secs(10));
    disk.release();
    assert!(
        made.is_ok(),
        "an async caller blocked on a full shard queue"
    );
    worker.join().unwrap();
    for (key, data) in &fragments {
        assert_eq!(&store.get(*key).wait().unwrap()[..], &data[..]);
    }
}

/// A replace whose two keys live in different shards is three steps; awaited on a runtime it
/// neither blocks the runtime's thread nor panics.
#[test]
fn a_replace_across_shards_is_awaited_on_a_runtime() {
    let (_disk, store) = sim_store(DISK, 6);
    let shards = small_options().shard_count;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (idle_key, idle) = fragment(&mut rng, 4096);
    store.put(idle_key, Class::Idle, &idle).wait().unwrap();
    let (key, data) = loop {
        let (key, data) = fragment(&mut rng, 6000);
        if cess_engine::shard_of(&key, shards) != cess_engine::shard_of(&idle_key, shards) {
            break (key, data);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(async { store.replace_idle(idle_key, key, &data).await })
        .unwrap();
    assert_eq!(store.contains(idle_key).wait().unwrap(), None);
    assert_eq!(&store.get(key).wait().unwrap()[..], &data[..]);
    // And refused as before when the first key is not idle.
    let (other_key, other) = loop {
        let (k, d) = fragment(&mut rng, 5000);
        if cess_engine::shard_of(&k, shards) != cess_engine::shard_of(&key, shards) {
            break (k, d);
        }
    };
    assert_eq!(
        runtime.block_on(async { store.replace_idle(key, other_key, &other).await }),
        Err(StoreError::NotIdle(key))
    );
}

/// Scenario: a stats request in the same round as a put saw the put's blocks allocated but
/// not yet counted, and the shard's invariant check (free + active + idle = total) killed the
/// shard thread; every later call answered `Closed` (found by a node polled for its status
/// during an upload). Stats are answered after the round's commit.
#[test]
fn stats_asked_while_puts_are_in_flight_see_a_consistent_shard() {
    let (_disk, store) = sim_store(DISK, 41);
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for _ in 0..40 {
        let pending: Vec<_> = (0..6)
            .map(|_| {
                let (key, data) = fragment(&mut rng, 9000);
                (key, store.put(key, Class::Active, &data))
            })
            .collect();
        let stats = store.stats().expect("the shard lives");
        assert_eq!(
            stats.active_bytes + stats.idle_bytes + stats.free_bytes,
            stats.total_bytes
        );
        for (key, put) in pending {
            put.wait().unwrap();
            store.delete(key).wait().unwrap();
        }
    }
}
