// Activation functions shared by the kernels that apply them (swiglu.wgsl, geglu.wgsl, unary.wgsl,
// glu_rows.wgsl). tanh's argument is clamped to +-15 (tanh is +-1 to f32 precision there) so no
// backend overflows.

// x * sigmoid(x) (SiLU, SwiGLU's gate)
fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GELU, tanh approximation (GPT-2's gelu_new,
// Gemma's gelu_pytorch_tanh)
fn gelu_tanh(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}

// erf(x) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7; WGSL has no erf)
fn erf_as(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
        + 0.254829592) * t;
    return sign(v) * (1.0 - poly * exp(-a * a));
}

// 0.5 x (1 + erf(x / sqrt(2))): exact GELU (BERT's `gelu`, PyTorch's default)
fn gelu_erf(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf_as(v * 0.7071067811865476));
}
