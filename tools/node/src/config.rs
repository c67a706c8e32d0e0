//! The node's settings: `node.toml` (relative paths relative to the file), overridden by
//! `CESS_NODE_*` variables, and where the chain is. Everything a setting can get wrong is
//! refused here, at start, with the setting named.

use cess_consensus::codec::DecodeError;
use cess_consensus::ledger::{Genesis, GenesisError, Ledger};
use cess_engine::NodeId;
use cess_transport::{NodeAddr, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The configuration file in a node's directory.
pub const CONFIG_FILE: &str = "node.toml";
/// Written at start: the node's multiaddr, for scripts and the local network.
pub const ADDR_FILE: &str = "addr";
/// Where a running node writes the address of its `/metrics` and `/status`.
pub const METRICS_FILE: &str = "metrics-addr";

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{name}={value} is not {expected}")]
    Env {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("CESS_NODE_GENESIS and CESS_NODE_VALIDATORS set a chain together")]
    ChainEnvAlone,
    #[error("CESS_NODE_TAGGERS needs a chain (CESS_NODE_GENESIS and CESS_NODE_VALIDATORS)")]
    TaggersWithoutChain,
    #[error("CESS_NODE_IDLE_FILL_MIB needs a chain (CESS_NODE_GENESIS and CESS_NODE_VALIDATORS)")]
    IdleWithoutChain,
    #[error("tagger {0:?} is not /ip4/…/udp/…/quic-v1/p2p/…")]
    BadTagger(String),
    #[error("{what} {value:?} is not a PeerId")]
    BadPeer { what: &'static str, value: String },
    #[error(
        "the node listens on {listen} and announces nothing; set `announce` in node.toml (or \
         CESS_NODE_ANNOUNCE, or --announce) to the address clients dial"
    )]
    MustAnnounce { listen: SocketAddr },
    #[error("announce {0:?} is not /ip4/…/udp/…/quic-v1")]
    BadAnnounce(String),
    #[error("announce {0:?} names another node's PeerId")]
    ForeignAnnounce(String),
    #[error("decoding the genesis {}", path.display())]
    GenesisDecode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    #[error("the genesis {} is invalid", path.display())]
    GenesisInvalid {
        path: PathBuf,
        #[source]
        source: GenesisError,
    },
    #[error("validator {0:?} is not /ip4/…/udp/…/quic-v1/p2p/…")]
    BadValidator(String),
    #[error("no validators to follow")]
    NoValidators,
}

/// A node's configuration (`node.toml`); relative paths are relative to the file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// Ed25519 node key (mode 0600).
    pub key_file: PathBuf,
    /// The store: a block device or a preallocated file.
    pub store: PathBuf,
    /// HTTP address of the dashboard (`/`), `/status` and `/metrics`; none when absent.
    /// Loopback unless `http_public`.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Let `metrics` be an address beyond loopback (logged as a warning at start).
    #[serde(default)]
    pub http_public: bool,
    /// Rate of the background scrub that re-reads and verifies every stored byte, MiB/s
    /// (0: off).
    #[serde(default = "default_scrub_mib_per_s")]
    pub scrub_mib_per_s: u64,
    /// PeerIds allowed to write fragments.
    #[serde(default)]
    pub writers: Vec<String>,
    /// Let any authenticated peer write (a test network); `writers` is then ignored.
    #[serde(default)]
    pub allow_any_writer: bool,
    /// PeerIds of owners whose upload grants let a peer that is not in `writers` write.
    #[serde(default)]
    pub trusted_owners: Vec<String>,
    /// How long shutdown waits for requests in flight.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Memory that unfinished incoming writes may hold.
    #[serde(default = "default_partial_mib")]
    pub partial_mib_max: u64,
    /// Bounds a peer cannot talk the node out of (defaults: the transport's).
    #[serde(default)]
    pub limits: PeerLimits,
    /// The address registered on the chain for clients to dial (a multiaddr, with or without
    /// `/p2p/…`); needed when `listen` is 0.0.0.0. Default: the listen address.
    #[serde(default)]
    pub announce: Option<String>,
    /// The chain this node stores for. With it, a write is accepted only when the node's own
    /// ledger replica assigns the fragment to it (the allow list and grants are then unused);
    /// without it the node takes writes from `writers` (a network without a chain, for
    /// benchmarks).
    #[serde(default)]
    pub chain: Option<ChainSettings>,
}

