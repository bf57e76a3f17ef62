//! Appending keys and values to a 16-bit KV cache (`shaders/kv_store.wgsl` for f16,
//! `shaders/kv_store_q16.wgsl` for q16, after `shaders/kv_base.wgsl` for the rows that begin a
//! sequence); an f32 cache takes a plain buffer copy instead.
//!
//! Both 16-bit caches hold each key and value as its difference from a per-sequence, per-channel
//! f32 base: the mean of the sequence's first stored rows. Keys (and values) share a large
//! per-channel component across positions, so the differences are small and their rounding error
//! is small in absolute terms; the attention kernels add the base back exactly (q · base to every
//! score, base to the output). This is SageAttention's "smooth K" (Zhang et al., 2024,
//! arXiv:2410.02367), applied to the cache and to values too.
//!
//! - **f16** stores the differences as f16: each keeps 11 significant bits of its own magnitude.
//! - **q16** stores them as signed 16-bit fractions of the largest magnitude in their (position,
//!   KV head) segment of `head_dim` elements, with that f32 scale in a buffer of its own (the
//!   scheme of llama.cpp's Q8_0 blocks, `ggml-common.h`: one absmax scale per block, here at 16
//!   bits and one block per head). Every element's error is at most scale / 65534: the segment's
//!   large elements, which dominate the dot products, are stored 16-32x finer than in f16, the
//!   small ones coarser. On SmolLM2 this brings the logits' distance from the f32 cache from
//!   f16's 1.7e-2 to 2.1e-3 (tests/smollm2.rs).

use crate::error::{Error, Result};
use crate::gpu::{numbered, Gpu, KvType, Recorder};
use crate::ops::{positions_or, Positions, POSITIONS_BINDING};

/// The f16 store kernel (`shaders/kv_store.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/kv_store.wgsl");
/// The q16 store kernel (`shaders/kv_store_q16.wgsl`).
pub const Q16_WGSL: &str = include_str!("../../shaders/kv_store_q16.wgsl");
/// The base kernel (`shaders/kv_base.wgsl`).
pub const BASE_WGSL: &str = include_str!("../../shaders/kv_base.wgsl");

/// One layer's KV cache as the kernels see it.
#[derive(Clone, Copy)]
pub struct LayerKv<'a> {
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// A 16-bit cache's base: `2 * kv_dim` f32, keys' then values' (`None` for an f32 cache).
    pub base: Option<&'a wgpu::Buffer>,
    /// A q16 cache's scales: per (row, KV head), the keys' then the values' f32 (`None` for the
    /// other types).
    pub scale: Option<&'a wgpu::Buffer>,
}

