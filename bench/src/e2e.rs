// Long file: the end-to-end cases share the devnet harness.
//! Suite `e2e`, whole `cess put`s to local processes whose stores are files on this disk:
//!
//! - `put-1GiB-12-nodes`: a put to 12 node processes with no chain in the path, against the
//!   honest bound of the work a put must do: two cores divided by the sum of the one-core
//!   seconds of each stage, each timed alone on the same bytes in the same run: the encode
//!   (Reed-Solomon, SHA-256 of every segment and fragment: the client's fragment ids), the
//!   AEAD of QUIC on both ends (AES-128-GCM, the suite our client offers first, sealed by the
//!   client and opened by the node, per packet), and the node's store write (its SHA-256 check,
//!   CRC32C, io_uring O_DIRECT to a store file on this disk, the durable commit). AEAD is not
//!   all QUIC costs: `put-1GiB-12-nodes-quic-bound` sets the same runs against the bound that
//!   counts instead the CPU time of a bare quinn transfer of the same bytes on loopback (both
//!   ends: AEAD, packets, UDP system calls), measured in the same run.
//! - `audit-round-12-miners`: on the devnet (audits every 30 blocks, every miner holding data
//!   challenged), from the round's opening (the first miner starts proving) until every one
//!   of the 12 miners' proofs is verified valid in a block, against the slowest miner's proving
//!   time in that round (the round cannot be shorter); the rest is the chain's share (blocks,
//!   transactions, verification) and the network's.
//! - `put-to-active-256MiB`: a put to the devnet on a chain (4 validator processes, 12 miners:
//!   space rented, the order placed by the ledger, fragments sent where it placed them, every
//!   column reported, Active in a committed block), against the same put to 12 miners with the
//!   chain out of the path, in the same run: what the chain costs a put.
//! - `s3-put` and `s3-get`: boto3's `upload_file` and `download_file` (its defaults: parts and
//!   ranges of 8 MiB, 10 threads) through `cess gateway` on the chain devnet, against `cess put
//!   --key` and `cess get --key` of the same file (the same encryption, segment size and
//!   network), alternating, in the same run: what the S3 protocol and the gateway cost.

use crate::report::{Case, Options};
use cess_codec::{self as codec, CodecError, EncodeOptions, FragmentSink};
use cess_types::FragmentId;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const NODES: usize = 12;
/// Blocks a restore waits for one after another: the loss report's, the claim's and the
/// completion's (each needs the one before it on the ledger).
const RESTORE_BLOCKS: u32 = 3;

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    if options.wants("put-1GiB-12-nodes") || options.wants("put-1GiB-12-nodes-quic-bound") {
        cases.extend(put_cases(options)?);
    }
    if options.wants("put-to-active-256MiB") {
        cases.push(chain_put_case(options)?);
    }
    if options.wants("audit-round-12-miners") {
        cases.push(audit_round_case(options)?);
    }
    if options.wants("restore-one-miner") {
        cases.extend(restore_cases(options)?);
    }
    if options.wants("s3-put") || options.wants("s3-get") {
        cases.extend(s3_cases(options)?);
    }
    Ok(cases)
}

/// The `cess` binary beside this one (the same build).
fn cess_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cess = exe.with_file_name("cess");
    if cess.exists() {
        Ok(cess)
    } else {
        Err(format!(
            "the e2e suite runs the `cess` program and found none at {}; build it first: \
             cargo build --release -p cess-tools",
            cess.display()
        ))
    }
}

fn cess(binary: &Path, args: &[&str]) -> Result<(), String> {
    cess_output(binary, args).map(|_| ())
}

