// y[m, row] (+)= sum_k W[row, k] * x[m, k] for one token m per workgroup row: the decode product.
// Subgroup twin of matvec.wgsl: the reduction uses subgroupAdd (chosen when the adapter has subgroups).
// W stays quantized: the `dq8` fragment of its type decodes 8 weights at a time.

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

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

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
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sg_lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    let m = wid.z;
    if (row >= p.N) { return; }
    let rbase = row * p.row_words;
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
