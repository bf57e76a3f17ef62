//! The `flint` binary as a user runs it: stdout carries only generated text, errors are one clear
//! line with exit status 1 (never a panic), and `perplexity` prints `PPL = ...` last.

use std::process::Command;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn flint(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()),
        )
        .output()
        .expect("run flint");
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
    let (code, out, err) = flint(&[
        "run",
        "-m",
        MODEL,
        "-p",
        "The capital of France is",
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, " Paris.\n", "stdout must hold only the generated text");
    assert!(err.contains("tok/s"), "timings go to stderr: {err}");
}

#[test]
fn chat_keeps_the_conversation() {
    if !have_model() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["chat", "-m", MODEL, "--temp", "0", "-n", "12", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd of Germany?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(answers.len() >= 2, "two turns, two answers: {stdout:?}");
    assert!(stdout.contains("Paris"), "{stdout:?}");
    assert!(
        stdout.contains("Berlin"),
        "the second turn sees the first: {stdout:?}"
    );
}

#[test]
fn info_names_architecture_and_kernels() {
    if !have_model() {
        return;
    }
    let (code, out, err) = flint(&["info", "-m", MODEL, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "architecture: llama",
        "layers: 30",
        "Q4_1",
        "Q8_0",
        "adapter:",
        "kernels:",
        "matvec",
    ] {
        assert!(out.contains(want), "`{want}` missing from:\n{out}");
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
