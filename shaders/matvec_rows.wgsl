// y[m, row] (+)= sum_k W[row, k] * x[m, k]: the decode product for CPU-type adapters (lavapipe,
// SwiftShader). One invocation owns one whole row (shaders/common/rows_dot.wgsl), so no reduction
// or barrier is needed. Real GPUs use matvec.wgsl / matvec_sg.wgsl instead (coalesced weight reads).
// Concatenated after the type's `dq8` fragment, shaders/common/matmul_io.wgsl and rows_dot.wgsl.

const WG: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    let m = wid.z;
    x_prologue(lid, m * p.x_stride / 4u);
    if (row < p.N) {
        let total = row_dot(p.w_offset + row * p.row_words, m * p.x_stride / 4u);
        let yi = m * p.y_stride + p.y_offset + row;
        if (p.accumulate != 0u) { y[yi] += total; } else { y[yi] = total; }
    }
}
