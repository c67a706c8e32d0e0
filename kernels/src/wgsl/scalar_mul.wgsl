// Batch variable-base scalar multiplication: out[k] = scalars[k]·points[k * point_stride].
// point_stride 0 multiplies one base (the generator, say) by every scalar.
//
// Double-and-add over the low `nbits` bits with the complete formulas, the add chosen by a
// select: no branch depends on the point or the scalar. The bits are walked in dispatches of
// STEP_BITS (start, step × ceil(nbits / STEP_BITS), finish), keeping each lane's accumulator in
// `state` between them: one 256-iteration loop per invocation miscompiled on Mesa's lavapipe
// 22.3 (lanes returned each other's values), and short kernels are kinder to GPU watchdogs.

struct Params {
    count: u32,
    point_stride: u32,
    nbits: u32,
    _pad0: u32,
}

// points: affine canonical x, y (24 words each); (0, 0) = identity.
@group(0) @binding(0) var<storage, read_write> points: array<u32>;
// scalars: 8 words each, little-endian limbs.
@group(0) @binding(1) var<storage, read_write> scalars: array<u32>;
// outputs: affine canonical x, y, then 1 if the point was on the curve (25 words each).
@group(0) @binding(2) var<storage, read_write> outputs: array<u32>;
// state: per lane the base (x, y, z) in Montgomery form, the accumulator (x, y, z), and the
// number of bits still to do (73 words each).
@group(0) @binding(3) var<storage, read_write> state: array<u32>;
@group(0) @binding(4) var<uniform> params: Params;

const STEP_BITS: u32 = 8u;
const STATE_WORDS: u32 = 73u;

fn load_state_point(k: u32, at: u32) -> G1 {
    var p: G1;
    let base = k * STATE_WORDS + at;
    for (var l = 0u; l < 12u; l++) {
        p.x[l] = state[base + l];
        p.y[l] = state[base + 12u + l];
        p.z[l] = state[base + 24u + l];
    }
    return p;
}

fn store_state_point(k: u32, at: u32, p: G1) {
    let base = k * STATE_WORDS + at;
    for (var l = 0u; l < 12u; l++) {
        state[base + l] = p.x[l];
        state[base + 12u + l] = p.y[l];
        state[base + 24u + l] = p.z[l];
    }
}

@compute @workgroup_size(64)
fn start(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = thread_index(gid, groups);
    if (k >= params.count) {
        return;
    }
    let base = k * params.point_stride * 24u;
    var x: fp_t;
    var y: fp_t;
    for (var l = 0u; l < 12u; l++) {
        x[l] = points[base + l];
        y[l] = points[base + 12u + l];
    }
    let p = g1_from_affine_canonical(x, y);
    store_state_point(k, 0u, p.point);
    store_state_point(k, 36u, g1_identity());
    state[k * STATE_WORDS + 72u] = params.nbits;
    outputs[k * 25u + 24u] = select(0u, 1u, p.on_curve);
}

@compute @workgroup_size(64)
fn step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = thread_index(gid, groups);
    if (k >= params.count) {
        return;
    }
    let p = load_state_point(k, 0u);
    var acc = load_state_point(k, 36u);
    var bit = state[k * STATE_WORDS + 72u];
    let stop = bit - min(bit, STEP_BITS);
    for (; bit > stop; bit--) {
        acc = g1_double(acc);
        let word = scalars[k * 8u + ((bit - 1u) >> 5u)];
        acc = g1_select(acc, g1_add(acc, p), ((word >> ((bit - 1u) & 31u)) & 1u) == 1u);
    }
    store_state_point(k, 36u, acc);
    state[k * STATE_WORDS + 72u] = bit;
}

@compute @workgroup_size(64)
fn finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = thread_index(gid, groups);
    if (k >= params.count) {
        return;
    }
    var xy = g1_to_affine_canonical(load_state_point(k, 36u));
    for (var l = 0u; l < 12u; l++) {
        outputs[k * 25u + l] = xy[0][l];
        outputs[k * 25u + 12u + l] = xy[1][l];
    }
}
