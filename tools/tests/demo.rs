//! The README's main command at a small size: `cess demo` is the integration test of the whole
//! system (validators, a tagger and 12 miners as processes; put, tags checked, audits passed,
//! two miners stopped, get byte-identical, the stopped miners penalised, delete).

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_lifecycle() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cess"))
        .args([
            "demo",
            "--dir",
            "net",
            "--file-mib",
            "8",
            "--segment-mib",
            "2",
        ])
        .current_dir(tmp.path())
        .output()
        .expect("run cess demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cess demo failed:\n{text}");
    for expected in [
        "Active on 12 miners",
        "waiting for audit rounds",
        "the file read back is byte-identical to the file put",
        "missed its audit: penalised",
        "delete: gone from the chain",
        "space returned: 0 bytes",
        "timeline:",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let passed = text
        .lines()
        .filter(|l| l.contains(", valid, reward"))
        .count();
    assert_eq!(passed, 12, "a passed audit per miner:\n{text}");
    assert!(
        !tmp.path().join("net").exists(),
        "the demo removes its directory"
    );
}
