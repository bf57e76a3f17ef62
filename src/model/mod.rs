//! Models: one file per architecture family, each turning its metadata into the options of the
//! shared decoder in `transformer.rs`; the KV cache, the scratch buffers and the tensor source
//! live here.

pub mod encoder;
pub mod gemma;
pub mod gpt2;
pub mod llama;
pub mod phi3;
pub mod qwen;
pub mod transformer;

use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::{HfConfig, HfModel};
use crate::format::{DType, ModelFile};
use crate::gpu::{Gpu, KvType, Weight};
use crate::ops::kv::LayerKv;
use crate::ops::quant;
use std::borrow::Cow;
use std::collections::HashMap;
use transformer::{Config, Transformer};

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity).
    All,
    /// No logits: the last token's hidden state after the final norm, `hidden` floats per
    /// sequence (a decoder used as an embedder, last-token pooling).
    Hidden,
}

/// Architecture and hyper-parameters, for `flint info`.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub architecture: String,
    pub params: Vec<(String, String)>,
}

/// GGUF architectures flint runs (`general.architecture`).
pub const GGUF_ARCHITECTURES: &[&str] = &[
    "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2",
];

/// Hugging Face architectures flint runs (`architectures` in `config.json`).
pub const HF_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
    "GPT2LMHeadModel",
];