/// Where the chain is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// The genesis file (its hash is the chain id).
    pub genesis: PathBuf,
    /// Validators' addresses, `/ip4/…/udp/…/quic-v1/p2p/…`; any of them serves the chain,
    /// none is trusted.
    pub validators: Vec<String>,
    /// Collateral to register with, in whole tokens (default: the chain's minimum).
    #[serde(default)]
    pub collateral_tokens: Option<u64>,
    /// Taggers' addresses, `/ip4/…/udp/…/quic-v1/p2p/…`, asked in turn for the tags of the
    /// fragments stored here (their tags are checked, so none is trusted).
    #[serde(default)]
    pub taggers: Vec<String>,
    /// Idle space (PoIS) the node fills and keeps verified at most, MiB (default: all the
    /// room its declared space leaves beside the data; 0: none).
    #[serde(default)]
    pub idle_fill_mib: Option<u64>,
}

/// What one peer, and all peers together, may hold of the node (`[limits]` in `node.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerLimits {
    /// Reads one peer may have in flight; one more is answered `Busy`.
    pub reads_per_peer_max: usize,
    /// Memory all reads in flight may hold, MiB.
    pub read_mib_max: u64,
    /// Connections one peer may hold open.
    pub connections_per_peer_max: usize,
    /// Connections the node holds open in all.
    pub connections_max: usize,
    /// Requests a peer may have open at once on one connection (QUIC streams).
    pub streams_per_connection_max: u32,
    /// Handshakes one IP address may start per second after a burst of
    /// `handshake_burst_per_ip`; past it they are dropped unanswered.
    pub handshakes_per_ip_per_s: u64,
    pub handshake_burst_per_ip: u64,
    /// Memory one writer's unfinished writes may hold, MiB (all writers together:
    /// `partial_mib_max`).
    pub partial_writer_mib_max: u64,
    /// An unfinished write untouched this long is forgotten, seconds.
    pub partial_ttl_s: u64,
    /// Request ids remembered against replay per peer; a peer past it is refused until its
    /// ids age out of the window, other peers are not.
    pub replay_per_peer_max: usize,
    /// A request stream idle this long is cut, seconds.
    pub stream_timeout_s: u64,
    /// Requests one peer may make per second (all its connections), after a burst of
    /// `request_burst_per_peer`; past it its streams wait.
    pub requests_per_peer_per_s: u64,
    pub request_burst_per_peer: u64,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        let server = cess_transport::ServerConfig::default();
        let quic = cess_transport::Limits::default();
        PeerLimits {
            reads_per_peer_max: server.reads_per_peer_max,
            read_mib_max: server.read_bytes_max >> 20,
            connections_per_peer_max: quic.connections_per_peer_max,
            connections_max: quic.connections_max,
            streams_per_connection_max: quic.streams_max,
            handshakes_per_ip_per_s: quic.handshakes_per_ip_per_s,
            handshake_burst_per_ip: quic.handshake_burst_per_ip,
            partial_writer_mib_max: server.partial_writer_bytes_max >> 20,
            partial_ttl_s: server.partial_ttl_ms / 1000,
            replay_per_peer_max: server.replay_capacity,
            stream_timeout_s: server.stream_timeout_ms / 1000,
            requests_per_peer_per_s: server.requests_per_peer_per_s,
            request_burst_per_peer: server.request_burst_per_peer,
        }
    }
}

impl PeerLimits {
    /// The fragment server's configuration with these bounds (and `partial_mib_max` for all
    /// unfinished writes together), each at least what one request needs.
    pub fn server(&self, partial_mib_max: u64) -> cess_transport::ServerConfig {
        let partial_bytes_max = (partial_mib_max << 20).max(8 << 20);
        cess_transport::ServerConfig {
            partial_bytes_max,
            partial_writer_bytes_max: (self.partial_writer_mib_max << 20)
                .clamp(8 << 20, partial_bytes_max),
            partial_ttl_ms: self.partial_ttl_s.max(1) * 1000,
            replay_capacity: self.replay_per_peer_max.max(64),
            stream_timeout_ms: self.stream_timeout_s.max(1) * 1000,
            reads_per_peer_max: self.reads_per_peer_max.max(1),
            read_bytes_max: (self.read_mib_max << 20).max(8 << 20),
            requests_per_peer_per_s: self.requests_per_peer_per_s.max(1),
            request_burst_per_peer: self.request_burst_per_peer.max(1),
            ..cess_transport::ServerConfig::default()
        }
    }

