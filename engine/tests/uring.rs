//! The io_uring backend with O_DIRECT on a real file, and on a loop device when root.

mod common;

use cess_engine::{Class, FormatOptions, OpenOptions, Store, Target, format};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;

fn exercise(path: &Path) {
    let target = Target::Path(path.to_path_buf());
    let mut options = FormatOptions::new(NODE);
    options.shard_count = 2;
    options.force = true; // The loop device's backing file may hold an earlier run's store.
    format(&target, &options).expect("format");
    let store = Store::open(&target, &OpenOptions::new(NODE)).expect("open");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let sizes = [0usize, 1, 4095, 4096, 4097, 1 << 20, 8 << 20];
    let frags: Vec<_> = sizes.iter().map(|&n| fragment(&mut rng, n)).collect();
    let pendings: Vec<_> = frags
        .iter()
        .map(|(k, d)| store.put(*k, Class::Active, d))
        .collect();
    for p in pendings {
        p.wait().expect("put");
    }
    for (key, data) in &frags {
        assert!(*store.get(*key).wait().expect("get") == data[..]);
    }
    let (key, data) = &frags[6];
    assert_eq!(
        &*store.read(*key, 8191, 8194).wait().unwrap(),
        &data[8191..16385]
    );
    // A batch across fragments and shards, deeper than some shards' share, with a read past
    // the end and one of an absent key failing alone.
    let mut reads: Vec<_> = frags
        .iter()
        .map(|(k, d)| (*k, (d.len() / 3) as u64, (d.len() / 2) as u64))
        .collect();
    reads.push((*key, data.len() as u64, 1));
    reads.push((fragment(&mut rng, 3).0, 0, 1));
    for depth in [1, 3, 64] {
        let answers: Vec<_> = store
            .read_batch(&reads, depth)
            .into_iter()
            .map(|p| p.wait())
            .collect();
        for ((_, d), got) in frags.iter().zip(&answers) {
            assert!(**got.as_ref().expect("batched read") == d[d.len() / 3..][..d.len() / 2]);
        }
        assert!(matches!(
            answers[frags.len()],
            Err(cess_engine::StoreError::OutOfRange { .. })
        ));
        assert!(matches!(
            answers[frags.len() + 1],
            Err(cess_engine::StoreError::NotFound(_))
        ));
    }
    // Far deeper than the ring (128 submissions, 256 completions): more reads are in the
    // kernel than the completion queue holds, and none is lost.
    let deep: Vec<_> = (0..1500u64)
        .map(|i| (*key, (i * 7919 * 512) % (data.len() as u64 - 4096), 4096))
        .collect();
    for (got, &(_, offset, len)) in store.read_batch(&deep, 1000).into_iter().zip(&deep) {
        let got = got.wait().expect("deep batched read");
        assert!(*got == data[offset as usize..][..len as usize]);
    }
    let stats = store.stats().unwrap();
    drop(store);
    let store = Store::open(&target, &OpenOptions::new(NODE)).expect("reopen");
    assert_eq!(store.stats().unwrap(), stats);
    for (key, data) in &frags {
        assert!(*store.get(*key).wait().expect("get after reopen") == data[..]);
    }
    assert_eq!(store.scrub_step(u64::MAX).unwrap().corrupt, vec![]);
}

#[test]
fn uring_on_a_file_with_o_direct() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("store.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    exercise(&path);
}

/// Streamed reads run beside rounds that delete and rewrite fragments: every read returns the
/// exact bytes or NotFound, never another fragment's bytes (which would surface as Corrupt).
#[test]
fn uring_streamed_reads_race_deletes_and_puts() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("store.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    let target = Target::Path(path.clone());
    let mut options = FormatOptions::new(NODE);
    options.shard_count = 2;
    format(&target, &options).expect("format");
    let store = std::sync::Arc::new(Store::open(&target, &OpenOptions::new(NODE)).expect("open"));
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let frags: std::sync::Arc<Vec<_>> =
        std::sync::Arc::new((0..48).map(|_| fragment(&mut rng, 256 << 10)).collect());
    for (k, d) in frags.iter() {
        store.put(*k, Class::Active, d).wait().expect("put");
    }
    let churn = {
        let (store, frags) = (store.clone(), frags.clone());
        std::thread::spawn(move || {
            // Delete and rewrite the first half over and over; freed extents get reused.
            for round in 0..20 {
                for (k, d) in frags.iter().take(24).skip(round % 2) {
                    store.delete(*k).wait().expect("delete");
                    store.put(*k, Class::Active, d).wait().expect("put back");
                }
            }
        })
    };
    let mut checked = 0;
    let mut sweep = 0;
    while !churn.is_finished() || checked < 2 * frags.len() {
        // Single reads and batches (whose reads start as earlier ones finish) take turns.
        let reads: Vec<_> = frags
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, (i as u64 % 60) * 4096, 8192))
            .collect();
        let pendings: Vec<_> = if sweep % 2 == 0 {
            reads.iter().map(|&(k, o, l)| store.read(k, o, l)).collect()
        } else {
            store.read_batch(&reads, 1 + sweep % 7)
        };
        sweep += 1;
        for (i, p) in pendings.into_iter().enumerate() {
            let at = (i % 60) * 4096;
            match p.wait() {
                Ok(bytes) => assert!(*bytes == frags[i].1[at..at + 8192], "fragment {i}"),
                Err(cess_engine::StoreError::NotFound(_)) => assert!(i < 24),
                Err(e) => panic!("read of fragment {i}: {e}"),
            }
            checked += 1;
        }
    }
    churn.join().unwrap();
    assert_eq!(store.stats().unwrap().read_verify_failures, 0);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn uring_on_a_loop_device() {
    if !is_root() {
        println!("SKIPPED uring_on_a_loop_device: not root, cannot attach a loop device");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let backing = dir.path().join("loop.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(&backing)
        .output()
        .expect("running losetup (package mount/util-linux)");
    assert!(
        out.status.success(),
        "root but cannot attach a loop device: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(device.clone());
    println!("loop device {device}");
    exercise(Path::new(&device));
}
