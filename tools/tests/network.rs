//! A local network of 12 node processes on loopback: `cess devnet up`, `cess put`, nodes
//! stopped one by one, `cess get`, `cess devnet down`, as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cess(args: &[&str], dir: &Path) -> Output {
    let t0 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cess"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cess");
    eprintln!(
        "cess {} took {:.1} s",
        args.join(" "),
        t0.elapsed().as_secs_f64()
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    let text = text(&out);
    assert!(out.status.success(), "cess failed:\n{text}");
    text
}

/// Stops the network even when the test fails.
struct Network(PathBuf);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = cess(&["devnet", "down", "--dir", "net"], &self.0);
    }
}

fn stop_node(dir: &Path, i: usize) {
    let pid_file = dir.join(format!("net/node-{i:02}/pid"));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    // Wait until it is gone.
    let proc = PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..500 {
        let gone = std::fs::read_to_string(proc.join("stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
        });
        if gone {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("node {i} did not stop");
}

fn http_get(addr: &str, path: &str) -> String {
    cess_http::get_blocking(
        addr.parse().unwrap(),
        path,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
}

#[test]
fn put_and_get_across_twelve_nodes_with_nodes_down() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let up = ok(cess(
        &[
            "devnet",
            "up",
            "--dir",
            "net",
            "--store-mib",
            "96",
            "--no-chain",
        ],
        dir,
    ));
    let _network = Network(dir.to_path_buf());
    assert!(up.contains("12 nodes up without a chain"), "{up}");
    assert_eq!(
        std::fs::read_to_string(dir.join("net/nodes.txt"))
            .unwrap()
            .lines()
            .count(),
        12
    );

    // 10 MiB + a bit: three 4 MiB segments, the last one partial.
    let mut data = vec![0u8; 10_500_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7),
        &mut data,
    );
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    let put = ok(cess(
        &["put", "in.bin", "--devnet", "net", "--segment-mib", "4"],
        dir,
    ));
    let file_id = put
        .lines()
        .find_map(|l| l.strip_prefix("file id "))
        .expect("put prints the file id")
        .trim()
        .to_string();

    // Each node got one fragment of each segment and says so on /metrics and /status.
    let log = std::fs::read_to_string(dir.join("net/node-03/node.log")).unwrap();
    let metrics_addr = log
        .lines()
        .find_map(|l| l.strip_prefix("dashboard http://"))
        .and_then(|l| l.split_once('/'))
        .map(|(addr, _)| addr)
        .expect("the node prints its dashboard address");
    let metrics = http_get(metrics_addr, "/metrics");
    assert!(
        metrics.contains("cess_node_store_fragments{class=\"active\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cess_node_responses_total{code=\"ok\"} 3"),
        "{metrics}"
    );
    let status = http_get(metrics_addr, "/status");
    assert!(status.contains("\"active_fragments\": 3"), "{status}");

    // The client wrote by the owner's grant (the nodes have no allow list). A grant from an
    // owner the nodes do not trust is refused, and says so.
    let shown = ok(cess(&["owner", "show", "net/client.grant"], dir));
    assert!(shown.contains("lets"), "{shown}");
    let stranger = ok(cess(&["owner", "init", "stranger.key"], dir));
    let client_id = ok(cess(&["owner", "init", "net/client.key"], dir));
    let client_id = client_id.trim().strip_prefix("owner ").unwrap();
    ok(cess(
        &[
            "owner",
            "grant",
            "--owner-key",
            "stranger.key",
            "--uploader",
            client_id,
            "--out",
            "stranger.grant",
        ],
        dir,
    ));
    assert!(stranger.starts_with("owner 12D3"), "{stranger}");
    let refused = cess(
        &[
            "put",
            "in.bin",
            "--devnet",
            "net",
            "--segment-mib",
            "4",
            "--grant",
            "stranger.grant",
        ],
        dir,
    );
    let message = text(&refused);
    assert!(!refused.status.success(), "{message}");
    assert!(message.contains("is not trusted"), "{message}");
    // An expired grant is refused before anything is sent; reads (below) need no grant.
    ok(cess(
        &[
            "owner",
            "grant",
            "--owner-key",
            "net/owner.key",
            "--uploader",
            client_id,
            "--valid-hours",
            "0",
            "--out",
            "net/client.grant",
        ],
        dir,
    ));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let expired = cess(
        &["put", "in.bin", "--devnet", "net", "--segment-mib", "4"],
        dir,
    );
    let message = text(&expired);
    assert!(!expired.status.success(), "{message}");
    assert!(message.contains("expired"), "{message}");

    // All up, then with 8 of 12 up (two data nodes among the four stopped): identical bytes.
    ok(cess(
        &["get", &file_id, "--devnet", "net", "--out", "all.bin"],
        dir,
    ));
    assert!(std::fs::read(dir.join("all.bin")).unwrap() == data);
    for i in [0, 2, 7, 11] {
        stop_node(dir, i);
    }
    ok(cess(
        &["get", &file_id, "--devnet", "net", "--out", "eight.bin"],
        dir,
    ));
    assert!(std::fs::read(dir.join("eight.bin")).unwrap() == data);

    // With 3 up no segment can be rebuilt: a clear error and no output file.
    for i in [1, 3, 4, 5, 6] {
        stop_node(dir, i);
    }
    let failed = cess(
        &["get", &file_id, "--devnet", "net", "--out", "three.bin"],
        dir,
    );
    let message = text(&failed);
    assert!(!failed.status.success(), "{message}");
    // The first segment to fail is named; segments are fetched in parallel, so which one
    // that is depends on timing.
    assert!(message.contains("cannot be rebuilt"), "{message}");
    assert!(
        message.contains("needed 4") || message.contains("4 needed"),
        "{message}"
    );
    assert!(!dir.join("three.bin").exists());
    assert!(!dir.join("three.partial").exists());

    let down = ok(cess(&["devnet", "down", "--dir", "net"], dir));
    assert!(down.contains("stopped 3 processes"), "{down}");
}
