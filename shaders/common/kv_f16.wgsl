// The attention kernels' view of an f16 KV cache (kv_store.wgsl writes it: element 2j in the low
// half of word j, 2j+1 in the high half; read with unpack2x16float, so no shader-f16 is needed).
// Same functions as kv_f32.wgsl. A key is base_k + its cached f16 value, a value base_v + its
// cached one (base: the sequence's per-channel f32 base, keys then values, kv_base.wgsl): the
// kernels add q . base_k to every score and base_v to the output instead of adding the base to
// every load. Needs Params (attention_params.wgsl) in front.
@group(0) @binding(2) var<storage, read> kc: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> kv_base: array<f32>;

fn k1(i: u32) -> f32 { return unpack2x16float(kc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
fn v1(i: u32) -> f32 { return unpack2x16float(vc[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }
// elements 4i .. 4i+4
fn k4(i: u32) -> vec4<f32> { let w = kc[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn v4(i: u32) -> vec4<f32> { let w = vc[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
// the scales of segment s = row * n_kv_heads + KV head (an f16 cache is not scaled)
fn k_scale(s: u32) -> f32 { return 1.0; }
fn v_scale(s: u32) -> f32 { return 1.0; }
// the bases of element i of a row, and of elements 4i .. 4i+4
fn k_base1(i: u32) -> f32 { return kv_base[i]; }
fn v_base1(i: u32) -> f32 { return kv_base[p.n_kv_heads * p.head_dim + i]; }
fn base4(o: u32) -> vec4<f32> { return vec4<f32>(kv_base[o], kv_base[o + 1u], kv_base[o + 2u], kv_base[o + 3u]); }
fn k_base4(i: u32) -> vec4<f32> { return base4(4u * i); }
fn v_base4(i: u32) -> vec4<f32> { return base4(p.n_kv_heads * p.head_dim + 4u * i); }
