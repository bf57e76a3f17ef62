//! The GPU layout's fused decode products (`shaders/matvec_pairs.wgsl`): a layer's RMSNorm, its
//! projections over weights [`Weight::fuse`] put in one buffer, and what follows them, in one
//! dispatch per block:
//! - [`QkvPairs`]: `q, k, v = Wq a, Wk a, Wv a` with `a = rmsnorm(x)`, RoPE on q and k, and keys and
//!   values written straight into an f32 KV cache (`shaders/pairs_qkv.wgsl`);
//! - [`GluPairs`]: `act(Wgate a) * (Wup a)` with `a = rmsnorm(x)` (`shaders/pairs_glu.wgsl`).
//!
//! Each workgroup computes pairs of rows (the two dims one rotation mixes; a gate row and its up
//! row), so the epilogue has both sums at hand. The CPU layout's twins are `qkv_rope_rows.wgsl`
//! and `glu_rows.wgsl` (`matmul::QkvRows`, `matmul::GluRows`), which take the norm's output.
//! CPU references: the norm, product, RoPE and activation references composed (tests/ops_gpu.rs).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder, Weight};
use crate::ops::matmul::{
    check_fused, dq8_fragment, fused_layout, Glu, QkvRope, Variant, MATVEC_MAX_TOKENS,
};
use crate::ops::rope::{AngleParams, RopeMode};
use crate::ops::{positions_or, POSITIONS_BINDING};

/// Pairs of rows per workgroup of `matvec_pairs.wgsl` (its `PAIRS`).
const PAIRS_WG: u32 = 4;

/// Binding of the norm's weight in `matvec_pairs.wgsl`.
const NORM_BINDING: u32 = 7;

const KERNEL_WGSL: &str = include_str!("../../shaders/matvec_pairs.wgsl");

/// Pipeline key and sources of the fused Q/K/V kernel for a weight type.
pub fn qkv_sources(dtype: crate::format::DType) -> (String, Vec<&'static str>) {
    (
        format!("pairs_qkv.{}", dtype.name().to_ascii_lowercase()),
        vec![
            dq8_fragment(dtype),
            crate::ops::rope::ANGLE_WGSL,
            include_str!("../../shaders/pairs_qkv.wgsl"),
            KERNEL_WGSL,
        ],
    )
}

/// Pipeline key and sources of the fused gate/up kernel for a weight type.
pub fn glu_sources(dtype: crate::format::DType) -> (String, Vec<&'static str>) {
    (
        format!("pairs_glu.{}", dtype.name().to_ascii_lowercase()),
        vec![
            dq8_fragment(dtype),
            crate::ops::elementwise::ACT_WGSL,
            include_str!("../../shaders/pairs_glu.wgsl"),
            KERNEL_WGSL,
        ],
    )
}

/// Whether the fused pairs kernels apply to a product of these weights over `variant_m` tokens
/// per sequence: the GPU layout's decode (the matrix-vector kernels), weights one after the other
/// in one buffer with whole blocks per row, and an even row count in each.
pub fn pairs_apply(gpu: &Gpu, variant_m: usize, ws: &[&Weight]) -> bool {
    let matvec = matches!(
        Variant::choose(gpu, variant_m.clamp(1, MATVEC_MAX_TOKENS)),
        Variant::Matvec | Variant::MatvecSubgroup
    );
    variant_m <= MATVEC_MAX_TOKENS
        && matvec
        && fused_layout(ws)
        && ws.iter().all(|w| w.rows.is_multiple_of(2))
}

/// The RMSNorm a pairs kernel applies to its input first: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Clone, Copy)]
pub struct RmsIn<'a> {
    pub weight: &'a wgpu::Buffer,
    pub eps: f32,
}

