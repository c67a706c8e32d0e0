// Long file: every consensus benchmark case with its baseline beside it.
//! Suite `consensus`: finality of transfers on four validators over QUIC on loopback, against
//! one ledger applying the same transactions with no consensus; and storage proofs verified
//! inside block application (one batch per block) against verifying each proof alone; and
//! block application on a ledger holding 10⁶ stored fragments against the same blocks on one
//! holding 10³ (a block's cost must not grow with the state); and a validator's restart with
//! 10⁵ blocks on disk against one with 10³ (checkpoints keep it from growing with the chain).

use crate::proofs::LazySource;
use crate::report::{Case, Latency, Options};
use cess_consensus::bft::CoreConfig;
use cess_consensus::ledger::{BlockInfo, Event, GenesisTagger, Ledger, LedgerParams, TOKEN};
use cess_consensus::net::{self, ValidatorHandle};
use cess_consensus::sim::genesis;
use cess_consensus::tx::{Hash32, SegmentDecl};
use cess_consensus::{AccountKey, Call, Transaction};
use cess_proofs::curve::{self, G1, G1Affine, G2Affine, Scalar};
use cess_proofs::{CpuBackend, HASH_DST, SECTORS_PER_BLOCK_DEFAULT, SecretKey, prove, verify};
use hdrhistogram::Histogram;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    if options.wants("finality-4-validators") {
        cases.push(finality_case(options)?);
    }
    if options.wants("batch-verify-vs-single") {
        cases.push(batch_verify_case(options)?);
    }
    if options.wants("block-apply-stored-fragments") {
        cases.push(block_apply_case(options)?);
    }
    if options.wants("follower-catch-up") {
        cases.push(follower_case(options)?);
    }
    if options.wants("finality-wal-on-vs-off") {
        cases.push(wal_case(options)?);
    }
    if options.wants("restart-1e5-vs-1e3-heights") {
        cases.push(restart_case(options)?);
    }
    if options.wants("validator-catch-up") {
        cases.push(catch_up_case(options)?);
    }
    if options.wants("validator-state-sync-vs-catch-up") {
        cases.push(state_sync_case(options)?);
    }
    Ok(cases)
}

const USERS: usize = 64;
/// Transactions per client submission.
const SUBMIT_BATCH: usize = 64;

/// Signed transfers: `per_user` from each of the users, nonces in order.
fn transfers(users: &[AccountKey], ledger: &Ledger, per_user: u64) -> Vec<Transaction> {
    let mut txs = Vec::new();
    for nonce in 0..per_user {
        for (i, user) in users.iter().enumerate() {
            let to = users[(i + 1) % users.len()].id();
            txs.push(ledger.transaction_with_nonce(
                user,
                nonce,
                Call::Transfer { to, amount: TOKEN },
            ));
        }
    }
    txs
}

/// The paced phase: PACED_BATCH transfers every PACE_MS (500 tx/s).
const PACED_BATCH: usize = 16;
const PACE_MS: u64 = 32;

/// Submit `txs` in client batches, round-robin over the validators, noting when each left.
async fn submit_batches(
    handles: &[ValidatorHandle],
    txs: &[Transaction],
    pending: &mut HashMap<Hash32, Instant>,
    next: &mut usize,
) -> Result<(), String> {
    for batch in txs.chunks(SUBMIT_BATCH) {
        let at = Instant::now();
        for tx in batch {
            pending.insert(tx.id(), at);
        }
        *next = (*next + 1) % handles.len();
        let answers = handles[*next]
            .submit(batch.to_vec())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(refused) = answers.iter().find_map(|a| a.as_ref().err()) {
            return Err(format!("a transfer was refused: {refused}"));
        }
    }
    Ok(())
}

/// Note the finality latency of every pending transfer in `commit`.
fn record(
    commit: &cess_consensus::bft::Committed,
    pending: &mut HashMap<Hash32, Instant>,
    latency: &mut Histogram<u64>,
) -> Result<(), String> {
    let now = Instant::now();
    for tx in &commit.block.txs {
        if let Some(at) = pending.remove(&tx.id()) {
            latency
                .record(now.duration_since(at).as_micros() as u64)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Wait until nothing is pending.
async fn wait_committed(
    commits: &mut tokio::sync::broadcast::Receiver<Arc<cess_consensus::bft::Committed>>,
    pending: &mut HashMap<Hash32, Instant>,
    latency: &mut Histogram<u64>,
) -> Result<(), String> {
    while !pending.is_empty() {
        let commit = tokio::time::timeout(Duration::from_secs(30), commits.recv())
            .await
            .map_err(|_| format!("no commit for 30 s ({} transfers pending)", pending.len()))?
            .map_err(|e| e.to_string())?;
        record(&commit, pending, latency)?;
    }
    Ok(())
}

/// One run on a fresh network: (finalized tx/s at saturation, finality latencies in µs at
/// 500 tx/s).
fn finality_run(
    txs_total: usize,
    paced_per_user: u64,
    seed: u64,
) -> Result<(f64, Histogram<u64>), String> {
    finality_run_on(txs_total, paced_per_user, seed, None)
}

/// [`finality_run`], each validator keeping its blocks (and, with `wal`, its write-ahead log)
/// under `dir`.
fn finality_run_on(
    txs_total: usize,
    paced_per_user: u64,
    seed: u64,
    disk: Option<(&std::path::Path, bool)>,
) -> Result<(f64, Histogram<u64>), String> {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, users) = genesis(4, USERS, seed, params);
    let ledger = Ledger::genesis(&genesis).map_err(|e| e.to_string())?;
    let per_user = (txs_total / USERS) as u64;
    let all = transfers(&users, &ledger, per_user + paced_per_user);
    let (saturate, paced) = all.split_at(txs_total);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let handles = match disk {
            None => net::start_loopback(&ledger, &keys, CoreConfig::default()),
            Some((dir, wal)) => {
                net::start_loopback_on_disk(&ledger, &keys, CoreConfig::default(), dir, wal)
            }
        }
        .map_err(|e| e.to_string())?;
        let mut commits = handles[0].commits();
        // Saturation: every transfer submitted at once, in client batches spread over the
        // validators; throughput = transfers / time until the last is committed.
        let started = Instant::now();
        let mut pending: HashMap<Hash32, Instant> = HashMap::with_capacity(saturate.len());
        let mut next = 0;
        submit_batches(&handles, saturate, &mut pending, &mut next).await?;
        let mut ignored = Histogram::<u64>::new(3).expect("histogram");
        wait_committed(&mut commits, &mut pending, &mut ignored).await?;
        let tps = saturate.len() as f64 / started.elapsed().as_secs_f64();
        // Latency at a steady, moderate load: a batch every PACE_MS.
        let mut latency = Histogram::<u64>::new(3).expect("histogram");
        let mut pending: HashMap<Hash32, Instant> = HashMap::new();
        for batch in paced.chunks(PACED_BATCH) {
            submit_batches(&handles, batch, &mut pending, &mut next).await?;
            let tick = tokio::time::sleep(Duration::from_millis(PACE_MS));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = &mut tick => break,
                    commit = commits.recv() => {
                        let commit = commit.map_err(|e| e.to_string())?;
                        record(&commit, &mut pending, &mut latency)?;
                    }
                }
            }
        }
        wait_committed(&mut commits, &mut pending, &mut latency).await?;
        for h in &handles {
            h.shutdown();
        }
        Ok((tps, latency))
    })
}