/// Runs `cess` and returns what it printed on stdout.
fn cess_output(binary: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| format!("running cess: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "cess {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Stops the nodes and removes the directory, also when the case fails.
struct Network {
    cess: PathBuf,
    dir: PathBuf,
}

impl Drop for Network {
    fn drop(&mut self) {
        let net = self.dir.join("net");
        let _ = cess(
            &self.cess,
            &["devnet", "down", "--dir", &net.to_string_lossy()],
        );
        // CESS_BENCH_KEEP=1 keeps the network's directory (logs, stores) to read afterwards.
        if std::env::var_os("CESS_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `cess devnet up` in `net`, with or without a chain.
fn devnet_up(binary: &Path, net: &Path, store_mib: usize, chain: bool) -> Result<(), String> {
    devnet_up_with(binary, net, store_mib, chain, NODES)
}

fn devnet_up_with(
    binary: &Path,
    net: &Path,
    store_mib: usize,
    chain: bool,
    nodes: usize,
) -> Result<(), String> {
    let net_arg = net.to_string_lossy().to_string();
    let store_arg = store_mib.to_string();
    let nodes_arg = nodes.to_string();
    let mut args = vec![
        "devnet",
        "up",
        "--dir",
        &net_arg,
        "--nodes",
        &nodes_arg,
        "--store-mib",
        &store_arg,
    ];
    if !chain {
        args.push("--no-chain");
    }
    cess(binary, &args)
}

/// `put-to-active-256MiB`: the chain devnet's put until Active against the chain-less put to
/// as many miners, alternating, new bytes every put.
fn chain_put_case(options: &Options) -> Result<Case, String> {
    let (file_mib, runs) = if options.quick { (48, 1) } else { (256, 3) };
    let binary = cess_binary()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/e2e-chain");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Both networks are stopped on drop (the chain-less one first: the chain's removes the
    // whole directory).
    let _chain = Network {
        cess: binary.clone(),
        dir: dir.clone(),
    };
    let _chainless = Network {
        cess: binary.clone(),
        dir: dir.join("chainless"),
    };
    let store_mib = file_mib * 3 / NODES * runs * 3 / 2 + 256;
    let (chain_net, chainless_net) = (dir.join("net"), dir.join("chainless/net"));
    devnet_up(&binary, &chain_net, store_mib, true)?;
    devnet_up(&binary, &chainless_net, store_mib, false)?;
    let input = dir.join("input.bin");
    let input_arg = input.to_string_lossy().to_string();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // The chain's own stages of each chain put: (order, until Active) seconds.
    let mut chain_stages = Vec::new();
    for run in 0..runs {
        for (chain, net, rates) in [
            (true, &chain_net, &mut ours),
            (false, &chainless_net, &mut theirs),
        ] {
            write_input(&input, file_mib, 900 + run as u64)?;
            let net_arg = net.to_string_lossy().to_string();
            let started = Instant::now();
            let printed = cess_output(&binary, &["put", &input_arg, "--devnet", &net_arg])?;
            rates.push(file_mib as f64 / started.elapsed().as_secs_f64());
            if chain && let Some(stages) = chain_stage_seconds(&printed) {
                chain_stages.push(stages);
            }
        }
    }
    let stage_median = |i: usize| {
        let mut v: Vec<f64> = chain_stages.iter().map(|s: &[f64; 4]| s[i]).collect();
        crate::report::median(&mut v)
    };
    let (encode_s, order_s, send_s, active_s) = (
        stage_median(0),
        stage_median(1),
        stage_median(2),
        stage_median(3),
    );
    let mut case = Case::from_runs(ours, theirs);
    case.name = "put-to-active-256MiB".into();
    case.metric = "throughput";
    case.unit = "MiB/s";
    case.goal = Some(0.85);
    case.baseline = "the same put to 12 miners with no chain in the path".into();
    case.note = format!(
        "{file_mib} MiB file, segments of 32 MiB; on the chain: 4 validator processes (empty \
         blocks every 500 ms), space rented, order declared and placed by the ledger, every \
         column reported, Active in a committed block; each put is a new process that first \
         syncs its replica of the chain; a chain put's stages (medians): encode {encode_s:.2} s \
         (every id before the order: not overlapped with sending, as the chain-less put \
         overlaps it), order {order_s:.2} s (rent and declare, until placed in a committed \
         block), send {send_s:.2} s, until Active {active_s:.2} s"
    );
    Ok(case)
}

/// The `/status` of the node in `node_dir` (its loopback HTTP), parsed.
fn node_status(node_dir: &Path) -> Option<serde_json::Value> {
    let addr = std::fs::read_to_string(node_dir.join("metrics-addr")).ok()?;
    let body = cess_http::get_blocking(
        addr.trim().parse().ok()?,
        "/status",
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    serde_json::from_str(&body).ok()
}

/// The sum (seconds) and count of validator 0's commit steps of blocks holding storage
/// proofs, from its `/metrics`.
fn proof_block_steps(net: &Path) -> Option<(f64, f64)> {
    let addr = std::fs::read_to_string(net.join("chain/v0/metrics-addr")).ok()?;
    let text = cess_http::get_blocking(
        addr.trim().parse().ok()?,
        "/metrics",
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series))?
            .trim()
            .parse()
            .ok()
    };
    Some((
        value("cess_validator_commit_step_seconds_sum{blocks=\"with_proofs\"} ")?,
        value("cess_validator_commit_step_seconds_count{blocks=\"with_proofs\"} ")?,
    ))
}

/// `audit-round-12-miners`: one devnet, a file on every miner, then audit rounds timed from
/// the outside by polling the miners' `/status` every 50 ms; the validators' verification time
/// from validator 0's metrics.
fn audit_round_case(options: &Options) -> Result<Case, String> {
    let (file_mib, rounds) = if options.quick { (16, 1) } else { (256, 3) };
    let binary = cess_binary()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/e2e-audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _network = Network {
        cess: binary.clone(),
        dir: dir.clone(),
    };
    let net = dir.join("net");
    devnet_up(&binary, &net, file_mib * 3 / NODES * 2 + 256, true)?;
    let input = dir.join("input.bin");
    write_input(&input, file_mib, 31)?;
    cess(
        &binary,
        &[
            "put",
            &input.to_string_lossy(),
            "--devnet",
            &net.to_string_lossy(),
        ],
    )?;
    let node_dirs: Vec<PathBuf> = (0..NODES)
        .map(|i| net.join(format!("node-{i:02}")))
        .collect();
    let audits_of = |d: &PathBuf| -> Vec<serde_json::Value> {
        node_status(d)
            .and_then(|s| s["chain"]["audits"].as_array().cloned())
            .unwrap_or_default()
    };
    // The first round that opens from now on, then the next ones.
    let mut seen_round = node_dirs
        .iter()
        .flat_map(&audits_of)
        .filter_map(|a| a["round"].as_u64())
        .max()
        .unwrap_or(0);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut margins, mut proof_bytes) = (Vec::new(), 0u64);
    let (mut verify_ms, mut proof_blocks) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + std::time::Duration::from_secs(120 + 60 * rounds as u64);
    while ours.len() < rounds {
        if Instant::now() > deadline {
            return Err(format!(
                "audit rounds did not complete; see {}",
                net.display()
            ));
        }
        let opened = node_dirs
            .iter()
            .flat_map(&audits_of)
            .filter_map(|a| a["round"].as_u64())
            .find(|r| *r > seen_round);
        let Some(round) = opened else {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        let t_open = Instant::now();
        let steps_before = proof_block_steps(&net).unwrap_or_default();
        seen_round = round;
        let records = loop {
            if Instant::now() > deadline {
                return Err(format!("round {round} did not complete"));
            }
            let records: Option<Vec<serde_json::Value>> = node_dirs
                .iter()
                .map(|d| {
                    audits_of(d)
                        .into_iter()
                        .find(|a| a["round"] == round && a["result"] == "valid")
                })
                .collect();
            if let Some(records) = records {
                break records;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let round_s = t_open.elapsed().as_secs_f64();
        let steps_after = proof_block_steps(&net).unwrap_or_default();
        verify_ms.push((steps_after.0 - steps_before.0) * 1000.0);
        proof_blocks.push(steps_after.1 - steps_before.1);
        let slowest_prove_s = records
            .iter()
            .filter_map(|a| a["prove_ms"].as_u64())
            .max()
            .unwrap_or(0) as f64
            / 1000.0;
        margins.extend(records.iter().filter_map(|a| a["margin_blocks"].as_f64()));
        proof_bytes = records
            .iter()
            .filter_map(|a| a["proof_bytes"].as_u64())
            .max()
            .unwrap_or(0);
        ours.push(round_s * 1000.0);
        theirs.push(slowest_prove_s * 1000.0);
    }
    let mut case = Case::from_times(
        "audit-round-12-miners".into(),
        ours,
        theirs,
        "the slowest miner's proving time in the round".into(),
    );
    let (round_ms, prove_ms) = (case.value, case.baseline_value);
    let verify_median_ms = crate::report::median(&mut verify_ms);
    case.note = format!(
        "{file_mib} MiB file on 12 miners; a round from its opening (a miner starts proving, \
         polled every 50 ms) until every miner's proof is verified valid in a block; proofs of \
         {proof_bytes} bytes, submitted a median {:.0} blocks before the deadline. Median \
         round {round_ms:.0} ms = proving {prove_ms:.0} ms (the slowest miner) + verification \
         in the blocks {verify_median_ms:.0} ms (validator 0's commit steps of the {:.0} \
         blocks holding the round's proofs) + chain and network {:.0} ms (waiting for the next \
         block at 500 ms on an idle devnet, votes, inclusion, QUIC)",
        crate::report::median(&mut margins),
        crate::report::median(&mut proof_blocks),
        (round_ms - prove_ms - verify_median_ms).max(0.0),
    );
    Ok(case)
}

/// Kills a node process started by a case when the case ends, however it ends.
struct Restarted(std::process::Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM to the node running in `node_dir` (its pid file), waiting until it is gone.
fn stop_node(node_dir: &Path) -> Result<(), String> {
    let pid = std::fs::read_to_string(node_dir.join("pid")).map_err(|e| e.to_string())?;
    let pid = pid.trim();
    Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .map_err(|e| e.to_string())?;
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Instant::now() < deadline {
        let gone = std::fs::read_to_string(&stat).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        });
        if gone {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("node {} did not stop", node_dir.display()))
}

/// Deletes every fragment of the stopped node in `node_dir` from its store: (count, bytes).
fn wipe_store(node_dir: &Path) -> Result<(usize, u64), String> {
    let addr = std::fs::read_to_string(node_dir.join("addr")).map_err(|e| e.to_string())?;
    let peer: cess_transport::PeerId = addr
        .trim()
        .rsplit('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("the node's addr file names no peer")?;
    let store = cess_engine::Store::open(
        &cess_engine::Target::Path(node_dir.join("store.img")),
        &cess_engine::OpenOptions::new(cess_node::config::engine_node_id(&peer)),
    )
    .map_err(|e| e.to_string())?;
    let fragments: Vec<(cess_engine::FragmentId, u64)> = store
        .list()
        .filter_map(Result::ok)
        .map(|info| (info.key, info.len_bytes))
        .collect();
    for (key, _) in &fragments {
        store.delete(*key).wait().map_err(|e| e.to_string())?;
    }
    Ok((fragments.len(), fragments.iter().map(|(_, len)| len).sum()))
}

/// Fragments captured by column, per segment.
struct Columns(Vec<Vec<Vec<u8>>>);
impl FragmentSink for Columns {
    fn fragment(
        &mut self,
        segment: u64,
        index: usize,
        _: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        let segment = segment as usize;
        if self.0.len() <= segment {
            self.0.resize(segment + 1, Vec::new());
        }
        let row = &mut self.0[segment];
        if row.len() <= index {
            row.resize(index + 1, Vec::new());
        }
        row[index] = bytes.to_vec();
        Ok(())
    }
}

impl codec::FragmentSource for Columns {
    fn fetch(
        &self,
        segment: u64,
        index: usize,
        _: &FragmentId,
        buf: &mut [u8],
    ) -> Result<bool, CodecError> {
        // The rebuilt column is missing, as on the network.
        match self.0[segment as usize].get(index) {
            Some(bytes) if !bytes.is_empty() && bytes.len() == buf.len() => {
                buf.copy_from_slice(bytes);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// One core's seconds for the work a restore must do per rebuilt fragment of `input`'s
/// column `column`: the codec's repair (fetch free), and beside it the rest of the work a
/// rebuilt fragment costs anywhere: its `data_fragments` siblings over QUIC (both ends'
/// CPU), its tags made by the tagger and checked by the node.
struct RestoreWork {
    repair_s: f64,
    quic_s: f64,
    tag_s: f64,
    check_s: f64,
    fragments: usize,
    fragment_bytes: u64,
}

fn restore_work(input: &[u8], column: usize) -> Result<RestoreWork, String> {
    let options = EncodeOptions {
        threads: 1,
        ..EncodeOptions::default()
    };
    let k = usize::from(options.params.data_shards);
    let mut columns = Columns(Vec::new());
    let manifest = codec::encode(
        &mut &input[..],
        input.len() as u64,
        &options,
        &mut columns,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    let segments = manifest.segments.len();
    let mut rebuilt = Vec::new();
    for segment in 0..segments {
        columns.0[segment][column].clear();
    }
    let started = Instant::now();
    for segment in 0..segments {
        let mut got = codec::repair_segment(&manifest, segment as u64, &columns, &[column])
            .map_err(|e| e.to_string())?;
        rebuilt.push(got.remove(0).1);
    }
    let repair_s = started.elapsed().as_secs_f64();
    let fragment_bytes = rebuilt[0].len() as u64;
    let tagger =
        cess_proofs::SecretKey::from_seed(&[5; 32], cess_proofs::SECTORS_PER_BLOCK_DEFAULT)
            .map_err(|e| e.to_string())?;
    let (mut tag_s, mut check_s) = (0.0, 0.0);
    for fragment in &rebuilt {
        let id = FragmentId::of(fragment);
        let started = Instant::now();
        let tags = cess_proofs::tag_fragment(&tagger, &cess_proofs::CpuBackend, &id, fragment)
            .map_err(|e| e.to_string())?;
        tag_s += started.elapsed().as_secs_f64();
        let blob = tags.encode();
        let started = Instant::now();
        cess_proofs::check_tags(
            tagger.public(),
            &id,
            fragment,
            &blob,
            [9; 32],
            &cess_proofs::CpuBackend,
        )
        .map_err(|e| e.to_string())?;
        check_s += started.elapsed().as_secs_f64();
    }
    // Sibling transfers: the bare transfer of 8 MiB fragments, scaled to these.
    let quic_s = quic_transfer_cpu_s(k * segments)? * fragment_bytes as f64
        / crate::transport::FRAGMENT_BYTES as f64;
    Ok(RestoreWork {
        repair_s,
        quic_s,
        tag_s,
        check_s,
        fragments: segments,
        fragment_bytes,
    })
}

/// `restore-one-miner`: a devnet of 13 miners (a file's 12 columns and one with room) and a
/// file; one holder's store is wiped (stopped, every fragment deleted, started again). Timed
/// from its restart until the spare miner holds every rebuilt fragment, stored, tagged and
/// taken over on the ledger: the wiped node's loss reports, the spare's claims, fetching 4
/// siblings per fragment, the repair, the tags and the completions, each in a block. Rebuilt
/// bytes per second against (1) the codec's repair of the same column from memory in the same
/// run (the issue's bound: everything but the repair free), (2) the work a rebuilt fragment
/// costs wherever it is done (the repair, its siblings over QUIC, its tags made and checked)
/// on two cores, (3) that work plus the [`RESTORE_BLOCKS`] blocks a restore must wait for, at
/// the block time measured while it ran.
fn restore_cases(options: &Options) -> Result<Vec<Case>, String> {
    let (file_mib, runs) = if options.quick { (32, 1) } else { (256, 3) };
    let nodes = NODES + 1;
    let binary = cess_binary()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/e2e-restore");
    let (mut ours, mut codec_rates, mut work_rates, mut chain_rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut notes = Vec::new();
    for run in 0..runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let _network = Network {
            cess: binary.clone(),
            dir: dir.clone(),
        };
        let net = dir.join("net");
        devnet_up_with(&binary, &net, file_mib * 3 / NODES * 2 + 256, true, nodes)?;
        let input = dir.join("input.bin");
        let data = write_input(&input, file_mib, 1300 + run as u64)?;
        let printed = cess_output(
            &binary,
            &[
                "put",
                &input.to_string_lossy(),
                "--devnet",
                &net.to_string_lossy(),
            ],
        )?;
        let file_id = printed
            .lines()
            .find_map(|l| l.strip_prefix("file id "))
            .ok_or("put printed no file id")?
            .trim()
            .to_string();
        let node_dirs: Vec<PathBuf> = (0..nodes)
            .map(|i| net.join(format!("node-{i:02}")))
            .collect();
        let assigned =
            |d: &PathBuf| node_status(d).and_then(|s| s["chain"]["assigned_fragments"].as_u64());
        let counts: Vec<u64> = node_dirs
            .iter()
            .map(|d| assigned(d).ok_or("a node's status"))
            .collect::<Result<_, _>>()?;
        let victim = counts.iter().position(|c| *c > 0).ok_or("no holder")?;
        let spare = counts.iter().position(|c| *c == 0).ok_or("no spare")?;
        // The victim's column, for the codec's repair of the same fragments.
        let file: serde_json::Value = serde_json::from_str(&cess_output(
            &binary,
            &[
                "chain",
                "--dir",
                &net.join("chain").to_string_lossy(),
                "file",
                &file_id,
                "--json",
            ],
        )?)
        .map_err(|e| e.to_string())?;
        let victim_key = cess_transport::NodeKey::load(&node_dirs[victim].join("node.key"))
            .map_err(|e| e.to_string())?;
        let victim_account = cess_consensus::AccountKey::from_libp2p(victim_key.keypair())
            .ok_or("the node key is not Ed25519")?
            .id();
        let column = file["segments"][0]["fragments"]
            .as_array()
            .and_then(|f| {
                f.iter().position(|x| {
                    x["miner"].as_str() == Some(&cess_consensus::codec::hex(&victim_account.0))
                })
            })
            .ok_or("the victim's column")?;

        let height_of = |d: &PathBuf| {
            node_status(d)
                .and_then(|s| s["chain"]["height"].as_u64())
                .ok_or("a node's height")
        };
        stop_node(&node_dirs[victim])?;
        let (fragments, bytes) = wipe_store(&node_dirs[victim])?;
        let log = std::fs::File::create(node_dirs[victim].join("node-restarted.log"))
            .map_err(|e| e.to_string())?;
        // The blocks counted are those of the timed window.
        let height_before = height_of(&node_dirs[spare])?;
        let started = Instant::now();
        let _restarted = Restarted(
            Command::new(&binary)
                .args(["node", "run", &node_dirs[victim].to_string_lossy()])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        let deadline = started + std::time::Duration::from_secs(600);
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "the wiped miner's {fragments} fragments were not restored in 600 s; see {}",
                    net.display()
                ));
            }
            let done = node_status(&node_dirs[spare]).is_some_and(|s| {
                s["chain"]["assigned_fragments"] == fragments
                    && s["chain"]["stored_fragments"] == fragments
            });
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let restore_s = started.elapsed().as_secs_f64();
        // Blocks the chain made meanwhile: how long the three waits a restore cannot skip
        // took (the loss report, the claim and the completion, each in a block).
        let block_s = restore_s / (height_of(&node_dirs[spare])? - height_before).max(1) as f64;
        let mib = bytes as f64 / (1 << 20) as f64;
        ours.push(mib / restore_s);
        // The bounds are measured with the network down (its 18 idle processes would
        // take from them).
        drop(_restarted);
        drop(_network);
        let work = restore_work(&data, column)?;
        let rebuilt_mib = (work.fragments as u64 * work.fragment_bytes) as f64 / (1 << 20) as f64;
        codec_rates.push(rebuilt_mib / work.repair_s);
        let work_s = (work.repair_s + work.quic_s + work.tag_s + work.check_s) / 2.0;
        work_rates.push(rebuilt_mib / work_s);
        chain_rates.push(rebuilt_mib / (work_s + RESTORE_BLOCKS as f64 * block_s));
        notes.push(format!(
            "run {run}: {fragments} fragments ({mib:.0} MiB, column {column}) in {restore_s:.2} s, \
             {block_s:.3} s per block; one core: repair {:.3} s, siblings over QUIC {:.3} s, tags {:.3} s, tag check {:.3} s",
            work.repair_s, work.quic_s, work.tag_s, work.check_s
        ));
    }
    let mut codec_case = Case::from_runs(ours.clone(), codec_rates);
    codec_case.name = "restore-one-miner".into();
    codec_case.metric = "throughput";
    codec_case.unit = "MiB/s";
    codec_case.goal = Some(0.5);
    codec_case.baseline =
        "the codec's repair of the same column from memory (fetch, tags and chain free)".into();
    codec_case.note = format!(
        "{file_mib} MiB file, segments of 32 MiB, on a 13-miner devnet (4 validators, a tagger); \
         timed from the wiped miner's restart until the spare holds every rebuilt fragment, \
         tagged and taken over in a block (loss reports, claims, 4 siblings fetched per \
         fragment, repair, tags, completions); {}",
        notes.join("; ")
    );
    let mut work_case = Case::from_runs(ours.clone(), work_rates);
    work_case.name = "restore-one-miner-work-bound".into();
    work_case.metric = "throughput";
    work_case.unit = "MiB/s";
    work_case.goal = Some(0.5);
    work_case.baseline = "2 cores / one core's work per rebuilt fragment: the repair, its 4 \
                          siblings over QUIC (both ends), its tags made and checked"
        .into();
    work_case.note = "the honest bound beside restore-one-miner: the work a restore cannot skip \
                      (the issue's bound counts the repair alone)"
        .into();
    let mut chain_case = Case::from_runs(ours, chain_rates);
    chain_case.name = "restore-one-miner-chain-bound".into();
    chain_case.metric = "throughput";
    chain_case.unit = "MiB/s";
    chain_case.goal = Some(0.5);
    chain_case.baseline = "the work bound plus the three blocks a restore waits for (the loss \
                           report, the claim, the completion), at the block time measured during \
                           the restore"
        .into();
    chain_case.note = "the bound for a restore on this network: work and consensus cannot be \
                       skipped, a restart and the load of 18 processes on two cores can"
        .into();
    Ok(vec![codec_case, work_case, chain_case])
}

/// [encode, order, send, until Active] seconds from the last line `cess put` prints
/// (`encode 0.94 s, order 0.43 s, send 3.91 s, until active 0.37 s: …`).
fn chain_stage_seconds(printed: &str) -> Option<[f64; 4]> {
    let line = printed.lines().rev().find(|l| l.contains("until active"))?;
    let seconds_after = |label: &str| -> Option<f64> {
        let rest = &line[line.find(label)? + label.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some([
        seconds_after("encode ")?,
        seconds_after("order ")?,
        seconds_after("send ")?,
        seconds_after("until active ")?,
    ])
}

fn write_input(path: &Path, mib: usize, seed: u64) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; mib << 20];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    let mut file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    file.write_all(&data).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    Ok(data)
}

/// The payload of one QUIC packet the bound counts: the transport's path MTU discovery climbs
/// to 8952-byte UDP payloads on loopback, less the short header and the AEAD tag.
const QUIC_PACKET_BYTES: usize = 8900;

/// One core's seconds for each stage of the work a chain-less put of some bytes must do.
struct PutStages {
    encode_s: f64,
    aead_s: f64,
    /// CPU seconds of a bare quinn transfer of the fragments (both ends).
    quic_s: f64,
    store_s: f64,
}

impl PutStages {
    fn total_s(&self) -> f64 {
        self.encode_s + self.aead_s + self.store_s
    }

    fn total_with_quic_s(&self) -> f64 {
        self.encode_s + self.quic_s + self.store_s
    }
}

/// This process's CPU time (user + system) in seconds, from `/proc/self/stat` (clock ticks of
/// 1/100 s, Linux's USER_HZ).
fn process_cpu_s() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after = stat.rsplit_once(')').ok_or("unexpected /proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| "unexpected /proc/self/stat".to_string())
    };
    // utime is field 14, stime field 15: indices 11 and 12 after the state (field 3).
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// CPU seconds (both ends, one process) of moving `fragments` fragments of 8 MiB over one
/// bare quinn connection on loopback, 4 in flight, with the transport's TLS and limits.
pub(crate) fn quic_transfer_cpu_s(fragments: usize) -> Result<f64, String> {
    use crate::transport::{FRAGMENT_BYTES, bare_send, bare_server, loopback, throughput};
    use cess_transport::{Endpoint, Limits, NodeKey};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let server = Endpoint::server(Arc::new(NodeKey::generate()), loopback(), Limits::default())
            .map_err(|e| err(&e))?;
        tokio::spawn(bare_server(server.clone()));
        let client = Endpoint::client(Arc::new(NodeKey::generate()), loopback(), Limits::default())
            .map_err(|e| err(&e))?;
        let connection = client
            .dial(&server.node_addr().map_err(|e| err(&e))?)
            .await
            .map_err(|e| err(&e))?;
        let data = bytes::Bytes::from(crate::codec::random(FRAGMENT_BYTES, 12));
        let before = process_cpu_s()?;
        throughput(fragments, move |_| {
            bare_send(connection.clone(), data.clone())
        })
        .await;
        let cpu_s = process_cpu_s()? - before;
        server.close();
        Ok(cpu_s)
    })
}

/// Times each stage of a put of `data` alone: the encode on one thread, the AEAD of every
/// sent byte on both ends, and the store write of every fragment into a fresh store in
/// `store_file` (on the disk the nodes' stores are on).
fn put_stages(data: &[u8], store_file: &Path) -> Result<PutStages, String> {
    let encode_options = EncodeOptions {
        threads: 1,
        ..EncodeOptions::default()
    };
    let params = encode_options.params;
    let started = Instant::now();
    let manifest = codec::encode(
        &mut &data[..],
        data.len() as u64,
        &encode_options,
        &mut crate::codec::NullSink,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    let encode_s = started.elapsed().as_secs_f64();
    let fragment_bytes = params.fragment_bytes();
    let fragment_count = manifest.segments.len() * params.shard_count();
    let aead_s = aead_seconds(fragment_count, fragment_bytes);
    let quic_s = quic_transfer_cpu_s(fragment_count * fragment_bytes / (8 << 20))?;

    let stored_bytes = (fragment_count * fragment_bytes) as u64;
    crate::engine::prefill(store_file, stored_bytes + (256 << 20))?;
    let store = Arc::new(crate::engine::format_store(store_file)?);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut store_s = 0.0;
    // In batches: the fragments of a whole file need not sit in memory at once.
    let batch = 24;
    for (i, start) in (0..fragment_count).step_by(batch).enumerate() {
        let frags =
            crate::engine::fragments(batch.min(fragment_count - start), fragment_bytes, i as u64);
        let started = Instant::now();
        crate::engine::put_all(&store, frags, 8, &mut hist);
        store_s += started.elapsed().as_secs_f64();
    }
    Ok(PutStages {
        encode_s,
        aead_s,
        quic_s,
        store_s,
    })
}

/// Seconds to seal `fragments` fragments of `fragment_bytes` in QUIC-sized packets with
/// AES-128-GCM, then open them all again (the client's and the node's share).
fn aead_seconds(fragments: usize, fragment_bytes: usize) -> f64 {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).expect("a 16-byte key"));
    let mut buf = vec![0u8; fragment_bytes];
    ChaCha8Rng::seed_from_u64(11).fill_bytes(&mut buf);
    let header = [0u8; 16];
    let nonce = |n: u64| {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_le_bytes());
        Nonce::assume_unique_for_key(bytes)
    };
    let mut tags: Vec<Tag> = Vec::with_capacity(fragment_bytes.div_ceil(QUIC_PACKET_BYTES));
    let mut packet_number = 0u64;
    let started = Instant::now();
    for _ in 0..fragments {
        tags.clear();
        let first = packet_number;
        for packet in buf.chunks_mut(QUIC_PACKET_BYTES) {
            let tag = key
                .seal_in_place_separate_tag(nonce(packet_number), Aad::from(header), packet)
                .expect("seal");
            tags.push(tag);
            packet_number += 1;
        }
        for (i, (packet, tag)) in buf.chunks_mut(QUIC_PACKET_BYTES).zip(&tags).enumerate() {
            key.open_in_place_separate_tag(
                nonce(first + i as u64),
                Aad::from(header),
                *tag,
                packet,
                0..,
            )
            .expect("what was sealed opens");
        }
    }
    std::hint::black_box(&buf);
    started.elapsed().as_secs_f64()
}

fn put_cases(options: &Options) -> Result<Vec<Case>, String> {
    let (file_mib, runs) = if options.quick { (48, 1) } else { (1024, 3) };
    let binary = cess_binary()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let network = Network {
        cess: binary.clone(),
        dir: dir.clone(),
    };
    // Each node holds 3/12 of every run's input (one fragment column of 4 + 8), with slack.
    let store_mib = file_mib * 3 / NODES * runs * 3 / 2 + 256;
    let net = dir.join("net");
    let net_arg = net.to_string_lossy().to_string();
    devnet_up(&binary, &net, store_mib, false)?;
    let input = dir.join("input.bin");
    let input_arg = input.to_string_lossy().to_string();
    let store_file = dir.join("stage-store.img");
    let (mut ours, mut bound, mut quic_bound) = (Vec::new(), Vec::new(), Vec::new());
    let mut stage_runs = Vec::new();
    for run in 0..runs {
        // New bytes every run: the nodes would otherwise already hold the fragments.
        let data = write_input(&input, file_mib, 700 + run as u64)?;
        let started = Instant::now();
        cess(&binary, &["put", &input_arg, "--devnet", &net_arg])?;
        ours.push(file_mib as f64 / started.elapsed().as_secs_f64());

        let stages = put_stages(&data, &store_file)?;
        let _ = std::fs::remove_file(&store_file);
        bound.push(2.0 * file_mib as f64 / stages.total_s());
        quic_bound.push(2.0 * file_mib as f64 / stages.total_with_quic_s());
        stage_runs.push(stages);
    }
    drop(network);
    let mut quic_case = Case::from_runs(ours.clone(), quic_bound);
    let mut case = Case::from_runs(ours, bound);
    case.name = "put-1GiB-12-nodes".into();
    case.metric = "throughput";
    case.unit = "MiB/s";
    case.goal = Some(0.60);
    case.baseline = "2 cores / sum of one-core stage times: encode, QUIC AEAD both ends, \
                     the node's store write"
        .into();
    let per_gib = |f: fn(&PutStages) -> f64| {
        let mut v: Vec<f64> = stage_runs
            .iter()
            .map(|s| f(s) * 1024.0 / file_mib as f64)
            .collect();
        crate::report::median(&mut v)
    };
    case.note = format!(
        "{file_mib} MiB file, 12 node processes on loopback with store files on this disk; \
         one-core seconds per GiB of input: encode {:.2}, AEAD {:.2} (3 bytes sent per input \
         byte, sealed and opened in {QUIC_PACKET_BYTES}-byte packets), store write {:.2} \
         (3 bytes per input byte, timed as the store runs it: io_uring, queue depth 8, its \
         durable commits)",
        per_gib(|s| s.encode_s),
        per_gib(|s| s.aead_s),
        per_gib(|s| s.store_s),
    );
    quic_case.name = "put-1GiB-12-nodes-quic-bound".into();
    quic_case.metric = "throughput";
    quic_case.unit = "MiB/s";
    quic_case.goal = Some(0.60);
    quic_case.baseline = "2 cores / sum of one-core stage times: encode, a bare quinn transfer \
                          of the same bytes (CPU of both ends), the node's store write"
        .into();
    quic_case.note = format!(
        "the same puts; one-core seconds per GiB of input: encode {:.2}, bare quinn transfer \
         {:.2} (this process's CPU time moving 3 bytes per input byte over one loopback \
         connection, 4 streams in flight), store write {:.2}",
        per_gib(|s| s.encode_s),
        per_gib(|s| s.quic_s),
        per_gib(|s| s.store_s),
    );
    Ok(vec![case, quic_case])
}

/// Blocks into an audit period by which its round's proofs (one per miner) are in blocks and
/// verified.
const AUDIT_QUIET_PHASE: u64 = 8;
/// Reads of the object in one run of `s3-get` (and of its baseline), each in its own audit
/// period (one is 15 s of blocks on an idle devnet, a 1 GiB read 6 to 8 s); the run's figure
/// is their median, so one read stalled by the machine does not make the run.
const READS_PER_RUN: usize = 3;

/// Waits until the chain, as the validator in `validator_dir` commits it, is `phase` blocks
/// into an audit period of `period` blocks (the next time it is, if it is now). A validator's
/// height, not a miner's: a miner busy storing follows blocks late.
fn wait_for_audit_phase(validator_dir: &Path, period: u64, phase: u64) -> Result<(), String> {
    let height = || {
        validator_height(validator_dir).ok_or_else(|| {
            format!(
                "no height from the validator in {}",
                validator_dir.display()
            )
        })
    };
    let start = height()?;
    let started = Instant::now();
    loop {
        let now = height()?;
        if now != start && now % period == phase {
            return Ok(());
        }
        if started.elapsed().as_secs() > 30 + 4 * period {
            return Err(format!(
                "the chain did not reach phase {phase} of its {period}-block audit period \
                 (height {start} to {now})"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last height the validator in `dir` committed, from its `/metrics`.
fn validator_height(dir: &Path) -> Option<u64> {
    let addr = std::fs::read_to_string(dir.join("metrics-addr")).ok()?;
    let body = cess_http::get_blocking(
        addr.trim().parse().ok()?,
        "/metrics",
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("cess_validator_height "))
        .and_then(|v| v.trim().parse().ok())
}

/// The boto3 side of `s3-put-get`: one upload or download, its seconds on stdout.
const S3_CLIENT: &str = r#"
import sys, time, boto3
from botocore.config import Config
endpoint, key, secret, mode, bucket, name, path = sys.argv[1:8]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
    aws_secret_access_key=secret, region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
if mode == "mb":
    s3.create_bucket(Bucket=bucket)
    sys.exit(0)
started = time.monotonic()
if mode == "put":
    s3.upload_file(path, bucket, name)
else:
    s3.download_file(bucket, name, path)
print(time.monotonic() - started)
"#;

/// A Python 3 with boto3, or why not.
fn python_with_boto3() -> Result<String, String> {
    for python in ["python3", "/usr/bin/python3"] {
        let found = Command::new(python)
            .args(["-c", "import boto3"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(python.to_string());
        }
    }
    Err(
        "s3-put-get drives the gateway with boto3 and finds no Python 3 with it: \
         apt-get install python3-boto3 (or pip install boto3)"
            .into(),
    )
}

/// Kills the gateway when the case ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `s3-put` and `s3-get`: boto3 through the gateway against `cess put`/`cess get` of the
/// same file on the same chain devnet, alternating, new bytes every run.
fn s3_cases(options: &Options) -> Result<Vec<Case>, String> {
    let (file_mib, runs, segment_mib) = if options.quick {
        (32, 1, 4)
    } else {
        (1024, 3, 32)
    };
    let python = python_with_boto3()?;
    let binary = cess_binary()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/e2e-s3");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _network = Network {
        cess: binary.clone(),
        dir: dir.clone(),
    };
    let net = dir.join("net");
    let net_arg = net.to_string_lossy().to_string();
    let gw = dir.join("gw");
    let gw_arg = gw.to_string_lossy().to_string();
    // Every run stores the file twice (gateway and put), and the warm-up once more: 3 fragment
    // bytes per file byte.
    let stored_mib = file_mib * 3 * (2 * runs + 1);
    devnet_up(&binary, &net, stored_mib / NODES + 256, true)?;
    let field = |printed: &str, prefix: &str| -> Result<String, String> {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("no {prefix:?} in {printed}"))
    };
    let gateway_id = field(
        &cess_output(&binary, &["gateway", "init", "--dir", &gw_arg])?,
        "gateway ",
    )?;
    let client_key = net.join("client.key").to_string_lossy().to_string();
    let owner = field(
        &cess_output(&binary, &["owner", "init", &client_key])?,
        "owner ",
    )?;
    let rent_gib = stored_mib.div_ceil(1024) + 1;
    cess(
        &binary,
        &["transfer", &gateway_id, "100", "--devnet", &net_arg],
    )?;
    cess(
        &binary,
        &["rent", "--gib", &rent_gib.to_string(), "--devnet", &net_arg],
    )?;
    cess(&binary, &["authorize", &gateway_id, "--devnet", &net_arg])?;
    let keys = cess_output(
        &binary,
        &[
            "gateway", "keys", "add", "--dir", &gw_arg, "--owner", &owner,
        ],
    )?;
    let (access, secret) = (field(&keys, "access key ")?, field(&keys, "secret key ")?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log = std::fs::File::create(dir.join("gateway.log")).map_err(|e| e.to_string())?;
    let _gateway = Child(
        Command::new(&binary)
            .args([
                "gateway",
                "run",
                "--dir",
                &gw_arg,
                "--devnet",
                &net_arg,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--segment-mib",
                &segment_mib.to_string(),
            ])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the gateway: {e}"))?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed().as_secs() > 90 {
            return Err("the gateway did not listen within 90 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let boto = |mode: &str, name: &str, path: &Path| -> Result<f64, String> {
        let out = Command::new(&python)
            .args(["-c", S3_CLIENT, &endpoint, &access, &secret, mode, "bench"])
            .arg(name)
            .arg(path)
            .output()
            .map_err(|e| format!("running {python}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "boto3 {mode} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let printed = String::from_utf8_lossy(&out.stdout);
        if mode == "mb" {
            return Ok(0.0);
        }
        printed
            .trim()
            .parse()
            .map_err(|e| format!("boto3 printed {printed:?}: {e}"))
    };
    boto("mb", "", &dir)?;
    let key_file = dir.join("file.key");
    cess(&binary, &["keygen", &key_file.to_string_lossy()])?;
    let key_arg = key_file.to_string_lossy().to_string();
    let segment_arg = segment_mib.to_string();
    let input = dir.join("input.bin");
    let input_arg = input.to_string_lossy().to_string();
    let out = dir.join("out.bin");
    let out_arg = out.to_string_lossy().to_string();
    let (mut s3_put, mut cli_put, mut s3_get, mut cli_get) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s3_reads, mut cli_reads) = (Vec::new(), Vec::new());
    // Quick mode (the test suite) reads once: it shows the reads work, not their spread.
    let reads_per_run = if options.quick { 1 } else { READS_PER_RUN };
    let check = |data: &[u8], what: &str| -> Result<(), String> {
        let back = std::fs::read(&out).map_err(|e| e.to_string())?;
        if back != data {
            return Err(format!("{what} read back other bytes"));
        }
        std::fs::remove_file(&out).map_err(|e| e.to_string())
    };
    // Untimed: one object of the timed size first, so every miner holds data and the audit
    // rounds that load the network (12 provers, 4 verifiers on these two cores) run through
    // every timed put and get alike, and the young chain's first large order is not timed:
    // the first run alone differed by a fifth to a third, faster or slower, in every session.
    write_input(&input, file_mib, 1699)?;
    boto("put", "warm-up", &input)?;
    // Every timed read starts at the same point of an audit period, once its round's proofs
    // are in: a run then never meets the round at its start and the next at its end, which
    // alone made one run in three a third slower.
    let period = cess_consensus::Genesis::decode(
        &std::fs::read(net.join("chain/genesis.bin")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?
    .params
    .audit_period_blocks;
    let quiet = || wait_for_audit_phase(&net.join("chain/v0"), period, AUDIT_QUIET_PHASE);
    for run in 0..runs {
        let data = write_input(&input, file_mib, 1700 + run as u64)?;
        let name = format!("object-{run}");
        // One timed step (its seconds from `step`) as MiB/s, printed with its window in unix
        // seconds, to read beside the network's logs.
        let timed = |what: &str, step: &mut dyn FnMut() -> Result<f64, String>| {
            let stamp = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            };
            let started_at = stamp();
            let rate = file_mib as f64 / step()?;
            eprintln!(
                "  run {run}: {what} {rate:.1} MiB/s ({started_at:.1}..{:.1} unix s)",
                stamp()
            );
            Ok::<_, String>(rate)
        };
        // A run's reads, each in its own audit period, checked; its figure is their median.
        let median_read = |what: &str,
                           all: &mut Vec<f64>,
                           read: &mut dyn FnMut() -> Result<f64, String>|
         -> Result<f64, String> {
            let mut reads = Vec::new();
            for _ in 0..reads_per_run {
                quiet()?;
                reads.push(timed(what, read)?);
                check(&data, what)?;
            }
            all.extend_from_slice(&reads);
            Ok(crate::report::median(&mut reads))
        };
        s3_put.push(timed("s3 put", &mut || boto("put", &name, &input))?);
        s3_get.push(median_read("s3 get", &mut s3_reads, &mut || {
            boto("get", &name, &out)
        })?);
        // The same bytes again through the command line: encrypted with its own key, so
        // stored anew (no deduplication with the gateway's copy).
        let mut printed = String::new();
        cli_put.push(timed("cess put", &mut || {
            let started = Instant::now();
            printed = cess_output(
                &binary,
                &[
                    "put",
                    &input_arg,
                    "--devnet",
                    &net_arg,
                    "--key",
                    &key_arg,
                    "--segment-mib",
                    &segment_arg,
                ],
            )?;
            Ok(started.elapsed().as_secs_f64())
        })?);
        let file_id = field(&printed, "file id ")?;
        cli_get.push(median_read("cess get", &mut cli_reads, &mut || {
            let started = Instant::now();
            cess(
                &binary,
                &[
                    "get", &file_id, "--devnet", &net_arg, "--key", &key_arg, "--out", &out_arg,
                ],
            )?;
            Ok(started.elapsed().as_secs_f64())
        })?);
    }
    let note = format!(
        "{file_mib} MiB file, encrypted, segments of {segment_mib} MiB, 12 miners and 4 \
         validators on this machine; boto3 timed around its call (the gateway is up and \
         synced), each `cess` command as a whole process (it first syncs its replica)"
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let runs_of = |ours: &[f64], theirs: &[f64]| {
        format!(
            "; runs (MiB/s): ours {}, baseline {}",
            list(ours),
            list(theirs)
        )
    };
    let (put_runs, get_runs) = (runs_of(&s3_put, &cli_put), runs_of(&s3_get, &cli_get));
    let mut put = Case::from_runs(s3_put, cli_put);
    put.name = "s3-put".into();
    put.metric = "throughput";
    put.unit = "MiB/s";
    put.goal = Some(0.8);
    put.baseline = "cess put --key of the same file on the same network".into();
    put.note = format!(
        "{note}; boto3 sends 8 MiB parts, staged by the gateway and stored once \
         complete{put_runs}"
    );
    let mut get = Case::from_runs(s3_get, cli_get);
    get.name = "s3-get".into();
    get.metric = "throughput";
    get.unit = "MiB/s";
    get.goal = Some(0.8);
    get.baseline = "cess get --key of the same file on the same network".into();
    get.note = format!(
        "{note}; boto3 reads 8 MiB ranges on 10 threads; a run reads the object \
         {reads_per_run} times, each starting {AUDIT_QUIET_PHASE} blocks into its own audit \
         period (of {period}, by a validator's height), its proofs in, and its figure is the \
         median read{get_runs}; every read (MiB/s): ours {}, baseline {}",
        list(&s3_reads),
        list(&cli_reads)
    );
    Ok(vec![put, get])
}
