"""The node's Fast DDS profile: chosen only when the user named none, and parsed by Fast DDS without errors."""

import subprocess
import sys

import pytest

from kp_perception.demo.processes import pick_domain_id, ros_env
from kp_perception.transport import FASTDDS_PROFILE, PROFILES_VARIABLE, use_node_profile


def test_the_node_profile_is_used_when_none_is_chosen():
    environ = {}
    line = use_node_profile(environ)
    assert environ[PROFILES_VARIABLE] == str(FASTDDS_PROFILE)
    assert str(FASTDDS_PROFILE) in line
    empty = {PROFILES_VARIABLE: ""}  # Fast DDS itself would fail on an empty name
    use_node_profile(empty)
    assert empty[PROFILES_VARIABLE] == str(FASTDDS_PROFILE)


def test_a_users_profile_is_kept():
    environ = {PROFILES_VARIABLE: "/robot/fastdds.xml"}
    line = use_node_profile(environ)
    assert environ[PROFILES_VARIABLE] == "/robot/fastdds.xml"
    assert "/robot/fastdds.xml" in line


@pytest.mark.parametrize("rmw", ["rmw_cyclonedds_cpp", "rmw_zenoh_cpp"])
def test_no_fastdds_profile_for_another_middleware(rmw):
    environ = {"RMW_IMPLEMENTATION": rmw}
    line = use_node_profile(environ)
    assert PROFILES_VARIABLE not in environ
    assert rmw in line


def test_the_profile_reads_a_heartbeat_response_delay_of_zero():
    import xml.etree.ElementTree as ET

    ns = {"f": "http://www.eprosima.com"}
    reader = ET.parse(FASTDDS_PROFILE).getroot().find("f:data_reader", ns)
    assert reader is not None and reader.get("is_default_profile") == "true"
    delay = reader.find("f:times/f:heartbeat_response_delay", ns)
    assert (delay.findtext("f:sec", namespaces=ns), delay.findtext("f:nanosec", namespaces=ns)) == ("0", "0")


SUBSCRIBE = (
    "import rclpy; from std_msgs.msg import Header; rclpy.init(); node = rclpy.create_node('kp_profile_probe'); "
    "node.create_subscription(Header, 'probe', lambda m: None, 1); node.destroy_node(); rclpy.shutdown(); print('ok')"
)


def _subscribe_with(profile, tmp_path):
    env = ros_env(pick_domain_id(), tmp_path)
    env[PROFILES_VARIABLE] = str(profile)
    return subprocess.run([sys.executable, "-c", SUBSCRIBE], env=env, capture_output=True, text=True, timeout=60)


def test_fastdds_loads_the_profile_without_errors(tmp_path):
    result = _subscribe_with(FASTDDS_PROFILE, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "XMLPARSER" not in result.stderr, result.stderr
    # The same check sees a broken profile (so the one above can fail).
    broken = tmp_path / "broken.xml"
    broken.write_text(FASTDDS_PROFILE.read_text().replace("<sec>0</sec>", "<sec>zero</sec>"))
    assert "XMLPARSER" in _subscribe_with(broken, tmp_path).stderr
