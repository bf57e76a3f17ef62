// The base of a 16-bit KV cache: base[c] = the mean of keys ks[src_row0 + r, c] over the rows r <
// rows that begin a sequence, and base[kv_dim + c] the same for values. kv_store.wgsl (f16) and
// kv_store_q16.wgsl (q16) then store each key and value as its difference from the base, and the
// attention kernels add the base back in f32 (shaders/common/kv_f16.wgsl, kv_q16.wgsl). Keys and
// values share a large per-channel component across positions (SageAttention, Zhang et al. 2024,
// "smooth K", subtracts the keys' mean for the same reason): 16 bits round the small differences
// with a small absolute error instead of the large values. One invocation per channel.

struct Params {
    kv_dim: u32,   // elements per row
    rows: u32,     // rows averaged (at least 1)
    src_row0: u32, // first row in ks / vs
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ks: array<f32>;
@group(0) @binding(2) var<storage, read> vs: array<f32>;
@group(0) @binding(3) var<storage, read_write> base: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.kv_dim) { return; }
    var sk = 0.0;
    var sv = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let i = (p.src_row0 + r) * p.kv_dim + c;
        sk += ks[i];
        sv += vs[i];
    }
    base[c] = sk / f32(p.rows);
    base[p.kv_dim + c] = sv / f32(p.rows);
}
