"""Any input frame: clouds brought into target_frame with a fixed input_transform (everywhere) or TF (where
tf2_ros is installed), and every answer in that frame. Unit checks of the transform maths, then the node over
loopback DDS with a depth camera's optical frame (z forward) and a z-up table frame."""

import math
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_perception.frames import FrameMapper, RigidTransform, TransformUnavailable, fixed_lookup, up_in_source
from kp_perception.parameters import SettingsError, normalized_transform

# The camera: 0.6 m above the table origin, 0.4 m back, looking forward and 30 deg down, optical axes
# (x right, y down, z forward). table_from_camera maps optical-frame points into the table frame.
CAMERA_IN_TABLE = np.array([-0.4, 0.05, 0.6])
TABLE_FROM_CAMERA = Rotation.from_euler("xyz", [-90 - 30, 0, -90], degrees=True)
INPUT_TRANSFORM = [*CAMERA_IN_TABLE, *TABLE_FROM_CAMERA.as_quat()]  # x, y, z, qx, qy, qz, qw


def camera_cloud(points_table):
    """Table-frame points as the camera sees them (optical frame)."""
    return TABLE_FROM_CAMERA.inv().apply(np.asarray(points_table) - CAMERA_IN_TABLE)


def test_rigid_transform_matches_scipy():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(100, 3))
    t = RigidTransform.from_xyz_quaternion(*INPUT_TRANSFORM)
    np.testing.assert_allclose(t.apply(pts), TABLE_FROM_CAMERA.apply(pts) + CAMERA_IN_TABLE, atol=1e-12)
    np.testing.assert_allclose(t.apply(camera_cloud(pts)), pts, atol=1e-12)
    assert RigidTransform.from_xyz_quaternion(0, 0, 0, 0, 0, 0, 1).is_identity


def test_far_frames_keep_float64_precision():
    t = RigidTransform.from_xyz_quaternion(4.5e5, -5.2e6, 10.0, 0, 0, math.sin(0.3), math.cos(0.3))
    pts = np.array([[0.001, 0.002, 0.003]], dtype=np.float32)
    out = t.apply(pts)
    assert out.dtype == np.float64
    back = (out - t.translation) @ t.rotation  # inverse
    np.testing.assert_allclose(back, pts.astype(np.float64), atol=1e-9)


def test_input_transform_is_validated():
    assert normalized_transform([1, 2, 3, 0, 0, 0, 1.5])[3:] == (0.0, 0.0, 0.0, 1.0)  # a rounded one: fine
    for bad in ([0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, math.nan, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 10]):
        with pytest.raises(SettingsError, match="input_transform"):
            normalized_transform(bad)


class Stamp:
    sec, nanosec = 5, 0


class Hdr:
    def __init__(self, frame):
        self.frame_id, self.stamp = frame, Stamp()


def test_frame_mapper_rules():
    pts = np.ones((4, 3))
    assert FrameMapper("")(Hdr("camera"), pts)[0] == "camera"  # no target: each cloud's own frame
    mapper = FrameMapper("table", fixed_lookup(lambda: INPUT_TRANSFORM))
    frame, out = mapper(Hdr("camera"), pts)
    assert frame == "table"
    np.testing.assert_allclose(out, TABLE_FROM_CAMERA.apply(pts) + CAMERA_IN_TABLE)
    assert mapper(Hdr("table"), pts)[1] is pts  # already there
    with pytest.raises(TransformUnavailable, match="no frame_id"):
        mapper(Hdr(""), pts)


def test_the_answer_frames_up_is_known_in_the_clouds_own_frame():
    mapper = FrameMapper("table", fixed_lookup(lambda: INPUT_TRANSFORM))
    up = up_in_source(mapper.transform(Hdr("camera"))[1])
    # A step along it in the camera's frame is a step straight up in the table's.
    np.testing.assert_allclose(TABLE_FROM_CAMERA.apply(up), [0.0, 0.0, 1.0], atol=1e-12)
    assert mapper.transform(Hdr("table")) == ("table", None)
    assert up_in_source(None) is None


