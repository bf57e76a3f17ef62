#!/usr/bin/env bash
# Sentence-embedding throughput of llama.cpp's llama-embedding on all-MiniLM-L6-v2 (f16 GGUF), on the CPU
# and on Vulkan (lavapipe, -ngl 99), inside the Debian sid root that holds Debian's llama.cpp packages
# (scripts/sid-root.sh builds it; scripts/in-sid.sh enters it), as scripts/bench-peers.sh does for
# generation, and flint's `flint embed` on the same GGUF and adapter beside them.
#
#   scripts/bench-embed-peers.sh [-m MODEL.gguf] [-n "1 32 256"] [-r 3] [--no-cpu] [--no-vulkan] [--no-flint] [--adapter NAME]
#
# Input: the first N lines of tests/fixtures/embed/sentences-256.txt (one sentence per line, each exactly 32
# tokens with [CLS] and [SEP] under the all-MiniLM-L6-v2 tokenizer; scripts/make-embed-fixtures.sh writes it).
# Each run is one llama-embedding process: --pooling mean --embd-normalize 2, -b 2048 -ub 2048 (64
# sentences per batch), JSON output to /dev/null, default warmup (on). The time that counts is the
# embedding phase: the process's wall time minus the timestamp of its first `batch_decode` log line (so
# model load, backend init and the warmup run are left out; tokenizing, every batch, pooling, printing
# the JSON and exit are in). -r runs per (engine, N); the table shows the median, in sentences/second.
# lavapipe compiles its pipelines on first use and keeps them in Mesa's shader cache under the root's
# /root/.cache: one untimed Vulkan run per N comes first.
# ggml skips CPU-type Vulkan devices (lavapipe) unless GGML_VK_VISIBLE_DEVICES names them, so the script
# sets GGML_VK_VISIBLE_DEVICES=0 (override it to pick another device) and checks the device's name.
# CPU rows: -ngl 0 --no-op-offload (else ggml hands large products to the Vulkan device), all cores.
# Raw results: target/peers-embed/results.tsv. Needs root (chroot). SID_ROOT overrides the root's location.
set -euo pipefail
cd "$(dirname "$0")/.."

model=models/all-MiniLM-L6-v2-f16.gguf
ns="1 32 256" r=3 cpu=1 vulkan=1 flint=1 adapter=llvmpipe
sentences=tests/fixtures/embed/sentences-256.txt
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=$2; shift 2 ;;
    -n) ns=$2; shift 2 ;;
    -r) r=$2; shift 2 ;;
    --no-cpu) cpu=0; shift ;;
    --no-vulkan) vulkan=0; shift ;;
    --no-flint) flint=0; shift ;;
    --adapter) adapter=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench-embed-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "bench-embed-peers: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (scripts/in-sid.sh chroots)"
command -v python3 >/dev/null || die "python3 is needed for the table"
[ -f "$sentences" ] || die "$sentences missing (scripts/make-embed-fixtures.sh minilm writes it)"
if [ ! -f "$model" ]; then
  [ "$model" = models/all-MiniLM-L6-v2-f16.gguf ] || die "model $model not found"
  echo "bench-embed-peers: $model missing; making it (scripts/make-embed-fixtures.sh llamacpp)"
  scripts/make-embed-fixtures.sh llamacpp
fi
case "$(realpath "$model")" in "$(pwd)"/*) ;; *) die "the model must lie inside this repository (only it is visible in the root)" ;; esac
model=$(realpath --relative-to=. "$model")

export SID_ROOT=${SID_ROOT:-target/sid-root}
[ -f "$SID_ROOT/.flint-sid-complete" ] || scripts/sid-root.sh
if ! scripts/in-sid.sh sh -c 'command -v llama-embedding' >/dev/null; then
  echo "bench-embed-peers: installing llama.cpp-examples (llama-embedding) in the sid root"
  scripts/in-sid.sh sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends llama.cpp-examples >/dev/null && apt-get clean' \
    || die "could not install llama.cpp-examples in the sid root"
fi

export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
if [ "$vulkan" = 1 ]; then
  devices=$(scripts/in-sid.sh llama-embedding --list-devices 2>&1) || die "llama-embedding --list-devices failed: $devices"
  echo "$devices" | grep -i "vulkan" | grep -qi "$adapter" \
    || die "ggml's Vulkan devices do not include \`$adapter\` (GGML_VK_VISIBLE_DEVICES=$GGML_VK_VISIBLE_DEVICES):
$devices"
  echo "bench-embed-peers: ggml Vulkan device: $(echo "$devices" | grep -i vulkan | grep -i "$adapter" | head -n1 | sed 's/^ *//')"
fi

out=target/peers-embed
mkdir -p "$out"
: > "$out/results.tsv"
for n in $ns; do
  [ "$n" -le "$(wc -l < "$sentences")" ] || die "-n $n: $sentences has only $(wc -l < "$sentences") lines"
  head -n "$n" "$sentences" > "$out/in-$n.txt"
done

