//! `cess node init | run | status`: the command line of a storage node; the node itself
//! (configuration, QUIC server, chain driver, HTTP status) is the `cess-node` library.

use anyhow::{Context, Result, bail};
use cess_engine::{FormatOptions, Target, format};
pub use cess_node::config::{
    ADDR_FILE, CONFIG_FILE, ChainSettings, METRICS_FILE, NodeConfig, default_grace_ms,
    default_partial_mib, engine_node_id,
};
use cess_transport::{NodeKey, PeerId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The status address a node running in `dir` wrote, if any.
pub fn metrics_addr(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    Some(text.trim().to_string())
}

/// `GET path` from a node's HTTP surface: the body.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    let socket: SocketAddr = addr
        .parse()
        .with_context(|| format!("the node's HTTP address {addr:?}"))?;
    Ok(cess_http::get_blocking(
        socket,
        path,
        std::time::Duration::from_secs(10),
    )?)
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

/// `cess node check DIR [--proof]`: starts a self-check on the running node and follows it
/// on `/status` until it is done, showing its progress; whether every fragment passed.
pub fn check(dir: &Path, proof: bool) -> Result<bool> {
    let Some(addr) = metrics_addr(dir) else {
        bail!(
            "{} has no {METRICS_FILE}: the node is not running, or runs without a metrics address",
            dir.display()
        );
    };
    let socket: SocketAddr = addr
        .parse()
        .with_context(|| format!("the node's HTTP address {addr:?}"))?;
    let answer = cess_http::send_blocking(
        cess_http::Method::POST,
        socket,
        if proof { "/check?proof=1" } else { "/check" },
        Some((cess_node::http::CHECK_HEADER, "1")),
        std::time::Duration::from_secs(10),
    )?;
    let started: serde_json::Value =
        serde_json::from_str(&answer).context("the node's answer to /check")?;
    if started["started"] != true {
        println!("a self-check is already running on this node; following it");
    }
    let mut last_shown = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let status: serde_json::Value =
            serde_json::from_str(&http_get(&addr, "/status")?).context("the node's /status")?;
        let report = &status["chain"]["check"];
        if report.is_null() {
            continue;
        }
        let (checked, total) = (
            report["fragments_checked"].as_u64().unwrap_or(0),
            report["fragments_total"].as_u64().unwrap_or(0),
        );
        if report["done"] != true {
            if last_shown.elapsed() >= std::time::Duration::from_secs(2) {
                println!("checked {checked}/{total} fragments");
                last_shown = std::time::Instant::now();
            }
            continue;
        }
        let failed = report["failed_count"].as_u64().unwrap_or(0);
        println!(
            "self-check{}: {checked} fragments ({} bytes) read back, {failed} failed",
            if report["with_proof"] == true {
                " with tags"
            } else {
                ""
            },
            report["bytes_checked"].as_u64().unwrap_or(0)
        );
        for f in report["failed"].as_array().into_iter().flatten() {
            println!(
                "  {}: {} (dropped; the node rebuilds it or reports it lost)",
                f["fragment_id"].as_str().unwrap_or("?"),
                f["why"].as_str().unwrap_or("?")
            );
        }
        return Ok(failed == 0);
    }
}

/// `cess node exit DIR` / `cess node withdraw DIR`: the node's account leaves the miners.
/// Exiting hands every fragment it holds to restoral orders (the node keeps serving them to
/// the miners rebuilding them until those complete); withdrawing, after the cooling-off
/// period, returns the collateral, less `penalty_lost` for each fragment not rebuilt yet.
pub fn leave(dir: &Path, withdraw: bool) -> Result<()> {
    let config = NodeConfig::load(&dir.join(CONFIG_FILE))?;
    let chain = config.chain.clone().with_context(|| {
        format!(
            "{} has no chain settings: this node is not a miner on a chain",
            dir.display()
        )
    })?;
    let key = Arc::new(NodeKey::load(&config.key_file)?);
    let source = crate::chain::ChainSource {
        genesis: chain.genesis.clone(),
        validators: crate::chain::parse_validators(&chain.validators)?,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client =
            crate::chain::ChainClient::connect(&source, key, std::time::Duration::from_secs(60))
                .await?;
        let me = client.account.id();
        let call = if withdraw {
            cess_consensus::Call::WithdrawMiner
        } else {
            cess_consensus::Call::ExitMiner
        };
        let height = client.submit(call).await?;
        if withdraw {
            println!("withdrawn at height {height}: the collateral is back on the account");
            return Ok(());
        }
        let (orders, until) = client.ledger(|l| {
            let orders = l.restorals().filter(|(_, o)| o.lost_by == me).count();
            let until = height + l.params().miner_cooling_off_blocks;
            (orders, until)
        });
        println!(
            "exiting since height {height}: {orders} fragments handed to restoral orders. Keep \
             the node running until other miners have rebuilt them (it serves them whole \
             meanwhile); `cess node withdraw` from height {until} returns the collateral, less \
             a penalty for each fragment still unrestored"
        );
        Ok(())
    })
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
    /// The largest fragment the store takes, MiB; `None`: [`default_max_fragment_bytes`].
    pub max_fragment_mib: Option<u64>,
    pub force: bool,
    pub announce: Option<String>,
    pub chain: Option<ChainSettings>,
}

