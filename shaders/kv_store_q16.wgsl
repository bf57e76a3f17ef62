// Appends rows of keys and values to a q16 KV cache: 16-bit fixed point, one f32 scale per
// (position, KV head) row segment. For row r < rows, KV head h and keys (w = 0) or values (w = 1):
// the segment's differences from the cache's base (kv_base.wgsl, per channel, keys then values)
// x[c] = src[src_row0 + r, h, c] - base[w, h, c], their largest magnitude a = max |x[c]|, and
// stored: kd/vd[dst_row(r), h, c] = round(x[c] / a * 32767) as i16, two per word (element 2j in
// the low half: pack2x16snorm, which shaders/common/kv_q16.wgsl reads back with unpack2x16snorm),
// scale[dst_row(r), h] = (a of keys, a of values). One invocation per (row, head, keys|values).
// Against f16 storage of the same differences: every element's error is at most a / 65534, which
// for the segment's large elements is 16-32x finer than f16's 11-bit mantissa.

struct Params {
    kv_dim: u32,   // elements per row: KV heads * head_dim
    rows: u32,
    src_row0: u32, // first row in ks / vs
    slot: u32,     // the sequence's entry in seq_pos0: its rows go to positions seq_pos0[slot]..
    head_dim: u32, // even, divides kv_dim
    ring: u32,     // position p goes to cache row p % ring (0 = row p)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ks: array<f32>;
@group(0) @binding(2) var<storage, read> vs: array<f32>;
@group(0) @binding(3) var<storage, read_write> kd: array<u32>;
@group(0) @binding(4) var<storage, read_write> vd: array<u32>;
@group(0) @binding(5) var<storage, read> base: array<f32>;
@group(0) @binding(6) var<storage, read_write> scale: array<f32>;
// each sequence's first position, written once per step (src/ops/mod.rs Positions)
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

// the cache row of this store's row r: position seq_pos0[slot] + r, in a ring of p.ring rows
fn dst_row(r: u32) -> u32 {
    let pos = seq_pos0[p.slot] + r;
    if (p.ring > 0u) { return pos % p.ring; }
    return pos;
}

// element i of the keys (w = 0) or values (w = 1) being stored, minus its channel's base
fn diff(w: u32, i: u32, c: u32) -> f32 {
    if (w == 0u) { return ks[i] - base[c]; }
    return vs[i] - base[p.kv_dim + c];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let n_heads = p.kv_dim / p.head_dim;
    if (i >= p.rows * n_heads * 2u) { return; }
    let w = i & 1u;
    let r = (i >> 1u) / n_heads;
    let h = (i >> 1u) % n_heads;
    let c0 = h * p.head_dim;
    let s0 = (p.src_row0 + r) * p.kv_dim + c0;
    var a = 0.0;
    for (var c = 0u; c < p.head_dim; c++) { a = max(a, abs(diff(w, s0 + c, c0 + c))); }
    let inv = select(0.0, 1.0 / a, a > 0.0);
    let d0 = (dst_row(r) * p.kv_dim + c0) / 2u;
    for (var j = 0u; j < p.head_dim / 2u; j++) {
        let x = vec2<f32>(diff(w, s0 + 2u * j, c0 + 2u * j), diff(w, s0 + 2u * j + 1u, c0 + 2u * j + 1u));
        let packed = pack2x16snorm(x * inv);
        if (w == 0u) { kd[d0 + j] = packed; } else { vd[d0 + j] = packed; }
    }
    scale[2u * (dst_row(r) * n_heads + h) + w] = a;
}
