// Q8_0 for the rows kernels (shaders/common/rows_dot4.wgsl): four blocks at once from nine 16-byte
// loads. Four blocks are 36 words (layout: shaders/quant/q8_0.wgsl): block i has its d word at 9i
// and its eight quant words (four int8 each, element 4k+b in byte b of word k) at 9i+1 .. 9i+8, so
// with V0..V8 the nine vec4s:
//   block 0: d V0.x, quants V0.yzw V1 V2.x       block 1: d V2.y, quants V2.zw V3 V4.xy
//   block 2: d V4.z, quants V4.w V5 V6.xyz       block 3: d V6.w, quants V7 V8
const GROUP_BLOCKS: u32 = 4u;
const XSUM: bool = false; // no run sums needed (nibbles.wgsl's x_prologue only waits)

// four int8 of a word, sign-extended
fn q8_0_i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(w)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// sum(q x) over one block whose quant words are a (elements 0..16) and b (16..32)
fn q8_0_sum(a: vec4<u32>, b: vec4<u32>, xo: u32) -> f32 {
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k++) {
        s += q8_0_i8x4(a[k]) * xv4[xo + k] + q8_0_i8x4(b[k]) * xv4[xo + 4u + k];
    }
    return s.x + s.y + s.z + s.w;
}

// dot of the four blocks starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    var v: array<vec4<u32>, 9>;
    for (var i = 0u; i < 9u; i++) { v[i] = wv4[b4 + i]; }
    let s0 = q8_0_sum(vec4<u32>(v[0].y, v[0].z, v[0].w, v[1].x),
                      vec4<u32>(v[1].y, v[1].z, v[1].w, v[2].x), xo);
    let s1 = q8_0_sum(vec4<u32>(v[2].z, v[2].w, v[3].x, v[3].y),
                      vec4<u32>(v[3].z, v[3].w, v[4].x, v[4].y), xo + 8u);
    let s2 = q8_0_sum(vec4<u32>(v[4].w, v[5].x, v[5].y, v[5].z),
                      vec4<u32>(v[5].w, v[6].x, v[6].y, v[6].z), xo + 16u);
    let s3 = q8_0_sum(v[7], v[8], xo + 24u);
    let d = vec4<f32>(unpack2x16float(v[0].x).x, unpack2x16float(v[2].y).x,
                      unpack2x16float(v[4].z).x, unpack2x16float(v[6].w).x);
    return dot(d, vec4<f32>(s0, s1, s2, s3));
}
