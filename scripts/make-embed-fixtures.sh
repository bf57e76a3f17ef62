#!/usr/bin/env bash
# Regenerate tests/fixtures/embed/ (text-embedding references: all-MiniLM-L6-v2 through
# sentence-transformers and llama.cpp, tiny random BERT and nomic-bert models as sentence-transformers
# folders + GGUF, Qwen3 as a last-token embedder) and models/all-MiniLM-L6-v2-{f32,f16}.gguf.
# Run by hand as root (the Debian sid chroot), never in CI:
#   scripts/make-embed-fixtures.sh [minilm|tiny-bert|tiny-nomic|qwen3|llamacpp|readme ...]   (default: all, in order)
# Needs: PyPI (first run: the venv), the sid chroot (scripts/sid-root.sh; llama.cpp-examples, which holds
# llama-embedding, is added to it here on first use), models/all-MiniLM-L6-v2 (scripts/setup.sh).
# The venv is target/fixtures-venv, the one scripts/make-fixtures.sh makes, plus sentence-transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "make-embed-fixtures: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (scripts/in-sid.sh chroots)"

VENV=target/fixtures-venv
PINS=(torch==2.15.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0 numpy==2.4.6 sentencepiece protobuf
      sentence-transformers==6.3.0)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, transformers, sentence_transformers, tokenizers, safetensors, numpy' 2>/dev/null; then
  echo "make-embed-fixtures: installing ${PINS[*]} into $VENV (torch pulls ~5 GB of CUDA wheels; only the CPU is used)"
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PINS[@]}" || die "pip install into $VENV failed"
fi

CONV=target/sid-root/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py
[ -f target/sid-root/.flint-sid-complete ] || scripts/sid-root.sh
[ -f "$CONV" ] || die "$CONV missing (llama.cpp-tools in the sid chroot)"
if ! scripts/in-sid.sh sh -c 'command -v llama-embedding' >/dev/null; then
  echo "make-embed-fixtures: installing llama.cpp-examples (llama-embedding) in the sid root"
  scripts/in-sid.sh sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends llama.cpp-examples >/dev/null && apt-get clean' \
    || die "could not install llama.cpp-examples in the sid root"
fi
GGUF_PY=target/gguf-sid/root/usr/lib/python3/dist-packages/gguf
if [ ! -d "$GGUF_PY" ]; then
  mkdir -p target/gguf-sid
  scripts/in-sid.sh sh -c 'cd target/gguf-sid && apt-get download python3-gguf'
  deb=$(ls target/gguf-sid/python3-gguf_*.deb | head -1)
  dpkg-deb -x "$deb" target/gguf-sid/root
fi
[ -d "$GGUF_PY" ] || die "$GGUF_PY missing"
[ -f models/all-MiniLM-L6-v2/model.safetensors ] || bash scripts/setup.sh

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
exec "$VENV/bin/python" scripts/make-embed-fixtures.py "$@"
