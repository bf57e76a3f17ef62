//! Row-wise softmax (`shaders/softmax.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};

/// The kernel (`shaders/softmax.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/softmax.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    _pad: [u32; 2],
}

/// Softmax in place over `rows` rows of `n` floats.
pub fn softmax(
    gpu: &Gpu,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    n: usize,
    rows: usize,
) -> Result<()> {
    if n == 0 || x.size() < (n * rows * 4) as u64 {
        return Err(Error::InvalidArgument(format!(
            "softmax: buffer smaller than {rows}x{n}"
        )));
    }
    let pipeline = gpu.pipeline("softmax", &[WGSL])?;
    let p = Params {
        n: n as u32,
        rows: rows as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &pipeline,
        bytemuck::bytes_of(&p),
        &[x],
        gpu.grid(rows as u32),
    );
    Ok(())
}

/// CPU reference.
pub fn softmax_cpu(x: &[f32], n: usize) -> Vec<f32> {
    x.chunks(n)
        .flat_map(|r| {
            let mx = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = r.iter().map(|v| (v - mx).exp()).sum();
            r.iter().map(move |v| (v - mx).exp() / s)
        })
        .collect()
}
