"""The model shipped in the package: present, small, loadable, a KP-Net with its provenance."""

import torch

from kp_perception.pipeline import default_model_path
from kp_training.checkpoint import load_model


def test_shipped_model_loads_and_encodes():
    path = default_model_path()
    assert path.is_file(), f"{path} is missing: ship one with scripts/ship_model.py"
    assert path.stat().st_size < 25 * 2**20
    model, meta = load_model(path)
    assert model.kind == "keypoint" and meta["num_keypoints"] == model.num_keypoints
    assert meta["normalization"]["source"] == "procedural:mug" and meta["normalization"]["mesh_units_per_grid_unit"] > 0
    assert meta["train_config"]["preset"] and "val" in meta["metrics"] and "shipped" in meta
    with torch.no_grad():
        keypoints = model.encode(torch.zeros(1, 1, 64, 64, 64))
    assert keypoints.shape == (1, model.num_keypoints, 3) and torch.isfinite(keypoints).all()
