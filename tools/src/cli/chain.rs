//! `cess chain`: what the chain holds, read from a checked replica.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::{chain, validator};

#[derive(Subcommand)]
pub enum ChainCommand {
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

/// The arguments of `cess chain` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct ChainArgs {
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
}

pub fn run(args: ChainArgs) -> Result<()> {
    let ChainArgs {
        query,
        dir,
        genesis,
        validators,
        json,
    } = args;

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
