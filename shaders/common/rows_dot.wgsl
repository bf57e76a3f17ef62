// The row walk of the one-row-per-invocation kernels for CPU-type adapters (matvec_rows.wgsl,
// qkv_rows.wgsl, glu_rows.wgsl): W[row] . x[token] with W decoded by the type's `dq8` fragment and
// x read as vec4s at indices every invocation of the workgroup shares. CPU drivers run invocations
// as SIMD lanes, so those x loads are one broadcast instead of a gather per lane. Needs K % QK == 0
// (and so K % 8 == 0); the kernel's Params provides K.

@group(0) @binding(2) var<storage, read> xv4: array<vec4<f32>>;

// (the group decoders' run sums: shaders/quant/rows/nibbles.wgsl; nothing to prepare here)
fn x_prologue(lid: u32, xb: u32) {}

// sum_k W[k] x[k] for the row whose first word is w[rbase] and the token whose x starts at xv4[xb]
fn row_dot(rbase: u32, xb: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    for (var b = 0u; b < p.K / QK; b++) {
        let base = rbase + b * QWORDS;
        let xo = xb + b * (QK / 4u);
        for (var j = 0u; j < QK / 8u; j++) {
            let d = dq8(base, j);
            acc += d[0] * xv4[xo + 2u * j] + d[1] * xv4[xo + 2u * j + 1u];
        }
    }
    return acc.x + acc.y + acc.z + acc.w;
}
