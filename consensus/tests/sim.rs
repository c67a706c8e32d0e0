// Long file: the simulator's scenarios share one harness.
//! Deterministic simulations: 4, 7 and 10 real validator cores over a simulated network with
//! delays, drops, partitions and f Byzantine validators. The simulator itself asserts safety
//! (one block per height, one state root per height) on every commit; these tests add
//! liveness: blocks keep being finalized, and start again once a partition heals.
//!
//! Seeds replay: `CESS_SIM_SEED=n` reruns a scenario with another seed.

use cess_consensus::sim::{Byzantine, Sim, SimConfig};

fn seed(default: u64) -> u64 {
    std::env::var("CESS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn four_honest_validators_finalize_blocks_with_transactions() {
    let mut sim = Sim::new(SimConfig::new(4, seed(1)));
    sim.run_until(5_000);
    let report = sim.finish();
    assert!(sim.honest_height() >= 20, "height {}", sim.honest_height());
    assert!(
        report.txs_committed > 50,
        "{} transactions",
        report.txs_committed
    );
}

/// An idle chain makes one block per empty-block interval, not one as fast as the validators
/// agree; transactions are still proposed at once (a held-back proposal goes out when one
/// arrives), so a busy chain is as fast as without the interval.
#[test]
fn an_idle_chain_waits_the_empty_block_interval_and_a_busy_one_does_not() {
    let height_after = |interval_ms: u64, tx_every_ms: u64| {
        let mut config = SimConfig::new(4, seed(5));
        config.empty_block_interval_ms = interval_ms;
        config.tx_every_ms = tx_every_ms;
        let mut sim = Sim::new(config);
        sim.run_until(10_000);
        let report = sim.finish();
        (sim.honest_height(), report.txs_committed)
    };
    let (idle_fast, _) = height_after(0, 0);
    let (idle, _) = height_after(150, 0);
    let (busy, txs) = height_after(150, 20);
    eprintln!(
        "idle without interval {idle_fast}, idle with 150 ms {idle}, busy {busy} ({txs} txs)"
    );
    // 10 s at one block per 150 ms plus the time to agree (two delays of 5..40 ms at least).
    assert!(idle <= 10_000 / 150, "idle height {idle}");
    assert!(
        idle >= 10_000 / (150 + 200),
        "idle height {idle}: the chain stalled"
    );
    assert!(
        idle_fast > 2 * idle,
        "without the interval {idle_fast}, with {idle}"
    );
    assert!(busy > 2 * idle, "busy {busy}, idle {idle}");
    assert!(txs > 200, "{txs} transactions");
}

#[test]
fn four_validators_with_each_kind_of_byzantine_validator() {
    for (k, kind) in [
        Byzantine::EquivocateProposals,
        Byzantine::DoubleVote,
        Byzantine::WithholdVotes,
    ]
    .into_iter()
    .enumerate()
    {
        let mut config = SimConfig::new(4, seed(10 + k as u64));
        config.byzantine = vec![(3, kind)];
        config.drop_permille = 20;
        let mut sim = Sim::new(config);
        sim.run_until(6_000);
        let height = sim.honest_height();
        eprintln!(
            "{kind:?}: height {height}, {:?}",
            sim.finish().equivocations_seen
        );
        assert!(height >= 8, "{kind:?}: height {height}");
    }
}

#[test]
fn seven_validators_stop_in_a_partition_without_quorum_and_resume_when_it_heals() {
    let mut config = SimConfig::new(7, seed(20));
    config.byzantine = vec![
        (5, Byzantine::DoubleVote),
        (6, Byzantine::EquivocateProposals),
    ];
    let mut sim = Sim::new(config);
    sim.run_until(2_000);
    assert!(
        sim.honest_height() >= 5,
        "height {} before the partition",
        sim.honest_height()
    );
    let before = sim.max_height();
    // 3 | 4: neither side holds 5 of 7. Laggards may catch up within their side (sync) and a
    // height whose votes were already in flight may finish, but nothing more.
    sim.partition(Some(vec![0, 0, 0, 1, 1, 1, 1]));
    sim.run_until(5_000);
    let during = sim.max_height();
    assert!(
        during <= before + 1,
        "finalized without a quorum: {before} → {during}"
    );
    sim.partition(None);
    sim.run_until(9_000);
    let after = sim.honest_height();
    eprintln!("7 validators: {before} → {during} → {after}");
    assert!(
        after >= during + 3,
        "no progress after healing: {during} → {after}"
    );
}

#[test]
fn ten_validators_with_three_byzantine_and_lossy_links() {
    let mut config = SimConfig::new(10, seed(30));
    config.byzantine = vec![
        (7, Byzantine::WithholdVotes),
        (8, Byzantine::DoubleVote),
        (9, Byzantine::EquivocateProposals),
    ];
    config.drop_permille = 50;
    config.delay_ms = (5, 80);
    let mut sim = Sim::new(config);
    sim.run_until(3_000);
    let before = sim.max_height();
    // 5 | 5: no side has 7 of 10.
    sim.partition(Some(vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]));
    sim.run_until(5_000);
    let during = sim.max_height();
    sim.partition(None);
    sim.run_until(11_000);
    let after = sim.honest_height();
    eprintln!("10 validators: {before} → {during} → {after}");
    assert!(before >= 3, "height {before}");
    assert!(during <= before + 1);
    assert!(
        after >= during + 3,
        "no progress after healing: {during} → {after}"
    );
}

