"""The paper's three losses (Eq. 4-7) as small pure tensor functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kp_core.geometry import inverse_transform_points


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 4: binary cross-entropy averaged over voxels and batch.

    Args:
        logits: (B, 1, G, G, G) decoder output (before the sigmoid).
        target: (B, 1, G, G, G) occupancy in {0, 1}.

    Returns:
        scalar loss.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def consistency_loss(
    keypoints1: torch.Tensor,
    keypoints2: torch.Tensor,
    angle1: torch.Tensor,
    scale1: torch.Tensor,
    angle2: torch.Tensor,
    scale2: torch.Tensor,
) -> torch.Tensor:
    """Eq. 5: MSE between the keypoints of two views mapped back through their exact inverse transforms.

    Args:
        keypoints1, keypoints2: (B, K, 3) keypoints of view 1 and view 2 in the grid frame.
        angle1, angle2: (B,) rotations of the views; scale1, scale2: (B, 3) their scales.

    Returns:
        scalar, mean over B x K x 3 (grid units squared). Gradients flow into both views.
    """
    canonical1 = inverse_transform_points(keypoints1, angle1, scale1)
    canonical2 = inverse_transform_points(keypoints2, angle2, scale2)
    return F.mse_loss(canonical1, canonical2)


def separation_loss(keypoints: torch.Tensor, m: float = 1000.0) -> torch.Tensor:
    """Eq. 6: mean over the full K x K matrix (diagonal included) of ``1 / (1 + M d^2)``.

    Args:
        keypoints: (B, K, 3) keypoints in the grid frame.
        m: the paper's M (1000).

    Returns:
        scalar, averaged over the batch; in (1/K, 1] (the diagonal contributes 1/K).
    """
    sq_dist = (keypoints[:, :, None, :] - keypoints[:, None, :, :]).pow(2).sum(-1)
    return (1.0 / (1.0 + m * sq_dist)).mean()


def axis_spread_loss(keypoints: torch.Tensor, min_radius: float) -> torch.Tensor:
    """Hinge on each keypoint's horizontal distance from the keypoints' vertical axis (not in the paper).

    Keypoints on one vertical line carry no yaw, and the decoder then cannot turn the object. With an encoder
    equivariant to z-rotations, a rotationally symmetric input can only give keypoints on the axis, so this
    term can only be lowered through the features that break the symmetry (a mug's handle): it makes the
    keypoints follow them instead of collapsing onto the axis.

    Args:
        keypoints: (B, K, 3) keypoints in the grid frame.
        min_radius: distance from the axis (grid units) below which a keypoint is penalized.

    Returns:
        scalar, mean over B x K of ``relu(min_radius - |xy_k - mean_j xy_j|)``.
    """
    horizontal = keypoints[..., :2] - keypoints[..., :2].mean(dim=1, keepdim=True)
    return F.relu(min_radius - horizontal.pow(2).sum(-1).add(1e-12).sqrt()).mean()


@dataclass(frozen=True)
class LossWeights:
    """Eq. 7 weights, ``L = L_recon + alpha L_keypoint + beta L_separation``, plus ``gamma L_spread``."""

    alpha: float = 1.0
    beta: float = 0.1
    separation_m: float = 1000.0
    gamma: float = 0.0
    spread_radius: float = 0.15


def pair_losses(output: dict, batch, weights: LossWeights, keypoint_model: bool) -> dict[str, torch.Tensor]:
    """All losses for a :class:`kp_training.data.PairBatch` (pairs stacked as ``[view 1; view 2]``).

    Reconstruction and separation are averaged over both views. The consistency loss compares the two
    views' keypoints in the shape's normalized frame, undoing each view's grid placement and augmentation.
    A latent (CNN-Net) model is trained with the reconstruction loss only, as in the paper.

    Returns:
        dict with "loss" (the weighted total), "recon", and for keypoint models "consistency", "separation"
        and (``gamma`` > 0) "spread".
    """
    recon = reconstruction_loss(output["logits"], batch.targets)
    if not keypoint_model:
        return {"loss": recon, "recon": recon}
    keypoints = output["latent"].float()
    kp1, kp2 = batch.to_posed(keypoints).chunk(2)
    a1, a2 = batch.angle.chunk(2)
    s1, s2 = batch.scale.chunk(2)
    consistency = consistency_loss(kp1, kp2, a1, s1, a2, s2)
    separation = separation_loss(keypoints, weights.separation_m)
    total = recon + weights.alpha * consistency + weights.beta * separation
    losses = {"recon": recon, "consistency": consistency, "separation": separation}
    if weights.gamma > 0:
        losses["spread"] = axis_spread_loss(keypoints, weights.spread_radius)
        total = total + weights.gamma * losses["spread"]
    return {"loss": total, **losses}
