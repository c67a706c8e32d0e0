//! BFT finality: Tendermint from Malachite's core crates, behind this module's sans-IO
//! [`Core`] (and the [`Engine`] trait drivers use), with the ledger's validator sets, VRF slot
//! leaders and blocks of transactions.

mod core;
mod mempool;
mod types;
mod wire;

pub use core::{
    BLOCK_TX_BYTES_MAX, Committed, Core, CoreConfig, CoreStats, LogAhead, Output,
    SYNC_ANSWER_TX_BYTES_MAX, SYNC_BATCH, TIME_AHEAD_MS_MAX, block_info, block_tx_bytes,
    validator_set,
};
pub use mempool::{Mempool, MempoolLimits, NONCE_WINDOW};
pub(crate) use types::round_bytes;
pub(crate) use wire::decode_round;
pub use wire::{
    CHECKPOINT_BYTES_MAX, CHECKPOINT_CHUNK_BYTES, HEADER_BYTES_MAX, MESSAGE_BYTES_MAX, NetMsg,
    RELAY_TX_BYTES_MAX, SYNC_BATCH_MAX, TXS_PER_MESSAGE_MAX, split_txs,
};

pub use types::{
    BLOCK_BYTES_MAX, BLOCK_TXS_MAX, Block, BlockHash, BlockHeader, BlockValue, Bls, Cess,
    CommitRecord, Height, NoParts, Proposal, StepTimeouts, VALIDATORS_MAX, Validator, ValidatorSet,
    Vote,
};

use crate::keys::AccountId;
use crate::ledger::Ledger;
use crate::tx::VerifiedTx;

/// A timer an engine asks its driver for; the driver hands it back through
/// [`Engine::on_timeout`] when it elapses (unless cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// One of Malachite's step timeouts (propose, prevote, precommit, rebroadcast).
    Step(arc_malachitebft_core_types::Timeout),
    /// This validator is the proposer of `height` in `round` and holds back an empty block
    /// until [`CoreConfig::empty_block_interval_ms`] has passed since the previous decision.
    Propose { height: u64, round: u32 },
    /// This node is not in the set deciding `height` (a candidate, a retired validator): it
    /// is sent no votes or proposals, so it asks a member for the block at `height`, and
    /// again each time this elapses until it has it.
    Observe { height: u64 },
}

/// What a driver (the QUIC driver, a simulator) needs from a validator's consensus engine:
/// messages, timeouts, transactions and the clock in; [`Output`]s out. Malachite stays behind
/// it: [`Core`] is the implementation, and a driver written against this trait does not
/// change if the BFT engine does.
pub trait Engine {
    /// Start the first height.
    fn start(&mut self, now_ms: u64) -> Vec<Output>;
    fn on_message(&mut self, from: AccountId, msg: NetMsg, now_ms: u64) -> Vec<Output>;
    /// A timeout the engine scheduled has elapsed (drivers drop cancelled ones).
    fn on_timeout(&mut self, timeout: Timeout, now_ms: u64) -> Vec<Output>;
    /// Transactions from this validator's clients: answered in order, the admitted relayed.
    fn submit(
        &mut self,
        txs: Vec<VerifiedTx>,
        now_ms: u64,
    ) -> (Vec<Result<(), crate::TxError>>, Vec<Output>);
    /// Transactions relayed by another validator (not relayed again).
    fn on_relayed_txs(&mut self, txs: Vec<VerifiedTx>, now_ms: u64) -> Vec<Output>;
    /// The ledger after the last committed block.
    fn ledger(&self) -> &Ledger;
    /// A decided block this engine keeps, with its commit (what a sync request is answered
    /// with).
    fn decided(&self, height: u64) -> Option<(std::sync::Arc<Block>, CommitRecord)>;
    /// The validators this node talks to: the set deciding the current height and the set
    /// that decided the last one (a retired validator may still need that decision). A
    /// driver dials these, broadcasts to them, and takes consensus messages from them.
    fn peers(&self) -> Vec<AccountId>;
    /// Signs [`Output::Evidence`] into a report with this validator's account key and
    /// submits it here.
    fn report_evidence(
        &mut self,
        reporter: &crate::AccountKey,
        evidence: crate::tx::Equivocation,
        now_ms: u64,
    ) -> Vec<Output>;
    /// Where it stands, for its operator.
    fn report(&self) -> EngineReport;
}

/// Where an engine stands: its height and round, its mempool, its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineReport {
    pub height: u64,
    /// The highest height the peers said or showed was decided (a tip answer, a vote or
    /// proposal for a later height, a synced block): how far behind this node is, as its
    /// peers claim it.
    pub tip_seen: u64,
    pub round: i64,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    pub stats: CoreStats,
}

impl Engine for Core {
    fn start(&mut self, now_ms: u64) -> Vec<Output> {
        Core::start(self, now_ms)
    }

    fn on_message(&mut self, from: AccountId, msg: NetMsg, now_ms: u64) -> Vec<Output> {
        Core::on_message(self, from, msg, now_ms)
    }

    fn on_timeout(&mut self, timeout: Timeout, now_ms: u64) -> Vec<Output> {
        Core::on_timeout(self, timeout, now_ms)
    }

    fn submit(
        &mut self,
        txs: Vec<VerifiedTx>,
        now_ms: u64,
    ) -> (Vec<Result<(), crate::TxError>>, Vec<Output>) {
        Core::submit(self, txs, now_ms)
    }

    fn on_relayed_txs(&mut self, txs: Vec<VerifiedTx>, now_ms: u64) -> Vec<Output> {
        Core::on_relayed_txs(self, txs, now_ms)
    }

    fn ledger(&self) -> &Ledger {
        Core::ledger(self)
    }

    fn decided(&self, height: u64) -> Option<(std::sync::Arc<Block>, CommitRecord)> {
        Core::decided(self, height).cloned()
    }

    fn peers(&self) -> Vec<AccountId> {
        Core::peers(self)
    }

    fn report_evidence(
        &mut self,
        reporter: &crate::AccountKey,
        evidence: crate::tx::Equivocation,
        now_ms: u64,
    ) -> Vec<Output> {
        Core::report_evidence(self, reporter, evidence, now_ms)
    }

    fn report(&self) -> EngineReport {
        EngineReport {
            height: self.height(),
            tip_seen: self.tip_seen(),
            round: self.round(),
            mempool_txs: self.mempool_len(),
            mempool_bytes: self.mempool_bytes(),
            stats: self.stats().clone(),
        }
    }
}