# run_llama ENGINE DEVICE N TIMED NGL [EXTRA...]: one llama-embedding process; appends
# "ENGINE<TAB>DEVICE<TAB>N<TAB>seconds" to results.tsv when TIMED is 1.
run_llama() {
  local engine=$1 device=$2 n=$3 timed=$4 ngl=$5
  shift 5
  local log=$out/$engine-$n.log t
  t=$(scripts/in-sid.sh sh -c 'log=$1; shift; a=$(date +%s.%N); "$@" > /dev/null 2> "$log"; rc=$?; b=$(date +%s.%N); echo "$a $b $rc"' \
        sh "$log" llama-embedding -m "$model" -f "$out/in-$n.txt" --pooling mean --embd-normalize 2 \
        --embd-output-format json -b 2048 -ub 2048 -ngl "$ngl" "$@")
  set -- $t
  [ "$3" = 0 ] || { tail -n 20 "$log" >&2; die "llama-embedding ($engine, N=$n) failed"; }
  # log timestamps are M.SS.mmm.uuu since the process started logging
  local first
  first=$(grep -m1 'batch_decode' "$log" | awk '{print $1}')
  [ -n "$first" ] || { tail -n 20 "$log" >&2; die "no batch_decode line in $log"; }
  if [ "$timed" = 1 ]; then
    awk -v a="$1" -v b="$2" -v f="$first" -v e="$engine" -v d="$device" -v n="$n" 'BEGIN {
      split(f, p, "."); t0 = p[1] * 60 + p[2] + p[3] / 1e3 + p[4] / 1e6
      printf "%s\t%s\t%d\t%.6f\n", e, d, n, (b - a) - t0 }' >> "$out/results.tsv"
  fi
}

cores=$(nproc)
for n in $ns; do
  if [ "$cpu" = 1 ]; then
    echo "bench-embed-peers: llama-embedding CPU (-ngl 0 --no-op-offload, $cores threads), N=$n, $r runs"
    for _ in $(seq "$r"); do run_llama llama.cpp "CPU ($cores threads)" "$n" 1 0 --no-op-offload; done
  fi
  if [ "$vulkan" = 1 ]; then
    echo "bench-embed-peers: llama-embedding Vulkan ($adapter, -ngl 99), N=$n, 1 untimed + $r runs"
    run_llama llama.cpp "Vulkan ($adapter)" "$n" 0 99
    for _ in $(seq "$r"); do run_llama llama.cpp "Vulkan ($adapter)" "$n" 1 99; done
  fi
done

# ==== flint ==================================================================================================
# The same GGUF on the same adapter through flint's Vulkan backend (target/release/flint, built first,
# or the binary FLINT names),
# pooling and normalization read from the GGUF (mean, L2). `flint embed --warmup` embeds one sentence
# untimed first (pipeline compilation, as llama.cpp's warmup) and reports the embedding phase alone
# ("N inputs, T tokens in S s" on stderr: tokenizing, every packed pass, pooling); r runs per N.
if [ "$flint" = 1 ]; then
  # FLINT=PATH runs that binary instead of building target/release/flint
  flint_bin=${FLINT:-target/release/flint}
  [ -n "${FLINT:-}" ] || cargo build --release --quiet
  for n in $ns; do
    echo "bench-embed-peers: flint Vulkan ($adapter), N=$n, $r runs"
    for _ in $(seq "$r"); do
      log=$out/flint-$n.log
      XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} "$flint_bin" embed -m "$model" -f "$out/in-$n.txt" \
        --warmup --backend vulkan --adapter "$adapter" > /dev/null 2> "$log" \
        || { cat "$log" >&2; die "flint embed (N=$n) failed"; }
      sec=$(sed -n 's/.* tokens in \([0-9.]*\) s .*/\1/p' "$log" | tail -n1)
      [ -n "$sec" ] || { cat "$log" >&2; die "no timing line in $log"; }
      printf 'flint\tVulkan (%s)\t%d\t%.6f\n' "$adapter" "$n" "$sec" >> "$out/results.tsv"
    done
  done
fi
# =============================================================================================================

python3 - "$out/results.tsv" "$model" "$r" <<'EOF'
import statistics, sys
from collections import defaultdict
path, model, reps = sys.argv[1], sys.argv[2], sys.argv[3]
runs = defaultdict(list)
order = []
for line in open(path):
    engine, device, n, sec = line.rstrip("\n").split("\t")
    key = (engine, device, int(n))
    if key not in runs:
        order.append(key)
    runs[key].append(float(sec))
ns = sorted({k[2] for k in order})
rows = []
for engine, device, _n in order:
    if (engine, device) not in rows:
        rows.append((engine, device))
print(f"\nmodel {model}, sentences of 32 tokens, median of {reps} runs, sentences/second (embedding phase)")
print("| engine | device | " + " | ".join(f"N={n}" for n in ns) + " | " + " | ".join(f"N={n} ms" for n in ns) + " |")
print("|" + " --- |" * (2 + 2 * len(ns)))
for engine, device in rows:
    med = {n: statistics.median(runs[(engine, device, n)]) for n in ns if (engine, device, n) in runs}
    sps = " | ".join(f"{n / med[n]:.1f}" if n in med else "-" for n in ns)
    ms = " | ".join(f"{med[n] * 1e3:.1f}" if n in med else "-" for n in ns)
    print(f"| {engine} | {device} | {sps} | {ms} |")
EOF
