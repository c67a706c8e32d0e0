//! BFT finality: Tendermint from Malachite's core crates, behind this module's sans-IO
//! [`Core`], with the ledger's validator sets, VRF slot leaders and blocks of transactions.

mod core;
mod types;
mod wire;

pub use core::{Committed, Core, CoreConfig, CoreStats, Output};
pub use wire::{MESSAGE_BYTES_MAX, NetMsg, TXS_PER_MESSAGE_MAX};

pub use types::{
    BLOCK_BYTES_MAX, BLOCK_TXS_MAX, Block, BlockHash, BlockValue, Bls, Cess, CommitRecord, Height,
    NoParts, Proposal, StepTimeouts, VALIDATORS_MAX, Validator, ValidatorSet, Vote,
};
