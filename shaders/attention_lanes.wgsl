// Attention of one query per workgroup for CPU-type adapters (lavapipe, SwiftShader): the
// decode step. Same result as attention.wgsl (read its header for the mask, window, soft-cap and
// ring rules), laid out for SIMD lanes: the WG invocations split the cached positions between them
// (position p goes to lane p % WG), each keeps its own running max m, sum l and accumulator in
// registers (online softmax, no score matrix), and one barrier merges the lanes' partial results.
// Unlike attention.wgsl, no lane repeats another's exp or V loads. D (head_dim, a multiple of 4 up
// to 256) is fixed per pipeline; kc / vc, their loaders k4, v4, scales k_scale, v_scale and bases
// k_base4, v_base4 come from shaders/common/kv_f32.wgsl, kv_f16.wgsl or kv_q16.wgsl, concatenated
// in front.

// Params, p and slot(): shaders/common/attention_params.wgsl, concatenated in front
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

override D: u32 = 64u;
const WG: u32 = 8u;
const MAX_D4: u32 = 64u;
var<workgroup> lane_m: array<f32, 8>;
var<workgroup> lane_l: array<f32, 8>;
var<workgroup> lane_acc: array<vec4<f32>, 512>; // WG * MAX_D4: 8 KiB

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;
    let D4 = D / 4u;
    let kvh = head / (p.n_heads / p.n_kv_heads);
    let kv_row4 = p.n_kv_heads * D4;
    let qbase4 = ((p.row0 + t) * p.n_heads + head) * D4;
    var qv: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    for (var i = 0u; i < D4; i++) {
        qv[i] = q[qbase4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    // q . base_k: the part of every score the cache's base holds (0 for an f32 cache)
    var qk0 = 0.0;
    for (var i = 0u; i < D4; i++) { qk0 += dot(qv[i], k_base4(kvh * D4 + i)); }
    let vis = visible(t);
    let first = vis.x;
    let n_pos = vis.y;
    var m = -3.0e38;
    var l = 0.0;
    for (var pos = first + lid; pos < n_pos; pos += WG) {
        let row = slot(pos);
        let kb = row * kv_row4 + kvh * D4;
        let seg = row * p.n_kv_heads + kvh; // its scales' segment (1 unless q16)
        var dv = vec4<f32>(0.0);
        for (var i = 0u; i < D4; i++) { dv += qv[i] * k4(kb + i); }
        var s = ((dv.x + dv.y + dv.z + dv.w) * k_scale(seg) + qk0) * p.scale;
        if (p.softcap > 0.0) { s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0)); }
        let mn = max(m, s);
        let corr = exp(m - mn);
        let e = exp(s - mn);
        l = l * corr + e;
        let ev = e * v_scale(seg);
        for (var i = 0u; i < D4; i++) { acc[i] = acc[i] * corr + ev * v4(kb + i); }
        m = mn;
    }
    // merge the lanes: weights exp(m_j - M), M the largest lane max (a lane that saw no position
    // has m = -3e38 and weight 0)
    lane_m[lid] = m;
    lane_l[lid] = l;
    for (var i = 0u; i < D4; i++) { lane_acc[lid * MAX_D4 + i] = acc[i]; }
    workgroupBarrier();
    var big = -3.0e38;
    for (var j = 0u; j < WG; j++) { big = max(big, lane_m[j]); }
    var total = 0.0;
    for (var j = 0u; j < WG; j++) { total += lane_l[j] * exp(lane_m[j] - big); }
    for (var i = lid; i < D4; i += WG) {
        var o = vec4<f32>(0.0);
        for (var j = 0u; j < WG; j++) { o += lane_acc[j * MAX_D4 + i] * exp(lane_m[j] - big); }
        out[qbase4 + i] = o / total + v_base4(kvh * D4 + i);
    }
}
