// Long file: the validator's and the follower's QUIC drivers and the wire helpers they share.
//! The QUIC driver of a validator (feature `quic`): a thin loop that moves [`NetMsg`]s between
//! a validator's [`Engine`] and its peers over `cess-transport` endpoints, turns timeouts into timers, and
//! reports commits. All decisions stay in the core.
//!
//! The wire: ALPN `cess-consensus/2`, TLS bound to the node key (the validator's account key,
//! so a connection's PeerId names its account). Each validator dials every peer and sends on
//! one long-lived stream per connection: frames of `len u32 LE ‖ message`, each message at most
//! [`MESSAGE_BYTES_MAX`]. A peer that sends a malformed frame is disconnected. Peers that are
//! not validators may send transactions only. A sender whose queue is full drops messages (the
//! core re-sends votes and certificates by itself); a broken connection is re-dialed.

use crate::bft::Timeout;
use crate::bft::{Committed, Engine, MESSAGE_BYTES_MAX, NetMsg, Output};
use crate::keys::AccountId;
use crate::tx::{Transaction, VerifiedTx};
use cess_transport::identity::{NodeAddr, NodeKey};
use cess_transport::quic::{Connection, Endpoint, ErrorCode, Limits};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// ALPN of the validators' protocol.
pub const CONSENSUS_PROTOCOL: &str = "cess-consensus/2";
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Followers' sync requests answered at once (each holds a block of up to 16 MiB until the
/// follower has read it), whatever the number of followers, connections and streams.
const SYNC_ANSWERS_MAX: usize = 8;
/// Validators' sync requests answered at once, apart from the followers' (one per
/// validator's stream at a time; a request over this is refused and asked again).
const MEMBER_SYNC_ANSWERS_MAX: usize = 32;
/// A sync answer not taken by its follower within this closes the connection.
const SYNC_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once a frame's length is in, its body must arrive within this (16 MiB at under 1 MB/s).
const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest frame from a peer that is not a validator: transactions (a relay message's
/// bound) or a sync request. Proposals, the only larger messages, come from validators.
const CLIENT_FRAME_BYTES_MAX: usize = crate::bft::RELAY_TX_BYTES_MAX + 4096;
/// Events from clients and followers (their transactions, their sync requests) queued for the
/// core; the core takes them only when no validator's message waits.
const CLIENT_EVENTS: usize = 1024;

/// The account a PeerId names, when its key is Ed25519 (the only kind accounts use).
pub fn account_of(peer: &PeerId) -> Option<AccountId> {
    // An Ed25519 PeerId is the identity multihash of the protobuf-encoded key:
    // code 0x00, a one-byte length, the key.
    let bytes = peer.to_bytes();
    let (&[0x00, len], key) = bytes.split_first_chunk::<2>()? else {
        return None;
    };
    if usize::from(len) != key.len() {
        return None;
    }
    let key = libp2p_identity::PublicKey::try_decode_protobuf(key).ok()?;
    Some(AccountId(key.try_into_ed25519().ok()?.to_bytes()))
}

// Events always cross the channel boxed (`EventBox`), so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Message(AccountId, NetMsg),
    Timeout(Timeout, u64),
    /// Transactions from a peer: relayed by a validator, or sent by a client.
    Txs {
        txs: Vec<VerifiedTx>,
        from_validator: bool,
    },
    Submit(
        Vec<VerifiedTx>,
        tokio::sync::oneshot::Sender<Vec<Result<(), crate::TxError>>>,
    ),
    /// A sync request (height, count): answered with the blocks (shared, not copied on the
    /// loop) on the asker's own stream.
    Sync(u64, u32, tokio::sync::oneshot::Sender<Answer<SyncAnswer>>),
    /// A header request (height, step, count): the headers.
    Headers(
        u64,
        u64,
        u32,
        tokio::sync::oneshot::Sender<Answer<HeaderAnswer>>,
    ),
}

type SyncAnswer = (Arc<crate::bft::Block>, crate::bft::CommitRecord);
type HeaderAnswer = (crate::bft::BlockHeader, crate::bft::CommitRecord);

/// The core loop's answer to a request for blocks or headers: those it has from the height
/// asked for, and its tip when they stop short because the tip is reached.
struct Answer<T> {
    items: Vec<T>,
    tip: Option<u64>,
}

impl<T> Answer<T> {
    /// The messages written back: one per item, then the tip if there is one.
    fn into_messages(self, message: impl Fn(T) -> NetMsg) -> Vec<NetMsg> {
        self.items
            .into_iter()
            .map(message)
            .chain(self.tip.map(|height| NetMsg::Tip { height }))
            .collect()
    }
}

/// Hands the core loop a request and waits for its answer (`None`: the loop stopped).
async fn ask_core<T>(
    events: &mpsc::Sender<EventBox>,
    event: impl FnOnce(tokio::sync::oneshot::Sender<Answer<T>>) -> Event,
) -> Option<Answer<T>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    events.send(EventBox(Box::new(event(reply)))).await.ok()?;
    answer.await.ok()
}

/// A running validator: submit transactions, watch commits, read its loop's figures, stop it.
#[derive(Debug, Clone)]
pub struct ValidatorHandle {
    chain_id: crate::tx::Hash32,
    events: mpsc::Sender<EventBox>,
    commits: broadcast::Sender<Arc<Committed>>,
    endpoint: Endpoint,
    stats: Arc<LoopStats>,
}

/// What a validator's loop reports for its metrics, updated after every event.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// The engine after its last event.
    pub report: std::sync::Mutex<crate::bft::EngineReport>,
    /// Peers with a live connection from this validator.
    pub peers_connected: std::sync::atomic::AtomicU64,
    /// Client transactions refused, by the error's name (`BadNonce`, `FeeTooLow`, …).
    pub refused: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Duration of the engine step that committed a block: the block's execution, its
    /// storage proofs' verification included.
    pub commit_step: cess_transport::protocol::LatencyHistogram,
    /// The same, for the blocks that verified at least one storage proof (their time is
    /// mostly the proofs' verification).
    pub proof_commit_step: cess_transport::protocol::LatencyHistogram,
    /// Storage proofs verified in committed blocks.
    pub proofs_verified: std::sync::atomic::AtomicU64,
    /// Write-ahead log syncs (each one `fdatasync` before a vote or proposal went out).
    pub wal_syncs: std::sync::atomic::AtomicU64,
    /// Time each such sync took.
    pub wal_sync: cess_transport::protocol::LatencyHistogram,
}

impl LoopStats {
    fn count_refusals(&self, answers: &[Result<(), crate::TxError>]) {
        let mut refused = None;
        for e in answers.iter().filter_map(|a| a.as_ref().err()) {
            let refused = refused.get_or_insert_with(|| self.refused.lock().expect("stats lock"));
            // The variant's name: a fixed, small set of labels.
            let name = format!("{e:?}");
            let name = name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_string();
            *refused.entry(name).or_default() += 1;
        }
    }
}

/// Events cross a channel boxed (a proposal carries a whole block).
struct EventBox(Box<Event>);

