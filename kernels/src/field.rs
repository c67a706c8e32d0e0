//! Field parameters, limb encodings and the CPU reference of the kernels' arithmetic.
//!
//! The reference is the kernels' algorithms written plainly in Rust with 64-bit products: the
//! same limbs, the same Montgomery form, the same complete point formulas. Tests check it
//! against blst and arkworks, and the GPU results against it.

/// A prime field of N 32-bit limbs (least significant first) in Montgomery form.
#[derive(Debug, Clone, Copy)]
pub struct FieldParams<const N: usize> {
    pub modulus: [u32; N],
    /// 2^(64·N) mod m.
    pub r2: [u32; N],
    /// 2^(32·N) mod m: one in Montgomery form.
    pub one: [u32; N],
    /// −m⁻¹ mod 2^32.
    pub inv: u32,
}

/// Fp, the base field of BLS12-381 (381 bits).
pub const FP: FieldParams<12> = FieldParams {
    modulus: [
        0xffffaaab, 0xb9feffff, 0xb153ffff, 0x1eabfffe, 0xf6b0f624, 0x6730d2a0, 0xf38512bf,
        0x64774b84, 0x434bacd7, 0x4b1ba7b6, 0x397fe69a, 0x1a0111ea,
    ],
    r2: [
        0x1c341746, 0xf4df1f34, 0x09d104f1, 0x0a76e6a6, 0x4c95b6d5, 0x8de5476c, 0x939d83c0,
        0x67eb88a9, 0xb519952d, 0x9a793e85, 0x92cae3aa, 0x11988fe5,
    ],
    one: [
        0x0002fffd, 0x76090000, 0xc40c0002, 0xebf4000b, 0x53c758ba, 0x5f489857, 0x70525745,
        0x77ce5853, 0xa256ec6d, 0x5c071a97, 0xfa80e493, 0x15f65ec3,
    ],
    inv: 0xfffcfffd,
};

/// Fr, the scalar field of BLS12-381 (255 bits).
pub const FR: FieldParams<8> = FieldParams {
    modulus: [
        0x00000001, 0xffffffff, 0xfffe5bfe, 0x53bda402, 0x09a1d805, 0x3339d808, 0x299d7d48,
        0x73eda753,
    ],
    r2: [
        0xf3f29c6d, 0xc999e990, 0x87925c23, 0x2b6cedcb, 0x7254398f, 0x05d31496, 0x9f59ff11,
        0x0748d9d9,
    ],
    one: [
        0xfffffffe, 0x00000001, 0x00034802, 0x5884b7fa, 0xecbc4ff5, 0x998c4fef, 0xacc5056f,
        0x1824b159,
    ],
    inv: 0xffffffff,
};

/// Big-endian bytes (the encodings' order) to little-endian limbs. `bytes.len()` is 4·N.
#[allow(
    clippy::big_endian_bytes,
    reason = "the ZCash point encoding is big-endian"
)]
pub fn limbs_from_be<const N: usize>(bytes: &[u8]) -> [u32; N] {
    assert_eq!(bytes.len(), 4 * N);
    let mut limbs = [0u32; N];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let at = 4 * (N - 1 - i);
        *limb = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    }
    limbs
}

/// Little-endian limbs to big-endian bytes.
#[allow(
    clippy::big_endian_bytes,
    reason = "the ZCash point encoding is big-endian"
)]
pub fn limbs_to_be<const N: usize>(limbs: &[u32; N], out: &mut [u8]) {
    assert_eq!(out.len(), 4 * N);
    for (i, limb) in limbs.iter().enumerate() {
        let at = 4 * (N - 1 - i);
        out[at..at + 4].copy_from_slice(&limb.to_be_bytes());
    }
}

/// Little-endian bytes to little-endian limbs.
pub fn limbs_from_le<const N: usize>(bytes: &[u8]) -> [u32; N] {
    assert_eq!(bytes.len(), 4 * N);
    let mut limbs = [0u32; N];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(4)) {
        *limb = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
    }
    limbs
}

/// Little-endian limbs to little-endian bytes.
pub fn limbs_to_le<const N: usize>(limbs: &[u32; N]) -> Vec<u8> {
    limbs.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// a < b as integers.
pub fn less_than<const N: usize>(a: &[u32; N], b: &[u32; N]) -> bool {
    for i in (0..N).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// The CPU reference: field elements are `[u32; N]` in Montgomery form below the modulus.
#[allow(
    clippy::needless_range_loop,
    reason = "limb loops written index by index, as in field.wgsl"
)]
impl<const N: usize> FieldParams<N> {
    pub fn add(&self, a: &[u32; N], b: &[u32; N]) -> [u32; N] {
        let mut sum = [0u32; N];
        let mut carry = 0u64;
        for i in 0..N {
            let s = u64::from(a[i]) + u64::from(b[i]) + carry;
            sum[i] = s as u32;
            carry = s >> 32;
        }
        if carry == 1 || !less_than(&sum, &self.modulus) {
            self.sub_modulus(&mut sum);
        }
        sum
    }

