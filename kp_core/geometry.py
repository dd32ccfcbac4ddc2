"""Frame conventions and rigid/affine helpers, fixed once for the whole project.

Grid frame: the cube [-1, 1]^3 split into ``G`` voxels per axis (``G = 64`` for the occupancy grid,
``32`` for keypoint heatmaps). Voxel ``i`` spans ``[-1 + 2i/G, -1 + 2(i+1)/G)`` on each axis and its
centre is ``-1 + (2i + 1)/G``. Array axes (0, 1, 2) of a ``(..., G, G, G)`` grid are (x, y, z); z is up.
Keypoints live in this frame.

Augmentation: ``p' = R_z(theta) S p`` about the origin, with ``S = diag(s_x, s_y, s_z)``; its inverse is
``S^-1 R_z(theta)^T p'``.

Metric <-> grid: ``p_grid = (p_metric - center) / half_extent`` (see :class:`MetricGridMap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GRID_SIZE = 64
HEATMAP_SIZE = 32
NORMALIZE_MARGIN = 0.04
"""Grid units a normalized shape keeps free at the cube's border (a bit more than one 64^3 voxel, 2/64 = 0.031)."""


def _check_batch(points: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> None:
    """Points (B, N, 3), angle (B,) and scale (B, 3), or ValueError naming the shapes received."""
    b = points.shape[0] if points.ndim == 3 else None
    if not (points.ndim == 3 and points.shape[-1] == 3 and angle.shape == (b,) and scale.shape == (b, 3)):
        raise ValueError(f"expected points (B, N, 3), angle (B,) and scale (B, 3), got {tuple(points.shape)}, "
                         f"{tuple(angle.shape)} and {tuple(scale.shape)}")


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices about +z (counter-clockwise seen from above).

    Args:
        angle: (...) angles in radians.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    angle = torch.as_tensor(angle)
    if not angle.is_floating_point():
        angle = angle.to(torch.get_default_dtype())
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rows = (
        torch.stack([c, -s, zero], dim=-1),
        torch.stack([s, c, zero], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    )
    return torch.stack(rows, dim=-2)


def transform_points(points: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Apply the augmentation ``p' = R_z(angle) diag(scale) p``.

    Args:
        points: (B, N, 3) points.
        angle: (B,) rotation about z in radians.
        scale: (B, 3) per-axis scale factors.

    Returns:
        (B, N, 3) transformed points.
    """
    _check_batch(points, angle, scale)
    return points @ augmentation_matrix(angle, scale).to(points.dtype).transpose(-1, -2)


def augmentation_matrix(angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The augmentation's linear map ``R_z(angle) diag(scale)``: (B,) angles, (B, 3) scales -> (B, 3, 3)."""
    return rotation_z(angle).to(scale.dtype) * scale[:, None, :]


def inverse_transform_points(points: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Undo :func:`transform_points`: ``p = diag(scale)^-1 R_z(angle)^T p'``.

    Args:
        points: (B, N, 3) transformed points.
        angle: (B,) rotation about z in radians.
        scale: (B, 3) per-axis scale factors (non-zero).

    Returns:
        (B, N, 3) points in the canonical frame.
    """
    _check_batch(points, angle, scale)
    unrotated = points @ rotation_z(angle).to(points.dtype)
    return unrotated / scale[:, None, :]


def rotate_z_points(points: torch.Tensor, angle: torch.Tensor | float) -> torch.Tensor:
    """Rotate points about the grid's z axis (through the origin).

    Args:
        points: (..., N, 3) points.
        angle: scalar or (...) angles in radians, broadcast against the batch dimensions of ``points``.

    Returns:
        (..., N, 3) rotated points.
    """
    rot = rotation_z(torch.as_tensor(angle, dtype=points.dtype, device=points.device))
    return points @ rot.transpose(-1, -2)


def voxel_centers(grid_size: int = GRID_SIZE, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centre coordinate of every voxel along one axis.

    Returns:
        (G,) tensor with entries ``-1 + (2i + 1)/G``.
    """
    return -1.0 + (2.0 * torch.arange(grid_size, device=device, dtype=dtype) + 1.0) / grid_size


def grid_points(grid_size: int = GRID_SIZE, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centre of every voxel.

    Returns:
        (G, G, G, 3) tensor; ``out[i, j, k] = (c_i, c_j, c_k)``.
    """
    c = voxel_centers(grid_size, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)


def rotate_grid_z(grids: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Turn grids about the grid's z axis: ``out(p) = grids(R_z(-angle) p)`` (as :func:`rotate_z_points` turns points).

    Each z slice is resampled bilinearly (a turn about z never mixes slices); cells that come from outside
    the grid repeat its border, so logits of empty space stay empty. Multiples of 90 deg are exact.

    Args:
        grids: (B, C, G, G, G) grids, array axes (x, y, z).
        angle: (B,) angles in radians.

    Returns:
        (B, C, G, G, G) turned grids.
    """
    if grids.ndim != 5 or angle.shape != (grids.shape[0],):
        raise ValueError(f"expected grids (B, C, G, G, G) and angle (B,), got {tuple(grids.shape)} and {tuple(angle.shape)}")
    b, c, gx, gy, gz = grids.shape
    slices = grids.permute(0, 4, 1, 2, 3).reshape(b * gz, c, gx, gy)
    center = voxel_centers(gx, device=grids.device, dtype=grids.dtype)
    x, y = torch.meshgrid(center, center, indexing="ij")
    cos, sin = torch.cos(angle).to(grids.dtype)[:, None, None], torch.sin(angle).to(grids.dtype)[:, None, None]
    source_x, source_y = cos * x + sin * y, -sin * x + cos * y
    # grid_sample's last coordinate indexes the input's last axis: (y, x) for an (x, y) slice.
    sample = torch.stack([source_y, source_x], dim=-1).repeat_interleave(gz, dim=0)
    turned = F.grid_sample(slices, sample, mode="bilinear", padding_mode="border", align_corners=False)
    return turned.reshape(b, gz, c, gx, gy).permute(0, 2, 3, 4, 1)


def _procrustes_terms(points: torch.Tensor, template: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D Procrustes sums of (B, K, 3) point sets against a (K, 2) centred template: the centred horizontal
    layouts (B, K, 2), and the cross and dot sums (B,) whose angle is the best turn."""
    xy = points[..., :2] - points[..., :2].mean(dim=-2, keepdim=True)
    cross = (template[:, 0] * xy[..., 1] - template[:, 1] * xy[..., 0]).sum(-1)
    dot = (template * xy).sum((-1, -2))
    return xy, cross, dot


def yaw_to_template(points: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """The turn about z that best carries a template's horizontal layout onto each point set's (2-D Procrustes).

    Both are centred on their own centroids, so the answer is a property of the layout: turning ``points``
    by ``psi`` about any vertical axis adds exactly ``psi``. A layout with no horizontal spread (or a zero
    template) gives 0.

    Args:
        points: (B, K, 3) points (keypoints).
        template: (K, 2) horizontal template, centred.

    Returns:
        (B,) angles in radians, in (-pi, pi].
    """
    _, cross, dot = _procrustes_terms(points, template)
    return torch.atan2(cross, dot)


def yaw_alignment(points: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """How well each point set's horizontal layout matches the template turned by :func:`yaw_to_template`'s
    angle: the normalized 2-D Procrustes correlation, 1 for the template turned rigidly, lower the more the
    layout differs (a view that hides what sets the yaw gives a layout the template fits less well).

    Args:
        points: (B, K, 3); template: (K, 2), centred.

    Returns:
        (B,) values in [0, 1] (0 for a layout or template with no horizontal spread).
    """
    xy, cross, dot = _procrustes_terms(points, template)
    scale = template.norm() * xy.flatten(-2).norm(dim=-1)
    return torch.where(scale > 0, torch.hypot(cross, dot) / scale.clamp_min(1e-30), torch.zeros_like(scale))


def point_to_index(points: torch.Tensor, grid_size: int = GRID_SIZE) -> torch.Tensor:
    """Voxel index of each point, clipped into the border voxels.

    Args:
        points: (..., 3) finite points in the grid frame.

    Returns:
        (..., 3) int64 indices in ``[0, G - 1]``.
    """
    if points.shape[-1:] != (3,):
        raise ValueError(f"expected points (..., 3), got {tuple(points.shape)}")
    index = torch.floor((points + 1.0) * (grid_size / 2.0)).long()
    return index.clamp_(0, grid_size - 1)


@dataclass(frozen=True, eq=False)
class MetricGridMap:
    """Affine map between a metric frame (e.g. a sensor frame, metres) and the grid frame.

    ``p_grid = (p_metric - center) / half_extent``: ``center`` is where the grid origin lies in the metric
    frame and ``half_extent`` how many metres one grid unit spans (the cube is ``2 * half_extent`` wide).
    """

    center: np.ndarray
    half_extent: float

    def __post_init__(self):
        center = np.asarray(self.center, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(center)):
            raise ValueError(f"MetricGridMap center must be finite, got {center}")
        if not (np.isfinite(self.half_extent) and self.half_extent > 0):
            raise ValueError(f"MetricGridMap half_extent must be a positive number, got {self.half_extent}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "half_extent", float(self.half_extent))

    def __eq__(self, other) -> bool:
        if not isinstance(other, MetricGridMap):
            return NotImplemented
        return self.half_extent == other.half_extent and np.array_equal(self.center, other.center)

    def __hash__(self) -> int:
        return hash((self.center.tobytes(), self.half_extent))

    @property
    def voxel_size(self) -> float:
        """Edge length of one 64^3 voxel in metres."""
        return 2.0 * self.half_extent / GRID_SIZE

    def to_grid(self, points):
        """(..., 3) metric points (ndarray or tensor) -> grid frame, same type."""
        if isinstance(points, torch.Tensor):
            center = torch.as_tensor(self.center, dtype=points.dtype, device=points.device)
            return (points - center) / self.half_extent
        return (np.asarray(points) - self.center) / self.half_extent

    def to_metric(self, points):
        """(..., 3) grid-frame points (ndarray or tensor) -> metric frame, same type."""
        if isinstance(points, torch.Tensor):
            center = torch.as_tensor(self.center, dtype=points.dtype, device=points.device)
            return points * self.half_extent + center
        return np.asarray(points) * self.half_extent + self.center


def bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (min, max) of (N, D) points, each (D,).

    Column by column: numpy's axis-0 reduction of a C-ordered (N, 3) array walks memory with a stride and is
    far slower, and the node places a grid on every cloud.
    """
    points = np.asarray(points)
    lo = np.array([points[:, i].min() for i in range(points.shape[1])])
    hi = np.array([points[:, i].max() for i in range(points.shape[1])])
    return lo, hi


def fitting_half_extent(centered: np.ndarray, margin: float) -> float:
    """Smallest half extent so that every z-rotation of ``centered`` ((N, 3) points) fits in ``1 - margin``."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    radius = float(np.sqrt((centered[:, 0] ** 2 + centered[:, 1] ** 2).max()))
    half_height = float(np.abs(centered[:, 2]).max())
    extent = max(radius, half_height)
    if extent <= 0:
        raise ValueError("points have zero extent: cannot fit them into the grid")
    return extent / (1.0 - margin)
