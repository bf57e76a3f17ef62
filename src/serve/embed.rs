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

/// `v` as OpenAI's `encoding_format: "base64"` sends it: the little-endian bytes of the f32s in
/// standard base64 with padding (what numpy's `frombuffer(..., dtype=float32)` reads back).
pub fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_little_endian_floats() {
        // RFC 4648's test vectors, through the bytes of floats whose bytes spell them
        assert_eq!(base64_f32(&[]), "");
        assert_eq!(base64_f32(&[1.0]), "AACAPw=="); // 00 00 80 3f
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA="); // ... 00 00 00 c0
        assert_eq!(base64_f32(&[0.5, 0.25, 3.0]), "AAAAPwAAgD4AAEBA");
        let f = f32::from_le_bytes(*b"foob");
        assert_eq!(base64_f32(&[f]), "Zm9vYg==");
    }

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
