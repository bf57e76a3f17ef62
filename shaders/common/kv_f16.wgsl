// The attention kernels' view of an f16 KV cache (kv_store.wgsl writes it: element 2j in the low
// half of word j, 2j+1 in the high half; read with unpack2x16float, so no shader-f16 is needed).
// Same functions as kv_f32.wgsl.
@group(0) @binding(2) var<storage, read> kc: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec2<u32>>;

fn k1(i: u32) -> f32 { return unpack2x16float(kc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
fn v1(i: u32) -> f32 { return unpack2x16float(vc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
// elements 4i .. 4i+4
fn k4(i: u32) -> vec4<f32> { let w = kc[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn v4(i: u32) -> vec4<f32> { let w = vc[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