    /// The QUIC limits with these bounds.
    pub fn quic(&self) -> cess_transport::Limits {
        cess_transport::Limits {
            connections_per_peer_max: self.connections_per_peer_max.max(1),
            connections_max: self.connections_max.max(1),
            streams_max: self.streams_per_connection_max.max(1),
            handshakes_per_ip_per_s: self.handshakes_per_ip_per_s.max(1),
            handshake_burst_per_ip: self.handshake_burst_per_ip.max(1),
            ..cess_transport::Limits::default()
        }
    }
}

/// The scrub re-reads the store at 4 MiB/s: a pass over 1 TiB in about three days, a small
/// share of a disk's bandwidth.
pub fn default_scrub_mib_per_s() -> u64 {
    4
}

/// Five seconds for requests in flight at shutdown.
pub fn default_grace_ms() -> u64 {
    5_000
}

/// 1 GiB of unfinished incoming writes.
pub fn default_partial_mib() -> u64 {
    1024
}

impl NodeConfig {
    /// Reads `path`, makes its paths absolute and applies the environment.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.key_file = base.join(&config.key_file);
        config.store = base.join(&config.store);
        if let Some(chain) = &mut config.chain {
            chain.genesis = base.join(&chain.genesis);
        }
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Environment overrides: `CESS_NODE_LISTEN`, `CESS_NODE_STORE`, `CESS_NODE_METRICS`,
    /// `CESS_NODE_ANNOUNCE`, `CESS_NODE_WRITERS` and `CESS_NODE_TRUSTED_OWNERS`
    /// (comma-separated PeerIds), `CESS_NODE_GENESIS` and `CESS_NODE_VALIDATORS`
    /// (comma-separated multiaddrs; both set a chain when the file has none),
    /// `CESS_NODE_TAGGERS` (comma-separated multiaddrs, with a chain).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let socket = |name: &'static str, value: String| {
            value.parse::<SocketAddr>().map_err(|_| ConfigError::Env {
                name,
                value,
                expected: "a socket address (ip:port)",
            })
        };
        if let Some(v) = var("CESS_NODE_LISTEN") {
            self.listen = socket("CESS_NODE_LISTEN", v)?;
        }
        if let Some(v) = var("CESS_NODE_STORE") {
            self.store = v.into();
        }
        if let Some(v) = var("CESS_NODE_METRICS") {
            self.metrics = Some(socket("CESS_NODE_METRICS", v)?);
        }
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = var("CESS_NODE_ANNOUNCE") {
            self.announce = Some(v);
        }
        let genesis = var("CESS_NODE_GENESIS");
        let validators = var("CESS_NODE_VALIDATORS").map(list);
        match (&mut self.chain, genesis, validators) {
            (Some(chain), genesis, validators) => {
                if let Some(g) = genesis {
                    chain.genesis = g.into();
                }
                if let Some(v) = validators {
                    chain.validators = v;
                }
            }
            (None, Some(genesis), Some(validators)) => {
                self.chain = Some(ChainSettings {
                    genesis: genesis.into(),
                    validators,
                    collateral_tokens: None,
                    taggers: Vec::new(),
                    idle_fill_mib: None,
                });
            }
            (None, None, None) => {}
            (None, _, _) => return Err(ConfigError::ChainEnvAlone),
        }
        if let Some(v) = var("CESS_NODE_TAGGERS") {
            match &mut self.chain {
                Some(chain) => chain.taggers = list(v),
                None => return Err(ConfigError::TaggersWithoutChain),
            }
        }
        if let Some(v) = var("CESS_NODE_IDLE_FILL_MIB") {
            let mib = v.parse().map_err(|_| ConfigError::Env {
                name: "CESS_NODE_IDLE_FILL_MIB",
                value: v.clone(),
                expected: "a whole number of MiB",
            })?;
            match &mut self.chain {
                Some(chain) => chain.idle_fill_mib = Some(mib),
                None => return Err(ConfigError::IdleWithoutChain),
            }
        }
        if let Some(v) = var("CESS_NODE_WRITERS") {
            self.writers = list(v);
        }
        if let Some(v) = var("CESS_NODE_TRUSTED_OWNERS") {
            self.trusted_owners = list(v);
        }
        Ok(())
    }

    /// Owners whose grants are honoured.
    pub fn trusted_owners(&self) -> Result<HashSet<PeerId>, ConfigError> {
        parse_peers(&self.trusted_owners, "trusted owner")
    }

    /// The writers allowed, or `None` when any authenticated peer may write.
    pub fn writers(&self) -> Result<Option<HashSet<PeerId>>, ConfigError> {
        if self.allow_any_writer {
            return Ok(None);
        }
        Ok(Some(parse_peers(&self.writers, "writer")?))
    }

    /// The address registered on the chain: `announce` (its PeerId added when missing), else
    /// the listen address, which must then be one a client can dial.
    pub fn announced(&self, addr: &NodeAddr) -> Result<String, ConfigError> {
        let Some(announce) = &self.announce else {
            if addr.socket.ip().is_unspecified() {
                return Err(ConfigError::MustAnnounce {
                    listen: addr.socket,
                });
            }
            return Ok(addr.to_string());
        };
        let full = if announce.contains("/p2p/") {
            announce.clone()
        } else {
            format!("{}/p2p/{}", announce.trim_end_matches('/'), addr.peer)
        };
        let parsed: NodeAddr = full
            .parse()
            .map_err(|_| ConfigError::BadAnnounce(announce.clone()))?;
        if parsed.peer != addr.peer {
            return Err(ConfigError::ForeignAnnounce(announce.clone()));
        }
        Ok(parsed.to_string())
    }
}

