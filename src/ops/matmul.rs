//! Y = X Wᵀ over a weight that stays quantized on the GPU (dequantization fused into the kernel).
//!
//! Kernels: `shaders/matvec.wgsl` (few tokens: decode; subgroup twin `matvec_sg.wgsl`) and
//! `shaders/matmul.wgsl` (many tokens: prefill, register-tiled). Both take the weight type's `dq8`
//! fragment from `shaders/quant/<type>.wgsl`.

use crate::error::{Error, Result};
use crate::format::DType;
use crate::gpu::{Gpu, Weight};

/// Uniform parameters shared by the matvec and matmul kernels (`struct Params` in the WGSL).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    n: u32,
    m: u32,
    row_words: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    accumulate: u32,
}

/// Up to this many tokens use the matrix-vector kernel; more use the tiled matrix-matrix kernel.
pub const MATVEC_MAX_TOKENS: usize = 4;

/// Rows and tokens per workgroup tile of `matmul.wgsl` (its `TN`, `TM`).
const MATMUL_TILE: u32 = 32;

/// Rows per workgroup of the baseline `matvec.wgsl` (its `ROWS`).
const MATVEC_ROWS: u32 = 8;

/// Rows (= invocations) per workgroup of `matvec_rows.wgsl` (its `WG`).
const MATVEC_ROWS_WG: u32 = 16;

/// The WGSL `dq8` fragment that decodes a weight type (see `src/ops/quant.rs` for the layouts).
pub fn dq8_fragment(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => include_str!("../../shaders/quant/f32.wgsl"),
        DType::F16 => include_str!("../../shaders/quant/f16.wgsl"),
        DType::BF16 => include_str!("../../shaders/quant/bf16.wgsl"),
        DType::Q4_0 => include_str!("../../shaders/quant/q4_0.wgsl"),
        DType::Q4_1 => include_str!("../../shaders/quant/q4_1.wgsl"),
        DType::Q5_0 => include_str!("../../shaders/quant/q5_0.wgsl"),
        DType::Q5_1 => include_str!("../../shaders/quant/q5_1.wgsl"),
        DType::Q8_0 => include_str!("../../shaders/quant/q8_0.wgsl"),
        DType::Q4_K => include_str!("../../shaders/quant/q4_k.wgsl"),
        DType::Q5_K => include_str!("../../shaders/quant/q5_k.wgsl"),
        DType::Q6_K => include_str!("../../shaders/quant/q6_k.wgsl"),
    }
}

/// The three weight-product kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `matvec.wgsl`: few tokens, shared-memory reduction (every adapter).
    Matvec,
    /// `matvec_sg.wgsl`: few tokens, subgroup reduction.
    MatvecSubgroup,
    /// `matmul.wgsl`: many tokens, register-tiled.
    Matmul,
    /// `matvec_rows.wgsl`: few tokens, one invocation per row (CPU-type adapters).
    MatvecRows,
}

impl Variant {
    /// Every variant, for validation and listings.
    pub const ALL: [Variant; 4] = [
        Variant::Matvec,
        Variant::MatvecSubgroup,
        Variant::Matmul,
        Variant::MatvecRows,
    ];

    /// The variant for a product of `m` tokens on this GPU.
    pub fn choose(gpu: &Gpu, m: usize) -> Variant {
        if m > MATVEC_MAX_TOKENS {
            Variant::Matmul
        } else if gpu.caps.rows_matvec {
            Variant::MatvecRows
        } else if gpu.caps.subgroup_matvec {
            Variant::MatvecSubgroup
        } else {
            Variant::Matvec
        }
    }
}

/// The pipeline key and the WGSL sources (concatenated in this order) of a weight product.
pub fn sources(dtype: DType, variant: Variant) -> (String, Vec<&'static str>) {
    let (name, kernel) = match variant {
        Variant::Matvec => ("matvec", include_str!("../../shaders/matvec.wgsl")),
        Variant::MatvecRows => (
            "matvec_rows",
            include_str!("../../shaders/matvec_rows.wgsl"),
        ),
        Variant::MatvecSubgroup => ("matvec_sg", include_str!("../../shaders/matvec_sg.wgsl")),
        Variant::Matmul => ("matmul", include_str!("../../shaders/matmul.wgsl")),
    };
    let key = format!("{name}.{}", dtype.name().to_ascii_lowercase());
    let mut srcs = vec![
        dq8_fragment(dtype),
        include_str!("../../shaders/common/matmul_io.wgsl"),
    ];
    if variant != Variant::MatvecRows {
        srcs.push(include_str!("../../shaders/common/x_f32.wgsl")); // the rows kernel reads vec4s
    }
    srcs.push(kernel);
    (key, srcs)
}

/// `y[m, :] (+)= W x[m, :]` for `m` tokens; x has `w.cols` floats per token, y has `w.rows`.
pub struct MatMul<'a> {
    pub w: &'a Weight,
    pub m: usize,
    /// Add into y instead of overwriting it (fuses the residual add into output projections).
    pub accumulate: bool,
    /// The token count that picks the kernel: the most tokens any one sequence has in this pass
    /// (`m` for a single sequence). With several sequences decoding one token each, every row
    /// then goes through the same kernel as when its sequence runs alone, so batching does not
    /// change results.
    pub variant_m: usize,
}

impl MatMul<'_> {
    /// Records the product; `x` and `y` must hold at least `m` tokens.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        let w = self.w;
        if self.m == 0 {
            return Ok(());
        }
        let need_x = (self.m * w.cols * 4) as u64;
        let need_y = (self.m * w.rows * 4) as u64;
        if x.size() < need_x || y.size() < need_y {
            return Err(Error::InvalidArgument(format!(
                "matmul `{}`: buffers too small for {} tokens (x {} < {need_x} or y {} < {need_y})",
                w.name,
                self.m,
                x.size(),
                y.size()
            )));
        }
        let mut variant = Variant::choose(gpu, self.variant_m.clamp(1, self.m));
        if variant == Variant::MatvecRows && !w.cols.is_multiple_of(8) {
            variant = Variant::Matvec; // the rows kernel reads x as whole vec4 pairs
        }
        let (key, srcs) = sources(w.dtype, variant);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        for part in &w.parts {
            let params = Params {
                k: w.cols as u32,
                n: part.rows as u32,
                m: self.m as u32,
                row_words: w.row_words as u32,
                x_stride: w.cols as u32,
                y_stride: w.rows as u32,
                y_offset: part.row0 as u32,
                accumulate: self.accumulate as u32,
            };
            let groups = if variant != Variant::Matmul {
                let rows_per_group = match variant {
                    Variant::MatvecSubgroup => 1,
                    Variant::MatvecRows => MATVEC_ROWS_WG,
                    _ => MATVEC_ROWS,
                };
                let g = gpu.grid((part.rows as u32).div_ceil(rows_per_group));
                [g[0], g[1], self.m as u32]
            } else {
                [
                    (part.rows as u32).div_ceil(MATMUL_TILE),
                    (self.m as u32).div_ceil(MATMUL_TILE),
                    1,
                ]
            };
            gpu.dispatch(
                enc,
                &pipeline,
                bytemuck::bytes_of(&params),
                &[&part.buffer, x, y],
                groups,
            );
        }
        Ok(())
    }
}

/// CPU reference: `y[m, n] = sum_k w[n, k] * x[m, k]` with `w` dequantized to f32 (`n x k`).
pub fn matmul_cpu(w: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for t in 0..m {
        let xr = &x[t * k..(t + 1) * k];
        for r in 0..n {
            let wr = &w[r * k..(r + 1) * k];
            y[t * n + r] = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
        }
    }
    y
}
