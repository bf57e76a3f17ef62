// Sums of the token's x over its 32-element runs, computed once per workgroup (x_prologue) instead
// of in every row's walk: the 4-bit decoders' dots are d * sum(q x) + (offset) * sum(x), and sum(x)
// is the same for every row. Runs past XSUM_RUNS (K > 32768) are summed where needed.
const XSUM_RUNS: u32 = 1024u;
var<workgroup> xsum: array<f32, XSUM_RUNS>;
var<private> xsum_base: u32;

// Called by every invocation of the workgroup, in uniform control flow, before any row_dot, with
// the vec4 index where the token's x starts: fills xsum when the type's decoder uses it (XSUM).
fn x_prologue(lid: u32, xb: u32) {
    xsum_base = xb;
    if (XSUM) {
        let runs = min(p.K / 32u, XSUM_RUNS);
        for (var r = lid; r < runs; r += WG) {
            var s = vec4<f32>(0.0);
            for (var i = 0u; i < 8u; i++) { s += xv4[xb + 8u * r + i]; }
            xsum[r] = s.x + s.y + s.z + s.w;
        }
    }
    workgroupBarrier();
}

// sum(x) over the 32-element run of the token's x that starts at vec4 xo
fn run_sum(xo: u32) -> f32 {
    let r = (xo - xsum_base) / 8u;
    if (r < XSUM_RUNS) { return xsum[r]; }
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) { s += xv4[xo + i]; }
    return s.x + s.y + s.z + s.w;
}

// sum(q x) over one 32-element run of 4-bit quants in four words, element 8j+i in bits 4i..4i+4 of
// word j (Q4_0, Q4_1, Q4_K in flint's GPU layout), x from vec4 xo on: the shared inner step of the
// rows kernels' 4-bit group decoders (shaders/quant/rows/q4_*.wgsl).
fn nibble_dot(qw: vec4<u32>, xo: u32) -> f32 {
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let q = vec4<u32>(qw[j]);
        let lo = vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
        let hi = vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
        s += lo * xv4[xo + 2u * j] + hi * xv4[xo + 2u * j + 1u];
    }
    return s.x + s.y + s.z + s.w;
}

// Four Q4_0 / Q4_1 blocks (5 words each: a scale word, then four nibble words) from the five vec4s
// at b4, layout:
//   block 0: scale V0.x, quants V0.yzw V1.x      block 1: scale V1.y, quants V1.zw V2.xy
//   block 2: scale V2.z, quants V2.w V3.xyz      block 3: scale V3.w, quants V4.xyzw
// Returns the four scale words; sq[i] = sum(q x) and sx[i] = sum(x) of block i (x from vec4 xo on).
fn q4_group(b4: u32, xo: u32, sq: ptr<function, vec4<f32>>, sx: ptr<function, vec4<f32>>) -> vec4<u32> {
    let v0 = wv4[b4];
    let v1 = wv4[b4 + 1u];
    let v2 = wv4[b4 + 2u];
    let v3 = wv4[b4 + 3u];
    let v4 = wv4[b4 + 4u];
    *sq = vec4<f32>(nibble_dot(vec4<u32>(v0.y, v0.z, v0.w, v1.x), xo),
                    nibble_dot(vec4<u32>(v1.z, v1.w, v2.x, v2.y), xo + 8u),
                    nibble_dot(vec4<u32>(v2.w, v3.x, v3.y, v3.z), xo + 16u),
                    nibble_dot(v4, xo + 24u));
    *sx = vec4<f32>(run_sum(xo), run_sum(xo + 8u), run_sum(xo + 16u), run_sum(xo + 24u));
    return vec4<u32>(v0.x, v1.y, v2.z, v3.w);
}
