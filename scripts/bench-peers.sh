#!/usr/bin/env bash
# flint next to llama.cpp: `flint bench` and llama.cpp's `llama-bench` on the same GGUF, with the same
# prompt/decode lengths and repetitions, on the same adapter, inside the Debian sid root that holds
# Debian's llama.cpp packages (scripts/sid-root.sh builds it; scripts/in-sid.sh enters it). flint's
# release binary runs there unchanged, so both use the root's Mesa (lavapipe) and Vulkan loader.
#
#   scripts/bench-peers.sh [-m MODEL.gguf] [-p 512] [-n 128] [-r 5] [-d 0] [--kv-cache f32[,q16,f16]]
#                          [--no-cpu] [--web] [--adapter NAME]
#
# --kv-cache: one flint row per KV cache type (flint's --kv-cache), the first one being the row the
# ratios are taken from (default f32, flint's exact default). llama-bench keeps its default f16 cache
# (-ctk f16 -ctv f16), so `--kv-cache f32,q16` also shows flint with a cache of the same size.
# --web: also flint's web build (pkg/, scripts/build-web.sh) in Node through Dawn (npm `webgpu`) on the
# same lavapipe (scripts/bench-web.mjs; Node comes from the root's apt, installed on first use).
# -d: tokens already in the KV cache when each test starts (both tools' -d / --n-depth).
# Rows: flint (Vulkan), llama.cpp Vulkan (-ngl 99) and llama.cpp CPU (-ngl 0 -nopo 1, skipped by --no-cpu),
# each with the median tokens/s of the pp and tg tests, and the ratio flint / llama.cpp.
# ggml skips CPU-type Vulkan devices (lavapipe) unless GGML_VK_VISIBLE_DEVICES names them, so the
# script sets GGML_VK_VISIBLE_DEVICES=0 (override it to pick another device) and checks that ggml and
# flint report the same device name. Prefill batch: one ubatch of up to 512 tokens for both
# (llama-bench's default -ub 512; flint --batch 512). Raw outputs go to target/peers/.
# Needs root (chroot). SID_ROOT overrides the root's location (default target/sid-root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

model=models/SmolLM2-135M-Instruct.Q4_1.gguf
p=512 n=128 r=5 d=0 cpu=1 web=0 adapter=llvmpipe kv=f32
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=$2; shift 2 ;;
    -p) p=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -r) r=$2; shift 2 ;;
    -d) d=$2; shift 2 ;;
    --kv-cache) kv=$2; shift 2 ;;
    --no-cpu) cpu=0; shift ;;
    --web) web=1; shift ;;
    --adapter) adapter=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "bench-peers: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (scripts/in-sid.sh chroots)"
[ -f "$model" ] || die "model $model not found (scripts/setup.sh fetches the default one)"
command -v python3 >/dev/null || die "python3 is needed to read the JSON results"

export SID_ROOT=${SID_ROOT:-target/sid-root}
[ -f "$SID_ROOT/.flint-sid-complete" ] || scripts/sid-root.sh

if [ ! -x target/release/flint ] || [ -n "$(find src shaders Cargo.toml Cargo.lock -newer target/release/flint -print -quit)" ]; then
  cargo build --release --locked
fi

# Only this repository is visible inside the root (at /work/main): a model outside it (or reached
# through a symlink that leaves it) is hard-linked, or copied, under target/peers/.
out=target/peers
mkdir -p "$out"
real=$(realpath "$model")
case "$real" in
  "$REPO"/*) inner_model=${real#"$REPO"/} ;;
  *)
    inner_model=$out/$(basename "$model")
    if [ ! "$inner_model" -ef "$real" ]; then
      rm -f "$inner_model"
      ln "$real" "$inner_model" 2>/dev/null || cp "$real" "$inner_model"
    fi
    ;;
esac

export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
devices=$(scripts/in-sid.sh llama-bench --list-devices 2>&1) || die "llama-bench --list-devices failed: $devices"
echo "$devices" | grep -i "vulkan" | grep -qi "$adapter" \
  || die "ggml's Vulkan devices do not include \`$adapter\` (GGML_VK_VISIBLE_DEVICES=$GGML_VK_VISIBLE_DEVICES):
$devices"
echo "bench-peers: ggml Vulkan device: $(echo "$devices" | grep -i vulkan | grep -i "$adapter" | head -n1 | sed 's/^ *//')"

run_llama() { # NAME NGL [EXTRA...]
  local name=$1 ngl=$2
  shift 2
  echo "bench-peers: llama-bench -ngl $ngl $* -p $p -n $n -d $d -r $r"
  scripts/in-sid.sh llama-bench -m "$inner_model" -p "$p" -n "$n" -d "$d" -r "$r" -ngl "$ngl" "$@" -b 2048 -ub 512 -o json \
    > "$out/$name.json" 2> "$out/$name.log" || { tail -n 20 "$out/$name.log" >&2; die "llama-bench -ngl $ngl failed"; }
}

