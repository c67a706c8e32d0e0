//! Audits in the running network, as processes on loopback: a devnet (4 validators, a tagger,
//! 12 miners) and a put. Every miner holding data passes an audit; a miner whose fragment was
//! deleted behind its back fails its next audit and is penalised while the others pass in the
//! same round; a miner restarted between a challenge and its deadline still answers in time.

mod common;

use cess_engine::{Class, OpenOptions, Store, Target};
use common::{Network, cess, ok, start_miner, status, stop_miner};
use std::path::Path;
use std::time::{Duration, Instant};

fn audits(dir: &Path, i: usize) -> Vec<serde_json::Value> {
    status(dir, i)
        .and_then(|s| s["chain"]["audits"].as_array().cloned())
        .unwrap_or_default()
}

/// The result node `i` records for `round`, once it is a verdict.
fn verdict(dir: &Path, i: usize, round: u64) -> Option<String> {
    audits(dir, i)
        .into_iter()
        .find(|a| a["round"] == round)
        .and_then(|a| a["result"].as_str().map(String::from))
        .filter(|r| r == "valid" || r == "missed" || r.starts_with("invalid"))
}

fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deletes one fragment from stopped miner `i`'s store, behind its back.
fn delete_a_fragment(dir: &Path, i: usize) {
    let addr = std::fs::read_to_string(dir.join(format!("net/node-{i:02}/addr"))).unwrap();
    let peer: cess_transport::PeerId = addr.trim().rsplit('/').next().unwrap().parse().unwrap();
    let node_id = cess_engine::NodeId(cess_engine::Key::of(&peer.to_bytes()).0);
    let store = Store::open(
        &Target::Path(dir.join(format!("net/node-{i:02}/store.img"))),
        &OpenOptions::new(node_id),
    )
    .unwrap();
    let victim = store
        .list()
        .filter_map(Result::ok)
        .find(|info| info.class == Class::Active)
        .expect("the miner holds a fragment")
        .key;
    store.delete(victim).wait().unwrap();
}

#[test]
fn miners_pass_audits_a_damaged_one_is_penalised_and_a_restarted_one_answers_in_time() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    ok(cess(
        &["devnet", "up", "--dir", "net", "--store-mib", "48"],
        dir,
    ));
    let mut network = Network(dir.to_path_buf(), Vec::new());
    let mut data = vec![0u8; 3_000_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(19),
        &mut data,
    );
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    ok(cess(
        &["put", "in.bin", "--devnet", "net", "--segment-mib", "2"],
        dir,
    ));

    // Every miner holds a column: each passes an audit.
    let first_round = wait_until(
        "every miner passing an audit",
        Duration::from_secs(120),
        || {
            let rounds: Vec<u64> = (0..12)
                .map(|i| {
                    audits(dir, i)
                        .iter()
                        .find(|a| a["result"] == "valid")
                        .and_then(|a| a["round"].as_u64())
                })
                .collect::<Option<_>>()?;
            rounds.into_iter().max()
        },
    );

    // Miner 3 loses a fragment behind its back; miner 7 is down when the next round opens.
    stop_miner(dir, 3);
    stop_miner(dir, 7);
    delete_a_fragment(dir, 3);
    network.1.push(start_miner(dir, 3));
    let round = wait_until("the next audit round", Duration::from_secs(60), || {
        audits(dir, 0)
            .iter()
            .filter_map(|a| a["round"].as_u64())
            .find(|r| *r > first_round)
    });
    network.1.push(start_miner(dir, 7));

    let verdicts: Vec<String> = (0..12)
        .map(|i| {
            wait_until(
                &format!("miner {i}'s verdict for round {round}"),
                Duration::from_secs(90),
                || verdict(dir, i, round),
            )
        })
        .collect();
    for (i, v) in verdicts.iter().enumerate() {
        if i == 3 {
            assert!(v == "missed" || v.starts_with("invalid"), "miner 3: {v}");
        } else {
            assert_eq!(v, "valid", "miner {i} in round {round}");
        }
    }
    let damaged = audits(dir, 3)
        .into_iter()
        .find(|a| a["round"] == round)
        .unwrap();
    let reward: i128 = damaged["reward"].as_str().unwrap().parse().unwrap();
    assert!(reward < 0, "miner 3 penalised: {damaged}");
    let restarted = audits(dir, 7)
        .into_iter()
        .find(|a| a["round"] == round)
        .unwrap();
    assert!(
        restarted["margin_blocks"].as_u64().is_some(),
        "miner 7 submitted before the deadline: {restarted}"
    );
}
