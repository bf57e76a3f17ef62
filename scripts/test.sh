#!/usr/bin/env bash
# The test command (README, .ci/run): sets up what the tests need, then runs every test on the GPU
# wgpu finds (Mesa lavapipe on machines without one). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo fmt --check
# Build once, then run: the model tests share one loaded model per test binary.
cargo build --release --locked
cargo test --release --locked -- --test-threads 2
