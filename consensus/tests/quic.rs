//! Four validators in one process over real QUIC on loopback: they finalize blocks carrying
//! transactions submitted to one of them, keep finalizing with one stopped, and agree on every
//! block and state root.

use cess_consensus::Call;
use cess_consensus::bft::CoreConfig;
use cess_consensus::ledger::{Ledger, LedgerParams, TOKEN};
use cess_consensus::net;
use cess_consensus::sim::genesis;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Per validator: height → (block hash, state root, transactions).
type Seen = BTreeMap<u64, ([u8; 32], [u8; 32], usize)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_over_quic_finalize_and_survive_one_stopping() {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, users) = genesis(4, 2, 77, params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let handles = net::start_loopback(&ledger, &keys, CoreConfig::default()).unwrap();
    let mut commits: Vec<_> = handles.iter().map(|h| h.commits()).collect();
    for nonce in 0..20 {
        let tx = ledger.transaction_with_nonce(
            &users[0],
            nonce,
            Call::Transfer {
                to: users[1].id(),
                amount: TOKEN,
            },
        );
        let answers = handles[1].submit(vec![tx]).await.unwrap();
        assert!(answers[0].is_ok(), "{answers:?}");
    }

    // Collect commits: height → (hash, root) per validator.
    let mut seen: Vec<Seen> = vec![BTreeMap::new(); 4];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let collect = |seen: &mut Vec<Seen>,
                   commits: &mut Vec<
        tokio::sync::broadcast::Receiver<Arc<cess_consensus::bft::Committed>>,
    >,
                   live: &[usize]| {
        for &i in live {
            while let Ok(c) = commits[i].try_recv() {
                seen[i].insert(c.height, (c.hash.0, c.outcome.root, c.block.txs.len()));
            }
        }
    };
    while seen.iter().any(|s| s.len() < 5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress: {:?}",
            seen.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        collect(&mut seen, &mut commits, &[0, 1, 2, 3]);
    }
    let txs: usize = seen[0].values().map(|(_, _, n)| n).sum();

    // Stop validator 3: the other three are a quorum and keep going.
    handles[3].shutdown();
    let reached = seen[0].keys().max().copied().unwrap();
    while [0, 1, 2]
        .iter()
        .any(|&i| seen[i].keys().max().copied().unwrap_or(0) < reached + 5)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress with one validator down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        collect(&mut seen, &mut commits, &[0, 1, 2]);
    }
    for i in 1..4 {
        for (height, value) in &seen[i] {
            if let Some(other) = seen[0].get(height) {
                assert_eq!(
                    other, value,
                    "validators 0 and {i} differ at height {height}"
                );
            }
        }
    }
    assert!(
        txs + seen[0].values().map(|(_, _, n)| n).sum::<usize>() > 0,
        "transactions were finalized"
    );
    for h in &handles {
        h.shutdown();
    }
}

/// A follower (not a validator) keeps a replica over QUIC from the validators, sees a
/// submitted transfer included and a refused one refused with the ledger's reason, and has the
/// validators' state root at the height it reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_over_quic_tracks_the_validators_and_reports_inclusion() {
    use cess_consensus::follow::FollowerConfig;
    use cess_consensus::net::{FollowerHandle, InclusionError};
    use cess_transport::identity::NodeKey;
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, users) = genesis(4, 3, 78, params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let handles = net::start_loopback(&ledger, &keys, CoreConfig::default()).unwrap();
    let addrs: Vec<_> = handles.iter().map(|h| h.local_addr().unwrap()).collect();
    let mut commits = handles[0].commits();
    let follower_key = Arc::new(NodeKey::from_ed25519(users[2].ed25519().clone()));
    let follower = net::follow(
        ledger.clone(),
        follower_key,
        addrs,
        FollowerConfig::default(),
    )
    .unwrap();

    // One receiver per waiter: both may be in one block.
    let mut blocks = follower.applied();
    let mut blocks_again = follower.applied();
    let good = ledger.transaction_with_nonce(
        &users[0],
        0,
        Call::Transfer {
            to: users[1].id(),
            amount: TOKEN,
        },
    );
    let overdraft = ledger.transaction_with_nonce(
        &users[0],
        1,
        Call::Transfer {
            to: users[1].id(),
            amount: 10_000_000 * TOKEN,
        },
    );
    let answers = handles[1]
        .submit(vec![good.clone(), overdraft.clone()])
        .await
        .unwrap();
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    let timeout = Duration::from_secs(60);
    let included = FollowerHandle::wait_for_inclusion(&mut blocks, &good, timeout)
        .await
        .unwrap();
    let refused = FollowerHandle::wait_for_inclusion(&mut blocks_again, &overdraft, timeout).await;
    assert!(
        matches!(
            refused,
            Err(InclusionError::Refused {
                reason: cess_consensus::TxError::InsufficientBalance { .. },
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        follower.with_ledger(|l| l.account(&users[1].id()).balance),
        1_000_000 * TOKEN + TOKEN
    );

    // The replica's root at a height equals the validators'.
    let target = included + 3;
    let status = follower.wait_for_height(target, timeout).await.unwrap();
    assert!(status.diverged.is_none());
    let root = loop {
        let c = tokio::time::timeout(timeout, commits.recv())
            .await
            .expect("commits")
            .expect("commit stream");
        if c.height == status.height {
            break c.outcome.root;
        }
        assert!(c.height < status.height, "missed the height");
    };
    let replica_root = follower.with_ledger(|l| {
        assert!(l.height() >= status.height);
        status.root
    });
    assert_eq!(replica_root, root, "the follower's root is the validators'");
    follower.shutdown();
    for h in &handles {
        h.shutdown();
    }
}
