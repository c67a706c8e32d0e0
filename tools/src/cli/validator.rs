//! `cess validator`: a local validator network, one validator, a candidate, load.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::validator;

#[derive(Subcommand)]
pub enum ValidatorCommand {
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

pub fn run(command: ValidatorCommand) -> Result<()> {
    match command {
        ValidatorCommand::Testnet {
            dir,
            validators,
            base_port,
            candidates,
            era_blocks,
        } => validator::testnet(&dir, validators, base_port, candidates, era_blocks),
        ValidatorCommand::Run { dir } => validator::run(&dir),
        ValidatorCommand::Candidate {
            dir,
            stake_tokens,
            endpoint,
        } => validator::candidate(&dir, stake_tokens, endpoint),
        ValidatorCommand::Load { dir, count } => validator::load(&dir, count),
    }
}
