"""Figures: the voxel surface extraction against a hand-built oracle, and every plot writes a readable PNG."""

import numpy as np
import pytest
import torch

from kp_training import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_surface_points_of_a_solid_cube_are_its_shell():
    grid = torch.zeros(8, 8, 8)
    grid[2:6, 2:6, 2:6] = 1.0  # a 4^3 cube: 64 voxels, the 2^3 at indices 3..4 inside
    centre = lambda i: -1 + (2 * i + 1) / 8  # noqa: E731  (voxel i's centre in the grid frame)
    shell = {(centre(i), centre(j), centre(k)) for i in range(2, 6) for j in range(2, 6) for k in range(2, 6)
             if not (3 <= i <= 4 and 3 <= j <= 4 and 3 <= k <= 4)}
    assert {tuple(p) for p in figures.surface_points(grid).astype(float).round(6)} == {tuple(round(c, 6) for c in p) for p in shell}
    assert len(figures.surface_points(torch.zeros(1, 8, 8, 8))) == 0
    assert len(figures.surface_points(torch.ones(4, 4, 4))) == 64 - 8  # the cube's border counts as surface


def test_keypoint_colours_are_stable_and_distinct():
    a, b = figures.keypoint_colors(32), figures.keypoint_colors(32)
    assert a.shape == (32, 4) and np.array_equal(a, b)
    assert len({tuple(c) for c in a.round(4)}) == 32


def read_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height


def test_plots_write_pngs(tmp_path):
    angles = np.arange(0, 360, 45.0)
    curves = {"shipped": {"whole": np.linspace(0.5, 0.6, 8), "single": np.linspace(0.4, 0.5, 8)}}
    w, h = read_png(figures.plot_sensor_goal(tmp_path / "goal.png", angles, curves))
    assert w > 2 * h  # one panel per kind of cloud, side by side
    rows = [{"wall_s": 60.0 * i, "val_iou": 0.1 * i, "val_goal_whole_mean": "", "val_goal_whole_min": "",
             "val_goal_single_mean": "", "val_goal_single_min": ""} for i in range(1, 5)]
    read_png(figures.plot_training_curve(tmp_path / "sub" / "curve.png", rows, title="run"))
    read_png(figures.plot_equivariance(tmp_path / "eq.png", {"rotation": np.random.rand(8), "scale": np.random.rand(8)}))


def test_reconstruction_figure_with_keypoints(tmp_path):
    grid = torch.zeros(64, 64, 64)
    grid[20:40, 20:40, 10:50] = 1.0
    kp = torch.rand(8, 3) - 0.5
    path = figures.reconstruction_figure(tmp_path / "recon.png", [grid], keypoints=[kp], kp_recon=[grid])
    assert read_png(path)[0] > 300


@pytest.mark.parametrize("k", [5, 25])
def test_keypoint_colours_for_any_k(k):
    assert figures.keypoint_colors(k).shape == (k, 4)
