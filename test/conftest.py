"""Shared test setup: quiet, deterministic, and every ROS process kept on the loopback interface."""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
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


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A small keypoint model (random weights, saved through kp_core.checkpoint)."""
    from kp_core.checkpoint import save_checkpoint
    from kp_core.models import build_model, model_config
    from kp_core.placement import serving_metadata

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
    return save_checkpoint(stem, model, {"normalization": normalization, **serving_metadata()})


@pytest.fixture(scope="session")
def mug_cloud(mug):
    """The built-in mug's solid samples in metres (its training normalization undone), about 0.1 m tall."""
    norm = mug.normalization
    pts = mug.points.numpy().astype(np.float64) * norm["mesh_units_per_grid_unit"] + np.asarray(norm["center"])
    rng = np.random.default_rng(0)
    return pts[rng.choice(len(pts), size=min(20000, len(pts)), replace=False)]


@pytest.fixture
def recipe_run(tmp_path):
    """A finished ``kp-train --recipe node`` run folder, written by hand (no training): recipe.json, each stage's
    log.csv (two epochs, 100 s of step time each) and config.json, model.json with the stages' steps and times,
    and weights files (which a published copy leaves out)."""
    import csv
    import json

    out = tmp_path / "recipe-run"
    out.mkdir()
    (out / "recipe.json").write_text(json.dumps({"recipe": "node", "given": {"seed": 3}}))
    for stage in ("stage1-shape", "stage2-operating-point"):
        (out / stage).mkdir()
        (out / stage / "config.json").write_text("{}")
        (out / stage / "best.safetensors").write_bytes(b"weights")
        with open(out / stage / "log.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", "global_step", "wall_s", "val_iou", "val_goal_whole_mean",
                                                   "val_goal_single_mean", "val_yaw_whole_p90_deg",
                                                   "val_yaw_single_p90_deg"])
            writer.writeheader()
            for epoch, step in ((1, 100), (2, 200)):  # each stage counts its own steps
                writer.writerow({"epoch": epoch, "global_step": step, "wall_s": 100.0 * epoch, "val_iou": step / 1000,
                                 "val_goal_whole_mean": step / 800, "val_goal_single_mean": step / 900,
                                 "val_yaw_whole_p90_deg": 40 - step / 20, "val_yaw_single_p90_deg": 60 - step / 20})
    from kp_core.checkpoint import FORMAT_VERSION

    (out / "model.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "architecture": {}, "recipe": {
        "name": "node", "stages": [
        {"stage": "shape", "epochs": 2, "global_step": 200, "train_seconds": 200.0},
        {"stage": "operating-point", "epochs": 2, "global_step": 200, "train_seconds": 200.0}]}}))
    (out / "model.safetensors").write_bytes(b"weights")
    return out
