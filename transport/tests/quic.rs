//! The fragment protocol over real QUIC on loopback, against an in-memory store.

use bytes::Bytes;
use cess_transport::client::open_write;
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::{
    Client, ClientConfig, Code, Endpoint, Limits, NodeAddr, NodeKey, ProtocolError, Server,
    ServerConfig, WriteProgress, grant,
};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct MemStore {
    fragments: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    /// (fragment, offset) of every store read the server made.
    reads: Mutex<Vec<([u8; 32], u64)>>,
    /// When set, the only fragments the store admits (a storage node's chain rule).
    admitted: Mutex<Option<HashSet<[u8; 32]>>>,
}

impl FragmentStore for MemStore {
    type WriteBuf = Vec<u8>;
    type ReadBuf = Vec<u8>;
    fn alloc(&self, len_bytes: usize) -> Vec<u8> {
        vec![0; len_bytes]
    }
    fn admit(&self, _: &cess_transport::PeerId, id: &[u8; 32], _: u64) -> Result<(), String> {
        match &*self.admitted.lock().unwrap() {
            Some(ids) if !ids.contains(id) => Err("not assigned to this node".into()),
            _ => Ok(()),
        }
    }
    async fn len_of(&self, id: [u8; 32]) -> Result<Option<u64>, StoreFault> {
        Ok(self
            .fragments
            .lock()
            .unwrap()
            .get(&id)
            .map(|f| f.len() as u64))
    }
    async fn put(&self, id: [u8; 32], data: Vec<u8>) -> Result<(), StoreFault> {
        if Sha256::digest(&data).as_slice() != id {
            return Err(StoreFault::Mismatch);
        }
        self.fragments.lock().unwrap().insert(id, data);
        Ok(())
    }
    async fn read(&self, id: [u8; 32], offset: u64, len_bytes: u64) -> Result<Vec<u8>, StoreFault> {
        self.reads.lock().unwrap().push((id, offset));
        let fragments = self.fragments.lock().unwrap();
        let f = fragments.get(&id).ok_or(StoreFault::NotFound)?;
        Ok(f[offset as usize..(offset + len_bytes) as usize].to_vec())
    }
}

struct Node {
    addr: NodeAddr,
    store: Arc<MemStore>,
    server: Arc<Server<MemStore>>,
    endpoint: Endpoint,
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start_node(config: ServerConfig) -> Node {
    let key = Arc::new(NodeKey::generate());
    let endpoint = Endpoint::server(key.clone(), loopback(), Limits::default()).unwrap();
    let store = Arc::new(MemStore::default());
    let server = Server::new(store.clone(), key, config);
    tokio::spawn(server.clone().serve(endpoint.clone()));
    Node {
        addr: endpoint.node_addr().unwrap(),
        store,
        server,
        endpoint,
    }
}

fn client_with(key: impl Into<Arc<NodeKey>>) -> Client {
    let endpoint = Endpoint::client(key.into(), loopback(), Limits::default()).unwrap();
    Client::new(endpoint, ClientConfig::default())
}

fn fragment(seed: u64, len: usize) -> (Bytes, [u8; 32]) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    let id: [u8; 32] = Sha256::digest(&data).into();
    (Bytes::from(data), id)
}

const FILE: [u8; 32] = [9; 32];

#[tokio::test]
async fn write_then_read_round_trips_and_dedups() {
    let node = start_node(ServerConfig::default());
    let client = client_with(NodeKey::generate());
    let (data, id) = fragment(1, 3 << 20 | 123);
    client
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .unwrap();
    assert_eq!(node.store.fragments.lock().unwrap()[&id], data[..]);
    // A second write of the same fragment is answered at once.
    client
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .unwrap();
    let back = client.read_fragment(&node.addr, FILE, id).await.unwrap();
    assert_eq!(back, data[..]);
    let missing = client
        .read_fragment(&node.addr, FILE, [0; 32])
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            ProtocolError::Refused {
                code: Code::NotFound,
                ..
            }
        ),
        "{missing}"
    );
    let metrics = node.server.metrics();
    assert_eq!(
        metrics.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        data.len() as u64
    );
    assert_eq!(
        metrics.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        data.len() as u64
    );
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(
        text.contains("cess_responses_total{code=\"not_found\"} 1"),
        "{text}"
    );
    assert_eq!(node.server.partial_bytes(), 0);
}

