// y[m, row] (+)= sum_k W[row, k] * x[m, k] for one token m per workgroup row: the decode product.
// Subgroup twin of matvec.wgsl: the reduction uses subgroupAdd (chosen when the adapter has subgroups).
// W stays quantized: the `dq8` fragment of its type decodes 8 weights at a time; it and
// shaders/common/matmul_io.wgsl (parameters, bindings, x8) are concatenated in front.

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sg_lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    let m = wid.z;
    if (row >= p.N) { return; }
    let rbase = p.w_offset + row * p.row_words;
    let xbase = m * p.x_stride;
    let groups = (p.K + 7u) / 8u;
    var acc = 0.0;
    for (var g = lid; g < groups; g += WG) {
        let k = g * 8u;
        let d = dq8(rbase + (k / QK) * QWORDS, (k % QK) / 8u);
        let xv = x8(xbase, k);
        acc += dot(d[0], xv[0]) + dot(d[1], xv[1]);
    }
    // One partial per subgroup (its first lane), whatever the subgroup size and layout.
    let s = subgroupAdd(acc);
    red[lid] = select(0.0, s, sg_lid == 0u);
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var i = 0u; i < WG; i++) { total += red[i]; }
        let yi = m * p.y_stride + p.y_offset + row;
        if (p.accumulate != 0u) { y[yi] += total; } else { y[yi] = total; }
    }
}
