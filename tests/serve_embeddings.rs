//! `POST /v1/embeddings` on `flint serve` over real HTTP: the `flint` binary serving SmolLM2 as
//! the chat model and all-MiniLM-L6-v2 (`--embedding-model`, a sentence-transformers folder) beside
//! it, checked against `flint embed --json` (the same library call, so the vectors agree to 1e-6),
//! every bad request as OpenAI's 400, and the official OpenAI Python client
//! (`tests/openai_embeddings.py`, in the venv `scripts/openai-venv.sh` creates). A second, small
//! test serves the embedding model alone (`-m` an embedding model).
//!
//! One server per test, each a child process killed when its test ends; everything else shares
//! it. The models come from `scripts/setup.sh`. Set FLINT_SKIP_MODEL_TESTS=1 to skip.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHAT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const EMBED_MODEL: &str = "models/all-MiniLM-L6-v2";
const CHAT_ID: &str = "smol";
const EMBED_ID: &str = "minilm";
const KEY: &str = "embed-key";
/// all-MiniLM-L6-v2's vectors and its `max_seq_length`.
const DIMS: usize = 384;
const MAX_TOKENS: usize = 256;
/// `flint::embed::MAX_INPUTS`.
const MAX_INPUTS: usize = 2048;

fn skip() -> bool {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        eprintln!("FLINT_SKIP_MODEL_TESTS set: skipping");
        return true;
    }
    for m in [CHAT_MODEL, EMBED_MODEL] {
        assert!(
            std::path::Path::new(m).exists(),
            "{m} is missing: run scripts/setup.sh"
        );
    }
    false
}

/// A `flint serve` child process, killed when dropped (a failed test too).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flint serve ARGS --port 0` and waits for the line that says where it listens; the
/// rest of its stderr is copied to the test's.
fn start(args: &[&str]) -> Server {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flint"))
        .arg("serve")
        .args(args)
        .args(["--port", "0", "--api-key", KEY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flint serve");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("flint serve {args:?} exited before listening:\n{seen}");
        }
        seen.push_str(&line);
        // "flint: serving MODEL at http://ADDR/v1"
        if let Some(rest) = line.split(" at http://").nth(1) {
            let addr = rest.split("/v1").next().unwrap_or("");
            break addr.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    };
    std::thread::spawn(move || {
        for line in err.lines().map_while(|l| l.ok()) {
            eprintln!("[flint serve] {line}");
        }
    });
    eprintln!(
        "flint serve {} listening at {addr} after {:.2} s",
        args.join(" "),
        t0.elapsed().as_secs_f64()
    );
    Server { child, addr }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request (`Connection: close`) with the API key; the whole reply.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
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
    Reply { status, body }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, body.to_string().as_bytes())
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let r = request(addr, "GET", path, b"");
    assert_eq!(r.status, 200, "GET {path}: {}", r.json());
    r.json()
}

/// POSTs an embeddings request that must succeed; the response.
fn embed_ok(addr: SocketAddr, body: Value) -> Value {
    let r = post(addr, "/v1/embeddings", &body);
    let v = r.json();
    assert_eq!(r.status, 200, "{body}: {v}");
    assert_eq!(v["object"], "list", "{v}");
    assert_eq!(v["model"], body["model"], "{v}");
    let n = v["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert_eq!(v["usage"]["total_tokens"], n, "{v}");
    for (i, d) in v["data"].as_array().expect("data").iter().enumerate() {
        assert_eq!(d["object"], "embedding", "{d}");
        assert_eq!(d["index"], i, "{d}");
    }
    v
}

/// The float vectors of a response (`encoding_format` float).
fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap_or_else(|| panic!("not a float array: {d}"))
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect()
        })
        .collect()
}

