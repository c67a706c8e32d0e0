//! BLS12-381 arithmetic on `blst`: the crate's only unsafe module.
//!
//! Every value that comes from outside goes through a checked decode: a [`G1Affine`] or a
//! [`G2Affine`] is always on the curve and in the prime-order subgroup, a [`Scalar`] is always
//! canonical (< r). There is no "verify later" flag; holding the type is the proof of the check.
//!
//! Scalars live in Montgomery form, as blst keeps them. A [`PremulScalar`] carries one extra
//! Montgomery factor so that multiplying it by a raw 31-byte sector (an integer < 2^248 < r)
//! yields the Montgomery form of the product in one multiplication, with no conversion of the
//! sector: this is what makes tagging and proving cost one field multiplication per sector.
#![allow(unsafe_code)]

use blst::{
    BLST_ERROR, MultiPoint, blst_final_exp, blst_fp12, blst_fp12_is_one, blst_fp12_mul, blst_fr,
    blst_fr_add, blst_fr_from_scalar, blst_fr_mul, blst_hash_to_g1, blst_miller_loop, blst_p1,
    blst_p1_add_or_double, blst_p1_add_or_double_affine, blst_p1_affine, blst_p1_affine_compress,
    blst_p1_affine_generator, blst_p1_affine_in_g1, blst_p1_affine_is_inf,
    blst_p1_affine_serialize, blst_p1_cneg, blst_p1_deserialize, blst_p1_from_affine,
    blst_p1_generator, blst_p1_is_equal, blst_p1_is_inf, blst_p1_mult, blst_p1_to_affine,
    blst_p1_uncompress, blst_p1s_to_affine, blst_p2, blst_p2_affine, blst_p2_affine_compress,
    blst_p2_affine_generator, blst_p2_affine_in_g2, blst_p2_affine_is_inf, blst_p2_mult,
    blst_p2_to_affine, blst_p2_uncompress, blst_scalar, blst_scalar_fr_check, blst_scalar_from_fr,
    blst_scalar_from_lendian,
};

/// Bytes of a compressed G1 point.
pub const G1_BYTES: usize = 48;
/// Bytes of a compressed G2 point.
pub const G2_BYTES: usize = 96;
/// Bytes of an encoded scalar (little-endian, canonical).
pub const SCALAR_BYTES: usize = 32;
/// Bytes of one sector: the largest whole number of bytes that is always below r.
pub const SECTOR_BYTES: usize = 31;

/// Why a point or scalar was refused at decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointError {
    #[error("not a valid compressed encoding")]
    BadEncoding,
    #[error("not on the curve")]
    NotOnCurve,
    #[error("not in the prime-order subgroup")]
    NotInSubgroup,
    #[error("the point at infinity is not allowed here")]
    Infinity,
    #[error("scalar is not below the group order")]
    NonCanonicalScalar,
}

fn point_error(err: BLST_ERROR) -> PointError {
    match err {
        BLST_ERROR::BLST_POINT_NOT_ON_CURVE => PointError::NotOnCurve,
        BLST_ERROR::BLST_POINT_NOT_IN_GROUP => PointError::NotInSubgroup,
        _ => PointError::BadEncoding,
    }
}

/// An element of the scalar field Fr, in Montgomery form.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scalar(blst_fr);

impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scalar(")?;
        for byte in self.to_le_bytes().iter().rev() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

impl Scalar {
    pub const ZERO: Scalar = Scalar(blst_fr { l: [0; 4] });

    /// The canonical little-endian encoding; refuses values ≥ r.
    pub fn from_le_bytes(bytes: &[u8; SCALAR_BYTES]) -> Result<Scalar, PointError> {
        let mut raw = blst_scalar::default();
        let mut out = blst_fr::default();
        // SAFETY: `raw` is a valid out-pointer and `bytes` holds the 32 bytes blst reads.
        let canonical = unsafe {
            blst_scalar_from_lendian(&mut raw, bytes.as_ptr());
            blst_scalar_fr_check(&raw)
        };
        if !canonical {
            return Err(PointError::NonCanonicalScalar);
        }
        // SAFETY: both pointers are valid; `raw` is canonical, as checked above.
        unsafe { blst_fr_from_scalar(&mut out, &raw) };
        Ok(Scalar(out))
    }

    /// A scalar from up to 31 little-endian bytes (always < r, so never refused).
    pub fn from_short_le_bytes(bytes: &[u8]) -> Scalar {
        assert!(
            bytes.len() <= SECTOR_BYTES,
            "short scalar of {} bytes",
            bytes.len()
        );
        let mut padded = [0u8; SCALAR_BYTES];
        padded[..bytes.len()].copy_from_slice(bytes);
        Scalar::from_le_bytes(&padded).expect("a value below 2^248 is below r")
    }

    /// A scalar from 64 uniformly random bytes, reduced mod r (bias below 2^-250).
    pub fn from_wide_bytes(bytes: &[u8; 64]) -> Scalar {
        // x = Σ piece_k · 2^(248k) over 31-byte pieces, each canonical on its own.
        let mut acc = Scalar::ZERO;
        let mut base = Scalar::from_u64(1);
        let two_248 = {
            let mut b = [0u8; SCALAR_BYTES];
            b[SECTOR_BYTES] = 1; // 2^248
            Scalar::from_le_bytes(&b).expect("2^248 < r")
        };
        for piece in bytes.chunks(SECTOR_BYTES) {
            acc = acc.add(&Scalar::from_short_le_bytes(piece).mul(&base));
            base = base.mul(&two_248);
        }
        acc
    }

    pub fn from_u64(value: u64) -> Scalar {
        let mut bytes = [0u8; SCALAR_BYTES];
        bytes[..8].copy_from_slice(&value.to_le_bytes());
        Scalar::from_le_bytes(&bytes).expect("a u64 is below r")
    }

    pub fn to_le_bytes(&self) -> [u8; SCALAR_BYTES] {
        let mut raw = blst_scalar::default();
        // SAFETY: both pointers are valid for the duration of the call.
        unsafe { blst_scalar_from_fr(&mut raw, &self.0) };
        raw.b
    }

    pub fn is_zero(&self) -> bool {
        self.0.l == [0; 4]
    }

    pub fn add(&self, other: &Scalar) -> Scalar {
        let mut out = blst_fr::default();
        // SAFETY: all pointers are valid; blst allows no aliasing issues for distinct out.
        unsafe { blst_fr_add(&mut out, &self.0, &other.0) };
        Scalar(out)
    }

    pub fn mul(&self, other: &Scalar) -> Scalar {
        let mut out = blst_fr::default();
        // SAFETY: all pointers are valid.
        unsafe { blst_fr_mul(&mut out, &self.0, &other.0) };
        Scalar(out)
    }

    /// This scalar prepared for [`PremulScalar::mul_sector_add`].
    pub fn premul(&self) -> PremulScalar {
        // The limbs of a Montgomery value aR, read as an integer (< r, so canonical) and
        // converted to Montgomery form once more, give aR².
        let mut raw = blst_scalar::default();
        for (k, limb) in self.0.l.iter().enumerate() {
            raw.b[8 * k..8 * k + 8].copy_from_slice(&limb.to_le_bytes());
        }
        let mut out = blst_fr::default();
        // SAFETY: both pointers are valid; `raw` holds aR < r.
        unsafe { blst_fr_from_scalar(&mut out, &raw) };
        PremulScalar(out)
    }
}

/// A scalar a held as aR² (one extra Montgomery factor), so that a Montgomery product with a
/// raw integer m gives (a·m)R, the Montgomery form of a·m.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PremulScalar(blst_fr);

impl PremulScalar {
    /// The scalar a itself (the inverse of [`Scalar::premul`]).
    pub fn scalar(&self) -> Scalar {
        let mut raw = blst_scalar::default();
        // SAFETY: valid pointers; the canonical integer of this element is aR mod r, whose
        // limbs are the Montgomery representation of a.
        unsafe { blst_scalar_from_fr(&mut raw, &self.0) };
        let mut out = blst_fr::default();
        for (k, limb) in out.l.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(raw.b[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        }
        Scalar(out)
    }

    /// `acc + a·m`, where m is the little-endian integer in `sector` (at most 31 bytes).
    #[inline]
    pub fn mul_sector_add(&self, sector: &[u8], acc: &Scalar) -> Scalar {
        let raw = sector_limbs(sector);
        let mut product = blst_fr::default();
        let mut out = blst_fr::default();
        // SAFETY: all pointers are valid; `raw` is an integer below 2^248 < r, a valid input
        // to the Montgomery multiplication.
        unsafe {
            blst_fr_mul(&mut product, &self.0, &raw);
            blst_fr_add(&mut out, &acc.0, &product);
        }
        Scalar(out)
    }
}

/// A sector's little-endian bytes as raw (non-Montgomery) limbs.
#[inline]
fn sector_limbs(sector: &[u8]) -> blst_fr {
    debug_assert!(sector.len() <= SECTOR_BYTES);
    let mut raw = blst_fr::default();
    if sector.len() == SECTOR_BYTES {
        let word = |k: usize| u64::from_le_bytes(sector[8 * k..8 * k + 8].try_into().expect("8"));
        raw.l[0] = word(0);
        raw.l[1] = word(1);
        raw.l[2] = word(2);
        let mut top = [0u8; 8];
        top[..7].copy_from_slice(&sector[24..31]);
        raw.l[3] = u64::from_le_bytes(top);
        return raw;
    }
    let mut bytes = [0u8; SCALAR_BYTES];
    bytes[..sector.len()].copy_from_slice(sector);
    for (k, limb) in raw.l.iter_mut().enumerate() {
        *limb = u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().expect("8 bytes"));
    }
    raw
}

/// k·g₁ by a fixed-base comb: 32 windows of 8 bits, each with its 256 multiples precomputed
/// (768 KiB, built once per process), so a multiplication is 32 mixed additions and no
/// doubling, several times cheaper than a variable-base multiplication.
pub fn generator_mul(scalar: &Scalar) -> G1 {
    static TABLE: std::sync::OnceLock<Vec<G1Affine>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut points = Vec::with_capacity(COMB_WINDOWS * 256);
        let mut base = G1::generator();
        for _ in 0..COMB_WINDOWS {
            let mut multiple = G1::identity();
            for _ in 0..256 {
                points.push(multiple);
                multiple = multiple.add(&base);
            }
            base = multiple; // 256 · base
        }
        G1::batch_to_affine(&points)
    });
    let bytes = scalar.to_le_bytes();
    let mut acc = blst_p1::default();
    for (window, &digit) in bytes.iter().enumerate() {
        if digit == 0 {
            continue;
        }
        let entry = &table[window * 256 + usize::from(digit)];
        let prev = acc;
        // SAFETY: valid pointers; the table holds checked multiples of the generator.
        unsafe { blst_p1_add_or_double_affine(&mut acc, &prev, &entry.0) };
    }
    G1(acc)
}

