//! Continuous batching in `flint serve` (SmolLM2-135M-Instruct over real HTTP): requests that
//! run together are decoded in one batched forward pass per token, and each returns exactly the
//! text it returns alone. Also prints aggregate decode throughput with 1, 4 and 8 concurrent
//! requests (`--nocapture`; the 4-request figure with FLINT_BATCH_THROUGHPUT=1). Set FLINT_SKIP_MODEL_TESTS=1 to skip.

use flint::engine::{Engine, LoadOptions};
use flint::serve::ServeConfig;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const MAX_TOKENS: u64 = 4;

/// POSTs a JSON body and returns the parsed JSON reply (status 200 asserted).
fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Greedy completions of `prompts`, all sent at once; returns (texts, completion tokens, seconds).
fn run_together(addr: SocketAddr, prompts: &[&str]) -> (Vec<String>, u64, f64) {
    let t0 = Instant::now();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let body =
                json!({"model": "smol", "prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0});
            std::thread::spawn(move || post(addr, "/v1/completions", &body))
        })
        .collect();
    let replies: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let secs = t0.elapsed().as_secs_f64();
    let texts = replies
        .iter()
        .map(|r| r["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    let tokens = replies
        .iter()
        .map(|r| r["usage"]["completion_tokens"].as_u64().unwrap())
        .sum();
    (texts, tokens, secs)
}

#[test]
fn eight_concurrent_requests_equal_each_alone() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let opts = LoadOptions {
        ctx: Some(128),
        ..Default::default()
    };
    let engine =
        Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2 (scripts/setup.sh)");
    let config = ServeConfig {
        port: 0,
        model_id: "smol".into(),
        max_concurrency: 8,
        parallel: 8,
        ..Default::default()
    };
    let server = flint::serve::spawn(engine, config).unwrap();
    let addr = server.addr;
    // prompts of 6+ tokens that part after BOS, so every prefill goes through the same kernel
    // whichever slot (and cached prefix) it lands in
    let prompts = [
        "The capital of France is",
        "Water boils at a temperature of",
        "My favourite colour is blue because",
        "Once upon a time there was a",
        "To make a cup of tea, first",
        "Rust is a programming language that",
        "In the year 1969, astronauts",
        "Seven times eight equals",
    ];
    let h0 = get(addr, "/health");
    assert_eq!(h0["slots"], 8, "{h0}");
    let mut alone = Vec::new();
    let t0 = Instant::now();
    let mut alone_tokens = 0;
    for p in &prompts {
        let (t, n, _) = run_together(addr, &[p]);
        alone.push(t[0].clone());
        alone_tokens += n;
    }
    let alone_secs = t0.elapsed().as_secs_f64();
    let h1 = get(addr, "/health");
    let (together, tokens, secs) = run_together(addr, &prompts);
    let h2 = get(addr, "/health");
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "prompt {i} ({:?}): batched text differs", prompts[i]);
    }
    // the concurrent requests shared forward passes: far fewer passes than sequence steps
    let passes = h2["decode_passes"].as_u64().unwrap() - h1["decode_passes"].as_u64().unwrap();
    let steps = h2["decode_steps"].as_u64().unwrap() - h1["decode_steps"].as_u64().unwrap();
    assert!(steps >= 8 * (MAX_TOKENS - 1), "{steps} steps");
    assert!(
        passes * 3 <= steps,
        "{passes} batched passes for {steps} sequence steps: requests were not batched"
    );
    eprintln!(
        "8 requests x {MAX_TOKENS} tokens: one at a time {alone_tokens} tokens in {alone_secs:.1} s \
         ({:.2} tok/s), together {tokens} tokens in {secs:.1} s ({:.2} tok/s); {passes} passes for \
         {steps} sequence steps",
        alone_tokens as f64 / alone_secs,
        tokens as f64 / secs
    );
    // aggregate throughput with 4 concurrent requests (FLINT_BATCH_THROUGHPUT=1: slow here)
    if std::env::var("FLINT_BATCH_THROUGHPUT").is_ok() {
        let (_, tokens4, secs4) = run_together(addr, &prompts[..4]);
        eprintln!(
            "4 requests together: {tokens4} tokens in {secs4:.1} s ({:.2} tok/s)",
            tokens4 as f64 / secs4
        );
    }
    server.shutdown();
}
