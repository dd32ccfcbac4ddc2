"""An organized cloud (a depth camera's image of points, in its own frame) loses its flying pixels and its depth
noise in the node."""

import math

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from kp_perception.cloud_io import make_xyz_cloud  # noqa: E402
from kp_perception.demo.processes import pick_domain_id  # noqa: E402
from kp_perception.node import PerceptionNode  # noqa: E402
from kp_training.camera import FLYING, OBJECT, CameraConditions, SceneRenderer, optical_frame  # noqa: E402
from kp_training.camera_protocol import shape_in_metres  # noqa: E402


def camera_view(surface: np.ndarray, cond: CameraConditions):
    """One camera view of the surface (world frame) in the camera's optical frame (x right, y down, z forward):
    points (H, W, 3) with NaN where there is no return, each pixel's label, and the camera's pose in the z-up world
    (position, quaternion x, y, z, w)."""
    renderer = SceneRenderer(surface, np.random.default_rng(1))
    view = renderer.render(cond, 0.4)[0]
    points, pose = optical_frame(view, renderer.center)
    return points, view.labels, pose


@pytest.fixture(scope="module")
def surface(mug):
    return shape_in_metres(mug, surface_count=60000).surface


@pytest.fixture(scope="module")
def view(surface):
    """A 160 x 120 view of the mug on a ring of table, with 3 % flying pixels (:func:`camera_view`)."""
    return camera_view(surface, CameraConditions("flying", flying=0.03, noise_m=0.0005, table="ring", width=160,
                                                 height=120, hfov_deg=20.0))


@pytest.fixture
def node(tiny_model_path, view):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=pick_domain_id())
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(tiny_model_path)), Parameter("num_threads", value=1),
        Parameter("precision", value="fp32"), Parameter("object_size", value=0.115),
        Parameter("target_frame", value="world"), Parameter("use_tf", value=False),
        Parameter("input_transform", value=[float(v) for v in view[2]])])
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def organized_cloud(points):
    h, w = points.shape[:2]
    cloud = make_xyz_cloud(points.reshape(-1, 3))
    cloud.height, cloud.width, cloud.row_step, cloud.is_dense = h, w, w * cloud.point_step, False
    cloud.header.frame_id = "camera_depth_optical_frame"
    return cloud


def test_the_veils_of_an_organized_cloud_never_reach_the_grid(node, view):
    from kp_core.conditioning import veil_pixels

    points, labels, pose = view
    # Points are looked up by their coordinates: the depth smoothing, which moves them, is left out here.
    assert node.set_parameters([Parameter("conditioning.smooth_pixels", value=0)])[0].successful
    veils = veil_pixels(points, np.zeros(3), 10.0, 0.01)  # in the camera's frame, the node's default settings
    assert (veils & (labels == FLYING)).sum() > 50 and (labels == OBJECT).sum() > 3000
    located = node.perception._encode(organized_cloud(points))
    veil_points = {tuple(p) for p in located_in_world(points[veils], located, pose)}

    def veils_used(cloud) -> int:
        encoding = node.perception._encode(cloud).encoding
        return sum(tuple(p) in veil_points for p in np.round(encoding.conditioned.points, 5))

    unorganized = make_xyz_cloud(points[np.isfinite(points).all(-1)])
    unorganized.header.frame_id = "camera_depth_optical_frame"
    assert veils_used(unorganized) > 20  # near the object, the conditioning alone keeps some
    assert veils_used(organized_cloud(points)) == 0
    # Off, the organized cloud is used as it is.
    assert node.set_parameters([Parameter("conditioning.veil_angle_deg", value=0.0)])[0].successful
    assert veils_used(organized_cloud(points)) == veils_used(unorganized)
    assert math.isclose(node.get_parameter("conditioning.veil_angle_deg").value, 0.0)


def located_in_world(camera_points, located, pose):
    """Camera-frame points as the pipeline sees them: in the world frame, less the node's whole-metre offset,
    rounded so that they can be looked up."""
    from scipy.spatial.transform import Rotation

    world = Rotation.from_quat(pose[3:]).apply(camera_points.astype(np.float32).astype(np.float64)) + pose[:3]
    return np.round(world - located.offset, 5)


def test_the_depth_noise_of_an_organized_cloud_is_averaged_down_before_the_grid(node, surface):
    """The node smooths each organized cloud as kp_core.conditioning.organized_cloud does (in the camera's frame,
    before anything else moves the points; its quality is tested there), and the parameter turns it off."""
    from kp_core.conditioning import ConditioningConfig, organized_cloud as smoothed_image

    points, labels, pose = camera_view(surface, CameraConditions("noisy", noise_m=0.003, width=160, height=120,
                                                                 hfov_deg=20.0))
    assert (labels == OBJECT).sum() > 3000
    assert node.set_parameters([Parameter("input_transform", value=[float(v) for v in pose])])[0].successful
    camera_points = points.astype(np.float32)  # as the cloud carries them
    smoothed, kept = smoothed_image(camera_points, ConditioningConfig())
    assert not np.allclose(smoothed[kept], camera_points[kept], rtol=0, atol=1e-4)

    def share_among(candidates) -> float:
        located = node.perception._encode(organized_cloud(points))
        lookup = {tuple(p) for p in located_in_world(candidates, located, pose)}
        used = np.round(located.encoding.conditioned.returns, 5)
        return float(np.mean([tuple(p) in lookup for p in used]))

    assert share_among(smoothed[kept]) > 0.99
    assert node.set_parameters([Parameter("conditioning.smooth_pixels", value=0)])[0].successful
    assert share_among(camera_points[kept]) > 0.99
    assert not node.set_parameters([Parameter("conditioning.smooth_pixels", value=-1)])[0].successful


def test_a_held_objects_underside_seen_from_below_never_reaches_the_grid(node, surface):
    """A camera 30 deg below a held mug sees its bottom face, which no camera above an object on a table sees; the
    node drops it in the camera's image, knowing the answer frame's up from input_transform."""
    points, labels, pose = camera_view(surface, CameraConditions("below", elevation_deg=-30.0, width=160,
                                                                 height=120, hfov_deg=20.0))
    assert node.set_parameters([Parameter("input_transform", value=[float(v) for v in pose])])[0].successful
    from scipy.spatial.transform import Rotation

    world = Rotation.from_quat(pose[3:]).apply(np.nan_to_num(points.reshape(-1, 3))) + pose[:3]
    bottom = (labels.ravel() == OBJECT) & (world[:, 2] < 0.001)  # the mug stands at z = 0 in its world
    assert bottom.sum() > 300

    def conditioned():
        located = node.perception._encode(organized_cloud(points))
        conditioned = located.encoding.conditioned
        return int((conditioned.points[:, 2] + located.offset[2] < 0.002).sum()), conditioned

    used, kept = conditioned()
    assert used < 0.05 * bottom.sum() and kept.floor_z is None
    # Kept, the bottom face seen from one side passes for a table the mug stands on.
    assert node.set_parameters([Parameter("conditioning.underside_angle_deg", value=0.0)])[0].successful
    used, kept = conditioned()
    assert kept.floor_z is not None and kept.removed["plane and below"] > 0.8 * bottom.sum()
