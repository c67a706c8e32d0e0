//! `cess tagger init | run`: the tagger service (the `cess-tagger` library) as a process. Its
//! directory holds `tagger.toml`, its QUIC identity `node.key` and, unless the configuration
//! names another, its PoDR² secret `tagger.key` (mode 0600, never given out).

use anyhow::{Context, Result};
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
        let metrics = server.metrics().clone();
        let report = tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let tagged = metrics.tagged.load(Ordering::Relaxed);
                if tagged != last {
                    last = tagged;
                    let mut text = String::new();
                    metrics.render(&mut text);
                    println!(
                        "{}",
                        text.lines()
                            .filter(|l| !l.starts_with('#'))
                            .collect::<Vec<_>>()
                            .join(", ")
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
