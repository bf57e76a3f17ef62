//! Loading a GGUF from byte ranges: the header from a prefix of the file, then each tensor read in
//! pieces of at most [`CHUNK_BYTES`] and written straight into its GPU buffers, in file order.
//!
//! ```text
//! read(0..prefix) ─► Gguf::from_header_bytes ─► config, tokenizer, chat template
//! for each tensor (file order): read(piece) ─► repack (quant::to_gpu_rows) ─► queue.write_buffer
//! uploaded tensors ─► Model::load_from ─► Engine::assemble   (a generation model)
//!                  └► Embedder::from_gguf                  (an embedding model: embed::gguf_embeds)
//! ```
//!
//! Peak memory is the header plus one piece, not the model: the bytes go to the GPU as they come.

use crate::bench::ModelSizes;
use crate::embed::{gguf_embeds, Embedder};
use crate::engine::{Engine, LoadOptions};
use crate::error::{Error, Result};
use crate::format::gguf::{Gguf, GGUF_MAGIC};
use crate::gpu::{Gpu, Weight};
use crate::model::{Model, TensorSource, Uploaded};
use crate::ops::quant;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::time::Duration;
use web_time::Instant;

/// Most file bytes read (and held) at once while streaming a tensor.
pub const CHUNK_BYTES: usize = 4 << 20;
/// First prefix read for the header; it grows by 4x while the header does not fit in it.
pub const HEADER_PREFIX: u64 = 1 << 20;
/// Largest header accepted (vocabularies and chat templates make headers of a few MiB).
pub const MAX_HEADER: u64 = 64 << 20;

/// Random access to a file's bytes: fetch with HTTP ranges (and a cache) in a browser, a file in
/// Node, memory or a file in tests.
#[allow(async_fn_in_trait)] // used through generics only, on one thread
pub trait RangeReader {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes at `offset` (an error if the source has fewer).
    async fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// A [`RangeReader`] over bytes in memory (tests).
pub struct MemReader<'a>(pub &'a [u8]);

impl RangeReader for MemReader<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    async fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "read of {len} bytes at {offset} is outside the {} bytes held",
                    self.0.len()
                ))
            })
    }
}

/// Reads and parses the header: a prefix of the file, grown until the header fits in it.
pub async fn read_header<R: RangeReader>(reader: &mut R) -> Result<Gguf> {
    let size = reader.size();
    if size < 8 {
        return Err(Error::Gguf(format!(
            "the file is {size} bytes long, too short for a GGUF header"
        )));
    }
    let magic = reader.read(0, 4).await?;
    if magic != GGUF_MAGIC {
        return Err(Error::Gguf(format!(
            "not a GGUF file: it starts with {magic:02x?}, not \"GGUF\" (a wrong URL, or an HTML error page?)"
        )));
    }
    let mut prefix = HEADER_PREFIX.min(size);
    loop {
        let bytes = reader.read(0, prefix as usize).await?;
        match Gguf::from_header_bytes(bytes, size) {
            Ok(g) => return Ok(g),
            // The header may just be longer than the prefix: read more, up to the limit.
            Err(_) if prefix < size && prefix < MAX_HEADER => {
                prefix = (prefix * 4).min(size).min(MAX_HEADER)
            }
            Err(e) => return Err(e),
        }
    }
}

/// What [`load`] did, for the caller's report.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Bytes of the header prefix that was parsed.
    pub header_bytes: u64,
    /// Tensor bytes read from the file.
    pub tensor_bytes: u64,
    /// Largest single read, in bytes.
    pub max_read: usize,
    /// Bytes the weights occupy on the GPU.
    pub gpu_bytes: u64,
    /// The file's tensor sizes, for the benchmark's report.
    pub sizes: ModelSizes,
    /// From the first read to the model ready to run.
    pub load_time: Duration,
}

/// What a streamed GGUF became: a generation engine, or an embedder where the file holds an
/// embedding model ([`gguf_embeds`]: an encoder such as BERT, or a GGUF with a pooling type).
pub enum Loaded {
    Engine(Box<Engine>),
    Embedder(Box<Embedder>),
}

