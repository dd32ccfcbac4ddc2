#!/usr/bin/env bash
# Install ROS 2 Kilted (rclpy + the message packages we use, from the ros-kilted-* PyPI wheels) and the
# build tools for interface packages into a Python virtual environment, then build and install our
# kp_interfaces package (srv/RotateGoal.srv) into the venv's prefix so `import kp_interfaces.srv` works
# with no sourcing.
#
# Usage: scripts/install_ros.sh [VENV]      (default: .venv beside scripts/)
# Idempotent: the wheels are only installed when one is missing or has another version, the CMake fix
# only touches files that still need it, and the build is skipped while the generated module imports
# and kp_interfaces/ is unchanged since the last build (a stamp in the venv). A second run takes ~2 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_ros: no python at $PY (create the venv first)" >&2; exit 1; }

# Runtime (rclpy with Fast DDS and the message packages) and build-time wheels. Pin the ros-kilted-* names:
# the plain ros-* names carry Jazzy releases too.
WHEELS=(
  "ros-kilted-rclpy[fastrtps]==9.1.2"
  "ros-kilted-sensor-msgs==5.5.1"
  "ros-kilted-geometry-msgs==5.5.1"
  "ros-kilted-std-srvs==5.5.1"
  "ros-kilted-visualization-msgs==5.5.1"
  "ros-kilted-diagnostic-msgs==5.5.1"
  "ros-kilted-ament-cmake==2.7.3"
  "ros-kilted-ament-cmake-include-directories==2.7.3"
  "ros-kilted-ament-package==0.17.2"
  "ros-kilted-ament-cmake-ros-core==0.14.5"
  "ros-kilted-rosidl-default-generators==1.7.1"
  "ros-kilted-rosidl-core-generators==0.3.1"
  "catkin_pkg"
)

# 1. Wheels: ask pip only when something is missing or has another version.
if ! "$PY" - "${WHEELS[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    name = name.split("[")[0]
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have != want:
        sys.exit(1)
PYEOF
then
  echo "install_ros: installing the ROS 2 Kilted wheels into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
fi

# 2. The wheels' exported CMake files name the wheel builder's Python and numpy include directories;
#    point them at this interpreter's (idempotent: only files that still name /opt/python are rewritten).
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t stale < <(grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  echo "install_ros: fixing include paths in ${#stale[@]} CMake files"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${NP_INCLUDE}#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#${PY_INCLUDE}#g" \
    "${stale[@]}"
fi

# 3. Build and install kp_interfaces into the venv prefix, unless the installed one is current.
SRC="$ROOT/kp_interfaces"
STAMP="$VENV/.kp_interfaces_stamp"
digest="$( (echo "$VENV"; cd "$SRC" && cat CMakeLists.txt package.xml srv/*.srv) | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] \
   && "$PY" -c 'from kp_interfaces.srv import RotateGoal' 2>/dev/null; then
  echo "install_ros: kp_interfaces is up to date"
  exit 0
fi
BUILD="$VENV/.build/kp_interfaces"
rm -rf "$BUILD"
mkdir -p "$BUILD"
echo "install_ros: building kp_interfaces (about 10 s)"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
log="$BUILD/build.log"
if ! { cmake -S "$SRC" -B "$BUILD" "${generator[@]}" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
         -DPython3_EXECUTABLE="$PY" -DCMAKE_INSTALL_PREFIX="$VENV" \
       && cmake --build "$BUILD" --parallel "$(nproc)" \
       && cmake --install "$BUILD"; } >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "install_ros: building kp_interfaces failed; full log: $log" >&2
  exit 1
fi
if ! "$PY" -c 'from kp_interfaces.srv import RotateGoal' ; then
  echo "install_ros: kp_interfaces was installed but does not import (log: $log)" >&2
  exit 1
fi
echo "$digest" > "$STAMP"
echo "install_ros: kp_interfaces installed into $VENV"
