//! `flint serve` over real HTTP on 127.0.0.1 (ephemeral port), with SmolLM2-135M-Instruct.
//!
//! One server (one engine) per test binary; tests that reach the generation worker take the
//! `GEN` lock so that `/health` counts are theirs alone. Set FLINT_SKIP_MODEL_TESTS=1 to skip.

use flint::chat::{ChatMessage, ChatTemplate};
use flint::engine::{Engine, GenerateOptions, LoadOptions};
use flint::sampling::SamplingParams;
use flint::serve::{ServeConfig, ServerHandle};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_ID: &str = "smol";
const KEY: &str = "test-key";
const BODY_LIMIT: usize = 64 * 1024;
const CHAT_PROMPT: &str = "What is 2+2?";

struct Fixture {
    addr: SocketAddr,
    /// What `Engine::generate` gives for CHAT_PROMPT through the template, greedy, 4 tokens.
    expected_chat: String,
    _server: Mutex<ServerHandle>,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
            eprintln!("FLINT_SKIP_MODEL_TESTS set: skipping the server tests");
            return None;
        }
        assert!(
            std::path::Path::new(MODEL).exists(),
            "{MODEL} missing: run scripts/setup.sh"
        );
        let opts = LoadOptions {
            ctx: Some(512),
            ..Default::default()
        };
        let mut engine = Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2");
        // The reference answer, computed on the same engine before the server takes it.
        let tok = &engine.tokenizer;
        let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
        let template = ChatTemplate::new(
            engine.chat_template.as_deref().expect("chat template"),
            &piece(tok.bos_id()),
            &piece(tok.eos_id()),
        )
        .expect("template");
        let text = template
            .render(&[ChatMessage::user(CHAT_PROMPT)], true)
            .expect("render");
        let ids = engine.tokenizer.encode(&text, false).expect("encode");
        let g = engine
            .generate(
                &ids,
                &GenerateOptions {
                    max_tokens: 4,
                    sampling: SamplingParams::greedy(),
                    stop: vec![],
                    ..Default::default()
                },
                &mut |_| true,
            )
            .expect("generate");
        let config = ServeConfig {
            port: 0,
            api_key: Some(KEY.into()),
            model_id: MODEL_ID.into(),
            max_body_bytes: BODY_LIMIT,
            max_concurrency: 4,
            // one request decodes at a time, so the queue tests below see a queue
            parallel: 1,
            ..Default::default()
        };
        let server = flint::serve::spawn(engine, config).expect("spawn server");
        Some(Fixture {
            addr: server.addr,
            expected_chat: g.text,
            _server: Mutex::new(server),
        })
    })
    .as_ref()
}

/// Serializes the tests that use the generation worker.
fn gen_lock() -> MutexGuard<'static, ()> {
    static GEN: Mutex<()> = Mutex::new(());
    GEN.lock().unwrap_or_else(|e| e.into_inner())
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole reply.
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(BufReader::new(s))
}

