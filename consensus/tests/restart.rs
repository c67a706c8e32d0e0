//! Validators that restart (issue 21, the block store and the write-ahead log): four
//! validators on loopback, each keeping its committed blocks and its consensus log on disk; one is killed (its runtime dropped mid-stride) and
//! started again from its store at the same address. It resumes at the height its disk holds
//! (not at genesis) before it hears from anyone, commits again with the others, and a
//! follower that can ask only it syncs from block 1: heights it no longer keeps in memory
//! come from its store. The follower keeps what it applied in its own store and, restarted,
//! resumes there.

use cess_consensus::bft::CoreConfig;
use cess_consensus::ledger::{Ledger, LedgerParams};
use cess_consensus::net::{self, ValidatorHandle};
use cess_consensus::sim::genesis;
use cess_consensus::store::{self, BlockStore, DiskError, OpenedDisk, StoreError};
use cess_consensus::wal::WalError;
use cess_transport::{NodeAddr, NodeKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Opens a store, waiting while a killed validator's writer thread still holds it.
fn open_store(path: &Path, ledger: &Ledger) -> BlockStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match BlockStore::open(path, &ledger.chain_id()) {
            Ok((store, _)) => return store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Opens a validator's disk, waiting while a killed validator's loop or store thread still
/// holds one of its files.
fn open_disk(dir: &Path, ledger: &Ledger, keep: usize) -> OpenedDisk {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store::open_disk(dir, ledger.clone(), keep, true) {
            Ok(opened) => return opened,
            Err(
                DiskError::Store(StoreError::Locked { .. })
                | DiskError::Wal(WalError::Locked { .. }),
            ) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Waits on `handle`'s commits until one of at least `height`.
fn wait_height(rt: &tokio::runtime::Runtime, handle: &ValidatorHandle, height: u64) {
    let mut commits = handle.commits();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(c) = commits.recv().await {
                if c.height >= height {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no commit of height {height} within 60 s"));
    });
}

#[test]
fn a_killed_validator_resumes_from_its_disk_and_serves_old_blocks_from_it() {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, _) = genesis(4, 1, 21, params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let config = CoreConfig {
        empty_block_interval_ms: 100,
        ..CoreConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("cess-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let d = dir.join(format!("v{i}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let sockets: Vec<_> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<NodeAddr> = sockets
        .iter()
        .zip(&keys)
        .map(|(s, (account, _))| NodeAddr {
            socket: s.local_addr().unwrap(),
            peer: account.id().peer_id().unwrap(),
        })
        .collect();
    drop(sockets);
    let peers_of = |i: usize| -> Vec<NodeAddr> {
        (0..4)
            .filter(|j| *j != i)
            .map(|j| addrs[j].clone())
            .collect()
    };
    let start = |rt: &tokio::runtime::Runtime, i: usize, keep: usize| -> (ValidatorHandle, u64) {
        let opened = open_disk(&dirs[i], &ledger, keep);
        let height = opened.disk.store.height();
        assert_eq!(
            opened.restored.ledger.height(),
            height,
            "the ledger is the store's"
        );
        let (account, validator_key) = &keys[i];
        let (core, disk) = opened
            .into_core(validator_key.clone(), account.id(), config.clone())
            .unwrap();
        let node_key = Arc::new(NodeKey::from_ed25519(account.ed25519().clone()));
        let handle = rt.block_on(async {
            net::start_with_store(core, node_key, addrs[i].socket, peers_of(i), Some(disk)).unwrap()
        });
        (handle, height)
    };
    let runtimes: Vec<_> = (0..4).map(|_| runtime()).collect();
    let mut handles: Vec<ValidatorHandle> = (0..4).map(|i| start(&runtimes[i], i, 256).0).collect();
    wait_height(&runtimes[1], &handles[1], 8);

    // Killed: every task of validator 0 stops where it is.
    let mut runtimes = runtimes;
    drop(handles.remove(0));
    runtimes.remove(0).shutdown_background();
    let rt0 = runtime();
    // Resumed from disk, keeping only its last 2 blocks in memory.
    let (handle0, resumed) = start(&rt0, 0, 2);
    assert!(resumed >= 5, "the store held {resumed} blocks");
    let report = handle0.stats().report.lock().unwrap().height;
    assert!(
        report == 0 || report > resumed,
        "resumed at genesis: {report}"
    );
    // It commits again with the others.
    wait_height(&rt0, &handle0, resumed + 3);

    // A follower that may ask only validator 0 gets block 1 on: from its store. It keeps
    // what it applies in a store of its own.
    let follower_blocks = dir.join("follower.blocks");
    let follower_key = Arc::new(NodeKey::generate());
    let follower = rt0.block_on(async {
        let tip = handle0.stats().report.lock().unwrap().height;
        let (blocks, _) = BlockStore::open(&follower_blocks, &ledger.chain_id()).unwrap();
        let follower = net::follow_with_store(
            ledger.clone(),
            follower_key.clone(),
            vec![addrs[0].clone()],
            cess_consensus::follow::FollowerConfig::default(),
            Some(blocks),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(60), async {
            while follower.status().height < tip {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the follower reached the tip from validator 0 alone");
        follower
    });
    assert!(follower.status().diverged.is_none());
    let followed = follower.status().height;
    follower.shutdown();
    drop(follower);
    // Restarted, the follower is where its disk ends before it asks anyone.
    let store = open_store(&follower_blocks, &ledger);
    assert!(
        store.height() + 1 >= followed,
        "{} of {followed}",
        store.height()
    );
    let again = rt0.block_on(async {
        net::follow_with_store(
            ledger.clone(),
            follower_key.clone(),
            vec![addrs[0].clone()],
            cess_consensus::follow::FollowerConfig::default(),
            Some(store),
        )
        .unwrap()
    });
    assert!(
        again.status().height + 1 >= followed,
        "resumed at {}",
        again.status().height
    );
    again.shutdown();
    handle0.shutdown();
    for h in &handles {
        h.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
