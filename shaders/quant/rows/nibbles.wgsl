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
