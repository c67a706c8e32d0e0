//! Suite `transport`, case `honest-read-under-stalled-reads` (issue 22): an honest client's
//! read latency while a hostile peer keeps reads open without taking their bytes, against the
//! same reads with no hostile peer, on one node with the default limits, in one run.

use crate::report::{Case, Options};
use crate::transport::{FRAGMENT_BYTES, loopback};
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::{Client, ClientConfig, Endpoint, Limits, NodeKey, Server, ServerConfig};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keeps fragments in memory: the case measures the protocol's bounds, not a disk.
#[derive(Default)]
struct MemoryStore {
    fragments: Mutex<HashMap<[u8; 32], Vec<u8>>>,
}

impl FragmentStore for MemoryStore {
    type WriteBuf = Vec<u8>;
    type ReadBuf = Vec<u8>;
    fn alloc(&self, len_bytes: usize) -> Vec<u8> {
        vec![0; len_bytes]
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

fn client() -> Result<Client, String> {
    let endpoint = Endpoint::client(Arc::new(NodeKey::generate()), loopback(), Limits::default())
        .map_err(|e| e.to_string())?;
    Ok(Client::new(endpoint, ClientConfig::default()))
}

/// p99 (ms) of `reads` sequential reads of fragment `id` by `honest`.
async fn read_p99_ms(
    honest: &Client,
    addr: &cess_transport::NodeAddr,
    id: [u8; 32],
    expected: &[u8],
    reads: usize,
) -> Result<f64, String> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for _ in 0..reads {
        let t = Instant::now();
        let got = honest
            .read_fragment(addr, FILE, id)
            .await
            .map_err(|e| format!("honest read: {e}"))?;
        if got != expected {
            return Err("the honest read returned other bytes".into());
        }
        h.record(t.elapsed().as_micros() as u64)
            .map_err(|e| e.to_string())?;
    }
    Ok(h.value_at_quantile(0.99) as f64 / 1000.0)
}

const FILE: [u8; 32] = [7; 32];

pub fn hostile_read_case(options: &Options) -> Result<Case, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (reads, runs) = if options.quick { (50, 1) } else { (300, 3) };
    runtime.block_on(async move {
        let store = Arc::new(MemoryStore::default());
        let (big_id, big) = random_fragment(FRAGMENT_BYTES, 1);
        let (small_id, small) = random_fragment(256 << 10, 2);
        {
            let mut fragments = store.fragments.lock().map_err(|e| e.to_string())?;
            fragments.insert(big_id, big);
            fragments.insert(small_id, small.clone());
        }
        let key = Arc::new(NodeKey::generate());
        let endpoint = Endpoint::server(key.clone(), loopback(), Limits::default())
            .map_err(|e| e.to_string())?;
        let addr = endpoint.node_addr().map_err(|e| e.to_string())?;
        let server = Server::new(store, key, ServerConfig::default());
        tokio::spawn(server.clone().serve(endpoint.clone()));
        let honest = client()?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            theirs.push(read_p99_ms(&honest, &addr, small_id, &small, reads).await?);
            let hostile = client()?;
            let connection = hostile.connection(&addr).await.map_err(|e| e.to_string())?;
            let mut stalled = Vec::new();
            for _ in 0..64 {
                stalled.push(
                    cess_transport::client::open_read(&hostile, &connection, FILE, big_id, 0)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            // The hostile peer's windows (16 MiB a stream, 128 MiB a connection) fill at
            // loopback speed first: that is a reader downloading, not the stall measured here.
            tokio::time::sleep(Duration::from_secs(3)).await;
            ours.push(read_p99_ms(&honest, &addr, small_id, &small, reads).await?);
            drop(stalled);
            connection.inner.close(0u32.into(), b"done");
        }
        let mut case = Case::from_times(
            "honest-read-under-stalled-reads".into(),
            ours,
            theirs,
            "the same reads with no hostile peer".into(),
        );
        case.goal = Some(0.5);
        case.note = format!(
            "p99 of {reads} sequential reads of a 256 KiB fragment by an honest client while a \
             hostile peer holds 64 unread reads of an 8 MiB fragment on one connection \
             (defaults: 8 reads in flight per peer, 256 MiB of read memory, 20 s stream \
             timeout), measured once its windows are full; in memory, so the bound is the \
             protocol's, not a disk's"
        );
        Ok(case)
    })
}
