"""kp_perception_node end to end: a node subprocess over loopback DDS, driven through its topics and service.

One node process serves the whole module. The test process talks to it from its own rclpy context on the
same (randomly chosen) domain id, with discovery kept on localhost.
"""

import math
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("kp_interfaces.srv")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from kp_perception.cloud_io import make_xyz_cloud, read_xyz  # noqa: E402
from kp_core.pipeline import Pipeline, PipelineConfig  # noqa: E402
from kp_perception.demo.processes import RosProcess, node_command, pick_domain_id, ros_env  # noqa: E402
from ros_probe import NODE, Probe, diagnostic_values, header  # noqa: E402  (test helper beside this file)

TOPIC = "/kp_test/points"
MAX_POINTS = 400_000  # above a 640x480 organized cloud
CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "kp_perception.yaml")


@pytest.fixture(scope="module")
def ros(tiny_model_path, tmp_path_factory):
    domain = pick_domain_id()
    home = tmp_path_factory.mktemp("ros_home")
    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "max_points": MAX_POINTS,
              "warn_throttle_sec": 0.0, "num_threads": 1,
              "precision": "fp32"}  # the tests compare the node's answers with a float32 pipeline's, voxel for voxel
    node = RosProcess(node_command(CONFIG, params=params), ros_env(domain, home))
    try:
        assert node.wait_for_line("ready", 90), f"the node did not start:\n{node.output}"
        import os

        for key, value in ros_env(domain, home).items():  # this process joins the same local domain
            if key.startswith("ROS_"):
                os.environ[key] = value
        probe = Probe(domain, TOPIC)
        assert probe.client.wait_for_service(timeout_sec=30), "rotate_goal service not discovered"
        assert probe.params.wait_for_service(timeout_sec=30)
        yield SimpleNamespace(node=node, probe=probe, domain=domain)
        probe.close()
    finally:
        code = node.stop()
        print(node.output)
    assert code == 0, f"the node exited with {code} on SIGINT"


@pytest.fixture(scope="module")
def local(tiny_model_path):
    """The same pipeline in this process: what the node must publish."""
    return Pipeline(tiny_model_path, config=PipelineConfig(max_points=MAX_POINTS))


def marker_points(marker):
    return np.array([[p.x, p.y, p.z] for p in marker.points])


def test_call_before_any_cloud_is_refused(tiny_model_path, tmp_path, monkeypatch):
    """A node of its own: the module's node has clouds from whichever tests ran before."""
    from ros_probe import start_node

    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "num_threads": 1}
    node, domain = start_node(node_command(params=params), tmp_path)
    for key, value in ros_env(domain, tmp_path).items():  # this process on the node's local domain
        if key.startswith("ROS_"):
            monkeypatch.setenv(key, value)
    probe = Probe(domain, TOPIC, name="kp_first_call_probe")
    try:
        assert probe.client.wait_for_service(timeout_sec=30)
        response = probe.call(0.5)
        assert not response.success
        assert "no usable cloud received" in response.message and TOPIC in response.message
    finally:
        probe.close()
        assert node.stop() == 0


def test_cloud_gives_keypoint_markers_and_poses(ros, local, mug_cloud):
    cloud = make_xyz_cloud(mug_cloud, header=header("camera_a", 101))
    msg = ros.probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.frame_id == "camera_a")
    spheres = msg.markers[0]
    assert spheres.type == Marker.SPHERE_LIST and spheres.header.stamp.sec == 101
    expected = local.encode(read_xyz(cloud)).keypoints
    np.testing.assert_allclose(marker_points(spheres), expected, atol=1e-5)
    assert len(spheres.colors) == 8 and len({(c.r, c.g, c.b) for c in spheres.colors}) == 8
    labels = [m for m in msg.markers[1:] if m.type == Marker.TEXT_VIEW_FACING]
    assert sorted(m.text for m in labels) == sorted(str(i) for i in range(8))
    poses = ros.probe.wait_for("poses", lambda m: m.header.frame_id == "camera_a")
    np.testing.assert_allclose([[p.position.x, p.position.y, p.position.z] for p in poses.poses], expected, atol=1e-5)


