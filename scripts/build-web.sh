#!/usr/bin/env bash
# Builds the web package: the flint library for wasm32 (wasm-bindgen, WebGPU) into pkg/, next to
# the hand-written JavaScript there (index.js, core.js, worker.js, index.d.ts).
#   pkg/flint_wasm.js, pkg/flint_wasm_bg.wasm   wasm-bindgen glue (--target web) and the module
# Installs what it needs first (scripts/setup-web.sh). Usage: scripts/build-web.sh [--dev]
#   --dev  skips wasm-opt (faster; larger module)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-web.sh
TOOLS="$PWD/target/web-tools"
OPT=1
[ "${1:-}" = "--dev" ] && OPT=0

# std for wasm32 is built from the rust-src that setup-web.sh installed (-Zbuild-std needs
# RUSTC_BOOTSTRAP on a stable toolchain). getrandom reads randomness through the JS API.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS='--cfg getrandom_backend="wasm_js"'
cargo rustc --lib --release --locked --target wasm32-unknown-unknown \
  -Zbuild-std=std,panic_abort --crate-type cdylib
WASM=target/wasm32-unknown-unknown/release/flint.wasm

"$TOOLS/cargo/bin/wasm-bindgen" --target web --out-dir pkg --out-name flint_wasm "$WASM"
if [ "$OPT" = 1 ]; then
  "$TOOLS/node/node_modules/.bin/wasm-opt" -O3 pkg/flint_wasm_bg.wasm -o pkg/flint_wasm_bg.wasm.opt
  mv pkg/flint_wasm_bg.wasm.opt pkg/flint_wasm_bg.wasm
fi
echo "build-web: pkg/flint_wasm_bg.wasm $(stat -c %s pkg/flint_wasm_bg.wasm) bytes"
