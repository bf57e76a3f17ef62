// Split-K attention, second pass: combines the `splits` partials (m, l, acc[D]) that
// attention.wgsl wrote for each (query t, head) into
//   out[row0 + t, head, d] = sum_s exp(m_s - M) acc_s[d] / sum_s exp(m_s - M) l_s,  M = max_s m_s
// (the online-softmax rescaling of flash-decoding). A split that saw no position has l = 0 and
// acc = 0, so it adds nothing. One workgroup per (head, t); lanes over dimensions.

struct Params {
    n_heads: u32,
    head_dim: u32,
    splits: u32,
    row0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;
    let D = p.head_dim;
    let base = (t * p.n_heads + head) * p.splits * (D + 2u);
    var mx = -3.0e38;
    for (var s = 0u; s < p.splits; s++) { mx = max(mx, part[base + s * (D + 2u)]); }
    var l = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        let at = base + s * (D + 2u);
        l += exp(part[at] - mx) * part[at + 1u];
    }
    let ob = ((p.row0 + t) * p.n_heads + head) * D;
    for (var d = lid; d < D; d += 64u) {
        var o = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            let at = base + s * (D + 2u);
            o += exp(part[at] - mx) * part[at + 2u + d];
        }
        out[ob + d] = o / l;
    }
}
