//! `cess tagger init | run`: the tagger service (the `cess-tagger` library) as a process. Its
//! directory holds `tagger.toml`, its QUIC identity `node.key` and, unless the configuration
//! names another, its PoDR² secret `tagger.key` (mode 0600, never given out).

use anyhow::{Context, Result};
use cess_http::metrics::{Registry, ScrapeFn, Unit};
use cess_tagger::{BackendChoice, Tagger, open_backend};
use cess_transport::tagging::{TAG_PROTOCOL, TagServer, TagServerConfig};
use cess_transport::{Endpoint, Limits, NodeKey};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const CONFIG_FILE: &str = "tagger.toml";
/// Written at start: the tagger's multiaddr.
pub const ADDR_FILE: &str = "addr";

/// A tagger's configuration; relative paths are relative to the file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggerConfig {
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// The QUIC identity (Ed25519, mode 0600).
    pub node_key_file: PathBuf,
    /// The PoDR² secret key (mode 0600).
    pub tagger_key_file: PathBuf,
    /// `auto` (a hardware GPU when found, else the CPU), `cpu` or `gpu`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The chain whose orders say what to tag for whom.
    pub genesis: PathBuf,
    pub validators: Vec<String>,
    /// HTTP address of `/metrics` (loopback unless `http_public`); none when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    #[serde(default)]
    pub http_public: bool,
}

fn default_backend() -> String {
    "auto".into()
}

pub fn parse_backend(name: &str) -> Result<BackendChoice> {
    match name {
        "auto" => Ok(BackendChoice::Auto),
        "cpu" => Ok(BackendChoice::Cpu),
        "gpu" => Ok(BackendChoice::Gpu),
        other => anyhow::bail!("backend {other:?}: expected auto, cpu or gpu"),
    }
}

/// What `cess tagger init` sets.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub listen: SocketAddr,
    /// An existing secret key to use; a new one is made in the directory otherwise.
    pub tagger_key: Option<PathBuf>,
    pub backend: String,
    pub genesis: PathBuf,
    pub validators: Vec<String>,
    pub metrics: Option<SocketAddr>,
}

/// Creates `dir` with a QUIC identity, a tagger secret key (unless one is named) and
/// `tagger.toml`; returns the tagger's public key id.
pub fn init(dir: &Path, options: &InitOptions) -> Result<String> {
    let config_path = dir.join(CONFIG_FILE);
    anyhow::ensure!(
        !config_path.exists(),
        "{} already exists; a tagger is set up there",
        config_path.display()
    );
    parse_backend(&options.backend)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    NodeKey::load_or_create(&dir.join("node.key"))?;
    let tagger_key_file = match &options.tagger_key {
        Some(path) => std::path::absolute(path)?,
        None => {
            crate::proof_cmd::create_tagger_key(
                &dir.join("tagger.key"),
                cess_proofs::SECTORS_PER_BLOCK_DEFAULT,
            )?;
            "tagger.key".into()
        }
    };
    let config = TaggerConfig {
        listen: options.listen,
        node_key_file: "node.key".into(),
        tagger_key_file,
        backend: options.backend.clone(),
        genesis: std::path::absolute(&options.genesis)?,
        validators: options.validators.clone(),
        metrics: options.metrics,
        http_public: false,
    };
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let key = crate::proof_cmd::read_secret(&dir.join(&config.tagger_key_file))?;
    Ok(cess_consensus::codec::hex(&key.public().id().0))
}

