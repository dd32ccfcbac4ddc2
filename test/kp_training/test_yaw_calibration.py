"""The yaw spread's calibration: bins of equal count by misalignment, each the 90th percentile of its yaw errors."""

import math
import shutil

import numpy as np
import pytest

from kp_training.yaw_calibration import calibrate, fit, roc_auc, write


def test_roc_auc_counts_pairs_and_ties():
    assert roc_auc([3, 4], [1, 2]) == 1.0 and roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 3], [2, 2]) == 0.5 and roc_auc([2], [2]) == 0.5
    assert math.isnan(roc_auc([], [1]))


def test_fit_bins_by_misalignment_and_never_lets_the_spread_fall():
    # Misalignment 0..9; yaw errors 10 deg for the first five views, 2 deg for the next four, 90 deg for the last.
    rows = [{"misalignment": m, "yaw_error_deg": e} for m, e in zip(range(10), [10] * 5 + [2] * 4 + [90])]
    calibration = fit(rows, bins=2)
    assert calibration["misalignment_edges"] == [4.0]
    low, high = calibration["spread_rad"]
    assert low == pytest.approx(math.radians(10))
    assert high == pytest.approx(math.radians(np.percentile([2, 2, 2, 2, 90], 90)))
    falling = fit([{"misalignment": m, "yaw_error_deg": e} for m, e in zip(range(4), [30, 30, 1, 1])], bins=2)
    assert falling["spread_rad"][1] == falling["spread_rad"][0]  # made non-decreasing


def test_the_shipped_models_calibration_is_read_back_by_the_pipeline(tmp_path, mug_cloud):
    from kp_core.pipeline import Pipeline
    from kp_perception import default_model_path

    shipped = default_model_path()
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(shipped.with_suffix(suffix), tmp_path / f"mug{suffix}")
    calibration = calibrate(tmp_path / "mug.safetensors", views=1, bins=2)
    assert calibration["views"] == 5 and 0 <= calibration["asymmetric_seen"] <= 5
    assert len(calibration["misalignment_edges"]) == 1 and len(calibration["spread_rad"]) == 2
    write(tmp_path / "mug.safetensors", calibration)
    pipeline = Pipeline(tmp_path / "mug.safetensors")
    assert pipeline.metadata["yaw_calibration"] == calibration
    assert pipeline.pose(pipeline.encode(mug_cloud)).yaw_spread in calibration["spread_rad"]


def test_a_model_without_a_canonical_yaw_cannot_be_calibrated(tiny_model_path):
    with pytest.raises(ValueError, match="no canonical yaw"):
        calibrate(tiny_model_path, views=1, bins=1)
