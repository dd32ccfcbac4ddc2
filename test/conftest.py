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


def _restoring_environ():
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


# Tests and fixtures that join a node's ROS domain set ROS_* variables; nothing leaks past its test or module.
environ_per_test = pytest.fixture(autouse=True, name="environ_per_test")(_restoring_environ)
environ_per_module = pytest.fixture(autouse=True, scope="module", name="environ_per_module")(_restoring_environ)
