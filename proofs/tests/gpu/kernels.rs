//! The kernels on the adapter (a GPU, or Mesa's lavapipe where there is none) against
//! arkworks and the CPU reference, on the device the backend tests share (see `gpu.rs`).

use ark_bls12_381::{Fq, Fr, G1Affine, G1Projective};
use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
use ark_ff::{Field, PrimeField};
use cess_kernels::{FieldOp, G1Bytes, Gpu, GpuError, PointOp, ScalarBytes};
use rand::Rng;

use crate::ark::*;

/// An arkworks operation the GPU result must equal.
type BinOp<F> = fn(F, F) -> F;

fn gpu() -> &'static Gpu {
    crate::gpu().gpu()
}

#[test]
fn probe_reports_the_adapter() {
    let report = gpu().adapter();
    assert!(!report.name.is_empty());
    assert!(report.max_storage_buffers_per_stage >= 7);
    assert!(report.max_storage_binding_bytes >= 1 << 20);
    assert!(!cess_kernels::adapters().is_empty());
}

#[test]
fn fp_operations_match_arkworks_on_boundary_and_random_values() {
    let mut rng = rng(10);
    let mut values = boundary_fq();
    values.extend((0..32).map(|_| rand_fq(&mut rng)));
    let pairs: Vec<(Fq, Fq)> = values
        .iter()
        .flat_map(|a| values.iter().step_by(2).map(move |b| (*a, *b)))
        .collect();
    let encoded: Vec<_> = pairs
        .iter()
        .map(|(a, b)| (fq_bytes(a), fq_bytes(b)))
        .collect();
    let ops: [(FieldOp, BinOp<Fq>); 6] = [
        (FieldOp::Add, |a, b| a + b),
        (FieldOp::Sub, |a, b| a - b),
        (FieldOp::Mul, |a, b| a * b),
        (FieldOp::Sqr, |a, _| a.square()),
        (FieldOp::Inv, |a, _| a.inverse().unwrap_or(Fq::from(0u64))),
        (FieldOp::Neg, |a, _| -a),
    ];
    for (op, expect) in ops {
        // Inversion is 570 products per element: check it on fewer pairs.
        let take = if op == FieldOp::Inv {
            values.len()
        } else {
            pairs.len()
        };
        let got = gpu().fp_op(op, &encoded[..take]).expect("fp op runs");
        for ((a, b), out) in pairs[..take].iter().zip(&got) {
            assert_eq!(fq_from(out), expect(*a, *b), "{op:?} on {a}, {b}");
        }
    }
    let p_bytes = {
        let mut p = fq_bytes(&-Fq::ONE);
        p[47] += 1; // p itself: not canonical
        p
    };
    assert!(matches!(
        gpu().fp_op(FieldOp::Add, &[([0; 48], [0; 48]), (p_bytes, [0; 48])]),
        Err(GpuError::InvalidInput { index: 1, .. })
    ));
}

#[test]
fn fr_operations_match_arkworks_on_boundary_and_random_values() {
    let mut rng = rng(11);
    let mut values = boundary_fr();
    values.extend((0..32).map(|_| rand_fr(&mut rng)));
    let pairs: Vec<(Fr, Fr)> = values
        .iter()
        .flat_map(|a| values.iter().step_by(2).map(move |b| (*a, *b)))
        .collect();
    let encoded: Vec<_> = pairs
        .iter()
        .map(|(a, b)| (fr_bytes(a), fr_bytes(b)))
        .collect();
    let ops: [(FieldOp, BinOp<Fr>); 6] = [
        (FieldOp::Add, |a, b| a + b),
        (FieldOp::Sub, |a, b| a - b),
        (FieldOp::Mul, |a, b| a * b),
        (FieldOp::Sqr, |a, _| a.square()),
        (FieldOp::Inv, |a, _| a.inverse().unwrap_or(Fr::from(0u64))),
        (FieldOp::Neg, |a, _| -a),
    ];
    for (op, expect) in ops {
        let got = gpu().fr_op(op, &encoded).expect("fr op runs");
        for ((a, b), out) in pairs.iter().zip(&got) {
            assert_eq!(fr_from(out), expect(*a, *b), "{op:?} on {a}, {b}");
        }
    }
}

