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
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
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
    drop(queued);
    drop(running);
    let took = wait_for((0, 0), Duration::from_secs(40));
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
        ("/health", "GET"),
        ("/v1/chat/completions", "POST"),
    ] {
        for key in [None, Some("wrong")] {
            let r = request(method, path, key, chat_body(false).to_string().as_bytes());
            assert_eq!(r.status, 401, "{method} {path} {key:?}");
            assert_eq!(assert_error(&r, "401")["error"]["code"], "invalid_api_key");
        }
    }
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
        (json!({"n": 2}), "n", 400),
        (json!({"top_p": 7}), "top_p", 400),
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
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
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
}

/// Truncated and garbled bodies at every endpoint: always a 4xx JSON error, never a hang.
#[test]
fn malformed_bodies_always_get_4xx_json() {
    let Some(_) = fixture() else { return };
    // An unknown model: a garbled body that still parses never reaches the generator.
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"model": "none", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 2, "stop": ["x"], "logit_bias": {"1": 2}})
                .to_string(),
        ),
        (
            "/v1/completions",
            json!({"model": "none", "prompt": ["hi"], "max_tokens": 2, "temperature": 0.5}).to_string(),
        ),
    ];
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut n = 0;
    for (path, body) in &bodies {
        let b = body.as_bytes();
        let mut variants: Vec<Vec<u8>> = (0..b.len()).step_by(7).map(|i| b[..i].to_vec()).collect();
        for _ in 0..40 {
            let mut g = b.to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % g.len();
                g[i] = b"{}[]\",:0a\\\xff \x00"[(next() % 13) as usize];
            }
            variants.push(g);
        }
        variants.push(b"null".to_vec());
        variants.push(b"[1,2]".to_vec());
        variants.push(b"\"str\"".to_vec());
        for v in &variants {
            let r = request("POST", path, Some(KEY), v);
            assert_error(&r, &format!("{path} {:?}", String::from_utf8_lossy(v)));
            n += 1;
        }
    }
    // Endpoints that take no body: a body is ignored or the method is refused, in JSON.
    for path in ["/health", "/v1/models"] {
        let r = request("POST", path, Some(KEY), b"{garbage");
        assert_eq!(r.status, 405);
        assert_error(&r, path);
    }
    eprintln!("{n} malformed bodies answered with 4xx JSON");
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
}

#[test]
fn cors_preflight_and_headers() {
    let Some(f) = fixture() else { return };
    let head = "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nOrigin: http://example.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n";
    let r = raw(f.addr, head, b"");
    assert!((200..300).contains(&r.status), "preflight {}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    // Actual responses, errors included, carry the header too.
    let head = "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nOrigin: http://example.com\r\n\r\n";
    let r = raw(f.addr, head, b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}
