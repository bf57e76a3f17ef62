//! Embeddings: text -> tokens -> hidden states -> one pooled, normalized vector per input.
//!
//! Two kinds of network embed: an encoder (`model/encoder.rs`: BERT, nomic-bert), whose every
//! token's hidden state comes back, and a decoder used as an embedder (Qwen3-Embedding style:
//! causal attention, the final-norm hidden state of the last token, [`Logits::Hidden`]). Both are
//! pooled the way the model says (GGUF `{arch}.pooling_type`; a sentence-transformers folder's
//! `modules.json` and `1_Pooling/config.json`), then L2-normalized when the model asks for it
//! (sentence-transformers' `Normalize` module; always for a GGUF, as llama.cpp's server does).
//! `dimensions` keeps the first `d` components and normalizes again (Matryoshka).
//!
//! Many inputs are packed into as few forward passes as fit [`BATCH_TOKENS`] (an encoder attends
//! within each input only, so packing changes nothing but speed). Every surface (`flint embed`,
//! `POST /v1/embeddings`, the npm package's `engine.embeddings.create`) calls
//! [`Embedder::embed_async`]; the checks and their messages live here.

use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::gpu::Gpu;
use crate::model::encoder::{self, Encoder};
use crate::model::transformer::{Seq, Transformer};
use crate::model::{gguf_config, Logits, ModelInfo, Scratch, TensorSource};
use crate::tokenizer::Tokenizer;

/// Most inputs one call takes (OpenAI's limit for `/v1/embeddings`).
pub const MAX_INPUTS: usize = 2048;
/// Most tokens an encoder's forward pass packs together.
pub const BATCH_TOKENS: usize = 2048;

/// How the hidden states of an input become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every token, special tokens included (sentence-transformers' mean).
    Mean,
    /// The first token's (`[CLS]`).
    Cls,
    /// The last token's (decoder embedders).
    Last,
}

impl Pooling {
    /// llama.cpp's `enum llama_pooling_type` as GGUF `{arch}.pooling_type` stores it.
    pub fn from_gguf(v: u64) -> Result<Pooling> {
        match v {
            1 => Ok(Pooling::Mean),
            2 => Ok(Pooling::Cls),
            3 => Ok(Pooling::Last),
            0 => Err(Error::Model(
                "pooling_type 0 (none): the model gives per-token states, not embeddings".into(),
            )),
            4 => Err(Error::Model(
                "pooling_type 4 (rank) is a reranker's; flint does not rerank".into(),
            )),
            other => Err(Error::Model(format!("unknown pooling_type {other}"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    /// `mean`, `cls` or `last`.
    pub fn parse(s: &str) -> Result<Pooling> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::Last),
            other => Err(Error::InvalidArgument(format!(
                "unknown pooling `{other}` (mean, cls or last)"
            ))),
        }
    }
}

/// How a model embeds: read from its files at load.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedConfig {
    pub pooling: Pooling,
    /// L2-normalize the pooled vector.
    pub normalize: bool,
    /// Most tokens of one input, special tokens included.
    pub max_tokens: usize,
    /// Length of the vectors.
    pub dims: usize,
}

/// One input: text (tokenized with the model's special tokens) or token ids (used as they are).
#[derive(Clone, Debug, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct EmbedOptions {
    /// Keep the first `d` components, then L2-normalize (Matryoshka).
    pub dimensions: Option<usize>,
    /// Cut inputs over the model's limit instead of refusing them (keeping their trailing special
    /// token, as transformers' truncation does).
    pub truncate: bool,
}

/// What [`Embedder::embed_async`] returns.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens run through the model (OpenAI's `usage.prompt_tokens`).
    pub prompt_tokens: usize,
}

enum Net {
    Encoder(Box<Encoder>),
    Decoder(Box<Transformer>),
}

/// An embedding model on the GPU, with its tokenizer and pooling.
pub struct Embedder {
    pub gpu: Gpu,
    net: Net,
    pub tokenizer: Tokenizer,
    pub cfg: EmbedConfig,
    scratch: Scratch,
}

/// Whether a GGUF architecture is an encoder flint runs.
pub fn is_encoder_arch(arch: &str) -> bool {
    matches!(arch, "bert" | "nomic-bert")
}

/// Whether a GGUF file holds an embedding model: an encoder, or a decoder with a pooling type.
pub fn gguf_embeds(g: &Gguf) -> bool {
    let arch = g.get_str("general.architecture").unwrap_or_default();
    is_encoder_arch(arch) || g.get_u64(&format!("{arch}.pooling_type")).is_some()
}

