//! `cess node`: set a storage node up, run it, see it, check it, take it out.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::node;

#[derive(Subcommand)]
// Parsed once per run: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum NodeCommand {
    /// Creates a node directory: key (0600), formatted store, node.toml.
    Init {
        dir: PathBuf,
        /// UDP address for QUIC.
        #[arg(long, default_value = "127.0.0.1:4001")]
        listen: std::net::SocketAddr,
        /// Block device or file for the store (default: store.img in the directory).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Size of a new store file, MiB.
        #[arg(long, default_value_t = 4096)]
        store_mib: u64,
        /// Loopback address for /metrics and /status.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// PeerId allowed to write fragments (repeatable).
        #[arg(long = "writer")]
        writers: Vec<String>,
        /// Let any authenticated peer write (test networks only).
        #[arg(long)]
        allow_any_writer: bool,
        /// PeerId of an owner whose upload grants this node honours (repeatable).
        #[arg(long = "trusted-owner")]
        trusted_owners: Vec<String>,
        #[arg(long)]
        shards: Option<u32>,
        /// The largest fragment the store takes, MiB (default: 64, the ledger's largest
        /// fragment and the network's idle file, when every shard has 1 GiB or more; 8 on a
        /// smaller store, which then keeps no idle files of the network's size).
        #[arg(long)]
        max_fragment_mib: Option<u64>,
        /// Start over: overwrite an existing node.toml and store.
        #[arg(long)]
        force: bool,
        /// The address registered on the chain for clients to dial, when it is not the
        /// listen address (needed with --listen 0.0.0.0:…).
        #[arg(long)]
        announce: Option<String>,
        /// The chain's genesis file: the node stores only what this chain assigns to it.
        #[arg(long, requires = "validators")]
        genesis: Option<PathBuf>,
        /// A validator of that chain, /ip4/…/udp/…/quic-v1/p2p/… (repeatable).
        #[arg(long = "validator", requires = "genesis")]
        validators: Vec<String>,
        /// Collateral to register with, in tokens (default: the chain's minimum).
        #[arg(long)]
        collateral_tokens: Option<u64>,
        /// A tagger, /ip4/…/udp/…/quic-v1/p2p/…, asked for the tags of stored fragments
        /// (repeatable; their tags are checked).
        #[arg(long = "tagger", requires = "genesis")]
        taggers: Vec<String>,
        /// Idle space (PoIS) to fill and keep verified at most, MiB (default: all the room the
        /// declared space leaves beside the data).
        #[arg(long, requires = "genesis")]
        idle_fill_mib: Option<u64>,
    },
    /// Runs the node until SIGINT or SIGTERM.
    Run {
        /// The node directory (with node.toml) or the config file itself.
        path: PathBuf,
    },
    /// Prints a running node's status: its store, and its view of the chain.
    Status {
        /// The node directory.
        dir: PathBuf,
    },
    /// Leaves the miners: every fragment the node holds goes to restoral orders that other
    /// miners take (keep the node running until they are rebuilt; it serves them whole).
    Exit {
        /// The node directory.
        dir: PathBuf,
    },
    /// After `exit` and the cooling-off period: the collateral returns (less a penalty per
    /// fragment not yet rebuilt elsewhere).
    Withdraw {
        /// The node directory.
        dir: PathBuf,
    },
    /// Self-check of a running node: every fragment read back and checked against its
    /// checksums and id; what fails is dropped and rebuilt (or reported lost). Exits 1 when a
    /// fragment failed.
    Check {
        /// The node directory.
        dir: PathBuf,
        /// Also check each fragment's kept tags against its bytes, as a proof would.
        #[arg(long)]
        proof: bool,
    },
}

pub fn run(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Init {
            dir,
            listen,
            store,
            store_mib,
            metrics,
            writers,
            allow_any_writer,
            trusted_owners,
            shards,
            max_fragment_mib,
            force,
            announce,
            genesis,
            validators,
            collateral_tokens,
            taggers,
            idle_fill_mib,
        } => {
            let chain = match genesis {
                Some(genesis) => Some(node::ChainSettings {
                    genesis: std::path::absolute(genesis)?,
                    validators,
                    collateral_tokens,
                    taggers,
                    idle_fill_mib,
                }),
                None => None,
            };
            let options = node::InitOptions {
                listen,
                store,
                store_mib,
                metrics,
                writers,
                allow_any_writer,
                trusted_owners,
                shards,
                max_fragment_mib,
                force,
                announce,
                chain,
            };
            let peer = node::init(&dir, &options)?;
            println!("node {peer} set up in {}", dir.display());
            Ok(())
        }
        NodeCommand::Run { path } => {
            let config = if path.is_dir() {
                path.join(node::CONFIG_FILE)
            } else {
                path
            };
            node::run(&config)
        }
        NodeCommand::Status { dir } => {
            print!("{}", node::status(&dir)?);
            Ok(())
        }
        NodeCommand::Exit { dir } => node::leave(&dir, false),
        NodeCommand::Withdraw { dir } => node::leave(&dir, true),
        NodeCommand::Check { dir, proof } => {
            if node::check(&dir, proof)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}
