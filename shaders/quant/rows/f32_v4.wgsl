// F32 weights for matmul_rows.wgsl, read as 16-byte loads: the same blocks as
// shaders/quant/f32.wgsl (8 consecutive f32, rows zero-padded to a multiple of 8) through the
// weight's vec4<u32> view, so each lane of a CPU driver gathers 2 vectors per 8 weights instead of
// 8 words. Needs every row to start at a multiple of 4 words (src/ops/matmul.rs checks).
const QK: u32 = 8u;
const QWORDS: u32 = 8u;

@group(0) @binding(7) var<storage, read> wv4: array<vec4<u32>>;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, QK/8), so always 0 here
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let b = (base + 8u * j) / 4u;
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(wv4[b]), bitcast<vec4<f32>>(wv4[b + 1u]));
}
