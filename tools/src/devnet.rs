// Long file: the local network's setup, start and demo.
//! `cess devnet up | down` and `cess demo`: a local network on loopback, each part its own
//! process. By default a chain: validators (`chain/`, made by `cess validator testnet`) and
//! storage nodes that follow it, register as miners and store only what the chain assigns
//! them; a client account (`client.key`) funded in the genesis, which rents space and places
//! orders; and a tagger registered in the genesis (`tagger.key`). `--no-chain` starts the
//! nodes alone instead, writing by an owner's upload grant (the baseline that measures what
//! the chain costs a put).

use crate::node;
use anyhow::{Context, Result, bail};
use cess_consensus::AccountKey;
use cess_consensus::ledger::{GenesisTagger, TOKEN};
use cess_node::http::tokens;
use cess_transport::{NodeAddr, NodeKey};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node list of a network without a chain (a network on a chain finds its miners in
/// the ledger).
pub const NODES_FILE: &str = "nodes.txt";
pub const CLIENT_KEY: &str = "client.key";
pub const OWNER_KEY: &str = "owner.key";
/// The owner's grant for the client, renewed by every `up` (a network without a chain).
pub const CLIENT_GRANT: &str = "client.grant";
const GRANT_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MANIFESTS: &str = "manifests";
/// The validators' testnet directory.
pub const CHAIN_DIR: &str = "chain";
pub const TAGGER_KEY: &str = "tagger.key";
/// What every devnet account (client, miners) holds at genesis.
const ACCOUNT_TOKENS: u128 = 1_000_000;
/// An audit round every 30 blocks (about 15 s on an idle devnet, whose validators make an
/// empty block every 500 ms), every miner holding data challenged in each.
const DEVNET_AUDIT_PERIOD_BLOCKS: u64 = 30;
const DEVNET_AUDIT_MINERS_PERMILLE: u32 = 1000;
/// A local network's blocks come every 500 ms at most: a restoral claim lasts 40 of them (20
/// s), and a file at risk is lost (when it can no longer be decoded) a minute later.
const DEVNET_RESTORAL_CLAIM_BLOCKS: u64 = 40;
/// A local network's idle files: 1 MiB each (N = 2^15 labels, 4 layers, 8 parents), certified
/// one at a time (8 openings, about 53 KiB of commit proof), 8 labels opened per space audit:
/// labelled in about 40 ms, so that a devnet fills in seconds. The network's are 64 MiB files
/// in sets of 4 (`PoisParams::NETWORK`).
pub const DEVNET_POIS: cess_proofs::pois::PoisParams = cess_proofs::pois::PoisParams {
    nodes_log2: 15,
    layers: 4,
    degree: 8,
    files_per_set: 1,
    commit_challenges_per_file: 8,
    space_labels_per_file: 8,
};
/// The tagger's directory (its QUIC identity, `tagger.toml`, its log and pid).
pub const TAGGER_DIR: &str = "tagger";

fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node-{i:02}"))
}

fn validator_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(CHAIN_DIR).join(format!("v{i}"))
}

/// Whether the network in `dir` runs on a chain.
pub fn on_chain(dir: &Path) -> bool {
    dir.join(CHAIN_DIR).join("genesis.bin").exists()
}

/// Where the chain of the network in `dir` is.
pub fn chain_source(dir: &Path) -> Result<crate::chain::ChainSource> {
    crate::chain::ChainSource::resolve(&dir.join(CHAIN_DIR), None, &[])
}

/// What `up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub store_mib: u64,
    /// Idle space each miner fills and keeps verified at most, MiB (0: none).
    pub idle_fill_mib: u64,
    /// Validators; 0 starts the nodes without a chain.
    pub validators: usize,
}

/// A running local network.
#[derive(Debug)]
pub struct Devnet {
    pub dir: PathBuf,
    pub addrs: Vec<NodeAddr>,
    /// Children when this process started them (`cess demo`); `devnet up` leaves them running.
    children: Vec<Option<Child>>,
    validators: Vec<Option<Child>>,
    tagger: Option<Child>,
}

/// Starts `exe args…` in its own process group, logging to `log`, its pid in `pid_file`.
fn spawn(exe: &Path, args: &[&std::ffi::OsStr], log: &Path, pid_file: &Path) -> Result<Child> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: a Ctrl-C at the terminal does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    std::fs::write(pid_file, format!("{}\n", child.id()))?;
    Ok(child)
}

