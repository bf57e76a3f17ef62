// Causal (or, for encoders, bidirectional: see visible()) attention with grouped-query heads over the
// KV cache, one workgroup per (head, query).
// Online softmax over tiles of 64 cached positions (the score matrix is never stored):
//   m = running max, l = running sum of exp(score - m), acc = running sum of exp(score - m) * V.
// q[t, head, d]; k/v cache[pos, kv_head, d]; query t sits at position pos0 + t and sees 0..=pos0+t,
// or with a sliding window of W > 0 only the last W of those (transformers' sliding_window mask:
// key k is visible to query q when q - W < k <= q). softcap > 0 applies Gemma 2's logit soft-capping
// to every score: s = softcap * tanh(s / softcap), after the scale. With ring > 0 the cache holds
// only the last `ring` positions (a sliding-window layer's ring buffer): position p sits in row
// p % ring.
//
// Split-K (p.split = 1; long-context decode): with chunk = ceil(positions the last query sees /
// splits), workgroup (head, t, s) covers only positions [first + s * chunk, first + (s + 1) * chunk)
// and writes its unnormalised partial (m, l, acc) to
// out[((t * n_heads + head) * splits + s) * (D + 2) ..] (splits = the grid's z), for
// attention_merge.wgsl to combine: many workgroups per head instead of one, so a long cache is
// read by the whole device rather than by n_heads workgroups.

// Params, p and slot(): shaders/common/attention_params.wgsl, concatenated in front
@group(0) @binding(1) var<storage, read> q: array<f32>;
// kc / vc, their loaders k1, v1, scales k_scale, v_scale and bases k_base1, v_base1:
// shaders/common/kv_f32.wgsl, kv_f16.wgsl or kv_q16.wgsl, concatenated in front
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_D: u32 = 256u;      // head_dim up to 256: each thread owns dims lid, lid+64, ...
var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> sc: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;              // query t of this sequence, row row0 + t of q and out
    let D = p.head_dim;
    let kvh = head / (p.n_heads / p.n_kv_heads);
    let kv_row = p.n_kv_heads * D;
    let qbase = ((p.row0 + t) * p.n_heads + head) * D;
    for (var d = lid; d < D; d += WG) { qs[d] = q[qbase + d]; }
    workgroupBarrier();
    // q . base_k: the part of every score the cache's base holds (0 for an f32 cache)
    var qk0 = 0.0;
    for (var d = 0u; d < D; d++) { qk0 += qs[d] * k_base1(kvh * D + d); }

    let vis = visible(t);
    var first = vis.x;
    var end = vis.y;
    if (p.split != 0u) {
        let last = visible(p.tokens - 1u);
        let chunk = (last.y - last.x + nwg.z - 1u) / nwg.z;
        first = min(vis.y, first + wid.z * chunk);
        end = min(vis.y, first + chunk);
    }
    var m = -3.0e38;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var t0 = first; t0 < end; t0 += WG) {
        let pos = t0 + lid;
        var s = -3.0e38;
        if (pos < end) {
            let row = slot(pos);
            let kb = row * kv_row + kvh * D;
            var dot_ = 0.0;
            for (var d = 0u; d < D; d++) { dot_ += qs[d] * k1(kb + d); }
            // (k_scale: the segment's scale, 1 unless q16)
            s = (dot_ * k_scale(row * p.n_kv_heads + kvh) + qk0) * p.scale;
            if (p.softcap > 0.0) { s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0)); }
        }
        sc[lid] = s;
        workgroupBarrier();
        let cnt = min(WG, end - t0);
        var tmax = m;
        for (var j = 0u; j < cnt; j++) { tmax = max(tmax, sc[j]); }
        let corr = exp(m - tmax);
        l *= corr;
        for (var c = 0u; c < 4u; c++) { acc[c] *= corr; }
        for (var j = 0u; j < cnt; j++) {
            let e = exp(sc[j] - tmax);
            l += e;
            let row = slot(t0 + j);
            let vb = row * kv_row + kvh * D;
            let ev = e * v_scale(row * p.n_kv_heads + kvh);
            for (var c = 0u; c < 4u; c++) {
                let d = lid + c * WG;
                if (d < D) { acc[c] += ev * v1(vb + d); }
            }
        }
        m = tmax;
        workgroupBarrier();
    }
    if (p.split != 0u) {
        let pb = ((t * p.n_heads + head) * nwg.z + wid.z) * (D + 2u);
        if (lid == 0u) {
            out[pb] = m;
            out[pb + 1u] = l;
        }
        for (var c = 0u; c < 4u; c++) {
            let d = lid + c * WG;
            if (d < D) { out[pb + 2u + d] = acc[c] + l * v_base1(kvh * D + d); }
        }
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        let d = lid + c * WG;
        if (d < D) { out[qbase + d] = acc[c] / l + v_base1(kvh * D + d); }
    }
}
