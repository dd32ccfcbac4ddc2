import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from kp_training.metrics import (
    binary_cross_entropy,
    chamfer_paper,
    chamfer_sampling_floor,
    directed_mean_nn_distance,
    keypoint_distance,
    mean_nn_distance,
    squared_distance_transform,
    summarize,
    voxel_iou,
)
from kp_core.voxelize import voxelize

G = 64
VOXEL = 2.0 / G


def box(lo, hi, shift=(0, 0, 0), size=G):
    """(1, 1, G, G, G) grid occupied on the index box [lo, hi) per axis, moved by ``shift`` voxels."""
    grid = torch.zeros(1, 1, size, size, size)
    s = [slice(lo[i] + shift[i], hi[i] + shift[i]) for i in range(3)]
    grid[0, 0, s[0], s[1], s[2]] = 1.0
    return grid


@pytest.fixture(scope="module")
def mug_grid(mug):
    return voxelize(mug.points[None])


def test_identical_grids():
    grid = torch.cat([box((10, 10, 10), (20, 30, 25)), box((5, 40, 3), (9, 44, 60))])
    assert torch.equal(voxel_iou(grid, grid), torch.ones(2))
    assert torch.equal(mean_nn_distance(grid, grid), torch.zeros(2))
    # probabilities: thresholded at 0.5, so a confident prediction of the same grid scores the same
    probs = grid * 0.9 + 0.05
    assert torch.equal(voxel_iou(probs, grid), torch.ones(2))


def test_bce_is_plain_bce_of_sigmoid_averaged_over_voxels():
    logits = torch.randn(3, 1, 8, 8, 8) * 3
    target = (torch.rand(3, 1, 8, 8, 8) > 0.5).float()
    p = torch.sigmoid(logits.double())
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).flatten(1).mean(1)
    assert torch.allclose(binary_cross_entropy(logits, target).double(), expected, atol=1e-6)
    # confident, correct logits -> near 0; the same logits on the complement -> large
    sure = (target * 2 - 1) * 20
    assert binary_cross_entropy(sure, target).max() < 1e-6
    assert binary_cross_entropy(-sure, target).min() > 10


def test_iou_values():
    a = box((0, 0, 0), (4, 4, 4))
    b = box((2, 0, 0), (6, 4, 4))  # half overlap along x: 32 / 96
    assert voxel_iou(a, b).item() == pytest.approx(1 / 3)
    assert voxel_iou(a, box((10, 10, 10), (12, 12, 12))).item() == 0.0
    empty = torch.zeros_like(a)
    assert voxel_iou(empty, empty).item() == 1.0 and voxel_iou(empty, a).item() == 0.0


def test_shift_by_one_voxel_distance():
    # single voxel moved by one voxel: every nearest neighbour is one voxel away
    one = box((30, 30, 30), (31, 31, 31))
    assert mean_nn_distance(one, box((30, 30, 30), (31, 31, 31), shift=(1, 0, 0))).item() == pytest.approx(1.0)
    # diagonal shift (1, 1, 1): sqrt(3) voxels
    assert mean_nn_distance(one, box((30, 30, 30), (31, 31, 31), shift=(1, 1, 1))).item() == pytest.approx(math.sqrt(3))
    # a solid n^3 cube shifted by one voxel along x: one face layer (n^2 of n^3 voxels) is 1 voxel away
    n = 8
    cube = box((20, 20, 20), (20 + n, 20 + n, 20 + n))
    moved = box((20, 20, 20), (20 + n, 20 + n, 20 + n), shift=(1, 0, 0))
    assert directed_mean_nn_distance(cube, moved).item() == pytest.approx(1 / n)
    assert mean_nn_distance(cube, moved).item() == pytest.approx(1 / n)
    # symmetric
    assert mean_nn_distance(moved, cube).item() == pytest.approx(1 / n)


def test_paper_chamfer_small_grids_are_exact():
    # <= 1000 occupied voxels: all points are used, so the value is deterministic
    one = box((30, 30, 30), (31, 31, 31))
    shifted = box((30, 30, 30), (31, 31, 31), shift=(2, 0, 0))
    assert chamfer_paper(one, one).item() == 0.0
    # one point each, (2 voxels)^2 forward + backward
    assert chamfer_paper(one, shifted).item() == pytest.approx(2 * (2 * VOXEL) ** 2, rel=1e-6)
    cube = box((20, 20, 20), (28, 28, 28))  # 512 voxels
    moved = box((20, 20, 20), (28, 28, 28), shift=(1, 0, 0))
    # 64 voxels per direction are one voxel from the other cube
    assert chamfer_paper(cube, moved).item() == pytest.approx(2 * 64 * VOXEL**2, rel=1e-6)
    assert chamfer_sampling_floor(cube).item() == 0.0


def test_paper_chamfer_sampling_floor_on_the_mug(mug_grid):
    n = int(mug_grid.sum())
    assert n > 5000
    gen = torch.Generator().manual_seed(0)
    floor = chamfer_sampling_floor(mug_grid.expand(4, -1, -1, -1, -1), generator=gen)
    # two random 1000-point subsets of the same grid are not identical: a positive floor of a few units
    assert torch.all(floor > 1.0) and torch.all(floor < 30.0)
    # seeded: the same numbers again
    again = chamfer_sampling_floor(mug_grid.expand(4, -1, -1, -1, -1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(floor, again)
    # the better-defined distance has no floor
    assert mean_nn_distance(mug_grid, mug_grid).item() == 0.0


def test_empty_grids_are_handled():
    empty = torch.zeros(1, 1, G, G, G)
    full = box((0, 0, 0), (3, 3, 3))
    assert chamfer_paper(empty, empty).item() == 0.0
    assert math.isnan(chamfer_paper(empty, full).item())
    assert mean_nn_distance(empty, empty).item() == 0.0
    assert math.isnan(mean_nn_distance(full, empty).item())


def test_distance_transform_backends_agree_with_scipy():
    occ = torch.rand(2, 1, 16, 16, 16) > 0.97
    occ[1] = False  # an empty grid too
    occ[1, 0, 3, 4, 5] = True
    torch_dt = squared_distance_transform(occ, backend="torch")
    scipy_dt = squared_distance_transform(occ, backend="scipy")
    expected = np.stack([ndimage.distance_transform_edt(~g[0].numpy()) ** 2 for g in occ])
    assert np.allclose(torch_dt[:, 0].numpy(), expected)
    assert np.allclose(scipy_dt[:, 0].numpy(), expected)
    with pytest.raises(ValueError, match="backend"):
        squared_distance_transform(occ, backend="gpu")


def test_keypoint_distance_in_voxels():
    a = torch.zeros(2, 3, 3)
    b = a.clone()
    b[0, 1, 0] = VOXEL * 2  # two voxels
    d = keypoint_distance(a, b)
    assert d.shape == (2, 3)
    assert d[0, 1].item() == pytest.approx(2.0) and d.sum().item() == pytest.approx(2.0)


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        voxel_iou(torch.zeros(1, 64, 64, 64), torch.zeros(1, 64, 64, 64))
    with pytest.raises(ValueError, match="differ"):
        mean_nn_distance(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError):
        keypoint_distance(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))


def test_summarize_ignores_undefined_entries():
    s = summarize([1.0, 3.0, math.nan])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 2 and s["n_undefined"] == 1
    assert math.isnan(summarize([math.nan])["mean"])
