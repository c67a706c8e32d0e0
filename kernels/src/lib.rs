//! GPU compute kernels (WGSL via wgpu) for BLS12-381: Fp and Fr arithmetic in 32-bit limbs
//! (Montgomery form), G1 addition and doubling, a Pippenger MSM, batch scalar multiplication
//! and Fr linear combinations of 31-byte sectors.
//!
//! Callers see canonical encodings only: G1 points as the 96-byte uncompressed ZCash encoding
//! (big-endian x, y; flag bits in the first byte), Fp elements as 48 big-endian bytes and
//! scalars as 32 little-endian bytes. The GPU layouts stay inside this crate.
//!
//! Every kernel has a CPU reference in [`field`] with the same limbs and formulas; the tests
//! check the GPU against it, against blst and against arkworks.
//!
//! [`Gpu::open`] says which adapter it found, or why it found none: falling back to the CPU is
//! the caller's explicit choice, never silent.

#![forbid(unsafe_code)]

pub mod field;
mod gpu;
pub mod shader;

use field::{FP, FR, less_than, limbs_from_be, limbs_from_le, limbs_to_be, limbs_to_le};
pub use gpu::{AdapterReport, adapters};
use shader::Module;

/// Bytes of an uncompressed G1 point.
pub const G1_BYTES: usize = 96;
/// Bytes of a scalar (little-endian).
pub const SCALAR_BYTES: usize = 32;
/// Bytes of an Fp element (big-endian).
pub const FP_BYTES: usize = 48;
/// Bytes of a sector: 31, so every sector is an integer below r.
pub const SECTOR_BYTES: usize = 31;

/// An uncompressed G1 point: big-endian x ‖ y; the top three bits of byte 0 are flags
/// (compressed, infinity, sign). The identity is 0x40 followed by zeros.
pub type G1Bytes = [u8; G1_BYTES];
/// A scalar, little-endian.
pub type ScalarBytes = [u8; SCALAR_BYTES];

const FLAG_COMPRESSED: u8 = 0x80;
const FLAG_INFINITY: u8 = 0x40;
const FLAG_SIGN: u8 = 0x20;

/// Why a kernel could not run. Nothing partial is ever returned.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("adapter {adapter} has {limit} = {available}, the kernels need {needed}")]
    MissingLimit {
        adapter: String,
        limit: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("opening a device on {adapter} failed: {reason}")]
    Device { adapter: String, reason: String },
    #[error("shader module {module} failed to build: {reason}")]
    Shader {
        module: &'static str,
        reason: String,
    },
    #[error("GPU execution failed: {0}")]
    Execution(String),
    #[error("input {index}: {reason}")]
    InvalidInput { index: usize, reason: &'static str },
    #[error("{what}: {len_bytes} bytes is over the device's limit of {max_bytes}")]
    TooLarge {
        what: &'static str,
        len_bytes: u64,
        max_bytes: u64,
    },
    #[error("{0}")]
    Mismatch(&'static str),
}

/// Element-wise field operations (for tests and probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Sqr = 3,
    Inv = 4,
    Neg = 5,
}

/// Element-wise point operations (for tests and probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointOp {
    /// a + b.
    Add = 0,
    /// 2a (b is ignored).
    Double = 1,
}

/// Decodes an uncompressed point to canonical limbs, (0, 0) for the identity. Checks the flags
/// and that both coordinates are below p; the curve check runs on the GPU.
pub fn decode_g1(bytes: &G1Bytes) -> Result<[u32; 24], &'static str> {
    let flags = bytes[0] & (FLAG_COMPRESSED | FLAG_INFINITY | FLAG_SIGN);
    if flags & FLAG_COMPRESSED != 0 {
        return Err("compressed encoding where an uncompressed one is expected");
    }
    if flags & FLAG_SIGN != 0 {
        return Err("sign flag set on an uncompressed point");
    }
    let mut coords = *bytes;
    coords[0] &= !(FLAG_COMPRESSED | FLAG_INFINITY | FLAG_SIGN);
    if flags & FLAG_INFINITY != 0 {
        if coords.iter().any(|&b| b != 0) {
            return Err("infinity flag with nonzero coordinates");
        }
        return Ok([0; 24]);
    }
    let x: [u32; 12] = limbs_from_be(&coords[..FP_BYTES]);
    let y: [u32; 12] = limbs_from_be(&coords[FP_BYTES..]);
    if !less_than(&x, &FP.modulus) || !less_than(&y, &FP.modulus) {
        return Err("coordinate not below p");
    }
    if x.iter().chain(&y).all(|&l| l == 0) {
        return Err("point not on the curve");
    }
    let mut out = [0u32; 24];
    out[..12].copy_from_slice(&x);
    out[12..].copy_from_slice(&y);
    Ok(out)
}

