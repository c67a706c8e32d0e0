//! Idle space on the ledger (PoIS): certification by a proof of a challenge that did not exist
//! at the commitment, space audits that pay verified idle space and penalise failed or missing
//! answers, replacement by user data. Real idle files and real proofs (test parameters).

mod common;

use cess_consensus::ledger::{Event, IDLE_CHALLENGE_BLOCKS, IdleSetState, Ledger};
use cess_consensus::{AccountId, Call, TxError};
use cess_proofs::pois::{
    CommitChallenge, FileCommitment, Graph, IdleFile, generate_set, prove_commit, prove_space,
};
use common::{Chain, test_params};

const MINER_BYTES: u64 = 1 << 20;

/// The test parameters with room in each audit round for a space audit's draw (three blocks
/// after the round opens) and a three-block deadline.
fn chain() -> Chain {
    let params = cess_consensus::LedgerParams {
        audit_period_blocks: 10,
        pois_space_deadline_blocks: 3,
        ..test_params()
    };
    let mut chain = Chain::new(12, 4, params);
    for i in 4..10 {
        chain.register_miner(i, MINER_BYTES);
    }
    chain
}

/// Miner `i`'s idle files of the set starting at `first`.
fn idle_set(chain: &Chain, i: usize, first: u64) -> Vec<IdleFile> {
    labelled_for(chain, &owner(&chain.ledger, &chain.id(i)), first)
}

/// Whom the ledger has a registered miner's files labelled for.
fn owner(ledger: &Ledger, miner: &AccountId) -> [u8; 32] {
    ledger
        .idle_replica_owner(miner)
        .expect("a registered miner")
}

/// The set at `first` labelled for `owner`.
fn labelled_for(chain: &Chain, owner: &[u8; 32], first: u64) -> Vec<IdleFile> {
    let params = chain.ledger.params().pois;
    let mut files = Vec::new();
    generate_set(&Graph::new(&params), owner, first, |file| files.push(file));
    files
}

fn commit_call(files: &[IdleFile]) -> Call {
    Call::CommitIdle {
        first_file: files[0].index,
        commitments: files.iter().map(|f| f.commitment.encode()).collect(),
    }
}

fn prove_call(ledger: &Ledger, miner: &AccountId, first: u64) -> Call {
    let params = ledger.params().pois;
    let challenge = ledger
        .idle_commit_challenge(miner, first)
        .expect("a fixed challenge");
    Call::ProveIdle {
        first_file: first,
        proof: prove_commit(&Graph::new(&params), &owner(ledger, miner), &challenge).encode(),
    }
}

/// The blocks after a commitment until its challenge is fixed.
fn fix_challenges(chain: &mut Chain) {
    for _ in 0..IDLE_CHALLENGE_BLOCKS {
        chain.block(&[]);
    }
}

/// Commits and certifies miner `i`'s set at `first`; its files.
fn certify(chain: &mut Chain, i: usize, first: u64) -> Vec<IdleFile> {
    let files = idle_set(chain, i, first);
    chain.run(i, commit_call(&files)).unwrap();
    fix_challenges(chain);
    let call = prove_call(&chain.ledger, &chain.id(i), first);
    chain.run(i, call).unwrap();
    files
}

/// Certifies a set at 0 for each miner of `miners`, all in the same blocks (so that their
/// space audits open together); their files.
fn certify_together(chain: &mut Chain, miners: &[usize]) -> Vec<Vec<IdleFile>> {
    let sets: Vec<Vec<IdleFile>> = miners.iter().map(|&i| idle_set(chain, i, 0)).collect();
    let txs: Vec<_> = miners
        .iter()
        .zip(&sets)
        .map(|(&i, files)| chain.tx(i, commit_call(files)))
        .collect();
    chain.block(&txs);
    fix_challenges(chain);
    let txs: Vec<_> = miners
        .iter()
        .map(|&i| chain.tx(i, prove_call(&chain.ledger, &chain.id(i), 0)))
        .collect();
    let outcome = chain.block(&txs);
    assert!(outcome.receipts.iter().all(|r| r.is_ok()));
    for &i in miners {
        assert!(chain.ledger.idle_verified_bytes(&chain.id(i)) > 0);
    }
    sets
}

