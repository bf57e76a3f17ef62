//! The embedding worker: one OS thread that owns the [`Embedder`] (and with it its own [`Gpu`],
//! apart from the chat engine's) and answers `/v1/embeddings` requests one at a time, in arrival
//! order. Each request is one [`Embedder::embed`] call: the library packs its inputs into as few
//! forward passes as fit, and its checks (empty inputs, too many, token ids outside the
//! vocabulary, inputs over the model's limit, `dimensions`) are the server's 400s.
//!
//! Like the generation worker, it is fed through a bounded channel by handlers that hold an
//! admission [`Slot`] (`--max-concurrency` counts embedding requests on their own), and a request
//! whose client left while it was queued is skipped.
//!
//! [`Gpu`]: crate::gpu::Gpu

use super::api::ApiError;
use super::worker::{Counters, Slot};
use crate::embed::{EmbedInput, EmbedOptions, Embedder, Embeddings};
use crate::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// One `/v1/embeddings` request for the worker.
pub struct EmbedJob {
    pub inputs: Vec<EmbedInput>,
    pub opts: EmbedOptions,
    /// The vectors, or the error to answer with.
    pub reply: oneshot::Sender<Result<Embeddings, ApiError>>,
    /// Held until the worker is done with the job: frees the request's admission when dropped.
    pub slot: Slot,
}

/// What the embedding worker has done since start (`/health`).
#[derive(Debug, Default)]
pub struct EmbedStats {
    /// Requests answered with vectors.
    pub requests: AtomicU64,
    /// Inputs embedded, and their tokens.
    pub inputs: AtomicU64,
    pub tokens: AtomicU64,
    /// Time spent embedding (microseconds).
    pub busy_us: AtomicU64,
}

/// Runs jobs until every sender of `jobs` is gone.
pub fn run(
    mut embedder: Embedder,
    jobs: Receiver<EmbedJob>,
    counters: Arc<Counters>,
    stats: Arc<EmbedStats>,
) {
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue; // the client left while queued
        }
        counters.active.fetch_add(1, Ordering::SeqCst);
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            embedder.embed(&job.inputs, &job.opts)
        }));
        let r = match r {
            Ok(Ok(e)) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats
                    .inputs
                    .fetch_add(e.vectors.len() as u64, Ordering::Relaxed);
                stats
                    .tokens
                    .fetch_add(e.prompt_tokens as u64, Ordering::Relaxed);
                Ok(e)
            }
            Ok(Err(e)) => Err(api_error(e)),
            Err(_) => Err(ApiError::server("embedding panicked")),
        };
        stats
            .busy_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        counters.active.fetch_sub(1, Ordering::SeqCst);
        // give the admission back before answering: a client that sends its next request as
        // soon as this one is answered must not find it still counted (429)
        let EmbedJob { reply, slot, .. } = job;
        drop(slot);
        let _ = reply.send(r);
    }
}

/// The library's error as the server's: its argument checks are the client's fault (400, naming
/// `dimensions` or `input`, which its messages start with), anything else the server's (500).
fn api_error(e: Error) -> ApiError {
    match e {
        Error::InvalidArgument(m) => {
            let param = if m.starts_with("dimensions") {
                "dimensions"
            } else {
                "input"
            };
            ApiError::invalid(m, Some(param)).with_code("invalid_value")
        }
        e => ApiError::server(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_name_their_field() {
        let e = api_error(Error::InvalidArgument(
            "dimensions 0 is outside 1..=384".into(),
        ));
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some("dimensions"))
        );
        let e = api_error(Error::InvalidArgument("input 2 is an empty string".into()));
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some("input"))
        );
        assert_eq!(api_error(Error::Gpu("lost".into())).status.as_u16(), 500);
    }
}