fn read_reply(mut r: BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf).unwrap();
            body.extend_from_slice(&buf[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn request(method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Reply {
    let f = fixture().expect("fixture");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    raw(f.addr, &head, body)
}

fn post(path: &str, body: &Value) -> Reply {
    request("POST", path, Some(KEY), body.to_string().as_bytes())
}

fn get(path: &str) -> Reply {
    request("GET", path, Some(KEY), b"")
}

/// Asserts an OpenAI-shaped error with a 4xx status.
fn assert_error(r: &Reply, what: &str) -> Value {
    assert!(
        (400..500).contains(&r.status),
        "{what}: status {} body {}",
        r.status,
        r.text()
    );
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].is_string(), "{what}: {v}");
    assert!(e["type"].is_string(), "{what}: {v}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{what}: {v}"
    );
    v
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

fn chat_body(stream: bool) -> Value {
    let mut b = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": 4,
        "temperature": 0,
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

#[test]
fn chat_completion_matches_engine_generate() {
    let Some(f) = fixture() else { return };
    let _g = gen_lock();
    let t0 = Instant::now();
    let r = post("/v1/chat/completions", &chat_body(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], MODEL_ID);
    assert!(v["created"].is_u64());
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], f.expected_chat.as_str());
    assert_eq!(c["finish_reason"], "length");
    let u = &v["usage"];
    assert_eq!(u["completion_tokens"], 4);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 4
    );
    // Text-part content gives the same prompt, hence the same answer.
    let mut b = chat_body(false);
    b["messages"][0]["content"] = json!([{"type": "text", "text": CHAT_PROMPT}]);
    let r2 = post("/v1/chat/completions", &b);
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(
        r2.json()["choices"][0]["message"]["content"],
        f.expected_chat.as_str()
    );
    eprintln!("chat: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn streamed_chat_concatenates_to_the_same_text() {
    let Some(f) = fixture() else { return };
    let _g = gen_lock();
    let t0 = Instant::now();
    let r = post("/v1/chat/completions", &chat_body(true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let events = sse_data(&r.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).expect("chunk JSON");
        assert_eq!(v["object"], "chat.completion.chunk");
        match v["choices"].as_array().unwrap().first() {
            Some(c) => {
                if let Some(t) = c["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                if !c["finish_reason"].is_null() {
                    finish = Some(c["finish_reason"].clone());
                }
            }
            None => usage = Some(v["usage"].clone()),
        }
    }
    assert_eq!(text, f.expected_chat);
    assert_eq!(finish, Some(json!("length")));
    let u = usage.expect("usage chunk");
    assert_eq!(u["completion_tokens"], 4);
    eprintln!("stream: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn completion_of_the_capital_of_france() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let t0 = Instant::now();
    for prompt in [
        json!("The capital of France is"),
        json!(["The capital of France is"]),
    ] {
        let r = post(
            "/v1/completions",
            &json!({"model": MODEL_ID, "prompt": prompt, "max_tokens": 2, "temperature": 0}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], " Paris.");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }
    eprintln!("completions: {:.1} s", t0.elapsed().as_secs_f64());
}

/// A client may send its next request as soon as its last one is answered: a finished request
/// no longer counts against `--max-concurrency` (4 clients at the limit of 4, each sending 3
/// requests back to back, never get 429).
#[test]
fn back_to_back_requests_are_admitted() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let body = json!({"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1, "temperature": 0});
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..3 {
                    let r = post("/v1/completions", &body);
                    assert_eq!(r.status, 200, "request {i}: {}", r.text());
                }
            });
        }
    });
}

/// Opens a streaming chat request and returns the socket without reading.
fn open_stream(addr: SocketAddr, max_tokens: u32) -> TcpStream {
    let mut b = chat_body(true);
    b["max_tokens"] = json!(max_tokens);
    let body = b.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    s
}

fn health_counts() -> (u64, u64) {
    let h = get("/health").json();
    (
        h["active"].as_u64().unwrap_or(99),
        h["queued"].as_u64().unwrap_or(99),
    )
}

