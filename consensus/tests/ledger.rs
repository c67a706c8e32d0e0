// Long file: one test per ledger rule, all on one harness; split by rule family when it grows
// further.
//! The ledger's rules, one by one, on real keys, real tags and real proofs.

mod common;

use cess_consensus::ledger::{Event, FileState, MinerState, TOKEN};
use cess_consensus::tx::{SegmentDecl, TxTerms};
use cess_consensus::{Call, FragmentId, TxError};
use cess_proofs::{CpuBackend, Proof};
use common::{Chain, Storage, test_params};

const FRAGMENT: usize = 2048;

/// Edits a storage order's segments and size.
type OrderEdit = dyn Fn(&mut Vec<SegmentDecl>, &mut u64);

/// 13 miners (accounts 4..17) with 1 MiB each, a registered tagger (account 3), and 1 GiB
/// of rented space for accounts 0, 1 and 2.
fn storage_chain() -> (Chain, Storage) {
    storage_chain_with(test_params())
}

/// Test parameters without audit rounds within a test's length: a loss may be reported only
/// while the fragment is in no open audit of its miner, and the test parameters audit every
/// miner holding data all the time.
fn no_audits() -> cess_consensus::LedgerParams {
    cess_consensus::LedgerParams {
        audit_period_blocks: 100_000,
        ..test_params()
    }
}

fn storage_chain_with(params: cess_consensus::LedgerParams) -> (Chain, Storage) {
    let mut chain = Chain::new(20, 4, params);
    for i in 4..17 {
        chain.register_miner(i, 1 << 20);
    }
    let storage = Storage::new(9);
    chain.register_tagger(3, storage.tagger.public().encode());
    for owner in 0..3 {
        chain.rent(owner, 1, 100_000);
    }
    (chain, storage)
}

#[test]
fn a_file_becomes_active_when_every_column_is_reported_and_is_freed_by_its_last_owner() {
    let (mut chain, mut storage) = storage_chain();
    let (file_id, order) = storage.order(1, 2, FRAGMENT);
    chain.run(0, order.clone()).unwrap();
    let holders = chain.holders(&file_id);
    let m4 = chain.id(holders[0]);
    assert_eq!(
        chain.ledger.miner(&m4).unwrap().locked_bytes,
        2 * FRAGMENT as u64
    );
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Pending
    );

    for column in 0..12u16 {
        // Only the column's miner can report it, and only once.
        let wrong = holders[(column as usize + 1) % 12];
        assert_eq!(
            chain.run(wrong, Call::ReportStored { file_id, column }),
            Err(TxError::NothingToReport)
        );
        let outcome = {
            let tx = chain.tx(
                holders[column as usize],
                Call::ReportStored { file_id, column },
            );
            chain.block(&[tx])
        };
        assert_eq!(outcome.receipts, vec![Ok(())]);
        let active = outcome.events.contains(&Event::FileActive { file_id });
        assert_eq!(
            active,
            column == 11,
            "active exactly when the last column arrives"
        );
    }
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Active
    );
    let miner = chain.ledger.miner(&m4).unwrap();
    assert_eq!(
        (miner.locked_bytes, miner.active_bytes),
        (0, 2 * FRAGMENT as u64)
    );

    // Deduplication: a second owner declares the same file; nothing more is stored.
    chain.run(1, order.clone()).unwrap();
    assert_eq!(chain.run(1, order), Err(TxError::AlreadyOwner));
    assert_eq!(chain.ledger.file(&file_id).unwrap().owners.len(), 2);
    assert_eq!(
        chain.ledger.miner(&m4).unwrap().active_bytes,
        2 * FRAGMENT as u64
    );

    assert_eq!(
        chain.run(2, Call::DeleteFile { file_id }),
        Err(TxError::NotOwner)
    );
    chain.run(0, Call::DeleteFile { file_id }).unwrap();
    assert!(chain.ledger.file(&file_id).is_some(), "one owner left");
    chain.run(1, Call::DeleteFile { file_id }).unwrap();
    assert!(chain.ledger.file(&file_id).is_none());
    let miner = chain.ledger.miner(&m4).unwrap();
    assert_eq!((miner.locked_bytes, miner.active_bytes), (0, 0));
    assert_eq!(miner.held_fragments(), 0);
}

#[test]
fn refused_calls_change_only_the_fee_and_the_nonce() {
    let (mut chain, mut storage) = storage_chain();
    let (file_id, good_order) = storage.order(2, 1, FRAGMENT);
    let Call::DeclareFile {
        file_name,
        size_bytes,
        fragment_bytes,
        tagger,
        segments,
        ..
    } = good_order.clone()
    else {
        unreachable!()
    };
    let with = |edit: &OrderEdit| {
        let mut s = segments.clone();
        let mut size = size_bytes;
        edit(&mut s, &mut size);
        Call::DeclareFile {
            file_id,
            file_name: file_name.clone(),
            bucket: String::new(),
            size_bytes: size,
            fragment_bytes,
            tagger,
            segments: s,
            meta: Vec::new(),
        }
    };
    let huge = chain.id(17);
    let cases: Vec<(usize, Call, &str)> = vec![
        (
            0,
            Call::Transfer {
                to: huge,
                amount: 0,
            },
            "zero",
        ),
        (
            0,
            Call::Transfer {
                to: huge,
                amount: u128::MAX,
            },
            "overdraft",
        ),
        (
            0,
            with(&|s, _| s[0].fragments[1] = s[0].fragments[0]),
            "fragment twice",
        ),
        (
            0,
            with(&|s, _| {
                s[0].fragments.pop();
            }),
            "short segment",
        ),
        (
            0,
            with(&|s, size| {
                *size = 0;
                let mut more = s[0].clone();
                for f in &mut more.fragments {
                    f.0[0] ^= 0x5A;
                }
                s.push(more);
            }),
            "empty file of two segments",
        ),
        (
            0,
            with(&|_, size| *size = u64::MAX),
            "file larger than its segments",
        ),
        (0, with(&|s, _| s.clear()), "no segments"),
        (5, good_order.clone(), "no lease"),
        (
            0,
            bare_order(0xB1, 2, 64 << 20, tagger),
            "an order larger than the owner's space",
        ),
        (
            4,
            Call::RegisterMiner {
                peer_id: chain.id(4).peer_id().unwrap().to_bytes(),
                endpoint: "/ip4/1.2.3.4/udp/1/quic-v1".into(),
                declared_bytes: 1,
                collateral: 100 * TOKEN,
            },
            "a second registration",
        ),
        (
            4,
            Call::UpdateMiner {
                endpoint: "/ip4/1.2.3.4/tcp/notaport".into(),
                declared_bytes: 1 << 20,
            },
            "an endpoint that does not parse",
        ),
        (
            0,
            Call::RentSpace {
                add_gib: 0,
                add_blocks: 0,
            },
            "empty rent",
        ),
        (
            5,
            Call::RentSpace {
                add_gib: 1,
                add_blocks: 0,
            },
            "a new lease of no blocks",
        ),
        (
            5,
            Call::RentSpace {
                add_gib: u32::MAX,
                add_blocks: u64::MAX,
            },
            "a lease that overflows",
        ),
        (
            5,
            Call::RentSpace {
                add_gib: u32::MAX,
                add_blocks: 1_000_000_000,
            },
            "a lease the signer cannot pay",
        ),
        (1, Call::ReportStored { file_id, column: 0 }, "unknown file"),
        (1, Call::DeleteFile { file_id }, "unknown file"),
        (
            4,
            Call::SubmitProof {
                round: 1,
                tagger,
                proof: vec![1, 2, 3],
            },
            "no audit",
        ),
        (
            4,
            Call::ReportLost {
                fragment_id: FragmentId([1; 32]),
            },
            "unknown fragment",
        ),
        (
            4,
            Call::ClaimRestoral {
                fragment_id: FragmentId([1; 32]),
            },
            "no order",
        ),
        (4, Call::ExitMiner, "exit ok is not here"),
        (18, Call::ExitMiner, "not a miner"),
        (
            18,
            Call::RegisterMiner {
                peer_id: chain.id(17).peer_id().unwrap().to_bytes(),
                endpoint: "/ip4/1.2.3.4/udp/1/quic-v1".into(),
                declared_bytes: 1,
                collateral: 100 * TOKEN,
            },
            "someone else's peer id",
        ),
        (
            18,
            Call::RegisterMiner {
                peer_id: chain.id(18).peer_id().unwrap().to_bytes(),
                endpoint: "not a multiaddr".into(),
                declared_bytes: 1,
                collateral: 100 * TOKEN,
            },
            "bad endpoint",
        ),
        (
            18,
            Call::RegisterMiner {
                peer_id: chain.id(18).peer_id().unwrap().to_bytes(),
                endpoint: "/ip4/1.2.3.4/udp/1/quic-v1".into(),
                declared_bytes: 1,
                collateral: TOKEN,
            },
            "low collateral",
        ),
        (
            18,
            chain.tagger_call(18, vec![0; 100], &[0, 1, 2, 3]),
            "bad tagger key",
        ),
        (
            18,
            Call::RegisterCandidate {
                key: common::validator_key(50).public().to_bytes(),
                possession: common::validator_key(51).proof_of_possession().to_bytes(),
                stake: 2000 * TOKEN,
            },
            "possession by another key",
        ),
        (
            18,
            Call::RegisterCandidate {
                key: common::validator_key(50).public().to_bytes(),
                possession: common::validator_key(50).proof_of_possession().to_bytes(),
                stake: TOKEN,
            },
            "stake below minimum",
        ),
        (18, Call::Unbond { amount: 1 }, "not a candidate"),
        (0, Call::Unbond { amount: 1 }, "elected validator"),
    ];
    for (who, call, what) in cases {
        if what == "exit ok is not here" {
            continue;
        }
        let name = call.name();
        let before = chain.ledger.clone();
        let terms = TxTerms {
            nonce: chain.ledger.account(&chain.id(who)).nonce,
            fee: TOKEN,
            valid_until: chain.ledger.height() + 1,
        };
        let tx = chain.tx_with(who, terms, call);
        let outcome = chain.block(std::slice::from_ref(&tx));
        let refusal = outcome.receipts[0].clone().unwrap_err();
        assert!(refusal.charged(), "{what} ({name}): {refusal}");
        // The same block with a transfer of 1 to the signer itself on the same terms (which
        // changes only the fee and the nonce) gives the same state.
        let mut replay = before;
        let info = cess_consensus::BlockInfo {
            height: chain.ledger.height(),
            time_ms: chain.ledger.height() * 1000,
            vrf_output: common::sha(&chain.ledger.height().to_le_bytes()),
            last_commit: replay.validators().iter().map(|v| v.account).collect(),
        };
        let noop = chain.tx_with(
            who,
            terms,
            Call::Transfer {
                to: chain.id(who),
                amount: 1,
            },
        );
        let replayed = replay.apply_block(&info, &[noop], &CpuBackend);
        assert_eq!(replayed.receipts[0], Ok(()));
        assert_eq!(
            replayed.root, outcome.root,
            "{what} ({name}) changed more than its fee and nonce"
        );
    }

    // Signature and nonce.
    let mut tx = chain.tx(
        0,
        Call::Transfer {
            to: huge,
            amount: 1,
        },
    );
    tx.signature[0] ^= 1;
    let before = chain.ledger.clone();
    let outcome = chain.block(&[tx]);
    assert_eq!(outcome.receipts[0], Err(TxError::BadSignature));
    assert_eq!(outcome.root, empty_block_root(&chain, &before));
    let tx = chain.tx(
        0,
        Call::Transfer {
            to: huge,
            amount: 1,
        },
    );
    let tx = chain.tx_with(
        0,
        TxTerms {
            nonce: tx.nonce + 1,
            ..tx.terms()
        },
        tx.call,
    );
    assert!(matches!(
        chain.block(&[tx]).receipts[0],
        Err(TxError::BadNonce { .. })
    ));
    // A replayed transaction is refused by its nonce.
    let tx = chain.tx(
        0,
        Call::Transfer {
            to: huge,
            amount: 1,
        },
    );
    assert_eq!(chain.block(std::slice::from_ref(&tx)).receipts[0], Ok(()));
    assert!(matches!(
        chain.block(&[tx]).receipts[0],
        Err(TxError::BadNonce { .. })
    ));
}

