// Q5_0 (ggml-common.h block_q5_0: d f16, 32 5-bit quants; value = d * (q - 16)), in flint's GPU
// layout (src/ops/quant.rs): word 0 = d (low half); word 1 = 5th bits, bit e for element e (GGUF's
// qh as a little-endian u32); word 2 + j = low 4 bits of elements 8j..8j+8, element 8j+i in bits 4i.
const QK: u32 = 32u;
const QWORDS: u32 = 6u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 4)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let d = unpack2x16float(w[base]).x;
    let h = vec4<u32>(w[base + 1u] >> (8u * j));
    let q = vec4<u32>(w[base + 2u + j]);
    let lo = ((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    let hi = ((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    return array<vec4<f32>, 2>((vec4<f32>(lo) - 16.0) * d, (vec4<f32>(hi) - 16.0) * d);
}
