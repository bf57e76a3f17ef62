//! Causal (or, for encoders, bidirectional) grouped-query attention over the KV cache (`shaders/attention.wgsl`; for several
//! queries on CPU-type adapters `shaders/attention_rows.wgsl`, one query per invocation; for one
//! on them `shaders/attention_lanes.wgsl`). Long-context decode on GPUs splits the positions
//! across workgroups (split-K, `attention.wgsl` then `shaders/attention_merge.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{numbered, Gpu, KvType, Recorder};
use crate::ops::kv::LayerKv;
use crate::ops::{positions_or, Positions, POSITIONS_BINDING};

/// The kernel (`shaders/attention.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/attention.wgsl");
/// The one-query-per-invocation kernel (`shaders/attention_rows.wgsl`).
pub const ROWS_WGSL: &str = include_str!("../../shaders/attention_rows.wgsl");
/// The kernels' parameters and `slot()` (`shaders/common/attention_params.wgsl`).
pub const PARAMS_WGSL: &str = include_str!("../../shaders/common/attention_params.wgsl");
/// The kernels' view of an f32 KV cache (`shaders/common/kv_f32.wgsl`).
pub const KV_F32_WGSL: &str = include_str!("../../shaders/common/kv_f32.wgsl");
/// The kernels' view of an f16 KV cache (`shaders/common/kv_f16.wgsl`).
pub const KV_F16_WGSL: &str = include_str!("../../shaders/common/kv_f16.wgsl");
/// The kernels' view of a q16 KV cache (`shaders/common/kv_q16.wgsl`).
pub const KV_Q16_WGSL: &str = include_str!("../../shaders/common/kv_q16.wgsl");

/// The cache view a cache type is read through, and the suffix of its pipelines' keys.
pub fn kv_view(kind: KvType) -> (&'static str, &'static str) {
    match kind {
        KvType::F32 => (KV_F32_WGSL, ""),
        KvType::F16 => (KV_F16_WGSL, ".kv_f16"),
        KvType::Q16 => (KV_Q16_WGSL, ".kv_q16"),
    }
}
/// The one-query-per-workgroup kernel with lanes over positions (`shaders/attention_lanes.wgsl`).
pub const LANES_WGSL: &str = include_str!("../../shaders/attention_lanes.wgsl");
/// Split-K's second pass (`shaders/attention_merge.wgsl`).
pub const MERGE_WGSL: &str = include_str!("../../shaders/attention_merge.wgsl");
/// Split-K: at most this many queries (decode and speculative-size batches) ...
const SPLIT_MAX_TOKENS: usize = 4;
/// ... whose last query sees at least two chunks of this many positions ...
const SPLIT_CHUNK: usize = 256;
/// ... are split into at most this many workgroups per (query, head).
const MAX_SPLITS: usize = 64;
/// Queries per workgroup of `attention_rows.wgsl` (its `WG`).
const ROWS_QUERIES: u32 = 16;
/// Largest head_dim `attention_rows.wgsl` holds in registers (its arrays of 64 vec4s).
const ROWS_MAX_HEAD_DIM: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    tokens: u32,
    /// The sequence's entry in the positions buffer, which holds its first position.
    slot: u32,
    window: u32,
    ring: u32,
    row0: u32,
    scale: f32,
    softcap: f32,
    /// 1: split-K, each query's positions split across the grid's z (chunk size in the kernel).
    split: u32,
    bidir: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MergeParams {
    n_heads: u32,
    head_dim: u32,
    splits: u32,
    row0: u32,
}

/// Largest head dimension the kernel handles.
pub const MAX_HEAD_DIM: usize = 256;

/// Attention of `tokens` queries at positions `pos0..` over cached keys/values `0..pos0+tokens`.
pub struct Attention {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub pos0: usize,
    /// Multiplies every score (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a query sees only the last `window` positions, itself included (0 = all).
    pub window: usize,
    /// Logit soft-capping `c * tanh(s / c)` after the scale (0 = off; Gemma 2).
    pub softcap: f32,
    /// The cache is a ring of this many positions (position `p` in row `p % ring`; 0 = a plain
    /// cache, position `p` in row `p`). It must hold every position a query of this batch sees:
    /// `ring >= window + tokens - 1`.
    pub ring: usize,
    /// First row of this sequence's queries in `q` and `out` (0 unless a batch holds several
    /// sequences).
    pub row0: usize,
    /// How the cache holds keys and values (16-bit types as `KvStore` writes them, with a base
    /// and, for q16, scales).
    pub kv: KvType,
    /// Encoders: every query sees positions `pos0..pos0 + tokens` (its own sequence's keys, and
    /// none of another sequence packed in the same buffers: the padding mask), not only those up
    /// to its own. No window, no ring.
    pub bidirectional: bool,
}

impl Attention {
    /// Floats of the split-K partials buffer [`Attention::encode_split`] needs for up to
    /// `n_heads` heads of `head_dim` (enough for any batch it splits).
    pub fn part_floats(n_heads: usize, head_dim: usize) -> usize {
        SPLIT_MAX_TOKENS * n_heads * MAX_SPLITS * (head_dim + 2)
    }

