"""The demo's scene: the mug's ground truth and its simulated sensor clouds agree on the geometry."""

import numpy as np

from kp_training.scenes import make_scene


def test_scene_and_clouds(mug):
    scene = make_scene(seed=3, max_points=20000)
    # The mug's own vertical axis goes through the centroid of its solid, on the body side of the handle.
    np.testing.assert_allclose(scene.solid[:, :2].mean(0), scene.axis[:2], atol=1e-9)
    assert len(scene.cameras["whole"]) == 4 and len(scene.cameras["partial"]) == 1
    assert 2000 < len(scene.clouds["partial"]) < len(scene.clouds["whole"]) <= 20000
    # The single view leans to its camera's side of the mug (the far inner wall is seen over the rim); the
    # fused cloud lies all around it.
    towards = scene.cameras["partial"][0, :2] - scene.axis[:2]
    towards /= np.linalg.norm(towards)
    lean = {name: float(((cloud[:, :2] - scene.axis[:2]) @ towards).mean()) for name, cloud in scene.clouds.items()}
    assert lean["partial"] > lean["whole"] + 0.005
