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

/// Four validators on loopback, each with a directory for its disk.
struct Cluster {
    ledger: Ledger,
    keys: Vec<(cess_consensus::AccountKey, cess_consensus::ValidatorKey)>,
    config: CoreConfig,
    root: PathBuf,
    dirs: Vec<PathBuf>,
    addrs: Vec<NodeAddr>,
    /// Checkpoints every this many blocks (the default when `None`).
    checkpoint_every_blocks: Option<u64>,
}

impl Cluster {
    fn new(name: &str, params: LedgerParams, config: CoreConfig, seed: u64) -> Cluster {
        let (genesis, keys, _) = genesis(4, 1, seed, params);
        let ledger = Ledger::genesis(&genesis).unwrap();
        let root = std::env::temp_dir().join(format!("cess-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs: Vec<PathBuf> = (0..4)
            .map(|i| {
                let d = root.join(format!("v{i}"));
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
        Cluster {
            ledger,
            keys,
            config,
            root,
            dirs,
            addrs,
            checkpoint_every_blocks: None,
        }
    }

    fn peers_of(&self, i: usize) -> Vec<NodeAddr> {
        (0..4)
            .filter(|j| *j != i)
            .map(|j| self.addrs[j].clone())
            .collect()
    }

    fn node_key(&self, i: usize) -> Arc<NodeKey> {
        Arc::new(NodeKey::from_ed25519(self.keys[i].0.ed25519().clone()))
    }

    /// Validator `i` started from its disk (keeping `keep` blocks in memory): its handle and
    /// the height it resumed at.
    fn start(&self, rt: &tokio::runtime::Runtime, i: usize, keep: usize) -> (ValidatorHandle, u64) {
        let opened = open_disk(&self.dirs[i], &self.ledger, keep);
        let height = opened.disk.store.height();
        assert_eq!(
            opened.restored.ledger.height(),
            height,
            "the ledger is the store's"
        );
        let (account, validator_key) = &self.keys[i];
        let (core, mut disk) = opened
            .into_core(validator_key.clone(), account.id(), self.config.clone())
            .unwrap();
        if let Some(every) = self.checkpoint_every_blocks {
            disk.checkpoint_every_blocks = every;
        }
        let handle = rt.block_on(async {
            net::start_with_store(
                core,
                self.node_key(i),
                self.addrs[i].socket,
                self.peers_of(i),
                Some(disk),
            )
            .unwrap()
        });
        (handle, height)
    }
}

#[test]
fn a_killed_validator_resumes_from_its_disk_and_serves_old_blocks_from_it() {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let config = CoreConfig {
        empty_block_interval_ms: 100,
        ..CoreConfig::default()
    };
    let cluster = Cluster::new("restart", params, config, 21);
    let (ledger, addrs, dir) = (&cluster.ledger, &cluster.addrs, &cluster.root);
    let start = |rt: &tokio::runtime::Runtime, i: usize, keep: usize| cluster.start(rt, i, keep);
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
    let store = open_store(&follower_blocks, ledger);
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
    let _ = std::fs::remove_dir_all(dir);
}

/// A validator far behind takes a peer's checkpoint (checked against the validator sets it
/// follows era by era from headers, from its own state) instead of replaying every block
/// since, then catches up block by block from there and votes again. A node whose peers'
/// checkpoints are not far enough ahead takes none.
#[test]
fn a_validator_far_behind_takes_a_peers_checkpoint_and_votes_again() {
    let params = LedgerParams {
        validators_per_era: 4,
        epoch_blocks: 5,
        era_blocks: 10,
        ..LedgerParams::default()
    };
    let config = CoreConfig {
        empty_block_interval_ms: 20,
        // Short step timeouts (loopback): the heights the killed validator should propose
        // wait out one propose timeout.
        timeouts: cess_consensus::sim::sim_timeouts(),
        ..CoreConfig::default()
    };
    let mut cluster = Cluster::new("state-sync", params, config, 23);
    cluster.checkpoint_every_blocks = Some(25);
    let runtimes: Vec<_> = (0..4).map(|_| runtime()).collect();
    let mut handles: Vec<ValidatorHandle> = (0..4)
        .map(|i| cluster.start(&runtimes[i], i, 256).0)
        .collect();
    wait_height(&runtimes[1], &handles[1], 3);
    let mut runtimes = runtimes;
    drop(handles.remove(3));
    runtimes.remove(3).shutdown_background();
    wait_height(&runtimes[0], &handles[0], 140);

    let rt3 = runtime();
    let sync = |peers: &[NodeAddr], behind_min: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let synced = rt3.block_on(cess_consensus::statesync::state_sync(
                cluster.node_key(3),
                peers,
                &cluster.dirs[3],
                cluster.ledger.clone(),
                behind_min,
            ));
            match synced {
                // A killed validator's threads may hold its files a moment longer.
                Err(cess_consensus::statesync::StateSyncError::Disk(DiskError::Store(
                    StoreError::Locked { .. },
                ))) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => return other.unwrap(),
            }
        }
    };
    // Not far enough behind any peer's checkpoint: nothing taken.
    assert!(sync(&cluster.peers_of(3), 1_000_000).is_none());
    // A peer that claims the furthest checkpoint but cannot back it with headers is tried
    // first, refused, and the next peer (asked again) serves the checkpoint.
    let liar = rt3.block_on(lying_peer());
    let mut peers = vec![liar.clone()];
    peers.extend(cluster.peers_of(3));
    let synced = sync(&peers, 50).expect("a peer's checkpoint far enough ahead");
    assert_ne!(
        synced.peer,
        liar.to_string(),
        "the liar's checkpoint was not taken"
    );
    eprintln!("{synced:?}");
    assert!(synced.height >= 125, "checkpoint at {}", synced.height);
    assert!(synced.was_at <= 5);
    assert!(
        synced.headers >= 12,
        "one header per era end: {}",
        synced.headers
    );

    let (handle3, resumed) = cluster.start(&rt3, 3, 256);
    assert_eq!(resumed, synced.height, "resumed from the taken checkpoint");
    let target = handles[0].stats().report.lock().unwrap().height + 5;
    // Its commits and validator 0's agree on the state root at every height both saw.
    let mut ours = handle3.commits();
    let mut theirs = handles[0].commits();
    wait_height(&rt3, &handle3, target);
    let mut roots = std::collections::BTreeMap::new();
    while let Ok(c) = theirs.try_recv() {
        roots.insert(c.height, c.outcome.root);
    }
    let mut compared = 0;
    while let Ok(c) = ours.try_recv() {
        if let Some(root) = roots.get(&c.height) {
            assert_eq!(*root, c.outcome.root, "height {}", c.height);
            compared += 1;
        }
    }
    assert!(compared > 0);
    let report = handle3.stats().report.lock().unwrap().clone();
    assert!(
        report.stats.synced_blocks < 100,
        "synced {} blocks after the checkpoint",
        report.stats.synced_blocks
    );
    // It votes again: its precommits are in commits validator 0 sees.
    let account3 = cluster.keys[3].0.id();
    let mut commits = handles[0].commits();
    let signed = rt3.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(c) = commits.recv().await {
                if c.commit.signatures.iter().any(|(a, _)| *a == account3) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    });
    assert!(signed, "the synced validator signs commits again");
    handle3.shutdown();
    for h in &handles {
        h.shutdown();
    }
    let _ = std::fs::remove_dir_all(&cluster.root);
}

/// A peer that says its checkpoint is at height 1 000 000 and answers every header request
/// with a tip of 0 (it has none of the headers that would prove it).
async fn lying_peer() -> NodeAddr {
    use cess_consensus::bft::NetMsg;
    let key = Arc::new(NodeKey::generate());
    let endpoint = cess_transport::quic::Endpoint::server_for(
        net::CONSENSUS_PROTOCOL,
        key,
        "127.0.0.1:0".parse().unwrap(),
        cess_transport::quic::Limits::default(),
    )
    .unwrap();
    let addr = endpoint.node_addr().unwrap();
    tokio::spawn(async move {
        while let Some(Ok(connection)) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok((mut send, mut recv)) = connection.inner.accept_bi().await else {
                    return;
                };
                loop {
                    let mut len = [0u8; 4];
                    if recv.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
                    if recv.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let answer = match NetMsg::decode(&body) {
                        Ok(NetMsg::CheckpointRequest { offset }) => NetMsg::CheckpointChunk {
                            height: 1_000_000,
                            total_bytes: 64,
                            offset: offset.min(64),
                            bytes: vec![7; (64 - offset.min(64)) as usize],
                        },
                        _ => NetMsg::Tip { height: 0 },
                    };
                    let body = answer.encode();
                    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
                    frame.extend_from_slice(&body);
                    if send.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