fn events(outcome: &cess_consensus::ledger::BlockOutcome) -> &[Event] {
    &outcome.events
}

#[test]
fn idle_space_is_verified_by_a_proof_of_a_challenge_fixed_after_its_commitment() {
    let mut chain = chain();
    let params = chain.ledger.params().pois;
    let miner = chain.id(4);
    let files = idle_set(&chain, 4, 0);

    // Sets are numbered in order from 0; one file per slot; within the declared space.
    let mut skipped = files.clone();
    skipped.iter_mut().for_each(|f| f.index += 100);
    assert!(matches!(
        chain.run(4, commit_call(&skipped)),
        Err(TxError::BadIdleSet(_))
    ));
    assert!(matches!(
        chain.run(4, commit_call(&files[1..])),
        Err(TxError::BadIdleSet(_))
    ));
    assert!(matches!(
        chain.run(10, commit_call(&files)),
        Err(TxError::NotMiner)
    ));

    // A proof in the block of the commitment cannot exist: its challenge does not yet.
    let commit = chain.tx(4, commit_call(&files));
    let early_call = Call::ProveIdle {
        first_file: 0,
        proof: vec![0; 16],
    };
    let early = chain.tx_with(
        4,
        cess_consensus::tx::TxTerms {
            nonce: commit.nonce + 1,
            ..chain.tx(4, early_call.clone()).terms()
        },
        early_call,
    );
    let outcome = chain.block(&[commit, early]);
    assert_eq!(outcome.receipts[0], Ok(()));
    assert_eq!(outcome.receipts[1], Err(TxError::IdleChallengeNotYet));
    assert!(chain.ledger.idle_commit_challenge(&miner, 0).is_none());
    assert_eq!(
        chain.ledger.idle_verified_bytes(&miner),
        0,
        "committed is not verified"
    );
    // Not fixed by the next block alone (whose proposer knows its randomness beforehand), only
    // by the randomness of the IDLE_CHALLENGE_BLOCKS-th block after the commitment.
    for _ in 1..IDLE_CHALLENGE_BLOCKS {
        // One block each, refused: the challenge does not exist yet.
        assert_eq!(
            chain.run(
                4,
                Call::ProveIdle {
                    first_file: 0,
                    proof: vec![0; 16]
                }
            ),
            Err(TxError::IdleChallengeNotYet)
        );
        assert!(chain.ledger.idle_commit_challenge(&miner, 0).is_none());
    }
    chain.block(&[]);
    let challenge = chain.ledger.idle_commit_challenge(&miner, 0).unwrap();

    // A proof of another challenge (one the miner could have guessed before) is judged and
    // drops the set.
    let guessed = CommitChallenge::derive(
        &params,
        &owner(&chain.ledger, &miner),
        0,
        &files.iter().map(|f| f.commitment).collect::<Vec<_>>(),
        &[0; 32],
    );
    assert_ne!(guessed, challenge);
    let wrong = prove_commit(
        &Graph::new(&params),
        &owner(&chain.ledger, &miner),
        &guessed,
    )
    .encode();
    // A proof that does not decode is refused without judgement (the set stays).
    assert!(matches!(
        chain.run(
            4,
            Call::ProveIdle {
                first_file: 0,
                proof: wrong[..100].to_vec()
            }
        ),
        Err(TxError::BadProof(_))
    ));
    let tx = chain.tx(
        4,
        Call::ProveIdle {
            first_file: 0,
            proof: wrong,
        },
    );
    let outcome = chain.block(&[tx]);
    assert_eq!(outcome.receipts[0], Ok(()));
    assert!(
        events(&outcome)
            .iter()
            .any(|e| matches!(e, Event::IdleRefused { first_file: 0, .. }))
    );
    assert_eq!(chain.ledger.idle_sets(&miner).count(), 0);

    // The numbers are used: the next set starts after them, and is certified.
    let next = u64::from(params.files_per_set);
    assert!(matches!(
        chain.run(4, commit_call(&files)),
        Err(TxError::BadIdleSet(_))
    ));
    certify(&mut chain, 4, next);
    assert_eq!(chain.ledger.idle_verified_bytes(&miner), params.set_bytes());
    let (_, set) = chain.ledger.idle_sets(&miner).next().unwrap();
    assert_eq!(set.state, IdleSetState::Certified);

    // Another miner cannot present the same roots as its own.
    let other = chain.id(5);
    let stolen = idle_set(&chain, 4, 0);
    chain.run(5, commit_call(&stolen)).unwrap();
    fix_challenges(&mut chain);
    let challenge = chain.ledger.idle_commit_challenge(&other, 0).unwrap();
    // What miner 5 can answer with: miner 4's labels.
    let proof = prove_commit(
        &Graph::new(&params),
        &owner(&chain.ledger, &miner),
        &challenge,
    )
    .encode();
    let tx = chain.tx(
        5,
        Call::ProveIdle {
            first_file: 0,
            proof,
        },
    );
    let outcome = chain.block(&[tx]);
    assert!(
        events(&outcome)
            .iter()
            .any(|e| matches!(e, Event::IdleRefused { .. }))
    );
    assert_eq!(chain.ledger.idle_verified_bytes(&other), 0);

    // The proving window passes.
    let later = idle_set(&chain, 5, next);
    chain.run(5, commit_call(&later)).unwrap();
    for _ in 0..chain.ledger.params().pois_commit_blocks + 1 {
        chain.block(&[]);
    }
    let call = prove_call(&chain.ledger, &other, next);
    assert_eq!(chain.run(5, call), Err(TxError::IdleCommitExpired));

    // The state survives a snapshot.
    let restored = Ledger::decode_snapshot(&chain.ledger.encode_snapshot()).unwrap();
    assert_eq!(restored.root(), chain.ledger.root());
    assert_eq!(restored.idle_space(&miner), chain.ledger.idle_space(&miner));
}

