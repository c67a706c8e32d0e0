//! `cess engine-demo`, `format`, `stats`, `scrub`: one engine store, without a network.

use anyhow::{Context, Result, bail};
use cess_engine::{
    AlignedBuf, Class, FormatOptions, FragmentId, NodeId, OpenOptions, Store, Target,
};
use hdrhistogram::Histogram;
use rand::RngCore;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use crate::codec_cmd::{finish_progress, progress_line};

/// The demo store's node identity: the default of every command that opens a store by path.
pub const DEMO_NODE_HEX: &str = "de00000000000000000000000000000000000000000000000000000000000001";

pub fn node_id(hex: &str) -> Result<NodeId> {
    match FragmentId::from_hex(hex) {
        Some(key) => Ok(NodeId(key.0)),
        None => bail!(
            "node id must be 64 hex digits, got {:?} ({} characters)",
            hex,
            hex.len()
        ),
    }
}

/// The arguments of `cess engine-demo` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct EngineDemoArgs {
    /// Store file (created and preallocated; must be on a file system with O_DIRECT).
    #[arg(long, default_value = "cess-demo.img")]
    target: PathBuf,
    /// Size of the store file in MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Fragments to put and get.
    #[arg(long, default_value_t = 300)]
    fragments: usize,
    /// Fragment size in KiB.
    #[arg(long, default_value_t = 4096)]
    fragment_kib: usize,
    /// Keep the store file afterwards.
    #[arg(long)]
    keep: bool,
}

/// The arguments of `cess format` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct FormatArgs {
    target: PathBuf,
    /// This node's identity, 64 hex digits.
    #[arg(long, default_value = DEMO_NODE_HEX)]
    node_id: String,
    /// Shards (one per core by default).
    #[arg(long)]
    shards: Option<u32>,
    /// Overwrite a file system, partition table or earlier store.
    #[arg(long)]
    force: bool,
}

/// The arguments of `cess stats` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct StatsArgs {
    target: PathBuf,
    #[arg(long, default_value = DEMO_NODE_HEX)]
    node_id: String,
}

/// The arguments of `cess scrub` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct ScrubArgs {
    target: PathBuf,
    #[arg(long, default_value = DEMO_NODE_HEX)]
    node_id: String,
}

pub fn engine_demo(args: EngineDemoArgs) -> Result<()> {
    let EngineDemoArgs {
        target,
        size_mib,
        fragments,
        fragment_kib,
        keep,
    } = args;

    run_engine_demo(&target, size_mib, fragments, fragment_kib)?;
    if !keep {
        std::fs::remove_file(&target).ok();
    }
    Ok(())
}

pub fn format(args: FormatArgs) -> Result<()> {
    let FormatArgs {
        target,
        node_id: hex,
        shards,
        force,
    } = args;

    let mut options = FormatOptions::new(node_id(&hex)?);
    if let Some(s) = shards {
        options.shard_count = s;
    }
    options.force = force;
    let sb = cess_engine::format(&Target::Path(target.clone()), &options)?;
    println!(
        "formatted {}: {} shards, {} bytes, node {}",
        target.display(),
        sb.geometry.shard_count,
        sb.geometry.device_bytes,
        sb.node_id
    );
    Ok(())
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let StatsArgs {
        target,
        node_id: hex,
    } = args;

    let store = Store::open(&Target::Path(target), &OpenOptions::new(node_id(&hex)?))?;
    println!("{}", store.stats()?);
    Ok(())
}

pub fn scrub(args: ScrubArgs) -> Result<()> {
    let ScrubArgs {
        target,
        node_id: hex,
    } = args;

    let store = Store::open(&Target::Path(target), &OpenOptions::new(node_id(&hex)?))?;
    let start = store.scrub_progress()?.passes_completed;
    let started = Instant::now();
    loop {
        let p = store.scrub_step(64 << 20)?;
        progress_line(
            "scrub",
            p.pass_verified_bytes.min(p.stored_bytes),
            p.stored_bytes,
            started.elapsed(),
        );
        if p.passes_completed > start {
            finish_progress();
            println!("scrub complete: {} corrupt fragments", p.corrupt.len());
            for key in &p.corrupt {
                println!("corrupt {}", key.to_hex());
            }
            return Ok(());
        }
    }
}

