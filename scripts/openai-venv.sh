#!/usr/bin/env bash
# Creates (once) the Python venv the OpenAI-client test uses: target/openai-venv with the official
# `openai` package, `jsonschema`, `prometheus_client` (its text-format parser checks /metrics) and
# PyYAML (tests/deploy_check.py) from PyPI. Prints the venv's python. Idempotent and cached: a
# venv whose packages import is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/openai-venv
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c "import openai, jsonschema, prometheus_client, yaml" 2>/dev/null; then
  echo "$PY"
  exit 0
fi
mkdir -p target
rm -rf "$VENV"
if ! python3 -m venv "$VENV" >&2; then
  # Debian's python3 ships venv (ensurepip) separately.
  rm -rf "$VENV"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "openai-venv: installing python3-venv" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >&2
  python3 -m venv "$VENV" >&2
fi
"$PY" -m pip install -q --disable-pip-version-check "openai>=1.40,<3" "jsonschema>=4,<5" \
  "prometheus_client>=0.17,<1" "pyyaml>=6,<7" >&2
"$PY" -c "import openai, jsonschema, prometheus_client, yaml" >&2
echo "$PY"
