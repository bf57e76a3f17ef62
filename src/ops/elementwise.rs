//! Element-wise ops: SwiGLU (`shaders/swiglu.wgsl`), GeGLU (`shaders/geglu.wgsl`), residual add
//! (`shaders/add.wgsl`), bias add (`shaders/bias.wgsl`) and the in-place unary ops of
//! `shaders/unary.wgsl` (scale, soft-cap, GELU tanh and erf).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};

/// The SwiGLU kernel (`shaders/swiglu.wgsl`).
pub const SWIGLU_WGSL: &str = include_str!("../../shaders/swiglu.wgsl");
/// The residual-add kernel (`shaders/add.wgsl`).
pub const ADD_WGSL: &str = include_str!("../../shaders/add.wgsl");
/// The GeGLU kernel (`shaders/geglu.wgsl`).
pub const GEGLU_WGSL: &str = include_str!("../../shaders/geglu.wgsl");
/// The bias kernel (`shaders/bias.wgsl`).
pub const BIAS_WGSL: &str = include_str!("../../shaders/bias.wgsl");
/// The activation functions (`shaders/common/act.wgsl`), concatenated in front of the kernels
/// that apply them.
pub const ACT_WGSL: &str = include_str!("../../shaders/common/act.wgsl");
/// The unary kernel (`shaders/unary.wgsl`).
pub const UNARY_WGSL: &str = include_str!("../../shaders/unary.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

fn encode_binary(
    gpu: &Gpu,
    enc: &mut Recorder,
    name: &str,
    sources: &[&str],
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
    let pipeline = gpu.pipeline(name, sources)?;
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
    enc: &mut Recorder,
    n: usize,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
) -> Result<()> {
    encode_binary(gpu, enc, "swiglu", &[ACT_WGSL, SWIGLU_WGSL], n, gate, up)
}

/// `gate = gelu_tanh(gate) * up` over `n` floats, in place.
pub fn geglu(
    gpu: &Gpu,
    enc: &mut Recorder,
    n: usize,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
) -> Result<()> {
    encode_binary(gpu, enc, "geglu", &[ACT_WGSL, GEGLU_WGSL], n, gate, up)
}

/// `x += y` over `n` floats.
pub fn add(
    gpu: &Gpu,
    enc: &mut Recorder,
    n: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<()> {
    encode_binary(gpu, enc, "add", &[ADD_WGSL], n, x, y)
}

/// CPU reference of [`swiglu`].
pub fn swiglu_cpu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    n: u32,
    total: u32,
    _pad: [u32; 2],
}

/// `x[r, :] += b` for `rows` rows of `n` floats.
pub fn add_bias(
    gpu: &Gpu,
    enc: &mut Recorder,
    rows: usize,
    n: usize,
    x: &wgpu::Buffer,
    b: &wgpu::Buffer,
) -> Result<()> {
    let total = rows * n;
    if n == 0 || x.size() < (total * 4) as u64 || b.size() < (n * 4) as u64 {
        return Err(Error::InvalidArgument(format!(
            "bias: buffers too small for {rows}x{n}"
        )));
    }
    let total = u32::try_from(total)
        .map_err(|_| Error::InvalidArgument(format!("bias: {rows}x{n} is too large")))?;
    let pipeline = gpu.pipeline("bias", &[BIAS_WGSL])?;
    let p = BiasParams {
        n: n as u32,
        total,
        _pad: [0; 2],
    };
    gpu.dispatch(
        enc,
        &pipeline,
        bytemuck::bytes_of(&p),
        &[x, b],
        gpu.grid(total.div_ceil(64)),
    );
    Ok(())
}

/// An in-place element-wise op of `shaders/unary.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `x * a`.
    Scale(f32),
    /// `a * tanh(x / a)`, `a > 0`.
    SoftCap(f32),
    /// GELU, tanh approximation.
    Gelu,
    /// GELU, exact (erf; BERT's `gelu`).
    GeluErf,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryParams {
    n: u32,
    op: u32,
    a: f32,
    _pad: u32,
}

impl Unary {
    /// Records the op over the first `n` floats of `x`.
    pub fn encode(self, gpu: &Gpu, enc: &mut Recorder, n: usize, x: &wgpu::Buffer) -> Result<()> {
        let (op, a) = match self {
            Unary::Scale(a) => (0, a),
            Unary::SoftCap(a) => (1, a),
            Unary::Gelu => (2, 0.0),
            Unary::GeluErf => (3, 0.0),
        };
        if matches!(self, Unary::SoftCap(a) if !(a > 0.0 && a.is_finite())) {
            return Err(Error::InvalidArgument(format!(
                "soft-cap {a} must be a positive number"
            )));
        }
        if x.size() < (n * 4) as u64 {
            return Err(Error::InvalidArgument(format!(
                "{self:?}: buffer smaller than {n} floats"
            )));
        }
        let n = u32::try_from(n)
            .map_err(|_| Error::InvalidArgument(format!("{self:?}: {n} floats is too many")))?;
        let pipeline = gpu.pipeline("unary", &[ACT_WGSL, UNARY_WGSL])?;
        let p = UnaryParams { n, op, a, _pad: 0 };
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[x],
            gpu.grid(n.div_ceil(64)),
        );
        Ok(())
    }

    /// CPU reference.
    pub fn cpu(self, x: f32) -> f32 {
        match self {
            Unary::Scale(a) => x * a,
            Unary::SoftCap(a) => a * (x / a).tanh(),
            Unary::Gelu => gelu_cpu(x),
            Unary::GeluErf => gelu_erf_cpu(x),
        }
    }
}

/// GELU, tanh approximation (transformers' `gelu_new` / `gelu_pytorch_tanh`).
pub fn gelu_cpu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with erf by Abramowitz & Stegun 7.1.26 in f64
/// (|error| <= 1.5e-7, as the kernel's `erf_as`; std has no erf).
pub fn gelu_erf_cpu(x: f32) -> f32 {
    let u = x as f64 * std::f64::consts::FRAC_1_SQRT_2;
    let a = u.abs();
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
        + 0.254829592)
        * t;
    let erf = u.signum() * (1.0 - poly * (-a * a).exp());
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

/// CPU reference of [`geglu`].
pub fn geglu_cpu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(g, u)| gelu_cpu(*g) * u).collect()
}
