// Pairs of weight rows through one decode product with the RMSNorm in front:
// s = W (x[m] / rms(x[m]) * g) for token m = workgroup z, where rms(x) = sqrt(mean(x^2) + eps).
// GPU kernel layout, baseline reduction (matvec.wgsl's: no subgroups, no f16): each 64-thread
// workgroup computes PAIRS pairs of rows with TPR threads per row and hands each pair's two sums
// to the epilogue fragment concatenated in front of this file, which declares `Params` (K,
// row_words, w_offset, x_stride, eps, pairs ...), its outputs, `pair_rows(j)` (the two weight
// rows of pair j) and `pair_store(j, m, a, b)`: pairs_qkv.wgsl (Q/K/V, RoPE, the KV-cache rows)
// and pairs_glu.wgsl (gate/up and the activation). Each workgroup sums the squares of x[m]
// itself, so no norm pass runs and x is read where the products read it anyway. In front of the
// fragment: the weight type's `dq8` (shaders/quant/*.wgsl).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read> norm_w: array<f32>;

const TPR: u32 = 8u;   // threads per row
const PAIRS: u32 = 4u; // pairs per workgroup (2 * PAIRS * TPR = 64)
var<workgroup> red: array<f32, 64>;

// (x .* norm_w)[k .. k + 8] of the token whose x starts at x[base], zeros past K
fn xg8(base: u32, k: u32) -> array<vec4<f32>, 2> {
    let i = base + k;
    if (k + 8u <= p.K) {
        return array<vec4<f32>, 2>(
            vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]) *
                vec4<f32>(norm_w[k], norm_w[k + 1u], norm_w[k + 2u], norm_w[k + 3u]),
            vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]) *
                vec4<f32>(norm_w[k + 4u], norm_w[k + 5u], norm_w[k + 6u], norm_w[k + 7u]));
    }
    var v = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var t = 0u; t < 8u; t++) {
        if (k + t < p.K) { v[t] = x[i + t] * norm_w[k + t]; }
    }
    return array<vec4<f32>, 2>(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let m = wid.z;
    let xbase = m * p.x_stride;
    // the norm's scale of token m (rmsnorm.wgsl's sum, per workgroup)
    var ss = 0.0;
    for (var i = lid; i < p.K; i += 64u) {
        let v = x[xbase + i];
        ss += v * v;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let scale = inverseSqrt(red[0] / f32(p.K) + p.eps);
    workgroupBarrier(); // every thread has read red[0] before the products reuse it

    let slot = lid / TPR; // row slot: pair slot / 2, first or second row
    let t = lid % TPR;
    let j = (wid.x + wid.y * nwg.x) * PAIRS + slot / 2u;
    var acc = 0.0;
    if (j < p.pairs) {
        let rows = pair_rows(j);
        var row = rows.x;
        if ((slot & 1u) == 1u) { row = rows.y; }
        let rbase = p.w_offset + row * p.row_words;
        let groups = (p.K + 7u) / 8u;
        for (var g = t; g < groups; g += TPR) {
            let k = g * 8u;
            let d = dq8(rbase + (k / QK) * QWORDS, (k % QK) / 8u);
            let xv = xg8(xbase, k);
            acc += dot(d[0], xv[0]) + dot(d[1], xv[1]);
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    if (j < p.pairs && lid % (2u * TPR) == 0u) {
        pair_store(j, m, red[lid] * scale, red[lid + TPR] * scale);
    }
}
