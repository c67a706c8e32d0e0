//! Every test that needs a GPU adapter, in one binary that opens one device: on Mesa's
//! lavapipe (CI's adapter) compiling the kernels' pipelines is nearly all of these tests' time
//! (the MSM module alone takes minutes), and a device compiles each module once.
//!
//! - `kernels`: the kernels against arkworks (the independent oracle), boundary and random
//!   values, and the refusals of invalid input.
//! - here: the GPU backend against the CPU backend (blst): bit-identical results for every
//!   operation, and whole tag / prove / verify runs that agree.
//!
//! Runs on any adapter, lavapipe included; without one it fails and says why.
#![cfg(feature = "gpu")]

// The kernels' arkworks conversions and test values, shared with `kernels/tests/reference.rs`.
#[path = "../../kernels/tests/common/mod.rs"]
mod ark;
mod common;
#[path = "gpu/kernels.rs"]
mod kernels;

use std::sync::OnceLock;

use cess_proofs::curve::{G1, G1Affine, Scalar};
use cess_proofs::{
    Backend, ChallengeParams, CpuBackend, GpuBackend, Verdict, prove, tag_fragment, verify,
};
use common::{challenge, key, store};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| match GpuBackend::open() {
        Ok(backend) => {
            eprintln!("the GPU tests run on {}", backend.gpu().adapter());
            backend
        }
        Err(e) => panic!(
            "the GPU tests need an adapter and found none: {e}. Without a GPU, install \
                 Mesa's lavapipe (apt-get install mesa-vulkan-drivers)."
        ),
    })
}

fn no_fallbacks() {
    let (count, reason) = gpu().fallbacks();
    assert_eq!(count, 0, "the GPU backend fell back to the CPU: {reason:?}");
}

fn scalar(rng: &mut ChaCha20Rng) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Scalar::from_wide_bytes(&wide)
}

fn point(rng: &mut ChaCha20Rng) -> G1Affine {
    G1::generator().mul(&scalar(rng)).to_affine()
}

#[test]
fn msm_is_bit_identical_to_blst_on_the_listed_sizes() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let base: Vec<G1Affine> = (0..50).map(|_| point(&mut rng)).collect();
    let mut sizes = vec![1usize, 2, 3, 255, 256, 1000];
    sizes.push(rng.random_range(4..600));
    for n in sizes {
        let mut points: Vec<G1Affine> = (0..n).map(|i| base[i % base.len()]).collect();
        let mut scalars: Vec<Scalar> = (0..n).map(|_| scalar(&mut rng)).collect();
        if n > 2 {
            points[0] = G1Affine::default(); // the identity
            scalars[1] = Scalar::ZERO;
        }
        for nbits in [128, 255] {
            let want = CpuBackend.msm(&points, &scalars, nbits);
            let got = gpu().msm(&points, &scalars, nbits);
            assert_eq!(
                got.to_affine().to_uncompressed(),
                want.to_affine().to_uncompressed(),
                "n {n}, {nbits} bits"
            );
        }
    }
    no_fallbacks();
}

#[test]
fn scalar_multiplications_and_sector_sums_are_bit_identical_to_blst() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let points: Vec<G1> = (0..20).map(|_| point(&mut rng).to_projective()).collect();
    let mut scalars: Vec<Scalar> = (0..20).map(|_| scalar(&mut rng)).collect();
    scalars[0] = Scalar::ZERO;
    scalars[1] = Scalar::from_u64(1);
    let same = |a: &[G1], b: &[G1]| {
        let enc = |v: &[G1]| {
            G1::batch_to_affine(v)
                .iter()
                .map(G1Affine::to_uncompressed)
                .collect::<Vec<_>>()
        };
        assert_eq!(enc(a), enc(b));
    };
    same(
        &gpu().batch_mul(&points, &scalars),
        &CpuBackend.batch_mul(&points, &scalars),
    );
    same(
        &gpu().generator_mul(&scalars),
        &CpuBackend.generator_mul(&scalars),
    );

    let s = 9;
    let coeffs: Vec<_> = (0..s).map(|_| scalar(&mut rng).premul()).collect();
    let mut data = vec![0u8; 31 * s * 4 + 17];
    rng.fill_bytes(&mut data);
    assert_eq!(
        gpu().sector_dot_rows(&coeffs, &data),
        CpuBackend.sector_dot_rows(&coeffs, &data)
    );
    let blocks: Vec<&[u8]> = data.chunks(31 * s).collect();
    let nus: Vec<Scalar> = blocks.iter().map(|_| scalar(&mut rng)).collect();
    let start: Vec<Scalar> = (0..s).map(|_| scalar(&mut rng)).collect();
    let (mut on_gpu, mut on_cpu) = (start.clone(), start);
    gpu().sector_combine(&mut on_gpu, &nus, &blocks);
    CpuBackend.sector_combine(&mut on_cpu, &nus, &blocks);
    assert_eq!(on_gpu, on_cpu);
    no_fallbacks();
}

#[test]
fn tags_and_proofs_from_the_gpu_equal_the_cpus_and_verify() {
    let key = key(3, 16);
    let pk = key.public();
    let (mut source, set) = store(&key, 3, &[2000, 31 * 16 * 3], 22);
    for (id, data) in &source.data {
        let on_gpu = tag_fragment(&key, gpu(), id, data).expect("gpu tags");
        assert_eq!(on_gpu.encode(), source.tags[id], "tags of {id:02x?}");
    }
    let params = ChallengeParams {
        fragments_max: 3,
        blocks_max: 12,
    };
    let ch = challenge(pk, &set, 5, 1, params);
    let (on_gpu, _) = prove(pk, &ch, &mut source, gpu()).expect("gpu proof");
    let (on_cpu, _) = prove(pk, &ch, &mut source, &CpuBackend).expect("cpu proof");
    assert_eq!(on_gpu.encode(), on_cpu.encode());
    assert_eq!(verify(pk, &ch, &on_gpu, gpu()), Verdict::Valid);
    no_fallbacks();
}
