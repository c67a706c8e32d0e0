//! Node identity and the signed fragment protocol's messages.
//!
//! Here so far: [`identity`] (Ed25519 node keys in owner-only files, PeerIds, QUIC multiaddrs)
//! and [`message`] (the protobuf messages, their signatures, bounded decoding and the replay
//! window, as a sans-IO verifier). Not here yet (issue 4 continues): the QUIC endpoints with
//! certificates bound to the node key, resumable transfers, the node and the client.
#![forbid(unsafe_code)]

pub mod identity;
pub mod message;

pub use identity::{IdentityError, NodeAddr, NodeKey};
pub use libp2p_identity::PeerId;
pub use message::{MessageError, Signed, Verifier, pb};