impl std::fmt::Debug for EventBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Quic(#[from] cess_transport::quic::QuicError),
    #[error("the validator has stopped")]
    Stopped,
    #[error("refused: {0}")]
    Refused(crate::TxError),
    #[error("{0}")]
    Io(String),
}

impl ValidatorHandle {
    pub fn local_addr(&self) -> std::io::Result<NodeAddr> {
        self.endpoint.node_addr()
    }

    /// Every commit from now on (a slow receiver misses some; see `broadcast` lagging).
    pub fn commits(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.commits.subscribe()
    }

    /// Hand transactions to this validator's mempool (it relays them to the others). The
    /// signatures are checked here, on the caller's task; the answers come in order.
    pub async fn submit(
        &self,
        txs: Vec<Transaction>,
    ) -> Result<Vec<Result<(), crate::TxError>>, NetError> {
        let mut answers: Vec<Option<Result<(), crate::TxError>>> = vec![None; txs.len()];
        let mut verified = Vec::with_capacity(txs.len());
        let mut positions = Vec::with_capacity(txs.len());
        for (k, tx) in txs.into_iter().enumerate() {
            match VerifiedTx::check(tx, &self.chain_id) {
                Some(tx) => {
                    verified.push(tx);
                    positions.push(k);
                }
                None => answers[k] = Some(Err(crate::TxError::BadSignature)),
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.events
            .send(EventBox(Box::new(Event::Submit(verified, reply))))
            .await
            .map_err(|_| NetError::Stopped)?;
        let admitted = answer.await.map_err(|_| NetError::Stopped)?;
        for (k, result) in positions.into_iter().zip(admitted) {
            answers[k] = Some(result);
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every transaction answered"))
            .collect())
    }

    /// The loop's figures.
    pub fn stats(&self) -> &Arc<LoopStats> {
        &self.stats
    }

    /// Stop: close every connection.
    pub fn shutdown(&self) {
        self.endpoint.close();
    }
}

/// Start a validator: listen on `listen`, dial `peers`, drive `core` (a [`crate::bft::Core`]). Must run inside a tokio
/// runtime; the driver's tasks live as long as the endpoint.
pub fn start<E: Engine + Send + 'static>(
    core: E,
    node_key: Arc<NodeKey>,
    listen: SocketAddr,
    peers: Vec<NodeAddr>,
) -> Result<ValidatorHandle, NetError> {
    start_with_store(core, node_key, listen, peers, None)
}

pub use crate::store::Disk;

/// [`start`], keeping every committed block in the disk's store and logging consensus inputs
/// in its write-ahead log. With a log, each block is appended by the core loop itself, durable
/// before the log is reset and the next height's entries are written; without one, a writer
/// thread appends it. Sync requests for heights the core no longer keeps are answered from
/// the store.
pub fn start_with_store<E: Engine + Send + 'static>(
    core: E,
    node_key: Arc<NodeKey>,
    listen: SocketAddr,
    peers: Vec<NodeAddr>,
    disk: Option<Disk>,
) -> Result<ValidatorHandle, NetError> {
    let checkpoints = disk.as_ref().map(|d| Arc::new(d.dir.clone()));
    let (store, wal) = match disk {
        Some(Disk {
            store,
            wal,
            dir,
            checkpoint_every_blocks,
        }) => {
            assert_eq!(
                store.height(),
                core.ledger().height(),
                "the core resumes where its store ends"
            );
            // With a log, the loop appends each block itself before it resets the log, and
            // writes checkpoints once their block is durable.
            let writer = if wal.is_some() {
                StoreWriter::inline(store, Some((dir, checkpoint_every_blocks)))
            } else {
                StoreWriter::start(store)?
            };
            (Some(writer), wal)
        }
        None => (None, None),
    };
    // The node key is the validator's account key: it signs the evidence reports.
    let reporter = crate::AccountKey::from_libp2p(node_key.keypair());
    let endpoint = Endpoint::server_for(CONSENSUS_PROTOCOL, node_key, listen, Limits::default())?;
    let (events_tx, events_rx) = mpsc::channel::<EventBox>(16 * 1024);
    let (client_events_tx, client_events_rx) = mpsc::channel::<EventBox>(CLIENT_EVENTS);
    let (commits, _) = broadcast::channel(1024);
    let stats = Arc::new(LoopStats::default());
    let chain_id = core.ledger().chain_id();
    let mut configured = BTreeMap::new();
    for peer in peers {
        let Some(account) = account_of(&peer.peer) else {
            tracing::warn!(%peer, "peer key is not Ed25519; skipped");
            continue;
        };
        configured.insert(account, peer);
    }
    let mut peers = Peers {
        endpoint: endpoint.clone(),
        stats: stats.clone(),
        answers: events_tx.clone(),
        configured,
        senders: BTreeMap::new(),
        roles: Arc::default(),
        refreshed_at: None,
        unreachable: std::collections::BTreeSet::new(),
    };
    peers.refresh(&core);
    tokio::spawn(accept_loop(
        endpoint.clone(),
        (events_tx.clone(), client_events_tx),
        peers.roles.clone(),
        chain_id,
        checkpoints,
    ));
    tokio::spawn(core_loop(
        core,
        (events_rx, client_events_rx),
        events_tx.clone(),
        peers,
        (commits.clone(), stats.clone()),
        (store, wal),
        reporter,
    ));
    Ok(ValidatorHandle {
        chain_id,
        events: events_tx,
        commits,
        endpoint,
        stats,
    })
}

/// Starts one validator per `(account, BLS key)` on loopback ports, each dialing all the
/// others, every one from `ledger` (tests, benchmarks). Must run inside a tokio runtime.
pub fn start_loopback(
    ledger: &crate::ledger::Ledger,
    keys: &[(crate::keys::AccountKey, crate::keys::ValidatorKey)],
    config: crate::bft::CoreConfig,
) -> Result<Vec<ValidatorHandle>, NetError> {
    start_loopback_on(ledger, keys, config, None)
}

/// [`start_loopback`] with validator `i`'s disk in `dir/v{i}/` (`blocks`, and `wal` when
/// `wal`), each resumed from what it holds (benchmarks: the log's cost).
pub fn start_loopback_on_disk(
    ledger: &crate::ledger::Ledger,
    keys: &[(crate::keys::AccountKey, crate::keys::ValidatorKey)],
    config: crate::bft::CoreConfig,
    dir: &std::path::Path,
    wal: bool,
) -> Result<Vec<ValidatorHandle>, NetError> {
    start_loopback_on(ledger, keys, config, Some((dir, wal)))
}

