// Shared by the weight-product kernels (matvec*.wgsl, matmul*.wgsl): their uniform parameters,
// the weight and output bindings, and the tiled kernels' epilogue. Concatenated after the weight
// type's `dq8` fragment; then come the activation binding (x_f32.wgsl, or the kernel's own) and
// the kernel (see `src/ops/matmul.rs`).

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


// The tiled matmuls' epilogue (matmul.wgsl, matmul_q16.wgsl): thread (tx, ty) of the tile at rows
// n0.., tokens m0.. writes acc[i][j], token m0 + ty*4 + i and row n0 + tx*4 + j, into y (or adds
// it, with p.accumulate), skipping those past M and N.
fn store_tile(n0: u32, m0: u32, tx: u32, ty: u32, acc: array<vec4<f32>, 4>) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty * 4u + i;
        if (m >= p.M) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx * 4u + j;
            if (n >= p.N) { continue; }
            let yi = m * p.y_stride + p.y_offset + n;
            if (p.accumulate != 0u) { y[yi] += acc[i][j]; } else { y[yi] = acc[i][j]; }
        }
    }
}
