"""KP-Net (keypoint bottleneck), the CNN-Net baseline, and a registry of keypoint encoders.

Every model has ``encode(voxels) -> latent`` and ``decode(latent) -> logits`` and an attribute ``kind``:
``"keypoint"`` (latent = (B, K, 3) keypoints in the grid frame) or ``"latent"`` (an unstructured vector).
Models are built from a JSON-able architecture dict (:func:`model_config`, :func:`build_model`) that
checkpoints store beside the weights.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import GRID_SIZE, HEATMAP_SIZE, voxel_centers

ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str):
    """Decorator adding a keypoint encoder class to :data:`ENCODERS`.

    An encoder is built as ``cls(num_keypoints=K, **options)`` and maps (B, 1, 64, 64, 64) voxels to
    (B, K, 32, 32, 32) heatmap logits.
    """

    def add(cls):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = cls
        return cls

    return add


@register_encoder("paper")
class PaperEncoder(nn.Module):
    """The reference KP-Net encoder: about 340 GFLOP per 64^3 pass, 5.1 M parameters at K = 32."""

    def __init__(self, num_keypoints: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv3d(1, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv3d(64, 128, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(128, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 512, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(512, num_keypoints, 3, padding=1),
        )

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        return self.layers(voxels)


@register_encoder("fast")
class FastEncoder(nn.Module):
    """A cheap encoder for CPUs (about 1 GFLOP per pass) with a receptive field covering the object.

    Two strided convolutions reach 16^3; dilated convolutions (1, 2, 4) let every heatmap cell see the
    whole object, which keypoints on a rotationally symmetric body need in order to find the handle;
    the coarse heatmap is upsampled to 32^3 and refined by a 1x1 projection of the 32^3 features.
    """

    def __init__(self, num_keypoints: int, width: int = 48):
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv3d(1, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.down2 = nn.Sequential(nn.Conv3d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        context = []
        channels = 32
        for dilation in (1, 2, 4):
            context += [nn.Conv3d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = width
        self.context = nn.Sequential(*context)
        self.coarse_head = nn.Conv3d(width, num_keypoints, 1)
        self.fine_head = nn.Conv3d(16, num_keypoints, 1)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        fine = self.down1(voxels)
        coarse = self.coarse_head(self.context(self.down2(fine)))
        upsampled = F.interpolate(coarse, size=fine.shape[-3:], mode="trilinear", align_corners=False)
        return upsampled + self.fine_head(fine)


def spatial_expectation(heatmap_logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints as the expected cell centre under a softmax over each heatmap.

    Args:
        heatmap_logits: (B, K, H, H, H) logits; array axes (x, y, z).
        temperature: logits are multiplied by ``1 / temperature`` before the softmax.

    Returns:
        keypoints (B, K, 3) in the grid frame (cell centres ``-1 + (2i + 1)/H``) and the
        (B, K, H, H, H) probability maps.
    """
    batch, k, size = heatmap_logits.shape[:3]
    flat = (heatmap_logits.float() / temperature).reshape(batch, k, -1)
    prob = torch.softmax(flat, dim=-1).reshape(batch, k, size, size, size)
    c = voxel_centers(size, device=heatmap_logits.device)
    x = torch.einsum("bkijl,i->bk", prob, c)
    y = torch.einsum("bkijl,j->bk", prob, c)
    z = torch.einsum("bkijl,l->bk", prob, c)
    return torch.stack([x, y, z], dim=-1), prob