/// `count` consecutive free UDP ports on loopback (free when asked: the validators bind them
/// moments later).
fn free_udp_ports(count: usize) -> Result<u16> {
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 40_000);
        let all_free = (0..count).all(|i| {
            base.checked_add(i as u16)
                .is_some_and(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
        });
        if all_free {
            return Ok(base);
        }
    }
    bail!("found no {count} consecutive free UDP ports on loopback")
}

/// The first `up` of a network on a chain: node keys, the client's and a tagger's, and a
/// genesis funding them.
fn create_chain(dir: &Path, options: &UpOptions, client: &NodeKey) -> Result<()> {
    let account = |key: &NodeKey| {
        AccountKey::from_libp2p(key.keypair())
            .map(|a| a.id())
            .context("a devnet key is not Ed25519")
    };
    let mut accounts = vec![(account(client)?, ACCOUNT_TOKENS * TOKEN)];
    for i in 0..options.nodes {
        let nd = node_dir(dir, i);
        std::fs::create_dir_all(&nd).with_context(|| format!("creating {}", nd.display()))?;
        let key = NodeKey::load_or_create(&nd.join("node.key"))?;
        accounts.push((account(&key)?, ACCOUNT_TOKENS * TOKEN));
    }
    let tagger = crate::proof_cmd::create_tagger_key(
        &dir.join(TAGGER_KEY),
        cess_proofs::SECTORS_PER_BLOCK_DEFAULT,
    )?;
    let extras = crate::validator::TestnetExtras {
        accounts,
        taggers: vec![GenesisTagger {
            owner: account(client)?,
            key: tagger.encode(),
        }],
        audit_period_blocks: Some(DEVNET_AUDIT_PERIOD_BLOCKS),
        audit_miners_permille: Some(DEVNET_AUDIT_MINERS_PERMILLE),
        restoral_claim_blocks: Some(DEVNET_RESTORAL_CLAIM_BLOCKS),
        pois: Some(DEVNET_POIS),
        // Blocks come every 500 ms here when idle, slower under the load of a whole network
        // on two cores: 20 blocks and 20 s to answer (the time bound means nothing for
        // 1 MiB files labelled in 40 ms; the network's are in `LedgerParams::default`).
        pois_space_deadline_blocks: Some(20),
        pois_space_deadline_ms: Some(20_000),
        ..crate::validator::TestnetExtras::default()
    };
    let base = free_udp_ports(options.validators)?;
    crate::validator::testnet_with(&dir.join(CHAIN_DIR), options.validators, base, extras)
}

