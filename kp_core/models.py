"""KP-Net (keypoint bottleneck), the CNN-Net baseline, and a registry of keypoint encoders.

Every model has ``encode(voxels) -> latent`` and ``decode(latent) -> logits`` and an attribute ``kind``, the
architecture's ``"model"`` entry: ``"keypoint"`` (latent = (B, K, 3) keypoints in the grid frame) or ``"cnn"``
(an unstructured vector).
Models are built from a JSON-able architecture dict (:func:`model_config`, :func:`build_model`) that
checkpoints store beside the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import GRID_SIZE, HEATMAP_SIZE, grid_points, rotate_grid_z, rotate_z_points, yaw_to_template
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


def spatial_expectation(heatmap_logits: torch.Tensor, centers: torch.Tensor,
                        temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints as the expected cell centre under a softmax over each heatmap, in float32 (also under
    autocast: bf16 would round the keypoints by up to 1/16 voxel).

    Args:
        heatmap_logits: (B, K, ...) logits over C cells (any cell layout, flattened row-major).
        centers: (C, 3) grid-frame centre of each cell, in the same order.
        temperature: logits are multiplied by ``1 / temperature`` before the softmax.

    Returns:
        keypoints (B, K, 3) in the grid frame and the (B, K, ...) probability maps.
    """
    batch, k = heatmap_logits.shape[:2]
    cells = heatmap_logits[0, 0].numel()
    if cells != centers.shape[0]:
        raise ValueError(f"{cells} heatmap cells but {centers.shape[0]} cell centres")
    # The sums run as (3, C) @ (C, K) products: a (K, C) @ (C, 3) one is several times slower on CPU. A
    # channels-last map (the node's encoder) is read as the (B, C, K) array it is in memory, with no copy.
    channels_last = heatmap_logits.dim() == 5 and heatmap_logits.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(heatmap_logits.device.type, enabled=False):
        # The softmax reads bf16 logits and writes float32 itself: no float32 copy, no division at temperature 1.
        logits = heatmap_logits if temperature == 1.0 else heatmap_logits.float() / temperature
        centers_t = centers.float().t()
        if channels_last:
            prob = torch.softmax(logits.permute(0, 2, 3, 4, 1).reshape(batch, cells, k), dim=1,
                                 dtype=torch.float32)  # (B, C, K)
            keypoints = (centers_t @ prob).transpose(-1, -2)
            prob = prob.transpose(1, 2)
        else:
            prob = torch.softmax(logits.reshape(batch, k, cells), dim=-1, dtype=torch.float32)  # (B, K, C)
            keypoints = (centers_t @ prob.transpose(-1, -2)).transpose(-1, -2)
    return keypoints, prob.reshape(heatmap_logits.shape)


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
    """KP-Net: voxels -> K heatmaps (32^3) -> keypoints (expectation) -> decoder -> voxel logits.

    With ``canonical_yaw`` the decoder is equivariant to turns about the grid's z axis by construction:
    ``g(k) = turn_psi(g_c(R_z(-psi) k))``, ``psi`` = :func:`kp_core.geometry.yaw_to_template` of ``k`` against
    the model's ``yaw_template`` buffer (fitted from an encoder's keypoints at known yaws,
    :func:`fit_yaw_template`). Since ``psi(R_z(a) k) = psi(k) + a``, the inner decoder ``g_c`` always sees
    the object at one yaw and only has to learn scale and placement, and the rotate-goal ``g(R_z(a) k)``
    is the canonical reconstruction turned by ``a``. The output turn resamples z slices bilinearly.
    A zero template (not yet fitted) leaves the decoder as it is.
    """

    kind = "keypoint"

    def __init__(self, encoder: str, num_keypoints: int = 32, decoder_channels: int = 512,
                 heatmap_temperature: float = 1.0, encoder_options: dict | None = None, canonical_yaw: bool = False):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; registered: {sorted(ENCODERS)}")
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be positive, got {num_keypoints}")
        self.num_keypoints = num_keypoints
        self.heatmap_temperature = heatmap_temperature
        self.encoder = ENCODERS[encoder](num_keypoints=num_keypoints, **(encoder_options or {}))
        if not hasattr(self.encoder, "heatmap_centers"):  # a registered encoder that predicts 32^3 Cartesian heatmaps
            self.encoder.register_buffer("heatmap_centers", grid_points(HEATMAP_SIZE).reshape(-1, 3), persistent=False)
        self.decoder = VoxelDecoder(3 * num_keypoints, decoder_channels)
        self.canonical_yaw = bool(canonical_yaw)
        if self.canonical_yaw:
            self.register_buffer("yaw_template", torch.zeros(num_keypoints, 2))

    def input_from_points(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 3) grid-frame points -> the encoder's input grid (see the encoder's ``input_from_points``)."""
        to_input = getattr(self.encoder, "input_from_points", CartesianInput.input_from_points)
        return to_input(points, mask)

    def heatmaps(self, voxels: torch.Tensor) -> torch.Tensor:
        """Encoder input -> (B, K, ...) heatmap logits over the encoder's cells."""
        logits = self.encoder(voxels)
        if logits.shape[1] != self.num_keypoints or logits[0, 0].numel() != len(self.encoder.heatmap_centers):
            raise RuntimeError(f"encoder produced {tuple(logits.shape)}, expected {self.num_keypoints} heatmaps "
                               f"of {len(self.encoder.heatmap_centers)} cells")
        return logits

    def keypoints_from_heatmaps(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, ...) heatmap logits -> (B, K, 3) keypoints and the probability maps."""
        return spatial_expectation(logits, self.encoder.heatmap_centers, self.heatmap_temperature)

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """Encoder input ((B, 1, 64, 64, 64) occupancy for every encoder) -> (B, K, 3) grid-frame keypoints."""
        return self.keypoints_from_heatmaps(self.heatmaps(voxels))[0]

    def decode(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) keypoints -> (B, 1, 64, 64, 64) occupancy logits."""
        if not self.canonical_yaw:
            return self.decoder(keypoints)
        yaw = yaw_to_template(keypoints.float(), self.yaw_template)
        canonical = self.decoder(rotate_z_points(keypoints, -yaw.to(keypoints.dtype)))
        # Resampled in float32 even under bf16 autocast: bf16 interpolation flipped 2-3 % of a goal's voxels.
        return rotate_grid_z(canonical.float(), yaw)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        keypoints, prob = self.keypoints_from_heatmaps(self.heatmaps(voxels))
        return {"latent": keypoints, "logits": self.decode(keypoints), "heatmaps": prob}


