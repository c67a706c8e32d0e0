//! Suite `transport`: the fragment protocol against a bare quinn stream of the same bytes over
//! the same TLS and transport settings, on loopback, in one run.

use crate::report::{Case, Options};
use bytes::Bytes;
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::{
    Client, ClientConfig, Connection, Endpoint, Limits, NodeKey, Server, ServerConfig,
};
use cess_types::FragmentId;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Takes every fragment and keeps nothing: the case measures the wire, not a disk or a hash.
struct DiscardStore;

impl FragmentStore for DiscardStore {
    type WriteBuf = Vec<u8>;
    type ReadBuf = Vec<u8>;
    fn alloc(&self, len_bytes: usize) -> Vec<u8> {
        vec![0; len_bytes]
    }
    async fn len_of(&self, _: FragmentId) -> Result<Option<u64>, StoreFault> {
        Ok(None)
    }
    async fn put(&self, _: FragmentId, _: Vec<u8>) -> Result<(), StoreFault> {
        Ok(())
    }
    async fn read(&self, _: FragmentId, _: u64, _: u64) -> Result<Vec<u8>, StoreFault> {
        Err(StoreFault::NotFound)
    }
}

pub(crate) const FRAGMENT_BYTES: usize = 8 << 20;
/// Fragments in flight at once on the one connection, ours and the baseline alike.
const IN_FLIGHT: usize = 4;

pub(crate) fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("valid")
}

/// Bare quinn: each stream carries the bytes and is answered with one byte once read.
pub(crate) async fn bare_server(endpoint: Endpoint) {
    while let Some(Ok(connection)) = endpoint.accept().await {
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = connection.inner.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; FRAGMENT_BYTES];
                    let mut filled = 0;
                    while let Ok(Some(n)) = recv.read(&mut buf[filled..]).await {
                        filled += n;
                        if filled == buf.len() {
                            break;
                        }
                    }
                    let _ = send.write_all(&[1]).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

pub(crate) async fn bare_send(connection: Connection, data: Bytes) {
    let (mut send, mut recv) = connection.inner.open_bi().await.expect("open stream");
    send.write_chunk(data).await.expect("send");
    let _ = send.finish();
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.expect("ack");
}

/// MiB/s moving `count` fragments, `IN_FLIGHT` at a time, each through `send`.
pub(crate) async fn throughput<F, Fut>(count: usize, send: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let t0 = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() >= IN_FLIGHT {
            running.join_next().await.expect("task").expect("no panic");
        }
        running.spawn(send(i));
    }
    while let Some(done) = running.join_next().await {
        done.expect("no panic");
    }
    (count * FRAGMENT_BYTES) as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64()
}

async fn tcp_reference(count: usize) -> f64 {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind tcp");
    let addr = listener.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        while socket.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let data = vec![7u8; FRAGMENT_BYTES];
    let t0 = Instant::now();
    for _ in 0..count {
        socket.write_all(&data).await.expect("write");
    }
    socket.shutdown().await.expect("shutdown");
    let _ = sink.await;
    (count * FRAGMENT_BYTES) as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64()
}

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut cases = Vec::new();
    if options.wants("stream-8MiB-one-connection") {
        cases.push(runtime.block_on(stream_case(options))?);
    }
    if options.wants("many-fragments-into-engine") {
        cases.push(many_into_engine_case(&runtime, options)?);
    }
    cases.extend(crate::hostile::hostile_cases(options)?);
    Ok(cases)
}

/// Connections writing at once into one node, and fragments in flight on each.
const WRITERS: usize = 4;
const WRITER_IN_FLIGHT: usize = 2;

