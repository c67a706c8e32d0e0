// Element-wise field and point operations: the kernels' building blocks exposed one at a
// time, so tests can check them against blst and arkworks.
// Inputs and outputs are canonical (non-Montgomery) limbs.

struct Params {
    count: u32,
    op: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> inputs: array<u32>;
@group(0) @binding(1) var<storage, read_write> outputs: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

const OP_ADD: u32 = 0u;
const OP_SUB: u32 = 1u;
const OP_MUL: u32 = 2u;
const OP_SQR: u32 = 3u;
const OP_INV: u32 = 4u;
const OP_NEG: u32 = 5u;
const OP_G1_ADD: u32 = 0u;
const OP_G1_DOUBLE: u32 = 1u;

@compute @workgroup_size(64)
fn fp_op(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= params.count) {
        return;
    }
    var a: fp_t;
    var b: fp_t;
    for (var l = 0u; l < 12u; l++) {
        a[l] = inputs[i * 24u + l];
        b[l] = inputs[i * 24u + 12u + l];
    }
    let am = fp_to_mont(a);
    let bm = fp_to_mont(b);
    var r: fp_t;
    switch params.op {
        case OP_ADD: { r = fp_add(am, bm); }
        case OP_SUB: { r = fp_sub(am, bm); }
        case OP_MUL: { r = fp_mul(am, bm); }
        case OP_SQR: { r = fp_sqr(am); }
        case OP_INV: { r = fp_inv(am); }
        case OP_NEG: { r = fp_neg(am); }
        default: { r = fp_zero(); }
    }
    let out = fp_from_mont(r);
    for (var l = 0u; l < 12u; l++) {
        outputs[i * 12u + l] = out[l];
    }
}

@compute @workgroup_size(64)
fn fr_op(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= params.count) {
        return;
    }
    var a: fr_t;
    var b: fr_t;
    for (var l = 0u; l < 8u; l++) {
        a[l] = inputs[i * 16u + l];
        b[l] = inputs[i * 16u + 8u + l];
    }
    let am = fr_to_mont(a);
    let bm = fr_to_mont(b);
    var r: fr_t;
    switch params.op {
        case OP_ADD: { r = fr_add(am, bm); }
        case OP_SUB: { r = fr_sub(am, bm); }
        case OP_MUL: { r = fr_mul(am, bm); }
        case OP_SQR: { r = fr_sqr(am); }
        case OP_INV: { r = fr_inv(am); }
        case OP_NEG: { r = fr_neg(am); }
        default: { r = fr_zero(); }
    }
    let out = fr_from_mont(r);
    for (var l = 0u; l < 8u; l++) {
        outputs[i * 8u + l] = out[l];
    }
}

fn load_affine(base: u32) -> G1Loaded {
    var x: fp_t;
    var y: fp_t;
    for (var l = 0u; l < 12u; l++) {
        x[l] = inputs[base + l];
        y[l] = inputs[base + 12u + l];
    }
    return g1_from_affine_canonical(x, y);
}

// Output per pair: affine x, y (identity as (0, 0)), then 1 if both inputs were on the curve.
@compute @workgroup_size(64)
fn g1_op(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= params.count) {
        return;
    }
    let p = load_affine(i * 48u);
    let q = load_affine(i * 48u + 24u);
    var r: G1;
    switch params.op {
        case OP_G1_ADD: { r = g1_add(p.point, q.point); }
        case OP_G1_DOUBLE: { r = g1_double(p.point); }
        default: { r = g1_identity(); }
    }
    var xy = g1_to_affine_canonical(r);
    for (var l = 0u; l < 12u; l++) {
        outputs[i * 25u + l] = xy[0][l];
        outputs[i * 25u + 12u + l] = xy[1][l];
    }
    outputs[i * 25u + 24u] = select(0u, 1u, p.on_curve && q.on_curve);
}
