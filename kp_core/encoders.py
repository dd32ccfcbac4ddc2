"""The keypoint encoders KP-Net can use, by name (:data:`ENCODERS`): the paper's, a faster Cartesian one, and the
z-rotation equivariant cylinder encoder the node serves.

Each maps its input grid (see its ``input_from_points``) to (B, K, ...) heatmap logits over cells whose grid-frame
centres are its ``heatmap_centers`` buffer; :class:`kp_core.models.KeypointNet` turns those into keypoints.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import GRID_SIZE, HEATMAP_SIZE, grid_points
from .voxelize import CYLINDER_BINS, voxelize, voxelize_cylindrical

ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str):
    """Decorator adding a keypoint encoder class to :data:`ENCODERS`.

    An encoder is built as ``cls(num_keypoints=K, **options)``. It maps its input (by default the
    (B, 1, 64, 64, 64) Cartesian occupancy, see :meth:`CartesianInput.input_from_points`) to (B, K, ...)
    heatmap logits over cells whose grid-frame centres are its ``heatmap_centers`` buffer ((cells, 3)).
    """

    def add(cls):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = cls
        return cls

    return add


class CartesianInput(nn.Module):
    """Base of the encoders that read the 64^3 Cartesian grid and predict 32^3 Cartesian heatmaps."""

    def __init__(self):
        super().__init__()
        # Not saved with the weights: a function of the architecture only.
        self.register_buffer("heatmap_centers", grid_points(HEATMAP_SIZE).reshape(-1, 3), persistent=False)

    @staticmethod
    def input_from_points(points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 3) grid-frame points -> (B, 1, 64, 64, 64) occupancy."""
        return voxelize(points, GRID_SIZE, mask)


@register_encoder("paper")
class PaperEncoder(CartesianInput):
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
class FastEncoder(CartesianInput):
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


def _circular_theta(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad a (B, C, R, T, Z) tensor circularly along theta (dim 3)."""
    return torch.cat([x[:, :, :, -pad:], x, x[:, :, :, :pad]], dim=3) if pad else x


class CylinderConv(nn.Module):
    """3-D convolution on a (r, theta, z) grid: circular along theta, zero padding along r and z.

    With circular padding and a theta stride s, shifting the input by s * m theta cells shifts the
    output by m cells: a rotation about the axis commutes with the layer.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=(self.pad, 0, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_circular_theta(x, self.pad))


def _upsample_circular(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear upsampling by an integer factor that wraps around along theta (dim 3)."""
    factor = size[1] // x.shape[3]
    padded = F.interpolate(_circular_theta(x, 1), size=(size[0], size[1] + 2 * factor, size[2]),
                           mode="trilinear", align_corners=False)
    return padded[:, :, :, factor:-factor]


def cylinder_cell_centers(bins: tuple[int, int, int]) -> torch.Tensor:
    """(R * T * Z, 3) grid-frame (Cartesian) centres of the cells of an (r, theta, z) grid, row-major."""
    n_r, n_t, n_z = bins
    r = (torch.arange(n_r) + 0.5) / n_r
    theta = (torch.arange(n_t) + 0.5) * (2 * math.pi / n_t)
    z = -1.0 + (2.0 * torch.arange(n_z) + 1.0) / n_z
    rr, tt, zz = torch.meshgrid(r, theta, z, indexing="ij")
    return torch.stack([rr * torch.cos(tt), rr * torch.sin(tt), zz], dim=-1).reshape(-1, 3)


@register_encoder("cylinder")
class CylinderEncoder(nn.Module):
    """A keypoint encoder equivariant to rotations about the grid's z axis by construction.

    The input is the occupancy on a cylindrical grid (r, theta, z) about the grid's vertical axis
    (32 x 128 x 64, binned straight from points, or resampled from a 64^3 Cartesian grid). Every layer
    is a :class:`CylinderConv` (circular along theta), the theta-pooled features are rotation invariant,
    and a keypoint is the softmax expectation of the Cartesian centres of its (r, theta, z) heatmap cells
    (16 x 64 x 32). Rotating the object by a multiple of 2 pi / 32 (the theta stride of the deepest layer,
    11.25 deg) shifts the heatmaps, so the keypoints turn with the object exactly; in between the
    consistency loss only has to interpolate. Layout as :class:`FastEncoder`: two stride-2 layers, dilated
    context (1, 2, 4) plus a pooled ring summary so that every cell sees the whole object, a coarse and
    a fine 1x1 head.
    """

    def __init__(self, num_keypoints: int, width: int = 48, bins: tuple[int, int, int] = CYLINDER_BINS):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        if any(b % 4 for b in self.bins):
            raise ValueError(f"cylinder bins must be multiples of 4 (two stride-2 layers), got {self.bins}")
        self.down1 = nn.Sequential(CylinderConv(1, 16, 3, stride=2), nn.ReLU(inplace=True))
        self.down2 = nn.Sequential(CylinderConv(16, 32, 3, stride=2), nn.ReLU(inplace=True))
        layers, channels = [], 32
        for dilation in (1, 2, 4):
            layers.append(CylinderConv(channels, width, 3, dilation=dilation))
            channels = width
        self.context = nn.ModuleList(layers)
        self.ring = nn.Conv3d(width, width, 1)  # mixes the theta-pooled summary back into every cell
        self.coarse_head = nn.Conv3d(width, num_keypoints, 1)
        self.fine_head = nn.Conv3d(16, num_keypoints, 1)
        heatmap_bins = (self.bins[0] // 2, self.bins[1] // 2, self.bins[2] // 2)
        self.register_buffer("heatmap_centers", cylinder_cell_centers(heatmap_bins), persistent=False)
        # Where each cylindrical input cell centre lies in the Cartesian 64^3 grid, for grid_sample.
        self.register_buffer("_sample_grid", cylinder_cell_centers(self.bins).reshape(1, *self.bins, 3).flip(-1),
                             persistent=False)

    def input_from_points(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 3) grid-frame points -> (B, 1, R, T, Z) cylindrical occupancy."""
        return voxelize_cylindrical(points, self.bins, mask)

    def cylindrical(self, x: torch.Tensor) -> torch.Tensor:
        """Pass a cylindrical grid through; resample a (B, 1, 64, 64, 64) Cartesian one (nearest cell)."""
        if tuple(x.shape[2:]) == self.bins:
            return x
        if tuple(x.shape[2:]) != (GRID_SIZE,) * 3:
            raise ValueError(f"expected a (B, 1, {self.bins}) cylindrical or (B, 1, 64, 64, 64) grid, got {tuple(x.shape)}")
        # grid_sample's last coordinate indexes the input's last axis: (z, y, x) order, hence the flip above.
        grid = self._sample_grid.to(x.dtype).expand(len(x), *self.bins, 3)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.down1(self.cylindrical(x))
        h = self.down2(fine)
        for layer in self.context:
            h = F.relu(layer(h))
        h = F.relu(h + self.ring(h.mean(dim=3, keepdim=True)))
        coarse = _upsample_circular(self.coarse_head(h), fine.shape[-3:])
        return coarse + self.fine_head(fine)