#[test]
fn point_operations_match_arkworks_including_identity_doubling_and_inverse() {
    let mut rng = rng(12);
    let mut points = vec![G1Affine::identity(), G1Affine::generator()];
    points.extend((0..6).map(|_| random_point(&mut rng)));
    let mut pairs = Vec::new();
    let mut expected = Vec::new();
    for a in &points {
        for b in &points {
            pairs.push((g1_bytes(a), g1_bytes(b)));
            expected.push((*a + *b).into_affine());
        }
        // P + (−P) and P + P (doubling through addition).
        pairs.push((g1_bytes(a), g1_bytes(&-*a)));
        expected.push(G1Affine::identity());
    }
    let got = gpu().g1_op(PointOp::Add, &pairs).expect("g1 add runs");
    for (i, (out, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g1_from(out), *want, "pair {i}");
    }
    let doubles: Vec<_> = points.iter().map(|p| (g1_bytes(p), g1_bytes(p))).collect();
    let got = gpu()
        .g1_op(PointOp::Double, &doubles)
        .expect("g1 double runs");
    for (p, out) in points.iter().zip(&got) {
        assert_eq!(g1_from(out), (*p + *p).into_affine());
    }
    let mut off_curve = g1_bytes(&points[1]);
    off_curve[95] ^= 1;
    assert!(matches!(
        gpu().g1_op(PointOp::Add, &[pairs[0], (off_curve, pairs[0].1)]),
        Err(GpuError::InvalidInput { index: 1, .. })
    ));
}

fn ark_msm(points: &[G1Affine], scalars: &[Fr]) -> G1Affine {
    G1Projective::msm(points, scalars)
        .expect("equal lengths")
        .into_affine()
}

fn truncate(k: &Fr, nbits: usize) -> Fr {
    let mut bytes = fr_bytes(k);
    for bit in nbits..256 {
        bytes[bit / 8] &= !(1 << (bit % 8));
    }
    Fr::from_le_bytes_mod_order(&bytes)
}

fn check_msm(points: &[G1Affine], scalars: &[Fr], nbits: usize) {
    let encoded: Vec<G1Bytes> = points.iter().map(g1_bytes).collect();
    let ks: Vec<ScalarBytes> = scalars.iter().map(fr_bytes).collect();
    let got = gpu().msm(&encoded, &ks, nbits).expect("msm runs");
    let truncated: Vec<Fr> = scalars.iter().map(|k| truncate(k, nbits)).collect();
    assert_eq!(
        g1_from(&got),
        ark_msm(points, &truncated),
        "msm over {} points, {nbits} bits",
        points.len()
    );
}

#[test]
fn msm_matches_arkworks_on_the_listed_sizes_and_awkward_inputs() {
    let mut rng = rng(13);
    let base: Vec<G1Affine> = (0..64).map(|_| random_point(&mut rng)).collect();
    let mut sizes = vec![1usize, 2, 3, 255, 256, 1000];
    sizes.extend((0..3).map(|_| rng.random_range(4..700)));
    for n in sizes {
        // Repeated points (the base set cycles), the identity and zero scalars among them.
        let mut points: Vec<G1Affine> = (0..n).map(|i| base[i % base.len()]).collect();
        let mut scalars: Vec<Fr> = (0..n).map(|_| rand_fr(&mut rng)).collect();
        if n > 2 {
            points[1] = G1Affine::identity();
            scalars[2] = Fr::from(0u64);
            scalars[n - 1] = -Fr::ONE;
        }
        check_msm(&points, &scalars, 255);
    }
    // 128-bit coefficients, as the proofs' ν.
    let points: Vec<G1Affine> = (0..300).map(|i| base[i % base.len()]).collect();
    let scalars: Vec<Fr> = (0..300).map(|_| rand_fr(&mut rng)).collect();
    check_msm(&points, &scalars, 128);
    // All scalars equal (every point in one bucket per window) and all zero.
    check_msm(&points, &vec![Fr::from(12345u64); 300], 255);
    check_msm(&points, &vec![Fr::from(0u64); 300], 255);
    assert_eq!(gpu().msm(&[], &[], 255).expect("empty msm")[0], 0x40);
}