fn start_loopback_on(
    ledger: &crate::ledger::Ledger,
    keys: &[(crate::keys::AccountKey, crate::keys::ValidatorKey)],
    config: crate::bft::CoreConfig,
    disk_dir: Option<(&std::path::Path, bool)>,
) -> Result<Vec<ValidatorHandle>, NetError> {
    // Ports the OS hands out now, released just before the endpoints bind them.
    let sockets = keys
        .iter()
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Io(e.to_string()))?;
    let mut addrs = Vec::with_capacity(keys.len());
    for (socket, (account, _)) in sockets.iter().zip(keys) {
        addrs.push(NodeAddr {
            socket: socket
                .local_addr()
                .map_err(|e| NetError::Io(e.to_string()))?,
            peer: account.id().peer_id().expect("account keys are Ed25519"),
        });
    }
    drop(sockets);
    let mut handles = Vec::with_capacity(keys.len());
    for (i, (account, validator_key)) in keys.iter().enumerate() {
        let (core, disk) = match disk_dir {
            None => {
                let core = crate::bft::Core::new(
                    ledger.clone(),
                    validator_key.clone(),
                    account.id(),
                    config.clone(),
                    0,
                );
                (core, None)
            }
            Some((dir, wal)) => {
                let dir = dir.join(format!("v{i}"));
                let io = |e: &dyn std::fmt::Display| NetError::Io(e.to_string());
                std::fs::create_dir_all(&dir).map_err(|e| io(&e))?;
                let (core, disk) =
                    crate::store::open_disk(&dir, ledger.clone(), config.history_max, wal)
                        .map_err(|e| io(&e))?
                        .into_core(validator_key.clone(), account.id(), config.clone())
                        .map_err(|e| io(&e))?;
                (core, Some(disk))
            }
        };
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        let node_key = Arc::new(NodeKey::from_ed25519(account.ed25519().clone()));
        handles.push(start_with_store(
            core,
            node_key,
            addrs[i].socket,
            peers,
            disk,
        )?);
    }
    Ok(handles)
}

