//! `cess keygen`, `cess encode`, `cess decode` as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

fn cess(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cess"))
        .args(args)
        .current_dir(dir)
        .env("CESS_PASSPHRASE", "a passphrase for tests")
        .output()
        .expect("run cess")
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cess failed:\n{text}");
    text
}

fn manifest_in(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "manifest"))
        .expect("a manifest")
        .display()
        .to_string()
}

#[test]
fn encode_and_decode_with_a_key_file_and_a_passphrase() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    ok(cess(&["keygen", "k.key"], dir));
    let small = ["--segment-mib", "1"];
    let out = ok(cess(
        &[
            &["encode", "in.bin", "--out", "frags", "--key", "k.key"][..],
            &small,
        ]
        .concat(),
        dir,
    ));
    assert!(out.contains("file id"), "{out}");
    let manifest = manifest_in(&dir.join("frags"));
    ok(cess(
        &["decode", &manifest, "--out", "out.bin", "--key", "k.key"],
        dir,
    ));
    assert!(std::fs::read(dir.join("out.bin")).unwrap() == data);

    // A wrong key is named, and no output file appears.
    ok(cess(&["keygen", "other.key"], dir));
    let out = cess(
        &[
            "decode",
            &manifest,
            "--out",
            "bad.bin",
            "--key",
            "other.key",
        ],
        dir,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
    assert!(!dir.join("bad.bin").exists() && !dir.join("bad.partial").exists());

    ok(cess(
        &[
            &["encode", "in.bin", "--out", "pf", "--passphrase"][..],
            &small,
        ]
        .concat(),
        dir,
    ));
    let manifest = manifest_in(&dir.join("pf"));
    ok(cess(
        &["decode", &manifest, "--out", "out2.bin", "--passphrase"],
        dir,
    ));
    assert!(std::fs::read(dir.join("out2.bin")).unwrap() == data);
}
