//! Restore in the running network, as processes on loopback: a devnet of 13 miners (one
//! more than a segment's 12 columns) and a two-segment file. One miner loses its whole store
//! and reports its fragments lost: the 13th miner claims them, rebuilds each from 4 others
//! and takes them over. Another loses one of its two fragments and rebuilds it itself, no
//! order opened; a third finds a fragment corrupted on its disk with `cess node check
//! --proof` and rebuilds it too. A fourth exits: its fragments move to the miner left with
//! room, fetched whole from it, before it may withdraw. Afterwards every segment has 12
//! stored fragments on 12 distinct miners, every holder passes its next audit, and the file
//! reads back byte-identical with 8 of the 12 holders stopped (the rebuilt fragments among
//! the 4 left). Last, 9 of each segment's 12 fragments are lost: the file is `Lost` after
//! its countdown, and `cess chain files`, `cess chain file` and `cess get` say so.

mod common;

use cess_engine::{Class, OpenOptions, Store, Target};
use common::{Network, cess, corrupt_a_fragment, ok, start_miner, status, stop_miner, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const NODES: usize = 13;

/// Node `i`'s account id in hex (as `cess chain` prints it).
fn account_of(dir: &Path, i: usize) -> String {
    let key =
        cess_transport::NodeKey::load(&dir.join(format!("net/node-{i:02}/node.key"))).unwrap();
    let account = cess_consensus::AccountKey::from_libp2p(key.keypair())
        .unwrap()
        .id();
    cess_consensus::codec::hex(&account.0)
}

fn chain_file(dir: &Path, file_id: &str) -> serde_json::Value {
    let out = ok(cess(
        &["chain", "--dir", "net/chain", "file", file_id, "--json"],
        dir,
    ));
    serde_json::from_str(&out).unwrap()
}

/// Per segment: column → the node holding it (stored), `None` where no node stores it.
fn holders(file: &serde_json::Value, nodes: &BTreeMap<String, usize>) -> Vec<Vec<Option<usize>>> {
    file["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["fragments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let stored = f["stored"] == true;
                    let miner = f["miner"].as_str()?;
                    stored.then(|| nodes[miner])
                })
                .collect()
        })
        .collect()
}

/// Deletes `count` (all when `None`) of stopped miner `i`'s fragments behind its back.
fn delete_fragments(dir: &Path, i: usize, count: Option<usize>) -> usize {
    let addr = std::fs::read_to_string(dir.join(format!("net/node-{i:02}/addr"))).unwrap();
    let peer: cess_transport::PeerId = addr.trim().rsplit('/').next().unwrap().parse().unwrap();
    let node_id = cess_engine::NodeId::of(&peer.to_bytes());
    let store = Store::open(
        &Target::Path(dir.join(format!("net/node-{i:02}/store.img"))),
        &OpenOptions::new(node_id),
    )
    .unwrap();
    let keys: Vec<_> = store
        .list()
        .filter_map(Result::ok)
        .filter(|info| info.class == Class::Active)
        .map(|info| info.key)
        .take(count.unwrap_or(usize::MAX))
        .collect();
    for key in &keys {
        store.delete(*key).wait().unwrap();
    }
    keys.len()
}

fn chain_height(dir: &Path) -> u64 {
    let status: serde_json::Value = serde_json::from_str(&ok(cess(
        &["chain", "--dir", "net/chain", "status", "--json"],
        dir,
    )))
    .unwrap();
    status["height"].as_u64().unwrap()
}

/// Blocks within which a wiped miner's fragments are back on other miners: its reports, the
/// claims, the rebuilds and tags and the completions each take a block or a few.
const RESTORE_BLOCKS_MAX: u64 = 120;

fn valid_round_after(dir: &Path, i: usize, after_round: u64) -> Option<u64> {
    status(dir, i)?["chain"]["audits"]
        .as_array()?
        .iter()
        .filter(|a| a["result"] == "valid")
        .filter_map(|a| a["round"].as_u64())
        .find(|r| *r > after_round)
}

