//! Models: one file per architecture, sharing the ops, the KV cache and the scratch buffers here.

pub mod llama;

use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::HfModel;
use crate::format::{DType, ModelFile};
use crate::gpu::{Gpu, Weight};
use crate::ops::quant;
use std::collections::HashMap;

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity).
    All,
}

/// Architecture and hyper-parameters, for `flint info`.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub architecture: String,
    pub params: Vec<(String, String)>,
}

/// A loaded model of any supported architecture.
pub enum Model {
    Llama(llama::Llama),
}

impl Model {
    /// Reads the architecture from `general.architecture` and uploads the weights.
    /// `progress(done_bytes, total_bytes)` is called as tensors are uploaded.
    pub fn load(gpu: &Gpu, g: &Gguf, progress: &mut dyn FnMut(u64, u64)) -> Result<Model> {
        Model::load_from(gpu, g, TensorSource::new(g, progress))
    }

    /// [`Model::load`] with the tensors taken from `src` (the web loader's are already on the
    /// GPU, see [`TensorSource::uploaded`]); the configuration comes from `g`'s metadata.
    pub fn load_from(gpu: &Gpu, g: &Gguf, mut src: TensorSource) -> Result<Model> {
        let arch = g.get_str("general.architecture").ok_or_else(|| {
            Error::Model("missing required metadata key `general.architecture`".into())
        })?;
        match arch {
            "llama" | "mistral" => {
                let cfg = llama::LlamaConfig::from_gguf(g, arch)?;
                Ok(Model::Llama(llama::Llama::load(gpu, &mut src, cfg)?))
            }
            other => Err(Error::Model(format!(
                "unknown architecture `{other}` (flint supports: llama, mistral)"
            ))),
        }
    }

    /// Reads the architecture from `config.json`'s `architectures` and uploads the weights of a
    /// Hugging Face folder.
    pub fn load_hf(gpu: &Gpu, hf: &HfModel, progress: &mut dyn FnMut(u64, u64)) -> Result<Model> {
        let arch = hf.config.architecture()?;
        match arch {
            "LlamaForCausalLM" | "MistralForCausalLM" => {
                let cfg = llama::LlamaConfig::from_hf(&hf.config)?;
                let mut src = TensorSource::hf(hf, crate::format::hf::llama_tensor_name, progress);
                Ok(Model::Llama(llama::Llama::load(gpu, &mut src, cfg)?))
            }
            other => Err(Error::Model(format!(
                "{}: unknown architecture `{other}` (flint reads these from Hugging Face folders: \
                 LlamaForCausalLM, MistralForCausalLM)",
                hf.config.path.display()
            ))),
        }
    }

    /// Loads a GGUF file or a Hugging Face folder (see [`ModelFile::open`]).
    pub fn load_file(
        gpu: &Gpu,
        file: &ModelFile,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Model> {
        match file {
            ModelFile::Gguf(g) => Model::load(gpu, g, progress),
            ModelFile::Hf(hf) => Model::load_hf(gpu, hf, progress),
        }
    }

    /// Architecture and hyper-parameters.
    pub fn info(&self) -> ModelInfo {
        match self {
            Model::Llama(m) => m.info(),
        }
    }

    /// Vocabulary size (rows of the output head).
    pub fn vocab(&self) -> usize {
        match self {
            Model::Llama(m) => m.cfg.vocab,
        }
    }

    /// Context length the model was trained with.
    pub fn ctx_train(&self) -> usize {
        match self {
            Model::Llama(m) => m.cfg.ctx_train,
        }
    }

    /// A KV cache for `ctx` positions.
    pub fn new_cache(&self, gpu: &Gpu, ctx: usize) -> Result<KvCache> {
        match self {
            Model::Llama(m) => m.new_cache(gpu, ctx),
        }
    }

    /// One forward pass over `tokens` at positions `cache.len..` (see [`llama::Llama::forward_async`];
    /// blocking, native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_async(gpu, cache, scratch, tokens, want))
    }

    /// [`Model::forward`], awaiting the logits readback.
    pub async fn forward_async(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        match self {
            Model::Llama(m) => m.forward_async(gpu, cache, scratch, tokens, want).await,
        }
    }
}

/// A tensor already on the GPU in the form [`TensorSource::weight`] or [`TensorSource::vector`]
/// gives it: the web loader streams each tensor of a GGUF to the GPU as it arrives, then the
/// model is assembled from these.
pub enum Uploaded {
    /// A matrix in its GPU layout (a GGUF tensor of two dimensions).
    Weight(Weight),
    /// `n` floats converted to f32 (a GGUF tensor of one dimension).
    Vector { buffer: wgpu::Buffer, n: usize },
}

/// Where a [`TensorSource`] takes its tensors from.
enum Backing<'a> {
    Gguf(&'a Gguf),
    /// Tensors already uploaded, by GGUF name; each is taken out when the model asks for it.
    Uploaded(HashMap<String, Uploaded>),
    /// A Hugging Face folder; `map` turns flint's (GGUF) tensor names into the checkpoint's.
    Hf {
        hf: &'a HfModel,
        map: fn(&str) -> Option<String>,
    },
}

