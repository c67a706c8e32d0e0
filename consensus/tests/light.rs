//! Following validator sets from headers alone, and checking a checkpoint against them
//! (`cess_consensus::light`), on a simulated chain whose set changes: two candidates bond
//! and are elected, two genesis validators retire.

use cess_consensus::Call;
use cess_consensus::bft::{Block, CommitRecord, block_info, validator_set};
use cess_consensus::checkpoint::Checkpoint;
use cess_consensus::ledger::{Ledger, TOKEN, ValidatorEntry};
use cess_consensus::light::{LightError, SetChain};
use cess_consensus::sim::{Sim, SimConfig};
use cess_proofs::CpuBackend;
use std::sync::Arc;

const ERA_BLOCKS: u64 = 10;

struct Chain {
    genesis: Ledger,
    blocks: Vec<(Arc<Block>, CommitRecord)>,
}

impl Chain {
    /// The ledger after `height`.
    fn ledger_at(&self, height: u64) -> Ledger {
        let mut ledger = self.genesis.clone();
        for (block, _) in &self.blocks[..height as usize] {
            ledger.apply_block(&block_info(block), &block.txs, &CpuBackend);
        }
        ledger
    }

    fn block(&self, height: u64) -> &(Arc<Block>, CommitRecord) {
        &self.blocks[height as usize - 1]
    }

    fn checkpoint_at(&self, height: u64) -> Checkpoint {
        Checkpoint {
            ledger: self.ledger_at(height),
            last_hash: self.block(height).0.hash().0,
            previous_validators: Some(validator_set(&self.ledger_at(height - 1))),
        }
    }
}

/// A chain of a few eras in which the set changes once (cached per test binary run).
fn chain() -> &'static Chain {
    static CHAIN: std::sync::OnceLock<Chain> = std::sync::OnceLock::new();
    CHAIN.get_or_init(|| {
        let mut config = SimConfig::new(4, 61);
        config.candidates = 2;
        config.params.epoch_blocks = 5;
        config.params.era_blocks = ERA_BLOCKS;
        let mut sim = Sim::new(config);
        let genesis_set: Vec<_> = sim
            .core(0)
            .ledger()
            .validators()
            .iter()
            .map(|v| v.account)
            .collect();
        let outsiders: Vec<usize> = (0..6)
            .filter(|&i| !genesis_set.contains(&sim.account(i)))
            .collect();
        sim.run_until(1_000);
        for &i in &outsiders {
            sim.submit_call(
                i,
                Call::Bond {
                    amount: 8_000 * TOKEN,
                },
            );
        }
        let mut now = 1_000;
        while sim.honest_height() < 75 {
            now += 500;
            sim.run_until(now);
            assert!(now < 60_000, "height {}", sim.honest_height());
        }
        // Validator 0's copy of every block: outsiders keep every block they synced too.
        let node = (0..6)
            .max_by_key(|&i| {
                (1..=70)
                    .filter(|&h| sim.core(i).decided(h).is_some())
                    .count()
            })
            .expect("nodes");
        let blocks = (1..=70)
            .map(|h| sim.core(node).decided(h).expect("kept").clone())
            .collect();
        let chain = Chain {
            genesis: sim.genesis_ledger().clone(),
            blocks,
        };
        let first = chain.genesis.validators().to_vec();
        let last = chain.ledger_at(70).validators().to_vec();
        assert_ne!(first, last, "the set changed along the chain");
        chain
    })
}

#[test]
fn a_node_follows_the_sets_era_by_era_from_headers_alone() {
    let chain = chain();
    let mut sets = SetChain::from_ledger(&chain.genesis, None);
    assert_eq!(sets.until(), ERA_BLOCKS);
    let mut changes = 0;
    while sets.until() <= 60 {
        let era_end = sets.until();
        let (block, commit) = chain.block(era_end);
        let before: Vec<ValidatorEntry> = sets.current().to_vec();
        sets.advance(&block.header(), commit)
            .expect("a certified era end");
        assert_eq!(sets.from(), era_end + 1);
        // What a node with the whole state has for the next era.
        assert_eq!(sets.current(), chain.ledger_at(era_end).validators());
        changes += usize::from(before != sets.current());
    }
    assert!(changes >= 1, "the set changed at some era's end");
    // Any height of the current era checks against it: a checkpoint at 64 by the header of 65.
    let checkpoint = chain.checkpoint_at(64);
    let (after, commit) = chain.block(65);
    sets.check_checkpoint(&after.header(), commit, &checkpoint)
        .expect("the checkpoint the chain certifies");
}

