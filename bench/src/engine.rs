//! Suite `engine`: the fragment store against fio (io_uring, O_DIRECT) on the same target,
//! interleaved run by run (ours, fio, ours, fio, …).

use crate::report::{Case, Latency, Options, median, spread};
use cess_engine::{
    AlignedBuf, Class, FormatOptions, FragmentId, NodeId, OpenOptions, Store, Target, format,
};
use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NODE: NodeId = NodeId([0xbe; 32]);
const MIB: f64 = 1024.0 * 1024.0;

struct Sizes {
    target_bytes: u64,
    fragment_bytes: usize,
    write_fragments: usize,
    read_fill_fragments: usize,
    read_ops: usize,
    queue_depth: usize,
    open_small_bytes: usize,
    open_count: usize,
    runs: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                target_bytes: 256 << 20,
                fragment_bytes: 1 << 20,
                write_fragments: 16,
                read_fill_fragments: 16,
                read_ops: 2_000,
                queue_depth: 8,
                open_small_bytes: 64 << 10,
                open_count: 20,
                runs: 1,
            }
        } else {
            Sizes {
                target_bytes: 6 << 30,
                fragment_bytes: 8 << 20,
                write_fragments: 256,
                read_fill_fragments: 256,
                read_ops: 120_000,
                queue_depth: 32,
                open_small_bytes: 256 << 10,
                open_count: 400,
                runs: 5,
            }
        }
    }
}

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let fio = which_fio()?;
    let sizes = Sizes::new(options.quick);
    let (target, _guard) = prepare_target(options, sizes.target_bytes, "engine-target.img")?;
    println!(
        "engine suite on {} ({} MiB), fio at {fio}",
        target.display(),
        sizes.target_bytes >> 20
    );
    let mut cases = Vec::new();
    if options.wants("write") {
        cases.push(write_case(&target, &sizes)?);
    }
    if options.wants("read") {
        cases.extend(read_cases(&target, &sizes)?);
    }
    if options.wants("mixed") {
        cases.push(mixed_case(&target, &sizes)?);
    }
    if options.wants("open") {
        cases.extend(open_cases(&target, &sizes)?);
    }
    Ok(cases)
}

