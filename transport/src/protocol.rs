//! The fragment protocol on QUIC streams: what both sides share.
//!
//! One bidirectional stream per request. The requester sends one signed frame, then, for a
//! write, the fragment's bytes from the frame's offset on, raw (no copy into a message). The
//! responder answers one signed frame, then, for a read, the bytes raw. Raw bytes are committed
//! to by the signed `fragment_id`: the receiver of a whole fragment checks its SHA-256 before
//! it acknowledges (writes) or returns it (reads), and TLS authenticates every byte's sender.
//!
//! Resuming: a write answered `Continue(offset)` goes on from `offset`; the receiver keeps the
//! bytes of an unfinished write (in memory, bounded, for a while) and never stores them as a
//! fragment until all are there and hash right. A reader resumes from its own offset.

use crate::message::{MessageError, Signed, decode_body, frame_len};
use crate::quic::QuicError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// Response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// Done: the fragment is stored (write) or follows (read).
    Ok = 0,
    /// Send the fragment from the response's offset on.
    Continue = 1,
    NotFound = 2,
    /// The writer may not store fragments here.
    Unauthorized = 3,
    /// The bytes received do not hash to the fragment id; nothing was kept.
    Mismatch = 4,
    /// Too many unfinished writes in memory; retry later.
    Busy = 5,
    /// A request that cannot be served as asked (offset past the end, expired, replayed).
    BadRequest = 6,
    /// The node's store failed (out of space, I/O error, corrupt data refused).
    StoreFailed = 7,
}

impl Code {
    pub const ALL: [Code; 8] = [
        Code::Ok,
        Code::Continue,
        Code::NotFound,
        Code::Unauthorized,
        Code::Mismatch,
        Code::Busy,
        Code::BadRequest,
        Code::StoreFailed,
    ];

    pub fn from_u32(code: u32) -> Option<Code> {
        Code::ALL.get(code as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Continue => "continue",
            Code::NotFound => "not_found",
            Code::Unauthorized => "unauthorized",
            Code::Mismatch => "mismatch",
            Code::Busy => "busy",
            Code::BadRequest => "bad_request",
            Code::StoreFailed => "store_failed",
        }
    }
}

/// Why a request failed, as the requester sees it.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Quic(#[from] QuicError),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write failed: {0}")]
    Write(quinn::WriteError),
    #[error("stream read failed: {0}")]
    Read(quinn::ReadError),
    #[error("stream ended after {have_bytes} of {need_bytes} bytes")]
    Ended { have_bytes: u64, need_bytes: u64 },
    #[error("bad message from the peer: {0}")]
    Message(#[from] MessageError),
    #[error("message signed by {author}, but the connection is with {peer}")]
    WrongAuthor { author: String, peer: String },
    #[error("peer refused: {code:?}: {detail}")]
    Refused { code: Code, detail: String },
    #[error("peer answered unknown code {0}")]
    UnknownCode(u32),
    #[error("fragment read from the peer does not hash to its id")]
    Corrupt,
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("node down (recently failed to connect): {0}")]
    Down(String),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<ProtocolError>,
    },
}

impl ProtocolError {
    /// Whether trying again (on a fresh connection if need be) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            // Turned away for who it is: asking again changes nothing.
            ProtocolError::Connection(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == crate::quic::ErrorCode::Refused.into() =>
            {
                false
            }
            ProtocolError::Quic(_)
            | ProtocolError::Connection(_)
            | ProtocolError::Write(_)
            | ProtocolError::Read(_)
            | ProtocolError::Ended { .. }
            | ProtocolError::Timeout(_) => true,
            ProtocolError::Refused { code, .. } => *code == Code::Busy,
            _ => false,
        }
    }
}

/// Milliseconds since the Unix epoch, for message timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads one frame's body (`kind ‖ protobuf`), refusing an oversize one before reading it.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, ProtocolError> {
    let mut prefix = [0u8; 4];
    read_exact(recv, &mut prefix).await?;
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    read_exact(recv, &mut body).await?;
    Ok(body)
}

