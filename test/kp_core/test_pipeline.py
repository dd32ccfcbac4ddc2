"""The ROS-free pipeline: frames, keypoints, goal decoding and refusal of bad input."""

import math

import numpy as np
import pytest
import torch

from kp_core.geometry import GRID_SIZE, voxel_centers
from kp_core.goals import rotate_about_vertical
from kp_core.pipeline import Pipeline, PipelineConfig, PipelineError
from kp_perception import default_model_path
from kp_training.metrics import metric_points_iou


@pytest.fixture(scope="module")
def pipe(tiny_model_path):
    return Pipeline(tiny_model_path, device="cpu")


def test_default_model_path_is_inside_the_package():
    path = default_model_path()
    assert path.name == "mug.safetensors" and path.parent.name == "models"
    assert path.parent.parent.name == "kp_perception"


def test_encode_gives_metric_keypoints_in_the_input_frame(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    assert enc.keypoints_grid.shape == (8, 3)
    assert enc.num_points == len(mug_cloud)
    lo, hi = mug_cloud.min(0), mug_cloud.max(0)
    assert np.all((enc.grid_map.center >= lo) & (enc.grid_map.center <= hi))
    assert enc.grid_map.center[2] == pytest.approx((lo[2] + hi[2]) / 2)
    np.testing.assert_allclose(enc.keypoints, enc.keypoints_grid.double().numpy() * enc.grid_map.half_extent + enc.grid_map.center)
    # The grid (cube of half extent h around the centre) contains every keypoint.
    assert np.all(np.abs(enc.keypoints - enc.grid_map.center) <= enc.grid_map.half_extent)


def test_translation_moves_keypoints_along(pipe, mug_cloud):
    shift = np.array([1.5, -2.25, 0.75])
    a, b = pipe.encode(mug_cloud), pipe.encode(mug_cloud + shift)
    np.testing.assert_allclose(b.keypoints, a.keypoints + shift, atol=1e-4)


def resaved(tiny_model_path, tmp_path, name: str, **changes) -> str:
    """The tiny checkpoint saved again with some of its JSON's top-level entries replaced (None: removed)."""
    from kp_core.checkpoint import load_model, save_checkpoint

    model, meta = load_model(tiny_model_path)
    for key, value in changes.items():
        meta.pop(key, None) if value is None else meta.update({key: value})
    return str(save_checkpoint(tmp_path / name, model, meta))


def test_extent_is_the_trained_size_times_the_zoom(pipe, mug_cloud, tiny_model_path, tmp_path):
    # The tiny checkpoint says its shape was 0.08 m per normalized unit and has no zoom (1.0).
    assert pipe.encode(mug_cloud).grid_map.half_extent == pytest.approx(0.08)
    zoomed = Pipeline(resaved(tiny_model_path, tmp_path, "zoomed",
                              placement={"zoom": 1.25, "centering": "circle", "object_scale": 0.5}))
    assert zoomed.encode(mug_cloud).grid_map.half_extent == pytest.approx(0.08 * 1.25 / 0.5)


def test_a_model_without_a_metric_size_needs_object_size(tiny_model_path, tmp_path, mug_cloud):
    unitless = resaved(tiny_model_path, tmp_path, "unitless",
                       normalization={"center": [0.0, 0.0, 0.0], "mesh_units_per_grid_unit": 80.0, "units": "mesh"})
    with pytest.raises(PipelineError, match="no metric size.*set object_size.*--mesh-units"):
        Pipeline(unitless)
    pipe = Pipeline(unitless, config=PipelineConfig(object_size=0.3))
    assert pipe.encode(mug_cloud).grid_map.half_extent == pytest.approx(0.15 / 0.96)
    with pytest.raises(PipelineError, match="no metric size"):  # the node checks a parameter change this way
        pipe.check(PipelineConfig(object_size=0.0))


@pytest.mark.parametrize("changes, match", [
    ({"inputs": "solid", "placement": {"zoom": 1.0, "centering": "origin", "object_scale": 0.875}},
     r"trained on solid voxel grids \(inputs: solid\).*kp-train --recipe node"),
    ({"inputs": None}, "inputs it does not record.*kp-train --recipe node"),
    ({"placement": {"zoom": 1.3, "centering": "box-corner"}}, "'box-corner'.*does not know"),
    ({"placement": None}, "None.*placement.centering"),
])
def test_a_checkpoint_the_node_cannot_serve_as_trained_is_refused(tiny_model_path, tmp_path, changes, match):
    with pytest.raises(PipelineError, match=match):
        Pipeline(resaved(tiny_model_path, tmp_path, "refused", **changes))


def test_the_grid_origin_follows_the_checkpoints_centering(tiny_model_path, tmp_path, mug_cloud):
    from kp_core.placement import min_enclosing_circle

    box = Pipeline(resaved(tiny_model_path, tmp_path, "box", placement={"zoom": 1.0, "centering": "box"}))
    circle = Pipeline(tiny_model_path)
    lo, hi = mug_cloud.min(0), mug_cloud.max(0)
    np.testing.assert_allclose(box.encode(mug_cloud).grid_map.center, (lo + hi) / 2, atol=1e-9)
    np.testing.assert_allclose(circle.encode(mug_cloud).grid_map.center[:2], min_enclosing_circle(mug_cloud[:, :2])[0],
                               atol=1e-6)


def test_the_trained_object_size_is_the_checkpoints_metric_width_and_height():
    from kp_core.conditioning import ObjectSize
    from kp_core.pipeline import trained_object_size

    norm = {"units": "m", "mesh_units_per_grid_unit": 0.05, "width": 0.09, "height": 0.08}
    assert trained_object_size({"normalization": norm}) == ObjectSize(0.09, 0.08)
    # Recorded before widths were: the grid's extent less the margin, for both.
    older = {"units": "m", "mesh_units_per_grid_unit": 0.05}
    fallback = trained_object_size({"normalization": older}, margin=0.1)
    assert (fallback.width, fallback.height) == pytest.approx((0.09, 0.09))
    assert trained_object_size({"normalization": {**norm, "units": None}}) is None  # mesh units not given
    assert trained_object_size({}) is None


def test_object_size_sets_the_extent(tiny_model_path, mug_cloud):
    pipe = Pipeline(tiny_model_path, config=PipelineConfig(object_size=0.3))
    assert pipe.encode(mug_cloud).grid_map.half_extent == pytest.approx(0.15 / 0.96)


def test_goal_turns_keypoints_about_the_decoded_objects_vertical_axis(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    goal = pipe.goal(enc, math.pi / 2, include_probabilities=True)
    # The axis: the centroid (x, y) of the decoded object at 0 deg (its largest 26-connected part: stray voxels do not
    # move it), in the input frame, at the grid origin's height.
    from scipy import ndimage

    at_zero = pipe.goal(enc, 0.0, include_probabilities=True)
    labels, _ = ndimage.label(at_zero.probabilities > 0.5, structure=np.ones((3, 3, 3)))
    part = np.argwhere(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    centroid = enc.grid_map.to_metric(voxel_centers(GRID_SIZE).double().numpy()[part]).mean(0)
    np.testing.assert_allclose(goal.axis_point[:2], centroid[:2], atol=1e-6)
    assert goal.axis_point[2] == pytest.approx(enc.grid_map.center[2])
    expected = rotate_about_vertical(enc.keypoints, math.pi / 2, goal.axis_point)
    np.testing.assert_allclose(goal.keypoints, expected, atol=1e-6)
    assert goal.voxel_size == pytest.approx(2 * enc.grid_map.half_extent / GRID_SIZE)
    # Decoded from the keypoints turned about the grid's own axis ((x, y) -> (-y, x) at 90 deg), in a grid whose
    # origin the turn about the object's axis carries along: c + (a - c) - R (a - c), written out by hand.
    kp = enc.keypoints_grid.double().numpy()
    turned_about_grid_axis = np.stack([-kp[:, 1], kp[:, 0], kp[:, 2]], axis=1)
    c, a = enc.grid_map.center, goal.axis_point
    d = a - c
    np.testing.assert_allclose(goal.grid_origin, c + [d[0] + d[1], d[1] - d[0], 0.0], atol=1e-9)
    prob = goal.probabilities
    assert prob.shape == (GRID_SIZE,) * 3 and prob.dtype == np.float32
    # The goal points are exactly the metric centres of the goal grid's voxels above 0.5.
    centres = voxel_centers(GRID_SIZE).double().numpy()
    idx = np.argwhere(prob > 0.5)
    np.testing.assert_allclose(goal.points, centres[idx] * enc.grid_map.half_extent + goal.grid_origin)
    torch.testing.assert_close(torch.from_numpy(prob), pipe.decode_probabilities(torch.from_numpy(turned_about_grid_axis).float()),
                               atol=1e-5, rtol=1e-5)


def test_angles_are_reduced_modulo_a_turn_in_double_precision(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    a, b = pipe.goal(enc, 0.5), pipe.goal(enc, 0.5 + 2 * math.pi * 1e6)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-7)  # 0.1 micrometre
    assert b.angle == pytest.approx(0.5)


def test_goal_at_zero_keeps_keypoints(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    goal = pipe.goal(enc, 0.0)
    np.testing.assert_allclose(goal.keypoints, enc.keypoints, atol=1e-7)  # float32 about the axis: 0.1 micrometre
    assert goal.probabilities is None


@pytest.mark.parametrize(
    "points, message",
    [
        (np.zeros((0, 3)), "only 0 finite points"),
        (np.full((500, 3), np.nan), "only 0 finite points"),
        (np.random.default_rng(0).normal(size=(5, 3)), "min_points"),
        (np.zeros((500, 2)), "expected \\(N, 3\\)"),
        (np.ones((500, 3)), "degenerate|zero extent|object size"),
    ],
)
def test_bad_clouds_are_refused(pipe, points, message):
    with pytest.raises(PipelineError, match=message):
        pipe.encode(points)


def test_clean_drops_every_non_finite_point_and_keeps_finite_ones_whose_sum_overflows(pipe):
    rng = np.random.default_rng(4)
    points = rng.normal(size=(400, 3))
    bad = rng.choice(400, size=40, replace=False)
    points[bad[:20], rng.integers(0, 3, size=20)] = np.nan
    points[bad[20:], rng.integers(0, 3, size=20)] = rng.choice([np.inf, -np.inf], size=20)
    kept = pipe.clean(points)
    np.testing.assert_array_equal(kept, np.delete(points, bad, axis=0))
    huge = np.full((200, 3), 1e308)  # finite, but their sum is not
    np.testing.assert_array_equal(pipe.clean(huge), huge)


def test_crop_box_and_size_limit(tiny_model_path, mug_cloud):
    far = PipelineConfig(crop_enabled=True, crop_min=(5, 5, 5), crop_max=(6, 6, 6))
    with pytest.raises(PipelineError, match="inside the crop box"):
        Pipeline(tiny_model_path, config=far).encode(mug_cloud)
    # A crop box that keeps the mug and drops outliers gives the mug's keypoints.
    noisy = np.concatenate([mug_cloud, [[30.0, 0, 0], [0, -40.0, 1]]])
    box = PipelineConfig(crop_enabled=True, crop_min=(-1, -1, -1), crop_max=(1, 1, 1))
    cropped = Pipeline(tiny_model_path, config=box)
    np.testing.assert_allclose(cropped.encode(noisy).keypoints, cropped.encode(mug_cloud).keypoints)
    with pytest.raises(PipelineError, match="max_points"):
        Pipeline(tiny_model_path, config=PipelineConfig(max_points=1000)).encode(mug_cloud)


@pytest.mark.parametrize("angle", [math.nan, math.inf, -math.inf])
def test_non_finite_angle_is_refused(pipe, mug_cloud, angle):
    enc = pipe.encode(mug_cloud)
    with pytest.raises(PipelineError, match="finite"):
        pipe.goal(enc, angle)


def test_invalid_settings_are_refused(tiny_model_path):
    for cfg in (PipelineConfig(object_size=-1), PipelineConfig(crop_min=(0, 0, 0), crop_max=(1, 0, 1)),
                PipelineConfig(min_points=0), PipelineConfig(margin=1.0)):
        with pytest.raises(PipelineError):
            Pipeline(tiny_model_path, config=cfg)


def test_latent_models_and_missing_files_are_refused(tmp_path):
    from kp_core.checkpoint import CheckpointError, save_checkpoint
    from kp_core.models import build_model, model_config

    cnn = build_model(model_config("cnn", decoder_channels=16, latent_dim=8, encoder_channels=(4, 4, 4, 4)))
    path = save_checkpoint(tmp_path / "cnn", cnn, {})
    with pytest.raises(PipelineError, match="keypoint model"):
        Pipeline(path)
    with pytest.raises(CheckpointError):
        Pipeline(tmp_path / "missing.safetensors")


def test_metric_points_iou(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    assert metric_points_iou(mug_cloud, mug_cloud, enc.grid_map) == 1.0
    turned = rotate_about_vertical(mug_cloud, math.pi, enc.grid_map.center)
    assert 0.0 < metric_points_iou(mug_cloud, turned, enc.grid_map) < 0.9


def test_optimized_encoder_gives_the_same_keypoints(tiny_model_path, mug_cloud):
    eager = Pipeline(tiny_model_path)
    fast = Pipeline(tiny_model_path, optimize=True)
    assert fast.optimized and not eager.optimized
    kp = eager.encode(mug_cloud).keypoints_grid
    torch.testing.assert_close(fast.encode(mug_cloud).keypoints_grid, kp, atol=1e-5, rtol=1e-5)
    # And the eager path is the model's own encode.
    voxels = eager.voxelize(eager.clean(mug_cloud), eager.encode(mug_cloud).grid_map)
    torch.testing.assert_close(eager.model.encode(voxels)[0], kp)


@pytest.mark.parametrize("optimize", [True, False])
def test_bf16_keeps_the_shipped_models_keypoints_and_goals(mug_cloud, optimize):
    exact = Pipeline(default_model_path(), precision="fp32", optimize=True)
    fast = Pipeline(default_model_path(), precision="bf16", optimize=optimize)
    assert fast.precision == "bf16" and fast.optimized == optimize
    assert ("TorchScript encoder (bf16" in fast.encoder_path) == optimize
    encoding, reference = fast.encode(mug_cloud), exact.encode(mug_cloud)
    assert encoding.keypoints_grid.dtype == torch.float32
    error_voxels = float((encoding.keypoints_grid - reference.keypoints_grid).norm(dim=-1).max()) * 32
    assert error_voxels < 0.25  # the tolerance the pipeline checks at start (BF16_KEYPOINT_TOLERANCE_VOXELS)
    goal = fast.goal(encoding, 1.0, include_probabilities=True).probabilities > 0.5
    truth = exact.goal(reference, 1.0, include_probabilities=True).probabilities > 0.5
    assert (goal & truth).sum() / (goal | truth).sum() > 0.98  # bf16 changes a goal by a few boundary voxels


def test_precision_auto_and_unknown(monkeypatch):
    from kp_core.pipeline import resolve_precision

    for native, expected in ((True, "bf16"), (False, "fp32")):  # as kp_core.devices reads the CPU
        monkeypatch.setattr("kp_core.pipeline.native_bf16", lambda device, native=native: native)
        assert resolve_precision("auto", torch.device("cpu")) == expected
    monkeypatch.undo()
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(PipelineError, match="precision must be one of"):
        Pipeline(default_model_path(), precision="half")


def test_the_pipeline_says_which_encoder_runs_and_why(tiny_model_path, monkeypatch):
    assert Pipeline(tiny_model_path, optimize=True).encoder_path.startswith("TorchScript encoder")
    assert Pipeline(tiny_model_path).encoder_path == "eager encoder (optimize off)"

    def broken_trace(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    pipe = Pipeline(tiny_model_path, optimize=True)
    assert not pipe.optimized and "TorchScript failed: RuntimeError: cannot trace this" in pipe.encoder_path


def test_warmup_leaves_results_unchanged(tiny_model_path, mug_cloud):
    pipe = Pipeline(tiny_model_path, optimize=True)
    before = pipe.encode(mug_cloud).keypoints
    pipe.warmup()
    np.testing.assert_allclose(pipe.encode(mug_cloud).keypoints, before, atol=1e-6)


# ---- clouds that used to give a meaningless success or an internal error (issue 23) -----------------------

def test_one_far_point_is_an_outlier_not_part_of_the_object(pipe, mug_cloud):
    clean = pipe.encode(mug_cloud)
    stray = pipe.encode(np.concatenate([mug_cloud, [[1e30, 0.0, 0.0]]]))
    np.testing.assert_allclose(stray.grid_map.center, clean.grid_map.center, atol=1e-9)
    np.testing.assert_allclose(stray.keypoints, clean.keypoints, atol=1e-9)
    assert stray.conditioned.removed["far"] == 1


@pytest.mark.parametrize("scale, dtype", [(1e38, np.float32), (1e300, np.float64), (1e308, np.float64)])
def test_points_spread_over_absurd_distances_are_refused_cleanly(pipe, scale, dtype):
    """Random points over +-1e38 (float32, or little-endian data read as big-endian) and float64 coordinates
    near 1e300 or 1e308: a refusal that says why, never a goal near 1e36 nor an OverflowError/IndexError."""
    points = (np.random.default_rng(3).uniform(-1, 1, (3000, 3)) * scale).astype(dtype)
    with pytest.raises(PipelineError, match="points are left of the object"):
        pipe.encode(points)


def test_the_pose_of_a_model_without_a_canonical_yaw_has_no_calibrated_spread(pipe, mug_cloud):
    enc = pipe.encode(mug_cloud)
    pose = pipe.pose(enc)
    axis = enc.grid_map.to_metric(pipe.axis(enc).double().numpy())
    np.testing.assert_allclose(pose.position[:2], axis[:2])
    assert pose.position[2] == pytest.approx(mug_cloud[:, 2].min())  # no table: the lowest point is the bottom
    assert pose.yaw == 0.0 and pose.yaw_spread == -1.0


def test_the_shipped_models_pose_follows_the_mugs_yaw(mug_cloud):
    from kp_core.goals import rotate_about_vertical

    pipe = Pipeline(default_model_path(), precision="fp32")
    center = np.r_[mug_cloud[:, :2].mean(0), 0.0]
    yaws = []
    for turn in (0.0, 1.0):
        pose = pipe.pose(pipe.encode(rotate_about_vertical(mug_cloud, turn, center)))
        yaws.append(pose.yaw)
        # Any template with a horizontal spread is a yaw reference: the recipe's comes from the untrained encoder, so
        # the trained keypoints' layout fits it loosely, and the calibration maps that fit to a spread.
        assert 0.0 <= pose.misalignment <= 1.0 and pose.yaw_spread >= 0  # the shipped model carries a calibration
    assert math.remainder(yaws[1] - yaws[0] - 1.0, 2 * math.pi) == pytest.approx(0.0, abs=0.1)


def test_calibrated_spread_reads_the_bins():
    from kp_core.pipeline import calibrated_spread

    calibration = {"misalignment_edges": [0.001, 0.01], "spread_rad": [0.05, 0.5, 2.0]}
    assert calibrated_spread(calibration, 0.0005) == 0.05
    assert calibrated_spread(calibration, 0.001) == 0.05
    assert calibrated_spread(calibration, 0.005) == 0.5
    assert calibrated_spread(calibration, 0.3) == 2.0
    assert calibrated_spread(None, 0.3) == -1.0
