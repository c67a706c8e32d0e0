//! Following the validator sets from block headers alone, and checking a peer's checkpoint
//! against them: how a node far behind takes a recent state instead of replaying every block
//! since its own.
//!
//! A set decides every height of its era; the era's last block names the next set, accounts
//! and keys ([`Block::next_validators`](crate::bft::Block::next_validators)), and that block's
//! commit is signed by the outgoing set. So from a set it trusts (its own state's, or
//! genesis's), a node checks one header per era, each against the set it already holds, and
//! learns the set deciding any later height. A checkpoint at height h is then checked by the
//! header of h + 1 and its commit: the header names the state root after h and the hash of
//! block h, and the checkpoint's ledger must have that root (recomputed when it is decoded),
//! that last block, and the sets this chain of headers arrived at.
//!
//! What the root does not cover is checked too: the checkpoint's derived indexes against its
//! tables when it is decoded ([`crate::ledger::Ledger::check_storage_invariants`]), its
//! parameters against the trusted state's, its last era's set against the one this chain of
//! headers passed through.
//!
//! Trust: 2f + 1 of each set along the way, as for any block (a node whose own state is very
//! old trusts sets whose stake may long be unbonded: the long-range weakness every
//! proof-of-stake light client has, and catching up block by block has too). Every check here
//! is pure; the fetching is the driver's (`crate::statesync::state_sync`).

use crate::bft::{BlockHeader, CommitRecord, Validator, ValidatorSet};
use crate::checkpoint::Checkpoint;
use crate::ledger::{Ledger, ValidatorEntry};
use crate::tx::Hash32;

/// Why a header or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    #[error("header of height {got}, expected {expected} (the last block of the era)")]
    NotTheEraEnd { expected: u64, got: u64 },
    #[error("the commit of height {height} is not 2f + 1 precommits of the set deciding it")]
    BadCommit { height: u64 },
    #[error("block {height} ends an era but names no next validator set")]
    NoNextSet { height: u64 },
    #[error("block {height} is not an era's last block but names a next validator set")]
    UnexpectedNextSet { height: u64 },
    #[error("height {height} is not decided by the set known here (heights {from} to {until})")]
    OutsideEra { height: u64, from: u64, until: u64 },
    #[error(
        "the checkpoint at height {height} does not match the certified block after it: {what}"
    )]
    Checkpoint { height: u64, what: &'static str },
}

/// The set deciding the current era's heights, proven from a trusted start header by header.
#[derive(Debug, Clone)]
pub struct SetChain {
    chain_id: Hash32,
    /// The trusted state's parameters (a checkpoint must have the same: the root does not
    /// cover them).
    params: crate::ledger::LedgerParams,
    /// The set of the era before the current one (what a ledger in the current era keeps as
    /// its previous validators; empty before the first election).
    era_before: Vec<ValidatorEntry>,
    /// Decides heights `from..=until()`.
    current: Vec<ValidatorEntry>,
    /// Decided height `from - 1` (none before the first block).
    previous: Option<Vec<ValidatorEntry>>,
    from: u64,
}

fn entries(set: &ValidatorSet) -> Vec<ValidatorEntry> {
    set.accounts()
        .iter()
        .map(|account| ValidatorEntry {
            account: *account,
            key: set
                .get(account)
                .expect("a set's accounts are in it")
                .key
                .clone(),
        })
        .collect()
}

/// A set to verify commits against (the lottery seed plays no part in that).
fn as_set(entries: &[ValidatorEntry]) -> ValidatorSet {
    let validators = entries
        .iter()
        .map(|v| Validator {
            account: v.account,
            key: v.key.clone(),
        })
        .collect();
    ValidatorSet::new(validators, [0; 32])
}

impl SetChain {
    /// Starts from a state this node holds: its ledger (genesis, or restored from its own
    /// disk) and the set that decided the ledger's last block (none at genesis).
    pub fn from_ledger(ledger: &Ledger, previous: Option<&ValidatorSet>) -> SetChain {
        SetChain {
            chain_id: ledger.chain_id(),
            params: ledger.params().clone(),
            era_before: ledger.previous_validators().to_vec(),
            current: ledger.validators().to_vec(),
            previous: previous.map(entries),
            from: ledger.height() + 1,
        }
    }

