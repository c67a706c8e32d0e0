//! Hostile peers, shared by the hostile suite (`tests/hostile.rs`) and the benchmark that
//! measures an honest client beside them (`cess-bench`, suite `transport`). Each attack runs
//! on its own tasks from [`start`] until its [`Attack`] is dropped, and counts what it sent.
//! They break no cryptography: each is what any peer with a fresh key can do.

use crate::FragmentId;
use crate::client::{open_read, open_write};
use crate::identity::{NodeAddr, NodeKey};
use crate::protocol::ProtocolError;
use crate::quic::{Endpoint, Limits};
use crate::{Client, ClientConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a hostile peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sends a QUIC ClientHello from a fresh UDP socket every 10 ms and never another
    /// packet: each handshake would hold the node until its timeout.
    SilentHandshakes,
    /// Keeps 64 reads of a large fragment open on one connection and never takes their
    /// bytes.
    StalledReads,
    /// 32 fresh keys (owning nothing) each send signed requests as fast as the node answers,
    /// on 8 connections: signature checks and replay-cache entries; turned away, each
    /// connection is dialed again at once (a handshake flood).
    FreshKeyFlood,
    /// Write requests announcing 1 MiB fragments under fresh ids, with no byte after the
    /// header, 32 at a time: unfinished writes.
    EmptyPartialWrites,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::SilentHandshakes,
        Kind::StalledReads,
        Kind::FreshKeyFlood,
        Kind::EmptyPartialWrites,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SilentHandshakes => "silent-handshakes",
            Kind::StalledReads => "stalled-reads",
            Kind::FreshKeyFlood => "fresh-key-flood",
            Kind::EmptyPartialWrites => "empty-partial-writes",
        }
    }
}

/// A running attack: stopped when dropped.
#[derive(Debug)]
pub struct Attack {
    pub kind: Kind,
    /// Requests (or handshakes) sent so far.
    pub sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attack {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("literal")
}

fn fresh_client() -> Result<Client, ProtocolError> {
    client_with(Arc::new(NodeKey::generate()))
}

fn client_with(key: Arc<NodeKey>) -> Result<Client, ProtocolError> {
    let endpoint = Endpoint::client(key, loopback(), Limits::default())?;
    Ok(Client::new(endpoint, ClientConfig::default()))
}

/// Starts `kind` against the node at `addr`; `large_fragment` is a fragment the node holds
/// (what stalled reads ask for); `standing` is a key the node admits (an owner's: the
/// attacks that need a connection use it; the replay flood uses fresh keys, which a node on
/// a chain turns away). Must run inside a tokio runtime.
pub async fn start(
    kind: Kind,
    addr: &NodeAddr,
    large_fragment: FragmentId,
    standing: Arc<NodeKey>,
) -> Result<Attack, ProtocolError> {
    let sent = Arc::new(AtomicU64::new(0));
    let tasks = match kind {
        Kind::SilentHandshakes => vec![tokio::spawn(silent_handshakes(addr.socket, sent.clone()))],
        Kind::StalledReads => {
            let client = client_with(standing)?;
            let connection = client.connection(addr).await?;
            vec![tokio::spawn(stalled_reads(
                client,
                connection,
                large_fragment,
                sent.clone(),
            ))]
        }
        Kind::FreshKeyFlood => {
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let client = Arc::new(fresh_client()?);
                for _ in 0..8 {
                    let (client, addr, sent) = (client.clone(), addr.clone(), sent.clone());
                    tasks.push(tokio::spawn(async move {
                        // A fragment nobody has: each request costs the node a signature
                        // check, a replay entry and a lookup. Turned away, the lane dials
                        // again at once: a handshake flood.
                        let missing = FragmentId(rand::random::<[u8; 32]>());
                        loop {
                            let Ok(connection) = client.endpoint().dial(&addr).await else {
                                sent.fetch_add(1, Ordering::Relaxed);
                                tokio::task::yield_now().await;
                                continue;
                            };
                            sent.fetch_add(1, Ordering::Relaxed);
                            while let Ok((_send, mut recv)) =
                                open_read(&client, &connection, [0xA7; 32], missing, 0).await
                            {
                                if recv.read_to_end(64 << 10).await.is_err() {
                                    break;
                                }
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
            }
            tasks
        }
        Kind::EmptyPartialWrites => {
            let client = Arc::new(client_with(standing)?);
            let connection = client.connection(addr).await?;
            (0..32)
                .map(|_| {
                    let (client, connection, sent) =
                        (client.clone(), connection.clone(), sent.clone());
                    tokio::spawn(async move {
                        loop {
                            let id = FragmentId(rand::random::<[u8; 32]>());
                            match open_write(&client, &connection, [0xA8; 32], id, 1 << 20, 0, 0)
                                .await
                            {
                                Ok((mut send, mut recv)) => {
                                    let _ = send.finish();
                                    let _ = recv.read_to_end(64 << 10).await;
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    })
                })
                .collect()
        }
    };
    Ok(Attack { kind, sent, tasks })
}

/// Sends one QUIC Initial (a ClientHello) to `node` from a fresh UDP socket, made with
/// quinn-proto's sans-IO endpoint, and never another packet: the socket is returned so the
/// handshake stays pending for as long as the caller keeps it.
pub async fn send_silent_client_hello(
    node: std::net::SocketAddr,
) -> std::io::Result<tokio::net::UdpSocket> {
    let other = |e: String| std::io::Error::other(e);
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| other(e.to_string()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    tls.alpn_protocols = vec![crate::message::PROTOCOL.as_bytes().to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| other(e.to_string()))?;
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = std::time::Instant::now();
    let (_, mut connection) = endpoint
        .connect(
            now,
            quinn_proto::ClientConfig::new(Arc::new(quic)),
            node,
            "cess",
        )
        .map_err(|e| other(e.to_string()))?;
    let mut datagram = Vec::new();
    let transmit = connection
        .poll_transmit(now, 1, &mut datagram)
        .ok_or_else(|| other("no Initial to send".into()))?;
    let socket = tokio::net::UdpSocket::bind(loopback()).await?;
    socket
        .send_to(&datagram[..transmit.size], transmit.destination)
        .await?;
    Ok(socket)
}

/// One silent ClientHello every 10 ms; the last 256 sockets are kept open.
async fn silent_handshakes(node: std::net::SocketAddr, sent: Arc<AtomicU64>) {
    let mut sockets = std::collections::VecDeque::new();
    loop {
        if let Ok(socket) = send_silent_client_hello(node).await {
            sent.fetch_add(1, Ordering::Relaxed);
            sockets.push_back(socket);
            if sockets.len() > 256 {
                sockets.pop_front();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resident memory of this process (`VmRSS` in `/proc/self/status`): what the hostile suites
/// bound while an attack runs.
pub fn resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib << 10)
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))
}

/// 64 reads never taken, held until the attack stops (the node cuts each at its stream
/// timeout).
async fn stalled_reads(
    client: Client,
    connection: crate::quic::Connection,
    fragment: FragmentId,
    sent: Arc<AtomicU64>,
) {
    let mut held = Vec::with_capacity(64);
    for _ in 0..64 {
        if let Ok(streams) = open_read(&client, &connection, [0xA9; 32], fragment, 0).await {
            held.push(streams);
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    std::future::pending::<()>().await;
    drop(held);
}