/// Whether the model at `path` (a GGUF file or a Hugging Face folder) embeds rather than
/// generates: an encoder, a GGUF with a pooling type, or a sentence-transformers folder
/// (`modules.json`). Reads only metadata.
#[cfg(not(target_arch = "wasm32"))]
pub fn is_embedding_model(path: impl AsRef<std::path::Path>) -> Result<bool> {
    use crate::format::ModelFile;
    Ok(match ModelFile::open(path)? {
        ModelFile::Gguf(g) => gguf_embeds(&g),
        ModelFile::Hf(hf) => {
            encoder::is_hf_encoder(hf.config.architecture()?)
                || hf.dir.join("modules.json").is_file()
        }
    })
}

/// L2-normalizes `v` in place (a zero vector stays zero; torch's `F.normalize` eps 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    let d = norm.max(1e-12) as f32;
    v.iter_mut().for_each(|x| *x /= d);
}

/// Pools `rows` (`n` hidden states of `hidden` floats, one input's) into one vector.
pub fn pool(rows: &[f32], hidden: usize, pooling: Pooling) -> Vec<f32> {
    let n = rows.len() / hidden;
    match pooling {
        Pooling::Cls => rows[..hidden].to_vec(),
        Pooling::Last => rows[(n - 1) * hidden..][..hidden].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f64; hidden];
            for row in rows.chunks(hidden) {
                sum.iter_mut().zip(row).for_each(|(s, x)| *s += *x as f64);
            }
            sum.iter().map(|s| (*s / n as f64) as f32).collect()
        }
    }
}

/// The model's normalization, then `dimensions` (truncate and normalize again).
pub fn finish(mut v: Vec<f32>, normalize: bool, dimensions: Option<usize>) -> Vec<f32> {
    if normalize {
        l2_normalize(&mut v);
    }
    if let Some(d) = dimensions {
        v.truncate(d);
        l2_normalize(&mut v);
    }
    v
}

impl Embedder {
    /// Loads a GGUF file or a Hugging Face / sentence-transformers folder (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        path: impl AsRef<std::path::Path>,
        gpu_opts: &crate::gpu::GpuOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Embedder> {
        Embedder::load_with(path, gpu_opts, None, progress)
    }

    /// [`Embedder::load`] with the pooling given rather than read from the model (llama.cpp's
    /// `--pooling`); it also makes a decoder without a pooling type an embedder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_with(
        path: impl AsRef<std::path::Path>,
        gpu_opts: &crate::gpu::GpuOptions,
        pooling: Option<Pooling>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Embedder> {
        use crate::format::ModelFile;
        let path = path.as_ref();
        match ModelFile::open(path)? {
            ModelFile::Gguf(g) => {
                if !gguf_embeds(&g) && pooling.is_none() {
                    return Err(not_an_embedder(&path.display().to_string()));
                }
                let tokenizer = Tokenizer::load_for_model(path, &g)?;
                let gpu = Gpu::new(gpu_opts)?;
                let src = TensorSource::new(&g, progress);
                Embedder::from_gguf_with(gpu, &g, src, tokenizer, pooling)
            }
            ModelFile::Hf(hf) => {
                let st = st_config(&hf.dir)?;
                let arch = hf.config.architecture()?.to_string();
                let gpu = Gpu::new(gpu_opts)?;
                let (net, hidden, ctx, tokenizer) = if encoder::is_hf_encoder(&arch) {
                    let (cfg, names) = encoder::from_hf(&hf.config)?;
                    let mut src = TensorSource::hf(&hf, names, progress);
                    let tok =
                        Tokenizer::encoder_from_tokenizer_json(hf.dir.join("tokenizer.json"))?;
                    let (h, ctx) = (cfg.hidden, cfg.ctx_train);
                    (
                        Net::Encoder(Box::new(Encoder::load(&gpu, &mut src, cfg)?)),
                        h,
                        ctx,
                        tok,
                    )
                } else {
                    // a decoder embeds only when its folder says how to pool
                    if st.pooling.is_none() && pooling.is_none() {
                        return Err(not_an_embedder(&hf.dir.display().to_string()));
                    }
                    let (mut cfg, names) = crate::model::hf_config(&hf.config)?;
                    let mut src = TensorSource::hf(&hf, names, progress);
                    if !src.has("output.weight") {
                        cfg.tied_output = true; // an embedder has no head, and needs none
                    }
                    let (h, ctx) = (cfg.hidden, cfg.ctx_train);
                    let t = Transformer::load(&gpu, &mut src, cfg)?;
                    // tokenizer.json's post-processor adds what sentence-transformers adds
                    // (Qwen3-Embedding: <|endoftext|> last, the token whose state is pooled)
                    let tok =
                        Tokenizer::encoder_from_tokenizer_json(hf.dir.join("tokenizer.json"))?;
                    (Net::Decoder(Box::new(t)), h, ctx, tok)
                };
                let default = match net {
                    Net::Encoder(_) => Pooling::Mean,
                    Net::Decoder(_) => Pooling::Last,
                };
                let cfg = EmbedConfig {
                    pooling: pooling.or(st.pooling).unwrap_or(default),
                    normalize: st.normalize,
                    max_tokens: st.max_seq_length.unwrap_or(ctx).min(ctx),
                    dims: hidden,
                };
                Embedder::assemble(gpu, net, tokenizer, cfg)
            }
        }
    }

