//! Node identity, QUIC endpoints and the signed fragment protocol.
//!
//! - [`identity`]: Ed25519 node keys in owner-only files, PeerIds, QUIC multiaddrs.
//! - [`grant`]: owner-signed upload grants, the second way (beside a node's allow list) to be
//!   allowed to write.
//! - [`message`]: the protobuf messages, their signatures, bounded decoding and the replay
//!   window, as a sans-IO verifier.
//! - [`quic`]: quinn endpoints whose TLS certificates are bound to the node key (libp2p TLS),
//!   so every connection knows its peer's PeerId.
//! - [`admission`]: who may write what, sans-IO (time as `now_ms`), with the unfinished
//!   writes' budgets and TTL (`partials`).
//! - [`attacks`]: the hostile peers the hostile suite and the benchmark run beside an honest
//!   client; [`memstore`]: the in-memory store the protocol's tests and benchmarks run against.
//! - [`protocol`], [`server`], [`client`]: one stream per request, raw fragment bytes after a
//!   signed header, resumable writes and reads, SHA-256 checked before anything is acknowledged
//!   or returned.
#![forbid(unsafe_code)]

pub mod admission;
pub mod attacks;
pub mod client;
mod fair;
pub mod grant;
pub mod identity;
pub mod memstore;
pub mod message;
mod partials;
pub mod protocol;
pub mod quic;
pub mod server;
pub mod tagging;

pub use cess_types::FragmentId;
pub use client::{Client, ClientConfig, WriteProgress};
pub use grant::GrantError;
pub use identity::{IdentityError, NodeAddr, NodeKey};
pub use libp2p_identity::PeerId;
pub use message::{MessageError, PeerReplay, Signed, Verifier, pb};
pub use protocol::{Code, HistogramSnapshot, Metrics, ProtocolError};
pub use quic::{Connection, Endpoint, ErrorCode, Limits, QuicError};
pub use server::{FragmentStore, Server, ServerConfig, StoreFault};
