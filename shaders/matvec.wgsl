// y[m, row] (+)= sum_k W[row, k] * x[m, k]: the decode product, token m = workgroup z.
// W stays quantized: the `dq8` fragment of its type (shaders/quant/*.wgsl, concatenated in front of
// this file) decodes 8 weights at a time. Baseline kernel (no subgroups): each 64-thread workgroup
// computes ROWS rows with TPR threads per row and a shared-memory reduction. Few, fat workgroups
// also suit CPU-type adapters (lavapipe, SwiftShader). Subgroup twin: matvec_sg.wgsl.

struct Params {
    K: u32,          // row length (elements)
    N: u32,          // rows in this weight part
    M: u32,          // tokens
    row_words: u32,  // u32 words per weight row
    x_stride: u32,   // floats between tokens in x
    y_stride: u32,   // floats between tokens in y
    y_offset: u32,   // first output column of this part
    accumulate: u32, // 1: y += W x (fused residual add)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const TPR: u32 = 8u;   // threads per row
const ROWS: u32 = 8u;  // rows per workgroup (TPR * ROWS = 64)
var<workgroup> red: array<f32, 64>;

fn x8(base: u32, k: u32) -> array<vec4<f32>, 2> {
    let i = base + k;
    if (k + 8u <= p.K) {
        return array<vec4<f32>, 2>(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]),
                                   vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]));
    }
    var v = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var t = 0u; t < 8u; t++) {
        if (k + t < p.K) { v[t] = x[i + t]; }
    }
    return array<vec4<f32>, 2>(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = lid / TPR;
    let t = lid % TPR;
    let row = (wid.x + wid.y * nwg.x) * ROWS + r;
    let m = wid.z;
    var acc = 0.0;
    if (row < p.N) {
        let rbase = row * p.row_words;
        let xbase = m * p.x_stride;
        let groups = (p.K + 7u) / 8u;
        for (var g = t; g < groups; g += TPR) {
            let k = g * 8u;
            let d = dq8(rbase + (k / QK) * QWORDS, (k % QK) / 8u);
            let xv = x8(xbase, k);
            acc += dot(d[0], xv[0]) + dot(d[1], xv[1]);
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    if (t == 0u && row < p.N) {
        let yi = m * p.y_stride + p.y_offset + row;
        if (p.accumulate != 0u) { y[yi] += red[lid]; } else { y[yi] = red[lid]; }
    }
}
