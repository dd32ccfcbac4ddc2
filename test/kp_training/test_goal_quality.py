"""The per-epoch goal check's pieces (kp_training/goal_quality.py), against hand-worked cases."""

import math

import torch

from kp_core.geometry import GRID_SIZE
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
    # One sample at (0.5, 0, 0) turned 90 deg about the vertical through (0.25, 0, 0) lands at (0.25, 0.25, 0);
    # in a goal grid centred at (0.25, 0, 0) with half extent 0.5 that is (0, 0.5, 0) in grid units.
    posed = torch.tensor([[[0.5, 0.0, 0.0]]])
    grid = turned_solid(posed, math.pi / 2, torch.tensor([[0.25, 0.0, 7.0]]), torch.tensor([[0.25, 0.0, 0.0]]),
                        torch.tensor([0.5]))
    assert grid.shape == (1, 1, GRID_SIZE, GRID_SIZE, GRID_SIZE) and grid.sum() == 1
    index = torch.nonzero(grid[0, 0])[0].tolist()
    centre = [(i + 0.5) * 2 / GRID_SIZE - 1 for i in index]
    assert abs(centre[0]) < 2 / GRID_SIZE and abs(centre[1] - 0.5) < 2 / GRID_SIZE and abs(centre[2]) < 2 / GRID_SIZE