impl RmsIn<'_> {
    fn check(&self, k: usize) -> Result<()> {
        if self.weight.size() < (k * 4) as u64 {
            return Err(Error::InvalidArgument(format!(
                "pairs: a norm weight of {} bytes for rows of {k}",
                self.weight.size()
            )));
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QkvParams {
    k: u32,
    row_words: u32,
    w_offset: u32,
    x_stride: u32,
    eps: f32,
    pairs: u32,
    nq: u32,
    nk: u32,
    nv: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    rotate: u32,
    slot: u32,
    kv_ring: u32,
    has_ff: u32,
    angle: AngleParams,
    _pad: [u32; 2],
}

/// `q, k, v = Wq a, Wk a, Wv a` with `a = rmsnorm(x)` for `m` tokens in one dispatch, for weights
/// [`Weight::fuse`] put in one buffer (see [`pairs_apply`]). With `rope` (one sequence), q and k
/// leave rotated and keys/values can go straight into an f32 KV cache, as [`QkvRope`] says;
/// without, q, k, v are the plain products (rows `0..m` of each output).
pub struct QkvPairs<'a> {
    pub w: [&'a Weight; 3],
    pub m: usize,
    pub norm: RmsIn<'a>,
    pub rope: Option<QkvRope<'a>>,
}

impl QkvPairs<'_> {
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        out: [&wgpu::Buffer; 3],
    ) -> Result<()> {
        let [wq, wk, wv] = self.w;
        let rows = [wq.rows, wk.rows, wv.rows];
        if !fused_layout(&self.w) || rows.iter().any(|r| !r.is_multiple_of(2)) {
            return Err(Error::InvalidArgument(format!(
                "pairs_qkv: `{}`, `{}`, `{}` are not one fused buffer of even row counts",
                wq.name, wk.name, wv.name
            )));
        }
        self.norm.check(wq.cols)?;
        let ring = self.rope.as_ref().map_or(0, |r| r.kv_ring);
        let out_rows = if ring > 0 { ring } else { self.m };
        check_fused("pairs_qkv", self.m, (x, wq.cols), &[(out[0], wq.rows)])?;
        check_fused(
            "pairs_qkv",
            out_rows,
            (x, 0),
            &[(out[1], wk.rows), (out[2], wv.rows)],
        )?;
        let mut params = QkvParams {
            k: wq.cols as u32,
            row_words: wq.row_words as u32,
            w_offset: wq.parts[0].word0 as u32,
            x_stride: wq.cols as u32,
            eps: self.norm.eps,
            pairs: (rows.iter().sum::<usize>() / 2) as u32,
            nq: wq.rows as u32,
            nk: wk.rows as u32,
            nv: wv.rows as u32,
            head_dim: 2,
            n_rot: 0,
            neox: 0,
            rotate: 0,
            slot: 0,
            kv_ring: 0,
            has_ff: 0,
            angle: bytemuck::Zeroable::zeroed(),
            _pad: [0; 2],
        };
        let (pos_buf, ff) = match &self.rope {
            Some(rope) => {
                let (c, hd) = (rope.cfg, rope.head_dim);
                rope.check("pairs_qkv", rows)?;
                let (buf, slot) = positions_or(gpu, rope.positions, rope.pos0)?;
                params.head_dim = hd as u32;
                params.n_rot = c.n_rot as u32;
                params.neox = (c.mode == RopeMode::Neox) as u32;
                params.rotate = 1;
                params.slot = slot;
                params.kv_ring = rope.kv_ring as u32;
                params.has_ff = rope.factors.is_some() as u32;
                params.angle = c.angle_params();
                (buf, rope.factors.unwrap_or(rope.dummy).clone())
            }
            // nothing reads them: x stands in (a bind group that repeats step to step)
            None => (x.clone(), x.clone()),
        };
        let (key, srcs) = qkv_sources(wq.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        let g = gpu.grid(params.pairs.div_ceil(PAIRS_WG));
        let bufs = [
            (1, &wq.parts[0].buffer),
            (2, x),
            (3, out[0]),
            (4, out[1]),
            (5, out[2]),
            (6, &ff),
            (NORM_BINDING, self.norm.weight),
            (POSITIONS_BINDING, &pos_buf),
        ];
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
    row_words: u32,
    w_offset: u32,
    x_stride: u32,
    eps: f32,
    pairs: u32,
    act: u32,
    _pad: u32,
}

/// `y = act(Wgate a) * (Wup a)` with `a = rmsnorm(x)` for `m` tokens in one dispatch, for gate and
/// up weights [`Weight::fuse`] put in one buffer (gate first; see [`pairs_apply`]).
pub struct GluPairs<'a> {
    pub gate: &'a Weight,
    pub up: &'a Weight,
    pub m: usize,
    pub act: Glu,
    pub norm: RmsIn<'a>,
}

impl GluPairs<'_> {
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
                "pairs_glu: `{}` and `{}` are not one fused buffer of equal halves",
                g.name, u.name
            )));
        }
        self.norm.check(g.cols)?;
        check_fused("pairs_glu", self.m, (x, g.cols), &[(y, g.rows)])?;
        let (key, srcs) = glu_sources(g.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        let params = GluParams {
            k: g.cols as u32,
            row_words: g.row_words as u32,
            w_offset: g.parts[0].word0 as u32,
            x_stride: g.cols as u32,
            eps: self.norm.eps,
            pairs: g.rows as u32,
            act: (self.act == Glu::GeGlu) as u32,
            _pad: 0,
        };
        let grid = gpu.grid((g.rows as u32).div_ceil(PAIRS_WG));
        let bufs = [
            (1, &g.parts[0].buffer),
            (2, x),
            (3, y),
            (NORM_BINDING, self.norm.weight),
        ];
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&params),
            &bufs,
            [grid[0], grid[1], self.m as u32],
        );
        Ok(())
    }
}
