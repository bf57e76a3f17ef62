#!/usr/bin/env bash
# Fuzzes flint's GGUF reader with cargo-fuzz (libFuzzer + AddressSanitizer). Not part of CI.
#
# Usage: scripts/fuzz.sh [SECONDS=60] [TARGET=gguf] [-- extra libFuzzer flags]
# Crashes land in fuzz/artifacts/TARGET/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# The toolchain is the pinned stable one; RUSTC_BOOTSTRAP=1 unlocks the nightly flags
# (-Zsanitizer, sancov) that cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
target="${2:-gguf}"
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
mkdir -p "fuzz/corpus/$target"
cargo fuzz build "$target"
# New inputs go to fuzz/corpus (ignored by git); the committed seeds are read as a second corpus.
cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$@"
