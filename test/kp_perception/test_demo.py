"""kp-demo: the simulated sensor's geometry, and the whole demo end to end on a tiny model."""

import json
import math

import numpy as np
import pytest

from kp_perception.demo import make_scene


def test_scene_and_clouds(mug):
    scene = make_scene(seed=3, max_points=20000)
    # The mug's own vertical axis goes through the centroid of its solid, on the body side of the handle.
    np.testing.assert_allclose(scene.solid[:, :2].mean(0), scene.axis[:2], atol=1e-9)
    assert len(scene.cameras["whole"]) == 4 and len(scene.cameras["partial"]) == 1
    assert 2000 < len(scene.clouds["partial"]) < len(scene.clouds["whole"]) <= 20000
    # The single view leans to its camera's side of the mug (the far inner wall is seen over the rim); the
    # fused cloud lies all around it.
    towards = scene.cameras["partial"][0, :2] - scene.axis[:2]
    towards /= np.linalg.norm(towards)
    lean = {name: float(((cloud[:, :2] - scene.axis[:2]) @ towards).mean()) for name, cloud in scene.clouds.items()}
    assert lean["partial"] > lean["whole"] + 0.005


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
        assert (out / f"{name}.png").stat().st_size > 10000
    assert (out / "iou.png").is_file()
    # Frames agree: the sensor clouds (surfaces) overlap the ground truth's voxels in the node's grid, the
    # fused one more than one camera's view.
    whole, partial = (results["scenarios"][n]["input_vs_truth_iou"] for n in ("whole", "partial"))
    assert 0.1 < partial < whole
    assert results["object_size_param"] == 0.0
    assert math.isfinite(results["scenarios"]["whole"]["axis_error_mm"])


def test_demo_without_a_model_says_so(tmp_path, capsys):
    from kp_perception.demo import main

    assert main(["--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "no model at" in capsys.readouterr().err
