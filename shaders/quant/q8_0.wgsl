// Q8_0 (ggml-common.h block_q8_0: d f16, 32 int8 quants; value = d * q), in flint's GPU layout
// (src/ops/quant.rs): word 0 = d (low half); words 1..9 = the 32 int8 quants, element 4k+i in byte i
// of word 1 + k (GGUF's bytes, moved to a word boundary).
const QK: u32 = 32u;
const QWORDS: u32 = 9u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 4)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let d = unpack2x16float(w[base]).x;
    let b = base + 1u + 2u * j;
    let sh = vec4<u32>(24u, 16u, 8u, 0u);
    // move byte i to the top, then shift back arithmetically: sign-extended int8
    let q0 = (vec4<i32>(bitcast<i32>(w[b])) << sh) >> vec4<u32>(24u);
    let q1 = (vec4<i32>(bitcast<i32>(w[b + 1u])) << sh) >> vec4<u32>(24u);
    return array<vec4<f32>, 2>(vec4<f32>(q0) * d, vec4<f32>(q1) * d);
}
