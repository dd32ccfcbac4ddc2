#!/usr/bin/env python3
"""How far a model's keypoints spread around the object's vertical axis on simulated sensor clouds.

Keypoints that all sit on one vertical line carry no yaw (the goal then only shows the object's
rotationally symmetric part): a horizontal spread of a fraction of a voxel means they have collapsed.

    python scripts/keypoint_spread.py                       # the shipped model
    python scripts/keypoint_spread.py runs/x/best.safetensors --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import numpy as np

from kp_training.scenes import make_scene
from kp_core.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="scene seeds (poses and cameras)")
    args = parser.parse_args()
    pipeline = Pipeline(args.model)
    for seed in args.seeds:
        scene = make_scene(seed=seed, max_points=60000)
        for name, cloud in scene.clouds.items():
            keypoints = pipeline.encode(cloud).keypoints_grid.double().numpy() * 32  # voxels of the 64^3 grid
            horizontal = np.hypot(*(keypoints[:, :2] - keypoints[:, :2].mean(0)).T)
            height = keypoints[:, 2].max() - keypoints[:, 2].min()
            print(f"seed {seed} {name:>7}: keypoints from their vertical axis: mean {horizontal.mean():.2f}, "
                  f"max {horizontal.max():.2f} voxels; height spread {height:.1f} voxels")


if __name__ == "__main__":
    main()
