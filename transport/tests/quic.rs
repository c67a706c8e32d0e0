// Long file: the protocol's tests share one harness.
//! The fragment protocol over real QUIC on loopback, against an in-memory store.

use bytes::Bytes;
use cess_transport::FragmentId;
use cess_transport::client::open_write;
use cess_transport::memstore::MemStore;
use cess_transport::{
    Client, ClientConfig, Code, Endpoint, Limits, NodeAddr, NodeKey, ProtocolError, Server,
    ServerConfig, WriteProgress, grant,
};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::Arc;

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
    let store = Arc::new(MemStore {
        fragment_bytes_max: STORE_FRAGMENT_BYTES_MAX,
        ..MemStore::default()
    });
    store
        .record_reads
        .store(true, std::sync::atomic::Ordering::Relaxed);
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

fn fragment(seed: u64, len: usize) -> (Bytes, FragmentId) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    let id = FragmentId::of(&data);
    (Bytes::from(data), id)
}

const FILE: [u8; 32] = [9; 32];

/// The largest fragment the test store keeps (an engine store's default).
const STORE_FRAGMENT_BYTES_MAX: u64 = 8 << 20;

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
        .read_fragment(&node.addr, FILE, FragmentId([0; 32]))
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
    assert_eq!(
        metrics.responses[cess_transport::Code::NotFound as usize]
            .load(std::sync::atomic::Ordering::Relaxed),
        1
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

/// Starts four reads of a large fragment from `node` on `client`'s connection and returns
/// once the node is sending (its first store reads happened): the congestion window is full.
async fn read_in_progress(
    node: &Node,
    client: &Arc<Client>,
    id: FragmentId,
) -> tokio::task::JoinSet<()> {
    node.store.reads.lock().unwrap().clear();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, addr) = (client.clone(), node.addr.clone());
        readers.spawn(async move {
            let _ = client.read_fragment(&addr, FILE, id).await;
        });
    }
    while node.store.reads.lock().unwrap().len() < 4 {
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    readers
}

/// Issue 28, item 1: quinn withheld a CONNECTION_CLOSE while the congestion window was full
/// (quinn-rs/quinn#2785), so a peer the node disconnected in the middle of a read never
/// learned it and waited for its idle timeout (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_reaches_a_peer_in_the_middle_of_a_read() {
    let node = start_node(ServerConfig::default());
    let (data, id) = fragment(77, 8 << 20);
    node.store
        .fragments
        .lock()
        .unwrap()
        .insert(id, data.to_vec());
    for round in 0..8u64 {
        let client = Arc::new(client_with(NodeKey::generate()));
        let connection = client.connection(&node.addr).await.unwrap();
        let mut readers = read_in_progress(&node, &client, id).await;
        // A request signed by another key than the connection's: the node disconnects.
        let other = client_with(NodeKey::generate());
        let (forged, forged_id) = fragment(500 + round, 1000);
        let (mut send, _recv) = open_write(
            &other,
            &connection,
            FILE,
            forged_id,
            forged.len() as u64,
            0,
            forged.len() as u64,
        )
        .await
        .unwrap();
        let _ = send.write_all(&forged).await;
        let _ = send.finish();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(5), connection.inner.closed())
                .await;
        readers.abort_all();
        let reason = closed.unwrap_or_else(|_| {
            panic!("round {round}: the node's close did not reach the peer within 5 s")
        });
        assert!(reason.to_string().contains("signed by"), "{reason}");
    }
}

/// Issue 28, item 1, at shutdown: the close of every connection reaches its peer even while
/// the node is sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_reaches_a_peer_in_the_middle_of_a_read() {
    for round in 0..4u64 {
        let node = start_node(ServerConfig::default());
        let (data, id) = fragment(90 + round, 8 << 20);
        node.store
            .fragments
            .lock()
            .unwrap()
            .insert(id, data.to_vec());
        let client = Arc::new(client_with(NodeKey::generate()));
        let connection = client.connection(&node.addr).await.unwrap();
        let mut readers = read_in_progress(&node, &client, id).await;
        node.server
            .shutdown(&node.endpoint, std::time::Duration::ZERO)
            .await;
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(5), connection.inner.closed())
                .await;
        readers.abort_all();
        let reason = closed.unwrap_or_else(|_| {
            panic!("round {round}: the shutdown's close did not reach the peer within 5 s")
        });
        assert!(reason.to_string().contains("shutting down"), "{reason}");
    }
}

