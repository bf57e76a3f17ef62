// Embedding lookup: out[t * K + k] = W[ids[t], k] for every token t, W dequantized by the type's `dq8`
// fragment (shaders/quant/<type>.wgsl, concatenated in front of this file). One thread decodes 8
// elements of one token. W may be split by rows across buffers: this dispatch sees rows
// [row0, row0 + rows) and fills only the tokens whose id falls there.

struct Params {
    K: u32,         // row length (elements)
    T: u32,         // tokens
    row_words: u32, // u32 words per weight row
    row0: u32,      // first row held by this weight part
    rows: u32,      // rows in this weight part
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let groups = (p.K + 7u) / 8u; // groups of 8 elements per row
    let g = (wid.x + wid.y * nwg.x) * 64u + lid;
    let t = g / groups;
    if (t >= p.T) { return; }
    let id = ids[t];
    if (id < p.row0 || id - p.row0 >= p.rows) { return; }
    let k = (g % groups) * 8u;
    var v = dq8((id - p.row0) * p.row_words + (k / QK) * QWORDS, (k % QK) / 8u);
    let o = t * p.K + k;
    if (k + 8u <= p.K) {
        out[o] = v[0].x; out[o + 1u] = v[0].y; out[o + 2u] = v[0].z; out[o + 3u] = v[0].w;
        out[o + 4u] = v[1].x; out[o + 5u] = v[1].y; out[o + 6u] = v[1].z; out[o + 7u] = v[1].w;
    } else {
        for (var i = 0u; i < p.K - k; i++) {
            out[o + i] = v[i / 4u][i % 4u];
        }
    }
}
