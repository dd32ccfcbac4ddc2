import math

import numpy as np
import pytest
import torch

from kp_core.voxelize import voxelize, voxelize_affine, voxelize_cylindrical


def brute_force_voxelize(points: np.ndarray, grid_size: int) -> np.ndarray:
    grid = np.zeros((grid_size,) * 3, np.float32)
    for p in points:
        if not np.all(np.isfinite(p)):
            continue
        idx = [int(math.floor((c + 1.0) * grid_size / 2.0)) for c in p]
        if all(0 <= i < grid_size for i in idx):  # outside the cube: dropped, not clamped
            grid[tuple(idx)] = 1.0
    return grid


@pytest.mark.parametrize("grid_size", [8, 64])
def test_matches_brute_force_reference(grid_size):
    points = torch.rand(3, 500, 3) * 2.4 - 1.2  # some outside the cube
    points[1, :10] = float("nan")
    grids = voxelize(points, grid_size)
    assert grids.shape == (3, 1, grid_size, grid_size, grid_size) and grids.dtype == torch.float32
    for b in range(3):
        np.testing.assert_array_equal(grids[b, 0].numpy(), brute_force_voxelize(points[b].numpy(), grid_size))


@pytest.mark.parametrize("grid_size", [8, 64])
def test_affine_matches_brute_force_on_the_mapped_points(grid_size):
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(2000, 3, generator=generator, dtype=torch.float64) * 2.4 - 1.2
    matrix = torch.randn(3, 3, 3, generator=generator, dtype=torch.float64) * 0.7
    offset = torch.randn(3, 3, generator=generator, dtype=torch.float64) * 0.2
    mapped = np.einsum("bij,nj->bni", matrix.numpy(), points.numpy()) + offset.numpy()[:, None]
    # Points within rounding of a cell boundary may fall either side (the map is folded into the cell scaling):
    # the oracle keeps only points clear of every boundary.
    scaled = (mapped + 1.0) * grid_size / 2.0
    clear = np.all(np.abs(scaled - np.round(scaled)) > 1e-4, axis=-1)
    grids = voxelize_affine(points[clear.all(0)], matrix, offset, grid_size)
    assert grids.shape == (3, 1, grid_size, grid_size, grid_size) and grids.dtype == torch.float32
    for b in range(3):
        np.testing.assert_array_equal(grids[b, 0].numpy(), brute_force_voxelize(mapped[b][clear.all(0)], grid_size))
    with pytest.raises(ValueError, match=r"matrix \(B, 3, 3\)"):
        voxelize_affine(points[None], matrix, offset)


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


def test_points_outside_the_cube_never_fill_border_voxels():
    table = torch.tensor([[[x, y, -1.3] for x in (-0.5, 0.0, 0.5) for y in (-0.5, 0.5)]])  # below the grid
    assert voxelize(table).sum() == 0
    assert voxelize(torch.tensor([[[0.999, -0.999, 0.0], [1.0, 0.0, 0.0]]])).sum() == 1  # 1.0 is outside


def test_cylindrical_bins_by_hand():
    points = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.26, -0.99], [-0.1, -0.001, 0.5], [0.7, 0.8, 0.0], [0.0, 0.0, 1.0]]])
    grid = voxelize_cylindrical(points, (4, 8, 4))
    # r = 0.5 -> bin 2; theta 0 -> 0; z 0 -> 2.   r 0.26 -> 1; theta 90 deg -> 2; z -0.99 -> 0.
    # r ~0.1 -> 0; theta just below 180 deg... -0.001 in y is just past 180 deg -> bin 4; z 0.5 -> 3.
    # r = 1.06 (outside) and z = 1.0 (outside) are dropped.
    expected = {(2, 0, 2), (1, 2, 0), (0, 4, 3)}
    assert {tuple(i) for i in torch.nonzero(grid[0, 0]).tolist()} == expected


@pytest.mark.parametrize("steps", [1, 5, 64])
def test_cylindrical_grid_shifts_under_rotations_by_whole_bins(steps, mug):
    points = mug.points[None, ::5] * 0.9
    angle = steps * 2 * math.pi / 128
    rotated = points @ torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]).T
    grid, turned = voxelize_cylindrical(points), voxelize_cylindrical(rotated)
    differing = (torch.roll(grid, steps, dims=3) != turned).sum()
    assert differing <= 1e-3 * grid.sum()  # only points within float rounding of a bin edge may move


def test_cylindrical_matches_brute_force_reference():
    bins = (4, 16, 8)
    points = torch.rand(2, 400, 3, generator=torch.Generator().manual_seed(3)) * 2.4 - 1.2  # some outside
    points[0, :7] = float("nan")
    points[1, 3:5, 1] = float("inf")
    mask = torch.rand(2, 400, generator=torch.Generator().manual_seed(4)) > 0.2
    grids = voxelize_cylindrical(points, bins, mask)
    for b in range(2):
        expected = np.zeros(bins, np.float32)
        for (x, y, z), keep in zip(points[b].tolist(), mask[b].tolist()):
            if not keep or not all(math.isfinite(c) for c in (x, y, z)):
                continue
            theta = math.atan2(y, x) % (2 * math.pi)
            i, j, k = int(math.hypot(x, y) * bins[0]), int(theta / (2 * math.pi) * bins[1]) % bins[1], int(math.floor((z + 1) * bins[2] / 2))
            if i < bins[0] and 0 <= k < bins[2]:
                expected[i, j, k] = 1.0
        np.testing.assert_array_equal(grids[b, 0].numpy(), expected)


def test_half_precision_points_fall_in_the_cells_of_their_float32_values():
    points = (torch.rand(2, 2000, 3, generator=torch.Generator().manual_seed(5)) * 2.2 - 1.1).bfloat16()
    for grids, expected in ((voxelize(points), voxelize(points.float())),
                            (voxelize_cylindrical(points), voxelize_cylindrical(points.float()))):
        assert grids.is_contiguous() and grids.dtype == torch.float32 and grids.sum() > 1000
        assert torch.equal(grids, expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 3e38])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_single_non_finite_coordinate_drops_the_point(bad, axis):
    # The other two coordinates sit in the middle of the grid: replacing the bad one by 0 would keep the point.
    points = torch.full((1, 5, 3), 0.1)
    points[0, 2, axis] = bad
    mask = torch.ones(1, 5, dtype=torch.bool)
    for grid, one in ((voxelize(points, 8, mask), voxelize(points[:, :1], 8)),
                      (voxelize_cylindrical(points, (4, 16, 8), mask), voxelize_cylindrical(points[:, :1], (4, 16, 8)))):
        assert torch.equal(grid, one)  # only the good points' cell
    assert mask.all()  # the caller's mask is not written to
