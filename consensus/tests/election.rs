//! R²S elections: each era the ledger elects the top candidates by credit (50 % reputation,
//! 30 % stake, 20 % randomness on one scale); the set changes at era boundaries only; the
//! genesis file round-trips.

mod common;

use cess_consensus::ledger::{Event, Genesis, LedgerParams, TOKEN, credit};
use cess_consensus::{AccountId, Call};
use common::{Chain, validator_key};

/// Registration of `validator_key(i)` as a candidate with `stake`.
fn candidacy(i: usize, stake: u128) -> Call {
    let key = validator_key(i);
    Call::RegisterCandidate {
        key: key.public().to_bytes(),
        possession: key.proof_of_possession().to_bytes(),
        stake,
    }
}

#[test]
fn each_era_elects_the_top_candidates_by_credit() {
    let params = LedgerParams {
        epoch_blocks: 4,
        era_blocks: 8,
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let min = params.candidate_stake_min;
    let mut chain = Chain::new(12, 4, params);
    // Six more candidates with growing stakes.
    for i in 4..10 {
        chain.run(i, candidacy(i, min * (i as u128))).unwrap();
    }
    let genesis_set: Vec<AccountId> = chain
        .ledger
        .validators()
        .iter()
        .map(|v| v.account)
        .collect();
    let mut elections = Vec::new();
    while elections.len() < 3 {
        let before = chain.ledger.clone();
        let outcome = chain.block(&[]);
        for event in outcome.events {
            if let Event::ValidatorsElected { era, validators } = event {
                // Recompute the election from the state before the block.
                let seed = before
                    .epoch_randomness(before.epoch_of(chain.ledger.height() + 1))
                    .unwrap();
                let stake_max = before.candidates().map(|(_, c)| c.stake).max().unwrap();
                let mut ranked: Vec<(u128, AccountId)> = chain
                    .ledger
                    .candidates()
                    .map(|(a, c)| (credit(c, a, stake_max, &seed), *a))
                    .collect();
                ranked.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
                let mut expected: Vec<AccountId> = ranked.iter().take(4).map(|(_, a)| *a).collect();
                expected.sort();
                assert_eq!(validators, expected, "era {era}");
                assert_eq!(
                    chain
                        .ledger
                        .validators()
                        .iter()
                        .map(|v| v.account)
                        .collect::<Vec<_>>(),
                    expected
                );
                elections.push(validators);
            }
        }
        assert!(chain.ledger.height() < 100);
    }
    // Heavier stake wins seats from the genesis validators (equal reputation): stake counts.
    assert_ne!(elections[0], genesis_set, "stake moved seats");
    assert!(
        elections[0].contains(&chain.id(9)),
        "the largest stake is elected"
    );
}

#[test]
fn credit_weighs_each_part_as_documented() {
    let key = validator_key(1).public().clone();
    let account = AccountId([1; 32]);
    let seed = [0u8; 32];
    let base = cess_consensus::ledger::Candidate {
        key,
        stake: 1000 * TOKEN,
        reputation: 0,
        commits_missed_in_a_row: 0,
        slashed: false,
        endpoint: String::new(),
        unbonding: Vec::new(),
    };
    let random_part = credit(&base, &account, u128::MAX, &seed);
    // Full reputation adds 5 × 10⁶; full stake adds 3 × 10⁶.
    let full_rep = cess_consensus::ledger::Candidate {
        reputation: 1000,
        ..base.clone()
    };
    assert_eq!(
        credit(&full_rep, &account, u128::MAX, &seed) - random_part,
        5_000_000
    );
    let full_stake = credit(&base, &account, 1000 * TOKEN, &seed);
    let no_stake = credit(&base, &account, u128::MAX, &seed);
    assert_eq!(full_stake - no_stake, 3_000_000);
    assert!(random_part <= 2_000_000);
}

#[test]
fn genesis_round_trips_and_refuses_corruption() {
    let chain = Chain::new(5, 4, LedgerParams::default());
    let genesis = Genesis {
        chain_name: "g".into(),
        time_ms: 5,
        accounts: vec![(chain.id(0), 7)],
        reward_pool: 9,
        validators: vec![cess_consensus::ledger::GenesisValidator {
            account: chain.id(1),
            key: validator_key(1).public().to_bytes(),
            possession: validator_key(1).proof_of_possession().to_bytes(),
            stake: 3,
        }],
        taggers: Vec::new(),
        params: LedgerParams::default(),
    };
    let bytes = genesis.encode();
    assert_eq!(Genesis::decode(&bytes).unwrap(), genesis);
    for len in 0..bytes.len() {
        assert!(Genesis::decode(&bytes[..len]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Genesis::decode(&longer).is_err());
}

/// Two conflicting votes signed by one validator, put on the chain by anyone: the validator
/// loses a tenth of its stake (a tenth of that to the reporter, the rest to the reward pool),
/// is left out of the next election, and cannot be reported twice. Evidence that does not hold
/// (the same vote twice, a signature of another key, another height's vote, a proposal pair
/// signed by someone else) is refused and slashes no one.
#[test]
fn equivocation_evidence_slashes_the_validator_and_removes_it_at_the_next_era() {
    use arc_malachitebft_core_types::{NilOrVal, Round, VoteType};
    use cess_consensus::bft::{BlockHash, Cess, Height, Vote};
    use cess_consensus::ledger::{EQUIVOCATION_SLASH_PERMILLE, REPORTER_SHARE_PERMILLE};
    use cess_consensus::tx::{Equivocation, EquivocationKind, SignedValue};

    let params = LedgerParams {
        epoch_blocks: 4,
        era_blocks: 8,
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let min = params.candidate_stake_min;
    let mut chain = Chain::new(8, 4, params);
    // A fifth candidate, so the set stays four when the offender leaves.
    chain.run(4, candidacy(4, min)).unwrap();
    let ctx = Cess {
        chain_id: chain.ledger.chain_id(),
    };
    let offender = 2;
    let offender_id = chain.id(offender);
    let keys = chain.validator_keys.clone();
    let vote = |signer: usize, height: u64, value: Option<u8>| {
        let vote = Vote {
            height: Height(height),
            round: Round::new(1),
            value: value.map_or(NilOrVal::Nil, |b| NilOrVal::Val(BlockHash([b; 32]))),
            kind: VoteType::Precommit,
            validator: offender_id,
        };
        SignedValue {
            value: value.map(|b| [b; 32]),
            pol_round: -1,
            signature: ctx.sign_vote(&keys[signer], &vote).to_bytes(),
        }
    };
    let evidence = |first: SignedValue, second: SignedValue| Call::ReportEquivocation {
        evidence: Box::new(Equivocation {
            offender: offender_id,
            height: 1,
            round: 1,
            kind: EquivocationKind::Precommit,
            first,
            second,
        }),
    };
    let reporter = 6;
    let balance = |chain: &Chain, i: usize| chain.ledger.account(&chain.id(i)).balance;

    // Refused: the same vote twice; one signed by another validator; one of another height.
    let refused = [
        evidence(vote(offender, 1, Some(7)), vote(offender, 1, Some(7))),
        evidence(vote(offender, 1, Some(7)), vote(0, 1, Some(8))),
        evidence(vote(offender, 1, Some(7)), vote(offender, 2, None)),
    ];
    for call in refused {
        assert!(matches!(
            chain.run(reporter, call),
            Err(cess_consensus::TxError::BadEvidence(_))
        ));
    }
    assert!(!chain.ledger.candidate(&chain.id(offender)).unwrap().slashed);

    let stake = chain.ledger.candidate(&chain.id(offender)).unwrap().stake;
    let before = balance(&chain, reporter);
    let tx = chain.tx(
        reporter,
        evidence(vote(offender, 1, Some(7)), vote(offender, 1, None)),
    );
    let fee = tx.fee;
    let outcome = chain.block(&[tx]);
    assert!(outcome.receipts[0].is_ok(), "{:?}", outcome.receipts[0]);
    let slashed = stake * EQUIVOCATION_SLASH_PERMILLE / 1000;
    let candidate = chain.ledger.candidate(&chain.id(offender)).unwrap();
    assert!(candidate.slashed);
    assert_eq!(candidate.stake, stake - slashed);
    assert_eq!(
        balance(&chain, reporter),
        before - fee + slashed * REPORTER_SHARE_PERMILLE / 1000
    );
    assert!(outcome.events.iter().any(|e| matches!(
        e,
        Event::ValidatorSlashed { validator, .. } if *validator == chain.id(offender)
    )));
    // Once only.
    assert!(matches!(
        chain.run(
            reporter,
            evidence(vote(offender, 1, Some(7)), vote(offender, 1, Some(9)))
        ),
        Err(cess_consensus::TxError::AlreadySlashed)
    ));
    // Still in the set until the era ends; out of every election after it.
    assert!(
        chain
            .ledger
            .validators()
            .iter()
            .any(|v| v.account == chain.id(offender))
    );
    let era = chain.ledger.era();
    while chain.ledger.era() == era {
        chain.block(&[]);
    }
    let set: Vec<AccountId> = chain
        .ledger
        .validators()
        .iter()
        .map(|v| v.account)
        .collect();
    assert_eq!(set.len(), 4);
    assert!(!set.contains(&chain.id(offender)), "{set:?}");
    // Out of the set, it may take its stake back, but its account and key stay marked: it
    // cannot register again to be elected.
    chain
        .run(
            offender,
            Call::Unbond {
                amount: stake - slashed,
            },
        )
        .unwrap();
    assert!(chain.ledger.candidate(&offender_id).unwrap().slashed);
    assert!(matches!(
        chain.run(offender, candidacy(offender, min)),
        Err(cess_consensus::TxError::AlreadyRegistered)
    ));
}

/// A candidate says where it listens (state, so in the root `Chain` checks from scratch); a
/// non-candidate or a malformed or non-canonical address is refused.
#[test]
fn a_candidate_sets_its_endpoint_and_others_cannot() {
    use cess_consensus::TxError;
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let min = params.candidate_stake_min;
    let mut chain = Chain::new(8, 4, params);
    let endpoint = |text: &str| Call::SetValidatorEndpoint {
        endpoint: text.into(),
    };
    assert_eq!(
        chain.run(5, endpoint("/ip4/127.0.0.1/udp/9000/quic-v1")),
        Err(TxError::NotCandidate),
        "not a candidate yet"
    );
    chain.run(5, candidacy(5, min)).unwrap();
    for bad in [
        "127.0.0.1:9000",
        "/ip4/127.0.0.1/udp/x",
        "/ip4/127.0.0.001/udp/9000",
    ] {
        assert_eq!(
            chain.run(5, endpoint(bad)),
            Err(TxError::BadEndpoint),
            "{bad}"
        );
    }
    chain
        .run(5, endpoint("/ip4/127.0.0.1/udp/9000/quic-v1"))
        .unwrap();
    assert_eq!(
        chain.ledger.candidate(&chain.id(5)).unwrap().endpoint,
        "/ip4/127.0.0.1/udp/9000/quic-v1"
    );
    // A genesis validator may say too.
    chain.run(0, endpoint("/ip6/::1/udp/9001/quic-v1")).unwrap();
    assert_eq!(
        chain.ledger.candidate(&chain.id(0)).unwrap().endpoint,
        "/ip6/::1/udp/9001/quic-v1"
    );
}

/// Unbonded stake is held for two eras (longer than evidence is taken) before it is paid out:
/// an equivocator that unbonds the moment it double-signs is still slashed on what it
/// unbonded. A candidate that unbonds everything leaves the registry only once paid; at most
/// `UNBONDING_PER_CANDIDATE_MAX` unbondings wait at once.
#[test]
fn unbonded_stake_waits_out_the_evidence_window_and_is_slashed_meanwhile() {
    use arc_malachitebft_core_types::{NilOrVal, Round, VoteType};
    use cess_consensus::TxError;
    use cess_consensus::bft::{BlockHash, Cess, Height, Vote};
    use cess_consensus::ledger::{
        EQUIVOCATION_SLASH_PERMILLE, UNBONDING_ERAS, UNBONDING_PER_CANDIDATE_MAX,
    };
    use cess_consensus::tx::{Equivocation, EquivocationKind, SignedValue};

    let params = LedgerParams {
        epoch_blocks: 4,
        era_blocks: 8,
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let era_blocks = params.era_blocks;
    let min = params.candidate_stake_min;
    let mut chain = Chain::new(8, 4, params);
    let (offender, leaver, reporter) = (4, 5, 6);
    chain.run(offender, candidacy(offender, 3 * min)).unwrap();
    chain.run(leaver, candidacy(leaver, min)).unwrap();
    let balance = |chain: &Chain, i: usize| chain.ledger.account(&chain.id(i)).balance;
    // The leaver unbonds everything before any election: still registered (its key
    // reserved) until paid.
    let leaver_id = chain.id(leaver);
    chain.run(leaver, Call::Unbond { amount: min }).unwrap();
    assert!(chain.ledger.candidate(&leaver_id).is_some());
    let leaver_before = balance(&chain, leaver);

    // The offender signs two precommits for one height and round, and unbonds at once.
    let ctx = Cess {
        chain_id: chain.ledger.chain_id(),
    };
    let offender_id = chain.id(offender);
    let key = validator_key(offender);
    let signed = |value: Option<u8>| {
        let vote = Vote {
            height: Height(chain.ledger.height() + 1),
            round: Round::new(0),
            value: value.map_or(NilOrVal::Nil, |b| NilOrVal::Val(BlockHash([b; 32]))),
            kind: VoteType::Precommit,
            validator: offender_id,
        };
        SignedValue {
            value: value.map(|b| [b; 32]),
            pol_round: -1,
            signature: ctx.sign_vote(&key, &vote).to_bytes(),
        }
    };
    let evidence = Call::ReportEquivocation {
        evidence: Box::new(Equivocation {
            offender: offender_id,
            height: chain.ledger.height() + 1,
            round: 0,
            kind: EquivocationKind::Precommit,
            first: signed(Some(1)),
            second: signed(None),
        }),
    };
    let before = balance(&chain, offender);
    let tx = chain.tx(offender, Call::Unbond { amount: 2 * min });
    let fee = tx.fee;
    chain.block(&[tx]).receipts[0].clone().unwrap();
    let release_at = chain.ledger.height() + UNBONDING_ERAS * era_blocks + 1;
    let candidate = chain.ledger.candidate(&offender_id).unwrap();
    assert_eq!(candidate.stake, min);
    assert_eq!(candidate.unbonding, vec![(2 * min, release_at)]);
    assert_eq!(balance(&chain, offender), before - fee, "nothing paid yet");

    // The evidence lands a era later: a tenth of the stake and of the unbonding goes.
    for _ in 0..era_blocks {
        chain.block(&[]);
    }
    chain.run(reporter, evidence).unwrap();
    let candidate = chain.ledger.candidate(&offender_id).unwrap();
    let cut = 2 * min * EQUIVOCATION_SLASH_PERMILLE / 1000;
    assert_eq!(candidate.unbonding, vec![(2 * min - cut, release_at)]);
    assert_eq!(
        candidate.stake,
        min - min * EQUIVOCATION_SLASH_PERMILLE / 1000
    );

    // Paid out at the release height, not a block before.
    while chain.ledger.height() + 1 < release_at {
        chain.block(&[]);
    }
    let before = balance(&chain, offender);
    let outcome = chain.block(&[]);
    assert_eq!(chain.ledger.height(), release_at);
    assert_eq!(balance(&chain, offender), before + 2 * min - cut);
    assert!(outcome.events.iter().any(|e| matches!(
        e,
        Event::StakeReleased { candidate, amount } if *candidate == offender_id && *amount == 2 * min - cut
    )));
    assert!(
        chain
            .ledger
            .candidate(&offender_id)
            .unwrap()
            .unbonding
            .is_empty()
    );
    // The leaver unbonded first: paid and gone already, its key free again.
    assert!(chain.ledger.candidate(&leaver_id).is_none());
    assert_eq!(balance(&chain, leaver), leaver_before + min);

    // At most so many unbondings wait at once.
    let many = 7;
    chain.run(many, candidacy(many, 2 * min)).unwrap();
    for _ in 0..UNBONDING_PER_CANDIDATE_MAX {
        chain.run(many, Call::Unbond { amount: 1 }).unwrap();
    }
    assert_eq!(
        chain.run(many, Call::Unbond { amount: 1 }),
        Err(TxError::TooManyUnbondings)
    );
}
