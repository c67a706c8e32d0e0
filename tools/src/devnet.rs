//! `cess devnet up | down` and `cess demo`: storage nodes on loopback, each its own process
//! with its own store file, and a client allowed to write to all of them by an upload grant
//! from the network's owner key, which every node trusts.

use crate::node;
use anyhow::{Context, Result, bail};
use cess_transport::{NodeAddr, NodeKey};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NODES_FILE: &str = "nodes.txt";
pub const CLIENT_KEY: &str = "client.key";
pub const OWNER_KEY: &str = "owner.key";
/// The owner's grant for the client, renewed by every `up`.
pub const CLIENT_GRANT: &str = "client.grant";
const GRANT_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MANIFESTS: &str = "manifests";

fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node-{i:02}"))
}

/// A running local network.
#[derive(Debug)]
pub struct Devnet {
    pub dir: PathBuf,
    pub addrs: Vec<NodeAddr>,
    /// Children when this process started them (`cess demo`); `devnet up` leaves them running.
    children: Vec<Option<Child>>,
}

/// Sets up (once) and starts `count` nodes under `dir`; writes `nodes.txt`.
pub fn up(dir: &Path, count: usize, store_mib: u64) -> Result<Devnet> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if running_pids(dir, count).next().is_some() {
        bail!(
            "a network is already running in {} (stop it with `cess devnet down`)",
            dir.display()
        );
    }
    let client = NodeKey::load_or_create(&dir.join(CLIENT_KEY))?;
    let owner = crate::owner::init(&dir.join(OWNER_KEY))?;
    crate::owner::issue(
        &dir.join(OWNER_KEY),
        client.peer_id(),
        GRANT_VALID,
        &dir.join(CLIENT_GRANT),
    )?;
    let exe = std::env::current_exe().context("finding the cess binary")?;
    let mut children = Vec::with_capacity(count);
    for i in 0..count {
        let nd = node_dir(dir, i);
        if !nd.join(node::CONFIG_FILE).exists() {
            let options = node::InitOptions {
                listen: "127.0.0.1:0".parse().expect("valid"),
                store: None,
                store_mib,
                metrics: Some("127.0.0.1:0".parse().expect("valid")),
                // No allow list: the client writes by the owner's grant.
                writers: Vec::new(),
                allow_any_writer: false,
                trusted_owners: vec![owner.to_base58()],
                shards: Some(1),
                force: false,
                announce: None,
                chain: None,
            };
            node::init(&nd, &options)?;
        }
        let _ = std::fs::remove_file(nd.join(node::ADDR_FILE));
        let log = std::fs::File::create(nd.join("node.log")).context("creating node.log")?;
        let child = Command::new(&exe)
            .args(["node", "run"])
            .arg(&nd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        std::fs::write(nd.join("pid"), format!("{}\n", child.id()))?;
        children.push(Some(child));
    }
    let mut addrs = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, child) in children.iter_mut().enumerate() {
        let nd = node_dir(dir, i);
        loop {
            if let Ok(text) = std::fs::read_to_string(nd.join(node::ADDR_FILE))
                && let Ok(addr) = text.trim().parse::<NodeAddr>()
            {
                addrs.push(addr);
                break;
            }
            let child = child.as_mut().expect("just started");
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(nd.join("node.log")).unwrap_or_default();
                bail!("node {i} exited with {status} at start:\n{log}");
            }
            if Instant::now() > deadline {
                bail!(
                    "node {i} did not start within 30 s; see {}",
                    nd.join("node.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let list: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(dir.join(NODES_FILE), list).context("writing nodes.txt")?;
    Ok(Devnet {
        dir: dir.to_path_buf(),
        addrs,
        children,
    })
}

impl Devnet {
    /// Leaves the nodes running after this process exits (`cess devnet up`).
    pub fn detach(mut self) {
        self.children.clear();
    }

    /// Stops node `i` (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.children.get_mut(i).and_then(Option::take) {
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
            let _ = std::fs::remove_file(node_dir(&self.dir, i).join("pid"));
        }
        Ok(())
    }

    pub fn down(mut self) -> Result<()> {
        for i in 0..self.children.len() {
            self.stop(i)?;
        }
        Ok(())
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if let Err(e) = self.stop(i) {
                eprintln!("stopping node {i}: {e:#}");
            }
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

/// (node index, pid) of the nodes under `dir` whose recorded process is alive.
fn running_pids(dir: &Path, count: usize) -> impl Iterator<Item = (usize, u32)> {
    (0..count.max(64)).filter_map(move |i| {
        let pid: u32 = std::fs::read_to_string(node_dir(dir, i).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some((i, pid))
    })
}

/// Stops every node started by `cess devnet up` in `dir`.
pub fn down(dir: &Path) -> Result<usize> {
    let running: Vec<_> = running_pids(dir, 64).collect();
    for &(_, pid) in &running {
        terminate(pid)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for &(i, pid) in &running {
        while alive(pid) {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(node_dir(dir, i).join("pid"));
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
}

/// Brings up a network, puts a generated file, stops some nodes, gets the file back
/// byte-identical from the rest, prints the throughputs and tears everything down.
pub fn demo(options: &DemoOptions) -> Result<()> {
    use crate::codec_cmd::{KeyChoice, rate};
    use cess_engine::codec::{CodecParams, hex};
    use rand::{RngCore, SeedableRng};
    use std::io::Write;

    let data_shards = 4u16;
    let parity_shards = (options.nodes as u16).saturating_sub(data_shards);
    let params = CodecParams {
        segment_bytes: options.segment_mib << 20,
        data_shards,
        parity_shards,
    };
    params.validate()?;
    if options.dir.exists() {
        bail!(
            "{} exists; remove it or pass another --dir (the demo starts from nothing)",
            options.dir.display()
        );
    }
    // Each node keeps one fragment of every segment; room for that and some slack.
    let segments = (options.file_mib << 20)
        .div_ceil(params.segment_bytes as u64)
        .max(1);
    let share_mib = (segments * params.fragment_bytes() as u64) >> 20;
    let store_mib = (share_mib * 3 / 2 + 128).max(256);
    println!(
        "starting {} nodes in {} ({} MiB store file each)",
        options.nodes,
        options.dir.display(),
        store_mib
    );
    let mut net = up(&options.dir, options.nodes, store_mib)?;
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
        let (runtime, client) =
            crate::net::devnet_client(&options.dir, crate::net::devnet_grant(&options.dir, None)?)?;
        let no_key = KeyChoice {
            key_file: None,
            passphrase: false,
        };
        let manifests = options.dir.join(MANIFESTS);
        let put = crate::net::put(
            runtime.handle(),
            client.clone(),
            &input,
            &net.addrs,
            &no_key,
            params,
            &manifests,
        )?;
        println!(
            "put: file {} ({} MiB) as {} MiB of fragments on {} nodes: {:.0} MiB/s of input, {:.0} MiB/s stored",
            hex(&put.file_id),
            put.file_bytes >> 20,
            put.stored_bytes >> 20,
            options.nodes,
            rate(put.file_bytes, put.elapsed),
            rate(put.stored_bytes, put.elapsed),
        );
        // Stop a data node first, then parity nodes from the end.
        let mut stopped = Vec::new();
        for j in 0..options.stop.min(options.nodes) {
            let i = if j == 0 { 0 } else { options.nodes - j };
            net.stop(i)?;
            stopped.push(i);
        }
        println!(
            "stopped nodes {stopped:?}; {} of {} still up",
            options.nodes - stopped.len(),
            options.nodes
        );
        let output = options.dir.join("output.bin");
        let get = crate::net::get(
            runtime.handle(),
            client,
            &hex(&put.file_id),
            &manifests,
            &no_key,
            &output,
        )?;
        println!(
            "get: {} MiB at {:.0} MiB/s ({} fragment fetches fell back to another node)",
            get.file_bytes >> 20,
            rate(get.file_bytes, get.elapsed),
            get.fallbacks.len()
        );
        let same = files_equal(&input, &output)?;
        if !same {
            bail!("the file read back differs from the file put");
        }
        println!("the file read back is byte-identical to the file put");
        Ok(())
    })();
    net.down()?;
    if !options.keep {
        std::fs::remove_dir_all(&options.dir)
            .with_context(|| format!("removing {}", options.dir.display()))?;
    }
    result
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
