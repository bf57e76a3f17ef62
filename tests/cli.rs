//! The `flint` binary as a user runs it: stdout carries only generated text, errors are one clear
//! line with exit status 1 (never a panic), and `perplexity` prints `PPL = ...` last.

use std::process::Command;

mod common;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn flint(args: &[&str]) -> (i32, String, String) {
    flint_with_input(args, b"")
}

/// `flint args` with `input` on its standard input: exit code, stdout, stderr.
fn flint_with_input(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flint");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().expect("wait for flint");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn have_model() -> bool {
    std::env::var("FLINT_SKIP_MODEL_TESTS").is_err()
}

#[test]
fn run_greedy_streams_only_the_completion() {
    if !have_model() {
        return;
    }
    // as on a fresh machine, in a container or CI: no XDG_RUNTIME_DIR (Mesa's loader then
    // printed "error: XDG_RUNTIME_DIR is invalid or not set" twice)
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "-m", MODEL, "-p", "The capital of France is"])
        .args(["-n", "2", "--temp", "0"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run flint");
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out, " Paris.\n",
        "stdout must hold only the generated text ({err})"
    );
    assert!(err.contains("tok/s"), "timings go to stderr: {err}");
    // stderr holds flint's own lines and nothing else
    for line in err.lines() {
        assert!(
            line.is_empty() || line.starts_with("flint: "),
            "a line on stderr that is not flint's: {line:?} in\n{err}"
        );
    }
    // lavapipe is a CPU-type adapter: the startup says what that means
    assert!(err.contains("is a software GPU"), "{err}");
}

