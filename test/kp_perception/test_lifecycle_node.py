"""kp_perception_managed_node over loopback DDS, driven through the lifecycle services as a launch file or a
lifecycle manager would: configure loads the model (diagnostics say inactive), activate subscribes and serves,
deactivate withdraws both, cleanup releases, a failed configure leaves the node unconfigured and alive. Also
the input QoS in auto mode meeting a best-effort publisher.
"""

import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("kp_interfaces.srv")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from kp_perception.cloud_io import make_xyz_cloud  # noqa: E402
from kp_perception.demo.processes import node_command  # noqa: E402
from ros_probe import NODE, Probe, diagnostic_values, header, join_domain, start_node  # noqa: E402

TOPIC = "/kp_managed_test/points"


class Lifecycle:
    def __init__(self, probe):
        self.probe = probe
        self.change = probe.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get = probe.node.create_client(GetState, f"{NODE}/get_state")
        assert self.change.wait_for_service(timeout_sec=30) and self.get.wait_for_service(timeout_sec=30)

    def state(self) -> int:
        return self.get.call(GetState.Request(), timeout_sec=30).current_state.id

    def transition(self, transition_id) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.change.call(request, timeout_sec=120).success


def endpoints(probe, timeout=15.0) -> tuple[set, set]:
    """The node's subscribed topics and its services, as the graph shows them once it shows the node's /rosout
    publisher and get_parameters service (every node has them): from then on a name missing is missing, not
    undiscovered."""
    name, namespace = NODE.strip("/"), "/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            publishers = {n for n, _ in probe.node.get_publisher_names_and_types_by_node(name, namespace)}
            services = {n for n, _ in probe.node.get_service_names_and_types_by_node(name, namespace)}
            topics = {n for n, _ in probe.node.get_subscriber_names_and_types_by_node(name, namespace)}
        except Exception:  # the node is not in the graph yet
            publishers = services = set()
        if "/rosout" in publishers and f"{NODE}/get_parameters" in services:
            return topics, services
        time.sleep(0.1)
    raise AssertionError(f"{NODE} did not appear in the graph within {timeout} s")


def until(condition, timeout=15.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


ROTATE_GOAL = f"{NODE}/rotate_goal"


@pytest.fixture(scope="module")
def managed(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("managed_home")
    params = {"model_path": str(tiny_model_path), "input_topic": TOPIC, "num_threads": 1, "warn_throttle_sec": 0.0,
              "diagnostics_period": 0.5}
    node, domain = start_node(node_command(params=params, managed=True), home, ready="unconfigured")
    join_domain(domain, home)
    probe = Probe(domain, TOPIC, name="kp_managed_probe")
    try:
        yield node, probe, Lifecycle(probe)
    finally:
        probe.close()
        code = node.stop()
        print(node.output)
    assert code == 0, f"the managed node exited with {code} on SIGINT"
    noise = [line for line in node.lines if any(w in line for w in ("Traceback", "never retrieved", "Failed to publish"))]
    assert not noise, noise


def test_lifecycle_configure_activate_deactivate_cleanup(managed, mug_cloud):
    node, probe, lifecycle = managed
    if lifecycle.state() == State.PRIMARY_STATE_ACTIVE:  # another test of this module ran first
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    if lifecycle.state() == State.PRIMARY_STATE_INACTIVE:
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert until(lambda: not {ROTATE_GOAL, TOPIC} & set.union(*endpoints(probe))), "serving before configure"

    probe.clear("diagnostics")
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    assert node.wait_for_line("configured: model", 10)
    diag = probe.wait_for("diagnostics", lambda a: any(s.name.endswith("perception") for s in a.status))
    assert diagnostic_values(diag.status[0])["state"] == "inactive"
    topics, services = endpoints(probe)
    assert ROTATE_GOAL not in services and TOPIC not in topics, "serving or listening while inactive"
    cloud = make_xyz_cloud(mug_cloud, header=header("managed", 11))

    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
    assert probe.client.wait_for_service(timeout_sec=30)
    assert until(lambda: {ROTATE_GOAL, TOPIC} <= set.union(*endpoints(probe))), "the graph does not show it active"
    probe.publish_until(cloud, "markers", lambda m: m.markers[0].header.frame_id == "managed")
    response = probe.call(0.5)
    assert response.success, response.message
    probe.clear("diagnostics")
    diag = probe.wait_for("diagnostics", lambda a: diagnostic_values(a.status[0]).get("state") == "active")
    assert int(diagnostic_values(diag.status[0])["clouds used"]) >= 1

    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    assert until(lambda: not {ROTATE_GOAL, TOPIC} & set.union(*endpoints(probe))), \
        "still serving or listening after deactivate"

    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert node.wait_for_line("stopping:", 10)
    # And up again: configure reloads the model.
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    probe.publish_until(make_xyz_cloud(mug_cloud, header=header("again", 13)), "markers",
                        lambda m: m.markers[0].header.frame_id == "again")
    assert node.alive()


def test_auto_qos_switches_to_best_effort_for_a_best_effort_publisher(managed, mug_cloud):
    """A sensor publishing best effort cannot reach a reliable subscription; auto subscribes best effort then."""
    node, probe, lifecycle = managed
    if lifecycle.state() != State.PRIMARY_STATE_ACTIVE:
        if lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED:
            assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    sensor = probe.node.create_publisher(PointCloud2, TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        probe.publish_until(make_xyz_cloud(mug_cloud, header=header("best_effort_sensor", 21)), "markers",
                            lambda m: m.markers[0].header.frame_id == "best_effort_sensor", publisher=sensor, timeout=60)
    finally:
        probe.node.destroy_publisher(sensor)
    assert node.wait_for_line("subscribed best effort now", 5)
    diag = probe.wait_for("diagnostics", lambda a: diagnostic_values(a.status[0]).get("input QoS", "").startswith("best"))
    assert diagnostic_values(diag.status[0])["state"] == "active"


def test_a_failed_configure_leaves_the_node_unconfigured_and_alive(tmp_path):
    params = {"model_path": str(tmp_path / "missing.safetensors"), "input_topic": TOPIC}
    node, domain = start_node(node_command(params=params, managed=True), tmp_path, ready="unconfigured")
    join_domain(domain, tmp_path)
    probe = Probe(domain, TOPIC, name="kp_managed_fail_probe")
    try:
        lifecycle = Lifecycle(probe)
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.wait_for_line("configure failed", 10) and "missing.json" in node.output
        assert node.alive()
    finally:
        probe.close()
        code = node.stop()
    assert code == 0


@pytest.mark.parametrize("frames", [{}, {"target_frame": "base_link", "use_tf": True},
                                    {"target_frame": "base_link", "use_tf": False}])
def test_the_executor_is_single_threaded_in_every_mode(frames, tmp_path):
    # TF lookups wait in cloud callbacks, but TF arrives on a node of its own (frames.TfLookup).
    expected = "single-threaded executor"
    params = {"model_path": str(tmp_path / "unused.safetensors"), "input_topic": TOPIC, **frames}
    node, _ = start_node(node_command(params=params, managed=True), tmp_path, ready="executor")
    try:
        assert expected in node.output and "Fast DDS profile" in node.output
    finally:
        assert node.stop() == 0
