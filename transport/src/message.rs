//! The signed messages of the fragment protocol, after the seed's design (`MessageData` and
//! `Writefile`/`Readfile` requests and responses), with what it left open closed:
//!
//! - The signature covers a domain tag, the message kind and the whole message encoded with an
//!   empty `sign` field: header and body, so no field can be changed or moved to another kind.
//! - `node_id` must be the PeerId of `node_pub_key`; the key must be Ed25519.
//! - A timestamp outside the window, or a message id seen within it, is refused (replay).
//! - A frame's length is checked before anything is read into memory, and every field is bounded
//!   after decoding.
//!
//! Frames on a stream: `length (u32 LE) ‖ kind (u8) ‖ protobuf`, length counting kind and
//! protobuf. The verifier is a sans-IO state machine: time comes in as an argument.

use crate::identity::NodeKey;
use libp2p_identity::{PeerId, PublicKey};
use prost::Message;
use std::collections::{HashMap, VecDeque};

/// Protocol name and version, also the ALPN.
pub const PROTOCOL: &str = "cess-fragment/1";
const SIGN_DOMAIN: &[u8] = b"cess-fragment/1 signed message\0";
/// Largest data chunk one message carries.
pub const CHUNK_BYTES_MAX: usize = 1 << 20;
/// Largest frame: a full chunk plus generous room for the header.
pub const FRAME_BYTES_MAX: usize = CHUNK_BYTES_MAX + 4096;
/// Longest `detail` text in a response.
pub const DETAIL_BYTES_MAX: u64 = 256;
/// `detail` cut to [`DETAIL_BYTES_MAX`] at a character boundary, so an answer never breaks the
/// bound its reader enforces.
pub fn clip_detail(mut detail: String) -> String {
    let mut end = (DETAIL_BYTES_MAX as usize).min(detail.len());
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail.truncate(end);
    detail
}

/// Largest fragment a request may name.
pub const FRAGMENT_BYTES_MAX: u64 = 64 << 20;
/// Largest tag blob a tagger may answer (it travels in one frame): 21 000 blocks of 48 bytes,
/// a 650 MiB fragment at the default 1024 sectors per block.
pub const TAGS_BYTES_MAX: u64 = 1 << 20;

pub mod pb {
    //! The wire messages (protobuf via prost).

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MessageData {
        #[prost(string, tag = "1")]
        pub client_version: String,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp_ms: i64,
        /// 16 random bytes, unique per message.
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        #[prost(bool, tag = "4")]
        pub gossip: bool,
        /// PeerId (base58) of the author.
        #[prost(string, tag = "5")]
        pub node_id: String,
        /// The author's public key, libp2p protobuf encoding.
        #[prost(bytes = "vec", tag = "6")]
        pub node_pub_key: Vec<u8>,
        #[prost(bytes = "vec", tag = "7")]
        pub sign: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WritefileRequest {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        /// The file the fragment belongs to (32 bytes).
        #[prost(bytes = "vec", tag = "2")]
        pub file_id: Vec<u8>,
        /// The fragment's SHA-256 (32 bytes).
        #[prost(bytes = "vec", tag = "3")]
        pub fragment_id: Vec<u8>,
        #[prost(uint64, tag = "5")]
        pub offset: u64,
        #[prost(bytes = "vec", tag = "6")]
        pub data: Vec<u8>,
        /// The whole fragment's length.
        #[prost(uint64, tag = "7")]
        pub fragment_bytes: u64,
        /// Raw bytes following this frame on the stream: the fragment from `offset +
        /// data.len()` on. They are committed to by `fragment_id` (signed) and checked as the
        /// fragment's SHA-256 before the write is acknowledged.
        #[prost(uint64, tag = "8")]
        pub payload_bytes: u64,
        /// An owner's permission for the sender to write here (see [`crate::grant`]); not
        /// needed by a sender on the node's allow list.
        #[prost(message, optional, tag = "9")]
        pub grant: Option<UploadGrant>,
    }

    /// An owner's signed permission for one uploader to write until a deadline.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UploadGrant {
        /// The owner's Ed25519 public key, libp2p protobuf encoding.
        #[prost(bytes = "vec", tag = "1")]
        pub owner_pub_key: Vec<u8>,
        /// The PeerId allowed to write.
        #[prost(bytes = "vec", tag = "2")]
        pub uploader: Vec<u8>,
        /// Unix time in milliseconds after which the grant is refused.
        #[prost(int64, tag = "3")]
        pub not_after_ms: i64,
        /// The owner's signature over the domain and the grant with this field empty.
        #[prost(bytes = "vec", tag = "4")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WritefileResponse {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        #[prost(uint32, tag = "2")]
        pub code: u32,
        /// The offset the receiver wants next (resume point); the length when complete.
        #[prost(uint64, tag = "3")]
        pub offset: u64,
        /// Why, when the code is not OK (at most 256 bytes).
        #[prost(string, tag = "4")]
        pub detail: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadfileRequest {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        #[prost(bytes = "vec", tag = "2")]
        pub file_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub fragment_id: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub offset: u64,
    }

    /// A miner asks a tagger for the tags of a fragment it was assigned; the fragment's
    /// `fragment_bytes` raw bytes follow the frame.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TagRequest {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        /// The fragment's SHA-256 (32 bytes).
        #[prost(bytes = "vec", tag = "2")]
        pub fragment_id: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub fragment_bytes: u64,
    }

