// Y[m, n] (+)= sum_k W[n, k] * X[m, k] for many tokens at once: the prefill product.
// Register-tiled: a 64-thread workgroup computes a 32-row x 32-token tile, 4x4 per thread, staging a
// dequantized 32x32 slice of W (via the type's `dq8` fragment) and of X in shared memory, as `tile`
// elements (f32, or f16 where asked: shaders/common/tile_f32.wgsl / tile_f16.wgsl) multiplied and
// accumulated in f32. The tile type, the fragment and shaders/common/matmul_io.wgsl (parameters,
// bindings, x8) are concatenated in front.

const TN: u32 = 32u; // weight rows per tile
const TM: u32 = 32u; // tokens per tile
const TK: u32 = 32u; // depth per step
const TKP: u32 = 33u; // padded shared-memory row
var<workgroup> ws: array<tile, 1056>; // TN * TKP
var<workgroup> xs: array<tile, 1056>; // TM * TKP

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TN;
    let m0 = wid.y * TM;
    let tx = lid % 8u; // rows tx*4 .. tx*4+3
    let ty = lid / 8u; // tokens ty*4 .. ty*4+3
    var acc: array<vec4<f32>, 4>; // acc[i][j]: token ty*4+i, row tx*4+j
    for (var k0 = 0u; k0 < p.K; k0 += TK) {
        // W slice: TN rows x TK/8 groups of 8
        for (var i = lid; i < TN * (TK / 8u); i += 64u) {
            let r = i / (TK / 8u);
            let g = i % (TK / 8u);
            let row = n0 + r;
            let k = k0 + g * 8u;
            var d = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
            if (row < p.N && k < p.K) {
                d = dq8(p.w_offset + row * p.row_words + (k / QK) * QWORDS, (k % QK) / 8u);
            }
            let s = r * TKP + g * 8u;
            ws[s] = tile(d[0].x); ws[s + 1u] = tile(d[0].y);
            ws[s + 2u] = tile(d[0].z); ws[s + 3u] = tile(d[0].w);
            ws[s + 4u] = tile(d[1].x); ws[s + 5u] = tile(d[1].y);
            ws[s + 6u] = tile(d[1].z); ws[s + 7u] = tile(d[1].w);
        }
        // X slice: TM tokens x TK
        for (var i = lid; i < TM * TK; i += 64u) {
            let mm = i / TK;
            let kk = i % TK;
            var v = 0.0;
            if (m0 + mm < p.M && k0 + kk < p.K) { v = x[(m0 + mm) * p.x_stride + k0 + kk]; }
            xs[mm * TKP + kk] = tile(v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f32>(vec4<tile>(ws[(tx * 4u) * TKP + kk], ws[(tx * 4u + 1u) * TKP + kk],
                                         ws[(tx * 4u + 2u) * TKP + kk], ws[(tx * 4u + 3u) * TKP + kk]));
            for (var i = 0u; i < 4u; i++) {
                acc[i] += f32(xs[(ty * 4u + i) * TKP + kk]) * b;
            }
        }
        workgroupBarrier();
    }
    store_tile(n0, m0, tx, ty, acc);
}
