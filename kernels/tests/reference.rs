//! The CPU reference (same limbs, same Montgomery form, same point formulas as the WGSL)
//! against arkworks. No adapter needed.

mod common;

use ark_bls12_381::{Fq, Fr, G1Affine, G1Projective};
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::Field;
use cess_kernels::field::{FP, FR, RefG1, limbs_from_be, limbs_from_le, limbs_to_be, on_curve};
use cess_kernels::{decode_g1, encode_g1};
use common::*;

fn fp_ref(x: &Fq) -> [u32; 12] {
    FP.to_mont(&limbs_from_be(&fq_bytes(x)))
}

fn fp_back(x: &[u32; 12]) -> Fq {
    let mut bytes = [0u8; 48];
    limbs_to_be(&FP.from_mont(x), &mut bytes);
    fq_from(&bytes)
}

fn fr_ref(x: &Fr) -> [u32; 8] {
    FR.to_mont(&limbs_from_le(&fr_bytes(x)))
}

fn fr_back(x: &[u32; 8]) -> Fr {
    let bytes: Vec<u8> = FR
        .from_mont(x)
        .iter()
        .flat_map(|l| l.to_le_bytes())
        .collect();
    fr_from(&bytes.try_into().expect("32 bytes"))
}

#[test]
fn fp_reference_matches_arkworks() {
    let mut rng = rng(1);
    let mut values = boundary_fq();
    values.extend((0..64).map(|_| rand_fq(&mut rng)));
    for a in &values {
        for b in values.iter().step_by(3) {
            let (ra, rb) = (fp_ref(a), fp_ref(b));
            assert_eq!(fp_back(&FP.add(&ra, &rb)), *a + b, "{a} + {b}");
            assert_eq!(fp_back(&FP.sub(&ra, &rb)), *a - b, "{a} - {b}");
            assert_eq!(fp_back(&FP.mul(&ra, &rb)), *a * b, "{a} * {b}");
        }
        assert_eq!(fp_back(&FP.neg(&fp_ref(a))), -*a);
        assert_eq!(
            fp_back(&FP.inv(&fp_ref(a))),
            a.inverse().unwrap_or(Fq::from(0u64))
        );
    }
}

#[test]
fn fr_reference_matches_arkworks() {
    let mut rng = rng(2);
    let mut values = boundary_fr();
    values.extend((0..64).map(|_| rand_fr(&mut rng)));
    for a in &values {
        for b in values.iter().step_by(3) {
            let (ra, rb) = (fr_ref(a), fr_ref(b));
            assert_eq!(fr_back(&FR.add(&ra, &rb)), *a + b);
            assert_eq!(fr_back(&FR.sub(&ra, &rb)), *a - b);
            assert_eq!(fr_back(&FR.mul(&ra, &rb)), *a * b);
        }
        assert_eq!(
            fr_back(&FR.inv(&fr_ref(a))),
            a.inverse().unwrap_or(Fr::from(0u64))
        );
    }
}

fn ref_point(p: &G1Affine) -> RefG1 {
    let limbs = decode_g1(&g1_bytes(p)).expect("valid point");
    RefG1::from_affine(
        &limbs[..12].try_into().expect("12"),
        &limbs[12..].try_into().expect("12"),
    )
}

fn ark_point(p: &RefG1) -> G1Affine {
    let (x, y) = p.to_affine();
    g1_from(&encode_g1(&x, &y))
}

#[test]
fn point_reference_matches_arkworks_including_the_special_cases() {
    let mut rng = rng(3);
    let identity = G1Affine::identity();
    let mut points = vec![identity, G1Affine::generator()];
    points.extend((0..6).map(|_| random_point(&mut rng)));
    for a in &points {
        let ra = ref_point(a);
        assert_eq!(ark_point(&ra.double()), (*a + *a).into_affine(), "2P");
        assert_eq!(ark_point(&ra.add(&ra)), (*a + *a).into_affine(), "P + P");
        let neg = -*a;
        assert!(ark_point(&ra.add(&ref_point(&neg))).is_zero(), "P + (−P)");
        for b in &points {
            assert_eq!(
                ark_point(&ra.add(&ref_point(b))),
                (*a + *b).into_affine(),
                "P + Q"
            );
        }
        let k = rand_fr(&mut rng);
        let scalar: [u32; 8] = limbs_from_le(&fr_bytes(&k));
        assert_eq!(
            ark_point(&ra.mul(&scalar, 256)),
            (*a * k).into_affine(),
            "kP"
        );
    }
    let g = G1Projective::generator().into_affine();
    assert_eq!(g1_bytes(&g), cess_kernels::g1_generator());
}

#[test]
fn encodings_refuse_what_is_not_a_canonical_uncompressed_point() {
    let g = cess_kernels::g1_generator();
    let limbs = decode_g1(&g).expect("generator decodes");
    assert!(on_curve(&limbs));
    assert_eq!(
        encode_g1(
            &limbs[..12].try_into().unwrap(),
            &limbs[12..].try_into().unwrap()
        ),
        g
    );
    let mut compressed = g;
    compressed[0] |= 0x80;
    assert!(decode_g1(&compressed).is_err());
    let mut signed = g;
    signed[0] |= 0x20;
    assert!(decode_g1(&signed).is_err());
    let mut bad_infinity = [0u8; 96];
    bad_infinity[0] = 0x40;
    bad_infinity[95] = 1;
    assert!(decode_g1(&bad_infinity).is_err());
    assert!(decode_g1(&[0u8; 96]).is_err(), "(0, 0) without the flag");
    let mut big = g;
    big[..48].copy_from_slice(&[0x1f; 48]); // x ≥ p (flags clear)
    assert!(decode_g1(&big).is_err());
    let mut off_curve = g;
    off_curve[95] ^= 1;
    let limbs = decode_g1(&off_curve).expect("coordinates are in range");
    assert!(!on_curve(&limbs));
}