    /// The tagger's answer: the `cess-proofs` tag blob when the code is OK.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TagResponse {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        #[prost(uint32, tag = "2")]
        pub code: u32,
        /// Why, when the code is not OK (at most 256 bytes).
        #[prost(string, tag = "3")]
        pub detail: String,
        #[prost(bytes = "vec", tag = "4")]
        pub tags: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadfileResponse {
        #[prost(message, optional, tag = "1")]
        pub message_data: Option<MessageData>,
        #[prost(uint32, tag = "2")]
        pub code: u32,
        #[prost(uint64, tag = "3")]
        pub offset: u64,
        #[prost(bytes = "vec", tag = "5")]
        pub data: Vec<u8>,
        /// The whole fragment's length.
        #[prost(uint64, tag = "6")]
        pub fragment_bytes: u64,
        /// Raw bytes following this frame: the fragment from `offset + data.len()` to its end.
        /// The reader checks the whole fragment's SHA-256 against the id it asked for.
        #[prost(uint64, tag = "7")]
        pub payload_bytes: u64,
        /// Why, when the code is not OK (at most 256 bytes).
        #[prost(string, tag = "8")]
        pub detail: String,
    }
}

/// Why a frame or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("frame of {len_bytes} bytes exceeds the {max_bytes}-byte limit")]
    Oversize { len_bytes: usize, max_bytes: usize },
    #[error("frame truncated: {have_bytes} of {need_bytes} bytes")]
    Truncated {
        have_bytes: usize,
        need_bytes: usize,
    },
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("expected message kind {expected}, got {got}")]
    WrongKind { expected: u8, got: u8 },
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    #[error("field {field} out of bounds: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("message has no header")]
    MissingHeader,
    #[error("author key is not a valid Ed25519 public key")]
    BadPublicKey,
    #[error("node id {claimed} is not the PeerId of the author key ({actual})")]
    PeerMismatch { claimed: String, actual: String },
    #[error("bad signature")]
    BadSignature,
    #[error("timestamp {skew_ms} ms away from now, outside the {window_ms} ms window")]
    Expired { skew_ms: i64, window_ms: i64 },
    #[error("message id already seen (replay)")]
    Replayed,
    #[error("replay cache full: too many recent messages from this peer to remember; retry later")]
    ReplayCacheFull,
}

/// A message of the protocol: its kind byte and where its header lives.
pub trait Signed: Message + Default + Clone {
    const KIND: u8;
    fn header(&self) -> Option<&pb::MessageData>;
    fn header_mut(&mut self) -> &mut Option<pb::MessageData>;
    /// Bounds on the body's fields.
    fn check_body(&self) -> Result<(), MessageError>;
}

fn id32(bytes: &[u8], field: &'static str) -> Result<(), MessageError> {
    if bytes.len() == 32 {
        Ok(())
    } else {
        Err(MessageError::Field {
            field,
            reason: format!("{} bytes, expected 32", bytes.len()),
        })
    }
}

