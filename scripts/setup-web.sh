#!/usr/bin/env bash
# Set-up for the web build and its tests (scripts/build-web.sh, tests/web/). Idempotent: each step
# skips what is done; downloads are cached under target/web-tools/ so re-runs cost nothing.
#   - Debian chromium (headless WebGPU on SwiftShader; its Vulkan ICD also serves Node's Dawn)
#   - rust-src for exactly the pinned rustc (wasm32 std is built from source with -Zbuild-std)
#   - wasm-bindgen CLI at the version of the wasm-bindgen crate in Cargo.lock
#   - npm: binaryen (wasm-opt), playwright-core (drives chromium), webgpu (Dawn for Node)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/target/web-tools"
mkdir -p "$TOOLS"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
dpkg -s chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
# Node 20+ with npm (a NodeSource or Debian install both do; Debian's npm only if none is there).
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup-web: installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# rust-src for the pinned toolchain (rustup cannot add the wasm32 target here; see TOOLCHAIN.md).
RUST_VER=$(rustc --version | awk '{print $2}')
SYSROOT=$(rustc --print sysroot)
RUST_SRC_LINK="$SYSROOT/lib/rustlib/src/rust"
if [ ! -f "$RUST_SRC_LINK/library/std/Cargo.toml" ]; then
  if [ "$RUST_VER" != "1.95.0" ]; then
    echo "setup-web: rustc $RUST_VER, but the rust-src package pinned here is for 1.95.0" >&2
    exit 1
  fi
  DEB_NAME="rust-src_1.95.0+dfsg1-2~bpo13+1_all.deb"
  DEB_SHA=7b76db5b880a77f9e52975d2baa6209d2f76d2c9c2789515c3088cb960e2c83b
  DEB="$TOOLS/$DEB_NAME"
  if ! echo "$DEB_SHA  $DEB" | sha256sum -c --status 2>/dev/null; then
    echo "setup-web: fetching $DEB_NAME"
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$MIRROR" ]; then MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list); fi
    APT="$TOOLS/apt"
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
    echo "deb [trusted=yes] $MIRROR trixie-backports main" > "$APT/sources.list"
    opts=(-o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=/dev/null
          -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Get::List-Cleanup=0)
    apt-get "${opts[@]}" update -qq
    (cd "$TOOLS" && apt-get "${opts[@]}" download "rust-src=1.95.0+dfsg1-2~bpo13+1")
    echo "$DEB_SHA  $DEB" | sha256sum -c --status || { echo "setup-web: sha256 mismatch for $DEB" >&2; exit 1; }
  fi
  rm -rf "$TOOLS/rust-src" && dpkg -x "$DEB" "$TOOLS/rust-src"
  mkdir -p "$SYSROOT/lib/rustlib/src"
  ln -sfn "$TOOLS/rust-src/usr/src/rustc-1.95.0" "$RUST_SRC_LINK"
fi

# wasm-bindgen CLI: must be the exact version of the crate (no --locked: see TOOLCHAIN.md).
WB_VER=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)
if [ "$("$TOOLS/cargo/bin/wasm-bindgen" --version 2>/dev/null | awk '{print $2}')" != "$WB_VER" ]; then
  echo "setup-web: building wasm-bindgen-cli $WB_VER (several minutes, once)"
  cargo install -q --root "$TOOLS/cargo" wasm-bindgen-cli --version "$WB_VER" --force
fi

# npm tools, pinned.
NPM_PKGS=(binaryen@132.0.0 playwright-core@1.65.1 webgpu@0.6.2)
NPM_STAMP="$TOOLS/node/.installed"
if [ "$(cat "$NPM_STAMP" 2>/dev/null)" != "${NPM_PKGS[*]}" ]; then
  echo "setup-web: npm install ${NPM_PKGS[*]}"
  mkdir -p "$TOOLS/node"
  [ -f "$TOOLS/node/package.json" ] || echo '{"name":"flint-web-tools","private":true}' > "$TOOLS/node/package.json"
  (cd "$TOOLS/node" && npm install --no-audit --no-fund --silent "${NPM_PKGS[@]}")
  echo "${NPM_PKGS[*]}" > "$NPM_STAMP"
fi
echo "setup-web: ok ($TOOLS)"