    /// How many workgroups each (query, head) is split into on `gpu` (1 = not split): on the
    /// GPU layout, for at most 4 queries whose last one sees at least 512 positions, one split
    /// per 256 positions, at most 64.
    pub fn splits(&self, gpu: &Gpu) -> usize {
        let span = match self.window {
            0 => self.pos0 + self.tokens,
            w => w.min(self.pos0 + self.tokens),
        };
        if self.uses_cpu_layout(gpu)
            || self.bidirectional
            || self.tokens > SPLIT_MAX_TOKENS
            || span < 2 * SPLIT_CHUNK
        {
            return 1;
        }
        span.div_ceil(SPLIT_CHUNK).min(MAX_SPLITS)
    }

    fn uses_cpu_layout(&self, gpu: &Gpu) -> bool {
        gpu.caps.rows_kernels
            && self.head_dim.is_multiple_of(4)
            && self.head_dim <= ROWS_MAX_HEAD_DIM
    }

    /// Records `out[t, h, :] = softmax(q[t, h] · K[..=pos0+t] * scale) V`, one workgroup per
    /// (query, head) on the GPU layout.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        q: &wgpu::Buffer,
        kv: LayerKv,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode_split(gpu, enc, q, kv, out, None)
    }

    /// [`Attention::encode`] that splits long-context decode across workgroups
    /// ([`Attention::splits`]) when given a partials buffer of at least
    /// [`Attention::part_floats`] floats.
    pub fn encode_split(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        q: &wgpu::Buffer,
        kv: LayerKv,
        out: &wgpu::Buffer,
        part: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        self.encode_pos(gpu, enc, q, kv, out, part, None)
    }

    /// [`Attention::encode_split`] with the first position read from `pos` on the GPU (it must
    /// hold `self.pos0`, which the checks and the split count use): the dispatch's parameters
    /// then do not change from one decode step to the next, nor does its bind group.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_at(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        q: &wgpu::Buffer,
        kv: LayerKv,
        out: &wgpu::Buffer,
        part: Option<&wgpu::Buffer>,
        pos: Positions,
    ) -> Result<()> {
        self.encode_pos(gpu, enc, q, kv, out, part, Some(pos))
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_pos(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        q: &wgpu::Buffer,
        kv: LayerKv,
        out: &wgpu::Buffer,
        part: Option<&wgpu::Buffer>,
        pos: Option<Positions>,
    ) -> Result<()> {
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::InvalidArgument(format!(
                "attention: {} heads is not a multiple of {} KV heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !(self.softcap >= 0.0 && self.softcap.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "attention: soft-cap {} must be a finite number >= 0",
                self.softcap
            )));
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::InvalidArgument(format!(
                "attention: head_dim {} outside 1..={MAX_HEAD_DIM}",
                self.head_dim
            )));
        }
        if self.ring > 0
            && (self.window == 0
                || self.ring < self.window + self.tokens - 1
                || self.ring > u32::MAX as usize)
        {
            return Err(Error::InvalidArgument(format!(
                "attention: a ring cache of {} positions cannot serve {} tokens with a window of {}",
                self.ring, self.tokens, self.window
            )));
        }
        if self.bidirectional && (self.window > 0 || self.ring > 0) {
            return Err(Error::InvalidArgument(
                "attention: bidirectional attention takes no sliding window or ring cache".into(),
            ));
        }
        let rows = match self.ring {
            0 => self.pos0 + self.tokens,
            r => r.min(self.pos0 + self.tokens),
        };
        if self.kv != KvType::F32 && !self.head_dim.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "attention: a {} KV cache needs an even head_dim, not {}",
                self.kv.name(),
                self.head_dim
            )));
        }
        let kv_bytes = (rows * self.n_kv_heads * self.head_dim * self.kv.elem_bytes()) as u64;
        if kv.k.size() < kv_bytes || kv.v.size() < kv_bytes {
            return Err(Error::InvalidArgument(
                "attention: KV cache smaller than the attended positions".into(),
            ));
        }
        // a 16-bit cache's base, a q16 cache's scales (shaders/common/kv_f16.wgsl, kv_q16.wgsl)
        let (base, scale) = kv.aux("attention", self.kv, rows, self.n_kv_heads, self.head_dim)?;
        let q_bytes = ((self.row0 + self.tokens) * self.n_heads * self.head_dim * 4) as u64;
        if q.size() < q_bytes || out.size() < q_bytes {
            return Err(Error::InvalidArgument(
                "attention: query or output buffer smaller than its rows".into(),
            ));
        }
        let (pos_buf, slot) = positions_or(gpu, pos, self.pos0)?;
        let p = Params {
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            head_dim: self.head_dim as u32,
            tokens: self.tokens as u32,
            slot,
            window: u32::try_from(self.window).unwrap_or(u32::MAX),
            ring: self.ring as u32,
            row0: self.row0 as u32,
            scale: self.scale,
            softcap: self.softcap,
            split: 0,
            bidir: self.bidirectional as u32,
        };
        // CPU-type adapters: one query per invocation where there are several queries, lanes
        // over positions for a single query (decode)
        let cpu = self.uses_cpu_layout(gpu);
        let rows = cpu && self.tokens > 1;
        let lanes = cpu && self.tokens == 1;
        let (view, kv_key) = kv_view(self.kv);
        let splits = self.splits(gpu);
        if let (true, Some(part)) = (splits > 1, part) {
            let need = (self.tokens * self.n_heads * splits * (self.head_dim + 2) * 4) as u64;
            if part.size() < need {
                return Err(Error::InvalidArgument(format!(
                    "attention: the split-K partials buffer holds {} bytes, {need} needed",
                    part.size()
                )));
            }
            let p = Params { split: 1, ..p };
            let pipeline =
                gpu.pipeline(&format!("attention{kv_key}"), &[PARAMS_WGSL, view, WGSL])?;
            gpu.dispatch_bound(
                enc,
                &pipeline,
                bytemuck::bytes_of(&p),
                &kv_bufs(q, kv, part, base, scale, &pos_buf),
                [self.n_heads as u32, self.tokens as u32, splits as u32],
            );
            let merge = gpu.pipeline("attention_merge", &[MERGE_WGSL])?;
            let mp = MergeParams {
                n_heads: self.n_heads as u32,
                head_dim: self.head_dim as u32,
                splits: splits as u32,
                row0: self.row0 as u32,
            };
            gpu.dispatch(
                enc,
                &merge,
                bytemuck::bytes_of(&mp),
                &[part, out],
                [self.n_heads as u32, self.tokens as u32, 1],
            );
            return Ok(());
        }
        let (pipeline, groups) = if rows {
            let key = format!("attention_rows.d{}{kv_key}", self.head_dim);
            let constants = [("D", self.head_dim as f64)];
            (
                gpu.pipeline_with(&key, &[PARAMS_WGSL, view, ROWS_WGSL], &constants)?,
                [
                    self.n_heads as u32,
                    (self.tokens as u32).div_ceil(ROWS_QUERIES),
                    1,
                ],
            )
        } else if lanes {
            let key = format!("attention_lanes.d{}{kv_key}", self.head_dim);
            let constants = [("D", self.head_dim as f64)];
            (
                gpu.pipeline_with(&key, &[PARAMS_WGSL, view, LANES_WGSL], &constants)?,
                [self.n_heads as u32, 1, 1],
            )
        } else {
            (
                gpu.pipeline(&format!("attention{kv_key}"), &[PARAMS_WGSL, view, WGSL])?,
                [self.n_heads as u32, self.tokens as u32, 1],
            )
        };
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &kv_bufs(q, kv, out, base, scale, &pos_buf),
            groups,
        );
        Ok(())
    }
}

