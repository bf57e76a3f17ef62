//! Embedding lookup (`shaders/embed.wgsl`): `out[t, :] = W[ids[t], :]` dequantized to f32, with the
//! weight kept in its quantized GPU layout (decoded by the type's `dq8` fragment).

use crate::error::{Error, Result};
use crate::format::DType;
use crate::gpu::{Gpu, Recorder, Weight};
use crate::ops::matmul::dq8_fragment;
use crate::ops::quant;

/// The pipeline key and WGSL sources (concatenated in this order) of the lookup for a table type.
pub fn sources(dtype: DType) -> (String, [&'static str; 2]) {
    let key = format!("embed.{}", dtype.name().to_ascii_lowercase());
    (
        key,
        [
            dq8_fragment(dtype),
            include_str!("../../shaders/embed.wgsl"),
        ],
    )
}

/// Uniform parameters (`struct Params` in `shaders/embed.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    t: u32,
    row_words: u32,
    row0: u32,
    rows: u32,
}

/// Threads per workgroup in `shaders/embed.wgsl`; each thread decodes 8 elements.
const WG: u64 = 64;

/// Looks up the rows `ids` of the embedding table `w` (`w.rows` x `w.cols`) into `out` (`ids.len()`
/// x `w.cols` floats, row-major).
pub struct Embed<'a> {
    pub w: &'a Weight,
}

impl Embed<'_> {
    /// Records the lookup. Every id must be a row of `w` and `out` must hold `ids.len() * w.cols` floats.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        ids: &[u32],
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let w = self.w;
        if let Some((t, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= w.rows)
        {
            return Err(Error::InvalidArgument(format!(
                "embed `{}`: token id {id} (position {t}) is out of range for {} rows",
                w.name, w.rows
            )));
        }
        let ids_buf = gpu.upload("embed ids", bytemuck::cast_slice(ids));
        self.encode_ids(gpu, enc, &ids_buf, ids.len(), out)
    }

    /// [`Embed::encode`] of the `n` ids the GPU buffer `ids` holds (the caller checked them: an
    /// id outside the table leaves its row of `out` as it was). A buffer written once per step
    /// keeps the dispatch's bind group the same from one decode step to the next.
    pub fn encode_ids(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        ids: &wgpu::Buffer,
        n: usize,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let w = self.w;
        if ids.size() < (n * 4) as u64 {
            return Err(Error::InvalidArgument(format!(
                "embed `{}`: an ids buffer of {} bytes cannot hold {n} ids",
                w.name,
                ids.size()
            )));
        }
        let need = (n * w.cols * 4) as u64;
        if out.size() < need {
            return Err(Error::InvalidArgument(format!(
                "embed `{}`: output of {} bytes is too small for {n} tokens x {} ({need} bytes)",
                w.name,
                out.size(),
                w.cols
            )));
        }
        let threads = n as u64 * w.cols.div_ceil(8) as u64;
        if threads == 0 {
            return Ok(());
        }
        let workgroups = u32::try_from(threads.div_ceil(WG)).map_err(|_| {
            Error::InvalidArgument(format!(
                "embed `{}`: {n} tokens x {} is too large",
                w.name, w.cols
            ))
        })?;
        let (key, srcs) = sources(w.dtype);
        let pipeline = gpu.pipeline(&key, &srcs)?;
        for part in &w.parts {
            if part.word0 != 0 {
                return Err(Error::InvalidArgument(format!(
                    "embed `{}`: a table inside a fused buffer is not supported",
                    w.name
                )));
            }
            let p = Params {
                k: w.cols as u32,
                t: n as u32,
                row_words: w.row_words as u32,
                row0: part.row0 as u32,
                rows: part.rows as u32,
            };
            gpu.dispatch(
                enc,
                &pipeline,
                bytemuck::bytes_of(&p),
                &[&part.buffer, ids, out],
                gpu.grid(workgroups),
            );
        }
        Ok(())
    }
}

/// CPU reference: rows `ids` of a `rows` x `cols` table of `dtype` given in GGUF layout, dequantized.
pub fn embed_cpu(
    dtype: DType,
    raw: &[u8],
    rows: usize,
    cols: usize,
    ids: &[u32],
) -> Result<Vec<f32>> {
    let row_bytes = dtype.bytes_for(cols as u64).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "embed: {cols} is not a whole number of {dtype} blocks"
        ))
    })? as usize;
    if raw.len() != row_bytes * rows {
        return Err(Error::InvalidArgument(format!(
            "embed: {rows} x {cols} {dtype} needs {} bytes, got {}",
            row_bytes * rows,
            raw.len()
        )));
    }
    let mut out = vec![0.0f32; ids.len() * cols];
    for (t, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= rows {
            return Err(Error::InvalidArgument(format!(
                "embed: token id {id} (position {t}) is out of range for {rows} rows"
            )));
        }
        quant::dequantize(
            dtype,
            &raw[id * row_bytes..(id + 1) * row_bytes],
            &mut out[t * cols..(t + 1) * cols],
        )?;
    }
    Ok(out)
}