#[test]
fn space_is_never_overcommitted() {
    let mut chain = Chain::new(20, 4, test_params());
    for i in 4..16 {
        chain.register_miner(i, 3 * FRAGMENT as u64);
    }
    let mut storage = Storage::new(3);
    chain.register_tagger(3, storage.tagger.public().encode());
    chain.rent(0, 1, 100_000);
    let (_, two) = storage.order(1, 2, FRAGMENT);
    chain.run(0, two).unwrap();
    // Every miner has one fragment's room left: no 12 of them can take two.
    let (_, again) = storage.order(2, 2, FRAGMENT);
    assert_eq!(
        chain.run(0, again),
        Err(TxError::NotEnoughMiners {
            needed: 12,
            able: 0
        })
    );
    let (_, one) = storage.order(3, 1, FRAGMENT);
    chain.run(0, one).unwrap();
    let m = chain.ledger.miner(&chain.id(4)).unwrap();
    assert_eq!(m.idle_bytes(), 0);
    // Declared space cannot shrink below what is in use.
    assert!(matches!(
        chain.run(
            4,
            Call::UpdateMiner {
                endpoint: "/ip4/127.0.0.1/udp/9/quic-v1".into(),
                declared_bytes: FRAGMENT as u64
            }
        ),
        Err(TxError::DeclaredBelowUsed { .. })
    ));
}

/// A declaration with fragment ids that were never tagged: what the ledger checks before
/// any miner sees a byte.
fn bare_order(seed: u8, segments: usize, fragment_bytes: u64, tagger: [u8; 32]) -> Call {
    Call::DeclareFile {
        file_id: [seed; 32],
        file_name: format!("bare-{seed}"),
        bucket: String::new(),
        size_bytes: fragment_bytes,
        fragment_bytes,
        tagger,
        segments: (0..segments)
            .map(|s| SegmentDecl {
                segment_id: common::sha(&[seed, s as u8, 0xAA]),
                fragments: (0..12)
                    .map(|c| FragmentId(common::sha(&[seed, s as u8, c])))
                    .collect(),
            })
            .collect(),
        meta: Vec::new(),
    }
}

/// Scenario: the uploader named the miners of its order, so it could put every column of a
/// file on miners it controls (or on one it wants to burden). The ledger now draws the
/// columns itself, with its randomness, from the miners able to take them; an order with
/// more columns than able miners is refused and changes nothing.
#[test]
fn the_ledger_places_every_order_on_distinct_miners_it_draws() {
    let mut chain = Chain::new(40, 4, test_params());
    for i in 4..34 {
        chain.register_miner(i, 1 << 20);
    }
    let mut storage = Storage::new(5);
    chain.register_tagger(3, storage.tagger.public().encode());
    chain.rent(0, 1, 100_000);
    let mut placements = std::collections::BTreeSet::new();
    let mut times_chosen = [0usize; 40];
    for seed in 0..12 {
        let (file_id, order) = storage.order(100 + seed, 1, 512);
        chain.run(0, order).unwrap();
        let holders = chain.holders(&file_id);
        let distinct: std::collections::BTreeSet<usize> = holders.iter().copied().collect();
        assert_eq!(distinct.len(), 12, "one column per distinct miner");
        assert!(holders.iter().all(|i| (4..34).contains(i)));
        for &i in &holders {
            times_chosen[i] += 1;
        }
        placements.insert(distinct);
    }
    assert!(
        placements.len() >= 10,
        "30 miners, 12 columns: the draws differ from order to order ({} distinct)",
        placements.len()
    );
    assert!(
        times_chosen[4..34].iter().filter(|&&n| n > 0).count() >= 25,
        "the draws reach most of the registry: {times_chosen:?}"
    );

    // Fewer able miners than columns: refused with the count, nothing placed.
    let mut small = Chain::new(20, 4, test_params());
    for i in 4..15 {
        small.register_miner(i, 1 << 20);
    }
    let mut storage = Storage::new(6);
    small.register_tagger(3, storage.tagger.public().encode());
    small.rent(0, 1, 100_000);
    let (file_id, order) = storage.order(1, 1, 512);
    assert_eq!(
        small.run(0, order.clone()),
        Err(TxError::NotEnoughMiners {
            needed: 12,
            able: 11
        })
    );
    assert!(small.ledger.file(&file_id).is_none());
    assert_eq!(small.ledger.lease(&small.id(0)).unwrap().used_bytes, 0);
    small.register_miner(15, 1 << 20);
    small.run(0, order).unwrap();
}

/// Scenario: orders were free, so anyone could lock every miner's space. An order now uses
/// its owner's rented space (every fragment it stores), paid up front for every GiB-block;
/// an order larger than the lease, or after the lease ended, is refused; the owner's files
/// are released after the lease's grace blocks and the space returns to the miners.
#[test]
fn orders_use_rented_space_and_the_files_of_an_ended_lease_are_released() {
    let params = cess_consensus::LedgerParams {
        lease_grace_blocks: 6,
        lease_releases_per_block_max: 1,
        ..test_params()
    };
    let mut chain = Chain::new(20, 4, params.clone());
    for i in 4..16 {
        chain.register_miner(i, 256 << 20);
    }
    let mut storage = Storage::new(7);
    chain.register_tagger(3, storage.tagger.public().encode());
    let tagger = storage.tagger_id();
    let (_, order) = storage.order(1, 1, FRAGMENT);
    assert_eq!(chain.run(0, order.clone()), Err(TxError::NoLease));

    // The price: every GiB-block added, the grace blocks included for a new lease.
    let owner = chain.id(0);
    let balance = chain.ledger.account(&owner).balance;
    let fees = chain.fees_paid(0);
    chain.rent(0, 1, 20);
    let price = (20 + 6) * params.rent_per_gib_block;
    assert_eq!(
        chain.ledger.account(&owner).balance,
        balance - price - (chain.fees_paid(0) - fees)
    );
    let lease = *chain.ledger.lease(&owner).unwrap();
    assert_eq!((lease.gib, lease.used_bytes), (1, 0));
    // Adding a GiB pays for the blocks left (and the grace); adding blocks pays for every GiB.
    let balance = chain.ledger.account(&owner).balance;
    let fees = chain.fees_paid(0);
    chain.rent(0, 1, 10);
    let left = lease.until + 6 - chain.ledger.height();
    let price = (u128::from(left) + 2 * 10) * params.rent_per_gib_block;
    assert_eq!(
        chain.ledger.account(&owner).balance,
        balance - price - (chain.fees_paid(0) - fees)
    );
    let extended = *chain.ledger.lease(&owner).unwrap();
    assert_eq!(
        (extended.gib, extended.until),
        (2, lease.until + 10),
        "more GiB and a later end"
    );

    // 2 GiB: an order of 2 segments × 12 × 64 MiB = 1.5 GiB fits, another does not.
    let big = bare_order(1, 2, 64 << 20, tagger);
    chain.run(0, big).unwrap();
    assert_eq!(
        chain.ledger.lease(&owner).unwrap().used_bytes,
        3 << 29,
        "every fragment"
    );
    assert_eq!(
        chain.run(0, bare_order(2, 2, 64 << 20, tagger)),
        Err(TxError::SpaceExceeded {
            needed: 3 << 29,
            free: 1 << 29
        })
    );
    // Deleting returns the space.
    chain.run(0, Call::DeleteFile { file_id: [1; 32] }).unwrap();
    assert_eq!(chain.ledger.lease(&owner).unwrap().used_bytes, 0);

    // Two stored files, then the lease ends: no new orders; after the grace blocks the
    // files are released, one per block, and the lease is gone.
    let (first, order) = storage.order(2, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&first);
    let (second, order) = storage.order(3, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    let until = chain.ledger.lease(&owner).unwrap().until;
    while chain.ledger.height() < until {
        chain.block(&[]);
    }
    let (_, late) = storage.order(4, 1, FRAGMENT);
    assert_eq!(chain.run(0, late), Err(TxError::LeaseEnded { until }));
    let mut released = Vec::new();
    let mut ended = false;
    while !ended {
        let outcome = chain.block(&[]);
        for event in outcome.events {
            match event {
                Event::LeaseReleasedFile { owner: o, file_id } => {
                    assert_eq!(o, owner);
                    assert!(
                        chain.ledger.height() > until + 6,
                        "not before the grace ends"
                    );
                    released.push((chain.ledger.height(), file_id));
                }
                Event::LeaseEnded { owner: o } => ended = o == owner,
                _ => {}
            }
        }
        assert!(chain.ledger.height() < until + 20, "the lease never ended");
    }
    assert_eq!(released.len(), 2);
    assert_ne!(released[0].0, released[1].0, "one release per block");
    assert!(chain.ledger.file(&first).is_none() && chain.ledger.file(&second).is_none());
    assert!(chain.ledger.lease(&owner).is_none());
    for i in 4..16 {
        let miner = chain.ledger.miner(&chain.id(i)).unwrap();
        assert_eq!((miner.locked_bytes, miner.active_bytes), (0, 0));
    }
}

/// Scenario (issue 20): every valid proof paid 1 token plus 1 token per GiB from the pool,
/// so a miner that uploaded to itself was paid for its own data at everyone else's expense.
/// Now a valid proof earns its least fee back and the rent its miner accrued, which owners
/// paid before: an owner that runs every miner of its file loses money, round after round.
#[test]
fn self_dealing_earns_nothing() {
    // Account 0 uploads and runs all 13 miners (accounts 4..17).
    let mut chain = Chain::new(20, 4, test_params());
    for i in 4..17 {
        chain.register_miner(i, 1 << 20);
    }
    let mut storage = Storage::new(9);
    chain.register_tagger(3, storage.tagger.public().encode());
    let dealer: Vec<usize> = std::iter::once(0).chain(4..17).collect();
    let wealth = |chain: &Chain| -> u128 {
        dealer
            .iter()
            .map(|&i| {
                let id = chain.id(i);
                chain.ledger.account(&id).balance
                    + chain.ledger.miner(&id).map_or(0, |m| m.collateral)
            })
            .sum()
    };
    let start = wealth(&chain);
    // The least lease that covers the rounds.
    chain.rent(0, 1, 40);
    let file_id = store_file(&mut chain, &mut storage, 81, 2);
    let mut proofs = 0;
    for _ in 0..4 {
        let audits = next_audits(&mut chain);
        let txs: Vec<_> = audits
            .iter()
            .map(|(round, miner, tagger)| {
                let challenge = chain.ledger.challenge(*round, miner, tagger).unwrap();
                let (proof, _) = cess_proofs::prove(
                    storage.tagger.public(),
                    &challenge,
                    &mut storage.source.clone(),
                    &CpuBackend,
                )
                .unwrap();
                chain.tx(
                    chain.index_of(miner),
                    Call::SubmitProof {
                        round: *round,
                        tagger: *tagger,
                        proof: proof.encode(),
                    },
                )
            })
            .collect();
        let outcome = chain.block(&txs);
        proofs += outcome
            .events
            .iter()
            .filter(|e| matches!(e, Event::ProofValid { .. }))
            .count();
    }
    assert_eq!(proofs, 48, "every audit answered validly");
    assert!(chain.ledger.file(&file_id).is_some());
    let end = wealth(&chain);
    assert!(
        end < start,
        "self-dealing must not pay: {start} before, {end} after"
    );
}

/// Audits: valid proofs are rewarded, invalid ones and missing ones penalised.
#[test]
fn audits_reward_valid_proofs_and_penalise_invalid_and_missing_ones() {
    let (mut chain, mut storage) = storage_chain();
    let (file_id, order) = storage.order(7, 3, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&file_id);
    let holders = chain.holders(&file_id);
    // Run to the next audit round.
    let mut opened = Vec::new();
    while opened.is_empty() {
        let outcome = chain.block(&[]);
        opened = outcome
            .events
            .iter()
            .filter_map(|e| match e {
                Event::AuditOpened {
                    round,
                    miner,
                    tagger,
                    deadline,
                } => Some((*round, *miner, *tagger, *deadline)),
                _ => None,
            })
            .collect();
    }
    assert_eq!(
        opened.len(),
        12,
        "every miner holding data is challenged (permille 1000)"
    );
    let _ = holders;

    // Miners 0..10 answer correctly, miner 10 sends a proof for the wrong data, miner 11 is
    // silent. All proofs go in one block (one batch verification).
    let mut txs = Vec::new();
    let mut wrong = None;
    let mut silent = None;
    for (k, (round, miner, tagger, _)) in opened.iter().enumerate() {
        let challenge = chain.ledger.challenge(*round, miner, tagger).unwrap();
        let i = chain.index_of(miner);
        if k == 11 {
            silent = Some(*miner);
            continue;
        }
        let mut source = storage.source.clone();
        if k == 10 {
            wrong = Some(*miner);
            for data in source.data.values_mut() {
                data[0] ^= 1;
            }
        }
        let (proof, _) = cess_proofs::prove(
            storage.tagger.public(),
            &challenge,
            &mut source,
            &CpuBackend,
        )
        .unwrap();
        txs.push(chain.tx(
            i,
            Call::SubmitProof {
                round: *round,
                tagger: *tagger,
                proof: proof.encode(),
            },
        ));
    }
    let wrong = wrong.unwrap();
    let silent = silent.unwrap();
    // What each valid proof earns: its least fee back and the rent its miner accrued for the
    // bytes it held, up to this block.
    let p = chain.ledger.params().clone();
    let height = chain.ledger.height() + 1;
    let expected: std::collections::BTreeMap<_, u128> = txs
        .iter()
        .map(|tx| {
            let m = chain.ledger.miner(&tx.signer).unwrap();
            let rent = u128::from(m.active_bytes)
                * p.rent_per_gib_block
                * u128::from(height - m.rent_since)
                / u128::from(cess_consensus::ledger::GIB);
            assert!(rent > 0, "a miner holding data earns rent");
            (tx.signer, p.min_fee(tx) + m.rent_accrued + rent)
        })
        .collect();
    let collateral_wrong = chain.ledger.miner(&wrong).unwrap().collateral;
    let outcome = chain.block(&txs);
    assert!(
        outcome.receipts.iter().all(|r| r.is_ok()),
        "{:?}",
        outcome.receipts
    );
    let mut valid = 0;
    for event in &outcome.events {
        if let Event::ProofValid { miner, reward, .. } = event {
            valid += 1;
            assert_eq!(*reward, expected[miner], "least fee back and rent");
        }
    }
    assert_eq!(valid, 10);
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::ProofInvalid { miner, .. } if *miner == wrong))
    );
    let p = test_params();
    assert_eq!(
        chain.ledger.miner(&wrong).unwrap().collateral,
        collateral_wrong - p.penalty_invalid
    );
    // A second answer to a closed audit is refused.
    let (round, miner, tagger, deadline) = opened[0];
    let tx = chain.tx(
        chain.index_of(&miner),
        Call::SubmitProof {
            round,
            tagger,
            proof: vec![0; 10],
        },
    );
    assert_eq!(chain.block(&[tx]).receipts[0], Err(TxError::NoAudit));

    // The silent miner is penalised when its deadline passes, not before.
    let collateral_silent = chain.ledger.miner(&silent).unwrap().collateral;
    let mut missed = false;
    while chain.ledger.height() < deadline {
        let outcome = chain.block(&[]);
        missed |= outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::ProofMissing { miner, .. } if *miner == silent));
    }
    assert!(missed);
    assert_eq!(
        chain.ledger.miner(&silent).unwrap().collateral,
        collateral_silent - p.penalty_missing
    );
    // A proof that does not decode is refused (the audit stays open for a real one).
    assert!(Proof::decode(&[0; 10]).is_err());
}

