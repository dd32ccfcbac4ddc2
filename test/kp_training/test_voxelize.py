import math

import numpy as np
import pytest
import torch

from kp_training.voxelize import voxelize


def brute_force_voxelize(points: np.ndarray, grid_size: int) -> np.ndarray:
    grid = np.zeros((grid_size,) * 3, np.float32)
    for p in points:
        if not np.all(np.isfinite(p)):
            continue
        idx = [min(max(int(math.floor((c + 1.0) * grid_size / 2.0)), 0), grid_size - 1) for c in p]
        grid[tuple(idx)] = 1.0
    return grid


@pytest.mark.parametrize("grid_size", [8, 64])
def test_matches_brute_force_reference(grid_size):
    points = torch.rand(3, 500, 3) * 2.4 - 1.2  # some outside the cube: clipped into border voxels
    points[1, :10] = float("nan")
    grids = voxelize(points, grid_size)
    assert grids.shape == (3, 1, grid_size, grid_size, grid_size) and grids.dtype == torch.float32
    for b in range(3):
        np.testing.assert_array_equal(grids[b, 0].numpy(), brute_force_voxelize(points[b].numpy(), grid_size))


def test_mask_and_empty_batches():
    points = torch.zeros(2, 4, 3)
    mask = torch.tensor([[True, False, False, False], [False] * 4])
    grids = voxelize(points, 4, mask)
    assert grids[0].sum() == 1 and grids[1].sum() == 0
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        voxelize(torch.zeros(10, 3))


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_exact_under_quarter_turns_about_z(quarter_turns, mug):
    points = mug.points[None, ::7]
    angle = quarter_turns * math.pi / 2
    rotated = points @ torch.tensor(
        [[round(math.cos(angle)), -round(math.sin(angle)), 0], [round(math.sin(angle)), round(math.cos(angle)), 0], [0, 0, 1]],
        dtype=torch.float32,
    ).T
    grid = voxelize(points)
    expected = grid
    for _ in range(quarter_turns):  # (x, y) -> (-y, x): new[i, j] = old[j, G - 1 - i]
        expected = expected.transpose(2, 3).flip(2)
    assert torch.equal(voxelize(rotated), expected)