const COMB_WINDOWS: usize = SCALAR_BYTES;

/// A G1 point in projective coordinates (the result of arithmetic; not necessarily checked
/// against outside input because it never came from outside).
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct G1(blst_p1);

impl std::fmt::Debug for G1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G1({:02x?})", &self.to_affine().compress()[..8])
    }
}

impl PartialEq for G1 {
    fn eq(&self, other: &G1) -> bool {
        // SAFETY: both pointers are valid.
        unsafe { blst_p1_is_equal(&self.0, &other.0) }
    }
}
impl Eq for G1 {}

impl G1 {
    pub fn identity() -> G1 {
        G1(blst_p1::default())
    }

    pub fn generator() -> G1 {
        // SAFETY: blst returns a pointer to a static constant.
        G1(unsafe { *blst_p1_generator() })
    }

    /// Hash to G1 per RFC 9380 (BLS12381G1_XMD:SHA-256_SSWU_RO_) under `dst`.
    pub fn hash(msg: &[u8], dst: &[u8]) -> G1 {
        let mut out = blst_p1::default();
        // SAFETY: pointers and lengths describe valid slices; a null `aug` of length 0 is allowed.
        unsafe {
            blst_hash_to_g1(
                &mut out,
                msg.as_ptr(),
                msg.len(),
                dst.as_ptr(),
                dst.len(),
                std::ptr::null(),
                0,
            )
        };
        G1(out)
    }

