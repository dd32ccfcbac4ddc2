import math

import pytest
import torch

from kp_core.geometry import transform_points
from kp_training.data import PairBatch
from kp_training.losses import (
    LossWeights,
    axis_spread_loss,
    consistency_loss,
    pair_losses,
    reconstruction_loss,
    separation_loss,
)


def test_reconstruction_loss_hand_values():
    target = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1, 1)
    assert float(reconstruction_loss(torch.zeros(2, 1, 1, 1, 1), target)) == pytest.approx(math.log(2))
    logits = torch.tensor([math.log(3.0), 0.0]).view(2, 1, 1, 1, 1)  # p = 0.75 for the occupied voxel
    assert float(reconstruction_loss(logits, target)) == pytest.approx((-math.log(0.75) + math.log(2)) / 2)


def test_consistency_is_zero_for_equivariant_keypoints_and_measures_offsets():
    canonical = torch.rand(2, 5, 3) * 2 - 1
    a1, a2 = torch.tensor([0.3, 2.0]), torch.tensor([4.0, 1.0])
    s1, s2 = torch.tensor([[0.8, 0.9, 1.0], [0.75, 0.75, 0.75]]), torch.tensor([[1.0, 1.0, 1.0], [0.9, 0.8, 0.95]])
    kp1, kp2 = transform_points(canonical, a1, s1), transform_points(canonical, a2, s2)
    assert float(consistency_loss(kp1, kp2, a1, s1, a2, s2)) == pytest.approx(0.0, abs=1e-10)
    shifted = transform_points(canonical + torch.tensor([0.0, 0.0, 0.1]), a2, s2)
    # Only z is off, by 0.1 in every keypoint: MSE over B x K x 3 = 0.01 / 3.
    assert float(consistency_loss(kp1, shifted, a1, s1, a2, s2)) == pytest.approx(0.01 / 3, rel=1e-4)


def test_separation_hand_values():
    kp = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]])
    expected = (2 * 1.0 + 2 / (1 + 1000 * 0.01)) / 4
    assert float(separation_loss(kp)) == pytest.approx(expected)
    assert float(separation_loss(torch.zeros(1, 4, 3))) == pytest.approx(1.0)  # collapsed keypoints: the maximum
    assert float(separation_loss(kp, m=0.0)) == pytest.approx(1.0)


def pair_batch(n_pairs=2, seed=0, center=True):
    g = torch.Generator().manual_seed(seed)
    n = 2 * n_pairs
    voxels = (torch.rand(n, 1, 4, 4, 4, generator=g) > 0.5).float()
    angle, scale = torch.rand(n, generator=g) * 6.28, 0.75 + 0.25 * torch.rand(n, 3, generator=g)
    offset = (torch.rand(n, 3, generator=g) - 0.5) * 0.4 if center else torch.zeros(n, 3)
    return PairBatch(voxels, voxels, angle, scale, offset, torch.full((n,), 1.3))


def test_pair_losses_weighting():
    batch = pair_batch()
    output = {"logits": torch.randn(4, 1, 4, 4, 4), "latent": torch.rand(4, 3, 3)}
    w = LossWeights(alpha=2.0, beta=0.5)
    losses = pair_losses(output, batch, w, keypoint_model=True)
    total = losses["recon"] + 2.0 * losses["consistency"] + 0.5 * losses["separation"]
    assert float(losses["loss"]) == pytest.approx(float(total))
    latent_only = pair_losses(output, batch, w, keypoint_model=False)
    assert set(latent_only) == {"loss", "recon"} and float(latent_only["loss"]) == pytest.approx(float(losses["recon"]))


def test_consistency_is_zero_for_keypoints_that_follow_each_view_and_not_otherwise():
    """Keypoints placed where each view's pose and grid placement put fixed canonical points: zero loss.
    The oracle writes the forward map by hand: p_grid = (R_z(a) diag(s) p - center) / half_extent."""
    batch = pair_batch(n_pairs=3, seed=1)
    canonical = torch.rand(5, 3) - 0.5
    kps = []
    for a, s, c, h in zip(batch.angle, batch.scale, batch.center, batch.half_extent):
        rot = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        kps.append(((canonical * s) @ rot.T - c) / h)
    output = {"logits": torch.zeros(6, 1, 4, 4, 4), "latent": torch.stack(kps)}
    w = LossWeights()
    assert float(pair_losses(output, batch, w, True)["consistency"]) < 1e-10
    swapped = PairBatch(batch.inputs, batch.targets, batch.angle.roll(3), batch.scale, batch.center, batch.half_extent)
    assert float(pair_losses(output, swapped, w, True)["consistency"]) > 1e-3
    moved = PairBatch(batch.inputs, batch.targets, batch.angle, batch.scale, batch.center * 0, batch.half_extent)
    assert float(pair_losses(output, moved, w, True)["consistency"]) > 1e-3


def test_axis_spread_hand_values_and_weighting():
    on_axis = torch.zeros(2, 4, 3)
    on_axis[..., 2] = torch.arange(4.0)  # a vertical line: every keypoint at distance 0
    assert float(axis_spread_loss(on_axis, 0.15)) == pytest.approx(0.15, abs=1e-5)
    square = on_axis.clone()
    square[..., :2] = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]]) + 5.0  # the axis follows them
    assert float(axis_spread_loss(square, 0.15)) == pytest.approx((0.05 + 0.05) / 4, abs=1e-6)
    batch = pair_batch()
    output = {"logits": torch.randn(4, 1, 4, 4, 4), "latent": torch.rand(4, 3, 3) * 0.1}
    paper = pair_losses(output, batch, LossWeights(), keypoint_model=True)
    spread = pair_losses(output, batch, LossWeights(gamma=3.0, spread_radius=0.5), keypoint_model=True)
    assert "spread" not in paper and float(spread["spread"]) > 0
    assert float(spread["loss"]) == pytest.approx(float(paper["loss"] + 3.0 * spread["spread"]))


def test_losses_gradcheck():
    kp = torch.rand(1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: separation_loss(k, 10.0), (kp,))
    assert torch.autograd.gradcheck(lambda k: axis_spread_loss(k, 2.0), (kp,))
    angle, scale = torch.rand(1, dtype=torch.float64), torch.rand(1, 3, dtype=torch.float64) + 0.5
    other = torch.rand(1, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda k: consistency_loss(k, other, angle, scale, angle * 2, scale), (kp,))