#[tokio::test]
async fn dialing_the_wrong_peer_id_fails() {
    let node = start_node(ServerConfig::default());
    let client = client_with(NodeKey::generate());
    let wrong = NodeAddr {
        socket: node.addr.socket,
        peer: NodeKey::generate().peer_id(),
    };
    let e = client.connection(&wrong).await.unwrap_err();
    assert!(e.to_string().contains("dialing"), "{e}");
    // The right PeerId at the same address works, and each side knows the other's.
    let c = client.connection(&node.addr).await.unwrap();
    assert_eq!(c.peer_id, node.addr.peer);
}

#[tokio::test]
async fn a_writer_off_the_allow_list_is_refused() {
    let allowed = NodeKey::generate();
    let node = start_node(ServerConfig {
        writers: Some(HashSet::from([allowed.peer_id()])),
        ..ServerConfig::default()
    });
    let (data, id) = fragment(2, 4096);
    let stranger = client_with(NodeKey::generate());
    let e = stranger
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProtocolError::Refused {
                code: Code::Unauthorized,
                ..
            }
        ),
        "{e}"
    );
    assert!(node.store.fragments.lock().unwrap().is_empty());
    client_with(allowed)
        .write_fragment(&node.addr, FILE, id, data)
        .await
        .unwrap();
    assert_eq!(node.store.fragments.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_fragment_the_store_does_not_admit_is_refused_before_its_bytes_are_buffered() {
    let node = start_node(ServerConfig::default());
    let (assigned, assigned_id) = fragment(3, 3 << 20);
    let (other, other_id) = fragment(4, 3 << 20);
    *node.store.admitted.lock().unwrap() = Some(HashSet::from([assigned_id]));
    let client = client_with(NodeKey::generate());
    let e = client
        .write_fragment(&node.addr, FILE, other_id, other)
        .await
        .unwrap_err();
    match &e {
        ProtocolError::Refused {
            code: Code::Unauthorized,
            detail,
        } => assert!(detail.contains("not assigned"), "{detail}"),
        other => panic!("expected unauthorized, got {other}"),
    }
    assert_eq!(node.server.partial_bytes(), 0);
    let metrics = node.server.metrics();
    assert_eq!(
        metrics.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no byte past the request was read"
    );
    assert_eq!(
        metrics
            .writes_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    client
        .write_fragment(&node.addr, FILE, assigned_id, assigned)
        .await
        .unwrap();
    assert_eq!(node.store.fragments.lock().unwrap().len(), 1);
}

/// Writes `data` and returns the refusal's detail, or None when it was stored.
async fn refusal(client: &Client, node: &Node, seed: u64) -> Option<String> {
    let (data, id) = fragment(seed, 4096);
    match client.write_fragment(&node.addr, FILE, id, data).await {
        Ok(()) => {
            assert!(node.store.fragments.lock().unwrap().contains_key(&id));
            None
        }
        Err(ProtocolError::Refused {
            code: Code::Unauthorized,
            detail,
        }) => {
            assert!(!node.store.fragments.lock().unwrap().contains_key(&id));
            Some(detail)
        }
        Err(e) => panic!("expected stored or unauthorized, got {e}"),
    }
}

#[tokio::test]
async fn an_owner_grant_lets_a_peer_off_the_allow_list_write() {
    let owner = NodeKey::generate();
    let node = start_node(ServerConfig {
        writers: Some(HashSet::new()),
        trusted_owners: HashSet::from([owner.peer_id()]),
        ..ServerConfig::default()
    });
    let uploader = Arc::new(NodeKey::generate());
    let now = cess_transport::protocol::now_ms();
    let hour_ms = 3_600_000;

    let without = client_with(uploader.clone());
    let why = refusal(&without, &node, 10).await.expect("refused");
    assert!(why.contains("no upload grant"), "{why}");

    let granted = grant::issue(&owner, uploader.peer_id(), now + hour_ms);
    let with = client_with(uploader.clone()).with_grant(granted.clone());
    assert_eq!(refusal(&with, &node, 11).await, None);

    // The uploader itself, holding a grant that does not hold: refused, saying why.
    let refused_with = |grant, seed| {
        let client = client_with(uploader.clone()).with_grant(grant);
        let node = &node;
        async move { refusal(&client, node, seed).await.expect("refused") }
    };
    let why = refused_with(grant::issue(&owner, uploader.peer_id(), now - 1), 12).await;
    assert!(why.contains("expired"), "{why}");
    let stranger_owner = NodeKey::generate();
    let untrusted = grant::issue(&stranger_owner, uploader.peer_id(), now + hour_ms);
    let why = refused_with(untrusted, 14).await;
    assert!(why.contains("not trusted"), "{why}");

    // Someone else's grant, sent by a peer it does not name.
    let thief = client_with(NodeKey::generate()).with_grant(granted);
    let why = refusal(&thief, &node, 13).await.expect("refused");
    assert!(why.contains("for uploader"), "{why}");

    let metrics = node.server.metrics();
    assert_eq!(
        metrics
            .grants_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(node.store.fragments.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bytes_that_do_not_hash_to_the_id_are_not_stored() {
    let node = start_node(ServerConfig::default());
    let client = client_with(NodeKey::generate());
    let (data, id) = fragment(3, 100_000);
    let mut bad = data.to_vec();
    bad[77_777] ^= 1;
    let e = client
        .write_fragment(&node.addr, FILE, id, Bytes::from(bad))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProtocolError::Refused {
                code: Code::Mismatch,
                ..
            }
        ),
        "{e}"
    );
    assert!(node.store.fragments.lock().unwrap().is_empty());
    assert_eq!(
        node.server.partial_bytes(),
        0,
        "a refused write holds no memory"
    );
}

#[tokio::test]
async fn a_write_cut_at_random_points_resumes_to_the_same_fragment() {
    let node = start_node(ServerConfig::default());
    let key = Arc::new(NodeKey::generate());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut resumed_from = Vec::new();
    for round in 0..6u64 {
        let (data, id) = fragment(100 + round, 2 << 20);
        // Cut the transfer once or twice on connections that are then dropped.
        let cuts = 1 + (round % 2) as usize;
        let mut offset = 0u64;
        for _ in 0..cuts {
            let client = client_with(key.clone());
            let connection = client.connection(&node.addr).await.unwrap();
            // Ask where the node is, as a resuming writer does.
            let progress = client
                .write_attempt(
                    &connection,
                    FILE,
                    id,
                    data.len() as u64,
                    offset,
                    Bytes::new(),
                )
                .await
                .unwrap();
            offset = match progress {
                WriteProgress::Continue(o) => o,
                WriteProgress::Stored => panic!("stored before all bytes were sent"),
            };
            let cut = rng.random_range(offset..data.len() as u64);
            let (mut send, _recv) = open_write(
                &client,
                &connection,
                FILE,
                id,
                data.len() as u64,
                offset,
                data.len() as u64 - offset,
            )
            .await
            .unwrap();
            send.write_all(&data[offset as usize..cut as usize])
                .await
                .unwrap();
            // Give the bytes time to arrive, then vanish without finishing.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            connection.inner.close(0u32.into(), b"cut");
            client.endpoint().wait_idle().await;
        }
        assert!(node.store.fragments.lock().unwrap().get(&id).is_none());
        // A fresh client (same key) finishes from where the node is, sending only the rest.
        let client = client_with(key.clone());
        let connection = client.connection(&node.addr).await.unwrap();
        let len = data.len() as u64;
        let resume = client
            .write_attempt(&connection, FILE, id, len, 0, Bytes::new())
            .await;
        let WriteProgress::Continue(resume) = resume.unwrap() else {
            panic!("stored too early")
        };
        assert!(
            resume >= offset,
            "the node lost bytes it had: {resume} < {offset}"
        );
        let bytes_in = || {
            node.server
                .metrics()
                .bytes_in
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = bytes_in();
        client
            .write_fragment(&node.addr, FILE, id, data.clone())
            .await
            .unwrap();
        assert_eq!(
            bytes_in() - before,
            len - resume,
            "round {round}: resent bytes"
        );
        resumed_from.push(resume);
        assert_eq!(
            node.store.fragments.lock().unwrap()[&id],
            data[..],
            "round {round}"
        );
    }
    assert_eq!(node.server.partial_bytes(), 0);
    assert!(
        resumed_from.iter().any(|&o| o > 0),
        "no round resumed mid-way: {resumed_from:?}"
    );
}

#[tokio::test]
async fn a_peer_sending_a_forged_request_is_disconnected() {
    let node = start_node(ServerConfig::default());
    let client = client_with(NodeKey::generate());
    let connection = client.connection(&node.addr).await.unwrap();
    // A request signed by another key than the connection's.
    let other = client_with(NodeKey::generate());
    let (data, id) = fragment(5, 1000);
    let (mut send, _recv) = open_write(
        &other,
        &connection,
        FILE,
        id,
        data.len() as u64,
        0,
        data.len() as u64,
    )
    .await
    .unwrap();
    let _ = send.write_all(&data).await;
    let _ = send.finish();
    let reason = connection.inner.closed().await;
    assert!(reason.to_string().contains("signed by"), "{reason}");
    assert!(node.store.fragments.lock().unwrap().is_empty());
    let violations = node
        .server
        .metrics()
        .protocol_violations
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(violations, 1);
}

#[tokio::test]
async fn many_fragments_in_flight_on_one_connection() {
    let node = start_node(ServerConfig::default());
    let client = Arc::new(client_with(NodeKey::generate()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24u64 {
        let client = client.clone();
        let addr = node.addr.clone();
        tasks.spawn(async move {
            let (data, id) = fragment(1000 + i, 256 << 10);
            client
                .write_fragment(&addr, FILE, id, data.clone())
                .await
                .unwrap();
            assert_eq!(
                client.read_fragment(&addr, FILE, id).await.unwrap(),
                data[..]
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(node.store.fragments.lock().unwrap().len(), 24);
    let connections = node
        .server
        .metrics()
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(connections, 1);
    node.server
        .shutdown(&node.endpoint, std::time::Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn a_read_cut_at_random_points_resumes_where_it_stopped() {
    let node = start_node(ServerConfig::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(43);
    let mut resumed = 0;
    for round in 0..8u64 {
        let (data, id) = fragment(300 + round, 4 << 20);
        node.store
            .fragments
            .lock()
            .unwrap()
            .insert(id, data.to_vec());
        let client = Arc::new(client_with(NodeKey::generate()));
        let reader = {
            let (client, addr) = (client.clone(), node.addr.clone());
            tokio::spawn(async move { client.read_fragment(&addr, FILE, id).await })
        };
        // Once the node has started sending, cut the connection after a random delay.
        let reads_of = |node: &Node| {
            let reads = node.store.reads.lock().unwrap();
            reads
                .iter()
                .filter(|(r, _)| *r == id)
                .map(|(_, o)| *o)
                .collect::<Vec<_>>()
        };
        // A reader that fails before the node reads (a dial refused, say) ends the wait, and
        // its error fails the test below instead of this loop spinning forever.
        while reads_of(&node).is_empty() && !reader.is_finished() {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        tokio::time::sleep(std::time::Duration::from_micros(rng.random_range(0..8000))).await;
        if !reader.is_finished() {
            let connection = client.connection(&node.addr).await.unwrap();
            connection.inner.close(0u32.into(), b"cut");
        }
        let got = reader
            .await
            .unwrap()
            .expect("the read resumes after the cut");
        assert_eq!(got, data[..], "round {round}");
        let offsets = reads_of(&node);
        assert_eq!(offsets[0], 0);
        // A resumed read asks from what it already has, not from the start.
        if offsets.len() > 1 && offsets[1..].iter().all(|&o| o > 0) {
            resumed += 1;
        }
    }
    assert!(resumed > 0, "no read was cut mid-way and resumed");
}
