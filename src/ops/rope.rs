//! Rotary position embedding (`shaders/rope.wgsl`), with linear and YaRN frequency scaling.
//!
//! Formulas follow ggml's `rope_yarn` / `ggml_rope_yarn_corr_dims` (ggml/src/ggml-cpu/ops.cpp,
//! ggml/src/ggml.c); the CPU reference below is the same formula, written plainly.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops::{positions_or, Positions, POSITIONS_BINDING};

/// The kernel (`shaders/rope.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/rope.wgsl");
/// The angle of a rotated pair (`shaders/common/rope_angle.wgsl`), shared with
/// `shaders/qkv_rope_rows.wgsl`.
pub const ANGLE_WGSL: &str = include_str!("../../shaders/common/rope_angle.wgsl");

/// Which dimensions form the rotated pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (2i, 2i+1): GGUF llama (its Q/K rows were permuted at conversion).
    Normal,
    /// Pairs (i, i + n_rot/2): GPT-NeoX, Qwen2, Phi-3, Gemma.
    Neox,
}

/// RoPE parameters, read from model metadata.
#[derive(Clone, Debug)]
pub struct RopeConfig {
    pub mode: RopeMode,
    /// Rotated dimensions per head (≤ head_dim; the rest pass through).
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / linear scaling factor.
    pub freq_scale: f32,
    /// YaRN extrapolation mix (0 = off).
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Context length the model was trained with (YaRN).
    pub n_ctx_orig: usize,
}

impl RopeConfig {
    /// Plain RoPE with the given base.
    pub fn plain(mode: RopeMode, n_rot: usize, freq_base: f32) -> Self {
        RopeConfig {
            mode,
            n_rot,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 0,
        }
    }

    /// YaRN correction dimensions (ggml_rope_yarn_corr_dims).
    pub fn corr_dims(&self) -> [f32; 2] {
        if self.ext_factor == 0.0 || self.n_ctx_orig == 0 {
            return [0.0, 0.0];
        }
        let n = self.n_rot as f32;
        let dim = |beta: f32| {
            n * (self.n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.freq_base.ln())
        };
        [
            dim(self.beta_fast).floor().max(0.0),
            dim(self.beta_slow).ceil().min(n - 1.0),
        ]
    }
}

/// The uniform fields `rope_cs()` reads (`shaders/common/rope_angle.wgsl`), laid out as both
/// `rope.wgsl` and `qkv_rope_rows.wgsl` hold them.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AngleParams {
    freq_base: f32,
    freq_scale: f32,
    ext_factor: f32,
    attn_factor: f32,
    corr0: f32,
    corr1: f32,
}

