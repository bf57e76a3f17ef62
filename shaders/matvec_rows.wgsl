// y[m, row] (+)= sum_k W[row, k] * x[m, k]: the decode product for CPU-type adapters (lavapipe,
// SwiftShader). One invocation owns one whole row and walks it; all invocations of a workgroup
// read the same x at the same time. CPU drivers run a workgroup as SIMD lanes over invocations,
// so x becomes one broadcast load shared by every lane (instead of a gather per lane) and no
// reduction or barrier is needed. Real GPUs use matvec.wgsl / matvec_sg.wgsl instead (coalesced).
// The weight type's `dq8` fragment and shaders/common/matmul_io.wgsl are concatenated in front.

const WG: u32 = 16u;
@group(0) @binding(2) var<storage, read> xv4: array<vec4<f32>>;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    let m = wid.z;
    let xbase = m * p.x_stride;
    let rbase = row * p.row_words;
    let groups = (p.K + 7u) / 8u;
    var acc = vec4<f32>(0.0);
    if (row < p.N) {
        let blocks = p.K / QK;
        for (var b = 0u; b < blocks; b++) {
            let base = rbase + b * QWORDS;
            let xb = (xbase + b * QK) / 4u;
            for (var j = 0u; j < QK / 8u; j++) {
                let d = dq8(base, j);
                acc += d[0] * xv4[xb + 2u * j] + d[1] * xv4[xb + 2u * j + 1u];
            }
        }
        let yi = m * p.y_stride + p.y_offset + row;
        let total = acc.x + acc.y + acc.z + acc.w;
        if (p.accumulate != 0u) { y[yi] += total; } else { y[yi] = total; }
    }
}