#[test]
fn idle_files_are_labelled_for_one_chain_and_one_registration() {
    let mut chain = chain();
    let params = chain.ledger.params().pois;
    let miner = chain.id(4);
    // The owner names the chain: another chain (other parameters, so another chain id) has
    // the same account's files labelled for another owner.
    let mut other_params = test_params();
    other_params.audit_period_blocks += 1;
    let mut other = Chain::new(12, 4, other_params);
    other.register_miner(4, MINER_BYTES);
    assert_ne!(other.ledger.chain_id(), chain.ledger.chain_id());
    assert_ne!(owner(&other.ledger, &miner), owner(&chain.ledger, &miner));
    // And the registration: miners registered at other heights have other owners, and an
    // account that is not a miner has none.
    assert_ne!(
        owner(&chain.ledger, &miner),
        owner(&chain.ledger, &chain.id(5))
    );
    chain.block(&[]);
    chain.register_miner(10, MINER_BYTES);
    let late = chain.id(10);
    assert!(chain.ledger.miner(&late).unwrap().registered_at > 0);
    assert!(chain.ledger.idle_replica_owner(&chain.id(11)).is_none());
    // Files labelled for the bare account (as for another chain or an earlier registration)
    // are refused when their challenge is answered.
    let foreign = labelled_for(&chain, &miner.0, 0);
    chain.run(4, commit_call(&foreign)).unwrap();
    fix_challenges(&mut chain);
    let challenge = chain.ledger.idle_commit_challenge(&miner, 0).unwrap();
    let proof = prove_commit(&Graph::new(&params), &miner.0, &challenge).encode();
    let outcome = chain.block(&[chain.tx(
        4,
        Call::ProveIdle {
            first_file: 0,
            proof,
        },
    )]);
    assert!(
        events(&outcome)
            .iter()
            .any(|e| matches!(e, Event::IdleRefused { first_file: 0, .. }))
    );
    assert_eq!(chain.ledger.idle_verified_bytes(&miner), 0);
    // The same numbers labelled for the owner the ledger names are certified.
    let next = u64::from(params.files_per_set);
    certify(&mut chain, 4, next);
    assert_eq!(chain.ledger.idle_verified_bytes(&miner), params.set_bytes());
}

