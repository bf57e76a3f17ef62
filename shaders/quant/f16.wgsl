// F16 weights (flint GPU layout, src/ops/quant.rs): a block is 8 halves in 4 words, element 2i in
// the low half of word i; rows zero-padded to a multiple of 8 elements.
const QK: u32 = 8u;
const QWORDS: u32 = 4u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, QK/8), so always 0 here
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let b = base + 4u * j;
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(w[b]), unpack2x16float(w[b + 1u])),
        vec4<f32>(unpack2x16float(w[b + 2u]), unpack2x16float(w[b + 3u])));
}