    pub fn sub(&self, a: &[u32; N], b: &[u32; N]) -> [u32; N] {
        let mut diff = [0u32; N];
        let mut borrow = 0i64;
        for i in 0..N {
            let d = i64::from(a[i]) - i64::from(b[i]) - borrow;
            diff[i] = d as u32;
            borrow = i64::from(d < 0);
        }
        if borrow == 1 {
            let mut carry = 0u64;
            for i in 0..N {
                let s = u64::from(diff[i]) + u64::from(self.modulus[i]) + carry;
                diff[i] = s as u32;
                carry = s >> 32;
            }
        }
        diff
    }

    pub fn neg(&self, a: &[u32; N]) -> [u32; N] {
        self.sub(&[0u32; N], a)
    }

    fn sub_modulus(&self, a: &mut [u32; N]) {
        let mut borrow = 0i64;
        for i in 0..N {
            let d = i64::from(a[i]) - i64::from(self.modulus[i]) - borrow;
            a[i] = d as u32;
            borrow = i64::from(d < 0);
        }
    }

    /// Montgomery product a·b·2^(−32·N) mod m (CIOS, as in `field.wgsl`).
    pub fn mul(&self, a: &[u32; N], b: &[u32; N]) -> [u32; N] {
        let mut t = vec![0u32; N + 2];
        for &bi in b {
            let mut c = 0u64;
            for j in 0..N {
                let s = u64::from(t[j]) + u64::from(a[j]) * u64::from(bi) + c;
                t[j] = s as u32;
                c = s >> 32;
            }
            let s = u64::from(t[N]) + c;
            t[N] = s as u32;
            t[N + 1] = (s >> 32) as u32;
            let k = t[0].wrapping_mul(self.inv);
            let s = u64::from(t[0]) + u64::from(k) * u64::from(self.modulus[0]);
            let mut c = s >> 32;
            for j in 1..N {
                let s = u64::from(t[j]) + u64::from(k) * u64::from(self.modulus[j]) + c;
                t[j - 1] = s as u32;
                c = s >> 32;
            }
            let s = u64::from(t[N]) + c;
            t[N - 1] = s as u32;
            t[N] = t[N + 1] + (s >> 32) as u32;
        }
        let mut out = [0u32; N];
        out.copy_from_slice(&t[..N]);
        if t[N] != 0 || !less_than(&out, &self.modulus) {
            self.sub_modulus(&mut out);
        }
        out
    }

    pub fn to_mont(&self, a: &[u32; N]) -> [u32; N] {
        self.mul(a, &self.r2)
    }

    pub fn from_mont(&self, a: &[u32; N]) -> [u32; N] {
        let mut one = [0u32; N];
        one[0] = 1;
        self.mul(a, &one)
    }

    /// m − 2, the inversion exponent.
    pub fn modulus_minus_2(&self) -> [u32; N] {
        let mut two = [0u32; N];
        two[0] = 2;
        let mut out = [0u32; N];
        let mut borrow = 0i64;
        for i in 0..N {
            let d = i64::from(self.modulus[i]) - i64::from(two[i]) - borrow;
            out[i] = d as u32;
            borrow = i64::from(d < 0);
        }
        assert_eq!(borrow, 0, "the modulus is above 2");
        out
    }

    /// a^(m−2), the inverse (0 for 0).
    pub fn inv(&self, a: &[u32; N]) -> [u32; N] {
        let exponent = self.modulus_minus_2();
        let mut acc = self.one;
        for i in (0..32 * N).rev() {
            acc = self.mul(&acc, &acc);
            if (exponent[i / 32] >> (i % 32)) & 1 == 1 {
                acc = self.mul(&acc, a);
            }
        }
        acc
    }

    pub fn is_zero(a: &[u32; N]) -> bool {
        a.iter().all(|&l| l == 0)
    }
}

/// A G1 point in homogeneous projective coordinates, Montgomery form (the reference of
/// `g1.wgsl`).
#[derive(Debug, Clone, Copy)]
pub struct RefG1 {
    pub x: [u32; 12],
    pub y: [u32; 12],
    pub z: [u32; 12],
}

impl RefG1 {
    pub fn identity() -> RefG1 {
        RefG1 {
            x: [0; 12],
            y: FP.one,
            z: [0; 12],
        }
    }

    /// From affine canonical coordinates; (0, 0) is the identity. No curve check.
    pub fn from_affine(x: &[u32; 12], y: &[u32; 12]) -> RefG1 {
        if FieldParams::is_zero(x) && FieldParams::is_zero(y) {
            return RefG1::identity();
        }
        RefG1 {
            x: FP.to_mont(x),
            y: FP.to_mont(y),
            z: FP.one,
        }
    }

