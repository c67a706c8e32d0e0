//! `cess node init | run`: a storage node. Owns an engine store, serves the fragment protocol on
//! QUIC, and status and Prometheus metrics on loopback HTTP.

use anyhow::{Context, Result, bail};
use cess_consensus::AccountKey;
use cess_consensus::ledger::TOKEN;
use cess_engine::Class;
use cess_engine::{FormatOptions, Key, NodeId, OpenOptions, Store, Target, format};
pub use cess_node::EngineStore;
use cess_node::chain::{ChainLink, ChainStore, LinkStatus};
use cess_node::{NodeCore, NodeIdentity};
use cess_transport::{
    Endpoint, FragmentStore, Limits, NodeAddr, NodeKey, PeerId, Server, ServerConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CONFIG_FILE: &str = "node.toml";
/// Written at start: the node's multiaddr, for scripts and the local network.
pub const ADDR_FILE: &str = "addr";
/// Where a running node writes the address of its `/metrics` and `/status`.
pub const METRICS_FILE: &str = "metrics-addr";

/// The status address a node running in `dir` wrote, if any.
pub fn metrics_addr(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    Some(text.trim().to_string())
}

/// `GET path` from a node's loopback status server: the body.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connecting to the node's status at {addr}"))?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    socket.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    socket.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => bail!("the node at {addr} answered no HTTP body"),
    }
}

/// `cess node status DIR`: the running node's `/status`.
pub fn status(dir: &Path) -> Result<String> {
    let Some(addr) = metrics_addr(dir) else {
        bail!(
            "{} has no {METRICS_FILE}: the node is not running, or runs without a metrics address",
            dir.display()
        );
    };
    http_get(&addr, "/status")
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
    /// Loopback HTTP address for /metrics and /status; none when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
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
}

fn default_grace_ms() -> u64 {
    5_000
}

fn default_partial_mib() -> u64 {
    1024
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
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
    /// (comma-separated multiaddrs; both set a chain when the file has none).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("CESS_NODE_LISTEN") {
            self.listen = v.parse().with_context(|| format!("CESS_NODE_LISTEN={v}"))?;
        }
        if let Some(v) = var("CESS_NODE_STORE") {
            self.store = v.into();
        }
        if let Some(v) = var("CESS_NODE_METRICS") {
            self.metrics = Some(
                v.parse()
                    .with_context(|| format!("CESS_NODE_METRICS={v}"))?,
            );
        }
        let peer_list = |v: String| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = var("CESS_NODE_ANNOUNCE") {
            self.announce = Some(v);
        }
        let genesis = var("CESS_NODE_GENESIS");
        let validators = var("CESS_NODE_VALIDATORS").map(peer_list);
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
                });
            }
            (None, None, None) => {}
            (None, _, _) => {
                bail!("CESS_NODE_GENESIS and CESS_NODE_VALIDATORS set a chain together")
            }
        }
        if let Some(v) = var("CESS_NODE_WRITERS") {
            self.writers = peer_list(v);
        }
        if let Some(v) = var("CESS_NODE_TRUSTED_OWNERS") {
            self.trusted_owners = peer_list(v);
        }
        Ok(())
    }

    fn trusted_owners(&self) -> Result<HashSet<PeerId>> {
        parse_peers(&self.trusted_owners, "trusted owner")
    }

    fn writers(&self) -> Result<Option<HashSet<PeerId>>> {
        if self.allow_any_writer {
            return Ok(None);
        }
        Ok(Some(parse_peers(&self.writers, "writer")?))
    }
}

fn parse_peers(peers: &[String], what: &str) -> Result<HashSet<PeerId>> {
    peers
        .iter()
        .map(|p| {
            p.parse::<PeerId>()
                .with_context(|| format!("{what} {p:?} is not a PeerId"))
        })
        .collect()
}

/// The engine identity of a node: SHA-256 of its PeerId, so a store opens only for its node.
pub fn engine_node_id(peer: &PeerId) -> NodeId {
    NodeId(Key::of(&peer.to_bytes()).0)
}

/// Options of `cess node init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub listen: SocketAddr,
    pub store: Option<PathBuf>,
    pub store_mib: u64,
    pub metrics: Option<SocketAddr>,
    pub writers: Vec<String>,
    pub allow_any_writer: bool,
    pub trusted_owners: Vec<String>,
    pub shards: Option<u32>,
    pub force: bool,
    pub announce: Option<String>,
    pub chain: Option<ChainSettings>,
}

