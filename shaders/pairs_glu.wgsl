// The gated feed-forward epilogue of matvec_pairs.wgsl: y[m, i] = act(Wgate[i] . a) * (Wup[i] . a)
// (a = rmsnorm(x[m])) for gate and up weights that lie one after the other in one buffer
// (Weight::fuse): pair i is gate row i and up row F + i. act: 0 = SiLU (SwiGLU), 1 = GELU-tanh
// (GeGLU). glu_rows.wgsl is the CPU layout's twin. Concatenated after the type's `dq8` fragment
// and common/act.wgsl, before matvec_pairs.wgsl.

struct Params {
    K: u32,         // row length (hidden)
    row_words: u32, // u32 words per weight row
    w_offset: u32,  // word of w where the gate rows start
    x_stride: u32,  // floats between tokens in x
    eps: f32,       // the norm's
    pairs: u32,     // F: the feed-forward width
    act: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn pair_rows(i: u32) -> vec2<u32> {
    return vec2<u32>(i, p.pairs + i);
}

fn pair_store(i: u32, m: u32, g: f32, u: f32) {
    var a = silu(g);
    if (p.act == 1u) { a = gelu_tanh(g); }
    y[m * p.pairs + i] = a * u;
}