class VoxelDecoder(nn.Module):
    """The shared decoder: Linear -> 4^3 x C grid -> four stride-2 transposed convolutions -> 64^3 logits.

    Channels halve at every stage (C, C/2, ..., C/16); the paper uses C = 512.
    """

    def __init__(self, latent_dim: int, channels: int = 512):
        super().__init__()
        if channels % 16:
            raise ValueError(f"decoder channels must be a multiple of 16, got {channels}")
        self.channels = channels
        self.fc = nn.Linear(latent_dim, channels * 4**3)
        stages = []
        c = channels
        for _ in range(4):
            stages += [nn.ConvTranspose3d(c, c // 2, 2, stride=2), nn.ReLU(inplace=True)]
            c //= 2
        self.upsample = nn.Sequential(*stages)
        self.out = nn.Conv3d(c, 1, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(latent.reshape(len(latent), -1)))
        x = x.view(len(latent), self.channels, 4, 4, 4)
        return self.out(self.upsample(x))


class KeypointNet(nn.Module):
    """KP-Net: voxels -> K heatmaps (32^3) -> keypoints (expectation) -> decoder -> voxel logits."""

    kind = "keypoint"

    def __init__(self, encoder: str, num_keypoints: int = 32, decoder_channels: int = 512,
                 heatmap_temperature: float = 1.0, encoder_options: dict | None = None):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; registered: {sorted(ENCODERS)}")
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be positive, got {num_keypoints}")
        self.num_keypoints = num_keypoints
        self.heatmap_temperature = heatmap_temperature
        self.encoder = ENCODERS[encoder](num_keypoints=num_keypoints, **(encoder_options or {}))
        self.decoder = VoxelDecoder(3 * num_keypoints, decoder_channels)

    def heatmaps(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64, 64) -> (B, K, 32, 32, 32) heatmap logits."""
        logits = self.encoder(voxels)
        if logits.shape[1:] != (self.num_keypoints, HEATMAP_SIZE, HEATMAP_SIZE, HEATMAP_SIZE):
            raise RuntimeError(f"encoder produced {tuple(logits.shape)}, expected (B, K, 32, 32, 32)")
        return logits

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64, 64) occupancy -> (B, K, 3) keypoints in the grid frame."""
        return spatial_expectation(self.heatmaps(voxels), self.heatmap_temperature)[0]

    def decode(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) keypoints -> (B, 1, 64, 64, 64) occupancy logits."""
        return self.decoder(keypoints)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        keypoints, prob = spatial_expectation(self.heatmaps(voxels), self.heatmap_temperature)
        return {"latent": keypoints, "logits": self.decode(keypoints), "heatmaps": prob}


class CNNNet(nn.Module):
    """The CNN-Net baseline: four [Conv3d k2, ReLU, MaxPool 2] blocks -> Linear latent -> same decoder."""

    kind = "latent"

    def __init__(self, latent_dim: int = 128, decoder_channels: int = 512, encoder_channels=(64, 128, 256, 512)):
        super().__init__()
        blocks = []
        c_in = 1
        for c_out in encoder_channels:
            # 'same' padding for the even kernel: one zero plane after each axis, as TensorFlow pads.
            blocks += [nn.ConstantPad3d((0, 1, 0, 1, 0, 1), 0.0), nn.Conv3d(c_in, c_out, 2), nn.ReLU(inplace=True), nn.MaxPool3d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.to_latent = nn.Linear(c_in * 4**3, latent_dim)
        self.latent_dim = latent_dim
        self.decoder = VoxelDecoder(latent_dim, decoder_channels)

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64, 64) occupancy -> (B, latent_dim) code."""
        return self.to_latent(self.features(voxels).flatten(1))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) code -> (B, 1, 64, 64, 64) occupancy logits."""
        return self.decoder(latent)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.encode(voxels)
        return {"latent": latent, "logits": self.decode(latent)}


PRESETS: dict[str, dict] = {
    "paper": {"model": "keypoint", "encoder": "paper", "num_keypoints": 32, "decoder_channels": 512},
    "fast": {"model": "keypoint", "encoder": "fast", "num_keypoints": 32, "decoder_channels": 256},
    "cnn": {"model": "cnn", "latent_dim": 128, "decoder_channels": 512},
}


def model_config(preset: str, **overrides) -> dict:
    """Architecture dict of a preset ("paper", "fast", "cnn"), with ``overrides`` applied (None ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    arch = dict(PRESETS[preset], grid_size=GRID_SIZE)
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return arch


def build_model(arch: dict) -> nn.Module:
    """Instantiate a model from its architecture dict (as stored in checkpoints)."""
    arch = dict(arch)
    kind = arch.pop("model", None)
    grid_size = arch.pop("grid_size", GRID_SIZE)
    if grid_size != GRID_SIZE:
        raise ValueError(f"models are built for a {GRID_SIZE}^3 grid, the architecture asks for {grid_size}")
    try:
        if kind == "keypoint":
            model = KeypointNet(**arch)
        elif kind == "cnn":
            model = CNNNet(**arch)
        else:
            raise ValueError(f"unknown model type {kind!r}; expected 'keypoint' or 'cnn'")
    except TypeError as err:
        raise ValueError(f"invalid architecture {arch}: {err}") from err
    model.arch = {"model": kind, "grid_size": grid_size, **arch}
    return model
