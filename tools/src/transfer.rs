//! `cess put` / `cess get`: files to and from storage nodes over the fragment protocol.
//!
//! Put encodes as it reads and sends fragment j of every segment to node j, many fragments in
//! flight, with the bytes in flight bounded. Get fetches k fragments of each segment in
//! parallel from the nodes that have answered fastest so far, falls back to another fragment
//! when a node fails, and decodes as segments arrive. A file's manifest and the node list it
//! was placed on are saved side by side, named by the file id.

use crate::codec_cmd::{self, KeyChoice, Meter};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cess_codec::{
    self as codec, CodecError, CodecParams, FragmentId, FragmentSink, FragmentSource, Id, Manifest,
    hex,
};
use cess_engine::{AlignedBuf, BufPool};
use cess_transport::{Client, ClientConfig, Endpoint, Limits, NodeAddr, NodeKey, pb};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Reads a node list: one multiaddr per line; blank lines and `#` comments skipped.
pub fn read_nodes(path: &Path) -> Result<Vec<NodeAddr>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<NodeAddr>()
                .with_context(|| format!("{}: {l:?} is not a node address", path.display()))
        })
        .collect()
}

fn manifest_path(dir: &Path, file_id: &Id) -> PathBuf {
    dir.join(format!("{}.manifest", hex(file_id)))
}

fn placement_path(dir: &Path, file_id: &Id) -> PathBuf {
    dir.join(format!("{}.nodes", hex(file_id)))
}

/// A client endpoint on an ephemeral port, inside the current runtime.
pub fn client(
    key: Arc<NodeKey>,
    config: ClientConfig,
    grant: Option<pb::UploadGrant>,
) -> Result<Arc<Client>> {
    let bind = "0.0.0.0:0".parse().expect("valid address");
    let endpoint = Endpoint::client(key, bind, Limits::default())?;
    let client = Client::new(endpoint, config);
    Ok(Arc::new(match grant {
        Some(grant) => client.with_grant(grant),
        None => client,
    }))
}

/// The grant a writer to the local network sends: the file named, else `<devnet>/client.grant`
/// when present. Checked here, so an expired one is refused before anything is sent.
pub fn devnet_grant(devnet: &Path, named: Option<&Path>) -> Result<Option<pb::UploadGrant>> {
    let default_grant = devnet.join(crate::devnet::CLIENT_GRANT);
    match named {
        Some(path) => Ok(Some(crate::owner::load(path)?)),
        None if default_grant.exists() => Ok(Some(crate::owner::load(&default_grant)?)),
        None => Ok(None),
    }
}

/// A runtime and a client holding the local network's client key (`<devnet>/client.key`),
/// sending `grant` with its writes (reads need none).
pub fn devnet_client(
    devnet: &Path,
    grant: Option<pb::UploadGrant>,
) -> Result<(tokio::runtime::Runtime, Arc<Client>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let key_path = devnet.join(crate::devnet::CLIENT_KEY);
    let key = NodeKey::load(&key_path)
        .with_context(|| format!("loading the client key {}", key_path.display()))?;
    let client = {
        let _guard = runtime.enter();
        client(Arc::new(key), ClientConfig::default(), grant)?
    };
    Ok((runtime, client))
}

/// What `put` did.
#[derive(Debug)]
pub struct PutReport {
    pub file_id: Id,
    pub file_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
}

/// Buffers for the fragment copies handed to the transport, back in the pool once the
/// transport drops them (the node has acknowledged): a fresh 8 MiB allocation per fragment
/// would fault in and clear 2048 pages each time, a tenth of the client's CPU in a put.
#[derive(Debug, Clone)]
pub(crate) struct CopyPool(Arc<BufPool>);

/// A fragment copy that goes back to its pool when the last `Bytes` on it is dropped.
struct Pooled {
    /// Always `Some` until dropped.
    buf: Option<AlignedBuf>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().expect("a live copy")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

impl CopyPool {
    /// Keeps up to `bytes_max` of idle copies (the in-flight budget bounds the live ones).
    pub(crate) fn new(bytes_max: usize) -> CopyPool {
        CopyPool(Arc::new(BufPool::new(bytes_max)))
    }

