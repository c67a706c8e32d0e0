//! The follower: a replica that trusts no single validator. Blocks decided by a simulated
//! 4-validator chain are served by validators of which some lie; the follower refuses every
//! lie, drops the liar, reaches the tip through an honest one and ends with the validators'
//! state root.

use cess_consensus::Ledger;
use cess_consensus::bft::{Block, CommitRecord};
use cess_consensus::follow::{FollowError, Follower, FollowerConfig, FollowerOutput};
use cess_consensus::sim::{Sim, SimConfig};
use cess_consensus::tx::Hash32;
use std::collections::BTreeMap;

/// A chain of decided blocks with their commits, and the root after each.
struct Chain {
    genesis: Ledger,
    blocks: BTreeMap<u64, (Block, CommitRecord)>,
    tip: u64,
    root_at_tip: Hash32,
}

fn decided_chain() -> Chain {
    let mut sim = Sim::new(SimConfig::new(4, 77));
    sim.run_until(3_000);
    let core = sim.core(0);
    let tip = core.ledger().height();
    assert!(tip >= 10, "the simulated chain decided {tip} blocks");
    let blocks = (1..=tip)
        .map(|h| {
            let (block, commit) = core.decided(h).expect("decided blocks are kept");
            (h, ((**block).clone(), commit.clone()))
        })
        .collect();
    Chain {
        genesis: sim.genesis_ledger().clone(),
        blocks,
        tip,
        root_at_tip: core.ledger().root(),
    }
}

/// What a validator answers.
enum Answer {
    Block(Box<Block>, CommitRecord),
    Tip(u64),
    Silent,
}

/// Runs `follower` against `serve` on a virtual clock until it is at the chain's tip with no
/// validator claiming more (or `steps` run out); every output, in order.
fn drive(
    follower: &mut Follower,
    serve: &dyn Fn(usize, u64) -> Answer,
    steps: usize,
) -> Vec<FollowerOutput> {
    let mut now_ms = 0u64;
    let mut log = Vec::new();
    let mut queue: Vec<FollowerOutput> = follower.poll(now_ms);
    for _ in 0..steps {
        if queue.is_empty() {
            now_ms = now_ms.max(follower.next_deadline_ms());
            queue = follower.poll(now_ms);
            continue;
        }
        let output = queue.remove(0);
        if let FollowerOutput::Request { peer, height } = &output {
            let more = match serve(*peer, *height) {
                Answer::Block(block, commit) => follower.on_block(*peer, *block, commit, now_ms),
                Answer::Tip(tip) => follower.on_tip(*peer, tip, now_ms),
                Answer::Silent => Vec::new(),
            };
            queue.extend(more);
        }
        log.push(output);
    }
    log
}

fn honest(chain: &Chain, height: u64) -> Answer {
    match chain.blocks.get(&height) {
        Some((block, commit)) => Answer::Block(Box::new(block.clone()), commit.clone()),
        None => Answer::Tip(chain.tip),
    }
}

fn applied(log: &[FollowerOutput]) -> usize {
    log.iter()
        .filter(|o| matches!(o, FollowerOutput::Applied(_)))
        .count()
}

