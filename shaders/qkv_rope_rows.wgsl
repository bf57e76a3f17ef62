// q, k, v = Wq x, Wk x, Wv x with RoPE applied to q and k in the epilogue: qkv_rows.wgsl for one
// sequence whose rotation needs no per-head norm or bias first. Each invocation computes the two
// rows of one rotated pair (shaders/common/rows_dot.wgsl twice) and rotates them with rope_cs()
// (shaders/common/rope_angle.wgsl), so q and k leave the kernel ready for attention and no rope
// pass runs. Pairs follow the stack's heads (every section is a whole number of heads): in head
// pair t, mode 0 (GGUF llama) takes dims (2t, 2t+1); NeoX takes (t, t + n_rot/2) for t < n_rot/2
// and adjacent pass-through dims after n_rot. Keys and values of token m go to row
// (pos0 + m) % kv_ring of k and v when kv_ring > 0 (the layer's f32 KV cache, written directly),
// else to row m (scratch, for an f16 cache's kv_store pass). Concatenated after the type's `dq8`
// fragment, rows_dot.wgsl and rope_angle.wgsl.

// qkv_rows.wgsl's parameters, then the rotation's (src/ops/matmul.rs QkvRopeParams)
struct Params {
    K: u32,         // row length
    N: u32,         // rows of the stack (nq + nk + nv)
    nq: u32,
    nk: u32,
    row_words: u32, // u32 words per weight row
    w_offset: u32,  // word of w where the stack starts
    x_stride: u32,  // floats between tokens in x
    _pad: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    slot: u32,      // the sequence's entry in seq_pos0, which holds pos0
    kv_ring: u32,
    has_ff: u32,
    freq_base: f32, // freq_base .. corr1: rope_cs()'s (src/ops/rope.rs AngleParams)
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr0: f32,
    corr1: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
@group(0) @binding(6) var<storage, read> ff: array<f32>;
// each sequence's first position, written once per step (src/ops/mod.rs Positions)
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

const WG: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * WG + lid;
    let m = wid.z;
    x_prologue(lid, m * p.x_stride / 4u);
    if (j >= p.N / 2u) { return; }
    let half = p.head_dim / 2u;
    let half_rot = p.n_rot / 2u;
    let base = (j / half) * p.head_dim;
    let t = j % half;
    var a = base + 2u * t;
    if (p.neox != 0u) {
        a = base + t;
        if (t >= half_rot) { a = base + p.n_rot + 2u * (t - half_rot); }
    }
    var b = a + 1u;
    if (p.neox != 0u && t < half_rot) { b = a + half_rot; }

    let xb = m * p.x_stride / 4u;
    var sa = row_dot(p.w_offset + a * p.row_words, xb);
    var sb = row_dot(p.w_offset + b * p.row_words, xb);
    if (a < p.nq + p.nk && t < half_rot) {
        var ffi = 1.0;
        if (p.has_ff != 0u) { ffi = ff[t]; }
        let cs = rope_cs(t, f32(seq_pos0[p.slot] + m), p.n_rot, p.freq_base, p.freq_scale, p.ext_factor,
                         p.attn_factor, vec2<f32>(p.corr0, p.corr1), ffi);
        let x0 = sa;
        let x1 = sb;
        sa = x0 * cs.x - x1 * cs.y;
        sb = x0 * cs.y + x1 * cs.x;
    }
    var kv_row = m;
    if (p.kv_ring > 0u) { kv_row = (seq_pos0[p.slot] + m) % p.kv_ring; }
    let nv = p.N - p.nq - p.nk;
    if (a < p.nq) {
        q[m * p.nq + a] = sa;
        q[m * p.nq + b] = sb;
    } else if (a < p.nq + p.nk) {
        k[kv_row * p.nk + a - p.nq] = sa;
        k[kv_row * p.nk + b - p.nq] = sb;
    } else {
        v[kv_row * nv + a - p.nq - p.nk] = sa;
        v[kv_row * nv + b - p.nq - p.nk] = sb;
    }
}
