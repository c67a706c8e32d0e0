//! The QUIC driver of a validator (feature `quic`): a thin loop that moves [`NetMsg`]s between
//! a validator's [`Engine`] and its peers over `cess-transport` endpoints, turns timeouts into timers, and
//! reports commits. All decisions stay in the core.
//!
//! The wire: ALPN `cess-consensus/1`, TLS bound to the node key (the validator's account key,
//! so a connection's PeerId names its account). Each validator dials every peer and sends on
//! one long-lived stream per connection: frames of `len u32 LE ‖ message`, each message at most
//! [`MESSAGE_BYTES_MAX`]. A peer that sends a malformed frame is disconnected. Peers that are
//! not validators may send transactions only. A sender whose queue is full drops messages (the
//! core re-sends votes and certificates by itself); a broken connection is re-dialed.

use crate::bft::{Committed, Engine, MESSAGE_BYTES_MAX, NetMsg, Output};
use crate::keys::AccountId;
use crate::tx::{Transaction, VerifiedTx};
use arc_malachitebft_core_types::Timeout;
use cess_transport::identity::{NodeAddr, NodeKey};
use cess_transport::quic::{Connection, Endpoint, ErrorCode, Limits};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// ALPN of the validators' protocol.
pub const CONSENSUS_PROTOCOL: &str = "cess-consensus/1";
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;

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
}

/// A running validator: submit transactions, watch commits, stop it.
#[derive(Debug, Clone)]
pub struct ValidatorHandle {
    chain_id: crate::tx::Hash32,
    events: mpsc::Sender<EventBox>,
    commits: broadcast::Sender<Arc<Committed>>,
    endpoint: Endpoint,
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
    let endpoint = Endpoint::server_for(CONSENSUS_PROTOCOL, node_key, listen, Limits::default())?;
    let (events_tx, events_rx) = mpsc::channel::<EventBox>(16 * 1024);
    let (commits, _) = broadcast::channel(1024);
    let validators: Vec<AccountId> = core
        .ledger()
        .validators()
        .iter()
        .map(|v| v.account)
        .collect();
    let chain_id = core.ledger().chain_id();

    let mut senders = BTreeMap::new();
    for peer in peers {
        let Some(account) = account_of(&peer.peer) else {
            tracing::warn!(%peer, "peer key is not Ed25519; skipped");
            continue;
        };
        let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>(PEER_QUEUE);
        tokio::spawn(peer_sender(endpoint.clone(), peer, rx));
        senders.insert(account, tx);
    }
    tokio::spawn(accept_loop(
        endpoint.clone(),
        events_tx.clone(),
        validators,
        chain_id,
    ));
    tokio::spawn(core_loop(
        core,
        events_rx,
        events_tx.clone(),
        senders,
        commits.clone(),
    ));
    Ok(ValidatorHandle {
        chain_id,
        events: events_tx,
        commits,
        endpoint,
    })
}

/// Starts one validator per `(account, BLS key)` on loopback ports, each dialing all the
/// others, every one from `ledger` (tests, benchmarks). Must run inside a tokio runtime.
pub fn start_loopback(
    ledger: &crate::ledger::Ledger,
    keys: &[(crate::keys::AccountKey, crate::keys::ValidatorKey)],
    config: crate::bft::CoreConfig,
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
        let core = crate::bft::Core::new(
            ledger.clone(),
            validator_key.clone(),
            account.id(),
            config.clone(),
            0,
        );
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        let node_key = Arc::new(NodeKey::from_ed25519(account.ed25519().clone()));
        handles.push(start(core, node_key, addrs[i].socket, peers)?);
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
    mut events: mpsc::Receiver<EventBox>,
    loopback: mpsc::Sender<EventBox>,
    senders: BTreeMap<AccountId, mpsc::Sender<Arc<Vec<u8>>>>,
    commits: broadcast::Sender<Arc<Committed>>,
) {
    let started = (Instant::now(), unix_ms());
    let mut timers: HashMap<Timeout, u64> = HashMap::new();
    let mut generation = 0u64;
    let mut outputs = core.start(now_ms(started));
    loop {
        for output in outputs.drain(..) {
            match output {
                Output::Broadcast(msg) => {
                    let frame = Arc::new(frame(&msg));
                    for sender in senders.values() {
                        let _ = sender.try_send(frame.clone());
                    }
                }
                Output::Send(to, msg) => {
                    if let Some(sender) = senders.get(&to) {
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
                Output::Committed(committed) => {
                    tracing::info!(
                        height = committed.height,
                        block = %committed.hash,
                        txs = committed.block.txs.len(),
                        root = %crate::codec::hex(&committed.outcome.root[..8]),
                        synced = committed.synced,
                        "committed"
                    );
                    let _ = commits.send(Arc::from(committed));
                }
            }
        }
        let Some(EventBox(event)) = events.recv().await else {
            return;
        };
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
            } => core.submit(txs, now).1,
            Event::Submit(txs, reply) => {
                let (answers, outputs) = core.submit(txs, now);
                let _ = reply.send(answers);
                outputs
            }
        };
    }
}

