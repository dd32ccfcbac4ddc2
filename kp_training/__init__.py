"""KP-Net training, evaluation and figures, on top of :mod:`kp_core` (the run-time core).

Pure PyTorch/NumPy: nothing in this package imports ROS, so it runs on a bare GPU machine.
"""

from kp_core import __version__  # noqa: F401  (one version for the whole package)