#[test]
fn restoral_orders_move_a_lost_fragment_to_another_miner() {
    let (mut chain, mut storage) = storage_chain_with(no_audits());
    let (file_id, order) = storage.order(5, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&file_id);
    let holders = chain.holders(&file_id);
    let fragment_id = chain.ledger.file(&file_id).unwrap().segments[0].fragments[3].id;
    // 13 miners, 12 columns: one holds nothing of the file.
    let (other, lost_by) = (holders[1], holders[3]);
    let spare = (4..17).find(|i| !holders.contains(i)).unwrap();
    assert_eq!(
        chain.run(other, Call::ReportLost { fragment_id }),
        Err(TxError::NotHolder)
    );
    chain
        .run(lost_by, Call::ReportLost { fragment_id })
        .unwrap();
    assert!(chain.ledger.restoral(&fragment_id).is_some());
    assert_eq!(
        chain.ledger.miner(&chain.id(lost_by)).unwrap().active_bytes,
        0
    );

    // A miner already holding a fragment of the segment cannot take it.
    assert_eq!(
        chain.run(other, Call::ClaimRestoral { fragment_id }),
        Err(TxError::HoldsSegment)
    );
    chain
        .run(spare, Call::ClaimRestoral { fragment_id })
        .unwrap();
    assert!(matches!(
        chain.run(lost_by, Call::ClaimRestoral { fragment_id }),
        Err(TxError::AlreadyClaimed { .. })
    ));
    // The claim expires if not completed in time, and another miner can take it.
    let mut expired = false;
    for _ in 0..test_params().restoral_claim_blocks {
        expired |= chain
            .block(&[])
            .events
            .iter()
            .any(|e| matches!(e, Event::RestoralClaimExpired { .. }));
    }
    assert!(expired);
    assert_eq!(
        chain.ledger.miner(&chain.id(spare)).unwrap().locked_bytes,
        0
    );
    assert_eq!(
        chain.run(spare, Call::CompleteRestoral { fragment_id }),
        Err(TxError::NotClaimer)
    );
    chain
        .run(spare, Call::ClaimRestoral { fragment_id })
        .unwrap();
    chain
        .run(spare, Call::CompleteRestoral { fragment_id })
        .unwrap();
    assert!(chain.ledger.restoral(&fragment_id).is_none());
    let fragment = &chain.ledger.file(&file_id).unwrap().segments[0].fragments[3];
    assert_eq!(
        (fragment.miner, fragment.stored),
        (Some(chain.id(spare)), true)
    );
    assert_eq!(
        chain.ledger.miner(&chain.id(spare)).unwrap().active_bytes,
        FRAGMENT as u64
    );
}

