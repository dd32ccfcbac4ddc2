#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KP_VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Every ROS process the tests start stays on this machine (tests also set their own domain ids).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export MPLBACKEND=Agg
# -rs: the summary at the end names every skipped test and why.
exec "$VENV/bin/python" -m pytest -rs "$@"
