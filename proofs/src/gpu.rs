//! The GPU backend: [`Backend`] over `cess-kernels` (wgpu). Its results are bit-identical to
//! [`CpuBackend`]'s (the tests check it).
//!
//! The trait is infallible, so a kernel error (device lost, a limit exceeded) does not panic:
//! that one call runs on the CPU instead, and the fallback is counted and its reason kept, so
//! the caller always knows which backend did the work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cess_kernels::{Gpu, GpuError};

use crate::backend::{Backend, CpuBackend};
use crate::curve::{G1, G1Affine, PremulScalar, Scalar, g1_from_backend_uncompressed};

/// [`Backend`] on a GPU adapter.
#[derive(Debug)]
pub struct GpuBackend {
    gpu: Gpu,
    fallbacks: AtomicU64,
    last_fallback: Mutex<Option<String>>,
}

impl GpuBackend {
    /// Opens the best adapter; the error says which were found and what is missing.
    pub fn open() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend {
            gpu: Gpu::open()?,
            fallbacks: AtomicU64::new(0),
            last_fallback: Mutex::new(None),
        })
    }

    /// The kernels' device (adapter report, direct kernel calls).
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Calls that ran on the CPU because the GPU failed, and the last reason.
    pub fn fallbacks(&self) -> (u64, Option<String>) {
        let reason = self
            .last_fallback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.fallbacks.load(Ordering::Relaxed), reason)
    }

    fn or_cpu<T>(&self, gpu: Result<T, String>, cpu: impl FnOnce() -> T) -> T {
        match gpu {
            Ok(v) => v,
            Err(reason) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                *self.last_fallback.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                cpu()
            }
        }
    }
}

fn scalars_le(scalars: &[Scalar]) -> Vec<[u8; 32]> {
    scalars.iter().map(Scalar::to_le_bytes).collect()
}

fn points_back(encoded: Vec<[u8; 96]>) -> Result<Vec<G1>, String> {
    encoded
        .iter()
        .map(|p| g1_from_backend_uncompressed(p).map_err(|e| format!("GPU result refused: {e}")))
        .collect()
}

fn scalars_back(encoded: Vec<[u8; 32]>) -> Result<Vec<Scalar>, String> {
    encoded
        .iter()
        .map(|s| Scalar::from_le_bytes(s).map_err(|e| format!("GPU result refused: {e}")))
        .collect()
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu-wgpu"
    }

    fn sector_dot(&self, coeffs: &[PremulScalar], block: &[u8]) -> Scalar {
        self.sector_dot_rows(coeffs, block)
            .pop()
            .unwrap_or(Scalar::ZERO)
    }

    fn sector_axpy(&self, acc: &mut [Scalar], coeff: &PremulScalar, block: &[u8]) {
        self.sector_combine(acc, &[coeff.scalar()], &[block]);
    }

    fn sector_dot_rows(&self, coeffs: &[PremulScalar], data: &[u8]) -> Vec<Scalar> {
        let plain: Vec<Scalar> = coeffs.iter().map(PremulScalar::scalar).collect();
        let gpu = self
            .gpu
            .sector_dot_rows(&scalars_le(&plain), data)
            .map_err(|e| e.to_string())
            .and_then(scalars_back);
        self.or_cpu(gpu, || CpuBackend.sector_dot_rows(coeffs, data))
    }

    fn sector_combine(&self, acc: &mut [Scalar], coeffs: &[Scalar], blocks: &[&[u8]]) {
        let gpu = self
            .gpu
            .sector_combine_columns(&scalars_le(coeffs), blocks, acc.len())
            .map_err(|e| e.to_string())
            .and_then(scalars_back);
        // On the CPU path acc is updated in place; the GPU gives sums to add.
        let sums = self.or_cpu(gpu.map(Some), || {
            CpuBackend.sector_combine(acc, coeffs, blocks);
            None
        });
        for (slot, sum) in acc.iter_mut().zip(sums.iter().flatten()) {
            *slot = slot.add(sum);
        }
    }

    fn msm(&self, points: &[G1Affine], scalars: &[Scalar], nbits: usize) -> G1 {
        let encoded: Vec<[u8; 96]> = points.iter().map(G1Affine::to_uncompressed).collect();
        let gpu = self
            .gpu
            .msm(&encoded, &scalars_le(scalars), nbits)
            .map_err(|e| e.to_string())
            .and_then(|p| points_back(vec![p]))
            .map(|mut v| v.remove(0));
        self.or_cpu(gpu, || CpuBackend.msm(points, scalars, nbits))
    }

    fn batch_mul(&self, points: &[G1], scalars: &[Scalar]) -> Vec<G1> {
        let encoded: Vec<[u8; 96]> = G1::batch_to_affine(points)
            .iter()
            .map(G1Affine::to_uncompressed)
            .collect();
        let gpu = self
            .gpu
            .batch_mul(&encoded, &scalars_le(scalars))
            .map_err(|e| e.to_string())
            .and_then(points_back);
        self.or_cpu(gpu, || CpuBackend.batch_mul(points, scalars))
    }

    fn generator_mul(&self, scalars: &[Scalar]) -> Vec<G1> {
        let gpu = self
            .gpu
            .generator_mul(&scalars_le(scalars))
            .map_err(|e| e.to_string())
            .and_then(points_back);
        self.or_cpu(gpu, || CpuBackend.generator_mul(scalars))
    }
}
