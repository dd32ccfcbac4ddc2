"""Stopping kp_perception_node under load: SIGINT and SIGTERM end it with status 0 and nothing alarming on its
output (no traceback, no "exception was never retrieved", no "Failed to publish").

Each case starts its own node subprocess, streams clouds at it, calls the service back to back with a
subscriber on the goal markers (the worst case: a goal being published while the node stops), then signals it.
"""

import os
import signal
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("kp_interfaces.srv")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from kp_interfaces.srv import RotateGoal  # noqa: E402
from kp_perception.cloud_io import make_xyz_cloud  # noqa: E402
from kp_perception.demo.processes import RosProcess, node_command, pick_domain_id, ros_env  # noqa: E402

TOPIC = "/kp_stop_test/points"
NOISE = ("Traceback", "never retrieved", "Failed to publish", "RCLError", "InvalidHandle")


class Load:
    """Clouds at ~30 Hz, back-to-back service calls and a goal-marker subscriber, from this process."""

    def __init__(self, domain, points, executable_name):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(f"kp_stop_load_{executable_name}", context=self.context)
        self.pub = self.node.create_publisher(PointCloud2, TOPIC, 2)
        self.client = self.node.create_client(RotateGoal, "/kp_perception_node/rotate_goal")
        self.goals = 0
        self.node.create_subscription(MarkerArray, "/kp_perception_node/goal_markers", self._on_goal, 2)
        self.answers = 0
        self.cloud = make_xyz_cloud(points)
        self.stop = threading.Event()
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.threads = [threading.Thread(target=self.executor.spin, daemon=True),
                        threading.Thread(target=self._stream, daemon=True),
                        threading.Thread(target=self._call, daemon=True)]

    def _on_goal(self, msg):
        self.goals += 1

    def _stream(self):
        while not self.stop.is_set():
            self.cloud.header.stamp = self.node.get_clock().now().to_msg()
            self.pub.publish(self.cloud)
            time.sleep(1 / 30)

    def _call(self):
        if not self.client.wait_for_service(timeout_sec=60):
            return
        i = 0
        while not self.stop.is_set():
            future = self.client.call_async(RotateGoal.Request(angle=0.1 * i))
            deadline = time.monotonic() + 5
            while not future.done() and time.monotonic() < deadline and not self.stop.is_set():
                time.sleep(0.005)
            if future.done() and future.result() is not None and future.result().success:
                self.answers += 1
            i += 1

    def start(self):
        for t in self.threads:
            t.start()

    def close(self):
        self.stop.set()
        for t in self.threads[1:]:
            t.join(timeout=10)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_under_load_is_clean(tiny_model_path, mug_cloud, tmp_path, sig):
    domain = pick_domain_id()
    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "num_threads": 1, "warn_throttle_sec": 0.0}
    node = RosProcess(node_command(params=params), ros_env(domain, tmp_path))
    load = None
    try:
        assert node.wait_for_line("ready", 90), f"the node did not start:\n{node.output}"
        for key, value in ros_env(domain, tmp_path).items():
            if key.startswith("ROS_"):
                os.environ[key] = value
        load = Load(domain, mug_cloud, sig.name.lower())
        load.start()
        deadline = time.monotonic() + 60
        while (load.answers < 3 or load.goals < 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert load.answers >= 3 and load.goals >= 1, f"no load reached the node:\n{node.output[-3000:]}"
        os.killpg(node.proc.pid, sig)  # while clouds, calls and goal markers are in flight
        try:
            code = node.proc.wait(timeout=30)
        except Exception:
            code = None
    finally:
        if load is not None:
            load.close()
        node.stop()
    node._reader.join(timeout=5)
    output = node.output
    assert code == 0, f"exit status {code} after {sig.name}:\n{output[-4000:]}"
    noise = [line for line in output.splitlines() if any(word in line for word in NOISE)]
    assert not noise, f"noise on stopping with {sig.name}:\n" + "\n".join(noise) + f"\n---\n{output[-4000:]}"
    assert "stopping:" in output, "the node did not log its summary while stopping"