/// The configuration of a GGUF model, from its metadata.
pub fn gguf_config(g: &Gguf) -> Result<Config> {
    let arch = g.get_str("general.architecture").ok_or_else(|| {
        Error::Model("missing required metadata key `general.architecture`".into())
    })?;
    let cfg = match arch {
        "llama" | "mistral" => llama::from_gguf(g, arch)?,
        "qwen2" | "qwen3" => qwen::from_gguf(g, arch)?,
        "gemma2" | "gemma3" => gemma::from_gguf(g, arch)?,
        "phi3" => phi3::from_gguf(g)?,
        "gpt2" => gpt2::from_gguf(g)?,
        "bert" | "nomic-bert" => return Err(encoder_cannot_generate(arch)),
        other => {
            return Err(Error::Model(format!(
                "unknown architecture `{other}` (flint supports: {})",
                GGUF_ARCHITECTURES.join(", ")
            )))
        }
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The configuration of a Hugging Face folder, from `config.json`, and its tensor-name map.
pub fn hf_config(c: &HfConfig) -> Result<(Config, HfNames)> {
    let arch = c.architecture()?;
    let r = match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => (llama::from_hf(c)?, llama::HF_NAMES),
        "Qwen2ForCausalLM" | "Qwen3ForCausalLM" => (qwen::from_hf(c)?, llama::HF_NAMES),
        "Gemma2ForCausalLM" | "Gemma3ForCausalLM" => (gemma::from_hf(c)?, gemma::HF_NAMES),
        "Phi3ForCausalLM" => (phi3::from_hf(c)?, phi3::HF_NAMES),
        "GPT2LMHeadModel" => (gpt2::from_hf(c)?, gpt2::HF_NAMES),
        enc if encoder::is_hf_encoder(enc) => return Err(encoder_cannot_generate(enc)),
        other => {
            return Err(Error::Model(format!(
                "{}: unknown architecture `{other}` (flint reads these from Hugging Face \
                 folders: {})",
                c.path.display(),
                HF_ARCHITECTURES.join(", ")
            )))
        }
    };
    r.0.validate()
        .map_err(|e| Error::Model(format!("{}: {e}", c.path.display())))?;
    Ok(r)
}

/// The error for generating with an encoder.
fn encoder_cannot_generate(arch: &str) -> Error {
    Error::Model(format!(
        "`{arch}` is an embedding model (an encoder): it embeds (`flint embed`, `flint serve \
         --embedding-model`, /v1/embeddings) but cannot generate text"
    ))
}

/// How an architecture's Hugging Face checkpoint names flint's (GGUF-named) tensors.
#[derive(Clone, Copy)]
pub struct HfNames {
    /// The checkpoint names to try for a GGUF name, in order; `None`: no counterpart.
    pub name: fn(&str) -> Option<Vec<String>>,
    /// Whether the checkpoint stores this 2-D tensor as `[in, out]` (GPT-2's Conv1D), so it is
    /// transposed on load.
    pub transposed: fn(&str) -> bool,
}

/// The parts of a GGUF block tensor name `blk.{layer}.{base}.{suffix}` (e.g. `blk.3.attn_q.weight`
/// -> (3, "attn_q", "weight")), which each architecture's [`HfNames`] maps to its checkpoint's.
pub(crate) fn gguf_block_name(gguf: &str) -> Option<(usize, &str, &str)> {
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let (base, suffix) = name.rsplit_once('.')?;
    Some((layer, base, suffix))
}

/// A loaded model of any supported architecture.
pub struct Model(Transformer);

impl Model {
    /// Reads the architecture from `general.architecture` and uploads the weights.
    /// `progress(done_bytes, total_bytes)` is called as tensors are uploaded.
    pub fn load(gpu: &Gpu, g: &Gguf, progress: &mut dyn FnMut(u64, u64)) -> Result<Model> {
        Model::load_from(gpu, g, TensorSource::new(g, progress))
    }

    /// [`Model::load`] with the tensors taken from `src` (the web loader's are already on the
    /// GPU, see [`TensorSource::uploaded`]); the configuration comes from `g`'s metadata.
    pub fn load_from(gpu: &Gpu, g: &Gguf, mut src: TensorSource) -> Result<Model> {
        let cfg = gguf_config(g)?;
        Ok(Model(Transformer::load(gpu, &mut src, cfg)?))
    }

    /// Reads the architecture from `config.json`'s `architectures` and uploads the weights of a
    /// Hugging Face folder.
    pub fn load_hf(gpu: &Gpu, hf: &HfModel, progress: &mut dyn FnMut(u64, u64)) -> Result<Model> {
        let (cfg, names) = hf_config(&hf.config)?;
        let mut src = TensorSource::hf(hf, names, progress);
        Ok(Model(Transformer::load(gpu, &mut src, cfg)?))
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

    /// The configuration read from the model's metadata.
    pub fn config(&self) -> &Config {
        &self.0.cfg
    }

    /// Architecture and hyper-parameters.
    pub fn info(&self) -> ModelInfo {
        self.0.info()
    }

    /// Vocabulary size (rows of the output head).
    pub fn vocab(&self) -> usize {
        self.0.cfg.vocab
    }

    /// Context length the model was trained with.
    pub fn ctx_train(&self) -> usize {
        self.0.cfg.ctx_train
    }

    /// A KV cache for `ctx` positions.
    pub fn new_cache(&self, gpu: &Gpu, ctx: usize) -> Result<KvCache> {
        self.0.new_cache(gpu, ctx)
    }

    /// A KV cache whose sliding-window rings hold only `window + slack` positions (see
    /// [`Transformer::new_cache_with_slack`]).
    pub fn new_cache_with_slack(&self, gpu: &Gpu, ctx: usize, slack: usize) -> Result<KvCache> {
        self.0.new_cache_with_slack(gpu, ctx, slack)
    }

    /// One forward pass over several sequences at once (see [`Transformer::forward_many`];
    /// blocking, native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_many(
        &self,
        gpu: &Gpu,
        seqs: &mut [transformer::Seq],
        scratch: &mut Scratch,
        want: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.0.forward_many_async(gpu, seqs, scratch, want))
    }

    /// [`Model::forward_many`], awaiting the logits readback.
    pub async fn forward_many_async(
        &self,
        gpu: &Gpu,
        seqs: &mut [transformer::Seq<'_>],
        scratch: &mut Scratch,
        want: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        self.0.forward_many_async(gpu, seqs, scratch, want).await
    }

    /// One forward pass over `tokens` at positions `cache.len..` (see [`Transformer::forward`];
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
        self.0
            .forward_async(gpu, cache, scratch, tokens, want)
            .await
    }

    /// One forward pass over `tokens`, then the `k` best of the last token's logits ranked on the
    /// GPU, as (token id, logit), best first ([`crate::ops::top_k`]; `k = 1` is greedy argmax).
    pub async fn top_k_async(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        let mut seqs = [transformer::Seq { cache, tokens }];
        let mut out = self.0.top_k_many_async(gpu, &mut seqs, scratch, k).await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// See [`Transformer::same_as_alone`].
    pub fn same_as_alone(&self, pos0: usize, tokens: usize) -> usize {
        self.0.same_as_alone(pos0, tokens)
    }

    /// One forward pass over `tokens`, then the `k` best logits of every token's row, ranked on
    /// the GPU (speculative decoding's check: row `i` scores the token after `tokens[i]`).
    pub async fn top_k_all_async(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let mut seqs = [transformer::Seq { cache, tokens }];
        self.0
            .top_k_rows_async(gpu, &mut seqs, scratch, k, Logits::All)
            .await
    }

    /// One greedy decode step submitted without a readback (see
    /// [`Transformer::submit_greedy_step`]): the overlapped decode loop's step.
    pub fn submit_greedy_step(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        input: transformer::StepInput,
        readback: &wgpu::Buffer,
    ) -> Result<wgpu::SubmissionIndex> {
        self.0
            .submit_greedy_step(gpu, cache, scratch, input, readback)
    }

    /// [`Model::forward_many_async`] with each sequence's `k` best logits ranked on the GPU
    /// (see [`Model::top_k_async`]).
    pub async fn top_k_many_async(
        &self,
        gpu: &Gpu,
        seqs: &mut [transformer::Seq<'_>],
        scratch: &mut Scratch,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.0.top_k_many_async(gpu, seqs, scratch, k).await
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
    /// A Hugging Face folder; `names` turns flint's (GGUF) tensor names into the checkpoint's.
    Hf {
        hf: &'a HfModel,
        names: HfNames,
    },
}

/// One tensor found by name: its type and bytes (a slice of the mapped file, or a transposed copy).
struct Found<'a> {
    dtype: DType,
    data: Cow<'a, [u8]>,
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

    /// A source over the safetensors of a Hugging Face folder; `names` gives the checkpoint names
    /// of a GGUF tensor name.
    pub fn hf(hf: &'a HfModel, names: HfNames, progress: &'a mut dyn FnMut(u64, u64)) -> Self {
        TensorSource {
            backing: Backing::Hf { hf, names },
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
            Backing::Hf { hf, names } => {
                (names.name)(name).is_some_and(|ns| ns.iter().any(|n| hf.tensors.get(n).is_some()))
            }
            Backing::Uploaded(map) => map.contains_key(name),
        }
    }

    /// Whether the tensors come from a Hugging Face folder.
    pub fn is_hf(&self) -> bool {
        matches!(self.backing, Backing::Hf { .. })
    }

    fn find(&self, name: &str, dims: &[u64]) -> Result<Found<'a>> {
        match self.backing {
            Backing::Uploaded(ref map) => Err(Error::Model(if map.contains_key(name) {
                format!(
                    "tensor `{name}` is a fused projection or bias, which the streamed (web) loader \
                     cannot split yet"
                )
            } else {
                format!("missing tensor `{name}`")
            })),
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
                    data: Cow::Borrowed(g.tensor_data(t)),
                    n_bytes: t.n_bytes,
                })
            }
            Backing::Hf { hf, names } => {
                let candidates = (names.name)(name).ok_or_else(|| {
                    Error::Model(format!(
                        "tensor `{name}` has no Hugging Face counterpart for this architecture"
                    ))
                })?;
                let (hf_name, (file, t)) = candidates
                    .iter()
                    .find_map(|n| hf.tensors.get(n).map(|f| (n, f)))
                    .ok_or_else(|| {
                        Error::Model(format!(
                            "{}: missing tensor `{}`",
                            hf.dir.display(),
                            candidates.join("` or `")
                        ))
                    })?;
                let transposed = (names.transposed)(name) && t.shape.len() == 2;
                let mut got = t.ggml_dims();
                if transposed {
                    got.reverse();
                }
                if got != dims {
                    let want: Vec<u64> = dims.iter().rev().copied().collect();
                    let mut shape = t.shape.clone();
                    let note = if transposed {
                        shape.reverse();
                        " (stored transposed, as a Conv1D)"
                    } else {
                        ""
                    };
                    return Err(Error::Model(format!(
                        "{}: tensor `{hf_name}` has shape {shape:?}{note}, expected {want:?} from config.json",
                        file.path,
                    )));
                }
                let data = file.tensor_data(t);
                if data.len() as u64 != t.n_bytes {
                    return Err(Error::Model(format!(
                        "{}: tensor `{hf_name}` lies outside the file",
                        file.path
                    )));
                }
                let dtype = t.flint_dtype()?;
                let data = if transposed {
                    Cow::Owned(transpose(
                        data,
                        dtype,
                        t.shape[0] as usize,
                        t.shape[1] as usize,
                    )?)
                } else {
                    Cow::Borrowed(data)
                };
                Ok(Found {
                    dtype,
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
        self.weight_rows(gpu, name, rows, cols, 0, rows)
    }

    /// Rows `start..start + n` of a `rows x cols` weight matrix (one part of a fused projection);
    /// the whole tensor's bytes count towards progress with its last part.
    pub fn weight_rows(
        &mut self,
        gpu: &Gpu,
        name: &str,
        rows: usize,
        cols: usize,
        start: usize,
        n: usize,
    ) -> Result<Weight> {
        let t = self.find(name, &[cols as u64, rows as u64])?;
        if start + n > rows || n == 0 {
            return Err(Error::Model(format!(
                "`{name}`: rows {start}..{} outside its {rows} rows",
                start + n
            )));
        }
        let row_bytes = t.data.len() / rows;
        let part = &t.data[start * row_bytes..(start + n) * row_bytes];
        let label = if n == rows {
            name.to_string()
        } else {
            format!("{name}[{start}..{}]", start + n)
        };
        let w = Weight::upload(gpu, &label, t.dtype, part, n, cols)?;
        if start + n == rows {
            self.advance(t.n_bytes);
        }
        Ok(w)
    }

    /// A vector of `n` floats (norm weights, biases), converted to f32, with `shift` added to
    /// every element (Gemma's `1 + w` norms in Hugging Face checkpoints).
    pub fn vector(&mut self, gpu: &Gpu, name: &str, n: usize, shift: f32) -> Result<wgpu::Buffer> {
        if let Some(u) = self.take_uploaded(name) {
            if shift != 0.0 {
                return Err(Error::Model(format!(
                    "tensor `{name}`: an uploaded norm cannot be shifted"
                )));
            }
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
        quant::dequantize(t.dtype, &t.data, &mut v)?;
        v.iter_mut().for_each(|x| *x += shift);
        self.advance(t.n_bytes);
        Ok(gpu.upload(name, bytemuck::cast_slice(&v)))
    }

    /// Elements `start..start + n` of a vector of `len` floats (one part of a fused bias).
    pub fn vector_rows(
        &mut self,
        gpu: &Gpu,
        name: &str,
        len: usize,
        start: usize,
        n: usize,
    ) -> Result<wgpu::Buffer> {
        let t = self.find(name, &[len as u64])?;
        if start + n > len {
            return Err(Error::Model(format!(
                "`{name}`: elements {start}..{} outside its {len}",
                start + n
            )));
        }
        let mut v = vec![0.0f32; len];
        quant::dequantize(t.dtype, &t.data, &mut v)?;
        if start + n == len {
            self.advance(t.n_bytes);
        }
        Ok(gpu.upload(name, bytemuck::cast_slice(&v[start..start + n])))
    }
}

/// Transposes a row-major `rows x cols` matrix of a float type (a Conv1D weight stored `[in, out]`).
fn transpose(data: &[u8], dtype: DType, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let size = match dtype {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
        other => {
            return Err(Error::Model(format!(
                "cannot transpose a {other} tensor (only float types)"
            )))
        }
    };
    let mut out = vec![0u8; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * size;
            let to = (c * rows + r) * size;
            out[to..to + size].copy_from_slice(&data[from..from + size]);
        }
    }
    Ok(out)
}

/// The keys and values of every layer for up to `ctx` positions, resident on the GPU. A
/// sliding-window layer keeps only a ring of `rows[l] < ctx` positions (position `p` in row
/// `p % rows[l]`), enough for its window plus one batch.
pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// A 16-bit cache's per-layer base ([`crate::ops::kv`]); empty for an f32 cache.
    pub base: Vec<wgpu::Buffer>,
    /// A q16 cache's per-layer scales, two f32 per (row, KV head) ([`crate::ops::kv`]); empty for
    /// the other types.
    pub scale: Vec<wgpu::Buffer>,
    /// Rows (positions) each layer's buffers hold.
    pub rows: Vec<usize>,
    /// Positions filled so far.
    pub len: usize,
    /// Capacity in positions.
    pub ctx: usize,
    /// How keys and values are stored ([`KvType`]).
    pub kind: KvType,
}

impl KvCache {
    /// Allocates key and value buffers of `rows[l]` rows of `n_kv_heads * head_dim` elements for
    /// each layer `l`, of the type the device's options chose.
    pub fn new(
        gpu: &Gpu,
        ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        rows: Vec<usize>,
    ) -> Result<KvCache> {
        // a new cache usually replaces one: let cached bind groups release the old one's buffers
        gpu.forget_bindings();
        let kind = gpu.caps.kv_cache;
        let kv_dim = n_kv_heads * head_dim;
        if kind != KvType::F32 && !head_dim.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "a {} KV cache needs an even head_dim, not {head_dim}",
                kind.name()
            )));
        }
        let mut k = Vec::with_capacity(rows.len());
        let mut v = Vec::with_capacity(rows.len());
        let (mut base, mut scale) = (Vec::new(), Vec::new());
        for (l, &r) in rows.iter().enumerate() {
            let bytes = (r * kv_dim * kind.elem_bytes()) as u64;
            if bytes > gpu.caps.max_binding {
                return Err(Error::InvalidArgument(format!(
                    "a context of {ctx} tokens needs {bytes} bytes of KV cache for layer {l}, over the \
                     adapter's binding limit of {} bytes: use a smaller context",
                    gpu.caps.max_binding
                )));
            }
            k.push(gpu.zeros(&format!("k_cache.{l}"), bytes)?);
            v.push(gpu.zeros(&format!("v_cache.{l}"), bytes)?);
            if kind != KvType::F32 {
                base.push(gpu.zeros(&format!("kv_base.{l}"), (kv_dim * 8) as u64)?);
            }
            if kind == KvType::Q16 {
                let bytes = (r * n_kv_heads * 8) as u64;
                scale.push(gpu.zeros(&format!("kv_scale.{l}"), bytes)?);
            }
        }
        Ok(KvCache {
            k,
            v,
            base,
            scale,
            rows,
            len: 0,
            ctx,
            kind,
        })
    }

    /// Layer `l`'s buffers as the kernels take them.
    pub fn layer(&self, l: usize) -> LayerKv<'_> {
        LayerKv {
            k: &self.k[l],
            v: &self.v[l],
            base: self.base.get(l),
            scale: self.scale.get(l),
        }
    }

    /// Makes this cache hold what `src` holds (every buffer copied on the GPU, ring rows
    /// included): `n` > 1 choices of one request start from one prefill this way. Both caches
    /// must come from the same model and context.
    pub fn copy_from(&mut self, gpu: &Gpu, src: &KvCache) -> Result<()> {
        let same = |a: &[wgpu::Buffer], b: &[wgpu::Buffer]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.size() == y.size())
        };
        if self.kind != src.kind
            || self.rows != src.rows
            || !same(&self.k, &src.k)
            || !same(&self.v, &src.v)
            || !same(&self.base, &src.base)
            || !same(&self.scale, &src.scale)
        {
            return Err(Error::InvalidArgument(
                "copying a KV cache into one of another shape".into(),
            ));
        }
        let mut enc = gpu.encoder();
        let pairs = (src.k.iter().zip(&self.k))
            .chain(src.v.iter().zip(&self.v))
            .chain(src.base.iter().zip(&self.base))
            .chain(src.scale.iter().zip(&self.scale));
        for (from, to) in pairs {
            enc.copy_buffer_to_buffer(from, 0, to, 0, from.size());
        }
        gpu.submit(enc);
        self.len = src.len;
        Ok(())
    }

    /// Forgets positions from `len` on (they will be overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes of GPU memory the cache holds.
    pub fn gpu_bytes(&self) -> u64 {
        let all = self
            .k
            .iter()
            .chain(&self.v)
            .chain(&self.base)
            .chain(&self.scale);
        all.map(|b| b.size()).sum()
    }
}