    pub(crate) fn copy(&self, bytes: &[u8]) -> Bytes {
        let mut buf = self.0.take(bytes.len());
        buf.copy_from_slice(bytes);
        Bytes::from_owner(Pooled {
            buf: Some(buf),
            pool: self.0.clone(),
        })
    }
}

/// Sends each fragment to its node as the encoder hands it over.
struct NetSink {
    copies: CopyPool,
    handle: Handle,
    client: Arc<Client>,
    nodes: Arc<Vec<NodeAddr>>,
    upload_id: Id,
    budget: Arc<tokio::sync::Semaphore>,
    failure: Arc<Mutex<Option<String>>>,
    sent_bytes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn sink_error(message: String) -> CodecError {
    CodecError::Io {
        action: "sending fragments".into(),
        source: std::io::Error::other(message),
    }
}

impl FragmentSink for NetSink {
    fn fragment(
        &mut self,
        segment: u64,
        index: usize,
        id: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        if let Some(e) = self.failure.lock().expect("failure lock").clone() {
            return Err(sink_error(e));
        }
        let mib = (bytes.len().div_ceil(1 << 20) as u32).max(1);
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(mib))
            .map_err(|e| sink_error(e.to_string()))?;
        let data = self.copies.copy(bytes);
        let (client, nodes, failure, sent) = (
            self.client.clone(),
            self.nodes.clone(),
            self.failure.clone(),
            self.sent_bytes.clone(),
        );
        let (upload_id, id) = (self.upload_id, *id);
        self.tasks.push(self.handle.spawn(async move {
            let node = &nodes[index];
            let len = data.len() as u64;
            match client.write_fragment(node, upload_id, id, data).await {
                Ok(()) => {
                    sent.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => {
                    let message = format!("segment {segment} fragment {index} to {node}: {e}");
                    failure.lock().expect("failure lock").get_or_insert(message);
                }
            }
            drop(permit);
        }));
        Ok(())
    }
}

/// Encodes `file` and stores fragment j of every segment on `nodes[j]`; saves the manifest
/// and the placement in `manifest_dir`.
pub fn put(
    handle: &Handle,
    client: Arc<Client>,
    file: &Path,
    nodes: &[NodeAddr],
    key: &KeyChoice,
    params: CodecParams,
    manifest_dir: &Path,
) -> Result<PutReport> {
    /// Fragment bytes in flight to the nodes at once.
    const IN_FLIGHT_MIB: usize = 512;
    if nodes.len() != params.shard_count() {
        bail!(
            "{}+{} coding places {} fragments per segment on {} distinct nodes; {} given",
            params.data_shards,
            params.parity_shards,
            params.shard_count(),
            params.shard_count(),
            nodes.len()
        );
    }
    let unreachable: Vec<String> = handle
        .block_on(client.connect_all(nodes))
        .into_iter()
        .enumerate()
        .filter_map(|(j, r)| r.err().map(|e| format!("node {j}: {e}")))
        .collect();
    if !unreachable.is_empty() {
        bail!(
            "put needs all {} nodes; {} unreachable:\n  {}",
            nodes.len(),
            unreachable.len(),
            unreachable.join("\n  ")
        );
    }
    let options = codec_cmd::encode_options(key, params)?;
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let file_bytes = input
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    std::fs::create_dir_all(manifest_dir)
        .with_context(|| format!("creating {}", manifest_dir.display()))?;
    let mut upload_id = [0u8; 32];
    rand::fill(&mut upload_id);
    let mut sink = NetSink {
        copies: CopyPool::new(IN_FLIGHT_MIB << 20),
        handle: handle.clone(),
        client,
        nodes: Arc::new(nodes.to_vec()),
        upload_id,
        budget: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MIB)),
        failure: Arc::new(Mutex::new(None)),
        sent_bytes: Arc::new(AtomicU64::new(0)),
        tasks: Vec::new(),
    };
    let started = Instant::now();
    let mut meter = Meter::new("put", file_bytes);
    let encoded = codec::encode(&mut input, file_bytes, &options, &mut sink, &mut |done| {
        meter.update(done)
    });
    // Wait for every fragment in flight, whatever happened.
    for task in sink.tasks.drain(..) {
        let _ = handle.block_on(task);
    }
    if let Some(e) = sink.failure.lock().expect("failure lock").take() {
        bail!("put failed: {e}");
    }
    let manifest = encoded?;
    let elapsed = meter.finish();
    let manifest_file = manifest_path(manifest_dir, &manifest.file_id);
    std::fs::write(&manifest_file, manifest.encode())
        .with_context(|| format!("writing {}", manifest_file.display()))?;
    let placement: String = nodes.iter().map(|n| format!("{n}\n")).collect();
    let placement_file = placement_path(manifest_dir, &manifest.file_id);
    std::fs::write(&placement_file, placement)
        .with_context(|| format!("writing {}", placement_file.display()))?;
    Ok(PutReport {
        file_id: manifest.file_id,
        file_bytes,
        stored_bytes: sink.sent_bytes.load(Ordering::Relaxed),
        elapsed: elapsed.max(started.elapsed()),
    })
}

