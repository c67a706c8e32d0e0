//! The hostile-peer suite (issue 22): one node over real QUIC on loopback with the default
//! limits, one attack from `cess_transport::attacks` at a time, and an honest client beside it.
//! For each attack: the honest client's writes and reads succeed, each within
//! [`HONEST_OP_MAX`]; the memory the node holds for peers stays under its bound (read from
//! the server: unfinished writes, read chunks); and the process's resident memory, attacker
//! included, grows by less than [`RSS_GROWTH_MAX_BYTES`] (read from `/proc/self/status`).
//! The validators' half (oversized and slow frames, a bad-signature flood during commits) is
//! `consensus/tests/hostile.rs`; the same attacks with latency figures are the benchmark's
//! `honest-*-under-*` cases (`cess-bench --suite transport`).

use bytes::Bytes;
use cess_transport::FragmentId;
use cess_transport::attacks::{self, Kind};
use cess_transport::memstore::MemStore;
use cess_transport::{
    Client, ClientConfig, Endpoint, Limits, NodeAddr, NodeKey, Server, ServerConfig,
};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// An honest write or read under attack takes at most this (a few ms without one).
const HONEST_OP_MAX: Duration = Duration::from_secs(2);
/// The process (node and attacker together) grows by less than this during an attack.
const RSS_GROWTH_MAX_BYTES: u64 = 512 << 20;
/// What stalled reads may hold of the node: one peer's reads in flight, 8 MiB each.
const READ_HOLD_MAX_BYTES: u64 = 8 * (8 << 20);
/// What empty partial writes may hold: nothing (a header commits no memory) but the honest
/// client's one write in progress, rounded up.
const PARTIAL_HOLD_MAX_BYTES: u64 = 1 << 20;
const HONEST_BYTES: usize = 256 << 10;
const FILE: [u8; 32] = [3; 32];

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn fragment(seed: u64, len: usize) -> (Bytes, FragmentId) {
    let mut data = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill(&mut data[..]);
    let id = FragmentId::of(&data);
    (Bytes::from(data), id)
}

/// What one attack left the node holding at most, and what the honest client saw.
#[derive(Debug)]
struct Outcome {
    sent: u64,
    honest_ops: usize,
    slowest_op: Duration,
    read_held_max: u64,
    partial_held_max: u64,
    rss_growth: u64,
    peers_refused: u64,
    paced: u64,
    handshakes_dropped: u64,
}

