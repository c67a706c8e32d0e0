//! Suite `transport`, cases `honest-write-under-ATTACK` and `honest-read-under-ATTACK` (issue
//! 22): an honest client's write and read latency (p99) while a hostile peer runs one attack
//! of `cess_transport::attacks` (silent handshakes, 64 stalled reads, a replay-cache flood from
//! fresh keys, empty partial writes), against the same operations with no attack, on one node
//! with the default limits, in one run. Goal: p99 within 2×.
//!
//! The attacker runs on its own threads in this process, as another machine's would, but on
//! the same two cores: an attack that costs CPU (the replay flood) takes it from the node and
//! the honest client too, which a separate attacking machine would not.

use crate::report::{Case, Options};
use crate::transport::{FRAGMENT_BYTES, loopback};
use cess_transport::attacks::{self, Kind};
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::{Client, ClientConfig, Endpoint, Limits, NodeKey, Server, ServerConfig};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keeps fragments in memory: the case measures the protocol's bounds, not a disk.
/// Admits only the peers with standing, as a node on a chain admits accounts that pay for
/// space, mine or validate.
#[derive(Default)]
struct MemoryStore {
    fragments: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    standing: Mutex<std::collections::HashSet<cess_transport::PeerId>>,
}

impl FragmentStore for MemoryStore {
    type WriteBuf = Vec<u8>;
    type ReadBuf = Vec<u8>;
    fn alloc(&self, len_bytes: usize) -> Vec<u8> {
        vec![0; len_bytes]
    }
    fn admit_peer(&self, peer: &cess_transport::PeerId) -> Result<(), String> {
        match self.standing.lock() {
            Ok(standing) if standing.contains(peer) => Ok(()),
            _ => Err("no standing".into()),
        }
    }
    async fn len_of(&self, id: [u8; 32]) -> Result<Option<u64>, StoreFault> {
        let fragments = self.fragments.lock().map_err(|_| StoreFault::NotFound)?;
        Ok(fragments.get(&id).map(|f| f.len() as u64))
    }
    async fn put(&self, id: [u8; 32], data: Vec<u8>) -> Result<(), StoreFault> {
        if let Ok(mut fragments) = self.fragments.lock() {
            fragments.insert(id, data);
        }
        Ok(())
    }
    async fn read(&self, id: [u8; 32], offset: u64, len_bytes: u64) -> Result<Vec<u8>, StoreFault> {
        let fragments = self.fragments.lock().map_err(|_| StoreFault::NotFound)?;
        let f = fragments.get(&id).ok_or(StoreFault::NotFound)?;
        Ok(f[offset as usize..(offset + len_bytes) as usize].to_vec())
    }
}

fn random_fragment(len: usize, seed: u64) -> ([u8; 32], Vec<u8>) {
    use rand::SeedableRng;
    let mut data = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), &mut data);
    (sha2::Sha256::digest(&data).into(), data)
}

fn client(key: Arc<NodeKey>) -> Result<Client, String> {
    let endpoint =
        Endpoint::client(key, loopback(), Limits::default()).map_err(|e| e.to_string())?;
    Ok(Client::new(endpoint, ClientConfig::default()))
}

const FILE: [u8; 32] = [7; 32];
/// The honest client's fragment: 256 KiB.
const HONEST_BYTES: usize = 256 << 10;

/// p99 (ms) of the writes and of the reads of `ops` fresh fragments, each written then read
/// back and compared.
async fn honest_p99_ms(
    honest: &Client,
    addr: &cess_transport::NodeAddr,
    ops: usize,
    seed: u64,
) -> Result<(f64, f64), String> {
    let mut writes = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut reads = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for i in 0..ops {
        let (id, data) = random_fragment(HONEST_BYTES, seed * 1_000_000 + i as u64);
        let t = Instant::now();
        honest
            .write_fragment(addr, FILE, id, bytes::Bytes::from(data.clone()))
            .await
            .map_err(|e| format!("honest write: {e}"))?;
        writes
            .record(t.elapsed().as_micros() as u64)
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let got = honest
            .read_fragment(addr, FILE, id)
            .await
            .map_err(|e| format!("honest read: {e}"))?;
        reads
            .record(t.elapsed().as_micros() as u64)
            .map_err(|e| e.to_string())?;
        if got != data {
            return Err("the honest read returned other bytes".into());
        }
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    Ok((p99(&writes), p99(&reads)))
}

pub fn hostile_cases(options: &Options) -> Result<Vec<Case>, String> {
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| {
            options.wants(&format!("honest-write-under-{}", k.name()))
                || options.wants(&format!("honest-read-under-{}", k.name()))
        })
        .collect();
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (ops, runs) = if options.quick { (40, 1) } else { (200, 3) };
    let cases = runtime.block_on(async {
        let store = Arc::new(MemoryStore::default());
        let (large_id, large) = random_fragment(FRAGMENT_BYTES, 1);
        store
            .fragments
            .lock()
            .map_err(|e| e.to_string())?
            .insert(large_id, large);
        let key = Arc::new(NodeKey::generate());
        let endpoint = Endpoint::server(key.clone(), loopback(), Limits::default())
            .map_err(|e| e.to_string())?;
        let addr = endpoint.node_addr().map_err(|e| e.to_string())?;
        let server = Server::new(store.clone(), key, ServerConfig::default());
        tokio::spawn(server.clone().serve(endpoint.clone()));
        let (honest_key, attacker_key) =
            (Arc::new(NodeKey::generate()), Arc::new(NodeKey::generate()));
        store
            .standing
            .lock()
            .map_err(|e| e.to_string())?
            .extend([honest_key.peer_id(), attacker_key.peer_id()]);
        let honest = client(honest_key)?;
        honest.connection(&addr).await.map_err(|e| e.to_string())?;
        let mut cases = Vec::new();
        for (k, kind) in kinds.into_iter().enumerate() {
            let (mut ours, mut theirs) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
            let mut sent = 0;
            for run in 0..runs {
                let seed = (k * 10 + run) as u64 * 2;
                let (w, r) = honest_p99_ms(&honest, &addr, ops, seed).await?;
                theirs.0.push(w);
                theirs.1.push(r);
                let (target, key) = (addr.clone(), attacker_key.clone());
                let attack = attacker
                    .spawn(async move { attacks::start(kind, &target, large_id, key).await })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                // Stalled reads fill the hostile peer's windows at loopback speed first: that
                // is a reader downloading, not the attack measured.
                tokio::time::sleep(Duration::from_secs(3)).await;
                let (w, r) = honest_p99_ms(&honest, &addr, ops, seed + 1).await?;
                ours.0.push(w);
                ours.1.push(r);
                sent += attack.sent();
                drop(attack);
                // Let what the attack left time out before the next baseline.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            for (op, ours, theirs) in [("write", ours.0, theirs.0), ("read", ours.1, theirs.1)] {
                let mut case = Case::from_times(
                    format!("honest-{op}-under-{}", kind.name()),
                    ours,
                    theirs,
                    format!("the same {op}s with no attack"),
                );
                case.goal = Some(0.5);
                case.note = format!(
                    "p99 of {ops} {op}s of fresh 256 KiB fragments by an honest client (each \
                     written then read back) while the attack runs ({sent} requests or \
                     handshakes sent over {runs} run(s)), against the same with none; one \
                     node with the default limits admitting only peers with standing (the \
                     honest client and the attacker's own key, not fresh keys), in memory, so \
                     the bound is the protocol's; the attacker shares the node's cores"
                );
                cases.push(case);
            }
        }
        Ok::<_, String>(cases)
    });
    attacker.shutdown_background();
    cases
}
