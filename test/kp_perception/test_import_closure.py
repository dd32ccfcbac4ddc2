"""The node runs on kp_core alone: training, plotting and mesh libraries stay out of its processes.

Each check starts a fresh interpreter in which importing the blocked packages fails (``sys.modules[name] =
None``), imports the module and, for the pipeline, encodes a cloud and decodes a goal, so that imports made
inside functions are exercised too. torch imports tqdm when it is installed (torch.hub) and copes without it;
rclpy needs PyYAML itself, so the ROS modules are checked against the rest.
"""

import subprocess
import sys

import numpy as np
import pytest

TRAINING_ONLY = ["kp_training", "matplotlib", "tqdm", "trimesh"]


def run_blocked(blocked, code):
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=300)


def test_the_pipeline_needs_no_training_plotting_mesh_or_yaml_package(tiny_model_path, tmp_path):
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).uniform(-0.05, 0.05, size=(3000, 3)))
    result = run_blocked(TRAINING_ONLY + ["yaml"], f"""
import numpy as np
from kp_core.pipeline import Pipeline
pipeline = Pipeline({str(tiny_model_path)!r}, optimize=True)
encoding = pipeline.encode(np.load({str(cloud)!r}))
print(len(pipeline.goal(encoding, 0.5).keypoints))
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["8"]


@pytest.mark.parametrize("module", ["kp_perception.node", "kp_perception.lifecycle_node", "kp_perception.client"])
def test_the_ros_entry_points_import_without_training_plotting_or_mesh_packages(module):
    result = run_blocked(TRAINING_ONLY, f"import {module}")
    assert result.returncode == 0, result.stderr


def test_the_check_can_fail():
    """Blocking works: a module that needs a blocked package fails to import."""
    assert run_blocked(["kp_training"], "import kp_training.train").returncode != 0
