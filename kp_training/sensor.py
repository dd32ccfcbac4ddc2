"""Simulated depth-sensor views of a shape: what the node receives, as training and evaluation inputs.

A depth sensor sees an object's *surface*, from one side, with depth noise, uneven density, dropouts and a
few outliers. :class:`SensorSimulator` makes such clouds from dense surface samples of a shape with a
batched z-buffer in torch (any device, no per-view Python loop): a surface sample is seen from a camera
when no other sample projects into its pixel nearer to the camera. "Whole" clouds fuse several cameras
around the object; single views come from one camera (azimuth anywhere, elevation 10-70 deg above the
table, 0.4-1.5 m away for the 300 ml mug). The table occludes nothing the cameras could see: they are
all above it. A share of the fused clouds (``SensorConfig.held_fraction``) shows the object held up by a
gripper instead: no table, and one camera more below it sees its underside. A share of the clouds
(``SensorConfig.artifact_fraction``) gets a real camera's artifacts: more depth noise, flying pixels at the
first camera's silhouette and a ring of table around the base, which the object hides from the cameras
through the same z-buffer.

Distances are in normalized shape units (the grid frame of a shape at scale 1, see
:mod:`kp_training.shapes`); ``metres_per_unit`` converts the sensor's metric settings for shapes in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kp_core.geometry import point_to_index
from kp_core.voxelize import voxelize

SURFACE_GRID = 128
"""Cells per axis of the lattice that finds surface samples among solid samples: coarser than the solid
samples' spacing, so every cell inside the solid holds a sample and only the skin has empty neighbours."""


def surface_samples(solid: torch.Tensor, count: int | None = 120_000, grid_size: int = SURFACE_GRID, seed: int = 0) -> torch.Tensor:
    """The solid samples lying in cells of a ``grid_size``^3 lattice that touch empty space.

    Args:
        solid: (N, 3) dense samples of a solid in the grid frame (a shape's ``points``).
        count: keep this many of them (a seeded random subset; None: all). 120k give the 300 ml mug
            about six samples per 2 mm z-buffer pixel: a pixel of a near surface is then almost never empty
            (which would let a far surface show through), and the density is ample for 2-3 mm voxels.

    Returns:
        (M, 3) samples of the surface, a layer about one lattice cell thick.
    """
    occupied = voxelize(solid[None], grid_size)
    interior = -F.max_pool3d(-F.pad(occupied, (1, 1, 1, 1, 1, 1)), kernel_size=3, stride=1)  # 3x3x3 erosion
    skin = (occupied > 0) & (interior == 0)
    index = point_to_index(solid, grid_size)
    on_skin = skin[0, 0, index[:, 0], index[:, 1], index[:, 2]]
    skin_points = solid[on_skin]
    if count is not None and count < len(skin_points):
        keep = torch.randperm(len(skin_points), generator=torch.Generator().manual_seed(seed))[:count]
        skin_points = skin_points[keep.to(skin_points.device)]
    return skin_points


