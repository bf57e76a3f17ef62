#!/usr/bin/env bash
# Cross-platform compile proof: type-check and lint flint for the platforms it ships on, from this
# Linux machine, with no platform SDK. std for each target is built from source (-Zbuild-std, Debian's
# rust-src for rustc 1.95.0, installed by `scripts/setup.sh rust-src`), so no rustup target is needed.
#
#   x86_64-pc-windows-msvc   library + CLI   wgpu DX12, Vulkan (and GL)
#   aarch64-apple-darwin     library + CLI   wgpu Metal
#   x86_64-apple-darwin      library + CLI   wgpu Metal
#   aarch64-linux-android    library + CLI   wgpu Vulkan (and GL)
#   wasm32-unknown-unknown   library only    WebGPU (the CLI and the server are native-only)
#
# Each target runs `cargo clippy --lib [--bins] -- -D warnings`: clippy is rustc's full check (every
# type and borrow error `cargo check` reports) plus the lints, so a separate `cargo check` would only
# repeat the same work. `--check` runs plain `cargo check` instead (no lints).
# Nothing is linked or code-generated for the targets (check, not build): no C toolchain is needed,
# and a dependency that compiles C for the target must stay gated off.
#
#   scripts/check-targets.sh [--check] [TARGET...]     (default: all targets above)
# Artifacts go to target/xcheck (CARGO_TARGET_DIR-independent; FLINT_XCHECK_DIR overrides) so that
# runs after the first only re-check what changed. Measured on a 2-core Debian 12 machine (shared,
# load 8-13): cold, std + dependencies per target, ~25 CPU-minutes for all five (101 min wall under
# that load); warm after an edit of src/, ~3 s per target; nothing changed, ~1 s per target.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=clippy
targets=()
for a in "$@"; do
  case "$a" in
    --check) mode=check ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "check-targets: unknown option $a" >&2; exit 2 ;;
    *) targets+=("$a") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-pc-windows-msvc aarch64-apple-darwin x86_64-apple-darwin
                                     aarch64-linux-android wasm32-unknown-unknown)

scripts/setup.sh rust-src >/dev/null

dir=${FLINT_XCHECK_DIR:-target/xcheck}
# -Zbuild-std needs a nightly feature gate on the pinned stable toolchain.
export RUSTC_BOOTSTRAP=1
failed=()
t_all=$(date +%s)
for t in "${targets[@]}"; do
  what=(--lib --bins)
  case "$t" in wasm32-*) what=(--lib) ;; esac
  cmd=(cargo "$mode" -Zbuild-std=std,panic_abort --target "$t" --target-dir "$dir" --locked "${what[@]}")
  [ "$mode" = clippy ] && cmd+=(-- -D warnings)
  t0=$(date +%s)
  if "${cmd[@]}"; then
    echo "check-targets: $t ok ($mode, $(( $(date +%s) - t0 )) s)"
  else
    echo "check-targets: $t FAILED ($mode): ${cmd[*]}" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "check-targets: failed: ${failed[*]}" >&2
  exit 1
fi
echo "check-targets: all ${#targets[@]} targets ok ($mode, $(( $(date +%s) - t_all )) s)"
