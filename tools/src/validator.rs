//! `cess validator`: a local validator network (`testnet`), one validator (`run`), and a load
//! generator (`load`) that sends signed transfers from the network's faucet account.
//!
//! Layout of a testnet directory:
//! - `genesis.bin`: the genesis (canonical encoding; its hash is the chain id);
//! - `faucet.key`: a funded account's key (libp2p protobuf keypair, mode 0600);
//! - `v<i>/node.key`: the validator's account and transport key (0600);
//! - `v<i>/validator.key`: its BLS key (hex of the 32-byte secret, 0600);
//! - `v<i>/validator.toml`: listen address and peers;
//! - `v<i>/commits.log`, written by `run`: `height block-hash state-root txs` per commit.

use anyhow::{Context, Result, bail};
use cess_consensus::bft::CoreConfig;
use cess_consensus::codec::hex;
use cess_consensus::ledger::{Genesis, GenesisValidator, Ledger, LedgerParams, TOKEN};
use cess_consensus::net::{self, TxClient, ValidatorHandle};
use cess_consensus::{AccountKey, Call, Transaction, ValidatorKey};
use cess_http::metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use cess_http::metrics::{Registry, ScrapeFn, Unit};
use cess_transport::identity::{NodeAddr, NodeKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONFIG_FILE: &str = "validator.toml";
const GENESIS_FILE: &str = "genesis.bin";
const FAUCET_KEY: &str = "faucet.key";

#[derive(Debug, Serialize, Deserialize)]
pub struct ValidatorConfig {
    pub listen: SocketAddr,
    pub genesis: PathBuf,
    pub node_key: PathBuf,
    pub validator_key: PathBuf,
    /// The other validators, `/ip4/…/udp/…/quic-v1/p2p/<peer id>`.
    pub peers: Vec<String>,
    /// An idle chain makes one block per this many ms (a block with transactions is proposed
    /// at once): 500 ms, at most half the propose timeout (1 s).
    #[serde(default = "default_empty_block_interval_ms")]
    pub empty_block_interval_ms: u64,
    /// HTTP address of `/metrics` (loopback unless `http_public`); none when absent. Its
    /// port is written to `metrics-addr` beside the configuration.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    #[serde(default)]
    pub http_public: bool,
    /// The whole ledger is written to `checkpoint` after every this many blocks, so a restart
    /// replays at most this many blocks (0: never).
    #[serde(default = "default_checkpoint_every_blocks")]
    pub checkpoint_every_blocks: u64,
    /// At start, a validator whose state is this many blocks or more behind a peer's latest
    /// checkpoint takes that checkpoint (checked against the validator sets, era by era,
    /// from its own state) instead of replaying every block since (0: never).
    #[serde(default = "default_state_sync_behind_blocks")]
    pub state_sync_behind_blocks: u64,
}

fn default_checkpoint_every_blocks() -> u64 {
    cess_consensus::checkpoint::CHECKPOINT_EVERY_BLOCKS
}

fn default_state_sync_behind_blocks() -> u64 {
    2 * cess_consensus::checkpoint::CHECKPOINT_EVERY_BLOCKS
}

impl ValidatorConfig {
    /// The configured peers' addresses.
    fn peer_addrs(&self) -> Result<Vec<NodeAddr>> {
        self.peers
            .iter()
            .map(|p| p.parse::<NodeAddr>().with_context(|| format!("peer {p}")))
            .collect()
    }
}

/// `dir`'s validator.toml: its path (for messages) and contents.
fn load_config(dir: &Path) -> Result<(PathBuf, ValidatorConfig)> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok((path, config))
}

fn default_empty_block_interval_ms() -> u64 {
    500
}

fn account_key(node_key: &NodeKey) -> Result<AccountKey> {
    AccountKey::from_libp2p(node_key.keypair()).context("the node key is not Ed25519")
}

