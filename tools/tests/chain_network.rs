//! The data lifecycle on a chain, as a user runs it: `cess devnet up` (4 validator processes,
//! 12 miner processes, each registered on the chain), `cess put` (space rented, the order
//! placed by the ledger, fragments sent to the miners it named, Active), a put resumed after a
//! miner was down, `cess get` with only the file id and the key (8 of 12 miners up; a clear
//! error with 3), reads refused to an account that is neither an owner nor a delegate (`cess
//! authorize`), `cess delete` and the fragments leaving the miners' stores, `cess devnet down`.

mod common;

use common::{Network, cess, ok, start_miner, stop_miner, text};
use std::path::Path;
use std::time::{Duration, Instant};

/// `cess node status net/node-XX`, parsed.
fn miner_status(dir: &Path, i: usize) -> serde_json::Value {
    let out = ok(cess(&["node", "status", &format!("net/node-{i:02}")], dir));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("node status: {e}: {out}"))
}

fn active_fragments(dir: &Path, i: usize) -> u64 {
    miner_status(dir, i)["store"]["active_fragments"]
        .as_u64()
        .expect("status has store.active_fragments")
}

fn file_id_of(put: &str) -> String {
    put.lines()
        .find_map(|l| l.strip_prefix("file id "))
        .expect("put prints the file id")
        .trim()
        .to_string()
}

