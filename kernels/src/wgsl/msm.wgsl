// Pippenger MSM: Σ k_i P_i over n points, scalars cut into W windows of c bits.
//
//   load          canonical affine points -> Montgomery, on-curve check (flag on failure)
//   count         per (point, window): bucket digit, counted per bucket with atomics
//   scan          one workgroup: exclusive prefix sums of the counts -> bucket offsets
//   scatter       per (point, window): point index written into its bucket's slice
//   bucket_sum    per bucket: sum of its points (all windows and buckets in parallel)
//   window_reduce per (window, segment): Σ d·B_d over a segment of the window's buckets
//   final         one thread: windows combined by doubling (Horner), affine result
//
// The order of points inside a bucket depends on the atomics, but the group law does not
// care, and the result leaves in affine canonical form, so it is bit-exact every run.

struct Params {
    n: u32,            // points
    c: u32,            // window width in bits
    windows: u32,      // W = ceil(nbits / c)
    nbits: u32,        // scalar bits used
    segments: u32,     // segments per window in window_reduce
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// points: n x 24 words, x then y; canonical on input, Montgomery after `load`; (0, 0) = identity.
@group(0) @binding(0) var<storage, read_write> points: array<u32>;
// scalars: n x 8 words, little-endian limbs.
@group(0) @binding(1) var<storage, read_write> scalars: array<u32>;
// counters: [counts: W*B | cursors: W*B | invalid-point flag].
@group(0) @binding(2) var<storage, read_write> counters: array<atomic<u32>>;
// offsets: W*B + 1 exclusive prefix sums of the counts.
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;
// sorted: point indices grouped by (window, bucket), n*W entries at most.
@group(0) @binding(4) var<storage, read_write> sorted: array<u32>;
// sums: W*B bucket sums then W*segments partial window sums, 36 words each (projective).
@group(0) @binding(5) var<storage, read_write> sums: array<u32>;
// result: affine x, y (canonical), then 1 if the result is the identity.
@group(0) @binding(6) var<storage, read_write> result: array<u32>;
@group(0) @binding(7) var<uniform> params: Params;

fn buckets_per_window() -> u32 {
    return 1u << params.c;
}

fn digit(i: u32, w: u32) -> u32 {
    let lo_bit = w * params.c;
    let width = min(params.c, params.nbits - lo_bit);
    let word = lo_bit >> 5u;
    let shift = lo_bit & 31u;
    var d = scalars[i * 8u + word] >> shift;
    if (shift + width > 32u && word + 1u < 8u) {
        d |= scalars[i * 8u + word + 1u] << (32u - shift);
    }
    return d & ((1u << width) - 1u);
}

fn load_point(i: u32) -> G1 {
    var x: fp_t;
    var y: fp_t;
    for (var l = 0u; l < 12u; l++) {
        x[l] = points[i * 24u + l];
        y[l] = points[i * 24u + 12u + l];
    }
    return g1_select(G1(x, y, fp_one()), g1_identity(), fp_is_zero(x) && fp_is_zero(y));
}

fn load_sum(slot: u32) -> G1 {
    var p: G1;
    for (var l = 0u; l < 12u; l++) {
        p.x[l] = sums[slot * 36u + l];
        p.y[l] = sums[slot * 36u + 12u + l];
        p.z[l] = sums[slot * 36u + 24u + l];
    }
    return p;
}

fn store_sum(slot: u32, p: G1) {
    for (var l = 0u; l < 12u; l++) {
        sums[slot * 36u + l] = p.x[l];
        sums[slot * 36u + 12u + l] = p.y[l];
        sums[slot * 36u + 24u + l] = p.z[l];
    }
}

@compute @workgroup_size(64)
fn load(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= params.n) {
        return;
    }
    var x: fp_t;
    var y: fp_t;
    for (var l = 0u; l < 12u; l++) {
        x[l] = points[i * 24u + l];
        y[l] = points[i * 24u + 12u + l];
    }
    let loaded = g1_from_affine_canonical(x, y);
    if (!loaded.on_curve) {
        atomicOr(&counters[2u * params.windows * buckets_per_window()], 1u);
    }
    // The identity keeps its (0, 0) marker; every other point is stored in Montgomery form.
    if (loaded.on_curve && !g1_is_identity(loaded.point)) {
        for (var l = 0u; l < 12u; l++) {
            points[i * 24u + l] = loaded.point.x[l];
            points[i * 24u + 12u + l] = loaded.point.y[l];
        }
    }
}

