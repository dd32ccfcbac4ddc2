"""Shared test setup: quiet, deterministic, and every ROS process kept on the loopback interface."""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def mug():
    from kp_training.shapes import load_shape

    return load_shape("mug")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
