// Shared by the weight-product kernels (matvec.wgsl, matvec_sg.wgsl, matmul.wgsl): their uniform
// parameters and bindings, and the activation loader. Concatenated after the weight type's `dq8`
// fragment and before the kernel (see `src/ops/matmul.rs`).

struct Params {
    K: u32,          // row length (elements)
    N: u32,          // rows in this weight part
    M: u32,          // tokens
    row_words: u32,  // u32 words per weight row
    x_stride: u32,   // floats between tokens in x
    y_stride: u32,   // floats between tokens in y
    y_offset: u32,   // first output column of this part
    accumulate: u32, // 1: y += W x (fused residual add)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// x[base + k .. base + k + 8] as two vec4s, zeros past K
fn x8(base: u32, k: u32) -> array<vec4<f32>, 2> {
    let i = base + k;
    if (k + 8u <= p.K) {
        return array<vec4<f32>, 2>(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]),
                                   vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]));
    }
    var v = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var t = 0u; t < 8u; t++) {
        if (k + t < p.K) { v[t] = x[i + t]; }
    }
    return array<vec4<f32>, 2>(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}
