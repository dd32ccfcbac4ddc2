"""The per-epoch goal check's pieces (kp_training/goal_quality.py), against hand-worked cases."""

import math

import torch

from kp_core.geometry import GRID_SIZE, transform_points
from kp_core.goals import rotate_about_axis
from kp_core.voxelize import voxelize
from kp_training.goal_quality import psi_grid, turned_solid, yaw_errors_deg


def test_yaw_errors_are_distances_from_the_circular_mean_across_the_wrap():
    # A model that reads every pose 10 deg off, and one reading 5 deg either side of that: errors 5, 5, 0.
    offsets = torch.tensor([math.radians(175.0), math.radians(-175.0), math.radians(180.0)])
    torch.testing.assert_close(yaw_errors_deg(offsets), torch.tensor([5.0, 5.0, 0.0]), atol=1e-4, rtol=0)
    # A constant offset (the model's own canonical frame) is no error at all.
    torch.testing.assert_close(yaw_errors_deg(torch.full((4,), 2.0)), torch.zeros(4), atol=1e-4, rtol=0)


def test_psi_grid_covers_one_turn():
    torch.testing.assert_close(psi_grid(90.0), torch.tensor([0.0, 0.5, 1.0, 1.5]) * math.pi)
    assert len(psi_grid()) == 24


def test_the_truth_is_turned_about_the_pivot_and_voxelized_in_the_goal_grid():
    # One sample at (0.5, 0, 0) (the pose scales (0.25, 0, 0) by 2 along x) turned 90 deg about the vertical through (0.25, 0, 0) lands at (0.25, 0.25, 0);
    # in a goal grid centred at (0.25, 0, 0) with half extent 0.5 that is (0, 0.5, 0) in grid units.
    grid = turned_solid(torch.tensor([[0.25, 0.0, 0.0]]), torch.zeros(1), torch.tensor([[2.0, 1.0, 1.0]]), math.pi / 2,
                        torch.tensor([[0.25, 0.0, 7.0]]), torch.tensor([[0.25, 0.0, 0.0]]), torch.tensor([0.5]))
    assert grid.shape == (1, 1, GRID_SIZE, GRID_SIZE, GRID_SIZE) and grid.sum() == 1
    index = torch.nonzero(grid[0, 0])[0].tolist()
    centre = [(i + 0.5) * 2 / GRID_SIZE - 1 for i in index]
    assert abs(centre[0]) < 2 / GRID_SIZE and abs(centre[1] - 0.5) < 2 / GRID_SIZE and abs(centre[2]) < 2 / GRID_SIZE


def test_the_truth_is_the_posed_solid_turned_point_by_point(mug):
    # The same truth built the long way: pose every sample, turn it about the pivot, move it into the goal grid.
    angle, scale = torch.tensor([0.3, 2.0]), torch.tensor([[0.8, 0.9, 1.0], [1.0, 0.75, 0.85]])
    pivot = torch.tensor([[0.1, -0.05, 3.0], [0.0, 0.2, 0.0]])
    goal_center, half_extent = torch.tensor([[0.05, 0.0, 0.1], [0.0, 0.1, 0.0]]), torch.tensor([1.3, 1.2])
    psi = 2.2
    grid = turned_solid(mug.points, angle, scale, psi, pivot, goal_center, half_extent)
    posed = transform_points(mug.points.expand(2, -1, -1), angle, scale)
    expected = voxelize((rotate_about_axis(posed, psi, pivot) - goal_center[:, None]) / half_extent[:, None, None])
    assert expected.sum() > 1000
    # Only samples within float rounding of a voxel boundary may land on the other side of it.
    assert (grid != expected).sum() <= 1e-3 * expected.sum()
