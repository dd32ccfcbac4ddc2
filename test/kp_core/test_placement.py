"""Where the grid goes (kp_core.placement): the enclosing circle, the centering rules, and what a checkpoint says
about how it is served."""

import numpy as np
import pytest

from kp_core.goals import rotate_about_vertical
from kp_core.placement import (
    discard_interior, grid_zoom, min_enclosing_circle, object_center, serving_metadata, trained_inputs,
)


def test_serving_metadata_is_read_back_by_trained_inputs_and_grid_zoom():
    meta = serving_metadata("sensor", zoom=1.3, object_scale=0.875)
    assert meta["placement"]["centering"] == "circle" and trained_inputs(meta) == "sensor"
    assert grid_zoom(meta["placement"]) == pytest.approx(1.3 / 0.875)  # the real object at the range's middle
    assert serving_metadata("solid")["placement"]["centering"] == "origin"
    assert trained_inputs({"train_config": {"inputs": "solid"}}) == "solid"  # older checkpoints: their config
    assert trained_inputs({}) is None and grid_zoom(None) == 1.0


def test_object_center_stands_on_the_given_bottom_and_refuses_unknown_rules():
    pts = np.array([[0.0, 0.0, 0.02], [0.1, 0.0, 0.1], [0.05, 0.05, 0.06]])
    assert object_center(pts, "box", bottom=0.0)[2] == pytest.approx(0.05)  # from the plane, not the lowest point
    with pytest.raises(ValueError, match="centering must be one of"):
        object_center(pts, "origin")


def test_min_enclosing_circle():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3000, 2))
    c, r = min_enclosing_circle(pts)
    d = np.hypot(*(pts - c).T)
    assert d.max() <= r + 1e-9 and np.sum(d > r - 1e-9) >= 2  # encloses, and touches at least two points
    # Minimal: moving the centre in any direction makes the enclosing radius larger.
    for step in 1e-3 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0.7, 0.7]]):
        assert np.hypot(*(pts - c - step).T).max() > r
    np.testing.assert_allclose(min_enclosing_circle(np.array([[0.0, 0], [2, 0], [1, 0]]))[0], [1, 0])  # collinear
    np.testing.assert_allclose(min_enclosing_circle(np.array([[1.0, 1], [1, 1]]))[0], [1, 1])


def test_circle_centering_is_invariant_to_yaw(mug_cloud, mug):
    centre = np.asarray(mug.normalization["center"])
    for yaw in (0.3, 1.9, -2.4):
        turned = rotate_about_vertical(mug_cloud, yaw, centre)
        np.testing.assert_allclose(object_center(turned), centre, atol=3e-4)
        assert np.abs(object_center(turned, "box") - centre).max() > 1e-3  # what the box centre would do


def test_discard_interior_keeps_the_hull():
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(1)
    for pts in (rng.normal(size=(5000, 2)), rng.uniform(-1, 1, size=(5000, 2)), rng.normal(size=(5000, 2)) * [5, 0.1]):
        kept = discard_interior(pts)
        assert len(kept) < 0.5 * len(pts)
        hull = {tuple(p) for p in pts[ConvexHull(pts).vertices]}
        assert hull <= {tuple(p) for p in kept}


def test_min_enclosing_circle_of_large_clouds_is_close_and_conservative():
    pts = np.random.default_rng(2).normal(size=(30000, 2)) * [0.03, 0.05] + [1.0, -2.0]
    c, r = min_enclosing_circle(pts)  # binned
    ce, re = min_enclosing_circle(pts, exact_below=10**9)
    bin_diag = (pts.max(0) - pts.min(0)).max() / 512 * np.sqrt(2)
    assert np.hypot(*(pts - c).T).max() <= r + 1e-12  # still encloses every point
    assert re <= r <= re + bin_diag and np.hypot(*(c - ce)) <= bin_diag