#[test]
fn an_exiting_miner_hands_its_fragments_to_restoral_and_withdraws_after_cooling_off() {
    let (mut chain, mut storage) = storage_chain();
    let (file_id, order) = storage.order(6, 2, FRAGMENT);
    chain.run(0, order).unwrap();
    let mine = chain.holder(&file_id, 0);
    chain
        .run(mine, Call::ReportStored { file_id, column: 0 })
        .unwrap();
    let me = chain.id(mine);
    let balance = chain.ledger.account(&me).balance;
    let fees = chain.fees_paid(mine);
    assert_eq!(
        chain.run(mine, Call::WithdrawMiner),
        Err(TxError::MinerNotExiting)
    );
    chain.run(mine, Call::ExitMiner).unwrap();
    assert!(matches!(
        chain.ledger.miner(&me).unwrap().state,
        MinerState::Exiting { .. }
    ));
    assert_eq!(chain.ledger.restorals().count(), 2, "both of its fragments");
    // No new data on an exiting miner: the 12 others take the next order.
    let (next, order) = storage.order(8, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    assert!(!chain.holders(&next).contains(&mine));
    assert!(matches!(
        chain.run(mine, Call::WithdrawMiner),
        Err(TxError::CoolingOff { .. })
    ));
    for _ in 0..test_params().miner_cooling_off_blocks {
        chain.block(&[]);
    }
    // Its collateral returns, less what missed audits took meanwhile and `penalty_lost` for
    // each of its fragments not rebuilt yet: one of the two was (its data moved first).
    let spare = (4..17)
        .find(|i| {
            *i != mine
                && chain.ledger.file(&file_id).unwrap().segments[0]
                    .fragments
                    .iter()
                    .all(|f| f.miner != Some(chain.id(*i)))
        })
        .unwrap();
    let moved = chain.ledger.file(&file_id).unwrap().segments[0].fragments[0].id;
    chain
        .run(spare, Call::ClaimRestoral { fragment_id: moved })
        .unwrap();
    chain
        .run(spare, Call::CompleteRestoral { fragment_id: moved })
        .unwrap();
    let collateral = chain.ledger.miner(&me).unwrap().collateral;
    chain.run(mine, Call::WithdrawMiner).unwrap();
    assert!(chain.ledger.miner(&me).is_none());
    assert_eq!(
        chain.ledger.account(&me).balance,
        balance + collateral - test_params().penalty_lost - (chain.fees_paid(mine) - fees)
    );
}

/// The ledger after one block without transactions from `before` (what a block of
/// transactions that were not included must equal).
fn empty_block_root(chain: &Chain, before: &cess_consensus::Ledger) -> [u8; 32] {
    let mut without = before.clone();
    let info = cess_consensus::BlockInfo {
        height: chain.ledger.height(),
        time_ms: chain.ledger.height() * 1000,
        vrf_output: common::sha(&chain.ledger.height().to_le_bytes()),
        last_commit: without.validators().iter().map(|v| v.account).collect(),
    };
    without.apply_block(&info, &[], &CpuBackend).root
}

/// Scenario: a late proof (its audit closed) was refused and kept its nonce, so every later
/// transaction of that miner failed for good and it was slashed at every audit. Now the
/// refused call pays its fee, the nonce moves, and the miner's next transaction goes in.
#[test]
fn a_refused_proof_pays_its_fee_and_never_blocks_the_miners_next_transaction() {
    let (mut chain, _) = storage_chain();
    let miner = chain.id(4);
    let before = chain.ledger.account(&miner);
    let pool_before = chain.ledger.reward_pool();
    let late = chain.tx(
        4,
        Call::SubmitProof {
            round: 1,
            tagger: [3; 32],
            proof: vec![0; 1000],
        },
    );
    let fee = late.fee;
    assert_eq!(fee, chain.ledger.params().min_fee(&late));
    assert!(
        fee > chain.ledger.params().fee_proof,
        "a proof pays for its verification"
    );
    let outcome = chain.block(&[late]);
    assert_eq!(outcome.receipts[0], Err(TxError::NoAudit));
    let after = chain.ledger.account(&miner);
    assert_eq!(after.nonce, before.nonce + 1, "the nonce moved");
    assert_eq!(after.balance, before.balance - fee, "the fee was paid");
    assert_eq!(
        chain.ledger.reward_pool(),
        pool_before + fee,
        "into the pool"
    );
    let next = chain.tx(
        4,
        Call::Transfer {
            to: chain.id(0),
            amount: TOKEN,
        },
    );
    assert_eq!(chain.block(&[next]).receipts[0], Ok(()));
}

/// Scenario: a transfer refused for want of money executed weeks later, once the signer's
/// balance allowed it. Now the refusal uses up its nonce: it can never execute.
#[test]
fn a_refused_transfer_never_executes_later() {
    let mut chain = Chain::new(6, 4, test_params());
    let rich = chain.ledger.account(&chain.id(4)).balance;
    let tx = chain.tx(
        4,
        Call::Transfer {
            to: chain.id(5),
            amount: rich + TOKEN,
        },
    );
    assert!(matches!(
        chain.block(std::slice::from_ref(&tx)).receipts[0],
        Err(TxError::InsufficientBalance { .. })
    ));
    chain
        .run(
            0,
            Call::Transfer {
                to: chain.id(4),
                amount: 10 * TOKEN,
            },
        )
        .unwrap();
    let balance = chain.ledger.account(&chain.id(5)).balance;
    assert!(matches!(
        chain.block(&[tx]).receipts[0],
        Err(TxError::BadNonce { .. })
    ));
    assert_eq!(chain.ledger.account(&chain.id(5)).balance, balance);
}

/// What cannot be included (a fee below the least, a validity passed, a fee the signer
/// cannot pay, a bad signature or nonce) changes nothing: no fee, no nonce.
#[test]
fn transactions_that_cannot_be_included_change_nothing() {
    let mut chain = Chain::new(6, 4, test_params());
    // Account 5 is left with less than any fee.
    let keep = chain.ledger.params().fee_base / 2;
    let all = chain.ledger.account(&chain.id(5)).balance;
    let drain = chain.tx(
        5,
        Call::Transfer {
            to: chain.id(0),
            amount: 1,
        },
    );
    let amount = all - drain.fee - keep;
    chain
        .run(
            5,
            Call::Transfer {
                to: chain.id(0),
                amount,
            },
        )
        .unwrap();
    assert_eq!(chain.ledger.account(&chain.id(5)).balance, keep);
    let call = || Call::Transfer {
        to: chain.id(1),
        amount: 1,
    };
    let good = chain.tx(4, call());
    let cases = vec![
        (
            chain.tx_with(
                4,
                TxTerms {
                    fee: good.fee - 1,
                    ..good.terms()
                },
                call(),
            ),
            "fee below the least",
        ),
        (
            chain.tx_with(
                4,
                TxTerms {
                    valid_until: chain.ledger.height(),
                    ..good.terms()
                },
                call(),
            ),
            "validity passed",
        ),
        (chain.tx(5, call()), "cannot pay the fee"),
        (
            chain.tx_with(
                4,
                TxTerms {
                    nonce: good.nonce + 1,
                    ..good.terms()
                },
                call(),
            ),
            "nonce ahead",
        ),
    ];
    for (tx, what) in cases {
        let before = chain.ledger.clone();
        let outcome = chain.block(&[tx]);
        let refusal = outcome.receipts[0].clone().unwrap_err();
        assert!(!refusal.charged(), "{what}: {refusal}");
        assert_eq!(outcome.root, empty_block_root(&chain, &before), "{what}");
    }
    assert_eq!(chain.block(&[good]).receipts[0], Ok(()));
}

/// Every parameter value that would panic a validator or make audits unanswerable is
/// refused at genesis, one test case per refusal.
#[test]
fn parameters_that_would_panic_or_make_audits_unanswerable_are_refused() {
    use cess_consensus::LedgerParams;
    type Edit = fn(&mut LedgerParams);
    let cases: Vec<(Edit, &str)> = vec![
        (|p| p.data_fragments = 0, "data_fragments"),
        (|p| p.data_fragments = 13, "data_fragments"),
        (|p| p.fragments_per_segment = 65, "fragments_per_segment"),
        (|p| p.audit_period_blocks = 0, "periods"),
        (|p| p.epoch_blocks = 0, "periods"),
        (|p| p.era_blocks = 0, "periods"),
        (|p| p.audit_fragments_per_extra_block = 0, "periods"),
        (|p| p.audit_miners_permille = 1001, "audit_miners_permille"),
        (|p| p.validators_per_era = 0, "validators_per_era"),
        (|p| p.validators_per_era = 257, "validators_per_era"),
        (|p| p.fragment_bytes_max = 0, "fragment_bytes_max"),
        (|p| p.pois_space_deadline_ms = 0, "pois_space_deadline_ms"),
        (
            |p| p.fragment_bytes_max = (64 << 20) + 1,
            "fragment_bytes_max",
        ),
        (|p| p.challenge.fragments_max = 0, "challenge"),
        (|p| p.challenge.fragments_max = 1025, "challenge"),
        (
            |p| {
                p.challenge.fragments_max = 1024;
                p.challenge.blocks_max = 8193;
            },
            "challenge",
        ),
        (|p| p.challenge.blocks_max = 10, "challenge"),
        (
            |p| p.audit_deadline_base_blocks = 0,
            "audit_deadline_base_blocks",
        ),
        (
            |p| p.miner_cooling_off_blocks = p.audit_window_blocks_max(),
            "miner_cooling_off_blocks",
        ),
        (|p| p.restoral_claim_blocks = 0, "restoral_claim_blocks"),
        (|p| p.fee_base = 0, "fee_base"),
        (|p| p.fee_per_byte = 0, "fee_base"),
        (|p| p.tx_validity_blocks_max = 0, "tx_validity_blocks_max"),
    ];
    assert_eq!(LedgerParams::default().check(), Ok(()));
    assert_eq!(test_params().check(), Ok(()));
    for (edit, what) in cases {
        let mut params = LedgerParams::default();
        edit(&mut params);
        let refusal = params.check().expect_err(what);
        assert!(refusal.contains(what), "{what}: {refusal}");
    }
}

/// Scenario: a withdrawn miner's late proof hit `expect("audited miners are registered")`
/// and panicked every validator. An exiting miner cannot withdraw while it has an open
/// audit, so the audit always closes (answered or penalised) first.
#[test]
fn an_audited_miner_cannot_withdraw_before_its_audit_closes() {
    let (mut chain, mut storage) = storage_chain();
    let (file_id, order) = storage.order(11, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&file_id);
    let first = chain.holder(&file_id, 0);
    let miner = chain.id(first);
    let mut deadline = None;
    while deadline.is_none() {
        let outcome = chain.block(&[]);
        deadline = outcome.events.iter().find_map(|e| match e {
            Event::AuditOpened {
                miner: m, deadline, ..
            } if *m == miner => Some(*deadline),
            _ => None,
        });
    }
    let deadline = deadline.unwrap();
    chain.run(first, Call::ExitMiner).unwrap();
    while chain.ledger.height() < deadline {
        let refusal = chain.run(first, Call::WithdrawMiner).unwrap_err();
        assert!(matches!(refusal, TxError::CoolingOff { .. }), "{refusal}");
    }
    assert!(chain.ledger.audits().all(|((_, m, _), _)| *m != miner));
}

/// Scenario: a miner registered its own tagger key and, holding the tagging secret, forged
/// proofs (σ = x·Σ ν·H(id‖i), μ = 0) for files it never stored. A tagger is now admitted only
/// with the approvals of more than two thirds of the current validators (or by genesis), and
/// its key is decoded only after the cheap checks.
#[test]
fn a_tagger_is_admitted_only_by_more_than_two_thirds_of_the_validators() {
    let mut chain = Chain::new(20, 4, test_params());
    let storage = Storage::new(21);
    let key = storage.tagger.public().encode();
    let tagger_id = storage.tagger_id();
    let refusals = [
        (chain.tagger_call(5, key.clone(), &[]), "by itself"),
        (chain.tagger_call(5, key.clone(), &[0, 1]), "two of four"),
        (
            chain.tagger_call(5, key.clone(), &[0, 1, 1]),
            "one validator twice",
        ),
    ];
    for (call, what) in refusals {
        let refusal = chain.run(5, call).unwrap_err();
        assert!(
            matches!(refusal, TxError::TaggerNotApproved(_)),
            "{what}: {refusal}"
        );
        assert!(chain.ledger.tagger_key(&tagger_id).is_none(), "{what}");
    }
    // An approval signed for another owner does not carry over.
    let mut stolen = chain.tagger_call(6, key.clone(), &[0, 1, 2]);
    if let Call::RegisterTagger { approvals, .. } = &mut stolen {
        approvals.truncate(3);
    }
    let refusal = chain.run(5, stolen).unwrap_err();
    assert_eq!(
        refusal,
        TxError::TaggerNotApproved("an approval does not verify")
    );
    // A non-validator's approval.
    let mut outsider = chain.tagger_call(5, key.clone(), &[0, 1, 2]);
    if let Call::RegisterTagger { approvals, .. } = &mut outsider {
        approvals[2].validator = chain.id(9);
    }
    assert_eq!(
        chain.run(5, outsider).unwrap_err(),
        TxError::TaggerNotApproved("an approval is not from a validator")
    );
    // 400 KiB of garbage that claims to be a key is refused before it is decoded.
    let garbage = chain.tagger_call(5, vec![0xEE; 400 << 10], &[]);
    assert!(matches!(
        chain.run(5, garbage).unwrap_err(),
        TxError::TaggerNotApproved(_)
    ));
    // Three of four is more than two thirds.
    chain
        .run(5, chain.tagger_call(5, key.clone(), &[0, 2, 3]))
        .unwrap();
    assert!(chain.ledger.tagger_key(&tagger_id).is_some());
    assert_eq!(
        chain
            .run(5, chain.tagger_call(5, key, &[0, 1, 2, 3]))
            .unwrap_err(),
        TxError::AlreadyRegistered
    );
}

#[test]
fn genesis_admits_its_taggers_and_refuses_a_bad_one() {
    use cess_consensus::ledger::GenesisTagger;
    let chain = Chain::new(6, 4, test_params());
    let storage = Storage::new(22);
    let mut genesis = chain.genesis.clone();
    genesis.taggers.push(GenesisTagger {
        owner: chain.id(5),
        key: storage.tagger.public().encode(),
    });
    let ledger = cess_consensus::Ledger::genesis(&genesis).unwrap();
    assert!(ledger.tagger_key(&storage.tagger_id()).is_some());
    let decoded = cess_consensus::Genesis::decode(&genesis.encode()).unwrap();
    assert_eq!(decoded, genesis);
    genesis.taggers.push(GenesisTagger {
        owner: chain.id(5),
        key: vec![1; 60],
    });
    assert!(matches!(
        cess_consensus::Ledger::genesis(&genesis),
        Err(cess_consensus::ledger::GenesisError::Tagger { index: 1, .. })
    ));
}

/// Runs blocks until an audit round opens; its audits (round, miner, tagger).
fn next_audits(chain: &mut Chain) -> Vec<(u64, cess_consensus::AccountId, [u8; 32])> {
    for _ in 0..2 * chain.ledger.params().audit_period_blocks {
        let outcome = chain.block(&[]);
        let opened: Vec<_> = outcome
            .events
            .iter()
            .filter_map(|e| match e {
                Event::AuditOpened {
                    round,
                    miner,
                    tagger,
                    ..
                } => Some((*round, *miner, *tagger)),
                _ => None,
            })
            .collect();
        if !opened.is_empty() {
            return opened;
        }
    }
    panic!("no audit round opened");
}

fn store_file(chain: &mut Chain, storage: &mut Storage, seed: u64, segments: usize) -> [u8; 32] {
    let (file_id, order) = storage.order(seed, segments, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&file_id);
    file_id
}

/// Scenario: many copies of one proof in a block were all verified (and re-verified one by
/// one when the batch failed). One proof per audit is verified; the copies are refused
/// without a pairing, and pay their fees.
#[test]
fn one_proof_per_audit_is_verified_per_block() {
    let (mut chain, mut storage) = storage_chain();
    store_file(&mut chain, &mut storage, 31, 1);
    let audits = next_audits(&mut chain);
    let (round, miner, tagger) = audits[0];
    let i = chain.index_of(&miner);
    let challenge = chain.ledger.challenge(round, &miner, &tagger).unwrap();
    let (proof, _) = cess_proofs::prove(
        storage.tagger.public(),
        &challenge,
        &mut storage.source.clone(),
        &CpuBackend,
    )
    .unwrap();
    let nonce = chain.ledger.account(&miner).nonce;
    let sign = |k: u64| {
        chain.ledger.transaction_with_nonce(
            &chain.accounts[i],
            nonce + k,
            Call::SubmitProof {
                round,
                tagger,
                proof: proof.encode(),
            },
        )
    };
    // Ten copies of one transaction, then ten more at the following nonces.
    let mut txs: Vec<_> = (0..10).map(|_| sign(0)).collect();
    txs.extend((1..=10).map(sign));
    // The first and the ten later ones pay; the copies were never included.
    let fees: u128 = txs[0].fee + txs[10..].iter().map(|t| t.fee).sum::<u128>();
    let balance = chain.ledger.account(&miner).balance;
    let outcome = chain.block(&txs);
    assert_eq!(outcome.proofs_verified, 1);
    assert_eq!(outcome.receipts[0], Ok(()));
    assert!(
        outcome.receipts[1..10]
            .iter()
            .all(|r| matches!(r, Err(TxError::BadNonce { .. })))
    );
    assert!(
        outcome.receipts[10..]
            .iter()
            .all(|r| *r == Err(TxError::NoAudit))
    );
    let reward = outcome
        .events
        .iter()
        .find_map(|e| match e {
            Event::ProofValid { reward, .. } => Some(*reward),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        chain.ledger.account(&miner).balance,
        balance + reward - fees,
        "one reward, every fee"
    );
}

/// Scenario: the audit's fragment set kept fragments deleted after the round opened, so an
/// honest miner that dropped them was slashed. Fragments deleted or reported lost leave the
/// open audits: a proof over what the miner still holds verifies.
#[test]
fn fragments_deleted_leave_open_audits_but_a_reported_loss_does_not() {
    // Rounds far enough apart that a miner has blocks with no audit open.
    let params = cess_consensus::LedgerParams {
        audit_period_blocks: 10,
        ..test_params()
    };
    let (mut chain, mut storage) = storage_chain_with(params.clone());
    let kept = store_file(&mut chain, &mut storage, 41, 1);
    let deleted = store_file(&mut chain, &mut storage, 42, 1);
    let audits = next_audits(&mut chain);
    // A miner that holds a fragment of both files (placement follows the chain's randomness).
    let (round, miner, tagger) = *audits
        .iter()
        .find(|(_, miner, _)| {
            let i = chain.index_of(miner);
            chain.holders(&kept).contains(&i) && chain.holders(&deleted).contains(&i)
        })
        .expect("with 12 of 13 miners per file, most hold both");
    let i = chain.index_of(&miner);
    let column = chain.holders(&kept).iter().position(|&h| h == i).unwrap();
    let before = chain.ledger.challenge(round, &miner, &tagger).unwrap();
    assert_eq!(before.fragments().len(), 2);
    chain.run(0, Call::DeleteFile { file_id: deleted }).unwrap();
    let after = chain.ledger.challenge(round, &miner, &tagger).unwrap();
    assert_eq!(
        after.fragments().len(),
        1,
        "the deleted fragment left the audit"
    );
    let kept_fragment = chain.ledger.file(&kept).unwrap().segments[0].fragments[column].id;
    assert_eq!(after.fragments()[0].id, kept_fragment);
    // The miner drops the deleted file's data, proves what it holds, and is paid.
    let mut source = storage.source.clone();
    let deleted_fragment = before
        .fragments()
        .iter()
        .find(|f| f.id != kept_fragment)
        .unwrap()
        .id;
    source.data.remove(&deleted_fragment);
    source.tags.remove(&deleted_fragment);
    let (proof, _) =
        cess_proofs::prove(storage.tagger.public(), &after, &mut source, &CpuBackend).unwrap();
    let outcome = chain.block(&[chain.tx(
        i,
        Call::SubmitProof {
            round,
            tagger,
            proof: proof.encode(),
        },
    )]);
    assert_eq!(outcome.receipts[0], Ok(()));
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::ProofValid { miner: m, .. } if *m == miner))
    );
    // Another miner reports its only fragment lost while its audit is open: the report
    // stands (at its own cost), but the fragment stays in the audit, whose challenge does not
    // change (re-deriving it would let a miner escape a revealed challenge for the price of
    // a report): the audit is missed and penalised as well.
    let (round2, other, _) = *audits
        .iter()
        .find(|(_, m, _)| *m != miner && chain.holders(&kept).contains(&chain.index_of(m)))
        .unwrap();
    let j = chain.index_of(&other);
    let column = chain.holders(&kept).iter().position(|&h| h == j).unwrap();
    let fragment_id = chain.ledger.file(&kept).unwrap().segments[0].fragments[column].id;
    let collateral = chain.ledger.miner(&other).unwrap().collateral;
    let challenge = chain.ledger.challenge(round2, &other, &tagger).unwrap();
    chain.run(j, Call::ReportLost { fragment_id }).unwrap();
    assert_eq!(
        chain.ledger.challenge(round2, &other, &tagger),
        Some(challenge),
        "the challenge stays"
    );
    while chain.ledger.challenge(round2, &other, &tagger).is_some() {
        chain.block(&[]);
    }
    assert_eq!(
        chain.ledger.miner(&other).unwrap().collateral,
        collateral - params.penalty_lost - params.penalty_missing
    );
}

