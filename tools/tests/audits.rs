//! Audits in the running network, as processes on loopback: a devnet (4 validators, a tagger,
//! 12 miners) and a put. Every miner holding data passes an audit; a miner whose fragment was
//! corrupted on its disk behind its back (its scrub off) fails its next audit and is penalised
//! while the others pass in the same round; a miner restarted between a challenge and its
//! deadline still answers in time.

mod common;

use common::{Network, cess, corrupt_a_fragment, ok, start_miner, status, stop_miner, wait_until};
use std::path::Path;
use std::time::Duration;

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

/// Turns off the background scrub of miner `i` (so that nothing but an audit finds what is
/// done to its disk behind its back).
fn scrub_off(dir: &Path, i: usize) {
    let path = dir.join(format!("net/node-{i:02}/node.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("scrub_mib_per_s"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Top-level keys come before the first table.
    let at = text.find("\n[").map_or(text.len(), |i| i + 1);
    let text = format!("{}scrub_mib_per_s = 0\n{}", &text[..at], &text[at..]);
    std::fs::write(&path, text).unwrap();
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

    // Miner 3's disk corrupts a fragment behind its back; miner 7 is down when the next round
    // opens.
    stop_miner(dir, 3);
    stop_miner(dir, 7);
    // A corrupted block it does not know of (a deleted fragment it would find at start and
    // rebuild from its siblings before the audit; the scrub would find this one).
    scrub_off(dir, 3);
    corrupt_a_fragment(dir, 3);
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
