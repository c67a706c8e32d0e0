//! Suite `e2e`, whole `cess put`s to local processes whose stores are files on this disk:
//!
//! - `put-1GiB-12-nodes`: a put to 12 node processes with no chain in the path, against the
//!   bound set by the slower of the codec's encode on this machine (measured in the same run)
//!   and fio's sequential write throughput on the same disk divided by 3 (with 4 + 8
//!   fragments every input byte is stored 3 times).
//! - `put-to-active-256MiB`: a put to the devnet on a chain (4 validator processes, 12 miners:
//!   space rented, the order placed by the ledger, fragments sent where it placed them, every
//!   column reported, Active in a committed block), against the same put to 12 miners with the
//!   chain out of the path, in the same run: what the chain costs a put.

use crate::report::{Case, Options};
use cess_engine::codec::{self, CodecError, EncodeOptions, FragmentSink, Id};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const NODES: usize = 12;

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    if options.wants("put-1GiB-12-nodes") {
        cases.push(put_case(options)?);
    }
    if options.wants("put-to-active-256MiB") {
        cases.push(chain_put_case(options)?);
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
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| format!("running cess: {e}"))?;
    if out.status.success() {
        Ok(())
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cess devnet up` in `net`, with or without a chain.
fn devnet_up(binary: &Path, net: &Path, store_mib: usize, chain: bool) -> Result<(), String> {
    let net_arg = net.to_string_lossy().to_string();
    let store_arg = store_mib.to_string();
    let nodes_arg = NODES.to_string();
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
    for run in 0..runs {
        for (net, rates) in [(&chain_net, &mut ours), (&chainless_net, &mut theirs)] {
            write_input(&input, file_mib, 900 + run as u64)?;
            let net_arg = net.to_string_lossy().to_string();
            let started = Instant::now();
            cess(&binary, &["put", &input_arg, "--devnet", &net_arg])?;
            rates.push(file_mib as f64 / started.elapsed().as_secs_f64());
        }
    }
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
         syncs its replica of the chain"
    );
    Ok(case)
}

fn write_input(path: &Path, mib: usize, seed: u64) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; mib << 20];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    let mut file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    file.write_all(&data).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    Ok(data)
}

struct NullSink;
impl FragmentSink for NullSink {
    fn fragment(&mut self, _: u64, _: usize, _: &Id, bytes: &[u8]) -> Result<(), CodecError> {
        std::hint::black_box(bytes);
        Ok(())
    }
}

fn put_case(options: &Options) -> Result<Case, String> {
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
    let store_mib = (file_mib * 3 / NODES * runs * 3 / 2 + 256).to_string();
    let net = dir.join("net");
    let net_arg = net.to_string_lossy().to_string();
    cess(
        &binary,
        &[
            "devnet",
            "up",
            "--dir",
            &net_arg,
            "--nodes",
            "12",
            "--store-mib",
            &store_mib,
            "--no-chain",
        ],
    )?;
    let input = dir.join("input.bin");
    let input_arg = input.to_string_lossy().to_string();
    let fio_file = dir.join("fio.img");
    let (mut ours, mut bound) = (Vec::new(), Vec::new());
    let (mut encode_rates, mut fio_rates) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // New bytes every run: the nodes would otherwise already hold the fragments.
        let data = write_input(&input, file_mib, 700 + run as u64)?;
        let started = Instant::now();
        cess(&binary, &["put", &input_arg, "--devnet", &net_arg])?;
        ours.push(file_mib as f64 / started.elapsed().as_secs_f64());

        let encode_options = EncodeOptions {
            threads: 2,
            ..EncodeOptions::default()
        };
        let started = Instant::now();
        codec::encode(
            &mut &data[..],
            data.len() as u64,
            &encode_options,
            &mut NullSink,
            &mut |_| {},
        )
        .map_err(|e| e.to_string())?;
        let encode = file_mib as f64 / started.elapsed().as_secs_f64();
        drop(data);
        let fio = crate::engine::fio_write_mibs(&fio_file, (file_mib as u64) << 20)?;
        let _ = std::fs::remove_file(&fio_file);
        encode_rates.push(encode);
        fio_rates.push(fio);
        bound.push(encode.min(fio / 3.0));
    }
    drop(network);
    let mut case = Case::from_runs(ours, bound);
    case.name = "put-1GiB-12-nodes".into();
    case.metric = "throughput";
    case.unit = "MiB/s";
    case.goal = Some(0.60);
    case.baseline =
        "min(codec encode on 2 cores, fio sequential write on the same disk / 3)".into();
    case.note = format!(
        "{file_mib} MiB file, 12 node processes on loopback with store files on this disk; \
         encode {:.0} MiB/s, fio write {:.0} MiB/s (÷ 3 = {:.0})",
        crate::report::median(&mut encode_rates),
        crate::report::median(&mut fio_rates.clone()),
        crate::report::median(&mut fio_rates) / 3.0
    );
    Ok(case)
}