pub(crate) async fn read_message<M: Signed>(
    recv: &mut quinn::RecvStream,
) -> Result<M, ProtocolError> {
    let body = read_frame(recv).await?;
    Ok(decode_body(&body)?)
}

/// Fills `buf` from the stream; `Ended` when the stream finishes first.
pub(crate) async fn read_exact(
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
) -> Result<(), ProtocolError> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read(&mut buf[filled..]).await? {
            Some(n) => filled += n,
            None => {
                return Err(ProtocolError::Ended {
                    have_bytes: filled as u64,
                    need_bytes: buf.len() as u64,
                });
            }
        }
    }
    Ok(())
}

/// Request latency buckets (upper bounds, ms) of the Prometheus histograms.
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// A latency histogram with fixed buckets, lock-free (each bucket counts its own range).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let ms = elapsed.as_secs_f64() * 1e3;
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum (seconds), count, and the count in each bucket (upper bound in seconds, not
    /// cumulative), the last bucket unbounded (`f64::MAX`): what a metrics encoder takes.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
            .iter()
            .zip(&self.buckets)
            .map(|(bound_ms, bucket)| (bound_ms / 1e3, bucket.load(Relaxed)))
            .collect();
        let count = self.count.load(Relaxed);
        let bounded: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(bounded)));
        HistogramSnapshot {
            sum_s: self.sum_us.load(Relaxed) as f64 / 1e6,
            count,
            buckets,
        }
    }
}

/// A histogram read at one moment (see [`LatencyHistogram::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum_s: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// What a node's protocol server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub write_latency: LatencyHistogram,
    pub read_latency: LatencyHistogram,
    /// Responses by code, indexed by `Code as usize`.
    pub responses: [AtomicU64; Code::ALL.len()],
    /// Peers disconnected for breaking the protocol.
    pub protocol_violations: AtomicU64,
    /// Streams that ended in a transport error or timeout before an answer.
    pub stream_errors: AtomicU64,
    /// Writes refused because their upload grant did not hold.
    pub grants_refused: AtomicU64,
    /// Writes the store refused before any byte was buffered (not assigned to this node).
    pub writes_refused: AtomicU64,
    /// Reads answered `Busy`: the peer had all its read slots, or the read memory was taken.
    pub reads_refused: AtomicU64,
    /// Reads the store refused to this peer (not an owner, delegate, restorer or validator).
    pub reads_unauthorized: AtomicU64,
    /// Connections closed after their handshake: the peer has no standing here.
    pub peers_refused: AtomicU64,
    /// Times a peer over its request rate was made to wait before its next stream was taken.
    pub requests_paced: AtomicU64,
}

impl Metrics {
    pub fn count_response(&self, code: Code) {
        self.responses[code as usize].fetch_add(1, Relaxed);
    }
}

/// A stream that failed because its connection was lost says why the connection went (the
/// peer's close reason: "no standing on the chain", "shutting down"), not only that it did.
impl From<quinn::ReadError> for ProtocolError {
    fn from(e: quinn::ReadError) -> ProtocolError {
        match e {
            quinn::ReadError::ConnectionLost(lost) => ProtocolError::Connection(lost),
            other => ProtocolError::Read(other),
        }
    }
}

impl From<quinn::WriteError> for ProtocolError {
    fn from(e: quinn::WriteError) -> ProtocolError {
        match e {
            quinn::WriteError::ConnectionLost(lost) => ProtocolError::Connection(lost),
            other => ProtocolError::Write(other),
        }
    }
}

/// Why a request ended without an answer, and whether to drop the peer.
pub(crate) enum Abort {
    /// The peer broke the protocol: disconnect it.
    Violation(String),
    /// The stream broke (peer gone, reset, timeout).
    Stream(ProtocolError),
}

impl From<ProtocolError> for Abort {
    fn from(e: ProtocolError) -> Abort {
        match e {
            ProtocolError::Message(m) => Abort::Violation(m.to_string()),
            other => Abort::Stream(other),
        }
    }
}
