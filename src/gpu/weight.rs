//! A weight matrix on the GPU, kept in its quantized layout, split by rows across buffers so no
//! binding exceeds the adapter's `max_storage_buffer_binding_size`.

use super::Gpu;
use crate::error::{Error, Result};
use crate::format::DType;
use crate::ops::quant;

/// One buffer holding rows `[row0, row0 + rows)` of a weight.
pub struct WeightPart {
    pub buffer: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
    /// Word of `buffer` where this part's first row starts (non-zero for a weight that lives
    /// inside a fused buffer, see [`Weight::fuse`]).
    pub word0: usize,
}

/// A `rows` x `cols` matrix (cols = K, the row length) in the GPU layout of [`quant::to_gpu_rows`].
pub struct Weight {
    pub name: String,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// u32 words per row in the GPU layout.
    pub row_words: usize,
    pub parts: Vec<WeightPart>,
}

/// How a weight of `cols`-long rows of `dtype` is laid out: (u32 words per GPU row, rows per
/// buffer so no binding exceeds the adapter's limit, bytes per row in the file).
fn layout(gpu: &Gpu, name: &str, dtype: DType, cols: usize) -> Result<(usize, usize, usize)> {
    let row_words = quant::gpu_row_words(dtype, cols);
    let row_bytes = (row_words * 4) as u64;
    let rows_per_part = (gpu.caps.max_binding / row_bytes.max(1)) as usize;
    if rows_per_part == 0 {
        return Err(Error::Gpu(format!(
            "one row of `{name}` ({row_bytes} bytes) exceeds the adapter's max storage binding ({} bytes)",
            gpu.caps.max_binding
        )));
    }
    let src_row_bytes = dtype.bytes_for(cols as u64).ok_or_else(|| {
        Error::Model(format!(
            "`{name}`: row length {cols} is not a whole number of {dtype} blocks"
        ))
    })? as usize;
    Ok((row_words, rows_per_part, src_row_bytes))
}

impl Weight {
    /// Uploads a weight given in GGUF byte layout (`rows * cols` elements of `dtype`).
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        dtype: DType,
        raw: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Weight> {
        let (row_words, rows_per_part, src_row_bytes) = layout(gpu, name, dtype, cols)?;
        if raw.len() != src_row_bytes * rows {
            return Err(Error::Model(format!(
                "`{name}`: expected {} bytes for {rows}x{cols} {dtype}, got {}",
                src_row_bytes * rows,
                raw.len()
            )));
        }
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = rows_per_part.min(rows - row0);
            let words = quant::to_gpu_rows(
                dtype,
                &raw[row0 * src_row_bytes..(row0 + n) * src_row_bytes],
                n,
                cols,
            )?;
            let buffer = gpu.upload(name, bytemuck::cast_slice(&words));
            parts.push(WeightPart {
                buffer,
                row0,
                rows: n,
                word0: 0,
            });
            row0 += n;
        }
        Ok(Weight {
            name: name.to_string(),
            dtype,
            rows,
            cols,
            row_words,
            parts,
        })
    }

    /// Allocates the (zeroed) buffers of a `rows` x `cols` weight, split as [`Weight::upload`]
    /// splits it; [`Weight::write_rows`] then fills them piece by piece (the web loader streams
    /// a tensor from the network without holding all of it).
    pub fn alloc(gpu: &Gpu, name: &str, dtype: DType, rows: usize, cols: usize) -> Result<Weight> {
        let (row_words, rows_per_part, _) = layout(gpu, name, dtype, cols)?;
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = rows_per_part.min(rows - row0);
            let buffer = gpu.zeros(name, (n * row_words * 4) as u64)?;
            parts.push(WeightPart {
                buffer,
                row0,
                rows: n,
                word0: 0,
            });
            row0 += n;
        }
        Ok(Weight {
            name: name.to_string(),
            dtype,
            rows,
            cols,
            row_words,
            parts,
        })
    }

    /// Writes rows `row0..` given in GGUF byte layout (a whole number of rows) into the buffers.
    pub fn write_rows(&self, gpu: &Gpu, row0: usize, raw: &[u8]) -> Result<()> {
        let (row_words, _, src_row_bytes) = layout(gpu, &self.name, self.dtype, self.cols)?;
        let n = raw.len() / src_row_bytes.max(1);
        if n * src_row_bytes != raw.len() || row0 + n > self.rows {
            return Err(Error::Model(format!(
                "`{}`: {} bytes at row {row0} are not whole rows inside its {} rows of {src_row_bytes} bytes",
                self.name,
                raw.len(),
                self.rows
            )));
        }
        for part in &self.parts {
            let start = row0.max(part.row0);
            let end = (row0 + n).min(part.row0 + part.rows);
            if start >= end {
                continue;
            }
            let src = &raw[(start - row0) * src_row_bytes..(end - row0) * src_row_bytes];
            let words = quant::to_gpu_rows(self.dtype, src, end - start, self.cols)?;
            let at = ((part.word0 + (start - part.row0) * row_words) * 4) as u64;
            gpu.queue
                .write_buffer(&part.buffer, at, bytemuck::cast_slice(&words));
        }
        Ok(())
    }

    /// Moves weights of one type and row length into one buffer, one after the other, so one
    /// dispatch can read them all (fused Q/K/V and gate/up projections); each weight then views
    /// its rows of the shared buffer ([`WeightPart::word0`]). Does nothing and returns `false`
    /// when they differ in type or row length, any is split across buffers, or together they
    /// exceed one binding. The copy runs on the GPU; the old buffers are freed after it.
    pub fn fuse(gpu: &Gpu, ws: &mut [&mut Weight]) -> Result<bool> {
        let Some(first) = ws.first() else {
            return Ok(false);
        };
        let (dtype, cols) = (first.dtype, first.cols);
        let same = ws
            .iter()
            .all(|w| w.dtype == dtype && w.cols == cols && w.parts.len() == 1);
        let bytes: u64 = ws.iter().map(|w| w.gpu_bytes()).sum();
        if !same || bytes > gpu.caps.max_binding || bytes > gpu.caps.max_buffer {
            return Ok(false);
        }
        let name = ws
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let fused = gpu.zeros(&name, bytes)?;
        let mut enc = gpu.encoder();
        let mut word = 0;
        for w in ws.iter_mut() {
            let part = &mut w.parts[0];
            let n = (part.rows * w.row_words) as u64 * 4;
            enc.copy_buffer_to_buffer(
                &part.buffer,
                part.word0 as u64 * 4,
                &fused,
                word as u64 * 4,
                n,
            );
            part.buffer = fused.clone();
            part.word0 = word;
            word += part.rows * w.row_words;
        }
        gpu.submit(enc);
        gpu.check(&format!("fusing {name}"))?;
        Ok(true)
    }

    /// Whether `ws` lie one after the other in one buffer (as [`Weight::fuse`] leaves them).
    pub fn contiguous(ws: &[&Weight]) -> bool {
        let Some(first) = ws.first() else {
            return false;
        };
        let mut next = first.parts.first().map_or(0, |p| p.word0);
        ws.iter().all(|w| {
            let ok = w.parts.len() == 1
                && w.dtype == first.dtype
                && w.cols == first.cols
                && w.parts[0].buffer == first.parts[0].buffer
                && w.parts[0].word0 == next;
            next += w.rows * w.row_words;
            ok
        })
    }

    /// Bytes this weight occupies on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        (self.rows * self.row_words * 4) as u64
    }
}
