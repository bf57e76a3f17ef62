// Y[m, n] (+)= sum_k W[n, k] * X[m, k] for many tokens at once: matmul.wgsl's register-tiled
// prefill product with 16-bit tiles that need no shader-f16 (`--matmul q16`). Each 32-element
// slice of a weight row (dequantized by the type's `dq8` fragment) and of a token's activations is
// staged in workgroup memory as signed 16-bit fractions of that slice's largest magnitude
// (pack2x16snorm, two per word), with the f32 magnitude beside it: half the workgroup memory and
// the bytes moved through it of f32 tiles, like f16 tiles, but a slice's large elements, which
// dominate the dot products, keep 15 bits instead of f16's 11. The same scheme as the q16 KV
// cache (shaders/kv_store_q16.wgsl; Q8_0's absmax-per-32 block, ggml-common.h, at 16 bits).
// Products and sums are f32; a slice's partial sums are scaled once, by both slices' magnitudes.
// The weight type's fragment, shaders/common/matmul_io.wgsl and x_f32.wgsl are concatenated in
// front.

const TN: u32 = 32u; // weight rows per tile
const TM: u32 = 32u; // tokens per tile
const TK: u32 = 32u; // depth per step: one scaled slice
const TKW: u32 = 17u; // words per staged slice: 16 pairs + 1 of padding
var<workgroup> ws: array<u32, 544>; // TN * TKW
var<workgroup> xs: array<u32, 544>; // TM * TKW
var<workgroup> wsc: array<f32, 32>; // each staged weight slice's largest magnitude
var<workgroup> xsc: array<f32, 32>; // each staged activation slice's largest magnitude

// Stages 32 values as 16 pairs of 16-bit fractions of their largest magnitude at words
// dst .. dst + 16 of `ws` (`to_w`) or `xs`; returns that magnitude (0 for a zero slice).
fn stage(v: array<vec4<f32>, 8>, to_w: bool, dst: u32) -> f32 {
    var mx = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) { mx = max(mx, abs(v[i])); }
    let s = max(max(mx.x, mx.y), max(mx.z, mx.w));
    var inv = 0.0;
    if (s > 0.0) { inv = 1.0 / s; }
    for (var i = 0u; i < 8u; i++) {
        let a = v[i] * inv;
        let lo = pack2x16snorm(a.xy);
        let hi = pack2x16snorm(a.zw);
        if (to_w) { ws[dst + 2u * i] = lo; ws[dst + 2u * i + 1u] = hi; }
        else { xs[dst + 2u * i] = lo; xs[dst + 2u * i + 1u] = hi; }
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TN;
    let m0 = wid.y * TM;
    let tx = lid % 8u; // rows tx*4 .. tx*4+3
    let ty = lid / 8u; // tokens ty*4 .. ty*4+3
    var acc: array<vec4<f32>, 4>; // acc[i][j]: token ty*4+i, row tx*4+j
    for (var k0 = 0u; k0 < p.K; k0 += TK) {
        // invocations 0..31 stage weight row n0 + lid's slice, 32..63 token m0 + lid - 32's
        let r = lid % 32u;
        var v: array<vec4<f32>, 8>;
        if (lid < 32u) {
            let row = n0 + r;
            for (var g = 0u; g < 4u; g++) {
                let k = k0 + g * 8u;
                var d = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
                if (row < p.N && k < p.K) {
                    d = dq8(p.w_offset + row * p.row_words + (k / QK) * QWORDS, (k % QK) / 8u);
                }
                v[2u * g] = d[0];
                v[2u * g + 1u] = d[1];
            }
            wsc[r] = stage(v, true, r * TKW);
        } else {
            for (var g = 0u; g < 4u; g++) {
                var d = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
                if (m0 + r < p.M && k0 + g * 8u < p.K) { d = x8((m0 + r) * p.x_stride, k0 + g * 8u); }
                v[2u * g] = d[0];
                v[2u * g + 1u] = d[1];
            }
            xsc[r] = stage(v, false, r * TKW);
        }
        workgroupBarrier();
        // this slice's sums in units of the two magnitudes; zeroed explicitly: Dawn on SwiftShader
        // kept a loop-scoped `var part: array<...>;` from one iteration to the next, which WGSL
        // zero-initializes at each declaration (greedy ids went wrong; naga on lavapipe was right)
        var part = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
        for (var kw = 0u; kw < TK / 2u; kw++) {
            let w0 = unpack2x16snorm(ws[(tx * 4u) * TKW + kw]);
            let w1 = unpack2x16snorm(ws[(tx * 4u + 1u) * TKW + kw]);
            let w2 = unpack2x16snorm(ws[(tx * 4u + 2u) * TKW + kw]);
            let w3 = unpack2x16snorm(ws[(tx * 4u + 3u) * TKW + kw]);
            let b0 = vec4<f32>(w0.x, w1.x, w2.x, w3.x); // depth 2kw of the four rows
            let b1 = vec4<f32>(w0.y, w1.y, w2.y, w3.y); // depth 2kw + 1
            for (var i = 0u; i < 4u; i++) {
                let a = unpack2x16snorm(xs[(ty * 4u + i) * TKW + kw]);
                part[i] += a.x * b0 + a.y * b1;
            }
        }
        let wscale = vec4<f32>(wsc[tx * 4u], wsc[tx * 4u + 1u], wsc[tx * 4u + 2u], wsc[tx * 4u + 3u]);
        for (var i = 0u; i < 4u; i++) { acc[i] += part[i] * (xsc[ty * 4u + i] * wscale); }
        workgroupBarrier();
    }
    store_tile(n0, m0, tx, ty, acc);
}
