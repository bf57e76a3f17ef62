// BF16 weights (flint GPU layout, src/ops/quant.rs): a block is 8 bfloat16 in 4 words, element 2i in
// the low half of word i; rows zero-padded to a multiple of 8 elements. A bf16 is the top half of an f32.
const QK: u32 = 8u;
const QWORDS: u32 = 4u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, QK/8), so always 0 here
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let b = base + 4u * j;
    let v0 = vec4<u32>(w[b], w[b], w[b + 1u], w[b + 1u]);
    let v1 = vec4<u32>(w[b + 2u], w[b + 2u], w[b + 3u], w[b + 3u]);
    let sh = vec4<u32>(16u, 0u, 16u, 0u);
    let hi = vec4<u32>(0xffff0000u);
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>((v0 << sh) & hi), bitcast<vec4<f32>>((v1 << sh) & hi));
}
