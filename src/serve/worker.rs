//! The generation worker: one OS thread that owns the [`Engine`] and runs one request at a time.
//!
//! The GPU work is blocking, so it never runs on a tokio thread. HTTP handlers hand a [`Job`] to
//! the worker through a bounded channel and read [`Event`]s back from an unbounded tokio channel.
//! A job whose events receiver is gone (the client disconnected) is skipped if it is still queued
//! and cancelled at the next token if it is running.

use super::api::ApiError;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::engine::{Engine, FinishReason, GenerateOptions};
use crate::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What to generate after: a chat rendered through the model's template, raw text, or token ids.
#[derive(Debug)]
pub enum Prompt {
    /// Messages for the model's chat template (a generation prompt is appended).
    Chat(Vec<ChatMessage>),
    /// Raw text, encoded with the model's BOS (like `flint run`).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// One request for the worker.
pub struct Job {
    pub prompt: Prompt,
    /// `max_tokens`; `None` = until the end of the context.
    pub max_tokens: Option<usize>,
    pub opts: GenerateOptions,
    pub events: UnboundedSender<Event>,
    /// Held until the worker is done with the job: frees the request's slot when dropped.
    pub _slot: Slot,
}

/// What the worker reports about a job, in order: `Started` or `Error` first, then `Text`
/// pieces, then `Done` (or `Error`).
#[derive(Debug)]
pub enum Event {
    /// The prompt was accepted; generation begins.
    Started { prompt_tokens: usize },
    /// A piece of generated text.
    Text(String),
    /// Generation ended.
    Done {
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
    /// Requests the worker is running now (0 or 1).
    pub active: AtomicUsize,
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

/// Marks the worker busy for as long as it lives.
struct Active<'a>(&'a Counters);

impl<'a> Active<'a> {
    fn new(c: &'a Counters) -> Self {
        c.active.fetch_add(1, Ordering::SeqCst);
        Active(c)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs jobs until every sender of `jobs` is gone.
pub fn run(mut engine: Engine, jobs: std::sync::mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let template = engine.chat_template.as_deref().map(|src| {
        let tok = &engine.tokenizer;
        let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
        ChatTemplate::new(src, &piece(tok.bos_id()), &piece(tok.eos_id()))
    });
    while let Ok(job) = jobs.recv() {
        if job.events.is_closed() {
            continue; // the client left while queued
        }
        let _active = Active::new(&counters);
        let events = job.events.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&mut engine, template.as_ref(), job)
        }));
        let err = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(ApiError::server("generation panicked")),
        };
        if let Some(e) = err {
            // The KV cache may hold a half-written step: start the next request from scratch.
            engine.reset();
            let _ = events.send(Event::Error(e));
        }
    }
}

/// Tokenizes, checks and generates one job, sending its events.
fn run_job(
    engine: &mut Engine,
    template: Option<&crate::Result<ChatTemplate>>,
    job: Job,
) -> Result<(), ApiError> {
    let tokens = match job.prompt {
        Prompt::Chat(messages) => {
            let template = match template {
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
            let text = template.render(&messages, true).map_err(|e| match e {
                Error::Template(m) => ApiError::invalid(m, Some("messages")),
                e => ApiError::server(e.to_string()),
            })?;
            engine
                .tokenizer
                .encode(&text, false)
                .map_err(|e| ApiError::server(e.to_string()))?
        }
        Prompt::Text(text) => engine
            .tokenizer
            .encode(&text, true)
            .map_err(|e| ApiError::server(e.to_string()))?,
        Prompt::Tokens(ids) => ids,
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
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
    let mut opts = job.opts;
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
    opts.sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string(), None))?;
    opts.max_tokens = job
        .max_tokens
        .unwrap_or(usize::MAX)
        .min(engine.ctx + 1 - tokens.len());
    if job
        .events
        .send(Event::Started {
            prompt_tokens: tokens.len(),
        })
        .is_err()
    {
        return Ok(());
    }
    let events = &job.events;
    let g = engine
        .generate(&tokens, &opts, &mut |piece| {
            events.send(Event::Text(piece.to_string())).is_ok()
        })
        .map_err(|e| ApiError::server(e.to_string()))?;
    let _ = events.send(Event::Done {
        completion_tokens: g.tokens.len(),
        finish: g.finish,
    });
    Ok(())
}