for t in ${kv//,/ }; do
  echo "bench-peers: flint bench -p $p -n $n -d $d -r $r --kv-cache $t --backend vulkan --adapter $adapter"
  scripts/in-sid.sh target/release/flint bench -m "$inner_model" -p "$p" -n "$n" -d "$d" -r "$r" --batch 512 \
    --kv-cache "$t" --backend vulkan --adapter "$adapter" --quiet --json > "$out/flint-$t.json" 2> "$out/flint-$t.log" \
    || { tail -n 20 "$out/flint-$t.log" >&2; die "flint bench --kv-cache $t failed"; }
done
if [ "$web" = 1 ]; then
  [ -f pkg/flint_wasm_bg.wasm ] || scripts/build-web.sh
  [ -d target/web-tools/node/node_modules/webgpu ] || scripts/setup-web.sh
  scripts/in-sid.sh sh -c 'command -v node >/dev/null || apt-get install -y --no-install-recommends nodejs >/dev/null' \
    || die "could not install nodejs in the sid root"
  echo "bench-peers: node scripts/bench-web.mjs -p $p -n $n -d $d -r $r (wasm, Dawn)"
  VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json scripts/in-sid.sh node scripts/bench-web.mjs -m "$inner_model" \
    -p "$p" -n "$n" -d "$d" -r "$r" --batch 512 --json > "$out/flint-web.json" 2> "$out/flint-web.log" \
    || { tail -n 20 "$out/flint-web.log" >&2; die "bench-web.mjs failed"; }
  grep -qi "\"adapter\": \".*$adapter" "$out/flint-web.json" || die "the web build did not run on \`$adapter\` (see $out/flint-web.json)"
fi
run_llama llama-vulkan 99
# -nopo 1: with -ngl 0 ggml still offloads large-batch products to the Vulkan device unless told
# not to (measured: pp512 11.4 t/s "on CPU" without it, the Vulkan device doing the work)
[ "$cpu" = 1 ] && run_llama llama-cpu 0 -nopo 1

python3 - "$out" "$p" "$n" "$cpu" "$d" "$web" "$kv" <<'EOF'
import json, statistics, sys
out, p, n, cpu, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
web = sys.argv[6] == "1"
kvs = sys.argv[7].split(",")
at = lambda test: f"{test} @ d{d}" if d else test
rows = []
for kv in kvs:
    fk = json.load(open(f"{out}/flint-{kv}.json"))
    label = "flint" if kvs == ["f32"] else f"flint ({fk['kv_cache']} KV)"
    rows.append((label, f"{fk['backend']} ({fk['adapter']})",
                 {t["test"]: t["median_tps"] for t in fk["tests"]}))
f = json.load(open(f"{out}/flint-{kvs[0]}.json"))
def llama(name, label):
    res = {}
    dev = ""
    kv = "?"
    for t in json.load(open(f"{out}/{name}.json")):
        test = at(f"pp{t['n_prompt']}" if t["n_gen"] == 0 else f"tg{t['n_gen']}")
        res[test] = statistics.median(t["samples_ts"])
        dev = t.get("gpu_info", "") if "ngl99" in label else t.get("cpu_info", "")
        kv = t.get("type_k", kv)
    return (f"{label} ({kv} KV)", dev, res)
if web:
    w = json.load(open(f"{out}/flint-web.json"))
    rows.append(("flint web (wasm, Dawn)", f"{w['backend']} ({w['adapter']})",
                 {t["test"]: t["median_tps"] for t in w["tests"]}))
rows.append(llama("llama-vulkan", "llama.cpp ngl99"))
if cpu:
    rows.append(llama("llama-cpu", "llama.cpp ngl0"))
tests = [t for t in (at(f"pp{p}"), at(f"tg{n}")) if any(t in r[2] for r in rows)]
print(f"\nmodel {f['model']} ({f['architecture']} {f['quant']}, {f['model_bytes']/2**20:.1f} MiB), "
      f"{f['repetitions']} repetitions, median t/s")
head = "| engine | device | " + " | ".join(f"{t} t/s" for t in tests) + " | " + \
       " | ".join(f"{t} flint/this" for t in tests) + " |"
print(head)
print("|" + " --- |" * (2 + 2 * len(tests)))
for label, dev, res in rows:
    vals = " | ".join(f"{res[t]:.2f}" if t in res else "-" for t in tests)
    ratios = " | ".join(f"{rows[0][2][t] / res[t]:.2f}" if t in res and t in rows[0][2] else "-" for t in tests)
    print(f"| {label} | {dev} | {vals} | {ratios} |")
if f.get("roofline_ratio") is not None:
    print(f"\nflint ({f['kv_cache']} KV) decode weight streaming {f['decode_weight_gbps']:.2f} GB/s, copy bandwidth "
          f"{f['copy_gbps']:.2f} GB/s: roofline ratio {f['roofline_ratio']:.3f}")
EOF