/// Issue 28, item 3: a write dropped silently by the network and started over at once from
/// offset 0 (as the client does) stores the fragment; the stalled first stream, when it times
/// out, must not put its old buffer back (it held the partial budget until the expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_stream_never_puts_back_the_partial_of_a_stored_fragment() {
    let node = start_node(ServerConfig {
        stream_timeout_ms: 500,
        ..ServerConfig::default()
    });
    let client = client_with(NodeKey::generate());
    let connection = client.connection(&node.addr).await.unwrap();
    let (data, id) = fragment(600, 1 << 20);
    let len = data.len() as u64;
    // The first stream sends half, then nothing: the network dropped it without a reset.
    let (mut stalled, _stalled_recv) = open_write(&client, &connection, FILE, id, len, 0, len)
        .await
        .unwrap();
    stalled.write_all(&data[..data.len() / 2]).await.unwrap();
    while node.server.partial_bytes() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The same write over again from offset 0, on a new stream.
    let (mut send, mut recv) = open_write(&client, &connection, FILE, id, len, 0, len)
        .await
        .unwrap();
    send.write_all(&data).await.unwrap();
    let _ = send.finish();
    let response = cess_transport::protocol::read_frame(&mut recv)
        .await
        .unwrap();
    let response: cess_transport::pb::WritefileResponse =
        cess_transport::message::decode_body(&response).unwrap();
    assert_eq!(response.code, Code::Ok as u32, "{}", response.detail);
    assert!(node.store.fragments.lock().unwrap().contains_key(&id));
    // The stalled stream times out after 500 ms.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        node.server.partial_bytes(),
        0,
        "the stalled stream put its buffer back for a stored fragment"
    );
    drop(stalled);
}

/// Issue 28, item 4: a write larger than the store keeps is refused before anything is
/// buffered, and write headers that announce bytes without sending them commit no memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_writes_commit_no_memory_before_their_bytes_arrive() {
    let node = start_node(ServerConfig::default());
    let client = client_with(NodeKey::generate());
    let connection = client.connection(&node.addr).await.unwrap();
    let answer = |recv: quinn::RecvStream| async move {
        let mut recv = recv;
        let body = cess_transport::protocol::read_frame(&mut recv)
            .await
            .unwrap();
        let response: cess_transport::pb::WritefileResponse =
            cess_transport::message::decode_body(&body).unwrap();
        response
    };
    // Over the store's maximum: refused, nothing allocated.
    let (mut send, recv) = open_write(
        &client,
        &connection,
        FILE,
        FragmentId([1; 32]),
        64 << 20,
        0,
        0,
    )
    .await
    .unwrap();
    let _ = send.finish();
    let response = answer(recv).await;
    assert_eq!(
        response.code,
        Code::BadRequest as u32,
        "{}",
        response.detail
    );
    assert!(response.detail.contains("maximum"), "{}", response.detail);
    // Fifteen headers of 8 MiB each, not one byte behind them.
    for i in 0..15u8 {
        let (mut send, recv) = open_write(
            &client,
            &connection,
            FILE,
            FragmentId([i + 10; 32]),
            STORE_FRAGMENT_BYTES_MAX,
            0,
            0,
        )
        .await
        .unwrap();
        let _ = send.finish();
        let response = answer(recv).await;
        assert_eq!(response.code, Code::Continue as u32, "{}", response.detail);
    }
    assert_eq!(node.server.partial_bytes(), 0);
    assert_eq!(
        node.store
            .allocated_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Another writer is not refused for them.
    let other = client_with(NodeKey::generate());
    let (data, id) = fragment(601, 1 << 20);
    other
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .unwrap();
    assert!(node.store.fragments.lock().unwrap().contains_key(&id));
}

