//! Random transaction sequences (seeded, replayable; idle space included: sets committed,
//! proven, audited and replaced, honestly and not): after every block the storage
//! invariants hold (space never negative nor above what was declared, every fragment in
//! exactly one place, no miner holding two fragments of a segment), money is conserved, a
//! transaction that was not included changed nothing (the same block without it gives the
//! same root), and one whose call was refused changed only its fee and nonce. Before every
//! block the ledger goes through a snapshot and back, and the copy applies the block to the
//! same receipts and root.
//!
//! `CESS_LEDGER_SEEDS=n` runs more seeds; a failure names its seed.

mod common;

use cess_consensus::ledger::TOKEN;
use cess_consensus::tx::TxTerms;
use cess_consensus::{Call, FragmentId, Transaction, TxError};
use cess_proofs::CpuBackend;
use cess_proofs::pois::{Graph, generate_set, prove_commit, prove_space};
use common::{Chain, Storage, test_params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ACCOUNTS: usize = 24;
/// Above the least fee of every call the generator makes.
const FEE: u128 = TOKEN;

fn random_call(
    rng: &mut ChaCha8Rng,
    chain: &Chain,
    storage: &mut Storage,
    who: usize,
    serial: &mut u64,
) -> Call {
    let pick_account = |rng: &mut ChaCha8Rng| chain.id(rng.random_range(0..ACCOUNTS));
    let files: Vec<[u8; 32]> = chain.ledger.files().map(|(id, _)| *id).collect();
    let fragments: Vec<FragmentId> = chain
        .ledger
        .files()
        .flat_map(|(_, f)| {
            f.segments
                .iter()
                .flat_map(|s| s.fragments.iter().map(|x| x.id))
        })
        .collect();
    let restorals: Vec<FragmentId> = chain.ledger.restorals().map(|(id, _)| *id).collect();
    match rng.random_range(0..24) {
        0 => Call::Transfer {
            to: pick_account(rng),
            amount: match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(1..1000) * TOKEN,
                _ => 10_000_000 * TOKEN,
            },
        },
        1 | 2 => Call::RegisterMiner {
            peer_id: if rng.random_bool(0.9) {
                chain.id(who).peer_id().unwrap().to_bytes()
            } else {
                pick_account(rng).peer_id().unwrap().to_bytes()
            },
            endpoint: format!("/ip4/10.0.0.{}/udp/4001/quic-v1", who),
            declared_bytes: rng.random_range(0..64) * 1024,
            collateral: rng.random_range(50..200) * TOKEN,
        },
        3 => Call::UpdateMiner {
            endpoint: "/ip4/10.0.0.1/udp/4002/quic-v1".into(),
            declared_bytes: rng.random_range(0..64) * 1024,
        },
        4 | 5 => {
            // Often a new file on random miners; sometimes a duplicate of a known one.
            if !files.is_empty() && rng.random_bool(0.2) {
                let file_id = files[rng.random_range(0..files.len())];
                let f = chain.ledger.file(&file_id).unwrap();
                Call::DeclareFile {
                    file_id,
                    file_name: "dup".into(),
                    bucket: String::new(),
                    size_bytes: f.size_bytes,
                    fragment_bytes: f.fragment_bytes,
                    tagger: f.tagger,
                    segments: vec![],
                    meta: Vec::new(),
                }
            } else {
                *serial += 1;
                let (_, call) = storage.order(*serial, rng.random_range(1..3), 1024);
                call
            }
        }
        6 | 7 if !files.is_empty() => Call::ReportStored {
            file_id: files[rng.random_range(0..files.len())],
            column: rng.random_range(0..13),
        },
        8 if !files.is_empty() => Call::DeleteFile {
            file_id: files[rng.random_range(0..files.len())],
        },
        9 if !fragments.is_empty() => Call::ReportLost {
            fragment_id: fragments[rng.random_range(0..fragments.len())],
        },
        10 if !restorals.is_empty() => Call::ClaimRestoral {
            fragment_id: restorals[rng.random_range(0..restorals.len())],
        },
        11 if !restorals.is_empty() => Call::CompleteRestoral {
            fragment_id: restorals[rng.random_range(0..restorals.len())],
        },
        12 => {
            if rng.random_bool(0.5) {
                Call::ExitMiner
            } else {
                Call::WithdrawMiner
            }
        }
        13 => {
            let key = common::validator_key(100 + rng.random_range(0..8));
            Call::RegisterCandidate {
                key: key.public().to_bytes(),
                possession: key.proof_of_possession().to_bytes(),
                stake: rng.random_range(500..3000) * TOKEN,
            }
        }
        14 => Call::Bond {
            amount: rng.random_range(0..100) * TOKEN,
        },
        15 => Call::Unbond {
            amount: rng.random_range(0..3000) * TOKEN,
        },
        16 => Call::RentSpace {
            add_gib: rng.random_range(0..3),
            add_blocks: rng.random_range(0..30),
        },
        17 => {
            let delegate = pick_account(rng);
            if rng.random_bool(0.6) {
                Call::Authorize { delegate }
            } else {
                Call::Deauthorize { delegate }
            }
        }
        19 | 20 => {
            // The signer's next set of idle files, honest; or numbered out of turn.
            let params = chain.ledger.params().pois;
            let me = chain.id(who);
            let next = chain.ledger.idle_space(&me).map_or(0, |i| i.next_file);
            let first = if rng.random_bool(0.85) {
                next
            } else {
                next + u64::from(params.files_per_set)
            };
            let mut commitments = Vec::new();
            // Labelled for whom the ledger names (the bare account when not a miner).
            let owner = chain.ledger.idle_replica_owner(&me).unwrap_or(me.0);
            generate_set(&Graph::new(&params), &owner, first, |f| {
                commitments.push(f.commitment.encode())
            });
            Call::CommitIdle {
                first_file: first,
                commitments,
            }
        }
        21 => {
            // The answer to a pending set's challenge once there is one: honest, or with a
            // byte flipped; else a proof for nothing.
            let params = chain.ledger.params().pois;
            let me = chain.id(who);
            let pending = chain
                .ledger
                .idle_space(&me)
                .map(|i| i.pending.clone())
                .unwrap_or_default();
            match pending
                .iter()
                .find_map(|&f| chain.ledger.idle_commit_challenge(&me, f).map(|c| (f, c)))
            {
                Some((first_file, challenge)) => {
                    let owner = chain.ledger.idle_replica_owner(&me).unwrap_or(me.0);
                    let mut proof = prove_commit(&Graph::new(&params), &owner, &challenge).encode();
                    if rng.random_bool(0.35) {
                        // Half the flips land in the last path's hashes (the proof decodes
                        // and is judged wrong: the set is refused), half anywhere (most fail
                        // to decode), so both outcomes come whatever the proof's layout.
                        let at = if rng.random_bool(0.5) {
                            proof.len() - 1 - rng.random_range(0..32)
                        } else {
                            rng.random_range(0..proof.len())
                        };
                        proof[at] ^= 1;
                    }
                    Call::ProveIdle { first_file, proof }
                }
                None => Call::ProveIdle {
                    first_file: rng.random_range(0..8),
                    proof: vec![0; 16],
                },
            }
        }
        22 => {
            // The answer to the signer's space audit: honest (its files made again), or for a
            // round it does not have.
            let params = chain.ledger.params().pois;
            let me = chain.id(who);
            match chain.ledger.space_challenge(&me) {
                Some((audit, challenge)) if rng.random_bool(0.8) => {
                    let mut files = Vec::new();
                    let owner = chain.ledger.idle_replica_owner(&me).unwrap_or(me.0);
                    generate_set(&Graph::new(&params), &owner, audit.first_file, |f| {
                        files.push(f)
                    });
                    let live: Vec<bool> = chain
                        .ledger
                        .idle_sets(&me)
                        .find(|(f, _)| *f == audit.first_file)
                        .map(|(_, s)| s.files.iter().map(|f| f.is_some()).collect())
                        .unwrap_or_else(|| vec![false; files.len()]);
                    let views: Vec<Option<&[u8]>> = files
                        .iter()
                        .zip(&live)
                        .map(|(f, live)| live.then_some(&f.bytes[..]))
                        .collect();
                    Call::SubmitSpaceProof {
                        round: audit.round,
                        proof: prove_space(&params, &challenge, &views).encode(),
                    }
                }
                _ => Call::SubmitSpaceProof {
                    round: rng.random_range(0..4),
                    proof: vec![1; rng.random_range(0..32)],
                },
            }
        }
        23 => {
            // Some of the signer's idle files given up (live ones, or numbers at random).
            let me = chain.id(who);
            let live: Vec<u64> = chain
                .ledger
                .idle_sets(&me)
                .flat_map(|(first, s)| {
                    s.files
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| f.is_some())
                        .map(move |(o, _)| first + o as u64)
                        .collect::<Vec<_>>()
                })
                .collect();
            let files = if !live.is_empty() && rng.random_bool(0.8) {
                let take = rng.random_range(1..=live.len().min(3));
                live[..take].to_vec()
            } else {
                vec![rng.random_range(0..64)]
            };
            Call::ReplaceIdle { files }
        }
        _ => Call::SubmitProof {
            round: rng.random_range(0..4),
            tagger: storage.tagger_id(),
            proof: vec![0; rng.random_range(0..64)],
        },
    }
}

