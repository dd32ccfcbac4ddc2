"""kp_perception_managed_node: kp_perception_node as a managed (lifecycle) node.

    unconfigured --configure--> inactive: parameters read, model loaded and warmed up, publishers created
    inactive --activate--> active: subscribed to the input topic, serving ~/rotate_goal
    active --deactivate--> inactive: unsubscribed, service withdrawn (the model stays loaded)
    inactive --cleanup--> unconfigured: publishers and model released

Same topics, service, parameters and /diagnostics as :mod:`kp_perception.node` (published in every configured
state). A failed configure (a bad model_path, say) logs the reason and leaves the node unconfigured.
launch/kp_perception.launch.py brings it to active by itself; a lifecycle manager can drive it instead.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .parameters import NODE_NAME, declare_parameters
from .perception import Perception
from .runner import run


class ManagedPerceptionNode(LifecycleNode):
    """kp_perception_node, driven through the ROS 2 lifecycle transitions."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.perception = Perception(self, managed=True)
        self.add_on_set_parameters_callback(self.perception.on_set_parameters)
        self.add_post_set_parameters_callback(self.perception.on_parameters_set)
        self.get_logger().info("unconfigured: waiting for the configure transition")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.perception.configure()
        except Exception as err:  # the transition fails with the reason in the log; the node stays up
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.perception.model_description}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers first
        self.perception.activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.deactivate()
        self.get_logger().info("inactive: unsubscribed, service withdrawn")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.cleanup()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.cleanup(log=False)
        return super().on_error(state)

    def destroy_node(self):
        self.perception.cleanup()
        return super().destroy_node()


def main(args=None) -> int:
    return run(ManagedPerceptionNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