fn bounded(value: u64, max: u64, field: &'static str) -> Result<(), MessageError> {
    if value <= max {
        Ok(())
    } else {
        Err(MessageError::Field {
            field,
            reason: format!("{value} exceeds {max}"),
        })
    }
}

fn check_chunk(
    offset: u64,
    data: &[u8],
    payload_bytes: u64,
    fragment_bytes: u64,
) -> Result<(), MessageError> {
    bounded(fragment_bytes, FRAGMENT_BYTES_MAX, "fragment_bytes")?;
    bounded(data.len() as u64, CHUNK_BYTES_MAX as u64, "data")?;
    bounded(offset, fragment_bytes, "offset")?;
    bounded(offset + data.len() as u64, fragment_bytes, "offset + data")?;
    bounded(payload_bytes, fragment_bytes, "payload_bytes")?;
    bounded(
        offset + data.len() as u64 + payload_bytes,
        fragment_bytes,
        "offset + data + payload",
    )
}

macro_rules! signed {
    ($ty:ty, $kind:expr, |$m:ident| $check:expr) => {
        impl Signed for $ty {
            const KIND: u8 = $kind;
            fn header(&self) -> Option<&pb::MessageData> {
                self.message_data.as_ref()
            }
            fn header_mut(&mut self) -> &mut Option<pb::MessageData> {
                &mut self.message_data
            }
            fn check_body(&self) -> Result<(), MessageError> {
                let $m = self;
                $check
            }
        }
    };
}

signed!(pb::WritefileRequest, 1, |m| {
    id32(&m.file_id, "file_id")?;
    id32(&m.fragment_id, "fragment_id")?;
    if let Some(grant) = &m.grant {
        crate::grant::check_bounds(grant).map_err(|e| MessageError::Field {
            field: "grant",
            reason: e.to_string(),
        })?;
    }
    check_chunk(m.offset, &m.data, m.payload_bytes, m.fragment_bytes)
});
signed!(pb::WritefileResponse, 2, |m| {
    bounded(m.detail.len() as u64, DETAIL_BYTES_MAX, "detail")?;
    bounded(m.offset, FRAGMENT_BYTES_MAX, "offset")
});
signed!(pb::ReadfileRequest, 3, |m| {
    id32(&m.file_id, "file_id")?;
    id32(&m.fragment_id, "fragment_id")?;
    bounded(m.offset, FRAGMENT_BYTES_MAX, "offset")
});
signed!(pb::ReadfileResponse, 4, |m| {
    bounded(m.detail.len() as u64, DETAIL_BYTES_MAX, "detail")?;
    check_chunk(m.offset, &m.data, m.payload_bytes, m.fragment_bytes)
});
signed!(pb::TagRequest, 5, |m| {
    id32(&m.fragment_id, "fragment_id")?;
    bounded(m.fragment_bytes, FRAGMENT_BYTES_MAX, "fragment_bytes")
});
signed!(pb::TagResponse, 6, |m| {
    bounded(m.detail.len() as u64, DETAIL_BYTES_MAX, "detail")?;
    bounded(m.tags.len() as u64, TAGS_BYTES_MAX, "tags")
});

/// The bytes a signature covers: domain, kind, and the message with an empty signature.
fn signed_bytes<M: Signed>(message: &M) -> Vec<u8> {
    let mut unsigned = message.clone();
    if let Some(h) = unsigned.header_mut() {
        h.sign.clear();
    }
    let mut bytes = Vec::with_capacity(SIGN_DOMAIN.len() + 1 + unsigned.encoded_len());
    bytes.extend_from_slice(SIGN_DOMAIN);
    bytes.push(M::KIND);
    unsigned.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

/// Fills the header (author, time, a fresh id) and signs the message.
pub fn sign<M: Signed>(message: &mut M, key: &NodeKey, now_ms: i64, id: [u8; 16]) {
    *message.header_mut() = Some(pb::MessageData {
        client_version: concat!("cess/", env!("CARGO_PKG_VERSION")).into(),
        timestamp_ms: now_ms,
        id: id.to_vec(),
        gossip: false,
        node_id: key.peer_id().to_base58(),
        node_pub_key: key.public().encode_protobuf(),
        sign: Vec::new(),
    });
    let signature = key.sign(&signed_bytes(message));
    message.header_mut().as_mut().expect("header just set").sign = signature;
}

/// `length ‖ kind ‖ protobuf`.
pub fn encode_frame<M: Signed>(message: &M) -> Vec<u8> {
    let body_len = 1 + message.encoded_len();
    let mut frame = Vec::with_capacity(4 + body_len);
    frame.extend_from_slice(&(body_len as u32).to_le_bytes());
    frame.push(M::KIND);
    message.encode(&mut frame).expect("a Vec grows as needed");
    frame
}

/// Reads a frame's length prefix; refuses an oversize frame before its body is read.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, MessageError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(MessageError::Oversize {
            len_bytes: len,
            max_bytes: FRAME_BYTES_MAX,
        });
    }
    if len == 0 {
        return Err(MessageError::Truncated {
            have_bytes: 0,
            need_bytes: 1,
        });
    }
    Ok(len)
}