def test_service_on_the_latest_cloud(ros, local, mug_cloud):
    cloud = make_xyz_cloud(mug_cloud + [0.5, 0.25, 0.0], header=header("camera_b", 202))
    ros.probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.frame_id == "camera_b")
    angle = 2.0
    response = ros.probe.call(angle, include_occupancy=True)
    assert response.success, response.message
    assert response.header.frame_id == "camera_b" and response.header.stamp.sec == 202
    enc = local.encode(read_xyz(cloud))
    goal = local.goal(enc, angle, include_probabilities=True)
    got = read_xyz(response.goal_cloud, dtype=np.float64)
    assert response.goal_cloud.header.frame_id == "camera_b"
    assert 0 < len(got) == len(goal.points)
    np.testing.assert_allclose(got, goal.points, atol=1e-5)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in response.keypoints], goal.keypoints, atol=1e-5)
    assert response.voxel_size == pytest.approx(goal.voxel_size, rel=1e-6)
    o = response.grid_origin  # the goal's grid: the cloud's, carried along by the turn about the axis
    origin = np.array([o.x, o.y, o.z])
    np.testing.assert_allclose(origin, goal.grid_origin, atol=1e-9)
    if hasattr(response, "rotation_axis"):  # the service type's newer field: the axis the goal turned about
        a = response.rotation_axis
        axis = getattr(goal, "axis_point", None)
        np.testing.assert_allclose([a.x, a.y, a.z], enc.grid_map.center if axis is None else axis, atol=1e-9)
    occupancy = np.asarray(response.occupancy, dtype=np.float32).reshape(64, 64, 64)
    np.testing.assert_allclose(occupancy, goal.probabilities, atol=1e-5)
    # The occupancy layout the .srv documents: voxel (i, j, k) centred at origin + size * ((i, j, k) - 31.5).
    idx = np.argwhere(occupancy > 0.5)
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(origin + response.voxel_size * (idx - 31.5), axis=0), atol=1e-5)
    # The goal also goes out as a CUBE_LIST (after the reply) and as a cloud.
    markers = ros.probe.wait_for("goal_markers", lambda m: m.markers[0].header.stamp.sec == 202)
    cubes = markers.markers[0]
    assert cubes.type == Marker.CUBE_LIST and len(cubes.points) == len(got)
    np.testing.assert_allclose(marker_points(cubes), got, atol=1e-6)  # the goal's voxels, in order
    assert cubes.header.frame_id == "camera_b"
    np.testing.assert_allclose(marker_points(markers.markers[1]), goal.keypoints, atol=1e-6)
    assert cubes.scale.x == pytest.approx(response.voxel_size)
    ros.probe.wait_for("goal_cloud", lambda m: m.header.stamp.sec == 202 and m.width == len(got))


def test_service_with_a_cloud_in_the_request(ros, local, mug_cloud):
    # float64 big-endian x/y/z after an intensity field, with padding: any layout the converter reads.
    pts = mug_cloud[::2] + [-1.0, 2.0, 0.3]
    fields = [PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1)] + [
        PointField(name=n, offset=8 + 8 * i, datatype=PointField.FLOAT64, count=1) for i, n in enumerate("xyz")]
    data = bytearray(40 * len(pts))
    for i, p in enumerate(pts):
        struct.pack_into(">f4x3d", data, 40 * i, 1.0, *p)
    cloud = PointCloud2(header=header("request_frame", 303), height=1, width=len(pts), fields=fields,
                        is_bigendian=True, point_step=40, row_step=40 * len(pts), data=bytes(data), is_dense=True)
    response = ros.probe.call(-0.75, cloud=cloud)
    assert response.success, response.message
    assert response.header.frame_id == "request_frame" and len(response.occupancy) == 0
    goal = local.goal(local.encode(pts), -0.75)
    np.testing.assert_allclose(read_xyz(response.goal_cloud, dtype=np.float64), goal.points, atol=1e-5)


def field_list(names, datatype=PointField.FLOAT32):
    return [PointField(name=n, offset=4 * i, datatype=datatype, count=1) for i, n in enumerate(names)]


def raw_cloud(fields, n, frame="bad", data=None, point_step=12):
    return PointCloud2(header=header(frame, 1), height=1, width=n, fields=fields, is_bigendian=False,
                       point_step=point_step, row_step=point_step * n, data=data if data is not None else bytes(point_step * n))


