//! GPU compute kernels (WGSL via wgpu) for BLS12-381 arithmetic and G1 MSM.
//!
//! Not implemented yet: issue 6 fills this crate. It exports nothing, so nothing can
//! mistake it for a working GPU backend.
