"""The model shipped in the package: present, small, loadable, and good at what the node answers.

The quality checks use the project's own sensor-like protocol (:func:`kp_training.goal_quality.sensor_goal_iou`):
seeded simulated depth-sensor clouds of the mug, whole and single-view, and the rotate-goal IoU at several
angles. Their thresholds sit well above what an untrained network of the same architecture scores (checked
here too), so replacing the shipped weights by untrained ones fails this test.
"""

import math

import numpy as np
import pytest
import torch

from kp_core.checkpoint import load_model
from kp_core.geometry import MetricGridMap
from kp_core.goals import rotate_about_vertical
from kp_core.models import build_model
from kp_core.pipeline import Pipeline
from kp_perception import default_model_path
from kp_training.goal_quality import sensor_goal_iou, sensor_sampler
from kp_training.metrics import metric_points_iou

PSI = torch.tensor([0.0, 90.0, 180.0, 270.0]) * (math.pi / 180)
POSES = 4
# (kind, share of fused clouds, mean goal IoU the shipped model must reach on these clouds: the whole-cloud bar
# is the rotate-goal issue's target; the model before the operating-point fine-tune fails both bars).
QUALITY = (("whole", 1.0, 0.85), ("single", 0.0, 0.77))


@pytest.fixture(scope="module")
def shipped():
    path = default_model_path()
    assert path.is_file(), f"{path} is missing: ship one with scripts/ship_model.py"
    return load_model(path)


def test_shipped_model_loads_with_its_provenance(shipped):
    model, meta = shipped
    assert default_model_path().stat().st_size < 25 * 2**20
    assert model.kind == "keypoint" and meta["num_keypoints"] == model.num_keypoints
    assert meta["normalization"]["source"] == "procedural:mug" and meta["normalization"]["units"] == "m"
    assert meta["train_config"]["inputs"] == "sensor" and meta["placement"]["zoom"] >= 1.0
    assert "shipped" in meta and "val" in meta["metrics"]


def goal_iou(model, meta, mug, whole_fraction: float) -> float:
    sampler = sensor_sampler(model, meta, mug.points, meta["normalization"]["mesh_units_per_grid_unit"], whole_fraction)
    generator = torch.Generator().manual_seed(2024)
    angle = torch.rand(POSES, generator=generator) * (2 * math.pi)
    return float(sensor_goal_iou(model, sampler, angle, torch.ones(POSES, 3), PSI, generator)["iou"].mean())


@pytest.mark.parametrize("kind,whole_fraction,threshold", QUALITY)
def test_shipped_model_turns_sensor_clouds_into_good_goals(shipped, mug, kind, whole_fraction, threshold):
    model, meta = shipped
    assert goal_iou(model, meta, mug, whole_fraction) >= threshold


def test_an_untrained_model_of_the_same_architecture_fails_the_quality_bar(shipped, mug):
    _, meta = shipped
    torch.manual_seed(0)
    untrained = build_model(meta["architecture"]).eval()
    for _, whole_fraction, threshold in QUALITY:
        assert goal_iou(untrained, meta, mug, whole_fraction) < threshold


def metric_goal_iou(goal, encoding, solid: np.ndarray, psi: float) -> float:
    """A pipeline goal scored as the eval protocol scores it: the solid turned by ``psi`` about the axis the
    service returns, in the goal's grid."""
    truth = rotate_about_vertical(solid, psi, goal.axis_point)
    goal_grid = MetricGridMap(center=goal.grid_origin, half_extent=encoding.grid_map.half_extent)
    return metric_points_iou(goal.points, truth, goal_grid)


def test_the_node_pipeline_turns_a_metric_cloud_about_the_mugs_own_axis(mug):
    """End to end through the node's ROS-free pipeline: a fused sensor cloud in metres, far from the origin."""
    from kp_training.scenes import make_scene

    scene = make_scene(seed=5, max_points=60000)
    pipe = Pipeline(default_model_path())
    encoding = pipe.encode(scene.clouds["whole"])
    goal = pipe.goal(encoding, math.pi / 2)
    assert np.hypot(*(goal.axis_point[:2] - scene.axis[:2])) < 0.005  # within 5 mm of the mug's own axis
    assert metric_goal_iou(goal, encoding, scene.solid, math.pi / 2) >= 0.45  # an untrained model scores about 0


@pytest.mark.parametrize("kind", ["whole", "partial"])
def test_kp_demos_clouds_get_goals_over_the_bar_without_ros(kind):
    """kp-demo's own scene (its default seed and size) through the node's ROS-free pipeline, scored as kp-demo
    scores it: the README's main job, held to the rotate-goal bar at four angles."""
    from kp_training.scenes import make_scene

    scene = make_scene(0, 120000)
    pipe = Pipeline(default_model_path())
    encoding = pipe.encode(scene.clouds[kind])
    for psi in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2):
        assert metric_goal_iou(pipe.goal(encoding, psi), encoding, scene.solid, psi) >= 0.85, (kind, psi)
