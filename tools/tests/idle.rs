//! Idle space (PoIS) in the running network, as processes on loopback: a devnet of 12 miners
//! told to fill all the room they have with idle files. Each labels its files into its engine
//! store as `Class::Idle` fragments, commits them, answers its commit challenges and has its
//! space verified by the validators; each answers its space audits. A file then arrives: each
//! of the 12 miners gives an idle file up for its fragment (the engine's `replace_idle`),
//! reports it, and its verified space (idle + stored data) stays the same total. The file
//! reads back byte-identical.

mod common;

use common::{Network, cess, ok, status, wait_until};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const NODES: usize = 12;

/// account → (idle verified, stored data, committed sets) from `cess chain miners --json`.
fn miners(dir: &Path) -> BTreeMap<String, (u64, u64, u64)> {
    let out = ok(cess(
        &["chain", "--dir", "net/chain", "miners", "--json"],
        dir,
    ));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|m| {
            (
                m["account"].as_str().unwrap().to_string(),
                (
                    m["idle_verified_bytes"].as_u64().unwrap(),
                    m["active_bytes"].as_u64().unwrap(),
                    m["idle_committed_sets"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn miners_fill_verify_and_prove_idle_space_then_give_it_up_for_data() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    // 40 MiB stores: the engine keeps one 8 MiB fragment free per shard for user writes;
    // the rest fills with 1 MiB idle files.
    ok(cess(
        &[
            "devnet",
            "up",
            "--dir",
            "net",
            "--nodes",
            &NODES.to_string(),
            "--store-mib",
            "40",
            "--idle-fill-mib",
            "100000",
        ],
        dir,
    ));
    let _network = Network(dir.to_path_buf(), Vec::new());

    // Every miner fills its room, and its space is verified: the figures stop moving with
    // nothing left committed and unproven.
    let mut last = BTreeMap::new();
    let mut steady = 0;
    let filled = wait_until(
        "every miner's idle space verified",
        Duration::from_secs(180),
        || {
            let now = miners(dir);
            let done = now.len() == NODES
                && now
                    .values()
                    .all(|(idle, _, committed)| *idle >= 8 << 20 && *committed == 0);
            steady = if done && now == last { steady + 1 } else { 0 };
            last = now.clone();
            (steady >= 3).then_some(now)
        },
    );
    eprintln!(
        "idle verified per miner (MiB): {:?}",
        filled
            .values()
            .map(|(idle, ..)| idle >> 20)
            .collect::<Vec<_>>()
    );

    // Space audits are answered and pass (a round every 30 blocks).
    wait_until(
        "every miner answered a space audit",
        Duration::from_secs(120),
        || {
            (0..NODES)
                .all(|i| {
                    status(dir, i).is_some_and(|s| {
                        s["chain"]["idle"]["space_proofs"].as_u64().unwrap_or(0) >= 1
                    })
                })
                .then_some(())
        },
    );
    for i in 0..NODES {
        let s = status(dir, i).unwrap();
        assert_eq!(
            s["chain"]["idle"]["space_audits_unanswerable"], 0,
            "node {i}: {s}"
        );
    }
    let after_audits = miners(dir);
    for (account, (idle, ..)) in &filled {
        assert_eq!(
            after_audits[account].0, *idle,
            "{account}: a space audit failed"
        );
    }

    // A file of one 4 MiB segment (3 MB and the cipher's overhead): a 1 MiB fragment for each
    // of the 12 miners, each of whose stores is full of idle files.
    let mut data = vec![0u8; 3_000_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5),
        &mut data,
    );
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    ok(cess(&["keygen", "file.key"], dir));
    let put = ok(cess(
        &[
            "put",
            "in.bin",
            "--devnet",
            "net",
            "--key",
            "file.key",
            "--segment-mib",
            "4",
        ],
        dir,
    ));
    let file_id = common::file_id_of(&put);
    // Each holder reports the idle file it gave up: verified space moves from idle to data,
    // and its total stays the same.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    wait_until(
        "every holder's verified space the same total",
        Duration::from_secs(60),
        || {
            let now = miners(dir);
            if std::time::Instant::now() + Duration::from_secs(2) > deadline {
                eprintln!("before {filled:?}\nnow {now:?}");
                let log =
                    std::fs::read_to_string(dir.join("net/node-00/node.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
                eprintln!(
                    "node 0:\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            now.iter()
                .all(|(account, (idle, active, _))| {
                    let (before, ..) = filled[account];
                    *active == 1 << 20 && idle + active == before
                })
                .then_some(())
        },
    );
    ok(cess(
        &[
            "get", &file_id, "--devnet", "net", "--key", "file.key", "--out", "out.bin",
        ],
        dir,
    ));
    assert!(
        std::fs::read(dir.join("out.bin")).unwrap() == data,
        "byte-identical"
    );
}
