"""The rotate-goal's geometry: a turn about an axis is a turn about the grid's axis plus goal_offset."""

import math

import numpy as np
import torch

from kp_core.goals import goal_keypoints, goal_offset, largest_part, rotate_about_axis, rotate_about_vertical


def test_goal_offset_by_hand():
    offset = goal_offset(torch.tensor([1.0, 0.0, 5.0]), math.pi / 2)  # (1, 0) turns to (0, 1); z is ignored
    torch.testing.assert_close(offset, torch.tensor([1.0, -1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(goal_offset(torch.tensor([0.3, -0.2, 0.0]), 0.0), torch.zeros(3), atol=1e-7, rtol=0)


def test_a_turn_about_an_axis_is_a_turn_about_the_grid_axis_then_the_offset():
    g = torch.Generator().manual_seed(0)
    points, axis = torch.rand(2, 40, 3, generator=g) - 0.5, torch.rand(2, 3, generator=g) - 0.5
    angle = torch.tensor([0.7, -2.5])
    about_axis = rotate_about_axis(points, angle, axis)
    # by hand: R (p - a) + a with R counter-clockwise, z untouched
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    dx, dy = points[..., 0] - axis[:, None, 0], points[..., 1] - axis[:, None, 1]
    expected = torch.stack([c * dx - s * dy + axis[:, None, 0], s * dx + c * dy + axis[:, None, 1], points[..., 2]], -1)
    torch.testing.assert_close(about_axis, expected, atol=1e-6, rtol=0)
    turned, offset = goal_keypoints(points, axis, angle)  # what is decoded, and where its grid moves
    torch.testing.assert_close(turned + offset[:, None], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(rotate_about_vertical(points[0].double().numpy(), 0.7, axis[0].double().numpy()),
                               expected[0].double().numpy(), atol=1e-6)


def test_largest_part_keeps_the_biggest_26_connected_piece():
    grid = np.zeros((6, 6, 6), bool)
    grid[0:2, 0:2, 0:2] = True  # 8 voxels
    grid[4, 4, 4] = grid[5, 5, 5] = True  # 2 voxels touching at a corner: one part
    kept = largest_part(grid)
    assert kept.sum() == 8 and kept[0, 0, 0] and not kept[4, 4, 4]
