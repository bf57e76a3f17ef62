// y[m, i] = act(Wgate[i] . x[m]) * (Wup[i] . x[m]): a gated feed-forward's two decode projections
// and its activation in one dispatch, for a layer whose gate and up weights lie one after the
// other in one buffer (Weight::fuse): gate rows [0, F), up rows [F, 2F). One invocation per i
// (shaders/common/rows_dot.wgsl; CPU-type adapters). act: 0 = SiLU (SwiGLU), 1 = GELU-tanh (GeGLU).
// Concatenated after the type's `dq8` fragment, common/act.wgsl and rows_dot.wgsl.

struct Params {
    K: u32,         // row length
    F: u32,         // feed-forward width (rows of gate, of up, and columns of y)
    row_words: u32, // u32 words per weight row
    w_offset: u32,  // word of w where the gate rows start
    x_stride: u32,  // floats between tokens in x
    act: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    let m = wid.z;
    x_prologue(lid, m * p.x_stride / 4u);
    if (i >= p.F) { return; }
    let xb = m * p.x_stride / 4u;
    let g = row_dot(p.w_offset + i * p.row_words, xb);
    let u = row_dot(p.w_offset + (p.F + i) * p.row_words, xb);
    var a = silu(g);
    if (p.act == 1u) { a = gelu_tanh(g); }
    y[m * p.F + i] = a * u;
}
