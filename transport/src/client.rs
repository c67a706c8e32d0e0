//! The requester side: writes and reads whole fragments, resuming after dropped connections.

use crate::FragmentId;
use crate::identity::NodeAddr;
use crate::message::{self, MessageError, Signed, Verifier, pb};
use crate::protocol::{Code, ProtocolError, now_ms, read_message};
use crate::quic::{Connection, Endpoint};
use bytes::Bytes;
use libp2p_identity::PeerId;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Retry and timeout policy of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Attempts per fragment (connections lost, resumes without progress) before giving up.
    pub attempts_max: u32,
    /// Pause before a retry, doubled each time.
    pub backoff_ms: u64,
    /// Longest wait for an answer or for the next bytes.
    pub timeout_ms: u64,
    /// Longest wait for a handshake (a node that is down costs this much).
    pub connect_timeout_ms: u64,
    /// Accepted clock difference for response timestamps.
    pub window_ms: i64,
    /// After a failed dial, calls to that node fail at once for this long, so a node that is
    /// down costs one connect timeout, not one per fragment.
    pub down_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            attempts_max: 6,
            backoff_ms: 50,
            timeout_ms: 20_000,
            connect_timeout_ms: 3_000,
            window_ms: 60_000,
            down_ms: 30_000,
        }
    }
}

/// What one write attempt achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteProgress {
    /// The node has the whole fragment.
    Stored,
    /// The node wants the bytes from this offset on.
    Continue(u64),
}

/// Dials nodes (reusing one connection per node) and moves fragments.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    config: ClientConfig,
    verifier: Mutex<Verifier>,
    connections: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
    /// Peers whose last dial failed, with when to try again and why.
    down: Mutex<HashMap<PeerId, (Instant, String)>>,
    /// Sent with every write, for nodes that do not list this client as a writer.
    grant: Option<pb::UploadGrant>,
}

impl Client {
    pub fn new(endpoint: Endpoint, config: ClientConfig) -> Client {
        Client {
            endpoint,
            verifier: Mutex::new(Verifier::new(config.window_ms, 1 << 20)),
            config,
            connections: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            grant: None,
        }
    }

