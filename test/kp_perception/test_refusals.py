"""/diagnostics counts refusals by their error's type: each real way a cloud is refused lands in its own count,
whatever its message says."""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from kp_core.pipeline import Pipeline, PipelineConfig, PipelineError  # noqa: E402
from kp_perception.cloud_io import make_xyz_cloud, read_xyz  # noqa: E402
from kp_perception.frames import FrameMapper, fixed_lookup  # noqa: E402
from kp_perception.messages import NotFinite  # noqa: E402
from kp_perception.perception import refusal_category  # noqa: E402


def category_of(action) -> str:
    with pytest.raises(Exception) as caught:
        action()
    return refusal_category(caught.value)


def test_each_way_a_cloud_is_refused_has_its_own_count(tiny_model_path, mug_cloud):
    pipeline = Pipeline(tiny_model_path)
    rng = np.random.default_rng(0)
    assert category_of(lambda: read_xyz(make_xyz_cloud(mug_cloud), max_points=10)) == "too many points"
    assert category_of(lambda: pipeline.encode(np.full((100, 3), np.nan))) == "too few points"
    small = Pipeline(tiny_model_path, config=PipelineConfig(max_points=50))
    assert category_of(lambda: small.encode(mug_cloud)) == "too many points"
    # Two points far apart and a speck: nothing of the model's object size.
    specks = np.concatenate([rng.normal(0, 1e-4, (200, 3)), rng.normal(0, 1e-4, (200, 3)) + 3.0])
    assert category_of(lambda: pipeline.encode(specks)) == "no object found"
    assert category_of(lambda: pipeline.goal(pipeline.encode(mug_cloud), float("nan"))) == "unusable geometry"
    unframed = type("Header", (), {"frame_id": "", "stamp": None})()
    assert category_of(lambda: FrameMapper("table", fixed_lookup(lambda: [0, 0, 0, 0, 0, 0, 1]))(unframed, mug_cloud)) \
        == "no transform"
    assert refusal_category(NotFinite("keypoints")) == "not finite"
    assert refusal_category(KeyError("a defect of ours")) == "internal error"


def test_the_message_does_not_decide_the_count():
    assert refusal_category(PipelineError("only 3 finite points; more than max_points")) == "unusable geometry"
