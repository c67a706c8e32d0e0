//! The stable stand-in for the cargo-fuzz target in `consensus/fuzz/` (run by `.ci/fuzz`):
//! mutations of valid encodings of every message kind a validator reads from a peer
//! (`NetMsg`), of transactions, of a genesis file and of the write-ahead log's entries. Nothing
//! panics, and whatever decodes re-encodes to bytes that decode to the same encoding.

mod common;

use cess_consensus::bft::{Core, CoreConfig, NetMsg, Output, Timeout};
use cess_consensus::ledger::TOKEN;
use cess_consensus::wal::WalEntry;
use cess_consensus::{Call, Genesis, Transaction};
use common::{Chain, test_params};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Valid messages of every kind, and the write-ahead log entries the validators wrote: four
/// validators in memory deciding two blocks, one with a transaction.
fn messages() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let chain = Chain::new(5, 4, test_params());
    let tx = chain.tx(
        4,
        Call::Transfer {
            to: chain.id(0),
            amount: TOKEN,
        },
    );
    let mut cores: Vec<Core> = (0..4)
        .map(|i| {
            Core::new(
                chain.ledger.clone(),
                chain.validator_keys[i].clone(),
                chain.id(i),
                CoreConfig::default(),
                0,
            )
        })
        .collect();
    let ids: Vec<_> = (0..4).map(|i| chain.id(i)).collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    // (to, from, message) in flight, and each core's pending timeouts.
    let mut inbox = std::collections::VecDeque::new();
    let mut timeouts: Vec<Vec<Timeout>> = vec![Vec::new(); 4];
    let take = |from: usize,
                outputs: Vec<Output>,
                inbox: &mut std::collections::VecDeque<(usize, usize, NetMsg)>,
                timeouts: &mut Vec<Vec<Timeout>>,
                (out, entries): (&mut Vec<Vec<u8>>, &mut Vec<Vec<u8>>)| {
        for o in outputs {
            match o {
                Output::Broadcast(m) => {
                    out.push(m.encode());
                    for to in (0..4).filter(|&to| to != from) {
                        inbox.push_back((to, from, m.clone()));
                    }
                }
                Output::Send(to, m) => {
                    out.push(m.encode());
                    if let Some(to) = ids.iter().position(|id| *id == to) {
                        inbox.push_back((to, from, m));
                    }
                }
                Output::ScheduleTimeout(t, _) => timeouts[from].push(t),
                Output::WalAppend { entry, .. } => entries.push(entry.encode()),
                _ => {}
            }
        }
    };
    let mut now = 1_000;
    for (i, core) in cores.iter_mut().enumerate() {
        let outputs = core.start(now);
        take(
            i,
            outputs,
            &mut inbox,
            &mut timeouts,
            (&mut out, &mut entries),
        );
    }
    let verified = cess_consensus::tx::VerifiedTx::check(tx.clone(), &chain.ledger.chain_id())
        .expect("a signed transaction");
    let (_, outputs) = cores[0].submit(vec![verified], now);
    take(
        0,
        outputs,
        &mut inbox,
        &mut timeouts,
        (&mut out, &mut entries),
    );
    for _ in 0..20_000 {
        if cores.iter().all(|c| c.decided(2).is_some()) {
            break;
        }
        if let Some((to, from, m)) = inbox.pop_front() {
            let outputs = cores[to].on_message(ids[from], m, now);
            take(
                to,
                outputs,
                &mut inbox,
                &mut timeouts,
                (&mut out, &mut entries),
            );
            continue;
        }
        // Quiet: time passes and every core's timeouts fire.
        now += 600;
        for (i, core) in cores.iter_mut().enumerate() {
            for t in std::mem::take(&mut timeouts[i]) {
                let outputs = core.on_timeout(t, now);
                take(
                    i,
                    outputs,
                    &mut inbox,
                    &mut timeouts,
                    (&mut out, &mut entries),
                );
            }
        }
    }
    let core = &cores[0];
    if let Some((block, commit)) = core.decided(1) {
        out.push(
            NetMsg::SyncResponse {
                block: Box::new((**block).clone()),
                commit: commit.clone(),
            }
            .encode(),
        );
        out.push(
            NetMsg::HeaderResponse {
                header: Box::new(block.header()),
                commit: commit.clone(),
            }
            .encode(),
        );
    }
    out.push(
        NetMsg::HeaderRequest {
            height: 10,
            step: 10,
            count: 5,
        }
        .encode(),
    );
    out.push(NetMsg::CheckpointRequest { offset: 4096 }.encode());
    out.push(
        NetMsg::CheckpointChunk {
            height: 25,
            total_bytes: 100,
            offset: 90,
            bytes: vec![7; 10],
        }
        .encode(),
    );
    out.push(NetMsg::Txs(vec![tx]).encode());
    out.push(
        NetMsg::SyncRequest {
            height: 7,
            count: 3,
        }
        .encode(),
    );
    out.push(NetMsg::Tip { height: 9 }.encode());
    (out, entries)
}