/// Waits until `/health` shows `want` (active, queued); returns how long it took.
fn wait_for(want: (u64, u64), limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = health_counts();
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "/health (active, queued) = {got:?}, still not {want:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fixture's server admits 4 requests (queued + running): a 5th gets 429 with Retry-After;
/// clients that hang up, running or queued, free their slots.
#[test]
fn queue_limit_and_disconnects() {
    let Some(f) = fixture() else { return };
    let _g = gen_lock();
    let mut running = open_stream(f.addr, 200);
    // Read until the first generated content arrives (the role chunk, then a content chunk).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 2 {
        let n = running.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let queued: Vec<TcpStream> = (0..3).map(|_| open_stream(f.addr, 2)).collect();
    wait_for((1, 3), Duration::from_secs(10));
    let r = post("/v1/chat/completions", &chat_body(false));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(assert_error(&r, "429")["error"]["type"], "rate_limit_error");
    let cancelled = get("/health").json()["cancelled"].as_u64().unwrap();
    drop(queued);
    drop(running);
    // The running request asked for 200 tokens (minutes here): its slot comes back at its next
    // step, and the queued ones are skipped unstarted.
    let took = wait_for((0, 0), Duration::from_secs(30));
    let h = get("/health").json();
    assert_eq!(h["cancelled"].as_u64().unwrap() - cancelled, 4, "{h}");
    eprintln!(
        "worker free {:.1} s after the clients left",
        took.as_secs_f64()
    );
}

#[test]
fn prompt_over_the_context_is_400() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let long = "hello ".repeat(700);
    let r = post(
        "/v1/chat/completions",
        &json!({"model": MODEL_ID, "messages": [{"role": "user", "content": long}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        assert_error(&r, "long")["error"]["code"],
        "context_length_exceeded"
    );
    let r = post(
        "/v1/completions",
        &json!({"model": MODEL_ID, "prompt": long, "stream": true}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn health_and_models() {
    let Some(_) = fixture() else { return };
    let h = get("/health");
    assert_eq!(h.status, 200);
    let v = h.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["model"], MODEL_ID);
    assert!(v["active"].is_u64() && v["queued"].is_u64());
    let m = get("/v1/models").json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL_ID);
    assert_eq!(m["data"][0]["object"], "model");
    assert_eq!(get(&format!("/v1/models/{MODEL_ID}")).status, 200);
    assert_error(&get("/v1/models/other"), "unknown model id");
    assert_error(&get("/nope"), "unknown path");
}

#[test]
fn api_key_is_required() {
    let Some(_) = fixture() else { return };
    for (path, method) in [
        ("/v1/models", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/v1/embeddings", "POST"),
    ] {
        for key in [None, Some("wrong")] {
            let r = request(method, path, key, chat_body(false).to_string().as_bytes());
            assert_eq!(r.status, 401, "{method} {path} {key:?}");
            assert_eq!(assert_error(&r, "401")["error"]["code"], "invalid_api_key");
        }
    }
    // probes and scrapers carry no key: liveness, readiness (ready: the warm-up pass ran before
    // `spawn` returned) and the metrics answer without one
    let r = request("GET", "/live", None, b"");
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("alive"))
    );
    let r = request("GET", "/health", None, b"");
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let r = request("GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("vllm:num_requests_running "),
        "{}",
        r.text()
    );
}

#[test]
fn bad_requests_get_named_openai_errors() {
    let Some(_) = fixture() else { return };
    let base = chat_body(false);
    let cases: Vec<(Value, &str, u16)> = vec![
        (json!({"messages": []}), "messages", 400),
        (json!({"temperature": "hot"}), "temperature", 400),
        (json!({"max_tokens": "4"}), "max_tokens", 400),
        (json!({"max_tokens": 0}), "max_tokens", 400),
        (json!({"stop": 3}), "stop", 400),
        (json!({"n": 0}), "n", 400),
        (json!({"n": 1000}), "n", 400),
        (json!({"top_p": 7}), "top_p", 400),
        (json!({"top_k": -1}), "top_k", 400),
        (json!({"top_k": "40"}), "top_k", 400),
        (json!({"min_p": 1.5}), "min_p", 400),
        (json!({"logit_bias": {"x": 1}}), "logit_bias", 400),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
            400,
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
            400,
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "if": {"minLength": 2}, "then": {"pattern": "a+"}}}}}),
            "response_format.json_schema.schema",
            400,
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "\\bword\\b"}}}}),
            "response_format.json_schema.schema",
            400,
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
            400,
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
            400,
        ),
        (json!({"response_format": "json"}), "response_format", 400),
        (json!({"logprobs": "yes"}), "logprobs", 400),
        (json!({"top_logprobs": 3}), "top_logprobs", 400),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
            400,
        ),
        (json!({"stream": "yes"}), "stream", 400),
        (json!({"model": 7}), "model", 400),
        (json!({"model": "gpt-4o"}), "model", 404),
    ];
    for (patch, param, status) in cases {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = post("/v1/chat/completions", &b);
        assert_eq!(r.status, status, "{patch}: {}", r.text());
        let v = assert_error(&r, &patch.to_string());
        assert_eq!(v["error"]["param"], param, "{patch}: {v}");
    }
    let r = post(
        "/v1/completions",
        &json!({"model": MODEL_ID, "prompt": ["a", "b"]}),
    );
    assert_eq!(assert_error(&r, "two prompts")["error"]["param"], "prompt");
    for (patch, param) in [
        (json!({"logprobs": 6}), "logprobs"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"echo": true}), "echo"),
    ] {
        let mut b = json!({"model": MODEL_ID, "prompt": "x"});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = post("/v1/completions", &b);
        assert_eq!(
            assert_error(&r, &patch.to_string())["error"]["param"],
            param
        );
    }
}

