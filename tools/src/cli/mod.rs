//! The command line: one module per family of commands, each with its clap arguments and the
//! functions that run them; this file only names the commands and dispatches.

pub mod chain;
pub mod codec;
pub mod devnet;
pub mod files;
pub mod gateway;
pub mod node;
pub mod owner;
pub mod proof;
pub mod store;
pub mod tagger;
pub mod validator;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cess", about = "CESS-style storage node data plane")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Brings up a local network, puts a generated file, stops two nodes, gets the file back
    /// from the rest, checks it is byte-identical, prints throughputs, tears everything down.
    Demo(devnet::DemoArgs),
    /// Stores a file on the network: encodes it, orders space on the chain, sends fragment j
    /// of every segment to the miner the chain placed column j on, waits until it is Active.
    Put(files::PutArgs),
    /// Fetches a file back by its id and key from any 4 fragments of each segment; the rest
    /// (length, ids, miners) comes from the chain.
    Get(files::GetArgs),
    /// Lets another account act for the client account on its files (an S3 gateway: read
    /// them, declare and delete them in this account's space, keep its buckets; a backup
    /// agent), or with `--revoke` takes that back.
    Authorize(files::AuthorizeArgs),
    /// Rents storage space (or extends the lease): GIB more GiB, BLOCKS more blocks.
    Rent(files::RentArgs),
    /// Sends TOKENS tokens from the client account to another account (an id or a PeerId).
    Transfer(files::TransferArgs),
    /// An S3-compatible gateway to the network (boto3, s3cmd, rclone, aws).
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Stops owning a file; when the last owner is gone its miners delete the fragments.
    Delete(files::DeleteArgs),
    /// A local network of validators and storage nodes on loopback.
    #[command(subcommand)]
    Devnet(devnet::DevnetCommand),
    /// Formats a store in a file, puts and gets fragments, prints throughput and latency.
    EngineDemo(store::EngineDemoArgs),
    /// Formats a block device or preallocated file as a fragment store.
    Format(store::FormatArgs),
    /// Prints space and health figures.
    Stats(store::StatsArgs),
    /// Verifies every stored byte (resuming where an earlier scrub stopped), with progress.
    Scrub(store::ScrubArgs),
    /// Encodes a file into fragments (erasure-coded, optionally encrypted) and a manifest.
    Encode(codec::EncodeArgs),
    /// Rebuilds a file from any k fragments of each segment, verifying everything.
    Decode(codec::DecodeArgs),
    /// Writes a new random file key (mode 0600).
    Keygen(codec::KeygenArgs),
    /// A storage node: set one up, run it.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// An owner's key and the upload grants it signs.
    #[command(subcommand)]
    Owner(owner::OwnerCommand),
    /// PoDR² storage proofs: tagger keys, tags, challenges, proofs and their verification.
    #[command(subcommand)]
    Proof(proof::ProofCommand),
    /// Validators: a local validator network, one validator, transaction load.
    #[command(subcommand)]
    Validator(validator::ValidatorCommand),
    /// The tagger service: tags the fragments the chain assigned to the miner that asks.
    #[command(subcommand)]
    Tagger(tagger::TaggerCommand),
    /// What the chain holds, from a replica checked block by block against the validators'
    /// commits (no validator is trusted).
    Chain(chain::ChainArgs),
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => devnet::demo(args),
        Command::Put(args) => files::put(args),
        Command::Get(args) => files::get(args),
        Command::Authorize(args) => files::authorize(args),
        Command::Rent(args) => files::rent(args),
        Command::Transfer(args) => files::transfer(args),
        Command::Gateway(command) => gateway::run(command),
        Command::Delete(args) => files::delete(args),
        Command::Devnet(command) => devnet::run(command),
        Command::EngineDemo(args) => store::engine_demo(args),
        Command::Format(args) => store::format(args),
        Command::Stats(args) => store::stats(args),
        Command::Scrub(args) => store::scrub(args),
        Command::Encode(args) => codec::encode(args),
        Command::Decode(args) => codec::decode(args),
        Command::Keygen(args) => codec::keygen(args),
        Command::Node(command) => node::run(command),
        Command::Owner(command) => owner::run(command),
        Command::Proof(command) => proof::run(command),
        Command::Validator(command) => validator::run(command),
        Command::Tagger(command) => tagger::run(command),
        Command::Chain(args) => chain::run(args),
    }
}
