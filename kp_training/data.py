"""Training views: the paper's augmentation (random z-rotation and per-axis scale) of one shape, shown as
solid voxel grids (the paper) or as simulated sensor clouds, in pairs for the consistency loss."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from kp_core.conditioning import ConditioningConfig, ConditioningError, ObjectSize, condition
from kp_core.geometry import GRID_SIZE, augmentation_matrix, transform_points
from kp_core.placement import object_center
from kp_core.voxelize import voxelize, voxelize_affine

from .sensor import SensorConfig, SensorSimulator, surface_samples

SCALE_RANGE = (0.75, 1.0)


def sample_transforms(
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmentation parameters: rotation about z ~ U[0, 2 pi), per-axis scale ~ U[lo, hi).

    Draws on the (CPU) ``generator`` so a seed gives the same transforms on every device.

    Returns:
        angle (n,) and scale (n, 3), float32 on ``device``.
    """
    lo, hi = scale_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale range must satisfy 0 < lo <= hi <= 1 (larger scales would clip), got {scale_range}")
    angle = torch.rand(n, generator=generator) * (2 * math.pi)
    scale = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
    return angle.to(device), scale.to(device)


def make_views(
    points: torch.Tensor,
    angle: torch.Tensor,
    scale: torch.Tensor,
    grid_size: int = GRID_SIZE,
    chunk: int = 16,
) -> torch.Tensor:
    """Voxelize the shape under each transform (batched, ``chunk`` views at a time to bound memory).

    Args:
        points: (N, 3) solid samples in the grid frame, on the target device.
        angle: (B,) rotations about z.
        scale: (B, 3) per-axis scales.

    Returns:
        (B, 1, G, G, G) float32 occupancy.
    """
    grids = []
    for start in range(0, len(angle), chunk):
        matrix = augmentation_matrix(angle[start : start + chunk], scale[start : start + chunk])
        grids.append(voxelize_affine(points, matrix, matrix.new_zeros(len(matrix), 3), grid_size))
    return torch.cat(grids)


@dataclass
class PairBatch:
    """Two augmented views of a batch of ``B`` pairs, stacked as ``[view 1; view 2]``.

    A view's grid frame relates to the shape's normalized frame by the augmentation and the grid placement:
    ``p_grid = (R_z(angle) S p - center) / half_extent`` (solid views: center 0, half_extent 1).

    Attributes:
        inputs: (2B, 1, ...) encoder input (the model's ``input_from_points`` of what the view shows).
        targets: (2B, 1, G, G, G) occupancy of the whole solid in the view's grid frame.
        angle: (2B,) rotations; scale: (2B, 3) scales; center: (2B, 3) grid origins in the posed shape's
            frame; half_extent: (2B,) normalized units per grid unit, all in the same order.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor
    center: torch.Tensor
    half_extent: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return len(self.angle) // 2

    def to_posed(self, points: torch.Tensor) -> torch.Tensor:
        """(2B, K, 3) grid-frame points -> the posed shape's frame (``R_z S p``), undoing the placement."""
        return points * self.half_extent[:, None, None] + self.center[:, None, :]