/// The attacks run one at a time: each measures the whole process's memory and holds two
/// cores' worth of load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `kind` against a fresh node until `enough(sent)` and at least `rounds` honest
/// write-then-read rounds are done, each op held to [`HONEST_OP_MAX`].
async fn under(
    kind: Kind,
    config: ServerConfig,
    rounds: usize,
    enough: impl Fn(u64) -> bool,
) -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().await;
    let key = Arc::new(NodeKey::generate());
    let endpoint = Endpoint::server(key.clone(), loopback(), Limits::default()).unwrap();
    let addr: NodeAddr = endpoint.node_addr().unwrap();
    let store = Arc::new(MemStore::only_peers_with_standing());
    let server = Server::new(store.clone(), key, config);
    // The honest client and the attacker's own key have standing; fresh keys do not.
    let (honest_key, attacker_key) = (Arc::new(NodeKey::generate()), Arc::new(NodeKey::generate()));
    store.grant_standing(honest_key.peer_id());
    store.grant_standing(attacker_key.peer_id());
    tokio::spawn(server.clone().serve(endpoint.clone()));
    let (large, large_id) = fragment(1, 8 << 20);
    store
        .fragments
        .lock()
        .unwrap()
        .insert(large_id, large.to_vec());
    let honest = Client::new(
        Endpoint::client(honest_key, loopback(), Limits::default()).unwrap(),
        ClientConfig::default(),
    );
    // Connected before the attack (a Retry under load costs a newcomer one round trip).
    honest.connection(&addr).await.unwrap();
    let rss_before = cess_transport::attacks::resident_bytes().unwrap();
    // The attacker runs on its own threads, as another machine's would: it shares this
    // machine's cores with the node but not the node's task queues.
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let target = addr.clone();
    let attack = attacker
        .spawn(async move { attacks::start(kind, &target, large_id, attacker_key).await })
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut outcome = Outcome {
        sent: 0,
        honest_ops: 0,
        slowest_op: Duration::ZERO,
        read_held_max: 0,
        partial_held_max: 0,
        rss_growth: 0,
        peers_refused: 0,
        paced: 0,
        handshakes_dropped: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut round = 0u64;
    while outcome.honest_ops < 2 * rounds || !enough(attack.sent()) {
        assert!(
            Instant::now() < deadline,
            "{}: not done in 180 s: {outcome:?}, attack sent {}",
            kind.name(),
            attack.sent()
        );
        round += 1;
        let (data, id) = fragment(1000 + round, HONEST_BYTES);
        let started = Instant::now();
        let written = tokio::time::timeout(
            HONEST_OP_MAX,
            honest.write_fragment(&addr, FILE, id, data.clone()),
        )
        .await;
        assert!(
            matches!(written, Ok(Ok(()))),
            "{}: an honest write: {written:?}",
            kind.name()
        );
        let write_time = started.elapsed();
        let started = Instant::now();
        let read = tokio::time::timeout(HONEST_OP_MAX, honest.read_fragment(&addr, FILE, id)).await;
        match read {
            Ok(Ok(got)) => assert!(got == data[..], "{}: other bytes read", kind.name()),
            other => panic!("{}: an honest read: {other:?}", kind.name()),
        }
        outcome.slowest_op = outcome.slowest_op.max(write_time).max(started.elapsed());
        outcome.honest_ops += 2;
        outcome.read_held_max = outcome.read_held_max.max(server.read_bytes());
        outcome.partial_held_max = outcome.partial_held_max.max(server.partial_bytes());
        outcome.rss_growth = outcome.rss_growth.max(
            cess_transport::attacks::resident_bytes()
                .unwrap()
                .saturating_sub(rss_before),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcome.sent = attack.sent();
    drop(attack);
    attacker.shutdown_background();
    outcome.peers_refused = server.metrics().peers_refused.load(Ordering::Relaxed);
    outcome.paced = server.metrics().requests_paced.load(Ordering::Relaxed);
    outcome.handshakes_dropped = endpoint
        .refusals()
        .expect("a server endpoint")
        .per_ip_rate
        .load(Ordering::Relaxed);
    assert!(
        outcome.read_held_max <= READ_HOLD_MAX_BYTES,
        "{}: reads held {} bytes",
        kind.name(),
        outcome.read_held_max
    );
    assert!(
        outcome.rss_growth < RSS_GROWTH_MAX_BYTES,
        "{}: the process grew by {} bytes",
        kind.name(),
        outcome.rss_growth
    );
    eprintln!("{}: {outcome:?}", kind.name());
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_writes_and_reads_go_on_beside_silent_handshakes() {
    let outcome = under(
        Kind::SilentHandshakes,
        ServerConfig::default(),
        10,
        |sent| sent >= 200,
    )
    .await;
    assert!(outcome.partial_held_max <= PARTIAL_HOLD_MAX_BYTES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_writes_and_reads_go_on_beside_64_stalled_reads() {
    let outcome = under(Kind::StalledReads, ServerConfig::default(), 10, |sent| {
        sent >= 64
    })
    .await;
    assert!(
        outcome.read_held_max > 0,
        "the attack held no read: {outcome:?}"
    );
}

/// Fresh keys have no standing: each connection is closed after its handshake, and redialed
/// at once (a handshake flood), never costing a signature check per request; past the
/// address's handshake rate the dials are dropped unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_writes_and_reads_go_on_beside_a_flood_from_fresh_keys() {
    let outcome = under(Kind::FreshKeyFlood, ServerConfig::default(), 10, |sent| {
        sent >= 1_000
    })
    .await;
    assert!(outcome.peers_refused > 0, "{outcome:?}");
    assert!(outcome.handshakes_dropped > 0, "{outcome:?}");
    assert!(outcome.partial_held_max <= PARTIAL_HOLD_MAX_BYTES);
}

/// A peer with standing flooding requests is paced to its rate (1000/s by default); here the
/// rate is raised so that 100k empty writes arrive within the test, and they hold nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_empty_partial_writes_hold_no_memory() {
    let config = ServerConfig {
        requests_per_peer_per_s: 1_000_000,
        ..ServerConfig::default()
    };
    let outcome = under(Kind::EmptyPartialWrites, config, 10, |sent| sent >= 100_000).await;
    assert!(
        outcome.partial_held_max <= PARTIAL_HOLD_MAX_BYTES,
        "{outcome:?}"
    );
}

/// The same flood at the default rate: the peer is made to wait, the honest client is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_requests_is_paced_to_its_rate() {
    let started = Instant::now();
    let outcome = under(
        Kind::EmptyPartialWrites,
        ServerConfig::default(),
        10,
        |sent| sent >= 3_000,
    )
    .await;
    assert!(outcome.paced > 0, "{outcome:?}");
    let limits = ServerConfig::default();
    let allowed = limits.request_burst_per_peer as f64
        + limits.requests_per_peer_per_s as f64 * started.elapsed().as_secs_f64();
    assert!(
        (outcome.sent as f64) <= allowed * 1.05 + 64.0,
        "{} requests in {:?}: more than the rate allows",
        outcome.sent,
        started.elapsed()
    );
}
