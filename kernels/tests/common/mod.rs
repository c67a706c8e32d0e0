//! Conversions between arkworks (the independent oracle) and the kernels' encodings, and the
//! test values: random ones and the boundary ones where limb arithmetic goes wrong.
#![allow(dead_code)]

use ark_bls12_381::{Fq, Fr, G1Affine, G1Projective};
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::{BigInteger, Field, PrimeField};
use cess_kernels::{G1Bytes, ScalarBytes};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn fq_bytes(x: &Fq) -> [u8; 48] {
    x.into_bigint().to_bytes_be().try_into().expect("48 bytes")
}

pub fn fq_from(bytes: &[u8; 48]) -> Fq {
    let x = Fq::from_be_bytes_mod_order(bytes);
    assert_eq!(&fq_bytes(&x), bytes, "non-canonical Fp output");
    x
}

pub fn fr_bytes(x: &Fr) -> ScalarBytes {
    x.into_bigint().to_bytes_le().try_into().expect("32 bytes")
}

pub fn fr_from(bytes: &ScalarBytes) -> Fr {
    let x = Fr::from_le_bytes_mod_order(bytes);
    assert_eq!(&fr_bytes(&x), bytes, "non-canonical Fr output");
    x
}

pub fn g1_bytes(p: &G1Affine) -> G1Bytes {
    let mut out = [0u8; 96];
    match p.xy() {
        None => out[0] = 0x40,
        Some((x, y)) => {
            out[..48].copy_from_slice(&fq_bytes(&x));
            out[48..].copy_from_slice(&fq_bytes(&y));
        }
    }
    out
}

pub fn g1_from(bytes: &G1Bytes) -> G1Affine {
    if bytes[0] == 0x40 {
        assert!(bytes[1..].iter().all(|&b| b == 0));
        return G1Affine::identity();
    }
    let x = fq_from(bytes[..48].try_into().expect("48"));
    let y = fq_from(bytes[48..].try_into().expect("48"));
    let p = G1Affine::new_unchecked(x, y);
    assert!(p.is_on_curve(), "GPU returned a point off the curve");
    p
}

pub fn rand_fq(rng: &mut ChaCha20Rng) -> Fq {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Fq::from_le_bytes_mod_order(&wide)
}

pub fn rand_fr(rng: &mut ChaCha20Rng) -> Fr {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Fr::from_le_bytes_mod_order(&wide)
}

pub fn random_point(rng: &mut ChaCha20Rng) -> G1Affine {
    (G1Projective::generator() * rand_fr(rng)).into_affine()
}

/// Field elements where limb arithmetic breaks first: 0, 1, 2, p−1, p−2, (p−1)/2, and
/// 2^k − 1, 2^k, 2^k + 1 at every limb boundary and a few others.
pub fn boundary_fq() -> Vec<Fq> {
    let mut out = vec![
        Fq::from(0u64),
        Fq::ONE,
        Fq::from(2u64),
        -Fq::ONE,
        -Fq::from(2u64),
        Fq::from(2u64).inverse().expect("2 is invertible") - Fq::ONE, // (p−1)/2
        Fq::from(2u64).inverse().expect("2 is invertible"),           // (p+1)/2
    ];
    for k in [
        16u64, 31, 32, 33, 63, 64, 96, 128, 192, 255, 256, 320, 352, 380,
    ] {
        let two_k = Fq::from(2u64).pow([k]);
        out.extend([two_k - Fq::ONE, two_k, two_k + Fq::ONE]);
    }
    out
}

pub fn boundary_fr() -> Vec<Fr> {
    let mut out = vec![
        Fr::from(0u64),
        Fr::ONE,
        Fr::from(2u64),
        -Fr::ONE,
        -Fr::from(2u64),
        Fr::from(2u64).inverse().expect("2 is invertible"),
    ];
    for k in [16u64, 31, 32, 33, 63, 64, 96, 128, 160, 192, 224, 248, 254] {
        let two_k = Fr::from(2u64).pow([k]);
        out.extend([two_k - Fr::ONE, two_k, two_k + Fr::ONE]);
    }
    out
}