fn parse_peers(peers: &[String], what: &'static str) -> Result<HashSet<PeerId>, ConfigError> {
    peers
        .iter()
        .map(|p| {
            p.parse::<PeerId>().map_err(|_| ConfigError::BadPeer {
                what,
                value: p.clone(),
            })
        })
        .collect()
}

/// The engine identity of a node: SHA-256 of its PeerId, so a store opens only for its node.
pub fn engine_node_id(peer: &PeerId) -> NodeId {
    NodeId::of(&peer.to_bytes())
}

/// The ledger at genesis, from a genesis file (its hash is the chain id).
pub fn genesis_ledger(path: &Path) -> Result<Ledger, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let genesis = Genesis::decode(&bytes).map_err(|source| ConfigError::GenesisDecode {
        path: path.to_path_buf(),
        source,
    })?;
    Ledger::genesis(&genesis).map_err(|source| ConfigError::GenesisInvalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Taggers' multiaddrs (`/ip4/…/udp/…/quic-v1/p2p/…`), possibly none.
pub fn parse_taggers(listed: &[String]) -> Result<Vec<NodeAddr>, ConfigError> {
    listed
        .iter()
        .map(|a| {
            a.parse::<NodeAddr>()
                .map_err(|_| ConfigError::BadTagger(a.clone()))
        })
        .collect()
}

/// Validators' multiaddrs (`/ip4/…/udp/…/quic-v1/p2p/…`), at least one.
pub fn parse_validators(listed: &[String]) -> Result<Vec<NodeAddr>, ConfigError> {
    let validators = listed
        .iter()
        .map(|a| {
            a.parse::<NodeAddr>()
                .map_err(|_| ConfigError::BadValidator(a.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if validators.is_empty() {
        return Err(ConfigError::NoValidators);
    }
    Ok(validators)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cess_transport::NodeKey;

    fn minimal_toml() -> &'static str {
        "listen = \"0.0.0.0:4001\"\nkey_file = \"node.key\"\nstore = \"store.img\"\n"
    }

    fn config() -> NodeConfig {
        toml::from_str(minimal_toml()).unwrap()
    }

    /// `[limits]` is optional, each key too; the defaults are the transport's; a key the node
    /// does not know is refused.
    #[test]
    fn limits_default_to_the_transports_and_each_can_be_set() {
        let defaults = config().limits;
        assert_eq!(defaults, PeerLimits::default());
        assert_eq!(
            defaults.reads_per_peer_max,
            cess_transport::ServerConfig::default().reads_per_peer_max
        );
        let set: NodeConfig = toml::from_str(
            "listen = \"0.0.0.0:4001\"\nkey_file = \"node.key\"\nstore = \"store.img\"\n\
             [limits]\nreads_per_peer_max = 2\nconnections_per_peer_max = 3\n",
        )
        .unwrap();
        assert_eq!(set.limits.reads_per_peer_max, 2);
        assert_eq!(set.limits.quic().connections_per_peer_max, 3);
        assert_eq!(set.limits.read_mib_max, defaults.read_mib_max);
        let server = set.limits.server(1024);
        assert_eq!(server.reads_per_peer_max, 2);
        assert_eq!(
            server.partial_ttl_ms,
            cess_transport::ServerConfig::default().partial_ttl_ms
        );
        let tight: NodeConfig = toml::from_str(&format!(
            "{}\n[limits]\npartial_writer_mib_max = 0\npartial_ttl_s = 5\n\
             replay_per_peer_max = 1000\nstream_timeout_s = 3\n",
            minimal_toml()
        ))
        .unwrap();
        let server = tight.limits.server(64);
        assert_eq!(
            server.partial_writer_bytes_max,
            8 << 20,
            "one request's worth at least"
        );
        assert_eq!(server.partial_ttl_ms, 5000);
        assert_eq!(server.replay_capacity, 1000);
        assert_eq!(server.stream_timeout_ms, 3000);
        assert!(
            toml::from_str::<NodeConfig>(
                "listen = \"0.0.0.0:4001\"\nkey_file = \"k\"\nstore = \"s\"\n\
                 [limits]\nreads_max = 2\n",
            )
            .is_err()
        );
    }

    #[test]
    fn a_node_on_0_0_0_0_must_announce_and_gets_its_peer_id_added() {
        let key = NodeKey::generate();
        let addr = NodeAddr {
            socket: "0.0.0.0:4001".parse().unwrap(),
            peer: key.peer_id(),
        };
        let mut config = config();
        assert!(matches!(
            config.announced(&addr),
            Err(ConfigError::MustAnnounce { .. })
        ));
        config.announce = Some("/ip4/10.0.0.7/udp/4001/quic-v1".into());
        let full = config.announced(&addr).unwrap();
        assert_eq!(
            full,
            format!("/ip4/10.0.0.7/udp/4001/quic-v1/p2p/{}", key.peer_id())
        );
        config.announce = Some(format!(
            "/ip4/10.0.0.7/udp/4001/quic-v1/p2p/{}",
            NodeKey::generate().peer_id()
        ));
        assert!(matches!(
            config.announced(&addr),
            Err(ConfigError::ForeignAnnounce(_))
        ));
        config.announce = Some("not an address".into());
        assert!(matches!(
            config.announced(&addr),
            Err(ConfigError::BadAnnounce(_))
        ));
    }

    #[test]
    fn the_environment_sets_the_chain_only_with_both_genesis_and_validators() {
        let mut config = config();
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(matches!(
            config.apply_env(env(&[("CESS_NODE_GENESIS", "/g.bin")])),
            Err(ConfigError::ChainEnvAlone)
        ));
        config
            .apply_env(env(&[
                ("CESS_NODE_GENESIS", "/g.bin"),
                ("CESS_NODE_VALIDATORS", "/a,/b"),
                ("CESS_NODE_ANNOUNCE", "/ip4/1.2.3.4/udp/1/quic-v1"),
            ]))
            .unwrap();
        let chain = config.chain.clone().unwrap();
        assert_eq!(chain.genesis, PathBuf::from("/g.bin"));
        assert_eq!(chain.validators, vec!["/a".to_string(), "/b".to_string()]);
        assert_eq!(
            config.announce.as_deref(),
            Some("/ip4/1.2.3.4/udp/1/quic-v1")
        );
        config
            .apply_env(env(&[("CESS_NODE_VALIDATORS", "/c")]))
            .unwrap();
        assert_eq!(
            config.chain.as_ref().unwrap().validators,
            vec!["/c".to_string()]
        );
        assert!(matches!(
            config.apply_env(env(&[("CESS_NODE_LISTEN", "nowhere")])),
            Err(ConfigError::Env {
                name: "CESS_NODE_LISTEN",
                ..
            })
        ));
    }
}