#[test]
fn a_wiped_miner_s_fragments_are_rebuilt_on_another_and_a_lost_one_by_its_own_node() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    ok(cess(
        &[
            "devnet",
            "up",
            "--dir",
            "net",
            "--nodes",
            &NODES.to_string(),
            "--store-mib",
            "48",
        ],
        dir,
    ));
    let mut network = Network(dir.to_path_buf(), Vec::new());
    let nodes: BTreeMap<String, usize> = (0..NODES).map(|i| (account_of(dir, i), i)).collect();
    let mut data = vec![0u8; 3_000_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(23),
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
            "2",
        ],
        dir,
    ));
    let file_id = common::file_id_of(&put);
    let file = chain_file(dir, &file_id);
    assert_eq!(file["state"], "active", "{file}");
    let before = holders(&file, &nodes);
    assert_eq!(before.len(), 2, "two segments");
    let columns: Vec<usize> = before[0].iter().map(|h| h.unwrap()).collect();
    assert_eq!(
        before[1].iter().map(|h| h.unwrap()).collect::<Vec<_>>(),
        columns
    );
    let spare = (0..NODES).find(|i| !columns.contains(i)).unwrap();
    let (wiped, repaired) = (columns[0], columns[1]);

    // One node loses one of its two fragments, another its whole store.
    stop_miner(dir, repaired);
    assert_eq!(delete_fragments(dir, repaired, Some(1)), 1);
    network.1.push(start_miner(dir, repaired));
    stop_miner(dir, wiped);
    assert_eq!(delete_fragments(dir, wiped, None), 2);
    let t0 = Instant::now();
    let height0 = chain_height(dir);
    network.1.push(start_miner(dir, wiped));

    // The wiped node's columns move to the spare; the repaired node keeps its own.
    let after = wait_until(
        "both segments back to 12 stored fragments on 12 distinct miners",
        Duration::from_secs(240),
        || {
            let file = chain_file(dir, &file_id);
            let now = holders(&file, &nodes);
            let full = file["state"] == "active"
                && now.iter().all(|s| {
                    let held: BTreeSet<usize> = s.iter().flatten().copied().collect();
                    held.len() == 12 && s.iter().all(Option::is_some)
                });
            full.then_some(now)
        },
    );
    let blocks = chain_height(dir) - height0;
    eprintln!(
        "restored in {:.1} s, {blocks} blocks",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        blocks <= RESTORE_BLOCKS_MAX,
        "restored in {blocks} blocks, more than {RESTORE_BLOCKS_MAX}"
    );
    for segment in &after {
        assert_eq!(
            segment[0],
            Some(spare),
            "the spare took the wiped node's column"
        );
        assert_eq!(
            segment[1],
            Some(repaired),
            "the repaired node kept its column"
        );
        assert!(!segment.contains(&Some(wiped)));
    }
    // Its own node rebuilds the lost fragment, though perhaps only after an audit that opened
    // on it first has closed: while a miner has an audit open its siblings refuse its reads (it
    // could otherwise answer the audit from them), so the repair waits for the deadline.
    let repaired_status = wait_until(
        "the repaired node's lost fragment rebuilt in its own store",
        Duration::from_secs(180),
        || status(dir, repaired).filter(|s| s["store"]["active_fragments"] == 2),
    );
    assert_eq!(
        repaired_status["store"]["active_fragments"], 2,
        "rebuilt in its own store: {repaired_status}"
    );
    assert!(
        repaired_status["chain"]["rebuilt_fragments"].as_u64() >= Some(1),
        "{repaired_status}"
    );
    let spare_status = status(dir, spare).unwrap();
    assert_eq!(
        spare_status["store"]["active_fragments"], 2,
        "{spare_status}"
    );

    // A fragment corrupted on a third node's disk: `cess node check --proof` finds it (and
    // fails), the node drops it and rebuilds it itself; it keeps its column, no order opens.
    let corrupted = columns[2];
    stop_miner(dir, corrupted);
    let bad = cess_consensus::codec::hex(&corrupt_a_fragment(dir, corrupted));
    network.1.push(start_miner(dir, corrupted));
    let check = cess(
        &[
            "node",
            "check",
            &format!("net/node-{corrupted:02}"),
            "--proof",
        ],
        dir,
    );
    let printed = common::text(&check);
    assert!(!check.status.success(), "the check fails: {printed}");
    assert!(
        printed.contains("1 failed") && printed.contains(&bad),
        "{printed}"
    );
    wait_until(
        "the corrupted fragment rebuilt by its own node",
        Duration::from_secs(120),
        || {
            let s = status(dir, corrupted)?;
            (s["store"]["active_fragments"] == 2
                && s["chain"]["rebuilt_fragments"].as_u64() >= Some(1))
            .then_some(())
        },
    );
    assert_eq!(holders(&chain_file(dir, &file_id), &nodes), after);
    let clean = ok(cess(
        &[
            "node",
            "check",
            &format!("net/node-{corrupted:02}"),
            "--proof",
        ],
        dir,
    ));
    assert!(clean.contains("0 failed"), "{clean}");

    // A fourth node exits: its columns move to the wiped node (the only one holding nothing
    // of the segments), served whole by the leaving node; it may not withdraw yet.
    let leaving = columns[3];
    let exited = ok(cess(
        &["node", "exit", &format!("net/node-{leaving:02}")],
        dir,
    ));
    assert!(
        exited.contains("2 fragments handed to restoral"),
        "{exited}"
    );
    let after = wait_until(
        "the leaving node's columns rebuilt on the wiped node",
        Duration::from_secs(240),
        || {
            let file = chain_file(dir, &file_id);
            let now = holders(&file, &nodes);
            (file["state"] == "active" && now.iter().all(|s| s[3] == Some(wiped))).then_some(now)
        },
    );
    let withdraw = cess(
        &["node", "withdraw", &format!("net/node-{leaving:02}")],
        dir,
    );
    assert!(!withdraw.status.success());
    assert!(
        common::text(&withdraw).contains("cooling-off"),
        "{}",
        common::text(&withdraw)
    );

    // Every holder passes its next audit.
    let restored_round = chain_height(dir) / 30;
    for &i in &after[0] {
        let i = i.unwrap();
        wait_until(
            &format!("miner {i} passing an audit after the restore"),
            Duration::from_secs(180),
            || valid_round_after(dir, i, restored_round),
        );
    }

    // Any 8 of the 12 holders down: the file reads back from the 4 left, the spare among them.
    let keep: BTreeSet<usize> = [spare, repaired, corrupted, wiped].into_iter().collect();
    assert_eq!(keep.len(), 4);
    for &i in after[0].iter().flatten() {
        if !keep.contains(&i) {
            stop_miner(dir, i);
        }
    }
    ok(cess(
        &[
            "get", &file_id, "--devnet", "net", "--key", "file.key", "--out", "back.bin",
        ],
        dir,
    ));
    assert!(std::fs::read(dir.join("back.bin")).unwrap() == data);

    // The 8 stopped holders and one more lose their stores: 9 of each segment's 12
    // fragments reported lost, 3 left, 4 needed. Nobody can rebuild them (no miner claims a
    // segment it cannot decode); when the countdown ends the file is lost, and every command
    // that shows it says so.
    stop_miner(dir, corrupted);
    let gone: Vec<usize> = after[0]
        .iter()
        .flatten()
        .copied()
        .filter(|i| !keep.contains(i) || *i == corrupted)
        .collect();
    assert_eq!(gone.len(), 9);
    for &i in &gone {
        delete_fragments(dir, i, None);
        network.1.push(start_miner(dir, i));
    }
    wait_until(
        "the file lost after its countdown",
        Duration::from_secs(240),
        || (chain_file(dir, &file_id)["state"] == "lost").then_some(()),
    );
    let files = ok(cess(&["chain", "--dir", "net/chain", "files"], dir));
    assert!(
        files
            .lines()
            .any(|l| l.starts_with(&file_id) && l.trim_end().ends_with("lost")),
        "{files}"
    );
    let shown = ok(cess(
        &["chain", "--dir", "net/chain", "file", &file_id],
        dir,
    ));
    assert!(shown.contains("state     lost"), "{shown}");
    let get = cess(
        &[
            "get", &file_id, "--devnet", "net", "--key", "file.key", "--out", "lost.bin",
        ],
        dir,
    );
    assert!(!get.status.success());
    assert!(
        common::text(&get).contains("is lost"),
        "{}",
        common::text(&get)
    );
    assert!(!dir.join("lost.bin").exists());
}