/// The testnet faucet's account id (hex) in `dir`.
pub fn faucet_account(dir: &Path) -> Result<String> {
    let path = dir.join(FAUCET_KEY);
    let key = NodeKey::load(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&account_key(&key)?.id().0))
}

fn load_validator_key(path: &Path) -> Result<ValidatorKey> {
    let bytes = crate::secret::read(path, "validator key")?;
    let key = std::str::from_utf8(&bytes)
        .ok()
        .and_then(cess_types::parse_hex32)
        .with_context(|| format!("{}: not 64 hex digits", path.display()))?;
    ValidatorKey::from_secret_bytes(&key).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What a testnet's genesis holds beyond its validators and faucet.
#[derive(Debug, Clone, Default)]
pub struct TestnetExtras {
    /// More funded accounts (a devnet's owner and miners).
    pub accounts: Vec<(cess_consensus::AccountId, u128)>,
    pub taggers: Vec<cess_consensus::ledger::GenesisTagger>,
    /// Blocks between audit rounds, when not the default.
    pub audit_period_blocks: Option<u64>,
    /// Miners sampled per audit round, per mille, when not the default.
    pub audit_miners_permille: Option<u32>,
    /// Nodes beyond the genesis validators: funded, configured to reach the validators, not
    /// in the genesis set (`cess validator candidate` registers them).
    pub candidates: usize,
    /// Blocks per era (an election each era), when not the default.
    pub era_blocks: Option<u64>,
    /// Blocks a restoral claim lasts (the lost-file countdown is three of them), when not
    /// the default.
    pub restoral_claim_blocks: Option<u64>,
    /// The idle files' parameters, when not the network's.
    pub pois: Option<cess_proofs::pois::PoisParams>,
    /// Blocks to answer a space audit at most, when not the default.
    pub pois_space_deadline_blocks: Option<u64>,
    /// Ms of ledger time to answer a space audit, when not the default.
    pub pois_space_deadline_ms: Option<u64>,
}

/// Creates a network of `count` validators listening on consecutive UDP ports from
/// `base_port` on loopback, and `candidates` more nodes that are not validators yet (their
/// directories follow the validators', their ports too).
pub fn testnet(
    dir: &Path,
    count: usize,
    base_port: u16,
    candidates: usize,
    era_blocks: Option<u64>,
) -> Result<()> {
    testnet_with(
        dir,
        count,
        base_port,
        TestnetExtras {
            candidates,
            era_blocks,
            ..TestnetExtras::default()
        },
    )
}

/// [`testnet`] with more in its genesis.
pub fn testnet_with(dir: &Path, count: usize, base_port: u16, extras: TestnetExtras) -> Result<()> {
    if count == 0 {
        bail!("a network needs at least one validator");
    }
    std::fs::create_dir(dir)
        .with_context(|| format!("creating {} (it must not exist)", dir.display()))?;
    let mut nodes = Vec::new();
    for i in 0..count + extras.candidates {
        let vdir = dir.join(format!("v{i}"));
        std::fs::create_dir(&vdir)?;
        let node_key = NodeKey::create(&vdir.join("node.key"))?;
        let validator_key = ValidatorKey::generate();
        let secret = zeroize::Zeroizing::new(format!("{}\n", hex(&*validator_key.secret_bytes())));
        crate::secret::create(&vdir.join("validator.key"), secret.as_bytes())?;
        let listen: SocketAddr = format!("127.0.0.1:{}", base_port as usize + i).parse()?;
        nodes.push((vdir, node_key, validator_key, listen));
    }
    let faucet = NodeKey::create(&dir.join(FAUCET_KEY))?;
    let defaults = LedgerParams::default();
    let params = LedgerParams {
        validators_per_era: count as u32,
        audit_period_blocks: extras
            .audit_period_blocks
            .unwrap_or(defaults.audit_period_blocks),
        audit_miners_permille: extras
            .audit_miners_permille
            .unwrap_or(defaults.audit_miners_permille),
        era_blocks: extras.era_blocks.unwrap_or(defaults.era_blocks),
        restoral_claim_blocks: extras
            .restoral_claim_blocks
            .unwrap_or(defaults.restoral_claim_blocks),
        pois: extras.pois.unwrap_or(defaults.pois),
        pois_space_deadline_blocks: extras
            .pois_space_deadline_blocks
            .unwrap_or(defaults.pois_space_deadline_blocks),
        pois_space_deadline_ms: extras
            .pois_space_deadline_ms
            .unwrap_or(defaults.pois_space_deadline_ms),
        ..defaults
    };
    params
        .check()
        .map_err(|e| anyhow::anyhow!("testnet parameters: {e}"))?;
    let genesis = Genesis {
        chain_name: format!("cess-testnet-{}", std::process::id()),
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64,
        accounts: std::iter::once(&faucet)
            .chain(nodes.iter().map(|(_, key, _, _)| key))
            .map(|key| Ok((account_key(key)?.id(), 1_000_000_000 * TOKEN)))
            .chain(extras.accounts.iter().map(|a| Ok(*a)))
            .collect::<Result<_>>()?,
        reward_pool: 1_000_000 * TOKEN,
        validators: nodes[..count]
            .iter()
            .map(|(_, key, vkey, _)| {
                Ok(GenesisValidator {
                    account: account_key(key)?.id(),
                    key: vkey.public().to_bytes(),
                    possession: vkey.proof_of_possession().to_bytes(),
                    stake: params.candidate_stake_min,
                })
            })
            .collect::<Result<_>>()?,
        taggers: extras.taggers,
        params,
    };
    std::fs::write(dir.join(GENESIS_FILE), genesis.encode())?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|(_, key, _, listen)| {
            NodeAddr {
                socket: *listen,
                peer: key.peer_id(),
            }
            .to_string()
        })
        .collect();
    for (i, (vdir, _, _, listen)) in nodes.iter().enumerate() {
        let config = ValidatorConfig {
            listen: *listen,
            genesis: std::path::absolute(dir.join(GENESIS_FILE))?,
            node_key: std::path::absolute(vdir.join("node.key"))?,
            validator_key: std::path::absolute(vdir.join("validator.key"))?,
            // The genesis validators; validators elected later are dialed at the endpoints
            // they put on the chain.
            peers: addrs[..count]
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect(),
            empty_block_interval_ms: default_empty_block_interval_ms(),
            metrics: Some("127.0.0.1:0".parse()?),
            http_public: false,
            checkpoint_every_blocks: default_checkpoint_every_blocks(),
            state_sync_behind_blocks: default_state_sync_behind_blocks(),
        };
        std::fs::write(vdir.join(CONFIG_FILE), toml::to_string(&config)?)?;
    }
    std::fs::write(dir.join("validators.txt"), addrs[..count].join("\n") + "\n")?;
    println!(
        "testnet of {count} validators in {} (chain {})",
        dir.display(),
        hex(&genesis.chain_id()[..8])
    );
    if extras.candidates > 0 {
        println!(
            "{} candidate nodes: v{count}..v{} (run them, then `cess validator candidate DIR`)",
            extras.candidates,
            count + extras.candidates - 1
        );
    }
    Ok(())
}

