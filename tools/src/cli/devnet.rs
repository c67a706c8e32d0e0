//! `cess demo` and `cess devnet`: a whole local network.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::devnet;

/// The arguments of `cess demo` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Working directory for the network (must not exist; removed afterwards).
    #[arg(long, default_value = "cess-demo-net")]
    dir: PathBuf,
    /// Size of the generated file, MiB.
    #[arg(long, default_value_t = 1024)]
    file_mib: u64,
    /// Storage nodes (4 data fragments per segment, the rest parity).
    #[arg(long, default_value_t = 12)]
    nodes: usize,
    #[arg(long, default_value_t = 32)]
    segment_mib: u32,
    /// Nodes to stop before reading the file back.
    #[arg(long, default_value_t = 2)]
    stop: usize,
    /// Keep the directory (stores, logs, manifests) afterwards.
    #[arg(long)]
    keep: bool,
    /// Idle space (PoIS) each miner fills and gets verified before the put, MiB (0: none).
    #[arg(long, default_value_t = 4)]
    idle_fill_mib: u64,
}

pub fn demo(args: DemoArgs) -> Result<()> {
    let DemoArgs {
        dir,
        file_mib,
        nodes,
        segment_mib,
        stop,
        keep,
        idle_fill_mib,
    } = args;
    devnet::demo(&devnet::DemoOptions {
        dir,
        nodes,
        file_mib,
        segment_mib,
        stop,
        keep,
        idle_fill_mib,
    })
}

#[derive(Subcommand)]
pub enum DevnetCommand {
    /// Sets up (first time) and starts validators and storage nodes in the background, and
    /// waits until every node is registered on the chain.
    Up {
        #[arg(long, default_value = "cess-devnet")]
        dir: PathBuf,
        #[arg(long, default_value_t = 12)]
        nodes: usize,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Store file size per node, MiB.
        #[arg(long, default_value_t = 2048)]
        store_mib: u64,
        /// Idle space (PoIS) each miner fills, gets verified and keeps proving, MiB at most
        /// (0: none; the engine's reserve for user writes is never filled).
        #[arg(long, default_value_t = 0)]
        idle_fill_mib: u64,
        /// Nodes alone, writing by an owner's grant, with their list in nodes.txt: the
        /// baseline that shows what the chain costs a put.
        #[arg(long)]
        no_chain: bool,
    },
    /// Stops the nodes (their stores stay for the next `up`).
    Down {
        #[arg(long, default_value = "cess-devnet")]
        dir: PathBuf,
    },
}

pub fn run(command: DevnetCommand) -> Result<()> {
    match command {
        DevnetCommand::Up {
            dir,
            nodes,
            validators,
            store_mib,
            idle_fill_mib,
            no_chain,
        } => {
            let options = devnet::UpOptions {
                nodes,
                store_mib,
                idle_fill_mib,
                validators: if no_chain { 0 } else { validators },
            };
            let net = devnet::up(&dir, &options)?;
            for (i, addr) in net.addrs.iter().enumerate() {
                println!("node {i:2} {addr}");
            }
            if no_chain {
                println!(
                    "{nodes} nodes up without a chain; addresses in {}; stop with `cess devnet down --dir {}`",
                    dir.join(devnet::NODES_FILE).display(),
                    dir.display()
                );
            } else {
                println!(
                    "{} validators and {nodes} miners up, every miner registered on the chain; \
                     `cess put FILE --devnet {}` stores a file; stop with `cess devnet down --dir {}`",
                    validators,
                    dir.display(),
                    dir.display()
                );
            }
            net.detach();
            Ok(())
        }
        DevnetCommand::Down { dir } => {
            let stopped = devnet::down(&dir)?;
            println!("stopped {stopped} processes");
            Ok(())
        }
    }
}
