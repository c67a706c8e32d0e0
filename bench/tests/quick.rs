//! Every suite runs in quick mode under `cargo test`, so no benchmark can rot. Quick mode
//! asserts that the cases ran and produced figures, never a speed.

use std::process::Command;

/// Runs `suite --quick` and checks that every expected case reported both figures.
fn run_quick(suite: &str, expected: &[&str]) {
    let json =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{suite}-quick.jsonl"));
    let out = Command::new(env!("CARGO_BIN_EXE_cess-bench"))
        .args([suite, "--quick", "--json"])
        .arg(&json)
        .output()
        .expect("run cess-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cess-bench {suite} --quick failed:\n{stdout}\n{stderr}"
    );
    let lines = std::fs::read_to_string(&json).expect("json output");
    let cases: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    for expected in expected {
        assert!(
            names.contains(expected),
            "case {expected} missing from {names:?}"
        );
    }
    for c in &cases {
        assert_eq!(c["suite"], suite, "{c}");
        assert!(c["value"].as_f64().unwrap() > 0.0, "{c}");
        assert!(
            c["baseline_value"].as_f64().unwrap() > 0.0,
            "baseline measured: {c}"
        );
        assert!(c["ratio"].as_f64().unwrap().is_finite(), "{c}");
    }
}

#[test]
fn engine_suite_runs_quick() {
    run_quick(
        "engine",
        &[
            "write-1MiB-fragments",
            "read-8KiB-random",
            "mixed",
            "open-time-20",
            "open-time-200",
        ],
    );
}

#[test]
fn codec_suite_runs_quick() {
    run_quick(
        "codec",
        &[
            "pipeline-rs-sha256-2core",
            "pipeline-aead-rs-sha256-2core",
            "rs-striped-vs-whole",
            "decode-data-shards",
            "decode-parity-only",
            "repair-one-fragment",
        ],
    );
}

#[test]
fn transport_suite_runs_quick() {
    run_quick(
        "transport",
        &["stream-8MiB-one-connection", "many-fragments-into-engine"],
    );
}

#[test]
fn proofs_suite_runs_quick() {
    run_quick(
        "proofs",
        &[
            "tag-vs-naive-msm",
            "prove-1",
            "prove-10",
            "prove-100",
            "verify-10000-vs-1",
            "msm-blst-vs-arkworks",
            "pairing-blst-vs-arkworks",
            "pois-label",
            "pois-generate",
            "pois-relabel-file",
            "pois-verify-commit",
            "pois-verify-space",
        ],
    );
}

// The kernels suite is not run here: on lavapipe (CI's adapter) even its quick mode takes
// minutes. Its correctness is covered by kernels/tests and proofs/tests/gpu.rs.

#[test]
fn consensus_suite_runs_quick() {
    run_quick(
        "consensus",
        &[
            "finality-4-validators",
            "batch-verify-vs-single",
            "restart-1e5-vs-1e3-heights",
            "validator-catch-up",
            "validator-state-sync-vs-catch-up",
        ],
    );
}

#[test]
fn e2e_suite_runs_quick() {
    run_quick("e2e", &["put-1GiB-12-nodes", "restore-one-miner", "s3-put"]);
}
