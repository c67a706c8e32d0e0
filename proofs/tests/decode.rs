//! Every decoder refuses what it cannot trust and never panics: points off the curve or
//! outside the subgroup, the identity, truncated, extended and mutated encodings.

mod common;

use cess_proofs::challenge::ChallengeParams;
use cess_proofs::curve::{G1Affine, G2Affine};
use cess_proofs::{Challenge, CpuBackend, PointError, Proof, PublicKey, SecretKey, Tags, prove};
use common::{challenge, key, store};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Compressed encodings with x = k (small), in G1 and G2 format.
fn small_x_g1(k: u8) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = 0x80;
    b[47] = k;
    b
}

fn small_x_g2(k: u8) -> [u8; 96] {
    let mut b = [0u8; 96];
    b[0] = 0x80;
    b[95] = k;
    b
}

#[test]
fn points_off_the_curve_or_outside_the_subgroup_are_refused() {
    let (mut off_curve, mut off_group) = (0, 0);
    for k in 1..=40u8 {
        match G1Affine::decode(&small_x_g1(k)) {
            Err(PointError::NotOnCurve) => off_curve += 1,
            Err(PointError::NotInSubgroup) => off_group += 1,
            other => panic!("G1 x={k}: {other:?}"),
        }
    }
    assert!(
        off_curve > 0 && off_group > 0,
        "G1: {off_curve} off curve, {off_group} off group"
    );
    let (mut off_curve, mut off_group) = (0, 0);
    for k in 1..=40u8 {
        match G2Affine::decode(&small_x_g2(k)) {
            Err(PointError::NotOnCurve) => off_curve += 1,
            Err(PointError::NotInSubgroup) => off_group += 1,
            other => panic!("G2 x={k}: {other:?}"),
        }
    }
    assert!(
        off_curve > 0 && off_group > 0,
        "G2: {off_curve} off curve, {off_group} off group"
    );

    let mut identity = [0u8; 48];
    identity[0] = 0xC0;
    assert_eq!(G1Affine::decode(&identity), Err(PointError::Infinity));
    let mut identity = [0u8; 96];
    identity[0] = 0xC0;
    assert_eq!(G2Affine::decode(&identity), Err(PointError::Infinity));
    assert!(G1Affine::decode(&G1Affine::generator().compress()).is_ok());
}

#[test]
fn keys_and_proofs_carrying_a_bad_point_are_refused() {
    let key = key(31, 3);
    let bad_g1 = (1..=40u8)
        .map(small_x_g1)
        .find(|b| G1Affine::decode(b) == Err(PointError::NotInSubgroup))
        .unwrap();
    let bad_g2 = (1..=40u8)
        .map(small_x_g2)
        .find(|b| G2Affine::decode(b) == Err(PointError::NotInSubgroup))
        .unwrap();
    let mut public = key.public().encode();
    public[108..156].copy_from_slice(&bad_g1);
    assert!(PublicKey::decode(&public).is_err());
    let mut public = key.public().encode();
    public[12..108].copy_from_slice(&bad_g2);
    assert!(PublicKey::decode(&public).is_err());
    let mut identity_pk = key.public().encode();
    identity_pk[12..108].fill(0);
    identity_pk[12] = 0xC0;
    assert!(
        PublicKey::decode(&identity_pk).is_err(),
        "pk = identity would accept anything"
    );

    let (mut source, set) = store(&key, 2, &[300], 31);
    let ch = challenge(
        key.public(),
        &set,
        1,
        1,
        ChallengeParams {
            fragments_max: 2,
            blocks_max: 4,
        },
    );
    let mut proof = prove(key.public(), &ch, &mut source, &CpuBackend)
        .unwrap()
        .0
        .encode();
    proof[12..60].copy_from_slice(&bad_g1);
    assert!(Proof::decode(&proof).is_err());
    proof[12..60].fill(0);
    proof[12] = 0xC0;
    assert!(Proof::decode(&proof).is_err());
}

/// A bounded stand-in for the cargo-fuzz target in `proofs/fuzz/`, run on every `cargo test`: mutate valid encodings
/// (bit flips, byte overwrites, truncation, extension, splices) and decode them all.
#[test]
fn mutated_encodings_never_panic_a_decoder() {
    let key = key(32, 4);
    let (mut source, set) = store(&key, 3, &[400], 32);
    let ch = challenge(
        key.public(),
        &set,
        2,
        1,
        ChallengeParams {
            fragments_max: 3,
            blocks_max: 6,
        },
    );
    let proof = prove(key.public(), &ch, &mut source, &CpuBackend)
        .unwrap()
        .0;
    let tags = source.tags.values().next().unwrap().clone();
    let seeds: Vec<Vec<u8>> = vec![
        key.encode().to_vec(),
        key.public().encode(),
        tags,
        ch.encode(),
        proof.encode(),
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let mut decoded_ok = 0;
    for round in 0..4000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        match rng.random_range(0..5) {
            0 => {
                let bit = rng.random_range(0..bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            2 => bytes.truncate(rng.random_range(0..bytes.len())),
            3 => {
                let extra = rng.random_range(1..64);
                bytes.extend((0..extra).map(|_| rng.random::<u8>()));
            }
            _ => {
                let at = rng.random_range(0..bytes.len());
                let len = rng.random_range(0..(bytes.len() - at).min(64) + 1);
                rng.fill_bytes(&mut bytes[at..at + len]);
            }
        }
        // Whatever decodes re-encodes to the same bytes: encodings are canonical, so two
        // different byte strings never mean the same key, tag blob, challenge or proof.
        if let Ok(v) = SecretKey::decode(&bytes) {
            assert_eq!(&v.encode()[..], &bytes[..]);
            decoded_ok += 1;
        }
        if let Ok(v) = PublicKey::decode(&bytes) {
            assert_eq!(v.encode(), bytes);
            decoded_ok += 1;
        }
        if let Ok(v) = Tags::decode(&bytes) {
            assert_eq!(v.encode(), bytes);
            decoded_ok += 1;
        }
        if let Ok(v) = Challenge::decode(&bytes) {
            assert_eq!(v.encode(), bytes);
            decoded_ok += 1;
        }
        if let Ok(v) = Proof::decode(&bytes) {
            assert_eq!(v.encode(), bytes);
            decoded_ok += 1;
        }
    }
    // Some mutations land in scalar bytes and still decode; most do not.
    assert!(decoded_ok > 0 && decoded_ok < 4000, "{decoded_ok}");
    // Pure noise with each magic.
    for magic in [
        b"CESSPSK1",
        b"CESSPPK1",
        b"CESSTAG1",
        b"CESSCHL1",
        b"CESSPRF1",
    ] {
        for len in [0usize, 4, 12, 100, 5000] {
            let mut bytes = magic.to_vec();
            bytes.extend((0..len).map(|_| rng.random::<u8>()));
            let _ = SecretKey::decode(&bytes);
            let _ = PublicKey::decode(&bytes);
            let _ = Tags::decode(&bytes);
            let _ = Challenge::decode(&bytes);
            let _ = Proof::decode(&bytes);
        }
    }
}

#[test]
fn a_huge_declared_size_is_refused_before_allocating() {
    let mut bytes = b"CESSPPK1".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(PublicKey::decode(&bytes).is_err());
    let mut bytes = b"CESSPRF1".to_vec();
    bytes.extend_from_slice(&8192u32.to_le_bytes());
    assert!(matches!(
        Proof::decode(&bytes),
        Err(cess_proofs::DecodeError::Truncated { .. })
    ));
}
