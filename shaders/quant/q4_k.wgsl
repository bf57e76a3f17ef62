// Q4_K (ggml-common.h block_q4_K: 256 elements in 8 sub-blocks of 32; d, dmin f16; 6-bit scale sc
// and min m per sub-block; 4-bit quants; value = (d * sc) * q - (dmin * m)), in flint's GPU layout
// (src/ops/quant.rs):
//   word 0      d (low half) | dmin (high half)
//   word 1      low 4 bits of sc[s] at bits 4s        word 2  low 4 bits of m[s] at bits 4s
//   word 3      high 2 bits of sc[s] at bits 2s, high 2 bits of m[s] at bits 16 + 2s
//   word 4 + j  quants of elements 8j..8j+8, element 8j+i in bits 4i..4i+4
const QK: u32 = 256u;
const QWORDS: u32 = 36u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 32)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let dm = unpack2x16float(w[base]);
    let s = j >> 2u; // sub-block of 32
    let hs = w[base + 3u];
    let sc = ((w[base + 1u] >> (4u * s)) & 15u) | (((hs >> (2u * s)) & 3u) << 4u);
    let m = ((w[base + 2u] >> (4u * s)) & 15u) | (((hs >> (16u + 2u * s)) & 3u) << 4u);
    let d = dm.x * f32(sc);
    let mn = dm.y * f32(m);
    let q = vec4<u32>(w[base + 4u + j]);
    let lo = vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
    let hi = vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
    return array<vec4<f32>, 2>(lo * d - mn, hi * d - mn);
}
