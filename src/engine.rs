//! A model ready to run: GPU, weights, tokenizer, KV cache, and the token loop around them.
//!
//! `prompt text -> tokens -> forward (prefill, in batches) -> logits -> sampler -> token -> forward
//! (decode, one token) -> ... -> text`. The KV cache is kept between calls: a new prompt that starts
//! with the tokens already in the cache only computes the rest (multi-turn chat, shared prefixes).

use crate::constrain::Constraint;
use crate::decode::Output;
use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
#[cfg(not(target_arch = "wasm32"))]
use crate::format::hf::HfModel;
#[cfg(not(target_arch = "wasm32"))]
use crate::format::ModelFile;
use crate::gpu::{Gpu, GpuOptions};
use crate::model::transformer::StepInput;
use crate::model::{KvCache, Logits, Model, Scratch};
use crate::sampling::{Sampler, SamplingParams};
use crate::spec::{Drafter, SpecOptions, SpecStats};
use crate::tokenizer::Tokenizer;
use crate::tools::Delta;
use std::time::Duration;
use web_time::Instant;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub gpu: GpuOptions,
    /// Context length (positions in the KV cache); `None` = min(model's, [`DEFAULT_CTX`]).
    pub ctx: Option<usize>,
    /// Most tokens per forward pass during prefill.
    pub batch: usize,
}

/// Context used when none is asked for and the model's is larger (KV memory grows with it).
pub const DEFAULT_CTX: usize = 4096;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            gpu: GpuOptions::default(),
            ctx: None,
            batch: 256,
        }
    }
}

/// What to generate.
#[derive(Clone, Default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Keep the output inside this grammar (`response_format`, tool calls).
    pub grammar: Option<crate::constrain::Compiled>,
    /// Parse tool calls written in this syntax out of the text (tools were given).
    pub tools: Option<crate::tools::Syntax>,
    /// Speculative decoding (on by default: prompt lookup, [`crate::spec`]).
    pub spec: SpecOptions,
}

pub use crate::decode::FinishReason;

impl std::fmt::Debug for GenerateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop", &self.stop)
            .field("grammar", &self.grammar.is_some())
            .field("tools", &self.tools)
            .field("spec", &self.spec)
            .finish()
    }
}

/// The result of [`Engine::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The text (for an answer with tool calls, the content outside them).
    pub text: String,
    pub tokens: Vec<u32>,
    /// The tools the answer called (with [`GenerateOptions::tools`]).
    pub tool_calls: Vec<crate::chat::ToolCall>,
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    pub finish: FinishReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Speculative decoding's checking passes, drafted and accepted tokens.
    pub spec: SpecStats,
}

