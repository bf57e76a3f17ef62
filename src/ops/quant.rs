//! Weight formats: the CPU reference dequantizer, the GPU word layout, and small quantizers for tests.
//!
//! # Sources
//! Block layouts follow ggml: the `block_*` structs of `ggml/src/ggml-common.h` and the
//! `dequantize_row_*` functions of `ggml/src/ggml-quants.c`. The arithmetic order of [`dequantize`]
//! (which product is rounded to f32 first) follows gguf-py's `gguf/quants.py` (`dequantize_blocks`),
//! so that flint's CPU values are bit-identical to the reference fixtures made with it.
//!
//! # The GPU layout
//! A `rows` x `cols` weight (cols = K, the row length, ggml `ne[0]`) becomes an `array<u32>`: rows
//! one after another, each row a sequence of blocks of [`gpu_block`] words. The WGSL fragments in
//! `shaders/quant/<type>.wgsl` decode it; each defines `QK` (elements per block), `QWORDS` (words per
//! block) and `fn dq8(base, j)`, which returns elements `[8j, 8j + 8)` of the block at word `base`.
//!
//! A GPU block holds the same bits as the GGUF block (and takes the same room, rounded up to whole
//! words), but re-ordered so that `dq8` reads whole, aligned words and finds the 8 elements it wants
//! in as few of them as possible:
//!
//! * **nibble word**: the low 4 bits of elements `8j .. 8j+8`, element `8j+i` in bits `4i .. 4i+4`.
//!   GGUF instead pairs element `l` with element `l+16` (Q4_0..Q5_1) or `l+32` (K-quants) in a byte.
//! * **high-bit words** (Q5_0, Q5_1, Q5_K): bit `e % 32` of word `e / 32` is the 5th bit of element
//!   `e` of the block. For Q5_0/Q5_1 that is exactly GGUF's `qh` read as a little-endian u32.
//!
//! | type | words | word layout |
//! |------|------:|-------------|
//! | F32  | 8  | 8 elements, a row zero-padded to a multiple of 8 elements |
//! | F16, BF16 | 4 | 8 elements, 2 per word (element `2i` in the low half), rows padded likewise |
//! | Q4_0 | 5  | `d` (f16, low half) · 4 nibble words |
//! | Q4_1 | 5  | `d` (low half), `m` (high half) · 4 nibble words |
//! | Q5_0 | 6  | `d` · high-bit word · 4 nibble words |
//! | Q5_1 | 6  | `d`, `m` · high-bit word · 4 nibble words |
//! | Q8_0 | 9  | `d` · 8 words of int8 quants (GGUF bytes 2..34, now aligned) |
//! | Q4_K | 36 | `d`, `dmin` · scales: 3 words (below) · 32 nibble words |
//! | Q5_K | 44 | `d`, `dmin` · scales: 3 words · 8 high-bit words · 32 nibble words |
//! | Q6_K | 56 | `d` · 16 int8 scales (4 words, GGUF order) · 3 zero words · 32 nibble words · 16 words of 2-bit highs |
//!
//! K-quant scales: GGUF packs the eight 6-bit scales `sc[s]` and mins `m[s]` of the 32-element
//! sub-blocks into 12 bytes (see [`k_scale_min`]). flint keeps the same 96 bits as: word 1 = low 4
//! bits of `sc[s]` at bits `4s`; word 2 = low 4 bits of `m[s]` at bits `4s`; word 3 = high 2 bits of
//! `sc[s]` at bits `2s` and high 2 bits of `m[s]` at bits `16 + 2s` — decoded without branches.
//!
//! Q6_K: element `e` has scale `scales[e / 16]` (GGUF's scale order, once its 128-element halves and
//! four 32-element quarters are untangled), low 4 bits in the nibble words and its high 2 bits at bits
//! `2 * (e % 16)` of high word `e / 16`. Its 3 zero words make the block 56 words, a whole number
//! of 16-byte vectors, and put the nibble and high words on vector boundaries (the rows kernels'
//! vectorised decoder, `shaders/quant/rows/q6_k.wgsl`).

use crate::format::DType;
use crate::{Error, Result};
use half::f16;

/// Elements per K-quant super-block (ggml `QK_K`).
const QK_K: usize = 256;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn u16_at(b: &[u8], i: usize) -> u32 {
    u16::from_le_bytes([b[i], b[i + 1]]) as u32
}

fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block from its 12 packed bytes
/// (ggml-quants.c `get_scale_min_k4`): sub-blocks 0..4 keep 6 bits in bytes `j` and `j+4`; sub-blocks
/// 4..8 keep their low 4 bits in byte `j+4` and their high 2 bits in the top bits of bytes `j-4`, `j`.
pub fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins into 12 bytes: the inverse of [`k_scale_min`].
fn k_pack_scale_min(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            q[j] |= sc[j] & 63;
            q[j + 4] |= m[j] & 63;
        } else {
            q[j + 4] |= (sc[j] & 0xF) | ((m[j] & 0xF) << 4);
            q[j - 4] |= (sc[j] >> 4) << 6;
            q[j] |= (m[j] >> 4) << 6;
        }
    }
    q
}

// ---------------------------------------------------------------------------------------------
// CPU reference dequantization, one block at a time.
// ---------------------------------------------------------------------------------------------

/// Q4_0 (ggml-common.h `block_q4_0`): `d: f16, qs[16]`; element `l` is the low nibble of `qs[l]`,
/// element `l + 16` the high nibble; value = `d * (q - 8)`.
fn dq_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for l in 0..16 {
        let q = b[2 + l];
        y[l] = d * ((q & 0xF) as i32 - 8) as f32;
        y[l + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1 (`block_q4_1`): `d, m: f16, qs[16]`; value = `d * q + m`.
fn dq_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for l in 0..16 {
        let q = b[4 + l];
        y[l] = d * (q & 0xF) as f32 + m;
        y[l + 16] = d * (q >> 4) as f32 + m;
    }
}

/// The 5th bits of a Q5_0/Q5_1 block: `qh[4]` read as a little-endian u32, bit `e` for element `e`.
fn q5_high(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Q5_0 (`block_q5_0`): `d: f16, qh[4], qs[16]`; q = nibble | (bit e of qh) << 4; value = `d * (q - 16)`.
fn dq_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = q5_high(b, 2);
    for l in 0..16 {
        let q = b[6 + l];
        let q0 = (q & 0xF) as u32 | ((qh >> l) & 1) << 4;
        let q1 = (q >> 4) as u32 | ((qh >> (l + 16)) & 1) << 4;
        y[l] = d * (q0 as i32 - 16) as f32;
        y[l + 16] = d * (q1 as i32 - 16) as f32;
    }
}

/// Q5_1 (`block_q5_1`): `d, m: f16, qh[4], qs[16]`; value = `d * q + m`.
fn dq_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = q5_high(b, 4);
    for l in 0..16 {
        let q = b[8 + l];
        let q0 = (q & 0xF) as u32 | ((qh >> l) & 1) << 4;
        let q1 = (q >> 4) as u32 | ((qh >> (l + 16)) & 1) << 4;
        y[l] = d * q0 as f32 + m;
        y[l + 16] = d * q1 as f32 + m;
    }
}

/// Q8_0 (`block_q8_0`): `d: f16, qs[32]: i8`; value = `d * q`.
fn dq_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for l in 0..32 {
        y[l] = d * (b[2 + l] as i8) as f32;
    }
}

/// Q4_K (`block_q4_K`): `d, dmin: f16, scales[12], qs[128]`. Sub-block `s` (32 elements) uses
/// `qs[32*(s/2) ..][..32]`, low nibbles for even `s`, high for odd; value = `(d*sc) * q - (dmin*m)`.
fn dq_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for s in 0..8 {
        let (sc, m) = k_scale_min(s, scales);
        let (ds, dm) = (d * sc as f32, dmin * m as f32);
        let shift = 4 * (s % 2);
        for l in 0..32 {
            let q = (qs[32 * (s / 2) + l] >> shift) & 0xF;
            y[32 * s + l] = ds * q as f32 - dm;
        }
    }
}

/// Q5_K (`block_q5_K`): `d, dmin: f16, scales[12], qh[32], qs[128]`; as Q4_K, plus the 5th bit of
/// element `32*s + l` in bit `s` of `qh[l]`.
fn dq_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for s in 0..8 {
        let (sc, m) = k_scale_min(s, scales);
        let (ds, dm) = (d * sc as f32, dmin * m as f32);
        let shift = 4 * (s % 2);
        for l in 0..32 {
            let q = ((qs[32 * (s / 2) + l] >> shift) & 0xF) | (((qh[l] >> s) & 1) << 4);
            y[32 * s + l] = ds * q as f32 - dm;
        }
    }
}

