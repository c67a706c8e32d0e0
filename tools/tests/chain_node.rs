//! A storage node on a chain, as processes over QUIC on loopback: four validators
//! (`cess validator testnet`, `run`) and one `cess node run` with chain settings. The node
//! follows the chain, registers itself as a miner once its replica is at the tip, and refuses
//! a fragment the chain did not assign to it before any of its bytes is stored.

use bytes::Bytes;
use cess_transport::{Client, ClientConfig, Code, Endpoint, Limits, NodeAddr, NodeKey};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cess(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cess"));
    command.current_dir(dir);
    command
}

fn cess_ok(dir: &Path, args: &[&str]) -> String {
    let out = cess(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cess {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the processes even when the test fails.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    cess_http::get_blocking(addr.parse().ok()?, path, Duration::from_secs(10)).ok()
}

fn status(metrics: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(metrics, "/status")?).ok()
}

/// `cess node init NAME` on the testnet in `dir/net`, with a small store.
fn init_node(dir: &Path, name: &str, listen: &str, extra: &[&str], validators: &[String]) {
    let mut init = vec![
        "node",
        "init",
        name,
        "--listen",
        listen,
        "--store-mib",
        "64",
        "--shards",
        "1",
        "--genesis",
        "net/genesis.bin",
    ];
    init.extend_from_slice(extra);
    for v in validators {
        init.extend(["--validator", v.as_str()]);
    }
    cess_ok(dir, &init);
}

#[test]
fn a_node_on_the_chain_registers_and_refuses_a_fragment_it_was_not_assigned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = 40_000 + (std::process::id() % 10_000) as u16;
    let base_arg = base.to_string();
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
            &base_arg,
        ],
    );
    let mut processes = Processes(Vec::new());
    for i in 0..4 {
        let log = std::fs::File::create(dir.join(format!("v{i}.log"))).unwrap();
        processes.0.push(
            cess(dir)
                .args(["validator", "run", &format!("net/v{i}")])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    // The node's account is the testnet's funded faucet (its collateral comes from there).
    std::fs::create_dir(dir.join("n0")).unwrap();
    std::fs::copy(dir.join("net/faucet.key"), dir.join("n0/node.key")).unwrap();
    let validators: Vec<String> = std::fs::read_to_string(dir.join("net/validators.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let listen = format!("127.0.0.1:{}", base + 100);
    let metrics = format!("127.0.0.1:{}", base + 101);
    init_node(dir, "n0", &listen, &["--metrics", &metrics], &validators);
    let log = std::fs::File::create(dir.join("n0.log")).unwrap();
    processes.0.push(
        cess(dir)
            .args(["node", "run", "n0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let registered = loop {
        let s = status(&metrics);
        if let Some(s) = &s
            && s["chain"]["registered"] == true
        {
            break s.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the node did not register within 120 s; last status {s:?}; log:\n{}",
            std::fs::read_to_string(dir.join("n0.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(registered["chain"]["synced"], true, "{registered}");
    assert_eq!(registered["chain"]["diverged"], serde_json::Value::Null);
    assert!(
        registered["chain"]["transactions_included"].as_u64() >= Some(1),
        "{registered}"
    );

    // A fragment no order on the chain names: refused, and the store stays empty.
    let addr: NodeAddr = std::fs::read_to_string(dir.join("n0/addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let write_as = |key: NodeKey| {
        runtime.block_on(async {
            let endpoint = Endpoint::client(
                Arc::new(key),
                "127.0.0.1:0".parse().unwrap(),
                Limits::default(),
            )
            .unwrap();
            let client = Client::new(endpoint, ClientConfig::default());
            let data = Bytes::from(vec![7u8; 1 << 20]);
            let id = cess_transport::FragmentId::of(&data);
            client.write_fragment(&addr, [1; 32], id, data).await
        })
    };
    // A fresh key has no standing on the chain: closed after its handshake.
    let stranger = write_as(NodeKey::generate());
    assert!(
        stranger
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no standing")),
        "{stranger:?}"
    );
    // The node's own account (a miner) has standing; the chain rule refuses the fragment.
    let refusal = write_as(NodeKey::load(&dir.join("n0/node.key")).unwrap());
    match refusal {
        Err(cess_transport::ProtocolError::Refused {
            code: Code::Unauthorized,
            detail,
        }) => assert!(detail.contains("no file on the chain"), "{detail}"),
        other => panic!("expected the chain rule to refuse the write, got {other:?}"),
    }
    let after = status(&metrics).unwrap();
    assert_eq!(after["store"]["active_fragments"], 0, "{after}");
    let metrics_text = http_get(&metrics, "/metrics").unwrap();
    assert!(
        metrics_text.contains("cess_node_refusals_total{reason=\"not_assigned\"} 1"),
        "{metrics_text}"
    );
    assert!(
        metrics_text.contains("cess_node_refusals_total{reason=\"no_standing\"} 1"),
        "{metrics_text}"
    );

    // A storage node with a validator's key would never sync: refused at start, saying why.
    std::fs::create_dir(dir.join("n1")).unwrap();
    std::fs::copy(dir.join("net/v0/node.key"), dir.join("n1/node.key")).unwrap();
    let listen = format!("127.0.0.1:{}", base + 102);
    init_node(dir, "n1", &listen, &[], &validators);
    let out = cess(dir).args(["node", "run", "n1"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a key of its own"), "{stderr}");
}
