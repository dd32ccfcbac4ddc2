"""kp-demo end to end on a tiny model."""

import json
import math

import pytest


def test_demo_end_to_end(tiny_model_path, tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("kp_interfaces.srv")
    from kp_perception.demo.main import main

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
    from kp_perception.demo.main import main

    assert main(["--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "no model at" in capsys.readouterr().err