/// The attention kernels' buffers, bindings 1.. (the base only for a 16-bit cache, the scales
/// only for q16), and the positions at [`POSITIONS_BINDING`].
fn kv_bufs<'a>(
    q: &'a wgpu::Buffer,
    kv: LayerKv<'a>,
    out: &'a wgpu::Buffer,
    base: Option<&'a wgpu::Buffer>,
    scale: Option<&'a wgpu::Buffer>,
    positions: &'a wgpu::Buffer,
) -> Vec<(u32, &'a wgpu::Buffer)> {
    let mut b = vec![q, kv.k, kv.v, out];
    b.extend(base);
    b.extend(scale);
    let mut b = numbered(&b);
    b.push((POSITIONS_BINDING, positions));
    b
}

/// CPU reference. `q[t, h, d]`, caches `[pos, kv_h, d]` (rows `pos % ring` for a ring); returns
/// `out[t, h, d]`.
pub fn attention_cpu(q: &[f32], k: &[f32], v: &[f32], a: &Attention) -> Vec<f32> {
    let (h, kvh, d) = (a.n_heads, a.n_kv_heads, a.head_dim);
    let group = h / kvh;
    let slot = |p: usize| if a.ring > 0 { p % a.ring } else { p };
    let mut out = vec![0.0; a.tokens * h * d];
    for t in 0..a.tokens {
        let (first, n_pos) = if a.bidirectional {
            (a.pos0, a.pos0 + a.tokens)
        } else {
            let n_pos = a.pos0 + t + 1;
            match a.window {
                0 => (0, n_pos),
                w => (n_pos.saturating_sub(w), n_pos),
            }
        };
        for head in 0..h {
            let kv = head / group;
            let qr = &q[(t * h + head) * d..][..d];
            let scores: Vec<f32> = (first..n_pos)
                .map(|p| {
                    let s = qr
                        .iter()
                        .zip(&k[(slot(p) * kvh + kv) * d..][..d])
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        * a.scale;
                    if a.softcap > 0.0 {
                        a.softcap * (s / a.softcap).tanh()
                    } else {
                        s
                    }
                })
                .collect();
            let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
            let sum: f32 = e.iter().sum();
            let o = &mut out[(t * h + head) * d..][..d];
            for (i, w) in e.iter().enumerate() {
                let p = first + i;
                for (oi, vi) in o.iter_mut().zip(&v[(slot(p) * kvh + kv) * d..][..d]) {
                    *oi += w / sum * vi;
                }
            }
        }
    }
    out
}