#[test]
fn a_seed_replays_the_same_run() {
    let run = |seed| {
        let mut config = SimConfig::new(4, seed);
        config.byzantine = vec![(2, Byzantine::DoubleVote)];
        config.drop_permille = 30;
        let mut sim = Sim::new(config);
        sim.run_until(4_000);
        sim.finish()
    };
    let a = run(7);
    let b = run(7);
    assert!(!a.decided.is_empty());
    assert_eq!(a.decided, b.decided);
    assert_eq!(a.roots, b.roots);
    assert_eq!(a.messages_sent, b.messages_sent);
    assert_ne!(run(8).decided, a.decided, "another seed, another run");
}

/// The chain under an adversarial client: proofs for audits that do not exist (then the same
/// signer's next transaction), bursts of 300 KiB transactions bigger in all than a block, and
/// keys with no money. Blocks stay within what peers accept, commits keep flowing, every
/// follow-up of a refused call commits, and nothing unpaid is ever included.
#[test]
fn four_validators_under_an_adversarial_client() {
    let mut config = SimConfig::new(4, seed(40));
    config.adversary_every_ms = 100;
    config.drop_permille = 10;
    let mut sim = Sim::new(config);
    sim.run_until(8_000);
    let report = sim.finish();
    eprintln!(
        "height {}, honest txs {}, follow-ups {}/{}, largest block {} bytes",
        sim.honest_height(),
        report.honest_txs_committed,
        report.followups_committed,
        report.followups_sent,
        report.block_bytes_max
    );
    assert!(sim.honest_height() >= 15, "height {}", sim.honest_height());
    assert!(
        report.honest_txs_committed > 60,
        "{} honest transactions",
        report.honest_txs_committed
    );
    assert!(report.followups_sent >= 10);
    assert!(
        report.followups_committed + 2 >= report.followups_sent,
        "a refused call blocked its signer: {} of {} follow-ups committed",
        report.followups_committed,
        report.followups_sent
    );
    assert_eq!(
        report.broke_txs_committed, 0,
        "unpaid transactions included"
    );
    assert!(
        report.block_bytes_max > 2 << 20,
        "the large transactions made it into blocks ({} bytes)",
        report.block_bytes_max
    );
    assert!(report.block_bytes_max <= cess_consensus::bft::BLOCK_BYTES_MAX);
}

