//! Models: one file per architecture, sharing the ops, the KV cache and the scratch buffers here.

pub mod llama;

use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::gpu::{Gpu, Weight};
use crate::ops::quant;

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
        let arch = g.get_str("general.architecture").ok_or_else(|| {
            Error::Model("missing required metadata key `general.architecture`".into())
        })?;
        let mut src = TensorSource::new(g, progress);
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

    /// One forward pass over `tokens` at positions `cache.len..` (see [`llama::Llama::forward`]).
    pub fn forward(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        match self {
            Model::Llama(m) => m.forward(gpu, cache, scratch, tokens, want),
        }
    }
}

/// Pulls tensors out of a GGUF by name, checks their shapes, uploads them, reports progress.
pub struct TensorSource<'a> {
    g: &'a Gguf,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<'a> TensorSource<'a> {
    /// A source over every tensor of `g`.
    pub fn new(g: &'a Gguf, progress: &'a mut dyn FnMut(u64, u64)) -> Self {
        let total = g.tensors.iter().map(|t| t.n_bytes).sum();
        TensorSource {
            g,
            done: 0,
            total,
            progress,
        }
    }

    /// Whether the file has a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.g.tensor(name).is_some()
    }

    fn find(&self, name: &str, dims: &[u64]) -> Result<&'a crate::format::gguf::TensorInfo> {
        let t = self
            .g
            .tensor(name)
            .ok_or_else(|| Error::Model(format!("missing tensor `{name}`")))?;
        if t.dims != dims {
            return Err(Error::Model(format!(
                "tensor `{name}` has shape {:?}, expected {:?} from the metadata",
                t.dims, dims
            )));
        }
        Ok(t)
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        (self.progress)(self.done, self.total);
    }

    /// A `rows x cols` weight matrix, kept in its file type (ggml dims `[cols, rows]`).
    pub fn weight(&mut self, gpu: &Gpu, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let t = self.find(name, &[cols as u64, rows as u64])?;
        let w = Weight::upload(gpu, name, t.dtype()?, self.g.tensor_data(t), rows, cols)?;
        self.advance(t.n_bytes);
        Ok(w)
    }

    /// A vector of `n` floats (norm weights), converted to f32.
    pub fn vector(&mut self, gpu: &Gpu, name: &str, n: usize) -> Result<wgpu::Buffer> {
        let t = self.find(name, &[n as u64])?;
        let dtype = t.dtype()?;
        let mut v = vec![0.0f32; n];
        quant::dequantize(dtype, self.g.tensor_data(t), &mut v)?;
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