/// Sets up (once) and starts the network under `dir`.
pub fn up(dir: &Path, options: &UpOptions) -> Result<Devnet> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if running_pids(dir).next().is_some() {
        bail!(
            "a network is already running in {} (stop it with `cess devnet down`)",
            dir.display()
        );
    }
    let count = options.nodes;
    let client = NodeKey::load_or_create(&dir.join(CLIENT_KEY))?;
    let chain = options.validators > 0;
    let exe = std::env::current_exe().context("finding the cess binary")?;
    let mut validators = Vec::new();
    let mut chain_settings = None;
    let mut tagger_process = None;
    let mut trusted_owners = Vec::new();
    if chain {
        if !on_chain(dir) {
            if dir.join(NODES_FILE).exists() {
                bail!(
                    "{} holds a network without a chain; use another --dir for one on a chain",
                    dir.display()
                );
            }
            create_chain(dir, options, &client)?;
        } else {
            eprintln!(
                "note: validators keep no state across restarts yet: the chain starts again \
                 from its genesis, and files put before are not on it"
            );
        }
        let listed = std::fs::read_dir(dir.join(CHAIN_DIR))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('v') && e.path().is_dir())
            .count();
        for i in 0..listed {
            let vd = validator_dir(dir, i);
            validators.push(Some(spawn(
                &exe,
                &["validator".as_ref(), "run".as_ref(), vd.as_os_str()],
                &vd.join("validator.log"),
                &vd.join("pid"),
            )?));
        }
        let source = chain_source(dir)?;
        let validator_addrs: Vec<String> =
            source.validators.iter().map(ToString::to_string).collect();
        let (tagger, tagger_addr) = start_tagger(dir, &exe, &source.genesis, &validator_addrs)?;
        tagger_process = Some(tagger);
        chain_settings = Some(node::ChainSettings {
            genesis: std::path::absolute(&source.genesis)?,
            validators: validator_addrs,
            collateral_tokens: None,
            taggers: vec![tagger_addr.to_string()],
            idle_fill_mib: Some(options.idle_fill_mib),
        });
    } else {
        if on_chain(dir) {
            bail!(
                "{} holds a network on a chain; use another --dir for one without",
                dir.display()
            );
        }
        let owner = crate::owner::init(&dir.join(OWNER_KEY))?;
        crate::owner::issue(
            &dir.join(OWNER_KEY),
            client.peer_id(),
            GRANT_VALID,
            &dir.join(CLIENT_GRANT),
        )?;
        trusted_owners.push(owner.to_base58());
    }
    let mut net = Devnet {
        dir: dir.to_path_buf(),
        addrs: Vec::with_capacity(count),
        children: Vec::with_capacity(count),
        validators,
        tagger: tagger_process,
    };
    for i in 0..count {
        let nd = node_dir(dir, i);
        if !nd.join(node::CONFIG_FILE).exists() {
            let init = node::InitOptions {
                listen: "127.0.0.1:0".parse().expect("valid"),
                store: None,
                store_mib: options.store_mib,
                metrics: Some("127.0.0.1:0".parse().expect("valid")),
                // No allow list: the chain's orders (or the owner's grant) decide.
                writers: Vec::new(),
                allow_any_writer: false,
                trusted_owners: trusted_owners.clone(),
                shards: Some(1),
                // A devnet's fragments are a 32 MiB segment's at most, its idle files 1 MiB.
                max_fragment_mib: Some(8),
                force: false,
                announce: None,
                chain: chain_settings.clone(),
            };
            node::init(&nd, &init)?;
        }
        let _ = std::fs::remove_file(nd.join(node::ADDR_FILE));
        net.children.push(Some(spawn(
            &exe,
            &["node".as_ref(), "run".as_ref(), nd.as_os_str()],
            &nd.join("node.log"),
            &nd.join("pid"),
        )?));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..count {
        let nd = node_dir(dir, i);
        let child = net.children[i].as_mut().expect("just started");
        let addr = wait_for_addr(
            child,
            &nd.join(node::ADDR_FILE),
            &nd.join("node.log"),
            deadline,
        )
        .with_context(|| format!("node {i}"))?;
        net.addrs.push(addr);
    }
    if chain {
        wait_registered(dir, count)?;
    } else {
        let list: String = net.addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(dir.join(NODES_FILE), list).context("writing nodes.txt")?;
    }
    Ok(net)
}