/// Encodes canonical affine limbs ((0, 0) = identity) as an uncompressed point.
pub fn encode_g1(x: &[u32; 12], y: &[u32; 12]) -> G1Bytes {
    let mut out = [0u8; G1_BYTES];
    if x.iter().chain(y).all(|&l| l == 0) {
        out[0] = FLAG_INFINITY;
        return out;
    }
    limbs_to_be(x, &mut out[..FP_BYTES]);
    limbs_to_be(y, &mut out[FP_BYTES..]);
    out
}

fn split_xy(words: &[u32]) -> ([u32; 12], [u32; 12]) {
    (
        words[..12].try_into().expect("12 words"),
        words[12..24].try_into().expect("12 words"),
    )
}

fn decode_points(points: &[G1Bytes], out: &mut Vec<u32>) -> Result<(), GpuError> {
    out.reserve(points.len() * 24);
    for (index, p) in points.iter().enumerate() {
        let limbs = decode_g1(p).map_err(|reason| GpuError::InvalidInput { index, reason })?;
        out.extend_from_slice(&limbs);
    }
    Ok(())
}

/// Canonical field elements as limbs, refusing any at or above the modulus (index named).
fn canonical_limbs<const N: usize, E>(
    elements: impl IntoIterator<Item = (usize, E)>,
    modulus: &[u32; N],
    to_limbs: impl Fn(E) -> [u32; N],
    reason: &'static str,
) -> Result<Vec<u32>, GpuError> {
    let mut words = Vec::new();
    for (index, e) in elements {
        let limbs = to_limbs(e);
        if !less_than(&limbs, modulus) {
            return Err(GpuError::InvalidInput { index, reason });
        }
        words.extend_from_slice(&limbs);
    }
    Ok(words)
}

fn scalar_limbs(scalars: &[ScalarBytes]) -> Result<Vec<u32>, GpuError> {
    canonical_limbs(
        scalars.iter().enumerate(),
        &FR.modulus,
        |s| limbs_from_le::<8>(s),
        "scalar not below r",
    )
}

fn scalar_words(scalars: &[ScalarBytes]) -> Vec<u32> {
    scalars.iter().flat_map(|s| limbs_from_le::<8>(s)).collect()
}

fn u32_len(what: &'static str, n: usize) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| GpuError::TooLarge {
        what,
        len_bytes: n as u64,
        max_bytes: u64::from(u32::MAX),
    })
}

/// The standard generator of G1, uncompressed.
pub fn g1_generator() -> G1Bytes {
    const X: &str = "17f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb";
    const Y: &str = "08b3f481e3aaa0f1a09e30ed741d8ae4fcf5e095d5d00af600db18cb2c04b3edd03cc744a2888ae40caa232946c5e7e1";
    let mut out = [0u8; G1_BYTES];
    for (i, hex) in X
        .as_bytes()
        .chunks(2)
        .chain(Y.as_bytes().chunks(2))
        .enumerate()
    {
        let s = std::str::from_utf8(hex).expect("ascii");
        out[i] = u8::from_str_radix(s, 16).expect("hex digit pair");
    }
    out
}

/// Window width for an MSM over `n` points: about log2(n) − 3, within 4..=13 (the bucket
/// memory is W·2^c·144 bytes; 13 keeps it near 24 MiB at 256 bits).
pub fn msm_window_bits(n: usize) -> u32 {
    let log = usize::BITS - n.max(1).leading_zeros();
    log.saturating_sub(3).clamp(4, 13)
}

/// An open GPU with the kernels. Cheap to share (`&Gpu` is `Sync`).
#[derive(Debug)]
pub struct Gpu {
    device: gpu::Device,
}