impl Generation {
    /// Prefill tokens per second.
    pub fn prefill_tps(&self) -> f64 {
        self.prefilled_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode tokens per second (tokens after the first, which prefill produced).
    pub fn decode_tps(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Perplexity over a text, llama.cpp's definition (see [`Engine::perplexity`]).
#[derive(Clone, Debug)]
pub struct Perplexity {
    pub ppl: f64,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Running PPL after each chunk (what llama-perplexity prints as `[i]value`).
    pub per_chunk: Vec<f64>,
}

/// A loaded model with its tokenizer and KV cache.
pub struct Engine {
    pub gpu: Gpu,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// The model's own Jinja chat template (`tokenizer.chat_template`), if it has one.
    pub chat_template: Option<String>,
    pub ctx: usize,
    pub batch: usize,
    /// Slot 0 is the engine's own sequence ([`Engine::feed`], [`Engine::generate`], ...); more
    /// slots ([`Engine::set_slots`]) hold further sequences for continuous batching.
    state: State,
    slots: Vec<State>,
    pub load_time: Duration,
    /// The draft model of speculative decoding's `draft` mode ([`Engine::set_draft`]).
    draft: Option<DraftModel>,
    /// Whether greedy generation with the pick made on the GPU overlaps its steps: step N+1 is
    /// submitted, fed with step N's pick on the GPU, before step N's pick is read back (see
    /// [`Engine::generate_async`]). The same tokens either way. On unless the environment
    /// variable `FLINT_NO_OVERLAP` is set when the engine is assembled.
    pub overlap: bool,
}

/// The KV cache, the activation buffers and the tokens the cache holds.
struct State {
    cache: KvCache,
    scratch: Scratch,
    /// Tokens whose keys/values are in the cache, in order.
    history: Vec<u32>,
}

impl State {
    fn reset(&mut self) {
        self.cache.truncate(0);
        self.history.clear();
    }

    /// `tokens` are something to feed and fit after what the cache holds.
    fn check_fits(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("nothing to feed: no tokens".into()));
        }
        if self.history.len() + tokens.len() > self.cache.ctx {
            return Err(Error::ContextOverflow {
                tokens: self.history.len() + tokens.len(),
                ctx: self.cache.ctx,
            });
        }
        Ok(())
    }

    /// Runs `tokens` after what is in the cache, `batch` at a time; returns the last token's logits.
    /// With [`Logits::All`], every token's logits, concatenated (batches are then also capped so
    /// one batch's logits fit the binding limit).
    async fn feed(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        batch: usize,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        self.check_fits(tokens)?;
        let batch = match want {
            Logits::Last | Logits::Hidden => batch,
            Logits::All => batch.min(((gpu.caps.max_binding / 4) as usize / model.vocab()).max(1)),
        };
        let mut logits = Vec::new();
        for chunk in tokens.chunks(batch) {
            let l = model
                .forward_async(gpu, &mut self.cache, &mut self.scratch, chunk, want)
                .await?;
            match want {
                Logits::Last | Logits::Hidden => logits = l,
                Logits::All => logits.extend_from_slice(&l),
            }
            self.history.extend_from_slice(chunk);
        }
        Ok(logits)
    }

    /// [`State::feed`] that ranks the last token's logits on the GPU and returns only the `k`
    /// best, as (token id, logit), best first ([`crate::ops::top_k`]).
    async fn feed_top_k(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        batch: usize,
        tokens: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        self.check_fits(tokens)?;
        let mut best = Vec::new();
        for chunk in tokens.chunks(batch) {
            best = model
                .top_k_async(gpu, &mut self.cache, &mut self.scratch, chunk, k)
                .await?;
            self.history.extend_from_slice(chunk);
        }
        Ok(best)
    }

    /// Feeds `tokens` (at most one batch) and reads back what picks the token after each of
    /// them, in order: each row's `k` best logits ranked on the GPU when `gpu_k` is `Some(k)`,
    /// else each whole row (speculative decoding's check).
    async fn feed_rows(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        tokens: &[u32],
        gpu_k: Option<usize>,
    ) -> Result<Vec<Scores>> {
        self.check_fits(tokens)?;
        let (cache, scratch) = (&mut self.cache, &mut self.scratch);
        let rows = match gpu_k {
            Some(k) => model
                .top_k_all_async(gpu, cache, scratch, tokens, k)
                .await?
                .into_iter()
                .map(Scores::Best)
                .collect(),
            None => model
                .forward_async(gpu, cache, scratch, tokens, Logits::All)
                .await?
                .chunks(model.vocab())
                .map(|r| Scores::Logits(r.to_vec()))
                .collect(),
        };
        self.history.extend_from_slice(tokens);
        Ok(rows)
    }

    /// Cuts the cache and the history back to their first `len` tokens.
    fn cut(&mut self, len: usize) {
        self.cache.truncate(len);
        self.history.truncate(len);
    }

    /// Feeds `tokens` and reads back what picks the next token: the `k` best logits ranked on
    /// the GPU when `gpu_k` is `Some(k)`, else the last token's whole row.
    async fn feed_next(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        batch: usize,
        tokens: &[u32],
        gpu_k: Option<usize>,
    ) -> Result<Scores> {
        Ok(match gpu_k {
            Some(k) => Scores::Best(self.feed_top_k(gpu, model, batch, tokens, k).await?),
            None => Scores::Logits(self.feed(gpu, model, batch, tokens, Logits::Last).await?),
        })
    }
}

impl State {
    /// The decode loop: picks each token from what the last step read back, hands it to `turn`
    /// and feeds it, one step at a time, until `turn` says generation ends.
    async fn decode(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        mut next: Scores,
        gpu_k: Option<usize>,
        turn: &mut Turn<'_>,
        on_delta: &mut dyn FnMut(&Delta) -> bool,
    ) -> Result<FinishReason> {
        loop {
            let tok = turn.pick(&mut next, None)?;
            if let Some(finish) = turn.accept(tok, self.history.len(), self.cache.ctx, on_delta)? {
                return Ok(finish);
            }
            next = self.feed_next(gpu, model, 1, &[tok], gpu_k).await?;
        }
    }