/// What the idle-space calls of a run reached.
fn idle_outcomes(
    events: &[cess_consensus::ledger::Event],
    seen: &mut std::collections::BTreeSet<&'static str>,
) {
    use cess_consensus::ledger::Event;
    for event in events {
        seen.insert(match event {
            Event::IdleCommitted { .. } => "committed",
            Event::IdleCertified { .. } => "certified",
            Event::IdleRefused { .. } => "refused",
            Event::IdleReplaced { .. } => "replaced",
            Event::IdleDecertified { .. } => "decertified",
            Event::SpaceProofValid { .. } => "space valid",
            Event::SpaceProofInvalid { .. } => "space invalid",
            Event::SpaceProofMissing { .. } => "space missed",
            _ => continue,
        });
    }
}

fn run_seed(seed: u64, idle_seen: &mut std::collections::BTreeSet<&'static str>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chain = Chain::new(ACCOUNTS, 4, test_params());
    let mut storage = Storage::new(1);
    let tagger_key = storage.tagger.public().encode();
    chain.register_tagger(0, tagger_key);
    for i in 4..18 {
        chain.register_miner(i, 64 * 1024);
    }
    // Short leases, so that some end (and release their files) within the run.
    for i in 0..6 {
        chain.rent(i, 1, 20 + 5 * i as u64);
    }
    let mut serial = seed * 1_000_000;
    let mut accepted = 0usize;
    let mut refused = 0usize;
    for _ in 0..60 {
        let count = rng.random_range(0..8);
        let mut txs = Vec::new();
        let mut nonces = std::collections::HashMap::new();
        let mut signers: Vec<usize> = (0..ACCOUNTS).collect();
        for k in (1..ACCOUNTS).rev() {
            signers.swap(k, rng.random_range(0..=k));
        }
        for &who in &signers[..count] {
            let call = random_call(&mut rng, &chain, &mut storage, who, &mut serial);
            let key = &chain.accounts[who];
            let nonce = nonces
                .entry(who)
                .or_insert(chain.ledger.account(&key.id()).nonce);
            // A fee above every call's least, so a self-transfer with the same terms is valid.
            let terms = TxTerms {
                nonce: *nonce,
                fee: FEE,
                valid_until: chain.ledger.height() + 10,
            };
            let mut tx = Transaction::sign(key, &chain.ledger.chain_id(), terms, call);
            *nonce += 1;
            match rng.random_range(0..40) {
                0 => tx.signature[5] ^= 0x10,
                1 => tx.nonce += 3,
                _ => {}
            }
            txs.push(tx);
        }
        let before = chain.ledger.clone();
        // A snapshot decodes to the same state: the same bytes again, and the same block
        // applied to it gives the same receipts and root.
        let snapshot = before.encode_snapshot();
        let mut restored = cess_consensus::ledger::Ledger::decode_snapshot(&snapshot)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(restored.encode_snapshot(), snapshot, "seed {seed}");
        let info = chain.next_info();
        let restored_outcome = restored.apply_block(&info, &txs, &CpuBackend);
        let outcome = chain.block(&txs);
        idle_outcomes(&outcome.events, idle_seen);
        assert_eq!(
            (restored_outcome.root, &restored_outcome.receipts),
            (outcome.root, &outcome.receipts),
            "seed {seed}: a ledger from a snapshot applies the block differently"
        );
        restored.assert_storage_invariants();
        // A transaction that was not included changed nothing (replayed without it); one
        // whose call was refused changed only its fee and nonce (replayed as a transfer of 1
        // to itself with the same terms, which changes exactly those).
        let mut replayed = Vec::new();
        for (tx, receipt) in txs.iter().zip(&outcome.receipts) {
            match receipt {
                Ok(()) => {
                    accepted += 1;
                    replayed.push(tx.clone());
                }
                Err(e) if e.charged() => {
                    refused += 1;
                    let key = chain
                        .accounts
                        .iter()
                        .find(|k| k.id() == tx.signer)
                        .expect("our signer");
                    replayed.push(Transaction::sign(
                        key,
                        &chain.ledger.chain_id(),
                        tx.terms(),
                        Call::Transfer {
                            to: tx.signer,
                            amount: 1,
                        },
                    ));
                }
                Err(_) => refused += 1,
            }
        }
        if replayed != txs {
            let mut replay = before;
            let replay_outcome = replay.apply_block(&info, &replayed, &CpuBackend);
            assert_eq!(
                replay_outcome.root, outcome.root,
                "seed {seed}: a refused transaction changed more than its fee and nonce ({:?}, replayed {:?})",
                outcome.receipts, replay_outcome.receipts
            );
        }
        // Occasionally report real storage for pending fragments so files become active.
        let reports: Vec<Transaction> = chain
            .ledger
            .files()
            .flat_map(|(file_id, f)| {
                f.segments[0]
                    .fragments
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| !x.stored && x.miner.is_some())
                    .map(move |(c, x)| (*file_id, c as u16, x.miner.unwrap()))
            })
            .filter(|_| rng.random_bool(0.3))
            .filter_map(|(file_id, column, miner)| {
                let i = (0..ACCOUNTS).find(|&i| chain.id(i) == miner)?;
                Some((i, file_id, column))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(i, file_id, column)| chain.tx(i, Call::ReportStored { file_id, column }))
            .take(1)
            .collect();
        if !reports.is_empty() {
            chain.block(&reports);
        }
    }
    eprintln!(
        "seed {seed}: {accepted} accepted, {refused} refused, {} files, {} restorals",
        chain.ledger.files().count(),
        chain.ledger.restorals().count()
    );
    assert!(
        accepted > 20 && refused > 20,
        "seed {seed}: the generator exercises both ({accepted} accepted, {refused} refused)"
    );
}