/// Decodes standard base64 (padded).
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?} in {s}"),
        }
    };
    assert_eq!(s.len() % 4, 0, "base64 length {}", s.len());
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q.iter().take(4 - pad).fold(0u32, |n, &c| (n << 6) | val(c)) << (6 * pad);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: number of vectors");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| max_diff(g, w))
        .fold(0.0, f32::max);
    assert!(worst < 1e-6, "{what}: max abs difference {worst}");
    worst
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|x| (*x as f64 / n) as f32).collect()
}

/// 64 different short texts (an encoder on lavapipe takes its time per token): punctuation,
/// accents, CJK, an emoji; the first is one word.
fn texts() -> Vec<String> {
    let subjects = [
        "The cat",
        "A physicist",
        "My neighbour",
        "The old river",
        "Every compiler",
        "This GPU",
        "Le café",
        "東京の人々",
    ];
    let rests = [
        "sleeps.",
        "measured light twice",
        "builds a boat 🚤",
        "flows past the mill",
        "rejects bad code!",
        "runs many threads",
        "est déjà fermé",
        "は毎朝",
    ];
    let mut t: Vec<String> = (0..64)
        .map(|i| format!("{} {}", subjects[i % 8], rests[(i / 8 + i) % 8]))
        .collect();
    t[0] = "hello".into();
    t
}

/// `flint embed --json` for `texts`: the vectors and usage.prompt_tokens.
fn cli_embed(texts: &[String], extra: &[&str]) -> (Vec<Vec<f32>>, u64) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["embed", "--json", "--quiet", "-m", EMBED_MODEL])
        .args(extra)
        .args(texts)
        .output()
        .expect("run flint embed");
    assert!(
        out.status.success(),
        "flint embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("flint embed --json output");
    eprintln!(
        "flint embed --json {extra:?}: {} texts in {:.2} s",
        texts.len(),
        t0.elapsed().as_secs_f64()
    );
    (vectors(&v), v["usage"]["prompt_tokens"].as_u64().unwrap())
}