/// Scenario: a block's time had no upper bound, and a fresh proposal could carry another
/// proposer's block (and so its VRF output, letting a proposer pick the randomness). Honest
/// validators refuse both; the chain keeps committing and no committed block's time runs
/// ahead of the clock.
#[test]
fn proposals_with_future_times_or_foreign_blocks_are_refused() {
    for (k, kind) in [Byzantine::FutureTime, Byzantine::ForeignBlock]
        .into_iter()
        .enumerate()
    {
        // A foreign block exists to steal only after a failed round; lost messages make
        // rounds fail, and a few seeds make sure one does.
        let mut tampered = 0;
        for attempt in 0..4 {
            let mut config = SimConfig::new(4, seed(50 + 10 * k as u64 + attempt));
            config.byzantine = vec![(3, kind)];
            config.drop_permille = 120;
            let mut sim = Sim::new(config);
            sim.run_until(8_000);
            let report = sim.finish();
            eprintln!(
                "{kind:?}: height {}, tampered {}, refused {}, time lead {} ms",
                sim.honest_height(),
                report.tampered_proposals,
                report.proposals_invalid,
                report.block_time_lead_ms_max
            );
            assert!(
                sim.honest_height() >= 5,
                "{kind:?}: height {}",
                sim.honest_height()
            );
            assert!(
                report.proposals_invalid >= report.tampered_proposals,
                "{kind:?}: a tampered proposal was accepted by someone"
            );
            assert!(
                report.block_time_lead_ms_max <= cess_consensus::bft::TIME_AHEAD_MS_MAX,
                "{kind:?}: a block {} ms ahead was committed",
                report.block_time_lead_ms_max
            );
            tampered += report.tampered_proposals;
            if tampered > 0 {
                break;
            }
        }
        assert!(tampered > 0, "{kind:?}: never tampered");
    }
}

