// The attention kernels' view of an f32 KV cache (concatenated in front of the attention kernels;
// kv_f16.wgsl and kv_q16.wgsl are its 16-bit twins): element i of a layer's keys / values. An f32
// cache holds them exactly: its bases are zero and its scales one.
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<f32>>;

fn k1(i: u32) -> f32 { return kc[i >> 2u][i & 3u]; }
fn v1(i: u32) -> f32 { return vc[i >> 2u][i & 3u]; }
// elements 4i .. 4i+4
fn k4(i: u32) -> vec4<f32> { return kc[i]; }
fn v4(i: u32) -> vec4<f32> { return vc[i]; }
// the scales of segment s = row * n_kv_heads + KV head (an f32 cache is not scaled)
fn k_scale(s: u32) -> f32 { return 1.0; }
fn v_scale(s: u32) -> f32 { return 1.0; }
// the bases of element i of a row, and of elements 4i .. 4i+4
fn k_base1(i: u32) -> f32 { return 0.0; }
fn v_base1(i: u32) -> f32 { return 0.0; }
fn k_base4(i: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn v_base4(i: u32) -> vec4<f32> { return vec4<f32>(0.0); }
