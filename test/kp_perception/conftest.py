"""The kp_perception tests import their helpers (launch_fakes.py, ros_probe.py) by name."""

import sys
from pathlib import Path

# Test helpers beside the tests (launch_fakes.py) import by name; --import-mode=importlib leaves this folder
# off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
