//! `cess gateway` with real S3 clients, as processes on loopback: a devnet of 12 miners, two
//! owners (the network's client account and a second one funded by it), each renting space,
//! authorizing the gateway and holding an access key. boto3 (`s3_clients.py`) runs the bucket
//! lifecycle, PUT/GET byte-identical at 0, 1, 5 MiB + 1 (multipart) and 100 MiB, ranges at the
//! segment boundaries, listings with prefixes and delimiters, copy, overwrite and delete, the
//! other owner refused, a wrong signature refused, a truncated upload leaving nothing; s3cmd
//! puts, lists and gets a file. The gateway's peak memory stays below the 100 MiB object. The files the gateway stored are the owner's on the chain, in
//! its buckets.

mod common;

use common::{Network, cess, ok, text};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SEGMENT_MIB: u32 = 2;

/// Kills the gateway even when the test fails.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python 3 that has boto3: `python3` first, then the system's.
fn python_with_boto3() -> String {
    for python in ["python3", "/usr/bin/python3"] {
        let found = Command::new(python)
            .args(["-c", "import boto3"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return python.to_string();
        }
    }
    panic!(
        "this test drives the gateway with boto3 and finds no Python 3 with it: install it \
         (`apt-get install python3-boto3` or `pip install boto3`)"
    );
}

/// The key and secret `cess gateway keys add` printed.
fn access_key(printed: &str) -> (String, String) {
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {printed}"))
            .trim()
            .to_string()
    };
    (field("access key "), field("secret key "))
}

fn peer_of(printed: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("owner "))
        .expect("cess owner init prints the owner")
        .trim()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `s3cmd ARGS` against the gateway with `key`, whatever its outcome.
