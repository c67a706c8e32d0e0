//! A node's identity: an Ed25519 key in a file only its owner can read, its PeerId, and the
//! multiaddrs it is reached at.

use libp2p_identity::{Keypair, PeerId, PublicKey};
use multiaddr::{Multiaddr, Protocol};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Identity errors, each naming the file or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:o}: group or others can read it; run `chmod 600 {path}`"
    )]
    KeyFileExposed { path: String, mode: u32 },
    #[error("key file {path} does not hold an Ed25519 node key: {reason}")]
    BadKeyFile { path: String, reason: String },
    #[error("address {addr}: {reason}")]
    BadAddress { addr: String, reason: String },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.display().to_string();
    move |source| IdentityError::Io {
        action,
        path,
        source,
    }
}

/// A node's signing key.
#[derive(Clone)]
pub struct NodeKey {
    keypair: Keypair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.peer_id())
    }
}

impl NodeKey {
    pub fn generate() -> NodeKey {
        NodeKey {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// A node key from an Ed25519 keypair (a ledger account's key is its node key).
    pub fn from_ed25519(keypair: libp2p_identity::ed25519::Keypair) -> NodeKey {
        NodeKey {
            keypair: Keypair::from(keypair),
        }
    }

    /// Reads the key at `path`, refusing a file that group or others can read.
    pub fn load(path: &Path) -> Result<NodeKey, IdentityError> {
        let shown = path.display().to_string();
        let io = |action| io_error(action, path);
        let meta = std::fs::metadata(path).map_err(io("reading"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyFileExposed { path: shown, mode });
        }
        if meta.len() > 1024 {
            return Err(IdentityError::BadKeyFile {
                path: shown,
                reason: format!("{} bytes is too long for a key", meta.len()),
            });
        }
        let bytes = std::fs::read(path).map_err(io("reading"))?;
        let keypair =
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::BadKeyFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if keypair.clone().try_into_ed25519().is_err() {
            return Err(IdentityError::BadKeyFile {
                path: shown,
                reason: "not an Ed25519 key".into(),
            });
        }
        Ok(NodeKey { keypair })
    }

    /// Writes a new key to `path` with mode 0600; refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<NodeKey, IdentityError> {
        let key = NodeKey::generate();
        let io = |action| io_error(action, path);
        let bytes = key
            .keypair
            .to_protobuf_encoding()
            .expect("an Ed25519 key encodes");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("creating"))?;
        file.write_all(&bytes).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        Ok(key)
    }

    /// The key at `path`, created first if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<NodeKey, IdentityError> {
        if path.exists() {
            NodeKey::load(path)
        } else {
            NodeKey::create(path)
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.keypair
            .sign(message)
            .expect("Ed25519 signing cannot fail")
    }

    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

/// Where a node listens and who it is: `/ip4/<ip>/udp/<port>/quic-v1/p2p/<peer id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub socket: SocketAddr,
    pub peer: PeerId,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut addr = Multiaddr::empty();
        addr.push(match self.socket.ip() {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        });
        addr.push(Protocol::Udp(self.socket.port()));
        addr.push(Protocol::QuicV1);
        addr.push(Protocol::P2p(self.peer));
        write!(f, "{addr}")
    }
}

impl std::str::FromStr for NodeAddr {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<NodeAddr, IdentityError> {
        let bad = |reason: &str| IdentityError::BadAddress {
            addr: s.to_string(),
            reason: reason.to_string(),
        };
        let addr: Multiaddr = s
            .parse()
            .map_err(|e| bad(&format!("not a multiaddr: {e}")))?;
        let mut parts = addr.iter();
        let ip = match parts.next() {
            Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
            Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
            _ => return Err(bad("must start with /ip4 or /ip6")),
        };
        let Some(Protocol::Udp(port)) = parts.next() else {
            return Err(bad("expected /udp/<port> after the IP"));
        };
        let Some(Protocol::QuicV1) = parts.next() else {
            return Err(bad("expected /quic-v1 after the port"));
        };
        let Some(Protocol::P2p(peer)) = parts.next() else {
            return Err(bad("expected /p2p/<peer id> at the end"));
        };
        if parts.next().is_some() {
            return Err(bad("unexpected components after /p2p/<peer id>"));
        }
        Ok(NodeAddr {
            socket: SocketAddr::new(ip, port),
            peer,
        })
    }
}

/// Whether `signature` is `key`'s Ed25519 signature of `message`, verified strictly: a
/// small-order key, a small-order R or a non-canonical s verifies nothing. (libp2p's own check
/// accepts the identity key 01 00…00 with the signature 01 00…00 for any message, so anyone
/// could act as that PeerId.) Keys that are not Ed25519 verify nothing.
pub fn verify_strict(key: &libp2p_identity::PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = key.clone().try_into_ed25519() else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()) else {
        return false;
    };
    if key.is_weak() {
        return false;
    }
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// Whether a peer's identity key is one a node accepts: Ed25519 and not of small order.
pub fn is_strong_peer(peer: &libp2p_identity::PeerId) -> bool {
    let bytes = peer.to_bytes();
    // An Ed25519 PeerId is the identity multihash (code 0, one-byte length) of the protobuf
    // encoding of the key.
    let Some((&[0x00, len], encoded)) = bytes.split_first_chunk::<2>() else {
        return false;
    };
    if usize::from(len) != encoded.len() {
        return false;
    }
    let Ok(key) = libp2p_identity::PublicKey::try_decode_protobuf(encoded) else {
        return false;
    };
    let Ok(key) = key.try_into_ed25519() else {
        return false;
    };
    ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()).is_ok_and(|k| !k.is_weak())
}
