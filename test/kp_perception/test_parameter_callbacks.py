"""Parameter changes as the ROS 2 demos handle them: the on-set callback only validates (another callback may
still refuse the change), the post-set callback applies the accepted change, swapping in whole new settings."""

import rclpy
from rclpy.parameter import Parameter

from kp_perception.node import PerceptionNode
from kp_perception.demo.processes import pick_domain_id


def test_validation_applies_nothing_and_an_accepted_change_is_applied_whole(tiny_model_path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=pick_domain_id())
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(tiny_model_path)), Parameter("num_threads", value=1)])
    try:
        perception = node.perception
        before, before_config = perception.settings, perception.pipeline.config
        verdict = perception.on_set_parameters([Parameter("object_size", value=0.3)])
        assert verdict.successful
        assert perception.settings is before and perception.pipeline.config is before_config  # nothing applied yet
        refused = perception.on_set_parameters([Parameter("crop.max", value=[-5.0, -5.0, -5.0])])
        assert not refused.successful and "crop box" in refused.reason

        assert node.set_parameters([Parameter("object_size", value=0.3), Parameter("warn_throttle_sec", value=2.0)])[0].successful
        assert perception.settings.pipeline.object_size == 0.3 and perception.settings.warn_throttle == 2.0
        assert perception.pipeline.config.object_size == 0.3
        assert before.pipeline.object_size == 0.0 and before_config.object_size == 0.0  # snapshots are never mutated
        result = node.set_parameters_atomically([Parameter("object_size", value=0.4), Parameter("min_points", value=0)])
        assert not result.successful and perception.settings.pipeline.object_size == 0.3
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
