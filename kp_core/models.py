"""KP-Net (keypoint bottleneck) and the CNN-Net baseline; their encoders are in :mod:`kp_core.encoders`.

Every model has ``encode(voxels) -> latent`` and ``decode(latent) -> logits`` and an attribute ``kind``, the
architecture's ``"model"`` entry: ``"keypoint"`` (latent = (B, K, 3) keypoints in the grid frame) or ``"cnn"``
(an unstructured vector).
Models are built from a JSON-able architecture dict (:func:`model_config`, :func:`build_model`) that
checkpoints store beside the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import ENCODERS, CartesianInput
from .geometry import GRID_SIZE, HEATMAP_SIZE, grid_points, rotate_grid_z, rotate_z_points, yaw_to_template


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

    @property
    def reads_occupancy_grid(self) -> bool:
        """Whether the encoder's input is the 64^3 occupancy grid the decoder predicts (so a solid view's target
        is its input)."""
        return isinstance(self.encoder, CartesianInput) or not hasattr(self.encoder, "input_from_points")

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
    reads_occupancy_grid = True

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
    """A CNN-Net architecture: the latent size, the decoder's width and the encoder's."""

    latent_dim: int = 128
    decoder_channels: int = 512
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512)
    model: str = "cnn"


PRESETS: dict[str, KeypointNetPreset | CNNNetPreset] = {
    "paper": KeypointNetPreset("paper", decoder_channels=512),
    "fast": KeypointNetPreset("fast", decoder_channels=256),
    "cylinder": KeypointNetPreset("cylinder", decoder_channels=256),
    "cnn": CNNNetPreset(),
    # CNN-Net as narrow as the fast KP-Net (16, then 32 channels on the finest grids), for a CPU-scale comparison.
    "cnn-fast": CNNNetPreset(decoder_channels=256, encoder_channels=(16, 32, 64, 128)),
}


def model_config(preset: str, **overrides) -> dict:
    """Architecture dict of a preset (a key of :data:`PRESETS`), with ``overrides`` applied (None ignored)."""
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
    # As its checkpoint's JSON will hold it (lists, not tuples), so that a saved and a built model compare equal.
    model.arch = json.loads(json.dumps({"model": kind, "grid_size": grid_size, **arch}))
    return model
