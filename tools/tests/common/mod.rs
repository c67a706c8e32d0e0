//! What the process tests share: running `cess`, a network stopped on drop, stopping and
//! restarting a miner, a miner's `/status`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `cess ARGS` in `dir`, its time on stderr.
pub fn cess(args: &[&str], dir: &Path) -> Output {
    let t0 = Instant::now();
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

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `cess` printed; fails the test when it failed.
pub fn ok(out: Output) -> String {
    let text = text(&out);
    assert!(out.status.success(), "cess failed:\n{text}");
    text
}

/// Stops the network in `DIR/net` (and the miners a test restarted) even when the test fails.
pub struct Network(pub PathBuf, pub Vec<Child>);

impl Drop for Network {
    fn drop(&mut self) {
        for child in &mut self.1 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = cess(&["devnet", "down", "--dir", "net"], &self.0);
    }
}

/// SIGTERM to miner `i` of `DIR/net`, waiting until it is gone.
pub fn stop_miner(dir: &Path, i: usize) {
    let pid = std::fs::read_to_string(dir.join(format!("net/node-{i:02}/pid"))).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    for _ in 0..500 {
        let gone = std::fs::read_to_string(proc.join("stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
        });
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("miner {i} did not stop");
}

/// `cess node status`, parsed; `None` while the node is down or starting.
pub fn status(dir: &Path, i: usize) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_cess"))
        .args(["node", "status", &format!("net/node-{i:02}")])
        .current_dir(dir)
        .output()
        .expect("run cess");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Starts miner `i` of `DIR/net` again and waits until its replica is at the tip.
pub fn start_miner(dir: &Path, i: usize) -> Child {
    let log =
        std::fs::File::create(dir.join(format!("net/node-{i:02}/node-restarted.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cess"))
        .args(["node", "run", &format!("net/node-{i:02}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status(dir, i).is_some_and(|s| s["chain"]["synced"] == true) {
        assert!(Instant::now() < deadline, "miner {i} did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}
