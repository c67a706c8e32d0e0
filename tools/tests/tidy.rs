//! The codebase's boundaries, checked (rust-analyzer's tidy habit):
//!
//! - unsafe code stays where ARCHITECTURE.md says it is: every crate of the workspace fences
//!   it off at its root (`forbid`, or `deny` where named modules are let through), and only
//!   those modules (`engine/src/aligned.rs`, `engine/src/device/uring.rs`,
//!   `proofs/src/curve.rs`) hold an `unsafe` block or an `allow(unsafe_code)` of their own (or,
//!   in a crate root, for them);
//! - the pure cores (the ledger, the BFT core, the VRF, the node's core and its idle half, the
//!   engine's index, recovery decisions and superblock choice) use no runtime, clock, socket
//!   or file system;
//! - only `tools/` depends on `anyhow` or `clap`;
//! - a file past 800 lines says at its top why it is one file;
//! - ARCHITECTURE.md's dependency graph is the manifests' own, each crate on a floor above
//!   everything it depends on.

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

/// Every `.rs` file of the workspace that git tracks (the fuzz crates included).
fn tracked_rust_files() -> Vec<String> {
    let out = std::process::Command::new("git")
        .args(["ls-files", "*.rs"])
        .current_dir(root())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// The file's code: comment lines and the text after `//` dropped (what a rule about code
/// looks at, so that a comment may name what the code must not use).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pure cores (ARCHITECTURE.md: state machines take time and randomness as inputs and do
/// no I/O) use no runtime, clock, socket or file system.
#[test]
fn pure_modules_do_no_io() {
    let pure: Vec<String> = tracked_rust_files()
        .into_iter()
        .filter(|f| {
            f.starts_with("consensus/src/ledger/")
                || f.starts_with("consensus/src/bft/")
                || f == "consensus/src/vrf.rs"
                || f == "tools/node/src/lib.rs"
                || f == "tools/node/src/idle.rs"
                || f == "engine/src/shard/index.rs"
                || f == "engine/src/shard/recovery.rs"
                || f == "engine/src/store/superblock.rs"
        })
        .collect();
    assert!(pure.len() >= 16, "the pure modules: {pure:?}");
    for file in pure {
        let code = code_of(&std::fs::read_to_string(root().join(&file)).unwrap());
        for banned in ["tokio", "Instant", "SystemTime", "std::net", "std::fs"] {
            assert!(
                !code.contains(banned),
                "{file} uses {banned}: a pure module takes time and I/O results as inputs"
            );
        }
    }
}

/// `anyhow` and `clap` are for programs: only `tools/` (the command line, the node, the
/// tagger) may depend on them; the libraries' errors are typed.
#[test]
fn only_tools_use_anyhow_or_clap() {
    for member in members() {
        if member.starts_with("tools") {
            continue;
        }
        let manifest = std::fs::read_to_string(root().join(&member).join("Cargo.toml")).unwrap();
        for line in manifest.lines() {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            assert!(
                name != "anyhow" && name != "clap",
                "{member}/Cargo.toml depends on {name}: typed errors (thiserror) outside tools/"
            );
        }
    }
}

/// A file past 800 lines says at its top why it is one file (`// Long file: …`): long files
/// are split along their seams unless there is a reason not to, and the reason is written.
#[test]
fn long_files_say_why() {
    let mut unexplained = Vec::new();
    for file in tracked_rust_files() {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        if text.lines().count() <= 800 {
            continue;
        }
        if !text
            .lines()
            .take(5)
            .any(|l| l.starts_with("// Long file: "))
        {
            unexplained.push(file);
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over 800 lines without a `// Long file: why` line at the top: {unexplained:?}"
    );
}

/// ARCHITECTURE.md's dependency graph is the one the manifests declare: each crate's row
/// names exactly the workspace crates its `[dependencies]` name, and each depends only on
/// crates in rows above its own.
#[test]
fn the_documented_dependency_graph_is_the_real_one() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = architecture
        .split("## Dependency graph")
        .nth(1)
        .expect("ARCHITECTURE.md has a dependency graph")
        .split("\n## ")
        .next()
        .unwrap();
    let names_in = |text: &str| -> Vec<String> {
        text.split('`')
            .filter(|t| t.starts_with("cess-"))
            .map(String::from)
            .collect()
    };
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `cess-")) {
        let cells: Vec<&str> = line.split('|').collect();
        let name = names_in(cells[1]).remove(0);
        let mut deps = names_in(cells[2]);
        deps.sort();
        rows.push((name, deps));
    }
    let mut documented: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    documented.sort();
    let mut actual = Vec::new();
    for member in members() {
        let manifest = std::fs::read_to_string(root().join(&member).join("Cargo.toml")).unwrap();
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{member}: no package name"))
            .to_string();
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap();
        let mut deps: Vec<String> = dependencies
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter(|d| d.starts_with("cess-"))
            .map(String::from)
            .collect();
        deps.sort();
        let row = rows
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} has no row in ARCHITECTURE.md's dependency graph"));
        assert_eq!(
            rows[row].1, deps,
            "{name}: ARCHITECTURE.md lists {:?}, {member}/Cargo.toml has {deps:?}",
            rows[row].1
        );
        for dep in &deps {
            let below = rows[..row].iter().any(|(n, _)| n == dep);
            assert!(
                below,
                "{name} depends on {dep}, which is not on a floor below it"
            );
        }
        actual.push(name);
    }
    actual.sort();
    assert_eq!(documented, actual, "one row per workspace crate");
}