/// How fast each node has answered: an average of milliseconds per MiB, failures heavily
/// penalized so a node that is down is tried last.
#[derive(Debug)]
struct NodeScores {
    ms_per_mib: Mutex<Vec<f64>>,
}

impl NodeScores {
    const FAILURE_PENALTY: f64 = 1e6;

    fn record(&self, node: usize, outcome: Result<(u64, Duration), ()>) {
        let mut scores = self.ms_per_mib.lock().expect("scores lock");
        scores[node] = match outcome {
            Ok((bytes, took)) => {
                let sample = took.as_secs_f64() * 1e3 / (bytes.max(1) as f64 / (1 << 20) as f64);
                if scores[node] == 0.0 || scores[node] >= Self::FAILURE_PENALTY {
                    sample
                } else {
                    0.7 * scores[node] + 0.3 * sample
                }
            }
            Err(()) => scores[node] + Self::FAILURE_PENALTY,
        };
    }

    /// Fragment indexes of a segment, best first: fast nodes first, data fragments (no
    /// decoding needed) before parity at equal speed.
    fn order(&self, k: usize, n: usize) -> Vec<usize> {
        let scores = self.ms_per_mib.lock().expect("scores lock");
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let bias = |i: usize| if i < k { 0.0 } else { 0.5 };
            (scores[a] + bias(a)).total_cmp(&(scores[b] + bias(b)))
        });
        order
    }
}

/// One segment's fetch: the fragments that arrived, once all needed did or none can.
#[derive(Debug, Default)]
struct SegmentFetch {
    done: Mutex<Option<HashMap<usize, Vec<u8>>>>,
    ready: Condvar,
}

/// Fetches whole segments ahead of the decoder, k fragments at a time in parallel.
struct NetSource {
    handle: Handle,
    client: Arc<Client>,
    placement: Arc<Placement>,
    manifest: Arc<Manifest>,
    segments: Mutex<HashMap<u64, Arc<SegmentFetch>>>,
    scores: Arc<NodeScores>,
    failures: Arc<Mutex<Vec<String>>>,
    /// No segment at or past this one is fetched ahead (a range read's end).
    fetch_end: u64,
}

impl NetSource {
    /// Segments fetched ahead of the one the decoder asks for.
    const AHEAD: u64 = 2;

    fn launch(&self, segment: u64) -> Arc<SegmentFetch> {
        let mut segments = self.segments.lock().expect("segments lock");
        let end = (segment + 1 + Self::AHEAD).min(self.fetch_end.max(segment + 1));
        for s in segment..end {
            if segments.contains_key(&s) {
                continue;
            }
            let fetch = Arc::new(SegmentFetch::default());
            segments.insert(s, fetch.clone());
            self.handle.spawn(fetch_segment(
                self.client.clone(),
                self.placement.clone(),
                self.manifest.clone(),
                s,
                self.scores.clone(),
                self.failures.clone(),
                fetch,
            ));
        }
        segments[&segment].clone()
    }
}