    /// [`State::decode`] for greedy decoding with the pick made on the GPU, overlapped: each
    /// step's successor is submitted, fed with its pick on the GPU, before its pick is read back
    /// ([`Pipelined`]). When a token ends generation the step already feeding it has been
    /// submitted: the caller drops it by cutting the cache back to the history.
    async fn decode_overlapped(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        mut next: Scores,
        turn: &mut Turn<'_>,
        on_delta: &mut dyn FnMut(&Delta) -> bool,
    ) -> Result<FinishReason> {
        let mut pipe = Pipelined::new(gpu);
        loop {
            let tok = turn.pick(&mut next, None)?;
            if let Some(finish) = turn.accept(tok, self.history.len(), self.cache.ctx, on_delta)? {
                return Ok(finish);
            }
            next = Scores::Best(pipe.step(self, gpu, model, tok, true).await?);
        }
    }
}

impl State {
    /// [`State::decode`] with speculative decoding: after each token, `drafter` proposes what
    /// may follow; the token and the draft go through the model in one pass, which scores the
    /// token after each of them; drafted tokens are taken, in order, while the sampler picks
    /// them from those scores ([`Sampler::sample_spec`]: the same token, or the same
    /// distribution, as without the draft), and the first one it does not pick is replaced by
    /// its own pick. The cache and the history keep only what was taken.
    #[allow(clippy::too_many_arguments)]
    async fn decode_spec(
        &mut self,
        gpu: &Gpu,
        model: &Model,
        mut next: Scores,
        gpu_k: Option<usize>,
        turn: &mut Turn<'_>,
        on_delta: &mut dyn FnMut(&Delta) -> bool,
        drafter: &mut Drafter,
        mut draft_model: Option<&mut DraftModel>,
        max_tokens: usize,
    ) -> Result<FinishReason> {
        let ctx = self.cache.ctx;
        let mut tok = turn.pick(&mut next, None)?;
        loop {
            if let Some(finish) = turn.accept(tok, self.history.len(), ctx, on_delta)? {
                return Ok(finish);
            }
            // what the cache and the answer still take after `tok`
            let room = (ctx.saturating_sub(self.history.len() + 1))
                .min(max_tokens.saturating_sub(turn.tokens.len()));
            // a check computes its rows as single steps would (`same_as_alone`)
            let room = model.same_as_alone(self.history.len(), room + 1) - 1;
            let draft = match draft_model.as_deref_mut() {
                Some(dm) => match drafter.budget(room) {
                    0 => Vec::new(),
                    k => dm.propose(gpu, 256, &turn.context, k).await?,
                },
                None => drafter.propose(&turn.context, room),
            };
            if draft.is_empty() {
                next = self.feed_next(gpu, model, 1, &[tok], gpu_k).await?;
                tok = turn.pick(&mut next, None)?;
                continue;
            }
            let before = self.history.len();
            let input: Vec<u32> = std::iter::once(tok).chain(draft.iter().copied()).collect();
            let mut rows = self.feed_rows(gpu, model, &input, gpu_k).await?.into_iter();
            let mut taken = 0;
            let mut own = None;
            for &d in &draft {
                let mut row = rows.next().ok_or_else(short)?;
                let pick = turn.pick(&mut row, Some(d))?;
                if pick != d {
                    own = Some(pick);
                    break;
                }
                if let Some(finish) = turn.accept(d, before + 1 + taken, ctx, on_delta)? {
                    drafter.observe(draft.len(), taken + 1);
                    self.cut(before + 1 + taken);
                    return Ok(finish);
                }
                taken += 1;
            }
            drafter.observe(draft.len(), taken);
            self.cut(before + 1 + taken);
            tok = match own {
                Some(t) => t,
                None => turn.pick(&mut rows.next().ok_or_else(short)?, None)?,
            };
        }
    }
}

/// A second, smaller model that drafts for speculative decoding (`SpecMode::Draft`): the same
/// vocabulary, its own KV cache on the same device. Each draft first brings its cache to the
/// prompt and answer so far (keeping the prefix it shares with them: after a check, what the
/// main model kept), then runs `k` greedy steps, each picked on the GPU.
pub struct DraftModel {
    model: Model,
    state: State,
}

impl DraftModel {
    async fn propose(
        &mut self,
        gpu: &Gpu,
        batch: usize,
        context: &[u32],
        k: usize,
    ) -> Result<Vec<u32>> {
        let st = &mut self.state;
        if context.is_empty() || k == 0 || context.len() + k > st.cache.ctx {
            return Ok(Vec::new());
        }
        let common = st
            .history
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            .min(context.len() - 1);
        st.cut(common);
        let mut draft = Vec::with_capacity(k);
        let mut feed = context[common..].to_vec();
        for _ in 0..k {
            let best = st.feed_top_k(gpu, &self.model, batch, &feed, 1).await?;
            let Some(&(tok, _)) = best.first() else {
                break;
            };
            draft.push(tok);
            feed = vec![tok];
        }
        Ok(draft)
    }
}

/// A checking pass that returned fewer rows than it was given tokens.
fn short() -> Error {
    Error::Gpu("speculative check: fewer rows of scores than tokens".into())
}

/// The overlapped greedy decode loop's steps in flight: the one whose pick is being read back,
/// and the one after it, which reads that pick on the GPU (its embedding's token id is copied
/// from the first step's top-k result). Each step's pick goes into one of two readback buffers,
/// in turn, so the next step's copy never targets a buffer being mapped.
struct Pipelined {
    readback: [wgpu::Buffer; 2],
    /// The readback buffer of the next step submitted.
    next: usize,
    /// The step already feeding the last accepted token (its pick): its submission and readback
    /// buffer.
    ahead: Option<(wgpu::SubmissionIndex, usize)>,
}

impl Pipelined {
    /// Bytes of one greedy step's result: one (key, id) pair ([`crate::ops::top_k::decode`]).
    const RESULT: u64 = 8;

    fn new(gpu: &Gpu) -> Pipelined {
        Pipelined {
            readback: [0, 1].map(|_| gpu.staging("greedy pick", Self::RESULT)),
            next: 0,
            ahead: None,
        }
    }

    /// `tok` was just accepted: makes sure a step feeds it (the first time, from the host; after
    /// that, the step submitted ahead already does), records it in the history, submits the
    /// step after it (if `ahead`, and the cache has room), and only then reads back `tok`'s
    /// step's pick.
    async fn step(
        &mut self,
        st: &mut State,
        gpu: &Gpu,
        model: &Model,
        tok: u32,
        ahead: bool,
    ) -> Result<Vec<(u32, f32)>> {
        let (index, buf) = match self.ahead.take() {
            Some(ahead) => ahead,
            None => self.submit(st, gpu, model, StepInput::Token(tok))?,
        };
        st.history.push(tok);
        if ahead && st.cache.len < st.cache.ctx {
            self.ahead = Some(self.submit(st, gpu, model, StepInput::Picked)?);
        }
        let bytes = gpu
            .read_staging_async(&self.readback[buf], Some(index))
            .await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[..Self::RESULT as usize]);
        Ok(crate::ops::top_k::decode(&words))
    }

    fn submit(
        &mut self,
        st: &mut State,
        gpu: &Gpu,
        model: &Model,
        input: StepInput,
    ) -> Result<(wgpu::SubmissionIndex, usize)> {
        let buf = self.next;
        self.next ^= 1;
        let index = model.submit_greedy_step(
            gpu,
            &mut st.cache,
            &mut st.scratch,
            input,
            &self.readback[buf],
        )?;
        Ok((index, buf))
    }
}