/// Asserts a 400 in OpenAI's error shape whose message or param mentions each of `words`.
fn bad(addr: SocketAddr, path: &str, body: Value, words: &[&str]) -> Value {
    let r = post(addr, path, &body);
    let v = r.json();
    let shown = body.to_string();
    let shown = &shown[..shown.len().min(160)];
    assert_eq!(r.status, 400, "{shown}: {v}");
    let e = &v["error"];
    assert_eq!(e["type"], "invalid_request_error", "{shown}: {v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    let said = format!("{} {}", e["param"], e["message"]).to_lowercase();
    for w in words {
        assert!(
            said.contains(&w.to_lowercase()),
            "{shown}: the error does not mention {w:?}: {v}"
        );
    }
    v
}

fn section(name: &str, f: impl FnOnce()) {
    let t0 = Instant::now();
    f();
    eprintln!("ok {name} ({:.2} s)", t0.elapsed().as_secs_f64());
}

#[test]
fn embeddings_beside_a_chat_model() {
    if skip() {
        return;
    }
    let t_all = Instant::now();
    let server = start(&[
        "-m",
        CHAT_MODEL,
        "--ctx",
        "256",
        "--model-id",
        CHAT_ID,
        "--embedding-model",
        EMBED_MODEL,
        "--embedding-model-id",
        EMBED_ID,
    ]);
    let addr = server.addr;
    let texts = texts();
    let (cli, cli_tokens) = cli_embed(&texts, &[]);
    assert_eq!((cli.len(), cli[0].len()), (64, DIMS));
    let tokenizer = flint::tokenizer::Tokenizer::encoder_from_tokenizer_json(format!(
        "{EMBED_MODEL}/tokenizer.json"
    ))
    .expect("MiniLM's tokenizer");
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tokenizer.encode(t, true).expect("encode"))
        .collect();
    let n_tokens = |n: usize| ids[..n].iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(cli_tokens, n_tokens(64), "flint embed's usage");

    section("models and health", || {
        let m = get(addr, "/v1/models");
        let listed: Vec<&str> = m["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [CHAT_ID, EMBED_ID], "{m}");
        assert_eq!(m["data"][1]["object"], "model");
        assert_eq!(get(addr, &format!("/v1/models/{EMBED_ID}"))["id"], EMBED_ID);
        assert_eq!(get(addr, &format!("/v1/models/{CHAT_ID}"))["id"], CHAT_ID);
        let h = get(addr, "/health");
        assert_eq!(h["model"], CHAT_ID, "{h}");
        assert_eq!(h["embedding"]["model"], EMBED_ID, "{h}");
        assert_eq!(h["embedding"]["dimensions"], DIMS, "{h}");
        assert_eq!(h["embedding"]["max_tokens"], MAX_TOKENS, "{h}");
    });

    let mut floats = Vec::new();
    section("floats equal flint embed --json", || {
        // the same 64 texts in one request, as flint embed ran them
        let v = embed_ok(addr, json!({"model": EMBED_ID, "input": texts}));
        floats = vectors(&v);
        let worst = assert_close(&floats, &cli, "64 texts");
        assert_eq!(v["usage"]["prompt_tokens"], n_tokens(64), "usage");
        // fewer inputs pack differently into the forward pass: the vectors do not change
        let v = embed_ok(
            addr,
            json!({"model": EMBED_ID, "input": &texts[..3], "encoding_format": "float", "user": "u1"}),
        );
        assert_close(&vectors(&v), &cli[..3], "3 texts");
        assert_eq!(v["usage"]["prompt_tokens"], n_tokens(3), "usage");
        // one string, not an array: "hello", three tokens in the forward pass
        let v = embed_ok(addr, json!({"model": EMBED_ID, "input": texts[0]}));
        assert_close(&vectors(&v), &cli[..1], "one string");
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert_eq!(n_tokens(1), 3);
        eprintln!("   max abs difference from flint embed: {worst:e}");
    });

    section("base64 decodes to the same floats", || {
        let v = embed_ok(
            addr,
            json!({"model": EMBED_ID, "input": &texts[..16], "encoding_format": "base64"}),
        );
        let decoded: Vec<Vec<f32>> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let s = d["embedding"].as_str().expect("a base64 string");
                let bytes = unbase64(s);
                assert_eq!(bytes.len(), 4 * DIMS);
                bytes
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            })
            .collect();
        // the very floats the float encoding writes (which read back exactly)
        assert_eq!(decoded, floats[..16]);
        assert_close(&decoded, &cli[..16], "base64");
    });

    section("dimensions: 64", || {
        let v = embed_ok(
            addr,
            json!({"model": EMBED_ID, "input": &texts[..8], "dimensions": 64}),
        );
        let got = vectors(&v);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.len(), 64);
            let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "vector {i}: norm {norm}");
        }
        let want: Vec<Vec<f32>> = cli[..8].iter().map(|v| normalized(&v[..64])).collect();
        assert_close(&got, &want, "dimensions 64");
        // flint embed --dimensions agrees
        let (cli64, _) = cli_embed(&texts[..2], &["--dimensions", "64"]);
        assert_close(&got[..2], &cli64, "flint embed --dimensions 64");
    });

    section("token ids equal text", || {
        // an array of token-id arrays
        let v = embed_ok(addr, json!({"model": EMBED_ID, "input": &ids[..4]}));
        assert_close(&vectors(&v), &cli[..4], "token-id arrays");
        assert_eq!(v["usage"]["prompt_tokens"], n_tokens(4));
        // one array of token ids
        let v = embed_ok(addr, json!({"model": EMBED_ID, "input": ids[7]}));
        assert_close(&vectors(&v), &cli[7..8], "one token-id array");
        assert_eq!(v["usage"]["prompt_tokens"], ids[7].len());
    });

    section("over-long input and truncate", || {
        let long = "the quick brown fox jumps over the lazy dog ".repeat(40); // > 256 tokens
        bad(
            addr,
            "/v1/embeddings",
            json!({"model": EMBED_ID, "input": ["short", long]}),
            &["input", "1", "256", "truncate"],
        );
        let v = embed_ok(
            addr,
            json!({"model": EMBED_ID, "input": [long], "truncate": true}),
        );
        assert_eq!(v["usage"]["prompt_tokens"], MAX_TOKENS, "{}", v["usage"]);
        let (cut, _) = cli_embed(&[long], &["--truncate"]);
        assert_close(&vectors(&v), &cut, "truncated");
    });

    section("bad requests", || {
        let e = |input: Value| json!({"model": EMBED_ID, "input": input});
        let path = "/v1/embeddings";
        bad(
            addr,
            path,
            json!({"model": EMBED_ID}),
            &["input", "missing"],
        );
        let many: Vec<&str> = vec!["a"; MAX_INPUTS + 1];
        // (input, words its 400 must say): the shapes the server reads, then what the library
        // checks (emptiness, count, vocabulary)
        let inputs: Vec<(Value, &[&str])> = vec![
            (json!(null), &["input", "missing"]),
            (json!({"text": "a"}), &["input", "an object"]),
            (json!(42), &["input", "a number"]),
            (json!([true]), &["input[0]", "a boolean"]),
            (json!(["a", {"text": "b"}]), &["input[1] is an object"]),
            (json!(["a", null]), &["input[1] is null"]),
            // mixed kinds
            (
                json!(["a", 1]),
                &["input[1] is a number but input[0] is a string"],
            ),
            (
                json!([[101, 102], "a"]),
                &["input[1] is a string but input[0] is an array"],
            ),
            (json!([1, "a"]), &["input[1]", "not a token id"]),
            (json!([[101, "a"]]), &["input[0][1]", "not a token id"]),
            // token ids that are none
            (json!([101, -5, 102]), &["input[1] is -5", "not a token id"]),
            (
                json!([[101, 102], [-1]]),
                &["input[1][0] is -1", "not a token id"],
            ),
            (json!([101, 1.5]), &["input[1] is 1.5", "integer"]),
            (json!([4294967296u64]), &["4294967296", "not a token id"]),
            // the library's checks
            (json!(""), &["input", "empty string"]),
            (json!([]), &["input", "no input"]),
            (json!(["a", ""]), &["input 1 is an empty string"]),
            (
                json!([[101, 102], []]),
                &["input 1 is an empty token array"],
            ),
            (json!(many), &["input", "2049", "2048"]),
            (json!([101, 30522, 102]), &["input", "30522", "vocabulary"]),
        ];
        for (input, words) in inputs {
            bad(addr, path, e(input), words);
        }
        let one = |k: &str, v: Value| {
            let mut b = e(json!("hello"));
            b[k] = v;
            b
        };
        bad(
            addr,
            path,
            one("encoding_format", json!("int8")),
            &["encoding_format", "int8"],
        );
        bad(
            addr,
            path,
            one("encoding_format", json!(1)),
            &["encoding_format"],
        );
        bad(
            addr,
            path,
            one("dimensions", json!(0)),
            &["dimensions", "0"],
        );
        bad(
            addr,
            path,
            one("dimensions", json!(DIMS + 1)),
            &["dimensions", "385", "384"],
        );
        bad(
            addr,
            path,
            one("dimensions", json!(-3)),
            &["dimensions", "-3"],
        );
        bad(
            addr,
            path,
            one("dimensions", json!("64")),
            &["dimensions", "integer"],
        );
        bad(
            addr,
            path,
            one("truncate", json!("yes")),
            &["truncate", "boolean"],
        );
        bad(addr, path, one("user", json!(7)), &["user", "string"]);
        bad(addr, path, one("model", json!(null)), &["model"]);
        // the chat model is not an embedding model
        let v = bad(
            addr,
            path,
            one("model", json!(CHAT_ID)),
            &["model", "chat model", EMBED_ID],
        );
        assert_eq!(v["error"]["code"], "model_not_supported");
        // an unknown model is a 404, as on the other endpoints
        let r = post(addr, path, &one("model", json!("nope")));
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["code"], "model_not_found");
        // and the embedding model answers no chat
        let chat = json!({"model": EMBED_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        let v = bad(
            addr,
            "/v1/chat/completions",
            chat,
            &["model", "embedding model", "/v1/embeddings"],
        );
        assert_eq!(v["error"]["code"], "model_not_supported");
        let text = json!({"model": EMBED_ID, "prompt": "hi", "max_tokens": 2});
        bad(addr, "/v1/completions", text, &["model", "embedding model"]);
        // nothing of that counted as served
        assert_eq!(get(addr, "/health")["embedding"]["queued"], 0);
    });

    section("the chat model still chats", || {
        let r = post(
            addr,
            "/v1/chat/completions",
            &json!({"model": CHAT_ID, "messages": [{"role": "user", "content": "What is 2+2?"}],
                    "max_tokens": 3, "temperature": 0}),
        );
        let v = r.json();
        assert_eq!(r.status, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    });

    section("the OpenAI Python client", || {
        let venv = Command::new("scripts/openai-venv.sh")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/openai-venv.sh");
        assert!(
            venv.status.success(),
            "scripts/openai-venv.sh failed (it needs python3 with venv and PyPI)"
        );
        let python = String::from_utf8(venv.stdout).expect("utf-8 path");
        let reference = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("embeddings.json");
        std::fs::write(
            &reference,
            json!({"texts": texts, "vectors": cli}).to_string(),
        )
        .expect("write the reference vectors");
        let base = format!("http://{addr}/v1");
        let status = Command::new(python.trim())
            .args(["tests/openai_embeddings.py", &base, EMBED_ID, KEY, CHAT_ID])
            .arg(&reference)
            .status()
            .expect("start the Python client");
        assert!(
            status.success(),
            "tests/openai_embeddings.py failed: {status}"
        );
    });

    let h = get(addr, "/health");
    eprintln!(
        "embedding worker: {} requests, {} inputs, {} tokens, {} ms busy; whole test {:.1} s",
        h["embedding"]["requests"],
        h["embedding"]["inputs"],
        h["embedding"]["prompt_tokens"],
        h["embedding"]["busy_ms"],
        t_all.elapsed().as_secs_f64()
    );
    assert!(h["embedding"]["requests"].as_u64().unwrap() >= 10, "{h}");
    drop(server);
}

#[test]
fn embedding_model_alone() {
    if skip() {
        return;
    }
    // -m an embedding model and --embedding-model too: refused before anything loads
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["serve", "--port", "0", "-m", EMBED_MODEL])
        .args(["--embedding-model", EMBED_MODEL])
        .output()
        .expect("run flint serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is an embedding model"), "{err}");

    let server = start(&["-m", EMBED_MODEL]);
    let addr = server.addr;
    // the id is the folder's name
    let id = "all-MiniLM-L6-v2";
    let m = get(addr, "/v1/models");
    assert_eq!(m["data"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["data"][0]["id"], id, "{m}");
    let h = get(addr, "/health");
    assert_eq!(h["model"], id, "{h}");
    assert_eq!(h["embedding"]["dimensions"], DIMS, "{h}");
    let v = embed_ok(addr, json!({"model": id, "input": ["hello", "world"]}));
    let got = vectors(&v);
    assert_eq!((got.len(), got[0].len()), (2, DIMS));
    // no chat model here, whatever the request names
    for model in [id, "smol"] {
        let chat = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let v = bad(
            addr,
            "/v1/chat/completions",
            chat,
            &["model", "no chat model", id],
        );
        assert_eq!(v["error"]["code"], "model_not_supported");
    }
    bad(
        addr,
        "/v1/completions",
        json!({"model": id, "prompt": "hi"}),
        &["no chat model", "/v1/embeddings"],
    );
}