    pub fn is_identity(&self) -> bool {
        // SAFETY: valid pointer.
        unsafe { blst_p1_is_inf(&self.0) }
    }

    pub fn add(&self, other: &G1) -> G1 {
        let mut out = blst_p1::default();
        // SAFETY: valid pointers.
        unsafe { blst_p1_add_or_double(&mut out, &self.0, &other.0) };
        G1(out)
    }

    pub fn neg(&self) -> G1 {
        let mut out = self.0;
        // SAFETY: valid pointer.
        unsafe { blst_p1_cneg(&mut out, true) };
        G1(out)
    }

    pub fn mul(&self, scalar: &Scalar) -> G1 {
        self.mul_bits(&scalar.to_le_bytes(), 255)
    }

    /// Multiply by the little-endian integer in `scalar`, of which only `nbits` bits are used.
    pub fn mul_bits(&self, scalar: &[u8; SCALAR_BYTES], nbits: usize) -> G1 {
        assert!(nbits <= 8 * SCALAR_BYTES);
        let mut out = blst_p1::default();
        // SAFETY: `scalar` holds ⌈nbits/8⌉ readable bytes; the pointers are valid.
        unsafe { blst_p1_mult(&mut out, &self.0, scalar.as_ptr(), nbits) };
        G1(out)
    }

    pub fn to_affine(&self) -> G1Affine {
        let mut out = blst_p1_affine::default();
        // SAFETY: valid pointers.
        unsafe { blst_p1_to_affine(&mut out, &self.0) };
        G1Affine(out)
    }

    /// Normalise many points with one field inversion.
    pub fn batch_to_affine(points: &[G1]) -> Vec<G1Affine> {
        if points.is_empty() {
            return Vec::new();
        }
        let mut out = vec![G1Affine::default(); points.len()];
        let ptrs: [*const blst_p1; 2] = [&points[0].0, std::ptr::null()];
        // SAFETY: `G1` and `G1Affine` are `repr(transparent)` over the blst structs; a null second pointer tells blst the
        // input is one contiguous array of `points.len()` points; `out` has room for all.
        unsafe {
            blst_p1s_to_affine(
                out.as_mut_ptr().cast::<blst_p1_affine>(),
                ptrs.as_ptr(),
                points.len(),
            )
        };
        out
    }
}

/// A G1 point in affine form that is on the curve and in the subgroup (identity allowed only
/// where the caller did not ask to refuse it).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct G1Affine(blst_p1_affine);

impl std::fmt::Debug for G1Affine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G1Affine({:02x?})", &self.compress()[..8])
    }
}

impl G1Affine {
    pub fn generator() -> G1Affine {
        // SAFETY: blst returns a pointer to a static constant.
        G1Affine(unsafe { *blst_p1_affine_generator() })
    }

    /// Decode a compressed point, checking the encoding, the curve and the subgroup; the
    /// identity is refused (no key, tag or proof of ours can honestly be the identity).
    pub fn decode(bytes: &[u8; G1_BYTES]) -> Result<G1Affine, PointError> {
        let mut out = blst_p1_affine::default();
        // SAFETY: `bytes` holds the 48 bytes blst reads; `out` is valid.
        let err = unsafe { blst_p1_uncompress(&mut out, bytes.as_ptr()) };
        if err != BLST_ERROR::BLST_SUCCESS {
            return Err(point_error(err));
        }
        // SAFETY: valid pointers.
        if unsafe { blst_p1_affine_is_inf(&out) } {
            return Err(PointError::Infinity);
        }
        // SAFETY: valid pointer.
        if !unsafe { blst_p1_affine_in_g1(&out) } {
            return Err(PointError::NotInSubgroup);
        }
        Ok(G1Affine(out))
    }

    pub fn compress(&self) -> [u8; G1_BYTES] {
        let mut out = [0u8; G1_BYTES];
        // SAFETY: `out` has the 48 bytes blst writes.
        unsafe { blst_p1_affine_compress(out.as_mut_ptr(), &self.0) };
        out
    }

