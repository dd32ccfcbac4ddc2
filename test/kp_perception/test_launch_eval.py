"""The launch file evaluated with stand-ins for launch/launch_ros (launch_fakes.py): which node it starts, with
which parameters (a launch argument overrides the params file only when the user gives it), what happens when
the node exits (launch shuts down, and fails when the node failed), and the lifecycle transitions it requests.
"""

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from launch_fakes import (  # noqa: E402  (test helper beside this file)
    flatten,
    ChangeState,
    DeclareLaunchArgument,
    EmitEvent,
    FakeContext,
    IfCondition,
    LifecycleNode,
    Node,
    OnStateTransition,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
    install,
    perform,
)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "kp_perception.launch.py"
TRANSITION_CONFIGURE, TRANSITION_ACTIVATE = 1, 3  # lifecycle_msgs/msg/Transition


def evaluate(monkeypatch, arguments=None):
    """Run the launch description's logic: returns (actions visited, context)."""
    install(monkeypatch)
    spec = importlib.util.spec_from_file_location("kp_launch_under_test", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = FakeContext(share=ROOT)
    given = {k: str(v) for k, v in (arguments or {}).items()}
    visited = []

    def visit(entity):
        condition = entity.get("condition") if hasattr(entity, "get") else None
        if isinstance(condition, IfCondition):
            if str(perform(condition["predicate_expression"], context)).lower() not in ("true", "1"):
                return
        visited.append(entity)
        if isinstance(entity, DeclareLaunchArgument):
            name = entity["name"]
            if name in given:
                context.launch_configurations[name] = given[name]
            elif entity.get("default_value") is not None:
                context.launch_configurations[name] = perform(entity["default_value"], context)
            else:
                raise KeyError(f"launch argument {name} has no default and was not given")
        elif isinstance(entity, OpaqueFunction):
            for child in entity.run(context) or []:
                visit(child)

    for entity in description.entities:
        visit(entity)
    unknown = set(given) - {e["name"] for e in visited if isinstance(e, DeclareLaunchArgument)}
    assert not unknown, f"not launch arguments of the file: {unknown}"
    return visited, context


def our_node(visited):
    nodes = [e for e in visited if isinstance(e, Node) and e.get("package") == "kp_perception"]
    assert len(nodes) == 1, f"expected one kp_perception node, got {len(nodes)}"
    return nodes[0]


def effective_parameters(node, context):
    """What the node ends up with: each params file in order, then each dict, later entries winning (as rcl)."""
    values = {}
    for item in node.get("parameters") or []:
        if isinstance(item, dict):
            values.update({name: perform(value, context) for name, value in item.items()})
            continue
        doc = yaml.safe_load(Path(perform(item, context)).read_text())
        for pattern, body in doc.items():
            if pattern in ("/**", "kp_perception_node", "/kp_perception_node"):
                values.update(flatten(body["ros__parameters"]))
    return values


@pytest.fixture
def user_params(tmp_path):
    """A user's params file setting the keys the launch file also takes as arguments."""
    doc = yaml.safe_load((ROOT / "config" / "kp_perception.yaml").read_text())
    body = doc["/**"]["ros__parameters"]
    body.update({"model_path": "/models/mine.safetensors", "input_topic": "/camera/depth/points", "use_sim_time": True})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("managed", ["true", "false"])
def test_the_params_file_wins_when_no_argument_is_given(monkeypatch, user_params, managed):
    visited, context = evaluate(monkeypatch, {"params_file": user_params, "managed": managed})
    values = effective_parameters(our_node(visited), context)
    assert values["model_path"] == "/models/mine.safetensors"
    assert values["input_topic"] == "/camera/depth/points"
    assert values["use_sim_time"] is True


def test_an_argument_the_user_gives_overrides_the_params_file(monkeypatch, user_params):
    visited, context = evaluate(monkeypatch, {"params_file": user_params, "model_path": "/tmp/other.safetensors",
                                              "input_topic": "/points2", "use_sim_time": "false"})
    values = effective_parameters(our_node(visited), context)
    assert (values["model_path"], values["input_topic"], values["use_sim_time"]) == ("/tmp/other.safetensors", "/points2", False)


def test_the_default_params_file_is_the_installed_one(monkeypatch):
    visited, context = evaluate(monkeypatch)
    values = effective_parameters(our_node(visited), context)
    defaults = flatten(yaml.safe_load((ROOT / "config" / "kp_perception.yaml").read_text())["/**"]["ros__parameters"])
    assert values == defaults


class Exited:
    """launch.events.process.ProcessExited, as far as an on_exit handler reads it."""

    def __init__(self, returncode):
        self.returncode = returncode
        self.action = None


@pytest.mark.parametrize("managed", ["true", "false"])
def test_the_node_exiting_shuts_launch_down_and_a_failure_fails_it(monkeypatch, managed):
    visited, context = evaluate(monkeypatch, {"managed": managed})
    on_exit = our_node(visited).get("on_exit")
    assert on_exit is not None, "the node has no on_exit: launch keeps running (and returns 0) after it fails"
    assert callable(on_exit), "on_exit must look at the exit status"
    actions = on_exit(Exited(0), context)
    assert any(isinstance(a, Shutdown) for a in (actions or [])), "a clean exit should shut launch down"
    # A failure raises inside launch's event loop, which shuts everything down and makes `ros2 launch` return 1.
    with pytest.raises(Exception, match="exited with 2"):
        on_exit(Exited(2), context)


def transitions_requested(entities, node):
    return [e["event"]["transition_id"] for e in entities
            if isinstance(e, EmitEvent) and isinstance(e["event"], ChangeState) and e["event"]["lifecycle_node_matcher"](node)]


def test_managed_launch_brings_the_lifecycle_node_to_active(monkeypatch):
    visited, context = evaluate(monkeypatch)  # managed is the default
    node = our_node(visited)
    assert isinstance(node, LifecycleNode) and node["executable"] == "kp_perception_managed_node"
    assert node["name"] == "kp_perception_node"
    assert transitions_requested(visited, node) == [TRANSITION_CONFIGURE]
    handlers = [e["event_handler"] for e in visited if isinstance(e, RegisterEventHandler)
                and isinstance(e["event_handler"], OnStateTransition)]
    assert all(h["target_lifecycle_node"] is node for h in handlers)
    activate = [h for h in handlers if transitions_requested(h["entities"], node) == [TRANSITION_ACTIVATE]]
    assert len(activate) == 1
    # Only right after configuring: a manager that later deactivates the node is not overruled.
    assert (activate[0].get("start_state"), activate[0]["goal_state"]) == ("configuring", "inactive")
    # A failed configure (e.g. a bad model_path) fails the launch instead of leaving an idle node behind.
    failed = [h for h in handlers if (h.get("start_state"), h.get("goal_state")) == ("configuring", "unconfigured")]
    assert len(failed) == 1
    actions = [a for a in failed[0]["entities"] if isinstance(a, OpaqueFunction)]
    assert actions, "no action on a failed configure"
    with pytest.raises(Exception, match="configure"):
        for action in actions:
            action.run(context)


def test_plain_launch_starts_the_plain_node(monkeypatch):
    visited, _ = evaluate(monkeypatch, {"managed": "false"})
    node = our_node(visited)
    assert not isinstance(node, LifecycleNode) and node["executable"] == "kp_perception_node"
    assert not [e for e in visited if isinstance(e, EmitEvent)]


def test_rviz_only_on_request(monkeypatch):
    for flag, count in (("false", 0), ("true", 1)):
        visited, context = evaluate(monkeypatch, {"rviz": flag})
        rviz = [e for e in visited if isinstance(e, Node) and e.get("package") == "rviz2"]
        assert len(rviz) == count
        if rviz:
            assert perform(rviz[0]["arguments"][1], context).endswith("config/kp_perception.rviz")


def test_the_executables_are_console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    text = ast.unparse(tree)
    for name, target in (("kp_perception_node", "kp_perception.node:main"),
                         ("kp_perception_managed_node", "kp_perception.lifecycle_node:main")):
        assert f"{name} = {target}" in text
