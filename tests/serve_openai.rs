//! `flint serve` driven by the official OpenAI Python client (`tests/openai_client.py`): plain,
//! streamed, json_schema, logprobs and bad requests, over real HTTP with SmolLM2-135M-Instruct.
//!
//! The client runs in a venv under `target/openai-venv`, created on first use by
//! `scripts/openai-venv.sh` (pip install openai jsonschema from PyPI) and reused afterwards.
//! Set FLINT_SKIP_MODEL_TESTS=1 to skip.

use flint::engine::{Engine, LoadOptions};
use flint::serve::ServeConfig;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn openai_python_client() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        eprintln!("FLINT_SKIP_MODEL_TESTS set: skipping");
        return;
    }
    let venv = Command::new("scripts/openai-venv.sh")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/openai-venv.sh");
    assert!(
        venv.status.success(),
        "scripts/openai-venv.sh failed (it needs python3 with venv and PyPI)"
    );
    let python = String::from_utf8(venv.stdout).expect("utf-8 path");
    let python = python.trim();

    let opts = LoadOptions {
        ctx: Some(512),
        ..Default::default()
    };
    let engine = Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2");
    let config = ServeConfig {
        port: 0,
        api_key: Some("py-key".into()),
        model_id: "smol".into(),
        max_concurrency: 4,
        ..Default::default()
    };
    let server = flint::serve::spawn(engine, config).expect("spawn server");
    let base = format!("http://{}/v1", server.addr);

    let t0 = Instant::now();
    let mut child = Command::new(python)
        .args(["tests/openai_client.py", &base, "smol", "py-key"])
        .spawn()
        .expect("start the Python client");
    let limit = Duration::from_secs(540);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the client") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("the Python client did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("openai client: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(status.success(), "tests/openai_client.py failed: {status}");
    server.shutdown();
}
