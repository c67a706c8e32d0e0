//! `cess proof keygen | tag | challenge | prove | verify` on fragment files and on an engine
//! store, through the binary, as an operator would run them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn cess(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cess"))
        .args(args)
        .output()
        .expect("run cess")
}

fn ok(args: &[&str]) -> String {
    let out = cess(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cess {args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str]) -> String {
    let out = cess(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "cess {args:?} should have failed:\n{text}"
    );
    text
}

const RANDOMNESS: &str = "11223344556677889900aabbccddeeff11223344556677889900aabbccddeeff";

fn round_args(round: &str) -> Vec<&str> {
    vec![
        "--randomness",
        RANDOMNESS,
        "--miner",
        "m1",
        "--round",
        round,
    ]
}

fn write_fragments(dir: &Path, count: usize, len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..count {
        let data: Vec<u8> = (0..len)
            .map(|i| {
                (i as u64)
                    .wrapping_mul(2654435761)
                    .wrapping_add(k as u64 * 977) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("frag-{k}")), data).unwrap();
    }
}

#[test]
fn prove_and_verify_fragment_files() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let key = tmp.path().join("tagger.key");
    let public = tmp.path().join("tagger.key.pub");
    let frags = tmp.path().join("frags");
    write_fragments(&frags, 6, 100_000);
    let (key_s, public_s, frags_s) = (
        key.to_str().unwrap(),
        public.to_str().unwrap(),
        frags.to_str().unwrap(),
    );
    let chal = tmp.path().join("chal.bin");
    let proof = tmp.path().join("proof.bin");
    let (chal_s, proof_s) = (chal.to_str().unwrap(), proof.to_str().unwrap());

    ok(&["proof", "keygen", key_s, "--sectors", "64"]);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fails(&["proof", "keygen", key_s]).contains("must not exist"));

    let tagged = ok(&["proof", "tag", "--key", key_s, "--fragments", frags_s]);
    assert!(tagged.contains("tagged 6 fragments"), "{tagged}");
    let again = ok(&["proof", "tag", "--key", key_s, "--fragments", frags_s]);
    assert!(again.contains("6 already tagged"), "{again}");

    let mut args = vec![
        "proof",
        "challenge",
        "--public",
        public_s,
        "--fragments",
        frags_s,
    ];
    args.extend(round_args("1"));
    args.extend(["--out", chal_s]);
    ok(&args);
    ok(&[
        "proof",
        "prove",
        "--public",
        public_s,
        "--challenge",
        chal_s,
        "--fragments",
        frags_s,
        "--out",
        proof_s,
    ]);

    let verify = |round: &str| {
        let mut args = vec![
            "proof",
            "verify",
            "--public",
            public_s,
            "--fragments",
            frags_s,
        ];
        args.extend(round_args(round));
        args.extend(["--proof", proof_s]);
        cess(&args)
    };
    let valid = verify("1");
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stdout)
    );
    assert!(String::from_utf8_lossy(&valid.stdout).contains("VALID"));
    // The same proof replayed for the next round.
    let replay = verify("2");
    assert_eq!(replay.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("INVALID"));

    // A damaged proof file.
    let mut bytes = std::fs::read(&proof).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&proof, &bytes).unwrap();
    assert_eq!(verify("1").status.code(), Some(1));

    // A secret key readable by others is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(fails(&["proof", "tag", "--key", key_s, "--fragments", frags_s]).contains("chmod 600"));
}

#[test]
fn prove_and_verify_on_an_engine_store() {
    use cess_engine::{
        Class, FormatOptions, FragmentId, NodeId, OpenOptions, Store, Target, format,
    };
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let target_path = tmp.path().join("store.img");
    std::fs::File::create(&target_path)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let node_hex = "ab".repeat(32);
    let node = NodeId([0xab; 32]);
    let target = Target::Path(target_path.clone());
    format(&target, &FormatOptions::new(node)).unwrap();
    {
        let store = Store::open(&target, &OpenOptions::new(node)).unwrap();
        for k in 0..8u64 {
            let data: Vec<u8> = (0..300_000u64).map(|i| (i * 31 + k * 7919) as u8).collect();
            store
                .put(FragmentId::of(&data), Class::Active, &data)
                .wait()
                .unwrap();
        }
    }
    let key = tmp.path().join("t.key");
    let public = tmp.path().join("t.key.pub");
    let chal = tmp.path().join("chal.bin");
    let proof = tmp.path().join("proof.bin");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (key_s, public_s, chal_s, proof_s, store_s) =
        (s(&key), s(&public), s(&chal), s(&proof), s(&target_path));
    let holding = ["--store", store_s.as_str(), "--node-id", node_hex.as_str()];

    ok(&["proof", "keygen", &key_s]);
    let mut args = vec!["proof", "tag", "--key", &key_s];
    args.extend(holding);
    assert!(ok(&args).contains("tagged 8 fragments"));

    let mut args = vec!["proof", "challenge", "--public", &public_s];
    args.extend(holding);
    args.extend(round_args("5"));
    args.extend(["--out", &chal_s]);
    assert!(ok(&args).contains("8 of 8 fragments"));

    let mut args = vec![
        "proof",
        "prove",
        "--public",
        &public_s,
        "--challenge",
        &chal_s,
        "--out",
        &proof_s,
    ];
    args.extend(holding);
    ok(&args);

    let mut args = vec![
        "proof", "verify", "--public", &public_s, "--proof", &proof_s,
    ];
    args.extend(holding);
    args.extend(round_args("5"));
    assert!(ok(&args).contains("VALID: 8 fragments"));

    // Another node's identity cannot open the store.
    let other = "cd".repeat(32);
    let mut args = vec![
        "proof",
        "verify",
        "--public",
        &public_s,
        "--proof",
        &proof_s,
        "--store",
        &store_s,
        "--node-id",
        &other,
    ];
    args.extend(round_args("5"));
    fails(&args);
}
