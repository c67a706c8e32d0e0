//! The responder side of the fragment protocol: accepts connections, verifies every request,
//! receives fragment bytes straight into the store's buffers, serves reads.
//!
//! The store is behind [`FragmentStore`] so this crate needs no engine; the node binds it.

use crate::FragmentId;
use crate::admission::{WritePolicy, WriteRefusal};
use crate::fair::PeerRates;
use crate::identity::NodeKey;
use crate::message::{self, MessageError, PeerReplay, Signed, pb};
use crate::partials::{Partial, PartialLimits, Partials};
use crate::protocol::{Abort, Code, Metrics, ProtocolError, now_ms, read_frame};
use crate::quic::{Connection, Endpoint, ErrorCode};
use libp2p_identity::PeerId;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreFault {
    #[error("no such fragment")]
    NotFound,
    #[error("data does not hash to the fragment id")]
    Mismatch,
    #[error("{0}")]
    Failed(String),
}

/// The fragment store a server writes into and reads from.
pub trait FragmentStore: Send + Sync + 'static {
    /// A buffer received bytes land in, handed whole to [`FragmentStore::put`]. Its bytes
    /// need not be zero: the server writes every one before handing it over.
    type WriteBuf: DerefMut<Target = [u8]> + Send + 'static;
    /// Bytes read from the store, sent without a copy.
    type ReadBuf: AsRef<[u8]> + Send + 'static;

    fn alloc(&self, len_bytes: usize) -> Self::WriteBuf;
    /// Whether [`FragmentStore::admit`], [`FragmentStore::may_read`] and
    /// [`FragmentStore::admit_peer`] may wait (on a lock held for a long time, as a chain
    /// replica's is while it applies a block): the server then runs them on the blocking pool,
    /// never on a runtime thread.
    const CHECKS_MAY_WAIT: bool = false;
    /// The largest fragment the store keeps: a write announcing more is refused before
    /// anything is buffered.
    fn fragment_bytes_max(&self) -> u64 {
        crate::message::FRAGMENT_BYTES_MAX
    }
    /// Whether `writer` may store fragment `id` of `fragment_bytes` here, asked before any of
    /// its bytes is buffered (a storage node's chain rule: only what the ledger assigned to
    /// it). `Err` says why not; the writer is answered `Unauthorized` with it.
    fn admit(&self, writer: &PeerId, id: &FragmentId, fragment_bytes: u64) -> Result<(), String> {
        let _ = (writer, id, fragment_bytes);
        Ok(())
    }
    /// Whether `reader` may read fragment `id` here, asked before the store is touched (a
    /// storage node's chain rule: the file's owners and their delegates, a miner rebuilding
    /// a fragment of its segment, the validators). `Err` says why not; the reader is
    /// answered `Unauthorized` with it.
    fn may_read(&self, reader: &PeerId, id: &FragmentId) -> Result<(), String> {
        let _ = (reader, id);
        Ok(())
    }
    /// Whether `peer` may hold a connection here at all, asked once per connection right
    /// after its handshake, before any request is read (a storage node's chain rule: an
    /// account with standing on the chain: a lease, a miner, a validator, a delegate). `Err`
    /// says why not; the connection is closed with it. A crowd of fresh keys then costs the
    /// node a handshake each, never a signature check per request.
    fn admit_peer(&self, peer: &PeerId) -> Result<(), String> {
        let _ = peer;
        Ok(())
    }
    /// The stored length of a fragment, if present.
    fn len_of(
        &self,
        id: FragmentId,
    ) -> impl Future<Output = Result<Option<u64>, StoreFault>> + Send;
    /// Stores a complete fragment; must refuse data that does not hash to `id`.
    fn put(
        &self,
        id: FragmentId,
        data: Self::WriteBuf,
    ) -> impl Future<Output = Result<(), StoreFault>> + Send;
    /// Reads verified bytes `offset..offset + len_bytes` of a fragment.
    fn read(
        &self,
        id: FragmentId,
        offset: u64,
        len_bytes: u64,
    ) -> impl Future<Output = Result<Self::ReadBuf, StoreFault>> + Send;
}

/// A response: a signed message with a free-text detail.
trait Answer: Signed {
    fn detail_mut(&mut self) -> &mut String;
}

impl Answer for pb::WritefileResponse {
    fn detail_mut(&mut self) -> &mut String {
        &mut self.detail
    }
}