async fn fetch_segment(
    client: Arc<Client>,
    placement: Arc<Placement>,
    manifest: Arc<Manifest>,
    segment: u64,
    scores: Arc<NodeScores>,
    failures: Arc<Mutex<Vec<String>>>,
    fetch: Arc<SegmentFetch>,
) {
    let params = manifest.params;
    let k = usize::from(params.data_shards);
    let ids = manifest.segments[segment as usize].fragments.clone();
    let order = scores.order(k, ids.len());
    let file_id = manifest.file_id;
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    let mut got = HashMap::new();
    let start = |running: &mut tokio::task::JoinSet<_>, next: &mut usize| {
        let index = order[*next];
        *next += 1;
        let (client, node, id) = (
            client.clone(),
            placement[segment as usize][index].clone(),
            ids[index],
        );
        running.spawn(async move {
            let t0 = Instant::now();
            let result = match &node {
                Some(node) => client
                    .read_fragment(node, file_id, id)
                    .await
                    .map_err(|e| format!("from {node}: {e}")),
                None => Err("no miner holds it now (a restoral is open)".to_string()),
            };
            (index, result, t0.elapsed())
        });
    };
    while next < k.min(order.len()) {
        start(&mut running, &mut next);
    }
    while let Some(joined) = running.join_next().await {
        let Ok((index, result, took)) = joined else {
            continue;
        };
        match result {
            Ok(bytes) => {
                scores.record(index, Ok((bytes.len() as u64, took)));
                got.insert(index, bytes);
                if got.len() == k {
                    break;
                }
            }
            Err(e) => {
                scores.record(index, Err(()));
                failures
                    .lock()
                    .expect("failures lock")
                    .push(format!("segment {segment} fragment {index} {e}"));
                if next < order.len() {
                    start(&mut running, &mut next);
                }
            }
        }
    }
    running.abort_all();
    *fetch.done.lock().expect("segment lock") = Some(got);
    fetch.ready.notify_all();
}

impl FragmentSource for NetSource {
    fn fetch(
        &self,
        segment: u64,
        index: usize,
        _: &FragmentId,
        buf: &mut [u8],
    ) -> Result<bool, CodecError> {
        let fetch = self.launch(segment);
        let mut done = fetch.done.lock().expect("segment lock");
        while done.is_none() {
            done = fetch.ready.wait(done).expect("segment lock");
        }
        let fragments = done.as_mut().expect("checked above");
        let found = match fragments.remove(&index) {
            Some(bytes) if bytes.len() == buf.len() => {
                buf.copy_from_slice(&bytes);
                true
            }
            _ => false,
        };
        if fragments.is_empty() {
            drop(done);
            self.segments
                .lock()
                .expect("segments lock")
                .remove(&segment);
        }
        Ok(found)
    }
}

/// What `get` did.
#[derive(Debug)]
pub struct GetReport {
    pub file_bytes: u64,
    pub elapsed: Duration,
    /// Fragment fetches that failed and were replaced by another fragment.
    pub fallbacks: Vec<String>,
}

/// Where each fragment of each segment is: `placement[segment][column]`, `None` when no node
/// holds it now.
pub type Placement = Vec<Vec<Option<NodeAddr>>>;

/// Fetches the file `file_id` (its manifest and placement from `manifest_dir`: a network
/// without a chain) into `out`.
pub fn get(
    handle: &Handle,
    client: Arc<Client>,
    file_id: &str,
    manifest_dir: &Path,
    key: &KeyChoice,
    out: &Path,
) -> Result<GetReport> {
    let Some(id) = cess_types::parse_hex32(file_id) else {
        bail!("a file id is 64 hex digits, got {file_id:?}");
    };
    let manifest_file = manifest_path(manifest_dir, &id);
    if !manifest_file.exists() {
        bail!(
            "no manifest for file {file_id} in {}",
            manifest_dir.display()
        );
    }
    let manifest = codec::read_manifest(&manifest_file)?;
    let nodes = read_nodes(&placement_path(manifest_dir, &id))?;
    if nodes.len() != manifest.params.shard_count() {
        bail!(
            "placement lists {} nodes for {} fragments per segment",
            nodes.len(),
            manifest.params.shard_count()
        );
    }
    let columns: Vec<Option<NodeAddr>> = nodes.into_iter().map(Some).collect();
    let placement = vec![columns; manifest.segments.len()];
    get_placed(handle, client, manifest, placement, key, out)
}

/// Fetches the file of `manifest` from the nodes of `placement` into `out`.
/// How long a get waits for its first dials before it ranks the nodes.
const PROBE_WAIT: Duration = Duration::from_millis(500);