/// The validator's clock: Unix time in milliseconds, as genesis and block times are (so a
/// proposer's block time advances, and peers can bound it against their own clocks).
/// `started` keeps the loop's time monotonic if the wall clock steps back.
fn now_ms(started: (Instant, u64)) -> u64 {
    started.1 + started.0.elapsed().as_millis() as u64
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn core_loop<E: Engine>(
    mut core: E,
    (mut events, mut client_events): (mpsc::Receiver<EventBox>, mpsc::Receiver<EventBox>),
    loopback: mpsc::Sender<EventBox>,
    mut peers: Peers,
    (commits, stats): (broadcast::Sender<Arc<Committed>>, Arc<LoopStats>),
    (store, mut wal): (
        Option<StoreWriter>,
        Option<crate::wal::Wal<crate::wal::FileMedium>>,
    ),
    reporter: Option<crate::AccountKey>,
) {
    let started = (Instant::now(), unix_ms());
    let mut step_started = Instant::now();
    let mut timers: HashMap<Timeout, u64> = HashMap::new();
    let mut generation = 0u64;
    let mut outputs = core.start(now_ms(started));
    // Outputs of what the loop itself handed the core (a report of evidence it saw).
    let mut followups = Vec::new();
    loop {
        for output in outputs.drain(..) {
            // Nothing goes out before the log entries ahead of it are durable.
            if output.carries_signed_consensus()
                && let Some(wal) = &mut wal
                && wal.is_dirty()
            {
                let sync_started = Instant::now();
                if let Err(e) = wal.sync() {
                    tracing::error!("{e}; stopping this validator (it cannot vote safely)");
                    return;
                }
                stats.wal_sync.record(sync_started.elapsed());
                stats
                    .wal_syncs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match output {
                Output::WalAppend { height, entry } => {
                    if let Some(wal) = &mut wal {
                        wal.append(height, &entry);
                    }
                }
                Output::Broadcast(msg) => {
                    let frame = Arc::new(frame(&msg));
                    for (_, sender) in peers.senders.values() {
                        let _ = sender.try_send(frame.clone());
                    }
                }
                Output::Send(to, msg) => {
                    if let Some((_, sender)) = peers.senders.get(&to) {
                        let _ = sender.try_send(Arc::new(frame(&msg)));
                    }
                }
                Output::ScheduleTimeout(timeout, duration) => {
                    generation += 1;
                    timers.insert(timeout, generation);
                    let loopback = loopback.clone();
                    let this = generation;
                    tokio::spawn(async move {
                        tokio::time::sleep(duration).await;
                        let _ = loopback
                            .send(EventBox(Box::new(Event::Timeout(timeout, this))))
                            .await;
                    });
                }
                Output::CancelTimeout(timeout) => {
                    timers.remove(&timeout);
                }
                Output::CancelAllTimeouts => timers.clear(),
                Output::Evidence(evidence) => match &reporter {
                    Some(key) => {
                        followups.extend(core.report_evidence(key, *evidence, now_ms(started)))
                    }
                    None => tracing::warn!("equivocation seen; no account key to report it with"),
                },
                Output::Committed(committed) => {
                    stats.commit_step.record(step_started.elapsed());
                    if committed.outcome.proofs_verified > 0 {
                        stats.proof_commit_step.record(step_started.elapsed());
                    }
                    stats.proofs_verified.fetch_add(
                        committed.outcome.proofs_verified as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::info!(
                        height = committed.height,
                        block = %committed.hash,
                        txs = committed.block.txs.len(),
                        root = %crate::codec::hex(&committed.outcome.root[..8]),
                        synced = committed.synced,
                        "committed"
                    );
                    match (&store, &mut wal) {
                        (Some(store), Some(wal)) => {
                            // The block durable first, then the log of its height dropped.
                            let stored = store
                                .append_now(&committed.block, &committed.commit)
                                .map_err(|e| e.to_string())
                                .and_then(|()| wal.reset().map_err(|e| e.to_string()));
                            if let Err(e) = stored {
                                tracing::error!(
                                    height = committed.height,
                                    "{e}; stopping this validator"
                                );
                                return;
                            }
                            store.checkpoint_if_due(&core, &committed);
                        }
                        (Some(store), None) => {
                            store.append(committed.block.clone(), committed.commit.clone())
                        }
                        (None, _) => {}
                    }
                    let _ = commits.send(Arc::from(committed));
                    // A block that ends an era changes the set: the outputs after it (the next
                    // height's messages) go to the new members.
                    peers.refresh(&core);
                }
            }
        }
        if !followups.is_empty() {
            outputs = std::mem::take(&mut followups);
            continue;
        }
        // Each era's set from the ledger: dial the new members, drop the retired.
        peers.refresh(&core);
        *stats.report.lock().expect("stats lock") = core.report();
        // Validators' messages and timeouts first: a flood from clients waits behind them.
        let next = tokio::select! {
            biased;
            event = events.recv() => event,
            Some(event) = client_events.recv() => Some(event),
        };
        let Some(EventBox(event)) = next else {
            return;
        };
        step_started = Instant::now();
        let now = now_ms(started);
        outputs = match *event {
            Event::Message(from, msg) => core.on_message(from, msg, now),
            Event::Timeout(timeout, this) => {
                if timers.get(&timeout) != Some(&this) {
                    continue;
                }
                timers.remove(&timeout);
                core.on_timeout(timeout, now)
            }
            Event::Txs {
                txs,
                from_validator: true,
            } => core.on_relayed_txs(txs, now),
            Event::Txs {
                txs,
                from_validator: false,
            } => {
                let (answers, outputs) = core.submit(txs, now);
                stats.count_refusals(&answers);
                outputs
            }
            Event::Submit(txs, reply) => {
                let (answers, outputs) = core.submit(txs, now);
                stats.count_refusals(&answers);
                let _ = reply.send(answers);
                outputs
            }
            Event::Sync(height, count, reply) => {
                let heights = (0..u64::from(count)).map(|k| height.checked_add(k));
                let answer = decided_answer(&core, store.as_ref(), heights, |b, c| (b, c));
                let _ = reply.send(answer);
                continue;
            }
            Event::Headers(first, step, count, reply) => {
                let heights = (0..u64::from(count))
                    .map(|k| step.checked_mul(k).and_then(|o| first.checked_add(o)));
                let answer = decided_answer(&core, store.as_ref(), heights, |b, c| (b.header(), c));
                let _ = reply.send(answer);
                continue;
            }
        };
    }
}

/// The blocks decided at `heights` (from memory, else the store), each made into an answer
/// item, in order: up to the first height missing (then the tip is said too) and within one
/// answer's transaction bytes (at least one block). Each item costs a block read (and for a
/// header, its transactions hashed), so the bound is on the blocks read.
fn decided_answer<E: Engine, T>(
    core: &E,
    store: Option<&StoreWriter>,
    heights: impl Iterator<Item = Option<u64>>,
    item: impl Fn(Arc<crate::bft::Block>, crate::bft::CommitRecord) -> T,
) -> Answer<T> {
    let mut items = Vec::new();
    let mut tx_bytes = 0;
    for at in heights {
        let found = at.and_then(|at| core.decided(at).or_else(|| store.and_then(|s| s.read(at))));
        let Some((block, commit)) = found else {
            // Not kept here (ahead of this node, or before its store's base): its tip says
            // how far it is, and the asker asks elsewhere at once.
            return Answer {
                items,
                tip: Some(core.ledger().height()),
            };
        };
        tx_bytes += crate::bft::block_tx_bytes(&block);
        if !items.is_empty() && tx_bytes > crate::bft::SYNC_ANSWER_TX_BYTES_MAX {
            break;
        }
        items.push(item(block, commit));
    }
    Answer { items, tip: None }
}

/// The block store behind a validator: appended by its own thread (an fsync per block never
/// holds up the core loop), read under its lock for sync answers.
struct StoreWriter {
    store: Arc<std::sync::Mutex<crate::store::BlockStore>>,
    /// The writer thread's queue; none when the core loop appends itself ([`Self::append_now`]).
    blocks: Option<std::sync::mpsc::SyncSender<(Arc<crate::bft::Block>, crate::bft::CommitRecord)>>,
    /// Where and how often checkpoints are written (inline appends only: the writer thread's
    /// blocks may not be durable yet when the loop sees them committed).
    checkpoints: Option<(std::path::PathBuf, u64)>,
    /// A checkpoint is being written (one at a time; a height that comes meanwhile is skipped).
    checkpoint_busy: Arc<std::sync::atomic::AtomicBool>,
}

impl StoreWriter {
    /// Blocks appended by the caller ([`Self::append_now`]), not by a thread.
    fn inline(
        store: crate::store::BlockStore,
        checkpoints: Option<(std::path::PathBuf, u64)>,
    ) -> StoreWriter {
        StoreWriter {
            store: Arc::new(std::sync::Mutex::new(store)),
            blocks: None,
            checkpoints,
            checkpoint_busy: Arc::default(),
        }
    }

    /// After `committed`'s block is durable: a checkpoint of the core's ledger at its height,
    /// when one is due, encoded and written off the loop (the ledger is cloned here).
    fn checkpoint_if_due<E: Engine>(&self, core: &E, committed: &Committed) {
        use std::sync::atomic::Ordering;
        let Some((dir, every)) = &self.checkpoints else {
            return;
        };
        if *every == 0
            || !committed.height.is_multiple_of(*every)
            || core.ledger().height() != committed.height
            || self.checkpoint_busy.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let checkpoint = crate::checkpoint::Checkpoint {
            ledger: core.ledger().clone(),
            last_hash: committed.hash.0,
            previous_validators: Some(committed.validators.clone()),
        };
        let dir = dir.clone();
        let busy = self.checkpoint_busy.clone();
        let spawned = std::thread::Builder::new()
            .name("cess-checkpoint".into())
            .spawn(move || {
                let height = checkpoint.ledger.height();
                let started = Instant::now();
                match crate::checkpoint::write(&dir, &checkpoint) {
                    Ok(()) => tracing::info!(
                        height,
                        ms = started.elapsed().as_millis() as u64,
                        "checkpoint written"
                    ),
                    Err(e) => tracing::warn!(height, "{e}; the previous checkpoint stays"),
                }
                busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!("checkpoint thread: {e}");
            self.checkpoint_busy.store(false, Ordering::Release);
        }
    }

    fn start(store: crate::store::BlockStore) -> Result<StoreWriter, NetError> {
        let store = Arc::new(std::sync::Mutex::new(store));
        // A thousand blocks behind, the core loop waits for the disk.
        let (blocks, queued) = std::sync::mpsc::sync_channel::<(
            Arc<crate::bft::Block>,
            crate::bft::CommitRecord,
        )>(1024);
        let writer = store.clone();
        std::thread::Builder::new()
            .name("cess-block-store".into())
            .spawn(move || {
                for (block, commit) in queued {
                    let appended = writer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(&block, &commit);
                    if let Err(e) = appended {
                        // Later heights cannot follow a missing one: the store stops here, and
                        // a restart syncs the rest from the peers.
                        tracing::error!(
                            height = block.height,
                            "block store: {e}; no longer storing"
                        );
                        return;
                    }
                }
            })
            .map_err(|e| NetError::Io(e.to_string()))?;
        Ok(StoreWriter {
            store,
            blocks: Some(blocks),
            checkpoints: None,
            checkpoint_busy: Arc::default(),
        })
    }

    /// Appends in the caller's thread: durable when this returns.
    fn append_now(
        &self,
        block: &crate::bft::Block,
        commit: &crate::bft::CommitRecord,
    ) -> Result<(), crate::store::StoreError> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(block, commit)
    }

    fn append(&self, block: Arc<crate::bft::Block>, commit: crate::bft::CommitRecord) {
        // Blocks only if the disk is a thousand blocks behind; fails only once the writer
        // stopped (its error is logged there).
        let blocks = self.blocks.as_ref().expect("appended by the writer thread");
        let _ = blocks.send((block, commit));
    }

    fn read(&self, height: u64) -> Option<(Arc<crate::bft::Block>, crate::bft::CommitRecord)> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        match store.read(height) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(height, "block store: {e}");
                None
            }
        }
    }
}

pub(crate) enum FrameError {
    /// The stream ended or broke.
    Closed,
    /// A length prefix over the bound for this peer (refused before the body is read).
    TooLong(usize),
    /// The body did not arrive within [`FRAME_BODY_TIMEOUT`].
    Slow,
}

/// One frame's body (`len u32 LE ‖ message`), at most `len_max` bytes. A stream may idle
/// between frames, but once a length prefix is in, its body must follow within
/// [`FRAME_BODY_TIMEOUT`]; the body's memory grows with the bytes that arrived, never with
/// what the prefix claims.
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    len_max: usize,
) -> Result<Vec<u8>, FrameError> {
    read_frame_bounded(recv, || len_max).await
}