#[test]
fn chat_keeps_the_conversation() {
    if !have_model() {
        return;
    }
    let (code, stdout, stderr) = flint_with_input(
        &["chat", "-m", MODEL, "--temp", "0", "-n", "12", "--quiet"],
        b"What is the capital of France?\nAnd of Germany?\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(answers.len() >= 2, "two turns, two answers: {stdout:?}");
    assert!(stdout.contains("Paris"), "{stdout:?}");
    assert!(
        stdout.contains("Berlin"),
        "the second turn sees the first: {stdout:?}"
    );
}

/// `flint chat --tools`: with `--tool-choice required` SmolLM2 (no tool support in its template:
/// the generic syntax) must call the declared tool with valid arguments (the next input line is
/// the call's result). Bad tool files and tool choices are clear errors.
#[test]
fn chat_calls_tools_from_a_file() {
    if !have_model() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("flint-cli-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tools = dir.join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type": "function", "function": {"name": "get_time", "description": "The time now.",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "enum": ["UTC", "Europe/Paris"]}}, "required": ["timezone"]}}}]"#,
    )
    .unwrap();
    let tools = tools.to_str().unwrap();
    let (code, stdout, stderr) = flint_with_input(
        &[
            "chat",
            "-m",
            MODEL,
            "--temp",
            "0",
            "-n",
            "48",
            "--quiet",
            "--tools",
            tools,
            "--tool-choice",
            "required",
        ],
        b"What time is it in Paris?\n{\"time\": \"12:00\"}\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let call = stdout
        .lines()
        .find_map(|l| l.strip_prefix("<- get_time "))
        .unwrap_or_else(|| panic!("no call printed: {stdout:?}"));
    let args: serde_json::Value = serde_json::from_str(call).expect("arguments are JSON");
    assert!(
        ["UTC", "Europe/Paris"].contains(&args["timezone"].as_str().unwrap_or("")),
        "{args}"
    );

    std::fs::write(
        dir.join("bad.json"),
        r#"[{"type": "function", "function": {}}]"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    let (code, _, err) = flint(&[
        "chat",
        "-m",
        MODEL,
        "--quiet",
        "--tools",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("tools[0].function.name"), "{err}");
    let (code, _, err) = flint(&[
        "chat",
        "-m",
        MODEL,
        "--quiet",
        "--tools",
        tools,
        "--tool-choice",
        "get_weather",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("get_weather"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `flint info -m MODEL --quiet` with `flags` succeeds and prints every one of `wants`; returns
/// its output.
fn info_shows(flags: &[&str], wants: &[&str]) -> String {
    let args: Vec<&str> = ["info", "-m", MODEL, "--quiet"]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    let (code, out, err) = flint(&args);
    assert_eq!(code, 0, "{flags:?}: {err}");
    for want in wants {
        assert!(
            out.contains(want),
            "{flags:?}: `{want}` missing from:\n{out}"
        );
    }
    out
}

#[test]
fn info_names_architecture_and_kernels() {
    if !have_model() {
        return;
    }
    info_shows(
        &[],
        &[
            "architecture: llama",
            "layers: 30",
            "Q4_1",
            "Q8_0",
            "adapter:",
            "kernels:",
            "matvec",
            "KV cache: f32",
            "sampling: ",
            "tool calls: generic syntax",
        ],
    );
    // the layout and cache flags reach the device: the GPU layout's kernels, the f16 cache's
    info_shows(
        &[
            "--kernels",
            "gpu",
            "--kv-cache",
            "f16",
            "--matmul",
            "f16",
            "--sample-on",
            "gpu",
        ],
        &[
            "kernel layout: gpu",
            "KV cache: f16",
            "prefill matmul: f16",
            "kv_base",
            "sampling: gpu",
            "top_k_groups",
            "top_k_merge",
            "attention.kv_f16",
            "kv_store",
            "matvec.q4_1",
        ],
    );
    // the q16 cache: its store kernel and the attention kernel through its view; q16 tiles on
    // the cpu layout serve only the tiled fallback, and the label says so
    info_shows(
        &["--kernels", "cpu", "--kv-cache", "q16", "--matmul", "q16"],
        &[
            "KV cache: q16",
            "kv_base",
            "kv_store_q16",
            ".kv_q16",
            "prefill matmul: q16 (tiled fallback only",
        ],
    );
    let out = info_shows(
        &["--kernels", "cpu", "--sample-on", "cpu"],
        &["kernel layout: cpu", "matvec_rows.q4_1", "sampling: cpu"],
    );
    assert!(!out.contains("top_k"), "{out}");
    // an unknown cache or tile type is refused, listing the types
    for flag in ["--kv-cache", "--matmul"] {
        let (code, _, err) = flint(&["info", "-m", MODEL, flag, "f8"]);
        assert_ne!(code, 0);
        assert!(err.contains("`f8`: expected one of f32, f16, q16"), "{err}");
    }
}

#[test]
fn adapters_are_listed() {
    let (code, out, err) = flint(&["info", "--adapters"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[0]") && out.contains("max_storage_buffer_binding_size"),
        "{out}"
    );
    // --adapter picks one: only its block is listed, under its own index
    let listed = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with('['))
            .map(|l| l.split(']').next().unwrap().to_string() + "]")
            .collect()
    };
    let all = listed(&out);
    for (i, index) in all.iter().enumerate() {
        let (code, one, err) = flint(&["info", "--adapters", "--adapter", &i.to_string()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(listed(&one), vec![index.clone()], "{one}");
    }
    let name = out.lines().next().unwrap()[4..].split(" (").next().unwrap();
    let (code, one, err) = flint(&["info", "--adapters", "--adapter", name]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&one), vec!["[0]".to_string()], "{one}");
    let (code, _, err) = flint(&["info", "--adapters", "--adapter", "no-such-gpu"]);
    assert_eq!(code, 1);
    assert!(err.contains("no adapter matches `no-such-gpu`"), "{err}");
}

#[test]
fn perplexity_prints_ppl_last() {
    if !have_model() {
        return;
    }
    let (code, out, err) = flint(&[
        "perplexity",
        "-m",
        MODEL,
        "-f",
        "tests/fixtures/smollm2/apache-2.0.txt",
        "-c",
        "16",
        "--chunks",
        "2",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let last = out.trim_end().lines().last().unwrap_or("");
    let v: f64 = last.strip_prefix("PPL = ").expect(last).parse().unwrap();
    assert!(v > 1.0 && v < 1000.0, "{last}");
}

#[test]
fn bad_inputs_are_clear_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("flint-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.gguf");
    let (code, _, err) = flint(&["run", "-m", missing.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not found") && !err.contains("panicked"),
        "{err}"
    );

    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a model file at all").unwrap();
    let (code, _, err) = flint(&["run", "-m", garbage.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(code, 1);
    assert!(err.contains("GGUF") && !err.contains("panicked"), "{err}");

    if have_model() {
        // the real model cut in half: the tensor directory points past the end
        let bytes = std::fs::read(MODEL).unwrap();
        let cut = dir.join("truncated.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let (code, _, err) = flint(&["run", "-m", cut.to_str().unwrap(), "-p", "hi"]);
        assert_eq!(code, 1);
        assert!(
            err.contains("outside the file") && !err.contains("panicked"),
            "{err}"
        );

        let (code, _, err) = flint(&[
            "run",
            "-m",
            MODEL,
            "-c",
            "8",
            "-p",
            "one two three four five six seven eight nine ten",
        ]);
        assert_eq!(code, 1);
        assert!(err.contains("does not fit the context"), "{err}");

        let (code, _, err) = flint(&["run", "-m", MODEL, "-p", "hi", "--top-p", "1.5"]);
        assert_eq!(code, 1);
        assert!(err.contains("top_p"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn info_reads_a_hugging_face_folder() {
    let (code, out, err) = flint(&["info", "-m", "tests/fixtures/hf/tiny-llama", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Hugging Face",
        "LlamaForCausalLM",
        "F32",
        "architecture: llama",
        "heads: 6",
        "kv_heads: 2",
    ] {
        assert!(out.contains(want), "`{want}` missing from:\n{out}");
    }
}

/// `flint info` names each family's architecture and the options it read, in both formats.
#[test]
fn info_lists_every_option_of_the_new_families() {
    for (path, arch, wants) in [
        (
            "tests/fixtures/arch/gemma3/gemma3-q8_0.gguf",
            "gemma3",
            &[
                "rope_local: Neox",
                "sliding_window: 4 on layers 0,1,2,3,4",
                "qk_norm: yes",
                "embedding_scale: 8",
                "GeGlu",
            ][..],
        ),
        (
            "tests/fixtures/arch/gemma2",
            "gemma2",
            &[
                "attention_softcap: 3",
                "final_logit_softcap: 15",
                "post_norms: yes",
                "attention_scale: 0.25",
            ][..],
        ),
        (
            "tests/fixtures/arch/qwen2/qwen2-f32.gguf",
            "qwen2",
            &["qkv_bias: yes"][..],
        ),
    ] {
        let (code, out, err) = flint(&["info", "-m", path]);
        assert_eq!(code, 0, "{path}: {err}");
        assert!(
            out.contains(&format!("architecture: {arch}")),
            "{path}: {out}"
        );
        for w in wants {
            assert!(out.contains(w), "{path}: `{w}` missing from\n{out}");
        }
    }
}

#[test]
fn version_names_wgpu_and_the_compiled_backends() {
    let (code, out, err) = flint(&["--version"]);
    assert_eq!(code, 0, "{err}");
    // the wgpu major version flint states must be the one Cargo.toml asks for
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap();
    let major = manifest
        .lines()
        .find_map(|l| l.strip_prefix("wgpu = { version = \""))
        .and_then(|r| r.split('"').next())
        .expect("a wgpu requirement in Cargo.toml");
    let want = format!(
        "flint {} (wgpu {major}; backends: ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(out.starts_with(&want), "{out:?} should start with {want:?}");
    let backends: Vec<&str> = out.trim_end().trim_end_matches(')')[want.len()..]
        .split(", ")
        .collect();
    // noop: wgpu's kernel-less backend, for `flint bench --backend noop` (tests/bench_noop.rs)
    #[cfg(target_os = "linux")]
    assert_eq!(backends, ["vulkan", "gl", "noop"], "{out}");
    #[cfg(target_os = "macos")]
    assert_eq!(backends, ["metal", "noop"], "{out}");
    #[cfg(windows)]
    assert_eq!(backends, ["vulkan", "dx12", "gl", "noop"], "{out}");
}

/// The `[i] NAME (Backend, DeviceType, ...)` block of `flint info --adapters` whose header line
/// contains `needle`.
fn adapter_block<'a>(listing: &'a str, needle: &str) -> Option<Vec<&'a str>> {
    let mut lines = listing.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with('[') && l.contains(needle) {
            let mut block = vec![l];
            while let Some(next) = lines.next_if(|n| !n.starts_with('[')) {
                block.push(next);
            }
            return Some(block);
        }
    }
    None
}

#[test]
fn lavapipe_is_listed_with_features_and_limits() {
    // scripts/setup.sh installs Mesa's lavapipe on every machine, GPU or not
    let (code, out, err) = flint(&["info", "--adapters", "--backend", "vulkan"]);
    assert_eq!(code, 0, "{err}");
    let block = adapter_block(&out, "llvmpipe").unwrap_or_else(|| panic!("no lavapipe in:\n{out}"));
    assert!(
        block[0].contains("(Vulkan, Cpu, driver llvmpipe"),
        "{}",
        block[0]
    );
    let line = |key: &str| {
        block
            .iter()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no `{key}` line in {block:#?}"))
    };
    assert!(
        line("flint uses:").contains("shader-f16 yes, subgroups yes (sizes 8..8)"),
        "{block:#?}"
    );
    for f in ["SHADER_F16", "SUBGROUP", "TIMESTAMP_QUERY"] {
        assert!(line("features:").contains(f), "{f} missing: {block:#?}");
    }
    let limits = line("limits:");
    let limit = |key: &str| -> u64 {
        limits
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {limits}"))
            .parse()
            .unwrap()
    };
    assert!(
        limit("max_storage_buffer_binding_size") >= 128 << 20,
        "{limits}"
    );
    assert!(limit("max_buffer_size") >= limit("max_storage_buffer_binding_size"));
    assert!(limit("workgroup_storage") >= 16 << 10, "{limits}");
    assert!(limit("invocations") >= 256, "{limits}");
    assert!(limit("workgroups_per_dim") >= 65535, "{limits}");
    // --backend filters: every adapter listed is a Vulkan one
    for l in out.lines().filter(|l| l.starts_with('[')) {
        assert!(l.contains("(Vulkan,"), "{l}");
    }
}

#[test]
fn adapter_and_backend_selection_errors_are_clear() {
    let (code, _, err) = flint(&["info", "--adapters", "--backend", "glide"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown backend `glide`"), "{err}");
    if !have_model() {
        return;
    }
    for sel in ["99", "no-such-gpu"] {
        let (code, _, err) = flint(&["run", "-m", MODEL, "-p", "hi", "-n", "1", "--adapter", sel]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("no adapter matches `{sel}`")) && err.contains("llvmpipe"),
            "{err}"
        );
    }
    // FLINT_ADAPTER is the same selector as --adapter
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "-m", MODEL, "-p", "hi", "-n", "1"])
        .env("FLINT_ADAPTER", "no-such-gpu")
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no adapter matches `no-such-gpu`"), "{err}");
}

#[test]
fn bench_reports_speeds_sizes_and_the_roofline_ratio() {
    if !have_model() {
        return;
    }
    let (code, out, err) = flint(&[
        "bench",
        "-m",
        MODEL,
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "2",
        "--no-warmup",
        "--json",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let tests = r["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp8", "tg2"]);
    for t in tests {
        let f = |k: &str| t[k].as_f64().unwrap();
        assert_eq!(t["samples_tps"].as_array().unwrap().len(), 2, "{t}");
        assert!(0.0 < f("min_tps") && f("min_tps") <= f("median_tps"), "{t}");
        assert!(f("median_tps") <= f("max_tps"), "{t}");
    }
    assert!(tests.iter().all(|t| t["n_depth"] == 0));
    assert_eq!(
        (&r["kv_cache"], &r["matmul"]),
        (&"f32".into(), &"f32".into())
    );
    assert_eq!(r["architecture"], "llama");
    assert_eq!(r["quant"], "Q4_1");
    assert!(!r["adapter"].as_str().unwrap().is_empty());
    let params = r["params"].as_u64().unwrap();
    assert!((134_000_000..135_000_000).contains(&params), "{params}");
    let file = std::fs::metadata(MODEL).unwrap().len();
    let size = r["model_bytes"].as_u64().unwrap();
    assert!(size < file && size > file * 9 / 10, "{size} of {file}");
    // 30 layers of Q4_1 (20 bytes / 32 weights on the GPU) q, k, v, o, gate, up, down; the tied
    // Q8_0 output head (36 bytes / 32 on the GPU); 61 f32 norm vectors of 576
    let per_layer = 2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576;
    let want = 30 * per_layer / 32 * 20 + 49152 * 576 / 32 * 36 + 61 * 576 * 4;
    assert_eq!(
        r["decode_weight_bytes_per_token"].as_u64().unwrap(),
        want as u64
    );
    let tg = tests[1]["median_tps"].as_f64().unwrap();
    let gbps = r["decode_weight_gbps"].as_f64().unwrap();
    assert!(
        (gbps - want as f64 * tg / 1e9).abs() < 1e-9 * gbps.max(1.0),
        "{gbps}"
    );
    let copy = r["copy_gbps"].as_f64().unwrap();
    assert!(copy > 0.0 && copy.is_finite());
    let ratio = r["roofline_ratio"].as_f64().unwrap();
    assert!((ratio - gbps / copy).abs() < 1e-9, "{ratio}");

    // the table: one row per test, then the bandwidth lines; here with lists (llama-bench's):
    // two prompt lengths, each test at depths 0 and 40 (cached tokens, -d), in an f16 cache
    let (code, out, err) = flint(&[
        "bench",
        "-m",
        MODEL,
        "-p",
        "4,2",
        "-n",
        "1",
        "-d",
        "0,40",
        "--kv-cache",
        "f16",
        "-r",
        "1",
        "--no-warmup",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("| model | size | params | backend | adapter | test |"),
        "{out}"
    );
    for want in [
        "| llama Q4_1 |",
        "| pp4 |",
        "| pp2 |",
        "| tg1 |",
        "| pp4 @ d40 |",
        "| pp2 @ d40 |",
        "| tg1 @ d40 |",
        "f16 KV cache, f32 prefill matmul",
        "copy bandwidth",
        "roofline ratio",
    ] {
        assert!(out.contains(want), "`{want}` missing from:\n{out}");
    }
    // llama-bench's order: depth first, then the prompt lengths as given, then the decode tests
    let at = |row: &str| out.find(row).unwrap();
    assert!(
        at("| pp4 |") < at("| pp2 |")
            && at("| pp2 |") < at("| tg1 |")
            && at("| tg1 |") < at("| pp4 @ d40 |"),
        "{out}"
    );
    // a spec that measures nothing is refused before the model loads, naming the flags
    let (code, _, err) = flint(&["bench", "-m", MODEL, "-r", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("-r/--repetitions must be at least 1"), "{err}");
    let (code, _, err) = flint(&["bench", "-m", MODEL, "-p", "0", "-n", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing to measure: -p and -n are all 0"),
        "{err}"
    );
}

/// `flint serve` shuts down gracefully: SIGTERM during 8 running streams lets all 8 finish with
/// their `[DONE]`, refuses new connections meanwhile, and exits 0.
#[cfg(unix)]
#[test]
fn serve_drains_running_streams_on_sigterm() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    if std::env::var_os("FLINT_SKIP_MODEL_TESTS").is_some() || !std::path::Path::new(MODEL).exists()
    {
        return;
    }
    let (mut child, mut err, addr) = common::spawn_serve(&[
        "-m",
        MODEL,
        "--port",
        "0",
        "--parallel",
        "8",
        "--max-concurrency",
        "8",
        "--ctx",
        "256",
        "--shutdown-timeout",
        "120",
        "--model-id",
        "x",
    ]);
    let stream = |addr: String| {
        std::thread::spawn(move || {
            let body = r#"{"model": "x", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "stream": true, "speculative": false}"#;
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    };
    let streams: Vec<_> = (0..8).map(|_| stream(addr.clone())).collect();
    // wait until all 8 run (generation has started: each stream has its first chunk)
    let t0 = Instant::now();
    loop {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        if out.contains("\"active\":8") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "8 streams never ran: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // the listener closes at once: new connections are refused while the streams finish
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a new connection was accepted after SIGTERM"
    );
    for (i, h) in streams.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "stream {i}: {out}");
        assert!(out.contains("data: [DONE]"), "stream {i} was cut: {out}");
    }
    let status = child.wait().unwrap();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(status.success(), "exit {status:?}: {rest}");
    assert!(rest.contains("shutting down"), "{rest}");
}

/// deploy/ checked offline: the Kubernetes manifests parse and agree with each other and with
/// the server's probe and metric names, and the Dockerfiles run `flint serve` on the probed port
/// (tests/deploy_check.py, with PyYAML from scripts/openai-venv.sh). The images are not built.
#[test]
fn deploy_manifests_parse_and_agree() {
    if std::env::var_os("FLINT_SKIP_PYTHON").is_some() {
        return;
    }
    let venv = Command::new("scripts/openai-venv.sh")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/openai-venv.sh");
    assert!(venv.status.success(), "scripts/openai-venv.sh failed");
    let python = String::from_utf8(venv.stdout).unwrap();
    let out = Command::new(python.trim())
        .args(["tests/deploy_check.py", "."])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
