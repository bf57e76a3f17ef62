// Q4_1 for the rows kernels (shaders/common/rows_dot4.wgsl): four blocks at once from five 16-byte
// loads. Four blocks are 20 words (layout: shaders/quant/q4_1.wgsl): block i has its d|m word at
// 5i and its quant words at 5i+1 .. 5i+4, so with V0..V4 the five vec4s:
//   block 0: dm V0.x, quants V0.yzw V1.x      block 1: dm V1.y, quants V1.zw V2.xy
//   block 2: dm V2.z, quants V2.w V3.xyz      block 3: dm V3.w, quants V4.xyzw
// A block's dot is d * sum(q x) + m * sum(x) (sums: shaders/quant/rows/nibbles.wgsl).
const GROUP_BLOCKS: u32 = 4u;

// dot of the four blocks starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    let v0 = wv4[b4];
    let v1 = wv4[b4 + 1u];
    let v2 = wv4[b4 + 2u];
    let v3 = wv4[b4 + 3u];
    let v4 = wv4[b4 + 4u];
    let r0 = nibble_sums(vec4<u32>(v0.y, v0.z, v0.w, v1.x), xo);
    let r1 = nibble_sums(vec4<u32>(v1.z, v1.w, v2.x, v2.y), xo + 8u);
    let r2 = nibble_sums(vec4<u32>(v2.w, v3.x, v3.y, v3.z), xo + 16u);
    let r3 = nibble_sums(v4, xo + 24u);
    let d0 = unpack2x16float(v0.x);
    let d1 = unpack2x16float(v1.y);
    let d2 = unpack2x16float(v2.z);
    let d3 = unpack2x16float(v3.w);
    return dot(vec4<f32>(d0.x, d1.x, d2.x, d3.x), vec4<f32>(r0.x, r1.x, r2.x, r3.x))
         + dot(vec4<f32>(d0.y, d1.y, d2.y, d3.y), vec4<f32>(r0.y, r1.y, r2.y, r3.y));
}