// Thread t of count and scatter handles point t % n in window t / n: (point, window, digit).
fn pair_digit(t: u32) -> vec3<u32> {
    let i = t % params.n;
    let w = t / params.n;
    return vec3<u32>(i, w, digit(i, w));
}

@compute @workgroup_size(64)
fn count(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = thread_index(gid, groups);
    if (t >= params.n * params.windows) {
        return;
    }
    let p = pair_digit(t);
    if (p.z != 0u) {
        atomicAdd(&counters[p.y * buckets_per_window() + p.z], 1u);
    }
}

const SCAN_THREADS: u32 = 256u;
var<workgroup> chunk_totals: array<u32, SCAN_THREADS>;

@compute @workgroup_size(256)
fn scan(@builtin(local_invocation_index) lid: u32) {
    let total = params.windows * buckets_per_window();
    let chunk = (total + SCAN_THREADS - 1u) / SCAN_THREADS;
    let lo = min(lid * chunk, total);
    let hi = min(lo + chunk, total);
    var sum = 0u;
    for (var k = lo; k < hi; k++) {
        sum += atomicLoad(&counters[k]);
    }
    chunk_totals[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var running = 0u;
        for (var k = 0u; k < SCAN_THREADS; k++) {
            let v = chunk_totals[k];
            chunk_totals[k] = running;
            running += v;
        }
        offsets[total] = running;
    }
    workgroupBarrier();
    var running = chunk_totals[lid];
    for (var k = lo; k < hi; k++) {
        offsets[k] = running;
        atomicStore(&counters[total + k], running);
        running += atomicLoad(&counters[k]);
    }
}

@compute @workgroup_size(64)
fn scatter(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = thread_index(gid, groups);
    if (t >= params.n * params.windows) {
        return;
    }
    let p = pair_digit(t);
    if (p.z != 0u) {
        let total = params.windows * buckets_per_window();
        let pos = atomicAdd(&counters[total + p.y * buckets_per_window() + p.z], 1u);
        sorted[pos] = p.x;
    }
}

@compute @workgroup_size(64)
fn bucket_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = thread_index(gid, groups);
    if (k >= params.windows * buckets_per_window()) {
        return;
    }
    var acc = g1_identity();
    for (var e = offsets[k]; e < offsets[k + 1u]; e++) {
        acc = g1_add(acc, load_point(sorted[e]));
    }
    store_sum(k, acc);
}

// Segment s of window w covers buckets lo..hi (bucket 0 is never used). With running sums from
// the top, acc = Σ (d - lo + 1)·B_d, so Σ d·B_d = acc + (lo - 1)·Σ B_d.
@compute @workgroup_size(64)
fn window_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = thread_index(gid, groups);
    if (t >= params.windows * params.segments) {
        return;
    }
    let w = t / params.segments;
    let s = t % params.segments;
    let b = buckets_per_window();
    let per_segment = (b - 1u + params.segments - 1u) / params.segments;
    let lo = min(1u + s * per_segment, b);
    let hi = min(lo + per_segment, b);
    var running = g1_identity();
    var acc = g1_identity();
    for (var d = hi; d > lo; d--) {
        running = g1_add(running, load_sum(w * b + d - 1u));
        acc = g1_add(acc, running);
    }
    // lo − 1 = 0 gives the identity: no branch needed.
    acc = g1_add(acc, g1_mul_small(running, lo - 1u));
    store_sum(params.windows * b + t, acc);
}

@compute @workgroup_size(1)
fn final_sum() {
    let base = params.windows * buckets_per_window();
    var acc = g1_identity();
    for (var w = params.windows; w > 0u; w--) {
        for (var i = 0u; i < params.c; i++) {
            acc = g1_double(acc);
        }
        for (var s = 0u; s < params.segments; s++) {
            acc = g1_add(acc, load_sum(base + (w - 1u) * params.segments + s));
        }
    }
    var xy = g1_to_affine_canonical(acc);
    for (var l = 0u; l < 12u; l++) {
        result[l] = xy[0][l];
        result[12u + l] = xy[1][l];
    }
    result[24u] = select(0u, 1u, g1_is_identity(acc));
}