    /// An embedder from a parsed GGUF whose tensors come from `src` (the web loader's are
    /// already on the GPU).
    pub fn from_gguf(
        gpu: Gpu,
        g: &Gguf,
        src: TensorSource,
        tokenizer: Tokenizer,
    ) -> Result<Embedder> {
        Embedder::from_gguf_with(gpu, g, src, tokenizer, None)
    }

    /// [`Embedder::from_gguf`] with the pooling given (see [`Embedder::load_with`]).
    pub fn from_gguf_with(
        gpu: Gpu,
        g: &Gguf,
        mut src: TensorSource,
        tokenizer: Tokenizer,
        pooling_override: Option<Pooling>,
    ) -> Result<Embedder> {
        let arch = g
            .get_str("general.architecture")
            .ok_or_else(|| Error::Model("missing `general.architecture`".into()))?
            .to_string();
        let pooling_key = format!("{arch}.pooling_type");
        let pooling = match pooling_override {
            Some(p) => Some(p),
            None => g
                .get_u64(&pooling_key)
                .map(Pooling::from_gguf)
                .transpose()?,
        };
        let (net, hidden, ctx) = if is_encoder_arch(&arch) {
            let cfg = encoder::from_gguf(g, &arch)?;
            let (h, ctx) = (cfg.hidden, cfg.ctx_train);
            (
                Net::Encoder(Box::new(Encoder::load(&gpu, &mut src, cfg)?)),
                h,
                ctx,
            )
        } else {
            if pooling.is_none() {
                return Err(not_an_embedder(&arch));
            }
            let mut cfg = gguf_config(g)?;
            if !src.has("output.weight") {
                cfg.tied_output = true;
            }
            let (h, ctx) = (cfg.hidden, cfg.ctx_train);
            (
                Net::Decoder(Box::new(Transformer::load(&gpu, &mut src, cfg)?)),
                h,
                ctx,
            )
        };
        let default = match net {
            Net::Encoder(_) => Pooling::Mean,
            Net::Decoder(_) => Pooling::Last,
        };
        let cfg = EmbedConfig {
            pooling: pooling.unwrap_or(default),
            normalize: true,
            max_tokens: ctx,
            dims: hidden,
        };
        Embedder::assemble(gpu, net, tokenizer, cfg)
    }

    fn assemble(gpu: Gpu, net: Net, tokenizer: Tokenizer, cfg: EmbedConfig) -> Result<Embedder> {
        if let (Net::Decoder(_), Pooling::Mean | Pooling::Cls) = (&net, cfg.pooling) {
            return Err(Error::Model(format!(
                "{} pooling of a decoder's hidden states is not supported (last is)",
                cfg.pooling.name()
            )));
        }
        let vocab = match &net {
            Net::Encoder(e) => e.cfg.vocab,
            Net::Decoder(t) => t.cfg.vocab,
        };
        if tokenizer.vocab_size() > vocab {
            return Err(Error::Model(format!(
                "the tokenizer has {} tokens but the model's embedding table only {vocab}",
                tokenizer.vocab_size()
            )));
        }
        gpu.check("loading the embedding model")?;
        Ok(Embedder {
            gpu,
            net,
            tokenizer,
            cfg,
            scratch: Scratch::default(),
        })
    }

    /// Architecture and options, for `flint info` and `/v1/models`.
    pub fn info(&self) -> ModelInfo {
        let (architecture, mut params) = match &self.net {
            Net::Encoder(e) => (e.cfg.arch.clone(), e.cfg.describe()),
            Net::Decoder(t) => {
                let i = t.info();
                (i.architecture, i.params)
            }
        };
        params.push(("pooling".into(), self.cfg.pooling.name().into()));
        params.push(("normalize".into(), self.cfg.normalize.to_string()));
        params.push(("max_tokens".into(), self.cfg.max_tokens.to_string()));
        params.push(("dimensions".into(), self.cfg.dims.to_string()));
        ModelInfo {
            architecture,
            params,
        }
    }

