"""Building the node's messages: the goal markers are built without a Python object per voxel (one
geometry_msgs/Point per voxel, tens of thousands per goal, starves the service) and carry the same content."""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Point  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from kp_perception import messages  # noqa: E402
from kp_perception.messages import MarkerStyle  # noqa: E402


def as_array(msg_or_bytes):
    return msg_or_bytes if isinstance(msg_or_bytes, MarkerArray) else deserialize_message(msg_or_bytes, MarkerArray)


def goal_inputs(count, seed=0):
    rng = np.random.default_rng(seed)
    header = Header(frame_id="goal_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return header, rng.normal(size=(count, 3)) * 1e3, rng.normal(size=(8, 3)), 0.0015


def test_goal_markers_make_no_python_object_per_voxel(monkeypatch):
    made = [0]

    class CountingPoint(Point):
        def __init__(self, *args, **kwargs):
            made[0] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(messages, "Point", CountingPoint)
    monkeypatch.setattr(messages, "_splice_checked", {})
    header, points, keypoints, voxel = goal_inputs(20000)
    out = messages.goal_markers(header, points, keypoints, voxel, MarkerStyle())
    assert made[0] < 100, f"{made[0]} geometry_msgs/Point objects for a goal of 20000 voxels"
    assert len(as_array(out).markers[0].points) == 20000


@pytest.mark.parametrize("count", [0, 1, 2, 7, 5000])
def test_goal_markers_carry_the_goal(count):
    header, points, keypoints, voxel = goal_inputs(count, seed=count)
    style = MarkerStyle(goal_color=(0.1, 0.2, 0.3, 0.4))
    markers = as_array(messages.goal_markers(header, points, keypoints, voxel, style)).markers
    cubes, spheres = markers
    assert cubes.type == Marker.CUBE_LIST and cubes.ns == messages.GOAL_NS
    assert (cubes.header.frame_id, cubes.header.stamp.sec, cubes.header.stamp.nanosec) == ("goal_frame", 12, 345)
    got = np.array([[p.x, p.y, p.z] for p in cubes.points]).reshape(-1, 3)
    np.testing.assert_array_equal(got, points)  # float64 end to end: bit for bit
    assert cubes.scale.x == cubes.scale.y == cubes.scale.z == pytest.approx(voxel)
    assert (cubes.color.r, cubes.color.g, cubes.color.b, cubes.color.a) == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert spheres.type == Marker.SPHERE_LIST and spheres.ns == messages.GOAL_KEYPOINT_NS
    np.testing.assert_array_equal(np.array([[p.x, p.y, p.z] for p in spheres.points]), keypoints)
    assert len(spheres.colors) == 8 and spheres.header.frame_id == "goal_frame"


def test_goal_markers_with_an_unusual_frame_and_strings():
    """Header strings of any length shift everything after them: the points must still land in place."""
    for frame in ("", "a", "ab", "abc", "map/odom/camera_depth_optical_frame_with_a_long_name"):
        header, points, keypoints, voxel = goal_inputs(5, seed=len(frame))
        header.frame_id = frame
        markers = as_array(messages.goal_markers(header, points, keypoints, voxel, MarkerStyle())).markers
        assert markers[0].header.frame_id == frame
        np.testing.assert_array_equal(np.array([[p.x, p.y, p.z] for p in markers[0].points]), points)


def test_an_unknown_serialization_layout_falls_back_to_ordinary_messages(monkeypatch):
    monkeypatch.setattr(messages, "_point_sequence_layout", lambda one, two: None)
    monkeypatch.setattr(messages, "_splice_checked", {})  # the verdict it leaves must not reach other tests
    header, points, keypoints, voxel = goal_inputs(50)
    cubes = as_array(messages.goal_markers(header, points, keypoints, voxel, MarkerStyle())).markers[0]
    np.testing.assert_array_equal(np.array([[p.x, p.y, p.z] for p in cubes.points]), points)


def _header(frame, sec):
    header = Header(frame_id=frame)
    header.stamp.sec, header.stamp.nanosec = sec, 7
    return header


def test_cached_keypoint_markers_equal_freshly_built_ones_cloud_after_cloud():
    rng = np.random.default_rng(3)
    cache = messages.KeypointMarkers()
    styles = [MarkerStyle(), MarkerStyle(), MarkerStyle(show_labels=False, text_scale=0.01), MarkerStyle()]
    counts = [8, 8, 8, 5]  # a new style, then a new keypoint count, rebuild the markers
    for i, (style, count) in enumerate(zip(styles, counts)):
        header, keypoints, voxel = _header(f"frame_{i % 2}", 100 + i), rng.normal(size=(count, 3)), 0.002 + 0.001 * i
        got = cache(header, keypoints, voxel, style)
        assert got == messages.keypoint_markers(header, keypoints, voxel, style)
        labels = got.markers[1:]
        assert len(labels) == count and all(m.header.stamp.sec == 100 + i for m in got.markers)
        assert np.allclose([[p.x, p.y, p.z] for p in got.markers[0].points], keypoints)
        assert np.allclose([[m.pose.position.x, m.pose.position.y] for m in labels], keypoints[:, :2])
        assert all(m.pose.position.z > k for m, k in zip(labels, keypoints[:, 2]))  # above the sphere