def test_tf_lookup_waits_for_transforms_that_arrive_on_its_own_node(monkeypatch, tmp_path):
    """TfLookup against a stand-in tf2_ros (the real one runs in test_tf_transform_at_the_cloud_stamp where it is
    installed). The stand-in listener fills its buffer from a topic on the node it is given, and the lookup waits
    for that, as tf2's does. Nobody spins the perception node here (its executor would be busy in the cloud
    callback that waits): the transform must still arrive. A TF failure names both frames and the stamp."""
    import threading
    import types

    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import TransformStamped

    from kp_perception.frames import TfLookup

    class TransformException(Exception):
        pass

    class Buffer:
        def __init__(self):
            self.arrived = threading.Event()
            self.calls = []

        def lookup_transform(self, target, source, time, timeout):
            self.calls.append((target, source, time.nanoseconds, timeout.nanoseconds))
            if source == "nowhere" or not self.arrived.wait(timeout.nanoseconds / 1e9):
                raise TransformException(f'"{source}" passed to lookupTransform argument source_frame does not exist')
            return self.transform

    class TransformListener:
        def __init__(self, buffer, node, **kwargs):
            self.buffer, self.node = buffer, node
            self.sub = node.create_subscription(TransformStamped, "tf_stand_in", self.callback, 10)

        def callback(self, msg):
            self.buffer.transform = msg
            self.buffer.arrived.set()

        def unregister(self):
            self.node.destroy_subscription(self.sub)

    fake = types.ModuleType("tf2_ros")
    fake.Buffer, fake.TransformListener, fake.TransformException = Buffer, TransformListener, TransformException
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    from std_msgs.msg import Header

    def stamped(frame):
        h = Header(frame_id=frame)
        h.stamp.sec = 5
        return h

    from kp_perception.demo.processes import pick_domain_id, ros_env

    domain = pick_domain_id()
    for key, value in ros_env(domain, tmp_path).items():
        if key.startswith("ROS_"):  # this process on a private local domain
            monkeypatch.setenv(key, value)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    perception = rclpy.create_node("perception_stand_in", context=context)
    publisher_node = rclpy.create_node("tf_publisher_stand_in", context=context)
    lookup = TfLookup(node=perception, timeout_source=lambda: 5.0)
    try:
        assert lookup._listener.node is not perception  # its own node, spun by its own thread
        t = TransformStamped()
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = CAMERA_IN_TABLE
        q = TABLE_FROM_CAMERA.as_quat()
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
        publisher = publisher_node.create_publisher(TransformStamped, "tf_stand_in", 10)

        def publish_until_received():
            while not lookup._buffer.arrived.is_set():
                publisher.publish(t)
                lookup._buffer.arrived.wait(0.05)

        sender = threading.Thread(target=publish_until_received, daemon=True)
        sender.start()
        mapper = FrameMapper("table", lookup)
        pts = np.random.default_rng(1).normal(size=(10, 3))
        frame, out = mapper(stamped("camera_optical"), pts)  # waits in this thread, as a cloud callback would
        sender.join()
        assert frame == "table"
        np.testing.assert_allclose(out, TABLE_FROM_CAMERA.apply(pts) + CAMERA_IN_TABLE, atol=1e-12)
        assert lookup._buffer.calls[-1] == ("table", "camera_optical", 5_000_000_000, 5_000_000_000)  # the stamp
        with pytest.raises(TransformUnavailable, match="no transform from 'nowhere' to 'table' at 5.000000000 within 5 s"):
            mapper(stamped("nowhere"), pts)
    finally:
        lookup.close()
        publisher_node.destroy_node()
        perception.destroy_node()
        context.try_shutdown()
    assert not lookup._thread.is_alive()


def test_use_tf_without_tf2_ros_says_what_to_do(monkeypatch):
    from kp_perception.frames import TfLookup

    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # import fails
    with pytest.raises(TransformUnavailable, match="needs tf2_ros.*input_transform"):
        TfLookup(node=object(), timeout_source=lambda: 0.1)