#[test]
fn idle_space_fits_the_declared_space_with_the_data() {
    let mut chain = chain();
    let params = chain.ledger.params().pois;
    let miner = chain.id(4);
    // 1 MiB declared, 32 KiB sets: at most 4 sets pending at once, 32 in all.
    let mut first = 0;
    for _ in 0..4 {
        chain
            .run(4, commit_call(&idle_set(&chain, 4, first)))
            .unwrap();
        first += u64::from(params.files_per_set);
    }
    assert!(matches!(
        chain.run(4, commit_call(&idle_set(&chain, 4, first))),
        Err(TxError::BadIdleSet(_))
    ));
    // Declared space shrinks below what is committed: no more sets.
    chain
        .run(
            4,
            Call::UpdateMiner {
                endpoint: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                declared_bytes: 4 * params.set_bytes(),
            },
        )
        .unwrap();
    for first in (0..4).map(|s| s * u64::from(params.files_per_set)) {
        let call = prove_call(&chain.ledger, &miner, first);
        chain.run(4, call).unwrap();
    }
    assert_eq!(
        chain.ledger.idle_verified_bytes(&miner),
        4 * params.set_bytes()
    );
    assert!(matches!(
        chain.run(4, commit_call(&idle_set(&chain, 4, first))),
        Err(TxError::NoIdleRoom { .. })
    ));
}

/// Runs blocks until space audits open; (miner, round) of each.
fn next_space_audits(chain: &mut Chain) -> Vec<(AccountId, u64)> {
    for _ in 0..20 {
        let outcome = chain.block(&[]);
        let opened: Vec<_> = outcome
            .events
            .iter()
            .filter_map(|e| match e {
                Event::SpaceAuditOpened { round, miner, .. } => Some((*miner, *round)),
                _ => None,
            })
            .collect();
        if !opened.is_empty() {
            return opened;
        }
    }
    panic!("no space audit opened in 20 blocks");
}

fn space_proof(chain: &Chain, miner: &AccountId, files: &[IdleFile], replaced: &[u64]) -> Call {
    let params = chain.ledger.params().pois;
    let (audit, challenge) = chain.ledger.space_challenge(miner).unwrap();
    assert_eq!(audit.first_file, files[0].index);
    let bytes: Vec<Option<&[u8]>> = files
        .iter()
        .map(|f| (!replaced.contains(&f.index)).then_some(&f.bytes[..]))
        .collect();
    Call::SubmitSpaceProof {
        round: audit.round,
        proof: prove_space(&params, &challenge, &bytes).encode(),
    }
}