/// A small deterministic generator for the fuzz test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A random JSON value of any type, `depth` levels deep at most.
    fn value(&mut self, depth: usize) -> Value {
        match self.below(if depth == 0 { 7 } else { 9 }) {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(2)),
            2 => json!(self.next() as i64),
            3 => json!((self.next() as f64) / 7.0 - 1e18),
            4 => json!(["", "x", "user", "assistant", "\u{0}", "é", "smol", "text"][self.below(8)]),
            5 => json!([-1i64, 0, 1, 2, 21, 100, 1 << 40][self.below(7)]),
            6 => json!(1e300),
            7 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|_| {
                        let k = [
                            "role",
                            "content",
                            "type",
                            "text",
                            "1",
                            "json_schema",
                            "schema",
                            "name",
                        ][self.below(8)];
                        (k.to_string(), self.value(depth - 1))
                    })
                    .collect(),
            ),
        }
    }
}

/// Every request field with random values of every type; truncated, garbled and random bodies;
/// huge numbers; deep nesting; at every endpoint. Every answer is a 4xx JSON error (the model
/// named does not exist, so nothing that parses reaches the generator), and the server is still
/// healthy and generating afterwards.
#[test]
fn malformed_bodies_always_get_4xx_json() {
    let Some(_) = fixture() else { return };
    let t0 = Instant::now();
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let fields = [
        "model",
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "response_format",
        "tools",
        "echo",
        "suffix",
        "best_of",
        "user",
    ];
    let bases = [
        (
            "/v1/chat/completions",
            json!({"model": "none", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 2, "stop": ["x"], "logit_bias": {"1": 2}}),
        ),
        (
            "/v1/completions",
            json!({"model": "none", "prompt": ["hi"], "max_tokens": 2, "temperature": 0.5, "logprobs": 1}),
        ),
    ];
    let mut n = 0;
    let mut statuses = std::collections::BTreeMap::new();
    let mut check = |path: &str, body: &[u8]| {
        let r = request("POST", path, Some(KEY), body);
        assert_error(
            &r,
            &format!(
                "{path} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
        );
        *statuses.entry(r.status).or_insert(0) += 1;
        n += 1;
    };
    for (path, base) in &bases {
        // Each field with random values of every type (model kept unknown).
        for field in fields {
            for _ in 0..6 {
                let mut b = base.clone();
                b[field] = rng.value(3);
                if field == "model" && b[field] == json!("smol") {
                    b[field] = json!("none");
                }
                check(path, b.to_string().as_bytes());
            }
        }
        let text = base.to_string();
        let bytes = text.as_bytes();
        // Truncated at every few bytes, and garbled.
        for i in (0..bytes.len()).step_by(5) {
            check(path, &bytes[..i]);
        }
        for _ in 0..40 {
            let mut g = bytes.to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(g.len());
                g[i] = b"{}[]\",:0a\\\xff \x00"[rng.below(13)];
            }
            check(path, &g);
        }
        // Random bytes, other JSON types, huge numbers, deep nesting, bad UTF-8.
        for _ in 0..20 {
            let len = rng.below(200);
            let g: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check(path, &g);
        }
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_obj = format!(
            "{{\"model\": \"none\", \"messages\": {}{}",
            "[{\"content\": ".repeat(3000),
            "1}]".repeat(3000) + "}"
        );
        for b in [
            "null",
            "[1,2]",
            "\"str\"",
            "1e999",
            "-0",
            "true",
            "{}",
            "",
            r#"{"model": "none", "max_tokens": 1e400}"#,
            r#"{"model": "none", "max_tokens": 18446744073709551616}"#,
            r#"{"model": "none", "seed": -9223372036854775809}"#,
            r#"{"model": "none", "temperature": 1e308, "messages": []}"#,
            r#"{"model": "none", "model": "smol"}"#,
            &deep,
            &deep_obj,
        ] {
            check(path, b.as_bytes());
        }
        check(path, b"{\"model\": \"\xff\xfe\"}");
    }
    // Endpoints that take no body: POST is refused in JSON; GET ignores a body.
    for path in ["/health", "/v1/models", "/v1/models/smol"] {
        let r = request("POST", path, Some(KEY), b"{garbage");
        assert_eq!(r.status, 405);
        assert_error(&r, path);
        let r = request("GET", path, Some(KEY), b"\xff{garbage");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    eprintln!(
        "{n} malformed bodies answered with 4xx JSON ({statuses:?}) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Still healthy, and still generating.
    let _g = gen_lock();
    assert_eq!(get("/health").json()["status"], "ok");
    let r = post(
        "/v1/completions",
        &json!({"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["text"], " Paris");
}

#[test]
fn oversize_body_is_413() {
    let Some(f) = fixture() else { return };
    // Declared too large: answered before the body is sent (Expect: 100-continue).
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        BODY_LIMIT * 4
    );
    let r = raw(f.addr, &head, b"");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        assert_error(&r, "413")["error"]["code"],
        "request_too_large"
    );
    // No declared length (chunked): cut off once the limit is passed.
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 8192];
    for _ in 0..(BODY_LIMIT * 2) / chunk.len() {
        // The server may answer and close before everything is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let r = read_reply(BufReader::new(s));
    assert_eq!(r.status, 413, "{}", r.text());
    assert_error(&r, "chunked 413");
}

/// Safe by default: a loopback web origin may call the server (CORS preflight answered, the
/// origin echoed); a foreign origin gets no CORS grant and its requests a 403 before the key or
/// any model work; a foreign `Host` (DNS rebinding) a 403; the demo page loads through the
/// server's own address.
#[test]
fn cors_preflight_and_headers() {
    let Some(f) = fixture() else { return };
    let pre = |origin: &str| {
        format!("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n")
    };
    let r = raw(f.addr, &pre("http://example.com"), b"");
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "foreign origin granted"
    );
    let local = "http://localhost:5173";
    let r = raw(f.addr, &pre(local), b"");
    assert!((200..300).contains(&r.status), "preflight {}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some(local));
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    // Actual responses, errors included, carry the header too.
    let head = format!("GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nOrigin: {local}\r\n\r\n");
    let r = raw(f.addr, &head, b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(local));
    // a foreign origin's request (even a "simple" one a browser sends without preflight) and a
    // foreign Host are refused before the key is looked at
    let _g = gen_lock();
    let gen_before = get_health_steps();
    for head in [
        format!("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {KEY}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"),
        format!("POST /v1/completions HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"),
    ] {
        let r = raw(f.addr, &head, b"{}");
        assert_eq!(r.status, 403, "{head}: {}", r.text());
        assert_error(&r, "403");
        assert!(r.text().contains("--cors-origin") || r.text().contains("--allowed-host"), "{}", r.text());
    }
    assert_eq!(
        get_health_steps(),
        gen_before,
        "no model work for refused requests"
    );
    // the demo page (like every route, behind this server's key), through the address the
    // server listens on and through localhost, with the page's own origin
    for host in [f.addr.to_string(), format!("localhost:{}", f.addr.port())] {
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n");
        let r = raw(f.addr, &head, b"");
        assert_eq!(r.status, 200, "demo page via {host}: {}", r.text());
        assert!(
            r.text().contains("<html") || r.text().contains("<!doctype"),
            "{}",
            r.text()
        );
    }
}

/// `/health`'s decode steps and prompt tokens served from the cache, as one string.
fn get_health_steps() -> String {
    let v = request("GET", "/health", Some(KEY), b"").json();
    assert_eq!(v["status"], "ok", "{v}");
    format!("{} {}", v["decode_steps"], v["cached_prompt_tokens"])
}

/// Chat logprobs in OpenAI's shape: one entry per completion token whose texts concatenate to
/// the content, `top_logprobs` sorted, and (greedy) the chosen token the most likely one.
#[test]
fn chat_logprobs_whole_and_streamed() {
    let Some(f) = fixture() else { return };
    let _g = gen_lock();
    let t0 = Instant::now();
    let mut b = chat_body(false);
    b["logprobs"] = json!(true);
    b["top_logprobs"] = json!(3);
    let r = post("/v1/chat/completions", &b);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let c = &v["choices"][0];
    assert_eq!(c["message"]["content"], f.expected_chat.as_str());
    let content = c["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut joined = String::new();
    for t in content {
        let tok = t["token"].as_str().unwrap();
        joined.push_str(tok);
        let lp = t["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{t}");
        let bytes: Vec<u8> = t["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(String::from_utf8_lossy(&bytes), tok);
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{t}");
        let tops: Vec<f64> = top.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]), "{t}");
        assert_eq!(
            top[0]["token"], t["token"],
            "greedy picks the most likely: {t}"
        );
        assert!((tops[0] - lp).abs() < 1e-5, "{t}");
        let p: f64 = tops.iter().map(|x| x.exp()).sum();
        assert!(p <= 1.0 + 1e-4, "{t}");
    }
    assert_eq!(joined, f.expected_chat);
    assert!(c["logprobs"]["refusal"].is_null());

    // Streamed: the chunks carry the same entries.
    let mut b = chat_body(true);
    b["logprobs"] = json!(true);
    let r = post("/v1/chat/completions", &b);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut streamed = Vec::new();
    for e in sse_data(&r.text()) {
        if e == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&e).unwrap();
        if let Some(c) = v["choices"].as_array().and_then(|a| a.first()) {
            if let Some(lp) = c["logprobs"]["content"].as_array() {
                streamed.extend(lp.iter().cloned());
            }
        }
    }
    assert_eq!(streamed.len(), content.len());
    for (a, b) in streamed.iter().zip(content) {
        assert_eq!(a["token"], b["token"]);
        // The same tokens; the values agree to kernel precision (the second request computes
        // the prompt from the cache, through the decode kernels rather than the prefill ones).
        assert!((a["logprob"].as_f64().unwrap() - b["logprob"].as_f64().unwrap()).abs() < 2e-3);
        assert_eq!(a["top_logprobs"].as_array().unwrap().len(), 0);
    }
    eprintln!("chat logprobs: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Completions logprobs: `tokens`, `token_logprobs`, `top_logprobs` (token -> logprob maps) and
/// `text_offset`.
#[test]
fn completion_logprobs() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let r = post(
        "/v1/completions",
        &json!({"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0, "logprobs": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let c = &v["choices"][0];
    assert_eq!(c["text"], " Paris.");
    let lp = &c["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), " Paris.");
    let lps = lp["token_logprobs"].as_array().unwrap();
    let tops = lp["top_logprobs"].as_array().unwrap();
    assert_eq!((lps.len(), tops.len()), (tokens.len(), tokens.len()));
    for (i, t) in tokens.iter().enumerate() {
        let top = tops[i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 2, "{top:?}");
        let best = top[*t]
            .as_f64()
            .expect("the greedy token is in its top_logprobs");
        assert!((best - lps[i].as_f64().unwrap()).abs() < 1e-5);
    }
    // OpenAI counts characters from the start of prompt + completion
    let at = "The capital of France is".chars().count();
    let first = tokens[0].chars().count();
    assert_eq!(lp["text_offset"], json!([at, at + first]));
}

/// Small on purpose: the model pretty-prints, and every token is about a second on lavapipe.
const PERSON: &str = r#"{"type": "object", "properties": {
    "age": {"type": "integer"},
    "city": {"enum": ["Paris", "Rome", "Oslo"]}
}, "required": ["age", "city"], "additionalProperties": false}"#;

/// `response_format` json_schema: the output parses and has the schema's shape; json_object:
/// what is generated within max_tokens is a valid start of a JSON object.
#[test]
fn json_schema_output_validates() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let t0 = Instant::now();
    let steps0 = get("/health").json();
    let schema: Value = serde_json::from_str(PERSON).unwrap();
    let r = post(
        "/v1/chat/completions",
        &json!({
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": "Ann is 31 and lives in Oslo. Give her age and city as JSON."}],
            "max_tokens": 30,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}},
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text:?}");
    let out: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = out.as_object().expect("an object");
    assert_eq!(o.len(), 2, "{out}");
    assert!(o["age"].is_i64(), "{out}");
    assert!(
        ["Paris", "Rome", "Oslo"].contains(&o["city"].as_str().unwrap()),
        "{out}"
    );
    let steps1 = get("/health").json();
    let steps = steps1["decode_steps"].as_u64().unwrap() - steps0["decode_steps"].as_u64().unwrap();
    let ms =
        steps1["grammar_mask_ms"].as_f64().unwrap() - steps0["grammar_mask_ms"].as_f64().unwrap();
    eprintln!(
        "json_schema: {text} in {:.1} s; grammar mask {:.2} ms/step over {steps} steps",
        t0.elapsed().as_secs_f64(),
        ms / steps as f64
    );

    let r = post(
        "/v1/chat/completions",
        &json!({
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": "List two colors."}],
            "max_tokens": 6,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    // json_object's layout: no whitespace before the object
    assert!(text.starts_with('{'), "{text:?}");
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(text).unwrap().is_object());
    }
    eprintln!("json_object: {text:?}");
}

/// The same prompt twice: the second reuses the KV cache for all but its last token.
#[test]
fn shared_prompt_prefix_reuses_the_cache() {
    let Some(_) = fixture() else { return };
    let _g = gen_lock();
    let body = json!({"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0});
    let r = post("/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let before = get("/health").json()["cached_prompt_tokens"]
        .as_u64()
        .unwrap();
    let r = post("/v1/completions", &body);
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    let after = get("/health").json()["cached_prompt_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, prompt - 1);
}

#[test]
fn embeddings_need_an_embedding_model() {
    if fixture().is_none() {
        return;
    }
    // a server with only a chat model (no --embedding-model) answers /v1/embeddings with a 400
    let r = post(
        "/v1/embeddings",
        &json!({"model": MODEL_ID, "input": "hello"}),
    );
    let v = assert_error(&r, "embeddings without an embedding model");
    assert_eq!(r.status, 400, "{v}");
    assert_eq!(v["error"]["param"], "model", "{v}");
    assert_eq!(v["error"]["code"], "model_not_supported", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no embedding model") && msg.contains("--embedding-model"),
        "{v}"
    );
    assert!(get("/health").json().get("embedding").is_none());
}