BAD_CLOUDS = {
    "nan_only": (lambda: make_xyz_cloud(np.full((100, 3), np.nan)), "only 0 finite points"),
    "too_small": (lambda: make_xyz_cloud(np.random.default_rng(0).normal(size=(5, 3))), "min_points"),
    "no_z": (lambda: raw_cloud(field_list("xy"), 50, point_step=8), "no z field"),
    "int16_coordinates": (lambda: raw_cloud(field_list("xyz", PointField.INT16), 50), "only FLOAT32 and FLOAT64"),
    "too_large": (lambda: make_xyz_cloud(np.random.default_rng(0).normal(size=(MAX_POINTS + 1, 3))), "more than the limit"),
    "short_data": (lambda: raw_cloud(field_list("xyz"), 50, data=bytes(100)), "bytes"),
}


@pytest.mark.parametrize("name", sorted(BAD_CLOUDS))
def test_bad_request_clouds_fail_cleanly(ros, name):
    make, message = BAD_CLOUDS[name]
    response = ros.probe.call(0.3, cloud=make())
    assert not response.success and message in response.message, response.message
    assert ros.node.alive()


@pytest.mark.parametrize("angle", [math.nan, math.inf, -math.inf])
def test_non_finite_angle_fails_cleanly(ros, angle):
    response = ros.probe.call(angle)
    assert not response.success and "finite" in response.message


def test_bad_topic_clouds_warn_and_the_node_keeps_serving(ros, mug_cloud):
    usable = make_xyz_cloud(mug_cloud, header=header("camera_before", 403))
    ros.probe.publish_until(usable, "markers", lambda m: m.markers[0].header.frame_id == "camera_before")
    for name, (make, message) in sorted(BAD_CLOUDS.items()):
        # Keep publishing: with the sensor-data QoS (depth 1) the node may drop a cloud behind another.
        cloud, deadline = make(), time.monotonic() + 20
        while not any("ignoring a cloud" in line and message in line for line in list(ros.node.lines)):
            assert time.monotonic() < deadline, f"no warning for {name}:\n{ros.node.output[-3000:]}"
            ros.probe.pub.publish(cloud)
            time.sleep(0.1)
    assert ros.node.alive()
    # Still serving, on the last usable cloud (bad clouds do not replace it).
    response = ros.probe.call(1.0)
    assert response.success, response.message
    assert response.header.frame_id == "camera_before"
    cloud = make_xyz_cloud(mug_cloud, header=header("camera_after", 404))
    ros.probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.frame_id == "camera_after")


def test_service_calls_while_clouds_stream(ros, mug_cloud):
    stop = threading.Event()
    sent = [0]

    def stream():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            ros.probe.pub.publish(make_xyz_cloud(mug_cloud + rng.normal(scale=1e-3, size=3), header=header("stream", 500)))
            sent[0] += 1
            time.sleep(0.02)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        ros.probe.wait_for("markers", lambda m: m.markers[0].header.frame_id == "stream")
        results = [ros.probe.call(0.1 * i, cloud=make_xyz_cloud(mug_cloud) if i % 2 else None) for i in range(8)]
    finally:
        stop.set()
        thread.join()
    assert all(r.success for r in results), [r.message for r in results]
    assert sent[0] > 10 and ros.node.alive()


def test_parameters_are_validated_and_applied(ros, mug_cloud):
    bad = ros.probe.set_param("crop.max", [-5.0, -5.0, -5.0], ParameterType.PARAMETER_DOUBLE_ARRAY)
    assert not bad.successful and "crop box" in bad.reason
    out_of_range = ros.probe.set_param("object_size", -1.0, ParameterType.PARAMETER_DOUBLE)
    assert not out_of_range.successful
    ok = ros.probe.set_param("object_size", 0.13, ParameterType.PARAMETER_DOUBLE)
    assert ok.successful
    try:
        response = ros.probe.call(0.0, cloud=make_xyz_cloud(mug_cloud))
        assert response.success, response.message
        assert response.voxel_size == pytest.approx(0.13 / 2 / 0.96 / 32, rel=1e-5)  # half extent / 32
        # An object size the cloud cannot be: the conditioning finds no such object and says so.
        assert ros.probe.set_param("object_size", 0.5, ParameterType.PARAMETER_DOUBLE).successful
        refused = ros.probe.call(0.0, cloud=make_xyz_cloud(mug_cloud))
        assert not refused.success and "object size (500 mm)" in refused.message
    finally:
        assert ros.probe.set_param("object_size", 0.0, ParameterType.PARAMETER_DOUBLE).successful


