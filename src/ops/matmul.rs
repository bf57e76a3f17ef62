//! Y = X Wᵀ over a weight that stays quantized on the GPU (dequantization fused into the kernel).
//!
//! Kernels, in two layouts (see `Caps::rows_kernels`):
//! - GPU layout: `shaders/matvec.wgsl` (few tokens: decode; subgroup twin `matvec_sg.wgsl`) and
//!   `shaders/matmul.wgsl` (many tokens: prefill, register-tiled);
//! - CPU layout (one weight row per invocation): `shaders/matvec_rows.wgsl`,
//!   `shaders/matmul_rows.wgsl` (8 tokens per workgroup), and for decode on weights fused at load
//!   `shaders/qkv_rows.wgsl` and `shaders/glu_rows.wgsl`.
//!
//! All take the weight type's `dq8` fragment from `shaders/quant/<type>.wgsl`; the CPU-layout
//! decode kernels use the type's vectorised group decoder from `shaders/quant/rows/` where it has
//! one.

use crate::error::{Error, Result};
use crate::format::DType;
use crate::gpu::{Gpu, Recorder, TileType, Weight};
use crate::ops::rope::{AngleParams, RopeConfig, RopeMode};
use crate::ops::{positions_or, Positions, POSITIONS_BINDING};

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
    w_offset: u32,
}

/// Up to this many tokens use the matrix-vector kernel; more use the tiled matrix-matrix kernel.
pub const MATVEC_MAX_TOKENS: usize = 4;

/// Rows and tokens per workgroup tile of `matmul.wgsl` (its `TN`, `TM`).
const MATMUL_TILE: u32 = 32;

/// Rows per workgroup of the baseline `matvec.wgsl` (its `ROWS`).
const MATVEC_ROWS: u32 = 8;

/// Rows (= invocations) per workgroup of the rows kernels (`matvec_rows.wgsl`, `matmul_rows.wgsl`,
/// `qkv_rows.wgsl`, `glu_rows.wgsl`: their `WG`).
const MATVEC_ROWS_WG: u32 = 16;

/// Tokens per workgroup of `matmul_rows.wgsl` (its `T`).
const MATMUL_ROWS_TOKENS: u32 = 8;

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
    /// `matmul_rows.wgsl`: many tokens, one invocation per row and tiles of tokens (CPU-type
    /// adapters).
    MatmulRows,
}

impl Variant {
    /// Every variant, for validation and listings.
    pub const ALL: [Variant; 5] = [
        Variant::Matvec,
        Variant::MatvecSubgroup,
        Variant::Matmul,
        Variant::MatvecRows,
        Variant::MatmulRows,
    ];

    /// The variant for a product of `m` tokens on this GPU.
    pub fn choose(gpu: &Gpu, m: usize) -> Variant {
        if m > MATVEC_MAX_TOKENS {
            match gpu.caps.rows_kernels {
                true => Variant::MatmulRows,
                false => Variant::Matmul,
            }
        } else if gpu.caps.rows_kernels {
            Variant::MatvecRows
        } else if gpu.caps.subgroup_matvec {
            Variant::MatvecSubgroup
        } else {
            Variant::Matvec
        }
    }
}

/// The pipeline key and the WGSL sources (concatenated in this order) of a weight product; `tiles`
/// picks how `matmul.wgsl` stages its operands (the other kernels have no tiles and ignore it):
/// f32 or f16 tiles through `shaders/common/tile_*.wgsl`, 16-bit fixed point in its own kernel,
/// `matmul_q16.wgsl`.
pub fn sources(dtype: DType, variant: Variant, tiles: TileType) -> (String, Vec<&'static str>) {
    let (name, kernel) = match (variant, tiles) {
        (Variant::Matvec, _) => ("matvec", include_str!("../../shaders/matvec.wgsl")),
        (Variant::MatvecRows, _) => (
            "matvec_rows",
            include_str!("../../shaders/matvec_rows.wgsl"),
        ),
        (Variant::MatvecSubgroup, _) => ("matvec_sg", include_str!("../../shaders/matvec_sg.wgsl")),
        (Variant::Matmul, TileType::Q16) => {
            ("matmul_q16", include_str!("../../shaders/matmul_q16.wgsl"))
        }
        (Variant::Matmul, _) => ("matmul", include_str!("../../shaders/matmul.wgsl")),
        (Variant::MatmulRows, _) => (
            "matmul_rows",
            include_str!("../../shaders/matmul_rows.wgsl"),
        ),
    };
    let mut key = format!("{name}.{}", dtype.name().to_ascii_lowercase());
    let mut srcs = vec![];
    match (variant, tiles) {
        (Variant::Matmul, TileType::F32) => {
            srcs.push(include_str!("../../shaders/common/tile_f32.wgsl"))
        }
        (Variant::Matmul, TileType::F16) => {
            srcs.push(include_str!("../../shaders/common/tile_f16.wgsl"));
            key.push_str(".tiles_f16");
        }
        _ => {}
    }
    srcs.extend([
        dq8_fragment(dtype),
        include_str!("../../shaders/common/matmul_io.wgsl"),
    ]);
    match variant {
        Variant::MatvecRows => srcs.extend(row_walk(dtype)),
        Variant::MatmulRows => srcs.push(ROWS_DOT_WGSL), // its x binding; its own loop
        _ => srcs.push(include_str!("../../shaders/common/x_f32.wgsl")),
    }
    srcs.push(kernel);
    (key, srcs)
}

