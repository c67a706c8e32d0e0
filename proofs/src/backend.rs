//! The heavy operations behind a trait, so a GPU backend (`cess-kernels`) can replace the CPU
//! one without changing callers. [`CpuBackend`] is the reference every other backend is
//! tested against.

use crate::curve::{self, G1, G1Affine, PremulScalar, SECTOR_BYTES, Scalar};

/// Heavy arithmetic used by tagging, proving and verifying.
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// A short name for logs and benchmark reports.
    fn name(&self) -> &'static str;

    /// Σ_j coeffs[j]·m_j over the 31-byte sectors m_j of `block` (a short block's missing
    /// sectors are zero). `block` holds at most `coeffs.len()` sectors.
    fn sector_dot(&self, coeffs: &[PremulScalar], block: &[u8]) -> Scalar;

    /// acc[j] += coeff·m_j for every sector m_j of `block` (at most `acc.len()` sectors).
    fn sector_axpy(&self, acc: &mut [Scalar], coeff: &PremulScalar, block: &[u8]);

    /// out[i] = Σ_j coeffs[j]·m_ij for every block i of `data`, blocks of `coeffs.len()`
    /// sectors (the last one may be short). One call per batch lets a GPU take all at once.
    fn sector_dot_rows(&self, coeffs: &[PremulScalar], data: &[u8]) -> Vec<Scalar> {
        data.chunks(coeffs.len() * SECTOR_BYTES)
            .map(|block| self.sector_dot(coeffs, block))
            .collect()
    }

    /// acc[j] += Σ_i coeffs[i]·m_ij over the sectors m_ij of `blocks[i]`.
    fn sector_combine(&self, acc: &mut [Scalar], coeffs: &[Scalar], blocks: &[&[u8]]) {
        assert_eq!(coeffs.len(), blocks.len());
        for (coeff, block) in coeffs.iter().zip(blocks) {
            self.sector_axpy(acc, &coeff.premul(), block);
        }
    }

    /// Σ scalars[k]·points[k], using the low `nbits` bits of each scalar.
    fn msm(&self, points: &[G1Affine], scalars: &[Scalar], nbits: usize) -> G1;

    /// out[k] = scalars[k]·points[k].
    fn batch_mul(&self, points: &[G1], scalars: &[Scalar]) -> Vec<G1>;

    /// out[k] = scalars[k]·g₁ (fixed base).
    fn generator_mul(&self, scalars: &[Scalar]) -> Vec<G1>;
}

/// The CPU backend on blst, one thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu-blst"
    }

    fn sector_dot(&self, coeffs: &[PremulScalar], block: &[u8]) -> Scalar {
        assert!(
            block.len() <= coeffs.len() * SECTOR_BYTES,
            "block longer than s sectors"
        );
        let mut acc = Scalar::ZERO;
        for (sector, coeff) in block.chunks(SECTOR_BYTES).zip(coeffs) {
            acc = coeff.mul_sector_add(sector, &acc);
        }
        acc
    }

    fn sector_axpy(&self, acc: &mut [Scalar], coeff: &PremulScalar, block: &[u8]) {
        assert!(
            block.len() <= acc.len() * SECTOR_BYTES,
            "block longer than s sectors"
        );
        for (sector, slot) in block.chunks(SECTOR_BYTES).zip(acc.iter_mut()) {
            *slot = coeff.mul_sector_add(sector, slot);
        }
    }

    fn msm(&self, points: &[G1Affine], scalars: &[Scalar], nbits: usize) -> G1 {
        curve::msm(points, scalars, nbits)
    }

    fn batch_mul(&self, points: &[G1], scalars: &[Scalar]) -> Vec<G1> {
        assert_eq!(points.len(), scalars.len());
        points.iter().zip(scalars).map(|(p, s)| p.mul(s)).collect()
    }

    fn generator_mul(&self, scalars: &[Scalar]) -> Vec<G1> {
        scalars.iter().map(curve::generator_mul).collect()
    }
}
