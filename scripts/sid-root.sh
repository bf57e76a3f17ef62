#!/usr/bin/env bash
# Build a minimal Debian sid root in target/sid-root holding Debian's own llama.cpp packages
# (llama.cpp's packages need a newer libc than Debian 12 has, so they run in a chroot; see scripts/in-sid.sh).
# Idempotent: once complete (marker file below, listing the packages), it does nothing.
# Needs root (debootstrap, chroot, mount). About 4 minutes and 750 MB on first run.
# The Debian mirror comes from this machine's own apt configuration; override with SID_MIRROR=...
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${SID_ROOT:-target/sid-root}
MARKER="$ROOT/.flint-sid-complete"
PKGS=(llama.cpp-tools llama.cpp-tools-extra libggml0-backend-vulkan mesa-vulkan-drivers libvulkan1 ca-certificates)

die() { echo "sid-root: error: $*" >&2; exit 1; }

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "${PKGS[*]}" ]; then
  echo "sid-root: ok ($ROOT already complete)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and mount need it)"

mirror=${SID_MIRROR:-}
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set SID_MIRROR)"
# a security mirror is no use for sid
case "$mirror" in *-security*) die "first apt URI is a security mirror ($mirror); set SID_MIRROR" ;; esac

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "sid-root: installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# An earlier run may have left mounts behind: take them down before touching the tree.
scripts/in-sid.sh --umount || true

# Stage 1: base system (skipped when a previous run finished it).
if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ ! -f "$ROOT/.flint-debootstrap-done" ]; then
  echo "sid-root: debootstrap sid from $mirror into $ROOT"
  if awk -v r="$(realpath -m "$ROOT")/" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    die "something is still mounted under $ROOT; refusing to delete it (try scripts/in-sid.sh --umount)"
  fi
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  keyring_opt=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring_opt=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  if ! debootstrap --variant=minbase "${keyring_opt[@]}" sid "$ROOT" "$mirror"; then
    tail -n 30 "$ROOT/debootstrap/debootstrap.log" 2>/dev/null >&2 || true
    die "debootstrap failed (log above; a signature error means this machine's debian-archive-keyring is too old for sid)"
  fi
  touch "$ROOT/.flint-debootstrap-done"
fi

# Stage 2: packages, installed with the chroot's own apt.
echo "deb $mirror sid main" > "$ROOT/etc/apt/sources.list"
# The mirror seen here serves a frozen sid whose Release file is past its Valid-Until date; the
# signature is still checked, only the expiry is not.
echo 'Acquire::Check-Valid-Until "false";' > "$ROOT/etc/apt/apt.conf.d/99flint-no-valid-until"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
echo "sid-root: installing ${PKGS[*]}"
scripts/in-sid.sh sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' sh "${PKGS[@]}" \
  || die "apt-get install inside $ROOT failed"
scripts/in-sid.sh sh -c 'command -v llama-bench && command -v llama-perplexity && command -v llama-tokenize' >/dev/null \
  || die "llama.cpp tools missing in $ROOT after install"

echo "${PKGS[*]}" > "$MARKER"
echo "sid-root: ok ($ROOT complete: $(du -sh "$ROOT" | cut -f1))"
