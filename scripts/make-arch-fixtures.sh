#!/usr/bin/env bash
# Regenerate tests/fixtures/arch/ (tiny models of every architecture, HF folder + GGUF F32/Q8_0, and
# transformers' reference logits). Run by hand (as root: the Debian sid chroot), never in CI:
#   scripts/make-arch-fixtures.sh [arch ...]     (default: all; see scripts/make-arch-fixtures.py)
#   scripts/make-arch-fixtures.sh --q4km [arch ...]   (only the Q4_K_M proxies, via llama-quantize)
# Needs: target/fixtures-venv (torch, transformers, tokenizers, safetensors, numpy), the sid chroot
# with llama.cpp-tools (scripts/sid-root.sh; gives convert_hf_to_gguf.py + conversion/), and
# Debian's python3-gguf of the same llama.cpp release, fetched here once into target/gguf-sid/.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "make-arch-fixtures: error: $*" >&2; exit 1; }

PY=target/fixtures-venv/bin/python
[ -x "$PY" ] || die "$PY missing (torch + transformers venv)"
CONV=target/sid-root/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py
[ -f "$CONV" ] || scripts/sid-root.sh
[ -f "$CONV" ] || die "$CONV missing (llama.cpp-tools in the sid chroot)"
GGUF_PY=target/gguf-sid/root/usr/lib/python3/dist-packages/gguf
if [ ! -d "$GGUF_PY" ]; then
  mkdir -p target/gguf-sid
  scripts/in-sid.sh sh -c 'cd target/gguf-sid && apt-get download python3-gguf'
  deb=$(ls target/gguf-sid/python3-gguf_*.deb | head -1)
  dpkg-deb -x "$deb" target/gguf-sid/root
fi
[ -d "$GGUF_PY" ] || die "$GGUF_PY missing"
HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 exec "$PY" scripts/make-arch-fixtures.py "$@"
