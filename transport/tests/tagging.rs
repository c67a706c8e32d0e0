//! The tagging protocol over real QUIC on loopback, against a tagger that "tags" by hashing.

use cess_transport::FragmentId;
use cess_transport::tagging::{
    TAG_PROTOCOL, TagRefusal, TagServer, TagServerConfig, TagService, request_tags,
};
use cess_transport::{Code, Endpoint, Limits, NodeKey, PeerId, ProtocolError};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Admits the listed peers; "tags" are the SHA-256 of the bytes, so a test can check them.
#[derive(Default)]
struct FakeTagger {
    admitted: Mutex<HashSet<PeerId>>,
    tagged: Mutex<Vec<FragmentId>>,
}

impl TagService for FakeTagger {
    fn admit(&self, peer: &PeerId, _: &FragmentId, _: u64) -> Result<(), TagRefusal> {
        if self.admitted.lock().unwrap().contains(peer) {
            Ok(())
        } else {
            Err(TagRefusal::Never("not a miner of this fragment".into()))
        }
    }

    async fn tag(&self, id: FragmentId, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.tagged.lock().unwrap().push(id);
        Ok(Sha256::digest(&data).to_vec())
    }
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_gets_tags_only_for_what_it_is_admitted_and_only_for_matching_bytes() {
    let tagger_key = Arc::new(NodeKey::generate());
    let server_endpoint = Endpoint::server_for(
        TAG_PROTOCOL,
        tagger_key.clone(),
        loopback(),
        Limits::default(),
    )
    .unwrap();
    let service = Arc::new(FakeTagger::default());
    let server = TagServer::new(service.clone(), tagger_key, TagServerConfig::default());
    tokio::spawn(server.clone().serve(server_endpoint.clone()));
    let addr = server_endpoint.node_addr().unwrap();

    let miner_key = Arc::new(NodeKey::generate());
    let miner = Endpoint::client_for(
        TAG_PROTOCOL,
        miner_key.clone(),
        loopback(),
        Limits::default(),
    )
    .unwrap();
    let data = vec![7u8; 100_000];
    let id = FragmentId::of(&data);
    let timeout = Duration::from_secs(10);

    // Not admitted: refused with the service's reason, nothing tagged.
    let refused = request_tags(&miner, &addr, id, &data, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ProtocolError::Refused { code: Code::Unauthorized, detail } if detail.contains("not a miner")),
        "{refused:?}"
    );
    assert!(service.tagged.lock().unwrap().is_empty());

    service.admitted.lock().unwrap().insert(miner_key.peer_id());
    let tags = request_tags(&miner, &addr, id, &data, timeout)
        .await
        .unwrap();
    assert_eq!(tags, id.0.to_vec());

    // Bytes that do not hash to the id are not tagged.
    let wrong = vec![8u8; 100_000];
    let refused = request_tags(&miner, &addr, id, &wrong, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ProtocolError::Refused {
                code: Code::Mismatch,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(service.tagged.lock().unwrap().len(), 1);
    assert_eq!(
        server
            .metrics()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
