//! A follower: a ledger replica for those who are not validators (storage nodes, clients,
//! gateways), kept from decided blocks that any validator serves, trusting none of them.
//!
//! Sans-IO, like the validator core: the driver says what arrived and when, the follower says
//! whom to ask for which height. Each block is checked before it is applied: it is the next
//! height, its parent is the last applied block, its commit carries precommits of more than
//! two thirds of the validator set of that height (the set the replica itself elected), and the
//! parent state root the block carries (which the commit certifies) is the replica's own. A
//! validator that serves anything else is dropped for `drop_ms` and another one is asked; a
//! certified root that differs from the replica's means the replica diverged, and it stops.
//!
//! At the tip a validator answers `Tip`: the follower asks the next validator after `poll_ms`,
//! so one slow validator cannot hold it back, and reports how far behind the highest tip any
//! validator claimed it is (a claim only: a validator can lie about its tip, never about a
//! block).

use crate::bft::{Block, BlockHash, CommitRecord, block_info, validator_set};
use crate::ledger::{BlockOutcome, Ledger};
use crate::tx::Hash32;
use cess_proofs::CpuBackend;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerConfig {
    /// A request not answered within this is asked of the next validator: 3 s.
    pub request_timeout_ms: u64,
    /// At the tip, ask again this often: 1 s.
    pub poll_ms: u64,
    /// A validator that served a bad block is not asked again for this long: 10 minutes.
    pub drop_ms: u64,
}

impl Default for FollowerConfig {
    fn default() -> FollowerConfig {
        FollowerConfig {
            request_timeout_ms: 3_000,
            poll_ms: 1_000,
            drop_ms: 600_000,
        }
    }
}

/// Why a validator's answer was refused (the validator is dropped), or why following stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FollowError {
    #[error("block at height {got}, asked for {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block {height} does not follow the block applied before it")]
    WrongParent { height: u64 },
    #[error("the commit of block {height} does not carry 2f + 1 precommits of its validators")]
    BadCommit { height: u64 },
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// Not a validator's fault: 2f + 1 validators certified a root this replica does not have.
    #[error(
        "replica diverged: block {height} certifies parent root {certified:02x?}, this replica has {local:02x?}"
    )]
    Diverged {
        height: u64,
        certified: Hash32,
        local: Hash32,
    },
    /// The same, for the validator set an era's last block elects.
    #[error("replica diverged: block {height} elects another validator set than this replica")]
    DivergedSet { height: u64 },
}

/// What the driver does next.
#[derive(Debug)]
pub enum FollowerOutput {
    /// Send `SyncRequest { height }` to validator `peer` (an index into the driver's list).
    Request { peer: usize, height: u64 },
    /// A block passed every check and was applied.
    Applied(Box<Applied>),
    /// Validator `peer` served something refused; it is not asked for `drop_ms`.
    Dropped { peer: usize, reason: FollowError },
    /// A request timed out; the next validator is asked.
    Skipped { peer: usize, reason: FollowError },
}

#[derive(Debug)]
pub struct Applied {
    pub block: Arc<Block>,
    pub hash: BlockHash,
    /// The commit that decided it (what a block store keeps with it).
    pub commit: CommitRecord,
    pub outcome: BlockOutcome,
}

#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    dropped_until_ms: u64,
    tip: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    peer: usize,
    height: u64,
    asked_at_ms: u64,
}

pub struct Follower {
    ledger: Ledger,
    last_hash: Hash32,
    config: FollowerConfig,
    peers: Vec<Peer>,
    /// The validator asked next.
    next_peer: usize,
    in_flight: Option<InFlight>,
    /// At the tip: do not ask before this.
    quiet_until_ms: u64,
    diverged: Option<FollowError>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("height", &self.ledger.height())
            .field("peers", &self.peers.len())
            .field("diverged", &self.diverged)
            .finish()
    }
}

impl Follower {
    /// A follower of `peers` validators from `ledger` (genesis, or a replica restored at the
    /// block whose hash is `last_hash`; the chain id for genesis).
    pub fn new(
        ledger: Ledger,
        last_hash: Hash32,
        peers: usize,
        config: FollowerConfig,
    ) -> Follower {
        assert!(peers > 0, "a follower needs at least one validator to ask");
        Follower {
            ledger,
            last_hash,
            config,
            peers: vec![Peer::default(); peers],
            next_peer: 0,
            in_flight: None,
            quiet_until_ms: 0,
            diverged: None,
        }
    }