#[test]
fn msm_refuses_a_point_off_the_curve_and_names_it() {
    let mut points: Vec<G1Bytes> = vec![g1_bytes(&G1Affine::generator()); 5];
    points[3][95] ^= 1;
    let err = gpu()
        .msm(&points, &[[1; 32]; 5], 255)
        .expect_err("off-curve point");
    assert!(
        matches!(err, GpuError::InvalidInput { index: 3, .. }),
        "{err}"
    );
}

#[test]
fn batch_and_generator_multiplication_match_arkworks() {
    let mut rng = rng(14);
    let n = 40;
    let mut points: Vec<G1Affine> = (0..n).map(|_| random_point(&mut rng)).collect();
    let mut scalars: Vec<Fr> = (0..n).map(|_| rand_fr(&mut rng)).collect();
    points[0] = G1Affine::identity();
    scalars[1] = Fr::from(0u64);
    scalars[2] = Fr::ONE;
    scalars[3] = -Fr::ONE;
    let got = gpu()
        .batch_mul(
            &points.iter().map(g1_bytes).collect::<Vec<_>>(),
            &scalars.iter().map(fr_bytes).collect::<Vec<_>>(),
        )
        .expect("batch_mul runs");
    for (i, ((p, k), out)) in points.iter().zip(&scalars).zip(&got).enumerate() {
        assert_eq!(g1_from(out), (*p * k).into_affine(), "batch_mul {i}");
    }
    let got = gpu()
        .generator_mul(&scalars.iter().map(fr_bytes).collect::<Vec<_>>())
        .expect("generator_mul runs");
    for (i, (k, out)) in scalars.iter().zip(&got).enumerate() {
        assert_eq!(
            g1_from(out),
            (G1Affine::generator() * k).into_affine(),
            "generator_mul {i}"
        );
    }
}

fn sector(data: &[u8], offset: usize) -> Fr {
    let mut bytes = [0u8; 31];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = data.get(offset + i).copied().unwrap_or(0);
    }
    Fr::from_le_bytes_mod_order(&bytes)
}

#[test]
fn sector_linear_combinations_match_arkworks() {
    let mut rng = rng(15);
    for (s, len) in [(1usize, 31usize), (7, 1000), (16, 16 * 31 * 5), (33, 4097)] {
        let mut data = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut rng, &mut data);
        if len > 62 {
            data[31..62].fill(0xff); // the largest sector value
        }
        let coeffs: Vec<Fr> = (0..s).map(|_| rand_fr(&mut rng)).collect();
        let blocks = len.div_ceil(s * 31);
        let got = gpu()
            .sector_dot_rows(&coeffs.iter().map(fr_bytes).collect::<Vec<_>>(), &data)
            .expect("dot_rows runs");
        assert_eq!(got.len(), blocks);
        for (i, out) in got.iter().enumerate() {
            let want: Fr = (0..s)
                .map(|j| coeffs[j] * sector(&data, (i * s + j) * 31))
                .sum();
            assert_eq!(fr_from(out), want, "s {s}, block {i}");
        }
        // Columns over blocks given separately, the last one short.
        let chunks: Vec<&[u8]> = data.chunks(s * 31).collect();
        let nus: Vec<Fr> = (0..chunks.len()).map(|_| rand_fr(&mut rng)).collect();
        let got = gpu()
            .sector_combine_columns(&nus.iter().map(fr_bytes).collect::<Vec<_>>(), &chunks, s)
            .expect("combine_cols runs");
        assert_eq!(got.len(), s);
        for (j, out) in got.iter().enumerate() {
            let want: Fr = chunks
                .iter()
                .zip(&nus)
                .map(|(block, nu)| *nu * sector(block, j * 31))
                .sum();
            assert_eq!(fr_from(out), want, "s {s}, column {j}");
        }
    }
    let too_big = [0xffu8; 32];
    assert!(matches!(
        gpu().sector_dot_rows(&[[0; 32], too_big], &[0; 62]),
        Err(GpuError::InvalidInput { index: 1, .. })
    ));
}
