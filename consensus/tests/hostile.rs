//! Hostile peers against validators over real QUIC on loopback (issue 22, item 4): a client
//! that claims a frame larger than a client may send, one that sends a frame's length and then
//! stalls, and a flood of badly signed transactions while the validators commit. Each is cut
//! or ignored, and the chain keeps committing; and the process (four validators and the
//! attacker) grows by less than [`RSS_GROWTH_MAX_BYTES`] meanwhile (from `/proc/self/status`).
//! The storage nodes' half is `transport/tests/hostile.rs`.

use cess_consensus::bft::{CoreConfig, NetMsg};
use cess_consensus::ledger::{Ledger, LedgerParams, TOKEN};
use cess_consensus::net::{self, CONSENSUS_PROTOCOL, ValidatorHandle};
use cess_consensus::sim::genesis;
use cess_consensus::{Call, Transaction};
use cess_transport::NodeKey;
use cess_transport::quic::{Endpoint, Limits};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Four validators and the attacker together grow by less than this during an attack.
const RSS_GROWTH_MAX_BYTES: u64 = 256 << 20;

/// The attacks run one at a time: each measures the whole process's memory.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn assert_grew_less_than_bound(before: u64, what: &str) {
    let grown = cess_transport::attacks::resident_bytes()
        .unwrap()
        .saturating_sub(before);
    assert!(
        grown < RSS_GROWTH_MAX_BYTES,
        "{what}: the process grew by {grown} bytes"
    );
}

fn network() -> (
    Ledger,
    Vec<ValidatorHandle>,
    Vec<cess_consensus::AccountKey>,
) {
    let params = LedgerParams {
        validators_per_era: 4,
        ..LedgerParams::default()
    };
    let (genesis, keys, users) = genesis(4, 2, 91, params);
    let ledger = Ledger::genesis(&genesis).unwrap();
    let config = CoreConfig {
        empty_block_interval_ms: 200,
        ..CoreConfig::default()
    };
    let handles = net::start_loopback(&ledger, &keys, config).unwrap();
    (ledger, handles, users)
}

/// A client with a fresh key, its connection to validator 0.
async fn hostile(validator: &ValidatorHandle) -> (Endpoint, cess_transport::quic::Connection) {
    let endpoint = Endpoint::client_for(
        CONSENSUS_PROTOCOL,
        Arc::new(NodeKey::generate()),
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
    )
    .unwrap();
    let connection = endpoint
        .dial(&validator.local_addr().unwrap())
        .await
        .unwrap();
    (endpoint, connection)
}

/// How the validator closed `connection`, waiting at most `within`.
async fn closed_reason(
    connection: &cess_transport::quic::Connection,
    within: Duration,
) -> Option<String> {
    let closed = tokio::time::timeout(within, connection.inner.closed())
        .await
        .ok()?;
    Some(closed.to_string())
}

/// Commits validator `i` makes within `window`.
async fn commits_within(handle: &ValidatorHandle, window: Duration) -> usize {
    let mut commits = handle.commits();
    let deadline = Instant::now() + window;
    let mut count = 0;
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, commits.recv()).await {
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_claiming_a_frame_over_its_bound_is_cut_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_, handles, _) = network();
    let before = cess_transport::attacks::resident_bytes().unwrap();
    let (_endpoint, connection) = hostile(&handles[0]).await;
    let (mut send, _recv) = connection.inner.open_bi().await.unwrap();
    // 9 MiB: under a validator's bound (a proposal's), over what a client may send.
    send.write_all(&(9u32 << 20).to_le_bytes()).await.unwrap();
    send.write_all(&[0u8; 1024]).await.unwrap();
    let reason = closed_reason(&connection, Duration::from_secs(5)).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("frame too long")),
        "not cut: {reason:?}"
    );
    assert_grew_less_than_bound(before, "an oversized frame");
    for h in &handles {
        h.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_stalls_after_its_length_is_cut() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_, handles, _) = network();
    let before = cess_transport::attacks::resident_bytes().unwrap();
    let (_endpoint, connection) = hostile(&handles[0]).await;
    let (mut send, _recv) = connection.inner.open_bi().await.unwrap();
    send.write_all(&100_000u32.to_le_bytes()).await.unwrap();
    send.write_all(&[1u8; 10]).await.unwrap();
    let started = Instant::now();
    let reason = closed_reason(&connection, Duration::from_secs(40)).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("frame too slow")),
        "not cut: {reason:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    // The validators kept committing meanwhile.
    assert!(commits_within(&handles[1], Duration::from_secs(3)).await > 0);
    assert_grew_less_than_bound(before, "a slow frame");
    for h in &handles {
        h.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_badly_signed_transactions_does_not_stop_commits() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (ledger, handles, users) = network();
    let quiet = commits_within(&handles[0], Duration::from_secs(4)).await;
    assert!(quiet >= 4, "{quiet} commits in 4 s without a flood");
    // Transfers signed, then broken: each costs the validator a signature check, no more.
    let txs: Vec<Transaction> = (0..2000u64)
        .map(|nonce| {
            let mut tx = ledger.transaction_with_nonce(
                &users[0],
                nonce,
                Call::Transfer {
                    to: users[1].id(),
                    amount: TOKEN,
                },
            );
            tx.signature[0] ^= 1;
            tx
        })
        .collect();
    let frame = {
        let body = NetMsg::Txs(txs).encode();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    };
    let (_endpoint, connection) = hostile(&handles[0]).await;
    let flooding = Instant::now() + Duration::from_secs(8);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let connection = connection.inner.clone();
        let frame = frame.clone();
        floods.push(tokio::spawn(async move {
            let Ok((mut send, _recv)) = connection.open_bi().await else {
                return 0usize;
            };
            let mut sent = 0;
            while Instant::now() < flooding {
                if send.write_all(&frame).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        }));
    }
    let before = cess_transport::attacks::resident_bytes().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = commits_within(&handles[0], Duration::from_secs(4)).await;
    assert_grew_less_than_bound(before, "a flood of badly signed transactions");
    let mut sent = 0;
    for f in floods {
        sent += f.await.unwrap();
    }
    assert!(sent > 4, "the flood sent {sent} frames");
    // Two cores check the flood's signatures and run four validators: the chain slows, but
    // it does not stop.
    assert!(
        during * 4 >= quiet,
        "{during} commits in 4 s under the flood, {quiet} without"
    );
    for h in &handles {
        h.shutdown();
    }
}