fn which_fio() -> Result<String, String> {
    let out = Command::new("fio").arg("--version").output().map_err(|_| {
        "fio is not installed; the engine suite compares against it (Debian: apt-get install fio)".to_string()
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) struct RemoveOnDrop(Option<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn prepare_target(
    options: &Options,
    bytes: u64,
    name: &str,
) -> Result<(PathBuf, RemoveOnDrop), String> {
    if let Some(t) = &options.target {
        // Blocks never written (or trimmed) read back without touching the medium, which
        // would flatter fio's reads over the whole target against ours over written data.
        let target_bytes = std::fs::File::open(t)
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
            .map_err(|e| format!("sizing {}: {e}", t.display()))?;
        if target_bytes <= PREFILL_NAMED_BYTES_MAX {
            println!(
                "writing all of {} once ({} MiB) so that every read touches written blocks",
                t.display(),
                target_bytes >> 20
            );
            prefill(t, target_bytes)?;
        } else {
            println!(
                "{} is over {} GiB and is not written through first: fio's reads of blocks \
                 never written may be faster than the medium",
                t.display(),
                PREFILL_NAMED_BYTES_MAX >> 30
            );
        }
        return Ok((t.clone(), RemoveOnDrop(None)));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let file =
        std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.set_len(bytes)
        .map_err(|e| format!("sizing {}: {e}", path.display()))?;
    // Write it once so neither side pays for allocating file blocks during its runs.
    prefill(&path, bytes)?;
    Ok((path.clone(), RemoveOnDrop(Some(path))))
}

/// A named target up to this size is written through once before the suite.
const PREFILL_NAMED_BYTES_MAX: u64 = 64 << 30;

/// Writes `bytes` of `path` once, sequentially, with fio.
pub(crate) fn prefill(path: &Path, bytes: u64) -> Result<(), String> {
    let status = Command::new("fio")
        .args([
            "--name=prefill",
            "--rw=write",
            "--bs=8M",
            "--ioengine=io_uring",
            "--direct=1",
            "--iodepth=8",
        ])
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--size={bytes}"))
        .arg("--output=/dev/null")
        .status()
        .map_err(|e| format!("running fio: {e}"))?;
    if !status.success() {
        return Err("fio prefill failed".into());
    }
    Ok(())
}

pub(crate) fn format_store(target: &Path) -> Result<Store, String> {
    let t = Target::Path(target.to_path_buf());
    let mut options = FormatOptions::new(NODE);
    options.force = true;
    format(&t, &options).map_err(|e| e.to_string())?;
    Store::open(&t, &OpenOptions::new(NODE)).map_err(|e| e.to_string())
}

pub(crate) fn fragments(count: usize, len: usize, seed: u64) -> Vec<(FragmentId, AlignedBuf)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let mut buf = AlignedBuf::zeroed(len);
            rng.fill_bytes(&mut buf);
            (FragmentId::of(&buf), buf)
        })
        .collect()
}

/// Puts every fragment with `queue_depth` in flight over two submitting threads.
pub(crate) fn put_all(
    store: &Arc<Store>,
    frags: Vec<(FragmentId, AlignedBuf)>,
    queue_depth: usize,
    hist: &mut Histogram<u64>,
) {
    let halves: Vec<Vec<_>> = {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, f) in frags.into_iter().enumerate() {
            if i % 2 == 0 { a.push(f) } else { b.push(f) }
        }
        vec![a, b]
    };
    let threads: Vec<_> = halves
        .into_iter()
        .map(|part| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let mut window = VecDeque::new();
                for (key, buf) in part {
                    if window.len() >= (queue_depth / 2).max(1) {
                        let (t, p): (Instant, cess_engine::Pending<_>) =
                            window.pop_front().unwrap();
                        p.wait().expect("put");
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    window.push_back((Instant::now(), store.put_buf(key, Class::Active, buf)));
                }
                for (t, p) in window {
                    p.wait().expect("put");
                    let _ = h.record(t.elapsed().as_micros() as u64);
                }
                h
            })
        })
        .collect();
    for t in threads {
        hist.add(t.join().expect("put thread"))
            .expect("histogram add");
    }
}

struct FioResult {
    bytes_per_sec: f64,
    iops: f64,
    latency: Latency,
}

fn fio(target: &Path, args: &[String]) -> Result<serde_json::Value, String> {
    let out = Command::new("fio")
        .args([
            "--ioengine=io_uring",
            "--direct=1",
            "--output-format=json",
            "--group_reporting",
        ])
        .arg(format!("--filename={}", target.display()))
        .args(args)
        .output()
        .map_err(|e| format!("running fio: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parsing fio output: {e}"))
}