# ---- over loopback DDS --------------------------------------------------------------------------------------
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("kp_interfaces.srv")

from kp_perception.cloud_io import make_xyz_cloud, read_xyz  # noqa: E402
from kp_core.pipeline import Pipeline  # noqa: E402
from kp_perception.demo.processes import node_command  # noqa: E402
from ros_probe import Probe, header, join_domain, start_node  # noqa: E402

TOPIC = "/kp_frames_test/points"


def marker_points(marker):
    return np.array([[p.x, p.y, p.z] for p in marker.points])


@pytest.fixture(scope="module")
def fixed(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("frames_home")
    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "num_threads": 1, "target_frame": "table",
              "use_tf": False, "input_transform": [float(v) for v in INPUT_TRANSFORM],
              "precision": "fp32"}  # compared with a float32 pipeline, voxel for voxel
    node, domain = start_node(node_command(params=params), home)
    join_domain(domain, home)
    probe = Probe(domain, TOPIC, name="kp_frames_probe")
    assert probe.client.wait_for_service(timeout_sec=30) and probe.params.wait_for_service(timeout_sec=30)
    try:
        yield node, probe
    finally:
        probe.close()
        code = node.stop()
        print(node.output)
    assert code == 0


def test_fixed_transform_answers_in_the_target_frame(fixed, tiny_model_path, mug_cloud):
    node, probe = fixed
    assert "answering in 'table'" in node.output
    mug_on_table = mug_cloud + [0.1, -0.05, 0.0]
    cloud = make_xyz_cloud(camera_cloud(mug_on_table), header=header("camera_optical", 31))
    msg = probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.stamp.sec == 31)
    assert msg.markers[0].header.frame_id == "table"
    # What the node should see: the float32 camera cloud, moved into the table frame in float64.
    seen = TABLE_FROM_CAMERA.apply(read_xyz(cloud, dtype=np.float64)) + CAMERA_IN_TABLE
    local = Pipeline(tiny_model_path)
    expected = local.encode(seen)
    np.testing.assert_allclose(marker_points(msg.markers[0]), expected.keypoints, atol=1e-5)
    poses = probe.wait_for("poses", lambda m: m.header.stamp.sec == 31)
    assert poses.header.frame_id == "table"

    response = probe.call(0.8)
    assert response.success, response.message
    assert response.header.frame_id == "table" and response.goal_cloud.header.frame_id == "table"
    goal = local.goal(expected, 0.8)
    np.testing.assert_allclose(read_xyz(response.goal_cloud, dtype=np.float64), goal.points, atol=1e-5)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in response.keypoints], goal.keypoints, atol=1e-5)
    # The goal is about the table's vertical: its voxels' heights stay within the mug's height band.
    z = read_xyz(response.goal_cloud, dtype=np.float64)[:, 2]
    assert z.min() > mug_on_table[:, 2].min() - 0.2 and z.max() < mug_on_table[:, 2].max() + 0.2


def test_clouds_already_in_the_target_frame_are_not_moved(fixed, tiny_model_path, mug_cloud):
    node, probe = fixed
    response = probe.call(0.0, cloud=make_xyz_cloud(mug_cloud, header=header("table", 32)))
    assert response.success and response.header.frame_id == "table"
    local = Pipeline(tiny_model_path)
    expected = local.goal(local.encode(mug_cloud.astype(np.float32)), 0.0)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in response.keypoints], expected.keypoints, atol=1e-5)


