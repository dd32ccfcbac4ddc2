"""The node serves a checkpoint the way it was trained, or refuses to start and says what to do."""

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from kp_core.checkpoint import load_model, save_checkpoint  # noqa: E402
from kp_core.pipeline import PipelineError  # noqa: E402
from kp_perception.demo.processes import RosProcess, node_command, pick_domain_id, ros_env  # noqa: E402
from kp_perception.node import PerceptionNode  # noqa: E402


def resaved(source, folder, **changes):
    model, meta = load_model(source)
    meta.update(changes)
    return str(save_checkpoint(folder / "model", model, meta))


def test_a_solid_trained_checkpoint_stops_the_node_with_what_to_retrain(tiny_model_path, tmp_path):
    solid = resaved(tiny_model_path, tmp_path, inputs="solid",
                    placement={"zoom": 1.0, "centering": "origin", "object_scale": 0.875})
    proc = RosProcess(node_command(params={"model_path": solid, "num_threads": 1}), ros_env(pick_domain_id(), tmp_path))
    assert proc.exit_code(timeout=120) == 2
    assert "trained on solid voxel grids" in proc.output and "kp-train --recipe node" in proc.output


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=pick_domain_id())
    yield context
    rclpy.shutdown(context=context)


def test_a_checkpoint_without_metric_size_needs_object_size(tiny_model_path, tmp_path, context):
    unitless = resaved(tiny_model_path, tmp_path,
                       normalization={"center": [0.0, 0.0, 0.0], "mesh_units_per_grid_unit": 80.0, "units": "mesh"})
    common = [Parameter("model_path", value=unitless), Parameter("num_threads", value=1),
              Parameter("precision", value="fp32")]
    with pytest.raises(PipelineError, match="no metric size.*set object_size"):
        PerceptionNode(context=context, parameter_overrides=common)
    node = PerceptionNode(context=context, parameter_overrides=[*common, Parameter("object_size", value=0.12)])
    try:
        result = node.set_parameters([Parameter("object_size", value=0.0)])[0]
        assert not result.successful and "no metric size" in result.reason
        assert node.get_parameter("object_size").value == 0.12
        assert node.set_parameters([Parameter("object_size", value=0.2)])[0].successful
    finally:
        node.destroy_node()