#[test]
fn space_audits_pay_verified_idle_space_and_penalise_wrong_or_missing_answers() {
    let mut chain = chain();
    let sets = certify_together(&mut chain, &[4, 5, 6]);
    let ids: Vec<AccountId> = (4..10).map(|i| chain.id(i)).collect();
    let opened = next_space_audits(&mut chain);
    let mut audited: Vec<AccountId> = opened.iter().map(|(m, _)| *m).collect();
    audited.sort();
    let mut expected = ids[..3].to_vec();
    expected.sort();
    // Every miner with verified idle space is audited (test parameters draw every miner); the
    // miners with declared but unverified space are not, and earn nothing.
    assert_eq!(audited, expected);
    let collateral = |chain: &Chain, m: &AccountId| chain.ledger.miner(m).unwrap().collateral;
    let before: Vec<u128> = ids.iter().map(|m| collateral(&chain, m)).collect();
    let balances: Vec<u128> = ids
        .iter()
        .map(|m| chain.ledger.account(m).balance)
        .collect();

    // Miner 4 answers; miner 5 answers with a label it does not have; miner 6 is silent.
    let good = chain.tx(4, space_proof(&chain, &ids[0], &sets[0], &[]));
    let mut forged_files = sets[1].clone();
    forged_files[0].bytes.iter_mut().for_each(|b| *b = 0);
    let forged = chain.tx(5, space_proof(&chain, &ids[1], &forged_files, &[]));
    let outcome = chain.block(&[good.clone(), forged]);
    assert_eq!(outcome.receipts, vec![Ok(()), Ok(())]);
    let reward = outcome
        .events
        .iter()
        .find_map(|e| match e {
            Event::SpaceProofValid { miner, reward, .. } if *miner == ids[0] => Some(*reward),
            _ => None,
        })
        .expect("miner 4's proof is valid");
    let refund = chain.ledger.params().min_fee(&good);
    assert!(
        reward > refund,
        "verified idle space earns: {reward} against the fee {refund}"
    );
    assert_eq!(
        chain.ledger.account(&ids[0]).balance,
        balances[0] - good.fee + reward
    );
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::SpaceProofInvalid { miner, .. } if *miner == ids[1]))
    );
    assert!(collateral(&chain, &ids[1]) < before[1]);
    assert_eq!(
        chain.ledger.idle_verified_bytes(&ids[1]),
        0,
        "a failed set is no longer verified"
    );
    // A second answer to a closed audit is refused.
    assert_eq!(
        chain.run(4, space_proof_round(&chain, &ids[0])),
        Err(TxError::NoAudit)
    );

    // The silent miner's audit closes at its deadline.
    let mut missed = false;
    for _ in 0..5 {
        let outcome = chain.block(&[]);
        missed |= outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::SpaceProofMissing { miner, .. } if *miner == ids[2]));
    }
    assert!(missed);
    assert!(collateral(&chain, &ids[2]) < before[2]);
    assert_eq!(chain.ledger.idle_verified_bytes(&ids[2]), 0);
    for m in &ids[3..] {
        assert_eq!(
            chain.ledger.account(m).balance,
            balances[ids.iter().position(|x| x == m).unwrap()]
        );
    }
}

/// Blocks have no fixed duration (they come as fast as consensus goes when transactions
/// wait), so a space audit's deadline is a time: a proof counts in the first block after it,
/// judged by the previous block's time (so a stalled chain closes nothing its miners answered
/// in time, and a proposer cannot close audits early by its own block's time), and never
/// later, whatever the count of blocks; the audit then closes as missed.
#[test]
fn a_space_audit_is_answered_within_its_time_not_only_its_blocks() {
    let params = cess_consensus::LedgerParams {
        audit_period_blocks: 10,
        pois_space_deadline_blocks: 3,
        pois_space_deadline_ms: 2_500,
        ..test_params()
    };
    let mut chain = Chain::new(12, 4, params);
    for i in 4..7 {
        chain.register_miner(i, MINER_BYTES);
    }
    let sets = certify_together(&mut chain, &[4, 5, 6]);
    let ids = [chain.id(4), chain.id(5), chain.id(6)];
    let opened = next_space_audits(&mut chain);
    assert_eq!(opened.len(), 3);
    let drawn_ms = chain.ledger.time_ms();
    let (audit, _) = chain.ledger.space_challenge(&ids[0]).unwrap();
    assert_eq!(audit.deadline_ms, drawn_ms + 2_500);
    let collateral = |chain: &Chain, m: &AccountId| chain.ledger.miner(m).unwrap().collateral;
    let before = collateral(&chain, &ids[2]);
    let valid = |outcome: &cess_consensus::ledger::BlockOutcome, m: &AccountId| {
        events(outcome)
            .iter()
            .any(|e| matches!(e, Event::SpaceProofValid { miner, .. } if miner == m))
    };

    // Two seconds after the draw: in time.
    chain.block_interval_ms = 2_000;
    let good = chain.tx(4, space_proof(&chain, &ids[0], &sets[0], &[]));
    let outcome = chain.block(&[good]);
    assert_eq!(outcome.receipts, vec![Ok(())]);
    assert!(valid(&outcome, &ids[0]));

    // The chain stalls for 30 s; the first block after it still takes an answer sent in time.
    chain.block_interval_ms = 30_000;
    let after_stall = chain.tx(5, space_proof(&chain, &ids[1], &sets[1], &[]));
    let outcome = chain.block(&[after_stall]);
    assert_eq!(outcome.receipts, vec![Ok(())]);
    assert!(valid(&outcome, &ids[1]));

    // The next block is past the deadline by its previous block's time, and within the
    // three-block cap: too late.
    chain.block_interval_ms = 1_000;
    let late = chain.tx(6, space_proof(&chain, &ids[2], &sets[2], &[]));
    let outcome = chain.block(&[late]);
    assert!(chain.ledger.height() <= audit.deadline);
    assert_eq!(outcome.receipts, vec![Err(TxError::NoAudit)]);
    assert!(
        events(&outcome)
            .iter()
            .any(|e| matches!(e, Event::SpaceProofMissing { miner, .. } if *miner == ids[2]))
    );
    assert!(collateral(&chain, &ids[2]) < before);
    assert_eq!(chain.ledger.idle_verified_bytes(&ids[2]), 0);
}

