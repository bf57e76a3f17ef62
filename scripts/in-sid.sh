#!/usr/bin/env bash
# Run a command inside the Debian sid root made by scripts/sid-root.sh:
#   scripts/in-sid.sh CMD [ARGS...]    (no CMD: an interactive shell)
#   scripts/in-sid.sh --umount         (remove mounts left under the root by older runs/debootstrap; idempotent)
# Inside, /proc, /sys, /dev (+ /dev/pts, /dev/shm) are mounted and this repository is bind-mounted at
# /work/main; the working directory is /work/main, so repo-relative paths work the same inside and out.
# The mounts live in a private mount namespace (unshare -m): they vanish when the command exits, even if
# it is killed, never show up on the host, and parallel calls do not disturb each other.
# Environment inside is clean; GGML_*, VK_*, LLAMA_* and OMP_* variables are passed through.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${SID_ROOT:-$REPO/target/sid-root}
case "$ROOT" in /*) ;; *) ROOT="$REPO/$ROOT" ;; esac
ROOT=$(realpath -m "$ROOT")
INNER=/work/main

die() { echo "in-sid: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (chroot and mount need it)"

if [ "${1:-}" = "--umount" ]; then
  # deepest first
  awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "in-sid: warning: could not unmount $m" >&2
  done
  exit 0
fi

[ -x "$ROOT/bin/sh" ] || die "$ROOT is not a usable root: run scripts/sid-root.sh first"
command -v unshare >/dev/null || die "unshare (util-linux) not found"

[ $# -gt 0 ] || set -- /bin/bash
envv=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
      XDG_RUNTIME_DIR=/tmp TERM="${TERM:-dumb}")
while IFS='=' read -r k _; do
  case "$k" in GGML_*|VK_*|LLAMA_*|OMP_*) envv+=("$k=${!k}") ;; esac
done < <(env)

# Inside the new namespace: mount, chroot, cd, exec.
exec unshare --mount --propagation private -- /bin/bash -c '
  set -e
  R=$1 REPO=$2 INNER=$3 N=$4; shift 4
  ENVV=("${@:1:N}"); shift "$N"
  mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R$INNER"
  mount -t proc proc "$R/proc"
  mount -t sysfs sysfs "$R/sys" 2>/dev/null || mount --rbind /sys "$R/sys"
  mount --bind /dev "$R/dev"
  mkdir -p "$R/dev/pts" "$R/dev/shm"
  mount --bind /dev/pts "$R/dev/pts"
  mount --bind /dev/shm "$R/dev/shm"
  mount --bind "$REPO" "$R$INNER"
  exec chroot "$R" /usr/bin/env -i "${ENVV[@]}" /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$INNER" "$@"
' in-sid "$ROOT" "$REPO" "$INNER" "${#envv[@]}" "${envv[@]}" "$@"