    /// Affine canonical coordinates; the identity is (0, 0).
    pub fn to_affine(&self) -> ([u32; 12], [u32; 12]) {
        if FieldParams::is_zero(&self.z) {
            return ([0; 12], [0; 12]);
        }
        let zinv = FP.inv(&self.z);
        (
            FP.from_mont(&FP.mul(&self.x, &zinv)),
            FP.from_mont(&FP.mul(&self.y, &zinv)),
        )
    }

    fn mul_b3(a: &[u32; 12]) -> [u32; 12] {
        let a2 = FP.add(a, a);
        let a4 = FP.add(&a2, &a2);
        let a8 = FP.add(&a4, &a4);
        FP.add(&a8, &a4)
    }

    /// Renes–Costello–Batina algorithm 7 (complete addition, a = 0).
    pub fn add(&self, q: &RefG1) -> RefG1 {
        let p = self;
        let f = &FP;
        let mut t0 = f.mul(&p.x, &q.x);
        let mut t1 = f.mul(&p.y, &q.y);
        let mut t2 = f.mul(&p.z, &q.z);
        let mut t3 = f.add(&p.x, &p.y);
        let mut t4 = f.add(&q.x, &q.y);
        t3 = f.mul(&t3, &t4);
        t4 = f.add(&t0, &t1);
        t3 = f.sub(&t3, &t4);
        t4 = f.add(&p.y, &p.z);
        let mut x3 = f.add(&q.y, &q.z);
        t4 = f.mul(&t4, &x3);
        x3 = f.add(&t1, &t2);
        t4 = f.sub(&t4, &x3);
        x3 = f.add(&p.x, &p.z);
        let mut y3 = f.add(&q.x, &q.z);
        x3 = f.mul(&x3, &y3);
        y3 = f.add(&t0, &t2);
        y3 = f.sub(&x3, &y3);
        x3 = f.add(&t0, &t0);
        t0 = f.add(&x3, &t0);
        t2 = Self::mul_b3(&t2);
        let mut z3 = f.add(&t1, &t2);
        t1 = f.sub(&t1, &t2);
        y3 = Self::mul_b3(&y3);
        x3 = f.mul(&t4, &y3);
        t2 = f.mul(&t3, &t1);
        x3 = f.sub(&t2, &x3);
        y3 = f.mul(&y3, &t0);
        t1 = f.mul(&t1, &z3);
        y3 = f.add(&t1, &y3);
        t0 = f.mul(&t0, &t3);
        z3 = f.mul(&z3, &t4);
        z3 = f.add(&z3, &t0);
        RefG1 {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// Renes–Costello–Batina algorithm 9 (doubling, a = 0).
    pub fn double(&self) -> RefG1 {
        let p = self;
        let f = &FP;
        let mut t0 = f.mul(&p.y, &p.y);
        let mut z3 = f.add(&t0, &t0);
        z3 = f.add(&z3, &z3);
        z3 = f.add(&z3, &z3);
        let mut t1 = f.mul(&p.y, &p.z);
        let mut t2 = f.mul(&p.z, &p.z);
        t2 = Self::mul_b3(&t2);
        let mut x3 = f.mul(&t2, &z3);
        let mut y3 = f.add(&t0, &t2);
        z3 = f.mul(&t1, &z3);
        t1 = f.add(&t2, &t2);
        t2 = f.add(&t1, &t2);
        t0 = f.sub(&t0, &t2);
        y3 = f.mul(&t0, &y3);
        y3 = f.add(&x3, &y3);
        t1 = f.mul(&p.x, &p.y);
        x3 = f.mul(&t0, &t1);
        x3 = f.add(&x3, &x3);
        RefG1 {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// scalar·self by double-and-add over the low `nbits` bits of the little-endian limbs.
    pub fn mul(&self, scalar: &[u32; 8], nbits: usize) -> RefG1 {
        let mut acc = RefG1::identity();
        for bit in (0..nbits).rev() {
            acc = acc.double();
            if (scalar[bit / 32] >> (bit % 32)) & 1 == 1 {
                acc = acc.add(self);
            }
        }
        acc
    }
}

/// Whether canonical affine limbs (x ‖ y; (0, 0) = identity) satisfy y² = x³ + 4.
pub fn on_curve(xy: &[u32; 24]) -> bool {
    let x: [u32; 12] = xy[..12].try_into().expect("12 limbs");
    let y: [u32; 12] = xy[12..].try_into().expect("12 limbs");
    if FieldParams::is_zero(&x) && FieldParams::is_zero(&y) {
        return true;
    }
    if !less_than(&x, &FP.modulus) || !less_than(&y, &FP.modulus) {
        return false;
    }
    let (xm, ym) = (FP.to_mont(&x), FP.to_mont(&y));
    let mut four = [0u32; 12];
    four[0] = 4;
    let rhs = FP.add(&FP.mul(&FP.mul(&xm, &xm), &xm), &FP.to_mont(&four));
    FP.mul(&ym, &ym) == rhs
}