/// The proposer of the block that opens an audit round knows that block's randomness before
/// anyone else: the space audit's set and labels come from the randomness of the block
/// [`IDLE_CHALLENGE_BLOCKS`] later, and until then there is nothing to answer.
#[test]
fn a_space_audit_is_drawn_from_a_block_after_its_round_opens() {
    let mut chain = chain();
    let files = certify(&mut chain, 4, 0);
    // Any round opened meanwhile answered, so the next one draws afresh.
    answer_open_audits(&mut chain, &files, &[]);
    let miner = chain.id(4);
    let period = chain.ledger.params().audit_period_blocks;
    while !(chain.ledger.height() + 1).is_multiple_of(period) {
        chain.block(&[]);
    }
    // The opening block: the round is open, its draw is not.
    let outcome = chain.block(&[]);
    let opened_at = chain.ledger.height();
    let round = opened_at / period;
    assert!(
        !events(&outcome)
            .iter()
            .any(|e| matches!(e, Event::SpaceAuditOpened { .. }))
    );
    let draw = chain.ledger.idle_space(&miner).unwrap().draw.unwrap();
    assert_eq!(
        (draw.round, draw.at),
        (round, opened_at + IDLE_CHALLENGE_BLOCKS)
    );
    let opening_randomness = chain.ledger.randomness();
    // The miner knows it was drawn (its round is open): a replacement reported now forfeits
    // its idle reward, or it could declare lost sets replaced and be drawn among the rest.
    // (Accrued lazily: the replacement moves the clock, and would keep what the certified
    // files earned since the miner's last proof, dozens of blocks here.)
    chain.run(4, Call::ReplaceIdle { files: vec![1] }).unwrap();
    assert_eq!(chain.ledger.idle_space(&miner).unwrap().reward_accrued, 0);
    for _ in 2..IDLE_CHALLENGE_BLOCKS {
        assert!(chain.ledger.space_challenge(&miner).is_none());
        assert_eq!(
            chain.run(4, space_proof_round(&chain, &miner)),
            Err(TxError::NoAudit),
            "nothing to answer before the draw"
        );
    }
    assert_eq!(chain.ledger.height(), opened_at + IDLE_CHALLENGE_BLOCKS - 1);
    // The draw block: the set and the labels come from its randomness.
    let outcome = chain.block(&[]);
    let deadline = chain.ledger.height() + chain.ledger.params().pois_space_deadline_blocks;
    assert!(events(&outcome).iter().any(|e| matches!(
        e,
        Event::SpaceAuditOpened { round: r, miner: m, first_file: 0, deadline: d, .. }
            if *r == round && *m == miner && *d == deadline
    )));
    let (audit, _) = chain.ledger.space_challenge(&miner).unwrap();
    let draw_randomness = |block_randomness: [u8; 32]| {
        cess_consensus::codec::hash(
            b"cess-ledger/1 space audit draw\0",
            &[&block_randomness, &round.to_le_bytes()],
        )
    };
    assert_eq!(audit.randomness, draw_randomness(chain.ledger.randomness()));
    assert_ne!(audit.randomness, draw_randomness(opening_randomness));
    assert!(chain.ledger.idle_space(&miner).unwrap().draw.is_none());
}

