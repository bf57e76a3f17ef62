// Appends rows of keys and values to an f16 KV cache: kd[dst_row(r)] = f16(ks[src_row0 + r] -
// base_k) and vd the same with base_v, for r < rows (base: kv_base.wgsl, this sequence's
// per-channel f32 base, keys then values), two elements per invocation packed into one word
// (element 2j in the low half: the layout shaders/common/kv_f16.wgsl reads). pack2x16float rounds
// to nearest.

struct Params {
    kv_dim: u32,   // elements per row (even)
    rows: u32,
    src_row0: u32, // first row in ks / vs
    slot: u32,     // the sequence's entry in seq_pos0: its rows go to positions seq_pos0[slot]..
    ring: u32,     // position p goes to cache row p % ring (0 = row p)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ks: array<f32>;
@group(0) @binding(2) var<storage, read> vs: array<f32>;
@group(0) @binding(3) var<storage, read_write> kd: array<u32>;
@group(0) @binding(4) var<storage, read_write> vd: array<u32>;
@group(0) @binding(5) var<storage, read> base: array<vec2<f32>>;
// each sequence's first position, written once per step (src/ops/mod.rs Positions)
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

// the cache row of this store's row r: position seq_pos0[slot] + r, in a ring of p.ring rows
fn dst_row(r: u32) -> u32 {
    let pos = seq_pos0[p.slot] + r;
    if (p.ring > 0u) { return pos % p.ring; }
    return pos;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let half_row = p.kv_dim / 2u;
    if (i >= p.rows * half_row) { return; }
    let r = i / half_row;
    let c = i % half_row;
    let s = (p.src_row0 + r) * p.kv_dim + 2u * c;
    let d = dst_row(r) * half_row + c;
    kd[d] = pack2x16float(vec2<f32>(ks[s], ks[s + 1u]) - base[c]);
    vd[d] = pack2x16float(vec2<f32>(vs[s], vs[s + 1u]) - base[half_row + c]);
}