fn fio_side(json: &serde_json::Value, side: &str) -> FioResult {
    let s = &json["jobs"][0][side];
    let pct = |p: &str| (s["clat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1000.0) as u64;
    FioResult {
        bytes_per_sec: s["bw_bytes"].as_f64().unwrap_or(0.0),
        iops: s["iops"].as_f64().unwrap_or(0.0),
        latency: Latency {
            p50_us: pct("50.000000"),
            p99_us: pct("99.000000"),
            p999_us: pct("99.900000"),
            max_us: (s["clat_ns"]["max"].as_f64().unwrap_or(0.0) / 1000.0) as u64,
        },
    }
}

fn write_case(target: &Path, sizes: &Sizes) -> Result<Case, String> {
    let total = sizes.write_fragments * sizes.fragment_bytes;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut fio_latency = Latency::default();
    for run in 0..sizes.runs {
        let store = Arc::new(format_store(target)?);
        let frags = fragments(sizes.write_fragments, sizes.fragment_bytes, run as u64);
        let started = Instant::now();
        put_all(&store, frags, sizes.queue_depth, &mut hist);
        ours.push(total as f64 / MIB / started.elapsed().as_secs_f64());
        drop(store);
        let json = fio(
            target,
            &[
                "--name=write".into(),
                "--rw=write".into(),
                format!("--bs={}", sizes.fragment_bytes),
                format!("--iodepth={}", sizes.queue_depth),
                format!("--size={total}"),
                format!("--offset={}", 64 << 20),
            ],
        )?;
        let r = fio_side(&json, "write");
        theirs.push(r.bytes_per_sec / MIB);
        fio_latency = r.latency;
    }
    Ok(Case {
        name: format!("write-{}MiB-fragments", sizes.fragment_bytes >> 20),
        metric: "throughput",
        unit: "MiB/s",
        baseline: format!(
            "fio io_uring direct write bs={}M iodepth={}",
            sizes.fragment_bytes >> 20,
            sizes.queue_depth
        ),
        goal: Some(0.90),
        latency: Latency::from_histogram(&hist),
        baseline_latency: Some(fio_latency),
        note: "ours includes SHA-256 verification, CRC32C per 4 KiB and a durable group commit \
               (2 flushes per round); fio does no flush"
            .into(),
        ..Case::from_runs(ours, theirs)
    })
}

/// Fills a fresh store and returns it with the keys and lengths stored.
fn filled_store(
    target: &Path,
    count: usize,
    len: usize,
    qd: usize,
) -> Result<(Arc<Store>, Vec<FragmentId>), String> {
    let store = Arc::new(format_store(target)?);
    let frags = fragments(count, len, 99);
    let keys = frags.iter().map(|(k, _)| *k).collect();
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    put_all(&store, frags, qd, &mut h);
    Ok((store, keys))
}

/// `ops` random 8 KiB reads at 8 KiB-aligned offsets, seeded: what a proof asks for.
fn random_read_set(
    keys: &[FragmentId],
    fragment_bytes: usize,
    ops: usize,
    seed: u64,
) -> Vec<(FragmentId, u64, u64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let slots = (fragment_bytes / 8192) as u64;
    (0..ops)
        .map(|_| {
            let key = keys[rng.random_range(0..keys.len())];
            (key, rng.random_range(0..slots) * 8192, 8192)
        })
        .collect()
}

/// The reads as one batch with `qd` on the device at a time (how proofs read), answers
/// taken in order by a blocking caller and dropped. Returns the reads done and the time.
fn batched_reads(store: &Store, reads: &[(FragmentId, u64, u64)], qd: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut done = 0;
    for answer in store.read_batch(reads, qd) {
        answer.wait().expect("read");
        done += 1;
    }
    (done, started.elapsed())
}

/// Random 8 KiB reads at 8 KiB-aligned offsets with `qd` always in flight, like fio: `qd`
/// tasks on one async thread, each issuing its next read as soon as its last one returns.
fn random_reads(
    store: &Arc<Store>,
    keys: &Arc<Vec<FragmentId>>,
    fragment_bytes: usize,
    ops: usize,
    qd: usize,
    deadline: Option<Instant>,
) -> (usize, Duration, Histogram<u64>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..qd as u64 {
            let (store, keys, issued) = (store.clone(), keys.clone(), issued.clone());
            tasks.spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(task);
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let slots = (fragment_bytes / 8192) as u64;
                let mut done = 0;
                while issued.fetch_add(1, Ordering::Relaxed) < ops
                    && deadline.is_none_or(|d| Instant::now() < d)
                {
                    let key = keys[rng.random_range(0..keys.len())];
                    let offset = rng.random_range(0..slots) * 8192;
                    let t0 = Instant::now();
                    store.read(key, offset, 8192).await.expect("read");
                    let _ = h.record(t0.elapsed().as_micros() as u64);
                    done += 1;
                }
                (done, h)
            });
        }
        tasks.join_all().await
    });
    let elapsed = started.elapsed();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for (done, h) in results {
        total += done;
        hist.add(h).expect("histogram add");
    }
    (total, elapsed, hist)
}

