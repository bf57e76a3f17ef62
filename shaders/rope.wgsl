// Rotary position embedding, in place on rows row0 + m of x[row, head, dim], for tokens at
// positions pos0 + m (one sequence of a batch that may hold several).
// mode 0 rotates adjacent pairs (2i, 2i+1) (GGUF llama: Q/K rows were permuted at conversion);
// mode 2 is the NeoX layout, pairs (i, i + n_rot/2). The angle: rope_cs() of
// common/rope_angle.wgsl (concatenated in front), with per-dimension freq_factors when has_ff is 1.

struct Params {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    slot: u32,     // this sequence's entry in seq_pos0
    tokens: u32,
    mode: u32,
    has_ff: u32,
    row0: u32,
    freq_base: f32,
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr0: f32,
    corr1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> ff: array<f32>;
// each sequence's first position, written once per step (src/ops/mod.rs Positions)
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half_rot = p.n_rot / 2u;
    let idx = gid.x + gid.y * nwg.x * 64u;
    let total = p.tokens * p.n_heads * half_rot;
    if (idx >= total) { return; }
    let i = idx % half_rot;
    let h = (idx / half_rot) % p.n_heads;
    let m = idx / (half_rot * p.n_heads);
    let pos = f32(seq_pos0[p.slot] + m);

    var ffi = 1.0;
    if (p.has_ff != 0u) { ffi = ff[i]; }
    let cs = rope_cs(i, pos, p.n_rot, p.freq_base, p.freq_scale, p.ext_factor, p.attn_factor,
                     vec2<f32>(p.corr0, p.corr1), ffi);
    let c = cs.x;
    let s = cs.y;

    let base = ((p.row0 + m) * p.n_heads + h) * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.mode == 2u) {
        a = base + i;
        b = base + i + half_rot;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