class ViewSampler:
    """Draws views of one shape: the paper's solid voxel grids, or simulated sensor clouds.

    Solid views voxelize the augmented solid, as the paper does. Sensor views show what a depth sensor
    delivers (:mod:`kp_training.sensor`); their grid is placed on the cloud by the node's own rule
    (origin at :func:`kp_core.placement.object_center`, half extent ``zoom`` normalized units), and the target is the
    whole solid in the same grid, so the model completes the side the sensor did not see. With ``object_size``
    each sensor cloud first goes through the node's input conditioning (:func:`kp_core.conditioning.condition`:
    far points, the support plane, the object's cluster), so the model learns from what the node will give it.
    """

    def __init__(self, points: torch.Tensor, input_from_points=None, sensor: SensorConfig | None = None,
                 metres_per_unit: float | None = None, zoom: float = 1.0, scale_range=SCALE_RANGE,
                 grid_size: int = GRID_SIZE, object_size: ObjectSize | None = None):
        """Args:
            points: (N, 3) solid samples in the normalized frame, on the target device.
            input_from_points: the model's ``(points (B, N, 3), mask) -> input grid``; None: the 64^3 grid.
            sensor: None for solid views, else the sensor simulation's settings.
            metres_per_unit: the shape's metres per normalized unit (needed with ``sensor``).
            zoom: grid half extent in normalized units (> 1 leaves room for a single view's hidden side).
            object_size: the object's size in metres as the node knows it (the checkpoint's): condition each
                sensor cloud as the node does; None: the clouds go to the grid as simulated.
        """
        if not zoom >= 1.0:
            raise ValueError(f"zoom must be >= 1 (the shape fills the unit cube), got {zoom}")
        self.points = points
        self.input_from_points = input_from_points
        self.zoom = float(zoom)
        self.scale_range = scale_range
        self.grid_size = grid_size
        self.simulator = None
        self.object_size = object_size
        self.conditioning = ConditioningConfig()
        if sensor is not None:
            if metres_per_unit is None:
                raise ValueError("sensor views need the shape's metres_per_unit")
            self.simulator = SensorSimulator(surface_samples(points), metres_per_unit, sensor)

    def views(self, angle: torch.Tensor, scale: torch.Tensor, generator: torch.Generator, chunk: int = 16) -> PairBatch:
        """Views of the shape under each transform (``chunk`` at a time to bound memory); the stacking
        follows ``angle`` (pairs are made by :meth:`pairs`)."""
        parts = [self._views(angle[i : i + chunk], scale[i : i + chunk], generator) for i in range(0, len(angle), chunk)]
        return PairBatch(*(torch.cat(field) for field in zip(*(dataclasses.astuple(p) for p in parts))))

    def pairs(self, num_pairs: int, generator: torch.Generator) -> PairBatch:
        """``num_pairs`` pairs of independent views."""
        angle, scale = sample_transforms(2 * num_pairs, generator, self.points.device, self.scale_range)
        return self.views(angle, scale, generator)

    def _views(self, angle: torch.Tensor, scale: torch.Tensor, generator: torch.Generator) -> PairBatch:
        n, device = len(angle), self.points.device
        if self.simulator is None:
            center = torch.zeros(n, 3, device=device)
            seen, mask = None, None
        else:
            surface = transform_points(self.simulator.surface.expand(n, -1, -1), angle, scale)
            table = self.simulator.table
            if table is not None:
                table = transform_points(table.to(device).expand(n, -1, -1), angle, scale)
            clouds = self.simulator.clouds(surface, generator, table)
            seen, mask, center = self._placed(clouds.points, clouds.mask)
        half_extent = torch.full((n,), self.zoom, device=device)
        targets = voxelize_affine(self.points, augmentation_matrix(angle, scale) / self.zoom, -center / self.zoom,
                                  self.grid_size)
        if self.simulator is None and self.input_from_points is None and self.zoom == 1.0:
            inputs = targets  # the paper's setting: the input is the target
        else:
            if seen is None:
                seen = transform_points(self.points.expand(n, -1, -1), angle, scale)
            to_input = self.input_from_points or (lambda p, m: voxelize(p, self.grid_size, m))
            inputs = to_input((seen - center[:, None]) / self.zoom, mask)
        return PairBatch(inputs, targets, angle, scale, center, half_extent)

    def _placed(self, points: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clouds as the node would encode them (conditioned when :attr:`object_size` is set), padded to one
        length, and each one's grid origin by the node's rule: points (V, P', 3), mask (V, P'), centers (V, 3)."""
        unit = self.simulator.unit
        kept, centers = [], []
        for cloud, keep in zip(points, mask):
            cloud = cloud[keep].double().cpu().numpy()
            bottom = None
            if self.object_size is not None:
                try:
                    conditioned = condition(cloud * unit, self.object_size, self.conditioning)
                except ConditioningError:  # nothing object-sized: the node would refuse it; train on it as seen
                    conditioned = None
                if conditioned is not None and len(conditioned.points) >= 3:
                    cloud = conditioned.points / unit
                    bottom = None if conditioned.floor_z is None else conditioned.floor_z / unit
            kept.append(torch.as_tensor(cloud, dtype=torch.float32))
            centers.append(torch.as_tensor(object_center(cloud, bottom=bottom), dtype=torch.float32))
        device = points.device
        if self.object_size is None:
            return points, mask, torch.stack(centers).to(device)
        length = max(len(k) for k in kept)
        padded = torch.zeros(len(kept), length, 3)
        valid = torch.zeros(len(kept), length, dtype=torch.bool)
        for i, k in enumerate(kept):
            padded[i, : len(k)], valid[i, : len(k)] = k, True
        return padded.to(device), valid.to(device), torch.stack(centers).to(device)


class ValidationSet:
    """A fixed, seeded set of view pairs.

    Only the seeds are stored; the grids are rebuilt batch by batch (deterministically), because
    4000 pairs of 64^3 grids would take 2 GB.
    """

    def __init__(self, num_pairs: int = 4000, seed: int = 12345, scale_range: tuple[float, float] = SCALE_RANGE):
        if num_pairs < 1:
            raise ValueError(f"a validation set needs at least one pair, got {num_pairs}")
        generator = torch.Generator().manual_seed(seed)
        self.angle, self.scale = sample_transforms(2 * num_pairs, generator, "cpu", scale_range)
        self.num_pairs = num_pairs
        self.seed = seed

    def batches(self, sampler: ViewSampler, batch_pairs: int):
        """Yield :class:`PairBatch` es of up to ``batch_pairs`` pairs covering the whole set."""
        n = self.num_pairs
        device = sampler.points.device
        for start in range(0, n, batch_pairs):
            stop = min(start + batch_pairs, n)
            index = torch.cat([torch.arange(start, stop), torch.arange(n + start, n + stop)])
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
            yield sampler.views(self.angle[index].to(device), self.scale[index].to(device), generator, chunk=len(index))
