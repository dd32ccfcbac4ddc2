"""Batched point binning on any torch device, with no per-sample Python loop.

Two grids: the Cartesian 64^3 occupancy grid of the grid frame (what the decoder predicts), and a
cylindrical grid (r, theta, z) about the grid's vertical axis, in which a rotation about z by a multiple
of the theta bin is a shift along theta (the input of the z-rotation-equivariant encoder).
Points outside a grid are dropped, never clamped into its border cells.
"""

from __future__ import annotations

import math

import torch

from .geometry import GRID_SIZE

CYLINDER_BINS = (32, 128, 64)
"""(r, theta, z) bins of the cylindrical grid: r in [0, 1), theta in [0, 2 pi), z in [-1, 1)."""


def _scatter_occupancy(flat: torch.Tensor, keep: torch.Tensor, cells_per_item: int) -> torch.Tensor:
    batch = flat.shape[0]
    flat = flat + torch.arange(batch, device=flat.device)[:, None] * cells_per_item
    grid = torch.zeros(batch * cells_per_item, dtype=torch.float32, device=flat.device)
    grid[flat[keep]] = 1.0
    return grid


def _keep_mask(points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"expected points of shape (B, N, 3), got {tuple(points.shape)}")
    keep = torch.isfinite(points).all(dim=-1)
    if mask is not None:
        keep = keep & mask.to(device=points.device, dtype=torch.bool)
    return keep


def voxelize(points: torch.Tensor, grid_size: int = GRID_SIZE, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy grid of a batch of point sets in the grid frame.

    A voxel is occupied when at least one point falls into it (voxel ``i`` spans
    ``[-1 + 2i/G, -1 + 2(i+1)/G)``). Points outside the cube, non-finite and masked-out points are ignored.

    Args:
        points: (B, N, 3) points in the grid frame.
        grid_size: voxels per axis ``G``.
        mask: optional (B, N) bool, True for points to keep.

    Returns:
        (B, 1, G, G, G) float32 grid of 0/1 on the device of ``points``.
    """
    keep = _keep_mask(points, mask)
    index = torch.floor((torch.nan_to_num(points) + 1.0) * (grid_size / 2.0))
    keep &= ((index >= 0) & (index < grid_size)).all(dim=-1)
    index = index.long().clamp_(0, grid_size - 1)
    flat = (index[..., 0] * grid_size + index[..., 1]) * grid_size + index[..., 2]
    grid = _scatter_occupancy(flat, keep, grid_size**3)
    return grid.view(points.shape[0], 1, grid_size, grid_size, grid_size)


def cylindrical_coordinates(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) grid-frame points -> (..., 3) (r, theta in [0, 2 pi), z) about the grid's vertical axis."""
    x, y, z = points.unbind(-1)
    theta = torch.remainder(torch.atan2(y, x), 2 * math.pi)
    return torch.stack([torch.hypot(x, y), theta, z], dim=-1)


def voxelize_cylindrical(points: torch.Tensor, bins: tuple[int, int, int] = CYLINDER_BINS,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy of a batch of point sets on the cylindrical grid (r, theta, z) about the grid's z axis.

    Cell ``(i, j, k)`` spans r in ``[i, i + 1) / R``, theta in ``[j, j + 1) 2 pi / T`` (counter-clockwise
    from +x) and z in ``[-1 + 2k/Z, -1 + 2(k+1)/Z)``; points with r >= 1 or z outside [-1, 1) are dropped.

    Args:
        points: (B, N, 3) points in the grid frame.
        bins: (R, T, Z).
        mask: optional (B, N) bool, True for points to keep.

    Returns:
        (B, 1, R, T, Z) float32 grid of 0/1.
    """
    n_r, n_t, n_z = bins
    keep = _keep_mask(points, mask)
    cyl = cylindrical_coordinates(torch.nan_to_num(points))
    i = torch.floor(cyl[..., 0] * n_r)
    j = torch.floor(cyl[..., 1] * (n_t / (2 * math.pi))).remainder(n_t)  # theta = 2 pi - eps may round up to n_t
    k = torch.floor((cyl[..., 2] + 1.0) * (n_z / 2.0))
    keep &= (i < n_r) & (k >= 0) & (k < n_z)
    i, j, k = (v.long().clamp_(0, n - 1) for v, n in ((i, n_r), (j, n_t), (k, n_z)))
    grid = _scatter_occupancy((i * n_t + j) * n_z + k, keep, n_r * n_t * n_z)
    return grid.view(points.shape[0], 1, n_r, n_t, n_z)
