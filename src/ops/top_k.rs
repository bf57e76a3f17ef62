//! Top-k on the GPU (`shaders/top_k_groups.wgsl`, then `shaders/top_k_merge.wgsl`): the `k` largest
//! logits of each row with their token ids, so that sampling reads back `8 k` bytes per token
//! instead of the whole vocabulary (196 KB for SmolLM2's 49 152 tokens). `k = 1` is greedy argmax.
//!
//! The order is the CPU sampler's (`by_logit_desc` in src/sampling.rs): larger logit first,
//! equal logits by smaller id, `-0.0` after `+0.0`. A NaN logit is returned first (as NaN), so the
//! caller can report it rather than sample around it.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};

/// The shared part: keys, ranking, the workgroup reduction (`shaders/common/top_k.wgsl`).
pub const COMMON_WGSL: &str = include_str!("../../shaders/common/top_k.wgsl");
/// First pass: the k best of each 1024-value chunk (`shaders/top_k_groups.wgsl`).
pub const GROUPS_WGSL: &str = include_str!("../../shaders/top_k_groups.wgsl");
/// Second pass: the k best of the chunks' sorted lists (`shaders/top_k_merge.wgsl`).
pub const MERGE_WGSL: &str = include_str!("../../shaders/top_k_merge.wgsl");

/// Values one first-pass workgroup takes (`WG * PER` in `shaders/top_k_groups.wgsl`).
const CHUNK: usize = 1024;
/// Lists the second pass merges at most (`WG * LISTS` in `shaders/top_k_merge.wgsl`).
const MAX_GROUPS: usize = 512;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    k: u32,
    groups: u32,
    rows: u32,
}

/// The `k` best of each of `rows` rows of `n` f32 values.
#[derive(Clone, Copy, Debug)]
pub struct TopK {
    pub n: usize,
    pub k: usize,
    pub rows: usize,
}

impl TopK {
    /// The largest `k` the samplers hand to the GPU: each of the `k` rounds is a workgroup
    /// reduction, so the cost grows with `k` (llama.cpp's default `top_k` is 40).
    pub const MAX_K: usize = 128;

    fn groups(&self) -> usize {
        self.n.div_ceil(CHUNK)
    }

    /// u32 words of the first pass's output (the `part` buffer).
    pub fn part_words(&self) -> usize {
        self.rows * self.groups() * self.k * 2
    }

    /// u32 words of the result (the `out` buffer): `rows * k` (key, index) pairs.
    pub fn out_words(&self) -> usize {
        self.rows * self.k * 2
    }

    fn check(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        part: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("top-k: {why}")));
        if self.n == 0 || self.rows == 0 {
            return bad(format!(
                "nothing to rank ({} rows of {})",
                self.rows, self.n
            ));
        }
        if self.k == 0 || self.k > Self::MAX_K {
            return bad(format!("k = {} is outside 1..={}", self.k, Self::MAX_K));
        }
        if self.groups() > MAX_GROUPS {
            return bad(format!(
                "{} values per row is more than the {} the kernels rank",
                self.n,
                MAX_GROUPS * CHUNK
            ));
        }
        if self.rows > gpu.caps.max_workgroups_per_dim as usize {
            return bad(format!(
                "{} rows is more than one dispatch covers",
                self.rows
            ));
        }
        for (name, buf, words) in [
            ("input", x, self.rows * self.n),
            ("candidate", part, self.part_words()),
            ("output", out, self.out_words()),
        ] {
            if buf.size() < (words * 4) as u64 {
                return bad(format!(
                    "the {name} buffer holds {} bytes, {} needed",
                    buf.size(),
                    words * 4
                ));
            }
        }
        Ok(())
    }

    /// Records both passes: `x` holds the rows, `part` the first pass's candidates, `out` the
    /// result, read back with [`decode`].
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        part: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        self.check(gpu, x, part, out)?;
        let groups = self.groups();
        let first = gpu.pipeline("top_k_groups", &[COMMON_WGSL, GROUPS_WGSL])?;
        let p = Params {
            n: self.n as u32,
            k: self.k as u32,
            groups: groups as u32,
            rows: self.rows as u32,
        };
        gpu.dispatch(
            enc,
            &first,
            bytemuck::bytes_of(&p),
            &[x, part],
            [groups as u32, self.rows as u32, 1],
        );
        let merge = gpu.pipeline("top_k_merge", &[COMMON_WGSL, MERGE_WGSL])?;
        let p = Params {
            n: groups as u32,
            k: self.k as u32,
            groups: 0,
            rows: self.rows as u32,
        };
        gpu.dispatch(
            enc,
            &merge,
            bytemuck::bytes_of(&p),
            &[part, out],
            [self.rows as u32, 1, 1],
        );
        Ok(())
    }
}

/// The f32 a kernel key stands for (the inverse of `key_of` in `shaders/common/top_k.wgsl`;
/// every NaN comes back as the same NaN).
fn value_of(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7fff_ffff)
    } else {
        f32::from_bits(!key)
    }
}

/// The kernel's output for one row (`2 k` words) as (token id, logit), best first, without the
/// padding a row shorter than `k` gets.
pub fn decode(words: &[u32]) -> Vec<(u32, f32)> {
    words
        .chunks_exact(2)
        .filter(|w| w[0] != 0 && w[1] != u32::MAX)
        .map(|w| (w[1], value_of(w[0])))
        .collect()
}

/// CPU reference: the `k` best of `x` in the kernel's order (NaN first).
pub fn top_k_cpu(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = x.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
    let rank = |l: f32| if l.is_nan() { f32::INFINITY } else { l };
    v.sort_by(|a, b| {
        (b.1.is_nan().cmp(&a.1.is_nan()))
            .then(rank(b.1).total_cmp(&rank(a.1)))
            .then(a.0.cmp(&b.0))
    });
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_order() {
        let vals = [
            f32::NEG_INFINITY,
            -3.4e38,
            -1.0,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            1.0,
            3.4e38,
            f32::INFINITY,
        ];
        // the kernel's key_of, mirrored
        let key = |v: f32| {
            let b = v.to_bits();
            if b & 0x8000_0000 != 0 {
                !b
            } else {
                b | 0x8000_0000
            }
        };
        for w in vals.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(value_of(key(v)).to_bits(), v.to_bits());
            assert_ne!(key(v), 0);
        }
    }
}