/// The 16-byte-load decoders of the dense types for `matmul_rows.wgsl`
/// (`shaders/quant/rows/f32_v4.wgsl`, `f16_v4.wgsl`): they read the weight only through its vec4
/// view (binding 7), so their rows must start at a multiple of 4 words.
pub fn dense_v4_fragment(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some(include_str!("../../shaders/quant/rows/f32_v4.wgsl")),
        DType::F16 => Some(include_str!("../../shaders/quant/rows/f16_v4.wgsl")),
        _ => None,
    }
}

/// Key and sources of `matmul_rows.wgsl` over a dense type's 16-byte-load decoder.
pub fn matmul_rows_v4_sources(dtype: DType) -> Option<(String, Vec<&'static str>)> {
    let frag = dense_v4_fragment(dtype)?;
    Some((
        format!("matmul_rows.{}.v4", dtype.name().to_ascii_lowercase()),
        vec![
            frag,
            include_str!("../../shaders/common/matmul_io.wgsl"),
            ROWS_DOT_WGSL,
            include_str!("../../shaders/matmul_rows.wgsl"),
        ],
    ))
}

/// The row walk shared by the one-row-per-invocation kernels.
const ROWS_DOT_WGSL: &str = include_str!("../../shaders/common/rows_dot.wgsl");
/// The row walk for types with a vectorised group decoder (binds the weight again at 7).
const ROWS_DOT4_WGSL: &str = include_str!("../../shaders/common/rows_dot4.wgsl");

/// Binding of the weight's second, vec4<u32> view in the rows kernels (`rows_dot4.wgsl`).
const WV4_BINDING: u32 = 7;

/// The vectorised four-block decoder of a weight type for the rows kernels
/// (`shaders/quant/rows/<type>.wgsl`), where one exists; other types decode 8 weights at a time.
pub fn rows_group_fragment(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::Q4_0 => Some(include_str!("../../shaders/quant/rows/q4_0.wgsl")),
        DType::Q4_1 => Some(include_str!("../../shaders/quant/rows/q4_1.wgsl")),
        DType::Q4_K => Some(include_str!("../../shaders/quant/rows/q4_k.wgsl")),
        DType::Q6_K => Some(include_str!("../../shaders/quant/rows/q6_k.wgsl")),
        DType::Q8_0 => Some(include_str!("../../shaders/quant/rows/q8_0.wgsl")),
        _ => None,
    }
}

/// Helpers the 4-bit group decoders share (`shaders/quant/rows/nibbles.wgsl`).
const NIBBLES_WGSL: &str = include_str!("../../shaders/quant/rows/nibbles.wgsl");

/// The row-walk sources of a rows kernel (`row_dot`) for a weight type.
fn row_walk(dtype: DType) -> Vec<&'static str> {
    match rows_group_fragment(dtype) {
        Some(group) => vec![NIBBLES_WGSL, group, ROWS_DOT4_WGSL],
        None => vec![ROWS_DOT_WGSL],
    }
}

/// The buffers of a rows-kernel dispatch: `buffers` at bindings 1.., and the weight again as
/// vec4s where the type's row walk reads it so.
fn rows_bindings<'a>(dtype: DType, buffers: &[&'a wgpu::Buffer]) -> Vec<(u32, &'a wgpu::Buffer)> {
    let mut v = crate::gpu::numbered(buffers);
    if rows_group_fragment(dtype).is_some() {
        v.push((WV4_BINDING, buffers[0]));
    }
    v
}

/// Pipeline key and sources of `qkv_rows.wgsl` for a weight type.
pub fn qkv_rows_sources(dtype: DType) -> (String, Vec<&'static str>) {
    (
        format!("qkv_rows.{}", dtype.name().to_ascii_lowercase()),
        [dq8_fragment(dtype)]
            .into_iter()
            .chain(row_walk(dtype))
            .chain([include_str!("../../shaders/qkv_rows.wgsl")])
            .collect(),
    )
}

