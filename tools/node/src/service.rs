//! The node's process: opens the store, serves the fragment protocol on QUIC, follows the chain
//! with [`crate::chain`]'s driver when `chain` is set, serves its dashboard, `/status` and
//! `/metrics` ([`crate::http`]) on loopback HTTP, runs the background scrub, and stops cleanly on SIGINT or SIGTERM (requests in flight get
//! `shutdown_grace_ms`). Every failure to start is a [`ServiceError`] naming what failed.

use crate::chain::{ChainStore, LinkStatus};
use crate::config::{
    ADDR_FILE, ChainSettings, ConfigError, METRICS_FILE, NodeConfig, engine_node_id,
    genesis_ledger, parse_taggers, parse_validators,
};
use crate::http::Surface;
use crate::{EngineStore, NodeCore, NodeIdentity};
use cess_consensus::AccountKey;
use cess_consensus::ledger::TOKEN;
use cess_consensus::net::NetError;
use cess_engine::{Class, OpenError, OpenOptions, Store, StoreError, Target};
use cess_http::HttpLimits;
use cess_transport::{
    Endpoint, FragmentStore, IdentityError, NodeAddr, NodeKey, QuicError, Server, ServerConfig,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why a node could not start, or stopped with an error.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading the node key")]
    Key(#[source] IdentityError),
    #[error("opening store {}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: OpenError,
    },
    #[error("reading the store")]
    StoreRead(#[source] StoreError),
    #[error("the node's endpoint")]
    Endpoint(#[from] QuicError),
    #[error("following the chain")]
    Follow(#[source] NetError),
    #[error("the replica's block store")]
    ChainStore(#[source] cess_consensus::store::StoreError),
    #[error("the node key is not Ed25519")]
    NotEd25519,
    #[error(
        "this node's key is validator {account}'s; a storage node needs a key of its own (`cess \
         node init` makes one)"
    )]
    ValidatorKey { account: String },
    #[error("the HTTP surface")]
    Http(#[from] cess_http::HttpError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// Runs the node configured at `config_path` until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> Result<(), ServiceError> {
    let config = NodeConfig::load(config_path)?;
    let key = Arc::new(NodeKey::load(&config.key_file).map_err(ServiceError::Key)?);
    println!("# effective configuration ({})", config_path.display());
    print!(
        "{}",
        toml::to_string(&config).expect("a loaded configuration serializes")
    );
    let node_id = engine_node_id(&key.peer_id());
    let store = Store::open(
        &Target::Path(config.store.clone()),
        &OpenOptions::new(node_id),
    )
    .map_err(|source| ServiceError::Store {
        path: config.store.clone(),
        source,
    })?;
    let store = Arc::new(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))?;
    runtime.block_on(serve(config, config_path, key, store))
}

async fn serve(
    config: NodeConfig,
    config_path: &Path,
    key: Arc<NodeKey>,
    store: Arc<Store>,
) -> Result<(), ServiceError> {
    let endpoint = Endpoint::server(key.clone(), config.listen, config.limits.quic())?;
    let addr = endpoint
        .node_addr()
        .map_err(io("reading the endpoint's address"))?;
    let limits = config.limits.server(config.partial_mib_max);
    let Some(chain) = config.chain.clone() else {
        let server_config = ServerConfig {
            writers: config.writers()?,
            trusted_owners: config.trusted_owners()?,
            ..limits
        };
        let server = Server::new(
            Arc::new(EngineStore(store.clone())),
            key.clone(),
            server_config,
        );
        return serve_with(server, endpoint, &config, config_path, store, None).await;
    };
    // Reading the store's contents is a blocking call to its shards.
    let chain_dir = config_path.parent().unwrap_or(Path::new("."));
    let link = tokio::task::block_in_place(|| {
        start_chain(&config, &chain, &key, &store, &addr, chain_dir)
    })?;
    // The chain decides what is written here: any authenticated peer may ask.
    let server_config = ServerConfig {
        writers: None,
        ..limits
    };
    let chain_store = ChainStore {
        engine: EngineStore(store.clone()),
        link: link.0.clone(),
    };
    let server = Server::new(Arc::new(chain_store), key.clone(), server_config);
    serve_with(server, endpoint, &config, config_path, store, Some(link)).await
}

/// The chain side of a node: its link and what the driver reports.
use crate::http::ChainView;

/// Follows the chain, and starts the node's driver on it.
/// The blocks the node's replica applied, in its directory: a restart replays them instead of
/// syncing the chain from block 1.
pub const CHAIN_BLOCKS_FILE: &str = "chain.blocks";

fn start_chain(
    config: &NodeConfig,
    chain: &ChainSettings,
    key: &Arc<NodeKey>,
    store: &Arc<Store>,
    addr: &NodeAddr,
    dir: &Path,
) -> Result<ChainView, ServiceError> {
    let ledger = genesis_ledger(&chain.genesis)?;
    let validators = parse_validators(&chain.validators)?;
    let taggers = parse_taggers(&chain.taggers)?;
    let endpoint = config.announced(addr)?;
    let collateral = match chain.collateral_tokens {
        Some(tokens) => u128::from(tokens) * TOKEN,
        None => ledger.params().miner_collateral_min,
    };
    let account = AccountKey::from_libp2p(key.keypair())
        .ok_or(ServiceError::NotEd25519)?
        .id();
    if ledger.validators().iter().any(|v| v.account == account) {
        // Validators would take its connections for their peer's, and it would never sync.
        return Err(ServiceError::ValidatorKey {
            account: account.to_string(),
        });
    }
    let stats = store.stats().map_err(ServiceError::StoreRead)?;
    // What the store holds, told apart by whether its tags are kept with it.
    let (stored, untagged): (Vec<_>, Vec<_>) = store
        .list()
        .filter_map(|info| info.ok())
        .filter(|info| info.class == Class::Active)
        .map(|info| {
            let tagged = store
                .meta(info.key)
                .wait()
                .is_ok_and(|meta| cess_proofs::Tags::decode(&meta).is_ok());
            ((info.key, info.len_bytes), tagged)
        })
        .partition(|(_, tagged)| *tagged);
    let stored: Vec<_> = stored.into_iter().map(|(f, _)| f).collect();
    // Idle files never take the engine's reserve (one largest fragment per shard, kept for
    // user writes), whatever the policy says.
    let geometry = &store.superblock().geometry;
    let mut idle_capacity = stats
        .total_bytes
        .saturating_sub(u64::from(geometry.shard_count) * geometry.max_object_bytes);
    // An idle file is one engine fragment: a store formatted for smaller fragments keeps none.
    let idle_file_bytes = ledger.params().pois.file_bytes();
    if idle_file_bytes > geometry.max_object_bytes {
        tracing::warn!(
            "idle space (PoIS) is off: the chain's idle files are {} MiB and this store takes \
             fragments of {} MiB at most (format it with `cess node init --max-fragment-mib {}`)",
            idle_file_bytes >> 20,
            geometry.max_object_bytes >> 20,
            idle_file_bytes.div_ceil(1 << 20)
        );
        idle_capacity = 0;
    }
    let idle_policy = crate::idle::IdlePolicy {
        fill_bytes_max: chain
            .idle_fill_mib
            .map_or(u64::MAX, |mib| mib.saturating_mul(1 << 20)),
        store_bytes_max: idle_capacity,
        // One set per core (a set is one sequential computation).
        parallel_sets: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Idle files, by the number in their metadata (one without is an orphan: deleted).
    let mut idle_files = Vec::new();
    for info in store.list().filter_map(|info| info.ok()) {
        if info.class != Class::Idle {
            continue;
        }
        match store
            .meta(info.key)
            .wait()
            .ok()
            .as_deref()
            .and_then(crate::idle::parse_idle_meta)
        {
            Some(number) => idle_files.push((number, info.key)),
            None => {
                let _ = store.delete(info.key).wait();
            }
        }
    }
    let untagged: Vec<_> = untagged.into_iter().map(|(f, _)| f).collect();
    println!(
        "miner {account} on chain {}: announcing {endpoint}, {} bytes, {} fragments in the \
         store ({} waiting for their tags), {} taggers",
        cess_consensus::codec::hex(&ledger.chain_id()[..8]),
        stats.total_bytes,
        stored.len() + untagged.len(),
        untagged.len(),
        taggers.len()
    );
    let identity = NodeIdentity {
        account,
        peer_id: key.peer_id().to_bytes(),
        endpoint,
        capacity_bytes: stats.total_bytes,
        collateral,
    };
    let blocks_path = dir.join(CHAIN_BLOCKS_FILE);
    let (blocks, opened) =
        cess_consensus::store::BlockStore::open(&blocks_path, &ledger.chain_id())
            .map_err(ServiceError::ChainStore)?;
    if opened.torn_bytes > 0 {
        tracing::warn!(
            "{}: dropped a torn last record ({} bytes; its block is synced again)",
            blocks_path.display(),
            opened.torn_bytes
        );
    }
    if opened.height > 0 {
        println!(
            "replica: replaying {} blocks from {}",
            opened.height,
            blocks_path.display()
        );
    }
    let follower = cess_consensus::net::follow_with_store(
        ledger,
        key.clone(),
        validators.clone(),
        crate::chain::follower_config(),
        Some(blocks),
    )
    .map_err(ServiceError::Follow)?;
    let status = Arc::new(Mutex::new(LinkStatus::default()));
    let link = crate::chain::start(
        follower,
        NodeCore::new(identity, stored)
            .untagged(untagged)
            .with_idle(crate::idle::IdleCore::new(idle_policy, idle_files)),
        EngineStore(store.clone()),
        key.clone(),
        validators,
        taggers,
        status.clone(),
    );
    Ok((link, status))
}

async fn serve_with<S: FragmentStore>(
    server: Arc<Server<S>>,
    endpoint: Endpoint,
    config: &NodeConfig,
    config_path: &Path,
    store: Arc<Store>,
    chain: Option<ChainView>,
) -> Result<(), ServiceError> {
    let addr = endpoint
        .node_addr()
        .map_err(io("reading the endpoint's address"))?;
    if config.scrub_mib_per_s > 0 {
        store.start_scrub(config.scrub_mib_per_s << 20);
    }
    if let Some(http_addr) = config.metrics {
        let listener = cess_http::bind(http_addr, config.http_public).await?;
        let bound = listener
            .local_addr()
            .map_err(io("reading the HTTP address"))?;
        println!("dashboard http://{bound}/ (also /status, /metrics)");
        if let Some(dir) = config_path.parent() {
            std::fs::write(dir.join(METRICS_FILE), format!("{bound}\n"))
                .map_err(io("writing the metrics address file"))?;
        }
        let surface = Surface::new(
            server.clone(),
            endpoint.clone(),
            store.clone(),
            addr.to_string(),
            chain.clone(),
            config.scrub_mib_per_s > 0,
            !config.http_public,
        );
        tokio::spawn(cess_http::serve(
            listener,
            HttpLimits::default(),
            surface.handler(),
            surface.http.clone(),
        ));
        tokio::spawn(crate::http::watch(surface));
    }
    if let Some(dir) = config_path.parent() {
        std::fs::write(dir.join(ADDR_FILE), format!("{addr}\n"))
            .map_err(io("writing the addr file"))?;
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
    let stats = tokio::task::block_in_place(|| store.stats()).map_err(ServiceError::StoreRead)?;
    println!("stopped; {stats}");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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