/// Random 8 KiB reads two ways against the same fio runs: as one batch (how proofs read, the
/// case with the goal) and as single requests each awaited by one of `qd` tasks.
fn read_cases(target: &Path, sizes: &Sizes) -> Result<Vec<Case>, String> {
    let (store, keys) = filled_store(
        target,
        sizes.read_fill_fragments,
        sizes.fragment_bytes,
        sizes.queue_depth,
    )?;
    let keys = Arc::new(keys);
    let span = store.superblock().geometry.device_bytes;
    let (mut batched, mut single, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut fio_latency = Latency::default();
    for run in 0..sizes.runs {
        let reads = random_read_set(&keys, sizes.fragment_bytes, sizes.read_ops, run as u64);
        let (done, elapsed) = batched_reads(&store, &reads, sizes.queue_depth);
        batched.push(done as f64 / elapsed.as_secs_f64());
        let (done, elapsed, h) = random_reads(
            &store,
            &keys,
            sizes.fragment_bytes,
            sizes.read_ops,
            sizes.queue_depth,
            None,
        );
        single.push(done as f64 / elapsed.as_secs_f64());
        hist.add(h).expect("histogram add");
        let json = fio(
            target,
            &[
                "--name=randread".into(),
                "--rw=randread".into(),
                "--bs=8k".into(),
                format!("--iodepth={}", sizes.queue_depth),
                format!("--size={span}"),
                format!("--number_ios={}", sizes.read_ops),
                "--randrepeat=0".into(),
            ],
        )?;
        let r = fio_side(&json, "read");
        theirs.push(r.iops);
        fio_latency = r.latency;
    }
    let baseline = format!(
        "fio io_uring direct randread bs=8k iodepth={}",
        sizes.queue_depth
    );
    Ok(vec![
        Case {
            name: "read-8KiB-random".into(),
            metric: "iops",
            unit: "IOPS",
            baseline: baseline.clone(),
            goal: Some(0.85),
            baseline_latency: Some(fio_latency),
            note: format!(
                "verified range reads over {} stored fragments, one read_batch of {} with {} \
                 on the device (how proofs read); no per-read latency from outside",
                keys.len(),
                sizes.read_ops,
                sizes.queue_depth
            ),
            ..Case::from_runs(batched, theirs.clone())
        },
        Case {
            name: "read-8KiB-random-single".into(),
            metric: "iops",
            unit: "IOPS",
            baseline,
            latency: Latency::from_histogram(&hist),
            baseline_latency: Some(fio_latency),
            note: format!(
                "{} random 8 KiB reads (drawn as the batch's are) as single requests from {} \
                 async tasks: every read is a round trip between the caller's thread and a \
                 shard's",
                sizes.read_ops, sizes.queue_depth
            ),
            ..Case::from_runs(single, theirs)
        },
    ])
}

fn mixed_case(target: &Path, sizes: &Sizes) -> Result<Case, String> {
    let (store, keys) = filled_store(
        target,
        sizes.read_fill_fragments / 2,
        sizes.fragment_bytes,
        sizes.queue_depth,
    )?;
    let keys = Arc::new(keys);
    let duration = if sizes.runs == 1 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(8)
    };
    let deadline = Instant::now() + duration;
    let writer = {
        let store = store.clone();
        let (count, len) = (sizes.write_fragments, sizes.fragment_bytes);
        std::thread::spawn(move || {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut written = 0;
            // Made one at a time: generating them all first would eat the whole window.
            for i in 0..count as u64 {
                if Instant::now() >= deadline {
                    break;
                }
                let (key, buf) = fragments(1, len, 7_000 + i).pop().expect("one fragment");
                let t0 = Instant::now();
                store.put_buf(key, Class::Active, buf).wait().expect("put");
                let _ = h.record(t0.elapsed().as_micros() as u64);
                written += 1;
            }
            (written, h)
        })
    };
    let (reads, elapsed, read_hist) = random_reads(
        &store,
        &keys,
        sizes.fragment_bytes,
        usize::MAX / 4,
        sizes.queue_depth,
        Some(deadline),
    );
    let (written, put_hist) = writer.join().expect("writer");
    if written == 0 || reads == 0 {
        return Err(format!(
            "mixed: {written} puts and {reads} reads finished in the window; nothing to compare"
        ));
    }
    let put_latency = Latency::from_histogram(&put_hist);
    drop(store);
    let span = 4 * sizes.write_fragments as u64 * sizes.fragment_bytes as u64;
    let json = fio(
        target,
        &[
            "--name=writer".into(),
            "--rw=write".into(),
            format!("--bs={}", sizes.fragment_bytes),
            "--iodepth=1".into(),
            format!("--size={span}"),
            format!("--runtime={}", duration.as_secs()),
            "--time_based".into(),
            "--name=reader".into(),
            "--rw=randread".into(),
            "--bs=8k".into(),
            format!("--iodepth={}", sizes.queue_depth),
            format!("--size={span}"),
            format!("--runtime={}", duration.as_secs()),
            "--time_based".into(),
        ],
    )?;
    let fio_read = fio_side(&json, "read");
    let fio_write = fio_side(&json, "write");
    let ours_iops = reads as f64 / elapsed.as_secs_f64();
    Ok(Case {
        name: "mixed".into(),
        metric: "read p99 latency under puts",
        unit: "us",
        value: Latency::from_histogram(&read_hist).p99_us as f64,
        baseline: "fio writer bs=8M qd1 + randread bs=8k in parallel".into(),
        baseline_value: fio_read.latency.p99_us as f64,
        lower_is_better: true,
        goal: None,
        latency: Latency::from_histogram(&read_hist),
        baseline_latency: Some(fio_read.latency),
        runs: 1,
        spread: 0.0,
        note: format!(
            "reads {ours_iops:.0} IOPS vs fio {:.0}; {written} puts p50/p99/p999 {}/{}/{} us \
             (fio write p50/p99 {}/{} us)",
            fio_read.iops,
            put_latency.p50_us,
            put_latency.p99_us,
            put_latency.p999_us,
            fio_write.latency.p50_us,
            fio_write.latency.p99_us
        ),
    })
}