/// Scenario: a storage order locked its miners' space for ever, for nothing. A pending order
/// not completed within `order_validity_blocks` is released: the fragments leave their
/// miners and the space returns.
#[test]
fn a_pending_order_expires_and_its_space_returns() {
    let (mut chain, mut storage) = storage_chain_with(cess_consensus::LedgerParams {
        order_validity_blocks: 20,
        ..test_params()
    });
    let (file_id, order) = storage.order(61, 2, FRAGMENT);
    chain.run(0, order).unwrap();
    let declared_at = chain.ledger.height();
    let holders = chain.holders(&file_id);
    for column in 0..11u16 {
        chain
            .run(
                holders[column as usize],
                Call::ReportStored { file_id, column },
            )
            .unwrap();
    }
    let mut expired_at = None;
    while expired_at.is_none() {
        let outcome = chain.block(&[]);
        if outcome.events.contains(&Event::OrderExpired { file_id }) {
            expired_at = Some(chain.ledger.height());
        }
        assert!(chain.ledger.height() < declared_at + 30, "never expired");
    }
    assert_eq!(expired_at, Some(declared_at + 20));
    assert!(chain.ledger.file(&file_id).is_none());
    for i in 4..17 {
        let miner = chain.ledger.miner(&chain.id(i)).unwrap();
        assert_eq!(
            (miner.locked_bytes, miner.active_bytes),
            (0, 0),
            "miner {i}"
        );
        assert_eq!(miner.held_fragments(), 0);
    }
    // The last column's miner can no longer report: nothing is pending.
    assert_eq!(
        chain.run(
            holders[11],
            Call::ReportStored {
                file_id,
                column: 11
            }
        ),
        Err(TxError::UnknownFile)
    );
}

/// Scenario: a miner that missed audit after audit kept its data assignments and nothing was
/// ever repaired. After `audit_misses_max` missed or failed audits in a row its fragments are
/// handed to restoral orders; a valid proof in between resets the count.
#[test]
fn a_miner_that_misses_audits_in_a_row_has_its_fragments_handed_to_restoral() {
    let (mut chain, mut storage) = storage_chain_with(cess_consensus::LedgerParams {
        audit_misses_max: 2,
        ..test_params()
    });
    let file_id = store_file(&mut chain, &mut storage, 62, 2);
    let holders = chain.holders(&file_id);
    let silent = chain.id(holders[0]);
    let mut released = None;
    let released_in = |outcome: &cess_consensus::BlockOutcome| {
        outcome.events.iter().find_map(|e| match e {
            Event::MinerDataReleased { miner, fragments } if *miner == silent => Some(*fragments),
            _ => None,
        })
    };
    for _ in 0..40 {
        // Everyone but the silent miner (column 0) answers.
        released = released.or(released_in(&chain.block(&[])));
        if released.is_some() {
            break;
        }
        let answers: Vec<_> = chain
            .ledger
            .audits()
            .filter(|((_, m, _), _)| *m != silent)
            .map(|((round, m, tagger), _)| (*round, *m, *tagger))
            .collect();
        let mut txs = Vec::new();
        for (round, miner, tagger) in answers {
            let i = chain.index_of(&miner);
            let challenge = chain.ledger.challenge(round, &miner, &tagger).unwrap();
            let (proof, _) = cess_proofs::prove(
                storage.tagger.public(),
                &challenge,
                &mut storage.source.clone(),
                &CpuBackend,
            )
            .unwrap();
            txs.push(chain.tx(
                i,
                Call::SubmitProof {
                    round,
                    tagger,
                    proof: proof.encode(),
                },
            ));
        }
        if !txs.is_empty() {
            let outcome = chain.block(&txs);
            assert!(
                outcome.receipts.iter().all(|r| r.is_ok()),
                "{:?}",
                outcome.receipts
            );
            released = released.or(released_in(&outcome));
            if released.is_some() {
                break;
            }
        }
    }
    assert_eq!(released, Some(2), "both of its fragments");
    let file = chain.ledger.file(&file_id).unwrap();
    for segment in &file.segments {
        let fragment = &segment.fragments[0];
        assert_eq!(fragment.miner, None);
        assert!(chain.ledger.restoral(&fragment.id).is_some());
    }
    for &i in &holders[1..] {
        let miner = chain.ledger.miner(&chain.id(i)).unwrap();
        assert_eq!(miner.audits_failed_in_a_row, 0, "answering miners reset");
        assert_eq!(miner.held_fragments(), 2);
    }
}

