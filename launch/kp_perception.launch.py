"""Launch kp_perception_node with its parameters file (and optionally RViz).

    ros2 launch kp_perception kp_perception.launch.py
    ros2 launch kp_perception kp_perception.launch.py input_topic:=/camera/depth/points \
        model_path:=/path/to/best.safetensors use_sim_time:=true rviz:=true

Every parameter comes from config/kp_perception.yaml (or params_file:=...); the launch arguments
model_path, input_topic and use_sim_time override it. An empty model_path keeps the shipped model.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "kp_perception"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "kp_perception.yaml"]),
                              description="parameters file of kp_perception_node"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="KP-Net checkpoint (.safetensors); empty: the model shipped in the package"),
        DeclareLaunchArgument("input_topic", default_value="points", description="PointCloud2 topic of the object (z up)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (simulation or bag)"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz with config/kp_perception.rviz"),
    ]
    node = Node(
        package=PACKAGE,
        executable="kp_perception_node",
        name="kp_perception_node",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "input_topic": ParameterValue(LaunchConfiguration("input_topic"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "kp_perception.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, node, rviz])
