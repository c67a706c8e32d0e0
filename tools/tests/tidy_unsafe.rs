//! Unsafe code stays where ARCHITECTURE.md says it is: every crate of the workspace fences it
//! off at its root (`forbid`, or `deny` where named modules are let through), and only those
//! modules (`engine/src/aligned.rs`, `engine/src/device/uring.rs`, `proofs/src/curve.rs`) hold
//! an `unsafe` block or an `allow(unsafe_code)` of their own (or, in a crate root, for them).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The modules allowed to hold unsafe code, and the files allowed to let them through.
const UNSAFE_MODULES: &[&str] = &[
    "engine/src/aligned.rs",
    "engine/src/device/uring.rs",
    "proofs/src/curve.rs",
];
const ALLOWING: &[&str] = &[
    "engine/src/lib.rs",
    "engine/src/device/mod.rs",
    "proofs/src/curve.rs",
];

/// The workspace's members, from its manifest.
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members list");
    line.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, m)| m.to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_fences_unsafe_code_and_only_the_named_modules_use_it() {
    let members = members();
    assert!(members.len() >= 10, "members: {members:?}");
    for member in &members {
        let src = root().join(member).join("src");
        let crate_root = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{member}: no src/lib.rs or src/main.rs"));
        let text = std::fs::read_to_string(&crate_root).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]") || text.contains("#![deny(unsafe_code)]"),
            "{}: no unsafe fence at the crate root",
            crate_root.display()
        );
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let relative = file
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let relative = relative.trim_start_matches("./").to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            if code.contains("allow(unsafe_code)") {
                assert!(
                    ALLOWING.contains(&relative.as_str()),
                    "{relative}: lets unsafe code through, but is not one of {ALLOWING:?}"
                );
            }
            if code.contains("unsafe {")
                || code.contains("unsafe fn")
                || code.contains("unsafe impl")
            {
                assert!(
                    UNSAFE_MODULES.contains(&relative.as_str()),
                    "{relative}: unsafe code outside the named modules {UNSAFE_MODULES:?}"
                );
            }
        }
    }
}