    /// The token ids of each input, checked: not empty, within the vocabulary and the model's
    /// limit (or cut to it with `truncate`). Errors name the input by its index.
    pub fn tokenize(&self, inputs: &[EmbedInput], truncate: bool) -> Result<Vec<Vec<u32>>> {
        if inputs.is_empty() {
            return Err(Error::InvalidArgument("no input to embed".into()));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(Error::InvalidArgument(format!(
                "{} inputs in one call, over the limit of {MAX_INPUTS}",
                inputs.len()
            )));
        }
        let vocab = self.tokenizer.vocab_size();
        let max = self.cfg.max_tokens;
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let mut ids = match input {
                    EmbedInput::Text(t) if t.is_empty() => {
                        return Err(Error::InvalidArgument(format!(
                            "input {i} is an empty string"
                        )))
                    }
                    EmbedInput::Text(t) => self.tokenizer.encode(t, true)?,
                    EmbedInput::Tokens(ids) if ids.is_empty() => {
                        return Err(Error::InvalidArgument(format!(
                            "input {i} is an empty token array"
                        )))
                    }
                    EmbedInput::Tokens(ids) => {
                        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                            return Err(Error::InvalidArgument(format!(
                                "input {i}: token id {bad} is outside the vocabulary of {vocab}"
                            )));
                        }
                        ids.clone()
                    }
                };
                if ids.len() > max {
                    if !truncate {
                        return Err(Error::InvalidArgument(format!(
                            "input {i} is {} tokens, over this model's limit of {max} (pass \
                             truncate: true to cut it)",
                            ids.len()
                        )));
                    }
                    // keep the trailing special tokens ([SEP], EOS) after the cut
                    let tail = ids
                        .iter()
                        .rev()
                        .take_while(|&&t| self.tokenizer.is_control(t))
                        .count()
                        .min(max / 2);
                    let end: Vec<u32> = ids[ids.len() - tail..].to_vec();
                    ids.truncate(max - tail);
                    ids.extend(end);
                }
                Ok(ids)
            })
            .collect()
    }

    /// Embeds `inputs`: one vector per input, in order.
    pub async fn embed_async(
        &mut self,
        inputs: &[EmbedInput],
        opts: &EmbedOptions,
    ) -> Result<Embeddings> {
        if let Some(d) = opts.dimensions {
            if d == 0 || d > self.cfg.dims {
                return Err(Error::InvalidArgument(format!(
                    "dimensions {d} is outside 1..={} (this model's vectors)",
                    self.cfg.dims
                )));
            }
        }
        let ids = self.tokenize(inputs, opts.truncate)?;
        let pooled = self.embed_tokens_async(&ids).await?;
        let vectors = pooled
            .into_iter()
            .map(|v| finish(v, self.cfg.normalize, opts.dimensions))
            .collect();
        Ok(Embeddings {
            vectors,
            prompt_tokens: ids.iter().map(Vec::len).sum(),
        })
    }

    /// [`Embedder::embed_async`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed(&mut self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Embeddings> {
        pollster::block_on(self.embed_async(inputs, opts))
    }

    /// The pooled (not yet normalized) vector of each checked token sequence, packed into as few
    /// forward passes as fit the batch limit.
    pub async fn embed_tokens_async(&mut self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let limit = match self.net {
            Net::Encoder(_) => BATCH_TOKENS,
            Net::Decoder(_) => crate::model::transformer::MAX_BATCH,
        };
        let h = self.cfg.dims;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        while start < seqs.len() {
            // the next batch: inputs in order while their tokens fit (one input always does)
            let mut end = start;
            let mut tokens = 0;
            while end < seqs.len() && (end == start || tokens + seqs[end].len() <= limit) {
                tokens += seqs[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = seqs[start..end].iter().map(Vec::as_slice).collect();
            match &self.net {
                Net::Encoder(e) => {
                    let states = e
                        .forward_async(&self.gpu, &mut self.scratch, &batch)
                        .await?;
                    let mut row = 0;
                    for sq in &batch {
                        let rows = &states[row * h..(row + sq.len()) * h];
                        out.push(pool(rows, h, self.cfg.pooling));
                        row += sq.len();
                    }
                }
                Net::Decoder(t) => {
                    let mut caches = batch
                        .iter()
                        .map(|sq| t.new_cache(&self.gpu, sq.len()))
                        .collect::<Result<Vec<_>>>()?;
                    let mut s: Vec<Seq> = caches
                        .iter_mut()
                        .zip(&batch)
                        .map(|(cache, tokens)| Seq { cache, tokens })
                        .collect();
                    let last = t
                        .forward_many_async(&self.gpu, &mut s, &mut self.scratch, Logits::Hidden)
                        .await?;
                    out.extend(last);
                }
            }
            start = end;
        }
        Ok(out)
    }
}

fn not_an_embedder(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{what} is a generation model, not an embedding model (it has no pooling type: an \
         encoder such as BERT, a GGUF with `<arch>.pooling_type`, or a sentence-transformers \
         folder embeds)"
    ))
}

