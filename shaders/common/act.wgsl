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
