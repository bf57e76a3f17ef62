// y[m, row] (+)= sum_k W[row, k] * x[m, k]: the decode product, token m = workgroup z.
// W stays quantized: the `dq8` fragment of its type (shaders/quant/*.wgsl) decodes 8 weights at a
// time; it and shaders/common/matmul_io.wgsl (parameters, bindings, x8) are concatenated in front. Baseline kernel (no subgroups): each 64-thread workgroup
// computes ROWS rows with TPR threads per row and a shared-memory reduction. Few, fat workgroups
// also suit CPU-type adapters (lavapipe, SwiftShader). Subgroup twin: matvec_sg.wgsl.

const TPR: u32 = 8u;   // threads per row
const ROWS: u32 = 8u;  // rows per workgroup (TPR * ROWS = 64)
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = lid / TPR;
    let t = lid % TPR;
    let row = (wid.x + wid.y * nwg.x) * ROWS + r;
    let m = wid.z;
    var acc = 0.0;
    if (row < p.N) {
        let rbase = p.w_offset + row * p.row_words;
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