    /// A follower of the chain from its genesis.
    pub fn from_genesis(ledger: Ledger, peers: usize, config: FollowerConfig) -> Follower {
        assert_eq!(ledger.height(), 0, "from genesis");
        let chain_id = ledger.chain_id();
        Follower::new(ledger, chain_id, peers, config)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn height(&self) -> u64 {
        self.ledger.height()
    }

    /// The highest tip a validator claimed, if any has.
    pub fn tip_claimed(&self) -> Option<u64> {
        self.peers.iter().filter_map(|p| p.tip).max()
    }

    /// Whether more than a third of the validators (f + 1, so at least one honest; all of them
    /// when fewer are listed) said the replica is at their tip: one stale or lying validator
    /// cannot make the follower call an old state current.
    pub fn synced(&self) -> bool {
        let n = self.ledger.validators().len();
        let need = (n.saturating_sub(1) / 3 + 1).min(self.peers.len());
        let height = self.ledger.height();
        self.peers
            .iter()
            .filter(|p| p.tip.is_some_and(|tip| tip <= height))
            .count()
            >= need
    }

    /// Blocks between the replica and the highest claimed tip.
    pub fn behind(&self) -> u64 {
        self.tip_claimed()
            .map_or(0, |tip| tip.saturating_sub(self.ledger.height()))
    }

    /// Set once the replica diverged from a certified root: it follows no further.
    pub fn diverged(&self) -> Option<&FollowError> {
        self.diverged.as_ref()
    }

    /// Whether validator `peer` is dropped at `now_ms`.
    pub fn is_dropped(&self, peer: usize, now_ms: u64) -> bool {
        self.peers[peer].dropped_until_ms > now_ms
    }

    /// The next thing to ask, if it is time: call after every input and whenever the driver's
    /// timer (`next_deadline_ms`) fires.
    pub fn poll(&mut self, now_ms: u64) -> Vec<FollowerOutput> {
        let mut outputs = Vec::new();
        if self.diverged.is_some() {
            return outputs;
        }
        if let Some(asked) = self.in_flight {
            if now_ms < asked.asked_at_ms + self.config.request_timeout_ms {
                return outputs;
            }
            self.in_flight = None;
            outputs.push(FollowerOutput::Skipped {
                peer: asked.peer,
                reason: FollowError::Timeout {
                    timeout_ms: self.config.request_timeout_ms,
                },
            });
        }
        if now_ms < self.quiet_until_ms {
            return outputs;
        }
        let peer = self.choose_peer(now_ms);
        let height = self.ledger.height() + 1;
        self.in_flight = Some(InFlight {
            peer,
            height,
            asked_at_ms: now_ms,
        });
        outputs.push(FollowerOutput::Request { peer, height });
        outputs
    }

    /// When `poll` has something to do next (a timeout or the next poll at the tip).
    pub fn next_deadline_ms(&self) -> u64 {
        match self.in_flight {
            Some(asked) => asked.asked_at_ms + self.config.request_timeout_ms,
            None => self.quiet_until_ms,
        }
    }

    /// The next validator in turn that is not dropped (all dropped: the one whose drop ends
    /// first, so a follower never stops asking).
    fn choose_peer(&mut self, now_ms: u64) -> usize {
        let n = self.peers.len();
        let peer = (0..n)
            .map(|k| (self.next_peer + k) % n)
            .find(|&p| self.peers[p].dropped_until_ms <= now_ms)
            .unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&p| self.peers[p].dropped_until_ms)
                    .expect("at least one peer")
            });
        self.next_peer = (peer + 1) % n;
        peer
    }

    /// Validator `peer` says its tip is `height`.
    pub fn on_tip(&mut self, peer: usize, height: u64, now_ms: u64) -> Vec<FollowerOutput> {
        self.peers[peer].tip = Some(height);
        if let Some(asked) = self.in_flight
            && asked.peer == peer
            && height < asked.height
        {
            // At the tip as far as it knows: ask the next one after a while.
            self.in_flight = None;
            self.quiet_until_ms = now_ms + self.config.poll_ms;
        }
        self.poll(now_ms)
    }

    /// Validator `peer` sent a decided block and its commit. Only an answer to the request
    /// in flight is considered (anything else is ignored: it cost the sender its bandwidth).
    pub fn on_block(
        &mut self,
        peer: usize,
        block: Block,
        commit: CommitRecord,
        now_ms: u64,
    ) -> Vec<FollowerOutput> {
        let Some(asked) = self.in_flight else {
            return Vec::new();
        };
        // A late answer to an earlier request (the block is applied already) is no fault.
        if asked.peer != peer || self.diverged.is_some() || block.height <= self.ledger.height() {
            return Vec::new();
        }
        self.in_flight = None;
        let mut outputs = Vec::new();
        match self.check(&block, &commit) {
            Ok(hash) => {
                let outcome = self
                    .ledger
                    .apply_block(&block_info(&block), &block.txs, &CpuBackend);
                self.last_hash = hash.0;
                // The peer had this one: ask it for the next at once.
                self.next_peer = peer;
                self.quiet_until_ms = 0;
                outputs.push(FollowerOutput::Applied(Box::new(Applied {
                    block: Arc::new(block),
                    hash,
                    commit,
                    outcome,
                })));
            }
            Err(reason @ (FollowError::Diverged { .. } | FollowError::DivergedSet { .. })) => {
                tracing::error!(%reason, "follower stopped");
                self.diverged = Some(reason);
                return outputs;
            }
            Err(reason) => {
                self.peers[peer].dropped_until_ms = now_ms + self.config.drop_ms;
                self.peers[peer].tip = None;
                outputs.push(FollowerOutput::Dropped { peer, reason });
            }
        }
        outputs.extend(self.poll(now_ms));
        outputs
    }

    /// Every check a decided block must pass, cheapest first; its hash.
    fn check(&self, block: &Block, commit: &CommitRecord) -> Result<BlockHash, FollowError> {
        let expected = self.ledger.height() + 1;
        if block.height != expected {
            return Err(FollowError::WrongHeight {
                expected,
                got: block.height,
            });
        }
        if block.parent != self.last_hash {
            return Err(FollowError::WrongParent {
                height: block.height,
            });
        }
        let hash = block.hash();
        let validators = validator_set(&self.ledger);
        if !commit.verify(&self.ledger.chain_id(), block.height, &hash, &validators) {
            return Err(FollowError::BadCommit {
                height: block.height,
            });
        }
        if block.parent_root != self.ledger.root() {
            return Err(FollowError::Diverged {
                height: block.height,
                certified: block.parent_root,
                local: self.ledger.root(),
            });
        }
        // Certified, so a mismatch is this replica's fault, like a root that differs.
        if block.next_validators != self.ledger.elected_by_next_block() {
            return Err(FollowError::DivergedSet {
                height: block.height,
            });
        }
        Ok(hash)
    }
}
