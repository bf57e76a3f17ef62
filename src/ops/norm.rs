//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * weight`, row by row (`shaders/rmsnorm.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};

/// The kernel (`shaders/rmsnorm.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/rmsnorm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    eps: f32,
    _pad: u32,
}

/// RMSNorm over `rows` rows of `n` floats.
pub struct RmsNorm {
    pub n: usize,
    pub rows: usize,
    pub eps: f32,
}

impl RmsNorm {
    /// Records `y = rmsnorm(x) * weight`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        let bytes = (self.n * self.rows * 4) as u64;
        if self.n == 0
            || x.size() < bytes
            || y.size() < bytes
            || weight.size() < (self.n * 4) as u64
        {
            return Err(Error::InvalidArgument(format!(
                "rmsnorm: buffers too small for {}x{}",
                self.rows, self.n
            )));
        }
        let pipeline = gpu.pipeline("rmsnorm", &[WGSL])?;
        let p = Params {
            n: self.n as u32,
            rows: self.rows as u32,
            eps: self.eps,
            _pad: 0,
        };
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[x, weight, y],
            gpu.grid(self.rows as u32),
        );
        Ok(())
    }
}

/// CPU reference.
pub fn rmsnorm_cpu(x: &[f32], weight: &[f32], n: usize, eps: f32) -> Vec<f32> {
    x.chunks(n)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let s = 1.0 / (ms + eps).sqrt();
            row.iter().zip(weight).map(move |(v, w)| v * s * w)
        })
        .collect()
}

/// The LayerNorm kernel (`shaders/layernorm.wgsl`).
pub const LAYERNORM_WGSL: &str = include_str!("../../shaders/layernorm.wgsl");

/// LayerNorm with weight and bias over `rows` rows of `n` floats (GPT-2).
pub struct LayerNorm {
    pub n: usize,
    pub rows: usize,
    pub eps: f32,
}

impl LayerNorm {
    /// Records `y = (x - mean) / sqrt(var + eps) * weight + bias`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        let bytes = (self.n * self.rows * 4) as u64;
        let vec_bytes = (self.n * 4) as u64;
        if self.n == 0
            || x.size() < bytes
            || y.size() < bytes
            || weight.size() < vec_bytes
            || bias.size() < vec_bytes
        {
            return Err(Error::InvalidArgument(format!(
                "layernorm: buffers too small for {}x{}",
                self.rows, self.n
            )));
        }
        let pipeline = gpu.pipeline("layernorm", &[LAYERNORM_WGSL])?;
        let p = Params {
            n: self.n as u32,
            rows: self.rows as u32,
            eps: self.eps,
            _pad: 0,
        };
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[x, weight, bias, y],
            gpu.grid(self.rows as u32),
        );
        Ok(())
    }
}

/// CPU reference of [`LayerNorm`].
pub fn layernorm_cpu(x: &[f32], weight: &[f32], bias: &[f32], n: usize, eps: f32) -> Vec<f32> {
    x.chunks(n)
        .flat_map(|row| {
            let mean = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let s = 1.0 / (var + eps).sqrt();
            row.iter()
                .zip(weight)
                .zip(bias)
                .map(move |((v, w), b)| (v - mean) * s * w + b)
        })
        .collect()
}