#[test]
fn a_checkpoint_at_an_era_end_is_checked_against_both_sets() {
    let chain = chain();
    // From a state of its own at height 15 (as a node restarted from its disk would be).
    let mut sets = SetChain::from_ledger(
        &chain.ledger_at(15),
        Some(&validator_set(&chain.ledger_at(14))),
    );
    while sets.until() <= 40 {
        let (block, commit) = chain.block(sets.until());
        sets.advance(&block.header(), commit).expect("certified");
    }
    assert_eq!(sets.from(), 41);
    let checkpoint = chain.checkpoint_at(40);
    let (after, commit) = chain.block(41);
    sets.check_checkpoint(&after.header(), commit, &checkpoint)
        .expect("certified");
    // The set that decided 40 is the last era's: the one deciding 41 is refused in its place.
    let mut wrong = checkpoint.clone();
    wrong.previous_validators = Some(validator_set(&chain.ledger_at(40)));
    if chain.ledger_at(39).validators() != chain.ledger_at(40).validators() {
        assert!(matches!(
            sets.check_checkpoint(&after.header(), commit, &wrong),
            Err(LightError::Checkpoint { height: 40, .. })
        ));
    }
}

#[test]
fn forged_sets_skipped_eras_and_mismatched_checkpoints_are_refused() {
    let chain = chain();
    let genesis_sets = SetChain::from_ledger(&chain.genesis, None);
    let (block, commit) = chain.block(ERA_BLOCKS);

    // A peer naming a set of its own at an era's end: the header's hash changes, so the
    // outgoing set's commit no longer covers it.
    let mut forged = block.header();
    let mut set = forged
        .next_validators
        .clone()
        .expect("an era end names the next set");
    // The first member's key swapped for one the attacker holds.
    set[0].key = cess_consensus::ValidatorKey::from_seed(&[66; 32])
        .public()
        .clone();
    forged.next_validators = Some(set);
    let mut sets = genesis_sets.clone();
    assert_eq!(
        sets.advance(&forged, commit),
        Err(LightError::BadCommit { height: ERA_BLOCKS })
    );

    // An era skipped: the header of the second era's end is not the one needed next.
    let (later, later_commit) = chain.block(2 * ERA_BLOCKS);
    assert_eq!(
        sets.advance(&later.header(), later_commit),
        Err(LightError::NotTheEraEnd {
            expected: ERA_BLOCKS,
            got: 2 * ERA_BLOCKS
        })
    );

    // Another height's commit for the right header.
    let (_, other_commit) = chain.block(ERA_BLOCKS - 1);
    assert!(matches!(
        sets.advance(&block.header(), other_commit),
        Err(LightError::BadCommit { .. })
    ));

    // A header of an era that does not end with a set, and one of another era.
    let mut no_set = block.header();
    no_set.next_validators = None;
    assert!(sets.advance(&no_set, commit).is_err());
    sets.advance(&block.header(), commit).expect("the real one");

    // Checkpoints: a ledger of another height, a wrong last block, a wrong deciding set.
    let (after, after_commit) = chain.block(16);
    let good = chain.checkpoint_at(15);
    sets.check_checkpoint(&after.header(), after_commit, &good)
        .expect("certified");
    let mut older = chain.checkpoint_at(14);
    older.last_hash = good.last_hash;
    assert!(matches!(
        sets.check_checkpoint(&after.header(), after_commit, &older),
        Err(LightError::Checkpoint { height: 14, .. })
    ));
    let mut wrong_hash = good.clone();
    wrong_hash.last_hash = [9; 32];
    assert_eq!(
        sets.check_checkpoint(&after.header(), after_commit, &wrong_hash),
        Err(LightError::Checkpoint {
            height: 15,
            what: "last block hash"
        })
    );
    // A header outside the era the chain has reached is not checked against a guessed set.
    let (far, far_commit) = chain.block(45);
    assert!(matches!(
        sets.check_checkpoint(&far.header(), far_commit, &chain.checkpoint_at(44)),
        Err(LightError::OutsideEra { height: 45, .. })
    ));
}

#[test]
fn a_header_hashes_like_its_block_and_names_its_transactions() {
    let chain = chain();
    for (block, _) in &chain.blocks {
        assert_eq!(block.header().hash(), block.hash());
        // Hashed from received bytes (the proposal path) as from the block.
        let (decoded, hash) = Block::decode_hashed(&block.encode()).unwrap();
        assert_eq!((&decoded, hash), (&**block, block.hash()));
    }
    let (block, _) = chain
        .blocks
        .iter()
        .find(|(b, _)| !b.txs.is_empty())
        .expect("the simulator submits transfers");
    let mut fewer = (**block).clone();
    fewer.txs.pop();
    assert_ne!(fewer.hash(), block.hash());
    assert_ne!(fewer.header().txs_hash, block.header().txs_hash);
}