fn s3cmd_output(dir: &Path, port: u16, key: &(String, String), args: &[&str]) -> Output {
    Command::new("s3cmd")
        .args([
            "--no-ssl",
            &format!("--host=127.0.0.1:{port}"),
            "--host-bucket=",
            &format!("--access_key={}", key.0),
            &format!("--secret_key={}", key.1),
            "--region=us-east-1",
            "--config=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("s3cmd runs (apt-get install s3cmd)")
}

/// `s3cmd ARGS`, which must succeed: what it printed.
fn s3cmd(dir: &Path, port: u16, key: &(String, String), args: &[&str]) -> String {
    let out = s3cmd_output(dir, port, key, args);
    let printed = text(&out);
    assert!(out.status.success(), "s3cmd {args:?} failed:\n{printed}");
    printed
}

#[test]
fn s3_clients_store_read_list_and_delete_through_the_gateway() {
    let python = python_with_boto3();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    ok(cess(
        &[
            "devnet",
            "up",
            "--dir",
            "net",
            "--nodes",
            "12",
            "--store-mib",
            "112",
        ],
        dir,
    ));
    let _network = Network(dir.to_path_buf(), Vec::new());

    let gateway_id = ok(cess(&["gateway", "init", "--dir", "gw"], dir));
    let gateway_id = gateway_id
        .lines()
        .find_map(|l| l.strip_prefix("gateway "))
        .unwrap()
        .trim()
        .to_string();
    // Owner A: the network's client account. Owner B: a new account it funds.
    let owner_a = peer_of(&ok(cess(&["owner", "init", "net/client.key"], dir)));
    let owner_b = peer_of(&ok(cess(&["owner", "init", "b.key"], dir)));
    ok(cess(&["transfer", &owner_b, "100", "--devnet", "net"], dir));
    // The gateway pays its transactions' fees.
    ok(cess(
        &["transfer", &gateway_id, "100", "--devnet", "net"],
        dir,
    ));
    for as_key in [None, Some("b.key")] {
        let mut rent = vec!["rent", "--gib", "2", "--devnet", "net"];
        let mut authorize = vec!["authorize", &gateway_id, "--devnet", "net"];
        if let Some(key) = as_key {
            rent.extend(["--as", key]);
            authorize.extend(["--as", key]);
        }
        ok(cess(&rent, dir));
        ok(cess(&authorize, dir));
    }
    let key_a = access_key(&ok(cess(
        &["gateway", "keys", "add", "--dir", "gw", "--owner", &owner_a],
        dir,
    )));
    let key_b = access_key(&ok(cess(
        &["gateway", "keys", "add", "--dir", "gw", "--owner", &owner_b],
        dir,
    )));
    let listed = ok(cess(&["gateway", "keys", "list", "--dir", "gw"], dir));
    assert!(listed.contains(&key_a.0) && listed.contains(&key_b.0));
    assert!(
        !std::fs::read_to_string(dir.join("gw/keys.json"))
            .unwrap()
            .contains(&key_a.1),
        "no secret is stored"
    );

    let port = free_port();
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let gateway = Gateway(
        Command::new(env!("CARGO_BIN_EXE_cess"))
            .args([
                "gateway",
                "run",
                "--dir",
                "gw",
                "--devnet",
                "net",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--segment-mib",
                &SEGMENT_MIB.to_string(),
                // Memory bounded well below the 100 MiB object: no spool between the passes,
                // 8 MiB of fragments in flight.
                "--spool-mib",
                "0",
                "--in-flight-mib",
                "8",
            ])
            .current_dir(dir)
            // glibc keeps freed large buffers in its per-thread arenas once its mmap threshold
            // has grown; a fixed threshold returns them, so the peak below is the working set
            // the gateway holds, not what the allocator kept.
            .env("MALLOC_MMAP_THRESHOLD_", "1048576")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    common::wait_until("the gateway listening", Duration::from_secs(90), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let payload = cess_codec::CodecParams {
        segment_bytes: SEGMENT_MIB << 20,
        ..Default::default()
    }
    .payload_bytes(true);
    let run = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_clients.py"))
        .args([
            &format!("http://127.0.0.1:{port}"),
            &key_a.0,
            &key_a.1,
            &key_b.0,
            &key_b.1,
            &payload.to_string(),
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let printed = text(&run);
    let log = || std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
    assert!(
        run.status.success() && printed.contains("all checks passed"),
        "boto3 checks failed:\n{printed}\ngateway log:\n{}",
        log()
    );
    eprintln!("{printed}");

    // s3cmd: put, list, get back.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("s3cmd.in"), &body).unwrap();
    s3cmd(
        dir,
        port,
        &key_a,
        &["put", "s3cmd.in", "s3://photos/tools/s3cmd.bin"],
    );
    let listed = s3cmd(dir, port, &key_a, &["ls", "s3://photos/tools/"]);
    assert!(listed.contains("s3://photos/tools/s3cmd.bin"), "{listed}");
    s3cmd(
        dir,
        port,
        &key_a,
        &["get", "s3://photos/tools/s3cmd.bin", "s3cmd.out"],
    );
    assert!(
        std::fs::read(dir.join("s3cmd.out")).unwrap() == body,
        "s3cmd read back what it put"
    );

    // Its metrics count what passed through it.
    let metrics_addr: std::net::SocketAddr = std::fs::read_to_string(dir.join("gw/metrics-addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let scraped =
        cess_http::get_blocking(metrics_addr, "/metrics", Duration::from_secs(10)).unwrap();
    let value = |name: &str| -> f64 {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{scraped}"))
    };
    assert!(value("cess_gateway_received_bytes_total") >= 105.0 * 1048576.0);
    assert!(value("cess_gateway_sent_bytes_total") >= 105.0 * 1048576.0);
    assert!(value("cess_gateway_objects_stored_total") >= 10.0);
    assert!(value("cess_gateway_objects_read_total") >= 5.0);
    assert!(value("cess_gateway_requests_total{class=\"4xx\"}") >= 10.0);
    assert_eq!(
        value("cess_gateway_requests_total{class=\"5xx\"}"),
        0.0,
        "the gateway answered 5xx:\n{}",
        log()
    );

    // The 100 MiB object passed through without being held whole.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gateway.0.id())).unwrap_or_default();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the gateway's peak resident memory");
    eprintln!("gateway peak resident memory: {} MiB", peak_kib >> 10);
    assert!(
        peak_kib < 100 << 10,
        "the gateway held {} MiB at its peak, as much as the object",
        peak_kib >> 10
    );

    // What the gateway stored is owner A's, in its bucket, on the chain; nothing is left in
    // staging (the truncated upload included).
    let files: serde_json::Value = serde_json::from_str(&ok(cess(
        &["chain", "--dir", "net/chain", "files", "--json"],
        dir,
    )))
    .unwrap();
    let names: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["names"].as_array().unwrap())
        .filter_map(|n| n.as_str())
        .collect();
    for listed in [
        "photos/sizes/104857600.bin",
        "photos/tools/s3cmd.bin",
        "photos/mine",
    ] {
        assert!(
            names.contains(&listed),
            "{listed} is not on the chain: {names:?}"
        );
    }

    // A removed key is refused within a second, while the gateway runs.
    ok(cess(
        &["gateway", "keys", "remove", &key_b.0, "--dir", "gw"],
        dir,
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let refused = s3cmd_output(dir, port, &key_b, &["ls"]);
    assert!(!refused.status.success(), "a removed key still works");
    s3cmd(dir, port, &key_a, &["ls"]);

    let staging: Vec<_> = std::fs::read_dir(dir.join("gw/staging"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(staging.is_empty(), "staging keeps {staging:?}");
    drop(gateway);
}
