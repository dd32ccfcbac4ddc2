"""The test side of the node tests: a node in this process, on the node under test's private local domain, with
a cloud publisher, subscriptions that collect what the node publishes, and its service and parameter clients.
Also starting a node subprocess on such a domain (:func:`start_node`)."""

from __future__ import annotations

import os
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from kp_interfaces.srv import RotateGoal
from kp_perception.demo.processes import RosProcess, pick_domain_id, ros_env

NODE = "/kp_perception_node"


def header(frame, sec, nanosec=0):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def join_domain(domain, home) -> None:
    """This process joins the node's local domain (one rclpy context per domain id in these tests)."""
    for key, value in ros_env(domain, home).items():
        if key.startswith("ROS_"):
            os.environ[key] = value


def start_node(cmd, home, ready="ready", timeout=90.0):
    """A node subprocess on a fresh local domain, once it printed ``ready``: (process, domain id)."""
    domain = pick_domain_id()
    node = RosProcess(cmd, ros_env(domain, home))
    if not node.wait_for_line(ready, timeout):
        node.stop()
        raise AssertionError(f"the node did not start:\n{node.output}")
    return node, domain


class Probe:
    """Publisher on ``topic``, subscriptions collecting the node's output, service and parameter clients."""

    def __init__(self, domain_id, topic, name="kp_test_probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.messages = {"markers": [], "poses": [], "goal_markers": [], "goal_cloud": [], "diagnostics": []}
        sub = lambda kind, typ, topic: self.node.create_subscription(  # noqa: E731
            typ, topic, lambda m: self._keep(kind, m), 10)
        sub("markers", MarkerArray, f"{NODE}/keypoint_markers")
        sub("poses", PoseArray, f"{NODE}/keypoints")
        sub("goal_markers", MarkerArray, f"{NODE}/goal_markers")
        sub("goal_cloud", PointCloud2, f"{NODE}/goal_cloud")
        sub("diagnostics", DiagnosticArray, "/diagnostics")
        self.pub = self.node.create_publisher(PointCloud2, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.client = self.node.create_client(RotateGoal, f"{NODE}/rotate_goal")
        self.params = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        # Single-threaded, as the node (kp_perception/runner.py: the multi-threaded one stalled messages here).
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, kind, msg):
        with self.lock:
            self.messages[kind].append(msg)

    def clear(self, kind):
        with self.lock:
            self.messages[kind].clear()

    def wait_for(self, kind, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for msg in self.messages[kind]:
                    if predicate(msg):
                        return msg
            time.sleep(0.02)
        raise AssertionError(f"no matching {kind} message within {timeout} s")

    def publish_until(self, cloud, kind, predicate, timeout=30.0, publisher=None):
        """Publish ``cloud`` repeatedly (the subscription may not be matched yet) until a message matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (publisher or self.pub).publish(cloud)
            try:
                return self.wait_for(kind, predicate, timeout=0.5)
            except AssertionError:
                pass
        raise AssertionError(f"no {kind} message for the published cloud within {timeout} s")

    def call(self, angle=0.0, cloud=None, include_occupancy=False, timeout=30.0):
        request = RotateGoal.Request(angle=float(angle), include_occupancy=include_occupancy)
        if cloud is not None:
            request.cloud = cloud
        return self.client.call(request, timeout_sec=timeout)

    def set_param(self, name, value, kind):
        field = {ParameterType.PARAMETER_DOUBLE: "double_value", ParameterType.PARAMETER_DOUBLE_ARRAY: "double_array_value",
                 ParameterType.PARAMETER_STRING: "string_value", ParameterType.PARAMETER_BOOL: "bool_value"}[kind]
        value_msg = ParameterValue(type=kind, **{field: value})
        result = self.params.call(SetParameters.Request(parameters=[ParameterMsg(name=name, value=value_msg)]), timeout_sec=10)
        return result.results[0]

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def diagnostic_values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}