    pub fn chain_id(&self) -> Hash32 {
        self.chain_id
    }

    pub fn era_blocks(&self) -> u64 {
        self.params.era_blocks
    }

    /// The first height the current set decides.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The last height the current set decides: its era's last block, which names the next.
    pub fn until(&self) -> u64 {
        let era_blocks = self.era_blocks();
        self.from.div_ceil(era_blocks) * era_blocks
    }

    pub fn current(&self) -> &[ValidatorEntry] {
        &self.current
    }

    /// Whether a commit of `height` (within the current era) verifies.
    fn check_commit(&self, header: &BlockHeader, commit: &CommitRecord) -> Result<(), LightError> {
        let until = self.until();
        if header.height < self.from || header.height > until {
            return Err(LightError::OutsideEra {
                height: header.height,
                from: self.from,
                until,
            });
        }
        if !commit.verify(
            &self.chain_id,
            header.height,
            &header.hash(),
            &as_set(&self.current),
        ) {
            return Err(LightError::BadCommit {
                height: header.height,
            });
        }
        Ok(())
    }

    /// Takes the header of the current era's last block with its commit: the set it names
    /// decides the next era.
    pub fn advance(
        &mut self,
        header: &BlockHeader,
        commit: &CommitRecord,
    ) -> Result<(), LightError> {
        let expected = self.until();
        if header.height != expected {
            return Err(LightError::NotTheEraEnd {
                expected,
                got: header.height,
            });
        }
        self.check_commit(header, commit)?;
        let next = header
            .next_validators
            .clone()
            .ok_or(LightError::NoNextSet {
                height: header.height,
            })?;
        let outgoing = std::mem::replace(&mut self.current, next);
        self.era_before = outgoing.clone();
        self.previous = Some(outgoing);
        self.from = expected + 1;
        Ok(())
    }

    /// Checks `checkpoint` (the state after height h) against the certified header of h + 1,
    /// which the current set must decide: the root and the last block hash it names, and the
    /// sets deciding h + 1 and h as this chain proved them.
    pub fn check_checkpoint(
        &self,
        header: &BlockHeader,
        commit: &CommitRecord,
        checkpoint: &Checkpoint,
    ) -> Result<(), LightError> {
        self.check_commit(header, commit)?;
        if header.next_validators.is_some() != (header.height == self.until()) {
            return Err(match header.next_validators {
                Some(_) => LightError::UnexpectedNextSet {
                    height: header.height,
                },
                None => LightError::NoNextSet {
                    height: header.height,
                },
            });
        }
        let height = checkpoint.ledger.height();
        let refuse = |what| Err(LightError::Checkpoint { height, what });
        if checkpoint.ledger.chain_id() != self.chain_id {
            return refuse("another chain");
        }
        if height + 1 != header.height {
            return refuse("not the height before the header");
        }
        if checkpoint.ledger.root() != header.parent_root {
            return refuse("state root");
        }
        if checkpoint.last_hash != header.parent {
            return refuse("last block hash");
        }
        if checkpoint.ledger.params() != &self.params {
            return refuse("parameters");
        }
        if checkpoint.ledger.validators() != self.current.as_slice() {
            return refuse("the validator set deciding the next height");
        }
        if checkpoint.ledger.previous_validators() != self.era_before.as_slice() {
            return refuse("the last era's validator set");
        }
        // The set that decided h: the last era's when h ended it, else this one.
        let deciding_h = if header.height == self.from {
            self.previous.as_deref()
        } else {
            Some(self.current.as_slice())
        };
        let said = checkpoint.previous_validators.as_ref().map(entries);
        if deciding_h.is_none() || said.as_deref() != deciding_h {
            return refuse("the validator set that decided its height");
        }
        Ok(())
    }
}