fn run_engine_demo(
    target: &PathBuf,
    size_mib: u64,
    fragments: usize,
    fragment_kib: usize,
) -> Result<()> {
    let file =
        std::fs::File::create(target).with_context(|| format!("create {}", target.display()))?;
    file.set_len(size_mib << 20)
        .context("size the store file")?;
    drop(file);
    let node = node_id(DEMO_NODE_HEX)?;
    let t = Target::Path(target.clone());
    let mut options = FormatOptions::new(node);
    options.force = true; // The demo's own file, created just above.
    let sb = cess_engine::format(&t, &options).context("format the demo store")?;
    let store = Store::open(&t, &OpenOptions::new(node)).context("open the demo store")?;
    println!(
        "store {}: {} MiB, {} shards (io_uring, O_DIRECT)",
        target.display(),
        sb.geometry.device_bytes >> 20,
        sb.geometry.shard_count
    );

    let len = fragment_kib << 10;
    let mut rng = rand::rng();
    let mut keys = Vec::with_capacity(fragments);
    let mut put_hist = Histogram::<u64>::new(3)?;
    let mut window: VecDeque<(Instant, cess_engine::Pending<_>)> = VecDeque::new();
    let started = Instant::now();
    for i in 0..fragments {
        let mut buf = AlignedBuf::zeroed(len);
        rng.fill_bytes(&mut buf);
        let key = FragmentId::of(&buf);
        keys.push(key);
        if window.len() >= 16 {
            let (t0, p) = window.pop_front().expect("non-empty");
            p.wait()?;
            put_hist.record(t0.elapsed().as_micros() as u64)?;
        }
        let class = if i % 4 == 0 {
            Class::Idle
        } else {
            Class::Active
        };
        window.push_back((Instant::now(), store.put_buf(key, class, buf)));
        if i % 32 == 31 {
            progress_line(
                "put",
                ((i + 1) * len) as u64,
                (fragments * len) as u64,
                started.elapsed(),
            );
        }
    }
    for (t0, p) in window {
        p.wait()?;
        put_hist.record(t0.elapsed().as_micros() as u64)?;
    }
    finish_progress();
    let put_secs = started.elapsed().as_secs_f64();

    let mut get_hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for key in &keys {
        let t0 = Instant::now();
        let bytes = store.get(*key).wait()?;
        get_hist.record(t0.elapsed().as_micros() as u64)?;
        if FragmentId::of(&bytes) != *key {
            bail!("fragment {key} read back with the wrong content");
        }
    }
    let get_secs = started.elapsed().as_secs_f64();
    let mut read_hist = Histogram::<u64>::new(3)?;
    for (i, key) in keys.iter().enumerate() {
        let offset = ((i * 7919) % (len / 8192).max(1)) as u64 * 8192;
        let t0 = Instant::now();
        store.read(*key, offset, 8192.min(len as u64)).wait()?;
        read_hist.record(t0.elapsed().as_micros() as u64)?;
    }

    let total_mib = (fragments * len) as f64 / (1 << 20) as f64;
    println!(
        "put {fragments} × {fragment_kib} KiB: {:.0} MiB/s (durable, 16 in flight)",
        total_mib / put_secs
    );
    print_latency("  put latency", &put_hist);
    println!(
        "get {fragments} fragments: {:.0} MiB/s (verified, one at a time)",
        total_mib / get_secs
    );
    print_latency("  get latency", &get_hist);
    print_latency("  8 KiB range read latency", &read_hist);
    drop(store);
    let t0 = Instant::now();
    let store = Store::open(&t, &OpenOptions::new(node))?;
    println!(
        "reopen: {:.1} ms (metadata only, no data walk)",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    println!("stats: {}", store.stats()?);
    Ok(())
}

fn print_latency(what: &str, h: &Histogram<u64>) {
    println!(
        "{what}: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}