/// Scenario: a miner whose collateral was slashed away kept receiving files. Under the
/// collateral floor a miner receives no new data (orders and restoral claims) until it tops
/// up with `AddCollateral`.
#[test]
fn a_miner_under_the_collateral_floor_receives_no_new_data_until_it_tops_up() {
    // Miner 4 registers with exactly the floor; the others with more.
    let mut chain = Chain::new(20, 4, test_params());
    let floor = chain.ledger.params().miner_collateral_min;
    let m4 = chain.id(4);
    chain
        .run(
            4,
            Call::RegisterMiner {
                peer_id: m4.peer_id().unwrap().to_bytes(),
                endpoint: "/ip4/127.0.0.1/udp/4004/quic-v1".into(),
                declared_bytes: 1 << 20,
                collateral: floor,
            },
        )
        .unwrap();
    for i in 5..17 {
        chain.register_miner(i, 1 << 20);
    }
    let mut storage = Storage::new(9);
    chain.register_tagger(3, storage.tagger.public().encode());
    chain.rent(0, 1, 100_000);
    // 13 miners, 12 columns: store until miner 4 holds a fragment.
    let mut seed = 63;
    loop {
        let file_id = store_file(&mut chain, &mut storage, seed, 1);
        if chain.holders(&file_id).contains(&4) {
            break;
        }
        seed += 100;
    }
    // Nobody answers: miner 4's first missed audit takes it under the floor.
    while chain.ledger.miner(&m4).unwrap().collateral >= floor {
        chain.block(&[]);
    }
    // The next order goes to the 12 others.
    let (lost_file, lost_order) = storage.order(65, 1, FRAGMENT);
    chain.run(0, lost_order).unwrap();
    assert!(!chain.holders(&lost_file).contains(&4));
    // Restoral claims too.
    let fragment_id = chain.ledger.file(&lost_file).unwrap().segments[0].fragments[0].id;
    let loser = chain.holder(&lost_file, 0);
    chain.run(loser, Call::ReportLost { fragment_id }).unwrap();
    assert!(matches!(
        chain.run(4, Call::ClaimRestoral { fragment_id }),
        Err(TxError::CollateralTooLow { .. })
    ));
    chain.run(4, Call::AddCollateral { amount: floor }).unwrap();
    // (It keeps missing audits meanwhile, 10 tokens each.)
    assert!(chain.ledger.miner(&m4).unwrap().collateral >= floor);
    chain.run(4, Call::ClaimRestoral { fragment_id }).unwrap();
    assert_eq!(
        chain.run(18, Call::AddCollateral { amount: TOKEN }),
        Err(TxError::NotMiner)
    );
}

/// Scenario: restoral claims had no limit, so one miner could claim every open order and
/// let each claim expire. A miner holds at most `restoral_claims_per_miner_max` claims.
#[test]
fn restoral_claims_are_limited_per_miner() {
    let (mut chain, mut storage) = storage_chain_with(cess_consensus::LedgerParams {
        restoral_claims_per_miner_max: 2,
        ..no_audits()
    });
    let file_id = store_file(&mut chain, &mut storage, 66, 3);
    let holders = chain.holders(&file_id);
    let spare = (4..17).find(|i| !holders.contains(i)).unwrap();
    // The miner of column 1 loses its three fragments.
    let lost: Vec<_> = chain
        .ledger
        .file(&file_id)
        .unwrap()
        .segments
        .iter()
        .map(|s| s.fragments[1].id)
        .collect();
    for fragment_id in &lost {
        chain
            .run(
                holders[1],
                Call::ReportLost {
                    fragment_id: *fragment_id,
                },
            )
            .unwrap();
    }
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[0],
            },
        )
        .unwrap();
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[1],
            },
        )
        .unwrap();
    assert_eq!(
        chain.run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[2]
            }
        ),
        Err(TxError::TooManyClaims { max: 2 })
    );
    chain
        .run(
            spare,
            Call::CompleteRestoral {
                fragment_id: lost[0],
            },
        )
        .unwrap();
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[2],
            },
        )
        .unwrap();
    assert_eq!(
        chain
            .ledger
            .miner(&chain.id(spare))
            .unwrap()
            .restoral_claims,
        2
    );
}

/// A miner that sends another transaction before its proof in the same block still has its
/// proof verified: the block's pre-pass follows each signer's nonces through the block.
#[test]
fn a_proof_after_another_transaction_of_its_miner_in_the_same_block_is_verified() {
    let (mut chain, mut storage) = storage_chain();
    store_file(&mut chain, &mut storage, 71, 1);
    let audits = next_audits(&mut chain);
    let (round, miner, tagger) = audits[0];
    let i = chain.index_of(&miner);
    let challenge = chain.ledger.challenge(round, &miner, &tagger).unwrap();
    let (proof, _) = cess_proofs::prove(
        storage.tagger.public(),
        &challenge,
        &mut storage.source.clone(),
        &CpuBackend,
    )
    .unwrap();
    let nonce = chain.ledger.account(&miner).nonce;
    let transfer = chain.ledger.transaction_with_nonce(
        &chain.accounts[i],
        nonce,
        Call::Transfer {
            to: chain.id(0),
            amount: 1,
        },
    );
    let submit = chain.ledger.transaction_with_nonce(
        &chain.accounts[i],
        nonce + 1,
        Call::SubmitProof {
            round,
            tagger,
            proof: proof.encode(),
        },
    );
    let outcome = chain.block(&[transfer, submit]);
    assert_eq!(outcome.receipts, vec![Ok(()), Ok(())]);
    assert_eq!(outcome.proofs_verified, 1);
    assert!(
        outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::ProofValid { miner: m, .. } if *m == miner))
    );
}

/// Scenario (review): a miner holding a small set under one tagger and a large one under
/// another proved the small set every round and dropped the large one. Each valid proof paid
/// the rent of everything it held and reset its count of failures, so it was paid for data it
/// did not keep and the data was never repaired. Now rent is paid only once every audit of a
/// round has passed, and only such a round resets the count.
#[test]
fn a_miner_that_proves_one_set_and_drops_another_is_not_paid_and_loses_the_data() {
    let (mut chain, mut kept) = storage_chain_with(cess_consensus::LedgerParams {
        audit_misses_max: 2,
        ..test_params()
    });
    let mut dropped = Storage::new(10);
    chain.register_tagger(3, dropped.tagger.public().encode());
    let small = store_file(&mut chain, &mut kept, 91, 1);
    let (big, order) = dropped.order(92, 3, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&big);
    let both = chain
        .holders(&small)
        .into_iter()
        .find(|i| chain.holders(&big).contains(i))
        .unwrap();
    let cheat = chain.id(both);
    let small_tagger = kept.tagger_id();
    let mut answered = std::collections::BTreeSet::new();
    let mut proofs_valid = 0;
    let mut released = None;
    for _ in 0..80 {
        let open: Vec<(u64, [u8; 32])> = chain
            .ledger
            .audits()
            .filter(|((round, m, t), _)| {
                *m == cheat && *t == small_tagger && !answered.contains(round)
            })
            .map(|((round, _, t), _)| (*round, *t))
            .collect();
        let mut txs = Vec::new();
        for (round, tagger) in open {
            answered.insert(round);
            let challenge = chain.ledger.challenge(round, &cheat, &tagger).unwrap();
            let (proof, _) = cess_proofs::prove(
                kept.tagger.public(),
                &challenge,
                &mut kept.source.clone(),
                &CpuBackend,
            )
            .unwrap();
            txs.push(chain.tx(
                both,
                Call::SubmitProof {
                    round,
                    tagger,
                    proof: proof.encode(),
                },
            ));
        }
        let fees: Vec<u128> = txs
            .iter()
            .map(|tx| chain.ledger.params().min_fee(tx))
            .collect();
        let outcome = chain.block(&txs);
        for event in &outcome.events {
            match event {
                Event::ProofValid { miner, reward, .. } if *miner == cheat => {
                    proofs_valid += 1;
                    assert!(
                        fees.contains(reward),
                        "only its fee back, no rent: {reward} against fees {fees:?}"
                    );
                }
                Event::MinerDataReleased { miner, fragments } if *miner == cheat => {
                    released = Some(*fragments)
                }
                _ => {}
            }
        }
        if released.is_some() {
            break;
        }
    }
    assert!(
        proofs_valid >= 2,
        "it proved the small set ({proofs_valid})"
    );
    assert_eq!(released, Some(4), "its 1 + 3 fragments go to restoral");
}

/// Scenario (review): a million leases timed to end at one height made one block remove them
/// all. Ended leases are worked through within a per-block budget, oldest first.
#[test]
fn ended_leases_are_removed_within_a_budget_per_block() {
    let params = cess_consensus::LedgerParams {
        lease_grace_blocks: 1,
        lease_releases_per_block_max: 2,
        ..test_params()
    };
    let mut chain = Chain::new(12, 4, params);
    let rents: Vec<_> = (4..9)
        .map(|i| {
            chain.tx(
                i,
                Call::RentSpace {
                    add_gib: 1,
                    add_blocks: 3,
                },
            )
        })
        .collect();
    let outcome = chain.block(&rents);
    assert!(outcome.receipts.iter().all(|r| r.is_ok()));
    let mut per_block = Vec::new();
    while per_block.iter().sum::<usize>() < 5 {
        let outcome = chain.block(&[]);
        per_block.push(
            outcome
                .events
                .iter()
                .filter(|e| matches!(e, Event::LeaseEnded { .. }))
                .count(),
        );
        assert!(per_block.len() < 20, "leases never ended: {per_block:?}");
    }
    assert!(per_block.iter().all(|&n| n <= 2), "{per_block:?}");
    assert!((4..9).all(|i| chain.ledger.lease(&chain.id(i)).is_none()));
}

/// Scenario (issue 20, steering): each block's proposer chooses which precommits of the last
/// height it includes, and every validator left out lost reputation, so a few proposers could
/// push honest validators out of the next era. Now leaving a validator out of up to
/// `COMMIT_MISSES_FORGIVEN` commits in a row costs it nothing; only a validator missing from
/// more (offline, or every proposer in a row colluding) loses reputation.
#[test]
fn a_proposer_leaving_a_validator_out_of_its_commits_costs_it_nothing() {
    use cess_consensus::ledger::COMMIT_MISSES_FORGIVEN;
    let params = cess_consensus::LedgerParams {
        era_blocks: 1000,
        ..test_params()
    };
    let mut chain = Chain::new(6, 4, params);
    chain.block(&[]);
    chain.block(&[]);
    let victim = chain.id(3);
    let reputation = |chain: &Chain| chain.ledger.candidate(&victim).unwrap().reputation;
    let steered_block = |chain: &mut Chain| {
        let mut info = chain.next_info();
        info.last_commit.retain(|a| *a != victim);
        let outcome = chain.ledger.apply_block(&info, &[], &CpuBackend);
        assert!(outcome.receipts.is_empty());
    };
    let before = reputation(&chain);
    for _ in 0..COMMIT_MISSES_FORGIVEN {
        steered_block(&mut chain);
    }
    assert_eq!(
        reputation(&chain),
        before,
        "left out 8 times in a row: no loss"
    );
    // Included once: the count starts again.
    chain.block(&[]);
    for _ in 0..COMMIT_MISSES_FORGIVEN {
        steered_block(&mut chain);
    }
    assert_eq!(reputation(&chain), before + 1);
    // One more in a row: a validator missing this long is penalised.
    steered_block(&mut chain);
    assert!(
        reputation(&chain) < before + 1,
        "past the forgiven misses it loses"
    );
}