/// Blocks a restarted validator keeps in memory (older ones are read from its store).
const RESTORED_BLOCKS_KEPT: usize = 256;

/// Runs the validator configured in `dir` until SIGINT or SIGTERM.
pub fn run(dir: &Path) -> Result<()> {
    let (config_path, config) = load_config(dir)?;
    let ledger = crate::chain::genesis_ledger(&config.genesis)?;
    let node_key = Arc::new(NodeKey::load(&config.node_key)?);
    let account = account_key(&node_key)?.id();
    let validator_key = load_validator_key(&config.validator_key)?;
    let peers = config.peer_addrs()?;
    let propose_ms = CoreConfig::default().timeouts.propose_ms;
    if config.empty_block_interval_ms > propose_ms / 2 {
        bail!(
            "{}: empty_block_interval_ms = {} is over half the propose timeout ({propose_ms} ms): \
             the other validators would time the proposer out",
            config_path.display(),
            config.empty_block_interval_ms
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let log_path = dir.join("commits.log");
    // Every committed block is kept in `blocks`; a restart replays them, then syncs the rest.
    // The consensus log of the height after them is replayed too, so this validator re-sends
    // the votes it cast before it stopped and never signs other ones.
    let mut replay_started = Instant::now();
    let open = || cess_consensus::store::open_disk(dir, ledger.clone(), RESTORED_BLOCKS_KEPT, true);
    let state_sync = config.state_sync_behind_blocks > 0 && !peers.is_empty();
    let mut opened = match open() {
        Ok(opened) => Some(opened),
        // A store that starts at a taken checkpoint which is gone: a peer's is taken again,
        // followed from genesis.
        Err(e @ cess_consensus::store::DiskError::NoBaseCheckpoint { .. }) if state_sync => {
            eprintln!("{e}; taking a peer's checkpoint, checked from genesis");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if state_sync {
        // From the state just opened (or genesis), not from the disk opened a second time.
        let (trusted, previous) = match &opened {
            Some(o) => (&o.restored.ledger, o.restored.previous_validators.as_ref()),
            None => (&ledger, None),
        };
        let started = Instant::now();
        let synced = runtime.block_on(cess_consensus::statesync::state_sync_from(
            node_key.clone(),
            &peers,
            dir,
            trusted,
            previous,
            config.state_sync_behind_blocks,
        ));
        match synced {
            Ok(Some(synced)) => {
                println!(
                    "took the checkpoint at height {} from {} in {} ms ({} bytes; {} era \
                     headers checked from height {}, where this validator's own state was)",
                    synced.height,
                    synced.peer,
                    started.elapsed().as_millis(),
                    synced.checkpoint_bytes,
                    synced.headers,
                    synced.was_at
                );
                // The disk now holds the taken checkpoint: opened again below.
                opened = None;
            }
            Ok(None) => {}
            Err(e) => eprintln!("state sync: {e}; catching up block by block instead"),
        }
    }
    let opened = match opened {
        Some(opened) => opened,
        None => {
            replay_started = Instant::now();
            open()?
        }
    };
    let height = opened.disk.store.height();
    if opened.store_torn_bytes > 0 {
        eprintln!(
            "block store: dropped a torn last record ({} bytes; its block is synced again)",
            opened.store_torn_bytes
        );
    }
    if let Some(reason) = &opened.checkpoint_refused {
        eprintln!("{reason}: not used; replaying the block store from genesis");
    }
    if height > 0 {
        println!(
            "resumed at height {height} from {} in {} ms ({}, {} blocks replayed)",
            dir.join(cess_consensus::store::BLOCKS_FILE).display(),
            replay_started.elapsed().as_millis(),
            opened
                .checkpoint_height
                .map_or("no checkpoint".to_string(), |h| format!(
                    "checkpoint at height {h}"
                )),
            opened.replayed_blocks
        );
    }
    if opened.wal_torn_bytes > 0 {
        eprintln!(
            "write-ahead log: dropped a torn tail ({} bytes, never synced, so never sent)",
            opened.wal_torn_bytes
        );
    }
    if !opened.wal_entries.is_empty() {
        println!(
            "replaying {} write-ahead log entries of height {}",
            opened.wal_entries.len(),
            height + 1
        );
    }
    runtime.block_on(async move {
        let core_config = CoreConfig {
            empty_block_interval_ms: config.empty_block_interval_ms,
            ..CoreConfig::default()
        };
        let (core, mut disk) = opened.into_core(validator_key.clone(), account, core_config)?;
        disk.checkpoint_every_blocks = config.checkpoint_every_blocks;
        if let Some(registered) = core.ledger().candidate(&account)
            && registered.key != *validator_key.public()
        {
            bail!(
                "{}: this is not the BLS key account {account} registered as a candidate",
                config.validator_key.display()
            );
        }
        let member = core.is_member();
        let handle = net::start_with_store(core, node_key, config.listen, peers, Some(disk))?;
        println!("validator {account} listening {}", handle.local_addr()?);
        // How far behind the peers it is, every 5 s while it catches up.
        let progress = handle.stats().clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut was_behind = false;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let (height, tip) = {
                    let report = progress.report.lock().expect("stats lock");
                    (report.height.saturating_sub(1), report.tip_seen)
                };
                let rate = height.saturating_sub(last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), height);
                if tip > height + 2 {
                    println!(
                        "catching up: at height {height}, peers at {tip} ({} behind, {rate:.0} blocks/s)",
                        tip - height
                    );
                    was_behind = true;
                } else if was_behind {
                    println!("caught up at height {height}");
                    was_behind = false;
                }
            }
        });
        if !member {
            println!(
                "not in the validator set: following the chain from its members until an \
                 election takes this node in (`cess validator candidate {}` registers it)",
                dir.display()
            );
        }
        let chain = Arc::new(ChainMetrics::default());
        if let Some(http_addr) = config.metrics {
            crate::node::serve_metrics(http_addr, config.http_public, dir, |http| {
                registry(&handle, &chain, http)
            })
            .await?;
        }
        let mut commits = handle.commits();
        let mut last_commit = Instant::now();
        let mut member_now = member;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let writer = tokio::spawn(async move {
            loop {
                match commits.recv().await {
                    Ok(c) => {
                        if !c.synced {
                            chain
                                .commit_interval
                                .observe(last_commit.elapsed().as_secs_f64());
                        }
                        last_commit = Instant::now();
                        for event in &c.outcome.events {
                            if let cess_consensus::ledger::Event::ValidatorsElected {
                                era,
                                validators,
                            } = event
                            {
                                let now_member = validators.contains(&account);
                                if now_member != member_now {
                                    println!(
                                        "{} the validator set at height {} (era {era})",
                                        if now_member { "elected to" } else { "left" },
                                        c.height + 1
                                    );
                                    member_now = now_member;
                                }
                            }
                        }
                        chain.block_proofs.observe(c.outcome.proofs_verified as f64);
                        chain.block_txs.observe(c.block.txs.len() as f64);
                        let line = format!(
                            "{} {} {} {}\n",
                            c.height,
                            hex(&c.hash.0),
                            hex(&c.outcome.root),
                            c.block.txs.len()
                        );
                        if log.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("commit log skipped {n} commits (slow disk)");
                    }
                    Err(_) => return,
                }
            }
        });
        crate::node::shutdown_signal().await;
        println!("shutting down");
        handle.shutdown();
        writer.abort();
        Ok(())
    })
}

