// Q5_K (ggml-common.h block_q5_K: as Q4_K with 5-bit quants; value = (d * sc) * q - (dmin * m)), in
// flint's GPU layout (src/ops/quant.rs):
//   word 0       d (low half) | dmin (high half)
//   word 1       low 4 bits of sc[s] at bits 4s        word 2  low 4 bits of m[s] at bits 4s
//   word 3       high 2 bits of sc[s] at bits 2s, high 2 bits of m[s] at bits 16 + 2s
//   word 4 + t   5th bits of elements 32t..32t+32, element 32t+i at bit i
//   word 12 + j  low 4 bits of elements 8j..8j+8, element 8j+i in bits 4i..4i+4
const QK: u32 = 256u;
const QWORDS: u32 = 44u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 32)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let dm = unpack2x16float(w[base]);
    let s = j >> 2u; // sub-block of 32
    let hs = w[base + 3u];
    let sc = ((w[base + 1u] >> (4u * s)) & 15u) | (((hs >> (2u * s)) & 3u) << 4u);
    let m = ((w[base + 2u] >> (4u * s)) & 15u) | (((hs >> (16u + 2u * s)) & 3u) << 4u);
    let d = dm.x * f32(sc);
    let mn = dm.y * f32(m);
    let h = vec4<u32>(w[base + 4u + s] >> (8u * (j & 3u)));
    let q = vec4<u32>(w[base + 12u + j]);
    let lo = ((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    let hi = ((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    return array<vec4<f32>, 2>(vec4<f32>(lo) * d - mn, vec4<f32>(hi) * d - mn);
}