fn space_proof_round(chain: &Chain, miner: &AccountId) -> Call {
    let _ = miner;
    Call::SubmitSpaceProof {
        round: chain.ledger.height() / chain.ledger.params().audit_period_blocks,
        proof: vec![],
    }
}

/// Miner 4 answers its space audits, waiting for one being drawn, until none is open or
/// drawing. (A round that opens in the next block only records a draw: its set is drawn
/// from what is certified three blocks later.)
fn answer_open_audits(chain: &mut Chain, files: &[IdleFile], replaced: &[u64]) {
    let miner = chain.id(4);
    loop {
        let drawing = chain
            .ledger
            .idle_space(&miner)
            .is_some_and(|s| s.draw.is_some());
        if chain.ledger.space_challenge(&miner).is_some() {
            let call = space_proof(chain, &miner, files, replaced);
            chain.run(4, call).unwrap();
        } else if drawing {
            chain.block(&[]);
        } else {
            return;
        }
    }
}

#[test]
fn replaced_idle_files_leave_the_verified_space_and_their_challenges() {
    let mut chain = chain();
    let params = chain.ledger.params().pois;
    let miner = chain.id(4);
    let files = certify(&mut chain, 4, 0);
    answer_open_audits(&mut chain, &files, &[]);
    chain
        .run(4, Call::ReplaceIdle { files: vec![1, 2] })
        .unwrap();
    assert_eq!(
        chain.ledger.idle_verified_bytes(&miner),
        params.set_bytes() - 2 * params.file_bytes()
    );
    // Twice, unknown, another miner's: refused.
    let files_kept = files.clone();
    for (i, files) in [(4, vec![1]), (4, vec![3, 3]), (4, vec![99]), (5, vec![0])] {
        answer_open_audits(&mut chain, &files_kept, &[1, 2]);
        assert!(chain.run(i, Call::ReplaceIdle { files }).is_err());
    }
    let opened = next_space_audits(&mut chain);
    assert_eq!(opened[0].0, miner);
    // A file of the set under audit declared replaced: it leaves the challenge, and the idle
    // reward accrued until now is forfeited (a miner that lost files earns nothing for them by
    // declaring them replaced when their set is drawn).
    assert!(chain.ledger.idle_space(&miner).unwrap().audit.is_some());
    chain.run(4, Call::ReplaceIdle { files: vec![0] }).unwrap();
    assert_eq!(chain.ledger.idle_space(&miner).unwrap().reward_accrued, 0);
    // The answer covers the live files alone; it earns its fee back and the reward of the one
    // block since.
    let call = space_proof(&chain, &miner, &files, &[0, 1, 2]);
    let tx = chain.tx(4, call);
    let refund = chain.ledger.params().min_fee(&tx);
    let outcome = chain.block(&[tx]);
    let reward = outcome
        .events
        .iter()
        .find_map(|e| match e {
            Event::SpaceProofValid { reward, .. } => Some(*reward),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", outcome.events));
    let one_block =
        (u128::from(params.file_bytes()) * chain.ledger.params().idle_reward_per_gib_block) >> 30;
    assert!(
        reward <= refund + one_block,
        "{reward} against {refund} + {one_block}"
    );
    // Every file replaced: the set is gone.
    answer_open_audits(&mut chain, &files, &[0, 1, 2]);
    chain.run(4, Call::ReplaceIdle { files: vec![3] }).unwrap();
    assert_eq!(chain.ledger.idle_sets(&miner).count(), 0);
    assert_eq!(chain.ledger.idle_verified_bytes(&miner), 0);
    let _: Vec<FileCommitment> = files.iter().map(|f| f.commitment).collect();
}