fn dropped(log: &[FollowerOutput]) -> Vec<(usize, FollowError)> {
    log.iter()
        .filter_map(|o| match o {
            FollowerOutput::Dropped { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}

fn follower(chain: &Chain, peers: usize) -> Follower {
    Follower::from_genesis(chain.genesis.clone(), peers, FollowerConfig::default())
}

#[test]
fn a_follower_reaches_the_tip_with_the_validators_state_root() {
    let chain = decided_chain();
    let mut f = follower(&chain, 3);
    let log = drive(&mut f, &|_, h| honest(&chain, h), 200);
    assert_eq!(applied(&log), chain.tip as usize);
    assert_eq!(f.height(), chain.tip);
    assert_eq!(f.ledger().root(), chain.root_at_tip);
    assert_eq!(f.ledger().root(), f.ledger().root_from_scratch());
    assert_eq!(f.behind(), 0);
    assert!(dropped(&log).is_empty());
    // At the tip it keeps asking, each validator in turn.
    let asked: std::collections::BTreeSet<usize> = log
        .iter()
        .rev()
        .take(20)
        .filter_map(|o| match o {
            FollowerOutput::Request { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 3, "polls at the tip rotate: {asked:?}");
}

/// Scenario: a validator serves a block whose certificate is forged, or a block changed under
/// its certificate (another state root, a transaction dropped), or another height. Each is
/// refused with its reason, the validator is dropped, and the follower gets the block from
/// another validator.
#[test]
fn a_validator_serving_a_bad_block_is_dropped_and_another_is_used() {
    let chain = decided_chain();
    type Forgery = dyn Fn(&mut Block, &mut CommitRecord) -> bool;
    type Case<'a> = (&'a str, Box<Forgery>, fn(&FollowError) -> bool);
    let forgeries: Vec<Case> = vec![
        (
            "too few signatures",
            Box::new(|_, c| {
                c.signatures.truncate(2);
                true
            }),
            |e| matches!(e, FollowError::BadCommit { .. }),
        ),
        (
            "a signature by the wrong validator",
            Box::new(|_, c| {
                if c.signatures.len() < 2 {
                    return false;
                }
                let first = c.signatures[0].1.clone();
                c.signatures[1].1 = first;
                true
            }),
            |e| matches!(e, FollowError::BadCommit { .. }),
        ),
        (
            "another parent state root",
            Box::new(|b, _| {
                b.parent_root[0] ^= 1;
                true
            }),
            |e| matches!(e, FollowError::BadCommit { .. }),
        ),
        (
            "a transaction dropped",
            Box::new(|b, _| b.txs.pop().is_some()),
            |e| matches!(e, FollowError::BadCommit { .. }),
        ),
        (
            "another parent",
            Box::new(|b, _| {
                b.parent[0] ^= 1;
                true
            }),
            |e| matches!(e, FollowError::WrongParent { .. }),
        ),
    ];
    for (what, forge, expected) in &forgeries {
        // Validator 0 lies about one height that has transactions; 1 and 2 are honest.
        let target = (1..=chain.tip)
            .find(|h| {
                let (b, c) = &chain.blocks[h];
                forge(&mut b.clone(), &mut c.clone()) && !b.txs.is_empty()
            })
            .unwrap_or_else(|| panic!("{what}: no block to forge"));
        let serve = |peer: usize, h: u64| {
            if peer == 0 && h == target {
                let (mut b, mut c) = chain.blocks[&h].clone();
                forge(&mut b, &mut c);
                return Answer::Block(Box::new(b), c);
            }
            honest(&chain, h)
        };
        let mut f = follower(&chain, 3);
        let log = drive(&mut f, &serve, 300);
        let drops = dropped(&log);
        assert_eq!(drops.len(), 1, "{what}: {drops:?}");
        assert_eq!(drops[0].0, 0, "{what}: the liar is dropped");
        assert!(expected(&drops[0].1), "{what}: refused as {}", drops[0].1);
        assert_eq!(f.height(), chain.tip, "{what}: reached the tip");
        assert_eq!(f.ledger().root(), chain.root_at_tip, "{what}");
        assert!(f.is_dropped(0, 1), "{what}: not asked again for a while");
    }
}

/// A validator that never answers is skipped after the timeout; one that serves another height
/// is dropped.
#[test]
fn a_silent_validator_is_skipped_and_a_wrong_height_is_refused() {
    let chain = decided_chain();
    let serve = |peer: usize, h: u64| match peer {
        0 => Answer::Silent,
        1 if h < chain.tip => {
            let (b, c) = chain.blocks[&(h + 1)].clone();
            Answer::Block(Box::new(b), c)
        }
        _ => honest(&chain, h),
    };
    let mut f = follower(&chain, 3);
    let log = drive(&mut f, &serve, 400);
    assert_eq!(f.height(), chain.tip);
    assert!(log.iter().any(|o| matches!(
        o,
        FollowerOutput::Skipped {
            peer: 0,
            reason: FollowError::Timeout { .. }
        }
    )));
    let drops = dropped(&log);
    assert!(!drops.is_empty());
    assert!(
        drops
            .iter()
            .all(|(p, e)| *p == 1 && matches!(e, FollowError::WrongHeight { .. })),
        "only the validator serving the wrong height: {drops:?}"
    );
}

/// Scenario: a replica that applied a block differently from the validators (a bug, a corrupted
/// store) must not go on as if it were right. The next block's certified parent root differs
/// from the replica's: the follower stops and says so.
#[test]
fn a_replica_that_diverged_stops() {
    let chain = decided_chain();
    let (first, _) = &chain.blocks[&1];
    let mut wrong = chain.genesis.clone();
    let mut info = cess_consensus::bft::block_info(first);
    info.time_ms += 1;
    wrong.apply_block(&info, &first.txs, &cess_proofs::CpuBackend);
    let mut f = Follower::new(wrong, first.hash().0, 2, FollowerConfig::default());
    let log = drive(&mut f, &|_, h| honest(&chain, h), 50);
    assert_eq!(applied(&log), 0);
    assert!(
        matches!(f.diverged(), Some(FollowError::Diverged { height: 2, .. })),
        "{:?}",
        f.diverged()
    );
    assert!(dropped(&log).is_empty(), "no validator is blamed");
}

/// Scenario (review): the first validator asked said "tip 0" (stale or lying) and the follower
/// called genesis current. Now f + 1 validators must say the replica is at their tip.
#[test]
fn one_validator_claiming_the_tip_is_not_enough_to_be_synced() {
    let chain = decided_chain();
    let mut f = follower(&chain, 3);
    f.poll(0);
    f.on_tip(0, 0, 0);
    assert!(!f.synced(), "one claim of four validators' f + 1 = 2");
    let serve = |peer: usize, h: u64| match peer {
        0 => Answer::Tip(0),
        _ => honest(&chain, h),
    };
    let log = drive(&mut f, &serve, 300);
    assert!(applied(&log) > 0);
    assert_eq!(f.height(), chain.tip);
    assert!(f.synced(), "two validators at the tip");
}