/// Heights the crash simulations run for: `CESS_SIM_HEIGHTS`, default `default`.
fn heights(default: u64) -> u64 {
    std::env::var("CESS_SIM_HEIGHTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs four validators, one of them crashing at a random point every `crash_every_ms` and
/// restarting from its disk (its log losing what was not synced, the last write sometimes
/// torn), until the honest validators have all committed `heights`; then stops the crashes
/// and lets every validator catch up.
fn run_with_crashes(seed: u64, wal: bool, heights: u64) -> (Sim, cess_consensus::sim::SimReport) {
    let mut config = SimConfig::new(4, seed);
    config.crash_every_ms = 400;
    config.down_ms = (20, 1_200);
    config.wal = wal;
    let mut sim = Sim::new(config);
    let mut until_ms = 0;
    while sim.honest_height() < heights {
        until_ms += 1_000;
        sim.run_until(until_ms);
        assert!(
            until_ms < heights * 1_000 + 60_000,
            "the chain stalled at height {} (seed {seed})",
            sim.honest_height()
        );
    }
    sim.stop_crashing();
    sim.run_until(until_ms + 5_000);
    let report = sim.finish();
    (sim, report)
}

/// Validators crash at random points of their heights (before, between and after their
/// votes, while their log is half written) and restart from their disks: no validator ever
/// signs two different votes or proposals for one height, round and kind, every restarted
/// validator catches up, and all agree on every block and state root (the simulator asserts
/// the last on every commit). Restarts past height 25 resume from a checkpoint and replay only
/// the blocks after it, so the checkpoint path runs under the same checks. A seed replays
/// (`CESS_SIM_SEED`); `CESS_SIM_HEIGHTS` runs longer.
#[test]
fn validators_crashing_at_random_points_never_sign_twice_and_catch_up() {
    let heights = heights(300);
    let (sim, report) = run_with_crashes(seed(21), true, heights);
    eprintln!(
        "{} heights, {} crashes, {} restarts ({} from a checkpoint), {} log entries replayed, {} divergences",
        sim.max_height(),
        report.crashes,
        report.restarts,
        report.checkpoints_used,
        report.wal_replayed,
        report.replay_divergences
    );
    assert!(
        report.checkpoints_used > 0,
        "no restart resumed from a checkpoint"
    );
    assert!(
        report.crashes >= heights / 20,
        "{} crashes in {heights} heights",
        report.crashes
    );
    assert!(report.wal_replayed > 0, "no restart replayed its log");
    assert_eq!(
        report.conflicting_signatures, 0,
        "{:?}",
        report.first_conflict
    );
    assert_eq!(sim.down(), 0);
    assert!(
        sim.max_height() - sim.honest_height() <= 2,
        "a restarted validator did not catch up: {} of {}",
        sim.honest_height(),
        sim.max_height()
    );
}

/// The same crashes without the log: a restarted validator forgets what it signed, and
/// signs other votes for heights and rounds it already voted in (what the log prevents; this
/// shows the simulator's check can fail).
#[test]
fn without_the_log_restarted_validators_sign_conflicting_votes() {
    let (_, report) = run_with_crashes(seed(21), false, heights(300) / 2);
    assert!(
        report.conflicting_signatures > 0,
        "{} crashes and no conflicting signature",
        report.crashes
    );
    eprintln!(
        "{} conflicting signatures, first: {:?}",
        report.conflicting_signatures, report.first_conflict
    );
}

/// A Byzantine leader signs a hundred different proposals for its round and sends them all
/// to one validator: the first stands; the other 99 are counted as equivocation and dropped
/// before their blocks are checked or kept, so the leader cannot make its peers verify and
/// hold a block per proposal it signs.
#[test]
fn a_leader_signing_many_proposals_for_one_round_gets_one_kept() {
    use arc_malachitebft_core_types::{Round, SignedMessage};
    use cess_consensus::bft::{
        Block, BlockValue, Cess, Core, CoreConfig, Height, NetMsg, Proposal,
    };
    use cess_consensus::ledger::{Ledger, LedgerParams};

    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, _) = cess_consensus::sim::genesis(4, 1, seed(31), params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let set = cess_consensus::bft::validator_set(&ledger);
    let leader = set.proposer(1, 0).account;
    let (leader_account, leader_key) = keys.iter().find(|(a, _)| a.id() == leader).unwrap();
    let (victim_account, victim_key) = keys.iter().find(|(a, _)| a.id() != leader).unwrap();
    let mut victim = Core::new(
        ledger.clone(),
        victim_key.clone(),
        victim_account.id(),
        CoreConfig::default(),
        0,
    );
    victim.start(0);
    let randomness = ledger.epoch_randomness(0).unwrap();
    let (vrf_proof, _) = cess_consensus::vrf::vrf_prove(leader_key, &randomness, 1);
    let ctx = Cess {
        chain_id: ledger.chain_id(),
    };
    for k in 0..100u64 {
        let block = Block {
            height: 1,
            parent: ledger.chain_id(),
            parent_root: ledger.root(),
            next_validators: None,
            time_ms: k,
            proposer: leader_account.id(),
            vrf_proof: vrf_proof.clone(),
            last_commit: None,
            txs: Vec::new(),
        };
        let proposal = Proposal {
            height: Height(1),
            round: Round::new(0),
            pol_round: Round::Nil,
            value: BlockValue::new(block),
            proposer: leader_account.id(),
        };
        let signature = ctx.sign_proposal(leader_key, &proposal);
        victim.on_message(
            leader_account.id(),
            NetMsg::Proposal(SignedMessage::new(proposal, signature)),
            10,
        );
    }
    let stats = victim.stats();
    assert_eq!(stats.proposals_equivocated, 99, "{stats:?}");
    assert_eq!(stats.proposals_invalid, 0, "{stats:?}");
}

/// A validator far behind streams blocks in batches: its start probes every peer for one
/// block, the first to answer is asked for a batch, and the next batch is asked for once half
/// of the last is in (no round trip per block); an answer from another peer moves the
/// requests to it. A peer answers a batch with the blocks it has, and its tip past them.
#[test]
fn a_validator_behind_asks_for_batches_ahead_of_the_blocks_it_applies() {
    use cess_consensus::bft::{Core, CoreConfig, NetMsg, Output, SYNC_BATCH};
    use cess_consensus::keys::AccountId;
    let seed = seed(71);
    let config = SimConfig::new(4, seed);
    let params = config.params.clone();
    let mut sim = Sim::new(config);
    let mut until_ms = 0;
    while sim.honest_height() < 90 {
        until_ms += 5_000;
        assert!(until_ms <= 120_000, "height {}", sim.honest_height());
        sim.run_until(until_ms);
    }
    let decided: Vec<_> = (1..=90)
        .map(|h| sim.core(0).decided(h).expect("kept").clone())
        .collect();
    let (_, keys, _) = cess_consensus::sim::genesis(4, 0, seed, params);
    let (account, key) = &keys[3];
    let mut behind = Core::new(
        sim.genesis_ledger().clone(),
        key.clone(),
        account.id(),
        CoreConfig {
            timeouts: cess_consensus::sim::sim_timeouts(),
            ..CoreConfig::default()
        },
        0,
    );
    let requests = |outputs: &[Output]| -> Vec<(AccountId, u64, u32)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(to, NetMsg::SyncRequest { height, count }) => {
                    Some((*to, *height, *count))
                }
                _ => None,
            })
            .collect()
    };
    let peers: Vec<AccountId> = (0..3).map(|i| keys[i].0.id()).collect();
    let probes = requests(&behind.start(0));
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert!(
        probes.iter().all(|(_, h, c)| (*h, *c) == (1, 1)),
        "{probes:?}"
    );
    let mut asked = Vec::new();
    for (i, (block, commit)) in decided[..80].iter().enumerate() {
        let msg = NetMsg::SyncResponse {
            block: Box::new((**block).clone()),
            commit: commit.clone(),
        };
        let outputs = behind.on_message(peers[0], msg, 10 + i as u64);
        asked.extend(requests(&outputs));
    }
    assert_eq!(behind.ledger().height(), 80);
    assert_eq!(
        behind.ledger().root(),
        sim.core(0)
            .decided(81)
            .map_or_else(|| panic!("kept"), |(block, _)| block.parent_root,)
    );
    let batch = SYNC_BATCH as u64;
    let expected: Vec<(AccountId, u64, u32)> = [2, 2 + batch, 2 + 2 * batch]
        .into_iter()
        .map(|h| (peers[0], h, SYNC_BATCH))
        .collect();
    assert_eq!(asked, expected, "a batch each time half of the last is in");
    // Another peer's block while the batch streams in is applied, and does not restart it
    // (two streams of the same blocks would restart each other at every block)...
    let synced = |height: u64| NetMsg::SyncResponse {
        block: Box::new((*decided[height as usize - 1].0).clone()),
        commit: decided[height as usize - 1].1.clone(),
    };
    let outputs = behind.on_message(peers[1], synced(81), 200);
    assert_eq!(behind.ledger().height(), 81);
    assert_eq!(requests(&outputs), vec![]);
    // ... but once the batch has stalled, the requests move to the peer that answers.
    let outputs = behind.on_message(peers[1], synced(82), 1_000);
    assert_eq!(requests(&outputs), vec![(peers[1], 83, SYNC_BATCH)]);
    // Serving: a batch within what it has, then only the tip.
    let answered = |outputs: &[Output]| -> Vec<u64> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(_, NetMsg::SyncResponse { block, .. }) => Some(block.height),
                _ => None,
            })
            .collect()
    };
    let asker = peers[2];
    let outputs = behind.on_message(
        asker,
        NetMsg::SyncRequest {
            height: 5,
            count: 32,
        },
        300,
    );
    assert_eq!(answered(&outputs), (5..37).collect::<Vec<_>>());
    let outputs = behind.on_message(
        asker,
        NetMsg::SyncRequest {
            height: 78,
            count: 32,
        },
        300,
    );
    assert_eq!(answered(&outputs), vec![78, 79, 80, 81, 82]);
    let outputs = behind.on_message(
        asker,
        NetMsg::SyncRequest {
            height: 83,
            count: 32,
        },
        300,
    );
    assert!(answered(&outputs).is_empty());
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Send(to, NetMsg::Tip { height: 82 }) if *to == asker)),
        "the tip past the blocks it has"
    );
}

