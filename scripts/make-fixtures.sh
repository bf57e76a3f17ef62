#!/usr/bin/env bash
# Regenerate the reference fixtures under tests/fixtures/ (run by hand, not in CI).
#   - tests/fixtures/quant/    dequantization references from the pure-Python `gguf` package
#   - tests/fixtures/smollm2/  logits / greedy references from Hugging Face transformers (fp32, CPU)
# Needs the model (scripts/setup.sh) and PyPI. Creates a venv at target/fixtures-venv (reused if present).
# The torch wheel from PyPI pulls its CUDA runtime packages too (~5 GB); only the CPU is used.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$MODEL" ] || bash scripts/setup.sh

VENV=target/fixtures-venv
PINS=(torch==2.15.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0 numpy==2.4.6 sentencepiece protobuf)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, transformers, accelerate, gguf, numpy' 2>/dev/null; then
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PINS[@]}"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" scripts/make-quant-fixtures.py
"$VENV/bin/python" scripts/make-fixtures.py
