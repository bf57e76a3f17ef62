// y[r, i] = (x[r, i] - mean(x[r, :])) / sqrt(var(x[r, :]) + eps) * weight[i] + bias[i]
// (LayerNorm as GPT-2 uses it; one workgroup per row, mean first, then the variance around it).

struct Params {
    n: u32,
    rows: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.n;
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG) { s += x[base + i]; }
    let mean = reduce_sum(lid, s) / f32(p.n);
    var ss = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        let d = x[base + i] - mean;
        ss += d * d;
    }
    let inv = inverseSqrt(reduce_sum(lid, ss) / f32(p.n) + p.eps);
    for (var i = lid; i < p.n; i += WG) {
        y[base + i] = (x[base + i] - mean) * inv * weight[i] + bias[i];
    }
}