/// A validator asking for the same old block over and over gets at most its rate of answers
/// per second (256 blocks): the rest are refused, not copied and sent.
#[test]
fn sync_answers_to_one_peer_are_rate_limited() {
    use cess_consensus::bft::{Block, CommitRecord, Core, CoreConfig, NetMsg, Output, block_info};
    use cess_consensus::ledger::{Ledger, LedgerParams};
    use std::sync::Arc;

    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, _) = cess_consensus::sim::genesis(4, 1, seed(32), params);
    let genesis_ledger = Ledger::genesis(&genesis).unwrap();
    let (account, key) = &keys[0];
    let randomness = genesis_ledger.epoch_randomness(0).unwrap();
    let block = Block {
        height: 1,
        parent: genesis_ledger.chain_id(),
        parent_root: genesis_ledger.root(),
        next_validators: None,
        time_ms: 1,
        proposer: account.id(),
        vrf_proof: cess_consensus::vrf::vrf_prove(key, &randomness, 1).0,
        last_commit: None,
        txs: Vec::new(),
    };
    let mut ledger = genesis_ledger.clone();
    ledger.apply_block(&block_info(&block), &[], &cess_proofs::CpuBackend);
    let restored = cess_consensus::store::Restored {
        ledger,
        previous_validators: Some(cess_consensus::bft::validator_set(&genesis_ledger)),
        last_hash: block.hash().0,
        recent: vec![(
            Arc::new(block),
            CommitRecord {
                round: 0,
                signatures: Vec::new(),
            },
        )],
    };
    let mut core = Core::restore(
        restored,
        key.clone(),
        account.id(),
        CoreConfig::default(),
        0,
    );
    core.start(0);
    let peer = keys[1].0.id();
    let answers = |outputs: Vec<Output>| {
        outputs
            .iter()
            .filter(|o| matches!(o, Output::Send(_, NetMsg::SyncResponse { .. })))
            .count()
    };
    let mut answered = 0;
    for _ in 0..1000 {
        answered += answers(core.on_message(
            peer,
            NetMsg::SyncRequest {
                height: 1,
                count: 1,
            },
            100,
        ));
    }
    assert_eq!(answered, 256);
    assert_eq!(core.stats().sync_refused, 744);
    // Another peer has its own budget; the next second, this one has a new one.
    let other = keys[2].0.id();
    assert_eq!(
        answers(core.on_message(
            other,
            NetMsg::SyncRequest {
                height: 1,
                count: 1
            },
            100
        )),
        1
    );
    assert_eq!(
        answers(core.on_message(
            peer,
            NetMsg::SyncRequest {
                height: 1,
                count: 1
            },
            1_100
        )),
        1
    );
}