@dataclass(frozen=True)
class SensorConfig:
    """How simulated sensor clouds vary (distances in metres; the simulator converts them)."""

    whole_fraction: float = 0.3
    """Share of clouds fused from several cameras around the object (the rest: one camera)."""
    whole_cameras: int = 4
    elevation_deg: tuple[float, float] = (10.0, 70.0)
    distance_m: tuple[float, float] = (0.4, 1.5)
    noise_m: tuple[float, float] = (0.0, 0.0015)
    """Standard deviation of the depth noise along each ray, drawn per cloud."""
    keep: tuple[float, float] = (0.25, 1.0)
    """Share of the seen surface samples kept, drawn per cloud (density, dropouts)."""
    outliers: tuple[float, float] = (0.0, 0.01)
    """Outliers per kept point, drawn per cloud; they fall anywhere in a box 1.3x the object's."""
    pixel_m: float = 0.002
    """Z-buffer pixel at the object; larger than the surface samples' spacing so that no sample of a
    far surface shows through the gaps between the samples of a near one."""
    depth_tolerance_m: float = 0.0025
    """A sample is seen when it is at most this much behind its pixel's nearest sample (less than the
    thinnest wall, more than a pixel's depth range on a moderately oblique surface)."""
    artifact_fraction: float = 0.0
    """Share of clouds with a real camera's artifacts (the three settings below); 0 draws nothing for them,
    so the clouds of a seed stay what they were without."""
    artifact_noise_m: tuple[float, float] = (0.0, 0.003)
    """Depth noise of those clouds (replaces ``noise_m``): up to a stereo camera's at 0.6 m."""
    flying: tuple[float, float] = (0.0, 0.03)
    """Flying pixels per seen point: points of the first camera's silhouette pushed back along its ray."""
    flying_push_m: tuple[float, float] = (0.003, 0.3)
    ring_m: tuple[float, float] = (0.0, 0.03)
    """Width of the ring of table left around the object's base (imperfect plane removal)."""
    held_fraction: float = 0.0
    """Share of the fused clouds of the object held up (no table; one camera more, below it, sees the underside);
    0 draws nothing for them, so the clouds of a seed stay what they were without."""
    held_elevation_deg: tuple[float, float] = (-60.0, -10.0)
    """Elevation of the camera below a held object."""

    def validate(self) -> "SensorConfig":
        pairs = {"elevation_deg": self.elevation_deg, "distance_m": self.distance_m, "noise_m": self.noise_m,
                 "keep": self.keep, "outliers": self.outliers, "artifact_noise_m": self.artifact_noise_m,
                 "flying": self.flying, "flying_push_m": self.flying_push_m, "ring_m": self.ring_m}
        for name, (lo, hi) in pairs.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
                raise ValueError(f"sensor {name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        for name in ("whole_fraction", "artifact_fraction", "held_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"sensor {name} must be in [0, 1], got {getattr(self, name)}")
        if self.whole_cameras < 1 or self.keep[1] > 1 or self.keep[1] <= 0 or self.elevation_deg[1] >= 90:
            raise ValueError("sensor needs whole_cameras >= 1, 0 < keep <= 1 and elevations below 90 deg")
        lo, hi = self.held_elevation_deg
        if not -90 < lo <= hi <= 0:
            raise ValueError(f"sensor held_elevation_deg must be a range -90 < lo <= hi <= 0, got {(lo, hi)}")
        if self.distance_m[0] <= 0 or self.pixel_m <= 0 or self.depth_tolerance_m <= 0:
            raise ValueError("sensor distances, pixel and depth tolerance must be > 0")
        return self


@dataclass
class SensorClouds:
    """A batch of simulated clouds, padded to one length.

    Attributes:
        points: (V, P, 3) points in the frame of the posed shape (normalized units).
        mask: (V, P) bool, True for real points (seen samples, table, flying pixels and outliers).
        whole: (V,) bool, True for clouds fused from several cameras.
        held: (V,) bool, True for clouds of the object held up (fused, no table, a camera below).
        artifacts: (V,) bool, True for clouds with a real camera's artifacts (``SensorConfig.artifact_fraction``).
        cameras: (V, C, 3) camera positions; camera_mask (V, C) which of them were used.
    """

    points: torch.Tensor
    mask: torch.Tensor
    whole: torch.Tensor
    cameras: torch.Tensor
    camera_mask: torch.Tensor
    artifacts: torch.Tensor | None = None
    held: torch.Tensor | None = None