/// Runs the tagger in `dir` until SIGINT or SIGTERM.
pub fn run(dir: &Path) -> Result<()> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: TaggerConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let secret = crate::proof_cmd::read_secret(&dir.join(&config.tagger_key_file))?;
    let node_key = Arc::new(NodeKey::load(&dir.join(&config.node_key_file))?);
    let (backend, fallback) = open_backend(parse_backend(&config.backend)?)?;
    println!(
        "tagger {} (s = {}), tagging on {}",
        cess_consensus::codec::hex(&secret.public().id().0[..8]),
        secret.sectors_per_block(),
        backend.describe()
    );
    if let Some(why) = fallback {
        println!("no GPU backend: {why}");
    }
    let ledger = crate::chain::genesis_ledger(&dir.join(&config.genesis))?;
    let validators = crate::chain::parse_validators(&config.validators)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let follower = cess_consensus::net::follow(
            ledger,
            node_key.clone(),
            validators,
            cess_node::chain::follower_config(),
        )?;
        let endpoint = Endpoint::server_for(
            TAG_PROTOCOL,
            node_key.clone(),
            config.listen,
            Limits::default(),
        )?;
        let addr = endpoint.node_addr()?;
        let tagger = Arc::new(Tagger::new(secret, backend, follower));
        let server = TagServer::new(tagger.clone(), node_key, TagServerConfig::default());
        let serving = tokio::spawn(server.clone().serve(endpoint.clone()));
        std::fs::write(dir.join(ADDR_FILE), format!("{addr}\n"))
            .context("writing the addr file")?;
        println!("listening {addr}");
        if let Some(http_addr) = config.metrics {
            let metrics = server.metrics().clone();
            crate::node::serve_metrics(http_addr, config.http_public, dir, |http| {
                registry(&tagger, metrics, http)
            })
            .await?;
        }
        let metrics = server.metrics().clone();
        let report = tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let tagged = metrics.tagged.load(Ordering::Relaxed);
                if tagged != last {
                    last = tagged;
                    println!(
                        "tagged {tagged} fragments ({} bytes), {} refused, {} failed, {} queued",
                        metrics.tagged_bytes.load(Ordering::Relaxed),
                        metrics.refused.load(Ordering::Relaxed),
                        metrics.failed.load(Ordering::Relaxed),
                        metrics.queued.load(Ordering::Relaxed),
                    );
                }
            }
        });
        crate::node::shutdown_signal().await;
        report.abort();
        endpoint.close();
        let _ = serving.await;
        tagger.follower().shutdown();
        println!(
            "stopped; {} fragments tagged",
            server.metrics().tagged.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

/// The tagger's metrics: what it tagged (rate = throughput), its queue, its backend, the time
/// per fragment, its replica's height.
fn registry(
    tagger: &Arc<Tagger>,
    metrics: Arc<cess_transport::tagging::TagMetrics>,
    http: Arc<cess_http::HttpStats>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_with_unit(
        "cess_tagger_tag",
        "Time to tag one fragment on the backend",
        Unit::Seconds,
        tagger.tag_seconds.clone(),
    );
    let tagger = tagger.clone();
    registry.register_collector(ScrapeFn::boxed(move |scrape| {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        scrape.counter(
            "cess_tagger_fragments_tagged",
            "Fragments tagged",
            None,
            load(&metrics.tagged),
        );
        scrape.counter(
            "cess_tagger_tagged",
            "Fragment bytes tagged (its rate is the tagger's throughput)",
            Some(Unit::Bytes),
            load(&metrics.tagged_bytes),
        );
        scrape.counters(
            "cess_tagger_requests_unserved",
            "Requests not served, by reason: refused (not admitted, bad bytes, busy) or failed",
            None,
            "reason",
            &[
                ("refused", load(&metrics.refused)),
                ("failed", load(&metrics.failed)),
            ],
        );
        scrape.gauge(
            "cess_tagger_queue",
            "Requests waiting for room or being tagged",
            None,
            load(&metrics.queued) as i64,
        );
        let (backend, adapter) = tagger.backend_labels();
        scrape.info(
            "cess_tagger_backend",
            "The backend that tags",
            &[("backend", backend), ("adapter", &adapter)],
        );
        let follower = tagger.follower().status();
        scrape.gauge(
            "cess_tagger_chain_height",
            "Height of the tagger's ledger replica",
            None,
            follower.height as i64,
        );
        http.scrape(scrape);
    }));
    registry
}
