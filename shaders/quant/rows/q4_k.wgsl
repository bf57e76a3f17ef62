// Q4_K for the rows kernels (shaders/common/rows_dot4.wgsl): one block (36 words, layout:
// shaders/quant/q4_k.wgsl) from nine 16-byte loads: V0 = d|dmin and the three scale words, then
// V1 + s = the four quant words of sub-block s (elements 32s..32s+32). value = (d sc_s) q -
// dmin m_s, so sub-block s contributes d sc_s sum(q x) - dmin m_s sum(x) (sums:
// shaders/quant/rows/nibbles.wgsl).
const GROUP_BLOCKS: u32 = 1u;
const XSUM: bool = true; // x_prologue's run sums (nibbles.wgsl)

// dot of the block starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    let h = wv4[b4];
    let dm = unpack2x16float(h.x);
    var sq = 0.0;
    var sm = 0.0;
    for (var s = 0u; s < 8u; s++) {
        let sc = ((h.y >> (4u * s)) & 15u) | (((h.w >> (2u * s)) & 3u) << 4u);
        let m = ((h.z >> (4u * s)) & 15u) | (((h.w >> (16u + 2u * s)) & 3u) << 4u);
        sq += f32(sc) * nibble_dot(wv4[b4 + 1u + s], xo + 8u * s);
        sm += f32(m) * run_sum(xo + 8u * s);
    }
    return dm.x * sq - dm.y * sm;
}