/// One generation's output so far, and what happens to each token picked.
struct Turn<'t> {
    sampler: Sampler,
    tokenizer: &'t Tokenizer,
    tools: Option<crate::tools::Syntax>,
    output: Output,
    /// The answer's tokens (end-of-generation tokens left out).
    tokens: Vec<u32>,
    deltas: Vec<Delta>,
    /// The prompt and the answer so far (what penalties look at).
    context: Vec<u32>,
    text: String,
}

impl Turn<'_> {
    /// Picks the next token from what a step read back; at a position where `draft` was
    /// proposed, as [`Sampler::sample_spec`] picks it.
    fn pick(&mut self, next: &mut Scores, draft: Option<u32>) -> Result<u32> {
        match next {
            Scores::Logits(logits) => {
                self.output.mask(logits)?;
                self.sampler.sample_spec(logits, &self.context, draft)
            }
            Scores::Best(best) => self.sampler.sample_top_spec(best, draft),
        }
    }

    /// Takes the picked `tok`, with `cached` tokens in a cache of `ctx` positions before it:
    /// passes its text (or tool call pieces) to `on_delta`; returns why generation ends, if it
    /// does (the token ends generation, a stop string, max_tokens, the context is full, or
    /// `on_delta` returned `false`).
    fn accept(
        &mut self,
        tok: u32,
        cached: usize,
        ctx: usize,
        on_delta: &mut dyn FnMut(&Delta) -> bool,
    ) -> Result<Option<FinishReason>> {
        let eog = self.tokenizer.is_eog(tok);
        let bytes = if eog {
            Vec::new()
        } else {
            crate::decode::token_bytes(self.tokenizer, tok, self.tools)
        };
        let start = self.deltas.len();
        let mut finish = self.output.push(tok, &bytes, eog, &mut self.deltas)?;
        if !eog {
            self.tokens.push(tok);
            self.context.push(tok);
        }
        if finish.is_none() && cached >= ctx {
            finish = Some(self.output.finish(FinishReason::Length, &mut self.deltas));
        }
        for d in &self.deltas[start..] {
            if let Delta::Text(t) = d {
                self.text.push_str(t);
            }
            if !on_delta(d) {
                finish = Some(self.output.finish(FinishReason::Cancelled, &mut Vec::new()));
                break;
            }
        }
        Ok(finish)
    }
}

/// What a forward pass read back for a sequence's next token (generation here, the server's
/// worker per request).
#[derive(Clone, Debug)]
pub enum Scores {
    /// The whole row of logits ([`Sampler::sample`]).
    Logits(Vec<f32>),
    /// The best logits, ranked on the GPU, best first ([`Sampler::sample_top`]).
    Best(Vec<(u32, f32)>),
}