/// Activation buffers of one forward pass, grown on demand and reused across passes.
#[derive(Default)]
pub struct Scratch {
    bufs: Option<ScratchBufs>,
    cap_tokens: usize,
    cap_logits: usize,
    cap_last: usize,
    /// GPU top-k's candidate and result buffers ([`crate::ops::top_k`]), grown on demand.
    top_k_part: Option<wgpu::Buffer>,
    top_k_out: Option<wgpu::Buffer>,
    /// Split-K attention's partials ([`crate::ops::attention::Attention::encode_split`]).
    att_part: Option<wgpu::Buffer>,
}

/// The buffers themselves (sized for `cap_tokens` tokens).
pub struct ScratchBufs {
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
    /// The attention output (and, with head norms, Q before its norm).
    pub att: wgpu::Buffer,
    /// A spare `max(hidden, q_dim, kv_dim)`-wide buffer: post-norm outputs, K before its norm.
    pub spare: wgpu::Buffer,
    /// The feed-forward gate projection, then the gated activation's output.
    pub gate: wgpu::Buffer,
    /// The feed-forward up projection.
    pub up: wgpu::Buffer,
    /// Each sequence's last row after the final norm (the head's input).
    pub last: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    /// The pass's token ids, one `u32` per row, written once per pass (`queue.write_buffer`) and
    /// read by the embedding lookup.
    pub ids: wgpu::Buffer,
    /// Each row's position (`u32`), for a learned position embedding's lookup.
    pub positions: wgpu::Buffer,
    /// Each sequence's first position (`u32`, by its index in the batch), which the
    /// position-dependent kernels read ([`crate::ops::Positions`]): their parameters, and so
    /// their bind groups, then repeat from one decode step to the next.
    pub seq_pos0: wgpu::Buffer,
}

