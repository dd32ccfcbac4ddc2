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


def _components(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, y, z of (B, N, 3) points as contiguous (B, N) tensors.

    Contiguous components, because torch's element-wise kernels run unvectorized on the strided views that
    ``unbind(-1)`` gives, and the node voxelizes every cloud. Non-finite values stay: a grid's range checks are
    False for NaN and +-inf, which drops those points with no isfinite pass.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"expected points of shape (B, N, 3), got {tuple(points.shape)}")
    if points.dtype in (torch.float16, torch.bfloat16):  # their cells' flat index would round (see _scatter_occupancy)
        points = points.float()
    x, y, z = points.movedim(-1, 0).contiguous()
    return x, y, z


def _scatter_occupancy(flat: torch.Tensor, keep: torch.Tensor, cells_per_item: int,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, cells_per_item) 0/1 grids with the cells ``flat`` ((B, N) float, an integer value per kept point) set
    of the points in ``keep`` (the grid's range checks) and in the caller's ``mask`` (optional (B, N) bool).

    One conversion to int64 for all three axes: a grid's flat index (at most 2^18 here) is an exact float32, and
    the dropped points' index (NaN, inf or out of range) is replaced before it is converted."""
    if mask is not None:
        keep = keep & mask.to(device=keep.device, dtype=torch.bool)
    batch = flat.shape[0]
    if cells_per_item >= 1 << 24:
        raise ValueError(f"a grid of {cells_per_item} cells has indices a float32 does not hold exactly")
    # Dropped points go to one spare cell past each item's grid: cheaper than selecting the kept ones first.
    index = torch.where(keep, flat, float(cells_per_item)).long()
    index += torch.arange(batch, device=flat.device)[:, None] * (cells_per_item + 1)
    grid = torch.zeros(batch, cells_per_item + 1, dtype=torch.float32, device=flat.device)
    grid.view(-1).index_fill_(0, index.reshape(-1), 1.0)
    return grid[:, :cells_per_item].contiguous()  # a copy only for B > 1


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
    cells = [torch.floor((v + 1.0) * (grid_size / 2.0)) for v in _components(points)]
    return _cell_occupancy(cells, grid_size, mask)


def voxelize_affine(points: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, grid_size: int = GRID_SIZE) -> torch.Tensor:
    """:func:`voxelize` of one point set under a batch of affine maps, ``voxelize(points @ matrix^T + offset)``.

    The map and the grid's cell scaling are folded into one batched matrix product that writes the cell
    coordinates axis by axis, so the (B, N, 3) moved points are never stored and no contiguous copy is needed:
    the cheap way to voxelize a dense solid in many poses (training targets). Cells agree with :func:`voxelize`'s
    except for points within float rounding of a cell boundary.

    Args:
        points: (N, 3) points.
        matrix: (B, 3, 3) linear parts; offset: (B, 3) translations (into the grid frame).

    Returns:
        (B, 1, G, G, G) float32 grid of 0/1.
    """
    if points.ndim != 2 or points.shape[-1] != 3 or matrix.shape[-2:] != (3, 3) or offset.shape != matrix.shape[:-1]:
        raise ValueError(f"expected points (N, 3), matrix (B, 3, 3), offset (B, 3), got {tuple(points.shape)}, "
                         f"{tuple(matrix.shape)}, {tuple(offset.shape)}")
    points = points.float()
    half = grid_size / 2.0
    columns = points.T.contiguous().expand(len(matrix), -1, -1)
    cells = torch.baddbmm(((offset.float() + 1.0) * half)[:, :, None], matrix.float() * half, columns).floor_()
    return _cell_occupancy(cells.unbind(1), grid_size)


def _cell_occupancy(cells, grid_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, G, G, G) occupancy of the points whose cell indices along x, y, z are ``cells`` (three (B, N) floats,
    integral or non-finite)."""
    keep = (cells[0] >= 0) & (cells[0] < grid_size)  # False for NaN and +-inf
    for c in cells[1:]:
        keep &= (c >= 0) & (c < grid_size)
    flat = (cells[0] * grid_size + cells[1]) * grid_size + cells[2]
    grid = _scatter_occupancy(flat, keep, grid_size**3, mask)
    return grid.view(len(flat), 1, grid_size, grid_size, grid_size)


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
    x, y, z = _components(points)
    i = torch.floor(torch.hypot(x, y) * n_r)
    theta = torch.remainder(torch.atan2(y, x), 2 * math.pi)
    j = torch.floor(theta * (n_t / (2 * math.pi))).remainder(n_t)  # theta = 2 pi - eps may round up to n_t
    k = torch.floor((z + 1.0) * (n_z / 2.0))
    keep = (i < n_r) & (k >= 0) & (k < n_z)  # False for NaN and +-inf (hypot is NaN or inf if x or y is)
    grid = _scatter_occupancy((i * n_t + j) * n_z + k, keep, n_r * n_t * n_z, mask)
    return grid.view(points.shape[0], 1, n_r, n_t, n_z)
