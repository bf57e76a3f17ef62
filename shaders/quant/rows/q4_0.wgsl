// Q4_0 for the rows kernels (shaders/common/rows_dot4.wgsl): four blocks from five 16-byte loads,
// laid out as Q4_1's (shaders/quant/rows/q4_1.wgsl) with only d in its first word. value =
// d * (q - 8), so a block's dot is d * (sum(q x) - 8 sum(x)) (sums: shaders/quant/rows/nibbles.wgsl).
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
    let d = vec4<f32>(unpack2x16float(v0.x).x, unpack2x16float(v1.y).x,
                      unpack2x16float(v2.z).x, unpack2x16float(v3.w).x);
    return dot(d, vec4<f32>(r0.x, r1.x, r2.x, r3.x) - 8.0 * vec4<f32>(r0.y, r1.y, r2.y, r3.y));
}
