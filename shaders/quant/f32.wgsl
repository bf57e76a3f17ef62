// F32 weights (flint GPU layout, src/ops/quant.rs): a block is 8 consecutive f32, rows zero-padded
// to a multiple of 8 elements.
const QK: u32 = 8u;
const QWORDS: u32 = 8u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, QK/8), so always 0 here
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let b = base + 8u * j;
    return array<vec4<f32>, 2>(
        bitcast<vec4<f32>>(vec4<u32>(w[b], w[b + 1u], w[b + 2u], w[b + 3u])),
        bitcast<vec4<f32>>(vec4<u32>(w[b + 4u], w[b + 5u], w[b + 6u], w[b + 7u])));
}
