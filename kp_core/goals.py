"""The rotate-goal's geometry: the object turned by ``psi`` about its own vertical axis ``a``.

The keypoints ``k`` turned about ``a`` are ``R k + (I - R) a``: a turn about the grid's own vertical axis,
then a shift. The goal is decoded from ``R k`` (the encoder is equivariant about the grid's axis by
construction, and every training view placed its grid by the same rule, so the decoder has seen objects
turned about that axis) and then moved rigidly by :func:`goal_offset` ``(I - R) a``. Decoding
``R (k - a) + a`` instead asks the decoder for an object shifted off its trained placement: on sensor
clouds the goal IoU then falls with the angle (``scripts/goal_decoding.py``).

The axis is the vertical line through the centroid of the decoded object (its largest connected part, so
that stray voxels cannot move it; :func:`vertical_axis_of`). It is attached to the object,
wherever the grid sits on a single camera view; for whole clouds it lies near the grid's own axis (about
which the cylindrical encoder is equivariant by construction). The node returns it with the goal.
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import rotate_z_points, voxel_centers


def vertical_axis_of(solid: np.ndarray) -> np.ndarray:
    """(2,) x, y of an object's own vertical axis: the vertical line through the centroid of its solid,
    given as (N, 3) points spread evenly through the volume (solid samples, or occupied voxel centres).

    The centroid, not the enclosing circle that places the grid: a thin part (a mug's handle) that a
    reconstruction misses moves the centroid by a few millimetres, the enclosing circle by centimetres.
    """
    solid = np.asarray(solid, dtype=np.float64)
    if len(solid) == 0:
        raise ValueError("no points: an empty object has no axis")
    return solid[:, :2].mean(axis=0)


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


def goal_offset(axis: torch.Tensor, angle) -> torch.Tensor:
    """(..., 3) a point on the axis (z unused), angle -> (..., 3) ``(I - R_z(angle)) a`` with z = 0: where a
    turn about the axis moves what a turn about the grid's own vertical axis leaves in place."""
    pivot = axis.clone()
    pivot[..., 2] = 0
    return pivot - rotate_z_points(pivot[..., None, :], angle)[..., 0, :]


def goal_keypoints(keypoints: torch.Tensor, axis: torch.Tensor, angle) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotate-goal's rule, in one place: (..., K, 3) grid-frame keypoints, (..., 3) a point on the object's
    axis, angle -> ((..., K, 3) the keypoints to decode: turned about the grid's own vertical axis, (..., 3) the
    goal grid's offset from the cloud's, in grid units: :func:`goal_offset`). Decode the first, in a grid moved by
    the second."""
    return rotate_z_points(keypoints, angle), goal_offset(axis, angle)


def rotate_about_vertical(points: np.ndarray, angle: float, center: np.ndarray) -> np.ndarray:
    """:func:`rotate_about_axis` for (N, 3) NumPy points in float64 (metric ground truth in demos and tests)."""
    return rotate_about_axis(torch.as_tensor(np.asarray(points, dtype=np.float64)), torch.tensor(float(angle), dtype=torch.float64),
                             torch.as_tensor(np.asarray(center, dtype=np.float64))).numpy()