/// The baseline: the same transfers applied by one ledger, in blocks of the core's size.
fn apply_run(txs_total: usize, seed: u64) -> Result<f64, String> {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, users) = genesis(4, USERS, seed, params);
    let mut ledger = Ledger::genesis(&genesis).map_err(|e| e.to_string())?;
    let txs = transfers(&users, &ledger, (txs_total / USERS) as u64);
    let accounts: Vec<_> = keys.iter().map(|(a, _)| a.id()).collect();
    let started = Instant::now();
    for (k, block) in txs.chunks(CoreConfig::default().block_txs_max).enumerate() {
        let info = BlockInfo {
            height: k as u64 + 1,
            time_ms: k as u64,
            vrf_output: [k as u8; 32],
            last_commit: accounts.clone(),
        };
        let outcome = ledger.apply_block(&info, block, &CpuBackend);
        if outcome.receipts.iter().any(|r| r.is_err()) {
            return Err("a baseline transfer was refused".into());
        }
    }
    Ok(txs.len() as f64 / started.elapsed().as_secs_f64())
}

fn finality_case(options: &Options) -> Result<Case, String> {
    let (txs_total, paced_per_user, runs) = if options.quick {
        (USERS * 4, 1, 1)
    } else {
        (USERS * 300, 24, 3)
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for run in 0..runs {
        let (tps, h) = finality_run(txs_total, paced_per_user, run as u64)?;
        ours.push(tps);
        latency.add(&h).map_err(|e| e.to_string())?;
        theirs.push(apply_run(txs_total, run as u64)?);
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "finality-4-validators".into();
    case.metric = "throughput";
    case.unit = "tx/s";
    case.baseline = "one ledger applying the same transfers, no consensus, no network".into();
    case.latency = Latency::from_histogram(&latency);
    case.note = format!(
        "throughput: {txs_total} transfers from {USERS} accounts submitted at once, in batches of \
         {SUBMIT_BATCH} spread over 4 validators (QUIC, loopback); latency: submit to commit on \
         validator 0 at a steady 500 tx/s (p50 {:.1} ms, p99 {:.1} ms)",
        case.latency.p50_us as f64 / 1000.0,
        case.latency.p99_us as f64 / 1000.0
    );
    Ok(case)
}

/// The write-ahead log's cost: the finality run with every validator keeping its blocks and
/// its log on disk (each vote and proposal `fdatasync`ed before it is sent, each block stored
/// before the next height's entries), against the same run keeping its blocks only (appended
/// by a thread off the consensus loop), alternating, on one file system.
fn wal_case(options: &Options) -> Result<Case, String> {
    let (txs_total, paced_per_user, runs) = if options.quick {
        (USERS * 4, 1, 1)
    } else {
        (USERS * 200, 12, 5)
    };
    let root = match &options.target {
        Some(dir) if dir.is_dir() => dir.clone(),
        _ => std::env::temp_dir(),
    }
    .join(format!("cess-bench-wal-{}", std::process::id()));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut on_latency = Histogram::<u64>::new(3).expect("histogram");
    let mut off_latency = Histogram::<u64>::new(3).expect("histogram");
    for run in 0..runs {
        for wal in [true, false] {
            let dir = root.join(format!("{run}-{wal}"));
            let _ = std::fs::remove_dir_all(&dir);
            let (tps, h) =
                finality_run_on(txs_total, paced_per_user, run as u64, Some((&dir, wal)))?;
            let _ = std::fs::remove_dir_all(&dir);
            if wal {
                ours.push(tps);
                on_latency.add(&h).map_err(|e| e.to_string())?;
            } else {
                theirs.push(tps);
                off_latency.add(&h).map_err(|e| e.to_string())?;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let mut case = Case::from_runs(ours, theirs);
    case.name = "finality-wal-on-vs-off".into();
    case.metric = "throughput";
    case.unit = "tx/s";
    case.goal = Some(0.8);
    case.baseline = "the same four validators keeping their blocks only, no write-ahead log".into();
    case.latency = Latency::from_histogram(&on_latency);
    let off = Latency::from_histogram(&off_latency);
    case.note = format!(
        "{txs_total} transfers at once, then a steady 500 tx/s, on 4 validators over QUIC on \
         loopback, disks under {}; latency at 500 tx/s with the log p50 {:.1} ms, p99 {:.1} ms, \
         without p50 {:.1} ms, p99 {:.1} ms",
        root.parent()
            .map_or(String::new(), |p| p.display().to_string()),
        case.latency.p50_us as f64 / 1000.0,
        case.latency.p99_us as f64 / 1000.0,
        off.p50_us as f64 / 1000.0,
        off.p99_us as f64 / 1000.0
    );
    Ok(case)
}

/// A validator's directory holding a chain of `heights` empty blocks of a four-validator
/// chain with a checkpoint 999 blocks before its tip (the most a validator checkpointing every
/// 1000 blocks replays); the genesis, and the key and account of the validator that proposes
/// first at the next height (so its restart ends with a proposal, not a wait for the others).
fn restart_disk(
    dir: &std::path::Path,
    heights: u64,
) -> Result<
    (
        Ledger,
        cess_consensus::ValidatorKey,
        cess_consensus::AccountId,
    ),
    String,
> {
    use cess_consensus::checkpoint::{self, Checkpoint};
    use cess_consensus::store::{BLOCKS_FILE, BlockStore};
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis_file, keys, _) = genesis(4, 1, 71, params);
    let genesis = Ledger::genesis(&genesis_file).map_err(|e| e.to_string())?;
    let (account, key) = &keys[0];
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (mut store, _) =
        BlockStore::open(&dir.join(BLOCKS_FILE), &genesis.chain_id()).map_err(|e| e.to_string())?;
    let mut ledger = genesis.clone();
    let mut hash = ledger.chain_id();
    let checkpoint_at = heights.saturating_sub(999).max(1);
    let mut append = |ledger: &mut Ledger,
                      hash: [u8; 32],
                      count: u64|
     -> Result<[u8; 32], String> {
        // In chunks, so the chain never sits whole in memory.
        let mut hash = hash;
        let mut left = count;
        while left > 0 {
            let chunk = left.min(10_000);
            let mut blocks = Vec::with_capacity(chunk as usize);
            hash =
                cess_consensus::sim::empty_chain(ledger, hash, key, account.id(), chunk, |b, c| {
                    blocks.push((b, c))
                });
            store
                .append_all(blocks.iter().map(|(b, c)| (&**b, c)))
                .map_err(|e| e.to_string())?;
            left -= chunk;
        }
        Ok(hash)
    };
    hash = append(&mut ledger, hash, checkpoint_at - 1)?;
    let previous = cess_consensus::bft::validator_set(&ledger);
    hash = append(&mut ledger, hash, 1)?;
    checkpoint::write(
        dir,
        &Checkpoint {
            ledger: ledger.clone(),
            last_hash: hash,
            previous_validators: Some(previous),
        },
    )
    .map_err(|e| e.to_string())?;
    append(&mut ledger, hash, heights - checkpoint_at)?;
    let proposer = cess_consensus::bft::validator_set(&ledger)
        .proposer(heights + 1, 0)
        .account;
    let (account, key) = keys
        .iter()
        .find(|(a, _)| a.id() == proposer)
        .ok_or("the proposer is a genesis validator")?;
    Ok((genesis, key.clone(), account.id()))
}

/// From opening a validator's directory to its core's first proposal (it proposes first at
/// its next height): the block store opened (every record's checksum), the checkpoint read,
/// the blocks after it replayed, the write-ahead log opened, the core started. Milliseconds.
fn restart_to_voting_ms(
    dir: &std::path::Path,
    genesis: &Ledger,
    key: &cess_consensus::ValidatorKey,
    account: cess_consensus::AccountId,
) -> Result<(f64, u64), String> {
    use cess_consensus::bft::{NetMsg, Output};
    let started = Instant::now();
    let opened = cess_consensus::store::open_disk(dir, genesis.clone(), 256, true)
        .map_err(|e| e.to_string())?;
    let replayed = opened.replayed_blocks;
    let config = CoreConfig {
        empty_block_interval_ms: 0,
        ..CoreConfig::default()
    };
    let (mut core, _disk) = opened
        .into_core(key.clone(), account, config)
        .map_err(|e| e.to_string())?;
    let outputs = core.start(genesis.time_ms() + 1_000_000_000);
    let voted = outputs
        .iter()
        .any(|o| matches!(o, Output::Broadcast(NetMsg::Proposal(_) | NetMsg::Vote(_))));
    if !voted {
        return Err("the restarted validator sent no proposal or vote at its first height".into());
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, replayed))
}

/// Restart-to-voting time with 10⁵ blocks on disk against 10³ (each with a checkpoint 999
/// blocks back): with checkpoints the time does not grow with the chain but for the block
/// store's open, which reads every record once. The note gives the same restart at 10⁵
/// without a checkpoint (the whole store replayed from genesis).
fn restart_case(options: &Options) -> Result<Case, String> {
    let (long, short, runs) = if options.quick {
        (10_000u64, 1_000u64, 1)
    } else {
        (100_000, 1_000, 5)
    };
    let root = match &options.target {
        Some(dir) if dir.is_dir() => dir.clone(),
        _ => std::env::temp_dir(),
    }
    .join(format!("cess-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let made = Instant::now();
    let (long_dir, short_dir) = (root.join("long"), root.join("short"));
    let (genesis_long, key_long, account_long) = restart_disk(&long_dir, long)?;
    let (genesis_short, key_short, account_short) = restart_disk(&short_dir, short)?;
    let made_s = made.elapsed().as_secs_f64();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut replayed = 0;
    for _ in 0..runs {
        let (ms, n) = restart_to_voting_ms(&long_dir, &genesis_long, &key_long, account_long)?;
        ours.push(ms);
        replayed = n;
        theirs.push(restart_to_voting_ms(&short_dir, &genesis_short, &key_short, account_short)?.0);
    }
    // The same restart with no checkpoint: the whole store replayed.
    std::fs::remove_file(long_dir.join(cess_consensus::checkpoint::CHECKPOINT_FILE))
        .map_err(|e| e.to_string())?;
    let (from_genesis_ms, _) =
        restart_to_voting_ms(&long_dir, &genesis_long, &key_long, account_long)?;
    let _ = std::fs::remove_dir_all(&root);
    let mut case = Case::from_times(
        "restart-1e5-vs-1e3-heights".into(),
        ours,
        theirs,
        format!("the same restart with {short} heights on disk"),
    );
    case.goal = Some(0.75);
    case.note = format!(
        "one validator's directory with {long} empty blocks (ours) and {short} (baseline), a \
         checkpoint {replayed} blocks before the tip in both, disks under {}; opening to the \
         first proposal; without the checkpoint the {long}-block restart took \
         {from_genesis_ms:.0} ms (the store replayed from genesis); making the two chains took \
         {made_s:.1} s",
        root.parent()
            .map_or(String::new(), |p| p.display().to_string()),
    );
    Ok(case)
}

/// A decided block with its commit.
type Decided = (
    cess_consensus::bft::Block,
    cess_consensus::bft::CommitRecord,
);

/// One catch-up: four validators on loopback with disks (each on its own runtime, so one
/// can be killed outright), validator 3 killed at height 3, the others taken `behind`
/// blocks further, validator 3 started again from its disk. Its blocks per second until it
/// has the height the others had when it restarted, and the blocks it synced (with their
/// commits, and the ledger at the height it resumed from) for the baseline.
fn catch_up_run(
    seed: u64,
    behind: u64,
    state_sync: bool,
) -> Result<(f64, Ledger, Vec<Decided>), String> {
    use cess_transport::{NodeAddr, NodeKey};
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis_file, keys, _) = genesis(4, 1, seed, params);
    let ledger = Ledger::genesis(&genesis_file).map_err(|e| e.to_string())?;
    let config = CoreConfig {
        empty_block_interval_ms: 0,
        // Short step timeouts (loopback): the heights the killed validator should propose
        // wait out one propose timeout.
        timeouts: cess_consensus::sim::sim_timeouts(),
        ..CoreConfig::default()
    };
    let root =
        std::env::temp_dir().join(format!("cess-bench-catch-up-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let sockets = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let addrs: Vec<NodeAddr> = sockets
        .iter()
        .zip(&keys)
        .map(|(s, (account, _))| NodeAddr {
            socket: s.local_addr().expect("bound"),
            peer: account.id().peer_id().expect("Ed25519"),
        })
        .collect();
    drop(sockets);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    };
    let start =
        |rt: &tokio::runtime::Runtime, i: usize| -> Result<(ValidatorHandle, u64), String> {
            let dir = root.join(format!("v{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let opened = loop {
                match cess_consensus::store::open_disk(&dir, ledger.clone(), 256, true) {
                    Ok(opened) => break opened,
                    // A killed validator's threads may still hold its files for a moment.
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            };
            let resumed = opened.disk.store.height();
            let (account, key) = &keys[i];
            let (core, mut disk) = opened
                .into_core(key.clone(), account.id(), config.clone())
                .map_err(|e| e.to_string())?;
            disk.checkpoint_every_blocks = CATCH_UP_CHECKPOINT_EVERY_BLOCKS;
            let node_key = Arc::new(NodeKey::from_ed25519(account.ed25519().clone()));
            let peers = (0..4)
                .filter(|j| *j != i)
                .map(|j| addrs[j].clone())
                .collect();
            let handle = rt
                .block_on(async {
                    net::start_with_store(core, node_key, addrs[i].socket, peers, Some(disk))
                })
                .map_err(|e| e.to_string())?;
            Ok((handle, resumed))
        };
    let runtimes = (0..4).map(|_| runtime()).collect::<Result<Vec<_>, _>>()?;
    let mut handles = Vec::new();
    for (i, rt) in runtimes.iter().enumerate() {
        handles.push(start(rt, i)?.0);
    }
    // Every block and commit, from validator 0.
    let decided: Arc<std::sync::Mutex<Vec<Decided>>> = Arc::default();
    let mut commits = handles[0].commits();
    let collected = decided.clone();
    runtimes[0].spawn(async move {
        while let Ok(c) = commits.recv().await {
            collected
                .lock()
                .expect("lock")
                .push(((*c.block).clone(), c.commit.clone()));
        }
    });
    let height_of = |h: &ValidatorHandle| h.stats().report.lock().expect("lock").height;
    let wait = |what: &str, done: &dyn Fn() -> bool| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done() {
            if Instant::now() > deadline {
                return Err(format!("catch-up bench: timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    wait("height 3", &|| handles.iter().all(|h| height_of(h) > 3))?;
    let mut runtimes = runtimes;
    drop(handles.remove(3));
    runtimes.remove(3).shutdown_background();
    let killed_at = height_of(&handles[0]);
    wait("the others to move on", &|| {
        height_of(&handles[0]) > killed_at + behind
    })?;
    let rt3 = runtime()?;
    let started = Instant::now();
    let mut was_at = None;
    if state_sync {
        let dir = root.join("v3");
        let peers: Vec<NodeAddr> = addrs[..3].to_vec();
        let node_key = Arc::new(NodeKey::from_ed25519(keys[3].0.ed25519().clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let synced = loop {
            match rt3.block_on(cess_consensus::statesync::state_sync(
                node_key.clone(),
                &peers,
                &dir,
                ledger.clone(),
                1,
            )) {
                Ok(synced) => break synced,
                // A killed validator's threads may still hold its files for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let synced = synced.ok_or("catch-up bench: no peer's checkpoint to take")?;
        was_at = Some(synced.was_at);
    }
    let (handle3, resumed) = start(&rt3, 3)?;
    // Counted from where its own state was, whatever it resumed from.
    let resumed = was_at.unwrap_or(resumed);
    let target = height_of(&handles[0]) - 1;
    wait("validator 3 to catch up", &|| height_of(&handle3) > target)?;
    let secs = started.elapsed().as_secs_f64();
    let rate = (target - resumed) as f64 / secs;
    handle3.shutdown();
    for h in &handles {
        h.shutdown();
    }
    drop(runtimes);
    drop(rt3);
    let _ = std::fs::remove_dir_all(&root);
    let mut blocks = std::mem::take(&mut *decided.lock().expect("lock"));
    blocks.sort_by_key(|(b, _)| b.height);
    blocks.dedup_by_key(|(b, _)| b.height);
    if blocks.first().is_none_or(|(b, _)| b.height != 1) || (blocks.len() as u64) < target {
        return Err("catch-up bench: validator 0's commits were not all seen".into());
    }
    let mut at_resumed = ledger;
    for (block, _) in &blocks[..resumed as usize] {
        at_resumed.apply_block(
            &cess_consensus::bft::block_info(block),
            &block.txs,
            &CpuBackend,
        );
    }
    blocks.truncate(target as usize);
    let synced = blocks.split_off(resumed as usize);
    Ok((rate, at_resumed, synced))
}

/// A validator restarted far behind catches up over QUIC (batches of blocks from a peer, each
/// commit verified and the block applied and stored, its log reset), against
/// verifying the same commits and applying the same blocks in memory: what catching up must
/// do at the least.
fn catch_up_case(options: &Options) -> Result<Case, String> {
    let (behind, runs) = if options.quick { (200, 1) } else { (500, 3) };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut synced_blocks = 0;
    for run in 0..runs {
        let (rate, at_resumed, synced) = catch_up_run(81 + run as u64, behind, false)?;
        ours.push(rate);
        synced_blocks = synced.len();
        let started = Instant::now();
        let mut ledger = at_resumed;
        for (block, commit) in &synced {
            let validators = cess_consensus::bft::validator_set(&ledger);
            if !commit.verify(&ledger.chain_id(), block.height, &block.hash(), &validators) {
                return Err("a decided block's commit does not verify".into());
            }
            ledger.apply_block(
                &cess_consensus::bft::block_info(block),
                &block.txs,
                &CpuBackend,
            );
        }
        theirs.push(synced.len() as f64 / started.elapsed().as_secs_f64());
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "validator-catch-up".into();
    case.metric = "throughput";
    case.unit = "blocks/s";
    case.goal = Some(0.2);
    case.baseline =
        "verifying the same commits and applying the same blocks in memory (no network, no disk)"
            .into();
    case.note = format!(
        "four validators over QUIC on loopback with disks, the fourth killed and restarted \
         about {behind} blocks behind ({synced_blocks} synced in the last run): from its start \
         to the height the others had then; empty blocks; batches of 32 blocks, the next asked \
         for once half of the last is in, from peers busy deciding blocks as fast as they can \
         on the same two cores, each block stored with its `fdatasync`; the baseline counts \
         the commit check and the execution only, so the goal (0.2) leaves the network, the \
         disk and the CPU the three others take"
    );
    Ok(case)
}

/// Every validator in the catch-up runs writes a checkpoint this often (what a state-synced
/// validator catches up block by block at most, besides what was decided while it synced).
const CATCH_UP_CHECKPOINT_EVERY_BLOCKS: u64 = 100;

/// A validator restarted far behind takes a peer's checkpoint (era headers checked, the
/// checkpoint fetched and checked, its store started there) and then catches up block by
/// block, against catching up block by block from its own state, the same distance behind on
/// the same network.
fn state_sync_case(options: &Options) -> Result<Case, String> {
    // Half a checkpoint interval past a checkpoint (the average case: the killed validator
    // stops at height 3 or 4, the others go on `behind` blocks), so the checkpoint taken is
    // about 50 blocks short of the target and those are synced block by block.
    let behind = CATCH_UP_CHECKPOINT_EVERY_BLOCKS / 2 + if options.quick { 200 } else { 500 };
    let runs = if options.quick { 1 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (rate, _, _) = catch_up_run(91 + run as u64, behind, true)?;
        ours.push(rate);
        let (rate, _, _) = catch_up_run(91 + run as u64, behind, false)?;
        theirs.push(rate);
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "validator-state-sync-vs-catch-up".into();
    case.metric = "throughput";
    case.unit = "blocks/s";
    case.goal = Some(2.0);
    case.baseline = "catching up block by block from its own state, as far behind".into();
    case.note = format!(
        "four validators over QUIC on loopback with disks, checkpoints every \
         {CATCH_UP_CHECKPOINT_EVERY_BLOCKS} blocks; the fourth killed and restarted about \
         {behind} blocks behind, about half an interval past the others' last checkpoint: \
         blocks it had to make up per second, from its start (the \
         state sync included: asking every peer, the era headers, the checkpoint, writing it) \
         to the height the others had then; a small state (empty blocks), so this shows the \
         blocks it no longer replays, not the bytes of a large ledger"
    );
    Ok(case)
}

/// A ledger where `miners` miners each hold `per_miner` fragments (of `fragment_bytes`) and an
/// audit round has just opened for all of them; with the miners' keys and the tagger.
struct AuditSetup {
    ledger: Ledger,
    miners: Vec<AccountKey>,
    proofs: Vec<Transaction>,
}

fn audit_setup(
    miners_count: usize,
    segments: usize,
    fragment_bytes: usize,
    key: &SecretKey,
) -> Result<AuditSetup, String> {
    let params = LedgerParams {
        validators_per_era: 1,
        audit_period_blocks: 5,
        audit_miners_permille: 1000,
        // A space audit is drawn 3 blocks after its round opens and answered in the period.
        pois_space_deadline_blocks: 1,
        ..LedgerParams::default()
    };
    let (mut genesis, _validators, users) = genesis(1, miners_count + 1, 5, params);
    // A trusted tagger, as a network admits one: in its genesis.
    genesis.taggers.push(GenesisTagger {
        owner: users[0].id(),
        key: key.public().encode(),
    });
    let mut ledger = Ledger::genesis(&genesis).map_err(|e| e.to_string())?;
    let owner = &users[0];
    let miners: Vec<AccountKey> = users[1..].to_vec();
    let mut height = 0u64;
    let mut apply = |ledger: &mut Ledger, txs: &[Transaction]| -> Result<Vec<Event>, String> {
        height += 1;
        let info = BlockInfo {
            height,
            time_ms: height,
            vrf_output: [height as u8; 32],
            last_commit: Vec::new(),
        };
        let outcome = ledger.apply_block(&info, txs, &CpuBackend);
        if let Some(e) = outcome.receipts.iter().find_map(|r| r.as_ref().err()) {
            return Err(format!("setup transaction refused: {e}"));
        }
        Ok(outcome.events)
    };
    let mut txs = Vec::new();
    for m in &miners {
        txs.push(ledger.transaction_with_nonce(
            m,
            0,
            Call::RegisterMiner {
                peer_id: m.id().peer_id().expect("ed25519").to_bytes(),
                endpoint: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                declared_bytes: 1 << 40,
                collateral: 1000 * TOKEN,
            },
        ));
    }
    apply(&mut ledger, &txs)?;
    // n files, each placed by the ledger on 12 of the n miners (12 files per miner on
    // average), in space the owner rents first.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut declares = vec![ledger.transaction_with_nonce(
        owner,
        0,
        Call::RentSpace {
            add_gib: 1 << 12,
            add_blocks: 1000,
        },
    )];
    let mut file_ids = Vec::new();
    let n = miners.len();
    for k in 0..n {
        let file_id: Hash32 = rand::Rng::random(&mut rng);
        let decls = (0..segments)
            .map(|_| SegmentDecl {
                segment_id: rand::Rng::random(&mut rng),
                fragments: (0..12)
                    .map(|_| cess_consensus::FragmentId(rand::Rng::random(&mut rng)))
                    .collect(),
            })
            .collect();
        declares.push(ledger.transaction_with_nonce(
            owner,
            k as u64 + 1,
            Call::DeclareFile {
                file_id,
                file_name: format!("f{k}"),
                bucket: String::new(),
                size_bytes: (segments * fragment_bytes * 4) as u64,
                fragment_bytes: fragment_bytes as u64,
                tagger: key.public().id().0,
                segments: decls,
                meta: Vec::new(),
            },
        ));
        file_ids.push(file_id);
    }
    apply(&mut ledger, &declares)?;
    let index: std::collections::HashMap<cess_consensus::AccountId, usize> = miners
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id(), i))
        .collect();
    let mut reports = Vec::new();
    for file_id in &file_ids {
        let file = ledger.file(file_id).ok_or("declared file missing")?;
        for (column, fragment) in file.segments[0].fragments.iter().enumerate() {
            let miner = fragment.miner.ok_or("unplaced column")?;
            reports.push((index[&miner], *file_id, column as u16));
        }
    }
    let mut nonces = vec![1u64; n];
    let report_txs: Vec<Transaction> = reports
        .into_iter()
        .map(|(i, file_id, column)| {
            let tx = ledger.transaction_with_nonce(
                &miners[i],
                nonces[i],
                Call::ReportStored { file_id, column },
            );
            nonces[i] += 1;
            tx
        })
        .collect();
    apply(&mut ledger, &report_txs)?;
    // Empty blocks up to the one that opens the audit round (audits open at the start of a
    // block).
    let period = ledger.params().audit_period_blocks;
    while !(ledger.height() + 1).is_multiple_of(period) {
        apply(&mut ledger, &[])?;
    }
    let events = apply(&mut ledger, &[])?;
    let audits: Vec<(u64, cess_consensus::AccountId, Hash32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::AuditOpened {
                round,
                miner,
                tagger,
                ..
            } => Some((*round, *miner, *tagger)),
            _ => None,
        })
        .collect();
    if audits.len() != n {
        return Err(format!("{} audits opened for {n} miners", audits.len()));
    }
    let mut source = LazySource::new(fragment_bytes);
    let mut proofs = Vec::new();
    for (round, miner, tagger) in audits {
        let challenge = ledger
            .challenge(round, &miner, &tagger)
            .ok_or("no challenge")?;
        source.materialise(key, &challenge);
        let (proof, _) =
            prove(key.public(), &challenge, &mut source, &CpuBackend).map_err(|e| e.to_string())?;
        let i = miners
            .iter()
            .position(|m| m.id() == miner)
            .expect("audited miners are ours");
        proofs.push(ledger.transaction_with_nonce(
            &miners[i],
            nonces[i],
            Call::SubmitProof {
                round,
                tagger,
                proof: proof.encode(),
            },
        ));
    }
    Ok(AuditSetup {
        ledger,
        miners,
        proofs,
    })
}

fn batch_verify_case(options: &Options) -> Result<Case, String> {
    // 64 miners holding 48 fragments of 10 blocks each: a default challenge (46 fragments,
    // 460 blocks) per proof. Quick: 12 miners, 1-block fragments.
    let (miners, segments, blocks_per_fragment, runs) = if options.quick {
        (12, 4, 1, 1)
    } else {
        (64, 4, 10, 5)
    };
    let key =
        SecretKey::from_seed(&[0x42; 32], SECTORS_PER_BLOCK_DEFAULT).map_err(|e| e.to_string())?;
    let fragment_bytes = key.public().block_bytes() as usize * blocks_per_fragment;
    let setup = audit_setup(miners, segments, fragment_bytes, &key)?;
    let info = BlockInfo {
        height: setup.ledger.height() + 1,
        time_ms: setup.ledger.time_ms() + 1,
        vrf_output: [9; 32],
        last_commit: Vec::new(),
    };
    let challenges: Vec<_> = setup
        .proofs
        .iter()
        .map(|tx| match &tx.call {
            Call::SubmitProof {
                round,
                tagger,
                proof,
            } => {
                let challenge = setup
                    .ledger
                    .challenge(*round, &tx.signer, tagger)
                    .expect("open audit");
                (challenge, cess_proofs::Proof::decode(proof).expect("proof"))
            }
            _ => unreachable!(),
        })
        .collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut ledger = setup.ledger.clone();
        let started = Instant::now();
        let outcome = ledger.apply_block(&info, &setup.proofs, &CpuBackend);
        let apply_s = started.elapsed().as_secs_f64();
        let valid = outcome
            .events
            .iter()
            .filter(|e| matches!(e, Event::ProofValid { .. }))
            .count();
        if valid != setup.proofs.len() {
            return Err(format!(
                "{valid} of {} proofs valid in block application",
                setup.proofs.len()
            ));
        }
        ours.push(setup.proofs.len() as f64 / apply_s);
        // Baseline: derive each challenge and verify each proof alone.
        let started = Instant::now();
        for tx in &setup.proofs {
            let Call::SubmitProof {
                round,
                tagger,
                proof,
            } = &tx.call
            else {
                unreachable!()
            };
            let challenge = setup
                .ledger
                .challenge(*round, &tx.signer, tagger)
                .expect("open audit");
            let proof = cess_proofs::Proof::decode(proof).expect("proof");
            if verify(key.public(), &challenge, &proof, &CpuBackend) != cess_proofs::Verdict::Valid
            {
                return Err("a proof failed alone".into());
            }
        }
        theirs.push(setup.proofs.len() as f64 / started.elapsed().as_secs_f64());
    }
    // Where the time of a batch goes: hashing the challenged blocks to G1, the MSMs, the
    // pairings (measured apart, on the same challenges).
    let mut points = Vec::new();
    let hash_s = {
        let started = Instant::now();
        for (challenge, _) in &challenges {
            for f in challenge.fragments() {
                for b in &f.blocks {
                    let mut msg = [0u8; 36];
                    msg[..32].copy_from_slice(f.id.as_bytes());
                    msg[32..].copy_from_slice(&b.index.to_le_bytes());
                    points.push(G1::hash(&msg, HASH_DST));
                }
            }
        }
        started.elapsed().as_secs_f64()
    };
    let affine = G1::batch_to_affine(&points);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let nus: Vec<Scalar> = (0..affine.len())
        .map(|_| {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            Scalar::from_short_le_bytes(&bytes)
        })
        .collect();
    let mus: Vec<Scalar> = (0..key.public().bases().len())
        .map(|i| Scalar::from_u64(i as u64 + 1))
        .collect();
    let msm_s = {
        let started = Instant::now();
        std::hint::black_box(curve::msm(&affine, &nus, 128));
        std::hint::black_box(curve::msm(key.public().bases(), &mus, 255));
        started.elapsed().as_secs_f64()
    };
    let pairing_s = {
        let started = Instant::now();
        std::hint::black_box(curve::pairing_product_is_one(&[
            (G1Affine::generator(), G2Affine::generator()),
            (G1Affine::generator(), G2Affine::generator()),
        ]));
        started.elapsed().as_secs_f64()
    };
    let mut case = Case::from_runs(ours, theirs);
    case.name = "batch-verify-vs-single".into();
    case.metric = "throughput";
    case.unit = "proofs/s";
    case.baseline = "the same proofs verified one by one (cess_proofs::verify)".into();
    let apply_ms = setup.proofs.len() as f64 / case.value * 1000.0;
    let parts = hash_s + msm_s + pairing_s;
    case.note = format!(
        "{} proofs in one block ({} challenged blocks in all), block application {:.1} ms on one core; \
         of the batch's arithmetic: hashing to G1 {:.0} % ({:.1} ms), MSM {:.0} % ({:.1} ms), pairings {:.0} % \
         ({:.2} ms); the rest of block application is signatures, decoding and challenge derivation; {} miners' keys",
        setup.proofs.len(),
        points.len(),
        apply_ms,
        100.0 * hash_s / parts,
        hash_s * 1000.0,
        100.0 * msm_s / parts,
        msm_s * 1000.0,
        100.0 * pairing_s / parts,
        pairing_s * 1000.0,
        setup.miners.len()
    );
    Ok(case)
}

/// A ledger whose 12 miners store `fragments` fragments (files of 64 segments), built through
/// real transactions (signatures taken as checked, as a validator's mempool had them).
struct StoredLedger {
    ledger: Ledger,
    owner: AccountKey,
    miners: Vec<AccountKey>,
    users: Vec<AccountKey>,
    tagger: Hash32,
    /// The measured blocks' order whose columns the next block reports.
    unreported: Option<Hash32>,
    /// The measured blocks' orders reported in an earlier block, oldest first: what the
    /// next blocks delete.
    reported: std::collections::VecDeque<Hash32>,
    serial: u64,
}

const BLOCK_SEGMENTS: usize = 64;
const BLOCK_FRAGMENT_BYTES: u64 = 4096;

impl StoredLedger {
    fn new(fragments: usize, seed: u64) -> Result<StoredLedger, String> {
        let params = LedgerParams {
            validators_per_era: 1,
            // Audit rounds (which snapshot every held set) are outside what this measures.
            audit_period_blocks: u64::MAX / 4,
            order_validity_blocks: u64::MAX / 4,
            ..LedgerParams::default()
        };
        let (mut genesis, _validators, users) = genesis(1, 12 + 1 + 64, seed, params);
        let key = SecretKey::from_seed(&[0x24; 32], 4).map_err(|e| e.to_string())?;
        let owner = users[0].clone();
        genesis.taggers.push(GenesisTagger {
            owner: owner.id(),
            key: key.public().encode(),
        });
        let ledger = Ledger::genesis(&genesis).map_err(|e| e.to_string())?;
        let mut this = StoredLedger {
            ledger,
            owner,
            miners: users[1..13].to_vec(),
            users: users[13..].to_vec(),
            tagger: key.public().id().0,
            unreported: None,
            reported: Default::default(),
            serial: seed << 32,
        };
        let registrations: Vec<Transaction> = this
            .miners
            .iter()
            .map(|m| {
                this.ledger.transaction(
                    m,
                    Call::RegisterMiner {
                        peer_id: m.id().peer_id().expect("ed25519").to_bytes(),
                        endpoint: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                        declared_bytes: 1 << 42,
                        collateral: 1000 * TOKEN,
                    },
                )
            })
            .collect();
        this.apply(&registrations, true)?;
        let rent = this.ledger.transaction(
            &this.owner,
            Call::RentSpace {
                add_gib: 1024,
                add_blocks: 1 << 20,
            },
        );
        this.apply(&[rent], true)?;
        let files = fragments.div_ceil(12 * BLOCK_SEGMENTS);
        for chunk in (0..files).collect::<Vec<_>>().chunks(64) {
            let nonce = this.ledger.account(&this.owner.id()).nonce;
            let declares: Vec<Transaction> = (0..chunk.len())
                .map(|k| {
                    let call = this.order(BLOCK_SEGMENTS);
                    this.ledger
                        .transaction_with_nonce(&this.owner, nonce + k as u64, call)
                })
                .collect();
            this.apply(&declares, true)?;
            let declared: Vec<Hash32> = declares
                .iter()
                .map(|tx| match &tx.call {
                    Call::DeclareFile { file_id, .. } => *file_id,
                    _ => unreachable!(),
                })
                .collect();
            let reports = this.reports(&declared);
            this.apply(&reports, true)?;
        }
        Ok(this)
    }

    /// A storage order of `segments` segments on the 12 miners, with fresh ids.
    fn order(&mut self, segments: usize) -> Call {
        let mut id = || {
            self.serial += 1;
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&self.serial.to_le_bytes());
            bytes[8] = 0xF1;
            bytes
        };
        let file_id = id();
        let segments: Vec<SegmentDecl> = (0..segments)
            .map(|_| SegmentDecl {
                segment_id: id(),
                fragments: (0..12).map(|_| cess_consensus::FragmentId(id())).collect(),
            })
            .collect();
        Call::DeclareFile {
            file_id,
            file_name: "bench".into(),
            bucket: String::new(),
            size_bytes: segments.len() as u64 * BLOCK_FRAGMENT_BYTES * 4,
            fragment_bytes: BLOCK_FRAGMENT_BYTES,
            tagger: self.tagger,
            segments,
            meta: Vec::new(),
        }
    }

    /// Every column of each file reported by the miner the ledger placed it on.
    fn reports(&self, files: &[Hash32]) -> Vec<Transaction> {
        let mut nonces: std::collections::HashMap<cess_consensus::AccountId, u64> = self
            .miners
            .iter()
            .map(|m| (m.id(), self.ledger.account(&m.id()).nonce))
            .collect();
        let mut txs = Vec::new();
        for file_id in files {
            let file = self.ledger.file(file_id).expect("declared files exist");
            for (column, fragment) in file.segments[0].fragments.iter().enumerate() {
                let id = fragment.miner.expect("placed");
                let miner = self
                    .miners
                    .iter()
                    .find(|m| m.id() == id)
                    .expect("one of the 12");
                let nonce = nonces.get_mut(&id).expect("one of the 12");
                txs.push(self.ledger.transaction_with_nonce(
                    miner,
                    *nonce,
                    Call::ReportStored {
                        file_id: *file_id,
                        column: column as u16,
                    },
                ));
                *nonce += 1;
            }
        }
        txs
    }

    fn apply(&mut self, txs: &[Transaction], signatures_checked: bool) -> Result<(), String> {
        let info = BlockInfo {
            height: self.ledger.height() + 1,
            time_ms: self.ledger.time_ms() + 6000,
            vrf_output: [7; 32],
            last_commit: Vec::new(),
        };
        let checked = vec![signatures_checked; txs.len()];
        let outcome = self
            .ledger
            .apply_block_checked(&info, txs, &checked, &CpuBackend);
        match outcome.receipts.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => Err(format!("a setup transaction was refused: {e}")),
            None => Ok(()),
        }
    }

    /// One block of the measured kind: 100 transfers, one new 8-segment order, every column
    /// of the previous block's order reported, and the oldest reported 8-segment order
    /// deleted: the same shape whatever the ledger holds (from the third block on, when there
    /// is one to delete). Returns the time to apply it, signatures verified, and whether it
    /// had the whole shape.
    fn measured_block(&mut self) -> Result<(f64, bool), String> {
        let mut txs: Vec<Transaction> = self
            .users
            .iter()
            .take(100)
            .enumerate()
            .map(|(i, user)| {
                let to = self.users[(i + 1) % self.users.len()].id();
                self.ledger
                    .transaction(user, Call::Transfer { to, amount: 1 })
            })
            .collect();
        let order = self.order(8);
        let Call::DeclareFile { file_id, .. } = &order else {
            unreachable!()
        };
        let file_id = *file_id;
        let nonce = self.ledger.account(&self.owner.id()).nonce;
        txs.push(
            self.ledger
                .transaction_with_nonce(&self.owner, nonce, order),
        );
        let deleted = self.reported.pop_front();
        if let Some(old) = deleted {
            txs.push(self.ledger.transaction_with_nonce(
                &self.owner,
                nonce + 1,
                Call::DeleteFile { file_id: old },
            ));
        }
        let reported = self.unreported.replace(file_id);
        if let Some(previous) = reported {
            txs.extend(self.reports(&[previous]));
        }
        let started = Instant::now();
        self.apply(&txs, false)?;
        let secs = started.elapsed().as_secs_f64();
        self.reported.extend(reported);
        Ok((secs, deleted.is_some() && reported.is_some()))
    }
}

fn block_apply_case(options: &Options) -> Result<Case, String> {
    let (big, small, runs) = if options.quick {
        (100_000, 1_000, 5)
    } else {
        (1_000_000, 1_000, 9)
    };
    let built = Instant::now();
    let mut large = StoredLedger::new(big, 1)?;
    let build_s = built.elapsed().as_secs_f64();
    let mut little = StoredLedger::new(small, 2)?;
    let stored =
        |l: &StoredLedger| -> usize { l.ledger.miners().map(|(_, m)| m.held_fragments()).sum() };
    let (large_fragments, little_fragments) = (stored(&large), stored(&little));
    // Two blocks each first (warm caches, and an order reported to delete), then the runs
    // interleaved, each block of the whole shape.
    for _ in 0..2 {
        large.measured_block()?;
        little.measured_block()?;
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (ledger, times) in [(&mut large, &mut ours), (&mut little, &mut theirs)] {
            let (secs, whole) = ledger.measured_block()?;
            if !whole {
                return Err("a measured block lacked its deletion or its reports".into());
            }
            times.push(1.0 / secs);
        }
    }
    // What the state root cost before it was kept incrementally: hashing every table again.
    let started = Instant::now();
    std::hint::black_box(large.ledger.root_from_scratch());
    let from_scratch_ms = started.elapsed().as_secs_f64() * 1000.0;
    if large.ledger.root_from_scratch() != large.ledger.root() {
        return Err("the kept state root differs from the one from scratch".into());
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "block-apply-stored-fragments".into();
    case.metric = "throughput";
    case.unit = "blocks/s";
    case.goal = Some(0.8);
    case.baseline = format!("the same blocks on a ledger holding {little_fragments} fragments");
    case.note = format!(
        "{large_fragments} stored fragments (built in {build_s:.1} s) against {little_fragments}; \
         each block: 100 transfers, an 8-segment order, 12 reports, an 8-segment deletion, signatures verified \
         ({:.1} ms per block on the large ledger); the state root from scratch on the large ledger takes \
         {from_scratch_ms:.0} ms (what every block paid before the roots were kept \
         incrementally); audit rounds (every audit_period_blocks) still snapshot each held set \
         and are not in this figure",
        1000.0 / case.value
    );
    Ok(case)
}

/// A follower catching up on decided blocks (each checked: parent, the commit's 2f + 1 BLS
/// precommits against the validator set, the certified parent root), against the work it must
/// do: the same blocks applied to a ledger, each block hashed and its commit verified, in the
/// same run. The same blocks applied with no check at all are timed too (the note).
fn follower_case(options: &Options) -> Result<Case, String> {
    use cess_consensus::bft::{Block, CommitRecord, block_info};
    use cess_consensus::follow::{Follower, FollowerConfig, FollowerOutput};
    use cess_consensus::sim::{Sim, SimConfig};
    let mut config = SimConfig::new(4, 91);
    // About 500 transfers a second: blocks of a few hundred.
    config.tx_every_ms = 2;
    let mut sim = Sim::new(config);
    sim.run_until(if options.quick { 3_000 } else { 8_000 });
    let core = sim.core(0);
    let tip = core.ledger().height();
    if tip < 5 {
        return Err(format!("the simulated chain decided only {tip} blocks"));
    }
    let blocks: Vec<(Block, CommitRecord)> = (1..=tip)
        .map(|h| {
            let (block, commit) = core.decided(h).expect("decided blocks are kept");
            ((**block).clone(), commit.clone())
        })
        .collect();
    let txs: usize = blocks.iter().map(|(b, _)| b.txs.len()).sum();
    let root = core.ledger().root();
    let genesis = sim.genesis_ledger().clone();
    let runs = if options.quick { 3 } else { 7 };
    let (mut ours, mut theirs, mut unchecked) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut plain = genesis.clone();
        let started = Instant::now();
        for (block, _) in &blocks {
            plain.apply_block(&block_info(block), &block.txs, &CpuBackend);
        }
        unchecked.push(blocks.len() as f64 / started.elapsed().as_secs_f64());
        if plain.root() != root {
            return Err("the plain replay's root differs from the validators'".into());
        }

        let mut required = genesis.clone();
        let started = Instant::now();
        for (block, commit) in &blocks {
            let validators = cess_consensus::bft::validator_set(&required);
            if !commit.verify(
                &required.chain_id(),
                block.height,
                &block.hash(),
                &validators,
            ) {
                return Err("a decided block's commit does not verify".into());
            }
            required.apply_block(&block_info(block), &block.txs, &CpuBackend);
        }
        theirs.push(blocks.len() as f64 / started.elapsed().as_secs_f64());

        let served = blocks.clone();
        let mut follower = Follower::from_genesis(genesis.clone(), 1, FollowerConfig::default());
        let started = Instant::now();
        follower.poll(0);
        for (block, commit) in served {
            let outputs = follower.on_block(0, block, commit, 0);
            if !outputs
                .iter()
                .any(|o| matches!(o, FollowerOutput::Applied(_)))
            {
                return Err(format!("the follower refused a decided block: {outputs:?}"));
            }
        }
        ours.push(blocks.len() as f64 / started.elapsed().as_secs_f64());
        if follower.ledger().root() != root {
            return Err("the follower's root differs from the validators'".into());
        }
    }
    unchecked.sort_by(f64::total_cmp);
    let unchecked_median = unchecked[unchecked.len() / 2];
    let mut case = Case::from_runs(ours, theirs);
    case.name = "follower-catch-up".into();
    case.metric = "throughput";
    case.unit = "blocks/s";
    case.goal = Some(0.9);
    case.baseline =
        "the work a check needs: the same blocks hashed, their commits verified and applied".into();
    case.note = format!(
        "{} blocks, {txs} transfers (4 validators); every transaction's signature is verified in \
         both; the commit check (3 of 4 BLS precommits, verified in one batch of n + 1 pairings) \
         is most of a small block's cost: with no check at all the same blocks apply at \
         {unchecked_median:.0} blocks/s ({:.2} of that)",
        blocks.len(),
        case.value / unchecked_median
    );
    Ok(case)
}
