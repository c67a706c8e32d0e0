//! The tagging protocol (ALPN `cess-tag/1`): a miner sends a tagger a fragment it was
//! assigned and gets the fragment's tags back, on the same identities, frames and signed
//! messages as the fragment protocol.
//!
//! One bidirectional stream per fragment: the miner sends a signed [`pb::TagRequest`] and the
//! fragment's bytes, raw; the tagger answers one signed [`pb::TagResponse`]. The tagger's side
//! is [`TagServer`] over a [`TagService`] (who may ask, and the tagging itself), so this crate
//! needs no proofs; the miner's side is [`request_tags`]. The tagger never trusts the bytes:
//! it tags only what hashes to the signed fragment id, and only for a peer its service admits
//! (a miner the chain assigned that fragment to); the miner never trusts the tags: it checks
//! them before it keeps them.

use crate::FragmentId;
use crate::identity::{NodeAddr, NodeKey};
use crate::message::{self, MessageError, PeerReplay, Signed, Verifier, pb};
use crate::protocol::{Abort, Code, ProtocolError, now_ms, read_exact, read_frame, read_message};
use crate::quic::{Connection, Endpoint, ErrorCode};
use libp2p_identity::PeerId;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The ALPN of the tagging protocol.
pub const TAG_PROTOCOL: &str = "cess-tag/1";

/// Why a tagger does not tag a fragment for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRefusal {
    /// Not now (the tagger has not caught up with the order): answered `Busy`, ask again.
    NotYet(String),
    /// Never (not this peer's fragment, another tagger's order): answered `Unauthorized`.
    Never(String),
}

/// What a tagger does, behind the protocol.
pub trait TagService: Send + Sync + 'static {
    /// Whether `peer` may have fragment `id` of `fragment_bytes` tagged here, asked before
    /// any of its bytes is read.
    fn admit(&self, peer: &PeerId, id: &FragmentId, fragment_bytes: u64) -> Result<(), TagRefusal>;
    /// The tag blob of a fragment whose bytes hash to `id`.
    fn tag(
        &self,
        id: FragmentId,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

/// Requests one peer may have in flight at a tagger.
pub const TAGS_IN_FLIGHT_PER_PEER: usize = 4;

/// A peer's place among the requests in flight, given back on drop.
struct PeerTurn {
    counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl PeerTurn {
    fn take(
        counts: &Arc<Mutex<HashMap<PeerId, usize>>>,
        peer: PeerId,
        max: usize,
    ) -> Option<PeerTurn> {
        let mut map = counts.lock().expect("per-peer lock");
        let count = map.entry(peer).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerTurn {
            counts: counts.clone(),
            peer,
        })
    }
}

impl Drop for PeerTurn {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("per-peer lock");
        if let Some(count) = map.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// A tagger's bounds.
#[derive(Debug, Clone)]
pub struct TagServerConfig {
    /// Accepted clock difference for request timestamps.
    pub window_ms: i64,
    /// Message ids remembered against replay, per peer: a peer over it is refused until its
    /// ids age out of the window; other peers are not.
    pub replay_capacity: usize,
    /// Message ids remembered for all peers together; past it the least recently heard peers
    /// are forgotten (never refused).
    pub replay_total_max: usize,
    /// A request whose frame or bytes stall this long is cut.
    pub stream_timeout_ms: u64,
    /// Fragment bytes held at once by requests being received or tagged; a request waits
    /// for room (up to the stream timeout), then is answered `Busy`.
    pub buffered_bytes_max: u64,
}

impl Default for TagServerConfig {
    fn default() -> TagServerConfig {
        TagServerConfig {
            window_ms: 60_000,
            replay_capacity: 1 << 16,
            replay_total_max: 1 << 20,
            stream_timeout_ms: 20_000,
            buffered_bytes_max: 256 << 20,
        }
    }
}

/// What a tagger counts.
#[derive(Debug, Default)]
pub struct TagMetrics {
    pub tagged: AtomicU64,
    pub tagged_bytes: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Requests waiting for room or being tagged now.
    pub queued: AtomicU64,
}

/// The tagger's side of the protocol.
pub struct TagServer<T: TagService> {
    service: Arc<T>,
    key: Arc<NodeKey>,
    config: TagServerConfig,
    replay: Mutex<PeerReplay>,
    /// One permit per MiB of fragment bytes held.
    room_mib: Arc<Semaphore>,
    room_total_mib: u64,
    /// Requests in flight per peer.
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    metrics: Arc<TagMetrics>,
}

impl<T: TagService> std::fmt::Debug for TagServer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagServer")
            .field("peer_id", &self.key.peer_id())
            .finish_non_exhaustive()
    }
}

