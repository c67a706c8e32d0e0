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