class CNNNet(nn.Module):
    """The CNN-Net baseline: four [Conv3d k2, ReLU, MaxPool 2] blocks -> Linear latent -> same decoder."""

    kind = "cnn"

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

    input_from_points = staticmethod(CartesianInput.input_from_points)

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64, 64) occupancy -> (B, latent_dim) code."""
        return self.to_latent(self.features(voxels).flatten(1))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) code -> (B, 1, 64, 64, 64) occupancy logits."""
        return self.decoder(latent)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.encode(voxels)
        return {"latent": latent, "logits": self.decode(latent)}


@torch.no_grad()
def fit_yaw_template(model: KeypointNet, keypoints: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Set a ``canonical_yaw`` model's template to the mean horizontal keypoint layout of views at known yaws.

    Args:
        keypoints: (B, K, 3) keypoints of views of one object turned by ``angle`` (B,) about z.

    Returns:
        (K, 2) the template (also stored in ``model.yaw_template``).
    """
    if not model.canonical_yaw:
        raise ValueError("the model has no yaw template (built without canonical_yaw)")
    centred = keypoints.float() - keypoints.float().mean(dim=-2, keepdim=True)
    template = rotate_z_points(centred, -angle.float())[..., :2].mean(0)
    model.yaw_template.copy_(template)
    return template


@dataclass(frozen=True)
class KeypointNetPreset:
    """A KP-Net architecture: which registered encoder, K, and the decoder's width."""

    encoder: str
    num_keypoints: int = 32
    decoder_channels: int = 512
    model: str = "keypoint"


@dataclass(frozen=True)
class CNNNetPreset:
    """A CNN-Net architecture: the latent size and the decoder's width."""

    latent_dim: int = 128
    decoder_channels: int = 512
    model: str = "cnn"


PRESETS: dict[str, KeypointNetPreset | CNNNetPreset] = {
    "paper": KeypointNetPreset("paper", decoder_channels=512),
    "fast": KeypointNetPreset("fast", decoder_channels=256),
    "cylinder": KeypointNetPreset("cylinder", decoder_channels=256),
    "cnn": CNNNetPreset(),
}


def model_config(preset: str, **overrides) -> dict:
    """Architecture dict of a preset ("paper", "fast", "cylinder", "cnn"), with ``overrides`` applied (None ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    arch = dict(asdict(PRESETS[preset]), grid_size=GRID_SIZE)
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return arch


def build_model(arch: dict) -> nn.Module:
    """Instantiate a model from its architecture dict (as stored in checkpoints)."""
    arch = dict(arch)
    kind = arch.pop("model", None)  # each class's ``kind``
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