#[test]
fn an_owner_authorizes_delegates_within_a_bound_and_takes_them_back() {
    use cess_consensus::ledger::DELEGATES_PER_OWNER_MAX;
    let mut chain = Chain::new(20, 4, test_params());
    let (owner, gateway) = (chain.id(0), chain.id(1));
    assert!(!chain.ledger.is_delegate(&owner, &gateway));
    // Only an owner who pays for space hands out standing.
    assert_eq!(
        chain.run(0, Call::Authorize { delegate: gateway }),
        Err(TxError::NoLease)
    );
    chain.rent(0, 1, 1000);
    chain.run(0, Call::Authorize { delegate: gateway }).unwrap();
    assert_eq!(
        chain.ledger.delegators(&gateway).collect::<Vec<_>>(),
        [&owner]
    );
    assert!(chain.ledger.is_delegate(&owner, &gateway));
    assert!(
        !chain.ledger.is_delegate(&gateway, &owner),
        "delegation is one way"
    );
    assert_eq!(
        chain.run(0, Call::Authorize { delegate: gateway }),
        Err(TxError::BadDelegate("already authorized"))
    );
    assert_eq!(
        chain.run(0, Call::Authorize { delegate: owner }),
        Err(TxError::BadDelegate("an account always acts for itself"))
    );
    for i in 2..1 + DELEGATES_PER_OWNER_MAX {
        let delegate = chain.id(i);
        chain.run(0, Call::Authorize { delegate }).unwrap();
    }
    assert_eq!(
        chain.ledger.delegates(&owner).count(),
        DELEGATES_PER_OWNER_MAX
    );
    let one_more = chain.id(1 + DELEGATES_PER_OWNER_MAX);
    assert_eq!(
        chain.run(0, Call::Authorize { delegate: one_more }),
        Err(TxError::TooManyDelegates {
            max: DELEGATES_PER_OWNER_MAX
        })
    );
    chain
        .run(0, Call::Deauthorize { delegate: gateway })
        .unwrap();
    assert!(!chain.ledger.is_delegate(&owner, &gateway));
    assert_eq!(
        chain.run(0, Call::Deauthorize { delegate: gateway }),
        Err(TxError::BadDelegate("not authorized"))
    );
    assert_eq!(
        chain.ledger.root(),
        chain.ledger.root_from_scratch(),
        "the delegates table is in the state root"
    );
}

#[test]
fn a_miner_cannot_claim_the_restoral_of_what_it_reported_lost() {
    let (mut chain, mut storage) = storage_chain_with(no_audits());
    let (file_id, order) = storage.order(21, 1, FRAGMENT);
    chain.run(0, order).unwrap();
    chain.report_all(&file_id);
    let holders = chain.holders(&file_id);
    let holder = holders[0];
    let fragment_id = chain.ledger.file(&file_id).unwrap().segments[0].fragments[0].id;
    chain.run(holder, Call::ReportLost { fragment_id }).unwrap();
    // It would read the siblings and rebuild what it let go, escaping the audit.
    assert_eq!(
        chain.run(holder, Call::ClaimRestoral { fragment_id }),
        Err(TxError::ClaimsOwnLoss)
    );
    let other = (4..17)
        .find(|i| !holders.contains(i))
        .expect("a miner outside the segment");
    chain
        .run(other, Call::ClaimRestoral { fragment_id })
        .unwrap();
}

/// Columns `columns` of segment 0 of `file_id` reported lost by their holders, one block
/// each; their fragment ids.
fn lose_columns(
    chain: &mut Chain,
    file_id: &[u8; 32],
    columns: std::ops::Range<usize>,
) -> Vec<FragmentId> {
    let mut lost = Vec::new();
    for column in columns {
        let fragment = &chain.ledger.file(file_id).unwrap().segments[0].fragments[column];
        let (fragment_id, holder) = (fragment.id, chain.index_of(&fragment.miner.unwrap()));
        chain.run(holder, Call::ReportLost { fragment_id }).unwrap();
        lost.push(fragment_id);
    }
    lost
}

/// Scenario (issue 23): a segment with 8 of its 12 fragments lost still has the 4 that
/// rebuild it. Its file is at risk (more than a third under restoral, the countdown runs),
/// each fragment is claimed and rebuilt by a miner holding nothing else of the segment, and
/// the file is active again, its countdown stopped.
#[test]
fn a_segment_with_8_of_12_fragments_lost_is_rebuilt_and_its_file_is_active_again() {
    // A countdown (three claim periods) long enough for eight rebuilds of two blocks each.
    let params = cess_consensus::LedgerParams {
        restoral_claim_blocks: 20,
        ..no_audits()
    };
    let (mut chain, mut storage) = storage_chain_with(params.clone());
    let file_id = store_file(&mut chain, &mut storage, 81, 1);
    let holders = chain.holders(&file_id);
    let spare = (4..17).find(|i| !holders.contains(i)).unwrap();
    let lost = lose_columns(&mut chain, &file_id, 0..4);
    assert!(matches!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Recovery {
            unheld: 4,
            segments_at_risk: 0,
            lost_at: None
        }
    ));
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().state.name(),
        "recovery"
    );
    let fifth = chain.ledger.file(&file_id).unwrap().segments[0].fragments[4].id;
    let outcome = chain.block(&[chain.tx(holders[4], Call::ReportLost { fragment_id: fifth })]);
    let lost_at = outcome
        .events
        .iter()
        .find_map(|e| match e {
            Event::FileAtRisk {
                file_id: f,
                lost_at,
            } if *f == file_id => Some(*lost_at),
            _ => None,
        })
        .expect("the fifth loss puts the segment at risk");
    assert_eq!(
        lost_at,
        chain.ledger.height() + 3 * params.restoral_claim_blocks
    );
    let mut lost = lost;
    lost.push(fifth);
    lost.extend(lose_columns(&mut chain, &file_id, 5..8));
    assert!(matches!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Recovery {
            unheld: 8,
            segments_at_risk: 1,
            lost_at: Some(at)
        } if at == lost_at
    ));
    // Rebuilders: the spare takes column 0, the miner that lost column c takes column c + 1
    // (it holds nothing of the segment any more, and never claims its own loss).
    let mut rebuilders = vec![spare];
    rebuilders.extend(&holders[..7]);
    let mut recovered = false;
    for (fragment_id, rebuilder) in lost.iter().zip(rebuilders) {
        assert_eq!(
            chain.run(
                holders[8],
                Call::ClaimRestoral {
                    fragment_id: *fragment_id
                }
            ),
            Err(TxError::HoldsSegment)
        );
        chain
            .run(
                rebuilder,
                Call::ClaimRestoral {
                    fragment_id: *fragment_id,
                },
            )
            .unwrap();
        let outcome = chain.block(&[chain.tx(
            rebuilder,
            Call::CompleteRestoral {
                fragment_id: *fragment_id,
            },
        )]);
        assert_eq!(outcome.receipts, vec![Ok(())]);
        recovered |= outcome.events.contains(&Event::FileRecovered { file_id });
    }
    assert!(recovered);
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Active
    );
    while chain.ledger.height() <= lost_at {
        chain.block(&[]);
    }
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().state,
        FileState::Active
    );
}

/// Scenario (issue 23): a segment with 9 of its 12 fragments lost cannot be rebuilt (3 are
/// left, 4 are needed). When its countdown ends the file is lost: its last holders and its
/// claimant let go, its orders close, its owner's lease stops paying for it, nobody can join
/// it, and its owner can still delete it.
#[test]
fn a_segment_with_9_of_12_fragments_lost_makes_its_file_lost_after_the_countdown() {
    let (mut chain, mut storage) = storage_chain_with(no_audits());
    let file_id = store_file(&mut chain, &mut storage, 82, 1);
    let holders = chain.holders(&file_id);
    let spare = (4..17).find(|i| !holders.contains(i)).unwrap();
    let used_before = chain.ledger.lease(&chain.id(0)).unwrap().used_bytes;
    assert!(used_before > 0);
    let lost = lose_columns(&mut chain, &file_id, 0..9);
    let FileState::Recovery {
        lost_at: Some(lost_at),
        ..
    } = chain.ledger.file(&file_id).unwrap().state
    else {
        panic!("at risk");
    };
    assert_eq!(chain.ledger.file(&file_id).unwrap().state.name(), "at-risk");
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[0],
            },
        )
        .unwrap();
    let mut lost_seen = false;
    while chain.ledger.height() < lost_at {
        let outcome = chain.block(&[]);
        lost_seen |= outcome.events.contains(&Event::FileLost { file_id });
        if chain.ledger.height() < lost_at {
            assert!(!lost_seen, "not before its countdown ends");
        }
    }
    assert!(lost_seen);
    let file = chain.ledger.file(&file_id).unwrap();
    assert_eq!(file.state, FileState::Lost { at: lost_at });
    assert_eq!(file.state.name(), "lost");
    assert!(file.segments[0].fragments.iter().all(|f| f.miner.is_none()));
    assert_eq!(chain.ledger.restorals().count(), 0);
    for miner in holders.iter().chain([&spare]) {
        let m = chain.ledger.miner(&chain.id(*miner)).unwrap();
        assert_eq!(
            (m.locked_bytes, m.active_bytes, m.restoral_claims),
            (0, 0, 0)
        );
    }
    assert_eq!(chain.ledger.lease(&chain.id(0)).unwrap().used_bytes, 0);
    // Nobody joins a lost file; its owner deletes it.
    let f = chain.ledger.file(&file_id).unwrap().clone();
    assert_eq!(
        chain.run(
            1,
            Call::DeclareFile {
                file_id,
                file_name: "again".into(),
                bucket: String::new(),
                size_bytes: f.size_bytes,
                fragment_bytes: f.fragment_bytes,
                tagger: f.tagger,
                segments: vec![],
                meta: Vec::new(),
            }
        ),
        Err(TxError::FileLost)
    );
    chain.run(0, Call::DeleteFile { file_id }).unwrap();
    assert!(chain.ledger.file(&file_id).is_none());
}

/// Scenario (issue 23): one miner could claim orders and let every claim expire, holding
/// them from miners that would rebuild them. After `restoral_expiries_max` expiries in a row
/// it may not claim for `restoral_bar_blocks`; a completed restoral resets the count.
#[test]
fn a_miner_that_lets_its_claims_expire_in_a_row_is_barred_for_a_while() {
    let params = cess_consensus::LedgerParams {
        restoral_expiries_max: 2,
        restoral_bar_blocks: 20,
        ..no_audits()
    };
    let (mut chain, mut storage) = storage_chain_with(params.clone());
    chain.register_miner(17, 1 << 20);
    let file_id = store_file(&mut chain, &mut storage, 83, 3);
    let holders = chain.holders(&file_id);
    let spare = (4..18).find(|i| !holders.contains(i)).unwrap();
    let other = (4..18)
        .find(|i| !holders.contains(i) && *i != spare)
        .unwrap();
    // The miner of column 1 loses its fragment in each of the three segments.
    let lost: Vec<FragmentId> = (0..3)
        .map(|s| chain.ledger.file(&file_id).unwrap().segments[s].fragments[1].id)
        .collect();
    for fragment_id in &lost {
        chain
            .run(
                holders[1],
                Call::ReportLost {
                    fragment_id: *fragment_id,
                },
            )
            .unwrap();
    }
    let let_expire = |chain: &mut Chain, fragment_id: FragmentId| {
        chain
            .run(spare, Call::ClaimRestoral { fragment_id })
            .unwrap();
        for _ in 0..params.restoral_claim_blocks {
            chain.block(&[]);
        }
        assert!(chain.ledger.restoral(&fragment_id).unwrap().claim.is_none());
    };
    // One expiry, then a completion: the count stays (an easy completion does not launder
    // expiries).
    let_expire(&mut chain, lost[0]);
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[0],
            },
        )
        .unwrap();
    chain
        .run(
            spare,
            Call::CompleteRestoral {
                fragment_id: lost[0],
            },
        )
        .unwrap();
    let expired = |chain: &Chain| chain.ledger.miner(&chain.id(spare)).unwrap().claims_expired;
    assert_eq!(expired(&chain), 1);
    // The second expiry: barred, and the count starts again.
    let_expire(&mut chain, lost[1]);
    assert_eq!(expired(&chain), 0);
    let until = chain
        .ledger
        .miner(&chain.id(spare))
        .unwrap()
        .claims_barred_until;
    assert_eq!(until, chain.ledger.height() + params.restoral_bar_blocks);
    assert_eq!(
        chain.run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[1]
            }
        ),
        Err(TxError::ClaimsBarred { until })
    );
    // Another miner takes it meanwhile; after the bar the first may claim again.
    chain
        .run(
            other,
            Call::ClaimRestoral {
                fragment_id: lost[1],
            },
        )
        .unwrap();
    while chain.ledger.height() + 1 < until {
        chain.block(&[]);
    }
    chain
        .run(
            spare,
            Call::ClaimRestoral {
                fragment_id: lost[2],
            },
        )
        .unwrap();
}