/// Issue 28, item 4: one writer's unfinished writes are held to its own budget, so it cannot
/// take the whole node's and make every other writer `Busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_cannot_take_the_whole_partial_budget() {
    let node = start_node(ServerConfig {
        partial_bytes_max: 64 << 20,
        partial_writer_bytes_max: 8 << 20,
        ..ServerConfig::default()
    });
    let greedy = client_with(NodeKey::generate());
    let connection = greedy.connection(&node.addr).await.unwrap();
    let mut busy = 0;
    for seed in 0..16u64 {
        // Half a fragment each, then the stream ends: the half is kept for a resume.
        let (data, id) = fragment(700 + seed, 1 << 20);
        let len = data.len() as u64;
        let (mut send, mut recv) = open_write(&greedy, &connection, FILE, id, len, 0, len / 2)
            .await
            .unwrap();
        // A refused write is stopped by the node at its header.
        let _ = send.write_all(&data[..data.len() / 2]).await;
        let _ = send.finish();
        let body = cess_transport::protocol::read_frame(&mut recv)
            .await
            .unwrap();
        let response: cess_transport::pb::WritefileResponse =
            cess_transport::message::decode_body(&body).unwrap();
        if response.code == Code::Busy as u32 {
            busy += 1;
        } else {
            assert_eq!(response.code, Code::Continue as u32, "{}", response.detail);
        }
    }
    assert!(busy > 0, "the writer was never held to its budget");
    assert!(node.server.partial_bytes() <= 8 << 20);
    let other = client_with(NodeKey::generate());
    let (data, id) = fragment(800, 1 << 20);
    other
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .unwrap();
    assert!(node.store.fragments.lock().unwrap().contains_key(&id));
}

/// Issue 22, item 1: the accept loop awaited each handshake, so one client that started a
/// handshake and went silent held off every other connection until its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_handshake_does_not_hold_off_other_connections() {
    let node = start_node(ServerConfig::default());
    // A client that sends its first Initial packet (a ClientHello) and then nothing.
    let _silent = cess_transport::attacks::send_silent_client_hello(node.addr.socket)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // An honest client connects and writes at once.
    let client = client_with(NodeKey::generate());
    let (data, id) = fragment(900, 10_000);
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.write_fragment(&node.addr, FILE, id, data),
    )
    .await;
    assert!(
        matches!(written, Ok(Ok(()))),
        "an honest write behind a silent handshake: {written:?}"
    );
}

