"""The code passes flake8's pyflakes checks (``[flake8]`` in setup.cfg): no unused or undefined names, no broken
imports, in the packages, scripts, benchmarks, launch files and tests alike (ament_flake8's test, without ament)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flake8():
    pytest.importorskip("flake8")
    paths = ["kp_core", "kp_training", "kp_perception", "kp_interfaces", "scripts", "bench", "launch", "test", "setup.py"]
    result = subprocess.run([sys.executable, "-m", "flake8", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"flake8 found:\n{result.stdout}{result.stderr}"