/// Sets up (once) and starts the devnet's tagger, with the genesis tagger's key, on a port
/// chosen once so that the miners' configurations stay right across restarts; its address.
fn start_tagger(
    dir: &Path,
    exe: &Path,
    genesis: &Path,
    validators: &[String],
) -> Result<(Child, NodeAddr)> {
    let td = dir.join(TAGGER_DIR);
    if !td.join(crate::tagger::CONFIG_FILE).exists() {
        let port = free_udp_ports(1)?;
        crate::tagger::init(
            &td,
            &crate::tagger::InitOptions {
                listen: format!("127.0.0.1:{port}").parse()?,
                tagger_key: Some(dir.join(TAGGER_KEY)),
                backend: "auto".into(),
                genesis: genesis.to_path_buf(),
                validators: validators.to_vec(),
                metrics: Some("127.0.0.1:0".parse()?),
            },
        )?;
    }
    let _ = std::fs::remove_file(td.join(crate::tagger::ADDR_FILE));
    let mut child = spawn(
        exe,
        &["tagger".as_ref(), "run".as_ref(), td.as_os_str()],
        &td.join("tagger.log"),
        &td.join("pid"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = wait_for_addr(
        &mut child,
        &td.join(crate::tagger::ADDR_FILE),
        &td.join("tagger.log"),
        deadline,
    )
    .context("the tagger")?;
    Ok((child, addr))
}

/// Waits until a process just started writes its multiaddr to `addr_file`; fails with its
/// log when it exits first, or at `deadline`.
fn wait_for_addr(
    child: &mut Child,
    addr_file: &Path,
    log: &Path,
    deadline: Instant,
) -> Result<NodeAddr> {
    loop {
        if let Ok(text) = std::fs::read_to_string(addr_file)
            && let Ok(addr) = text.trim().parse::<NodeAddr>()
        {
            return Ok(addr);
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("exited with {status} at start:\n{text}");
        }
        if Instant::now() > deadline {
            bail!("did not start in time; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `count` miners are registered on the chain of `dir`.
fn wait_registered(dir: &Path, count: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let source = chain_source(dir)?;
    let key = std::sync::Arc::new(NodeKey::load(&dir.join(CLIENT_KEY))?);
    runtime.block_on(async {
        let chain =
            crate::chain::ChainClient::connect(&source, key, Duration::from_secs(60)).await?;
        chain
            .wait_for(
                &format!("{count} miners registering on the chain"),
                Duration::from_secs(90),
                |l| (l.miners().count() >= count).then_some(()),
            )
            .await
            .with_context(|| {
                format!(
                    "see the nodes' logs, {}",
                    node_dir(dir, 0).join("node.log").display()
                )
            })
    })
}

impl Devnet {
    /// Leaves the processes running after this process exits (`cess devnet up`).
    pub fn detach(mut self) {
        self.children.clear();
        self.validators.clear();
        self.tagger = None;
    }

    /// The metrics address of node `i` (its `/status`), once it is running.
    pub fn metrics_addr(&self, i: usize) -> Option<String> {
        node::metrics_addr(&node_dir(&self.dir, i))
    }

    /// Stops node `i` (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(child) = self.children.get_mut(i).and_then(Option::take) {
            stop_child(child)?;
            let _ = std::fs::remove_file(node_dir(&self.dir, i).join("pid"));
        }
        Ok(())
    }

    pub fn down(mut self) -> Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<()> {
        for i in 0..self.children.len() {
            self.stop(i)?;
        }
        if let Some(child) = self.tagger.take() {
            stop_child(child)?;
            let _ = std::fs::remove_file(self.dir.join(TAGGER_DIR).join("pid"));
        }
        for i in 0..self.validators.len() {
            if let Some(child) = self.validators[i].take() {
                stop_child(child)?;
                let _ = std::fs::remove_file(validator_dir(&self.dir, i).join("pid"));
            }
        }
        Ok(())
    }
}

fn stop_child(mut child: Child) -> Result<()> {
    terminate(child.id())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            eprintln!("stopping the network: {e:#}");
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> Result<()> {
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        bail!("{pid} is not a process id");
    };
    rustix::process::kill_process(target, signal)
        .with_context(|| format!("signalling process {pid}"))
}

fn terminate(pid: u32) -> Result<()> {
    signal(pid, rustix::process::Signal::TERM)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        // A zombie (state Z) has exited.
        .is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

/// (pid file, pid) of the processes under `dir` whose recorded process is alive: nodes
/// first, then validators.
fn running_pids(dir: &Path) -> impl Iterator<Item = (PathBuf, u32)> {
    let nodes = (0..64).map(|i| node_dir(dir, i).join("pid"));
    let validators = (0..64).map(|i| validator_dir(dir, i).join("pid"));
    let tagger = std::iter::once(dir.join(TAGGER_DIR).join("pid"));
    nodes.chain(validators).chain(tagger).filter_map(|path| {
        let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
        alive(pid).then_some((path, pid))
    })
}

/// Stops every process started by `cess devnet up` in `dir`: how many.
pub fn down(dir: &Path) -> Result<usize> {
    let running: Vec<_> = running_pids(dir).collect();
    for (_, pid) in &running {
        terminate(*pid)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (path, pid) in &running {
        while alive(*pid) {
            if Instant::now() > deadline {
                let _ = signal(*pid, rustix::process::Signal::KILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(path);
    }
    Ok(running.len())
}

/// Options of `cess demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub nodes: usize,
    pub file_mib: u64,
    pub segment_mib: u32,
    /// Nodes stopped before the get.
    pub stop: usize,
    pub keep: bool,
    /// Idle space each miner fills and gets verified first, MiB.
    pub idle_fill_mib: u64,
}

/// A runtime, this network's client on its chain (the client key's account), and a
/// transport client with the same key.
pub fn chain_client(
    dir: &Path,
) -> Result<(
    tokio::runtime::Runtime,
    crate::chain::ChainClient,
    std::sync::Arc<cess_transport::Client>,
)> {
    chain_client_as(dir, None)
}

/// [`chain_client`] signing with the account key at `as_key` (else the client key's).
pub fn chain_client_as(
    dir: &Path,
    as_key: Option<&Path>,
) -> Result<(
    tokio::runtime::Runtime,
    crate::chain::ChainClient,
    std::sync::Arc<cess_transport::Client>,
)> {
    let (runtime, client) = crate::transfer::devnet_client(dir, None)?;
    let source = chain_source(dir)?;
    let path = as_key.map_or_else(|| dir.join(CLIENT_KEY), Path::to_path_buf);
    let key = std::sync::Arc::new(
        NodeKey::load(&path)
            .with_context(|| format!("loading the account key {}", path.display()))?,
    );
    let chain = runtime.block_on(crate::chain::ChainClient::connect(
        &source,
        key,
        Duration::from_secs(60),
    ))?;
    Ok((runtime, chain, client))
}

/// Brings up a network on a chain, puts a generated file (the chain places it), stops some
/// miners, gets the file back byte-identical from the rest, deletes it and watches the miners
/// drop its fragments, prints what each stage took, and tears everything down.
pub fn demo(options: &DemoOptions) -> Result<()> {
    use crate::codec_cmd::{KeyChoice, rate};
    use cess_codec::{CodecParams, hex};
    use rand::{RngCore, SeedableRng};
    use std::io::Write;

    // The chain stores 4 + 8 fragments per segment, one column per distinct miner.
    let params = CodecParams {
        segment_bytes: options.segment_mib << 20,
        data_shards: 4,
        parity_shards: 8,
    };
    params.validate()?;
    if options.nodes < params.shard_count() {
        bail!(
            "the chain places {} columns on distinct miners; --nodes {} is too few",
            params.shard_count(),
            options.nodes
        );
    }
    if options.dir.exists() {
        bail!(
            "{} exists; remove it or pass another --dir (the demo starts from nothing)",
            options.dir.display()
        );
    }
    // A miner keeps at most one fragment of every segment; room for that and some slack.
    let segments = (options.file_mib << 20)
        .div_ceil(params.segment_bytes as u64)
        .max(1);
    let share_mib = (segments * params.fragment_bytes() as u64) >> 20;
    let store_mib = (share_mib * 3 / 2 + 128).max(256);
    println!(
        "starting 4 validators and {} storage nodes in {} ({} MiB store file each)",
        options.nodes,
        options.dir.display(),
        store_mib
    );
    let demo_started = Instant::now();
    let mut timeline: Vec<(String, Duration)> = Vec::new();
    let mut mark = |what: &str| timeline.push((what.to_string(), demo_started.elapsed()));
    let t0 = Instant::now();
    let mut net = up(
        &options.dir,
        &UpOptions {
            nodes: options.nodes,
            store_mib,
            validators: 4,
            idle_fill_mib: options.idle_fill_mib,
        },
    )?;
    println!(
        "the chain runs and {} miners registered in {:.1} s",
        options.nodes,
        t0.elapsed().as_secs_f64()
    );
    mark("network up: 4 validators, a tagger, miners registered");
    if options.idle_fill_mib > 0 {
        let t0 = Instant::now();
        let (_runtime, chain, _client) = chain_client(&options.dir)?;
        let want =
            (options.idle_fill_mib << 20) / DEVNET_POIS.set_bytes() * DEVNET_POIS.set_bytes();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let verified: Vec<u64> = chain.ledger(|l| {
                l.miners()
                    .map(|(id, _)| l.idle_verified_bytes(id))
                    .collect()
            });
            if verified.len() >= options.nodes && verified.iter().all(|v| *v >= want) {
                println!(
                    "idle space: {} MiB generated, committed and verified (PoIS) on each of {}                      miners in {:.1} s; space audits challenge it from now on",
                    want >> 20,
                    verified.len(),
                    t0.elapsed().as_secs_f64()
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "idle space not verified on every miner within 120 s: {:?} MiB",
                    verified.iter().map(|v| v >> 20).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        mark("idle space verified on every miner");
    }
    let result = (|| -> Result<()> {
        let input = options.dir.join("input.bin");
        let t0 = Instant::now();
        {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&input)?);
            let mut rng = rand_chacha::ChaCha8Rng::from_seed(rand::random());
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..options.file_mib {
                rng.fill_bytes(&mut block);
                file.write_all(&block)?;
            }
            file.flush()?;
        }
        println!(
            "generated {} MiB of random data in {:.1} s",
            options.file_mib,
            t0.elapsed().as_secs_f64()
        );
        let (runtime, chain, client) = chain_client(&options.dir)?;
        let no_key = KeyChoice {
            key_file: None,
            passphrase: false,
            given: None,
        };
        let put = crate::files::put(
            runtime.handle(),
            &chain,
            client.clone(),
            &crate::files::Upload::file(&input),
            &no_key,
            params,
        )?;
        println!(
            "put: file {} ({} MiB) Active on {} miners the chain chose, {:.0} MiB/s of input \
             (encode {:.1} s, order {:.1} s, send {:.1} s, until Active {:.1} s)",
            hex(&put.file_id),
            put.file_bytes >> 20,
            put.miners,
            rate(put.file_bytes, put.elapsed()),
            put.encode.as_secs_f64(),
            put.order.as_secs_f64(),
            put.send.as_secs_f64(),
            put.active.as_secs_f64(),
        );
        mark("file Active: tagged, checked and reported by every miner");
        let holding: Vec<usize> = (0..options.nodes)
            .filter(|&i| stored_fragments(&net, i).unwrap_or(0) > 0)
            .collect();
        println!(
            "waiting for audit rounds until each of the {} miners holding data has passed one \
             (a round every {DEVNET_AUDIT_PERIOD_BLOCKS} blocks)",
            holding.len()
        );
        let passed = wait_for_audits(&net, &holding, Duration::from_secs(180))?;
        for (i, audit) in &passed {
            println!("  node {i:02}: {}", describe_audit(audit));
        }
        mark("every miner holding data passed an audit");
        // Stop miners holding columns: a data column first, then parity columns.
        let holders: Vec<usize> = chain.ledger(|l| {
            let file = l.file(&put.file_id).expect("active");
            file.segments[0]
                .fragments
                .iter()
                .filter_map(|f| {
                    let miner = l.miner(f.miner.as_ref()?)?;
                    net.addrs
                        .iter()
                        .position(|a| a.to_string() == miner.endpoint)
                })
                .collect()
        });
        let mut stopped = Vec::new();
        for j in 0..options.stop.min(holders.len()) {
            let column = if j == 0 { 0 } else { holders.len() - j };
            net.stop(holders[column])?;
            stopped.push(holders[column]);
        }
        println!(
            "stopped nodes {stopped:?}; {} of {} still up",
            options.nodes - stopped.len(),
            options.nodes
        );
        // Their accounts, and what the ledger says of them now.
        let stopped_accounts: Vec<(usize, cess_consensus::AccountId)> = chain.ledger(|l| {
            stopped
                .iter()
                .filter_map(|&i| {
                    let addr = net.addrs[i].to_string();
                    l.miners()
                        .find(|(_, m)| m.endpoint == addr)
                        .map(|(id, _)| (i, *id))
                })
                .collect()
        });
        let before: Vec<u128> = chain.ledger(|l| {
            stopped_accounts
                .iter()
                .map(|(_, id)| l.miner(id).map_or(0, |m| m.collateral))
                .collect()
        });
        mark("two miners stopped");
        let output = options.dir.join("output.bin");
        let get = crate::files::get(
            runtime.handle(),
            &chain,
            client,
            &hex(&put.file_id),
            &no_key,
            &output,
        )?;
        println!(
            "get: {} MiB at {:.0} MiB/s, everything but the file id read from the chain ({} \
             fragment fetches fell back to another miner)",
            get.file_bytes >> 20,
            rate(get.file_bytes, get.elapsed),
            get.fallbacks.len()
        );
        if !files_equal(&input, &output)? {
            bail!("the file read back differs from the file put");
        }
        println!("the file read back is byte-identical to the file put");
        mark("file read back byte-identical from the miners still up");
        println!("waiting for the stopped miners' next audit deadline");
        let penalised = runtime.block_on(chain.wait_for(
            "the stopped miners penalised for missing an audit",
            Duration::from_secs(180),
            |l| {
                let all = stopped_accounts
                    .iter()
                    .all(|(_, id)| l.miner(id).is_some_and(|m| m.audits_failed_in_a_row > 0));
                all.then(|| {
                    stopped_accounts
                        .iter()
                        .map(|(_, id)| l.miner(id).map(|m| (m.collateral, m.reputation)))
                        .collect::<Vec<_>>()
                })
            },
        ))?;
        for (((i, _), now), was) in stopped_accounts.iter().zip(&penalised).zip(&before) {
            if let Some((collateral, reputation)) = now {
                println!(
                    "  node {i:02} missed its audit: penalised {} tokens of collateral \
                     ({} left), reputation {reputation}",
                    tokens(was.saturating_sub(*collateral)),
                    tokens(*collateral)
                );
            }
        }
        mark("the stopped miners penalised at their deadline");
        let t0 = Instant::now();
        let (height, gone) = crate::files::delete(runtime.handle(), &chain, &hex(&put.file_id))?;
        if !gone {
            bail!("the file is still on the chain after its only owner deleted it");
        }
        // The running miners drop the fragments on their own once their replicas apply it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let held = loop {
            let held: u64 = (0..options.nodes)
                .filter(|i| !stopped.contains(i))
                .filter_map(|i| stored_fragments(&net, i))
                .sum();
            if held == 0 || Instant::now() > deadline {
                break held;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if held != 0 {
            bail!("{held} fragments still in the running miners' stores 60 s after the delete");
        }
        println!(
            "delete: gone from the chain at height {height}, and from every running miner's \
             store in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let ledger_bytes: u64 = chain.ledger(|l| {
            l.miners()
                .map(|(_, m)| m.active_bytes + m.locked_bytes)
                .sum()
        });
        println!(
            "space returned: {ledger_bytes} bytes in use by the miners on the ledger, 0 \
             fragments in the running miners' stores"
        );
        mark("file deleted: off the chain and out of every running miner's store");
        Ok(())
    })();
    println!("timeline:");
    for (what, at) in &timeline {
        println!("  {:>6.1} s  {what}", at.as_secs_f64());
    }
    net.down()?;
    if !options.keep {
        std::fs::remove_dir_all(&options.dir)
            .with_context(|| format!("removing {}", options.dir.display()))?;
    }
    result
}

/// The audits node `i` lists in its `/status`.
fn audits_of(net: &Devnet, i: usize) -> Vec<serde_json::Value> {
    let Some(addr) = net.metrics_addr(i) else {
        return Vec::new();
    };
    let Ok(body) = node::http_get(&addr, "/status") else {
        return Vec::new();
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|s| s["chain"]["audits"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until each of `nodes` lists a valid audit; each one's first.
fn wait_for_audits(
    net: &Devnet,
    nodes: &[usize],
    timeout: Duration,
) -> Result<Vec<(usize, serde_json::Value)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let passed: Vec<(usize, serde_json::Value)> = nodes
            .iter()
            .filter_map(|&i| {
                audits_of(net, i)
                    .into_iter()
                    .find(|a| a["result"] == "valid")
                    .map(|a| (i, a))
            })
            .collect();
        if passed.len() == nodes.len() {
            return Ok(passed);
        }
        if Instant::now() > deadline {
            let missing: Vec<usize> = nodes
                .iter()
                .filter(|i| passed.iter().all(|(p, _)| p != *i))
                .copied()
                .collect();
            bail!(
                "nodes {missing:?} passed no audit within {} s; see their logs and `cess node \
                 status`",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One line of an audit from a node's `/status`.
fn describe_audit(audit: &serde_json::Value) -> String {
    let reward: u128 = audit["reward"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    format!(
        "round {}: {} blocks of {} fragments challenged, proof {} bytes in {} ms, submitted {} \
         blocks before the deadline, {}, reward {} tokens",
        audit["round"],
        audit["blocks"],
        audit["fragments"],
        audit["proof_bytes"],
        audit["prove_ms"],
        audit["margin_blocks"],
        audit["result"].as_str().unwrap_or("?"),
        tokens(reward)
    )
}

fn stored_fragments(net: &Devnet, i: usize) -> Option<u64> {
    let body = node::http_get(&net.metrics_addr(i)?, "/status").ok()?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["store"]["active_fragments"].as_u64()
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