/// Live validator sets: two genesis candidates start outside the set of four (no one sends
/// them votes; they follow by asking members for blocks), bond more stake, and the next
/// era's election replaces two validators with them. The chain keeps committing across the
/// boundary, the newcomers' precommits are in the commits after it (the set needs three of
/// four, so at least one of them), and the two retired validators follow on as observers.
#[test]
fn an_era_replacing_two_of_four_validators_keeps_committing() {
    use cess_consensus::Call;
    use cess_consensus::ledger::TOKEN;
    let era_blocks = 40;
    let mut config = SimConfig::new(4, seed(41));
    config.candidates = 2;
    config.params.epoch_blocks = 5;
    config.params.era_blocks = era_blocks;
    let mut sim = Sim::new(config);
    let members = |sim: &Sim, i: usize| -> Vec<_> {
        sim.core(i)
            .ledger()
            .validators()
            .iter()
            .map(|v| v.account)
            .collect()
    };
    let genesis_set = members(&sim, 0);
    let outsiders: Vec<usize> = (0..6)
        .filter(|&i| !genesis_set.contains(&sim.account(i)))
        .collect();
    assert_eq!(outsiders.len(), 2);
    sim.run_until(1_500);
    for &i in &outsiders {
        assert!(!sim.core(i).is_member());
        assert!(
            // It asks every 200 ms: a few blocks at the simulator's pace.
            sim.core(i).height() + 5 >= sim.max_height(),
            "an outsider follows: at {} of {}",
            sim.core(i).height(),
            sim.max_height()
        );
    }
    // Stake worth more than the random part of the credit: both are elected next era.
    for &i in &outsiders {
        sim.submit_call(
            i,
            Call::Bond {
                amount: 8_000 * TOKEN,
            },
        );
    }
    let elected = |sim: &Sim| {
        let set = members(sim, 0);
        outsiders.iter().all(|&i| set.contains(&sim.account(i)))
    };
    let mut now = 1_500;
    while !elected(&sim) {
        now += 100;
        sim.run_until(now);
        assert!(now < 30_000, "no election took the candidates in");
    }
    // The first height the new set decides (sets change only at era boundaries).
    let boundary = sim.core(0).ledger().era() * era_blocks + 1;
    assert!(boundary <= sim.core(0).height());
    let new_set = members(&sim, 0);
    let retired: Vec<usize> = (0..6)
        .filter(|&i| !new_set.contains(&sim.account(i)))
        .collect();
    assert_eq!(retired.len(), 2);
    sim.run_until(now + 3_000);
    let report = sim.finish();
    let tip = sim.honest_height();
    eprintln!(
        "boundary at height {boundary}, all at {tip} 3 s later; {} blocks synced",
        report.synced_blocks
    );
    assert!(tip >= boundary + 10, "committing went on: {tip}");
    for &i in &outsiders {
        let signed = (boundary..tip.min(boundary + era_blocks))
            .filter(|&h| {
                sim.core(i).decided(h).is_some_and(|(_, commit)| {
                    commit.signatures.iter().any(|(a, _)| *a == sim.account(i))
                })
            })
            .count();
        assert!(
            signed > 0,
            "outsider {i} never in a commit after the boundary"
        );
    }
    // In the era after the boundary the retired sign nothing, and still follow.
    for h in boundary..tip.min(boundary + era_blocks) {
        let (_, commit) = sim.core(outsiders[0]).decided(h).expect("kept");
        for &i in &retired {
            assert!(
                commit.signatures.iter().all(|(a, _)| *a != sim.account(i)),
                "retired {i} signed at {h}"
            );
        }
    }
    for &i in &retired {
        assert!(
            sim.core(i).height() + 5 >= sim.max_height(),
            "retired {i} follows"
        );
    }
}

