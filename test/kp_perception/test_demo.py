"""kp-demo: the simulated sensor's geometry, and the whole demo end to end on a tiny model."""

import json
import math

import numpy as np
import pytest

from kp_perception.demo import make_scene, sensor_clouds, visible_points


def test_visible_points_of_a_sphere_are_the_near_side():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(40000, 3))
    sphere = d / np.linalg.norm(d, axis=1, keepdims=True) * 0.05
    viewpoint = np.array([1.0, 0.0, 0.0])
    seen = visible_points(sphere, viewpoint, pixel_rad=0.004, depth_tol=0.002)
    assert 0.1 * len(sphere) < len(seen) < 0.5 * len(sphere)
    assert np.all(seen[:, 0] > 0)  # nothing from the far side
    # The cap facing the sensor is seen almost entirely.
    cap = sphere[sphere[:, 0] > 0.045]
    seen_set = {tuple(p) for p in seen}
    assert np.mean([tuple(p) in seen_set for p in cap]) > 0.9


def test_scene_and_clouds(mug):
    scene = make_scene(seed=3)
    from kp_perception.pipeline import object_center

    # The node's yaw-invariant centre finds the mug's own centre, to half a millimetre.
    np.testing.assert_allclose(object_center(scene.solid), scene.center, atol=5e-4)  # < 1/4 voxel
    half = mug.normalization["mesh_units_per_grid_unit"] * (1 - mug.normalization["margin"])
    assert scene.size == pytest.approx(2 * half, rel=0.01)  # the mug's size is yaw-invariant
    clouds = sensor_clouds(scene, noise=0.001, max_points=5000, seed=0)
    assert clouds["whole"].shape == (5000, 3) and 500 < len(clouds["partial"]) <= 5000
    # The partial view lies on the sensor's side of the mug.
    towards = scene.sensor[:2] - scene.center[:2]
    side = (clouds["partial"][:, :2] - scene.center[:2]) @ towards
    assert np.mean(side > 0) > 0.6


def test_demo_end_to_end(tiny_model_path, tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("kp_interfaces.srv")
    from kp_perception.demo import main

    out = tmp_path / "demo"
    code = main(["--model", str(tiny_model_path), "--out", str(out), "--angles", "0", "90", "--points", "100000"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("whole", "partial"):
        res = results["scenarios"][name]
        assert [g["angle_deg"] for g in res["goals"]] == [0, 90]
        assert all(0.0 <= g["iou"] <= 1.0 and g["voxels"] > 0 for g in res["goals"])
        assert (out / f"{name}.png").stat().st_size > 10000
    assert (out / "iou.png").is_file()
    # Frames agree: the whole input cloud fills the ground truth's voxels in the node's grid.
    assert results["scenarios"]["whole"]["input_vs_truth_iou"] > 0.6
    assert results["scenarios"]["partial"]["input_vs_truth_iou"] < results["scenarios"]["whole"]["input_vs_truth_iou"]
    assert results["object_size_param"] == pytest.approx(results["object_size_m"], abs=1e-5)
    assert not math.isnan(results["scenarios"]["whole"]["mean_iou"])


def test_demo_without_a_model_says_so(tmp_path, capsys):
    from kp_perception.demo import main

    assert main(["--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "no model at" in capsys.readouterr().err
