"""Fixtures for the kp_perception tests: a small untrained KP-Net checkpoint and a metric mug cloud."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# Test helpers beside the tests (launch_fakes.py) import by name; --import-mode=importlib leaves this folder
# off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A small keypoint model (random weights, saved through kp_core.checkpoint)."""
    from kp_core.checkpoint import save_checkpoint
    from kp_core.models import build_model, model_config

    from kp_training.shapes import load_shape
    from kp_core.voxelize import voxelize

    torch.manual_seed(0)
    model = build_model(model_config("fast", num_keypoints=8, decoder_channels=128, encoder_options={"width": 8}))
    # Untrained, the decoder's logits barely vary; shift its output bias so that about 3% of the voxels of
    # a mug's decoding are occupied (a goal of a few thousand voxels rather than none or all).
    with torch.no_grad():
        logits = model(voxelize(load_shape("mug").points[None]))["logits"].flatten()
        model.decoder.out.bias -= torch.quantile(logits[::5], 0.97)
    stem = tmp_path_factory.mktemp("model") / "tiny"
    normalization = {"center": [0.0, 0.0, 0.0], "mesh_units_per_grid_unit": 0.08, "units": "m"}
    return save_checkpoint(stem, model, {"normalization": normalization})


@pytest.fixture(scope="session")
def mug_cloud(mug):
    """The built-in mug's solid samples in metres (its training normalization undone), about 0.1 m tall."""
    norm = mug.normalization
    pts = mug.points.numpy().astype(np.float64) * norm["mesh_units_per_grid_unit"] + np.asarray(norm["center"])
    rng = np.random.default_rng(0)
    return pts[rng.choice(len(pts), size=min(20000, len(pts)), replace=False)]
