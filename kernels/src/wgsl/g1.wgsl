// G1 of BLS12-381 (y^2 = x^3 + 4 over Fp) in homogeneous projective coordinates, Montgomery form.
// The formulas are the complete ones of Renes, Costello and Batina (2016), algorithms 7 and 9
// for a = 0: they have no special cases, so the identity (0 : 1 : 0), doubling through addition
// and P + (-P) need no branches.

struct G1 {
    x: fp_t,
    y: fp_t,
    z: fp_t,
}

fn g1_identity() -> G1 {
    return G1(fp_zero(), fp_one(), fp_zero());
}

fn g1_is_identity(p: G1) -> bool {
    return fp_is_zero(p.z);
}

// 3 * b = 12, by additions.
fn fp_mul_b3(a: fp_t) -> fp_t {
    let a2 = fp_add(a, a);
    let a4 = fp_add(a2, a2);
    let a8 = fp_add(a4, a4);
    return fp_add(a8, a4);
}

// RCB algorithm 7.
fn g1_add(p: G1, q: G1) -> G1 {
    var t0 = fp_mul(p.x, q.x);
    var t1 = fp_mul(p.y, q.y);
    var t2 = fp_mul(p.z, q.z);
    var t3 = fp_add(p.x, p.y);
    var t4 = fp_add(q.x, q.y);
    t3 = fp_mul(t3, t4);
    t4 = fp_add(t0, t1);
    t3 = fp_sub(t3, t4);
    t4 = fp_add(p.y, p.z);
    var x3 = fp_add(q.y, q.z);
    t4 = fp_mul(t4, x3);
    x3 = fp_add(t1, t2);
    t4 = fp_sub(t4, x3);
    x3 = fp_add(p.x, p.z);
    var y3 = fp_add(q.x, q.z);
    x3 = fp_mul(x3, y3);
    y3 = fp_add(t0, t2);
    y3 = fp_sub(x3, y3);
    x3 = fp_add(t0, t0);
    t0 = fp_add(x3, t0);
    t2 = fp_mul_b3(t2);
    var z3 = fp_add(t1, t2);
    t1 = fp_sub(t1, t2);
    y3 = fp_mul_b3(y3);
    x3 = fp_mul(t4, y3);
    t2 = fp_mul(t3, t1);
    x3 = fp_sub(t2, x3);
    y3 = fp_mul(y3, t0);
    t1 = fp_mul(t1, z3);
    y3 = fp_add(t1, y3);
    t0 = fp_mul(t0, t3);
    z3 = fp_mul(z3, t4);
    z3 = fp_add(z3, t0);
    return G1(x3, y3, z3);
}

// RCB algorithm 9.
fn g1_double(p: G1) -> G1 {
    var t0 = fp_sqr(p.y);
    var z3 = fp_add(t0, t0);
    z3 = fp_add(z3, z3);
    z3 = fp_add(z3, z3);
    var t1 = fp_mul(p.y, p.z);
    var t2 = fp_sqr(p.z);
    t2 = fp_mul_b3(t2);
    var x3 = fp_mul(t2, z3);
    var y3 = fp_add(t0, t2);
    z3 = fp_mul(t1, z3);
    t1 = fp_add(t2, t2);
    t2 = fp_add(t1, t2);
    t0 = fp_sub(t0, t2);
    y3 = fp_mul(t0, y3);
    y3 = fp_add(x3, y3);
    t1 = fp_mul(p.x, p.y);
    x3 = fp_mul(t0, t1);
    x3 = fp_add(x3, x3);
    return G1(x3, y3, z3);
}

fn g1_select(if_false: G1, if_true: G1, cond: bool) -> G1 {
    return G1(
        fp_select(if_false.x, if_true.x, cond),
        fp_select(if_false.y, if_true.y, cond),
        fp_select(if_false.z, if_true.z, cond),
    );
}

// k * p for a small k (bucket weights), double-and-add from the top bit.
fn g1_mul_small(p: G1, k: u32) -> G1 {
    var acc = g1_identity();
    for (var bit = 31i; bit >= 0i; bit--) {
        acc = g1_double(acc);
        acc = g1_select(acc, g1_add(acc, p), ((k >> u32(bit)) & 1u) == 1u);
    }
    return acc;
}

// Affine point with canonical (non-Montgomery) coordinates read from `words` at `base`:
// x then y, 12 limbs each. (0, 0) is not on the curve and encodes the identity. Returns the point
// in projective Montgomery form and whether it lies on the curve.
struct G1Loaded {
    point: G1,
    on_curve: bool,
}

fn g1_from_affine_canonical(x_in: fp_t, y_in: fp_t) -> G1Loaded {
    let is_identity = fp_is_zero(x_in) && fp_is_zero(y_in);
    let canonical = fp_is_canonical(x_in) && fp_is_canonical(y_in);
    let x = fp_to_mont(x_in);
    let y = fp_to_mont(y_in);
    // y^2 == x^3 + 4
    var four = fp_add(fp_one(), fp_one());
    four = fp_add(four, four);
    let rhs = fp_add(fp_mul(fp_sqr(x), x), four);
    let ok = canonical && fp_eq(fp_sqr(y), rhs);
    return G1Loaded(
        g1_select(G1(x, y, fp_one()), g1_identity(), is_identity),
        ok || is_identity,
    );
}

// Affine canonical coordinates of p; the identity (z = 0, so 1/z reads as 0) becomes (0, 0).
fn g1_to_affine_canonical(p: G1) -> array<fp_t, 2> {
    let zinv = fp_inv(p.z);
    return array<fp_t, 2>(fp_from_mont(fp_mul(p.x, zinv)), fp_from_mont(fp_mul(p.y, zinv)));
}
