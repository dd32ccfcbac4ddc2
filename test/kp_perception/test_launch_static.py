"""The launch file, parameters file and RViz config, checked statically (launch and RViz do not run here)."""

import ast
from pathlib import Path

import pytest
import yaml

from launch_fakes import flatten  # noqa: E402  (test helper beside this file)
from kp_perception.node import (
    GOAL_CLOUD_TOPIC, GOAL_MARKERS_TOPIC, KEYPOINT_MARKERS_TOPIC, KEYPOINTS_TOPIC, NODE_NAME, OBJECT_CLOUD_TOPIC, PARAMETERS,
)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "kp_perception.launch.py"
PARAMS = ROOT / "config" / "kp_perception.yaml"
RVIZ = ROOT / "config" / "kp_perception.rviz"


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def kwargs(call):
    return {k.arg: k.value for k in call.keywords}


def const(node):
    return node.value if isinstance(node, ast.Constant) else None


@pytest.fixture(scope="module")
def launch_tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = {}
    for call in calls(tree, "setup"):
        entry = kwargs(call).get("entry_points")
        for key, value in zip(entry.keys, entry.values):
            if const(key) == "console_scripts":
                for item in value.elts:
                    name, target = (s.strip() for s in const(item).split("="))
                    scripts[name] = target
    return scripts


def test_launch_file_defines_generate_launch_description(launch_tree):
    funcs = [n.name for n in launch_tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs


def test_launch_uses_only_the_standard_launch_api(launch_tree):
    """The launch file imports nothing but launch, launch_ros and lifecycle_msgs (what a ROS 2 install has)."""
    modules = {n.module.split(".")[0] for n in ast.walk(launch_tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name.split(".")[0] for n in ast.walk(launch_tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"launch", "launch_ros", "lifecycle_msgs"}, modules


def test_launch_starts_real_entry_points(launch_tree):
    executables = {const(kwargs(c).get("executable")) for c in calls(launch_tree, "Node") + calls(launch_tree, "LifecycleNode")}
    assert {"kp_perception_node", "kp_perception_managed_node"} <= executables
    scripts = console_scripts()
    import importlib

    for name, target in (("kp_perception_node", "kp_perception.node:main"),
                         ("kp_perception_managed_node", "kp_perception.lifecycle_node:main")):
        assert scripts.get(name) == target, f"setup.py must declare the {name} console script"
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_launch_arguments_are_declared_and_used(launch_tree):
    declared = {const(c.args[0]) for c in calls(launch_tree, "DeclareLaunchArgument")}
    used = {const(c.args[0]) for c in calls(launch_tree, "LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    overrides = [n for n in launch_tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "OVERRIDES"]
    assert len(overrides) == 1
    used |= {const(k) for k in overrides[0].value.keys}  # read in a loop: LaunchConfiguration(name)
    assert {"model_path", "input_topic", "use_sim_time", "params_file", "managed", "target_frame"} <= declared
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert declared <= used, f"declared but unused: {declared - used}"
    names = {p.name for p in PARAMETERS} | {"use_sim_time"}
    assert {const(k) for k in overrides[0].value.keys} <= names, "an override that is not a node parameter"


def test_launch_params_file_exists_and_is_installed(launch_tree):
    joins = [[const(a) for a in c.args[0].elts[1:]] for c in calls(launch_tree, "PathJoinSubstitution")]
    assert ["config", "kp_perception.yaml"] in joins and ["config", "kp_perception.rviz"] in joins
    assert PARAMS.is_file() and RVIZ.is_file()
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("config/*.yaml")' in setup and 'glob("config/*.rviz")' in setup and 'glob("launch/*.launch.py")' in setup


def test_params_file_keys_are_declared_by_the_node():
    doc = yaml.safe_load(PARAMS.read_text())
    assert list(doc) == ["/**"]
    values = flatten(doc["/**"]["ros__parameters"])
    declared = {p.name: p for p in PARAMETERS}
    assert set(values) <= set(declared), f"unknown keys: {set(values) - set(declared)}"
    assert set(values) == set(declared), f"parameters missing from the YAML: {set(declared) - set(values)}"
    for name, value in values.items():
        default = declared[name].default
        assert type(value) is type(default) and value == default, f"{name}: YAML {value!r} vs node default {default!r}"
        p = declared[name]
        if p.float_range:
            assert p.float_range[0] <= value <= p.float_range[1]
        if p.int_range:
            assert p.int_range[0] <= value <= p.int_range[1]


def test_rviz_config_shows_the_node_topics():
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"]
    topics = {d["Name"]: (d["Class"], d.get("Topic", {}).get("Value")) for d in manager["Displays"]}
    defaults = {p.name: p.default for p in PARAMETERS}
    node_topic = lambda t: f"/{NODE_NAME}/{t[2:]}"  # noqa: E731  (~/x -> /kp_perception_node/x)
    assert topics["Input cloud"] == ("rviz_default_plugins/PointCloud2", "/" + defaults["input_topic"])
    assert topics["Keypoints"] == ("rviz_default_plugins/MarkerArray", node_topic(KEYPOINT_MARKERS_TOPIC))
    assert topics["Goal voxels"] == ("rviz_default_plugins/MarkerArray", node_topic(GOAL_MARKERS_TOPIC))
    assert topics["Keypoint poses"] == ("rviz_default_plugins/PoseArray", node_topic(KEYPOINTS_TOPIC))
    assert topics["Goal cloud"] == ("rviz_default_plugins/PointCloud2", node_topic(GOAL_CLOUD_TOPIC))
    assert topics["Object cloud"] == ("rviz_default_plugins/PointCloud2", node_topic(OBJECT_CLOUD_TOPIC))
    # The input display subscribes best-effort, as sensors publish.
    cloud = next(d for d in manager["Displays"] if d["Name"] == "Input cloud")
    assert cloud["Topic"]["Reliability Policy"] == "Best Effort"
