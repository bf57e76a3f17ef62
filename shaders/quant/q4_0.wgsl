// Q4_0 (ggml-common.h block_q4_0: d f16, 32 4-bit quants; value = d * (q - 8)), in flint's GPU
// layout (src/ops/quant.rs): word 0 = d (low half); word 1 + j = quants of elements 8j..8j+8,
// element 8j+i in bits 4i..4i+4.
const QK: u32 = 32u;
const QWORDS: u32 = 5u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 4)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let d = unpack2x16float(w[base]).x;
    let q = vec4<u32>(w[base + 1u + j]);
    let lo = vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
    let hi = vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
    return array<vec4<f32>, 2>((lo - 8.0) * d, (hi - 8.0) * d);
}