@pytest.mark.parametrize("params, message", [
    ({"model_path": "/no/such/folder/none.safetensors"}, "checkpoint metadata not found"),
    ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16, got 'fp8'"),
])
def test_node_refuses_bad_start_parameters_with_a_clear_message(tmp_path, params, message):
    proc = RosProcess(node_command(CONFIG, params=params), ros_env(pick_domain_id(), tmp_path))
    try:
        assert proc.wait_for_line("cannot start", 60), proc.output
        proc.proc.wait(timeout=20)
    finally:
        proc.stop()
    assert proc.proc.returncode == 2
    assert message in proc.output


def run_client(ros, tmp_path, *args, timeout=60):
    import subprocess
    import sys

    env = ros_env(ros.domain, tmp_path / "client_home")
    return subprocess.run([sys.executable, "-m", "kp_perception.client", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_client_cli_saves_the_goal(ros, local, mug_cloud, tmp_path, dtype):
    """The cloud goes in the file's precision and the goal comes back in the node's answer's."""
    np.save(tmp_path / "cloud.npy", mug_cloud.astype(dtype))
    out = tmp_path / "out" / "goal"
    result = run_client(ros, tmp_path, "90", "--degrees", "--cloud", tmp_path / "cloud.npy", "--frame-id", "cli_frame",
                        "--out", out, "--occupancy", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    import json

    summary = json.loads(result.stdout)
    assert summary["success"] and summary["frame_id"] == "cli_frame"
    goal = local.goal(local.encode(mug_cloud.astype(dtype)), math.pi / 2)
    saved = np.load(out.with_name("goal.npy"))
    assert saved.dtype == dtype
    assert summary["goal_voxels"] == len(goal.points) == len(saved)
    np.testing.assert_allclose(saved, goal.points, atol=1e-5)
    head, body = out.with_name("goal.ply").read_bytes().split(b"end_header\n", 1)
    assert (b"property double x" in head) == (dtype == np.float64)
    np.testing.assert_array_equal(np.frombuffer(body, "<f8" if dtype == np.float64 else "<f4").reshape(-1, 3), saved)
    assert np.load(out.with_name("goal_keypoints.npy")).shape == (8, 3)
    assert np.load(out.with_name("goal_occupancy.npy")).shape == (64, 64, 64)


def test_client_cli_reports_refusals_and_missing_services(ros, tmp_path):
    refused = run_client(ros, tmp_path, "nan", "--out", tmp_path / "g")
    assert refused.returncode == 1 and "finite" in refused.stdout
    missing = run_client(ros, tmp_path, "1.0", "--service", "/nobody/rotate_goal", "--timeout", "1")
    assert missing.returncode == 2 and "not available" in missing.stderr
    bad_file = run_client(ros, tmp_path, "1.0", "--cloud", tmp_path / "missing.npy")
    assert bad_file.returncode == 3 and "no such file" in bad_file.stderr


# ---- defects found by the live test (issue 10) ------------------------------------------------------------

def organized_cloud(points, frame, sec, height=480, width=640, nan_fraction=0.4, nanosec=0):
    """A depth-camera-like organized cloud: x, y, z float32 + packed rgb (point_step 16), NaN where no return."""
    rng = np.random.default_rng(sec)
    count = height * width
    rec = np.zeros(count, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
    valid = rng.random(count) >= nan_fraction
    xyz = np.full((count, 3), np.nan, dtype=np.float32)
    pick = rng.choice(len(points), size=int(valid.sum()), replace=True)
    xyz[valid] = points[pick] + rng.normal(scale=2e-4, size=(int(valid.sum()), 3))
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["rgb"] = rng.random(count)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(["x", "y", "z", "rgb"])]
    h = header(frame, sec)
    h.stamp.nanosec = nanosec
    msg = PointCloud2(header=h, height=height, width=width, fields=fields, is_bigendian=False, point_step=16,
                      row_step=16 * width, is_dense=False)
    import array

    msg.data = array.array("B", rec.tobytes())
    return msg, xyz[valid]


def test_large_organized_clouds_arrive_with_the_default_qos(ros, mug_cloud):
    """A 640x480 xyz+rgb cloud (4.9 MB) from a reliable publisher, as depth-camera drivers publish by default."""
    ros.probe.publish_until(make_xyz_cloud(mug_cloud, header=header("qos_warmup", 600)), "markers",
                            lambda m: m.markers[0].header.frame_id == "qos_warmup")
    arrived = 0
    for i in range(5):
        cloud, _ = organized_cloud(mug_cloud, "depth_camera", 610 + i)
        assert len(cloud.data) == 640 * 480 * 16
        ros.probe.pub.publish(cloud)
        try:
            ros.probe.wait_for("markers", lambda m, s=610 + i: m.markers[0].header.stamp.sec == s, timeout=20)
            arrived += 1
        except AssertionError:
            pass
    assert arrived == 5, f"only {arrived} of 5 large clouds reached the node"


def float64_cloud(points, frame, sec):
    fields = [PointField(name=n, offset=8 * i, datatype=PointField.FLOAT64, count=1) for i, n in enumerate("xyz")]
    pts = np.ascontiguousarray(points, dtype="<f8")
    return PointCloud2(header=header(frame, sec), height=1, width=len(pts), fields=fields, is_bigendian=False,
                       point_step=24, row_step=24 * len(pts), data=pts.tobytes(), is_dense=True)


def test_float64_clouds_far_from_the_origin_keep_their_precision(ros, local, mug_cloud):
    """A mug 1e5 m from the frame's origin (map/UTM frames): the goal is the same as for the mug at the origin."""
    offset = np.array([1.0e5, -2.5e5, 40.0])
    far = float64_cloud(mug_cloud + offset, "utm", 701)
    response = ros.probe.call(0.7, cloud=far)
    assert response.success, response.message
    got = read_xyz(response.goal_cloud, dtype=np.float64)
    near = local.goal(local.encode(mug_cloud), 0.7)
    assert len(near.points) > 0
    # Every voxel of the goal near the origin is there, shifted by the offset (to well below a voxel).
    assert len(got) == len(near.points)
    np.testing.assert_allclose(np.sort(got - offset, axis=0), np.sort(near.points, axis=0), atol=1e-6)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in response.keypoints] - offset, near.keypoints, atol=1e-6)
    o = response.grid_origin
    np.testing.assert_allclose(np.array([o.x, o.y, o.z]) - offset, near.grid_origin, atol=1e-6)
    # The same on the topic: keypoint markers of the far cloud, in float64.
    msg = ros.probe.publish_until(float64_cloud(mug_cloud + offset, "utm", 702), "markers",
                                  lambda m: m.markers[0].header.stamp.sec == 702)
    np.testing.assert_allclose(marker_points(msg.markers[0]) - offset, local.encode(mug_cloud).keypoints, atol=1e-6)


@pytest.mark.parametrize("angle", [1e39, 1e300, -1e300, 0.5 + 2 * math.pi * 1e6])
def test_huge_angles_are_reduced_before_the_rotation(ros, local, mug_cloud, angle):
    response = ros.probe.call(angle, cloud=make_xyz_cloud(mug_cloud))
    assert response.success, response.message
    keypoints = np.array([[p.x, p.y, p.z] for p in response.keypoints])
    assert np.isfinite(keypoints).all(), keypoints
    expected = local.goal(local.encode(mug_cloud.astype(np.float32)), math.remainder(angle, 2 * math.pi))
    np.testing.assert_allclose(keypoints, expected.keypoints, atol=1e-5)
    got = read_xyz(response.goal_cloud, dtype=np.float64)
    assert len(got) == len(expected.points) > 0
    np.testing.assert_allclose(got, expected.points, atol=1e-5)


def test_a_goal_float32_cannot_hold_is_never_a_success(ros):
    """Coordinates near float32's maximum: answering success with inf points would poison a planner."""
    rng = np.random.default_rng(5)
    pts = np.stack([np.full(3000, 3.3e38), rng.uniform(-1e38, 1e38, 3000), rng.uniform(-1e38, 1e38, 3000)], axis=1)
    response = ros.probe.call(0.3, cloud=make_xyz_cloud(pts.astype(np.float32)), include_occupancy=True)
    if response.success:
        got = read_xyz(response.goal_cloud, dtype=np.float64, keep_nonfinite=True)
        values = [got, [[p.x, p.y, p.z] for p in response.keypoints],
                  [response.grid_origin.x, response.grid_origin.y, response.grid_origin.z], [response.voxel_size],
                  list(response.occupancy)]
        assert all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values), response.message
    else:
        assert any(reason in response.message for reason in ("finite", "float32", "points are left of the object")), \
            response.message
    assert ros.node.alive()