    /// Sends `grant` (an owner's permission for this client's PeerId) with every write.
    pub fn with_grant(mut self, grant: pb::UploadGrant) -> Client {
        self.grant = Some(grant);
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The open connection to `addr`, dialing when there is none or it has closed.
    pub async fn connection(&self, addr: &NodeAddr) -> Result<Connection, ProtocolError> {
        // One slot per peer, locked across its dial: requests to one node share one dial,
        // dials to different nodes run in parallel.
        let slot = self
            .connections
            .lock()
            .expect("connections lock")
            .entry(addr.peer)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && c.inner.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        if let Some((until, why)) = self.down.lock().expect("down lock").get(&addr.peer)
            && Instant::now() < *until
        {
            return Err(ProtocolError::Down(why.clone()));
        }
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let dialed = match tokio::time::timeout(connect_timeout, self.endpoint.dial(addr)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(ProtocolError::from(e)),
            Err(_) => Err(ProtocolError::Timeout(self.config.connect_timeout_ms)),
        };
        match dialed {
            Ok(connection) => {
                self.down.lock().expect("down lock").remove(&addr.peer);
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                let until = Instant::now() + Duration::from_millis(self.config.down_ms);
                let why = format!("{addr} unreachable: {e}");
                self.down
                    .lock()
                    .expect("down lock")
                    .insert(addr.peer, (until, why.clone()));
                Err(ProtocolError::Down(why))
            }
        }
    }

    /// Dials every node in parallel; returns, per node, whether it answered. Nodes that did
    /// not are then refused at once for a while instead of costing a timeout per request.
    pub async fn connect_all(
        self: &Arc<Self>,
        addrs: &[NodeAddr],
    ) -> Vec<Result<(), ProtocolError>> {
        let mut dials = tokio::task::JoinSet::new();
        for (i, addr) in addrs.iter().enumerate() {
            let (client, addr) = (self.clone(), addr.clone());
            dials.spawn(async move { (i, client.connection(&addr).await.map(|_| ())) });
        }
        let mut results: Vec<Result<(), ProtocolError>> =
            (0..addrs.len()).map(|_| Ok(())).collect();
        while let Some(joined) = dials.join_next().await {
            if let Ok((i, result)) = joined {
                results[i] = result;
            }
        }
        results
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// After failed attempt number `attempts`: the error to return when the failure is final
    /// or the attempts are spent; otherwise waits the backoff and returns `Ok` to go again.
    async fn retry_or_give_up(
        &self,
        addr: &NodeAddr,
        what: &str,
        attempts: u32,
        failure: ProtocolError,
    ) -> Result<(), ProtocolError> {
        if !failure.is_retryable() || attempts >= self.config.attempts_max {
            return Err(if attempts > 1 {
                ProtocolError::GaveUp {
                    attempts,
                    last: Box::new(failure),
                }
            } else {
                failure
            });
        }
        tracing::debug!(%addr, attempts, "{what} retry: {failure}");
        tokio::time::sleep(Duration::from_millis(
            self.config.backoff_ms << (attempts - 1).min(6),
        ))
        .await;
        Ok(())
    }

    /// Reads the answer to a request (within the timeout) and checks who signed it.
    async fn response<M: Signed>(
        &self,
        connection: &Connection,
        recv: &mut quinn::RecvStream,
    ) -> Result<M, ProtocolError> {
        let response: M = tokio::time::timeout(self.timeout(), read_message(recv))
            .await
            .map_err(|_| ProtocolError::Timeout(self.config.timeout_ms))??;
        self.verify(connection, &response)?;
        Ok(response)
    }

    /// Checks a response's signature and that the connection's peer wrote it.
    fn verify<M: Signed>(
        &self,
        connection: &Connection,
        response: &M,
    ) -> Result<(), ProtocolError> {
        let author = self
            .verifier
            .lock()
            .expect("verifier lock")
            .verify(response, now_ms())?;
        if author != connection.peer_id {
            return Err(ProtocolError::WrongAuthor {
                author: author.to_string(),
                peer: connection.peer_id.to_string(),
            });
        }
        Ok(())
    }

    /// Stores `data` (whose SHA-256 is `fragment_id`) on the node at `addr`. Resumes after a
    /// lost connection from the offset the node reports; returns once the node has checked and
    /// stored the whole fragment.
    pub async fn write_fragment(
        &self,
        addr: &NodeAddr,
        file_id: [u8; 32],
        fragment_id: FragmentId,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        // After a failure the node's progress is unknown: ask before sending more.
        let mut offset = Some(0u64);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = async {
                let connection = self.connection(addr).await?;
                let (from, payload) = match offset {
                    Some(o) => (o, data.slice(o as usize..)),
                    None => (0, Bytes::new()),
                };
                self.write_attempt(
                    &connection,
                    file_id,
                    fragment_id,
                    data.len() as u64,
                    from,
                    payload,
                )
                .await
            };
            let failure = match attempt.await {
                Ok(WriteProgress::Stored) => return Ok(()),
                Ok(WriteProgress::Continue(next)) if next <= data.len() as u64 => {
                    if offset == Some(next) {
                        // The node wants what it was just sent: no progress.
                        ProtocolError::Ended {
                            have_bytes: next,
                            need_bytes: data.len() as u64,
                        }
                    } else {
                        offset = Some(next);
                        attempts -= 1; // a resume point is progress, not a failure
                        continue;
                    }
                }
                Ok(WriteProgress::Continue(next)) => ProtocolError::Message(MessageError::Field {
                    field: "offset",
                    reason: format!("resume offset {next} past the fragment's end"),
                }),
                Err(e) => e,
            };
            self.retry_or_give_up(addr, "write", attempts, failure)
                .await?;
            offset = None;
        }
    }

    /// One write request on a fresh stream: the signed header, `payload` (the fragment from
    /// `offset` on, possibly empty to ask where the node is), then the node's answer.
    pub async fn write_attempt(
        &self,
        connection: &Connection,
        file_id: [u8; 32],
        fragment_id: FragmentId,
        fragment_bytes: u64,
        offset: u64,
        payload: Bytes,
    ) -> Result<WriteProgress, ProtocolError> {
        let (mut send, mut recv) = open_write(
            self,
            connection,
            file_id,
            fragment_id,
            fragment_bytes,
            offset,
            payload.len() as u64,
        )
        .await?;
        if !payload.is_empty() {
            match send.write_chunk(payload).await {
                Ok(()) => {}
                // The node stopped reading: its answer says why.
                Err(quinn::WriteError::Stopped(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let _ = send.finish();
        let response: pb::WritefileResponse = self.response(connection, &mut recv).await?;
        match Code::from_u32(response.code) {
            Some(Code::Ok) if response.offset == fragment_bytes => Ok(WriteProgress::Stored),
            Some(Code::Ok) => Err(ProtocolError::Message(MessageError::Field {
                field: "offset",
                reason: format!("stored {} of {fragment_bytes} bytes", response.offset),
            })),
            Some(Code::Continue) => Ok(WriteProgress::Continue(response.offset)),
            Some(code) => Err(ProtocolError::Refused {
                code,
                detail: response.detail,
            }),
            None => Err(ProtocolError::UnknownCode(response.code)),
        }
    }

    /// Reads a whole fragment from the node at `addr`, resuming from what arrived after a lost
    /// connection; returns it only if it hashes to `fragment_id`.
    pub async fn read_fragment(
        &self,
        addr: &NodeAddr,
        file_id: [u8; 32],
        fragment_id: FragmentId,
    ) -> Result<Vec<u8>, ProtocolError> {
        let mut data: Vec<u8> = Vec::new();
        let mut fragment_bytes: Option<u64> = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let before = data.len();
            let attempt = async {
                let connection = self.connection(addr).await?;
                self.read_attempt(
                    &connection,
                    file_id,
                    fragment_id,
                    &mut data,
                    &mut fragment_bytes,
                )
                .await
            };
            let failure = match attempt.await {
                Ok(()) => {
                    if FragmentId::of(&data) != fragment_id {
                        return Err(ProtocolError::Corrupt);
                    }
                    return Ok(data);
                }
                Err(e) => e,
            };
            if data.len() > before {
                attempts = 1; // bytes arrived: count failures afresh from here
            }
            self.retry_or_give_up(addr, "read", attempts, failure)
                .await?;
        }
    }

    /// Asks for the fragment from `data.len()` on and appends what arrives, even when cut.
    async fn read_attempt(
        &self,
        connection: &Connection,
        file_id: [u8; 32],
        fragment_id: FragmentId,
        data: &mut Vec<u8>,
        fragment_bytes: &mut Option<u64>,
    ) -> Result<(), ProtocolError> {
        let (_send, mut recv) =
            open_read(self, connection, file_id, fragment_id, data.len() as u64).await?;
        let response: pb::ReadfileResponse = self.response(connection, &mut recv).await?;
        match Code::from_u32(response.code) {
            Some(Code::Ok) => {}
            Some(code) => {
                return Err(ProtocolError::Refused {
                    code,
                    detail: response.detail,
                });
            }
            None => return Err(ProtocolError::UnknownCode(response.code)),
        }
        let total = response.fragment_bytes;
        if *fragment_bytes.get_or_insert(total) != total
            || response.offset != data.len() as u64
            || response.offset + response.data.len() as u64 + response.payload_bytes != total
        {
            return Err(ProtocolError::Message(MessageError::Field {
                field: "offset",
                reason: format!(
                    "answer covers {}+{}+{} of {total} bytes; asked from {}",
                    response.offset,
                    response.data.len(),
                    response.payload_bytes,
                    data.len()
                ),
            }));
        }
        data.reserve_exact(total as usize - data.len());
        data.extend_from_slice(&response.data);
        while (data.len() as u64) < total {
            let chunk = tokio::time::timeout(
                self.timeout(),
                recv.read_chunk(total as usize - data.len(), true),
            )
            .await
            .map_err(|_| ProtocolError::Timeout(self.config.timeout_ms))??;
            match chunk {
                Some(chunk) => data.extend_from_slice(&chunk.bytes),
                None => {
                    return Err(ProtocolError::Ended {
                        have_bytes: data.len() as u64,
                        need_bytes: total,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Opens a stream and sends a signed read request from `offset`; the caller reads the answer
/// (or does not: public so tests can play a reader that stalls).
pub async fn open_read(
    client: &Client,
    connection: &Connection,
    file_id: [u8; 32],
    fragment_id: FragmentId,
    offset: u64,
) -> Result<(quinn::SendStream, quinn::RecvStream), ProtocolError> {
    let (mut send, recv) = connection.inner.open_bi().await?;
    let mut request = pb::ReadfileRequest {
        message_data: None,
        file_id: file_id.to_vec(),
        fragment_id: fragment_id.0.to_vec(),
        offset,
    };
    message::sign(
        &mut request,
        client.endpoint.key(),
        now_ms(),
        rand::random(),
    );
    send.write_all(&message::encode_frame(&request)).await?;
    let _ = send.finish();
    Ok((send, recv))
}

/// Opens a stream and sends a signed write request announcing `payload_bytes` raw bytes from
/// `offset`; the caller sends them. Public so tests can cut a transfer anywhere.
pub async fn open_write(
    client: &Client,
    connection: &Connection,
    file_id: [u8; 32],
    fragment_id: FragmentId,
    fragment_bytes: u64,
    offset: u64,
    payload_bytes: u64,
) -> Result<(quinn::SendStream, quinn::RecvStream), ProtocolError> {
    let (mut send, recv) = connection.inner.open_bi().await?;
    let mut request = pb::WritefileRequest {
        message_data: None,
        file_id: file_id.to_vec(),
        fragment_id: fragment_id.0.to_vec(),
        offset,
        data: Vec::new(),
        fragment_bytes,
        payload_bytes,
        grant: client.grant.clone(),
    };
    message::sign(
        &mut request,
        client.endpoint.key(),
        now_ms(),
        rand::random(),
    );
    send.write_all(&message::encode_frame(&request)).await?;
    Ok((send, recv))
}