    pub fn to_projective(&self) -> G1 {
        let mut out = blst_p1::default();
        // SAFETY: valid pointers.
        unsafe { blst_p1_from_affine(&mut out, &self.0) };
        G1(out)
    }

    /// The 96-byte uncompressed encoding (the identity as 0x40 then zeros), the form the GPU
    /// kernels take.
    pub fn to_uncompressed(&self) -> [u8; 2 * G1_BYTES] {
        let mut out = [0u8; 2 * G1_BYTES];
        // SAFETY: `out` has the 96 bytes blst writes.
        unsafe { blst_p1_affine_serialize(out.as_mut_ptr(), &self.0) };
        out
    }
}

/// Decodes an uncompressed point computed by a backend from points of G1: checks the encoding
/// and the curve (a corrupted result is refused) but not the subgroup, which the group law
/// preserves. The identity is allowed.
pub fn g1_from_backend_uncompressed(bytes: &[u8; 2 * G1_BYTES]) -> Result<G1, PointError> {
    let mut affine = blst_p1_affine::default();
    // SAFETY: `bytes` holds the 96 bytes blst reads; `affine` is valid.
    let err = unsafe { blst_p1_deserialize(&mut affine, bytes.as_ptr()) };
    if err != BLST_ERROR::BLST_SUCCESS {
        return Err(point_error(err));
    }
    Ok(G1Affine(affine).to_projective())
}

/// A G2 point in affine form, on the curve, in the subgroup, not the identity.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct G2Affine(blst_p2_affine);

impl std::fmt::Debug for G2Affine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G2Affine({:02x?})", &self.compress()[..8])
    }
}

impl G2Affine {
    pub fn generator() -> G2Affine {
        // SAFETY: blst returns a pointer to a static constant.
        G2Affine(unsafe { *blst_p2_affine_generator() })
    }

    /// g₂^k.
    pub fn generator_mul(scalar: &Scalar) -> G2Affine {
        let bytes = scalar.to_le_bytes();
        let mut base = blst_p2::default();
        let mut product = blst_p2::default();
        let mut out = blst_p2_affine::default();
        // SAFETY: valid pointers; `bytes` holds the 32 bytes that 255 bits need.
        unsafe {
            blst::blst_p2_from_affine(&mut base, blst_p2_affine_generator());
            blst_p2_mult(&mut product, &base, bytes.as_ptr(), 255);
            blst_p2_to_affine(&mut out, &product);
        }
        G2Affine(out)
    }

    /// Decode a compressed point with the same checks as [`G1Affine::decode`].
    pub fn decode(bytes: &[u8; G2_BYTES]) -> Result<G2Affine, PointError> {
        let mut out = blst_p2_affine::default();
        // SAFETY: `bytes` holds the 96 bytes blst reads; `out` is valid.
        let err = unsafe { blst_p2_uncompress(&mut out, bytes.as_ptr()) };
        if err != BLST_ERROR::BLST_SUCCESS {
            return Err(point_error(err));
        }
        // SAFETY: valid pointer.
        if unsafe { blst_p2_affine_is_inf(&out) } {
            return Err(PointError::Infinity);
        }
        // SAFETY: valid pointer.
        if !unsafe { blst_p2_affine_in_g2(&out) } {
            return Err(PointError::NotInSubgroup);
        }
        Ok(G2Affine(out))
    }

    pub fn compress(&self) -> [u8; G2_BYTES] {
        let mut out = [0u8; G2_BYTES];
        // SAFETY: `out` has the 96 bytes blst writes.
        unsafe { blst_p2_affine_compress(out.as_mut_ptr(), &self.0) };
        out
    }
}

/// Σ scalars[k]·points[k] by Pippenger, using only the low `nbits` bits of each scalar.
pub fn msm(points: &[G1Affine], scalars: &[Scalar], nbits: usize) -> G1 {
    assert_eq!(points.len(), scalars.len(), "msm: one scalar per point");
    assert!(nbits > 0 && nbits <= 255);
    match points.len() {
        0 => return G1::identity(),
        1 => {
            return points[0]
                .to_projective()
                .mul_bits(&scalars[0].to_le_bytes(), nbits);
        }
        _ => {}
    }
    let nbytes = nbits.div_ceil(8);
    let mut packed = Vec::with_capacity(nbytes * scalars.len());
    for scalar in scalars {
        packed.extend_from_slice(&scalar.to_le_bytes()[..nbytes]);
    }
    // SAFETY: `G1Affine` is `repr(transparent)` over `blst_p1_affine`, so the slice has the
    // same layout as a slice of blst points.
    let raw: &[blst_p1_affine] =
        unsafe { std::slice::from_raw_parts(points.as_ptr().cast(), points.len()) };
    G1(raw.mult(&packed, nbits))
}