#[test]
fn random_transaction_sequences_keep_the_invariants() {
    let seeds: u64 = std::env::var("CESS_LEDGER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut idle_seen = std::collections::BTreeSet::new();
    for seed in 0..seeds {
        run_seed(seed, &mut idle_seen);
    }
    eprintln!("idle space outcomes reached: {idle_seen:?}");
    for wanted in [
        "committed",
        "certified",
        "refused",
        "space missed",
        "decertified",
    ] {
        assert!(
            idle_seen.contains(wanted),
            "the sequences reach {wanted:?} (reached {idle_seen:?})"
        );
    }
}

/// The restoral state machine under seeded random sequences: losses reported (by holders and
/// by others), claims (by any miner, eligible or not), completions (by claimants and not),
/// claims left to expire, exits and withdrawals, new files. After every block the ledger's
/// invariants hold (`Chain::block` asserts them), and this test checks the restoral rules
/// again from the public API, as plainly as it can: a fragment has a holder or an open order
/// and never both (neither only once its file is lost), at most one claimant that holds
/// nothing else of its segment, no miner holds two fragments of a segment, and a file's state
/// says what its fragments say. 24 seeds by default (the rarest outcome, "lost", needs 9 of
/// 12 fragments of a segment lost together); `CESS_LEDGER_SEEDS=n` runs more.
#[test]
fn random_restoral_sequences_keep_their_invariants() {
    let seeds: u64 = std::env::var("CESS_LEDGER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..seeds {
        run_restoral_seed(seed, &mut seen);
    }
    for wanted in [
        "at-risk",
        "lost",
        "recovered",
        "done",
        "expired",
        "barred",
        "withdrawn",
        "released",
    ] {
        assert!(
            seen.contains(wanted),
            "the sequences reach {wanted:?} (reached {seen:?})"
        );
    }
}

fn run_restoral_seed(seed: u64, seen: &mut std::collections::BTreeSet<&'static str>) {
    use cess_consensus::ledger::{Event, FileState};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = cess_consensus::LedgerParams {
        restoral_claim_blocks: rng.random_range(3..8),
        restoral_expiries_max: 2,
        restoral_bar_blocks: 10,
        // No audit rounds: a loss report waits for the reporter's open audits (their own
        // tests), and these sequences are about restoral.
        audit_period_blocks: 100_000,
        ..test_params()
    };
    let mut chain = Chain::new(ACCOUNTS, 4, params);
    let mut storage = Storage::new(2);
    chain.register_tagger(3, storage.tagger.public().encode());
    let miners: Vec<usize> = (4..20).collect();
    for &i in &miners {
        chain.register_miner(i, 64 * 1024);
    }
    chain.rent(0, 1, 100_000);
    let mut serial = 7_000_000 + seed * 1000;
    let mut store = |chain: &mut Chain, rng: &mut ChaCha8Rng| {
        serial += 1;
        let (file_id, call) = storage.order(serial, rng.random_range(1..3), 1024);
        if chain.run(0, call).is_err() {
            return;
        }
        let reports: Vec<Transaction> = (0..12u16)
            .filter_map(|column| {
                let f = chain.ledger.file(&file_id)?;
                let holder = f.segments[0].fragments[usize::from(column)].miner?;
                Some(chain.tx(
                    chain.index_of(&holder),
                    Call::ReportStored { file_id, column },
                ))
            })
            .collect();
        chain.block(&reports);
    };
    for _ in 0..4 {
        store(&mut chain, &mut rng);
    }
    for _ in 0..120 {
        let fragments: Vec<(FragmentId, Option<cess_consensus::AccountId>)> = chain
            .ledger
            .files()
            .flat_map(|(_, f)| f.segments.iter().flat_map(|s| &s.fragments))
            .map(|f| (f.id, f.miner))
            .collect();
        let orders: Vec<(FragmentId, Option<cess_consensus::AccountId>)> = chain
            .ledger
            .restorals()
            .map(|(id, o)| (*id, o.claim.map(|(m, _)| m)))
            .collect();
        let mut signers: Vec<usize> = miners.clone();
        for k in (1..signers.len()).rev() {
            signers.swap(k, rng.random_range(0..=k));
        }
        let mut txs = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for _ in 0..rng.random_range(0..6) {
            let random_miner = signers[rng.random_range(0..signers.len())];
            let (signer, call) = match rng.random_range(0..21) {
                0..=3 if !fragments.is_empty() => {
                    // Half the losses hit the first file's first segment, so that some
                    // segments fall below what rebuilds them.
                    let first: Vec<(FragmentId, Option<cess_consensus::AccountId>)> = chain
                        .ledger
                        .files()
                        .next()
                        .map(|(_, f)| {
                            f.segments[0]
                                .fragments
                                .iter()
                                .map(|x| (x.id, x.miner))
                                .collect()
                        })
                        .unwrap_or_default();
                    let (fragment_id, holder) = if !first.is_empty() && rng.random_bool(0.5) {
                        first[rng.random_range(0..first.len())]
                    } else {
                        fragments[rng.random_range(0..fragments.len())]
                    };
                    let signer = match holder {
                        Some(h) if rng.random_bool(0.9) => chain.index_of(&h),
                        _ => random_miner,
                    };
                    (signer, Call::ReportLost { fragment_id })
                }
                4..=9 if !orders.is_empty() => {
                    let (fragment_id, _) = orders[rng.random_range(0..orders.len())];
                    (random_miner, Call::ClaimRestoral { fragment_id })
                }
                10..=16 if !orders.is_empty() => {
                    let (fragment_id, claimant) = orders[rng.random_range(0..orders.len())];
                    let signer = match claimant {
                        // Sometimes a claimant lets its claim expire.
                        Some(c) if rng.random_bool(0.7) => chain.index_of(&c),
                        _ => random_miner,
                    };
                    if rng.random_bool(0.1) {
                        (signer, Call::ReleaseClaim { fragment_id })
                    } else {
                        (signer, Call::CompleteRestoral { fragment_id })
                    }
                }
                // Rarely: a leaving miner's fragments count as still there.
                17 if rng.random_bool(0.2) => (random_miner, Call::ExitMiner),
                18 => (random_miner, Call::WithdrawMiner),
                19 => {
                    // The owner deletes a file (whatever its state, lost ones included).
                    let files: Vec<[u8; 32]> = chain.ledger.files().map(|(id, _)| *id).collect();
                    if files.is_empty() || used.contains(&0) {
                        continue;
                    }
                    used.insert(0);
                    let file_id = files[rng.random_range(0..files.len())];
                    txs.push(chain.tx(0, Call::DeleteFile { file_id }));
                    continue;
                }
                _ => continue,
            };
            if chain.ledger.miner(&chain.id(signer)).is_none()
                && !matches!(call, Call::WithdrawMiner)
            {
                continue;
            }
            if used.insert(signer) {
                txs.push(chain.tx(signer, call));
            }
        }
        // The state goes through a snapshot and back (the new file states and the lost-at
        // index included) and applies the block the same way.
        let snapshot = chain.ledger.encode_snapshot();
        let mut restored = cess_consensus::ledger::Ledger::decode_snapshot(&snapshot)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let restored_root = restored
            .apply_block(&chain.next_info(), &txs, &CpuBackend)
            .root;
        let outcome = chain.block(&txs);
        assert_eq!(
            restored_root, outcome.root,
            "seed {seed}: a snapshot applies alike"
        );
        for (tx, receipt) in txs.iter().zip(&outcome.receipts) {
            match (&tx.call, receipt) {
                (_, Err(TxError::ClaimsBarred { .. })) => {
                    seen.insert("barred");
                }
                (Call::WithdrawMiner, Ok(())) => {
                    seen.insert("withdrawn");
                }
                _ => {}
            }
        }
        for event in &outcome.events {
            match event {
                Event::FileAtRisk { .. } => seen.insert("at-risk"),
                Event::FileLost { .. } => seen.insert("lost"),
                Event::FileRecovered { .. } => seen.insert("recovered"),
                Event::RestoralDone { .. } => seen.insert("done"),
                Event::RestoralClaimExpired { .. } => seen.insert("expired"),
                Event::RestoralClaimReleased { .. } => seen.insert("released"),
                _ => false,
            };
        }
        if rng.random_bool(0.1) {
            store(&mut chain, &mut rng);
        }
        // The rules again, plainly.
        for (file_id, file) in chain.ledger.files() {
            let lost = matches!(file.state, FileState::Lost { .. });
            let mut unheld_total = 0;
            for segment in &file.segments {
                let holders: Vec<_> = segment.fragments.iter().filter_map(|f| f.miner).collect();
                let distinct: std::collections::BTreeSet<_> = holders.iter().collect();
                assert_eq!(
                    distinct.len(),
                    holders.len(),
                    "seed {seed}: two fragments of a segment on one miner"
                );
                for f in &segment.fragments {
                    let order = chain.ledger.restoral(&f.id);
                    match (f.miner, order) {
                        (Some(_), None) => {}
                        (None, Some(order)) => {
                            assert!(!lost, "seed {seed}: no order for a lost file");
                            unheld_total += 1;
                            if let Some((claimant, _)) = order.claim {
                                assert!(
                                    !holders.contains(&claimant),
                                    "seed {seed}: a claimant holds a fragment of its segment"
                                );
                                assert_ne!(
                                    claimant, order.lost_by,
                                    "seed {seed}: a claimant rebuilds its own loss"
                                );
                            }
                        }
                        (None, None) => assert!(
                            lost,
                            "seed {seed}: a fragment with no holder and no order in {file_id:?}"
                        ),
                        (Some(_), Some(_)) => panic!("seed {seed}: a held fragment under restoral"),
                    }
                }
            }
            match file.state {
                FileState::Active => assert_eq!(unheld_total, 0),
                FileState::Recovery { unheld, .. } => assert_eq!(unheld as usize, unheld_total),
                FileState::Lost { .. } | FileState::Pending => {}
            }
        }
    }
}