impl Gpu {
    /// Opens the best adapter (discrete, then integrated, then software), or the one named by
    /// `$CESS_GPU_ADAPTER`. The error says what was found and what is missing.
    pub fn open() -> Result<Gpu, GpuError> {
        Ok(Gpu {
            device: gpu::Device::open()?,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterReport {
        self.device.report()
    }

    /// Compiles every module now, so later calls do not pay for it.
    pub fn warm_up(&self) -> Result<(), GpuError> {
        self.fp_op(FieldOp::Add, &[([0; 48], [0; 48])])?;
        self.msm(&[g1_generator()], &[[1; 32]], 8)?;
        self.generator_mul(&[[1; 32]])?;
        self.sector_dot_rows(&[[1; 32]], &[1; 31])?;
        Ok(())
    }

    /// Element-wise Fp operation on canonical big-endian elements.
    pub fn fp_op(
        &self,
        op: FieldOp,
        pairs: &[([u8; FP_BYTES], [u8; FP_BYTES])],
    ) -> Result<Vec<[u8; FP_BYTES]>, GpuError> {
        let words = canonical_limbs(
            pairs
                .iter()
                .enumerate()
                .flat_map(|(i, (a, b))| [(i, a), (i, b)]),
            &FP.modulus,
            |e| limbs_from_be::<12>(e),
            "Fp element not below p",
        )?;
        let out = self.elementwise("fp_op", op as u32, pairs.len(), &words, 12)?;
        Ok(out
            .chunks_exact(12)
            .map(|c| {
                let mut e = [0u8; FP_BYTES];
                limbs_to_be::<12>(c.try_into().expect("12 words"), &mut e);
                e
            })
            .collect())
    }

    /// Element-wise Fr operation on canonical little-endian scalars.
    pub fn fr_op(
        &self,
        op: FieldOp,
        pairs: &[(ScalarBytes, ScalarBytes)],
    ) -> Result<Vec<ScalarBytes>, GpuError> {
        let words = canonical_limbs(
            pairs
                .iter()
                .enumerate()
                .flat_map(|(i, (a, b))| [(i, a), (i, b)]),
            &FR.modulus,
            |e| limbs_from_le::<8>(e),
            "scalar not below r",
        )?;
        let out = self.elementwise("fr_op", op as u32, pairs.len(), &words, 8)?;
        Ok(out
            .chunks_exact(8)
            .map(|c| {
                let bytes = limbs_to_le::<8>(c.try_into().expect("8 words"));
                bytes.try_into().expect("32 bytes")
            })
            .collect())
    }

    /// Element-wise point operation.
    pub fn g1_op(
        &self,
        op: PointOp,
        pairs: &[(G1Bytes, G1Bytes)],
    ) -> Result<Vec<G1Bytes>, GpuError> {
        let flat: Vec<G1Bytes> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
        let mut words = Vec::new();
        decode_points(&flat, &mut words).map_err(|e| match e {
            GpuError::InvalidInput { index, reason } => GpuError::InvalidInput {
                index: index / 2,
                reason,
            },
            other => other,
        })?;
        let out = self.elementwise("g1_op", op as u32, pairs.len(), &words, 25)?;
        decode_outputs(&out)
    }

    fn elementwise(
        &self,
        entry: &'static str,
        op: u32,
        count: usize,
        words: &[u32],
        out_words: usize,
    ) -> Result<Vec<u32>, GpuError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let d = &self.device;
        d.check_binding("inputs", words.len() * 4)?;
        d.check_binding("outputs", count * out_words * 4)?;
        let count_u32 = u32_len("elements", count)?;
        let inputs = d.buffer_from("inputs", words);
        let outputs = d.zeroed("outputs", count * out_words);
        let params = d.uniform(&[count_u32, op, 0, 0]);
        let mut out = d
            .run(
                Module::Ops,
                &[&inputs, &outputs],
                &params,
                &[(entry, count_u32)],
                &[&outputs],
            )?
            .remove(0);
        out.truncate(count * out_words);
        Ok(out)
    }

    /// Σ scalars[i]·points[i] over the low `nbits` bits of each scalar (1..=256).
    pub fn msm(
        &self,
        points: &[G1Bytes],
        scalars: &[ScalarBytes],
        nbits: usize,
    ) -> Result<G1Bytes, GpuError> {
        if points.len() != scalars.len() {
            return Err(GpuError::Mismatch(
                "msm: points and scalars differ in length",
            ));
        }
        if !(1..=256).contains(&nbits) {
            return Err(GpuError::Mismatch("msm: nbits must be within 1..=256"));
        }
        let n = points.len();
        if n == 0 {
            return Ok(encode_g1(&[0; 12], &[0; 12]));
        }
        let c = msm_window_bits(n);
        let windows = (nbits as u32).div_ceil(c);
        let buckets = (windows as usize) << c;
        // Enough segments per window to occupy the device while each stays a few hundred
        // buckets long.
        let segments = ((1u32 << c) / 64).clamp(1, 64);
        let d = &self.device;
        let mut point_words = Vec::new();
        decode_points(points, &mut point_words)?;
        d.check_binding("msm points", point_words.len() * 4)?;
        d.check_binding("msm sorted indices", n * windows as usize * 4)?;
        d.check_binding(
            "msm bucket sums",
            (buckets + (windows * segments) as usize) * 36 * 4,
        )?;
        let n_u32 = u32_len("msm points", n)?;
        let pairs = n_u32
            .checked_mul(windows)
            .ok_or(GpuError::Mismatch("msm: too many points for one dispatch"))?;
        let points_buf = d.buffer_from("msm points", &point_words);
        let scalars_buf = d.buffer_from("msm scalars", &scalar_words(scalars));
        let meta = d.zeroed("msm counts", 2 * buckets + 1);
        let offsets = d.zeroed("msm offsets", buckets + 1);
        let sorted = d.zeroed("msm sorted", n * windows as usize);
        let sums = d.zeroed("msm sums", (buckets + (windows * segments) as usize) * 36);
        let result = d.zeroed("msm result", 25);
        let params = d.uniform(&[n_u32, c, windows, nbits as u32, segments, 0, 0, 0]);
        let buckets_u32 = u32_len("msm buckets", buckets)?;
        let read = d.run(
            Module::Msm,
            &[
                &points_buf,
                &scalars_buf,
                &meta,
                &offsets,
                &sorted,
                &sums,
                &result,
            ],
            &params,
            &[
                ("load", n_u32),
                ("count", pairs),
                ("scan", 1),
                ("scatter", pairs),
                ("bucket_sum", buckets_u32),
                ("window_reduce", windows * segments),
                ("final_sum", 1),
            ],
            &[&result, &meta],
        )?;
        let (out, meta_words) = (&read[0], &read[1]);
        if meta_words[2 * buckets] != 0 {
            return Err(GpuError::InvalidInput {
                index: first_off_curve(points),
                reason: "point not on the curve",
            });
        }
        let (x, y) = split_xy(out);
        Ok(encode_g1(&x, &y))
    }

    /// out[k] = scalars[k]·points[k].
    pub fn batch_mul(
        &self,
        points: &[G1Bytes],
        scalars: &[ScalarBytes],
    ) -> Result<Vec<G1Bytes>, GpuError> {
        if points.len() != scalars.len() {
            return Err(GpuError::Mismatch(
                "batch_mul: points and scalars differ in length",
            ));
        }
        let mut words = Vec::new();
        decode_points(points, &mut words)?;
        self.scalar_mul(&words, 1, scalars)
    }

    /// out[k] = scalars[k]·g₁.
    pub fn generator_mul(&self, scalars: &[ScalarBytes]) -> Result<Vec<G1Bytes>, GpuError> {
        let mut words = Vec::new();
        decode_points(&[g1_generator()], &mut words)?;
        self.scalar_mul(&words, 0, scalars)
    }

    fn scalar_mul(
        &self,
        point_words: &[u32],
        stride: u32,
        scalars: &[ScalarBytes],
    ) -> Result<Vec<G1Bytes>, GpuError> {
        let count = scalars.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let d = &self.device;
        d.check_binding("points", point_words.len() * 4)?;
        d.check_binding("outputs", count * 25 * 4)?;
        let count_u32 = u32_len("scalars", count)?;
        let points = d.buffer_from("points", point_words);
        let scalars_buf = d.buffer_from("scalars", &scalar_words(scalars));
        let outputs = d.zeroed("outputs", count * 25);
        const STATE_WORDS: usize = 73; // `scalar_mul.wgsl`
        const STEP_BITS: u32 = 8;
        d.check_binding("scalar-mul state", count * STATE_WORDS * 4)?;
        let state = d.zeroed("scalar-mul state", count * STATE_WORDS);
        let nbits = 256;
        let params = d.uniform(&[count_u32, stride, nbits, 0]);
        let mut steps = vec![("start", count_u32)];
        steps.extend(std::iter::repeat_n(
            ("step", count_u32),
            nbits.div_ceil(STEP_BITS) as usize,
        ));
        steps.push(("finish", count_u32));
        let out = d
            .run(
                Module::ScalarMul,
                &[&points, &scalars_buf, &outputs, &state],
                &params,
                &steps,
                &[&outputs],
            )?
            .remove(0);
        decode_outputs(&out[..count * 25])
    }

    /// out[i] = Σ_j coeffs[j]·m_ij for each block i of `data` (blocks of coeffs.len() sectors
    /// of 31 bytes; a short last block reads as zero-padded). Tagging's t_i.
    pub fn sector_dot_rows(
        &self,
        coeffs: &[ScalarBytes],
        data: &[u8],
    ) -> Result<Vec<ScalarBytes>, GpuError> {
        let s = coeffs.len();
        if s == 0 {
            return Err(GpuError::Mismatch("sector_dot_rows: no coefficients"));
        }
        let blocks = data.len().div_ceil(s * SECTOR_BYTES);
        self.lincomb("dot_rows", coeffs, data, s, blocks, blocks)
    }

    /// out[j] = Σ_i coeffs[i]·m_ij for j < sectors, where block i is `blocks[i]` (at most
    /// `sectors` sectors, zero-padded). Proving's μ_j.
    pub fn sector_combine_columns(
        &self,
        coeffs: &[ScalarBytes],
        blocks: &[&[u8]],
        sectors: usize,
    ) -> Result<Vec<ScalarBytes>, GpuError> {
        if coeffs.len() != blocks.len() {
            return Err(GpuError::Mismatch(
                "sector_combine_columns: coefficients and blocks differ in length",
            ));
        }
        let block_bytes = sectors * SECTOR_BYTES;
        let mut data = vec![0u8; blocks.len() * block_bytes];
        for (i, block) in blocks.iter().enumerate() {
            if block.len() > block_bytes {
                return Err(GpuError::InvalidInput {
                    index: i,
                    reason: "block longer than its sectors",
                });
            }
            data[i * block_bytes..i * block_bytes + block.len()].copy_from_slice(block);
        }
        self.lincomb(
            "combine_cols",
            coeffs,
            &data,
            sectors,
            blocks.len(),
            sectors,
        )
    }

    fn lincomb(
        &self,
        entry: &'static str,
        coeffs: &[ScalarBytes],
        data: &[u8],
        sectors: usize,
        blocks: usize,
        outputs_len: usize,
    ) -> Result<Vec<ScalarBytes>, GpuError> {
        if outputs_len == 0 {
            return Ok(Vec::new());
        }
        let coeff_words = scalar_limbs(coeffs)?;
        let d = &self.device;
        d.check_binding("sector data", data.len().div_ceil(4) * 4)?;
        let data_buf = d.buffer_from_bytes("sector data", data);
        let coeffs_buf = d.buffer_from("coefficients", &coeff_words);
        let outputs = d.zeroed("outputs", outputs_len * 8);
        let coeffs_u32 = u32_len("coefficients", coeffs.len())?;
        let sectors_u32 = u32_len("sectors", sectors)?;
        let blocks_u32 = u32_len("blocks", blocks)?;
        let data_u32 = u32_len("sector data", data.len())?;
        let outputs_u32 = u32_len("outputs", outputs_len)?;
        let params = d.uniform(&[
            outputs_u32,
            sectors_u32,
            blocks_u32,
            data_u32,
            coeffs_u32,
            0,
            0,
            0,
        ]);
        let out = d
            .run(
                Module::LinComb,
                &[&data_buf, &coeffs_buf, &outputs],
                &params,
                &[("premul", coeffs_u32), (entry, outputs_u32)],
                &[&outputs],
            )?
            .remove(0);
        Ok(out[..outputs_len * 8]
            .chunks_exact(8)
            .map(|c| {
                limbs_to_le::<8>(c.try_into().expect("8 words"))
                    .try_into()
                    .expect("32 bytes")
            })
            .collect())
    }
}

/// Outputs of 25 words: affine x, y, then 1 if the inputs were on the curve.
fn decode_outputs(out: &[u32]) -> Result<Vec<G1Bytes>, GpuError> {
    out.chunks_exact(25)
        .enumerate()
        .map(|(index, w)| {
            if w[24] != 1 {
                return Err(GpuError::InvalidInput {
                    index,
                    reason: "point not on the curve",
                });
            }
            let (x, y) = split_xy(w);
            Ok(encode_g1(&x, &y))
        })
        .collect()
}

/// The index of the first point that fails the curve equation, found on the CPU reference
/// (only after the GPU flagged one, to name it in the error).
fn first_off_curve(points: &[G1Bytes]) -> usize {
    points
        .iter()
        .position(|p| match decode_g1(p) {
            Ok(limbs) => !field::on_curve(&limbs),
            Err(_) => true,
        })
        .unwrap_or(0)
}
