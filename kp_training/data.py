"""The paper's augmentation: pairs of randomly scaled and z-rotated views of one shape, voxelized."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .geometry import GRID_SIZE, transform_points
from .voxelize import voxelize

SCALE_RANGE = (0.75, 1.0)


def sample_transforms(
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmentation parameters: rotation about z ~ U[0, 2 pi), per-axis scale ~ U[lo, hi).

    Draws on the (CPU) ``generator`` so a seed gives the same transforms on every device.

    Returns:
        angle (n,) and scale (n, 3), float32 on ``device``.
    """
    lo, hi = scale_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale range must satisfy 0 < lo <= hi <= 1 (larger scales would clip), got {scale_range}")
    angle = torch.rand(n, generator=generator) * (2 * math.pi)
    scale = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
    return angle.to(device), scale.to(device)


def make_views(
    points: torch.Tensor,
    angle: torch.Tensor,
    scale: torch.Tensor,
    grid_size: int = GRID_SIZE,
    chunk: int = 16,
) -> torch.Tensor:
    """Voxelize the shape under each transform (batched, ``chunk`` views at a time to bound memory).

    Args:
        points: (N, 3) solid samples in the grid frame, on the target device.
        angle: (B,) rotations about z.
        scale: (B, 3) per-axis scales.

    Returns:
        (B, 1, G, G, G) float32 occupancy.
    """
    grids = []
    for start in range(0, len(angle), chunk):
        a, s = angle[start : start + chunk], scale[start : start + chunk]
        moved = transform_points(points.expand(len(a), -1, -1), a, s)
        grids.append(voxelize(moved, grid_size))
    return torch.cat(grids)


@dataclass
class PairBatch:
    """Two augmented views of a batch of ``B`` pairs, stacked as ``[view 1; view 2]``.

    Attributes:
        voxels: (2B, 1, G, G, G) occupancy, first the B first views, then the B second views.
        angle: (2B,) rotations; scale: (2B, 3) scales, in the same order.
    """

    voxels: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return len(self.angle) // 2


def sample_pairs(
    points: torch.Tensor,
    num_pairs: int,
    generator: torch.Generator,
    grid_size: int = GRID_SIZE,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> PairBatch:
    """Draw ``num_pairs`` pairs of independent augmentations of ``points`` and voxelize them."""
    angle, scale = sample_transforms(2 * num_pairs, generator, points.device, scale_range)
    return PairBatch(make_views(points, angle, scale, grid_size), angle, scale)


class ValidationSet:
    """A fixed, seeded set of augmentation pairs.

    Only the transforms are stored; the grids are rebuilt batch by batch (deterministically), because
    4000 pairs of 64^3 grids would take 2 GB.
    """

    def __init__(self, num_pairs: int = 4000, seed: int = 12345, scale_range: tuple[float, float] = SCALE_RANGE):
        if num_pairs < 1:
            raise ValueError(f"a validation set needs at least one pair, got {num_pairs}")
        generator = torch.Generator().manual_seed(seed)
        self.angle, self.scale = sample_transforms(2 * num_pairs, generator, "cpu", scale_range)
        self.num_pairs = num_pairs

    def batches(self, points: torch.Tensor, batch_pairs: int, grid_size: int = GRID_SIZE):
        """Yield :class:`PairBatch` es of up to ``batch_pairs`` pairs covering the whole set."""
        n = self.num_pairs
        for start in range(0, n, batch_pairs):
            stop = min(start + batch_pairs, n)
            index = torch.cat([torch.arange(start, stop), torch.arange(n + start, n + stop)])
            angle, scale = self.angle[index].to(points.device), self.scale[index].to(points.device)
            yield PairBatch(make_views(points, angle, scale, grid_size), angle, scale)
