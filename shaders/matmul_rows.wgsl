// Y[m, n] (+)= sum_k W[n, k] * X[m, k] for many tokens: the prefill product for CPU-type adapters
// (lavapipe, SwiftShader). Like matvec_rows.wgsl, one invocation owns one weight row, but it
// decodes each 8 weights once and applies them to a tile of T tokens (workgroup z), so the decode
// cost is shared by T tokens; every invocation of the workgroup reads the same x, which CPU
// drivers turn into one broadcast load. The loop runs in uniform control flow: rows past N and
// tokens past M compute on a clamped copy and are not stored. Needs K % QK == 0 (and K % 8 == 0).
// Concatenated after the type's `dq8` fragment, shaders/common/matmul_io.wgsl and rows_dot.wgsl
// (for its x binding).

const WG: u32 = 16u;
const T: u32 = 8u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    let m0 = wid.z * T;
    let rbase = p.w_offset + min(row, p.N - 1u) * p.row_words;
    var xb: array<u32, 8>;
    for (var t = 0u; t < T; t++) { xb[t] = min(m0 + t, p.M - 1u) * p.x_stride / 4u; }
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < T; t++) { acc[t] = vec4<f32>(0.0); }
    for (var b = 0u; b < p.K / QK; b++) {
        let base = rbase + b * QWORDS;
        let xo = b * (QK / 4u);
        for (var j = 0u; j < QK / 8u; j++) {
            let d = dq8(base, j);
            for (var t = 0u; t < T; t++) {
                let i = xb[t] + xo + 2u * j;
                acc[t] += d[0] * xv4[i] + d[1] * xv4[i + 1u];
            }
        }
    }
    if (row >= p.N) { return; }
    for (var t = 0u; t < T; t++) {
        let m = m0 + t;
        if (m < p.M) {
            let s = acc[t].x + acc[t].y + acc[t].z + acc[t].w;
            let yi = m * p.y_stride + p.y_offset + row;
            if (p.accumulate != 0u) { y[yi] += s; } else { y[yi] = s; }
        }
    }
}
