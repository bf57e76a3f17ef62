// gate[i] = gelu(gate[i]) * up[i]   (GeGLU with the tanh-approximated GELU, in place on the gate
// projection: Gemma's MLP)
// shaders/common/act.wgsl is concatenated in front.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    let g = gate[i];
    gate[i] = gelu_tanh(g) * up[i];
}