def test_object_size_below_a_millimetre_is_refused_naming_the_parameter(ros, mug_cloud):
    result = ros.probe.set_param("object_size", 1e-9, ParameterType.PARAMETER_DOUBLE)
    assert not result.successful, "object_size = 1e-9 m was accepted"
    assert "object_size" in result.reason and "0.001" in result.reason, result.reason
    assert ros.probe.call(0.2, cloud=make_xyz_cloud(mug_cloud)).success


def test_diagnostics_report_rate_refusals_latency_and_model(ros, mug_cloud, tiny_model_path):
    for _ in range(3):
        ros.probe.call(0.1, cloud=make_xyz_cloud(np.zeros((5, 3))))  # refused: too few points
        ros.probe.pub.publish(make_xyz_cloud(np.zeros((5, 3)), header=header("diag", 800)))  # and on the topic
        time.sleep(0.2)
    ros.probe.publish_until(make_xyz_cloud(mug_cloud, header=header("diag", 801)), "markers",
                            lambda m: m.markers[0].header.stamp.sec == 801)
    assert ros.probe.call(0.3).success
    ros.probe.clear("diagnostics")

    def ours(array):
        return any(s.name == "kp_perception_node: perception" for s in array.status)

    array = ros.probe.wait_for("diagnostics", ours, timeout=15)
    status = next(s for s in array.status if s.name == "kp_perception_node: perception")
    values = diagnostic_values(status)
    assert values["state"] == "active" and values["input topic"] == TOPIC
    assert values["input QoS"].startswith("reliable")
    assert float(values["input rate"].split()[0]) > 0
    assert int(values["clouds used"]) >= 1 and int(values["clouds received"]) >= int(values["clouds used"])
    assert int(values["clouds refused: too few points"]) >= 1
    assert "p50" in values["encode latency"] and "p50" in values["rotate_goal latency"]
    # Clouds stamped 800-801 s after the epoch (earlier tests sent older ones) are decades old on arrival.
    oldest_ms = float(values["cloud age on arrival (stamp to callback)"].split("max ")[1].split(" ms")[0])
    assert time.time() - 801 - 1 <= oldest_ms / 1000 <= time.time()
    assert int(values["rotate_goal refused"]) >= 3 and "min_points" in values["last rotate_goal refusal"]
    assert values["model file"] == str(tiny_model_path)
    assert "K=8" in values["model"]
    # OK with a rate, or WARN saying why (most clouds refused: the bad-cloud tests may have run before).
    assert (status.level == b"\x00") == status.message.endswith("clouds/s"), (status.level, status.message)
    assert status.level == b"\x00" or status.message.startswith("most clouds refused"), status.message


