#!/usr/bin/env python3
"""Two ways to decode a rotate-goal, compared on simulated sensor clouds of the mug: the keypoints turned
about the object's axis and decoded (``decode(R (k - a) + a)``), or turned about the grid's own axis, decoded
and moved by ``(I - R) a`` (what the node does, :mod:`kp_core.goals`). Both are scored against the mug
turned about the same axis, voxelized in the goal's grid.

    python scripts/goal_decoding.py                           # the shipped model, 8 poses
    python scripts/goal_decoding.py runs/x/best.safetensors --poses 12
"""

from __future__ import annotations

import argparse
import math

import torch

from kp_core.checkpoint import load_model
from kp_core.goals import axis_of_occupancy, goal_keypoints, rotate_about_axis
from kp_perception import default_model_path
from kp_training.goal_quality import sensor_sampler, turned_solid
from kp_training.metrics import voxel_iou
from kp_training.shapes import load_shape, metres_per_unit


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(default_model_path()), help="checkpoint (default: the shipped model)")
    parser.add_argument("--poses", type=int, default=8, help="seeded yaw poses of the mug at its trained size")
    args = parser.parse_args()
    model, meta = load_model(args.model)
    shape = load_shape("mug")
    psis_deg = [0, 45, 90, 135, 180]
    angle = torch.rand(args.poses, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    scale = torch.ones(args.poses, 3)
    print(f"goal IoU at psi = {psis_deg} deg, mean over {args.poses} poses ({args.model})")
    for kind, whole_fraction in (("whole", 1.0), ("single view", 0.0)):
        sampler = sensor_sampler(model, meta, shape.points, metres_per_unit(shape), whole_fraction)
        views = sampler.views(angle, scale, torch.Generator().manual_seed(3))
        keypoints = model.encode(views.inputs)
        axis = axis_of_occupancy(torch.sigmoid(model.decode(keypoints)))
        pivot = axis * views.half_extent[:, None] + views.center
        rows = {"about the object's axis": [], "about the grid's axis, then moved": []}
        for deg in psis_deg:
            psi = deg * math.pi / 180
            for name, (turned, offset) in {
                "about the object's axis": (rotate_about_axis(keypoints, psi, axis), torch.zeros_like(axis)),
                "about the grid's axis, then moved": goal_keypoints(keypoints, axis, psi),
            }.items():
                prediction = torch.sigmoid(model.decode(turned))
                goal_center = views.center + offset * views.half_extent[:, None]
                truth = turned_solid(sampler.points, angle, scale, psi, pivot, goal_center, views.half_extent)
                rows[name].append(float(voxel_iou(prediction, truth).mean()))
        for name, values in rows.items():
            print(f"  {kind:<12} {name:<36}" + " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
