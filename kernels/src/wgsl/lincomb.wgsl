// Linear combinations over Fr of 31-byte sectors (each sector read as a little-endian integer
// below 2^248 < r, so it is already a canonical scalar):
//
//   premul        coeffs[j] (canonical, checked by the host) -> coeffs[j]·R² mod r, so one
//                 Montgomery product with a
//                 raw sector gives the Montgomery form of coeff·sector
//   dot_rows      out[i] = Σ_j coeffs[j]·m_ij     (tagging: one output per block)
//   combine_cols  out[j] = Σ_i coeffs[i]·m_ij     (proving: one output per sector column)
//
// m_ij is sector j of block i; block i starts at byte i·block_bytes of `data`; bytes at or
// past `data_bytes` read as zero (a short last block).

struct Params {
    count: u32,        // outputs (dot_rows: blocks; combine_cols: columns)
    sectors: u32,      // s, sectors per block
    blocks: u32,       // blocks in data
    data_bytes: u32,   // valid bytes in data
    coeffs: u32,       // coefficients (premul)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
// coeffs: 8 words each; canonical before premul, premultiplied after.
@group(0) @binding(1) var<storage, read_write> coeffs: array<u32>;
// outputs: 8 words each, canonical.
@group(0) @binding(2) var<storage, read_write> outputs: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

const SECTOR_BYTES: u32 = 31u;

fn data_byte(offset: u32) -> u32 {
    if (offset >= params.data_bytes) {
        return 0u;
    }
    return (data[offset >> 2u] >> ((offset & 3u) * 8u)) & 0xffu;
}

fn load_sector(offset: u32) -> fr_t {
    var m: fr_t;
    for (var b = 0u; b < SECTOR_BYTES; b++) {
        m[b >> 2u] |= data_byte(offset + b) << ((b & 3u) * 8u);
    }
    return m;
}

fn load_coeff(j: u32) -> fr_t {
    var c: fr_t;
    for (var l = 0u; l < 8u; l++) {
        c[l] = coeffs[j * 8u + l];
    }
    return c;
}

fn store_output(k: u32, v: fr_t) {
    let out = fr_from_mont(v);
    for (var l = 0u; l < 8u; l++) {
        outputs[k * 8u + l] = out[l];
    }
}

@compute @workgroup_size(64)
fn premul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = thread_index(gid, groups);
    if (j >= params.coeffs) {
        return;
    }
    let premultiplied = fr_to_mont(fr_to_mont(load_coeff(j)));
    for (var l = 0u; l < 8u; l++) {
        coeffs[j * 8u + l] = premultiplied[l];
    }
}

@compute @workgroup_size(64)
fn dot_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= params.count) {
        return;
    }
    let block = i * params.sectors * SECTOR_BYTES;
    var acc = fr_zero();
    for (var j = 0u; j < params.sectors; j++) {
        acc = fr_add(acc, fr_mul(load_coeff(j), load_sector(block + j * SECTOR_BYTES)));
    }
    store_output(i, acc);
}

@compute @workgroup_size(64)
fn combine_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = thread_index(gid, groups);
    if (j >= params.count) {
        return;
    }
    var acc = fr_zero();
    for (var i = 0u; i < params.blocks; i++) {
        let offset = (i * params.sectors + j) * SECTOR_BYTES;
        acc = fr_add(acc, fr_mul(load_coeff(i), load_sector(offset)));
    }
    store_output(j, acc);
}
