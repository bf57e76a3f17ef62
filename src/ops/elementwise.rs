//! Element-wise ops: SwiGLU (`shaders/swiglu.wgsl`) and residual add (`shaders/add.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The SwiGLU kernel (`shaders/swiglu.wgsl`).
pub const SWIGLU_WGSL: &str = include_str!("../../shaders/swiglu.wgsl");
/// The residual-add kernel (`shaders/add.wgsl`).
pub const ADD_WGSL: &str = include_str!("../../shaders/add.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

fn encode_binary(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    name: &str,
    source: &str,
    n: usize,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
) -> Result<()> {
    let bytes = (n * 4) as u64;
    if a.size() < bytes || b.size() < bytes {
        return Err(Error::InvalidArgument(format!(
            "{name}: buffers smaller than {n} floats"
        )));
    }
    let pipeline = gpu.pipeline(name, &[source])?;
    let p = Params {
        n: n as u32,
        _pad: [0; 3],
    };
    gpu.dispatch(
        enc,
        &pipeline,
        bytemuck::bytes_of(&p),
        &[a, b],
        gpu.grid((n as u32).div_ceil(64)),
    );
    Ok(())
}

/// `gate = silu(gate) * up` over `n` floats, in place.
pub fn swiglu(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    n: usize,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
) -> Result<()> {
    encode_binary(gpu, enc, "swiglu", SWIGLU_WGSL, n, gate, up)
}

/// `x += y` over `n` floats.
pub fn add(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    n: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<()> {
    encode_binary(gpu, enc, "add", ADD_WGSL, n, x, y)
}

/// CPU reference of [`swiglu`].
pub fn swiglu_cpu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}
