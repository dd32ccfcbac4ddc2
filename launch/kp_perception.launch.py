"""Launch kp_perception_node with its parameters file (and optionally RViz).

    ros2 launch kp_perception kp_perception.launch.py
    ros2 launch kp_perception kp_perception.launch.py params_file:=/path/to/mine.yaml
    ros2 launch kp_perception kp_perception.launch.py input_topic:=/camera/depth/points target_frame:=base_link \
        model_path:=/path/to/best.safetensors use_sim_time:=true rviz:=true

Every parameter comes from params_file (default: the installed config/kp_perception.yaml). The arguments
model_path, input_topic, target_frame and use_sim_time override it only when given: left out, the params
file's values stand.

managed:=true (default) starts the lifecycle node (kp_perception_managed_node) and takes it through configure
and activate; a failed configure (e.g. a bad model_path) ends the launch with an error. managed:=false starts
the plain node, which is ready once it has loaded its model. Either way, when the node exits the launch shuts
down, and `ros2 launch` returns non-zero if the node failed.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = "kp_perception"
NODE_NAME = "kp_perception_node"
# Launch arguments that override the parameter of the same name, and how their text is read.
OVERRIDES = {"model_path": str, "input_topic": str, "target_frame": str, "use_sim_time": bool}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class NodeFailed(RuntimeError):
    """Raised inside launch's event loop: launch logs it, shuts everything down and returns 1."""


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "kp_perception.yaml"]),
                              description="parameters file of the node"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="KP-Net checkpoint (.safetensors); not given: the params file's"),
        DeclareLaunchArgument("input_topic", default_value="",
                              description="PointCloud2 topic of the object; not given: the params file's"),
        DeclareLaunchArgument("target_frame", default_value="",
                              description="z-up frame to work and answer in; not given: the params file's"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: use /clock (simulation or bag); not given: the params file's"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("managed", default_value="true", choices=["true", "false"],
                              description="start the lifecycle node and bring it to active (false: the plain node)"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="also start RViz with config/kp_perception.rviz"),
        OpaqueFunction(function=launch_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "config", "kp_perception.rviz"])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])


def given_overrides(context) -> dict:
    """The override arguments the user gave (an empty value means not given), as parameter values."""
    values = {}
    for name, kind in OVERRIDES.items():
        text = LaunchConfiguration(name).perform(context).strip()
        if not text:
            continue
        if kind is bool:
            if text.lower() not in TRUE + FALSE:
                raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
            values[name] = text.lower() in TRUE
        else:
            values[name] = text
    return values


def on_node_exit(event, context):
    """Shut launch down with the node; a non-zero exit becomes a launch failure."""
    if event.returncode != 0:
        raise NodeFailed(f"{NODE_NAME} exited with {event.returncode}; see its log above")
    return [Shutdown(reason=f"{NODE_NAME} exited")]


def configure_failed(context):
    raise NodeFailed(f"{NODE_NAME} failed to configure; see its log above")


def launch_node(context):
    parameters = [LaunchConfiguration("params_file")]
    overrides = given_overrides(context)
    if overrides:
        parameters.append(overrides)  # later entries win over the params file
    common = dict(package=PACKAGE, name=NODE_NAME, namespace=LaunchConfiguration("namespace"), parameters=parameters,
                  output="screen", emulate_tty=True, on_exit=on_node_exit)
    if LaunchConfiguration("managed").perform(context).lower() not in TRUE:
        return [Node(executable="kp_perception_node", **common)]
    node = LifecycleNode(executable="kp_perception_managed_node", **common)
    request = lambda transition: EmitEvent(event=ChangeState(  # noqa: E731
        lifecycle_node_matcher=matches_action(node), transition_id=transition))
    return [
        # Activate right after a successful configure only: a manager deactivating it later is not overruled.
        RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                               goal_state="inactive", entities=[request(Transition.TRANSITION_ACTIVATE)])),
        RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                               goal_state="unconfigured",
                                               entities=[OpaqueFunction(function=configure_failed)])),
        node,
        request(Transition.TRANSITION_CONFIGURE),
    ]