/// Pipeline key and sources of `qkv_rope_rows.wgsl` (qkv_rows.wgsl with RoPE in the epilogue).
pub fn qkv_rope_rows_sources(dtype: DType) -> (String, Vec<&'static str>) {
    (
        format!("qkv_rope_rows.{}", dtype.name().to_ascii_lowercase()),
        [dq8_fragment(dtype)]
            .into_iter()
            .chain(row_walk(dtype))
            .chain([
                crate::ops::rope::ANGLE_WGSL,
                include_str!("../../shaders/qkv_rope_rows.wgsl"),
            ])
            .collect(),
    )
}

/// Pipeline key and sources of `glu_rows.wgsl` for a weight type.
pub fn glu_rows_sources(dtype: DType) -> (String, Vec<&'static str>) {
    (
        format!("glu_rows.{}", dtype.name().to_ascii_lowercase()),
        [dq8_fragment(dtype), crate::ops::elementwise::ACT_WGSL]
            .into_iter()
            .chain(row_walk(dtype))
            .chain([include_str!("../../shaders/glu_rows.wgsl")])
            .collect(),
    )
}

/// Whether the fused one-row-per-invocation kernels (`qkv_rows.wgsl`, `glu_rows.wgsl`) apply to a
/// product of these weights: the adapter runs the rows kernel for this many tokens, and the
/// weights lie one after the other in one buffer with whole blocks per row.
pub fn fused_rows_apply(gpu: &Gpu, variant_m: usize, ws: &[&Weight]) -> bool {
    gpu.caps.fused_rows
        && Variant::choose(gpu, variant_m.max(1)) == Variant::MatvecRows
        && fused_layout(ws)
}

/// One buffer, one after the other, whole blocks per row: what the fused rows kernels read.
pub(crate) fn fused_layout(ws: &[&Weight]) -> bool {
    Weight::contiguous(ws) && ws[0].cols.is_multiple_of(ws[0].dtype.block_elems().max(8))
}

