"""kp_perception_node: keypoints of an object from PointCloud2, and rotate-goal predictions as a service.

Subscribes:  <input_topic> (sensor_msgs/PointCloud2; reliable, keep last 1 by default: qos.*)
Publishes:   ~/keypoint_markers (visualization_msgs/MarkerArray: SPHERE_LIST + labels)
             ~/keypoints (geometry_msgs/PoseArray)
             ~/goal_markers (visualization_msgs/MarkerArray: CUBE_LIST of goal voxels + goal keypoints)
             ~/goal_cloud (sensor_msgs/PointCloud2: the last goal's occupied voxel centres)
             /diagnostics (diagnostic_msgs/DiagnosticArray)
Service:     ~/rotate_goal (kp_interfaces/srv/RotateGoal)

Everything comes back in ``target_frame`` (each cloud's own frame when it is empty), with the cloud's stamp.
This is the plain node: it configures and activates itself at start. The same work as a managed (lifecycle)
node: :mod:`kp_perception.lifecycle_node`.
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from .parameters import (  # noqa: F401  (the node's interface, re-exported for users and tests)
    DIAGNOSTICS_TOPIC, GOAL_CLOUD_TOPIC, GOAL_MARKERS_TOPIC, KEYPOINT_MARKERS_TOPIC, KEYPOINTS_TOPIC, NODE_NAME,
    OBJECT_CLOUD_TOPIC, OBJECT_POSE_TOPIC, PARAMETERS, SERVICE_NAME, declare_parameters,
)
from .perception import Perception
from .runner import run


class PerceptionNode(Node):
    """kp_perception_node, ready as soon as it is constructed."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.perception = Perception(self)
        self.add_on_set_parameters_callback(self.perception.on_set_parameters)
        self.add_post_set_parameters_callback(self.perception.on_parameters_set)
        self.perception.configure()
        self.perception.activate()

    def destroy_node(self):
        self.perception.cleanup()
        return super().destroy_node()


def main(args=None) -> int:
    return run(PerceptionNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