/// One tensor found by name: its type, ggml-order dims and bytes (a slice of the mapped file).
struct Found<'a> {
    dtype: DType,
    data: &'a [u8],
    n_bytes: u64,
}

/// Pulls tensors out of a GGUF file or a Hugging Face folder by their GGUF names, checks their
/// shapes, uploads them from the mapped file and reports progress.
///
/// Shapes are compared in ggml order (`[cols, rows]`); a safetensors shape is row-major
/// `[rows, cols]`, the same bytes, so it is reversed before the comparison and no data is moved.
pub struct TensorSource<'a> {
    backing: Backing<'a>,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<'a> TensorSource<'a> {
    /// A source over every tensor of `g`.
    pub fn new(g: &'a Gguf, progress: &'a mut dyn FnMut(u64, u64)) -> Self {
        let total = g.tensors.iter().map(|t| t.n_bytes).sum();
        TensorSource {
            backing: Backing::Gguf(g),
            done: 0,
            total,
            progress,
        }
    }

    /// A source over the safetensors of a Hugging Face folder; `map` gives the checkpoint name of
    /// a GGUF tensor name (e.g. [`crate::format::hf::llama_tensor_name`]).
    pub fn hf(
        hf: &'a HfModel,
        map: fn(&str) -> Option<String>,
        progress: &'a mut dyn FnMut(u64, u64),
    ) -> Self {
        TensorSource {
            backing: Backing::Hf { hf, map },
            done: 0,
            total: hf.tensors.total_bytes(),
            progress,
        }
    }

    /// A source over tensors already on the GPU (their bytes were reported as they were uploaded).
    pub fn uploaded(
        tensors: HashMap<String, Uploaded>,
        progress: &'a mut dyn FnMut(u64, u64),
    ) -> Self {
        TensorSource {
            backing: Backing::Uploaded(tensors),
            done: 0,
            total: 0,
            progress,
        }
    }

    /// Whether the model has a tensor of this (GGUF) name.
    pub fn has(&self, name: &str) -> bool {
        match &self.backing {
            Backing::Gguf(g) => g.tensor(name).is_some(),
            Backing::Uploaded(map) => map.contains_key(name),
            Backing::Hf { hf, map } => map(name).is_some_and(|n| hf.tensors.get(&n).is_some()),
        }
    }

    fn find(&self, name: &str, dims: &[u64]) -> Result<Found<'a>> {
        match self.backing {
            Backing::Uploaded(_) => Err(Error::Model(format!("missing tensor `{name}`"))),
            Backing::Gguf(g) => {
                let t = g
                    .tensor(name)
                    .ok_or_else(|| Error::Model(format!("missing tensor `{name}`")))?;
                if t.dims != dims {
                    return Err(Error::Model(format!(
                        "tensor `{name}` has shape {:?}, expected {:?} from the metadata",
                        t.dims, dims
                    )));
                }
                Ok(Found {
                    dtype: t.dtype()?,
                    data: g.tensor_data(t),
                    n_bytes: t.n_bytes,
                })
            }
            Backing::Hf { hf, map } => {
                let hf_name = map(name).ok_or_else(|| {
                    Error::Model(format!(
                        "tensor `{name}` has no Hugging Face counterpart for this architecture"
                    ))
                })?;
                let (file, t) = hf.tensors.get(&hf_name).ok_or_else(|| {
                    Error::Model(format!("{}: missing tensor `{hf_name}`", hf.dir.display()))
                })?;
                if t.ggml_dims() != dims {
                    let want: Vec<u64> = dims.iter().rev().copied().collect();
                    return Err(Error::Model(format!(
                        "{}: tensor `{hf_name}` has shape {:?}, expected {:?} from config.json",
                        file.path, t.shape, want
                    )));
                }
                let data = file.tensor_data(t);
                if data.len() as u64 != t.n_bytes {
                    return Err(Error::Model(format!(
                        "{}: tensor `{hf_name}` lies outside the file",
                        file.path
                    )));
                }
                Ok(Found {
                    dtype: t.flint_dtype()?,
                    data,
                    n_bytes: t.n_bytes,
                })
            }
        }
    }

    /// Takes an uploaded tensor out (`None` when the source is a file; a missing uploaded tensor
    /// then fails in `find` with the same message a file gives).
    fn take_uploaded(&mut self, name: &str) -> Option<Uploaded> {
        match &mut self.backing {
            Backing::Uploaded(map) => map.remove(name),
            _ => None,
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        (self.progress)(self.done, self.total);
    }

    /// A `rows x cols` weight matrix, kept in its file type (ggml dims `[cols, rows]`).
    pub fn weight(&mut self, gpu: &Gpu, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        if let Some(u) = self.take_uploaded(name) {
            return match u {
                Uploaded::Weight(w) if (w.rows, w.cols) == (rows, cols) => Ok(w),
                Uploaded::Weight(w) => Err(Error::Model(format!(
                    "tensor `{name}` has shape {:?}, expected {:?} from the metadata",
                    [w.cols, w.rows],
                    [cols, rows]
                ))),
                Uploaded::Vector { n, .. } => Err(Error::Model(format!(
                    "tensor `{name}` has shape [{n}], expected {:?} from the metadata",
                    [cols, rows]
                ))),
            };
        }
        let t = self.find(name, &[cols as u64, rows as u64])?;
        let w = Weight::upload(gpu, name, t.dtype, t.data, rows, cols)?;
        self.advance(t.n_bytes);
        Ok(w)
    }

    /// A vector of `n` floats (norm weights), converted to f32.
    pub fn vector(&mut self, gpu: &Gpu, name: &str, n: usize) -> Result<wgpu::Buffer> {
        if let Some(u) = self.take_uploaded(name) {
            return match u {
                Uploaded::Vector { buffer, n: got } if got == n => Ok(buffer),
                Uploaded::Vector { n: got, .. } => Err(Error::Model(format!(
                    "tensor `{name}` has shape [{got}], expected [{n}] from the metadata"
                ))),
                Uploaded::Weight(w) => Err(Error::Model(format!(
                    "tensor `{name}` has shape {:?}, expected [{n}] from the metadata",
                    [w.cols, w.rows]
                ))),
            };
        }
        let t = self.find(name, &[n as u64])?;
        let mut v = vec![0.0f32; n];
        quant::dequantize(t.dtype, t.data, &mut v)?;
        self.advance(t.n_bytes);
        Ok(gpu.upload(name, bytemuck::cast_slice(&v)))
    }
}