def test_a_late_viewer_gets_the_last_goal(ros, mug_cloud):
    """~/goal_cloud and ~/goal_markers keep the last goal for a subscriber that comes later (RViz opened after
    the call)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import PointCloud2 as Cloud

    response = ros.probe.call(0.4, cloud=make_xyz_cloud(mug_cloud, header=header("late", 901)))
    assert response.success
    got = []
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = ros.probe.node.create_subscription(Cloud, f"{NODE}/goal_cloud", got.append, qos)
    try:
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ros.probe.node.destroy_subscription(sub)
    assert got and got[-1].header.stamp.sec == 901 and got[-1].width == response.goal_cloud.width


def test_the_answer_and_a_topic_carry_the_objects_pose(ros, local, mug_cloud):
    from geometry_msgs.msg import PoseStamped

    cloud = make_xyz_cloud(mug_cloud + [0.2, 0.0, 0.0], header=header("pose_frame", 950))
    response = ros.probe.call(0.3, cloud=cloud)
    assert response.success, response.message
    expected = local.pose(local.encode(read_xyz(cloud)))
    p = response.object_pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], expected.position, atol=1e-5)
    assert response.object_pose.orientation.w == pytest.approx(1.0)  # this model has no canonical yaw
    assert response.yaw_spread == pytest.approx(-1.0)  # nor a yaw calibration
    got = []
    sub = ros.probe.node.create_subscription(PoseStamped, f"{NODE}/object_pose", got.append, 10)
    try:
        ros.probe.publish_until(cloud, "markers", lambda m: bool(got) and got[-1].header.stamp.sec == 950)
    finally:
        ros.probe.node.destroy_subscription(sub)
    q = got[-1].pose.position
    np.testing.assert_allclose([q.x, q.y, q.z], expected.position, atol=1e-5)
    assert got[-1].header.frame_id == "pose_frame"