impl Answer for pb::ReadfileResponse {
    fn detail_mut(&mut self) -> &mut String {
        &mut self.detail
    }
}

/// Who may write, and the protocol's bounds.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// PeerIds allowed to write; `None` lets any authenticated peer write.
    pub writers: Option<HashSet<PeerId>>,
    /// Owners whose upload grants let a peer off `writers` write (see [`crate::grant`]).
    pub trusted_owners: HashSet<PeerId>,
    /// Accepted clock difference for request timestamps.
    pub window_ms: i64,
    /// Message ids remembered against replay, per peer: a peer over it is refused until its
    /// ids age out of the window; other peers are not.
    pub replay_capacity: usize,
    /// Message ids remembered for all peers together; past it the least recently heard peers
    /// are forgotten (never refused).
    pub replay_total_max: usize,
    /// A stream idle this long (waiting for bytes) is cut and its partial write kept.
    pub stream_timeout_ms: u64,
    /// Memory all unfinished writes may hold together.
    pub partial_bytes_max: u64,
    /// Memory one writer's unfinished writes may hold.
    pub partial_writer_bytes_max: u64,
    /// An unfinished write untouched this long is forgotten.
    pub partial_ttl_ms: u64,
    /// Memory all reads in flight may hold together (each holds up to one 8 MiB chunk from
    /// the store until the peer has taken it); a read waits for room up to the stream
    /// timeout, then is answered `Busy`.
    pub read_bytes_max: u64,
    /// Reads one peer may have in flight; one more is answered `Busy` at once.
    pub reads_per_peer_max: usize,
    /// Requests one peer may make per second, over all its connections, after a burst of
    /// `request_burst_per_peer`; past it the node stops taking the peer's streams until its
    /// budget refills (QUIC's stream credit then holds the peer back).
    pub requests_per_peer_per_s: u64,
    pub request_burst_per_peer: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            writers: None,
            trusted_owners: HashSet::new(),
            window_ms: 60_000,
            replay_capacity: 1 << 16,
            replay_total_max: 1 << 20,
            stream_timeout_ms: 20_000,
            partial_bytes_max: 1 << 30,
            partial_writer_bytes_max: 256 << 20,
            partial_ttl_ms: 120_000,
            read_bytes_max: 256 << 20,
            reads_per_peer_max: 8,
            requests_per_peer_per_s: 1000,
            request_burst_per_peer: 256,
        }
    }
}

/// A fragment protocol server over one store.
pub struct Server<S: FragmentStore> {
    store: Arc<S>,
    key: Arc<NodeKey>,
    config: ServerConfig,
    policy: WritePolicy,
    replay: Mutex<PeerReplay>,
    partials: Mutex<Partials<S::WriteBuf>>,
    metrics: Arc<Metrics>,
    closing: AtomicBool,
    in_flight: AtomicU64,
    /// Bytes of read chunks in flight, as permits (see [`ServerConfig::read_bytes_max`]).
    read_budget: Arc<tokio::sync::Semaphore>,
    /// Reads in flight per peer.
    readers: Mutex<HashMap<PeerId, usize>>,
    /// Each peer's request budget.
    rates: Mutex<PeerRates>,
    /// The clock `rates` runs on.
    started: Instant,
}

/// A peer's read slot, given back on drop.
struct ReadSlot<'a> {
    readers: &'a Mutex<HashMap<PeerId, usize>>,
    peer: PeerId,
}

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = readers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.peer);
            }
        }
    }
}