/// Scenario (issue 23): the cost of reporting a loss. Each report takes `penalty_lost` and
/// forfeits the rent accrued since the last valid proof; whatever is reported in one audit
/// period costs at most half a missed audit's penalty, so an honest report is always cheaper
/// than the failed audit that would find the loss.
#[test]
fn reporting_losses_costs_less_than_the_failed_audit_that_would_find_them() {
    let params = cess_consensus::LedgerParams {
        penalty_lost: 2 * TOKEN,
        penalty_missing: 10 * TOKEN,
        audit_period_blocks: 50,
        ..test_params()
    };
    let (mut chain, mut storage) = storage_chain_with(params.clone());
    let file_id = store_file(&mut chain, &mut storage, 84, 4);
    let holder = chain.holders(&file_id)[1];
    let me = chain.id(holder);
    let ids: Vec<FragmentId> = chain
        .ledger
        .file(&file_id)
        .unwrap()
        .segments
        .iter()
        .map(|s| s.fragments[1].id)
        .collect();
    // Between two rounds' audits, within one audit period (a report waits for the audits
    // that hold its fragment).
    let between =
        |chain: &Chain| (10..=30).contains(&(chain.ledger.height() % params.audit_period_blocks));
    while !between(&chain) {
        chain.block(&[]);
    }
    let start = chain.ledger.miner(&me).unwrap().collateral;
    let mut paid = Vec::new();
    for fragment_id in &ids[..3] {
        let before = chain.ledger.miner(&me).unwrap().collateral;
        chain
            .run(
                holder,
                Call::ReportLost {
                    fragment_id: *fragment_id,
                },
            )
            .unwrap();
        let m = chain.ledger.miner(&me).unwrap();
        assert_eq!(
            m.rent_accrued, 0,
            "the rent since the last proof is forfeited"
        );
        paid.push(before - m.collateral);
    }
    assert_eq!(
        paid,
        vec![2 * TOKEN, 2 * TOKEN, TOKEN],
        "capped at half a missed audit"
    );
    assert!(start - chain.ledger.miner(&me).unwrap().collateral < params.penalty_missing);
    // The next period has its own cap.
    let period = chain.ledger.height() / params.audit_period_blocks;
    while chain.ledger.height() / params.audit_period_blocks == period || !between(&chain) {
        chain.block(&[]);
    }
    let before = chain.ledger.miner(&me).unwrap().collateral;
    chain
        .run(
            holder,
            Call::ReportLost {
                fragment_id: ids[3],
            },
        )
        .unwrap();
    assert_eq!(
        before - chain.ledger.miner(&me).unwrap().collateral,
        2 * TOKEN
    );
}

/// Scenario (review of issue 23): the seed's rule declared a file lost when more than a
/// third of a segment's fragments were under restoral at the end of the countdown, and the
/// ledger then released the seven holders of a segment that four of them could still rebuild.
/// A file is lost only when a segment can no longer be decoded; otherwise its countdown starts
/// again and its holders stay.
#[test]
fn a_segment_that_can_still_be_decoded_is_never_given_up() {
    let params = no_audits();
    let (mut chain, mut storage) = storage_chain_with(params.clone());
    let file_id = store_file(&mut chain, &mut storage, 85, 1);
    lose_columns(&mut chain, &file_id, 0..5);
    let FileState::Recovery {
        lost_at: Some(lost_at),
        ..
    } = chain.ledger.file(&file_id).unwrap().state
    else {
        panic!("at risk");
    };
    let mut again = None;
    while chain.ledger.height() < lost_at {
        for event in chain.block(&[]).events {
            assert!(!matches!(event, Event::FileLost { .. }), "never lost");
            if let Event::FileAtRisk { lost_at, .. } = event {
                again = Some(lost_at);
            }
        }
    }
    let again = again.expect("the countdown starts again");
    assert_eq!(
        again,
        lost_at + cess_consensus::ledger::LOST_COUNTDOWN_CLAIMS * params.restoral_claim_blocks
    );
    let file = chain.ledger.file(&file_id).unwrap();
    assert!(matches!(
        file.state,
        FileState::Recovery {
            unheld: 5,
            lost_at: Some(at),
            ..
        } if at == again
    ));
    assert_eq!(
        file.segments[0]
            .fragments
            .iter()
            .filter(|f| f.miner.is_some())
            .count(),
        7,
        "its holders stay"
    );
}

/// A claimant gives a claim back (`ReleaseClaim`): the order is open at once, the space it
/// locked returns, and no expiry is counted; only the claimant may.
#[test]
fn a_claim_given_back_opens_the_order_and_counts_no_expiry() {
    let (mut chain, mut storage) = storage_chain_with(no_audits());
    let file_id = store_file(&mut chain, &mut storage, 86, 1);
    let holders = chain.holders(&file_id);
    let spare = (4..17).find(|i| !holders.contains(i)).unwrap();
    let lost = lose_columns(&mut chain, &file_id, 0..1)[0];
    chain
        .run(spare, Call::ClaimRestoral { fragment_id: lost })
        .unwrap();
    assert_eq!(
        chain.run(holders[5], Call::ReleaseClaim { fragment_id: lost }),
        Err(TxError::NotClaimer)
    );
    let outcome = chain.block(&[chain.tx(spare, Call::ReleaseClaim { fragment_id: lost })]);
    assert_eq!(outcome.receipts, vec![Ok(())]);
    assert!(outcome.events.contains(&Event::RestoralClaimReleased {
        fragment_id: lost,
        claimer: chain.id(spare),
    }));
    assert!(chain.ledger.restoral(&lost).unwrap().claim.is_none());
    let m = chain.ledger.miner(&chain.id(spare)).unwrap();
    assert_eq!(
        (m.locked_bytes, m.restoral_claims, m.claims_expired),
        (0, 0, 0)
    );
}

/// Puts a storage order in `bucket`.
fn in_bucket(order: &Call, name: &str) -> Call {
    let mut call = order.clone();
    let Call::DeclareFile { bucket, .. } = &mut call else {
        unreachable!("an order")
    };
    *bucket = name.into();
    call
}

/// An owner's buckets: S3 names only, at most `BUCKETS_PER_OWNER_MAX`, the files listed in
/// each counted so a bucket with files cannot be deleted (and a file left by any path leaves
/// its count: the harness checks the counts after every block). A delegate (an S3 gateway)
/// declares, deletes and keeps buckets for its owner, in the owner's space; an account that
/// is not, or no longer, its delegate cannot, and no other call can be made for an owner.
#[test]
fn buckets_list_an_owners_files_and_a_delegate_acts_for_its_owner_alone() {
    use cess_consensus::ledger::BUCKETS_PER_OWNER_MAX;
    let (mut chain, mut storage) = storage_chain();
    let (owner, gateway) = (chain.id(0), chain.id(1));
    let create = |name: &str| Call::CreateBucket { name: name.into() };
    for bad in ["ab", "Photos", "-ab", "ab-", "a..b", "a_b", "192.168.1.1"] {
        assert!(
            matches!(chain.run(0, create(bad)), Err(TxError::BadBucketName(_))),
            "{bad}"
        );
    }
    assert_eq!(chain.run(17, create("photos")), Err(TxError::NoLease));
    chain.run(0, create("photos")).unwrap();
    assert_eq!(chain.run(0, create("photos")), Err(TxError::BucketExists));

    let (file_id, order) = storage.order(1, 1, FRAGMENT);
    assert_eq!(
        chain.run(0, in_bucket(&order, "nope")),
        Err(TxError::NoSuchBucket)
    );
    chain.run(0, in_bucket(&order, "photos")).unwrap();
    assert_eq!(
        chain.ledger.file(&file_id).unwrap().owners[&owner].bucket,
        "photos"
    );
    assert_eq!(
        chain.ledger.buckets(&owner).collect::<Vec<_>>(),
        [(&"photos".to_string(), 1)]
    );
    assert_eq!(
        chain.run(
            0,
            Call::DeleteBucket {
                name: "photos".into()
            }
        ),
        Err(TxError::BucketNotEmpty { files: 1 })
    );

    let for_owner = |call: Call| Call::ForOwner {
        owner,
        call: Box::new(call),
    };
    assert_eq!(
        chain.run(1, for_owner(Call::DeleteFile { file_id })),
        Err(TxError::NotDelegate)
    );
    chain.run(0, Call::Authorize { delegate: gateway }).unwrap();
    let (second, order) = storage.order(2, 1, FRAGMENT);
    let owner_used = chain.ledger.lease(&owner).unwrap().used_bytes;
    let gateway_used = chain.ledger.lease(&gateway).unwrap().used_bytes;
    chain
        .run(1, for_owner(in_bucket(&order, "photos")))
        .unwrap();
    let file = chain.ledger.file(&second).unwrap();
    assert_eq!(file.owners.keys().collect::<Vec<_>>(), [&owner]);
    assert_eq!(
        chain.ledger.lease(&owner).unwrap().used_bytes,
        owner_used + file.stored_bytes(),
        "the owner's space pays"
    );
    assert_eq!(
        chain.ledger.lease(&gateway).unwrap().used_bytes,
        gateway_used
    );
    assert_eq!(chain.ledger.buckets(&owner).next().unwrap().1, 2);
    // Only the gateway's calls go through: a transfer built in memory is refused.
    assert_eq!(
        chain.run(
            1,
            for_owner(Call::Transfer {
                to: gateway,
                amount: 1
            })
        ),
        Err(TxError::NotDelegate)
    );
    for file_id in [file_id, second] {
        chain
            .run(1, for_owner(Call::DeleteFile { file_id }))
            .unwrap();
    }
    chain
        .run(
            1,
            for_owner(Call::DeleteBucket {
                name: "photos".into(),
            }),
        )
        .unwrap();
    assert_eq!(chain.ledger.buckets(&owner).count(), 0);

    // A pending order listed in a bucket that expires leaves the count with it.
    chain.run(0, create("drafts")).unwrap();
    let (_, order) = storage.order(3, 1, FRAGMENT);
    chain.run(0, in_bucket(&order, "drafts")).unwrap();
    assert_eq!(chain.ledger.buckets(&owner).next().unwrap().1, 1);
    for _ in 0..chain.ledger.params().order_validity_blocks + 1 {
        chain.block(&[]);
    }
    assert_eq!(chain.ledger.buckets(&owner).next().unwrap().1, 0);

    for i in 1..BUCKETS_PER_OWNER_MAX {
        chain.run(0, create(&format!("b-{i:03}"))).unwrap();
    }
    assert_eq!(
        chain.run(0, create("one-more")),
        Err(TxError::TooManyBuckets {
            max: BUCKETS_PER_OWNER_MAX
        })
    );
    chain
        .run(0, Call::Deauthorize { delegate: gateway })
        .unwrap();
    assert_eq!(
        chain.run(1, for_owner(create("late"))),
        Err(TxError::NotDelegate)
    );
}
