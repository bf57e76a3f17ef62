//! The generation worker: one OS thread that owns the [`Engine`] and steps the requests in its
//! slot table one token at a time.
//!
//! The GPU work is blocking, so it never runs on a tokio thread. HTTP handlers hand a [`Job`] to
//! the worker through a bounded channel and read [`Event`]s back from an unbounded tokio channel.
//!
//! The loop (continuous batching): admit queued jobs into free slots, each prefilled on its own
//! into the engine slot whose KV cache shares the longest prefix with its prompt
//! ([`Engine::best_slot`], [`Engine::prefill_slot`]); then sample one token for every active
//! [`Sequence`] (mask, sample, decode) and feed all of them in ONE batched forward pass
//! ([`Engine::feed_many`]); repeat. New requests join at token boundaries. Batching does not
//! change results: a sequence's rows in the batched pass are computed exactly as when it runs
//! alone (the product kernels are chosen per sequence, see `Model::forward_many`).
//!
//! With GPU sampling on (`flint serve --sample-on gpu`, the default on real GPUs), a pass in
//! which every request's next token is decided by its best few logits (greedy, or top-k with no
//! bias or penalty; no `logprobs` and no response format, which need the whole row) ranks them
//! on the GPU and reads back only those candidates ([`Engine::prefill_slot_top_k`],
//! [`Engine::feed_many_top_k`]); [`Sampler::sample_top`] then picks exactly the token
//! [`Sampler::sample`] would have picked from the row.
//!
//! Speculative decoding (the request's `speculative`, on by default): a sequence whose prompt
//! lookup proposes a draft after its token checks token and draft in a pass of its own on its
//! slot ([`Engine::check_slot`]), exactly as `Engine::generate_async` does, and keeps what its
//! sampler picks ([`Sampler::sample_spec`]); sequences without a draft share the batched pass.
//! Requests that ask for `logprobs` do not speculate. `/health` counts the checks and the
//! drafted and accepted tokens.
//!
//! `n` > 1: a job takes `n` slots at once (it waits at the head of the queue until they are
//! free). Its prompt is prefilled once, into the first; the others get a GPU copy of that KV
//! cache ([`Engine::copy_slot`]) and the same first scores, and each choice then samples with
//! its own seed stream (the request's `seed` + its index) and decodes as a sequence of its own.
//!
//! A job whose client disconnected is skipped if it is still queued, and a running one is
//! dropped at its next step, freeing its slot (visible in `/health`).

use super::api::{ApiError, Prompt};
use crate::chat::ChatTemplate;
use crate::decode::Output;
use crate::engine::{Engine, FinishReason, GenerateOptions, Scores};
use crate::sampling::{top_logprobs, Sampler};
use crate::spec::{Drafter, SpecMode};
use crate::tools::{Delta, Syntax};
use crate::Error;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Sequences decoded together by default (`flint serve --parallel`): each holds a KV cache.
pub const DEFAULT_SLOTS: usize = 4;

/// One request for the worker.
pub struct Job {
    /// When the server admitted it (time to first token counts from here).
    pub admitted: Instant,
    pub prompt: Prompt,
    /// `max_tokens`; `None` = until the end of the context.
    pub max_tokens: Option<usize>,
    pub opts: GenerateOptions,
    /// Choices to generate (`n`; at least 1, at most the engine's slots).
    pub n: usize,
    /// Report each token's log-probability and this many alternatives (`None`: no logprobs).
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
    /// Held until the worker is done with the job: frees the request's slot when dropped.
    pub _slot: Slot,
}