/// Several connections writing fragments into one node's engine store on a file, against the
/// same number of fragments put straight into an engine store (no network, same total depth).
fn many_into_engine_case(
    runtime: &tokio::runtime::Runtime,
    options: &Options,
) -> Result<Case, String> {
    use cess_node::EngineStore;
    let (runs, per_writer, fragment_bytes) = if options.quick {
        (1, 2, 1 << 20)
    } else {
        (3, 8, 8 << 20)
    };
    let count = WRITERS * per_writer;
    let run_bytes = (count * fragment_bytes) as u64;
    // Room for every run of both sides, plus slack for metadata and shard rounding.
    let store_bytes = (runs as u64 * run_bytes * 3 / 2).max(256 << 20);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let (ours_target, _ours_guard) =
        crate::engine::prepare_target(options, store_bytes, "transport-engine-ours.img")?;
    let (base_target, _base_guard) = crate::engine::prepare_target(
        &Options {
            target: None,
            ..options.clone()
        },
        store_bytes,
        "transport-engine-baseline.img",
    )?;
    let node_store = Arc::new(crate::engine::format_store(&ours_target)?);
    let base_store = Arc::new(crate::engine::format_store(&base_target)?);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut base_latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let (clients, node_addr) = runtime.block_on(async {
        let node_key = Arc::new(NodeKey::generate());
        let node = Endpoint::server(node_key.clone(), loopback(), Limits::default())
            .map_err(|e| err(&e))?;
        let server = Server::new(
            Arc::new(EngineStore(node_store.clone())),
            node_key,
            ServerConfig::default(),
        );
        tokio::spawn(server.serve(node.clone()));
        let node_addr = node.node_addr().map_err(|e| err(&e))?;
        let mut clients = Vec::new();
        for _ in 0..WRITERS {
            let endpoint =
                Endpoint::client(Arc::new(NodeKey::generate()), loopback(), Limits::default())
                    .map_err(|e| err(&e))?;
            let client = Arc::new(Client::new(endpoint, ClientConfig::default()));
            client.connection(&node_addr).await.map_err(|e| err(&e))?;
            clients.push(client);
        }
        Ok::<_, String>((clients, node_addr))
    })?;
    for run in 0..runs {
        // Fresh bytes every run and side: the store would otherwise find them already held.
        let frags = crate::engine::fragments(count, fragment_bytes, 1000 + run as u64);
        let payloads: Vec<(Bytes, FragmentId)> = frags
            .iter()
            .map(|(key, buf)| (Bytes::copy_from_slice(buf), *key))
            .collect();
        drop(frags);
        let started = Instant::now();
        let per_fragment = runtime.block_on(async {
            let mut writers = tokio::task::JoinSet::new();
            for (w, client) in clients.iter().enumerate() {
                let mine: Vec<(Bytes, FragmentId)> =
                    payloads.iter().skip(w).step_by(WRITERS).cloned().collect();
                let (client, addr) = (client.clone(), node_addr.clone());
                writers.spawn(async move {
                    let mut times = Vec::new();
                    let mut in_flight = tokio::task::JoinSet::new();
                    for (data, id) in mine {
                        if in_flight.len() >= WRITER_IN_FLIGHT {
                            times.push(in_flight.join_next().await.expect("task").expect("write"));
                        }
                        let (client, addr) = (client.clone(), addr.clone());
                        in_flight.spawn(async move {
                            let t = Instant::now();
                            client
                                .write_fragment(&addr, [0; 32], id, data)
                                .await
                                .expect("write");
                            t.elapsed()
                        });
                    }
                    while let Some(done) = in_flight.join_next().await {
                        times.push(done.expect("write"));
                    }
                    times
                });
            }
            let mut all = Vec::new();
            while let Some(times) = writers.join_next().await {
                all.extend(times.expect("writer"));
            }
            all
        });
        ours.push(run_bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64());
        for t in per_fragment {
            let _ = latency.record(t.as_micros() as u64);
        }
        let frags = crate::engine::fragments(count, fragment_bytes, 2000 + run as u64);
        let started = Instant::now();
        crate::engine::put_all(
            &base_store,
            frags,
            WRITERS * WRITER_IN_FLIGHT,
            &mut base_latency,
        );
        theirs.push(run_bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64());
    }
    let stats = node_store.stats().map_err(|e| err(&e))?;
    if stats.active_count < (runs * count) as u64 {
        return Err(format!(
            "the node holds {} fragments, {} were written",
            stats.active_count,
            runs * count
        ));
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "many-fragments-into-engine".into();
    case.metric = "throughput";
    case.unit = "MiB/s";
    case.baseline = format!(
        "the same count of fragments put straight into an engine store on a file, {} in flight",
        WRITERS * WRITER_IN_FLIGHT
    );
    case.latency = crate::report::Latency::from_histogram(&latency);
    case.baseline_latency = Some(crate::report::Latency::from_histogram(&base_latency));
    case.note = format!(
        "{WRITERS} connections × {WRITER_IN_FLIGHT} fragments of {} MiB in flight into one node \
         (signed protocol, SHA-256 check, engine on a file with O_DIRECT); latency per fragment",
        fragment_bytes >> 20
    );
    Ok(case)
}

async fn stream_case(options: &Options) -> Result<Case, String> {
    let (runs, count) = if options.quick { (1, 4) } else { (5, 48) };
    let limits = Limits::default();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    // Ours: the signed protocol into a server over the discard store.
    let node_key = Arc::new(NodeKey::generate());
    let node =
        Endpoint::server(node_key.clone(), loopback(), limits.clone()).map_err(|e| err(&e))?;
    let server = Server::new(Arc::new(DiscardStore), node_key, ServerConfig::default());
    tokio::spawn(server.serve(node.clone()));
    let client_endpoint =
        Endpoint::client(Arc::new(NodeKey::generate()), loopback(), limits.clone())
            .map_err(|e| err(&e))?;
    let client = Arc::new(Client::new(client_endpoint, ClientConfig::default()));
    let node_addr = node.node_addr().map_err(|e| err(&e))?;
    client.connection(&node_addr).await.map_err(|e| err(&e))?;
    // Baseline: bare streams between endpoints built the same way (same TLS, same limits).
    let bare = Endpoint::server(Arc::new(NodeKey::generate()), loopback(), limits.clone())
        .map_err(|e| err(&e))?;
    tokio::spawn(bare_server(bare.clone()));
    let bare_client =
        Endpoint::client(Arc::new(NodeKey::generate()), loopback(), limits).map_err(|e| err(&e))?;
    let bare_connection = bare_client
        .dial(&bare.node_addr().map_err(|e| err(&e))?)
        .await
        .map_err(|e| err(&e))?;

    let fragments: Vec<(Bytes, FragmentId)> = (0..IN_FLIGHT * 2)
        .map(|i| {
            let data = crate::codec::random(FRAGMENT_BYTES, 100 + i as u64);
            let id = FragmentId::of(&data);
            (Bytes::from(data), id)
        })
        .collect();
    let fragments = Arc::new(fragments);
    let (mut ours, mut theirs, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (c, f, a) = (client.clone(), fragments.clone(), node_addr.clone());
        ours.push(
            throughput(count, move |i| {
                let (c, f, a) = (c.clone(), f.clone(), a.clone());
                async move {
                    let (data, id) = f[i % f.len()].clone();
                    // The discard store keeps nothing, so every write is a full transfer.
                    c.write_fragment(&a, [0; 32], id, data)
                        .await
                        .expect("write");
                }
            })
            .await,
        );
        let (b, f) = (bare_connection.clone(), fragments.clone());
        theirs.push(
            throughput(count, move |i| {
                bare_send(b.clone(), f[i % f.len()].0.clone())
            })
            .await,
        );
        tcp.push(tcp_reference(count).await);
    }
    let tcp_mibs = crate::report::median(&mut tcp);
    Ok(Case {
        name: "stream-8MiB-one-connection".into(),
        metric: "throughput",
        unit: "MiB/s",
        baseline: "bare quinn streams, same TLS and transport settings".into(),
        goal: Some(0.90),
        note: format!(
            "{count} fragments of 8 MiB per run, {IN_FLIGHT} in flight on one connection; \
             signed requests and responses, no store; plain TCP on loopback (reference, no goal): \
             {tcp_mibs:.0} MiB/s"
        ),
        ..Case::from_runs(ours, theirs)
    })
}
