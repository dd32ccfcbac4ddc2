"""ROS 2 perception layer over kp_core: keypoints from point clouds and rotate-goal decoding."""

from pathlib import Path

SHIPPED_MODEL_NAME = "mug.safetensors"


def default_model_path() -> Path:
    """The model shipped with the installed kp_perception package (what the node loads by default)."""
    return Path(__file__).resolve().parent / "models" / SHIPPED_MODEL_NAME
