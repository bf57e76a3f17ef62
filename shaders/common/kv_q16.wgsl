// The attention kernels' view of a q16 KV cache (kv_store_q16.wgsl writes it): element 2j of a
// row in the low half of word j as a signed 16-bit fraction (unpack2x16snorm: n / 32767), and per
// (position, KV head) row segment an f32 scale pair (keys', values'). A key is base_k + its
// fraction * its segment's key scale, a value the same with the value scale and base_v. Same
// functions as kv_f32.wgsl / kv_f16.wgsl: the kernels multiply a whole segment's dot product by
// k_scale and a softmax weight by v_scale instead of scaling every load, and add q . base_k to
// every score and base_v to the output. Needs Params (attention_params.wgsl) in front.
@group(0) @binding(2) var<storage, read> kc: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> kv_base: array<f32>;
@group(0) @binding(6) var<storage, read> kv_scale: array<vec2<f32>>;

fn k1(i: u32) -> f32 { return unpack2x16snorm(kc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
fn v1(i: u32) -> f32 { return unpack2x16snorm(vc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
// elements 4i .. 4i+4
fn k4(i: u32) -> vec4<f32> { let w = kc[i]; return vec4<f32>(unpack2x16snorm(w.x), unpack2x16snorm(w.y)); }
fn v4(i: u32) -> vec4<f32> { let w = vc[i]; return vec4<f32>(unpack2x16snorm(w.x), unpack2x16snorm(w.y)); }
// the scales of segment s = row * n_kv_heads + KV head
fn k_scale(s: u32) -> f32 { return kv_scale[s].x; }
fn v_scale(s: u32) -> f32 { return kv_scale[s].y; }
// the bases of element i of a row, and of elements 4i .. 4i+4
fn k_base1(i: u32) -> f32 { return kv_base[i]; }
fn v_base1(i: u32) -> f32 { return kv_base[p.n_kv_heads * p.head_dim + i]; }
fn base4(o: u32) -> vec4<f32> { return vec4<f32>(kv_base[o], kv_base[o + 1u], kv_base[o + 2u], kv_base[o + 3u]); }
fn k_base4(i: u32) -> vec4<f32> { return base4(4u * i); }
fn v_base4(i: u32) -> vec4<f32> { return base4(p.n_kv_heads * p.head_dim + 4u * i); }