/// The keys and values of every layer for up to `ctx` positions, resident on the GPU.
pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// Positions filled so far.
    pub len: usize,
    /// Capacity in positions.
    pub ctx: usize,
}

impl KvCache {
    /// Allocates `n_layers` key and value buffers of `ctx * kv_dim` floats.
    pub fn new(gpu: &Gpu, n_layers: usize, ctx: usize, kv_dim: usize) -> Result<KvCache> {
        let bytes = (ctx * kv_dim * 4) as u64;
        if bytes > gpu.caps.max_binding {
            return Err(Error::InvalidArgument(format!(
                "a context of {ctx} tokens needs {bytes} bytes per layer of KV cache, over the adapter's \
                 binding limit of {} bytes: use a smaller context",
                gpu.caps.max_binding
            )));
        }
        let mut k = Vec::with_capacity(n_layers);
        let mut v = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            k.push(gpu.zeros(&format!("k_cache.{l}"), bytes)?);
            v.push(gpu.zeros(&format!("v_cache.{l}"), bytes)?);
        }
        Ok(KvCache { k, v, len: 0, ctx })
    }

    /// Forgets positions from `len` on (they will be overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Activation buffers of one forward pass, grown on demand and reused across passes.
#[derive(Default)]
pub struct Scratch {
    bufs: Option<ScratchBufs>,
    cap_tokens: usize,
    cap_logits: usize,
}

/// The buffers themselves (sized for `cap_tokens` tokens).
pub struct ScratchBufs {
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pub att: wgpu::Buffer,
    pub gate: wgpu::Buffer,
    pub up: wgpu::Buffer,
    pub last: wgpu::Buffer,
    pub logits: wgpu::Buffer,
}

impl Scratch {
    /// Buffers for `m` tokens with widths `[hidden, q_dim, kv_dim, ffn]` and `logits` floats.
    pub fn ensure(
        &mut self,
        gpu: &Gpu,
        m: usize,
        dims: &[usize; 4],
        logits: usize,
    ) -> Result<&ScratchBufs> {
        if self.bufs.is_none() || m > self.cap_tokens || logits > self.cap_logits {
            let m = m.max(self.cap_tokens);
            let logits = logits.max(self.cap_logits);
            let [h, q, kv, ffn] = *dims;
            let f = |name: &str, n: usize| gpu.zeros(name, (n * 4) as u64);
            let max_width = h.max(q).max(ffn);
            if (m * max_width * 4) as u64 > gpu.caps.max_binding
                || (logits * 4) as u64 > gpu.caps.max_binding
            {
                return Err(Error::InvalidArgument(format!(
                    "a batch of {m} tokens needs activations over the adapter's binding limit; use a smaller batch"
                )));
            }
            self.bufs = Some(ScratchBufs {
                x: f("x", m * h)?,
                xn: f("xn", m * h.max(q))?,
                q: f("q", m * q)?,
                k: f("k", m * kv)?,
                v: f("v", m * kv)?,
                att: f("att", m * q)?,
                gate: f("gate", m * ffn)?,
                up: f("up", m * ffn)?,
                last: f("last", h)?,
                logits: f("logits", logits)?,
            });
            self.cap_tokens = m;
            self.cap_logits = logits;
        }
        self.bufs
            .as_ref()
            .ok_or_else(|| Error::Gpu("scratch buffers missing".into()))
    }
}