/// Q6_K (`block_q6_K`): `ql[128], qh[64], scales[16]: i8, d: f16`. In each 128-element half `h`,
/// for `l` in 0..32: quarter `t` (0..4) takes its low 4 bits from `ql[64h + l + 32*(t%2)]` (low nibble
/// for t < 2, high for t >= 2) and its high 2 bits from bits `2t` of `qh[32h + l]`; the element
/// `e = 128h + 32t + l` has scale `scales[e / 16]`; value = `(d * scale) * (q - 32)`.
fn dq_q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for h in 0..2 {
        for t in 0..4 {
            for l in 0..32 {
                let lo = (ql[64 * h + l + 32 * (t % 2)] >> (4 * (t / 2))) & 0xF;
                let hi = (qh[32 * h + l] >> (2 * t)) & 3;
                let q = (lo | (hi << 4)) as i32 - 32;
                let e = 128 * h + 32 * t + l;
                y[e] = (d * scales[e / 16] as i8 as f32) * q as f32;
            }
        }
    }
}

/// Dequantizes whole blocks of `dtype` (GGUF bytes `raw`) into `out`, which must hold exactly the
/// number of elements `raw` encodes. This is the plain reference the GPU kernels are tested against.
pub fn dequantize(dtype: DType, raw: &[u8], out: &mut [f32]) -> Result<()> {
    let (qk, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !raw.len().is_multiple_of(bb) {
        return Err(Error::InvalidArgument(format!(
            "dequantize {dtype}: {} bytes is not a whole number of {bb}-byte blocks",
            raw.len()
        )));
    }
    let n = raw.len() / bb * qk;
    if out.len() != n {
        return Err(Error::InvalidArgument(format!(
            "dequantize {dtype}: {} bytes hold {n} elements, but the output has room for {}",
            raw.len(),
            out.len()
        )));
    }
    let block: fn(&[u8], &mut [f32]) = match dtype {
        DType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        DType::F16 => |b, y| y[0] = f16_at(b, 0),
        DType::BF16 => |b, y| y[0] = f32::from_bits(u16_at(b, 0) << 16),
        DType::Q4_0 => dq_q4_0,
        DType::Q4_1 => dq_q4_1,
        DType::Q5_0 => dq_q5_0,
        DType::Q5_1 => dq_q5_1,
        DType::Q8_0 => dq_q8_0,
        DType::Q4_K => dq_q4_k,
        DType::Q5_K => dq_q5_k,
        DType::Q6_K => dq_q6_k,
    };
    for (b, y) in raw.chunks_exact(bb).zip(out.chunks_exact_mut(qk)) {
        block(b, y);
    }
    Ok(())
}

/// Convenience: dequantizes `raw` into a new vector.
pub fn dequantize_vec(dtype: DType, raw: &[u8]) -> Result<Vec<f32>> {
    let n = raw.len() / dtype.block_bytes().max(1) * dtype.block_elems();
    let mut out = vec![0.0; n];
    dequantize(dtype, raw, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// GPU layout.
// ---------------------------------------------------------------------------------------------

/// `(qk, words)`: elements per GPU block (8, 32 or 256) and u32 words per GPU block.
/// The WGSL fragment of the type defines the same numbers as `QK` and `QWORDS`.
pub fn gpu_block(dtype: DType) -> (usize, usize) {
    match dtype {
        DType::F32 => (8, 8),
        DType::F16 | DType::BF16 => (8, 4),
        DType::Q4_0 | DType::Q4_1 => (32, 5),
        DType::Q5_0 | DType::Q5_1 => (32, 6),
        DType::Q8_0 => (32, 9),
        DType::Q4_K => (256, 36),
        DType::Q5_K => (256, 44),
        DType::Q6_K => (256, 56),
    }
}

/// u32 words per row of `cols` elements in the GPU layout, padded to a multiple of 4 words (a
/// partial last block counts whole; for block-quantized types [`to_gpu_rows`] only accepts `cols`
/// that are a whole number of blocks).
pub fn gpu_row_words(dtype: DType, cols: usize) -> usize {
    // padded to 16 bytes: every row starts on a vec4 boundary (the rows kernels' vector loads)
    gpu_row_data_words(dtype, cols).next_multiple_of(4)
}

/// The words of a GPU row that hold data (the kernels read these; [`gpu_row_words`] adds padding).
pub fn gpu_row_data_words(dtype: DType, cols: usize) -> usize {
    let (qk, words) = gpu_block(dtype);
    cols.div_ceil(qk) * words
}

/// Nibble word of 8 quants: element `i` in bits `4i .. 4i+4`.
fn nibble_word(q: &[u8]) -> u32 {
    q.iter()
        .enumerate()
        .fold(0, |w, (i, &v)| w | ((v as u32 & 0xF) << (4 * i)))
}

/// Bit word: bit `i` = bit `bit` of `q[i]`, for up to 32 quants.
fn bit_word(q: &[u8], bit: u32) -> u32 {
    q.iter()
        .enumerate()
        .fold(0, |w, (i, &v)| w | (((v as u32 >> bit) & 1) << i))
}

/// The 3 K-quant scale words (see the module docs) from the 12 GGUF scale bytes.
fn k_scale_words(scales: &[u8]) -> [u32; 3] {
    let mut out = [0u32; 3];
    for s in 0..8 {
        let (sc, m) = k_scale_min(s, scales);
        let (sc, m) = (sc as u32, m as u32);
        out[0] |= (sc & 0xF) << (4 * s);
        out[1] |= (m & 0xF) << (4 * s);
        out[2] |= ((sc >> 4) << (2 * s)) | ((m >> 4) << (16 + 2 * s));
    }
    out
}

/// Element-ordered quants of a block (values 0..2^bits), without scales; used by the packers.
fn block_quants(dtype: DType, b: &[u8]) -> Vec<u8> {
    match dtype {
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => {
            let (qs, qh) = match dtype {
                DType::Q4_0 => (&b[2..18], 0),
                DType::Q4_1 => (&b[4..20], 0),
                DType::Q5_0 => (&b[6..22], q5_high(b, 2)),
                _ => (&b[8..24], q5_high(b, 4)),
            };
            (0..32)
                .map(|e| {
                    let nib = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
                    nib | ((((qh >> e) & 1) as u8) << 4)
                })
                .collect()
        }
        DType::Q4_K | DType::Q5_K => {
            let qs = if dtype == DType::Q4_K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            (0..QK_K)
                .map(|e| {
                    let (s, l) = (e / 32, e % 32);
                    let nib = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
                    let hb = if dtype == DType::Q5_K {
                        (b[16 + l] >> s) & 1
                    } else {
                        0
                    };
                    nib | (hb << 4)
                })
                .collect()
        }
        DType::Q6_K => (0..QK_K)
            .map(|e| {
                let (h, t, l) = (e / 128, (e % 128) / 32, e % 32);
                let lo = (b[64 * h + l + 32 * (t % 2)] >> (4 * (t / 2))) & 0xF;
                let hi = (b[128 + 32 * h + l] >> (2 * t)) & 3;
                lo | (hi << 4)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Re-packs one GGUF block of a block-quantized type into its GPU words (see the module docs).
fn pack_block(dtype: DType, b: &[u8], out: &mut Vec<u32>) {
    let q = block_quants(dtype, b);
    let nibbles = |out: &mut Vec<u32>| out.extend(q.chunks_exact(8).map(nibble_word));
    let highs = |out: &mut Vec<u32>| out.extend(q.chunks_exact(32).map(|c| bit_word(c, 4)));
    match dtype {
        DType::Q4_0 => {
            out.push(u16_at(b, 0));
            nibbles(out);
        }
        DType::Q4_1 => {
            out.push(u16_at(b, 0) | u16_at(b, 2) << 16);
            nibbles(out);
        }
        DType::Q5_0 => {
            out.push(u16_at(b, 0));
            highs(out);
            nibbles(out);
        }
        DType::Q5_1 => {
            out.push(u16_at(b, 0) | u16_at(b, 2) << 16);
            highs(out);
            nibbles(out);
        }
        DType::Q8_0 => {
            out.push(u16_at(b, 0));
            out.extend(
                b[2..34]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        DType::Q4_K | DType::Q5_K => {
            out.push(u16_at(b, 0) | u16_at(b, 2) << 16);
            out.extend(k_scale_words(&b[4..16]));
            if dtype == DType::Q5_K {
                highs(out);
            }
            nibbles(out);
        }
        DType::Q6_K => {
            out.push(u16_at(b, 208));
            out.extend(
                b[192..208]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            out.extend([0; 3]); // to a vector boundary
            nibbles(out);
            out.extend(q.chunks_exact(16).map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u32, |w, (i, &v)| w | (((v as u32 >> 4) & 3) << (2 * i)))
            }));
        }
        DType::F32 | DType::F16 | DType::BF16 => unreachable!("plain floats are packed by rows"),
    }
}

/// Converts `rows` x `cols` elements of `dtype` in GGUF layout (`raw`) to the GPU layout: `rows` rows
/// of [`gpu_row_words`] words each. Block-quantized types need `cols` to be a whole number of blocks
/// (32, or 256 for K-quants); float rows are zero-padded to a multiple of 8 elements.
pub fn to_gpu_rows(dtype: DType, raw: &[u8], rows: usize, cols: usize) -> Result<Vec<u32>> {
    let row_bytes = dtype.bytes_for(cols as u64).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{dtype} rows of {cols} elements: not a whole number of {}-element blocks",
            dtype.block_elems()
        ))
    })? as usize;
    let expect = row_bytes.checked_mul(rows).ok_or_else(|| {
        Error::InvalidArgument(format!("{rows} x {cols} {dtype} weight: size overflows"))
    })?;
    if raw.len() != expect {
        return Err(Error::InvalidArgument(format!(
            "{rows} x {cols} {dtype} weight needs {expect} bytes, got {}",
            raw.len()
        )));
    }
    let row_words = gpu_row_words(dtype, cols);
    let mut out = Vec::with_capacity(rows * row_words);
    for row in raw.chunks_exact(row_bytes.max(1)).take(rows) {
        let start = out.len();
        match dtype {
            DType::F32 => out.extend(
                row.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            DType::F16 | DType::BF16 => out.extend(
                row.chunks(4)
                    .map(|c| u16_at(c, 0) | if c.len() == 4 { u16_at(c, 2) << 16 } else { 0 }),
            ),
            _ => {
                for b in row.chunks_exact(dtype.block_bytes()) {
                    pack_block(dtype, b, &mut out);
                }
            }
        }
        out.resize(start + row_words, 0);
    }
    if row_bytes == 0 {
        out.resize(rows * row_words, 0);
    }
    Ok(out)
}

/// A CPU model of the WGSL `dq8` fragments: elements `[8j, 8j+8)` of the GPU block at word `base`.
/// Lets tests check the GPU layout without a GPU; it mirrors `shaders/quant/<type>.wgsl` line by line.
pub fn gpu_dq8(dtype: DType, w: &[u32], base: usize, j: usize) -> [f32; 8] {
    let h = |x: u32| f16::from_bits(x as u16).to_f32();
    let nib = |q: u32| -> [u32; 8] { std::array::from_fn(|i| (q >> (4 * i)) & 0xF) };
    let mut y = [0.0f32; 8];
    match dtype {
        DType::F32 => (0..8).for_each(|i| y[i] = f32::from_bits(w[base + i])),
        DType::F16 => (0..8).for_each(|i| y[i] = h(w[base + i / 2] >> (16 * (i % 2)))),
        DType::BF16 => {
            (0..8).for_each(|i| y[i] = f32::from_bits((w[base + i / 2] >> (16 * (i % 2))) << 16))
        }
        DType::Q4_0 => {
            let d = h(w[base]);
            let q = nib(w[base + 1 + j]);
            (0..8).for_each(|i| y[i] = (q[i] as f32 - 8.0) * d);
        }
        DType::Q4_1 => {
            let (d, m) = (h(w[base]), h(w[base] >> 16));
            let q = nib(w[base + 1 + j]);
            (0..8).for_each(|i| y[i] = q[i] as f32 * d + m);
        }
        DType::Q5_0 | DType::Q5_1 => {
            let (d, m) = (h(w[base]), h(w[base] >> 16));
            let hb = w[base + 1] >> (8 * j);
            let q = nib(w[base + 2 + j]);
            for i in 0..8 {
                let q5 = (q[i] | ((hb >> i) & 1) << 4) as f32;
                y[i] = if dtype == DType::Q5_0 {
                    (q5 - 16.0) * d
                } else {
                    q5 * d + m
                };
            }
        }
        DType::Q8_0 => {
            let d = h(w[base]);
            (0..8).for_each(|i| {
                y[i] = ((w[base + 1 + 2 * j + i / 4] >> (8 * (i % 4))) as u8 as i8) as f32 * d
            });
        }
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin) = (h(w[base]), h(w[base] >> 16));
            let s = j / 4;
            let hi = w[base + 3];
            let sc = ((w[base + 1] >> (4 * s)) & 0xF) | (((hi >> (2 * s)) & 3) << 4);
            let m = ((w[base + 2] >> (4 * s)) & 0xF) | (((hi >> (16 + 2 * s)) & 3) << 4);
            let (ds, dm) = (d * sc as f32, dmin * m as f32);
            let (hb, qw) = if dtype == DType::Q5_K {
                (w[base + 4 + j / 4] >> (8 * (j % 4)), w[base + 12 + j])
            } else {
                (0, w[base + 4 + j])
            };
            let q = nib(qw);
            (0..8).for_each(|i| y[i] = ds * (q[i] | ((hb >> i) & 1) << 4) as f32 - dm);
        }
        DType::Q6_K => {
            let d = h(w[base]);
            let sb = j / 2;
            let sc = (w[base + 1 + sb / 4] >> (8 * (sb % 4))) as u8 as i8;
            let ds = d * sc as f32;
            let q = nib(w[base + 8 + j]);
            let qh = w[base + 40 + j / 2] >> (16 * (j % 2));
            (0..8).for_each(|i| y[i] = ds * ((q[i] | ((qh >> (2 * i)) & 3) << 4) as f32 - 32.0));
        }
    }
    y
}

/// Dequantizes `rows` x `cols` from the GPU layout with [`gpu_dq8`] (a test oracle for the layout).
pub fn dequantize_gpu_rows(dtype: DType, w: &[u32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    let (qk, words) = gpu_block(dtype);
    let row_words = gpu_row_words(dtype, cols);
    if w.len() != rows * row_words {
        return Err(Error::InvalidArgument(format!(
            "{rows} x {cols} {dtype} weight needs {} GPU words, got {}",
            rows * row_words,
            w.len()
        )));
    }
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for k in (0..cols).step_by(8) {
            let v = gpu_dq8(dtype, w, r * row_words + (k / qk) * words, (k % qk) / 8);
            out.extend_from_slice(&v[..(cols - k).min(8)]);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Test helpers: random valid blocks and simple quantizers.
// ---------------------------------------------------------------------------------------------

/// `rows * cols` elements of `dtype` in GGUF layout with random but valid contents: floats uniform in
/// [-1, 1]; block scales finite normal f16 of moderate size (|d| in [2^-10, 2^-4]; K-quant super-block
/// scales 64 times smaller, as they multiply 6- or 8-bit sub-block scales); all quant bits random.
/// Values stay within about ±10. Deterministic in `seed`.
pub fn random_gguf_bytes(dtype: DType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = rows * cols;
    let scale = |rng: &mut rand::rngs::StdRng, signed: bool| {
        let mag = 2f32.powf(rng.random_range(-10.0..-4.0));
        let s = if signed && rng.random::<bool>() {
            -mag
        } else {
            mag
        };
        f16_bytes(s)
    };
    match dtype {
        DType::F32 => (0..n)
            .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
            .collect(),
        DType::F16 => (0..n)
            .flat_map(|_| f16_bytes(rng.random_range(-1.0f32..1.0)))
            .collect(),
        DType::BF16 => (0..n)
            .flat_map(|_| ((rng.random_range(-1.0f32..1.0).to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        _ => {
            let nb = n / dtype.block_elems();
            let bb = dtype.block_bytes();
            let mut out = vec![0u8; nb * bb];
            rng.fill(&mut out[..]);
            for b in out.chunks_exact_mut(bb) {
                match dtype {
                    DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => {
                        b[0..2].copy_from_slice(&scale(&mut rng, true))
                    }
                    DType::Q4_1 | DType::Q5_1 => {
                        b[0..2].copy_from_slice(&scale(&mut rng, false));
                        let m = -f16_at(&scale(&mut rng, false), 0) * 8.0;
                        b[2..4].copy_from_slice(&f16_bytes(m));
                    }
                    DType::Q4_K | DType::Q5_K => {
                        let d = f16_at(&scale(&mut rng, false), 0) / 64.0;
                        b[0..2].copy_from_slice(&f16_bytes(d));
                        let dmin = f16_at(&scale(&mut rng, false), 0) / 128.0;
                        b[2..4].copy_from_slice(&f16_bytes(dmin));
                    }
                    DType::Q6_K => {
                        let d = f16_at(&scale(&mut rng, true), 0) / 64.0;
                        b[208..210].copy_from_slice(&f16_bytes(d));
                    }
                    _ => {}
                }
            }
            out
        }
    }
}

fn quantize_q4_0(x: &[f32], y: &mut Vec<u8>) {
    // ggml-quants.c quantize_row_q4_0_ref: d = (value of largest magnitude) / -8.
    let max = x
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.extend(f16_bytes(d));
    for l in 0..16 {
        let q0 = ((x[l] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[l + 16] * id + 8.5) as i8).min(15) as u8;
        y.push(q0 | (q1 << 4));
    }
}

fn quantize_q4_1(x: &[f32], y: &mut Vec<u8>) {
    // quantize_row_q4_1_ref: d = (max - min) / 15, m = min.
    let (min, max) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.extend(f16_bytes(d));
    y.extend(f16_bytes(min));
    for l in 0..16 {
        let q0 = (((x[l] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[l + 16] - min) * id + 0.5) as i8).min(15) as u8;
        y.push(q0 | (q1 << 4));
    }
}

fn push_q5(q: &[u8; 32], y: &mut Vec<u8>) {
    let qh = (0..32).fold(0u32, |h, e| h | (((q[e] >> 4) & 1) as u32) << e);
    y.extend(qh.to_le_bytes());
    y.extend((0..16).map(|l| (q[l] & 0xF) | ((q[l + 16] & 0xF) << 4)));
}

fn quantize_q5_0(x: &[f32], y: &mut Vec<u8>) {
    // quantize_row_q5_0_ref: d = (value of largest magnitude) / -16.
    let max = x
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.extend(f16_bytes(d));
    let q: [u8; 32] = std::array::from_fn(|e| ((x[e] * id + 16.5) as i8).min(31) as u8);
    push_q5(&q, y);
}

fn quantize_q5_1(x: &[f32], y: &mut Vec<u8>) {
    // quantize_row_q5_1_ref: d = (max - min) / 31, m = min.
    let (min, max) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.extend(f16_bytes(d));
    y.extend(f16_bytes(min));
    let q: [u8; 32] = std::array::from_fn(|e| (((x[e] - min) * id + 0.5) as i8).min(31) as u8);
    push_q5(&q, y);
}

fn quantize_q8_0(x: &[f32], y: &mut Vec<u8>) {
    // quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d).
    let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.extend(f16_bytes(d));
    y.extend(x.iter().map(|&v| ((v * id).round() as i8) as u8));
}

/// Q4_K/Q5_K with a plain min/max quantizer (not ggml's `make_qkx2_quants` search): per 32-element
/// sub-block, `min_s = max(0, -min x)` and a step that covers `[-min_s, max x]`; the 6-bit mins are
/// rounded up and the 6-bit scales rounded up, so that the quantization grid covers every value.
fn quantize_k_minmax(x: &[f32], nmax: u32, five_bit: bool, y: &mut Vec<u8>) {
    let sub = |s: usize| &x[32 * s..32 * s + 32];
    let mins: [f32; 8] =
        std::array::from_fn(|s| (-sub(s).iter().fold(f32::MAX, |a, &v| a.min(v))).max(0.0));
    let dmin = f16::from_f32(mins.iter().fold(0.0f32, |a, &v| a.max(v)) / 63.0).to_f32();
    let m: [u8; 8] = std::array::from_fn(|s| {
        if dmin > 0.0 {
            (mins[s] / dmin).ceil().min(63.0) as u8
        } else {
            0
        }
    });
    let need: [f32; 8] = std::array::from_fn(|s| {
        let max = sub(s).iter().fold(f32::MIN, |a, &v| a.max(v));
        ((max + dmin * m[s] as f32) / nmax as f32).max(0.0)
    });
    let d = f16::from_f32(need.iter().fold(0.0f32, |a, &v| a.max(v)) / 63.0).to_f32();
    let sc: [u8; 8] = std::array::from_fn(|s| {
        if d > 0.0 {
            (need[s] / d).ceil().min(63.0) as u8
        } else {
            0
        }
    });
    let q: Vec<u8> = (0..QK_K)
        .map(|e| {
            let s = e / 32;
            let (ds, dm) = (d * sc[s] as f32, dmin * m[s] as f32);
            if ds > 0.0 {
                ((x[e] + dm) / ds).round().clamp(0.0, nmax as f32) as u8
            } else {
                0
            }
        })
        .collect();
    y.extend(f16_bytes(d));
    y.extend(f16_bytes(dmin));
    y.extend(k_pack_scale_min(&sc, &m));
    if five_bit {
        y.extend((0..32).map(|l| (0..8).fold(0u8, |h, s| h | (((q[32 * s + l] >> 4) & 1) << s))));
    }
    for c in 0..4 {
        y.extend((0..32).map(|l| (q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4)));
    }
}

/// Q6_K with a plain symmetric quantizer: per 16-element sub-block the step is `amax / 31`, its
/// 8-bit scale rounded up so that the grid `-32..=31` covers every value.
fn quantize_q6_k(x: &[f32], y: &mut Vec<u8>) {
    let need: [f32; 16] = std::array::from_fn(|s| {
        x[16 * s..16 * s + 16]
            .iter()
            .fold(0.0f32, |a, &v| a.max(v.abs()))
            / 31.0
    });
    let d = f16::from_f32(need.iter().fold(0.0f32, |a, &v| a.max(v)) / 127.0).to_f32();
    let sc: [i8; 16] = std::array::from_fn(|s| {
        if d > 0.0 {
            (need[s] / d).ceil().min(127.0) as i8
        } else {
            0
        }
    });
    let q: Vec<u8> = (0..QK_K)
        .map(|e| {
            let ds = d * sc[e / 16] as f32;
            let v = if ds > 0.0 {
                (x[e] / ds).round().clamp(-32.0, 31.0)
            } else {
                0.0
            };
            (v as i32 + 32) as u8
        })
        .collect();
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (e, &qe) in q.iter().enumerate() {
        let (h, t, l) = (e / 128, (e % 128) / 32, e % 32);
        ql[64 * h + l + 32 * (t % 2)] |= (qe & 0xF) << (4 * (t / 2));
        qh[32 * h + l] |= (qe >> 4) << (2 * t);
    }
    y.extend(ql);
    y.extend(qh);
    y.extend(sc.iter().map(|&s| s as u8));
    y.extend(f16_bytes(d));
}

/// Quantizes `x` (a whole number of blocks of `dtype`) to GGUF bytes with simple round-to-nearest
/// quantizers: ggml's `quantize_row_*_ref` for F16, BF16 and Q4_0..Q8_0; plain min/max (Q4_K, Q5_K)
/// and abs-max (Q6_K) quantizers for the K-quants, correct but less accurate than llama.cpp's.
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>> {
    let qk = dtype.block_elems();
    if !x.len().is_multiple_of(qk) {
        return Err(Error::InvalidArgument(format!(
            "quantize {dtype}: {} elements is not a whole number of {qk}-element blocks",
            x.len()
        )));
    }
    let mut y = Vec::with_capacity(x.len() / qk * dtype.block_bytes());
    match dtype {
        DType::F32 => y.extend(x.iter().flat_map(|v| v.to_le_bytes())),
        DType::F16 => y.extend(x.iter().flat_map(|&v| f16_bytes(v))),
        DType::BF16 => y.extend(
            x.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes()),
        ),
        _ => {
            for b in x.chunks_exact(qk) {
                match dtype {
                    DType::Q4_0 => quantize_q4_0(b, &mut y),
                    DType::Q4_1 => quantize_q4_1(b, &mut y),
                    DType::Q5_0 => quantize_q5_0(b, &mut y),
                    DType::Q5_1 => quantize_q5_1(b, &mut y),
                    DType::Q8_0 => quantize_q8_0(b, &mut y),
                    DType::Q4_K => quantize_k_minmax(b, 15, false, &mut y),
                    DType::Q5_K => quantize_k_minmax(b, 31, true, &mut y),
                    DType::Q6_K => quantize_q6_k(b, &mut y),
                    _ => unreachable!(),
                }
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_scale_packing_round_trips() {
        let sc = [0, 1, 17, 63, 32, 5, 48, 63];
        let m = [63, 2, 0, 31, 16, 60, 1, 33];
        let q = k_pack_scale_min(&sc, &m);
        for s in 0..8 {
            assert_eq!(k_scale_min(s, &q), (sc[s], m[s]));
        }
    }

    #[test]
    fn gpu_layout_matches_reference_for_random_blocks() {
        for t in DType::ALL {
            let (rows, cols) = (
                3,
                if t.is_quantized() {
                    2 * t.block_elems()
                } else {
                    13
                },
            );
            let raw = random_gguf_bytes(t, rows, cols, 7);
            let want = dequantize_vec(t, &raw).unwrap();
            let words = to_gpu_rows(t, &raw, rows, cols).unwrap();
            let got = dequantize_gpu_rows(t, &words, rows, cols).unwrap();
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * a.abs().max(1e-3),
                    "{t} element {i}: {a} vs {b}"
                );
            }
        }
    }
}
