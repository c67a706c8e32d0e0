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
    // As `cess devnet up` does, so that `stop_miner` stops it again.
    std::fs::write(
        dir.join(format!("net/node-{i:02}/pid")),
        format!("{}\n", child.id()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status(dir, i).is_some_and(|s| s["chain"]["synced"] == true) {
        assert!(Instant::now() < deadline, "miner {i} did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// `probe` until it finds something, polling every 250 ms; fails the test after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Flips one byte of one of stopped miner `i`'s fragments in its store image, behind its
/// back (the block found by its bytes); the fragment's id.
pub fn corrupt_a_fragment(dir: &Path, i: usize) -> [u8; 32] {
    use std::io::{Seek, Write};
    let image = dir.join(format!("net/node-{i:02}/store.img"));
    let addr = std::fs::read_to_string(dir.join(format!("net/node-{i:02}/addr"))).unwrap();
    let peer: cess_transport::PeerId = addr.trim().rsplit('/').next().unwrap().parse().unwrap();
    let node_id = cess_engine::NodeId::of(&peer.to_bytes());
    let (key, first_block) = {
        let store = cess_engine::Store::open(
            &cess_engine::Target::Path(image.clone()),
            &cess_engine::OpenOptions::new(node_id),
        )
        .unwrap();
        let key = store
            .list()
            .filter_map(Result::ok)
            .find(|info| info.class == cess_engine::Class::Active)
            .unwrap()
            .key;
        let block = store.read(key, 0, 4096).wait().unwrap().to_vec();
        (key, block)
    };
    let bytes = std::fs::read(&image).unwrap();
    let offset = bytes
        .chunks(4096)
        .position(|b| b == first_block.as_slice())
        .expect("the fragment's first block is in the image")
        * 4096;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    file.seek(std::io::SeekFrom::Start(offset as u64 + 100))
        .unwrap();
    file.write_all(&[bytes[offset + 100] ^ 0x01]).unwrap();
    file.sync_all().unwrap();
    key.0
}

/// The file id `cess put` prints (its `file id …` line).
pub fn file_id_of(put_output: &str) -> String {
    put_output
        .lines()
        .find_map(|l| l.strip_prefix("file id "))
        .expect("put prints the file id")
        .trim()
        .to_string()
}
