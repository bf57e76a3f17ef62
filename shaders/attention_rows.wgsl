// Causal (or bidirectional) attention for prefill on CPU-type adapters (lavapipe, SwiftShader): the same result as
// attention.wgsl (read its header for the mask, window, soft-cap and ring rules), laid out for
// SIMD lanes. One invocation per query: a workgroup holds WG queries of one head, each keeps its
// query, running max m, running sum l and output accumulator in registers, and all of them walk
// the same cached positions, so every K and V load is shared by the whole workgroup (a broadcast
// on CPU drivers) and no barrier is needed. Online softmax: no score matrix is stored. Queries
// past the last token compute on a clamped copy and are not stored; positions a query may not see
// get weight 0. D (head_dim, a multiple of 4 up to 256) is fixed per pipeline.

// Params, p and slot(): shaders/common/attention_params.wgsl, concatenated in front
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
// kc / vc, their loaders k4, v4, scales k_scale, v_scale and bases k_base4, v_base4:
// shaders/common/kv_f32.wgsl, kv_f16.wgsl or kv_q16.wgsl, concatenated in front
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

override D: u32 = 64u;
const WG: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t_first = wid.y * WG;
    let t_real = t_first + lid;
    let t = min(t_real, p.tokens - 1u);
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
    let vis = visible(t);                // this query sees positions vis.x .. vis.y
    let first = vis.x;
    let n_pos = vis.y;
    // positions the whole tile needs: from its first query's first to its last query's last
    let end = visible(min(t_first + WG, p.tokens) - 1u).y;
    var m = -3.0e38;
    var l = 0.0;
    for (var pos = visible(t_first).x; pos < end; pos++) {
        let row = slot(pos);
        let kb = row * kv_row4 + kvh * D4;
        let seg = row * p.n_kv_heads + kvh; // its scales' segment (1 unless q16)
        var dv = vec4<f32>(0.0);
        for (var i = 0u; i < D4; i++) { dv += qv[i] * k4(kb + i); }
        var s = ((dv.x + dv.y + dv.z + dv.w) * k_scale(seg) + qk0) * p.scale;
        if (p.softcap > 0.0) { s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0)); }
        let visible = pos < n_pos && pos >= first;
        s = select(-3.0e38, s, visible);
        let mn = max(m, s);
        let corr = exp(m - mn);
        let e = select(0.0, exp(s - mn), visible);
        l = l * corr + e;
        let ev = e * v_scale(seg);
        for (var i = 0u; i < D4; i++) { acc[i] = acc[i] * corr + ev * v4(kb + i); }
        m = mn;
    }
    if (t_real < p.tokens) {
        for (var i = 0u; i < D4; i++) { out[qbase4 + i] = acc[i] / l + v_base4(kvh * D4 + i); }
    }
}