/// Checks the x and output buffers of a fused rows kernel.
pub(crate) fn check_fused(
    name: &str,
    m: usize,
    x: (&wgpu::Buffer, usize),
    ys: &[(&wgpu::Buffer, usize)],
) -> Result<()> {
    let small =
        x.0.size() < (m * x.1 * 4) as u64 || ys.iter().any(|(b, n)| b.size() < (m * n * 4) as u64);
    if small {
        return Err(Error::InvalidArgument(format!(
            "{name}: buffers too small for {m} tokens"
        )));
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QkvParams {
    k: u32,
    n: u32,
    nq: u32,
    nk: u32,
    row_words: u32,
    w_offset: u32,
    x_stride: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QkvRopeParams {
    qkv: QkvParams,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    /// The sequence's entry in the positions buffer, which holds `pos0`.
    slot: u32,
    kv_ring: u32,
    has_ff: u32,
    angle: AngleParams,
}

/// The RoPE epilogue of [`QkvRows`] (`shaders/qkv_rope_rows.wgsl`): q and k leave the kernel
/// rotated for positions `pos0..pos0 + m` (one sequence), as [`crate::ops::rope::Rope`] would
/// rotate them, and keys/values can go straight into a KV cache.
pub struct QkvRope<'a> {
    pub cfg: &'a RopeConfig,
    pub head_dim: usize,
    pub pos0: usize,
    /// Where the kernel reads `pos0` (which must be what it holds): a buffer written once per
    /// step keeps the dispatch's bind group the same from one decode step to the next. `None`:
    /// a buffer holding `pos0` is made for this dispatch.
    pub positions: Option<Positions<'a>>,
    /// Frequency divisors (`n_rot / 2` floats), if the model has them.
    pub factors: Option<&'a wgpu::Buffer>,
    /// Bound in place of absent factors.
    pub dummy: &'a wgpu::Buffer,
    /// Keys and values of token `m` go to row `(pos0 + m) % kv_ring` of the k and v outputs (an
    /// f32 KV cache of `kv_ring` rows); 0 = row `m` (scratch).
    pub kv_ring: usize,
}

impl QkvRope<'_> {
    /// The shapes a fused rotation needs (`kernel` names the kernel in the error): even rotary
    /// dims and head_dim, n_rot <= head_dim, and q/k/v stacks of whole heads.
    pub(crate) fn check(&self, kernel: &str, rows: [usize; 3]) -> Result<()> {
        let (n_rot, hd) = (self.cfg.n_rot, self.head_dim);
        let whole_heads = rows.iter().all(|r| hd > 0 && r.is_multiple_of(hd));
        if n_rot == 0
            || !n_rot.is_multiple_of(2)
            || n_rot > hd
            || !hd.is_multiple_of(2)
            || !whole_heads
        {
            return Err(Error::InvalidArgument(format!(
                "{kernel}: rotary dims {n_rot} and head_dim {hd} must be even, n_rot <= head_dim, \
                 and q/k/v whole heads ({}, {}, {} rows)",
                rows[0], rows[1], rows[2]
            )));
        }
        Ok(())
    }
}

/// `q, k, v = Wq x, Wk x, Wv x` for `m` tokens in one dispatch
/// (`shaders/qkv_rows.wgsl`), for weights [`Weight::fuse`] put in one buffer; see
/// [`fused_rows_apply`]. With `rope`, q and k are also rotated (`shaders/qkv_rope_rows.wgsl`).
pub struct QkvRows<'a> {
    pub w: [&'a Weight; 3],
    pub m: usize,
    pub rope: Option<QkvRope<'a>>,
}

impl QkvRows<'_> {
    /// The stack's shape, as both kernels' uniforms begin.
    fn params(&self) -> QkvParams {
        let [wq, wk, wv] = self.w;
        QkvParams {
            k: wq.cols as u32,
            n: (wq.rows + wk.rows + wv.rows) as u32,
            nq: wq.rows as u32,
            nk: wk.rows as u32,
            row_words: wq.row_words as u32,
            w_offset: wq.parts[0].word0 as u32,
            x_stride: wq.cols as u32,
            _pad: 0,
        }
    }

    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        out: [&wgpu::Buffer; 3],
    ) -> Result<()> {
        let [wq, wk, wv] = self.w;
        if !fused_layout(&self.w) {
            return Err(Error::InvalidArgument(format!(
                "qkv_rows: `{}`, `{}`, `{}` are not one fused buffer for the rows kernel",
                wq.name, wk.name, wv.name
            )));
        }
        check_fused(
            "qkv_rows",
            self.m,
            (x, wq.cols),
            &[(out[0], wq.rows), (out[1], wk.rows), (out[2], wv.rows)],
        )?;
        if let Some(rope) = &self.rope {
            return self.encode_rope(gpu, enc, x, out, rope);
        }
        let (key, srcs) = qkv_rows_sources(wq.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        let n = wq.rows + wk.rows + wv.rows;
        let params = self.params();
        let g = gpu.grid((n as u32).div_ceil(MATVEC_ROWS_WG));
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&params),
            &rows_bindings(wq.dtype, &[&wq.parts[0].buffer, x, out[0], out[1], out[2]]),
            [g[0], g[1], self.m as u32],
        );
        Ok(())
    }

    fn encode_rope(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        out: [&wgpu::Buffer; 3],
        rope: &QkvRope,
    ) -> Result<()> {
        let [wq, wk, wv] = self.w;
        let (c, hd) = (rope.cfg, rope.head_dim);
        rope.check("qkv_rope_rows", [wq.rows, wk.rows, wv.rows])?;
        if rope.kv_ring > 0 {
            for (buf, rows) in [(out[1], wk.rows), (out[2], wv.rows)] {
                if buf.size() < (rope.kv_ring * rows * 4) as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "qkv_rope_rows: a KV cache of {} rows does not fit its buffer",
                        rope.kv_ring
                    )));
                }
            }
        }
        let n = wq.rows + wk.rows + wv.rows;
        let (pos_buf, slot) = positions_or(gpu, rope.positions, rope.pos0)?;
        let params = QkvRopeParams {
            qkv: self.params(),
            head_dim: hd as u32,
            n_rot: c.n_rot as u32,
            neox: (c.mode == RopeMode::Neox) as u32,
            slot,
            kv_ring: rope.kv_ring as u32,
            has_ff: rope.factors.is_some() as u32,
            angle: c.angle_params(),
        };
        let (key, srcs) = qkv_rope_rows_sources(wq.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        let g = gpu.grid(((n / 2) as u32).div_ceil(MATVEC_ROWS_WG));
        let ff = rope.factors.unwrap_or(rope.dummy);
        let mut bufs = rows_bindings(
            wq.dtype,
            &[&wq.parts[0].buffer, x, out[0], out[1], out[2], ff],
        );
        bufs.push((POSITIONS_BINDING, &pos_buf));
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&params),
            &bufs,
            [g[0], g[1], self.m as u32],
        );
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GluParams {
    k: u32,
    f: u32,
    row_words: u32,
    w_offset: u32,
    x_stride: u32,
    act: u32,
    _pad: [u32; 2],
}