/// Decodes a whole frame (prefix included) as message `M`, checking every bound.
pub fn decode_frame<M: Signed>(frame: &[u8]) -> Result<M, MessageError> {
    let Some(prefix) = frame.first_chunk::<4>() else {
        return Err(MessageError::Truncated {
            have_bytes: frame.len(),
            need_bytes: 4,
        });
    };
    let len = frame_len(*prefix)?;
    let body = &frame[4..];
    if body.len() < len {
        return Err(MessageError::Truncated {
            have_bytes: body.len(),
            need_bytes: len,
        });
    }
    if body.len() > len {
        return Err(MessageError::Malformed(format!(
            "{} bytes after the frame",
            body.len() - len
        )));
    }
    decode_body(body)
}

/// Decodes `kind ‖ protobuf` as `M`, checking every bound.
pub fn decode_body<M: Signed>(body: &[u8]) -> Result<M, MessageError> {
    let Some((&kind, proto)) = body.split_first() else {
        return Err(MessageError::Truncated {
            have_bytes: 0,
            need_bytes: 1,
        });
    };
    // 1..=4: the fragment protocol; 5, 6: tagging (`crate::tagging`).
    if !(1..=6).contains(&kind) {
        return Err(MessageError::UnknownKind(kind));
    }
    if kind != M::KIND {
        return Err(MessageError::WrongKind {
            expected: M::KIND,
            got: kind,
        });
    }
    let message = M::decode(proto).map_err(|e| MessageError::Malformed(e.to_string()))?;
    let h = message.header().ok_or(MessageError::MissingHeader)?;
    let field =
        |field: &'static str, len: usize, max: usize| bounded(len as u64, max as u64, field);
    field("client_version", h.client_version.len(), 64)?;
    field("node_id", h.node_id.len(), 128)?;
    field("node_pub_key", h.node_pub_key.len(), 64)?;
    field("sign", h.sign.len(), 128)?;
    if h.id.len() != 16 {
        return Err(MessageError::Field {
            field: "id",
            reason: format!("{} bytes, expected 16", h.id.len()),
        });
    }
    message.check_body()?;
    Ok(message)
}

/// Checks authors, signatures and freshness; remembers message ids to refuse replays.
#[derive(Debug)]
pub struct Verifier {
    window_ms: i64,
    capacity: usize,
    seen: HashMap<[u8; 16], i64>,
    /// (forget at, id) in arrival order; ids are forgotten once outside the window.
    expiry: VecDeque<(i64, [u8; 16])>,
}

