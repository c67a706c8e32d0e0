// Arithmetic modulo a prime in Montgomery form, NLIMBS x 32-bit limbs, least significant first.
// This file is a template: the host replaces the field prefix, the limb counts and the constants
// (see `shader.rs`), once for Fp and once for Fr. WGSL has no 64-bit integers and no
// multiply-high, so 32x32 -> 64-bit products are built from 16-bit halves in `mul_wide`.

alias FIELD_t = array<u32, NLIMBS>;

var<private> FIELD_MODULUS: FIELD_t = FIELD_t(FIELD_MODULUS_LIMBS);
// 2^(32*NLIMBS*2) mod m: multiplying by it enters Montgomery form.
var<private> FIELD_R2: FIELD_t = FIELD_t(FIELD_R2_LIMBS);
// 2^(32*NLIMBS) mod m: one, in Montgomery form.
var<private> FIELD_ONE: FIELD_t = FIELD_t(FIELD_ONE_LIMBS);
// -m^-1 mod 2^32.
const FIELD_INV: u32 = FIELD_INV_VALUE;

fn FIELD_zero() -> FIELD_t {
    return FIELD_t();
}

fn FIELD_one() -> FIELD_t {
    return FIELD_ONE;
}

// `if_true` when `cond`, else `if_false`, limb by limb: no divergent branch or early return,
// so every lane of a SIMD group runs the same instructions whatever its data.
fn FIELD_select(if_false: FIELD_t, if_true: FIELD_t, cond: bool) -> FIELD_t {
    var f = if_false;
    var t = if_true;
    var out: FIELD_t;
    for (var i = 0u; i < NLIMBSu; i++) {
        out[i] = select(f[i], t[i], cond);
    }
    return out;
}

fn FIELD_is_zero(a: FIELD_t) -> bool {
    var x = a;
    var acc = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        acc |= x[i];
    }
    return acc == 0u;
}

fn FIELD_eq(a: FIELD_t, b: FIELD_t) -> bool {
    var x = a;
    var y = b;
    var acc = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        acc |= x[i] ^ y[i];
    }
    return acc == 0u;
}

// a < m, for a canonical (non-Montgomery) input check.
fn FIELD_is_canonical(a: FIELD_t) -> bool {
    var x = a;
    var borrow = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        let d = sub_borrow(x[i], FIELD_MODULUS[i], borrow);
        borrow = d.y;
    }
    return borrow == 1u;
}

// a + b mod m, for a, b < m.
fn FIELD_add(a: FIELD_t, b: FIELD_t) -> FIELD_t {
    var x = a;
    var y = b;
    var s: FIELD_t;
    var d: FIELD_t;
    var carry = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        let r = add_carry(x[i], y[i], carry);
        s[i] = r.x;
        carry = r.y;
    }
    var borrow = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        let r = sub_borrow(s[i], FIELD_MODULUS[i], borrow);
        d[i] = r.x;
        borrow = r.y;
    }
    // s >= m exactly when the sum carried out or the subtraction did not borrow.
    return FIELD_select(s, d, carry == 1u || borrow == 0u);
}

// a - b mod m, for a, b < m.
fn FIELD_sub(a: FIELD_t, b: FIELD_t) -> FIELD_t {
    var x = a;
    var y = b;
    var d: FIELD_t;
    var borrow = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        let r = sub_borrow(x[i], y[i], borrow);
        d[i] = r.x;
        borrow = r.y;
    }
    // Add m back when the difference went negative (m masked to zero otherwise).
    let mask = 0u - borrow;
    var carry = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        let r = add_carry(d[i], FIELD_MODULUS[i] & mask, carry);
        d[i] = r.x;
        carry = r.y;
    }
    return d;
}

fn FIELD_neg(a: FIELD_t) -> FIELD_t {
    return FIELD_sub(FIELD_t(), a);
}

// Montgomery product a*b/2^(32*NLIMBS) mod m (CIOS), for a, b < m.
fn FIELD_mul(a: FIELD_t, b: FIELD_t) -> FIELD_t {
    var x = a;
    var y = b;
    var t: array<u32, NPLUS2>;
    for (var i = 0u; i < NLIMBSu; i++) {
        var c = 0u;
        let yi = y[i];
        for (var j = 0u; j < NLIMBSu; j++) {
            let r = mac(t[j], x[j], yi, c);
            t[j] = r.x;
            c = r.y;
        }
        let top = add_carry(t[NLIMBSu], c, 0u);
        t[NLIMBSu] = top.x;
        t[NPLUS1u] = top.y;
        let k = t[0] * FIELD_INV;
        var r = mac(t[0], k, FIELD_MODULUS[0], 0u);
        c = r.y;
        for (var j = 1u; j < NLIMBSu; j++) {
            r = mac(t[j], k, FIELD_MODULUS[j], c);
            t[j - 1u] = r.x;
            c = r.y;
        }
        let top2 = add_carry(t[NLIMBSu], c, 0u);
        t[NLIMBSu - 1u] = top2.x;
        t[NLIMBSu] = t[NPLUS1u] + top2.y;
    }
    var out: FIELD_t;
    var d: FIELD_t;
    var borrow = 0u;
    for (var i = 0u; i < NLIMBSu; i++) {
        out[i] = t[i];
        let r = sub_borrow(t[i], FIELD_MODULUS[i], borrow);
        d[i] = r.x;
        borrow = r.y;
    }
    return FIELD_select(out, d, t[NLIMBSu] != 0u || borrow == 0u);
}

fn FIELD_sqr(a: FIELD_t) -> FIELD_t {
    return FIELD_mul(a, a);
}

fn FIELD_to_mont(a: FIELD_t) -> FIELD_t {
    return FIELD_mul(a, FIELD_R2);
}

fn FIELD_from_mont(a: FIELD_t) -> FIELD_t {
    var one: FIELD_t;
    one[0] = 1u;
    return FIELD_mul(a, one);
}

// a^(m-2) = 1/a (0 for a = 0), square-and-multiply over the fixed exponent.
var<private> FIELD_MODULUS_MINUS_2: FIELD_t = FIELD_t(FIELD_MODULUS_MINUS_2_LIMBS);

fn FIELD_inv(a: FIELD_t) -> FIELD_t {
    var acc = FIELD_ONE;
    for (var i = 0u; i < NLIMBSu; i++) {
        let word = FIELD_MODULUS_MINUS_2[NLIMBSu - 1u - i];
        for (var bit = 0u; bit < 32u; bit++) {
            acc = FIELD_sqr(acc);
            if (((word >> (31u - bit)) & 1u) == 1u) {
                acc = FIELD_mul(acc, a);
            }
        }
    }
    return acc;
}