/// Issue 22, item 3: the replay cache was one for all peers and failed closed, so one peer
/// sending fresh signed requests filled it and every request from everyone was then refused
/// (`ReplayCacheFull`). Each peer now fills only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_filling_its_replay_cache_never_locks_out_another() {
    let node = start_node(ServerConfig {
        replay_capacity: 32,
        ..ServerConfig::default()
    });
    let flooder = client_with(NodeKey::generate());
    let missing = [0xEE; 32];
    let mut refused = 0;
    for _ in 0..40 {
        match flooder
            .read_fragment(&node.addr, FILE, FragmentId(missing))
            .await
        {
            Err(ProtocolError::Refused {
                code: Code::NotFound,
                ..
            }) => {}
            Err(ProtocolError::Refused {
                code: Code::BadRequest,
                detail,
            }) => {
                assert!(detail.contains("replay"), "{detail}");
                refused += 1;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert!(refused > 0, "the flooder is held to its own bound");
    let honest = client_with(NodeKey::generate());
    let (data, id) = fragment(910, 10_000);
    honest
        .write_fragment(&node.addr, FILE, id, data.clone())
        .await
        .expect("an honest peer is not refused for another's flood");
    assert_eq!(
        honest.read_fragment(&node.addr, FILE, id).await.unwrap(),
        data[..]
    );
}

/// Issue 22, item 2: 64 reads of an 8 MiB fragment that the peer never takes. Before, each
/// held its 8 MiB chunk for as long as the peer kept the connection (64 streams: 512 MiB per
/// connection). Now a peer has at most `reads_per_peer_max` reads in flight (the rest are
/// answered `Busy` at once), all reads together hold at most `read_bytes_max`, a chunk not
/// taken within the stream timeout loses its stream, and an honest reader is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reads_pin_neither_memory_nor_the_node() {
    let config = ServerConfig {
        stream_timeout_ms: 1_500,
        read_bytes_max: 48 << 20,
        reads_per_peer_max: 4,
        ..ServerConfig::default()
    };
    let node = start_node(config.clone());
    let (big, big_id) = fragment(90, 8 << 20);
    let (small, small_id) = fragment(91, 100_000);
    {
        let mut fragments = node.store.fragments.lock().unwrap();
        fragments.insert(big_id, big.to_vec());
        fragments.insert(small_id, small.to_vec());
    }
    let hostile = client_with(NodeKey::generate());
    let connection = hostile.connection(&node.addr).await.unwrap();
    let mut stalled = Vec::new();
    for _ in 0..64 {
        // Kept open and never read.
        stalled.push(
            cess_transport::client::open_read(&hostile, &connection, FILE, big_id, 0)
                .await
                .unwrap(),
        );
    }
    let mut held_max = 0;
    for _ in 0..20 {
        held_max = held_max.max(node.server.read_bytes());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        held_max <= 4 * (8 << 20),
        "one peer's stalled reads hold {held_max} bytes"
    );
    let refused = node
        .server
        .metrics()
        .reads_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    // Some `Busy` answers wait behind the unread chunks on the peer's own connection.
    assert!(refused > 0, "no read refused, held {held_max}");
    // An honest reader is served while the hostile one stalls.
    let honest = client_with(NodeKey::generate());
    let started = std::time::Instant::now();
    let got = honest
        .read_fragment(&node.addr, FILE, small_id)
        .await
        .unwrap();
    assert_eq!(got, small.to_vec());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A stalled chunk loses its stream at the stream timeout (the peer's next read takes the
    // slot, still within its bound); once the peer is gone, every byte comes back.
    tokio::time::sleep(std::time::Duration::from_millis(
        config.stream_timeout_ms + 500,
    ))
    .await;
    assert!(node.server.read_bytes() <= 4 * (8 << 20));
    drop(stalled);
    connection.inner.close(0u32.into(), b"done");
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(config.stream_timeout_ms + 2_000);
    while node.server.read_bytes() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes still held after the peer left",
            node.server.read_bytes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Issue 22: one peer may hold at most `connections_per_peer_max` connections to a server
/// (each can hold up to the send window of the server's memory); one more is closed after its
/// handshake, saying why, and another peer still connects. A closed connection gives its
/// place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_open_connections_without_bound() {
    let node = start_node(ServerConfig::default());
    let per_peer = Limits::default().connections_per_peer_max;
    let key = Arc::new(NodeKey::generate());
    let endpoint = Endpoint::client(key, loopback(), Limits::default()).unwrap();
    // One more than the bound. The server admits them as their handshakes finish, in any
    // order: whichever it counts last is the one closed.
    let mut open = Vec::new();
    for _ in 0..=per_peer {
        open.push(endpoint.dial(&node.addr).await.unwrap());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let closed = loop {
        if let Some(i) = open.iter().position(|c| c.inner.close_reason().is_some()) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection past the bound was closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let reason = open.remove(closed).inner.close_reason().unwrap();
    assert!(
        reason.to_string().contains("connections from this peer"),
        "{reason}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        open.iter().all(|c| c.inner.close_reason().is_none()),
        "more than one connection was closed"
    );
    let refusals = node.endpoint.refusals().expect("a server endpoint");
    assert_eq!(
        refusals.per_peer.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Another peer is not affected.
    let other =
        Endpoint::client(Arc::new(NodeKey::generate()), loopback(), Limits::default()).unwrap();
    let theirs = other.dial(&node.addr).await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), theirs.inner.closed())
            .await
            .is_err(),
        "another peer's connection was closed"
    );
    // One closed, one more fits.
    open.pop()
        .unwrap()
        .close(cess_transport::quic::ErrorCode::Done, "done");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let again = endpoint.dial(&node.addr).await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), again.inner.closed())
            .await
            .is_err(),
        "a place given back was not reused"
    );
}
