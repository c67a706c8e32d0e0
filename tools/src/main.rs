// Long file: the command line's arguments and dispatch; to be split into cli/<family>.rs (issue
// 26).
//! `cess`: the project's programs. For now: the engine demo and the store's operator
//! commands. The storage node, validator, tagger and client arrive with their crates.

#![forbid(unsafe_code)]

mod chain;
mod codec_cmd;
mod devnet;
mod files;
mod gateway;
mod net;
mod node;
mod owner;
mod proof_cmd;
mod secret;
mod tagger;
mod validator;

use anyhow::{Context, Result, bail};
use cess_codec::CodecParams;
use cess_engine::{
    AlignedBuf, Class, FormatOptions, Key, NodeId, OpenOptions, Store, Target, format,
};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::RngCore;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The node identity the demo formats with when none is given.
const DEMO_NODE_HEX: &str = "de00000000000000000000000000000000000000000000000000000000000001";

#[derive(Parser)]
#[command(name = "cess", about = "CESS-style storage node data plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Brings up a local network, puts a generated file, stops two nodes, gets the file back
    /// from the rest, checks it is byte-identical, prints throughputs, tears everything down.
    Demo {
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
    },
    /// Stores a file on the network: encodes it, orders space on the chain, sends fragment j
    /// of every segment to the miner the chain placed column j on, waits until it is Active.
    Put {
        file: PathBuf,
        /// The network's directory (chain/, client.key).
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
        #[arg(long, conflicts_with = "passphrase")]
        key: Option<PathBuf>,
        #[arg(long)]
        passphrase: bool,
        #[arg(long, default_value_t = 32)]
        segment_mib: u32,
        /// A network without a chain only: an owner's upload grant to send with every
        /// write (default: the network's client.grant, when present).
        #[arg(long)]
        grant: Option<PathBuf>,
    },
    /// Fetches a file back by its id and key from any 4 fragments of each segment; the rest
    /// (length, ids, miners) comes from the chain.
    Get {
        file_id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
        #[arg(long, conflicts_with = "passphrase")]
        key: Option<PathBuf>,
        #[arg(long)]
        passphrase: bool,
        /// Reads with this account key (a delegate's, see `cess authorize`) instead of the
        /// network's client key: miners serve a file only to its owners, their delegates, a
        /// miner rebuilding it and the validators.
        #[arg(long = "as", value_name = "ACCOUNT_KEY")]
        as_key: Option<PathBuf>,
    },
    /// Lets another account act for the client account on its files (an S3 gateway: read
    /// them, declare and delete them in this account's space, keep its buckets; a backup
    /// agent), or with `--revoke` takes that back.
    Authorize {
        /// The delegate: its account id (64 hex digits) or its PeerId.
        delegate: String,
        #[arg(long)]
        revoke: bool,
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
        /// Signs with this account key instead of the network's client key.
        #[arg(long = "as", value_name = "ACCOUNT_KEY")]
        as_key: Option<PathBuf>,
    },
    /// Rents storage space (or extends the lease): GIB more GiB, BLOCKS more blocks.
    Rent {
        #[arg(long, default_value_t = 1)]
        gib: u32,
        #[arg(long, default_value_t = files::LEASE_BLOCKS)]
        blocks: u64,
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
        /// Signs with this account key instead of the network's client key.
        #[arg(long = "as", value_name = "ACCOUNT_KEY")]
        as_key: Option<PathBuf>,
    },
    /// Sends TOKENS tokens from the client account to another account (an id or a PeerId).
    Transfer {
        to: String,
        tokens: u64,
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
    },
    /// An S3-compatible gateway to the network (boto3, s3cmd, rclone, aws).
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Stops owning a file; when the last owner is gone its miners delete the fragments.
    Delete {
        file_id: String,
        #[arg(long, default_value = "cess-devnet")]
        devnet: PathBuf,
    },
    /// A local network of validators and storage nodes on loopback.
    #[command(subcommand)]
    Devnet(DevnetCommand),
    /// Formats a store in a file, puts and gets fragments, prints throughput and latency.
    EngineDemo {
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
    },
    /// Formats a block device or preallocated file as a fragment store.
    Format {
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
    },
    /// Prints space and health figures.
    Stats {
        target: PathBuf,
        #[arg(long, default_value = DEMO_NODE_HEX)]
        node_id: String,
    },
    /// Verifies every stored byte (resuming where an earlier scrub stopped), with progress.
    Scrub {
        target: PathBuf,
        #[arg(long, default_value = DEMO_NODE_HEX)]
        node_id: String,
    },
    /// Encodes a file into fragments (erasure-coded, optionally encrypted) and a manifest.
    Encode {
        file: PathBuf,
        /// Directory for the fragments and the manifest (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Encrypt under this key file (32 raw bytes or 64 hex digits; see `cess keygen`).
        #[arg(long, conflicts_with = "passphrase")]
        key: Option<PathBuf>,
        /// Encrypt under a passphrase (Argon2id), read from CESS_PASSPHRASE or standard input.
        #[arg(long)]
        passphrase: bool,
        #[arg(long, default_value_t = 32)]
        segment_mib: u32,
        #[arg(long, default_value_t = 4)]
        data_shards: u16,
        #[arg(long, default_value_t = 8)]
        parity_shards: u16,
    },
    /// Rebuilds a file from any k fragments of each segment, verifying everything.
    Decode {
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Where the fragments are (default: the manifest's directory).
        #[arg(long)]
        fragments: Option<PathBuf>,
        #[arg(long, conflicts_with = "passphrase")]
        key: Option<PathBuf>,
        #[arg(long)]
        passphrase: bool,
    },
    /// Writes a new random file key (mode 0600).
    Keygen { out: PathBuf },
    /// A storage node: set one up, run it.
    #[command(subcommand)]
    Node(NodeCommand),
    /// An owner's key and the upload grants it signs.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// PoDR² storage proofs: tagger keys, tags, challenges, proofs and their verification.
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Validators: a local validator network, one validator, transaction load.
    #[command(subcommand)]
    Validator(ValidatorCommand),
    /// The tagger service: tags the fragments the chain assigned to the miner that asks.
    #[command(subcommand)]
    Tagger(TaggerCommand),
    /// What the chain holds, from a replica checked block by block against the validators'
    /// commits (no validator is trusted).
    Chain {
        #[command(subcommand)]
        query: ChainCommand,
        /// A directory made by `cess validator testnet` (genesis.bin, validators.txt).
        #[arg(long, global = true, default_value = "cess-validators")]
        dir: PathBuf,
        /// The genesis file (instead of DIR/genesis.bin).
        #[arg(long, global = true)]
        genesis: Option<PathBuf>,
        /// A validator's address, /ip4/…/udp/…/quic-v1/p2p/… (repeatable; instead of
        /// DIR/validators.txt).
        #[arg(long = "validator", global = true)]
        validators: Vec<String>,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Height, tip, state root, counts.
    Status,
    /// The miner registry.
    Miners,
    /// Every file on the chain.
    Files,
    /// One file: owners, state, placement, fragments.
    File { file_id: String },
    /// An account's balance, nonce and lease (default: the testnet's faucet).
    Account { id: Option<String> },
}

#[derive(Subcommand)]
enum ValidatorCommand {
    /// Creates a local network of validators: keys, genesis, one directory per validator.
    Testnet {
        #[arg(long, default_value = "cess-validators")]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// First UDP port; validator i listens on base + i (loopback).
        #[arg(long, default_value_t = 5100)]
        base_port: u16,
        /// Nodes beyond the validators, funded but not in the genesis set (directories and
        /// ports after the validators'): run them, then `cess validator candidate`.
        #[arg(long, default_value_t = 0)]
        candidates: usize,
        /// Blocks per era: the validator set is elected again at each era's end.
        #[arg(long)]
        era_blocks: Option<u64>,
    },
    /// Runs one validator (a directory made by `testnet`) until SIGINT or SIGTERM; appends
    /// every commit to commits.log. A node outside the validator set follows the chain from
    /// its members and joins when an election takes it in.
    Run { dir: PathBuf },
    /// Registers the node of DIR as a validator candidate (or bonds more stake if it is
    /// one) and puts its address on the chain, where the validators find it when elected.
    Candidate {
        dir: PathBuf,
        /// Stake to bond, in tokens (default: the chain's minimum for a new candidate).
        #[arg(long)]
        stake_tokens: Option<u64>,
        /// Where validators reach it, /ip4/…/udp/…/quic-v1 (default: its listen address).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Sends signed transfers from the testnet's faucet to its first validator.
    Load {
        #[arg(long, default_value = "cess-validators")]
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        count: u64,
    },
}

#[derive(Subcommand)]
enum ProofCommand {
    /// Creates a tagger key pair: OUT (secret, mode 0600) and OUT.pub (public).
    Keygen {
        out: PathBuf,
        /// Sectors of 31 bytes per block (one tag per block).
        #[arg(long, default_value_t = cess_proofs::SECTORS_PER_BLOCK_DEFAULT)]
        sectors: u32,
    },
    /// Tags every fragment not yet tagged by this tagger (the tagger's job, not the miner's).
    Tag {
        /// The tagger's secret key.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
    },
    /// Derives a challenge from the public inputs and writes it.
    Challenge {
        /// The tagger's public key.
        #[arg(long)]
        public: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[command(flatten)]
        round: RoundArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Answers a challenge with one aggregated proof, reading only the challenged blocks.
    Prove {
        #[arg(long)]
        public: PathBuf,
        #[arg(long)]
        challenge: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-derives the challenge from the public inputs and verifies a proof (exit 1 if invalid).
    Verify {
        #[arg(long)]
        public: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[command(flatten)]
        round: RoundArgs,
        #[arg(long)]
        proof: PathBuf,
    },
}

/// Where the fragments are: a directory of fragment files or an engine store.
#[derive(clap::Args)]
struct HoldingArgs {
    /// A directory of fragment files (tags beside them as NAME.tags).
    #[arg(long)]
    fragments: Option<PathBuf>,
    /// An engine store (tags in each fragment's metadata).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The store's node identity, 64 hex digits.
    #[arg(long, default_value = DEMO_NODE_HEX)]
    node_id: String,
}

/// The public inputs of a challenge besides the fragment set.
#[derive(clap::Args)]
struct RoundArgs {
    /// The epoch's randomness, 64 hex digits.
    #[arg(long)]
    randomness: String,
    /// The challenged miner's identity.
    #[arg(long)]
    miner: String,
    #[arg(long, default_value_t = 0)]
    round: u64,
    /// Most fragments challenged per round.
    #[arg(long, default_value_t = cess_proofs::ChallengeParams::default().fragments_max)]
    challenge_fragments: u32,
    /// Blocks challenged per round, spread over the sampled fragments.
    #[arg(long, default_value_t = cess_proofs::ChallengeParams::default().blocks_max)]
    challenge_blocks: u32,
}

impl HoldingArgs {
    fn holding(self) -> Result<proof_cmd::Holding> {
        proof_cmd::parse_holding(self.fragments, self.store, node_id(&self.node_id)?)
    }
}

impl RoundArgs {
    fn round(self) -> proof_cmd::Round {
        proof_cmd::Round {
            randomness_hex: self.randomness,
            miner: self.miner,
            round: self.round,
            params: cess_proofs::ChallengeParams {
                fragments_max: self.challenge_fragments,
                blocks_max: self.challenge_blocks,
            },
        }
    }
}

#[derive(Subcommand)]
enum DevnetCommand {
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

#[derive(Subcommand)]
enum OwnerCommand {
    /// Creates an owner key (mode 0600) unless it exists; prints the owner's PeerId, which
    /// nodes list in `trusted_owners`.
    Init { key: PathBuf },
    /// Signs a grant letting UPLOADER (a PeerId) write to the nodes that trust this owner.
    Grant {
        #[arg(long)]
        owner_key: PathBuf,
        #[arg(long)]
        uploader: String,
        /// How long the grant holds, in hours.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a grant file's signature and says who may upload until when.
    Show { grant: PathBuf },
}

#[derive(Subcommand)]
enum TaggerCommand {
    /// Creates a tagger directory: QUIC identity, PoDR² secret key (0600), tagger.toml.
    Init {
        dir: PathBuf,
        /// UDP address for QUIC.
        #[arg(long, default_value = "127.0.0.1:4100")]
        listen: std::net::SocketAddr,
        /// Use this existing tagger secret key instead of making one.
        #[arg(long)]
        key: Option<PathBuf>,
        /// `auto` (a hardware GPU when found, else the CPU), `cpu` or `gpu`.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// A validator of that chain, /ip4/…/udp/…/quic-v1/p2p/… (repeatable).
        #[arg(long = "validator", required = true)]
        validators: Vec<String>,
        /// Loopback HTTP address for /metrics (its port in DIR/metrics-addr once running).
        #[arg(long, default_value = "127.0.0.1:0")]
        metrics: std::net::SocketAddr,
    },
    /// Runs the tagger until SIGINT or SIGTERM.
    Run {
        /// The tagger directory (with tagger.toml).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Creates the gateway's directory, account key and master secret (once); prints the
    /// account id owners authorize (`cess authorize ID`).
    Init {
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Serves S3 until interrupted.
    Run(gateway::Options),
    /// The access keys (each acts for one owner account).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Makes an access key for OWNER (an account id or PeerId); prints the key and its secret
    /// (shown this once; it is derived again from the gateway's master secret).
    Add {
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Lists the access keys and their owners.
    List {
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Removes an access key: a running gateway refuses requests signed with it within a
    /// second.
    Remove {
        access_key: String,
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
// Parsed once per run: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum NodeCommand {
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

fn node_id(hex: &str) -> Result<NodeId> {
    match Key::from_hex(hex) {
        Some(key) => Ok(NodeId(key.0)),
        None => bail!(
            "node id must be 64 hex digits, got {:?} ({} characters)",
            hex,
            hex.len()
        ),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // s3s logs every error answer at ERROR; the gateway logs its own failures once.
                .unwrap_or_else(|_| "warn,s3s=off".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Encode {
            file,
            out,
            key,
            passphrase,
            segment_mib,
            data_shards,
            parity_shards,
        } => {
            let params = cess_codec::CodecParams {
                segment_bytes: segment_mib
                    .checked_mul(1 << 20)
                    .context("segment size too large")?,
                data_shards,
                parity_shards,
            };
            let key = codec_cmd::KeyChoice {
                key_file: key,
                passphrase,
                given: None,
            };
            codec_cmd::encode(&file, &out, key, params)
        }
        Command::Decode {
            manifest,
            out,
            fragments,
            key,
            passphrase,
        } => {
            let key = codec_cmd::KeyChoice {
                key_file: key,
                passphrase,
                given: None,
            };
            codec_cmd::decode(&manifest, &out, fragments, key)
        }
        Command::Keygen { out } => codec_cmd::keygen(&out),
        Command::Proof(ProofCommand::Keygen { out, sectors }) => proof_cmd::keygen(&out, sectors),
        Command::Proof(ProofCommand::Tag { key, holding }) => {
            proof_cmd::tag(&key, &holding.holding()?)
        }
        Command::Proof(ProofCommand::Challenge {
            public,
            holding,
            round,
            out,
        }) => proof_cmd::challenge(&public, &holding.holding()?, &round.round(), &out),
        Command::Proof(ProofCommand::Prove {
            public,
            challenge,
            holding,
            out,
        }) => proof_cmd::prove_cmd(&public, &challenge, &holding.holding()?, &out),
        Command::Proof(ProofCommand::Verify {
            public,
            holding,
            round,
            proof,
        }) => {
            if proof_cmd::verify_cmd(&public, &holding.holding()?, &round.round(), &proof)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Node(NodeCommand::Init {
            dir,
            listen,
            store,
            store_mib,
            metrics,
            writers,
            allow_any_writer,
            trusted_owners,
            shards,
            force,
            announce,
            genesis,
            validators,
            collateral_tokens,
            taggers,
            idle_fill_mib,
        }) => {
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
                force,
                announce,
                chain,
            };
            let peer = node::init(&dir, &options)?;
            println!("node {peer} set up in {}", dir.display());
            Ok(())
        }
        Command::Validator(ValidatorCommand::Testnet {
            dir,
            validators,
            base_port,
            candidates,
            era_blocks,
        }) => validator::testnet(&dir, validators, base_port, candidates, era_blocks),
        Command::Validator(ValidatorCommand::Run { dir }) => validator::run(&dir),
        Command::Validator(ValidatorCommand::Candidate {
            dir,
            stake_tokens,
            endpoint,
        }) => validator::candidate(&dir, stake_tokens, endpoint),
        Command::Tagger(TaggerCommand::Init {
            dir,
            listen,
            key,
            backend,
            genesis,
            validators,
            metrics,
        }) => {
            let id = tagger::init(
                &dir,
                &tagger::InitOptions {
                    listen,
                    tagger_key: key,
                    backend,
                    genesis,
                    validators,
                    metrics: Some(metrics),
                },
            )?;
            println!("tagger {id} set up in {}", dir.display());
            Ok(())
        }
        Command::Tagger(TaggerCommand::Run { dir }) => tagger::run(&dir),
        Command::Chain {
            query,
            dir,
            genesis,
            validators,
            json,
        } => {
            let source = chain::ChainSource::resolve(&dir, genesis, &validators)?;
            let query = match query {
                ChainCommand::Status => chain::Query::Status,
                ChainCommand::Miners => chain::Query::Miners,
                ChainCommand::Files => chain::Query::Files,
                ChainCommand::File { file_id } => chain::Query::File(file_id),
                ChainCommand::Account { id } => chain::Query::Account(match id {
                    Some(id) => id,
                    None => validator::faucet_account(&dir)?,
                }),
            };
            chain::run(&source, query, json)
        }
        Command::Validator(ValidatorCommand::Load { dir, count }) => validator::load(&dir, count),
        Command::Owner(OwnerCommand::Init { key }) => {
            println!("owner {}", owner::init(&key)?);
            Ok(())
        }
        Command::Owner(OwnerCommand::Grant {
            owner_key,
            uploader,
            valid_hours,
            out,
        }) => {
            let uploader: cess_transport::PeerId = uploader
                .parse()
                .with_context(|| format!("uploader {uploader:?} is not a PeerId"))?;
            let valid_for = std::time::Duration::from_secs(valid_hours.saturating_mul(3600));
            let grant = owner::issue(&owner_key, uploader, valid_for, &out)?;
            println!("wrote {}: {}", out.display(), owner::describe(&grant));
            Ok(())
        }
        Command::Owner(OwnerCommand::Show { grant }) => {
            println!("{}", owner::describe(&owner::load(&grant)?));
            Ok(())
        }
        Command::Node(NodeCommand::Run { path }) => {
            let config = if path.is_dir() {
                path.join(node::CONFIG_FILE)
            } else {
                path
            };
            node::run(&config)
        }
        Command::Demo {
            dir,
            file_mib,
            nodes,
            segment_mib,
            stop,
            keep,
            idle_fill_mib,
        } => devnet::demo(&devnet::DemoOptions {
            dir,
            nodes,
            file_mib,
            segment_mib,
            stop,
            keep,
            idle_fill_mib,
        }),
        Command::Put {
            file,
            devnet,
            key,
            passphrase,
            segment_mib,
            grant,
        } => {
            let params = CodecParams {
                segment_bytes: segment_mib << 20,
                ..CodecParams::default()
            };
            let choice = codec_cmd::KeyChoice {
                key_file: key,
                passphrase,
                given: None,
            };
            if devnet::on_chain(&devnet) {
                if grant.is_some() {
                    bail!(
                        "--grant is for a network without a chain; the chain's order is the permission"
                    );
                }
                let (runtime, chain, client) = devnet::chain_client(&devnet)?;
                let report = files::put(
                    runtime.handle(),
                    &chain,
                    client,
                    &files::Upload::file(&file),
                    &choice,
                    params,
                )?;
                println!(
                    "file id {}\nactive: {} bytes as {} bytes of fragments on {} miners ({} bytes sent now)\n\
                     encode {:.2} s, order {:.2} s, send {:.2} s, until active {:.2} s: {:.0} MiB/s",
                    cess_codec::hex(&report.file_id),
                    report.file_bytes,
                    report.stored_bytes,
                    report.miners,
                    report.sent_bytes,
                    report.encode.as_secs_f64(),
                    report.order.as_secs_f64(),
                    report.send.as_secs_f64(),
                    report.active.as_secs_f64(),
                    codec_cmd::rate(report.file_bytes, report.elapsed())
                );
                return Ok(());
            }
            let nodes_file = devnet.join(devnet::NODES_FILE);
            if !nodes_file.exists() {
                bail!(
                    "{} holds no network: start one with `cess devnet up --dir {}`",
                    devnet.display(),
                    devnet.display()
                );
            }
            let nodes = net::read_nodes(&nodes_file)?;
            let (runtime, client) =
                net::devnet_client(&devnet, net::devnet_grant(&devnet, grant.as_deref())?)?;
            let report = net::put(
                runtime.handle(),
                client,
                &file,
                &nodes,
                &choice,
                params,
                &devnet.join(devnet::MANIFESTS),
            )?;
            println!(
                "file id {}
put {} bytes ({} bytes of fragments on {} nodes) at {:.0} MiB/s",
                cess_codec::hex(&report.file_id),
                report.file_bytes,
                report.stored_bytes,
                nodes.len(),
                codec_cmd::rate(report.file_bytes, report.elapsed)
            );
            Ok(())
        }
        Command::Get {
            file_id,
            out,
            devnet,
            key,
            passphrase,
            as_key,
        } => {
            let choice = codec_cmd::KeyChoice {
                key_file: key,
                passphrase,
                given: None,
            };
            let report = if devnet::on_chain(&devnet) {
                let (runtime, chain, mut client) = devnet::chain_client(&devnet)?;
                if let Some(path) = &as_key {
                    let reader = cess_transport::NodeKey::load(path)
                        .with_context(|| format!("loading the account key {}", path.display()))?;
                    let _guard = runtime.enter();
                    client = net::client(
                        std::sync::Arc::new(reader),
                        cess_transport::ClientConfig::default(),
                        None,
                    )?;
                }
                files::get(runtime.handle(), &chain, client, &file_id, &choice, &out)?
            } else {
                let (runtime, client) = net::devnet_client(&devnet, None)?;
                net::get(
                    runtime.handle(),
                    client,
                    &file_id,
                    &devnet.join(devnet::MANIFESTS),
                    &choice,
                    &out,
                )?
            };
            for f in &report.fallbacks {
                eprintln!("fell back: {f}");
            }
            println!(
                "got {} bytes into {} at {:.0} MiB/s",
                report.file_bytes,
                out.display(),
                codec_cmd::rate(report.file_bytes, report.elapsed)
            );
            Ok(())
        }
        Command::Rent {
            gib,
            blocks,
            devnet,
            as_key,
        } => {
            let (runtime, chain, _client) = devnet::chain_client_as(&devnet, as_key.as_deref())?;
            let height = runtime.block_on(chain.submit(cess_consensus::Call::RentSpace {
                add_gib: gib,
                add_blocks: blocks,
            }))?;
            let lease = chain.ledger(|l| l.lease(&chain.account.id()).copied());
            if let Some(lease) = lease {
                println!(
                    "rented at height {height}: {} GiB until height {}, {} bytes free",
                    lease.gib,
                    lease.until,
                    lease.free_bytes()
                );
            }
            Ok(())
        }
        Command::Transfer { to, tokens, devnet } => {
            let (runtime, chain, _client) = devnet::chain_client(&devnet)?;
            let to = files::parse_account(&to)?;
            let amount = u128::from(tokens) * cess_consensus::ledger::TOKEN;
            let height =
                runtime.block_on(chain.submit(cess_consensus::Call::Transfer { to, amount }))?;
            println!("sent {tokens} tokens to {to} (height {height})");
            Ok(())
        }
        Command::Gateway(GatewayCommand::Init { dir }) => {
            let account = gateway::init(&dir)?;
            println!(
                "gateway {account}\n(owners authorize it with `cess authorize {account}`; add \
                 their access keys with `cess gateway keys add --owner ACCOUNT`)"
            );
            Ok(())
        }
        Command::Gateway(GatewayCommand::Run(options)) => gateway::run(&options),
        Command::Gateway(GatewayCommand::Keys(KeysCommand::Add { owner, dir })) => {
            gateway::init(&dir)?;
            let owner = files::parse_account(&owner)?;
            let (key, secret) = gateway::keys::add(&dir, owner)?;
            println!(
                "access key {}\nsecret key {}\nowner {owner}\n(the secret is shown this once)",
                key.access_key,
                secret.as_str()
            );
            Ok(())
        }
        Command::Gateway(GatewayCommand::Keys(KeysCommand::List { dir })) => {
            for key in gateway::keys::load_keys(&dir)? {
                println!("{} owner {}", key.access_key, key.owner);
            }
            Ok(())
        }
        Command::Gateway(GatewayCommand::Keys(KeysCommand::Remove { access_key, dir })) => {
            if !gateway::keys::remove(&dir, &access_key)? {
                bail!("no access key {access_key} in {}", dir.display());
            }
            println!("removed {access_key}");
            Ok(())
        }
        Command::Authorize {
            delegate,
            revoke,
            devnet,
            as_key,
        } => {
            if !devnet::on_chain(&devnet) {
                bail!(
                    "{} is not a network on a chain; delegates are kept on the chain",
                    devnet.display()
                );
            }
            let (runtime, chain, _client) = devnet::chain_client_as(&devnet, as_key.as_deref())?;
            let (delegate, height) = files::authorize(runtime.handle(), &chain, &delegate, revoke)?;
            if revoke {
                println!("{delegate} may no longer read this account's files (height {height})");
            } else {
                println!("{delegate} may read this account's files (height {height})");
            }
            Ok(())
        }
        Command::Delete { file_id, devnet } => {
            if !devnet::on_chain(&devnet) {
                bail!(
                    "{} is not a network on a chain; deletion goes through the chain",
                    devnet.display()
                );
            }
            let (runtime, chain, _client) = devnet::chain_client(&devnet)?;
            let (height, gone) = files::delete(runtime.handle(), &chain, &file_id)?;
            if gone {
                println!(
                    "deleted at height {height}: no owner is left, so its miners delete its fragments"
                );
            } else {
                println!("no longer an owner at height {height}; other owners keep the file");
            }
            Ok(())
        }
        Command::Devnet(DevnetCommand::Up {
            dir,
            nodes,
            validators,
            store_mib,
            idle_fill_mib,
            no_chain,
        }) => {
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
        Command::Devnet(DevnetCommand::Down { dir }) => {
            let stopped = devnet::down(&dir)?;
            println!("stopped {stopped} processes");
            Ok(())
        }
        Command::Node(NodeCommand::Status { dir }) => {
            print!("{}", node::status(&dir)?);
            Ok(())
        }
        Command::Node(NodeCommand::Exit { dir }) => node::leave(&dir, false),
        Command::Node(NodeCommand::Withdraw { dir }) => node::leave(&dir, true),
        Command::Node(NodeCommand::Check { dir, proof }) => {
            if node::check(&dir, proof)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::EngineDemo {
            target,
            size_mib,
            fragments,
            fragment_kib,
            keep,
        } => {
            demo(&target, size_mib, fragments, fragment_kib)?;
            if !keep {
                std::fs::remove_file(&target).ok();
            }
            Ok(())
        }
        Command::Format {
            target,
            node_id: hex,
            shards,
            force,
        } => {
            let mut options = FormatOptions::new(node_id(&hex)?);
            if let Some(s) = shards {
                options.shard_count = s;
            }
            options.force = force;
            let sb = format(&Target::Path(target.clone()), &options)?;
            println!(
                "formatted {}: {} shards, {} bytes, node {}",
                target.display(),
                sb.geometry.shard_count,
                sb.geometry.device_bytes,
                sb.node_id
            );
            Ok(())
        }
        Command::Stats {
            target,
            node_id: hex,
        } => {
            let store = Store::open(&Target::Path(target), &OpenOptions::new(node_id(&hex)?))?;
            println!("{}", store.stats()?);
            Ok(())
        }
        Command::Scrub {
            target,
            node_id: hex,
        } => {
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
    }
}

fn progress_line(what: &str, done: u64, total: u64, elapsed: Duration) {
    let mib = done as f64 / (1 << 20) as f64;
    let rate = mib / elapsed.as_secs_f64().max(1e-9);
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    if std::io::stderr().is_terminal() {
        eprint!("\r{what}: {pct:5.1}%  {mib:.0} MiB  {rate:.0} MiB/s   ");
    } else {
        eprintln!("{what}: {pct:.1}% {mib:.0} MiB {rate:.0} MiB/s");
    }
}

fn finish_progress() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

fn demo(target: &PathBuf, size_mib: u64, fragments: usize, fragment_kib: usize) -> Result<()> {
    let file =
        std::fs::File::create(target).with_context(|| format!("create {}", target.display()))?;
    file.set_len(size_mib << 20)
        .context("size the store file")?;
    drop(file);
    let node = node_id(DEMO_NODE_HEX)?;
    let t = Target::Path(target.clone());
    let mut options = FormatOptions::new(node);
    options.force = true; // The demo's own file, created just above.
    let sb = format(&t, &options).context("format the demo store")?;
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
        let key = Key::of(&buf);
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
        if Key::of(&bytes) != *key {
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
