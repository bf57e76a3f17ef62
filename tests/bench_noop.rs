//! `--backend noop`: wgpu's backend that runs no kernels. `flint bench` on it measures what the
//! host spends per token (recording and submitting the real GPU code path), with no GPU at all;
//! every command that would print model output refuses it.

use std::process::Command;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `flint args`: exit code, stdout, stderr.
fn flint(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(args)
        .env_remove("FLINT_BACKEND")
        .env("XDG_RUNTIME_DIR", "/tmp")
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
fn bench_on_noop_reports_the_host_cost_per_token() {
    if !have_model() {
        return;
    }
    for layout in ["gpu", "cpu"] {
        let (code, out, err) = flint(&[
            "bench",
            "-m",
            MODEL,
            "--backend",
            "noop",
            "--kernels",
            layout,
            "-p",
            "8",
            "-n",
            "8",
            "-r",
            "1",
            "--no-warmup",
            "--json",
            "--quiet",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("measure the HOST's cost only"), "{err}");
        let r: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(r["backend"], "Noop", "{out}");
        assert_eq!(r["kernel_layout"], layout, "{out}");
        // SmolLM2-135M: 30 layers
        assert_eq!(r["architecture"], "llama");
        let tests = r["tests"].as_array().unwrap();
        let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
        assert_eq!(names, ["pp8", "tg8"]);
        let f = |t: &serde_json::Value, k: &str| {
            let v = t[k].as_f64().unwrap_or_else(|| panic!("no {k} in {t}"));
            assert!(v >= 0.0 && v.is_finite(), "{k} = {v} in {t}");
            v
        };
        for t in tests {
            for k in [
                "host_us_per_token",
                "submit_us_per_token",
                "dispatches_per_token",
            ] {
                assert!(f(t, k) > 0.0, "{k} in {t}");
            }
        }
        // no warm-up: the prefill is the first forward pass, which makes its bind groups (decode
        // steps may make none: their parameters do not change with the position)
        assert!(f(&tests[0], "bind_groups_per_token") > 0.0, "{}", tests[0]);
        f(&tests[1], "bind_groups_per_token");
        assert!(tests
            .iter()
            .all(|t| f(t, "submit_us_per_token") <= f(t, "host_us_per_token")));
        // a decode step runs at least one dispatch per layer, and more in all
        let tg = tests[1]["dispatches_per_token"].as_f64().unwrap();
        assert!(tg > 30.0, "{layout}: {tg} dispatches per decode token");
        // a prefill of 8 tokens records one pass for all of them
        assert!(tests[0]["dispatches_per_token"].as_f64().unwrap() < tg);
    }
    // the table shows the three columns and the note
    let (code, out, err) = flint(&[
        "bench",
        "-m",
        MODEL,
        "--backend",
        "noop",
        "--kernels",
        "gpu",
        "-p",
        "0",
        "-n",
        "4",
        "-r",
        "1",
        "--no-warmup",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("measure the HOST's cost only"), "{out}");
    assert!(
        out.contains("| host us/tok | submit us/tok | dispatches/tok | bind groups/tok |"),
        "{out}"
    );
    assert!(out.contains("| tg4 |"), "{out}");
}

#[test]
fn commands_with_model_output_refuse_noop() {
    let want = "the noop backend runs no kernels: its output is not text; use it with `flint \
                bench` to measure host cost";
    let m = ["-m", MODEL, "--backend", "noop"];
    let cases: [&[&str]; 5] = [
        &["run", "-p", "hi", "-n", "1"],
        &["chat"],
        &["serve", "--port", "0"],
        &["embed", "hello"],
        &["perplexity", "-f", "Cargo.toml"],
    ];
    for args in cases {
        let all: Vec<&str> = args[..1]
            .iter()
            .chain(&m)
            .chain(&args[1..])
            .copied()
            .collect();
        let (code, out, err) = flint(&all);
        assert_eq!(code, 1, "{all:?}: {err}");
        assert!(out.is_empty(), "{all:?}: {out}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
    // FLINT_BACKEND is the same flag
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "-m", MODEL, "-p", "hi", "-n", "1"])
        .env("FLINT_BACKEND", "noop")
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(want));
}
