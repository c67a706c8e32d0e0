//! Cross-check against arkworks, an independent implementation: hash-to-G1 (RFC 9380 with
//! our DST), the tag equation and the verification equation.

mod common;

use ark_bls12_381::{Bls12_381, Fr, G1Affine, G1Projective, G2Affine, g1};
use ark_ec::hashing::HashToCurve;
use ark_ec::hashing::curve_maps::wb::WBMap;
use ark_ec::hashing::map_to_curve_hasher::MapToCurveBasedHasher;
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::PrimeField;
use ark_ff::field_hashers::DefaultFieldHasher;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use cess_proofs::challenge::ChallengeParams;
use cess_proofs::{CpuBackend, HASH_DST, Proof, Verdict, prove, tag_fragment, verify};
use common::{challenge, key, store};

type Hasher =
    MapToCurveBasedHasher<G1Projective, DefaultFieldHasher<sha2::Sha256, 128>, WBMap<g1::Config>>;

fn ark_h(id: &cess_proofs::FragmentId, index: u32) -> G1Projective {
    let mut msg = id.0.to_vec();
    msg.extend_from_slice(&index.to_le_bytes());
    Hasher::new(HASH_DST)
        .unwrap()
        .hash(&msg)
        .unwrap()
        .into_group()
}

fn compress(p: &G1Projective) -> Vec<u8> {
    let mut out = Vec::new();
    p.into_affine().serialize_compressed(&mut out).unwrap();
    out
}

fn fr(bytes: &[u8]) -> Fr {
    Fr::from_le_bytes_mod_order(bytes)
}

/// x and α_j out of the secret key encoding (magic, s, x, α…).
fn secret_scalars(key: &cess_proofs::SecretKey) -> (Fr, Vec<Fr>) {
    let bytes = key.encode();
    let x = fr(&bytes[12..44]);
    let alphas = bytes[44..].chunks(32).map(fr).collect();
    (x, alphas)
}

#[test]
fn public_key_matches_arkworks() {
    let key = key(21, 6);
    let (x, alphas) = secret_scalars(&key);
    let encoded = key.public().encode();
    let pk = G2Affine::deserialize_compressed(&encoded[12..108]).unwrap();
    assert_eq!(pk, (G2Affine::generator() * x).into_affine());
    for (j, alpha) in alphas.iter().enumerate() {
        let u = G1Affine::deserialize_compressed(&encoded[108 + 48 * j..156 + 48 * j]).unwrap();
        assert_eq!(u, (G1Affine::generator() * alpha).into_affine(), "u_{j}");
    }
}

#[test]
fn tags_match_the_equation_computed_by_arkworks() {
    for s in [1u32, 4, 33] {
        let key = key(22, s);
        let (x, alphas) = secret_scalars(&key);
        let data: Vec<u8> = (0..(31 * s as usize * 2 + 40))
            .map(|k| (k * 31 + 11) as u8)
            .collect();
        let id = cess_proofs::FragmentId([0x5A; 32]);
        let tags = tag_fragment(&key, &CpuBackend, &id, &data)
            .unwrap()
            .encode();
        for (i, block) in data.chunks(31 * s as usize).enumerate() {
            let t: Fr = block.chunks(31).zip(&alphas).map(|(m, a)| fr(m) * a).sum();
            let expected = (ark_h(&id, i as u32) + G1Affine::generator() * t) * x;
            let at = 84 + 48 * i;
            assert_eq!(compress(&expected), tags[at..at + 48], "s={s} block {i}");
        }
    }
}

#[test]
fn verification_equation_agrees_with_arkworks() {
    let key = key(23, 5);
    let pk_bytes = key.public().encode();
    let pk = G2Affine::deserialize_compressed(&pk_bytes[12..108]).unwrap();
    let bases: Vec<G1Affine> = pk_bytes[108..]
        .chunks(48)
        .map(|c| G1Affine::deserialize_compressed(c).unwrap())
        .collect();
    let (mut source, set) = store(&key, 6, &[700, 333], 23);
    let ch = challenge(
        key.public(),
        &set,
        3,
        2,
        ChallengeParams {
            fragments_max: 4,
            blocks_max: 9,
        },
    );
    let proof = prove(key.public(), &ch, &mut source, &CpuBackend)
        .unwrap()
        .0;
    let bytes = proof.encode();

    let ark_check = |bytes: &[u8]| {
        let sigma = G1Affine::deserialize_compressed(&bytes[12..60]).unwrap();
        let mu: Vec<Fr> = bytes[60..].chunks(32).map(fr).collect();
        let mut a = G1Projective::default();
        for f in ch.fragments() {
            for b in &f.blocks {
                a += ark_h(&f.id, b.index) * fr(&b.nu.to_le_bytes());
            }
        }
        for (u, m) in bases.iter().zip(&mu) {
            a += *u * m;
        }
        Bls12_381::pairing(sigma, G2Affine::generator()) == Bls12_381::pairing(a, pk)
    };
    assert!(ark_check(&bytes));
    assert_eq!(
        verify(key.public(), &ch, &proof, &CpuBackend),
        Verdict::Valid
    );

    // μ_1 + 1: both implementations reject.
    let mut tampered = bytes.clone();
    tampered[60] = tampered[60].wrapping_add(1);
    assert!(!ark_check(&tampered));
    let tampered = Proof::decode(&tampered).unwrap();
    assert_ne!(
        verify(key.public(), &ch, &tampered, &CpuBackend),
        Verdict::Valid
    );
}
