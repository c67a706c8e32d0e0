//! What an operator sees, on a running devnet (4 validators, a tagger, 12 miners, processes on
//! loopback): every role's `/metrics` read by a Prometheus parser, the node's capacity figures
//! equal across `/metrics`, `cess node status` and `cess stats`, and the node's dashboard
//! rendered by a real browser (headless Chromium): space equal to `/status`, an audit row
//! after an audit, and a warning once the node is cut from the chain. Screenshots are kept in
//! `target/dashboard.png` and `target/dashboard-warning.png`.

mod common;

use common::{Network, cess, ok, status, stop_miner, wait_until};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The metrics of the process whose directory is `dir`, parsed: sample name (with its labels
/// as `{k="v"}` when it has some) → value; histograms by their count.
fn metrics(dir: &Path) -> HashMap<String, f64> {
    let addr = std::fs::read_to_string(dir.join("metrics-addr"))
        .unwrap_or_else(|e| panic!("{}/metrics-addr: {e}", dir.display()));
    let text = cess_http::get_blocking(
        addr.trim().parse().unwrap(),
        "/metrics",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics: {text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{}: unparsable metrics: {e}\n{text}", dir.display()));
    let mut out = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let name = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(name, value);
    }
    out
}

fn get(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    *metrics.get(name).unwrap_or_else(|| {
        let mut names: Vec<&String> = metrics.keys().collect();
        names.sort();
        panic!("{name} missing; have {names:?}")
    })
}

/// Where the browser's outputs go, for a person to look at.
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The page at `url` as headless Chromium leaves its DOM after its scripts ran (8 s of
/// virtual time: the page's refresh runs at 5 s), and a screenshot of it in `png`.
fn browse(url: &str, png: &Path) -> String {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "this test needs headless Chromium: `apt-get install chromium` (the README's test \
             command installs it)",
        );
    let profile = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1100,1500",
                "--virtual-time-budget=8000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[&format!("--screenshot={}", png.display())]);
    assert!(png.exists(), "no screenshot at {}", png.display());
    run(&["--dump-dom"])
}

/// The text of the element with `id` in `dom` (no nested tags).
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let open_end = start + dom[start..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(&dom[open_end..close])
}

#[test]
fn every_role_shows_its_metrics_and_the_dashboard_shows_space_audits_and_warnings() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    ok(cess(
        &["devnet", "up", "--dir", "net", "--store-mib", "48"],
        dir,
    ));
    let _network = Network(dir.to_path_buf(), Vec::new());
    let mut data = vec![0u8; 2_500_000];
    rand::RngCore::fill_bytes(
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(27),
        &mut data,
    );
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    ok(cess(
        &["put", "in.bin", "--devnet", "net", "--segment-mib", "2"],
        dir,
    ));
    let node = dir.join("net/node-00");
    wait_until("miner 0 passing an audit", Duration::from_secs(120), || {
        status(dir, 0)?["chain"]["audits"]
            .as_array()?
            .iter()
            .any(|a| a["result"] == "valid")
            .then_some(())
    });

    // The node: capacity figures equal in /metrics and `cess node status`, audits counted.
    let before = status(dir, 0).unwrap();
    let node_metrics = metrics(&node);
    let store = &before["store"];
    for (metric, field) in [
        ("cess_node_store_capacity_bytes", "total_bytes"),
        (
            "cess_node_store_space_bytes{class=\"active\"}",
            "active_bytes",
        ),
        ("cess_node_store_space_bytes{class=\"idle\"}", "idle_bytes"),
        ("cess_node_store_space_bytes{class=\"free\"}", "free_bytes"),
        (
            "cess_node_store_fragments{class=\"active\"}",
            "active_fragments",
        ),
    ] {
        assert_eq!(
            get(&node_metrics, metric) as u64,
            store[field].as_u64().unwrap(),
            "{metric} against status {field}"
        );
    }
    assert!(get(&node_metrics, "cess_node_audits_total{result=\"valid\"}") >= 1.0);
    assert!(get(&node_metrics, "cess_node_audit_prove_seconds") >= 1.0);
    assert!(get(&node_metrics, "cess_node_audit_margin_blocks") >= 1.0);
    assert!(get(&node_metrics, "cess_node_chain_height") > 0.0);
    for peer in ["clients", "taggers"] {
        let series = format!("cess_node_transfer_bytes_total{{direction=\"in\",peer=\"{peer}\"}}");
        assert!(get(&node_metrics, &series) > 0.0, "{series}");
    }

    // The tagger and a validator.
    let tagger = metrics(&dir.join("net/tagger"));
    assert!(get(&tagger, "cess_tagger_fragments_tagged_total") >= 12.0);
    assert!(get(&tagger, "cess_tagger_tagged_bytes_total") > 0.0);
    assert!(get(&tagger, "cess_tagger_tag_seconds") >= 12.0);
    assert_eq!(get(&tagger, "cess_tagger_queue"), 0.0);
    assert!(
        tagger
            .keys()
            .any(|k| k.starts_with("cess_tagger_backend{") && k.contains("backend=\"cpu\"")),
        "{tagger:?}"
    );
    let validator = metrics(&dir.join("net/chain/v0"));
    assert!(get(&validator, "cess_validator_height") > 10.0);
    assert_eq!(get(&validator, "cess_validator_peers_connected"), 3.0);
    assert!(get(&validator, "cess_validator_proofs_verified_total") >= 1.0);
    assert!(get(&validator, "cess_validator_commit_interval_seconds") > 10.0);
    let step = |blocks: &str| {
        get(
            &validator,
            &format!("cess_validator_commit_step_seconds{{blocks=\"{blocks}\"}}"),
        )
    };
    assert!(step("all") > 10.0);
    assert!(step("with_proofs") >= 1.0);

    // The dashboard in a browser: the space figures are /status's, an audit row is there,
    // the page's script ran (it stamps the refresh time), no warning.
    let http = std::fs::read_to_string(node.join("metrics-addr")).unwrap();
    let url = format!("http://{}/", http.trim());
    let dom = browse(&url, &target_dir().join("dashboard.png"));
    let status_now = status(dir, 0).unwrap();
    for field in ["total_bytes", "active_bytes", "idle_bytes", "free_bytes"] {
        assert_eq!(
            element_text(&dom, field).map(str::to_string),
            Some(status_now["store"][field].to_string()),
            "{field} on the page\n{dom}"
        );
    }
    assert!(dom.contains("class=\"audit\""), "no audit row:\n{dom}");
    assert_ne!(
        element_text(&dom, "refreshed"),
        Some("at load"),
        "the page's script did not run:\n{dom}"
    );
    assert!(dom.contains("No warnings."), "{dom}");

    // A self-check has an effect: a GET (a link, a prefetch) or a POST without the header (a
    // form on some web page) starts none.
    let surface: std::net::SocketAddr = http.trim().parse().unwrap();
    for (method, header, code) in [
        (cess_http::Method::GET, None, 405),
        (cess_http::Method::POST, None, 403),
    ] {
        let answer = cess_http::send_blocking(
            method.clone(),
            surface,
            "/check?proof=1",
            header,
            Duration::from_secs(10),
        );
        assert!(
            matches!(answer, Err(cess_http::HttpError::Status { status, .. }) if status == code),
            "{method} /check: {answer:?}"
        );
    }
    assert!(
        status(dir, 0).unwrap()["chain"]["check"].is_null(),
        "no self-check was started"
    );

    // Cut the node from the chain: every validator stops. The page warns, and the log says
    // so once.
    for v in 0..4 {
        let pid = std::fs::read_to_string(dir.join(format!("net/chain/v{v}/pid"))).unwrap();
        Command::new("kill")
            .args(["-TERM", pid.trim()])
            .status()
            .unwrap();
    }
    wait_until(
        "the chain_unreachable warning",
        Duration::from_secs(60),
        || {
            status(dir, 0)?["warnings"]
                .as_array()?
                .iter()
                .any(|w| w["kind"] == "chain_unreachable")
                .then_some(())
        },
    );
    let dom = browse(&url, &target_dir().join("dashboard-warning.png"));
    assert!(
        dom.contains("data-kind=\"chain_unreachable\""),
        "no warning on the page:\n{dom}"
    );
    wait_until(
        "the warning in the node's log",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(node.join("node.log")).ok()?;
            log.contains("no new block for").then_some(())
        },
    );
    let cut = metrics(&node);
    assert_eq!(
        cut.get("cess_node_warning{kind=\"chain_unreachable\"}"),
        Some(&1.0)
    );

    // The store read directly once the node is stopped: the same figures.
    stop_miner(dir, 0);
    let addr = std::fs::read_to_string(node.join("addr")).unwrap();
    let peer: cess_transport::PeerId = addr.trim().rsplit('/').next().unwrap().parse().unwrap();
    let node_id = cess_types::hex(&cess_engine::NodeId::of(&peer.to_bytes()).0);
    let stats = ok(cess(
        &[
            "stats",
            "net/node-00/store.img",
            "--node-id",
            node_id.as_str(),
        ],
        dir,
    ));
    let figure = |label: &str| -> u64 {
        stats
            .split(", ")
            .find_map(|part| part.trim().strip_prefix(label))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{label} in {stats}"))
    };
    assert_eq!(
        figure("total ") as f64,
        get(&cut, "cess_node_store_capacity_bytes")
    );
    assert_eq!(
        figure("free ") as f64,
        get(&cut, "cess_node_store_space_bytes{class=\"free\"}")
    );
    assert_eq!(
        figure("active ") as f64,
        get(&cut, "cess_node_store_space_bytes{class=\"active\"}")
    );
    assert_eq!(
        figure("idle ") as f64,
        get(&cut, "cess_node_store_space_bytes{class=\"idle\"}")
    );
}
