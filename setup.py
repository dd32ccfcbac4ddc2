"""kp_perception: an ament_python ROS 2 package with three Python packages.

- kp_core: the ROS-free run-time core (geometry, voxelization, placement, models, checkpoints, goals).
- kp_training: ROS-free training and evaluation of KP-Net on top of kp_core (runs on a bare GPU machine).
- kp_perception: the ROS 2 node, rotate-goal client and demo, with the shipped model.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "kp_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["kp_core", "kp_core.*", "kp_training", "kp_training.*", "kp_perception", "kp_perception.*"]),
    package_data={"kp_perception": ["models/*.safetensors", "models/*.json", "middleware/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    # torch: any release from 2.4 on; install torch first (scripts/setup.sh pins the CPU wheel) so pip
    # never resolves this to a multi-GB CUDA build on its own.
    install_requires=[
        "torch>=2.4,<3",
        "numpy>=1.24",
        "scipy>=1.10",
        "trimesh>=4.0",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "PyYAML>=6.0",
    ],
    extras_require={
        # colcon: test_colcon_build.py builds the workspace the way a ROS user does.
        "test": ["pytest>=7.0", "pytest-timeout>=2.1", "flake8>=7.0", "pytest-randomly>=3.12", "colcon-common-extensions>=0.3", "rtree>=1.0"],  # rtree: trimesh ray casting (sensor oracle test)
        "tensorboard": ["tensorboard>=2.10"],
    },
    zip_safe=False,
    maintainer="KP-Net ROS team",
    maintainer_email="kp-net@example.com",
    description="Unsupervised 3D keypoints (KP-Net): training, evaluation and a ROS 2 perception node",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "kp-train = kp_training.train:main",
            "kp-eval = kp_training.evaluate:main",
            "kp_perception_node = kp_perception.node:main",
            "kp_perception_managed_node = kp_perception.lifecycle_node:main",
            "kp-rotate-goal = kp_perception.client:main",
            "kp-demo = kp_perception.demo.main:main",
        ],
    },
)