/// [`read_frame`] whose bound is decided once the length prefix is in (what the peer may send
/// can change while a stream idles between frames).
async fn read_frame_bounded(
    recv: &mut quinn::RecvStream,
    len_max: impl FnOnce() -> usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|_| FrameError::Closed)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > len_max() {
        return Err(FrameError::TooLong(len));
    }
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let read = async {
        while body.len() < len {
            match recv.read_chunk(len - body.len(), true).await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
                _ => return Err(FrameError::Closed),
            }
        }
        Ok(())
    };
    tokio::time::timeout(FRAME_BODY_TIMEOUT, read)
        .await
        .map_err(|_| FrameError::Slow)??;
    Ok(body)
}

pub(crate) fn frame(msg: &NetMsg) -> Vec<u8> {
    let body = msg.encode();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// What a peer is to this node, as of its last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// In the set deciding this height or the last: consensus messages go to the core.
    Member,
    /// A registered candidate outside those sets (bonded, so its frames may be as large as a
    /// validator's): its consensus messages are dropped without a disconnect (one elected a
    /// moment ago may be a block ahead of this node); it syncs on the followers' path.
    Candidate,
    /// Anyone else: transactions and sync requests only.
    Client,
}

/// The roles every connection's task reads, rewritten by the core loop after each height.
#[derive(Debug, Default)]
struct Roles {
    members: std::collections::BTreeSet<AccountId>,
    candidates: std::collections::BTreeSet<AccountId>,
}

impl Roles {
    fn role(&self, peer: &AccountId) -> Role {
        if self.members.contains(peer) {
            Role::Member
        } else if self.candidates.contains(peer) {
            Role::Candidate
        } else {
            Role::Client
        }
    }
}

type SharedRoles = Arc<std::sync::RwLock<Roles>>;

/// Frames on their way to one peer.
type FrameQueue = mpsc::Sender<Arc<Vec<u8>>>;

/// The validators this node dials, kept to what its core says ([`Engine::peers`]: the
/// current set and the last height's), each at the endpoint the chain gives it
/// ([`crate::Call::SetValidatorEndpoint`]) or else the one configured.
struct Peers {
    endpoint: Endpoint,
    stats: Arc<LoopStats>,
    /// Where answers read on this node's own streams go (the core's validator queue).
    answers: mpsc::Sender<EventBox>,
    configured: BTreeMap<AccountId, NodeAddr>,
    senders: BTreeMap<AccountId, (NodeAddr, FrameQueue)>,
    roles: SharedRoles,
    /// Ledger height of the last refresh (sets and endpoints change only with blocks).
    refreshed_at: Option<u64>,
    /// Peers without an address, warned about once.
    unreachable: std::collections::BTreeSet<AccountId>,
}

impl Peers {
    fn refresh<E: Engine>(&mut self, core: &E) {
        let ledger = core.ledger();
        if self.refreshed_at == Some(ledger.height()) {
            return;
        }
        self.refreshed_at = Some(ledger.height());
        let wanted = core.peers();
        for account in &wanted {
            let Some(addr) = self.address_of(ledger, account) else {
                if self.unreachable.insert(*account) {
                    tracing::warn!(
                        validator = %crate::codec::hex(&account.0[..8]),
                        "no address for a validator (none configured, none on the chain)"
                    );
                }
                continue;
            };
            if self.senders.get(account).is_some_and(|(at, _)| *at == addr) {
                continue;
            }
            tracing::info!(peer = %addr, "dialing a validator of the current set");
            let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>(PEER_QUEUE);
            tokio::spawn(peer_sender(
                self.endpoint.clone(),
                addr.clone(),
                *account,
                rx,
                self.stats.clone(),
                self.answers.clone(),
            ));
            // A replaced sender's task ends when its queue closes.
            self.senders.insert(*account, (addr, tx));
        }
        self.senders.retain(|account, (addr, _)| {
            let keep = wanted.contains(account);
            if !keep {
                tracing::info!(peer = %addr, "a validator left the set; disconnecting");
            }
            keep
        });
        let mut members: std::collections::BTreeSet<AccountId> = wanted.into_iter().collect();
        members.extend(core.ledger().validators().iter().map(|v| v.account));
        let candidates = ledger
            .candidates()
            .filter(|(account, c)| !c.slashed && c.stake > 0 && !members.contains(account))
            .map(|(account, _)| *account)
            .collect();
        *self.roles.write().unwrap_or_else(|p| p.into_inner()) = Roles {
            members,
            candidates,
        };
    }

    fn address_of(&self, ledger: &crate::ledger::Ledger, account: &AccountId) -> Option<NodeAddr> {
        let on_chain = ledger
            .candidate(account)
            .filter(|c| !c.endpoint.is_empty())
            .and_then(|c| {
                let peer = account.peer_id()?;
                format!("{}/p2p/{peer}", c.endpoint)
                    .parse::<NodeAddr>()
                    .ok()
            });
        on_chain.or_else(|| self.configured.get(account).cloned())
    }
}

/// Dial `peer` (again whenever the connection breaks) and write its queue's frames in order;
/// what the peer answers on the stream (sync answers to this node's requests when it is not
/// a member there) goes to the core as the peer's message. Ends when the queue closes.
async fn peer_sender(
    endpoint: Endpoint,
    peer: NodeAddr,
    account: AccountId,
    mut queue: mpsc::Receiver<Arc<Vec<u8>>>,
    stats: Arc<LoopStats>,
    answers: mpsc::Sender<EventBox>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connection = match endpoint.dial(&peer).await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial failed; retrying");
                // Drop what queued while the peer was away: the core re-sends what matters.
                loop {
                    match queue.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        // The peer left the set while unreachable.
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let Ok((mut send, recv)) = connection.inner.open_bi().await else {
            continue;
        };
        let reader = tokio::spawn(read_answers(
            recv,
            connection.clone(),
            account,
            answers.clone(),
        ));
        stats.peers_connected.fetch_add(1, Relaxed);
        loop {
            let Some(frame) = queue.recv().await else {
                stats.peers_connected.fetch_sub(1, Relaxed);
                connection.close(ErrorCode::Done, "stopping");
                reader.abort();
                return;
            };
            if send.write_all(&frame).await.is_err() {
                tracing::debug!(%peer, "connection lost; re-dialing");
                stats.peers_connected.fetch_sub(1, Relaxed);
                reader.abort();
                break;
            }
        }
    }
}

