"""Rotate-goal decoding and its quality on sensor-like clouds: the answer the node gives a planner.

A goal is ``decode(R_z(psi) (k - a) + a)``: the keypoints ``k`` turned by ``psi`` about the object's own
vertical axis ``a``: the vertical line through the centroid of the decoded object (its largest connected
part, so that stray voxels cannot move it; :func:`kp_training.placement.vertical_axis_of`). The axis is attached to the object, wherever the grid sits
on a single camera view; for whole clouds it lies near the grid's own axis (about which the cylindrical
encoder is equivariant by construction). The node returns it with the goal.

Its quality is scored as a user sees it: a simulated sensor cloud of the shape in a known pose, the grid
placed by the node's rule, and the goal against the true solid turned by ``psi`` about the returned axis,
voxelized in the same grid (what a planner that reads the axis expects), and separately against the solid
turned about its true axis (which also charges the axis error); the axis error itself is reported too.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import rotate_z_points, transform_points, voxel_centers
from .metrics import voxel_iou
from .placement import vertical_axis_of
from .voxelize import voxelize


def largest_part(occupied: np.ndarray) -> np.ndarray:
    """(G, G, G) bool -> the same grid with only its largest 26-connected part."""
    from scipy import ndimage

    labels, count = ndimage.label(occupied, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return occupied
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(sizes.argmax()))


def decoded_axis(model, keypoints: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, K, 3) grid-frame keypoints -> (B, 3) a point on the decoded object's vertical axis (z = 0)."""
    with torch.no_grad():
        prob = torch.sigmoid(model.decode(keypoints).float())
    return axis_of_occupancy(prob, threshold)


def axis_of_occupancy(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, 1, G, G, G) occupancy probabilities -> (B, 3) a point on each object's vertical axis (z = 0)."""
    centers = voxel_centers(prob.shape[-1]).numpy().astype(np.float64)
    axes = []
    for grid in prob[:, 0].cpu().numpy():
        part = np.argwhere(largest_part(grid > threshold))
        xy = vertical_axis_of(centers[part]) if len(part) else np.zeros(2)
        axes.append([xy[0], xy[1], 0.0])
    return torch.tensor(axes, dtype=torch.float32, device=prob.device)


def rotate_about_axis(points: torch.Tensor, angle, axis: torch.Tensor) -> torch.Tensor:
    """(..., N, 3) points turned by ``angle`` about the vertical line through ``axis`` ((..., 3), its z unused)."""
    pivot = axis.clone()
    pivot[..., 2] = 0
    return rotate_z_points(points - pivot[..., None, :], angle) + pivot[..., None, :]


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
        "axis_error": (P,) distance in grid units between the decoded and the true vertical axis.
    """
    model.eval()
    device = sampler.points.device
    psi = psi.to(device)
    ious, ious_true, recon, axis_err = [], [], [], []
    for start in range(0, len(angle), batch):
        a, s = angle[start : start + batch].to(device), scale[start : start + batch].to(device)
        views = sampler.views(a, s, generator)
        keypoints = model.encode(views.inputs).float()
        reconstruction = torch.sigmoid(model.decode(keypoints).float())
        axis = axis_of_occupancy(reconstruction)
        posed = transform_points(sampler.points.expand(len(a), -1, -1), a, s)
        true_axis = torch.stack([
            torch.as_tensor(np.append(vertical_axis_of(p[::8].double().cpu().numpy()), 0.0), dtype=torch.float32)
            for p in posed
        ]).to(device)
        true_axis_grid = (true_axis - views.center) / views.half_extent[:, None]
        true_axis_grid[:, 2] = 0
        axis_err.append((axis - true_axis_grid)[:, :2].norm(dim=-1))
        axis_posed = axis * views.half_extent[:, None] + views.center
        rows, rows_true = [], []
        for p in psi:
            pred = torch.sigmoid(model.decode(rotate_about_axis(keypoints, p, axis)).float())
            for pivot, out in ((axis_posed, rows), (true_axis, rows_true)):
                turned = rotate_about_axis(posed, p, pivot)
                truth = voxelize((turned - views.center[:, None]) / views.half_extent[:, None, None], pred.shape[-1])
                out.append(voxel_iou(pred, truth))
        ious.append(torch.stack(rows, dim=1))
        ious_true.append(torch.stack(rows_true, dim=1))
        recon.append(voxel_iou(reconstruction, views.targets))
    return {"iou": torch.cat(ious).cpu(), "iou_true_axis": torch.cat(ious_true).cpu(), "recon_iou": torch.cat(recon).cpu(), "axis_error": torch.cat(axis_err).cpu()}


def psi_grid(step_deg: float = 15.0) -> torch.Tensor:
    """Goal angles 0, step, ..., < 360 degrees, in radians."""
    return torch.arange(0.0, 360.0, step_deg) * (math.pi / 180.0)
