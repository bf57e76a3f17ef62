// sum(q x) and sum(x) over one 32-element run of 4-bit quants in four words, element 8j+i in bits
// 4i..4i+4 of word j (Q4_0, Q4_1, Q4_K in flint's GPU layout), x from vec4 xo on: the shared inner
// step of the rows kernels' 4-bit group decoders (shaders/quant/rows/q4_*.wgsl).
fn nibble_sums(qw: vec4<u32>, xo: u32) -> vec2<f32> {
    var s = vec4<f32>(0.0);
    var sx = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let q = vec4<u32>(qw[j]);
        let lo = vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
        let hi = vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
        let x0 = xv4[xo + 2u * j];
        let x1 = xv4[xo + 2u * j + 1u];
        s += lo * x0 + hi * x1;
        sx += x0 + x1;
    }
    return vec2<f32>(s.x + s.y + s.z + s.w, sx.x + sx.y + sx.z + sx.w);
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
    let r0 = nibble_sums(vec4<u32>(v0.y, v0.z, v0.w, v1.x), xo);
    let r1 = nibble_sums(vec4<u32>(v1.z, v1.w, v2.x, v2.y), xo + 8u);
    let r2 = nibble_sums(vec4<u32>(v2.w, v3.x, v3.y, v3.z), xo + 16u);
    let r3 = nibble_sums(v4, xo + 24u);
    *sq = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
    *sx = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
    return vec4<u32>(v0.x, v1.y, v2.z, v3.w);
}
