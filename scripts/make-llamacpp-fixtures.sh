#!/usr/bin/env bash
# Regenerate tests/fixtures/smollm2/{apache-2.0.txt,llamacpp.json}: reference outputs of Debian's own
# llama.cpp packages (tokenizer ids, perplexity, greedy completion, llama-bench) for
# models/SmolLM2-135M-Instruct.Q4_1.gguf. Run by hand (as root), never in CI:
#   scripts/make-llamacpp-fixtures.sh            # everything (bench takes a few minutes on lavapipe)
#   scripts/make-llamacpp-fixtures.sh --no-bench # keep the "bench" field of the existing llamacpp.json
# Needs: scripts/setup.sh (model) and scripts/sid-root.sh (llama.cpp in a Debian sid chroot; run here if
# missing). Raw tool outputs are kept in target/llamacpp-fixtures/ for inspection.
# Idempotent: every run recomputes from scratch and rewrites the same files.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "make-llamacpp-fixtures: error: $*" >&2; exit 1; }

BENCH=1
for a in "$@"; do
  case "$a" in
    --no-bench) BENCH=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument $a" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "must run as root (the llama.cpp tools run in a chroot)"
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
[ -f "$MODEL" ] || die "$MODEL missing: run scripts/setup.sh"
echo "$SHA  $MODEL" | sha256sum -c --status || die "$MODEL has the wrong sha256 (expected $SHA): rerun scripts/setup.sh"
LICENSE=/usr/share/common-licenses/Apache-2.0
[ -f "$LICENSE" ] || die "$LICENSE missing (package base-files)"
command -v python3 >/dev/null || die "python3 needed on the host"

scripts/sid-root.sh

OUTDIR=tests/fixtures/smollm2
WORK=target/llamacpp-fixtures
mkdir -p "$OUTDIR" "$WORK"
cp "$LICENSE" "$OUTDIR/apache-2.0.txt"

exec python3 - "$MODEL" "$OUTDIR" "$WORK" "$BENCH" <<'PY'
import json, os, re, struct, subprocess, sys, time

MODEL, OUTDIR, WORK, BENCH = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
TEXT = f"{OUTDIR}/apache-2.0.txt"
THREADS = "2"
OUT_JSON = f"{OUTDIR}/llamacpp.json"

def die(msg):
    print(f"make-llamacpp-fixtures: error: {msg}", file=sys.stderr)
    sys.exit(1)

