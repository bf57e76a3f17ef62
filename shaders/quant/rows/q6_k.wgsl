// Q6_K for the rows kernels (shaders/common/rows_dot4.wgsl): one block (56 words, layout:
// shaders/quant/q6_k.wgsl) from fourteen 16-byte loads: V0 = d and scale words 0..2, V1.x = scale
// word 3, V2 + s = the nibble words of elements 32s..32s+32, V10 + t / 4 component t % 4 = the
// high-bit word of elements 16t..16t+16. value = d * scale_b * (q - 32) for sub-block b of 16, so
// sub-block b contributes d * scale_b * (sum(q x) - 32 sum(x)).
const GROUP_BLOCKS: u32 = 1u;
const XSUM: bool = false; // no run sums needed (nibbles.wgsl's x_prologue only waits)

// dot of the block starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    let h0 = wv4[b4];
    let scw = vec4<u32>(h0.y, h0.z, h0.w, wv4[b4 + 1u].x);
    var total = 0.0;
    for (var s = 0u; s < 8u; s++) {
        let lw = wv4[b4 + 2u + s];
        let hv = wv4[b4 + 10u + s / 2u];
        for (var hs = 0u; hs < 2u; hs++) {
            let b = 2u * s + hs; // sub-block of 16
            let sc = f32(bitcast<i32>(scw[b >> 2u] << (24u - 8u * (b & 3u))) >> 24u);
            let hw = hv[b & 3u];
            var acc = vec4<f32>(0.0);
            var sx = vec4<f32>(0.0);
            for (var jj = 0u; jj < 2u; jj++) {
                let j = 2u * hs + jj; // nibble word within lw
                let q = vec4<u32>(lw[j]);
                let h = vec4<u32>(hw >> (16u * jj));
                let lo = ((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u))
                       | (((h >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)) << vec4<u32>(4u));
                let hi = ((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u))
                       | (((h >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u)) << vec4<u32>(4u));
                let x0 = xv4[xo + 8u * s + 2u * j];
                let x1 = xv4[xo + 8u * s + 2u * j + 1u];
                acc += vec4<f32>(lo) * x0 + vec4<f32>(hi) * x1;
                sx += x0 + x1;
            }
            total += sc * (acc.x + acc.y + acc.z + acc.w - 32.0 * (sx.x + sx.y + sx.z + sx.w));
        }
    }
    return unpack2x16float(h0.x).x * total;
}
