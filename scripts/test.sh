#!/usr/bin/env bash
# The test command (README, .ci/run): sets up what the tests need, then runs every test on the GPU
# wgpu finds (Mesa lavapipe on machines without one), the house checks (rustfmt, clippy on every
# target kind, benches included), `cargo install` of the CLI, and the cross-platform compile proof
# (scripts/check-targets.sh: Windows, macOS, Android, wasm32; run in the background from the
# start). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo fmt --check
# The cross-platform compile proof (scripts/check-targets.sh: Windows, macOS, Android, wasm32) runs
# alongside everything below: it has its own target dir (target/xcheck), and it fills the cores the
# GPU tests leave idle while they wait on the device. Its result is checked at the end.
scripts/setup.sh rust-src >/dev/null
xlog=target/check-targets.log
mkdir -p target
scripts/check-targets.sh > "$xlog" 2>&1 &
xpid=$!
trap 'kill "$xpid" 2>/dev/null || true' EXIT
cargo clippy --release --all-targets --locked -- -D warnings
# Build once, then run: the model tests share one loaded model per test binary.
cargo build --release --locked
cargo test --release --locked -- --test-threads 2
# (The benches, benches/kernels.rs, are type-checked by the clippy --all-targets above.)

# `cargo install` yields a working flint; sharing target/ reuses the release build above.
root=$(mktemp -d)
trap 'rm -rf "$root"; kill "$xpid" 2>/dev/null || true' EXIT
CARGO_TARGET_DIR="$(pwd)/target" cargo install --locked --quiet --path . --root "$root"
"$root/bin/flint" --version | grep -q "^flint $(awk -F'"' '/^version =/{print $2; exit}' Cargo.toml) (wgpu " \
  || { echo "test: the installed flint prints no proper --version" >&2; exit 1; }
"$root/bin/flint" info --adapters | grep -q "max_storage_buffer_binding_size" \
  || { echo "test: the installed flint lists no adapter" >&2; exit 1; }
echo "test: cargo install ok ($("$root/bin/flint" --version))"

if wait "$xpid"; then
  tail -n 6 "$xlog"
else
  cat "$xlog" >&2
  echo "test: the cross-platform compile proof failed (log above: $xlog)" >&2
  exit 1
fi

# The web package: the wasm32 build into pkg/, then the same engine checked in Node 20 (npm
# `webgpu`, Dawn on Chromium's SwiftShader), in headless Chromium (WebGPU on SwiftShader, Web Worker,
# Cache API, the demo page) and behind `flint serve`. Tools are cached under target/web-tools.
if [ -z "${FLINT_SKIP_WEB_TESTS:-}" ]; then
  scripts/build-web.sh
  VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json node tests/web/node.mjs
  node tests/web/browser.mjs
  node tests/web/bundle.mjs
  node tests/web/serve.mjs
fi