/// Whether Π e(p_k, q_k) is the identity of GT: one Miller loop per pair, one final
/// exponentiation.
pub fn pairing_product_is_one(pairs: &[(G1Affine, G2Affine)]) -> bool {
    assert!(!pairs.is_empty());
    let mut acc = blst_fp12::default();
    for (k, (p, q)) in pairs.iter().enumerate() {
        let mut f = blst_fp12::default();
        // SAFETY: valid pointers to checked points.
        unsafe { blst_miller_loop(&mut f, &q.0, &p.0) };
        if k == 0 {
            acc = f;
        } else {
            let prev = acc;
            // SAFETY: valid pointers.
            unsafe { blst_fp12_mul(&mut acc, &prev, &f) };
        }
    }
    let mut out = blst_fp12::default();
    // SAFETY: valid pointers.
    unsafe {
        blst_final_exp(&mut out, &acc);
        blst_fp12_is_one(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match() {
        assert_eq!(size_of::<G1Affine>(), size_of::<blst_p1_affine>());
        assert_eq!(align_of::<G1Affine>(), align_of::<blst_p1_affine>());
    }

    #[test]
    fn premul_sector_product_matches_plain_multiplication() {
        let a = Scalar::from_wide_bytes(&[7u8; 64]);
        let sector: Vec<u8> = (0..31u8)
            .map(|k| k.wrapping_mul(37).wrapping_add(200))
            .collect();
        let m = Scalar::from_short_le_bytes(&sector);
        let acc = Scalar::from_u64(99);
        assert_eq!(
            a.premul().mul_sector_add(&sector, &acc),
            acc.add(&a.mul(&m))
        );
    }

    #[test]
    fn scalar_encoding_round_trips_and_refuses_r() {
        let s = Scalar::from_wide_bytes(&[0xAB; 64]);
        assert_eq!(Scalar::from_le_bytes(&s.to_le_bytes()), Ok(s));
        // r itself, little-endian.
        let mut r = [0u8; 32];
        let r_be = "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001";
        for k in 0..32 {
            r[31 - k] = u8::from_str_radix(&r_be[2 * k..2 * k + 2], 16).unwrap();
        }
        assert_eq!(
            Scalar::from_le_bytes(&r),
            Err(PointError::NonCanonicalScalar)
        );
    }

    #[test]
    fn msm_matches_sum_of_products() {
        let points: Vec<G1Affine> = (1..6u64)
            .map(|k| {
                G1::generator()
                    .mul(&Scalar::from_u64(k * 1000 + 7))
                    .to_affine()
            })
            .collect();
        let scalars: Vec<Scalar> = (0..5u8)
            .map(|k| Scalar::from_wide_bytes(&[k + 1; 64]))
            .collect();
        let mut expected = G1::identity();
        for (p, s) in points.iter().zip(&scalars) {
            expected = expected.add(&p.to_projective().mul(s));
        }
        assert_eq!(msm(&points, &scalars, 255), expected);
    }

    #[test]
    fn comb_matches_variable_base_multiplication() {
        for seed in 0..20u8 {
            let k = Scalar::from_wide_bytes(&[seed; 64]);
            assert_eq!(generator_mul(&k), G1::generator().mul(&k), "seed {seed}");
        }
        assert!(generator_mul(&Scalar::ZERO).is_identity());
        let mut short = [0u8; 31];
        for len in 0..31 {
            short[len] = 0xFF;
            let k = Scalar::from_short_le_bytes(&short[..=len]);
            assert_eq!(generator_mul(&k), G1::generator().mul(&k), "len {len}");
        }
    }
}
