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

/// Live validator sets over QUIC: six nodes, four elected at genesis. The two outside know
/// only the genesis validators' addresses and the genesis validators know only each other's:
/// the outsiders follow by asking members for blocks, put their endpoints on the chain and
/// bond more stake, and the next era's election replaces two validators with them. The
/// members dial the newcomers at the endpoints the chain gives, drop the retired, and the
/// chain keeps committing across the boundary with the newcomers' precommits in its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_era_replacing_two_of_four_validators_over_quic_keeps_committing() {
    use cess_consensus::bft::Core;
    use cess_transport::identity::{NodeAddr, NodeKey};
    let era_blocks = 30;
    let params = LedgerParams {
        validators_per_era: 4,
        epoch_blocks: 5,
        era_blocks,
        ..LedgerParams::default()
    };
    let (genesis, keys, _) = genesis(6, 1, 79, params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let genesis_set: Vec<_> = ledger.validators().iter().map(|v| v.account).collect();
    let (members, outsiders): (Vec<usize>, Vec<usize>) =
        (0..6).partition(|&i| genesis_set.contains(&keys[i].0.id()));
    assert_eq!(outsiders.len(), 2);
    let sockets: Vec<_> = (0..6)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<NodeAddr> = sockets
        .iter()
        .zip(&keys)
        .map(|(socket, (account, _))| NodeAddr {
            socket: socket.local_addr().unwrap(),
            peer: account.id().peer_id().unwrap(),
        })
        .collect();
    drop(sockets);
    let mut handles = Vec::new();
    for (i, (account, validator_key)) in keys.iter().enumerate() {
        let core = Core::new(
            ledger.clone(),
            validator_key.clone(),
            account.id(),
            CoreConfig::default(),
            0,
        );
        // Only the genesis validators' addresses, as a newcomer's configuration would have.
        let peers = members
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| addrs[j].clone())
            .collect();
        let node_key = Arc::new(NodeKey::from_ed25519(account.ed25519().clone()));
        handles.push(net::start(core, node_key, addrs[i].socket, peers).unwrap());
    }
    let mut commits: Vec<_> = handles.iter().map(|h| h.commits()).collect();
    for &i in &outsiders {
        let account = &keys[i].0;
        let endpoint = format!("/ip4/127.0.0.1/udp/{}/quic-v1", addrs[i].socket.port());
        let txs = vec![
            ledger.transaction_with_nonce(account, 0, Call::SetValidatorEndpoint { endpoint }),
            ledger.transaction_with_nonce(
                account,
                1,
                Call::Bond {
                    amount: 8_000 * TOKEN,
                },
            ),
        ];
        let answers = handles[members[0]].submit(txs).await.unwrap();
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    }
    // height → (hash, signers) per node.
    type Signed = BTreeMap<u64, ([u8; 32], Vec<cess_consensus::AccountId>)>;
    let mut seen: Vec<Signed> = vec![BTreeMap::new(); 6];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut boundary = None;
    let mut new_set = Vec::new();
    loop {
        for (i, receiver) in commits.iter_mut().enumerate() {
            while let Ok(c) = receiver.try_recv() {
                let signers = c.commit.signatures.iter().map(|(a, _)| *a).collect();
                seen[i].insert(c.height, (c.hash.0, signers));
                for event in &c.outcome.events {
                    if let cess_consensus::ledger::Event::ValidatorsElected { validators, .. } =
                        event
                        && boundary.is_none()
                        && outsiders
                            .iter()
                            .all(|&o| validators.contains(&keys[o].0.id()))
                    {
                        boundary = Some(c.height + 1);
                        new_set = validators.clone();
                    }
                }
            }
        }
        // Ten heights past the boundary everywhere, and each newcomer in some commit after
        // it (a commit carries the first quorum of precommits: a newcomer still catching up
        // may be left out of the first few).
        if let Some(b) = boundary
            && seen
                .iter()
                .all(|s| s.keys().max().is_some_and(|&h| h >= b + 10))
            && outsiders.iter().all(|&o| {
                seen[members[0]]
                    .range(b..)
                    .any(|(_, (_, signers))| signers.contains(&keys[o].0.id()))
            })
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "boundary {boundary:?}; heights {:?}",
            seen.iter()
                .map(|s| s.keys().max().copied())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let boundary = boundary.unwrap();
    eprintln!("the set changed at height {boundary}");
    let retired: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| !new_set.contains(&keys[i].0.id()))
        .collect();
    assert_eq!(retired.len(), 2, "two genesis validators retired");
    for &i in &retired {
        assert!(
            !seen[members[0]]
                .range(boundary..boundary + 10)
                .any(|(_, (_, signers))| signers.contains(&keys[i].0.id())),
            "retired {i} signs no commit after the boundary"
        );
    }
    for &o in &outsiders {
        assert!(
            seen[members[0]]
                .range(boundary..)
                .any(|(_, (_, signers))| signers.contains(&keys[o].0.id())),
            "newcomer {o} signs commits after the boundary"
        );
    }
    for i in 1..6 {
        for (height, (hash, _)) in &seen[i] {
            if let Some((other, _)) = seen[0].get(height) {
                assert_eq!(other, hash, "nodes 0 and {i} differ at height {height}");
            }
        }
    }
    for h in &handles {
        h.shutdown();
    }
}