/// Shards of a new store when not told: one per core, but none under 1 GiB (a small store on
/// a machine of many cores would otherwise get shards too small for 64 MiB fragments).
pub fn default_shards(store_bytes: u64, cores: u32) -> u32 {
    let by_size = u32::try_from(store_bytes >> 30).unwrap_or(u32::MAX);
    cores.min(by_size).max(1)
}

/// The largest fragment a new store takes when not told: 64 MiB (the ledger's largest
/// fragment, `fragment_bytes_max`, and the network's idle file) when every shard has 1 GiB or
/// more, so the room each shard keeps for its largest fragments (two to write, one reserved
/// from idle files) stays a small share of it; else 8 MiB (a 32 MiB segment's fragment).
pub fn default_max_fragment_bytes(store_bytes: u64, shards: u32) -> u64 {
    if store_bytes / u64::from(shards.max(1)) >= 1 << 30 {
        64 << 20
    } else {
        8 << 20
    }
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
    // A file's length, or a block device's size (its end).
    let store_bytes = {
        use std::io::Seek;
        std::fs::File::open(&store_path)
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
            .with_context(|| format!("sizing {}", store_path.display()))?
    };
    format_options.shard_count = match options.shards {
        Some(shards) => shards,
        None => default_shards(store_bytes, format_options.shard_count),
    };
    format_options.max_object_bytes = match options.max_fragment_mib {
        Some(mib) if (1..=1024).contains(&mib) => mib << 20,
        Some(mib) => bail!("--max-fragment-mib {mib} is not in 1..=1024"),
        None => default_max_fragment_bytes(store_bytes, format_options.shard_count),
    };
    // A file made just now is ours to format; anything else needs --force.
    format_options.force = is_new_file || options.force;
    format(&Target::Path(store_path.clone()), &format_options)
        .with_context(|| format!("formatting {}", store_path.display()))?;
    let config = NodeConfig {
        listen: options.listen,
        key_file: "node.key".into(),
        store,
        metrics: options.metrics,
        http_public: false,
        scrub_mib_per_s: cess_node::config::default_scrub_mib_per_s(),
        writers: options.writers.clone(),
        allow_any_writer: options.allow_any_writer,
        trusted_owners: options.trusted_owners.clone(),
        shutdown_grace_ms: default_grace_ms(),
        partial_mib_max: default_partial_mib(),
        limits: cess_node::config::PeerLimits::default(),
        announce: options.announce.clone(),
        chain: options.chain.clone(),
    };
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(key.peer_id())
}

/// Runs the node configured at `config_path` until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> Result<()> {
    Ok(cess_node::service::run(config_path)?)
}

pub(crate) use cess_node::service::shutdown_signal;

/// Serves `/metrics` from the registry `build` makes (given the surface's own HTTP counters) on
/// `addr`, and writes the bound address to `dir/metrics-addr`: a validator's and a tagger's
/// surface.
pub async fn serve_metrics(
    addr: SocketAddr,
    public: bool,
    dir: &Path,
    build: impl FnOnce(Arc<cess_http::HttpStats>) -> cess_http::metrics::Registry,
) -> Result<()> {
    let listener = cess_http::bind(addr, public).await?;
    let bound = listener.local_addr()?;
    println!("metrics http://{bound}/metrics");
    std::fs::write(dir.join(METRICS_FILE), format!("{bound}\n"))
        .context("writing the metrics address file")?;
    let http = Arc::new(cess_http::HttpStats::default());
    let registry = Arc::new(build(http.clone()));
    tokio::spawn(cess_http::serve(
        listener,
        cess_http::HttpLimits::default(),
        cess_http::metrics_handler(registry),
        http,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{default_max_fragment_bytes as max_fragment, default_shards};

    #[test]
    fn a_new_store_takes_the_networks_idle_files_when_its_shards_have_room() {
        let idle_file = cess_proofs::pois::PoisParams::NETWORK.file_bytes();
        assert!(max_fragment(4 << 30, 2) >= idle_file);
        assert!(max_fragment(1 << 30, 1) >= idle_file);
        // Sixteen shards of 256 MiB: three 64 MiB fragments' room would be most of each.
        assert_eq!(max_fragment(4 << 30, 16), 8 << 20);
        // The default 4 GiB store on 16 cores gets 4 shards, each taking the idle files.
        assert_eq!(default_shards(4 << 30, 16), 4);
        assert!(max_fragment(4 << 30, default_shards(4 << 30, 16)) >= idle_file);
        assert_eq!(default_shards(1 << 40, 16), 16);
        assert_eq!(default_shards(64 << 20, 16), 1);
        assert_eq!(max_fragment((1 << 30) - 1, 1), 8 << 20);
        assert_eq!(max_fragment(1 << 40, 0), 64 << 20, "no shard counts as one");
    }
}
