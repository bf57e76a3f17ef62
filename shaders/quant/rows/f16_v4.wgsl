// F16 weights for matmul_rows.wgsl, read as 16-byte loads: the same blocks as
// shaders/quant/f16.wgsl (8 halves in 4 words, element 2i in the low half of word i) through the
// weight's vec4<u32> view, one gathered vector per 8 weights instead of 4 words. Needs every row
// to start at a multiple of 4 words (src/ops/matmul.rs checks).
const QK: u32 = 8u;
const QWORDS: u32 = 4u;

@group(0) @binding(7) var<storage, read> wv4: array<vec4<u32>>;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, QK/8), so always 0 here
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let v = wv4[(base + 4u * j) / 4u];
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
        vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
}
