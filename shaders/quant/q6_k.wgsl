// Q6_K (ggml-common.h block_q6_K: 256 elements in 16 sub-blocks of 16; int8 scale per sub-block,
// f16 d; 6-bit quants; value = (d * scale) * (q - 32)), in flint's GPU layout (src/ops/quant.rs):
//   word 0       d (low half)
//   words 1..5   the 16 int8 scales, scale of sub-block b in byte b % 4 of word 1 + b / 4
//   words 5..8   zero (the block is 56 words: whole 16-byte vectors)
//   word 8 + j   low 4 bits of elements 8j..8j+8, element 8j+i in bits 4i..4i+4
//   word 40 + t  high 2 bits of elements 16t..16t+16, element 16t+i in bits 2i..2i+2
const QK: u32 = 256u;
const QWORDS: u32 = 56u;

// elements [8*j, 8*j+8) of the block whose first word is w[base]; j in [0, 32)
fn dq8(base: u32, j: u32) -> array<vec4<f32>, 2> {
    let b = j >> 1u; // sub-block of 16
    let sc = bitcast<i32>(w[base + 1u + (b >> 2u)] << (24u - 8u * (b & 3u))) >> 24u;
    let d = unpack2x16float(w[base]).x * f32(sc);
    let h = vec4<u32>(w[base + 40u + b] >> (16u * (j & 1u)));
    let q = vec4<u32>(w[base + 8u + j]);
    let lo = ((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)) << vec4<u32>(4u));
    let hi = ((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u))
           | (((h >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u)) << vec4<u32>(4u));
    return array<vec4<f32>, 2>((vec4<f32>(lo) - 32.0) * d, (vec4<f32>(hi) - 32.0) * d);
}
