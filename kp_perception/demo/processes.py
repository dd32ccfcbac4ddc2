"""Starting and stopping ROS processes that stay on this machine (used by the demo, benchmark and tests).

Every process gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (DDS discovery on loopback only), its own
``ROS_DOMAIN_ID`` and ``ROS_HOME``/``ROS_LOG_DIR`` in a temporary folder; it runs in a new session and is
stopped with SIGINT, then SIGKILL of its process group if it does not exit in time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

LOCAL_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def pick_domain_id() -> int:
    """A ROS domain id in [1, 100] that varies between processes (concurrent test runs stay apart)."""
    return random.Random(os.getpid() ^ time.monotonic_ns()).randint(1, 100)


def ros_env(domain_id: int, ros_home: str | os.PathLike, base: dict | None = None) -> dict:
    """Environment for a ROS process kept on the loopback interface, logging under ``ros_home`` (the caller's
    folder, which the caller removes)."""
    env = dict(os.environ if base is None else base)
    home = Path(ros_home)
    env.update(LOCAL_ENV)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["ROS_HOME"] = str(home)
    env["ROS_LOG_DIR"] = str(home / "log")
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def use_local_ros(domain_id: int, ros_home: str | os.PathLike) -> None:
    """Apply :func:`ros_env` to this process (call before ``rclpy.init``)."""
    os.environ.update({k: v for k, v in ros_env(domain_id, ros_home).items() if k.startswith("ROS_")})
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


def node_command(params_file: str | None = None, params: dict | None = None, remaps: dict | None = None,
                 managed: bool = False) -> list[str]:
    """Command line running kp_perception_node (``managed``: kp_perception_managed_node, the lifecycle node)
    with this interpreter (no console script needed)."""
    module = "kp_perception.lifecycle_node" if managed else "kp_perception.node"
    cmd = [sys.executable, "-m", module, "--ros-args"]
    if params_file:
        cmd += ["--params-file", str(params_file)]
    for name, value in (params or {}).items():
        cmd += ["-p", f"{name}:={format_param(value)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def format_param(value) -> str:
    """A parameter value in the YAML form ``-p name:=value`` expects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_param(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value else "''"
    return str(value)


class RosProcess:
    """A child process in its own session, its output kept (last lines) and optionally echoed."""

    def __init__(self, cmd: list[str], env: dict, echo: bool = False, cwd: str | None = None):
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, bufsize=1,
        )
        self.lines: deque[str] = deque(maxlen=2000)
        self._echo = echo
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._echo:
                print(f"[node] {line}", end="", flush=True)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """Wait until a line containing ``text`` was printed (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return True
            if self.proc.poll() is not None:
                self._reader.join(timeout=1.0)
                return any(text in line for line in list(self.lines))
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end by itself, then stop it; returns the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return self.proc.returncode

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, wait, then SIGKILL the whole process group; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2.0)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