/// Reads what a peer writes back on this node's stream to it: only answers to sync requests
/// (a block with its commit, or the peer's tip), each within a validator message's bound;
/// anything else closes the connection. The core checks a block's commit like any other.
async fn read_answers(
    mut recv: quinn::RecvStream,
    connection: Connection,
    from: AccountId,
    answers: mpsc::Sender<EventBox>,
) {
    loop {
        let body = match read_frame(&mut recv, MESSAGE_BYTES_MAX).await {
            Ok(body) => body,
            Err(FrameError::Closed) => return,
            Err(_) => {
                connection.close(ErrorCode::Protocol, "bad answer frame");
                return;
            }
        };
        match NetMsg::decode(&body) {
            Ok(msg @ (NetMsg::SyncResponse { .. } | NetMsg::Tip { .. })) => {
                if answers
                    .send(EventBox(Box::new(Event::Message(from, msg))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ => {
                connection.close(ErrorCode::Protocol, "not an answer");
                return;
            }
        }
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    events: (mpsc::Sender<EventBox>, mpsc::Sender<EventBox>),
    roles: SharedRoles,
    chain_id: crate::tx::Hash32,
    checkpoints: Option<Arc<std::path::PathBuf>>,
) {
    let sync_answers = Arc::new(tokio::sync::Semaphore::new(SYNC_ANSWERS_MAX));
    let member_answers = Arc::new(tokio::sync::Semaphore::new(MEMBER_SYNC_ANSWERS_MAX));
    while let Some(incoming) = endpoint.accept().await {
        match incoming {
            Ok(connection) => {
                tokio::spawn(serve_connection(
                    connection,
                    events.clone(),
                    roles.clone(),
                    chain_id,
                    (sync_answers.clone(), member_answers.clone()),
                    checkpoints.clone(),
                ));
            }
            Err(e) => tracing::debug!(error = %e, "handshake failed"),
        }
    }
}

/// Read frames from every stream a peer opens and hand them to the core.
async fn serve_connection(
    connection: Connection,
    (validator_events, client_events): (mpsc::Sender<EventBox>, mpsc::Sender<EventBox>),
    roles: SharedRoles,
    chain_id: crate::tx::Hash32,
    (sync_answers, member_answers): (Arc<tokio::sync::Semaphore>, Arc<tokio::sync::Semaphore>),
    checkpoints: Option<Arc<std::path::PathBuf>>,
) {
    let Some(from) = account_of(&connection.peer_id) else {
        connection.close(ErrorCode::Protocol, "peer key is not Ed25519");
        return;
    };
    while let Ok((mut send, mut recv)) = connection.inner.accept_bi().await {
        let (validator_events, client_events) = (validator_events.clone(), client_events.clone());
        let connection = connection.clone();
        let sync_answers = sync_answers.clone();
        let member_answers = member_answers.clone();
        let roles = roles.clone();
        let checkpoints = checkpoints.clone();
        tokio::spawn(async move {
            loop {
                // What the peer is, as of this node's last block: a member of the current or
                // the last set (consensus messages), a registered candidate, or a client
                // (transactions and sync requests only). Read per frame: sets change at era
                // boundaries while connections stay.
                // The role is read once the frame's length is in, not while the stream idles:
                // a validator elected meanwhile may send a whole proposal.
                let mut role = Role::Client;
                let read = read_frame_bounded(&mut recv, || {
                    role = roles.read().unwrap_or_else(|p| p.into_inner()).role(&from);
                    match role {
                        Role::Member | Role::Candidate => MESSAGE_BYTES_MAX,
                        Role::Client => CLIENT_FRAME_BYTES_MAX,
                    }
                })
                .await;
                let is_validator = role == Role::Member;
                // A client's or follower's events queue apart from the validators'.
                let events = if is_validator {
                    &validator_events
                } else {
                    &client_events
                };
                let body = match read {
                    Ok(body) => body,
                    Err(FrameError::TooLong(_)) => {
                        connection.close(ErrorCode::Protocol, "frame too long");
                        return;
                    }
                    Err(FrameError::Slow) => {
                        connection.close(ErrorCode::Timeout, "frame too slow");
                        return;
                    }
                    Err(FrameError::Closed) => return,
                };
                let msg = match NetMsg::decode(&body) {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::warn!(peer = ?from, error = %e, "malformed message; disconnecting");
                        connection.close(ErrorCode::Protocol, "malformed message");
                        return;
                    }
                };
                let event = match msg {
                    // Signatures are checked here, on this connection's task, not in the core;
                    // a message of badly signed transactions costs the core nothing.
                    NetMsg::Txs(txs) => {
                        let txs: Vec<VerifiedTx> = txs
                            .into_iter()
                            .filter_map(|tx| VerifiedTx::check(tx, &chain_id))
                            .collect();
                        if txs.is_empty() {
                            continue;
                        }
                        Event::Txs {
                            txs,
                            from_validator: is_validator,
                        }
                    }
                    // A request for blocks, headers or the checkpoint (a follower's, a
                    // candidate's, a validator's catching up, a node taking a state), answered
                    // on this stream before the next frame is read: one request in flight per
                    // stream, paced by what the asker reads, and never waiting on this node's
                    // own connection to the asker (which may be re-dialing one that just
                    // restarted).
                    request @ (NetMsg::SyncRequest { .. }
                    | NetMsg::HeaderRequest { .. }
                    | NetMsg::CheckpointRequest { .. }) => {
                        // Held until the answer is written (flow control paces a slow reader).
                        // Validators draw from a pool of their own and never wait for it (a
                        // request refused is asked again): clients holding every client slot
                        // cannot stall a validator's stream, which also carries its votes.
                        let permit = if is_validator {
                            match member_answers.clone().try_acquire_owned() {
                                Ok(permit) => permit,
                                Err(_) => continue,
                            }
                        } else {
                            match sync_answers.clone().acquire_owned().await {
                                Ok(permit) => permit,
                                Err(_) => return,
                            }
                        };
                        let _permit = permit;
                        let answers: Vec<NetMsg> = match request {
                            NetMsg::CheckpointRequest { offset } => {
                                let dir = checkpoints.clone();
                                match tokio::task::spawn_blocking(move || {
                                    checkpoint_chunk(dir.as_deref().map(|d| d.as_path()), offset)
                                })
                                .await
                                {
                                    Ok(chunk) => vec![chunk],
                                    Err(_) => return,
                                }
                            }
                            NetMsg::HeaderRequest {
                                height,
                                step,
                                count,
                            } => {
                                let asked = |reply| Event::Headers(height, step, count, reply);
                                let Some(answer) = ask_core(events, asked).await else {
                                    return;
                                };
                                answer.into_messages(|(header, commit)| NetMsg::HeaderResponse {
                                    header: Box::new(header),
                                    commit,
                                })
                            }
                            NetMsg::SyncRequest { height, count } => {
                                let asked = |reply| Event::Sync(height, count, reply);
                                let Some(answer) = ask_core(events, asked).await else {
                                    return;
                                };
                                answer.into_messages(|(block, commit)| NetMsg::SyncResponse {
                                    block: Box::new((*block).clone()),
                                    commit,
                                })
                            }
                            _ => unreachable!("matched above"),
                        };
                        // Each block is framed and written as the asker reads: a follower
                        // that does not read one within this gives its permit back.
                        for answer in answers {
                            let written = tokio::time::timeout(
                                SYNC_WRITE_TIMEOUT,
                                send.write_all(&frame(&answer)),
                            )
                            .await;
                            if !matches!(written, Ok(Ok(()))) {
                                connection
                                    .close(ErrorCode::Timeout, "sync answer not read in time");
                                return;
                            }
                        }
                        continue;
                    }
                    // A candidate elected a moment ago may be a block ahead of this node: its
                    // votes are dropped, the connection kept (its own retries resend them).
                    _ if role == Role::Candidate => continue,
                    _ if !is_validator => {
                        connection.close(ErrorCode::Protocol, "not a validator");
                        return;
                    }
                    msg => Event::Message(from, msg),
                };
                if events.send(EventBox(Box::new(event))).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The part of this node's latest checkpoint from `offset` (at most
/// [`crate::bft::CHECKPOINT_CHUNK_BYTES`]), read from its file now: a checkpoint written
/// meanwhile changes the height the chunks carry, and the asker starts over. None on disk (or
/// unreadable): height 0, no bytes.
fn checkpoint_chunk(dir: Option<&std::path::Path>, offset: u64) -> NetMsg {
    let none = NetMsg::CheckpointChunk {
        height: 0,
        total_bytes: 0,
        offset: 0,
        bytes: Vec::new(),
    };
    let Some(dir) = dir else {
        return none;
    };
    let read = || -> std::io::Result<Option<NetMsg>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(dir.join(crate::checkpoint::CHECKPOINT_FILE))?;
        let total_bytes = file.metadata()?.len();
        let mut head = [0u8; crate::checkpoint::HEIGHT_AT + 8];
        file.read_exact_at(&mut head, 0)?;
        let Some(height) = crate::checkpoint::peek_height(&head) else {
            return Ok(None);
        };
        if total_bytes > crate::bft::CHECKPOINT_BYTES_MAX || offset > total_bytes {
            return Ok(None);
        }
        let len = (total_bytes - offset).min(crate::bft::CHECKPOINT_CHUNK_BYTES as u64);
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(Some(NetMsg::CheckpointChunk {
            height,
            total_bytes,
            offset,
            bytes,
        }))
    };
    match read() {
        Ok(Some(chunk)) => chunk,
        Ok(None) => none,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "checkpoint not served: {e}");
            }
            none
        }
    }
}

/// A client endpoint on an ephemeral port of the same address family as `peer` (clients,
/// followers and state sync dial validators from one).
pub(crate) fn client_endpoint(key: Arc<NodeKey>, peer: &NodeAddr) -> Result<Endpoint, NetError> {
    let bind: SocketAddr = if peer.socket.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    Ok(Endpoint::client_for(
        CONSENSUS_PROTOCOL,
        key,
        bind,
        Limits::default(),
    )?)
}

/// A client's connection to a validator, for submitting transactions.
#[derive(Debug)]
pub struct TxClient {
    _endpoint: Endpoint,
    send: quinn::SendStream,
    connection: Connection,
}

impl TxClient {
    pub async fn connect(key: Arc<NodeKey>, validator: &NodeAddr) -> Result<TxClient, NetError> {
        let endpoint = client_endpoint(key, validator)?;
        let connection = endpoint.dial(validator).await?;
        let (send, _recv) = connection
            .inner
            .open_bi()
            .await
            .map_err(|e| NetError::Io(e.to_string()))?;
        Ok(TxClient {
            _endpoint: endpoint,
            send,
            connection,
        })
    }

    /// Send transactions (the validator admits or drops each; watch the ledger for the
    /// result), in messages within [`TXS_PER_MESSAGE_MAX`] transactions and
    /// [`crate::bft::RELAY_TX_BYTES_MAX`] bytes.
    pub async fn send(&mut self, txs: &[Transaction]) -> Result<(), NetError> {
        for chunk in crate::bft::split_txs(txs.to_vec()) {
            self.send
                .write_all(&frame(&NetMsg::Txs(chunk)))
                .await
                .map_err(|e| NetError::Io(e.to_string()))?;
        }
        Ok(())
    }

    pub fn close(self) {
        self.connection.close(ErrorCode::Done, "done");
    }
}

/// What a follower shows: how far it is, and whether it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerStatus {
    pub height: u64,
    pub root: crate::tx::Hash32,
    /// Blocks behind the highest tip a validator claimed.
    pub behind: u64,
    /// The highest tip a validator claimed (none yet: the follower does not know where the
    /// chain is).
    pub tip: Option<u64>,
    /// More than a third of the validators said the replica is at their tip.
    pub synced: bool,
    /// Set when the replica diverged from a certified state root (it follows no further).
    pub diverged: Option<String>,
}

/// How a submitted transaction ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    #[error("included at height {height} but refused: {reason}")]
    Refused { height: u64, reason: crate::TxError },
    #[error("another transaction with this nonce was included at height {height}")]
    Replaced { height: u64 },
    #[error("not included within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the follower stopped")]
    Stopped,
}

/// A running follower: a ledger replica kept over QUIC from any of a list of validators.
#[derive(Debug, Clone)]
pub struct FollowerHandle {
    follower: Arc<std::sync::Mutex<crate::follow::Follower>>,
    status: tokio::sync::watch::Receiver<FollowerStatus>,
    applied: broadcast::Sender<Arc<crate::follow::Applied>>,
    endpoint: Endpoint,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl FollowerHandle {
    pub fn status(&self) -> FollowerStatus {
        self.status.borrow().clone()
    }

    /// Waits until the replica reaches `height` (or `timeout` passes); the status then.
    pub async fn wait_for_height(
        &self,
        height: u64,
        timeout: Duration,
    ) -> Result<FollowerStatus, InclusionError> {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(timeout, status.wait_for(|s| s.height >= height)).await;
        match reached {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(InclusionError::Stopped),
            Err(_) => Err(InclusionError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Waits until more than a third of the validators said the replica is at their tip.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<FollowerStatus, InclusionError> {
        let mut status = self.status.clone();
        let synced = tokio::time::timeout(
            timeout,
            status.wait_for(|s| s.synced || s.diverged.is_some()),
        )
        .await;
        match synced {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(InclusionError::Stopped),
            Err(_) => Err(InclusionError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Reads the replica (briefly locked: do not hold it across an await).
    pub fn with_ledger<T>(&self, read: impl FnOnce(&crate::ledger::Ledger) -> T) -> T {
        let follower = self.follower.lock().expect("follower lock");
        read(follower.ledger())
    }

    /// Every block applied from now on.
    pub fn applied(&self) -> broadcast::Receiver<Arc<crate::follow::Applied>> {
        self.applied.subscribe()
    }

    /// Waits for `tx` in the blocks applied through `blocks` (subscribe before sending it,
    /// one receiver per transaction waited for: they may share a block): the height that
    /// included it, or why it never came.
    pub async fn wait_for_inclusion(
        blocks: &mut broadcast::Receiver<Arc<crate::follow::Applied>>,
        tx: &Transaction,
        timeout: Duration,
    ) -> Result<u64, InclusionError> {
        let timeout_ms = timeout.as_millis() as u64;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = match tokio::time::timeout_at(deadline, blocks.recv()).await {
                Err(_) => return Err(InclusionError::Timeout { timeout_ms }),
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(InclusionError::Stopped);
                }
                // Missed some blocks: keep reading (a miss shows as a timeout at worst).
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Ok(applied)) => applied,
            };
            let height = applied.block.height;
            for (included, receipt) in applied.block.txs.iter().zip(&applied.outcome.receipts) {
                if included.signer != tx.signer || included.nonce != tx.nonce {
                    continue;
                }
                if included != tx {
                    // Only included ones move the nonce; an uncharged refusal did not take it.
                    if receipt.as_ref().map_or_else(|e| e.charged(), |_| true) {
                        return Err(InclusionError::Replaced { height });
                    }
                    continue;
                }
                return match receipt {
                    Ok(()) => Ok(height),
                    Err(reason) if reason.charged() => Err(InclusionError::Refused {
                        height,
                        reason: reason.clone(),
                    }),
                    // Not included in this block (its proposer took it, the ledger did not):
                    // it may still be in a later one until its validity passes.
                    Err(_) => continue,
                };
            }
        }
    }

    pub fn shutdown(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.endpoint.close();
    }
}

/// Start a follower of `validators` from `ledger` (genesis: `last_hash` is its chain id).
/// Must run inside a tokio runtime.
pub fn follow(
    ledger: crate::ledger::Ledger,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    config: crate::follow::FollowerConfig,
) -> Result<FollowerHandle, NetError> {
    follow_with_store(ledger, key, validators, config, None)
}

/// [`follow`] from the blocks in `store` (replayed onto the genesis `ledger` first), keeping
/// every block it applies there: a restarted follower resumes where its disk ends. Must run
/// inside a tokio runtime; the replay blocks the calling thread.
pub fn follow_with_store(
    ledger: crate::ledger::Ledger,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    config: crate::follow::FollowerConfig,
    store: Option<crate::store::BlockStore>,
) -> Result<FollowerHandle, NetError> {
    if validators.is_empty() {
        return Err(NetError::Io(
            "a follower needs at least one validator".into(),
        ));
    }
    let endpoint = client_endpoint(key, &validators[0])?;
    if ledger.height() != 0 {
        return Err(NetError::Io(
            "a follower starts from genesis, or from genesis and its block store".into(),
        ));
    }
    let (ledger, last_hash, store) = match store {
        Some(store) => {
            let restored =
                crate::store::replay(&store, ledger, 0).map_err(|e| NetError::Io(e.to_string()))?;
            (
                restored.ledger,
                restored.last_hash,
                Some(StoreWriter::start(store)?),
            )
        }
        None => {
            let chain_id = ledger.chain_id();
            (ledger, chain_id, None)
        }
    };
    let follower = crate::follow::Follower::new(ledger, last_hash, validators.len(), config);
    let status = FollowerStatus {
        height: follower.height(),
        root: follower.ledger().root(),
        ..FollowerStatus::default()
    };
    let follower = Arc::new(std::sync::Mutex::new(follower));
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (status_tx, status_rx) = tokio::sync::watch::channel(status);
    let (applied, _) = broadcast::channel(1024);
    tokio::spawn(follow_loop(
        follower.clone(),
        endpoint.clone(),
        validators,
        config,
        (applied.clone(), store),
        status_tx,
        stopped.clone(),
    ));
    Ok(FollowerHandle {
        follower,
        status: status_rx,
        applied,
        endpoint,
        stopped,
    })
}

/// One stream per validator, opened when first needed and again after an error.
type SyncStream = Option<(quinn::SendStream, quinn::RecvStream, Connection)>;

async fn sync_request(
    endpoint: &Endpoint,
    validator: &NodeAddr,
    stream: &mut SyncStream,
    height: u64,
) -> Result<NetMsg, NetError> {
    if stream.is_none() {
        let connection = endpoint.dial(validator).await?;
        let (send, recv) = connection
            .inner
            .open_bi()
            .await
            .map_err(|e| NetError::Io(e.to_string()))?;
        *stream = Some((send, recv, connection));
    }
    let (send, recv, _) = stream.as_mut().expect("opened above");
    send.write_all(&frame(&NetMsg::SyncRequest { height, count: 1 }))
        .await
        .map_err(|e| NetError::Io(e.to_string()))?;
    let body = read_frame(recv, MESSAGE_BYTES_MAX)
        .await
        .map_err(|e| match e {
            FrameError::TooLong(len) => NetError::Io(format!("answer of {len} bytes")),
            FrameError::Closed => NetError::Io("stream closed".into()),
            FrameError::Slow => NetError::Io("the answer did not arrive in time".into()),
        })?;
    NetMsg::decode(&body).map_err(|e| NetError::Io(e.to_string()))
}

async fn follow_loop(
    follower: Arc<std::sync::Mutex<crate::follow::Follower>>,
    endpoint: Endpoint,
    validators: Vec<NodeAddr>,
    config: crate::follow::FollowerConfig,
    // Where applied blocks go: to the handle's subscribers, and to the block store.
    (applied, store): (
        broadcast::Sender<Arc<crate::follow::Applied>>,
        Option<StoreWriter>,
    ),
    status: tokio::sync::watch::Sender<FollowerStatus>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) {
    use crate::follow::FollowerOutput;
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut streams: Vec<SyncStream> = (0..validators.len()).map(|_| None).collect();
    let mut queue: Vec<FollowerOutput> = follower.lock().expect("follower lock").poll(now());
    loop {
        if stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if queue.is_empty() {
            let deadline = follower.lock().expect("follower lock").next_deadline_ms();
            let wait = deadline.saturating_sub(now()).max(10);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            queue = follower.lock().expect("follower lock").poll(now());
            continue;
        }
        for output in std::mem::take(&mut queue) {
            match output {
                FollowerOutput::Request { peer, height } => {
                    let answer = tokio::time::timeout(
                        Duration::from_millis(config.request_timeout_ms),
                        sync_request(&endpoint, &validators[peer], &mut streams[peer], height),
                    )
                    .await;
                    let mut f = follower.lock().expect("follower lock");
                    match answer {
                        Ok(Ok(NetMsg::SyncResponse { block, commit })) => {
                            queue.extend(f.on_block(peer, *block, commit, now()));
                        }
                        Ok(Ok(NetMsg::Tip { height })) => {
                            queue.extend(f.on_tip(peer, height, now()));
                        }
                        Ok(Ok(other)) => {
                            tracing::debug!(validator = %validators[peer], kind = other.kind(), "unexpected answer");
                            streams[peer] = None;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(validator = %validators[peer], error = %e, "sync request failed");
                            streams[peer] = None;
                        }
                        Err(_) => streams[peer] = None,
                    }
                    // A failed request stays in flight until its timeout, then the next
                    // validator is asked.
                    let s = FollowerStatus {
                        height: f.height(),
                        root: f.ledger().root(),
                        behind: f.behind(),
                        tip: f.tip_claimed(),
                        synced: f.synced(),
                        diverged: f.diverged().map(|e| e.to_string()),
                    };
                    status.send_if_modified(|old| {
                        let changed = *old != s;
                        *old = s;
                        changed
                    });
                }
                FollowerOutput::Applied(block) => {
                    if let Some(store) = &store {
                        store.append(block.block.clone(), block.commit.clone());
                    }
                    let _ = applied.send(Arc::from(block));
                }
                FollowerOutput::Dropped { peer, reason } => {
                    tracing::warn!(validator = %validators[peer], %reason, "validator dropped");
                }
                FollowerOutput::Skipped { peer, reason } => {
                    tracing::debug!(validator = %validators[peer], %reason, "validator skipped");
                }
            }
        }
    }
}