impl Scratch {
    /// Buffers for `m` tokens with widths `[hidden, q_dim, kv_dim, ffn]`, `last_rows` gathered
    /// last-token rows and `logits` floats.
    pub fn ensure(
        &mut self,
        gpu: &Gpu,
        m: usize,
        dims: &[usize; 4],
        last_rows: usize,
        logits: usize,
    ) -> Result<&ScratchBufs> {
        if self.bufs.is_none()
            || m > self.cap_tokens
            || logits > self.cap_logits
            || last_rows > self.cap_last
        {
            let last_rows = last_rows.max(self.cap_last);
            let m = m.max(self.cap_tokens);
            let logits = logits.max(self.cap_logits);
            let [h, q, kv, ffn] = *dims;
            self.bufs = None;
            gpu.forget_bindings(); // cached bind groups would keep the old buffers alive
            let f = |name: &str, n: usize| gpu.zeros(name, (n * 4) as u64);
            let max_width = h.max(q).max(ffn).max(kv);
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
                spare: f("spare", m * h.max(q).max(kv))?,
                gate: f("gate", m * ffn)?,
                up: f("up", m * ffn)?,
                last: f("last", h * last_rows)?,
                logits: f("logits", logits)?,
                ids: f("ids", m)?,
                positions: f("positions", m)?,
                seq_pos0: f("seq_pos0", m)?,
            });
            self.cap_tokens = m;
            self.cap_logits = logits;
            self.cap_last = last_rows;
        }
        self.bufs()
    }

    /// A buffer of at least `floats` f32 for split-K attention's partials (grown on demand).
    pub fn att_part(&mut self, gpu: &Gpu, floats: usize) -> Result<wgpu::Buffer> {
        grown(gpu, &mut self.att_part, "attention partials", floats).cloned()
    }

    /// The buffers of the last [`Scratch::ensure`].
    pub fn bufs(&self) -> Result<&ScratchBufs> {
        self.bufs
            .as_ref()
            .ok_or_else(|| Error::Gpu("scratch buffers missing".into()))
    }

    /// The last top-k result (`(key, id)` pairs, best first): what a greedy step picked, which
    /// the next step's embedding reads on the GPU ([`transformer::StepInput::Picked`]).
    pub fn picked(&self) -> Result<&wgpu::Buffer> {
        self.top_k_out
            .as_ref()
            .ok_or_else(|| Error::Gpu("no top-k result to read a picked token from".into()))
    }

    /// The logits and top-k's candidate (`part_words`) and result (`out_words`) buffers, the
    /// latter two grown when too small.
    pub fn top_k_bufs(
        &mut self,
        gpu: &Gpu,
        part_words: usize,
        out_words: usize,
    ) -> Result<(&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer)> {
        let part = grown(gpu, &mut self.top_k_part, "top_k candidates", part_words)?;
        let out = grown(gpu, &mut self.top_k_out, "top_k result", out_words)?;
        let bufs = self
            .bufs
            .as_ref()
            .ok_or_else(|| Error::Gpu("scratch buffers missing".into()))?;
        Ok((&bufs.logits, part, out))
    }
}