class SensorSimulator:
    """Simulated depth-sensor clouds of one shape in many poses (batched z-buffer in torch)."""

    def __init__(self, surface: torch.Tensor, metres_per_unit: float, config: SensorConfig = SensorConfig()):
        """Args:
            surface: (M, 3) dense surface samples in normalized units (:func:`surface_samples`).
            metres_per_unit: metres per normalized unit of the shape (its ``mesh_units_per_grid_unit`` for a
                mesh in metres; the mug's by default), to convert the metric settings.
        """
        self.config = config.validate()
        self.surface = surface
        self.unit = float(metres_per_unit)
        if not (math.isfinite(self.unit) and self.unit > 0):
            raise ValueError(f"metres_per_unit must be > 0, got {metres_per_unit}")
        self.table, self.table_reach = (table_samples(surface, config.ring_m[1] / self.unit, config.pixel_m / self.unit)
                                        if config.artifact_fraction > 0 and config.ring_m[1] > 0 else (None, None))
        pitch = config.pixel_m / self.unit
        extent = float(surface.abs().amax()) * math.sqrt(3) * 1.3  # any pose, any scale <= 1
        self.pixel = pitch
        self.image_size = int(math.ceil(2 * extent / pitch)) + 2
        self.tolerance = config.depth_tolerance_m / self.unit

    def sample_cameras(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Camera positions around the origin: (n, C, 3), which are used (n, C) and whole flags (n,). With
        ``held_fraction`` C is one more than ``whole_cameras``: the last camera, below the object, is used for the
        held clouds only."""
        cfg, c = self.config, self.config.whole_cameras
        whole = torch.rand(n, generator=generator) < cfg.whole_fraction
        base = torch.rand(n, 1, generator=generator) * (2 * math.pi)
        spread = torch.arange(c) * (2 * math.pi / c) + (torch.rand(n, c, generator=generator) - 0.5) * (math.pi / c)
        azimuth = base + spread
        lo, hi = (math.radians(v) for v in cfg.elevation_deg)
        elevation = _uniform((n, c), (lo, hi), generator)
        d_lo, d_hi = (v / self.unit for v in cfg.distance_m)
        distance = _uniform((n, c), (d_lo, d_hi), generator)
        cameras = _camera_positions(distance, elevation, azimuth)
        used = torch.ones(n, c, dtype=torch.bool)
        used[:, 1:] = whole[:, None]
        if cfg.held_fraction > 0:  # drawn last: a config without held clouds draws what it always did
            held = whole & (torch.rand(n, generator=generator) < cfg.held_fraction)
            elevation = _uniform(n, tuple(math.radians(v) for v in cfg.held_elevation_deg), generator)
            below = _camera_positions(_uniform(n, (d_lo, d_hi), generator), elevation, base[:, 0] + math.pi / c)
            cameras, used = torch.cat([cameras, below[:, None]], 1), torch.cat([used, held[:, None]], 1)
        return cameras, used, whole

    def visible(self, points: torch.Tensor, cameras: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """Which points the used cameras see (z-buffer over the points themselves).

        Args:
            points: (V, N, 3) dense surface samples of V posed shapes.
            cameras: (V, C, 3) camera positions (each looks at the origin).
            used: (V, C) bool, the cameras to render.

        Returns:
            (V, N) bool: seen by at least one used camera.
        """
        view, cam = torch.nonzero(used, as_tuple=True)
        pixel, depth, inside, zbuffer = self._zbuffer(points[view], cameras[view, cam])
        seen_by = inside & (depth <= zbuffer[pixel] + self.tolerance)
        seen = torch.zeros(points.shape[:2], device=points.device)
        return seen.index_add_(0, view, seen_by.float()) > 0

    def silhouette(self, points: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
        """(V, N) bool: the points of (V, N, 3) that one camera per view, at ``eye`` (V, 3), sees at the edge
        of what it sees (a pixel with an empty neighbour): where a real camera's flying pixels come from."""
        pixel, depth, inside, zbuffer = self._zbuffer(points, eye)
        size = self.image_size
        empty = torch.isinf(zbuffer).view(-1, 1, size, size).float()
        edge = (F.max_pool2d(F.pad(empty, (1, 1, 1, 1), value=1.0), 3, stride=1) > 0).flatten()
        return inside & (depth <= zbuffer[pixel] + self.tolerance) & edge[pixel]

    def _zbuffer(self, points: torch.Tensor, eye: torch.Tensor):
        """Project (P, N, 3) points into one camera each at ``eye`` (P, 3), looking at the origin: flat pixel
        indices (P, N), depths (P, N; inf outside the image), in-image flags (P, N) and the z-buffer (P*S*S,).
        A non-finite point is outside every image."""
        forward = -F.normalize(eye, dim=-1)
        up_world = torch.tensor([0.0, 0.0, 1.0], device=points.device, dtype=points.dtype).expand_as(forward)
        right = F.normalize(torch.linalg.cross(forward, up_world, dim=-1), dim=-1)
        up = torch.linalg.cross(right, forward, dim=-1)
        rel = points - eye[:, None]  # (P, N, 3)
        depth = rel @ forward[:, :, None]
        # Pixels as angles scaled to the pitch at the camera's distance: the same pixel size on the object.
        scale = eye.norm(dim=-1)[:, None, None] / (depth * self.pixel)
        half, size = self.image_size // 2, self.image_size
        u = torch.floor((rel @ right[:, :, None]) * scale).squeeze(-1) + half
        w = torch.floor((rel @ up[:, :, None]) * scale).squeeze(-1) + half
        depth = depth.squeeze(-1)
        inside = (u >= 0) & (u < size) & (w >= 0) & (w < size) & (depth > 0)
        pixel = (w.nan_to_num(0).clamp(0, size - 1) * size + u.nan_to_num(0).clamp(0, size - 1)).long()
        pixel += torch.arange(len(eye), device=points.device)[:, None] * (size * size)
        depth = torch.where(inside, depth, torch.full_like(depth, math.inf))
        zbuffer = torch.full((len(eye) * size * size,), math.inf, device=points.device, dtype=points.dtype)
        zbuffer.scatter_reduce_(0, pixel.reshape(-1), depth.reshape(-1), reduce="amin")
        return pixel, depth, inside, zbuffer

    def clouds(self, points: torch.Tensor, generator: torch.Generator, table: torch.Tensor | None = None) -> SensorClouds:
        """Simulated clouds of V posed shapes.

        Args:
            points: (V, N, 3) the surface samples of each posed shape (pose = rotation and scale about the
                origin; the cameras look at the origin).
            generator: CPU generator for every random draw (a seed gives the same clouds on any device).
            table: (V, T, 3) the simulator's :attr:`table` samples in the same poses, for clouds with a ring of
                table left around the base (``SensorConfig.artifact_fraction``); None: no table.

        Returns:
            :class:`SensorClouds` with P = N (+ T + N with artifacts) + outliers.
        """
        cfg = self.config
        v, n = points.shape[:2]
        device = points.device
        cameras, used, whole = self.sample_cameras(v, generator)
        cameras, used = cameras.to(device, points.dtype), used.to(device)
        held = used[:, cfg.whole_cameras:].any(1)
        if table is not None and held.any():  # nothing stands under a held object: its table is nowhere
            table = torch.where(held[:, None, None], torch.full_like(table, math.nan), table)
        if table is None:
            seen = self.visible(points, cameras, used)
        else:  # the object hides part of the table from the cameras
            seen_all = self.visible(torch.cat([points, table], 1), cameras, used)
            seen, table_seen = seen_all[:, :n], seen_all[:, n:]
        keep_share = _uniform(v, cfg.keep, generator).to(device)
        seen &= torch.rand(v, n, generator=generator).to(device) < keep_share[:, None]
        # Depth noise along the rays of the first camera (for fused clouds: one of several, as good as any).
        ray = F.normalize(points - cameras[:, :1], dim=-1)
        sigma = _uniform(v, cfg.noise_m, generator).to(device) / self.unit
        noise = torch.randn(v, n, 1, generator=generator).to(device)

        n_out = max(1, int(math.ceil(n * cfg.outliers[1])))
        rate = _uniform(v, cfg.outliers, generator).to(device)
        out_count = (seen.sum(1) * rate).round()
        extent = points.abs().amax(dim=1, keepdim=True) * 1.3
        outliers = (torch.rand(v, n_out, 3, generator=generator).to(device) * 2 - 1) * extent
        out_mask = torch.arange(n_out, device=device)[None] < out_count[:, None]
        parts, masks, artifacts = [], [], None
        if cfg.artifact_fraction > 0:  # drawn last: a config without artifacts draws what it always did
            artifacts = (torch.rand(v, generator=generator) < cfg.artifact_fraction).to(device)
            sigma = torch.where(artifacts, _uniform(v, cfg.artifact_noise_m, generator).to(device) / self.unit, sigma)
            if table is not None:
                width = _uniform(v, cfg.ring_m, generator).to(device) / self.unit * artifacts
                kept = torch.rand(table.shape[:2], generator=generator).to(device) < keep_share[:, None]
                table_ray = F.normalize(table - cameras[:, :1], dim=-1)
                table_noise = torch.randn(*table.shape[:2], 1, generator=generator).to(device)
                parts.append(table + table_ray * table_noise * sigma[:, None, None])
                masks.append(table_seen & kept & (self.table_reach.to(device)[None] <= width[:, None]))
            edge = self.silhouette(points, cameras[:, 0]) & seen
            share = _uniform(v, cfg.flying, generator).to(device) * artifacts
            chance = share * seen.sum(1) / edge.sum(1).clamp(min=1)
            flying = edge & (torch.rand(v, n, generator=generator).to(device) < chance[:, None])
            lo, hi = (value / self.unit for value in cfg.flying_push_m)
            push = _uniform((v, n, 1), (lo, hi), generator).to(device)
            parts.append(points + ray * push)
            masks.append(flying)
        noisy = points + ray * (noise * sigma[:, None, None])
        return SensorClouds(
            points=torch.cat([noisy, *parts, outliers], 1),
            mask=torch.cat([seen, *masks, out_mask], 1),
            whole=whole.to(device),
            cameras=cameras,
            camera_mask=used,
            artifacts=artifacts,
            held=held,
        )


def table_samples(surface: torch.Tensor, reach: float, pixel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense samples of the table around a shape's base, for rings of table left by an imperfect plane removal.

    Args:
        surface: (M, 3) surface samples of the shape (normalized units; it stands on its lowest points).
        reach: the widest ring; pixel: the z-buffer pixel (same units), samples are about six per pixel as the
            surface's are.

    Returns:
        samples (T, 3) on the base plane outside the footprint, and each one's distance to the footprint (T,).
    """
    from scipy.spatial import cKDTree

    surface = surface.detach().cpu().double().numpy()
    base = surface[:, 2].min()
    footprint = surface[surface[:, 2] < base + pixel][:, :2]
    step = pixel / 2.5
    lo, hi = footprint.min(0) - reach, footprint.max(0) + reach
    xs, ys = (np.arange(a, b + step, step) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    distance, _ = cKDTree(footprint).query(grid, distance_upper_bound=reach + pixel)
    ring = (distance > pixel) & (distance <= reach + pixel)
    samples = np.column_stack([grid[ring], np.full(ring.sum(), base)])
    return torch.as_tensor(samples, dtype=torch.float32), torch.as_tensor(distance[ring] - pixel, dtype=torch.float32)


def _camera_positions(distance: torch.Tensor, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """(..., 3) positions at ``distance`` from the origin, ``elevation`` above its horizontal plane and
    ``azimuth`` counter-clockwise from +x (radians), all of shape (...)."""
    return distance[..., None] * torch.stack(
        [torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)], -1)


def _uniform(size: int | tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(size, generator=generator)
