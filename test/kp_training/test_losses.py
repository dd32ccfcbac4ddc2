import math

import pytest
import torch

from kp_training.geometry import transform_points
from kp_training.losses import LossWeights, consistency_loss, pair_losses, reconstruction_loss, separation_loss


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


def test_pair_losses_weighting():
    torch.manual_seed(0)
    voxels = (torch.rand(4, 1, 4, 4, 4) > 0.5).float()
    output = {"logits": torch.randn(4, 1, 4, 4, 4), "latent": torch.rand(4, 3, 3)}
    angle, scale = torch.rand(4), 0.75 + 0.25 * torch.rand(4, 3)
    w = LossWeights(alpha=2.0, beta=0.5)
    losses = pair_losses(output, voxels, angle, scale, w, keypoint_model=True)
    total = losses["recon"] + 2.0 * losses["consistency"] + 0.5 * losses["separation"]
    assert float(losses["loss"]) == pytest.approx(float(total))
    latent_only = pair_losses(output, voxels, angle, scale, w, keypoint_model=False)
    assert set(latent_only) == {"loss", "recon"} and float(latent_only["loss"]) == pytest.approx(float(losses["recon"]))


def test_losses_gradcheck():
    kp = torch.rand(1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: separation_loss(k, 10.0), (kp,))
    angle, scale = torch.rand(1, dtype=torch.float64), torch.rand(1, 3, dtype=torch.float64) + 0.5
    other = torch.rand(1, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda k: consistency_loss(k, other, angle, scale, angle * 2, scale), (kp,))
