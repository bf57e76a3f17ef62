//! Continuous batching in `flint serve` (SmolLM2-135M-Instruct over real HTTP): requests that
//! run together are decoded in one batched forward pass per token, and each returns exactly the
//! text it returns alone; with GPU sampling (`--sample-on gpu`) the server returns exactly what
//! it returns with CPU sampling. Also prints aggregate decode throughput with 1, 4 and 8
//! concurrent requests (`--nocapture`; the 4-request figure with FLINT_BATCH_THROUGHPUT=1). Set
//! FLINT_SKIP_MODEL_TESTS=1 to skip.

use flint::engine::{Engine, LoadOptions};
use flint::gpu::GpuOptions;
use flint::serve::ServeConfig;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const MAX_TOKENS: u64 = 4;

/// One server at a time: the tests time batching, and the machine may have few cores.
static SERVER: Mutex<()> = Mutex::new(());

/// POSTs a JSON body and returns the reply's body (status 200 asserted; chunked bodies joined).
fn post_text(addr: SocketAddr, path: &str, body: &Value) -> String {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let (mut rest, mut joined) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return joined;
        }
        joined.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

/// POSTs a JSON body and returns the parsed JSON reply (status 200 asserted).
fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let body = post_text(addr, path, body);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A GET's whole reply: (head, body).
fn get_text(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> Value {
    serde_json::from_str(&get_text(addr, path).1).unwrap()
}

/// `/health` once no request is queued or running: a request's admission is released just
/// after its reply is sent, so a group sent right after the previous one's replies could find
/// `--max-concurrency` still taken (429), and the counters still moving.
fn idle_health(addr: SocketAddr) -> Value {
    let t0 = Instant::now();
    loop {
        let h = get(addr, "/health");
        if h["active"] == 0 && h["queued"] == 0 {
            return h;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never idle: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let _one = SERVER.lock().unwrap_or_else(|e| e.into_inner());
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
    let h1 = idle_health(addr);
    let (together, tokens, secs) = run_together(addr, &prompts);
    let h2 = idle_health(addr);
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

/// A streamed completion's chunks joined into the shape of a whole one's `choices[0]` and `usage`.
fn post_streamed(addr: SocketAddr, body: &Value) -> Value {
    let mut body = body.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let sse = post_text(addr, "/v1/completions", &body);
    let (mut text, mut finish, mut usage) = (String::new(), Value::Null, Value::Null);
    let mut done = false;
    for data in sse
        .split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: "))
    {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        match v["choices"].as_array().and_then(|c| c.first()) {
            Some(c) => {
                text.push_str(c["text"].as_str().unwrap_or(""));
                if !c["finish_reason"].is_null() {
                    finish = c["finish_reason"].clone();
                }
            }
            None => usage = v["usage"].clone(),
        }
    }
    assert!(done, "no [DONE]: {sse}");
    json!({"choices": [{"text": text, "finish_reason": finish}], "usage": usage})
}

/// What the tests compare of a reply: the choice (text, finish reason, logprobs) and the usage.
fn outcome(reply: &Value) -> Value {
    json!({"choice": reply["choices"][0], "usage": reply["usage"]})
}

/// Sends `bodies` to /v1/completions all at once (`stream: true` in a body streams it) and
/// returns each one's [`outcome`], in order.
fn complete_together(addr: SocketAddr, bodies: &[Value]) -> Vec<Value> {
    let handles: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|b| {
            std::thread::spawn(move || {
                if b["stream"] == json!(true) {
                    outcome(&post_streamed(addr, &b))
                } else {
                    outcome(&post(addr, "/v1/completions", &b))
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn counter(h: &Value, name: &str) -> u64 {
    h[name]
        .as_u64()
        .unwrap_or_else(|| panic!("/health has no {name}: {h}"))
}

/// `flint serve --sample-on gpu` returns exactly what `--sample-on cpu` returns: all-greedy
/// batches (one streamed) rank on the GPU and read back only the argmax; greedy requests mixed
/// with seeded top-k sampling (`top_k` 40, the llama.cpp extension) read back the 40 best;
/// requests with logprobs or penalties fall back to the logits. All give the same results.
#[test]
fn gpu_sampling_serves_what_cpu_sampling_serves() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let _one = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let greedy = |p: &str| json!({"model": "smol", "prompt": p, "max_tokens": 4, "temperature": 0});
    // every prompt parts from the others after BOS (so each prefill computes its whole prompt,
    // whichever slot it lands in) and is used once per server
    let all_greedy = vec![
        greedy("The capital of France is"),
        greedy("Water boils at a temperature of"),
        greedy("My favourite colour is blue because"),
        {
            let mut b = greedy("Once upon a time there was a");
            b["stream"] = json!(true);
            b
        },
    ];
    let seeded = |p: &str, seed: u64| {
        json!({"model": "smol", "prompt": p, "max_tokens": 4, "temperature": 0.9,
               "top_p": 0.95, "top_k": 40, "seed": seed})
    };
    let mixed = vec![
        greedy("To make a cup of tea, first"),
        seeded("Rust is a programming language that", 7),
        greedy("In the year 1969, astronauts"),
        seeded("Seven times eight equals", 11),
    ];
    let row_only = vec![
        json!({"model": "smol", "prompt": "A good breakfast includes", "max_tokens": 4,
               "temperature": 0, "logprobs": 2}),
        json!({"model": "smol", "prompt": "Mountains are formed when", "max_tokens": 4,
               "temperature": 0, "presence_penalty": 1.5}),
    ];
    let mut results = Vec::new();
    for on_gpu in [false, true] {
        let t0 = Instant::now();
        let opts = LoadOptions {
            ctx: Some(128),
            gpu: GpuOptions {
                gpu_sampling: Some(on_gpu), // what `--sample-on gpu|cpu` sets
                ..Default::default()
            },
            ..Default::default()
        };
        let engine =
            Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2 (scripts/setup.sh)");
        let config = ServeConfig {
            port: 0,
            model_id: "smol".into(),
            max_concurrency: 4,
            parallel: 4,
            ..Default::default()
        };
        let server = flint::serve::spawn(engine, config).unwrap();
        let addr = server.addr;
        let h0 = idle_health(addr);
        let a = complete_together(addr, &all_greedy);
        let h1 = idle_health(addr);
        let b = complete_together(addr, &mixed);
        let h2 = idle_health(addr);
        let c = complete_together(addr, &row_only);
        let h3 = idle_health(addr);
        server.shutdown();
        let delta = |x: &Value, y: &Value, name: &str| counter(y, name) - counter(x, name);
        let (passes, steps) = (
            delta(&h0, &h1, "decode_passes"),
            delta(&h0, &h1, "decode_steps"),
        );
        // alone, 4 requests x 4 tokens take 12 passes for 16 steps
        assert!(
            passes * 2 <= steps,
            "{passes} passes for {steps} steps: the greedy requests were not batched"
        );
        // all-greedy: every prefill and every decode pass ranks on the GPU (with GPU sampling)
        let want = if on_gpu { passes + 4 } else { 0 };
        assert_eq!(
            delta(&h0, &h1, "gpu_sampled_passes"),
            want,
            "all greedy, GPU sampling {on_gpu}"
        );
        // greedy with seeded top-k: ranked on the GPU too (k = 40 for the whole batch)
        let mixed_gpu = delta(&h1, &h2, "gpu_sampled_passes");
        assert_eq!(
            mixed_gpu > 0,
            on_gpu,
            "mixed greedy/top-k: {mixed_gpu} GPU-ranked passes"
        );
        // logprobs and penalties need the row: nothing ranked on the GPU
        assert_eq!(delta(&h2, &h3, "gpu_sampled_passes"), 0, "logprobs/penalty");
        eprintln!(
            "sampling on the {}: {:.1} s (load, 10 requests x 4 tokens); GPU-ranked passes: \
             {} (all greedy: {passes} decode passes, 4 prefills), {} (mixed), {} (row only)",
            if on_gpu { "GPU" } else { "CPU" },
            t0.elapsed().as_secs_f64(),
            delta(&h0, &h1, "gpu_sampled_passes"),
            delta(&h1, &h2, "gpu_sampled_passes"),
            delta(&h2, &h3, "gpu_sampled_passes"),
        );
        results.push([a, b, c]);
    }
    let (cpu, gpu) = (&results[0], &results[1]);
    for (phase, name) in ["all greedy", "mixed greedy/seeded", "logprobs/penalty"]
        .iter()
        .enumerate()
    {
        for (i, (c, g)) in cpu[phase].iter().zip(&gpu[phase]).enumerate() {
            assert_eq!(c, g, "{name} request {i}: GPU sampling differs from CPU");
            assert_eq!(
                c["usage"]["completion_tokens"], 4,
                "{name} request {i}: {c}"
            );
            assert!(
                !c["choice"]["text"].as_str().unwrap().is_empty(),
                "{name} request {i}: {c}"
            );
        }
    }
    // the logprobs request did report them
    let lp = &cpu[2][0]["choice"]["logprobs"];
    assert_eq!(lp["tokens"].as_array().map(Vec::len), Some(4), "{lp}");
}

/// Speculative decoding inside continuous batching: four concurrent greedy chat requests that
/// copy a sentence (each drafting for itself, checked in passes of its own; one streamed, one
/// constrained to a JSON object) return exactly what they return with `"speculative": false`,
/// and `/health` counts the checks, drafted and accepted tokens.
#[test]
fn speculative_requests_serve_what_plain_ones_serve() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let _one = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let opts = LoadOptions {
        ctx: Some(256),
        ..Default::default()
    };
    let engine = Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2");
    let config = ServeConfig {
        port: 0,
        model_id: "smol".into(),
        max_concurrency: 8,
        parallel: 4,
        ..Default::default()
    };
    let server = flint::serve::spawn(engine, config).unwrap();
    let addr = server.addr;
    let sentences = [
        "The lighthouse keeper climbed the spiral stairs every evening at dusk.",
        "Seven small boats sailed past the harbour wall before the storm arrived.",
        "The library on the hill keeps its oldest maps in a cool stone cellar.",
        "A red kite circled twice above the field and then drifted east.",
    ];
    let bodies = |spec: Value| -> Vec<Value> {
        sentences
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut b = json!({"model": "smol", "max_tokens": 24, "temperature": 0, "speculative": spec,
                       "stream": i == 1,
                       "messages": [{"role": "user", "content": format!("Repeat this sentence exactly: {s}")}]});
                if i == 3 {
                    // the grammar masks every checked row: drafts it forbids are not taken
                    b["response_format"] = json!({"type": "json_object"});
                    b["messages"][0]["content"] = json!(format!("Answer in JSON with the key \"text\": {s}"));
                }
                b
            })
            .collect()
    };
    let chat_together = |bodies: Vec<Value>| -> Vec<String> {
        let handles: Vec<_> = bodies
            .into_iter()
            .map(|b| {
                std::thread::spawn(move || {
                    let text = post_text(addr, "/v1/chat/completions", &b);
                    if b["stream"] == json!(true) {
                        // the streamed pieces, joined
                        text.lines()
                            .filter_map(|l| l.strip_prefix("data: "))
                            .filter(|l| *l != "[DONE]")
                            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                            .filter_map(|c| {
                                c["choices"][0]["delta"]["content"]
                                    .as_str()
                                    .map(str::to_string)
                            })
                            .collect::<String>()
                    } else {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        v["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let t0 = Instant::now();
    let plain = chat_together(bodies(json!(false)));
    let plain_secs = t0.elapsed().as_secs_f64();
    let h1 = idle_health(addr);
    assert_eq!(h1["speculative"]["checks"], 0, "{h1}");
    let t1 = Instant::now();
    let spec = chat_together(bodies(json!(null)));
    let spec_secs = t1.elapsed().as_secs_f64();
    let h2 = idle_health(addr);
    let s = &h2["speculative"];
    // (a figure, not a test: prefill included, and this machine is shared)
    eprintln!(
        "plain {plain:?}\nspeculative {spec:?}\n{s}\n4 concurrent copy requests: {plain_secs:.1} s \
         without speculation, {spec_secs:.1} s with ({:.2}x)",
        plain_secs / spec_secs
    );
    assert_eq!(spec, plain, "speculation changed the answers");
    assert!(plain[0].contains("spiral stairs"), "{plain:?}");
    assert!(plain[3].starts_with('{'), "{plain:?}");
    let (drafted, accepted) = (
        s["drafted_tokens"].as_u64().unwrap(),
        s["accepted_tokens"].as_u64().unwrap(),
    );
    assert!(s["checks"].as_u64().unwrap() > 0, "{h2}");
    assert!(accepted * 2 > drafted, "most drafts accepted: {s}");
    // a bad value is the request's error
    let bad = json!({"model": "smol", "max_tokens": 2, "speculative": "fast",
                     "messages": [{"role": "user", "content": "hi"}]});
    let mut c = TcpStream::connect(addr).unwrap();
    let b = bad.to_string();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("speculative"), "{out}");
    check_metrics(addr, &h2);
    server.shutdown();
}

/// `/metrics` after the 8 chat answers and the one refused request of the test above: its
/// counters equal what the clients saw and `/health` counts, it parses with Prometheus' own
/// Python parser (`prometheus_client`, from scripts/openai-venv.sh), and it carries the Gateway
/// API Inference Extension's names.
fn check_metrics(addr: SocketAddr, health: &Value) {
    let (head, text) = get_text(addr, "/metrics");
    let text = text.as_str();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("text/plain; version=0.0.4"),
        "{head}"
    );
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("flint_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"),
        8.0
    );
    assert_eq!(
        value("flint_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"),
        1.0
    );
    assert_eq!(value("flint_time_to_first_token_seconds_count"), 8.0);
    assert_eq!(value("flint_time_per_output_token_seconds_count"), 8.0);
    assert_eq!(value("vllm:num_requests_running"), 0.0);
    assert_eq!(value("vllm:num_requests_waiting"), 0.0);
    assert_eq!(value("vllm:gpu_cache_usage_perc"), 0.0);
    assert_eq!(value("flint_kv_cache_slots"), 4.0);
    assert_eq!(
        value("flint_prefix_cache_hit_tokens_total"),
        health["cached_prompt_tokens"].as_u64().unwrap() as f64
    );
    let generated = value("flint_generation_tokens_total");
    assert!(
        (8.0 * 10.0..=8.0 * 24.0).contains(&generated),
        "{generated}"
    );
    assert!(value("flint_prompt_tokens_total") > 8.0 * 20.0);
    if std::env::var_os("FLINT_SKIP_PYTHON").is_some() {
        return;
    }
    let venv = std::process::Command::new("scripts/openai-venv.sh")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/openai-venv.sh");
    assert!(venv.status.success(), "scripts/openai-venv.sh failed");
    let python = String::from_utf8(venv.stdout).unwrap();
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
                  fams = {f.name: f for f in p(sys.stdin.read())}\n\
                  reqs = sum(s.value for s in fams['flint_requests'].samples if s.labels.get('endpoint') == '/v1/chat/completions')\n\
                  ttft = [s.value for s in fams['flint_time_to_first_token_seconds'].samples if s.name.endswith('_count')][0]\n\
                  print(int(reqs), int(ttft), fams['vllm:num_requests_running'].type)\n";
    let mut child = std::process::Command::new(python.trim())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let got = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "prometheus_client could not parse /metrics:\n{text}"
    );
    assert_eq!(said.trim(), "9 8 gauge", "prometheus_client read {said}");
}
