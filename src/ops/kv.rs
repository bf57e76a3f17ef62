//! Appending keys and values to an f16 KV cache (`shaders/kv_store.wgsl`, after
//! `shaders/kv_base.wgsl` for the rows that begin a sequence); an f32 cache takes a plain buffer
//! copy instead.
//!
//! An f16 cache holds each key and value as its f16 difference from a per-sequence, per-channel
//! f32 base: the mean of the sequence's first stored rows. Keys (and values) share a large
//! per-channel component across positions, so the differences are small and their f16 rounding
//! error is small in absolute terms; the attention kernels add the base back exactly (q · base to
//! every score, base to the output). This is SageAttention's "smooth K" (Zhang et al., 2024,
//! arXiv:2410.02367), applied to the cache and to values too.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The store kernel (`shaders/kv_store.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/kv_store.wgsl");
/// The base kernel (`shaders/kv_base.wgsl`).
pub const BASE_WGSL: &str = include_str!("../../shaders/kv_base.wgsl");

/// One layer's KV cache as the kernels see it.
#[derive(Clone, Copy)]
pub struct LayerKv<'a> {
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// An f16 cache's base: `2 * kv_dim` f32, keys' then values' (`None` for an f32 cache).
    pub base: Option<&'a wgpu::Buffer>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    kv_dim: u32,
    rows: u32,
    src_row0: u32,
    dst_row0: u32,
}

/// Rows `src_row0..src_row0 + rows` of f32 keys and values (`kv_dim` per row) stored into rows
/// `dst_row0..` of a layer's f16 cache, as f16 differences from the cache's base.
pub struct KvStore {
    pub kv_dim: usize,
    pub rows: usize,
    pub src_row0: usize,
    pub dst_row0: usize,
    /// These rows begin the sequence: their mean becomes the cache's base first.
    pub sets_base: bool,
}

impl KvStore {
    /// Records the store of `k`, `v` (f32) into the f16 cache `kv`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        [k, v]: [&wgpu::Buffer; 2],
        kv: LayerKv,
    ) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        if !self.kv_dim.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "kv_store: rows of {} elements cannot be packed in f16 pairs",
                self.kv_dim
            )));
        }
        let Some(base) = kv.base else {
            return Err(Error::InvalidArgument(
                "kv_store: an f16 cache needs its base buffer".into(),
            ));
        };
        let src = ((self.src_row0 + self.rows) * self.kv_dim * 4) as u64;
        let dst = ((self.dst_row0 + self.rows) * self.kv_dim * 2) as u64;
        if k.size() < src
            || v.size() < src
            || kv.k.size() < dst
            || kv.v.size() < dst
            || base.size() < (self.kv_dim * 8) as u64
        {
            return Err(Error::InvalidArgument(format!(
                "kv_store: {} rows at {} -> {} do not fit the buffers",
                self.rows, self.src_row0, self.dst_row0
            )));
        }
        let p = Params {
            kv_dim: self.kv_dim as u32,
            rows: self.rows as u32,
            src_row0: self.src_row0 as u32,
            dst_row0: self.dst_row0 as u32,
        };
        if self.sets_base {
            let pipeline = gpu.pipeline("kv_base", &[BASE_WGSL])?;
            gpu.dispatch(
                enc,
                &pipeline,
                bytemuck::bytes_of(&Params { dst_row0: 0, ..p }),
                &[k, v, base],
                gpu.grid((self.kv_dim as u32).div_ceil(64)),
            );
        }
        let pipeline = gpu.pipeline("kv_store", &[WGSL])?;
        let pairs = (self.rows * self.kv_dim / 2) as u32;
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[k, v, kv.k, kv.v, base],
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
