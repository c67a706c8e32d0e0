//! State sync: a node far behind takes a peer's latest checkpoint instead of replaying every
//! block since its own state, checked against the validator sets it follows header by header
//! from that state ([`crate::light`]); then it catches up block by block from the
//! checkpoint's height as usual.
//!
//! The driver part (QUIC, feature `quic`): ask each peer how far its checkpoint is; from the
//! first far enough ahead, fetch one header per era since this node's state, the header of
//! the block after the checkpoint, and the checkpoint in chunks; check all of it; then write
//! the checkpoint beside a block store that starts at its height. Nothing a peer sends is
//! written before every check passed: a peer that sends anything else is left for the next.
//!
//! Crash argument for the install ([`crate::store::install_based`]): the new, empty store is
//! created beside the old one, then the checkpoint written atomically, then the new store
//! renamed over the old. Opening the disk finishes an install whose checkpoint was written
//! (the pending store's base is its block) and removes a pending store otherwise, so a crash
//! at any point leaves either the old state or the new one.

use crate::bft::{BlockHeader, CommitRecord, MESSAGE_BYTES_MAX, NetMsg, SYNC_BATCH_MAX};
use crate::checkpoint::Checkpoint;
use crate::ledger::Ledger;
use crate::light::{LightError, SetChain};
use crate::net::{FrameError, frame, read_frame};
use cess_transport::identity::{NodeAddr, NodeKey};
use cess_transport::quic::Endpoint;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long one answer may take to arrive.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long asking a peer how far its checkpoint is may take, dial included (peers are asked
/// at once; one that is down costs this once, not per peer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A fetch from one peer takes at most this, plus a second per MiB of its checkpoint.
const FETCH_TIMEOUT_BASE: Duration = Duration::from_secs(60);
/// The header after a checkpoint may not be decided yet: asked again this often, this many
/// times.
const HEADER_AFTER_RETRY: Duration = Duration::from_millis(500);
const HEADER_AFTER_TRIES: u32 = 20;
/// A peer that wrote a new checkpoint while this one was being fetched is asked again from
/// the start at most this many times.
const CHECKPOINT_RESTARTS_MAX: u32 = 3;

/// Why a state sync failed (with one peer, or in all).
#[derive(Debug, thiserror::Error)]
pub enum StateSyncError {
    #[error(transparent)]
    Disk(#[from] crate::store::DiskError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("{peer}: {source}")]
    Refused {
        peer: String,
        #[source]
        source: LightError,
    },
    #[error("{peer}: its checkpoint: {source}")]
    Checkpoint {
        peer: String,
        #[source]
        source: crate::checkpoint::CheckpointError,
    },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

/// A state taken from a peer.
#[derive(Debug, Clone)]
pub struct StateSynced {
    /// The checkpoint's height (the node resumes after it).
    pub height: u64,
    /// Where this node's own state was.
    pub was_at: u64,
    pub checkpoint_bytes: u64,
    /// Era headers checked on the way.
    pub headers: u64,
    pub peer: String,
}

/// One stream to a peer, with what is read from it bounded and timed.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: String,
}

impl Stream {
    async fn ask(&mut self, msg: &NetMsg) -> Result<(), StateSyncError> {
        self.send
            .write_all(&frame(msg))
            .await
            .map_err(|e| self.failed(e.to_string()))
    }

    async fn answer(&mut self) -> Result<NetMsg, StateSyncError> {
        let body = tokio::time::timeout(
            ANSWER_TIMEOUT,
            read_frame(&mut self.recv, MESSAGE_BYTES_MAX),
        )
        .await
        .map_err(|_| self.failed("no answer in time".into()))?
        .map_err(|e| {
            self.failed(match e {
                FrameError::TooLong(len) => format!("an answer of {len} bytes"),
                FrameError::Closed => "stream closed".into(),
                FrameError::Slow => "an answer too slow".into(),
            })
        })?;
        NetMsg::decode(&body).map_err(|e| self.failed(e.to_string()))
    }

    fn failed(&self, reason: String) -> StateSyncError {
        StateSyncError::Peer {
            peer: self.peer.clone(),
            reason,
        }
    }

    /// Headers at `height`, `height + step`, … (`count`), with their commits; fewer if the
    /// peer does not have them all.
    async fn headers(
        &mut self,
        height: u64,
        step: u64,
        count: u32,
    ) -> Result<Vec<(BlockHeader, CommitRecord)>, StateSyncError> {
        self.ask(&NetMsg::HeaderRequest {
            height,
            step,
            count,
        })
        .await?;
        let mut headers = Vec::new();
        while headers.len() < count as usize {
            match self.answer().await? {
                NetMsg::HeaderResponse { header, commit } => {
                    let expected = height + step * headers.len() as u64;
                    if header.height != expected {
                        return Err(self.failed(format!(
                            "header of height {} where {expected} was asked for",
                            header.height
                        )));
                    }
                    headers.push((*header, commit));
                }
                NetMsg::Tip { .. } => break,
                other => return Err(self.failed(format!("answered with a {}", other.kind()))),
            }
        }
        Ok(headers)
    }

    /// A chunk of the peer's checkpoint: (height, total bytes, bytes).
    async fn chunk(&mut self, offset: u64) -> Result<(u64, u64, Vec<u8>), StateSyncError> {
        self.ask(&NetMsg::CheckpointRequest { offset }).await?;
        match self.answer().await? {
            NetMsg::CheckpointChunk {
                height,
                total_bytes,
                offset: at,
                bytes,
            } if at == offset || total_bytes == 0 => Ok((height, total_bytes, bytes)),
            other => Err(self.failed(format!("answered with a {}", other.kind()))),
        }
    }
}

/// Takes a peer's checkpoint into `dir` if one is at least `behind_min_blocks` ahead of the
/// state on `dir` (its own checkpoint and blocks, or `genesis`). `None`: no peer is that far
/// ahead (or none answered); the node then catches up block by block. The disk must not be
/// open (this opens it to read where it is, and writes the new checkpoint and store); a
/// driver that holds it open already calls [`state_sync_from`].
pub async fn state_sync(
    key: Arc<NodeKey>,
    peers: &[NodeAddr],
    dir: &Path,
    genesis: Ledger,
    behind_min_blocks: u64,
) -> Result<Option<StateSynced>, StateSyncError> {
    let (ledger, previous) = match crate::store::open_disk(dir, genesis.clone(), 0, false) {
        Ok(opened) => (opened.restored.ledger, opened.restored.previous_validators),
        // A store that starts at a taken checkpoint whose checkpoint is gone or damaged
        // cannot be replayed: the sets are followed from genesis instead, and the store
        // replaced if a checkpoint is taken.
        Err(crate::store::DiskError::NoBaseCheckpoint { base, reason }) => {
            tracing::warn!(base, %reason, "own state unusable; state sync from genesis");
            (genesis, None)
        }
        Err(e) => return Err(e.into()),
    };
    state_sync_from(
        key,
        peers,
        dir,
        &ledger,
        previous.as_ref(),
        behind_min_blocks,
    )
    .await
}

/// [`state_sync`] from a state the caller holds: `ledger` (what `dir` resumes at, or genesis)
/// and the set that decided its last block. A checkpoint taken replaces `dir`'s store and
/// checkpoint (a store the caller holds open stays readable; open the disk again to use the
/// new one).
pub async fn state_sync_from(
    key: Arc<NodeKey>,
    peers: &[NodeAddr],
    dir: &Path,
    ledger: &Ledger,
    previous: Option<&crate::bft::ValidatorSet>,
    behind_min_blocks: u64,
) -> Result<Option<StateSynced>, StateSyncError> {
    let was_at = ledger.height();
    let trusted = SetChain::from_ledger(ledger, previous);
    // Every peer at once: how far is its checkpoint.
    let mut probes = tokio::task::JoinSet::new();
    for peer in peers {
        let (key, peer) = (key.clone(), peer.clone());
        probes.spawn(async move {
            tokio::time::timeout(PROBE_TIMEOUT, probe(key, peer))
                .await
                .ok()
                .flatten()
        });
    }
    let at_least = (was_at + behind_min_blocks).max(1);
    let mut ahead = Vec::new();
    while let Some(probed) = probes.join_next().await {
        if let Ok(Some(probed)) = probed
            && probed.height >= at_least
        {
            ahead.push(probed);
        }
    }
    // The furthest first; the others if it fails, each asked again then (its connection
    // may have idled out while the first was fetched, its checkpoint moved on): only the
    // furthest's probe is kept.
    ahead.sort_by_key(|p| std::cmp::Reverse(p.height));
    let order: Vec<NodeAddr> = ahead.iter().map(|p| p.peer.clone()).collect();
    let mut furthest = ahead.into_iter().next();
    let mut last_error = None;
    for peer in order {
        let probed = match furthest.take() {
            Some(probed) => probed,
            None => match tokio::time::timeout(PROBE_TIMEOUT, probe(key.clone(), peer))
                .await
                .ok()
                .flatten()
            {
                Some(probed) if probed.height >= at_least => probed,
                _ => continue,
            },
        };
        let name = probed.stream.peer.clone();
        // A peer that answers, but slowly, is given up: a minute, and a second per MiB.
        let deadline = FETCH_TIMEOUT_BASE + Duration::from_secs(probed.total_bytes >> 20);
        let fetched = tokio::time::timeout(deadline, fetch_from(probed, &trusted))
            .await
            .unwrap_or_else(|_| {
                Err(StateSyncError::Peer {
                    peer: name.clone(),
                    reason: format!("not done within {} s", deadline.as_secs()),
                })
            });
        match fetched {
            Ok((checkpoint, bytes, headers)) => {
                let height = checkpoint.ledger.height();
                crate::store::install_based(dir, &checkpoint)?;
                return Ok(Some(StateSynced {
                    height,
                    was_at,
                    checkpoint_bytes: bytes,
                    headers,
                    peer: name,
                }));
            }
            Err(e) => {
                tracing::warn!("state sync: {e}; trying the next peer");
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// A peer asked for the first chunk of its checkpoint, on a stream kept for the rest.
struct Probed {
    peer: NodeAddr,
    _endpoint: Endpoint,
    connection: cess_transport::quic::Connection,
    stream: Stream,
    height: u64,
    total_bytes: u64,
    first: Vec<u8>,
}

async fn probe(key: Arc<NodeKey>, peer: NodeAddr) -> Option<Probed> {
    let endpoint = crate::net::client_endpoint(key, &peer).ok()?;
    let name = peer.to_string();
    let connection = match endpoint.dial(&peer).await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::info!(peer = %name, "state sync: not reachable: {e}");
            return None;
        }
    };
    let (send, recv) = connection.inner.open_bi().await.ok()?;
    let mut stream = Stream {
        send,
        recv,
        peer: name,
    };
    match stream.chunk(0).await {
        Ok((height, total_bytes, first)) => Some(Probed {
            peer,
            _endpoint: endpoint,
            connection,
            stream,
            height,
            total_bytes,
            first,
        }),
        Err(e) => {
            tracing::info!("state sync: {e}");
            None
        }
    }
}

/// From one peer: its checkpoint, checked against the sets followed from `trusted`.
async fn fetch_from(
    probed: Probed,
    trusted: &SetChain,
) -> Result<(Checkpoint, u64, u64), StateSyncError> {
    let Probed {
        peer: _,
        _endpoint,
        connection,
        mut stream,
        mut height,
        mut total_bytes,
        mut first,
    } = probed;
    let name = stream.peer.clone();
    for restart in 0..=CHECKPOINT_RESTARTS_MAX {
        if restart > 0 {
            (height, total_bytes, first) = stream.chunk(0).await?;
        }
        if total_bytes == 0 {
            return Err(stream.failed("its checkpoint went away".into()));
        }
        // The sets from this node's state to the checkpoint's next height, an era at a time.
        let mut chain = trusted.clone();
        let mut headers = 0;
        let step = chain.era_blocks();
        while chain.until() <= height {
            // The era ends from `until()` up to the checkpoint's height.
            let wanted = ((height - chain.until()) / step + 1).min(u64::from(SYNC_BATCH_MAX));
            let got = stream.headers(chain.until(), step, wanted as u32).await?;
            if got.is_empty() {
                return Err(stream.failed(format!(
                    "has no header at {} below its checkpoint at {height}",
                    chain.until()
                )));
            }
            for (header, commit) in &got {
                chain
                    .advance(header, commit)
                    .map_err(|source| StateSyncError::Refused {
                        peer: name.clone(),
                        source,
                    })?;
                headers += 1;
            }
        }
        // The header that certifies the checkpoint's root (decided soon after it, if not yet).
        let mut after = None;
        for _ in 0..HEADER_AFTER_TRIES {
            if let Some(found) = stream.headers(height + 1, 1, 1).await?.pop() {
                after = Some(found);
                break;
            }
            tokio::time::sleep(HEADER_AFTER_RETRY).await;
        }
        let Some((header, commit)) = after else {
            return Err(stream.failed(format!("no block after its checkpoint at {height}")));
        };
        // The checkpoint itself, chunk by chunk; starting over if the peer writes a new one.
        let mut bytes = std::mem::take(&mut first);
        let mut restarted = false;
        while (bytes.len() as u64) < total_bytes {
            let (at, total, chunk) = stream.chunk(bytes.len() as u64).await?;
            if at != height || total != total_bytes {
                restarted = true;
                break;
            }
            if chunk.is_empty() {
                return Err(stream.failed("an empty checkpoint chunk".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        if restarted {
            continue;
        }
        if bytes.len() as u64 != total_bytes {
            return Err(stream.failed("more checkpoint bytes than it said".into()));
        }
        let checkpoint =
            crate::checkpoint::decode(&bytes, &trusted.chain_id()).map_err(|source| {
                StateSyncError::Checkpoint {
                    peer: name.clone(),
                    source,
                }
            })?;
        chain
            .check_checkpoint(&header, &commit, &checkpoint)
            .map_err(|source| StateSyncError::Refused {
                peer: name.clone(),
                source,
            })?;
        connection.close(cess_transport::quic::ErrorCode::Done, "synced");
        return Ok((checkpoint, total_bytes, headers));
    }
    Err(stream.failed("its checkpoint kept changing while it was fetched".into()))
}
