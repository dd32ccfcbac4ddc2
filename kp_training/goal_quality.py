"""The rotate-goal's quality on sensor-like clouds (the goal itself: :mod:`kp_core.goals`).

Its quality is scored as a user sees it: a simulated sensor cloud of the shape in a known pose, the grid
placed by the node's rule, and the goal against the true solid turned by ``psi`` about the returned axis,
voxelized in the goal's grid (what a planner that reads the axis expects), and separately against the solid
turned about its true axis (which also charges the axis error); the axis error itself is reported too.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kp_core.geometry import augmentation_matrix, rotation_z, transform_points, yaw_to_template
from kp_core.goals import axis_of_occupancy, goal_keypoints, goal_offset, vertical_axis_of
from kp_core.pipeline import trained_object_size
from kp_core.placement import grid_zoom
from kp_core.voxelize import voxelize_affine

from .data import ViewSampler
from .metrics import voxel_iou
from .sensor import SensorConfig


def sensor_sampler(model, meta: dict, points: torch.Tensor, metres_per_unit: float, whole_fraction: float) -> ViewSampler:
    """Sensor clouds of a shape at its trained size, conditioned and the grid placed as the node does a
    checkpoint's (``meta``: its metadata; the object's size from its ``normalization``, the zoom from its
    ``placement``), ``whole_fraction`` of them fused. A model without a metric size gets its clouds unconditioned
    (the node would need ``object_size`` for it)."""
    return ViewSampler(points, model.input_from_points, SensorConfig(whole_fraction=whole_fraction),
                       metres_per_unit=metres_per_unit, zoom=grid_zoom(meta.get("placement")),
                       object_size=trained_object_size(meta))


def turned_solid(points: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, psi, pivot: torch.Tensor,
                 goal_center: torch.Tensor, half_extent: torch.Tensor) -> torch.Tensor:
    """The ground truth of a goal: (N, 3) solid samples posed by the augmentation ``(angle (P,), scale (P, 3))``,
    turned by ``psi`` about the vertical lines through ``pivot`` ((P, 3), posed frame), voxelized in the goal's grid
    (origin ``goal_center`` (P, 3), ``half_extent`` (P,)) -> (P, 1, 64, 64, 64).

    The turn about the pivot is ``p -> R_z(psi) p + goal_offset(pivot, psi)``, so pose, turn and grid are one
    affine map of the samples (:func:`kp_core.voxelize.voxelize_affine`)."""
    turn = rotation_z(torch.as_tensor(psi, dtype=torch.float32)).to(points.device)
    matrix = turn @ augmentation_matrix(angle, scale).float() / half_extent[:, None, None]
    offset = (goal_offset(pivot, psi) - goal_center) / half_extent[:, None]
    return voxelize_affine(points, matrix, offset)


@torch.no_grad()
def sensor_goal_iou(model, sampler, angle: torch.Tensor, scale: torch.Tensor, psi: torch.Tensor,
                    generator: torch.Generator, batch: int = 8) -> dict[str, torch.Tensor]:
    """Goal IoU of a keypoint model on simulated sensor clouds of poses ``(angle, scale)``.

    Args:
        sampler: a :class:`kp_training.data.ViewSampler` with sensor views (its settings say whole or single).
        angle: (P,) poses' rotations; scale: (P, 3) their scales.
        psi: (A,) goal angles in radians.

    Returns:
        "iou": (P, A) goal IoU against the solid turned about the decoded (returned) axis;
        "iou_true_axis": (P, A) against the solid turned about its true axis;
        "recon_iou": (P,) IoU of the decoded unrotated keypoints against the solid;
        "axis_error": (P,) distance in grid units between the decoded and the true vertical axis;
        "yaw_offset": (P,) for a canonical-yaw model, the yaw it reads (its keypoints against its template) minus
            the pose's, in radians, not wrapped (a constant turn for a perfect model: its spread, wrapped by
            :func:`yaw_errors_deg`, is the yaw error).
    """
    model.eval()
    device = sampler.points.device
    psi = psi.to(device)
    ious, ious_true, recon, axis_err, yaw = [], [], [], [], []
    for start in range(0, len(angle), batch):
        a, s = angle[start : start + batch].to(device), scale[start : start + batch].to(device)
        views = sampler.views(a, s, generator)
        keypoints = model.encode(views.inputs).float()
        if getattr(model, "canonical_yaw", False):
            yaw.append(yaw_to_template(keypoints, model.yaw_template) - a)
        reconstruction = torch.sigmoid(model.decode(keypoints).float())
        axis = axis_of_occupancy(reconstruction)
        posed = transform_points(sampler.points[::8].expand(len(a), -1, -1), a, s)
        true_axis = torch.stack([
            torch.as_tensor(np.append(vertical_axis_of(p.double().cpu().numpy()), 0.0), dtype=torch.float32)
            for p in posed
        ]).to(device)
        true_axis_grid = (true_axis - views.center) / views.half_extent[:, None]
        true_axis_grid[:, 2] = 0
        axis_err.append((axis - true_axis_grid)[:, :2].norm(dim=-1))
        axis_posed = axis * views.half_extent[:, None] + views.center
        rows, rows_true = [], []
        for p in psi:
            # As the node answers (kp_core.goals): decoded from the keypoints turned about the grid's axis, in
            # the goal's grid, whose origin the turn about the object's axis carries along.
            turned, offset = goal_keypoints(keypoints, axis, p)
            pred = torch.sigmoid(model.decode(turned).float())
            goal_center = views.center + offset * views.half_extent[:, None]
            for pivot, out in ((axis_posed, rows), (true_axis, rows_true)):
                out.append(voxel_iou(pred, turned_solid(sampler.points, a, s, p, pivot, goal_center, views.half_extent)))
        ious.append(torch.stack(rows, dim=1))
        ious_true.append(torch.stack(rows_true, dim=1))
        recon.append(voxel_iou(reconstruction, views.targets))
    out = {"iou": torch.cat(ious).cpu(), "iou_true_axis": torch.cat(ious_true).cpu(), "recon_iou": torch.cat(recon).cpu(),
           "axis_error": torch.cat(axis_err).cpu()}
    if yaw:
        out["yaw_offset"] = torch.cat(yaw).cpu()
    return out


def yaw_errors_deg(offsets: torch.Tensor) -> torch.Tensor:
    """(P,) yaw errors in degrees of (P,) yaw offsets (:func:`sensor_goal_iou`): each one's angle from their
    circular mean, the model's canonical frame."""
    mean = torch.atan2(torch.sin(offsets).mean(), torch.cos(offsets).mean())
    return torch.rad2deg((torch.remainder(offsets - mean + math.pi, 2 * math.pi) - math.pi).abs())


def psi_grid(step_deg: float = 15.0) -> torch.Tensor:
    """Goal angles 0, step, ..., < 360 degrees, in radians."""
    return torch.arange(0.0, 360.0, step_deg) * (math.pi / 180.0)
