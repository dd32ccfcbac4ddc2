"""Stand-ins for the parts of `launch` and `launch_ros` our launch file uses, to evaluate it where they are not
installed (PyPI has neither).

Each fake takes exactly the arguments the real class takes (names checked against launch 3.x / launch_ros
0.2x, Humble to Rolling), records them, and substitutions can be performed against a :class:`FakeContext`.
They model just enough to answer "which node starts, with which parameters, what happens when it exits, which
lifecycle transitions are requested": no processes are started.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


class FakeContext:
    """The launch configurations (launch arguments) of a run."""

    def __init__(self, configurations: dict | None = None, share: Path | None = None):
        self.launch_configurations = dict(configurations or {})
        self.share = share


class Recorded:
    """A fake action, substitution or event: positional and keyword arguments, checked against the real API."""

    POSITIONAL: tuple = ()
    KEYWORDS: frozenset = frozenset()
    REQUIRED: frozenset = frozenset()

    def __init__(self, *args, **kwargs):
        if len(args) > len(self.POSITIONAL):
            raise TypeError(f"{type(self).__name__} takes at most {len(self.POSITIONAL)} positional arguments")
        unknown = set(kwargs) - set(self.KEYWORDS) - set(self.POSITIONAL)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = dict(zip(self.POSITIONAL, args))
        self.kwargs.update(kwargs)
        missing = set(self.REQUIRED) - set(self.kwargs)
        if missing:
            raise TypeError(f"{type(self).__name__} misses required arguments {sorted(missing)}")

    def __getitem__(self, key):
        return self.kwargs[key]

    def get(self, key, default=None):
        return self.kwargs.get(key, default)


def perform(value, context: FakeContext):
    """Resolve a substitution, a list of them (concatenated, as launch does) or a plain value."""
    if isinstance(value, (list, tuple)):
        return "".join(str(perform(v, context)) for v in value)
    if hasattr(value, "perform"):
        return value.perform(context)
    return value


# ---- launch ------------------------------------------------------------------------------------------------
ACTION_KEYWORDS = frozenset({"condition"})
PROCESS_KEYWORDS = frozenset({
    "cmd", "name", "cwd", "env", "additional_env", "shell", "sigterm_timeout", "sigkill_timeout", "emulate_tty",
    "output", "output_format", "cached_output", "log_cmd", "on_exit", "respawn", "respawn_delay",
    "respawn_max_retries", "prefix", "condition",
})


class LaunchDescription(Recorded):
    POSITIONAL = ("initial_entities",)
    KEYWORDS = frozenset({"deprecated_reason"})

    @property
    def entities(self):
        return list(self.kwargs.get("initial_entities") or [])


class LaunchConfiguration(Recorded):
    POSITIONAL = ("variable_name",)
    KEYWORDS = frozenset({"default"})
    REQUIRED = frozenset({"variable_name"})

    def perform(self, context):
        name = self.kwargs["variable_name"]
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.kwargs.get("default") is not None:
            return perform(self.kwargs["default"], context)
        raise KeyError(f"launch configuration '{name}' does not exist")  # launch: SubstitutionFailure


class PathJoinSubstitution(Recorded):
    POSITIONAL = ("substitutions",)
    REQUIRED = frozenset({"substitutions"})

    def perform(self, context):
        return str(Path(*[str(perform(part, context)) for part in self.kwargs["substitutions"]]))


class DeclareLaunchArgument(Recorded):
    POSITIONAL = ("name",)
    KEYWORDS = frozenset({"default_value", "description", "choices"}) | ACTION_KEYWORDS
    REQUIRED = frozenset({"name"})


class OpaqueFunction(Recorded):
    KEYWORDS = frozenset({"function", "args", "kwargs"}) | ACTION_KEYWORDS
    REQUIRED = frozenset({"function"})

    def run(self, context):
        return self.kwargs["function"](context, *(self.kwargs.get("args") or []), **(self.kwargs.get("kwargs") or {}))


class RegisterEventHandler(Recorded):
    POSITIONAL = ("event_handler",)
    KEYWORDS = ACTION_KEYWORDS
    REQUIRED = frozenset({"event_handler"})


class EmitEvent(Recorded):
    KEYWORDS = frozenset({"event"}) | ACTION_KEYWORDS
    REQUIRED = frozenset({"event"})


class Shutdown(Recorded):
    KEYWORDS = frozenset({"reason"}) | ACTION_KEYWORDS


class LogInfo(Recorded):
    KEYWORDS = frozenset({"msg"}) | ACTION_KEYWORDS
    REQUIRED = frozenset({"msg"})


class IfCondition(Recorded):
    POSITIONAL = ("predicate_expression",)
    REQUIRED = frozenset({"predicate_expression"})


class UnlessCondition(IfCondition):
    pass


def matches_action(target_action):
    return lambda action: action is target_action


# ---- launch_ros --------------------------------------------------------------------------------------------
class Node(Recorded):
    KEYWORDS = frozenset({"executable", "package", "name", "namespace", "exec_name", "parameters", "remappings",
                          "ros_arguments", "arguments"}) | PROCESS_KEYWORDS
    REQUIRED = frozenset({"executable"})


class LifecycleNode(Node):
    REQUIRED = frozenset({"executable", "name", "namespace"})


class OnStateTransition(Recorded):
    KEYWORDS = frozenset({"entities", "target_lifecycle_node", "transition", "start_state", "goal_state", "matcher"})
    REQUIRED = frozenset({"entities"})

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        target = kwargs.get("target_lifecycle_node")
        if target is not None and not isinstance(target, LifecycleNode):
            raise RuntimeError("OnStateTransition requires a 'LifecycleNode' action as the target")


class ChangeState(Recorded):
    KEYWORDS = frozenset({"lifecycle_node_matcher", "transition_id"})
    REQUIRED = KEYWORDS


class FindPackageShare(Recorded):
    POSITIONAL = ("package",)
    REQUIRED = frozenset({"package"})

    def perform(self, context):
        if context.share is None:
            raise LookupError(f"package '{self.kwargs['package']}' not found")
        return str(context.share)


class ParameterValue(Recorded):
    POSITIONAL = ("value",)
    KEYWORDS = frozenset({"value_type"})
    REQUIRED = frozenset({"value"})

    def perform(self, context):
        import yaml

        text = perform(self.kwargs["value"], context)
        kind = self.kwargs.get("value_type")
        if kind is str:
            return str(text)
        return yaml.safe_load(text) if isinstance(text, str) else text


MODULES = {
    "launch": {"LaunchDescription": LaunchDescription},
    "launch.actions": {c.__name__: c for c in (DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler,
                                               EmitEvent, Shutdown, LogInfo)},
    "launch.conditions": {"IfCondition": IfCondition, "UnlessCondition": UnlessCondition},
    "launch.events": {"matches_action": matches_action},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration, "PathJoinSubstitution": PathJoinSubstitution},
    "launch_ros": {},
    "launch_ros.actions": {"Node": Node, "LifecycleNode": LifecycleNode},
    "launch_ros.event_handlers": {"OnStateTransition": OnStateTransition},
    "launch_ros.events": {},
    "launch_ros.events.lifecycle": {"ChangeState": ChangeState},
    "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


def install(monkeypatch) -> None:
    """Put the fakes in sys.modules for the duration of one test (the real packages, if any, are shadowed)."""
    for name, members in MODULES.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        if parent:
            monkeypatch.setattr(sys.modules[parent], child, module, raising=False)


def flatten(d: dict, prefix: str = "") -> dict:
    """A params file's nested ``ros__parameters`` as dotted names (``qos.reliability``), as ROS reads them."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