/// Creates `dir` with a node key, a formatted store and `node.toml`. Refuses to overwrite an
/// existing node unless forced.
pub fn init(dir: &Path, options: &InitOptions) -> Result<PeerId> {
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() && !options.force {
        bail!(
            "{} already exists; a node is set up there (use --force to start over)",
            config_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = NodeKey::load_or_create(&dir.join("node.key"))?;
    let store = options.store.clone().unwrap_or_else(|| "store.img".into());
    let store_path = dir.join(&store);
    let is_new_file = !store_path.exists();
    if is_new_file {
        let file = std::fs::File::create(&store_path)
            .with_context(|| format!("creating {}", store_path.display()))?;
        file.set_len(options.store_mib << 20)
            .with_context(|| format!("sizing {}", store_path.display()))?;
    }
    let mut format_options = FormatOptions::new(engine_node_id(&key.peer_id()));
    if let Some(shards) = options.shards {
        format_options.shard_count = shards;
    }
    // A file made just now is ours to format; anything else needs --force.
    format_options.force = is_new_file || options.force;
    format(&Target::Path(store_path.clone()), &format_options)
        .with_context(|| format!("formatting {}", store_path.display()))?;
    let config = NodeConfig {
        listen: options.listen,
        key_file: "node.key".into(),
        store,
        metrics: options.metrics,
        writers: options.writers.clone(),
        allow_any_writer: options.allow_any_writer,
        trusted_owners: options.trusted_owners.clone(),
        shutdown_grace_ms: default_grace_ms(),
        partial_mib_max: default_partial_mib(),
        announce: options.announce.clone(),
        chain: options.chain.clone(),
    };
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(key.peer_id())
}

/// Runs the node in `dir` (or with the config at `config`) until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let key = Arc::new(NodeKey::load(&config.key_file)?);
    println!("# effective configuration ({})", config_path.display());
    print!("{}", toml::to_string(&config)?);
    let node_id = engine_node_id(&key.peer_id());
    let store = Store::open(
        &Target::Path(config.store.clone()),
        &OpenOptions::new(node_id),
    )
    .with_context(|| format!("opening store {}", config.store.display()))?;
    let store = Arc::new(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, config_path, key, store))
}

async fn serve(
    config: NodeConfig,
    config_path: &Path,
    key: Arc<NodeKey>,
    store: Arc<Store>,
) -> Result<()> {
    let endpoint = Endpoint::server(key.clone(), config.listen, Limits::default())?;
    let addr = endpoint.node_addr()?;
    let partial_bytes_max = config.partial_mib_max << 20;
    let Some(chain) = config.chain.clone() else {
        let server_config = ServerConfig {
            writers: config.writers()?,
            trusted_owners: config.trusted_owners()?,
            partial_bytes_max,
            ..ServerConfig::default()
        };
        let server = Server::new(
            Arc::new(EngineStore(store.clone())),
            key.clone(),
            server_config,
        );
        return serve_with(server, endpoint, &config, config_path, store, None).await;
    };
    // Reading the store's contents is a blocking call to its shards.
    let link = tokio::task::block_in_place(|| start_chain(&config, &chain, &key, &store, &addr))?;
    // The chain decides what is written here: any authenticated peer may ask.
    let server_config = ServerConfig {
        writers: None,
        partial_bytes_max,
        ..ServerConfig::default()
    };
    let chain_store = ChainStore {
        engine: EngineStore(store.clone()),
        link: link.0.clone(),
    };
    let server = Server::new(Arc::new(chain_store), key.clone(), server_config);
    serve_with(server, endpoint, &config, config_path, store, Some(link)).await
}

/// The chain side of a node: its link and what the driver reports.
type ChainView = (Arc<ChainLink>, Arc<Mutex<LinkStatus>>);