impl<T: TagService> TagServer<T> {
    pub fn new(service: Arc<T>, key: Arc<NodeKey>, config: TagServerConfig) -> Arc<TagServer<T>> {
        let room_mib = (config.buffered_bytes_max >> 20).max(1) as usize;
        Arc::new(TagServer {
            service,
            key,
            replay: Mutex::new(PeerReplay::new(
                config.window_ms,
                config.replay_capacity,
                config.replay_total_max,
            )),
            config,
            room_mib: Arc::new(Semaphore::new(room_mib)),
            room_total_mib: room_mib as u64,
            per_peer: Arc::default(),
            metrics: Arc::new(TagMetrics::default()),
        })
    }

    pub fn metrics(&self) -> &Arc<TagMetrics> {
        &self.metrics
    }

    /// Accepts connections until the endpoint closes.
    pub async fn serve(self: Arc<Self>, endpoint: Endpoint) {
        while let Some(accepted) = endpoint.accept().await {
            match accepted {
                Ok(connection) => {
                    tokio::spawn(self.clone().serve_connection(connection));
                }
                Err(e) => tracing::debug!("handshake refused: {e}"),
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, connection: Connection) {
        loop {
            let (send, recv) = match connection.inner.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::debug!(peer = %connection.peer_id, "connection ended: {e}");
                    return;
                }
            };
            let server = self.clone();
            let connection = connection.clone();
            tokio::spawn(async move {
                match server.serve_stream(&connection, send, recv).await {
                    Ok(()) => {}
                    Err(Abort::Violation(reason)) => {
                        tracing::warn!(peer = %connection.peer_id, "disconnecting: {reason}");
                        connection.close(ErrorCode::Protocol, &reason);
                    }
                    Err(Abort::Stream(e)) => {
                        tracing::debug!(peer = %connection.peer_id, "request cut: {e}");
                    }
                }
            });
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.stream_timeout_ms)
    }