/// `slot`'s buffer, replaced by a zeroed one of `words` 4-byte words when it holds fewer.
fn grown<'a>(
    gpu: &Gpu,
    slot: &'a mut Option<wgpu::Buffer>,
    label: &str,
    words: usize,
) -> Result<&'a wgpu::Buffer> {
    let bytes = (words * 4) as u64;
    if !matches!(slot, Some(b) if b.size() >= bytes) {
        if slot.take().is_some() {
            gpu.forget_bindings(); // cached bind groups would keep the old buffer alive
        }
        *slot = Some(gpu.zeros(label, bytes)?);
    }
    slot.as_ref()
        .ok_or_else(|| Error::Gpu(format!("{label} buffer missing")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn gguf_block_names_split_into_layer_base_suffix() {
        assert_eq!(
            super::gguf_block_name("blk.3.attn_q.weight"),
            Some((3, "attn_q", "weight"))
        );
        assert_eq!(
            super::gguf_block_name("blk.12.ffn_down.bias"),
            Some((12, "ffn_down", "bias"))
        );
        for bad in [
            "token_embd.weight",
            "blk.x.attn_q.weight",
            "blk.3",
            "blk.3.attn_q",
        ] {
            assert_eq!(super::gguf_block_name(bad), None, "{bad}");
        }
    }
}
