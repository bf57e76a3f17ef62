// q, k, v = Wq x, Wk x, Wv x in one dispatch: the decode projections of a layer whose three
// weights lie one after the other in one buffer (Weight::fuse), one invocation per row of the
// stack (shaders/common/rows_dot.wgsl; CPU-type adapters). Rows [0, nq) go to q, [nq, nq + nk)
// to k, the rest to v. Concatenated after the type's `dq8` fragment and rows_dot.wgsl.

struct Params {
    K: u32,         // row length
    N: u32,         // rows of the stack (nq + nk + nv)
    nq: u32,
    nk: u32,
    row_words: u32, // u32 words per weight row
    w_offset: u32,  // word of w where the stack starts
    x_stride: u32,  // floats between tokens in x
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

const WG: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    let m = wid.z;
    x_prologue(lid, m * p.x_stride / 4u);
    if (row >= p.N) { return; }
    let s = row_dot(p.w_offset + row * p.row_words, m * p.x_stride / 4u);
    let nv = p.N - p.nq - p.nk;
    if (row < p.nq) {
        q[m * p.nq + row] = s;
    } else if (row < p.nq + p.nk) {
        k[m * p.nk + row - p.nq] = s;
    } else {
        v[m * nv + row - p.nq - p.nk] = s;
    }
}