/// What the driver measures from the commits it sees.
#[derive(Debug)]
struct ChainMetrics {
    /// Time from one commit to the next (a height's whole life: proposal, votes, execution).
    commit_interval: Histogram,
    /// Storage proofs verified per block.
    block_proofs: Histogram,
    block_txs: Histogram,
}

impl Default for ChainMetrics {
    fn default() -> ChainMetrics {
        ChainMetrics {
            commit_interval: cess_http::metrics::latency_histogram(),
            block_proofs: Histogram::new([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            block_txs: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
        }
    }
}

/// The validator's metrics: height, round, peers, mempool, refusals by reason, commit
/// latency, proofs verified per block and the time of the step that verified them.
fn registry(
    handle: &ValidatorHandle,
    chain: &Arc<ChainMetrics>,
    http: Arc<cess_http::HttpStats>,
) -> Registry {
    use std::sync::atomic::Ordering::Relaxed;
    let mut registry = Registry::default();
    registry.register_with_unit(
        "cess_validator_commit_interval",
        "Time from one commit to the next",
        Unit::Seconds,
        chain.commit_interval.clone(),
    );
    registry.register(
        "cess_validator_block_proofs",
        "Storage proofs verified per committed block",
        chain.block_proofs.clone(),
    );
    registry.register(
        "cess_validator_block_txs",
        "Transactions per committed block",
        chain.block_txs.clone(),
    );
    let stats = handle.stats().clone();
    registry.register_collector(ScrapeFn::boxed(move |scrape| {
        let report = stats.report.lock().expect("stats lock").clone();
        scrape.gauge(
            "cess_validator_height",
            "Height of the last committed block",
            None,
            report.height.saturating_sub(1) as i64,
        );
        scrape.gauge(
            "cess_validator_round",
            "Consensus round at the current height",
            None,
            report.round,
        );
        scrape.gauge(
            "cess_validator_peers_connected",
            "Validators this one has a live connection to",
            None,
            stats.peers_connected.load(Relaxed) as i64,
        );
        scrape.gauge(
            "cess_validator_mempool_txs",
            "Transactions waiting in the mempool",
            None,
            report.mempool_txs as i64,
        );
        scrape.gauge(
            "cess_validator_mempool",
            "Bytes of the transactions in the mempool",
            Some(Unit::Bytes),
            report.mempool_bytes as i64,
        );
        let refused = stats.refused.lock().expect("stats lock").clone();
        let refused: Vec<(&str, u64)> = refused.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        scrape.counters(
            "cess_validator_txs_refused",
            "Client transactions refused, by reason",
            None,
            "reason",
            &refused,
        );
        scrape.counters(
            "cess_validator_events",
            "Consensus events: relayed transactions refused, messages dropped, invalid proposals, equivocations seen, blocks taken by sync",
            None,
            "kind",
            &[
                ("relayed_tx_refused", report.stats.txs_refused),
                ("message_dropped", report.stats.messages_dropped),
                ("proposal_invalid", report.stats.proposals_invalid),
                ("equivocation", report.stats.equivocations_seen),
                ("synced_block", report.stats.synced_blocks),
            ],
        );
        scrape.counter(
            "cess_validator_proofs_verified",
            "Storage proofs verified in committed blocks",
            None,
            stats.proofs_verified.load(Relaxed),
        );
        let all = stats.commit_step.snapshot();
        let with_proofs = stats.proof_commit_step.snapshot();
        scrape.histograms(
            "cess_validator_commit_step",
            "Time of the engine step that committed a block (its execution, proof verification included), for all blocks and for those with storage proofs",
            Some(Unit::Seconds),
            "blocks",
            &[
                ("all", all.sum_s, all.count, &all.buckets),
                (
                    "with_proofs",
                    with_proofs.sum_s,
                    with_proofs.count,
                    &with_proofs.buckets,
                ),
            ],
        );
        http.scrape(scrape);
    }));
    registry
}

/// Sends `count` transfers from the faucet through the first validator, then waits until the
/// faucet's transfers show in that validator's commit log (or `wait_s` passes).
pub fn load(dir: &Path, count: u64) -> Result<()> {
    let genesis = Genesis::decode(&std::fs::read(dir.join(GENESIS_FILE))?)?;
    let faucet_node = Arc::new(NodeKey::load(&dir.join(FAUCET_KEY))?);
    let faucet = account_key(&faucet_node)?;
    let first: NodeAddr = std::fs::read_to_string(dir.join("validators.txt"))?
        .lines()
        .next()
        .context("validators.txt is empty")?
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut client = TxClient::connect(faucet_node, &first).await?;
        let to = AccountKey::generate().id();
        // A fresh testnet: the faucet's nonces from 0, fees and validity as at genesis.
        let ledger = Ledger::genesis(&genesis)?;
        let txs: Vec<Transaction> = (0..count)
            .map(|nonce| {
                ledger.transaction_with_nonce(&faucet, nonce, Call::Transfer { to, amount: TOKEN })
            })
            .collect();
        client.send(&txs).await?;
        // Let the last frames leave before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.close();
        anyhow::Ok(())
    })?;
    println!(
        "sent {count} transfers in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cess validator candidate DIR`: registers the node configured in `dir` as a validator
/// candidate (bonding `stake_tokens`, the chain's minimum when not given), or, if it is one,
/// bonds `stake_tokens` more; then puts its endpoint on the chain (`endpoint`, or the
/// configured listen address), where the validators find it once it is elected. Waits until
/// each transaction is in a block and says when the next election is.
pub fn candidate(dir: &Path, stake_tokens: Option<u64>, endpoint: Option<String>) -> Result<()> {
    let (config_path, config) = load_config(dir)?;
    let node_key = Arc::new(NodeKey::load(&config.node_key)?);
    let validator_key = load_validator_key(&config.validator_key)?;
    let endpoint = match endpoint {
        Some(endpoint) => endpoint,
        None if config.listen.ip().is_unspecified() => bail!(
            "{} listens on {}: say where the validators reach it with --endpoint \
             /ip4/…/udp/…/quic-v1",
            config_path.display(),
            config.listen
        ),
        None => {
            let ip = match config.listen.ip() {
                std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
                std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
            };
            format!("{ip}/udp/{}/quic-v1", config.listen.port())
        }
    };
    let source = crate::chain::ChainSource {
        genesis: config.genesis.clone(),
        validators: config.peer_addrs()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let client =
            crate::chain::ChainClient::connect(&source, node_key, Duration::from_secs(120)).await?;
        let account = client.account.id();
        let (registered, stake_min) = client.ledger(|l| {
            (
                l.candidate(&account).cloned(),
                l.params().candidate_stake_min,
            )
        });
        let stake = stake_tokens.map(|t| u128::from(t) * TOKEN);
        match &registered {
            None => {
                let stake = stake.unwrap_or(stake_min);
                let height = client
                    .submit(Call::RegisterCandidate {
                        key: validator_key.public().to_bytes(),
                        possession: validator_key.proof_of_possession().to_bytes(),
                        stake,
                    })
                    .await?;
                println!(
                    "registered {account} as a candidate with a stake of {} tokens (block {height})",
                    stake / TOKEN
                );
            }
            Some(existing) => {
                if existing.key != *validator_key.public() {
                    bail!(
                        "{account} is a candidate with another BLS key than {}",
                        config.validator_key.display()
                    );
                }
                if let Some(amount) = stake {
                    let height = client.submit(Call::Bond { amount }).await?;
                    println!(
                        "bonded {} tokens more: a stake of {} tokens (block {height})",
                        amount / TOKEN,
                        (existing.stake + amount) / TOKEN
                    );
                } else {
                    println!(
                        "{account} is a candidate already, with a stake of {} tokens",
                        existing.stake / TOKEN
                    );
                }
            }
        }
        if registered.is_none_or(|c| c.endpoint != endpoint) {
            let height = client
                .submit(Call::SetValidatorEndpoint {
                    endpoint: endpoint.clone(),
                })
                .await?;
            println!("endpoint {endpoint} on the chain (block {height})");
        }
        let (height, era_blocks, member) = client.ledger(|l| {
            (
                l.height(),
                l.params().era_blocks,
                l.validators().iter().any(|v| v.account == account),
            )
        });
        let next = (height / era_blocks + 1) * era_blocks;
        println!(
            "{}; the next election is at block {next} (candidates are ranked by reputation, \
             stake and chance)",
            if member {
                "in the current validator set"
            } else {
                "not in the current validator set"
            }
        );
        anyhow::Ok(())
    })
}
