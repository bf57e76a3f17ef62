// The Q/K/V epilogue of matvec_pairs.wgsl: q, k, v = Wq a, Wk a, Wv a (a = rmsnorm(x)) from one
// stack of nq + nk + nv rows (Weight::fuse), with RoPE applied to q and k when `rotate` is set,
// as qkv_rope_rows.wgsl does in the CPU layout: pair j is the two dims one rotation mixes (mode 0,
// GGUF llama: (2t, 2t+1) of a head; NeoX: (t, t + n_rot/2), then adjacent pass-through dims after
// n_rot), every section a whole number of heads. Without `rotate`, pair j is rows (2j, 2j+1).
// Keys and values of token m go to row (pos0 + m) % kv_ring of k and v when kv_ring > 0 (the
// layer's f32 KV cache, written directly), else to row m (scratch). Concatenated after the
// type's `dq8` fragment and rope_angle.wgsl, before matvec_pairs.wgsl.

struct Params {
    K: u32,         // row length (hidden)
    row_words: u32, // u32 words per weight row
    w_offset: u32,  // word of w where the stack starts
    x_stride: u32,  // floats between tokens in x
    eps: f32,       // the norm's
    pairs: u32,     // (nq + nk + nv) / 2
    nq: u32,
    nk: u32,
    nv: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    rotate: u32,
    slot: u32,      // the sequence's entry in seq_pos0, which holds pos0
    kv_ring: u32,
    has_ff: u32,
    freq_base: f32, // freq_base .. corr1: rope_cs()'s (src/ops/rope.rs AngleParams)
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr0: f32,
    corr1: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
@group(0) @binding(6) var<storage, read> ff: array<f32>;
// each sequence's first position, written once per step (src/ops/mod.rs Positions)
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

// the rows (= output dims of the stack) of pair j
fn pair_rows(j: u32) -> vec2<u32> {
    if (p.rotate == 0u) { return vec2<u32>(2u * j, 2u * j + 1u); }
    let half = p.head_dim / 2u;
    let half_rot = p.n_rot / 2u;
    let base = (j / half) * p.head_dim;
    let t = j % half;
    if (p.neox == 0u) { return vec2<u32>(base + 2u * t, base + 2u * t + 1u); }
    if (t < half_rot) { return vec2<u32>(base + t, base + t + half_rot); }
    let a = base + p.n_rot + 2u * (t - half_rot);
    return vec2<u32>(a, a + 1u);
}

fn pair_store(j: u32, m: u32, s0: f32, s1: f32) {
    let ab = pair_rows(j);
    let a = ab.x;
    let b = ab.y;
    var sa = s0;
    var sb = s1;
    let t = j % (p.head_dim / 2u);
    if (p.rotate != 0u && a < p.nq + p.nk && t < p.n_rot / 2u) {
        var ffi = 1.0;
        if (p.has_ff != 0u) { ffi = ff[t]; }
        let cs = rope_cs(t, f32(seq_pos0[p.slot] + m), p.n_rot, p.freq_base, p.freq_scale,
                         p.ext_factor, p.attn_factor, vec2<f32>(p.corr0, p.corr1), ffi);
        sa = s0 * cs.x - s1 * cs.y;
        sb = s0 * cs.y + s1 * cs.x;
    }
    var kv_row = m;
    if (p.kv_ring > 0u) { kv_row = (seq_pos0[p.slot] + m) % p.kv_ring; }
    if (a < p.nq) {
        q[m * p.nq + a] = sa;
        q[m * p.nq + b] = sb;
    } else if (a < p.nq + p.nk) {
        k[kv_row * p.nk + a - p.nq] = sa;
        k[kv_row * p.nk + b - p.nq] = sb;
    } else {
        v[kv_row * p.nv + a - p.nq - p.nk] = sa;
        v[kv_row * p.nv + b - p.nq - p.nk] = sb;
    }
}
