//! Four validator processes over QUIC on loopback (`cess validator testnet`, `run`, `load`):
//! they finalize blocks with transactions, keep finalizing with one killed, the killed one
//! resumes from its block store when started again; all four killed at once resume from their
//! disks (not from genesis) and go on, voting again; and every block and state root is the
//! same at every height on every validator.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cess args…` in `dir` to completion; fails the test with its stderr if it fails.
fn cess_ok(dir: &Path, args: &[&str]) {
    let out = cess(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cess {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cess(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cess"));
    command.current_dir(dir);
    command
}

/// Kills the validators even when the test fails.
struct Validators(Vec<Child>);

impl Drop for Validators {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// height → (block, root, txs) from a validator's commit log.
fn commits(dir: &Path, i: usize) -> BTreeMap<u64, (String, String, u64)> {
    let text =
        std::fs::read_to_string(dir.join(format!("net/v{i}/commits.log"))).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let height = parts.next()?.parse().ok()?;
            let block = parts.next()?.to_string();
            let root = parts.next()?.to_string();
            let txs = parts.next()?.parse().ok()?;
            Some((height, (block, root, txs)))
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The height a restarted validator said it resumed at ("resumed at height N …" in its output).
fn resumed_height(out_path: &Path) -> u64 {
    let out = std::fs::read_to_string(out_path).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("resumed at height "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{} did not resume from its store:\n{out}",
                out_path.display()
            )
        })
}

/// (checkpoint height, blocks replayed) from a restarted validator's "resumed at height N …
/// (checkpoint at height H, K blocks replayed)" line.
fn resumed_from_checkpoint(out_path: &Path) -> (u64, u64) {
    let out = std::fs::read_to_string(out_path).unwrap();
    let line = out
        .lines()
        .find(|l| l.starts_with("resumed at height "))
        .unwrap_or_else(|| panic!("{} did not resume:\n{out}", out_path.display()));
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    match (number_after("checkpoint at height "), number_after(", ")) {
        (Some(h), Some(k)) => (h, k),
        _ => panic!("no checkpoint used: {line}"),
    }
}

#[test]
fn four_validator_processes_finalize_survive_a_kill_and_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A port range unlikely to collide with other tests running at the same time.
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    let base = base.to_string();
    cess_ok(
        dir,
        &[
            "validator",
            "testnet",
            "--dir",
            "net",
            "--validators",
            "4",
            "--base-port",
            &base,
        ],
    );

    // Validators 2 and 3 write a checkpoint every 5 blocks, so validator 3's restarts replay
    // only the blocks after its last one (and validator 2's serves a validator that lost its
    // disk, at the end).
    let edit_config = |i: usize, from: &str, to: &str| {
        let config = dir.join(format!("net/v{i}/validator.toml"));
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&config, text.replace(from, to)).unwrap();
    };
    for i in [2, 3] {
        edit_config(
            i,
            "checkpoint_every_blocks = 1000",
            "checkpoint_every_blocks = 5",
        );
    }
    let mut validators = Validators(Vec::new());
    for i in 0..4 {
        validators
            .0
            .push(run_validator(dir, i, &format!("v{i}.out")));
    }
    let height = |i: usize| commits(dir, i).keys().max().copied().unwrap_or(0);
    wait_for(
        "3 blocks on every validator",
        Duration::from_secs(60),
        || (0..4).all(|i| height(i) >= 3),
    );

    cess_ok(
        dir,
        &["validator", "load", "--dir", "net", "--count", "200"],
    );
    let txs = |i: usize| commits(dir, i).values().map(|(_, _, n)| n).sum::<u64>();
    wait_for(
        "the 200 transfers to be finalized",
        Duration::from_secs(60),
        || txs(0) >= 200,
    );

    // A follower (not a validator) reads the chain, each block checked against its commit.
    let out = cess(dir)
        .args(["chain", "account", "--dir", "net", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cess chain account: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        account["nonce"], 200,
        "the faucet's 200 transfers: {account}"
    );
    let out = cess(dir)
        .args(["chain", "status", "--dir", "net", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chain_height = status["height"].as_u64().unwrap();
    assert!(chain_height >= 3, "{status}");
    let logged = commits(dir, 0);
    if let Some((_, root, _)) = logged.get(&chain_height) {
        assert_eq!(
            status["state_root"].as_str().unwrap(),
            root,
            "the follower's root is the validators'"
        );
    }
    let out = cess(dir)
        .args(["chain", "status", "--dir", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("validators.txt"),
        "says what is missing: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill validator 3 outright; three of four are a quorum.
    validators.0[3].kill().unwrap();
    validators.0[3].wait().unwrap();
    let reached = height(0);
    wait_for(
        "5 more blocks without validator 3",
        Duration::from_secs(60),
        || (0..3).all(|i| height(i) >= reached + 5),
    );

    // Started again, validator 3 resumes from its block store (not from genesis), catches up
    // and finalizes with the others.
    let stored = height(3);
    validators.0[3] = run_validator(dir, 3, "v3-again.out");
    let tip = height(0);
    wait_for(
        "validator 3 to commit past the others' height at its restart",
        Duration::from_secs(60),
        || height(3) > tip + 2,
    );
    let resumed = resumed_height(&dir.join("v3-again.out"));
    let (checkpoint, replayed) = resumed_from_checkpoint(&dir.join("v3-again.out"));
    assert!(
        checkpoint > 0 && checkpoint + replayed == resumed && replayed <= 10,
        "validator 3 resumed at {resumed} from its checkpoint at {checkpoint}, {replayed} blocks replayed"
    );
    // The kill may have torn its last record, or cut its commit log one block short of its
    // store; nothing earlier is lost.
    assert!(
        resumed + 1 >= stored && resumed <= stored + 1,
        "resumed at {resumed}, its log said {stored}"
    );

    // All four killed at once (SIGKILL), mid-height: started again, each resumes from its own
    // disk (its blocks, and its write-ahead log replayed), not from genesis, and the chain goes
    // on from there.
    for v in validators.0.iter_mut() {
        v.kill().unwrap();
        v.wait().unwrap();
    }
    let stored: Vec<u64> = (0..4).map(height).collect();
    for i in 0..4 {
        validators.0[i] = run_validator(dir, i, &format!("v{i}-all.out"));
    }
    let top = *stored.iter().max().unwrap();
    wait_for(
        "3 blocks past the height all four stopped at",
        Duration::from_secs(60),
        || (0..4).all(|i| height(i) >= top + 3),
    );
    for (i, &stored) in stored.iter().enumerate() {
        let resumed = resumed_height(&dir.join(format!("v{i}-all.out")));
        assert!(
            resumed + 1 >= stored,
            "validator {i} resumed at {resumed}, its log said {stored}"
        );
    }
    // With validator 0 down, blocks need the votes of 1, 2 and 3: the restarted validators
    // vote again.
    validators.0[0].kill().unwrap();
    validators.0[0].wait().unwrap();
    let reached = (1..4).map(height).max().unwrap();
    wait_for(
        "3 more blocks from validators 1, 2 and 3 alone",
        Duration::from_secs(60),
        || (1..4).all(|i| height(i) >= reached + 3),
    );

    // Validator 3 loses its disk (blocks, checkpoint and log; same keys): started again far
    // behind validator 2's latest checkpoint, it takes that checkpoint (checked era by era
    // from genesis) rather than replaying every block, and votes on from there.
    validators.0[0] = run_validator(dir, 0, "v0-again.out");
    validators.0[3].kill().unwrap();
    validators.0[3].wait().unwrap();
    for file in ["blocks", "checkpoint", "wal"] {
        std::fs::remove_file(dir.join("net/v3").join(file)).unwrap();
    }
    edit_config(
        3,
        "state_sync_behind_blocks = 2000",
        "state_sync_behind_blocks = 5",
    );
    let reached = height(2);
    wait_for(
        "10 more blocks without validator 3",
        Duration::from_secs(60),
        || height(2) >= reached + 10,
    );
    validators.0[3] = run_validator(dir, 3, "v3-lost.out");
    let tip = height(2);
    wait_for(
        "validator 3, its disk lost, to commit past the others' height at its restart",
        Duration::from_secs(60),
        || height(3) > tip + 2,
    );
    let out = std::fs::read_to_string(dir.join("v3-lost.out")).unwrap();
    let taken: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("took the checkpoint at height "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("validator 3 took no checkpoint:\n{out}"));
    assert!(
        taken + 15 >= tip && resumed_height(&dir.join("v3-lost.out")) == taken,
        "took the checkpoint at {taken} with the others at {tip}:\n{out}"
    );

    let logs: Vec<_> = (0..4).map(|i| commits(dir, i)).collect();
    for (i, log) in logs.iter().enumerate().skip(1) {
        let mut common = 0;
        for (h, commit) in log {
            if let Some(first) = logs[0].get(h) {
                assert_eq!(first, commit, "validators 0 and {i} differ at height {h}");
                common += 1;
            }
        }
        assert!(common >= 3, "validator {i} shares only {common} heights");
    }
    assert_eq!(txs(0), 200, "every transfer finalized exactly once");
}

/// `cess validator run net/v{i}`, its output (both streams) in `dir/{out}`.
fn run_validator(dir: &Path, i: usize, out: &str) -> std::process::Child {
    let log = std::fs::File::create(dir.join(out)).unwrap();
    cess(dir)
        .args(["validator", "run", &format!("net/v{i}")])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Whether a node's output has a line starting with `prefix`.
fn said(dir: &Path, out: &str, prefix: &str) -> bool {
    std::fs::read_to_string(dir.join(out))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(prefix))
}

/// Live validator sets with processes: a testnet of four validators and two candidate nodes
/// (`--candidates 2`, not in genesis). The candidates follow the chain from the start, are
/// registered with a large stake by `cess validator candidate` (which puts their endpoints on
/// the chain), and the next election replaces two genesis validators with them. The retired
/// ones follow on; with one of the two remaining genesis validators killed, the chain goes on
/// only because both newcomers vote.
#[test]
fn candidates_registered_by_the_cli_are_elected_and_carry_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = 20_000 + ((std::process::id() + 97) % 20_000) as u16;
    let base = base.to_string();
    cess_ok(
        dir,
        &[
            "validator",
            "testnet",
            "--dir",
            "net",
            "--validators",
            "4",
            "--candidates",
            "2",
            "--era-blocks",
            "20",
            "--base-port",
            &base,
        ],
    );
    let mut nodes = Validators(Vec::new());
    for i in 0..6 {
        nodes.0.push(run_validator(dir, i, &format!("v{i}.out")));
    }
    let height = |i: usize| commits(dir, i).keys().max().copied().unwrap_or(0);
    wait_for(
        "the candidates to follow the chain to height 3",
        Duration::from_secs(60),
        || (4..6).all(|i| height(i) >= 3),
    );
    assert!(said(dir, "v4.out", "not in the validator set"));
    for i in 4..6 {
        cess_ok(
            dir,
            &[
                "validator",
                "candidate",
                &format!("net/v{i}"),
                "--stake-tokens",
                "100000",
            ],
        );
    }
    wait_for("both candidates elected", Duration::from_secs(90), || {
        (4..6).all(|i| said(dir, &format!("v{i}.out"), "elected to the validator set"))
    });
    let retired: Vec<usize> = (0..4)
        .filter(|i| said(dir, &format!("v{i}.out"), "left the validator set"))
        .collect();
    assert_eq!(retired.len(), 2, "two genesis validators retired");
    let remaining: Vec<usize> = (0..4).filter(|i| !retired.contains(i)).collect();
    // One remaining genesis validator killed: the other and both newcomers are the quorum.
    nodes.0[remaining[0]].kill().unwrap();
    nodes.0[remaining[0]].wait().unwrap();
    let reached = (0..6).map(height).max().unwrap();
    let carrying = [remaining[1], 4, 5];
    wait_for(
        "5 more blocks with the newcomers' votes",
        Duration::from_secs(60),
        || carrying.iter().all(|&i| height(i) >= reached + 5),
    );
    wait_for(
        "the retired validators to follow",
        Duration::from_secs(30),
        || retired.iter().all(|&i| height(i) >= reached + 3),
    );
    let logs: Vec<_> = (0..6).map(|i| commits(dir, i)).collect();
    for (i, log) in logs.iter().enumerate().skip(1) {
        for (h, commit) in log {
            if let Some(first) = logs[remaining[1]].get(h) {
                assert_eq!(
                    first, commit,
                    "nodes {} and {i} differ at height {h}",
                    remaining[1]
                );
            }
        }
    }
}
