//! A miner's tag fetch against real taggers over QUIC on loopback: a tagger that returns one
//! wrong tag is refused (named, counted) and the next tagger's tags are kept; with only the
//! wrong one, no tags are kept (so the column is never reported: see `core.rs`).

use cess_node::chain::{LinkStatus, fetch_checked_tags};
use cess_proofs::{CpuBackend, SecretKey, tag_fragment};
use cess_transport::tagging::{TAG_PROTOCOL, TagRefusal, TagServer, TagServerConfig, TagService};
use cess_transport::{Endpoint, Limits, NodeAddr, NodeKey, PeerId};
use std::sync::{Arc, Mutex};

/// Tags with the real key; when `corrupt`, swaps the first two blocks' tags (each a valid
/// point by the right key, for the wrong block).
struct Tagger {
    key: SecretKey,
    corrupt: bool,
}

impl TagService for Tagger {
    fn admit(&self, _: &PeerId, _: &cess_engine::FragmentId, _: u64) -> Result<(), TagRefusal> {
        Ok(())
    }

    async fn tag(&self, id: cess_engine::FragmentId, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut blob = tag_fragment(&self.key, &CpuBackend, &id, &data)
            .map_err(|e| e.to_string())?
            .encode();
        if self.corrupt {
            let blocks = cess_proofs::block_count(data.len() as u64, self.key.sectors_per_block());
            let first = blob.len() - blocks as usize * 48;
            let (a, b) = (
                blob[first..first + 48].to_vec(),
                blob[first + 48..first + 96].to_vec(),
            );
            blob[first..first + 48].copy_from_slice(&b);
            blob[first + 48..first + 96].copy_from_slice(&a);
        }
        Ok(blob)
    }
}

fn tagger_key() -> SecretKey {
    SecretKey::from_seed(&[5; 32], 64).unwrap()
}

fn start(corrupt: bool) -> (NodeAddr, Endpoint) {
    serve(Tagger {
        key: tagger_key(),
        corrupt,
    })
}

/// Tags with the real key, but its first request dies in the tagger (its stream ends with no
/// answer, as a stream a tagger under load cuts).
struct CutsFirst {
    key: SecretKey,
    cut: std::sync::atomic::AtomicBool,
}

impl TagService for CutsFirst {
    fn admit(&self, _: &PeerId, _: &cess_engine::FragmentId, _: u64) -> Result<(), TagRefusal> {
        Ok(())
    }

    async fn tag(&self, id: cess_engine::FragmentId, data: Vec<u8>) -> Result<Vec<u8>, String> {
        if !self.cut.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("this test's tagger drops its first request");
        }
        Ok(tag_fragment(&self.key, &CpuBackend, &id, &data)
            .map_err(|e| e.to_string())?
            .encode())
    }
}

fn serve(service: impl TagService) -> (NodeAddr, Endpoint) {
    let node_key = Arc::new(NodeKey::generate());
    let endpoint = Endpoint::server_for(
        TAG_PROTOCOL,
        node_key.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
    )
    .unwrap();
    let server = TagServer::new(Arc::new(service), node_key, TagServerConfig::default());
    tokio::spawn(server.serve(endpoint.clone()));
    (endpoint.node_addr().unwrap(), endpoint)
}

/// A miner's endpoint for asking taggers.
fn miner() -> Endpoint {
    Endpoint::client_for(
        TAG_PROTOCOL,
        Arc::new(NodeKey::generate()),
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagger_returning_one_wrong_tag_is_refused_and_the_next_is_asked() {
    let (bad, _bad_endpoint) = start(true);
    let (good, _good_endpoint) = start(false);
    let miner = miner();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let id = cess_engine::FragmentId::of(&data);
    let public = tagger_key().public().clone();
    let data = Arc::new(data);

    let status = Mutex::new(LinkStatus::default());
    let kept = fetch_checked_tags(
        &miner,
        &[bad.clone(), good.clone()],
        &public,
        id,
        data.clone(),
        &status,
    )
    .await
    .expect("the second tagger's tags are kept");
    cess_proofs::check_tags(&public, &id, &data, &kept, [1; 32], &CpuBackend).unwrap();
    let s = status.lock().unwrap().clone();
    assert_eq!(s.tags_refused, 1);
    let error = s.last_error.unwrap();
    assert!(
        error.contains(&bad.to_string()),
        "the bad tagger is named: {error}"
    );

    // Only the bad tagger: nothing is kept.
    let status = Mutex::new(LinkStatus::default());
    let kept = fetch_checked_tags(&miner, &[bad], &public, id, data, &status).await;
    assert!(kept.is_none());
    assert_eq!(status.lock().unwrap().tags_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_by_the_tagger_is_sent_again_at_once() {
    let (tagger, _endpoint) = serve(CutsFirst {
        key: tagger_key(),
        cut: Default::default(),
    });
    let miner = miner();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 3) as u8).collect();
    let id = cess_engine::FragmentId::of(&data);
    let public = tagger_key().public().clone();
    let status = Mutex::new(LinkStatus::default());
    let kept = fetch_checked_tags(&miner, &[tagger], &public, id, Arc::new(data), &status).await;
    assert!(kept.is_some(), "the second request is answered");
    let status = status.lock().unwrap();
    assert_eq!(status.last_error, None, "a cut retried is no error");
}