impl Engine {
    /// Opens a GGUF file or a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`,
    /// `tokenizer_config.json`; see [`ModelFile::open`]), the GPU, uploads the weights and builds
    /// the tokenizer.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        path: impl AsRef<std::path::Path>,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Engine> {
        let t0 = Instant::now();
        let path = path.as_ref();
        let mut e = match ModelFile::open(path)? {
            ModelFile::Gguf(gguf) => {
                let tokenizer = Tokenizer::load_for_model(path, &gguf)?;
                let gpu = Gpu::new(&opts.gpu)?;
                Engine::from_parts(gpu, &gguf, tokenizer, opts, progress)?
            }
            ModelFile::Hf(hf) => Engine::from_hf(&hf, opts, progress)?,
        };
        e.load_time = t0.elapsed();
        Ok(e)
    }

    /// Builds an engine from an opened Hugging Face folder: tokenizer from `tokenizer.json`, chat
    /// template from `tokenizer_config.json`, weights uploaded from the mapped safetensors.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_hf(
        hf: &HfModel,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Engine> {
        let t0 = Instant::now();
        let tokenizer = hf.tokenizer()?;
        let gpu = Gpu::new(&opts.gpu)?;
        let model = Model::load_hf(&gpu, hf, progress)?;
        let chat_template = hf.chat_template().map(str::to_string);
        let mut e = Engine::assemble(gpu, model, tokenizer, chat_template, opts)?;
        e.load_time = t0.elapsed();
        Ok(e)
    }

    /// Builds an engine from an opened GPU, a parsed GGUF and a tokenizer.
    pub fn from_parts(
        gpu: Gpu,
        gguf: &Gguf,
        tokenizer: Tokenizer,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Engine> {
        let t0 = Instant::now();
        let model = Model::load(&gpu, gguf, progress)?;
        let chat_template = gguf.get_str("tokenizer.chat_template").map(str::to_string);
        let mut e = Engine::assemble(gpu, model, tokenizer, chat_template, opts)?;
        e.load_time = t0.elapsed();
        Ok(e)
    }

    /// Checks the tokenizer against the model, allocates the KV cache, and puts the parts together
    /// (the web loader builds the model from streamed tensors, then calls this).
    pub fn assemble(
        gpu: Gpu,
        model: Model,
        tokenizer: Tokenizer,
        chat_template: Option<String>,
        opts: &LoadOptions,
    ) -> Result<Engine> {
        if tokenizer.vocab_size() > model.vocab() {
            return Err(Error::Model(format!(
                "the tokenizer has {} tokens but the model's output head only {}",
                tokenizer.vocab_size(),
                model.vocab()
            )));
        }
        let ctx = opts
            .ctx
            .unwrap_or(model.ctx_train().min(DEFAULT_CTX))
            .max(1);
        let cache = model.new_cache(&gpu, ctx)?;
        gpu.check("loading the model")?;
        Ok(Engine {
            chat_template,
            gpu,
            model,
            tokenizer,
            ctx,
            batch: opts.batch.clamp(1, crate::model::transformer::MAX_BATCH),
            state: State {
                cache,
                scratch: Scratch::default(),
                history: Vec::new(),
            },
            slots: Vec::new(),
            draft: None,
            load_time: Duration::ZERO,
            overlap: std::env::var_os("FLINT_NO_OVERLAP").is_none(),
        })
    }

    /// Gives the engine a draft model for speculative decoding's `draft` mode: a smaller model
    /// with the same vocabulary (`tokenizer` is its own, compared token by token), with a KV
    /// cache of the engine's context on the engine's device.
    pub fn set_draft(&mut self, model: Model, tokenizer: &Tokenizer) -> Result<()> {
        let (mine, theirs) = (&self.tokenizer, tokenizer);
        let differs = mine.vocab_size() != theirs.vocab_size()
            || model.vocab() < theirs.vocab_size()
            || (0..mine.vocab_size() as u32).any(|i| mine.token_str(i) != theirs.token_str(i));
        if differs {
            return Err(Error::Model(format!(
                "the draft model's vocabulary ({} tokens) is not the model's ({} tokens): speculative \
                 decoding needs the same tokens with the same ids",
                theirs.vocab_size(),
                mine.vocab_size()
            )));
        }
        let cache = model.new_cache(&self.gpu, self.ctx)?;
        self.gpu.check("loading the draft model")?;
        self.draft = Some(DraftModel {
            model,
            state: State {
                cache,
                scratch: Scratch::default(),
                history: Vec::new(),
            },
        });
        Ok(())
    }

    /// Loads a GGUF file or a Hugging Face folder on the engine's device as its draft model
    /// ([`Engine::set_draft`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_draft(
        &mut self,
        path: impl AsRef<std::path::Path>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let path = path.as_ref();
        let file = ModelFile::open(path)?;
        let tokenizer = match &file {
            ModelFile::Gguf(g) => Tokenizer::load_for_model(path, g)?,
            ModelFile::Hf(hf) => hf.tokenizer()?,
        };
        let model = Model::load_file(&self.gpu, &file, progress)?;
        self.set_draft(model, &tokenizer)
    }

    /// Tokens currently held in the KV cache.
    pub fn history(&self) -> &[u32] {
        &self.state.history
    }

    /// Positions the KV cache holds: the history's length between calls (a step that the
    /// overlapped decode loop submitted past the end of generation is not counted).
    pub fn cache_len(&self) -> usize {
        self.state.cache.len
    }

    /// Empties the KV cache.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Makes room for `n` sequences (slots `0..n`, slot 0 being the engine's own), each with a KV
    /// cache of the loaded context. Slots beyond `n` are freed; kept slots keep their caches.
    pub fn set_slots(&mut self, n: usize) -> Result<()> {
        let n = n.max(1);
        self.slots.truncate(n - 1);
        while self.slots.len() < n - 1 {
            let cache = self.model.new_cache(&self.gpu, self.ctx)?;
            self.slots.push(State {
                cache,
                scratch: Scratch::default(),
                history: Vec::new(),
            });
        }
        self.gpu.check("allocating KV caches")
    }

    /// Number of sequence slots.
    pub fn slots(&self) -> usize {
        1 + self.slots.len()
    }

    /// A slot's state with what a feed into it needs (the GPU, the model, the batch size).
    fn slot_parts(&mut self, slot: usize) -> Result<(&Gpu, &Model, usize, &mut State)> {
        let st = match slot {
            0 => &mut self.state,
            i => self
                .slots
                .get_mut(i - 1)
                .ok_or_else(|| Error::InvalidArgument(format!("slot {slot} does not exist")))?,
        };
        Ok((&self.gpu, &self.model, self.batch, st))
    }

    fn slot_mut(&mut self, slot: usize) -> Result<&mut State> {
        Ok(self.slot_parts(slot)?.3)
    }

    /// Tokens held in a slot's KV cache.
    pub fn slot_history(&self, slot: usize) -> &[u32] {
        match slot {
            0 => &self.state.history,
            i => self.slots.get(i - 1).map_or(&[], |s| &s.history),
        }
    }

    /// Empties a slot's KV cache.
    pub fn reset_slot(&mut self, slot: usize) {
        if let Ok(s) = self.slot_mut(slot) {
            s.reset();
        }
    }

    /// Makes slot `dst` hold what slot `src` holds (its KV cache copied on the GPU, and its
    /// history): the server's `n` > 1 choices share one prefill this way.
    pub fn copy_slot(&mut self, src: usize, dst: usize) -> Result<()> {
        if src == dst {
            return Ok(());
        }
        let gpu = &self.gpu;
        let mut states = Self::states_mut(&mut self.state, &mut self.slots);
        let missing = |slot: usize| Error::InvalidArgument(format!("slot {slot} does not exist"));
        let from = states
            .get_mut(src)
            .and_then(Option::take)
            .ok_or_else(|| missing(src))?;
        let to = states
            .get_mut(dst)
            .and_then(Option::take)
            .ok_or_else(|| missing(dst))?;
        to.cache.copy_from(gpu, &from.cache)?;
        to.history.clone_from(&from.history);
        Ok(())
    }

    /// Every slot's state, by slot number, each to be taken at most once: several slots borrowed
    /// mutably at the same time.
    fn states_mut<'s>(state: &'s mut State, slots: &'s mut [State]) -> Vec<Option<&'s mut State>> {
        std::iter::once(Some(state))
            .chain(slots.iter_mut().map(Some))
            .collect()
    }

    /// Of the slots `free`, the one whose cache shares the longest prefix with `tokens` (so a
    /// new request reuses the most cached work); `None` if `free` is empty.
    pub fn best_slot(&self, free: &[usize], tokens: &[u32]) -> Option<usize> {
        free.iter().copied().max_by_key(|&s| {
            let common = self
                .slot_history(s)
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count();
            // prefer the longest shared prefix, then the emptiest slot
            (common, usize::MAX - self.slot_history(s).len())
        })
    }

    /// [`Engine::prefill`] for a slot (blocking, native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_slot(&mut self, slot: usize, tokens: &[u32]) -> Result<(Vec<f32>, usize)> {
        let keep = self.reuse_prefix(slot, tokens)?;
        let (gpu, model, batch, st) = self.slot_parts(slot)?;
        let logits = pollster::block_on(st.feed(gpu, model, batch, &tokens[keep..], Logits::Last))?;
        Ok((logits, tokens.len() - keep))
    }

    /// [`Engine::prefill_slot`] that returns only the `k` best logits of the last token, ranked
    /// on the GPU, as (token id, logit), best first (see [`Engine::feed_top_k`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_slot_top_k(
        &mut self,
        slot: usize,
        tokens: &[u32],
        k: usize,
    ) -> Result<(Vec<(u32, f32)>, usize)> {
        let keep = self.reuse_prefix(slot, tokens)?;
        let (gpu, model, batch, st) = self.slot_parts(slot)?;
        let best = pollster::block_on(st.feed_top_k(gpu, model, batch, &tokens[keep..], k))?;
        Ok((best, tokens.len() - keep))
    }

    /// One decode step for several slots in one forward pass: `steps[i] = (slot, token)` appends
    /// `token` to `slot` (each slot at most once) and returns each one's next-token logits, in
    /// order. Each slot's logits equal what [`Engine::feed`] of that token alone would give.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_many(&mut self, steps: &[(usize, u32)]) -> Result<Vec<Vec<f32>>> {
        self.step_many(steps, |model, gpu, seqs, scratch| {
            model.forward_many(gpu, seqs, scratch, Logits::Last)
        })
    }

    /// [`Engine::feed_many`] that returns only the `k` best logits of each slot's next token,
    /// ranked on the GPU, as (token id, logit), best first: `8 k` bytes read back per slot
    /// instead of the vocabulary's logits (see [`Engine::feed_top_k`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_many_top_k(
        &mut self,
        steps: &[(usize, u32)],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.step_many(steps, |model, gpu, seqs, scratch| {
            pollster::block_on(model.top_k_many_async(gpu, seqs, scratch, k))
        })
    }

    /// Checks `steps` (see [`Engine::feed_many`]), runs `pass` over their slots' caches and, if
    /// it succeeds, appends each token to its slot's history.
    #[cfg(not(target_arch = "wasm32"))]
    fn step_many<T>(
        &mut self,
        steps: &[(usize, u32)],
        pass: impl FnOnce(
            &Model,
            &Gpu,
            &mut [crate::model::transformer::Seq<'_>],
            &mut Scratch,
        ) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        use crate::model::transformer::Seq;
        let mut seen = vec![false; self.slots()];
        for &(slot, _) in steps {
            match seen.get_mut(slot) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "slot {slot} does not exist"
                    )))
                }
                Some(true) => {
                    return Err(Error::InvalidArgument(format!(
                        "slot {slot} twice in one step"
                    )))
                }
                Some(s) => *s = true,
            }
            if self.slot_history(slot).len() >= self.ctx {
                return Err(Error::ContextOverflow {
                    tokens: self.ctx + 1,
                    ctx: self.ctx,
                });
            }
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<[u32; 1]> = steps.iter().map(|&(_, t)| [t]).collect();
        // Borrow each slot's cache once, in the order of `steps`.
        let mut by_slot = Self::states_mut(&mut self.state, &mut self.slots);
        let mut order = Vec::with_capacity(steps.len());
        for &(slot, _) in steps {
            order.push(
                by_slot[slot].take().ok_or_else(|| {
                    Error::InvalidArgument(format!("slot {slot} twice in one step"))
                })?,
            );
        }
        // one set of activation buffers serves the whole pass: the first slot's
        let mut scratch = std::mem::take(&mut order[0].scratch);
        let result = {
            let mut seqs: Vec<Seq> = order
                .iter_mut()
                .zip(&tokens)
                .map(|(st, t)| Seq {
                    cache: &mut st.cache,
                    tokens: t,
                })
                .collect();
            pass(&self.model, &self.gpu, &mut seqs, &mut scratch)
        };
        order[0].scratch = scratch;
        let out = result?;
        for (st, t) in order.iter_mut().zip(&tokens) {
            st.history.push(t[0]);
        }
        Ok(out)
    }

    /// Runs `tokens` after what is in the cache, in batches, and returns the last token's logits.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        pollster::block_on(self.feed_async(tokens))
    }

    /// [`Engine::feed`], awaiting the GPU instead of blocking on it (the web's path).
    pub async fn feed_async(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.state
            .feed(&self.gpu, &self.model, self.batch, tokens, Logits::Last)
            .await
    }

    /// [`Engine::feed`] that returns only the `k` best logits of the last token, ranked on the
    /// GPU, as (token id, logit), best first ([`crate::ops::top_k`]; `k = 1` is greedy argmax).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_top_k(&mut self, tokens: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
        pollster::block_on(self.feed_top_k_async(tokens, k))
    }

    /// [`Engine::feed_top_k`], awaiting the GPU.
    pub async fn feed_top_k_async(&mut self, tokens: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
        self.state
            .feed_top_k(&self.gpu, &self.model, self.batch, tokens, k)
            .await
    }

    /// `n` greedy decode steps, the first feeding `tok`, each picking its token on the GPU and
    /// feeding it to the next, overlapped as [`Engine::generate_async`] overlaps them when
    /// [`Engine::overlap`] is on (else one [`Engine::feed_top_k_async`] after another); stops
    /// at nothing else (`flint bench`'s decode test). Returns the `n` tokens picked; the
    /// history ends with the last token fed.
    pub async fn greedy_steps_async(&mut self, tok: u32, n: usize) -> Result<Vec<u32>> {
        let mut picked = Vec::with_capacity(n);
        let mut tok = tok;
        if !self.overlap {
            for _ in 0..n {
                let best = self.feed_top_k_async(&[tok], 1).await?;
                tok = best.first().map_or(0, |c| c.0);
                picked.push(tok);
            }
            return Ok(picked);
        }
        let (gpu, model, st) = (&self.gpu, &self.model, &mut self.state);
        let mut pipe = Pipelined::new(gpu);
        let r: Result<()> = async {
            for i in 0..n {
                let best = pipe.step(st, gpu, model, tok, i + 1 < n).await?;
                tok = best.first().map_or(0, |c| c.0);
                picked.push(tok);
            }
            Ok(())
        }
        .await;
        // after an error, a step submitted ahead is dropped
        st.cache.truncate(st.history.len());
        r.map(|()| picked)
    }

    /// Speculative decoding's check on a slot: feeds `tokens` (a token and its draft) after what
    /// the slot holds and returns the scores of the token after each, in order (each row's `k`
    /// best ranked on the GPU with `gpu_k`, else each whole row). The caller cuts the slot back
    /// to what it keeps ([`Engine::cut_slot`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check_slot(
        &mut self,
        slot: usize,
        tokens: &[u32],
        gpu_k: Option<usize>,
    ) -> Result<Vec<Scores>> {
        let (gpu, model, _, st) = self.slot_parts(slot)?;
        pollster::block_on(st.feed_rows(gpu, model, tokens, gpu_k))
    }

    /// Cuts a slot's cache and history back to their first `len` tokens.
    pub fn cut_slot(&mut self, slot: usize, len: usize) -> Result<()> {
        self.slot_mut(slot)?.cut(len);
        Ok(())
    }

    /// Makes the cache hold exactly `tokens`, computing only what differs from what it holds, and
    /// returns the last token's logits and how many tokens were computed.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize)> {
        pollster::block_on(self.prefill_async(tokens))
    }

    /// [`Engine::prefill`], awaiting the GPU.
    pub async fn prefill_async(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize)> {
        let keep = self.reuse_prefix(0, tokens)?;
        let logits = self.feed_async(&tokens[keep..]).await?;
        Ok((logits, tokens.len() - keep))
    }

    /// Cuts a slot's cache back to the longest prefix it shares with `tokens`, leaving at least
    /// the last token to compute; returns how many tokens it kept.
    fn reuse_prefix(&mut self, slot: usize, tokens: &[u32]) -> Result<usize> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        if tokens.len() > self.ctx {
            return Err(Error::ContextOverflow {
                tokens: tokens.len(),
                ctx: self.ctx,
            });
        }
        let st = self.slot_mut(slot)?;
        let common = st
            .history
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // Recompute at least the last token: its logits are not stored.
        let keep = common.min(tokens.len() - 1);
        st.cache.truncate(keep);
        st.history.truncate(keep);
        Ok(keep)
    }

    /// Generates after `prompt` (token ids, BOS included if wanted). `on_text` receives each piece
    /// of text as it is decoded (stop strings held back) and returns `false` to stop early.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let mut on_delta = |d: &Delta| match d {
            Delta::Text(t) => on_text(t),
            _ => true,
        };
        pollster::block_on(self.generate_async(prompt, opts, &mut on_delta))
    }

    /// [`Engine::generate`], awaiting the GPU between tokens (the web's path: the event loop runs
    /// while each token is computed, so `on_delta` can stream and a caller can cancel). Each
    /// piece of the answer ([`Delta`]: text, or a tool call's start and argument text when
    /// `opts.tools` is set) goes to `on_delta`, which returns `false` to stop.
    ///
    /// Greedy decoding with the pick made on the GPU (`gpu_sampling`, temperature 0, no
    /// penalties, logit bias or grammar) is overlapped ([`Engine::overlap`]): the token each step
    /// picks is copied on the GPU into the next step's input, and the next step is submitted
    /// before the pick is read back, so the GPU computes step N+1 while the host reads,
    /// detokenizes and streams token N. A token found to end generation leaves one step
    /// computed past the end, which is dropped (the cache is cut back; its keys and values are
    /// overwritten later). The tokens, the history and the cache are those of the loop without
    /// overlap.
    pub async fn generate_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_delta: &mut dyn FnMut(&Delta) -> bool,
    ) -> Result<Generation> {
        let sampler = Sampler::new(opts.sampling.clone())?;
        let constraint = opts.grammar.as_ref().map(Constraint::new);
        // Rank on the GPU and read back a few candidates, where they decide the token (a grammar
        // needs the whole row).
        let gpu_k = sampler
            .gpu_top_k()
            .filter(|_| self.gpu.caps.gpu_sampling && constraint.is_none());
        // Greedy over GPU-ranked candidates: the GPU's pick is the token, so the next step can
        // read it there, and the loop can run ahead of the readback.
        opts.spec.validate()?;
        if opts.spec.mode == crate::spec::SpecMode::Draft && self.draft.is_none() {
            return Err(Error::InvalidArgument(
                "speculative mode `draft` needs a draft model (`--draft MODEL`, Engine::set_draft)"
                    .into(),
            ));
        }
        let mut drafter = Drafter::new(opts.spec);
        let spec = opts.spec.mode != crate::spec::SpecMode::Off;
        let overlap = !spec && self.overlap && gpu_k == Some(1) && opts.sampling.temperature == 0.0;
        let t0 = Instant::now();
        let keep = self.reuse_prefix(0, prompt)?;
        let rest = &prompt[keep..];
        let (gpu, model, batch) = (&self.gpu, &self.model, self.batch);
        let first = self.state.feed_next(gpu, model, batch, rest, gpu_k).await?;
        let prefilled = rest.len();
        let prefill_time = t0.elapsed();
        let t1 = Instant::now();
        let mut turn = Turn {
            sampler,
            tokenizer: &self.tokenizer,
            tools: opts.tools,
            output: Output::new(
                self.tokenizer.strips_leading_space(),
                opts.stop.clone(),
                opts.max_tokens,
                opts.tools,
                constraint,
            ),
            tokens: Vec::new(),
            deltas: Vec::new(),
            context: prompt.to_vec(),
            text: String::new(),
        };
        let st = &mut self.state;
        let draft_model = match opts.spec.mode {
            crate::spec::SpecMode::Draft => self.draft.as_mut(),
            _ => None,
        };
        let finish = if opts.max_tokens == 0 {
            FinishReason::Length
        } else if overlap {
            let r = st
                .decode_overlapped(gpu, model, first, &mut turn, on_delta)
                .await;
            // the step submitted ahead, if any, is dropped: its keys and values get overwritten
            st.cache.truncate(st.history.len());
            r?
        } else if spec {
            let max = opts.max_tokens;
            let r = st
                .decode_spec(
                    gpu,
                    model,
                    first,
                    gpu_k,
                    &mut turn,
                    on_delta,
                    &mut drafter,
                    draft_model,
                    max,
                )
                .await;
            // after an error, the rows of an unfinished check are dropped
            st.cache.truncate(st.history.len());
            r?
        } else {
            st.decode(gpu, model, first, gpu_k, &mut turn, on_delta)
                .await?
        };
        let Turn {
            text,
            tokens,
            deltas,
            ..
        } = turn;
        let (_, tool_calls) = crate::tools::collect(&deltas);
        Ok(Generation {
            text,
            tokens,
            tool_calls,
            prompt_tokens: prompt.len(),
            prefilled_tokens: prefilled,
            finish,
            prefill_time,
            decode_time: t1.elapsed(),
            spec: drafter.stats,
        })
    }

    /// Perplexity as llama.cpp's `llama-perplexity` defines it: the tokens are cut into chunks of
    /// `n_ctx`; each chunk is evaluated from an empty cache, with its first token replaced by BOS
    /// when the vocabulary adds one, and only the second half of each chunk is scored.
    /// `max_chunks` limits the number of chunks (llama.cpp's `--chunks`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn perplexity(
        &mut self,
        tokens: &[u32],
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<Perplexity> {
        pollster::block_on(self.perplexity_async(tokens, n_ctx, max_chunks))
    }

    /// [`Engine::perplexity`], awaiting the GPU.
    pub async fn perplexity_async(
        &mut self,
        tokens: &[u32],
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<Perplexity> {
        if n_ctx < 2 || n_ctx > self.ctx {
            return Err(Error::InvalidArgument(format!(
                "perplexity context {n_ctx} must be between 2 and the loaded context {}",
                self.ctx
            )));
        }
        let mut n_chunks = tokens.len() / n_ctx;
        if let Some(m) = max_chunks {
            n_chunks = n_chunks.min(m);
        }
        if n_chunks == 0 {
            return Err(Error::InvalidArgument(format!(
                "the text has {} tokens, fewer than one chunk of {n_ctx}",
                tokens.len()
            )));
        }
        let first = n_ctx / 2;
        let vocab = self.model.vocab();
        let mut nll = 0.0f64;
        let mut count = 0usize;
        let mut per_chunk = Vec::with_capacity(n_chunks);
        for c in 0..n_chunks {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if self.tokenizer.adds_bos() {
                if let Some(bos) = self.tokenizer.bos_id() {
                    chunk[0] = bos;
                }
            }
            self.reset();
            let logits = self
                .state
                .feed(&self.gpu, &self.model, self.batch, &chunk, Logits::All)
                .await?;
            for i in first..n_ctx - 1 {
                let row = &logits[i * vocab..(i + 1) * vocab];
                let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln() + mx;
                nll += lse - row[chunk[i + 1] as usize] as f64;
                count += 1;
            }
            per_chunk.push((nll / count as f64).exp());
        }
        self.reset();
        Ok(Perplexity {
            ppl: (nll / count as f64).exp(),
            chunks: n_chunks,
            tokens_scored: count,
            per_chunk,
        })
    }
}
