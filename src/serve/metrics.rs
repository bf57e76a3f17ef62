//! `GET /metrics`: the server's counters in Prometheus' text exposition format (version 0.0.4).
//!
//! flint's own names (`flint_*`), and beside them the names the Kubernetes Gateway API Inference
//! Extension's endpoint picker reads from model servers (its model-server protocol,
//! docs/proposals/003-model-server-protocol: TotalQueuedRequests, TotalRunningRequests,
//! KVCacheUtilization, under vLLM's names `vllm:num_requests_waiting`,
//! `vllm:num_requests_running`, `vllm:gpu_cache_usage_perc`), so an InferencePool can route
//! by load without an adapter.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A Prometheus histogram with fixed bucket bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative), then above the last.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((secs.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// Time to first token: 10 ms .. 60 s.
const TTFT: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0,
];
/// Time per output token: 1 ms .. 5 s.
const TPOT: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What the HTTP side and the worker count for `/metrics` (the rest comes from the worker's
/// [`super::worker::Counters`]).
pub struct Metrics {
    /// Requests answered, by endpoint and HTTP status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            ttft: Histogram::new(TTFT),
            tpot: Histogram::new(TPOT),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
        }
    }
}

/// The gauges of one moment, read from the workers' counters.
pub struct Gauges {
    pub queued: u64,
    pub running: u64,
    pub slots: u64,
    pub cached_prompt_tokens: u64,
}

impl Metrics {
    /// Counts one answered request (the paths the server routes; anything else as `other`).
    pub fn request(&self, path: &str, status: u16) {
        let known = [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/models",
            "/health",
            "/metrics",
        ];
        let endpoint = known
            .iter()
            .find(|k| path == **k || (**k == "/v1/models" && path.starts_with("/v1/models/")))
            .copied()
            .unwrap_or("other");
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint.to_string(), status)).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let usage = g.running as f64 / g.slots.max(1) as f64;
        metric(
            "flint_requests_waiting",
            "gauge",
            "Requests admitted and waiting for a slot.",
            g.queued as f64,
        );
        metric(
            "flint_requests_running",
            "gauge",
            "Requests being generated (each holds a KV cache slot).",
            g.running as f64,
        );
        metric(
            "flint_kv_cache_slots",
            "gauge",
            "KV cache slots (sequences decoded together).",
            g.slots as f64,
        );
        metric(
            "flint_kv_cache_usage_ratio",
            "gauge",
            "Fraction of KV cache slots in use.",
            usage,
        );
        metric(
            "flint_prompt_tokens_total",
            "counter",
            "Prompt tokens of the requests started.",
            self.prompt_tokens.load(Ordering::Relaxed) as f64,
        );
        metric(
            "flint_generation_tokens_total",
            "counter",
            "Tokens generated.",
            self.generated_tokens.load(Ordering::Relaxed) as f64,
        );
        metric(
            "flint_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens served from a slot's KV cache instead of computed.",
            g.cached_prompt_tokens as f64,
        );
        // the Gateway API Inference Extension's model-server protocol, vLLM's names
        metric(
            "vllm:num_requests_waiting",
            "gauge",
            "TotalQueuedRequests (Gateway API Inference Extension): requests waiting.",
            g.queued as f64,
        );
        metric(
            "vllm:num_requests_running",
            "gauge",
            "TotalRunningRequests (Gateway API Inference Extension): requests running.",
            g.running as f64,
        );
        metric(
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "KVCacheUtilization (Gateway API Inference Extension): KV cache slots in use, 1 = all.",
            usage,
        );
        self.ttft.render(
            &mut out,
            "flint_time_to_first_token_seconds",
            "From admission to the first generated token.",
        );
        self.tpot.render(
            &mut out,
            "flint_time_per_output_token_seconds",
            "Decode time per generated token after the first, per request.",
        );
        let _ = writeln!(
            out,
            "# HELP flint_requests_total Requests answered, by endpoint and HTTP status.\n\
             # TYPE flint_requests_total counter"
        );
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((endpoint, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "flint_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        for s in [0.05, 0.1, 0.5, 2.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(
            out.contains("x_count 4\n") && out.contains("x_sum 2.65"),
            "{out}"
        );
    }
}