/// A token's log-probability, as OpenAI reports it.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    /// The token's text (invalid UTF-8 of a partial character shows as U+FFFD; see `bytes`).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely tokens at this position: (text, bytes, log-probability).
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// What the worker reports about a job, in order: `Started` or `Error` first, then `Delta`
/// pieces, then `Done` (or `Error`), for each choice (`index`, `0..n`; the choices' events
/// interleave).
#[derive(Debug)]
pub enum Event {
    /// The prompt was accepted; generation begins. `prompt_chars`: the characters of the
    /// prompt's text (completions' `text_offset` counts from there).
    Started {
        prompt_tokens: usize,
        prompt_chars: usize,
    },
    /// Pieces of choice `index`'s answer (text, tool calls), with the log-probabilities of the
    /// tokens they complete (when asked for).
    Delta {
        index: usize,
        deltas: Vec<Delta>,
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` ended.
    Done {
        index: usize,
        completion_tokens: usize,
        finish: FinishReason,
    },
    /// The request failed (before `Started`: a client error; after: a server error).
    Error(ApiError),
}

/// Counters shared by the HTTP side and the worker.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests admitted and not finished (queued + running).
    pub in_flight: AtomicUsize,
    /// Requests in the worker's slot table now (at most the engine's slots).
    pub active: AtomicUsize,
    /// Requests whose client left before they finished.
    pub cancelled: AtomicU64,
    /// Decode steps taken, and the time spent computing grammar masks (microseconds).
    pub steps: AtomicU64,
    pub mask_us: AtomicU64,
    /// Batched forward passes (one per decode step of all active requests together).
    pub passes: AtomicU64,
    /// Prefills and batched decode passes that ranked the next tokens on the GPU and read back
    /// only the best candidates instead of the logits.
    pub gpu_sampled_passes: AtomicU64,
    /// Prompt tokens served from the KV cache instead of being computed.
    pub cached_prompt_tokens: AtomicU64,
    /// Set once the worker's warm-up pass ran (pipelines compiled, buffers allocated): `/health`
    /// answers 503 before (readiness).
    pub ready: std::sync::atomic::AtomicBool,
    /// Set once the warm-up pass ran, whether it succeeded or not.
    pub warmed: std::sync::atomic::AtomicBool,
    /// What `/metrics` reports: token counts and the latency histograms.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Speculative decoding: checking passes, and the tokens drafted and accepted in them.
    pub spec_checks: AtomicU64,
    pub spec_drafted: AtomicU64,
    pub spec_accepted: AtomicU64,
    /// GPU dispatches recorded by the worker's device so far (`/health`'s `gpu.dispatches`).
    pub gpu_dispatches: AtomicU64,
}

/// A request's place among the `--max-concurrency` admitted ones; released on drop.
#[derive(Debug)]
pub struct Slot(Arc<Counters>);

impl Slot {
    /// Takes a slot if fewer than `max` are taken.
    pub fn try_take(counters: &Arc<Counters>, max: usize) -> Option<Slot> {
        let mut cur = counters.in_flight.load(Ordering::SeqCst);
        loop {
            if cur >= max {
                return None;
            }
            match counters.in_flight.compare_exchange(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(Slot(counters.clone())),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the worker builds once per model.
struct Shared {
    template: Option<crate::Result<ChatTemplate>>,
    /// The syntax the model writes tool calls in.
    syntax: Syntax,
    /// Every token's bytes (control tokens: none, but for the tool syntax's markers).
    bytes: Vec<Vec<u8>>,
    strip_leading_space: bool,
}

/// Runs jobs until every sender of `jobs` is gone.
pub fn run(mut engine: Engine, syntax: Syntax, jobs: Receiver<Job>, counters: Arc<Counters>) {
    let slots = engine.slots();
    let shared = {
        let tok = &engine.tokenizer;
        let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
        let template = engine
            .chat_template
            .as_deref()
            .map(|src| ChatTemplate::new(src, &piece(tok.bos_id()), &piece(tok.eos_id())));
        let n = tok.vocab_size() as u32;
        let bytes: Vec<Vec<u8>> = (0..n)
            .map(|i| crate::decode::token_bytes(tok, i, Some(syntax)))
            .collect();
        Shared {
            template,
            syntax,
            bytes,
            strip_leading_space: tok.strips_leading_space(),
        }
    };
    // Warm-up: one token through the model (its kernels compile on first use), then ready.
    let warm = engine.tokenizer.bos_id().unwrap_or(0);
    match engine.prefill_slot(0, &[warm]) {
        Ok(_) => counters.ready.store(true, Ordering::SeqCst),
        Err(e) => eprintln!("flint serve: the warm-up pass failed ({e}); /health stays 503"),
    }
    engine.reset_slot(0);
    counters.warmed.store(true, Ordering::SeqCst);
    // The slot table: the sequences being generated.
    let mut active: Vec<Sequence> = Vec::with_capacity(slots);
    // A job of `n` choices waiting for `n` free slots (it keeps its place: first come, first
    // served).
    let mut waiting: Option<Job> = None;
    loop {
        // Admit: block for a job when idle, otherwise take only what is already queued.
        while active.len() < slots {
            let job = match waiting.take() {
                Some(j) => j,
                None if active.is_empty() => match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
                None => match jobs.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            if job.events.is_closed() {
                counters.cancelled.fetch_add(1, Ordering::Relaxed);
                continue; // the client left while queued
            }
            if job.n == 0 || job.n > slots {
                let e = ApiError::invalid(
                    format!(
                        "'n' = {}: this server generates at most {slots} choices per request (--parallel).",
                        job.n
                    ),
                    Some("n"),
                );
                let _ = job.events.send(Event::Error(e));
                continue;
            }
            if active.len() + job.n > slots {
                waiting = Some(job);
                break;
            }
            let events = job.events.clone();
            let free: Vec<usize> = (0..slots)
                .filter(|i| active.iter().all(|a| a.slot != *i))
                .collect();
            match guarded(|| Sequence::start(&mut engine, &shared, &counters, job, &free)) {
                Ok(None) => {
                    counters.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(seqs)) => {
                    counters
                        .cached_prompt_tokens
                        .fetch_add(seqs[0].cached as u64, Ordering::Relaxed);
                    counters.active.fetch_add(seqs.len(), Ordering::SeqCst);
                    active.extend(seqs);
                }
                Err(e) => {
                    if e.status.is_server_error() {
                        // A KV cache may hold a half-written step: start those over next time.
                        for &f in &free {
                            engine.reset_slot(f);
                        }
                    }
                    let _ = events.send(Event::Error(e));
                }
            }
        }
        step_all(&mut engine, &shared, &counters, &mut active);
        let dispatches = engine.gpu.counters().dispatches;
        counters.gpu_dispatches.store(dispatches, Ordering::Relaxed);
    }
}

/// Runs `f`, turning a panic into a server error so that one request cannot stop the worker.
fn guarded<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(ApiError::server("generation panicked")))
}

/// One decode step for every active sequence: each samples its next token, then all tokens go
/// through one batched forward pass; finished ones leave the slot table.
fn step_all(engine: &mut Engine, shared: &Shared, counters: &Counters, active: &mut Vec<Sequence>) {
    let mut done: Vec<bool> = vec![false; active.len()];
    let mut feeds: Vec<(usize, u32)> = Vec::new(); // (engine slot, token)
    let mut fed: Vec<usize> = Vec::new(); // index into `active` of each feed
    for (i, seq) in active.iter_mut().enumerate() {
        let next = guarded(|| match seq.choose(engine, shared, counters)? {
            Next::Feed(tok) => seq.speculate(engine, shared, counters, tok),
            other => Ok(other),
        });
        match next {
            Ok(Next::Feed(tok)) => {
                feeds.push((seq.slot, tok));
                fed.push(i);
            }
            Ok(Next::Checked) => {}
            Ok(Next::Finished(finish)) => {
                if finish == FinishReason::Cancelled && seq.index == 0 {
                    counters.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                done[i] = true;
            }
            Err(e) => {
                engine.reset_slot(seq.slot);
                seq.send_last(Event::Error(e));
                done[i] = true;
            }
        }
    }
    if !feeds.is_empty() {
        counters.passes.fetch_add(1, Ordering::Relaxed);
        // GPU candidates only if they decide every fed sequence's next token; each gets the
        // largest k's: sample_top takes at least gpu_top_k() of them, best first, and cuts
        // them to its own top_k (greedy takes the first)
        let k = fed
            .iter()
            .map(|&i| active[i].gpu_k)
            .try_fold(0, |k, ki| ki.map(|ki| k.max(ki)));
        let pass = || -> crate::Result<Vec<Scores>> {
            Ok(match k {
                Some(k) => {
                    counters.gpu_sampled_passes.fetch_add(1, Ordering::Relaxed);
                    let best = engine.feed_many_top_k(&feeds, k)?;
                    best.into_iter().map(Scores::Best).collect()
                }
                None => {
                    let logits = engine.feed_many(&feeds)?;
                    logits.into_iter().map(Scores::Logits).collect()
                }
            })
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(pass));
        match r {
            Ok(Ok(scores)) => {
                for (&i, s) in fed.iter().zip(scores) {
                    active[i].next = s;
                }
            }
            failed => {
                let msg = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "generation panicked".into(),
                };
                for &i in &fed {
                    engine.reset_slot(active[i].slot);
                    active[i].send_last(Event::Error(ApiError::server(msg.clone())));
                    done[i] = true;
                }
            }
        }
    }
    // drop finished sequences (their job's admission Slot with them), keeping the order
    let mut i = 0;
    active.retain(|_| {
        let keep = !done[i];
        i += 1;
        if !keep {
            counters.active.fetch_sub(1, Ordering::SeqCst);
        }
        keep
    });
}

/// What a sequence does after choosing its next token.
enum Next {
    /// Feed this token (the batched pass gives the next logits).
    Feed(u32),
    /// Its token and a draft went through a check pass of their own: its next scores are set.
    Checked,
    /// The sequence is finished (its `Done` event sent, or its client gone).
    Finished(FinishReason),
}

/// A request being generated: everything one decode step needs.
struct Sequence {
    /// The engine slot (KV cache) holding this sequence.
    slot: usize,
    /// Which of the request's `n` choices this is.
    index: usize,
    events: UnboundedSender<Event>,
    /// The request's place under `--max-concurrency` (shared by its choices), given back just
    /// before its last event (see [`Sequence::send_last`]).
    admission: Option<Arc<Slot>>,
    sampler: Sampler,
    /// How many GPU-ranked candidates decide this sequence's next token, when they can (GPU
    /// sampling on, [`Sampler::gpu_top_k`], no logprobs, no grammar); `None`: it needs the row.
    gpu_k: Option<usize>,
    /// Scores for the next token (from the prefill or the last feed).
    next: Scores,
    /// Prompt and generated tokens (the penalties' window).
    context: Vec<u32>,
    /// Text, stop strings, tool calls and the grammar.
    output: Output,
    logprobs: Option<usize>,
    /// Log-probabilities of tokens whose text the stop matcher or decoder still holds back.
    pending_logprobs: Vec<TokenLogprob>,
    /// Prompt tokens that came from the KV cache.
    cached: usize,
    /// The most tokens the answer may have.
    max_tokens: usize,
    /// Speculative decoding's drafter (`None`: the request does not speculate).
    drafter: Option<Drafter>,
    /// The token a check already picked from `next` (where its draft was not taken): the next
    /// step reports it instead of sampling again.
    forced: Option<u32>,
    /// When the request was admitted, and when its first token was reported.
    admitted: Instant,
    first_token: Option<Instant>,
    metrics: Arc<super::metrics::Metrics>,
}

impl Sequence {
    /// Tokenizes and checks the prompt, prefills it, and sends `Started`: the job's `n`
    /// choices, each in a slot of `free` (the first prefilled, the others copied from it);
    /// `None` if the client left meanwhile.
    fn start(
        engine: &mut Engine,
        shared: &Shared,
        counters: &Counters,
        job: Job,
        free: &[usize],
    ) -> Result<Option<Vec<Sequence>>, ApiError> {
        let (tokens, prompt_chars) = tokenize(engine, shared, job.prompt)?;
        let vocab = engine.tokenizer.vocab_size();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(
                format!("token id {bad} is not in the vocabulary of {vocab} tokens"),
                Some("prompt"),
            ));
        }
        if tokens.len() > engine.ctx {
            return Err(ApiError::invalid(
                format!(
                    "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens.",
                    engine.ctx,
                    tokens.len()
                ),
                Some("messages"),
            )
            .with_code("context_length_exceeded"));
        }
        let opts = job.opts;
        if let Some(&(bad, _)) = opts
            .sampling
            .logit_bias
            .iter()
            .find(|(t, _)| *t as usize >= vocab)
        {
            return Err(ApiError::invalid(
                format!("logit_bias token id {bad} is not in the vocabulary of {vocab} tokens"),
                Some("logit_bias"),
            ));
        }
        // choice i samples with seed + i
        let samplers = (0..job.n)
            .map(|i| {
                let mut params = opts.sampling.clone();
                params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
                Sampler::new(params).map_err(|e| ApiError::invalid(e.to_string(), None))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_tokens = job
            .max_tokens
            .unwrap_or(usize::MAX)
            .min(engine.ctx + 1 - tokens.len());
        let slot = engine
            .best_slot(free, &tokens)
            .ok_or_else(|| ApiError::server("no free slot"))?;
        // the whole row is needed for logprobs and for the grammar's mask
        let gpu_k = samplers[0].gpu_top_k().filter(|_| {
            engine.gpu.caps.gpu_sampling && job.logprobs.is_none() && opts.grammar.is_none()
        });
        let (next, computed) = match gpu_k {
            Some(k) => {
                counters.gpu_sampled_passes.fetch_add(1, Ordering::Relaxed);
                engine
                    .prefill_slot_top_k(slot, &tokens, k)
                    .map(|(best, n)| (Scores::Best(best), n))
            }
            None => engine
                .prefill_slot(slot, &tokens)
                .map(|(logits, n)| (Scores::Logits(logits), n)),
        }
        .map_err(|e| ApiError::server(e.to_string()))?;
        // the other choices: the prompt's cache copied, not computed again
        let mut slots = vec![slot];
        slots.extend(free.iter().copied().filter(|&f| f != slot).take(job.n - 1));
        if slots.len() < job.n {
            return Err(ApiError::server("not enough free slots for n choices"));
        }
        for &other in &slots[1..] {
            engine
                .copy_slot(slot, other)
                .map_err(|e| ApiError::server(e.to_string()))?;
        }
        if job
            .events
            .send(Event::Started {
                prompt_tokens: tokens.len(),
                prompt_chars,
            })
            .is_err()
        {
            return Ok(None);
        }
        counters
            .metrics
            .prompt_tokens
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        let admission = Arc::new(job._slot);
        let mut seqs = Vec::with_capacity(job.n);
        for (index, (&slot, sampler)) in slots.iter().zip(samplers).enumerate() {
            let constraint = opts.grammar.as_ref().map(crate::constrain::Constraint::new);
            let drafter = (opts.spec.mode != SpecMode::Off && job.logprobs.is_none())
                .then(|| Drafter::new(opts.spec));
            seqs.push(Sequence {
                max_tokens,
                drafter,
                forced: None,
                admitted: job.admitted,
                first_token: None,
                metrics: counters.metrics.clone(),
                slot,
                index,
                events: job.events.clone(),
                admission: Some(admission.clone()),
                sampler,
                gpu_k,
                next: next.clone(),
                cached: tokens.len() - computed,
                context: tokens.clone(),
                output: Output::new(
                    shared.strip_leading_space,
                    opts.stop.clone(),
                    max_tokens,
                    opts.tools,
                    constraint,
                ),
                logprobs: job.logprobs,
                pending_logprobs: Vec::new(),
            });
        }
        Ok(Some(seqs))
    }

    /// Samples and reports one token; the caller feeds it ([`Next::Feed`]) with the others.
    fn choose(
        &mut self,
        engine: &Engine,
        shared: &Shared,
        counters: &Counters,
    ) -> Result<Next, ApiError> {
        if self.events.is_closed() {
            return Ok(Next::Finished(FinishReason::Cancelled));
        }
        counters.steps.fetch_add(1, Ordering::Relaxed);
        if let Some(tok) = self.forced.take() {
            return self.emit(engine, shared, tok, None);
        }
        let logits = match &mut self.next {
            Scores::Logits(logits) => logits,
            // no logprobs or grammar here (see `gpu_k`): the candidates decide the token
            Scores::Best(best) => {
                let tok = self
                    .sampler
                    .sample_top(best)
                    .map_err(|e| ApiError::server(e.to_string()))?;
                return self.emit(engine, shared, tok, None);
            }
        };
        let raw = self.logprobs.map(|_| logits.clone());
        mask_timed(&mut self.output, logits, counters)?;
        let tok = self
            .sampler
            .sample(logits, &self.context)
            .map_err(|e| ApiError::server(e.to_string()))?;
        self.emit(engine, shared, tok, raw)
    }

    /// After `tok` was chosen and reported: if the drafter proposes what follows, checks `tok`
    /// and the draft in one pass on this sequence's slot, reports the drafted tokens its sampler
    /// picks in turn (the first it does not pick becomes [`Sequence::forced`]) and cuts the
    /// slot back to what was taken: [`Next::Checked`], or [`Next::Finished`] if one of them ended
    /// the answer. Without a draft: [`Next::Feed`] of `tok`, for the batched pass.
    fn speculate(
        &mut self,
        engine: &mut Engine,
        shared: &Shared,
        counters: &Counters,
        tok: u32,
    ) -> Result<Next, ApiError> {
        let Some(mut drafter) = self.drafter.take() else {
            return Ok(Next::Feed(tok));
        };
        let r = self.check(engine, shared, counters, tok, &mut drafter);
        self.drafter = Some(drafter);
        r
    }

    fn check(
        &mut self,
        engine: &mut Engine,
        shared: &Shared,
        counters: &Counters,
        tok: u32,
        drafter: &mut Drafter,
    ) -> Result<Next, ApiError> {
        let server = |e: crate::Error| ApiError::server(e.to_string());
        let before = engine.slot_history(self.slot).len();
        // room for the draft: the answer's and the cache's (one position spare, so the checked
        // tokens never look like a full context to `emit`), cut where a pass would compute
        // rows differently from single steps
        let room = (engine.ctx.saturating_sub(before + 2))
            .min(self.max_tokens.saturating_sub(self.output.generated()));
        let room = engine.model.same_as_alone(before, room + 1) - 1;
        let draft = drafter.propose(&self.context, room);
        if draft.is_empty() {
            return Ok(Next::Feed(tok));
        }
        let input: Vec<u32> = std::iter::once(tok).chain(draft.iter().copied()).collect();
        counters.passes.fetch_add(1, Ordering::Relaxed);
        counters.spec_checks.fetch_add(1, Ordering::Relaxed);
        let mut rows = engine
            .check_slot(self.slot, &input, self.gpu_k)
            .map_err(server)?
            .into_iter();
        let short = || ApiError::server("speculative check: fewer rows than tokens");
        let mut taken = 0;
        let mut finished = None;
        for &d in &draft {
            let mut row = rows.next().ok_or_else(short)?;
            let pick = self.pick(&mut row, Some(d), counters)?;
            if pick != d {
                self.forced = Some(pick);
                self.next = row;
                break;
            }
            counters.steps.fetch_add(1, Ordering::Relaxed);
            match self.emit(engine, shared, d, None)? {
                Next::Feed(_) => taken += 1,
                other => {
                    finished = Some(other);
                    break;
                }
            }
        }
        let kept = taken + finished.is_some() as usize;
        drafter.observe(draft.len(), kept);
        counters
            .spec_drafted
            .fetch_add(draft.len() as u64, Ordering::Relaxed);
        counters
            .spec_accepted
            .fetch_add(kept as u64, Ordering::Relaxed);
        engine
            .cut_slot(self.slot, before + 1 + taken)
            .map_err(server)?;
        if let Some(f) = finished {
            return Ok(f);
        }
        if self.forced.is_none() {
            self.next = rows.next().ok_or_else(short)?;
        }
        Ok(Next::Checked)
    }

    /// The token the sampler picks from a checked row, where `draft` was proposed.
    fn pick(
        &mut self,
        row: &mut Scores,
        draft: Option<u32>,
        counters: &Counters,
    ) -> Result<u32, ApiError> {
        let r = match row {
            Scores::Best(best) => self.sampler.sample_top_spec(best, draft),
            Scores::Logits(logits) => {
                mask_timed(&mut self.output, logits, counters)?;
                self.sampler.sample_spec(logits, &self.context, draft)
            }
        };
        r.map_err(|e| ApiError::server(e.to_string()))
    }

    /// Reports the chosen token `tok`; `raw` is its row before the grammar mask, when logprobs
    /// are asked for.
    fn emit(
        &mut self,
        engine: &Engine,
        shared: &Shared,
        tok: u32,
        raw: Option<Vec<f32>>,
    ) -> Result<Next, ApiError> {
        let eog = engine.tokenizer.is_eog(tok);
        let now = Instant::now();
        if self.first_token.is_none() {
            self.first_token = Some(now);
            if self.index == 0 {
                let ttft = now.duration_since(self.admitted).as_secs_f64();
                self.metrics.ttft.observe(ttft);
            }
        }
        if !eog {
            self.metrics
                .generated_tokens
                .fetch_add(1, Ordering::Relaxed);
            self.context.push(tok);
            if let (Some(k), Some(raw)) = (self.logprobs, raw) {
                self.pending_logprobs
                    .push(token_logprob(shared, &raw, tok, k));
            }
        }
        // the table spells the tool syntax's control-token markers; without tools they show nothing
        let bytes = if !self.output.parses_tools() && engine.tokenizer.is_control(tok) {
            &[][..]
        } else {
            shared
                .bytes
                .get(tok as usize)
                .map_or(&[][..], Vec::as_slice)
        };
        let mut deltas = Vec::new();
        let mut finish = self
            .output
            .push(tok, bytes, eog, &mut deltas)
            .map_err(|e| ApiError::server(e.to_string()))?;
        if finish.is_none() && engine.slot_history(self.slot).len() >= engine.ctx {
            finish = Some(self.output.finish(FinishReason::Length, &mut deltas));
        }
        if !deltas.is_empty() || (finish.is_some() && !self.pending_logprobs.is_empty()) {
            let logprobs = std::mem::take(&mut self.pending_logprobs);
            let index = self.index;
            let delta = Event::Delta {
                index,
                deltas,
                logprobs,
            };
            if self.events.send(delta).is_err() {
                return Ok(Next::Finished(FinishReason::Cancelled));
            }
        }
        match finish {
            Some(finish) => {
                let n = self.output.generated();
                if let (Some(first), true) = (self.first_token, n > 1) {
                    let per = now.duration_since(first).as_secs_f64() / (n - 1) as f64;
                    self.metrics.tpot.observe(per);
                }
                self.send_last(Event::Done {
                    index: self.index,
                    completion_tokens: self.output.generated(),
                    finish,
                });
                Ok(Next::Finished(finish))
            }
            None => Ok(Next::Feed(tok)),
        }
    }

    /// Sends the request's last event after giving back its admission: a client that sends its
    /// next request as soon as this one is answered must not find it still counted (429).
    fn send_last(&mut self, event: Event) {
        self.admission = None;
        let _ = self.events.send(event);
    }
}

/// The grammar's mask on a row of logits, where the answer is constrained, its time counted in
/// `/health`'s `grammar_mask_ms`.
fn mask_timed(
    output: &mut Output,
    logits: &mut [f32],
    counters: &Counters,
) -> Result<(), ApiError> {
    if output.constrained() {
        let t0 = Instant::now();
        let masked = output.mask(logits);
        counters
            .mask_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        masked.map_err(|e| ApiError::server(e.to_string()))?;
    }
    Ok(())
}

/// The chosen token's log-probability and the `k` most likely ones, over the model's own
/// distribution (before bias, penalties, grammar mask and temperature).
fn token_logprob(shared: &Shared, raw: &[f32], tok: u32, k: usize) -> TokenLogprob {
    let entry = |id: u32| {
        let b = shared.bytes.get(id as usize).cloned().unwrap_or_default();
        (String::from_utf8_lossy(&b).into_owned(), b)
    };
    let top = top_logprobs(raw, k.max(1));
    // The chosen token's log-probability: its logit against the same normalizer.
    let logprob = match top.first() {
        Some(&(best, lp)) => {
            let l = raw.get(best as usize).copied().unwrap_or(0.0);
            let ln_z = l - lp; // logit - logprob = max + ln(sum)
            raw.get(tok as usize)
                .map_or(f32::NEG_INFINITY, |&x| x - ln_z)
        }
        None => f32::NEG_INFINITY,
    };
    let (token, bytes) = entry(tok);
    TokenLogprob {
        token,
        bytes,
        logprob,
        top: top
            .into_iter()
            .take(k)
            .map(|(id, lp)| {
                let (t, b) = entry(id);
                (t, b, lp)
            })
            .collect(),
    }
}

/// Renders the prompt to token ids; also gives the characters of the prompt's text (its ids'
/// text for token prompts; 0 for chat, where nothing counts from it).
fn tokenize(
    engine: &Engine,
    shared: &Shared,
    prompt: Prompt,
) -> Result<(Vec<u32>, usize), ApiError> {
    let mut chars = 0;
    let tokens = match prompt {
        Prompt::Chat(messages, tools) => {
            let template = match &shared.template {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    return Err(ApiError::server(format!(
                        "the model's chat template does not compile: {e}"
                    )))
                }
                None => {
                    return Err(ApiError::invalid(
                        "the model has no chat template; use /v1/completions",
                        Some("messages"),
                    ))
                }
            };
            let text = crate::tools::render(template, shared.syntax, &messages, tools.as_ref())
                .map_err(|e| match e {
                    Error::Template(m) => ApiError::invalid(m, Some("messages")),
                    e => ApiError::server(e.to_string()),
                })?;
            engine
                .tokenizer
                .encode(&text, false)
                .map_err(|e| ApiError::server(e.to_string()))?
        }
        Prompt::Text(text) => {
            chars = text.chars().count();
            engine
                .tokenizer
                .encode(&text, true)
                .map_err(|e| ApiError::server(e.to_string()))?
        }
        Prompt::Tokens(ids) => {
            let bytes: Vec<u8> = ids
                .iter()
                .filter(|&&t| !engine.tokenizer.is_control(t))
                .flat_map(|&t| shared.bytes.get(t as usize).into_iter().flatten().copied())
                .collect();
            chars = String::from_utf8_lossy(&bytes).chars().count();
            ids
        }
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    Ok((tokens, chars))
}
