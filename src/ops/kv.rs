//! Appending keys and values to an f16 KV cache (`shaders/kv_store.wgsl`); an f32 cache takes a
//! plain buffer copy instead.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The kernel (`shaders/kv_store.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/kv_store.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    kv_dim: u32,
    rows: u32,
    src_row0: u32,
    dst_row0: u32,
}

/// Rows `src_row0..src_row0 + rows` of f32 keys and values (`kv_dim` per row) rounded to f16 into
/// rows `dst_row0..` of a layer's f16 cache.
pub struct KvStore {
    pub kv_dim: usize,
    pub rows: usize,
    pub src_row0: usize,
    pub dst_row0: usize,
}

impl KvStore {
    /// Records the store of `k`, `v` (f32) into `k_cache`, `v_cache` (f16 pairs).
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        [k, v]: [&wgpu::Buffer; 2],
        [k_cache, v_cache]: [&wgpu::Buffer; 2],
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
        let src = ((self.src_row0 + self.rows) * self.kv_dim * 4) as u64;
        let dst = ((self.dst_row0 + self.rows) * self.kv_dim * 2) as u64;
        if k.size() < src || v.size() < src || k_cache.size() < dst || v_cache.size() < dst {
            return Err(Error::InvalidArgument(format!(
                "kv_store: {} rows at {} -> {} do not fit the buffers",
                self.rows, self.src_row0, self.dst_row0
            )));
        }
        let pipeline = gpu.pipeline("kv_store", &[WGSL])?;
        let p = Params {
            kv_dim: self.kv_dim as u32,
            rows: self.rows as u32,
            src_row0: self.src_row0 as u32,
            dst_row0: self.dst_row0 as u32,
        };
        let pairs = (self.rows * self.kv_dim / 2) as u32;
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[k, v, k_cache, v_cache],
            gpu.grid(pairs.div_ceil(64)),
        );
        Ok(())
    }
}

/// CPU reference: what an f16 cache holds for `x`, read back as f32 (round to nearest even).
pub fn f16_round_cpu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
