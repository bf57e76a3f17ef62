// Shared by the weight-product kernels (matvec*.wgsl, matmul.wgsl): their uniform parameters and
// the weight and output bindings. Concatenated after the weight type's `dq8` fragment; then comes
// the activation binding (x_f32.wgsl, or the kernel's own) and the kernel (see `src/ops/matmul.rs`).

struct Params {
    K: u32,          // row length (elements)
    N: u32,          // rows in this weight part
    M: u32,          // tokens
    row_words: u32,  // u32 words per weight row
    x_stride: u32,   // floats between tokens in x
    y_stride: u32,   // floats between tokens in y
    y_offset: u32,   // first output column of this part
    accumulate: u32, // 1: y += W x (fused residual add)
    w_offset: u32,   // word of w where row 0 starts (a weight inside a fused buffer)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