/// The gated activation of [`GluRows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// silu(gate) * up
    SwiGlu,
    /// gelu_tanh(gate) * up
    GeGlu,
}

/// `y = act(Wgate x) * (Wup x)` for `m` tokens in one dispatch
/// (`shaders/glu_rows.wgsl`), for gate and up weights [`Weight::fuse`] put in one buffer (gate
/// first); see [`fused_rows_apply`].
pub struct GluRows<'a> {
    pub gate: &'a Weight,
    pub up: &'a Weight,
    pub m: usize,
    pub act: Glu,
}

impl GluRows<'_> {
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        let (g, u) = (self.gate, self.up);
        if !fused_layout(&[g, u]) || g.rows != u.rows {
            return Err(Error::InvalidArgument(format!(
                "glu_rows: `{}` and `{}` are not one fused buffer of equal halves for the rows kernel",
                g.name, u.name
            )));
        }
        check_fused("glu_rows", self.m, (x, g.cols), &[(y, g.rows)])?;
        let (key, srcs) = glu_rows_sources(g.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        let params = GluParams {
            k: g.cols as u32,
            f: g.rows as u32,
            row_words: g.row_words as u32,
            w_offset: g.parts[0].word0 as u32,
            x_stride: g.cols as u32,
            act: (self.act == Glu::GeGlu) as u32,
            _pad: [0; 2],
        };
        let grid = gpu.grid((g.rows as u32).div_ceil(MATVEC_ROWS_WG));
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&params),
            &rows_bindings(g.dtype, &[&g.parts[0].buffer, x, y]),
            [grid[0], grid[1], self.m as u32],
        );
        Ok(())
    }
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
        enc: &mut Recorder,
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
        if !w.cols.is_multiple_of(w.dtype.block_elems().max(8)) {
            // the rows kernels read x as whole vec4 pairs and rows as whole blocks
            variant = match variant {
                Variant::MatvecRows => Variant::Matvec,
                Variant::MatmulRows => Variant::Matmul,
                v => v,
            };
        }
        // dense weights whose rows all start on a 16-byte boundary: vec4 loads (CPU drivers)
        let v4 = match variant {
            Variant::MatmulRows => matmul_rows_v4_sources(w.dtype).filter(|_| {
                w.row_words.is_multiple_of(4) && w.parts.iter().all(|p| p.word0.is_multiple_of(4))
            }),
            _ => None,
        };
        let (key, srcs) = v4
            .clone()
            .unwrap_or_else(|| sources(w.dtype, variant, gpu.caps.matmul));
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
                w_offset: part.word0 as u32,
            };
            let rows = part.rows as u32;
            let groups = match variant {
                Variant::Matmul => [
                    rows.div_ceil(MATMUL_TILE),
                    (self.m as u32).div_ceil(MATMUL_TILE),
                    1,
                ],
                Variant::MatmulRows => {
                    let g = gpu.grid(rows.div_ceil(MATVEC_ROWS_WG));
                    [g[0], g[1], (self.m as u32).div_ceil(MATMUL_ROWS_TOKENS)]
                }
                _ => {
                    let rows_per_group = match variant {
                        Variant::MatvecSubgroup => 1,
                        Variant::MatvecRows => MATVEC_ROWS_WG,
                        _ => MATVEC_ROWS,
                    };
                    let g = gpu.grid(rows.div_ceil(rows_per_group));
                    [g[0], g[1], self.m as u32]
                }
            };
            let buffers = [&part.buffer, x, y];
            let bound = match variant {
                Variant::MatvecRows => rows_bindings(w.dtype, &buffers),
                Variant::MatmulRows if v4.is_some() => {
                    vec![(WV4_BINDING, &part.buffer), (2, x), (3, y)]
                }
                _ => crate::gpu::numbered(&buffers),
            };
            gpu.dispatch_bound(enc, &pipeline, bytemuck::bytes_of(&params), &bound, groups);
        }
        Ok(())
    }
}

/// CPU reference: rows of `k` values (weight rows or tokens' activations) as `matmul_q16.wgsl`
/// stages them, read back as f32: each row's 32-element slices rounded to 16-bit fractions of the
/// slice's largest magnitude (the q16 KV cache's rounding, [`crate::ops::kv::q16_cached_cpu`]).
/// The kernel multiplies these values exactly as [`matmul_cpu`] does.
pub fn q16_tiles_cpu(v: &[f32], k: usize) -> Vec<f32> {
    v.chunks(k)
        .flat_map(|row| crate::ops::kv::q16_cached_cpu(row, &[0.0], 32))
        .collect()
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