impl Verifier {
    /// Accepts timestamps within `window_ms` of now; remembers at most `capacity` ids.
    pub fn new(window_ms: i64, capacity: usize) -> Verifier {
        Verifier {
            window_ms,
            capacity,
            seen: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Verifies a decoded message at time `now_ms`; returns its author.
    pub fn verify<M: Signed>(&mut self, message: &M, now_ms: i64) -> Result<PeerId, MessageError> {
        let (author, id, timestamp_ms) = check_signed(message, now_ms, self.window_ms)?;
        self.remember(id, timestamp_ms, now_ms)?;
        Ok(author)
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Remembers a checked message's id; refuses one seen within the window.
    pub fn remember(
        &mut self,
        id: [u8; 16],
        timestamp_ms: i64,
        now_ms: i64,
    ) -> Result<(), MessageError> {
        // Forget ids whose messages would now be refused as expired anyway.
        while let Some(&(at, old)) = self.expiry.front() {
            if at > now_ms {
                break;
            }
            self.expiry.pop_front();
            self.seen.remove(&old);
        }
        if self.seen.contains_key(&id) {
            return Err(MessageError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(MessageError::ReplayCacheFull);
        }
        let forget_at = timestamp_ms.saturating_add(self.window_ms);
        self.seen.insert(id, forget_at);
        self.expiry.push_back((forget_at.max(now_ms), id));
        Ok(())
    }
}

/// The checks of a message that need no memory (header, key, author, signature, freshness):
/// its author, id and timestamp. Cheap to run outside any lock.
pub fn check_signed<M: Signed>(
    message: &M,
    now_ms: i64,
    window_ms: i64,
) -> Result<(PeerId, [u8; 16], i64), MessageError> {
    let h = message.header().ok_or(MessageError::MissingHeader)?;
    let key =
        PublicKey::try_decode_protobuf(&h.node_pub_key).map_err(|_| MessageError::BadPublicKey)?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(MessageError::BadPublicKey);
    }
    let author = key.to_peer_id();
    if h.node_id != author.to_base58() {
        return Err(MessageError::PeerMismatch {
            claimed: h.node_id.clone(),
            actual: author.to_base58(),
        });
    }
    if !crate::identity::verify_strict(&key, &signed_bytes(message), &h.sign) {
        return Err(MessageError::BadSignature);
    }
    // Up to the window in the past, a quarter of it in the future: an id is remembered until
    // its timestamp leaves the window, so a message dated ahead by the whole window would be
    // remembered for twice the window (and a peer could keep twice its share of ids).
    let skew_ms = h.timestamp_ms.saturating_sub(now_ms);
    let allowed_ms = if skew_ms > 0 {
        window_ms / 4
    } else {
        window_ms
    };
    if skew_ms.saturating_abs() > allowed_ms {
        return Err(MessageError::Expired {
            skew_ms,
            window_ms: allowed_ms,
        });
    }
    let id: [u8; 16] =
        h.id.as_slice()
            .try_into()
            .map_err(|_| MessageError::Field {
                field: "id",
                reason: "not 16 bytes".into(),
            })?;
    Ok((author, id, h.timestamp_ms))
}

/// Replay protection kept per author, so that one peer's messages fill only its own memory:
/// each author has a [`Verifier`] of `per_peer` ids, and when all authors together hold
/// `total_max` ids the least recently heard ones are forgotten, never refused. Forgetting a
/// peer is safe: a request is served only on its author's own authenticated connection, so
/// nobody else can replay it.
#[derive(Debug)]
pub struct PeerReplay {
    window_ms: i64,
    per_peer: usize,
    total_max: usize,
    peers: HashMap<PeerId, (Verifier, u64)>,
    total: usize,
    tick: u64,
}

impl PeerReplay {
    pub fn new(window_ms: i64, per_peer: usize, total_max: usize) -> PeerReplay {
        PeerReplay {
            window_ms,
            per_peer: per_peer.max(1),
            total_max: total_max.max(1),
            peers: HashMap::new(),
            total: 0,
            tick: 0,
        }
    }

    /// Remembers `author`'s message `id`; refuses a replay, or an author over its own bound.
    pub fn remember(
        &mut self,
        author: PeerId,
        id: [u8; 16],
        timestamp_ms: i64,
        now_ms: i64,
    ) -> Result<(), MessageError> {
        self.tick += 1;
        while self.total >= self.total_max {
            let oldest = self
                .peers
                .iter()
                .filter(|(peer, _)| **peer != author)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(peer, _)| *peer);
            let Some(oldest) = oldest else { break };
            let (gone, _) = self.peers.remove(&oldest).expect("found above");
            self.total -= gone.len();
        }
        let (window_ms, per_peer, tick) = (self.window_ms, self.per_peer, self.tick);
        let (verifier, used) = self
            .peers
            .entry(author)
            .or_insert_with(|| (Verifier::new(window_ms, per_peer), tick));
        *used = tick;
        let before = verifier.len();
        let result = verifier.remember(id, timestamp_ms, now_ms);
        let after = verifier.len();
        self.total = self.total + after - before;
        result
    }

    /// Ids remembered for every peer together.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}