def test_the_crop_box_is_in_the_target_frame(fixed, tiny_model_path, mug_cloud):
    """A box around the mug in the table frame keeps it (in the camera's optical frame the mug lies 0.6 m and more
    down the z axis, outside that box), and a box beside it leaves nothing, with the reason."""
    from rcl_interfaces.msg import ParameterType

    node, probe = fixed
    mug_on_table = mug_cloud + [0.1, -0.05, 0.0]
    cloud = make_xyz_cloud(camera_cloud(mug_on_table), header=header("camera_optical", 34))
    seen = TABLE_FROM_CAMERA.apply(read_xyz(cloud, dtype=np.float64)) + CAMERA_IN_TABLE
    assert (camera_cloud(mug_on_table)[:, 2] > 0.3).all()
    array = ParameterType.PARAMETER_DOUBLE_ARRAY
    try:
        for name, value, kind in (("crop.min", [-0.2, -0.3, -0.1], array), ("crop.max", [0.4, 0.2, 0.3], array),
                                  ("crop.enabled", True, ParameterType.PARAMETER_BOOL)):
            assert probe.set_param(name, value, kind).successful
        response = probe.call(0.0, cloud=cloud)
        assert response.success, response.message
        expected = Pipeline(tiny_model_path).encode(seen)
        np.testing.assert_allclose([[p.x, p.y, p.z] for p in response.keypoints],
                                   Pipeline(tiny_model_path).goal(expected, 0.0).keypoints, atol=1e-5)
        assert probe.set_param("crop.max", [0.9, 0.9, 0.3], array).successful  # max first: min < max at each step
        assert probe.set_param("crop.min", [0.5, 0.5, -0.1], array).successful
        response = probe.call(0.0, cloud=cloud)
        assert not response.success and "inside the crop box" in response.message, response.message
    finally:
        probe.set_param("crop.enabled", False, ParameterType.PARAMETER_BOOL)


def test_a_cloud_without_a_frame_is_refused_with_the_reason(fixed, mug_cloud):
    node, probe = fixed
    response = probe.call(0.0, cloud=make_xyz_cloud(mug_cloud, header=header("", 33)))
    assert not response.success and "no frame_id" in response.message


def test_target_frame_with_tf_but_no_tf2_ros_fails_clearly(tiny_model_path, tmp_path):
    try:
        import tf2_ros  # noqa: F401

        pytest.skip("tf2_ros is installed: the TF path runs instead (test_tf_transform_at_the_cloud_stamp)")
    except ImportError:
        pass
    from kp_perception.demo.processes import RosProcess, pick_domain_id, ros_env

    params = {"model_path": str(tiny_model_path), "target_frame": "base_link", "use_tf": True}
    proc = RosProcess(node_command(params=params), ros_env(pick_domain_id(), tmp_path))
    assert proc.exit_code(timeout=120) == 2
    assert "needs tf2_ros" in proc.output and "input_transform" in proc.output


def test_tf_transform_at_the_cloud_stamp(tiny_model_path, mug_cloud, tmp_path):
    """The TF path, written to tf2_ros's standard API (runs where tf2_ros is installed)."""
    pytest.importorskip("tf2_ros")
    from geometry_msgs.msg import TransformStamped
    from tf2_ros import StaticTransformBroadcaster

    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "num_threads": 1, "target_frame": "table",
              "use_tf": True, "tf_timeout": 1.0, "warn_throttle_sec": 0.0, "precision": "fp32"}
    node, domain = start_node(node_command(params=params), tmp_path)
    join_domain(domain, tmp_path)
    probe = Probe(domain, TOPIC, name="kp_tf_probe")
    try:
        cloud = make_xyz_cloud(camera_cloud(mug_cloud), header=header("camera_optical", 41))
        probe.pub.publish(cloud)
        assert node.wait_for_line("no transform from 'camera_optical' to 'table'", 30), node.output[-2000:]
        broadcaster = StaticTransformBroadcaster(probe.node)
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = "table", "camera_optical"
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = CAMERA_IN_TABLE
        q = TABLE_FROM_CAMERA.as_quat()
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
        broadcaster.sendTransform(t)
        msg = probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.stamp.sec == 41, timeout=60)
        assert msg.markers[0].header.frame_id == "table"
        seen = TABLE_FROM_CAMERA.apply(read_xyz(cloud, dtype=np.float64)) + CAMERA_IN_TABLE
        np.testing.assert_allclose(marker_points(msg.markers[0]), Pipeline(tiny_model_path).encode(seen).keypoints, atol=1e-4)
    finally:
        probe.close()
        node.stop()