pub fn get_placed(
    handle: &Handle,
    client: Arc<Client>,
    manifest: Manifest,
    placement: Placement,
    key: &KeyChoice,
    out: &Path,
) -> Result<GetReport> {
    let file_key = codec_cmd::decode_key(key, &manifest)?;
    let all = manifest.segments.len() as u64;
    let source = net_source(handle, client, &manifest, placement, all);
    let started = Instant::now();
    let decoded = codec_cmd::decode_to_file(&manifest, file_key.as_ref(), &source, out);
    let fallbacks = std::mem::take(&mut *source.failures.lock().expect("failures lock"));
    if let Err(e) = decoded {
        bail!(failed_get(&e, &fallbacks));
    }
    Ok(GetReport {
        file_bytes: manifest.file_bytes,
        elapsed: started.elapsed(),
        fallbacks,
    })
}

fn failed_get(e: &dyn std::fmt::Display, fallbacks: &[String]) -> String {
    let mut message = format!("get failed: {e:#}");
    for f in fallbacks.iter().take(12) {
        message.push_str(&format!("\n  {f}"));
    }
    message
}

/// Decodes the segments `segments` of the file of `manifest` from the nodes of `placement`
/// into `out` (what a range read needs, and nothing else is fetched) on `threads` workers (0:
/// one per core): the fetches that failed and were replaced by another fragment.
pub fn read_placed(
    handle: &Handle,
    client: Arc<Client>,
    manifest: &Manifest,
    placement: Placement,
    file_key: Option<&cess_codec::FileKey>,
    (segments, threads): (std::ops::Range<u64>, usize),
    out: &mut dyn std::io::Write,
) -> Result<Vec<String>> {
    let source = net_source(handle, client, manifest, placement, segments.end);
    let decoded = codec::decode_segments(
        manifest,
        file_key,
        &source,
        out,
        segments,
        threads,
        &mut |_| {},
    );
    let fallbacks = std::mem::take(&mut *source.failures.lock().expect("failures lock"));
    if let Err(e) = decoded {
        bail!(failed_get(&e, &fallbacks));
    }
    Ok(fallbacks)
}

/// A fragment source on the nodes of `placement`, those that answer first ranked first.
fn net_source(
    handle: &Handle,
    client: Arc<Client>,
    manifest: &Manifest,
    placement: Placement,
    fetch_end: u64,
) -> NetSource {
    assert_eq!(
        placement.len(),
        manifest.segments.len(),
        "a placement per segment"
    );
    // Dial every node up front and try the columns of those not connected within
    // `PROBE_WAIT` last: a node that is down costs a get nothing unless it is needed (its
    // dial runs on, and a request that needs it waits for that same dial).
    let mut distinct: Vec<NodeAddr> = placement.iter().flatten().flatten().cloned().collect();
    distinct.sort_by_key(|a| a.to_string());
    distinct.dedup();
    let probes: Vec<tokio::task::JoinHandle<bool>> = distinct
        .iter()
        .map(|addr| {
            let (client, addr) = (client.clone(), addr.clone());
            handle.spawn(async move { client.connection(&addr).await.is_ok() })
        })
        .collect();
    handle.block_on(async {
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while !probes.iter().all(|p| p.is_finished()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let reachable: HashMap<String, bool> = distinct
        .iter()
        .map(ToString::to_string)
        .zip(
            probes
                .into_iter()
                .map(|p| p.is_finished() && handle.block_on(p).unwrap_or(false)),
        )
        .collect();
    let initial_scores: Vec<f64> = placement
        .first()
        .map(|columns| {
            columns
                .iter()
                .map(|node| match node {
                    Some(n) if reachable.get(&n.to_string()) == Some(&true) => 0.0,
                    _ => NodeScores::FAILURE_PENALTY,
                })
                .collect()
        })
        .unwrap_or_default();
    NetSource {
        handle: handle.clone(),
        client,
        placement: Arc::new(placement),
        manifest: Arc::new(manifest.clone()),
        segments: Mutex::new(HashMap::new()),
        scores: Arc::new(NodeScores {
            ms_per_mib: Mutex::new(initial_scores),
        }),
        failures: Arc::new(Mutex::new(Vec::new())),
        fetch_end,
    }
}