/// Follows the chain, and starts the node's driver on it.
fn start_chain(
    config: &NodeConfig,
    chain: &ChainSettings,
    key: &Arc<NodeKey>,
    store: &Arc<Store>,
    addr: &NodeAddr,
) -> Result<ChainView> {
    let ledger = crate::chain::genesis_ledger(&chain.genesis)?;
    let validators = crate::chain::parse_validators(&chain.validators)?;
    let endpoint = announced(config, addr)?;
    let collateral = match chain.collateral_tokens {
        Some(tokens) => u128::from(tokens) * TOKEN,
        None => ledger.params().miner_collateral_min,
    };
    let account = AccountKey::from_libp2p(key.keypair())
        .context("the node key is not Ed25519")?
        .id();
    if ledger.validators().iter().any(|v| v.account == account) {
        // Validators would take its connections for their peer's, and it would never sync.
        bail!(
            "this node's key is validator {account}'s; a storage node needs a key of its own \
             (`cess node init` makes one)"
        );
    }
    let stats = store.stats()?;
    let stored = store
        .list()
        .filter_map(|info| info.ok())
        .filter(|info| info.class == Class::Active)
        .map(|info| (info.key.0, info.len_bytes))
        .collect::<Vec<_>>();
    println!(
        "miner {account} on chain {}: announcing {endpoint}, {} bytes, {} fragments in the store",
        cess_consensus::codec::hex(&ledger.chain_id()[..8]),
        stats.total_bytes,
        stored.len()
    );
    let identity = NodeIdentity {
        account,
        peer_id: key.peer_id().to_bytes(),
        endpoint,
        capacity_bytes: stats.total_bytes,
        collateral,
    };
    let follower = cess_consensus::net::follow(
        ledger,
        key.clone(),
        validators.clone(),
        cess_node::chain::follower_config(),
    )?;
    let status = Arc::new(Mutex::new(LinkStatus::default()));
    let link = cess_node::chain::start(
        follower,
        NodeCore::new(identity, stored),
        EngineStore(store.clone()),
        key.clone(),
        validators,
        status.clone(),
    );
    Ok((link, status))
}

