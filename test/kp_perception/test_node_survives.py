"""The node survives what it receives (issue 23), in this process: each callback is called as the executor would
call it, and none may raise, whatever the message, the parameter change or a failure inside."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("kp_interfaces.srv")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from kp_interfaces.srv import RotateGoal  # noqa: E402
from kp_perception.cloud_io import make_xyz_cloud  # noqa: E402
from kp_perception.demo.processes import pick_domain_id  # noqa: E402
from kp_perception.node import PerceptionNode  # noqa: E402


@pytest.fixture
def node(tiny_model_path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=pick_domain_id())
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(tiny_model_path)), Parameter("num_threads", value=1),
        Parameter("precision", value="fp32")])
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def two_points():
    return make_xyz_cloud(np.zeros((2, 3)))


def huge_point_step():
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    return PointCloud2(height=1, width=1, fields=fields, is_bigendian=False, point_step=2**31, row_step=2**31,
                       data=bytes(12), is_dense=True)


def goal(node, angle=0.3, cloud=None):
    request = RotateGoal.Request(angle=angle)
    if cloud is not None:
        request.cloud = cloud
    return node.perception._on_rotate_goal(request, RotateGoal.Response())


def test_the_reported_pair_of_clouds_is_refused_on_the_topic_and_by_the_service(node):
    """A 2-point cloud, then point_step = 2^31: both refused with their reasons, no internal error."""
    perception = node.perception
    perception._on_cloud(two_points())
    perception._on_cloud(huge_point_step())
    assert perception.stats.refused["internal error"] == 0
    assert "2147483648" in perception.stats.last_refusal
    first, second = goal(node, cloud=two_points()), goal(node, cloud=huge_point_step())
    assert not first.success and "min_points" in first.message
    assert not second.success and "the header needs" in second.message


def test_an_ordinary_refusal_then_an_internal_error_at_the_same_log_site(node, mug_cloud, monkeypatch):
    perception = node.perception
    perception._on_cloud(two_points())  # a warning

    def broken(*args, **kwargs):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr(perception.pipeline, "encode", broken)
    perception._on_cloud(make_xyz_cloud(mug_cloud))  # an error, from the same method: rclpy refused this
    assert perception.stats.refused["internal error"] == 1
    assert not goal(node, cloud=two_points()).success
    internal = goal(node, cloud=make_xyz_cloud(mug_cloud))
    assert not internal.success and internal.message.startswith("internal error: RuntimeError")
    monkeypatch.undo()
    assert goal(node, cloud=make_xyz_cloud(mug_cloud)).success


@pytest.mark.parametrize("period", [1.0, 0.0, 3600.0])
def test_changing_warn_throttle_sec_between_refusals(node, period):
    perception = node.perception
    perception._on_cloud(two_points())
    assert node.set_parameters([Parameter("warn_throttle_sec", value=period)])[0].successful
    perception._on_cloud(two_points())  # rclpy: "Logging filter parameters cannot be changed between calls"
    assert not goal(node, cloud=two_points()).success
    assert node.set_parameters([Parameter("warn_throttle_sec", value=5.0)])[0].successful
    assert not goal(node, cloud=two_points()).success
    assert perception.stats.refused_total() == 2 and perception.stats.goals_refused == 2


def test_every_callback_survives_an_exception_inside_and_the_node_still_answers(node, mug_cloud, monkeypatch):
    perception = node.perception
    cloud = make_xyz_cloud(mug_cloud)

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    cases = [
        (perception, "_encode", lambda: perception._on_cloud(cloud)),
        (perception.stats, "cloud_received", lambda: perception._on_cloud(cloud)),
        (perception.stats, "goal_refused", lambda: goal(node, cloud=two_points())),
        (perception.stats, "input_rate", perception._on_timer),
        (perception.stats, "clouds_lost",
         lambda: perception.cloud_input._on_message_lost(type("Info", (), {"total_count_change": 1}))),
        (perception.node, "resolve_topic_name", lambda: perception.cloud_input._on_incompatible_qos(None)),
        (perception.goal_cloud_pub, "publish", perception._publish_goal_views),
        (perception, "_pipeline_config", lambda: perception.on_parameters_set([])),
    ]
    for owner, name, call in cases:
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, broken)
            if name == "publish":
                perception._pending_views = (None, None, None)
            call()  # must not raise
        assert goal(node, cloud=cloud).success, name
    with monkeypatch.context() as patch:
        patch.setattr("kp_perception.perception.read_settings", broken)
        verdict = perception.on_set_parameters([Parameter("object_size", value=0.2)])
        assert not verdict.successful and "internal error" in verdict.reason
    service = goal  # the service's own callback, failing where its refusal path would
    with monkeypatch.context() as patch:
        patch.setattr(perception, "_rotate_goal", broken)
        answer = service(node, cloud=cloud)
        assert not answer.success and "internal error" in answer.message
    assert perception.failures.total() >= len(cases)
    assert goal(node, cloud=cloud).success


def test_parameter_refusals_are_short_and_name_the_parameter(node):
    perception = node.perception
    long_crop = perception.on_set_parameters([Parameter("crop.min", value=[0.0] * 1_000_000)])
    assert not long_crop.successful and "crop.min" in long_crop.reason and len(long_crop.reason) < 200
    transform = perception.on_set_parameters([Parameter("input_transform", value=[1.0] * 1_000_000)])
    assert not transform.successful and "input_transform" in transform.reason and len(transform.reason) < 200
    colours = perception.on_set_parameters([Parameter("marker.keypoint_colors", value=[0.5, 2.0, 0.1])])
    assert not colours.successful and "marker.keypoint_colors" in colours.reason
    goal_colour = perception.on_set_parameters([Parameter("marker.goal_color", value=[0.5, 0.5])])
    assert not goal_colour.successful and "marker.goal_color" in goal_colour.reason