/// Streams the GGUF behind `reader` to `gpu` and builds what it holds: tokenizer (and chat
/// template) from the header, every tensor uploaded in pieces in file order, then an [`Engine`]
/// or, for an embedding model, an [`Embedder`] from the same uploaded tensors. `opts` shapes an
/// engine (context, batch, KV cache); an embedder takes only the GPU options the device was opened
/// with. `progress(done, total)` counts file bytes (header included).
pub async fn load<R: RangeReader>(
    reader: &mut R,
    gpu: Gpu,
    opts: &LoadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Loaded, LoadStats)> {
    let t0 = Instant::now();
    let g = read_header(reader).await?;
    let mut stats = LoadStats {
        header_bytes: g.bytes().len() as u64,
        sizes: ModelSizes::of_gguf(&g),
        ..LoadStats::default()
    };
    let tokenizer = Tokenizer::from_gguf(&g)?;
    let uploaded = upload_tensors(reader, &gpu, &g, &mut stats, progress).await?;
    // every byte was reported as it was uploaded
    let mut quiet = |_, _| {};
    let src = TensorSource::uploaded(uploaded, &mut quiet);
    let loaded = if gguf_embeds(&g) {
        Loaded::Embedder(Box::new(Embedder::from_gguf(gpu, &g, src, tokenizer)?))
    } else {
        let model = Model::load_from(&gpu, &g, src)?;
        let template = g.get_str("tokenizer.chat_template").map(str::to_string);
        drop(g);
        let mut engine = Engine::assemble(gpu, model, tokenizer, template, opts)?;
        engine.load_time = t0.elapsed();
        Loaded::Engine(Box::new(engine))
    };
    stats.load_time = t0.elapsed();
    Ok((loaded, stats))
}

/// Reads every tensor of `g` from `reader` in file order, in pieces, straight into GPU buffers:
/// matrices in their GPU layout, vectors as f32. Fills `stats`; `progress` as for [`load`].
async fn upload_tensors<R: RangeReader>(
    reader: &mut R,
    gpu: &Gpu,
    g: &Gguf,
    stats: &mut LoadStats,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HashMap<String, Uploaded>> {
    // File bytes up to the end of the last tensor: the alignment padding between tensors counts
    // (so a file that ends with its last tensor reports its own length when done).
    let total = g
        .tensors
        .iter()
        .map(|t| t.file_offset + t.n_bytes)
        .max()
        .unwrap_or(g.data_offset)
        .max(g.data_offset);
    progress(g.data_offset, total);

    let mut order: Vec<_> = g.tensors.iter().collect();
    order.sort_by_key(|t| t.file_offset);
    let mut uploaded = HashMap::with_capacity(order.len());
    for t in order {
        let dtype = t.dtype()?;
        // Out-of-memory errors are reported asynchronously; catch them per tensor to name it.
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let u = match t.dims.as_slice() {
            [n] => {
                let raw = reader.read(t.file_offset, t.n_bytes as usize).await?;
                stats.max_read = stats.max_read.max(raw.len());
                let mut v = vec![0.0f32; *n as usize];
                quant::dequantize(dtype, &raw, &mut v)?;
                stats.gpu_bytes += (v.len() * 4) as u64;
                Uploaded::Vector {
                    buffer: gpu.upload(&t.name, bytemuck::cast_slice(&v)),
                    n: *n as usize,
                }
            }
            [cols, rows] => {
                let (rows, cols) = (*rows as usize, *cols as usize);
                let w = Weight::alloc(gpu, &t.name, dtype, rows, cols)?;
                let row_bytes = (t.n_bytes as usize / rows.max(1)).max(1);
                let rows_per_read = (CHUNK_BYTES / row_bytes).max(1);
                let mut row0 = 0;
                while row0 < rows {
                    let n = rows_per_read.min(rows - row0);
                    let at = t.file_offset + (row0 * row_bytes) as u64;
                    let raw = reader.read(at, n * row_bytes).await?;
                    stats.max_read = stats.max_read.max(raw.len());
                    w.write_rows(gpu, row0, &raw)?;
                    row0 += n;
                    progress(t.file_offset + (row0 * row_bytes) as u64, total);
                }
                stats.gpu_bytes += w.gpu_bytes();
                Uploaded::Weight(w)
            }
            dims => {
                return Err(Error::Model(format!(
                    "tensor `{}` has {} dimensions; the web loader takes vectors and matrices",
                    t.name,
                    dims.len()
                )))
            }
        };
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!(
                "out of GPU memory uploading `{}` after {} of {} MiB: the model is too large for this \
                 device ({e})",
                t.name,
                stats.gpu_bytes >> 20,
                total >> 20
            )));
        }
        uploaded.insert(t.name.clone(), u);
        stats.tensor_bytes += t.n_bytes;
        progress(t.file_offset + t.n_bytes, total);
    }
    Ok(uploaded)
}