    async fn serve_stream(
        &self,
        connection: &Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), Abort> {
        let body = tokio::time::timeout(self.timeout(), read_frame(&mut recv))
            .await
            .map_err(|_| Abort::Stream(ProtocolError::Timeout(self.config.stream_timeout_ms)))??;
        match body.first() {
            Some(&pb::TagRequest::KIND) => {}
            Some(&kind) => {
                return Err(Abort::Violation(
                    MessageError::UnknownKind(kind).to_string(),
                ));
            }
            None => return Err(Abort::Violation("empty frame".into())),
        }
        let request: pb::TagRequest = message::decode_body(&body).map_err(ProtocolError::from)?;
        let verified =
            crate::server::checked(&self.replay, self.config.window_ms, connection, &request);
        let (code, detail, tags) = match verified {
            Ok(author) if author == connection.peer_id => {
                self.metrics.queued.fetch_add(1, Ordering::Relaxed);
                let answer = self.tag(connection.peer_id, &request, &mut recv).await;
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                answer?
            }
            Ok(author) => {
                return Err(Abort::Violation(format!(
                    "request signed by {author}, sent by {}",
                    connection.peer_id
                )));
            }
            Err(
                e @ (MessageError::Expired { .. }
                | MessageError::Replayed
                | MessageError::ReplayCacheFull),
            ) => (Code::BadRequest, e.to_string(), Vec::new()),
            Err(e) => return Err(Abort::Violation(e.to_string())),
        };
        match code {
            Code::Ok => {}
            Code::StoreFailed => {
                self.metrics.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        if code != Code::Ok {
            let _ = recv.stop(ErrorCode::NotNeeded.into());
        }
        let mut response = pb::TagResponse {
            message_data: None,
            code: code as u32,
            detail: message::clip_detail(detail),
            tags,
        };
        message::sign(&mut response, &self.key, now_ms(), rand::random());
        send.write_all(&message::encode_frame(&response))
            .await
            .map_err(|e| Abort::Stream(e.into()))?;
        let _ = send.finish();
        Ok(())
    }

    /// Admits, receives and tags one fragment: (code, detail, tags).
    async fn tag(
        &self,
        peer: PeerId,
        request: &pb::TagRequest,
        recv: &mut quinn::RecvStream,
    ) -> Result<(Code, String, Vec<u8>), Abort> {
        let id: FragmentId = request
            .fragment_id
            .as_slice()
            .try_into()
            .expect("checked at decode");
        let fragment_bytes = request.fragment_bytes;
        match self.service.admit(&peer, &id, fragment_bytes) {
            Ok(()) => {}
            Err(TagRefusal::NotYet(why)) => return Ok((Code::Busy, why, Vec::new())),
            Err(TagRefusal::Never(why)) => return Ok((Code::Unauthorized, why, Vec::new())),
        }
        // A peer's requests in flight are bounded: one peer cannot fill the queue.
        let Some(_turn) = PeerTurn::take(&self.per_peer, peer, TAGS_IN_FLIGHT_PER_PEER) else {
            return Ok((
                Code::Busy,
                format!("{TAGS_IN_FLIGHT_PER_PEER} requests of this peer in flight already"),
                Vec::new(),
            ));
        };
        // Room for the bytes before any of them is read: memory stays bounded whoever asks.
        let permits = fragment_bytes
            .div_ceil(1 << 20)
            .clamp(1, self.room_total_mib) as u32;
        let room = tokio::time::timeout(
            self.timeout(),
            self.room_mib.clone().acquire_many_owned(permits),
        )
        .await;
        let _room = match room {
            Ok(Ok(room)) => room,
            _ => {
                return Ok((
                    Code::Busy,
                    "the tagger is busy; try again later".into(),
                    Vec::new(),
                ));
            }
        };
        let mut data = vec![0u8; fragment_bytes as usize];
        tokio::time::timeout(self.timeout(), read_exact(recv, &mut data))
            .await
            .map_err(|_| Abort::Stream(ProtocolError::Timeout(self.config.stream_timeout_ms)))??;
        let digest = FragmentId::of(&data);
        if digest != id {
            return Ok((
                Code::Mismatch,
                "the bytes do not hash to the fragment id".into(),
                Vec::new(),
            ));
        }
        match self.service.tag(id, data).await {
            Ok(tags) => {
                self.metrics.tagged.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .tagged_bytes
                    .fetch_add(fragment_bytes, Ordering::Relaxed);
                Ok((Code::Ok, String::new(), tags))
            }
            Err(e) => Ok((Code::StoreFailed, e, Vec::new())),
        }
    }
}

/// Asks the tagger at `addr` for the tags of fragment `id` (`data` must be its bytes), over
/// `endpoint` (a client endpoint for [`TAG_PROTOCOL`]). The blob is returned unchecked: the
/// caller checks it against the tagger's public key before keeping it.
pub async fn request_tags(
    endpoint: &Endpoint,
    addr: &NodeAddr,
    id: FragmentId,
    data: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ProtocolError> {
    let attempt = async {
        let connection = endpoint.dial(addr).await?;
        let (mut send, mut recv) = connection.inner.open_bi().await?;
        let mut request = pb::TagRequest {
            message_data: None,
            fragment_id: id.0.to_vec(),
            fragment_bytes: data.len() as u64,
        };
        message::sign(&mut request, endpoint.key(), now_ms(), rand::random());
        send.write_all(&message::encode_frame(&request)).await?;
        match send.write_all(data).await {
            Ok(()) => {}
            // The tagger stopped reading: its answer says why.
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let _ = send.finish();
        let response: pb::TagResponse = read_message(&mut recv).await?;
        // A fresh verifier: one answer, checked for its author, signature and time.
        let author = Verifier::new(60_000, 16).verify(&response, now_ms())?;
        if author != connection.peer_id {
            return Err(ProtocolError::WrongAuthor {
                author: author.to_string(),
                peer: connection.peer_id.to_string(),
            });
        }
        connection.close(ErrorCode::Done, "done");
        match Code::from_u32(response.code) {
            Some(Code::Ok) => Ok(response.tags),
            Some(code) => Err(ProtocolError::Refused {
                code,
                detail: response.detail,
            }),
            None => Err(ProtocolError::UnknownCode(response.code)),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProtocolError::Timeout(timeout.as_millis() as u64))?
}
