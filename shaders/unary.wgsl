// In-place element-wise ops on x[0..n], chosen by p.op:
//   0: x = x * a                                   (Gemma's embedding scale sqrt(hidden))
//   1: x = a * tanh(x / a)                          (Gemma 2's final-logit soft-capping)
//   2: x = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GELU, tanh approximation: GPT-2's
//      gelu_new, Gemma's gelu_pytorch_tanh)
//   3: x = 0.5 x (1 + erf(x / sqrt(2)))            (exact GELU: BERT)
// tanh's argument is clamped to +-15 (tanh is +-1 to f32 precision there) so no backend overflows.
// shaders/common/act.wgsl (gelu_tanh, gelu_erf) is concatenated in front.

struct Params {
    n: u32,
    op: u32,
    a: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    let v = x[i];
    switch p.op {
        case 0u: { x[i] = v * p.a; }
        case 1u: { x[i] = p.a * tanh(clamp(v / p.a, -15.0, 15.0)); }
        case 2u: { x[i] = gelu_tanh(v); }
        default: { x[i] = gelu_erf(v); }
    }
}