/// What a sentence-transformers folder says about pooling.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Default)]
struct StConfig {
    /// `None`: no `modules.json` (a plain Hugging Face folder).
    pooling: Option<Pooling>,
    normalize: bool,
    max_seq_length: Option<usize>,
}

/// Reads `modules.json`, the Pooling module's `config.json` and `sentence_bert_config.json`
/// (sentence-transformers' layout). A plain folder (no `modules.json`) gets mean pooling and
/// normalization, as llama.cpp and text-embeddings-inference give it.
#[cfg(not(target_arch = "wasm32"))]
fn st_config(dir: &std::path::Path) -> Result<StConfig> {
    use serde_json::Value;
    let read = |p: std::path::PathBuf| -> Result<Option<Value>> {
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Model(format!("{}: {e}", p.display())))
    };
    let max_seq_length = read(dir.join("sentence_bert_config.json"))?
        .and_then(|v| v.get("max_seq_length")?.as_u64())
        .map(|v| v as usize);
    let Some(modules) = read(dir.join("modules.json"))? else {
        return Ok(StConfig {
            pooling: None,
            normalize: true,
            max_seq_length,
        });
    };
    let modules = modules.as_array().cloned().unwrap_or_default();
    let of_type = |suffix: &str| {
        modules.iter().find(|m| {
            m.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(suffix))
        })
    };
    let normalize = of_type(".Normalize").is_some();
    let pooling = match of_type(".Pooling") {
        None => None,
        Some(m) => {
            let sub = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
            let path = dir.join(sub).join("config.json");
            let c = read(path.clone())?.ok_or_else(|| {
                Error::Model(format!(
                    "{}: missing (modules.json names it)",
                    path.display()
                ))
            })?;
            let on = |k: &str| c.get(k).and_then(Value::as_bool) == Some(true);
            let modes: Vec<&str> = [
                "pooling_mode_cls_token",
                "pooling_mode_mean_tokens",
                "pooling_mode_lasttoken",
                "pooling_mode_max_tokens",
                "pooling_mode_mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens",
            ]
            .into_iter()
            .filter(|k| on(k))
            .collect();
            Some(match modes[..] {
                ["pooling_mode_cls_token"] => Pooling::Cls,
                ["pooling_mode_mean_tokens"] => Pooling::Mean,
                ["pooling_mode_lasttoken"] => Pooling::Last,
                _ => {
                    return Err(Error::Model(format!(
                        "{}: pooling {modes:?} is not supported (one of cls, mean, lasttoken)",
                        path.display()
                    )))
                }
            })
        }
    };
    Ok(StConfig {
        pooling,
        normalize,
        max_seq_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_and_normalization() {
        // two tokens of three floats
        let rows = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0];
        assert_eq!(pool(&rows, 3, Pooling::Mean), vec![2.0, 2.0, 2.0]);
        assert_eq!(pool(&rows, 3, Pooling::Cls), vec![1.0, 2.0, 3.0]);
        assert_eq!(pool(&rows, 3, Pooling::Last), vec![3.0, 2.0, 1.0]);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        let v = finish(vec![3.0, 4.0, 12.0], true, None);
        assert!(close(&v, &[3.0 / 13.0, 4.0 / 13.0, 12.0 / 13.0]), "{v:?}");
        // Matryoshka: the first two, normalized again
        let v = finish(vec![3.0, 4.0, 12.0], true, Some(2));
        assert!(v.len() == 2 && close(&v, &[0.6, 0.8]), "{v:?}");
        // a model that does not normalize keeps its scale
        assert_eq!(finish(vec![3.0, 4.0], false, None), vec![3.0, 4.0]);
        assert_eq!(finish(vec![0.0, 0.0], true, None), vec![0.0, 0.0]);
        for (v, p) in [(1, Pooling::Mean), (2, Pooling::Cls), (3, Pooling::Last)] {
            assert_eq!(Pooling::from_gguf(v).unwrap(), p);
            assert_eq!(Pooling::parse(p.name()).unwrap(), p);
        }
        assert!(Pooling::from_gguf(4)
            .unwrap_err()
            .to_string()
            .contains("rank"));
        assert!(Pooling::from_gguf(0).is_err());
    }
}