impl<'a> LayerKv<'a> {
    /// The base and scale buffers a `kind` cache of `rows` rows, `n_kv_heads` heads of `head_dim`
    /// needs, checked to be there and large enough (`None` where the type has none); `op` names
    /// the caller in the error.
    pub fn aux(
        &self,
        op: &str,
        kind: KvType,
        rows: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(Option<&'a wgpu::Buffer>, Option<&'a wgpu::Buffer>)> {
        let need = |what: &str, buf: Option<&'a wgpu::Buffer>, bytes: usize| match buf {
            Some(b) if b.size() >= bytes as u64 => Ok(Some(b)),
            _ => Err(Error::InvalidArgument(format!(
                "{op}: a {} KV cache needs a {what} buffer of {bytes} bytes",
                kind.name()
            ))),
        };
        // keys' and values' per-channel f32; (keys', values') f32 per (row, KV head)
        let base = || need("base", self.base, 2 * n_kv_heads * head_dim * 4);
        let scale = || need("scale", self.scale, rows * n_kv_heads * 8);
        Ok(match kind {
            KvType::F32 => (None, None),
            KvType::F16 => (base()?, None),
            KvType::Q16 => (base()?, scale()?),
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    kv_dim: u32,
    rows: u32,
    src_row0: u32,
    /// The sequence's entry in the positions buffer (0 for `kv_base.wgsl`, which has none).
    slot: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct F16Params {
    p: Params,
    ring: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Q16Params {
    p: Params,
    head_dim: u32,
    ring: u32,
    _pad: [u32; 2],
}

/// Rows `src_row0..src_row0 + rows` of f32 keys and values (`kv_dim` per row) stored into rows
/// `dst_row0..` of a layer's 16-bit cache, as differences from the cache's base; or, through
/// [`KvStore::encode_at`], at positions `dst_row0..` read from a positions buffer, in a ring.
pub struct KvStore {
    /// The cache's type: f16 or q16 (an f32 cache takes a buffer copy).
    pub kind: KvType,
    pub kv_dim: usize,
    /// Elements per KV head: a q16 cache's scale segment.
    pub head_dim: usize,
    pub rows: usize,
    pub src_row0: usize,
    /// The first row's cache row ([`KvStore::encode`]), or its position ([`KvStore::encode_at`],
    /// where the positions buffer holds it and this copy serves the checks).
    pub dst_row0: usize,
    /// These rows begin the sequence: their mean becomes the cache's base first.
    pub sets_base: bool,
}

impl KvStore {
    /// Records the store of `k`, `v` (f32) into the 16-bit cache `kv`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        kv_in: [&wgpu::Buffer; 2],
        kv: LayerKv,
    ) -> Result<()> {
        self.encode_pos(gpu, enc, kv_in, kv, None, 0)
    }

    /// [`KvStore::encode`] of the rows at positions `pos..` (`pos` read from the positions
    /// buffer, which must hold `self.dst_row0`) into a cache of `ring` rows, position `p` in row
    /// `p % ring` (a sliding-window layer's ring wraps within the one dispatch). The dispatch's
    /// parameters, and so its bind group, stay the same from one decode step to the next.
    pub fn encode_at(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        kv_in: [&wgpu::Buffer; 2],
        kv: LayerKv,
        pos: Positions,
        ring: usize,
    ) -> Result<()> {
        if ring == 0 || self.rows > ring {
            return Err(Error::InvalidArgument(format!(
                "kv_store: {} rows do not fit a ring of {ring}",
                self.rows
            )));
        }
        self.encode_pos(gpu, enc, kv_in, kv, Some(pos), ring)
    }

    fn encode_pos(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        [k, v]: [&wgpu::Buffer; 2],
        kv: LayerKv,
        pos: Option<Positions>,
        ring: usize,
    ) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || !self.kv_dim.is_multiple_of(self.head_dim)
        {
            return Err(Error::InvalidArgument(format!(
                "kv_store: rows of {} elements in heads of {} cannot be packed in 16-bit pairs",
                self.kv_dim, self.head_dim
            )));
        }
        let heads = self.kv_dim / self.head_dim;
        // the cache rows written: a ring's every row, else up to the last one
        let rows = match ring {
            0 => self.dst_row0 + self.rows,
            r => r,
        };
        let (base, scale) = kv.aux("kv_store", self.kind, rows, heads, self.head_dim)?;
        let Some(base) = base else {
            return Err(Error::InvalidArgument(
                "kv_store: an f32 cache takes a buffer copy, not this kernel".into(),
            ));
        };
        let src = ((self.src_row0 + self.rows) * self.kv_dim * 4) as u64;
        let dst = (rows * self.kv_dim * 2) as u64;
        if k.size() < src || v.size() < src || kv.k.size() < dst || kv.v.size() < dst {
            return Err(Error::InvalidArgument(format!(
                "kv_store: {} rows at {} -> {} do not fit the buffers",
                self.rows, self.src_row0, self.dst_row0
            )));
        }
        let (pos_buf, slot) = positions_or(gpu, pos, self.dst_row0)?;
        let p = Params {
            kv_dim: self.kv_dim as u32,
            rows: self.rows as u32,
            src_row0: self.src_row0 as u32,
            slot,
        };
        if self.sets_base {
            let pipeline = gpu.pipeline("kv_base", &[BASE_WGSL])?;
            gpu.dispatch(
                enc,
                &pipeline,
                bytemuck::bytes_of(&Params { slot: 0, ..p }),
                &[k, v, base],
                gpu.grid((self.kv_dim as u32).div_ceil(64)),
            );
        }
        let ring = u32::try_from(ring)
            .map_err(|_| Error::InvalidArgument(format!("kv_store: a ring of {ring} rows")))?;
        if let Some(scale) = scale {
            // one invocation per (row, KV head, keys|values)
            let pipeline = gpu.pipeline("kv_store_q16", &[Q16_WGSL])?;
            let segments = (self.rows * self.kv_dim / self.head_dim * 2) as u32;
            let q = Q16Params {
                p,
                head_dim: self.head_dim as u32,
                ring,
                _pad: [0; 2],
            };
            let mut bufs = numbered(&[k, v, kv.k, kv.v, base, scale]);
            bufs.push((POSITIONS_BINDING, &pos_buf));
            gpu.dispatch_bound(
                enc,
                &pipeline,
                bytemuck::bytes_of(&q),
                &bufs,
                gpu.grid(segments.div_ceil(64)),
            );
            return Ok(());
        }
        let pipeline = gpu.pipeline("kv_store", &[WGSL])?;
        let pairs = (self.rows * self.kv_dim / 2) as u32;
        let mut bufs = numbered(&[k, v, kv.k, kv.v, base]);
        bufs.push((POSITIONS_BINDING, &pos_buf));
        let f = F16Params {
            p,
            ring,
            _pad: [0; 3],
        };
        gpu.dispatch_bound(
            enc,
            &pipeline,
            bytemuck::bytes_of(&f),
            &bufs,
            gpu.grid(pairs.div_ceil(64)),
        );
        Ok(())
    }
}

/// CPU reference of [`KvStore`]'s base: the per-channel means of `rows` rows of `k` and of `v`,
/// keys' then values'.
pub fn kv_base_cpu(k: &[f32], v: &[f32], kv_dim: usize) -> Vec<f32> {
    let mean = |x: &[f32]| -> Vec<f32> {
        let rows = x.len() / kv_dim;
        (0..kv_dim)
            .map(|c| (0..rows).map(|r| x[r * kv_dim + c]).sum::<f32>() / rows as f32)
            .collect()
    };
    [mean(k), mean(v)].concat()
}

/// CPU reference: the f16 values an f16 cache with per-channel `base` (`kv_dim` long) stores
/// for rows `x`: f16(x - base), rounded to nearest even.
pub fn f16_cache_cpu(x: &[f32], base: &[f32]) -> Vec<half::f16> {
    x.iter()
        .zip(base.iter().cycle())
        .map(|(&v, &b)| half::f16::from_f32(v - b))
        .collect()
}

/// CPU reference: what an f16 cache with per-channel `base` holds for rows `x`, read back as
/// f32: base + f16(x - base).
pub fn f16_cached_cpu(x: &[f32], base: &[f32]) -> Vec<f32> {
    let stored = f16_cache_cpu(x, base);
    stored
        .iter()
        .zip(base.iter().cycle())
        .map(|(h, &b)| b + h.to_f32())
        .collect()
}

/// CPU reference: what a q16 cache with per-channel `base` (`kv_dim` long) stores for rows `x`
/// in segments of `head_dim`: per segment its largest |x - base| = scale, and each element as
/// round(clamp((x - base) / scale, -1, 1) * 32767), ties to even (WGSL's pack2x16snorm).
/// Returns (the integers, one scale per segment).
pub fn q16_cache_cpu(x: &[f32], base: &[f32], head_dim: usize) -> (Vec<i16>, Vec<f32>) {
    let diff: Vec<f32> = x
        .iter()
        .zip(base.iter().cycle())
        .map(|(&v, &b)| v - b)
        .collect();
    let mut ints = Vec::with_capacity(diff.len());
    let mut scales = Vec::with_capacity(diff.len() / head_dim);
    for seg in diff.chunks(head_dim) {
        let a = seg.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if a > 0.0 { 1.0 / a } else { 0.0 };
        ints.extend(
            seg.iter()
                .map(|v| ((v * inv).clamp(-1.0, 1.0) * 32767.0).round_ties_even() as i16),
        );
        scales.push(a);
    }
    (ints, scales)
}

/// CPU reference: what a q16 cache holds for rows `x`, read back as f32: base + n / 32767 *
/// scale (WGSL's unpack2x16snorm, clamped to -1).
pub fn q16_cached_cpu(x: &[f32], base: &[f32], head_dim: usize) -> Vec<f32> {
    let (ints, scales) = q16_cache_cpu(x, base, head_dim);
    ints.iter()
        .zip(base.iter().cycle())
        .enumerate()
        .map(|(i, (&n, &b))| b + (n as f32 / 32767.0).max(-1.0) * scales[i / head_dim])
        .collect()
}