fn open_cases(target: &Path, sizes: &Sizes) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for count in [sizes.open_count, 10 * sizes.open_count] {
        let (store, _) = filled_store(target, count, sizes.open_small_bytes, sizes.queue_depth)?;
        let stored = store.stats().map_err(|e| e.to_string())?;
        drop(store);
        let mut opens = Vec::new();
        for _ in 0..sizes.runs.max(3) {
            let t0 = Instant::now();
            let store = Store::open(&Target::Path(target.to_path_buf()), &OpenOptions::new(NODE))
                .map_err(|e| e.to_string())?;
            opens.push(t0.elapsed().as_secs_f64() * 1000.0);
            drop(store);
        }
        // What a store that walks its fragments at open would pay: reading them all.
        let json = fio(
            target,
            &[
                "--name=walk".into(),
                "--rw=read".into(),
                "--bs=1M".into(),
                "--iodepth=8".into(),
                format!("--size={}", stored.active_bytes.max(1 << 20)),
            ],
        )?;
        let walk = fio_side(&json, "read");
        let walk_ms = stored.active_bytes as f64 / walk.bytes_per_sec.max(1.0) * 1000.0;
        cases.push(Case {
            name: format!("open-time-{count}"),
            metric: "open time",
            unit: "ms",
            spread: spread(&opens),
            value: median(&mut opens),
            baseline: format!(
                "fio reading the {} MiB stored (a data walk)",
                stored.active_bytes >> 20
            ),
            baseline_value: walk_ms,
            lower_is_better: true,
            goal: None,
            latency: Latency::default(),
            baseline_latency: None,
            runs: sizes.runs.max(3),
            note: format!("{count} fragments of {} KiB", sizes.open_small_bytes >> 10),
        });
    }
    Ok(cases)
}