fn frame(msg: &NetMsg) -> Vec<u8> {
    let body = msg.encode();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Dial `peer` (again whenever the connection breaks) and write its queue's frames in order.
async fn peer_sender(endpoint: Endpoint, peer: NodeAddr, mut queue: mpsc::Receiver<Arc<Vec<u8>>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connection = match endpoint.dial(&peer).await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial failed; retrying");
                // Drop what queued while the peer was away: the core re-sends what matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let Ok((mut send, _recv)) = connection.inner.open_bi().await else {
            continue;
        };
        loop {
            let Some(frame) = queue.recv().await else {
                connection.close(ErrorCode::Done, "stopping");
                return;
            };
            if send.write_all(&frame).await.is_err() {
                tracing::debug!(%peer, "connection lost; re-dialing");
                break;
            }
        }
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    events: mpsc::Sender<EventBox>,
    validators: Vec<AccountId>,
    chain_id: crate::tx::Hash32,
) {
    while let Some(incoming) = endpoint.accept().await {
        match incoming {
            Ok(connection) => {
                tokio::spawn(serve_connection(
                    connection,
                    events.clone(),
                    validators.clone(),
                    chain_id,
                ));
            }
            Err(e) => tracing::debug!(error = %e, "handshake failed"),
        }
    }
}

/// Read frames from every stream a peer opens and hand them to the core.
async fn serve_connection(
    connection: Connection,
    events: mpsc::Sender<EventBox>,
    validators: Vec<AccountId>,
    chain_id: crate::tx::Hash32,
) {
    let Some(from) = account_of(&connection.peer_id) else {
        connection.close(ErrorCode::Protocol, "peer key is not Ed25519");
        return;
    };
    // Validators of the genesis set; others (clients) may only send transactions. Validators
    // elected later are admitted by the core itself, which checks every signature.
    let is_validator = validators.contains(&from);
    while let Ok((_send, mut recv)) = connection.inner.accept_bi().await {
        let events = events.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            loop {
                let mut prefix = [0u8; 4];
                if recv.read_exact(&mut prefix).await.is_err() {
                    return;
                }
                let len = u32::from_le_bytes(prefix) as usize;
                if len > MESSAGE_BYTES_MAX {
                    connection.close(ErrorCode::Protocol, "frame too long");
                    return;
                }
                let mut body = vec![0u8; len];
                if recv.read_exact(&mut body).await.is_err() {
                    return;
                }
                let msg = match NetMsg::decode(&body) {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::warn!(peer = ?from, error = %e, "malformed message; disconnecting");
                        connection.close(ErrorCode::Protocol, "malformed message");
                        return;
                    }
                };
                let event = match msg {
                    // Signatures are checked here, on this connection's task, not in the core.
                    NetMsg::Txs(txs) => Event::Txs {
                        txs: txs
                            .into_iter()
                            .filter_map(|tx| VerifiedTx::check(tx, &chain_id))
                            .collect(),
                        from_validator: is_validator,
                    },
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

/// A client's connection to a validator, for submitting transactions.
#[derive(Debug)]
pub struct TxClient {
    _endpoint: Endpoint,
    send: quinn::SendStream,
    connection: Connection,
}

impl TxClient {
    pub async fn connect(key: Arc<NodeKey>, validator: &NodeAddr) -> Result<TxClient, NetError> {
        let bind: SocketAddr = if validator.socket.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let endpoint = Endpoint::client_for(CONSENSUS_PROTOCOL, key, bind, Limits::default())?;
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
