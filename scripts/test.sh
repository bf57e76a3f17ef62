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
# The web package: the wasm32 build into pkg/, then the same engine checked in Node 20 (npm
# `webgpu`, Dawn on Chromium's SwiftShader), in headless Chromium (WebGPU on SwiftShader, Web Worker,
# Cache API, the demo page) and behind `flint serve`. Tools are cached under target/web-tools.
if [ -z "${FLINT_SKIP_WEB_TESTS:-}" ]; then
  scripts/build-web.sh
  VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json node tests/web/node.mjs
  node tests/web/browser.mjs
  node tests/web/serve.mjs
fi
