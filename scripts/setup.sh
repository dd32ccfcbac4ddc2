#!/usr/bin/env bash
# Set up everything in a project virtual environment (default .venv; override with KP_VENV):
# torch 2.13.0 (the CPU wheel on this machine), the Python dependencies, the ROS 2 Kilted wheels and our
# kp_interfaces service type (scripts/install_ros.sh), and this package in editable mode.
# Idempotent: a second run with unchanged inputs only checks a stamp and returns in about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KP_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# Everything that decides what gets installed; a change to any of them re-runs the installs.
stamp_inputs=(setup.py setup.cfg package.xml scripts/setup.sh scripts/install_ros.sh kp_interfaces)
stamp="$VENV/.kp_setup_stamp"
digest="$( (echo "$TORCH_VERSION" "$VENV"; find "${stamp_inputs[@]}" -type f -not -path '*/build/*' 2>/dev/null | sort | xargs -r cat || true) | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

# torch first, pinned, so that no later range can pull a CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

if [ -f scripts/install_ros.sh ]; then
  bash scripts/install_ros.sh "$VENV"
fi

echo "setup: installing the project (editable) with its test dependencies"
"${PIP[@]}" install -q -e ".[test]"

echo "$digest" > "$stamp"
echo "setup: done ($VENV)"
