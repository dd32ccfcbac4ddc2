"""Batched point-to-voxel binning on any torch device, with no per-sample Python loop."""

from __future__ import annotations

import torch

from .geometry import GRID_SIZE, point_to_index


def voxelize(points: torch.Tensor, grid_size: int = GRID_SIZE, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy grid of a batch of point sets in the grid frame.

    A voxel is occupied when at least one point falls into it (voxel ``i`` spans
    ``[-1 + 2i/G, -1 + 2(i+1)/G)``). Points outside the cube are clipped into the border voxels;
    non-finite and masked-out points are ignored.

    Args:
        points: (B, N, 3) points in the grid frame.
        grid_size: voxels per axis ``G``.
        mask: optional (B, N) bool, True for points to keep.

    Returns:
        (B, 1, G, G, G) float32 grid of 0/1 on the device of ``points``.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"voxelize expects points of shape (B, N, 3), got {tuple(points.shape)}")
    batch, _, _ = points.shape
    keep = torch.isfinite(points).all(dim=-1)
    if mask is not None:
        keep = keep & mask.to(device=points.device, dtype=torch.bool)
    safe = torch.where(keep[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device))
    index = point_to_index(safe, grid_size)
    flat = (index[..., 0] * grid_size + index[..., 1]) * grid_size + index[..., 2]
    flat = flat + torch.arange(batch, device=points.device)[:, None] * grid_size**3
    grid = torch.zeros(batch * grid_size**3, dtype=torch.float32, device=points.device)
    grid[flat[keep]] = 1.0
    return grid.view(batch, 1, grid_size, grid_size, grid_size)