def sid(args, env=None, timeout=1800, log=None):
    """Run args inside the sid chroot (cwd = repo); return (rc, stdout, stderr, seconds)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GGML_", "VK_", "LLAMA_", "OMP_"))}
    e.update(env or {})
    t0 = time.time()
    try:
        p = subprocess.run(["scripts/in-sid.sh", *args], env=e, capture_output=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as x:
        rc, out, err = 124, (x.stdout or b"").decode("utf-8", "replace"), (x.stderr or b"").decode("utf-8", "replace")
    dt = time.time() - t0
    if log:
        with open(f"{WORK}/{log}.out", "w") as f: f.write(out)
        with open(f"{WORK}/{log}.err", "w") as f: f.write(err)
    return rc, out, err, dt

def check(rc, out, err, what):
    if rc != 0:
        sys.stderr.write(err[-3000:])
        die(f"{what} failed (rc {rc}); full logs in {WORK}/")

# ---- GGUF metadata (tokenizer flags), read directly so we do not depend on log formats
def gguf_kv(path):
    kv = {}
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
        def rstr():
            return f.read(rd("Q")).decode("utf-8", "replace")
        scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
        def rval(t):
            if t in scal: return rd(scal[t])
            if t == 8: return rstr()
            if t == 9:
                at, n = rd("I"), rd("Q")
                if at in scal and n > 64:  # skip big arrays (token lists)
                    f.seek(struct.calcsize("<" + scal[at]) * n, 1); return f"<array of {n}>"
                vals = [rval(at) for _ in range(n)]
                return vals if n <= 64 else f"<array of {n}>"
            raise ValueError(f"gguf type {t}")
        if f.read(4) != b"GGUF": die(f"{path} is not GGUF")
        rd("I"); rd("Q"); nkv = rd("Q")
        for _ in range(nkv):
            k = rstr(); kv[k] = rval(rd("I"))
    return kv

meta = gguf_kv(MODEL)
tok_meta = {k: v for k, v in meta.items() if k.startswith("tokenizer.") and k != "tokenizer.chat_template"}

# ---- versions
rc, pkgver, err, _ = sid(["dpkg-query", "-W", "-f", "${Version}", "llama.cpp-tools"])
check(rc, pkgver, err, "dpkg-query llama.cpp-tools")
pkgs = {}
for p in ["llama.cpp-tools", "llama.cpp-tools-extra", "libggml0", "libggml0-backend-vulkan", "mesa-vulkan-drivers", "libvulkan1", "libc6"]:
    rc, v, _, _ = sid(["dpkg-query", "-W", "-f", "${Version}", p])
    pkgs[p] = v if rc == 0 else None
tools = {}
for t in ["llama-cli", "llama-completion", "llama-simple", "llama-tokenize", "llama-perplexity", "llama-bench"]:
    rc, v, _, _ = sid(["sh", "-c", f"command -v {t}"])
    tools[t] = v.strip() if rc == 0 else None
rc, out, err, _ = sid(["llama-cli", "--version"])
cli_version = (out + err).strip() if rc == 0 else None
print(f"llama.cpp-tools {pkgver}; llama-cli --version: {cli_version!r}")

# ---- tokenizer
def tokenize(path, log):
    cmd = ["llama-tokenize", "-m", MODEL, "-f", path, "--ids", "--no-escape", "--log-disable"]
    rc, out, err, _ = sid(cmd, log=log)
    check(rc, out, err, "llama-tokenize")
    m = re.search(r"\[[0-9, ]*\]", out)
    if not m: die(f"no id list in llama-tokenize output ({WORK}/{log}.out)")
    return json.loads(m.group(0)), cmd

text = open(TEXT, encoding="utf-8").read()
ids, tok_cmd = tokenize(TEXT, "tokenize-apache")
print(f"apache-2.0.txt: {len(text.encode())} bytes -> {len(ids)} tokens")

cases_text = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Hello",
    " Hello world",
    "a  b   c    d     e",
    "   leading and trailing spaces   ",
    "line1\nline2\n\nline3\n\n\n",
    "\n",
    " \n \n",
    "\t\ttabs\tand\t spaces \t\n",
    "Héllo wörld, naïve café, Ærøskøbing, straße",
    "日本語のテキストと中文",
    "Привет, мир!",
    "emoji 😀🚀👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "12345678",
    "3.14159 and 1,000,000 and 2024-11-25",
    "don't I'll we're they've she'd IT'S",
    "fn main() {\n    println!(\"Hello, world!\");\n    let x: Vec<u8> = vec![1, 2, 3];\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "<|im_start|>user\nHi<|im_end|>\n",
]
cases = []
for i, t in enumerate(cases_text):
    p = f"{WORK}/case-{i:02d}.txt"
    with open(p, "w", encoding="utf-8", newline="") as f: f.write(t)
    cids, _ = tokenize(p, f"tokenize-case-{i:02d}")
    cases.append({"text": t, "ids": cids})

bos_id = meta.get("tokenizer.ggml.bos_token_id")
add_bos_meta = meta.get("tokenizer.ggml.add_bos_token")
bos_added = bool(ids) and ids[0] == bos_id and not text.startswith("<|")
# ---- perplexity (CPU backend only: GGML_VK_VISIBLE_DEVICES unset, so the Vulkan backend sees no device
# besides the CPU-type llvmpipe, which it skips by default; -ngl 0 as well)
def perplexity(extra, log):
    cmd = ["llama-perplexity", "-m", MODEL, "-f", TEXT, "-ngl", "0", "-t", THREADS, "--seed", "42", *extra]
    rc, out, err, dt = sid(cmd, log=log)
    check(rc, out, err, " ".join(cmd))
    allout = out + err
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", allout)
    if not m: die(f"no final PPL in {WORK}/{log}.*")
    chunks = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+(?:e[+-]?\d+)?)", allout)]
    nch = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", allout)
    if re.search(r"ggml_vulkan: \d+ = ", allout) and "using device Vulkan" in allout:
        die(f"perplexity used a Vulkan device; expected CPU only ({WORK}/{log}.err)")
    return {
        "command": " ".join(cmd),
        "ppl": float(m.group(1)), "ppl_stderr": float(m.group(2)),
        "running_ppl_after_chunk": chunks,
        "n_chunks": int(nch.group(1)) if nch else None,
        "n_seq": int(nch.group(4)) if nch else None,
        "n_ctx": int(nch.group(2)) if nch else None,
        "batch_size": int(nch.group(3)) if nch else None,
        "seconds": round(dt, 1),
    }

ppl = {
    "c128": perplexity(["-c", "128"], "ppl-c128"),
    "c128_chunks4": perplexity(["-c", "128", "--chunks", "4"], "ppl-c128-chunks4"),
    "c512": perplexity(["-c", "512"], "ppl-c512"),
    # One sequence per batch (-b = -c): chunk by chunk, like a plain sequential evaluation. llama-perplexity's
    # default packs n_batch/n_ctx chunks into one batch, and with 16 sequences (-c 128) its results differ
    # (~1-2% PPL) from 1..8 sequences; these variants are the ones a sequential runtime can reproduce.
    "c128_nseq1": perplexity(["-c", "128", "-b", "128"], "ppl-c128-nseq1"),
    "c128_nseq1_fa_off": perplexity(["-c", "128", "-b", "128", "-fa", "off"], "ppl-c128-nseq1-fa-off"),
    "c512_nseq1": perplexity(["-c", "512", "-b", "512"], "ppl-c512-nseq1"),
}
for k, v in ppl.items():
    print(f"perplexity {k}: {v['ppl']} +/- {v['ppl_stderr']} over {v['n_chunks']} chunks")

# ---- greedy completion
prompt = "The capital of France is"
gen_tool = next((t for t in ["llama-completion", "llama-cli"] if tools.get(t)), None)
if not gen_tool: die("neither llama-completion nor llama-cli in the sid root")
gcmd = [gen_tool, "-m", MODEL, "-p", prompt, "-n", "32", "--temp", "0", "--top-k", "1", "--seed", "42",
        "--no-warmup", "-no-cnv", "-ngl", "0", "-t", THREADS, "--no-display-prompt", "--simple-io", "-c", "256"]
rc, out, err, _ = sid(gcmd, log="greedy")
if rc != 0 and "--simple-io" in err:
    gcmd.remove("--simple-io"); rc, out, err, _ = sid(gcmd, log="greedy")
check(rc, out, err, " ".join(gcmd))
# stdout = generated text, then a newline or two printed by the tool (and " [end of text]" on EOS).
# Find the exact generated text: the candidate whose re-tokenization has as many tokens as llama.cpp
# reports sampling ("samplers time = ... / N tokens", N = prompt + generated, EOS included when it stops).
eos_stop = "[end of text]" in out
raw = out.replace(" [end of text]", "").replace("[end of text]", "")
m = re.search(r"samplers time =.*?/\s*(\d+) tokens", err)
n_total = int(m.group(1)) if m else None
prompt_ids = cases[0]["ids"]
cont, full_ids, matched = raw, None, False
for k in range(0, 3):
    if k and not raw.endswith("\n" * k):
        break
    cand = raw[: len(raw) - k] if k else raw
    p = f"{WORK}/greedy-full-{k}.txt"
    with open(p, "w", encoding="utf-8", newline="") as f: f.write(prompt + cand)
    cand_ids, _ = tokenize(p, f"tokenize-greedy-{k}")
    if full_ids is None: cont, full_ids = cand, cand_ids
    if n_total is not None and len(cand_ids) in (n_total, n_total - (1 if eos_stop else 0)):
        cont, full_ids, matched = cand, cand_ids, True
        break
if not matched:
    print("warning: could not pin down the exact continuation text; keeping raw stdout", file=sys.stderr)
greedy = {
    "command": " ".join(gcmd),
    "prompt": prompt,
    "prompt_ids": prompt_ids,
    "continuation": cont,
    "stopped_at_eos": eos_stop,
    "n_tokens_sampled_total": n_total,
    "continuation_matches_token_count": matched,
    "note": "continuation = stdout of the command (prompt not displayed, '[end of text]' marker removed). "
            "ids_retokenized = llama-tokenize of prompt+continuation; llama.cpp does not print sampled ids, "
            "so these are a re-tokenization of the text, not the sampled ids (usually identical).",
    "ids_retokenized": full_ids,
    "continuation_ids_retokenized": full_ids[len(prompt_ids):] if full_ids[:len(prompt_ids)] == prompt_ids else None,
}
print(f"greedy ({gen_tool}): {prompt!r} -> {cont!r}")

# ---- llama-bench
def bench(ngl, env, log):
    cmd = ["llama-bench", "-m", MODEL, "-p", "64", "-n", "16", "-r", "1", "-ngl", ngl, "-t", THREADS, "-o", "json"]
    load = open("/proc/loadavg").read().split()[0]
    rc, out, err, dt = sid(cmd, env=env, timeout=900, log=log)
    res = {"command": " ".join(f"{k}={v}" for k, v in env.items()).strip() + (" " if env else "") + " ".join(cmd),
           "seconds": round(dt, 1), "rc": rc, "loadavg_1min_before": float(load)}
    dev = re.findall(r"ggml_vulkan: \d+ = ([^\n]+)", err)
    if dev: res["vulkan_device"] = dev[0].strip()
    cpu = re.findall(r"load_backend: loaded CPU backend from (\S+)", err)
    if cpu: res["cpu_backend"] = os.path.basename(cpu[0])
    if rc != 0:
        res["error"] = "timed out" if rc == 124 else err.strip().splitlines()[-1:] 
        print(f"warning: {res['command']} failed (rc {rc}); see {WORK}/{log}.err", file=sys.stderr)
        return res
    try:
        rows = json.loads(out[out.index("["):])
    except ValueError:
        res["error"] = "unparsable json"; return res
    res["results"] = [{k: r.get(k) for k in ["n_prompt", "n_gen", "avg_ts", "stddev_ts", "avg_ns", "backends",
                                             "gpu_info", "cpu_info", "n_threads", "n_gpu_layers", "type_k", "n_batch",
                                             "build_commit", "build_number", "model_type", "model_size"]} for r in rows]
    for r in rows:
        kind = f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}"
        res[kind + "_tok_per_s"] = round(r["avg_ts"], 2)
    return res

prev = {}
if os.path.exists(OUT_JSON):
    try: prev = json.load(open(OUT_JSON))
    except ValueError: prev = {}
if BENCH:
    b = {"cpu": bench("0", {}, "bench-cpu"),
         "vulkan_lavapipe": bench("99", {"GGML_VK_VISIBLE_DEVICES": "0"}, "bench-vulkan")}
    if "llvmpipe" not in b["vulkan_lavapipe"].get("vulkan_device", ""):
        print("warning: Vulkan bench did not report llvmpipe", file=sys.stderr)
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    b["machine"] = {"cpu": cpu[0] if cpu else None, "n_cpus": os.cpu_count(),
                    "loadavg_after": open("/proc/loadavg").read().split()[:3]}
    b["note"] = "measured once, -r 1; timings vary between machines and runs: indicative only"
    for k in ("cpu", "vulkan_lavapipe"):
        print(f"bench {k}: " + ", ".join(f"{kk}={vv}" for kk, vv in b[k].items() if kk.endswith("tok_per_s")) + f" ({b[k]['seconds']} s)")
else:
    b = prev.get("bench")

doc = {
    "generated_by": "scripts/make-llamacpp-fixtures.sh (Debian sid llama.cpp packages in a chroot: scripts/sid-root.sh)",
    "model": MODEL,
    "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "llama_cpp": {"package_version": pkgver, "llama_cli_version": cli_version, "packages": pkgs, "tools": tools},
    "tokenizer": {
        "command": " ".join(tok_cmd[:5]) + " FILE " + " ".join(tok_cmd[5:]),
        "add_bos_metadata": add_bos_meta,
        "bos_token_id": bos_id,
        "bos_added": bos_added,
        "parse_special": True,
        "note": "llama-tokenize adds BOS only if the GGUF says tokenizer.ggml.add_bos_token (no --no-bos given); "
                "special-token text is parsed (default); --no-escape: the file bytes are tokenized as they are",
        "metadata": tok_meta,
    },
    "text_file": "apache-2.0.txt",
    "text_bytes": len(text.encode()),
    "tokens": ids,
    "tokenize_cases": cases,
    "perplexity": ppl,
    "perplexity_note": "running_ppl_after_chunk[i] is the cumulative PPL estimate llama-perplexity prints after chunk i+1 "
                       "([1]x,[2]y,...); each chunk of n_ctx tokens scores only its second half (first n_ctx/2 tokens are context); "
                       "CPU backend only; flash attention 'auto' (= on for CPU) unless -fa off; F16 KV cache (default). "
                       "Default runs batch several chunks as parallel sequences (n_seq); the *_nseq1 runs use -b = -c.",
    "greedy": greedy,
    "bench": b,
}
tmp = OUT_JSON + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)
    f.write("\n")
os.replace(tmp, OUT_JSON)
print(f"wrote {OUT_JSON}")
PY