impl<S: FragmentStore> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("peer_id", &self.key.peer_id())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<S: FragmentStore> Server<S> {
    pub fn new(store: Arc<S>, key: Arc<NodeKey>, config: ServerConfig) -> Arc<Server<S>> {
        let policy = WritePolicy {
            writers: config.writers.clone(),
            trusted_owners: config.trusted_owners.clone(),
            fragment_bytes_max: store.fragment_bytes_max(),
        };
        Arc::new(Server {
            store,
            key,
            policy,
            replay: Mutex::new(PeerReplay::new(
                config.window_ms,
                config.replay_capacity,
                config.replay_total_max,
            )),
            partials: Mutex::new(Partials::new(PartialLimits {
                bytes_max: config.partial_bytes_max,
                writer_bytes_max: config.partial_writer_bytes_max,
                ttl_ms: config.partial_ttl_ms,
            })),
            metrics: Arc::new(Metrics::default()),
            closing: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            read_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.read_bytes_max)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            readers: Mutex::new(HashMap::new()),
            rates: Mutex::new(PeerRates::new(
                config.requests_per_peer_per_s,
                config.request_burst_per_peer,
            )),
            started: Instant::now(),
            config,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Bytes held by unfinished writes.
    pub fn partial_bytes(&self) -> u64 {
        self.partials().held_bytes()
    }

    /// Memory held by reads in flight.
    pub fn read_bytes(&self) -> u64 {
        let max = usize::try_from(self.config.read_bytes_max)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        (max - self.read_budget.available_permits()) as u64
    }

    /// Takes one of `peer`'s read slots, or none when it has all of them in flight.
    fn read_slot(&self, peer: PeerId) -> Option<ReadSlot<'_>> {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let n = readers.entry(peer).or_insert(0);
        if *n >= self.config.reads_per_peer_max {
            return None;
        }
        *n += 1;
        Some(ReadSlot {
            readers: &self.readers,
            peer,
        })
    }

    /// Room for `len_bytes` of read chunk, waited for up to the stream timeout.
    async fn read_room(&self, len_bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = u32::try_from(len_bytes).expect("a read chunk is 8 MiB at most");
        tokio::time::timeout(
            self.timeout(),
            self.read_budget.clone().acquire_many_owned(permits),
        )
        .await
        .ok()?
        .ok()
    }

    fn partials(&self) -> std::sync::MutexGuard<'_, Partials<S::WriteBuf>> {
        self.partials.lock().expect("partials lock")
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

    /// Stops taking new requests, waits up to `grace` for those in flight, then closes the
    /// endpoint (cutting what is left: unfinished writes are never stored).
    pub async fn shutdown(&self, endpoint: &Endpoint, grace: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cut = self.in_flight();
        if cut > 0 {
            tracing::warn!("shutting down with {cut} requests still in flight; they are aborted");
        }
        endpoint.close();
    }

    /// Runs one of the store's checks: inline, or on the blocking pool when they may wait.
    async fn store_check<T: Send + 'static>(
        &self,
        check: impl FnOnce(&S) -> T + Send + 'static,
    ) -> T {
        if !S::CHECKS_MAY_WAIT {
            return check(&self.store);
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || check(&store)).await {
            Ok(answer) => answer,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    async fn serve_connection(self: Arc<Self>, connection: Connection) {
        let peer = connection.peer_id;
        if let Err(reason) = self.store_check(move |s| s.admit_peer(&peer)).await {
            self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: {reason}");
            connection.close(ErrorCode::Refused, &reason);
            return;
        }
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        loop {
            let (send, recv) = match connection.inner.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::debug!(peer = %connection.peer_id, "connection ended: {e}");
                    return;
                }
            };
            if self.closing.load(Ordering::SeqCst) {
                connection.close(ErrorCode::Shutdown, "shutting down");
                return;
            }
            // The peer's budget first: over it, this connection takes no stream until it
            // refills (the peer's other connections draw on the same budget).
            loop {
                let now_ms = self.started.elapsed().as_millis() as u64;
                let taken = self
                    .rates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(connection.peer_id, now_ms);
                match taken {
                    Ok(()) => break,
                    Err(wait_ms) => {
                        self.metrics.requests_paced.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    }
                }
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let server = self.clone();
            let connection = connection.clone();
            tokio::spawn(async move {
                let outcome = server.serve_stream(&connection, send, recv).await;
                server.in_flight.fetch_sub(1, Ordering::SeqCst);
                match outcome {
                    Ok(()) => {}
                    Err(Abort::Violation(reason)) => {
                        server
                            .metrics
                            .protocol_violations
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %connection.peer_id, "disconnecting: {reason}");
                        connection.close(ErrorCode::Protocol, &reason);
                    }
                    Err(Abort::Stream(e)) => {
                        server.metrics.stream_errors.fetch_add(1, Ordering::Relaxed);
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
        let started = Instant::now();
        let body = tokio::time::timeout(self.timeout(), read_frame(&mut recv))
            .await
            .map_err(|_| Abort::Stream(ProtocolError::Timeout(self.config.stream_timeout_ms)))??;
        match body.first() {
            Some(&pb::WritefileRequest::KIND) => {
                let request: pb::WritefileRequest =
                    message::decode_body(&body).map_err(ProtocolError::from)?;
                let (code, offset, detail) = match self.check(connection, &request)? {
                    Some(refusal) => refusal,
                    None => self.write(connection.peer_id, &request, &mut recv).await?,
                };
                if code != Code::Ok || offset < request.fragment_bytes {
                    // Whatever else the peer sends on this stream is not wanted.
                    let _ = recv.stop(ErrorCode::NotNeeded.into());
                }
                let mut response = pb::WritefileResponse {
                    message_data: None,
                    code: code as u32,
                    offset,
                    detail,
                };
                self.respond(&mut send, &mut response).await?;
                let _ = send.finish();
                self.metrics.count_response(code);
                self.metrics.write_latency.record(started.elapsed());
                Ok(())
            }
            Some(&pb::ReadfileRequest::KIND) => {
                let request: pb::ReadfileRequest =
                    message::decode_body(&body).map_err(ProtocolError::from)?;
                let code = match self.check(connection, &request)? {
                    Some((code, _, detail)) => {
                        let mut response = pb::ReadfileResponse {
                            code: code as u32,
                            detail,
                            ..Default::default()
                        };
                        self.respond(&mut send, &mut response).await?;
                        code
                    }
                    None => match self.read_slot(connection.peer_id) {
                        Some(_slot) => self.read(connection.peer_id, &request, &mut send).await?,
                        None => {
                            self.metrics.reads_refused.fetch_add(1, Ordering::Relaxed);
                            let mut response = pb::ReadfileResponse {
                                code: Code::Busy as u32,
                                detail: format!(
                                    "{} reads in flight from this peer already",
                                    self.config.reads_per_peer_max
                                ),
                                ..Default::default()
                            };
                            self.respond(&mut send, &mut response).await?;
                            Code::Busy
                        }
                    },
                };
                let _ = send.finish();
                self.metrics.count_response(code);
                self.metrics.read_latency.record(started.elapsed());
                Ok(())
            }
            Some(&kind) => Err(Abort::Violation(
                MessageError::UnknownKind(kind).to_string(),
            )),
            None => Err(Abort::Violation("empty frame".into())),
        }
    }

    /// Signature, author and freshness. A forged or misattributed request is a violation (the
    /// peer is dropped); a stale or replayed one is answered, since clocks drift and retries
    /// happen.
    fn check<M: Signed>(
        &self,
        connection: &Connection,
        request: &M,
    ) -> Result<Option<(Code, u64, String)>, Abort> {
        let verified = checked(&self.replay, self.config.window_ms, connection, request);
        match verified {
            Ok(author) if author == connection.peer_id => Ok(None),
            Ok(author) => Err(Abort::Violation(format!(
                "request signed by {author}, sent by {}",
                connection.peer_id
            ))),
            Err(
                e @ (MessageError::Expired { .. }
                | MessageError::Replayed
                | MessageError::ReplayCacheFull),
            ) => Ok(Some((Code::BadRequest, 0, e.to_string()))),
            Err(e) => Err(Abort::Violation(e.to_string())),
        }
    }

    /// Signs and sends an answer, its detail clipped to the bound its reader enforces.
    async fn respond<M: Answer>(
        &self,
        send: &mut quinn::SendStream,
        response: &mut M,
    ) -> Result<(), Abort> {
        let detail = response.detail_mut();
        *detail = message::clip_detail(std::mem::take(detail));
        message::sign(response, &self.key, now_ms(), rand::random());
        send.write_all(&message::encode_frame(response))
            .await
            .map_err(|e| Abort::Stream(e.into()))
    }

    /// Receives a write; answers (code, offset the writer should go on from, detail).
    async fn write(
        &self,
        writer: PeerId,
        request: &pb::WritefileRequest,
        recv: &mut quinn::RecvStream,
    ) -> Result<(Code, u64, String), Abort> {
        let id = checked_fragment_id(&request.fragment_id);
        let fragment_bytes = request.fragment_bytes;
        let authorized =
            self.policy
                .authorize(&writer, request.grant.as_ref(), fragment_bytes, now_ms());
        match authorized {
            Ok(()) => {}
            Err(refusal @ WriteRefusal::TooLarge { .. }) => {
                return Ok((Code::BadRequest, 0, refusal.to_string()));
            }
            Err(refusal) => {
                if matches!(refusal, WriteRefusal::Grant(_)) {
                    self.metrics.grants_refused.fetch_add(1, Ordering::Relaxed);
                }
                return Ok((Code::Unauthorized, 0, refusal.to_string()));
            }
        }
        if let Err(refusal) = self
            .store_check(move |s| s.admit(&writer, &id, fragment_bytes))
            .await
        {
            self.metrics.writes_refused.fetch_add(1, Ordering::Relaxed);
            return Ok((Code::Unauthorized, 0, refusal));
        }
        match self.store.len_of(id).await {
            Ok(Some(len)) if len == fragment_bytes => {
                self.partials().forget_fragment(&id);
                return Ok((Code::Ok, len, String::new()));
            }
            Ok(Some(len)) => {
                return Ok((
                    Code::Mismatch,
                    0,
                    format!("fragment stored with {len} bytes, request says {fragment_bytes}"),
                ));
            }
            Ok(None) => {}
            Err(e) => return Ok((Code::StoreFailed, 0, e.to_string())),
        }
        let mut partial = self.partials().take(writer, id, fragment_bytes, now_ms());
        if request.offset != partial.filled as u64 {
            let filled = partial.filled as u64;
            self.put_back(writer, id, partial);
            return Ok((Code::Continue, filled, String::new()));
        }
        let data_end = partial.filled + request.data.len();
        let payload_end = data_end + request.payload_bytes as usize;
        if payload_end > partial.filled {
            // Bytes are coming: only now is memory committed to them.
            let reserved = self.partials().reserve(&writer, &mut partial);
            match reserved {
                Ok(true) => partial.buf = Some(self.store.alloc(fragment_bytes as usize)),
                Ok(false) => {}
                Err(reason) => {
                    let filled = partial.filled as u64;
                    self.put_back(writer, id, partial);
                    return Ok((Code::Busy, filled, reason));
                }
            }
        }
        if let Some(buf) = partial.buf.as_mut() {
            buf[partial.filled..data_end].copy_from_slice(&request.data);
            partial.filled = data_end;
        }
        while partial.filled < payload_end {
            let buf = partial.buf.as_mut().expect("reserved before the payload");
            let read = tokio::time::timeout(
                self.timeout(),
                recv.read(&mut buf[partial.filled..payload_end]),
            )
            .await;
            match read {
                Ok(Ok(Some(n))) => {
                    partial.filled += n;
                    self.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    self.put_back(writer, id, partial);
                    return Err(Abort::Stream(e.into()));
                }
                Err(_) => {
                    self.put_back(writer, id, partial);
                    let _ = recv.stop(ErrorCode::Timeout.into());
                    return Err(Abort::Stream(ProtocolError::Timeout(
                        self.config.stream_timeout_ms,
                    )));
                }
            }
        }
        if (partial.filled as u64) < fragment_bytes {
            let filled = partial.filled as u64;
            self.put_back(writer, id, partial);
            return Ok((Code::Continue, filled, String::new()));
        }
        let buf = partial
            .buf
            .take()
            .expect("a complete fragment has its bytes");
        let stored = self.store.put(id, buf).await;
        self.partials().finish(writer, id, partial, stored.is_ok());
        Ok(match stored {
            Ok(()) => (Code::Ok, fragment_bytes, String::new()),
            Err(StoreFault::Mismatch) => (Code::Mismatch, 0, StoreFault::Mismatch.to_string()),
            Err(e) => (Code::StoreFailed, 0, e.to_string()),
        })
    }

    fn put_back(&self, writer: PeerId, id: FragmentId, partial: Partial<S::WriteBuf>) {
        self.partials().put_back(writer, id, partial, now_ms());
    }

    /// Serves a read: the answer, then the bytes. The first chunk is read before answering so
    /// a missing or corrupt fragment is answered with a code, not a cut stream.
    async fn read(
        &self,
        reader: PeerId,
        request: &pb::ReadfileRequest,
        send: &mut quinn::SendStream,
    ) -> Result<Code, Abort> {
        /// Bytes read from the store per step.
        const READ_CHUNK_BYTES: u64 = 8 << 20;
        let id = checked_fragment_id(&request.fragment_id);
        let refuse = |code: Code, detail: String| pb::ReadfileResponse {
            code: code as u32,
            detail,
            ..Default::default()
        };
        if let Err(refusal) = self.store_check(move |s| s.may_read(&reader, &id)).await {
            self.metrics
                .reads_unauthorized
                .fetch_add(1, Ordering::Relaxed);
            self.respond(send, &mut refuse(Code::Unauthorized, refusal))
                .await?;
            return Ok(Code::Unauthorized);
        }
        let len = match self.store.len_of(id).await {
            Ok(Some(len)) => len,
            Ok(None) => {
                self.respond(send, &mut refuse(Code::NotFound, String::new()))
                    .await?;
                return Ok(Code::NotFound);
            }
            Err(e) => {
                self.respond(send, &mut refuse(Code::StoreFailed, e.to_string()))
                    .await?;
                return Ok(Code::StoreFailed);
            }
        };
        if request.offset > len {
            let detail = format!("offset {} past the fragment's {len} bytes", request.offset);
            self.respond(send, &mut refuse(Code::BadRequest, detail))
                .await?;
            return Ok(Code::BadRequest);
        }
        let mut at = request.offset;
        let first_len = (len - at).min(READ_CHUNK_BYTES);
        // Room for the chunk before the store reads it; held until the peer has taken it.
        let Some(mut room) = self.read_room(first_len).await else {
            self.metrics.reads_refused.fetch_add(1, Ordering::Relaxed);
            let detail = "the node's read memory is taken; try again".to_string();
            self.respond(send, &mut refuse(Code::Busy, detail)).await?;
            return Ok(Code::Busy);
        };
        let mut chunk = match self.store.read(id, at, first_len).await {
            Ok(chunk) => chunk,
            Err(e) => {
                let code = match e {
                    StoreFault::NotFound => Code::NotFound,
                    _ => Code::StoreFailed,
                };
                self.respond(send, &mut refuse(code, e.to_string())).await?;
                return Ok(code);
            }
        };
        let mut response = pb::ReadfileResponse {
            code: Code::Ok as u32,
            offset: at,
            fragment_bytes: len,
            payload_bytes: len - at,
            ..Default::default()
        };
        self.respond(send, &mut response).await?;
        loop {
            let sent = chunk.as_ref().len() as u64;
            // A peer that does not take the chunk within the stream timeout loses the stream
            // (and the memory it held); it resumes from what it got.
            tokio::time::timeout(
                self.timeout(),
                send.write_chunk(bytes::Bytes::from_owner(ByteOwner(chunk))),
            )
            .await
            .map_err(|_| Abort::Stream(ProtocolError::Timeout(self.config.stream_timeout_ms)))?
            .map_err(|e| Abort::Stream(e.into()))?;
            drop(room);
            self.metrics.bytes_out.fetch_add(sent, Ordering::Relaxed);
            at += sent;
            if at >= len {
                return Ok(Code::Ok);
            }
            let next_len = (len - at).min(READ_CHUNK_BYTES);
            room = match self.read_room(next_len).await {
                Some(room) => room,
                None => {
                    self.metrics.reads_refused.fetch_add(1, Ordering::Relaxed);
                    let _ = send.reset(ErrorCode::NotNeeded.into());
                    return Err(Abort::Stream(ProtocolError::Refused {
                        code: Code::Busy,
                        detail: "the node's read memory is taken".into(),
                    }));
                }
            };
            // The answer is out: a failure now can only cut the stream; the reader's hash
            // check and resume handle it.
            chunk = match self.store.read(id, at, next_len).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = send.reset(ErrorCode::NotNeeded.into());
                    return Err(Abort::Stream(ProtocolError::Refused {
                        code: Code::StoreFailed,
                        detail: e.to_string(),
                    }));
                }
            };
        }
    }
}

/// Lets a store's read buffer back a `Bytes` without a copy.
struct ByteOwner<B>(B);

impl<B: AsRef<[u8]>> AsRef<[u8]> for ByteOwner<B> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// A request's author, checked without a lock (signature, freshness) and then remembered
/// against replay under its author's own bound. A request signed by another peer than the
/// connection's is not remembered: the caller disconnects that peer.
pub(crate) fn checked<M: Signed>(
    replay: &Mutex<PeerReplay>,
    window_ms: i64,
    connection: &Connection,
    request: &M,
) -> Result<PeerId, MessageError> {
    let now = now_ms();
    let (author, id, timestamp_ms) = message::check_signed(request, now, window_ms)?;
    if author != connection.peer_id {
        return Ok(author);
    }
    replay
        .lock()
        .expect("replay lock")
        .remember(author, id, timestamp_ms, now)?;
    Ok(author)
}

/// A request's fragment id, whose length was checked when the request was decoded.
fn checked_fragment_id(bytes: &[u8]) -> FragmentId {
    FragmentId::try_from(bytes).expect("checked at decode")
}