/// Validators put the equivocations they see on the chain themselves: a validator that
/// double-votes is reported (one report per offender per validator; the ledger takes the
/// first), slashed, and left out of the next election (a fifth candidate takes its seat).
#[test]
fn a_double_voting_validator_is_reported_slashed_and_voted_out() {
    let era_blocks = 30;
    let config_with = |byzantine: Vec<(usize, Byzantine)>| {
        let mut config = SimConfig::new(4, seed(51));
        config.candidates = 1;
        config.params.epoch_blocks = 5;
        config.params.era_blocks = era_blocks;
        config.byzantine = byzantine;
        config
    };
    // Which node is a genesis validator: the same seed gives the same genesis.
    let probe = Sim::new(config_with(Vec::new()));
    let offender = (0..5)
        .find(|&i| {
            probe
                .core(0)
                .ledger()
                .validators()
                .iter()
                .any(|v| v.account == probe.account(i))
        })
        .unwrap();
    let mut sim = Sim::new(config_with(vec![(offender, Byzantine::DoubleVote)]));
    let offender_id = sim.account(offender);
    let honest = (0..5).find(|&i| i != offender).unwrap();
    let mut now = 0;
    while !sim
        .core(honest)
        .ledger()
        .candidate(&offender_id)
        .unwrap()
        .slashed
    {
        now += 200;
        sim.run_until(now);
        assert!(now < 20_000, "the offender was never slashed");
    }
    let slashed_at = sim.core(honest).ledger().height();
    // Out at the next election.
    while sim.core(honest).ledger().era() * era_blocks < slashed_at {
        now += 200;
        sim.run_until(now);
        assert!(now < 40_000, "no election after the slash");
    }
    sim.run_until(now + 500);
    let report = sim.finish();
    eprintln!(
        "slashed at height {slashed_at}; {} reports signed; set after: {:?}",
        report.evidence_reported,
        sim.core(honest).ledger().validators().len()
    );
    assert!(report.evidence_reported >= 1);
    let ledger = sim.core(honest).ledger();
    assert!(
        ledger.validators().iter().all(|v| v.account != offender_id),
        "the offender left the set"
    );
    assert_eq!(ledger.validators().len(), 4, "the candidate took the seat");
}