fn mutate(rng: &mut ChaCha8Rng, valid: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = valid[rng.random_range(0..valid.len())].clone();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !bytes.is_empty() => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !bytes.is_empty() => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            2 => {
                let len = rng.random_range(0..=bytes.len());
                bytes.truncate(len);
            }
            3 => {
                let mut extra = vec![0u8; rng.random_range(1..64)];
                rng.fill_bytes(&mut extra);
                bytes.extend_from_slice(&extra);
            }
            _ => {
                // A length or count field set huge: 4 bytes of 0xff somewhere.
                if bytes.len() >= 4 {
                    let at = rng.random_range(0..bytes.len() - 3);
                    bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
                }
            }
        }
    }
    bytes
}

#[test]
fn mutated_messages_transactions_and_genesis_never_panic() {
    let (messages, entries) = messages();
    let entry_kinds: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| WalEntry::decode(e).expect("valid").kind())
        .collect();
    for kind in ["proposal", "vote", "proposed_value"] {
        assert!(
            entry_kinds.contains(kind),
            "no {kind} in the log entries: {entry_kinds:?}"
        );
    }
    let kinds: std::collections::BTreeSet<&str> = messages
        .iter()
        .map(|m| NetMsg::decode(m).expect("valid").kind())
        .collect();
    for kind in [
        "proposal",
        "vote",
        "txs",
        "sync_request",
        "sync_response",
        "tip",
    ] {
        assert!(kinds.contains(kind), "no {kind} in the seeds: {kinds:?}");
    }
    let chain = Chain::new(3, 2, test_params());
    let transactions: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            chain
                .tx(
                    i,
                    Call::Transfer {
                        to: chain.id((i + 1) % 3),
                        amount: 5,
                    },
                )
                .encode()
        })
        .collect();
    let genesis = vec![chain.genesis.encode()];

    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let mut decoded = [0usize; 4];
    for _ in 0..3000 {
        let bytes = mutate(&mut rng, &messages);
        if let Ok(m) = NetMsg::decode(&bytes) {
            let again = NetMsg::decode(&m.encode()).expect("a decoded message re-encodes");
            assert_eq!(again.encode(), m.encode());
            decoded[0] += 1;
        }
        let bytes = mutate(&mut rng, &transactions);
        if let Ok(tx) = Transaction::decode(&bytes) {
            assert_eq!(Transaction::decode(&tx.encode()).expect("re-encodes"), tx);
            decoded[1] += 1;
        }
        let bytes = mutate(&mut rng, &entries);
        if let Ok(e) = WalEntry::decode(&bytes) {
            let again = WalEntry::decode(&e.encode()).expect("a decoded entry re-encodes");
            assert_eq!(again.encode(), e.encode());
            decoded[3] += 1;
        }
    }
    for _ in 0..300 {
        let bytes = mutate(&mut rng, &genesis);
        if let Ok(g) = Genesis::decode(&bytes) {
            let again = Genesis::decode(&g.encode()).expect("re-encodes");
            assert_eq!(again.encode(), g.encode());
            decoded[2] += 1;
        }
    }
    // The mutations reach past the first checks: some still decode.
    assert!(decoded.iter().all(|&n| n > 0), "decoded {decoded:?}");
}