impl RopeConfig {
    /// This configuration's [`AngleParams`] (YaRN correction dims included).
    pub(crate) fn angle_params(&self) -> AngleParams {
        let [corr0, corr1] = self.corr_dims();
        AngleParams {
            freq_base: self.freq_base,
            freq_scale: self.freq_scale,
            ext_factor: self.ext_factor,
            attn_factor: self.attn_factor,
            corr0,
            corr1,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    /// The sequence's entry in the positions buffer, which holds its first position.
    slot: u32,
    tokens: u32,
    mode: u32,
    has_ff: u32,
    row0: u32,
    angle: AngleParams,
    _pad2: f32,
    _pad3: f32,
}

/// RoPE in place on rows `row0..row0+tokens` of `x[row, n_heads, head_dim]`, for positions
/// `pos0..pos0+tokens`.
pub struct Rope<'a> {
    pub cfg: &'a RopeConfig,
    pub n_heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub pos0: usize,
    /// First row of this sequence in `x` (0 unless a batch holds several sequences).
    pub row0: usize,
}

impl Rope<'_> {
    /// Records the rotation; `freq_factors` (n_rot/2 floats) divides each frequency when given.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        freq_factors: Option<&wgpu::Buffer>,
        dummy: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode_pos(gpu, enc, x, freq_factors, dummy, None)
    }

    /// [`Rope::encode`] with the first position read from `pos` on the GPU (it must hold
    /// `self.pos0`): the dispatch's parameters, and so its bind group, stay the same from one
    /// decode step to the next.
    pub fn encode_at(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        freq_factors: Option<&wgpu::Buffer>,
        dummy: &wgpu::Buffer,
        pos: Positions,
    ) -> Result<()> {
        self.encode_pos(gpu, enc, x, freq_factors, dummy, Some(pos))
    }

    fn encode_pos(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        freq_factors: Option<&wgpu::Buffer>,
        dummy: &wgpu::Buffer,
        pos: Option<Positions>,
    ) -> Result<()> {
        let c = self.cfg;
        if c.n_rot == 0 || !c.n_rot.is_multiple_of(2) || c.n_rot > self.head_dim {
            return Err(Error::InvalidArgument(format!(
                "rope: rotary dims {} must be even and at most head_dim {}",
                c.n_rot, self.head_dim
            )));
        }
        if x.size() < ((self.row0 + self.tokens) * self.n_heads * self.head_dim * 4) as u64 {
            return Err(Error::InvalidArgument("rope: buffer too small".into()));
        }
        let (pos_buf, slot) = positions_or(gpu, pos, self.pos0)?;
        let p = Params {
            n_heads: self.n_heads as u32,
            head_dim: self.head_dim as u32,
            n_rot: c.n_rot as u32,
            slot,
            tokens: self.tokens as u32,
            mode: if c.mode == RopeMode::Neox { 2 } else { 0 },
            has_ff: freq_factors.is_some() as u32,
            row0: self.row0 as u32,
            angle: c.angle_params(),
            _pad2: 0.0,
            _pad3: 0.0,
        };
        let pipeline = gpu.pipeline("rope", &[ANGLE_WGSL, WGSL])?;
        let n = (self.tokens * self.n_heads * c.n_rot / 2) as u32;
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[
                (1, x),
                (2, freq_factors.unwrap_or(dummy)),
                (POSITIONS_BINDING, &pos_buf),
            ],
            gpu.grid(n.div_ceil(64)),
        );
        Ok(())
    }
}

/// CPU reference, in place on `x[tokens, n_heads, head_dim]`.
pub fn rope_cpu(
    x: &mut [f32],
    cfg: &RopeConfig,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    freq_factors: Option<&[f32]>,
) {
    let half = cfg.n_rot / 2;
    let [c0, c1] = cfg.corr_dims();
    let tokens = x.len() / (n_heads * head_dim);
    for t in 0..tokens {
        let pos = (pos0 + t) as f32;
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for i in 0..half {
                let mut theta_extrap = pos * cfg.freq_base.powf(-2.0 * i as f32 / cfg.n_rot as f32);
                if let Some(ff) = freq_factors {
                    theta_extrap /= ff[i];
                }
                let theta_interp = cfg.freq_scale * theta_extrap;
                let (mut theta, mut mscale) = (theta_interp, cfg.attn_factor);
                if cfg.ext_factor != 0.0 {
                    let y = (i as f32 - c0) / (c1 - c0).max(0.001);
                    let mix = (1.0 - y.clamp(0.0, 1.0)) * cfg.ext_factor;
                    theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
                    mscale *= 1.0 + 0.1 * (1.0 / cfg.freq_scale).ln();
                }
                let (s, c) = theta.sin_cos();
                let (a, b) = match cfg.mode {
                    RopeMode::Normal => (base + 2 * i, base + 2 * i + 1),
                    RopeMode::Neox => (base + i, base + i + half),
                };
                let (x0, x1) = (x[a], x[b]);
                x[a] = (x0 * c - x1 * s) * mscale;
                x[b] = (x0 * s + x1 * c) * mscale;
            }
        }
    }
}