/// The address registered on the chain: `announce` (its PeerId added when missing), else
/// the listen address, which must then be one a client can dial.
fn announced(config: &NodeConfig, addr: &NodeAddr) -> Result<String> {
    let Some(announce) = &config.announce else {
        if addr.socket.ip().is_unspecified() {
            bail!(
                "the node listens on {} and announces nothing; set `announce` in node.toml \
                 (or CESS_NODE_ANNOUNCE, or --announce) to the address clients dial",
                addr.socket
            );
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
        .with_context(|| format!("announce {announce:?} is not /ip4/…/udp/…/quic-v1"))?;
    if parsed.peer != addr.peer {
        bail!("announce {announce:?} names another node's PeerId");
    }
    Ok(parsed.to_string())
}

async fn serve_with<S: FragmentStore>(
    server: Arc<Server<S>>,
    endpoint: Endpoint,
    config: &NodeConfig,
    config_path: &Path,
    store: Arc<Store>,
    chain: Option<ChainView>,
) -> Result<()> {
    let addr = endpoint.node_addr()?;
    let started = Instant::now();
    if let Some(metrics_addr) = config.metrics {
        if !metrics_addr.ip().is_loopback() {
            bail!(
                "metrics address {metrics_addr} is not loopback; status is served on loopback only"
            );
        }
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding metrics on {metrics_addr}"))?;
        let bound = listener.local_addr()?;
        println!("metrics http://{bound}/metrics");
        if let Some(dir) = config_path.parent() {
            std::fs::write(dir.join(METRICS_FILE), format!("{bound}\n"))
                .context("writing the metrics address file")?;
        }
        tokio::spawn(serve_http(
            listener,
            server.clone(),
            store.clone(),
            addr.to_string(),
            started,
            chain.clone(),
        ));
    }
    if let Some(dir) = config_path.parent() {
        std::fs::write(dir.join(ADDR_FILE), format!("{addr}\n"))
            .context("writing the addr file")?;
    }
    println!("listening {addr}");
    let serving = tokio::spawn(server.clone().serve(endpoint.clone()));
    shutdown_signal().await;
    println!(
        "shutting down: finishing {} requests in flight",
        server.in_flight()
    );
    server
        .shutdown(&endpoint, Duration::from_millis(config.shutdown_grace_ms))
        .await;
    let _ = serving.await;
    if let Some((link, _)) = &chain {
        link.follower().shutdown();
    }
    drop(server);
    let stats = tokio::task::block_in_place(|| store.stats())?;
    println!("stopped; {stats}");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Renders the node's Prometheus metrics: store gauges and protocol counters.
fn render_metrics<S: FragmentStore>(server: &Server<S>, store: &Store) -> String {
    let mut out = String::new();
    if let Ok(stats) = store.stats() {
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "cess_store_total_bytes",
            "Store capacity.",
            stats.total_bytes,
        );
        gauge("cess_store_free_bytes", "Free space.", stats.free_bytes);
        gauge(
            "cess_store_active_bytes",
            "Space held by user fragments.",
            stats.active_bytes,
        );
        gauge(
            "cess_store_idle_bytes",
            "Space held by space-proof fragments.",
            stats.idle_bytes,
        );
        gauge(
            "cess_store_active_fragments",
            "User fragments stored.",
            stats.active_count,
        );
        gauge(
            "cess_store_idle_fragments",
            "Space-proof fragments stored.",
            stats.idle_count,
        );
        gauge(
            "cess_store_read_verify_failures",
            "Reads refused because stored bytes failed their checksums.",
            stats.read_verify_failures,
        );
        gauge(
            "cess_partial_write_bytes",
            "Memory held by unfinished writes.",
            server.partial_bytes(),
        );
    }
    server.metrics().render(&mut out);
    out
}

fn render_status<S: FragmentStore>(
    server: &Server<S>,
    store: &Store,
    addr: &str,
    started: Instant,
    chain: Option<&ChainView>,
) -> String {
    let stats = store.stats();
    let value = serde_json::json!({
        "addr": addr,
        "uptime_s": started.elapsed().as_secs(),
        "in_flight": server.in_flight(),
        "store": match stats {
            Ok(s) => serde_json::json!({
                "total_bytes": s.total_bytes,
                "free_bytes": s.free_bytes,
                "active_bytes": s.active_bytes,
                "active_fragments": s.active_count,
                "idle_bytes": s.idle_bytes,
                "idle_fragments": s.idle_count,
                "read_verify_failures": s.read_verify_failures,
                "poisoned_shards": s.poisoned_shards,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        "chain": chain.map(|(link, status)| {
            let follower = link.follower().status();
            let (registered, assigned, stored) = link.summary();
            let driver = status.lock().expect("status lock").clone();
            serde_json::json!({
                "height": follower.height,
                "tip": follower.tip,
                "behind": follower.behind,
                "synced": follower.synced,
                "diverged": follower.diverged,
                "registered": registered,
                "assigned_fragments": assigned,
                "stored_fragments": stored,
                "transactions_submitted": driver.submitted,
                "transactions_included": driver.included,
                "transactions_not_included": driver.refused,
                "last_error": driver.last_error,
            })
        }),
    });
    format!("{value:#}\n")
}

/// A minimal HTTP/1.0 responder for GET /metrics and GET /status on loopback.
async fn serve_http<S: FragmentStore>(
    listener: tokio::net::TcpListener,
    server: Arc<Server<S>>,
    store: Arc<Store>,
    addr: String,
    started: Instant,
    chain: Option<ChainView>,
) {
    const HEAD_BYTES_MAX: usize = 8 << 10;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let server = server.clone();
        let store = store.clone();
        let addr = addr.clone();
        let chain = chain.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_BYTES_MAX {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, kind, body) = match line {
                l if l.starts_with(b"GET /metrics ") => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    // Stats are a blocking call to the shards.
                    tokio::task::block_in_place(|| render_metrics(&server, &store)),
                ),
                l if l.starts_with(b"GET /status ") => (
                    "200 OK",
                    "application/json",
                    tokio::task::block_in_place(|| {
                        render_status(&server, &store, &addr, started, chain.as_ref())
                    }),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /status\n".into(),
                ),
            };
            let response = format!(
                "HTTP/1.0 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        toml::from_str(
            "listen = \"0.0.0.0:4001\"\nkey_file = \"node.key\"\nstore = \"store.img\"\n",
        )
        .unwrap()
    }

    #[test]
    fn a_node_on_0_0_0_0_must_announce_and_gets_its_peer_id_added() {
        let key = NodeKey::generate();
        let addr = NodeAddr {
            socket: "0.0.0.0:4001".parse().unwrap(),
            peer: key.peer_id(),
        };
        let mut config = config();
        let e = announced(&config, &addr).unwrap_err().to_string();
        assert!(e.contains("announce"), "{e}");
        config.announce = Some("/ip4/10.0.0.7/udp/4001/quic-v1".into());
        let full = announced(&config, &addr).unwrap();
        assert_eq!(
            full,
            format!("/ip4/10.0.0.7/udp/4001/quic-v1/p2p/{}", key.peer_id())
        );
        config.announce = Some(format!(
            "/ip4/10.0.0.7/udp/4001/quic-v1/p2p/{}",
            NodeKey::generate().peer_id()
        ));
        assert!(announced(&config, &addr).is_err(), "another node's PeerId");
        config.announce = Some("not an address".into());
        assert!(announced(&config, &addr).is_err());
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
        assert!(
            config
                .apply_env(env(&[("CESS_NODE_GENESIS", "/g.bin")]))
                .is_err()
        );
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
        assert_eq!(config.chain.unwrap().validators, vec!["/c".to_string()]);
    }
}