/// The bytes `cess put` says it sent this time.
fn sent_now(put: &str) -> u64 {
    let line = put
        .lines()
        .find(|l| l.starts_with("active: "))
        .unwrap_or_else(|| panic!("put prints the active line: {put}"));
    let (_, rest) = line.split_once('(').expect("sent figure");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_file_put_through_the_chain_is_got_back_by_its_id_and_deleted() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let up = ok(cess(
        &["devnet", "up", "--dir", "net", "--store-mib", "48"],
        dir,
    ));
    let mut network = Network(dir.to_path_buf(), Vec::new());
    assert!(
        up.contains("4 validators and 12 miners up, every miner registered"),
        "{up}"
    );
    assert!(!dir.join("net/nodes.txt").exists(), "no local node list");
    let miners = ok(cess(
        &["chain", "--dir", "net/chain", "miners", "--json"],
        dir,
    ));
    let miners: serde_json::Value = serde_json::from_str(&miners).unwrap();
    assert_eq!(miners.as_array().map(Vec::len), Some(12), "{miners}");

    // 5 MB + a bit: three 2 MiB segments, the last one partial.
    let mut data = vec![0u8; 5_200_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(18),
        &mut data,
    );
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    ok(cess(&["keygen", "file.key"], dir));
    let put_args = [
        "put",
        "in.bin",
        "--devnet",
        "net",
        "--key",
        "file.key",
        "--segment-mib",
        "2",
    ];

    // A miner the ledger will place a column on is down: the put fails at the send stage and
    // says so; the order stays on the chain.
    stop_miner(dir, 5);
    let failed = cess(&put_args, dir);
    let message = text(&failed);
    assert!(!failed.status.success(), "{message}");
    assert!(
        message.contains("put failed at the send stage"),
        "{message}"
    );

    // The miner comes back (its replica replays the blocks it kept, then follows); the same
    // put resumes: only its column is sent.
    network.1.push(start_miner(dir, 5));
    let restarted =
        std::fs::read_to_string(dir.join("net/node-05/node-restarted.log")).unwrap_or_default();
    assert!(
        restarted.contains("replica: replaying"),
        "the restarted miner did not replay its blocks:\n{restarted}"
    );
    let put = ok(cess(&put_args, dir));
    let file_id = file_id_of(&put);
    let stored_bytes = 3 * 12 * (2 << 20) / 4;
    assert_eq!(sent_now(&put), stored_bytes / 12, "{put}");
    // Once more: nothing is sent.
    assert_eq!(sent_now(&ok(cess(&put_args, dir))), 0);

    let file = ok(cess(
        &["chain", "--dir", "net/chain", "file", &file_id, "--json"],
        dir,
    ));
    assert!(file.contains("\"state\": \"active\""), "{file}");
    for i in 0..12 {
        assert_eq!(active_fragments(dir, i), 3, "miner {i}");
    }

    // Only the id and the key: all up, then 8 of 12 up.
    ok(cess(
        &[
            "get", &file_id, "--devnet", "net", "--key", "file.key", "--out", "all.bin",
        ],
        dir,
    ));
    assert!(std::fs::read(dir.join("all.bin")).unwrap() == data);
    for i in [0, 2, 7, 11] {
        stop_miner(dir, i);
    }
    ok(cess(
        &[
            "get",
            &file_id,
            "--devnet",
            "net",
            "--key",
            "file.key",
            "--out",
            "eight.bin",
        ],
        dir,
    ));
    assert!(std::fs::read(dir.join("eight.bin")).unwrap() == data);
    // The wrong key is refused, nothing written.
    ok(cess(&["keygen", "other.key"], dir));
    let wrong = cess(
        &[
            "get",
            &file_id,
            "--devnet",
            "net",
            "--key",
            "other.key",
            "--out",
            "wrong.bin",
        ],
        dir,
    );
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(!dir.join("wrong.bin").exists());

    // Another account, even with the file key, reads nothing: the miners serve the file's
    // owners, their delegates, restorers and validators only. Once the owner authorizes it
    // (a gateway, say), it reads; revoked, it does not.
    let reader = ok(cess(&["owner", "init", "reader.key"], dir));
    let reader = reader
        .trim()
        .strip_prefix("owner ")
        .unwrap_or_else(|| panic!("owner init prints the PeerId: {reader}"))
        .to_string();
    let get_as = |key: &str, out: &str| {
        cess(
            &[
                "get", &file_id, "--devnet", "net", "--key", "file.key", "--as", key, "--out", out,
            ],
            dir,
        )
    };
    let stranger = get_as("reader.key", "stranger.bin");
    assert!(!stranger.status.success(), "{}", text(&stranger));
    assert!(
        text(&stranger).contains("no standing"),
        "{}",
        text(&stranger)
    );
    assert!(!dir.join("stranger.bin").exists());
    // A miner holding a column reads its siblings only as a self-repair: between its
    // audits, never while one is open (the lazy miner's way to rebuild a challenged fragment
    // is closed), at most 16 reads per peer and audit period; `tools/node/tests/core.rs`
    // checks that rule block by block. (The file's bytes stay sealed under its key.)
    ok(cess(&["authorize", &reader, "--devnet", "net"], dir));
    let delegated = get_as("reader.key", "delegate.bin");
    assert!(delegated.status.success(), "{}", text(&delegated));
    assert!(std::fs::read(dir.join("delegate.bin")).unwrap() == data);
    ok(cess(
        &["authorize", &reader, "--revoke", "--devnet", "net"],
        dir,
    ));
    assert!(!get_as("reader.key", "revoked.bin").status.success());

    // With 3 up no segment can be rebuilt: a clear error and no output file.
    for i in [1, 3, 4, 6, 8] {
        stop_miner(dir, i);
    }
    let failed = cess(
        &[
            "get",
            &file_id,
            "--devnet",
            "net",
            "--key",
            "file.key",
            "--out",
            "three.bin",
        ],
        dir,
    );
    let message = text(&failed);
    assert!(!failed.status.success(), "{message}");
    assert!(message.contains("cannot be rebuilt"), "{message}");
    assert!(message.contains("4 needed"), "{message}");
    assert!(!dir.join("three.bin").exists());

    // Delete: the last owner is gone, the running miners delete its fragments on their own.
    let deleted = ok(cess(&["delete", &file_id, "--devnet", "net"], dir));
    assert!(deleted.contains("no owner is left"), "{deleted}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in [5, 9, 10] {
        while active_fragments(dir, i) != 0 {
            assert!(
                Instant::now() < deadline,
                "miner {i} kept the fragments of a deleted file"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let files = ok(cess(
        &["chain", "--dir", "net/chain", "files", "--json"],
        dir,
    ));
    assert!(!files.contains(&file_id), "{files}");
}
