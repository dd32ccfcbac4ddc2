"""The ROS-free perception pipeline: metric points -> keypoints, and rotate-goal decoding.

    points (N, 3) metres, any frame
      -> clean (finite, crop box) -> MetricGridMap (bounding-box centre, half extent)
      -> grid frame -> voxelize (64^3) -> model.encode -> keypoints (K, 3) grid frame
      -> to_metric -> keypoints in the input frame
    goal(angle): R_z(angle) keypoints -> model.decode -> sigmoid -> voxels > 0.5 -> metric centres

The grid origin is the cleaned cloud's bounding-box centre, so R_z(angle) in the grid frame is a rotation
about the object's vertical axis (the input frame's z) through its centre. The input frame must be z-up
for the object, as the model was trained.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kp_training.checkpoint import load_model
from kp_training.devices import resolve_device
from kp_training.metrics import voxel_iou as grid_iou
from kp_training.geometry import GRID_SIZE, MetricGridMap, fitting_half_extent, rotation_z, voxel_centers
from kp_training.models import spatial_expectation
from kp_training.voxelize import voxelize

DEFAULT_MODEL_NAME = "mug_fast.safetensors"
DEFAULT_MARGIN = 0.04
"""Grid units kept free when the extent comes from the cloud (as the training shapes are normalized)."""
CENTERINGS = ("circle", "box")


class PipelineError(ValueError):
    """Input the pipeline cannot use (the message says why, for a user)."""


def default_model_path() -> Path:
    """The model shipped with the installed kp_perception package."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL_NAME


def pipeline_device(name: str) -> torch.device:
    """:func:`kp_training.devices.resolve_device`, its errors as :class:`PipelineError`."""
    try:
        return resolve_device(name)
    except ValueError as err:
        raise PipelineError(str(err)) from err


@dataclass
class PipelineConfig:
    """Settings of :class:`Pipeline` (the node's parameters of the same names)."""

    object_size: float = 0.0
    """The object's size in metres: max(diameter about its vertical axis, height). 0: from each cloud."""
    crop_enabled: bool = False
    crop_min: tuple[float, float, float] = (-1e3, -1e3, -1e3)
    crop_max: tuple[float, float, float] = (1e3, 1e3, 1e3)
    min_points: int = 30
    max_points: int = 4_000_000
    margin: float = DEFAULT_MARGIN
    centering: str = "circle"
    """Where the grid origin goes: "circle" (x, y: centre of the smallest circle enclosing the points seen
    from above; z: middle of their height; invariant to the object's yaw) or "box" (the axis-aligned
    bounding-box centre, which moves with the yaw of an asymmetric object)."""

    def validate(self) -> "PipelineConfig":
        if not (np.isfinite(self.object_size) and self.object_size >= 0):
            raise PipelineError(f"object_size must be >= 0 (0 = automatic), got {self.object_size}")
        lo, hi = np.asarray(self.crop_min, float), np.asarray(self.crop_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise PipelineError(f"crop box needs 3 values each with min < max, got {self.crop_min} / {self.crop_max}")
        if self.min_points < 1 or self.max_points < self.min_points:
            raise PipelineError(f"need 1 <= min_points <= max_points, got {self.min_points}, {self.max_points}")
        if not 0.0 <= self.margin < 1.0:
            raise PipelineError(f"margin must be in [0, 1), got {self.margin}")
        if self.centering not in CENTERINGS:
            raise PipelineError(f"centering must be one of {CENTERINGS}, got {self.centering!r}")
        return self


@dataclass
class Encoding:
    """Keypoints of one cloud, with the map between its frame and the grid frame."""

    keypoints_grid: torch.Tensor  # (K, 3) grid frame, on the model's device
    grid_map: MetricGridMap
    num_points: int  # points used after cleaning
    occupied_voxels: int  # voxels the cloud filled

    @property
    def keypoints(self) -> np.ndarray:
        """(K, 3) keypoints in the input frame (metres)."""
        return self.grid_map.to_metric(self.keypoints_grid.detach().cpu().double().numpy())


@dataclass
class Goal:
    """The decoded rotate-goal: occupied voxel centres and rotated keypoints, both in the input frame."""

    angle: float
    points: np.ndarray  # (M, 3) metric centres of voxels with probability > threshold
    keypoints: np.ndarray  # (K, 3) rotated keypoints, metric
    voxel_size: float
    grid_origin: np.ndarray  # (3,) metric position of the grid origin
    probabilities: np.ndarray | None = field(default=None, repr=False)  # (64, 64, 64) float32, axes (x, y, z)


class Pipeline:
    """Model + settings; thread-safe (a lock serializes every use of the model)."""

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 config: PipelineConfig | None = None, threshold: float = 0.5, optimize: bool = False):
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.device = pipeline_device(device)
        self.model, self.metadata = load_model(self.model_path, device=self.device)
        if getattr(self.model, "kind", None) != "keypoint":
            raise PipelineError(
                f"{self.model_path} is a {getattr(self.model, 'kind', '?')!r} model; the node needs a keypoint model (KP-Net)"
            )
        self.num_keypoints = int(self.model.num_keypoints)
        # Channels-last 3-D convolutions are about 20% faster on CPU (oneDNN); same results up to rounding.
        self.memory_format = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimized = False
        self._heatmaps = self.model.encoder
        if optimize:
            self._optimize_encoder()
        self.config = (config or PipelineConfig()).validate()
        self.threshold = threshold
        self._lock = threading.Lock()
        self._centers = voxel_centers(GRID_SIZE).numpy().astype(np.float64)

    def _optimize_encoder(self) -> None:
        """Trace the encoder and let TorchScript fold it for inference (oneDNN on CPU: ~3x faster).

        Kept only when it reproduces the eager encoder on a test grid; otherwise the eager one stays.
        """
        import warnings

        probe = torch.zeros(1, 1, GRID_SIZE, GRID_SIZE, GRID_SIZE, device=self.device)
        probe[:, :, 16:48, 20:44, 8:56] = 1.0
        probe = probe.contiguous(memory_format=self.memory_format)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.optimize_for_inference(torch.jit.trace(self.model.encoder.eval(), probe))
                same = torch.allclose(traced(probe), self.model.encoder(probe), atol=1e-4, rtol=1e-4)
        except Exception:  # tracing is an optimization only
            return
        if same:
            self._heatmaps, self.optimized = traced, True

    @torch.inference_mode()
    def warmup(self, runs: int = 3) -> None:
        """Run the encoder and decoder a few times on a made-up grid, so that the first real cloud does not
        pay for TorchScript's profiling runs and oneDNN's kernel set-up."""
        voxels = torch.zeros(1, 1, GRID_SIZE, GRID_SIZE, GRID_SIZE, device=self.device)
        voxels[:, :, 20:44, 20:44, 12:52] = 1.0
        voxels = voxels.contiguous(memory_format=self.memory_format)
        with self._lock:
            for _ in range(runs):
                keypoints = spatial_expectation(self._heatmaps(voxels), self.model.heatmap_temperature)[0]
            self.model.decode(keypoints)

    # ---- points -> grid ------------------------------------------------------------------------
    def clean(self, points: np.ndarray) -> np.ndarray:
        """Finite points inside the crop box, as float64 (N, 3); raises PipelineError when too few remain."""
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise PipelineError(f"expected (N, 3) points, got shape {points.shape}")
        cfg = self.config
        if len(points) > cfg.max_points:
            raise PipelineError(f"the cloud has {len(points)} points, more than max_points = {cfg.max_points}")
        points = points.astype(np.float64, copy=False)
        keep = np.isfinite(points).all(axis=1)
        if cfg.crop_enabled:
            keep &= np.all((points >= cfg.crop_min) & (points <= cfg.crop_max), axis=1)
        if not keep.all():
            points = points[keep]
        if len(points) < cfg.min_points:
            where = " inside the crop box" if cfg.crop_enabled else ""
            raise PipelineError(f"only {len(points)} finite points{where}; at least min_points = {cfg.min_points} are needed")
        return points

    def grid_map_for(self, points: np.ndarray) -> MetricGridMap:
        """Grid frame centred on the object (see ``centering``); extent from object_size or from the points."""
        center = object_center(points, self.config.centering)
        if self.config.object_size > 0:
            half_extent = self.config.object_size / 2.0 / (1.0 - self.config.margin)
        else:
            try:
                half_extent = fitting_half_extent(points - center, self.config.margin)
            except ValueError as err:
                raise PipelineError(f"cannot size the grid from this cloud: {err}") from err
        if not (np.isfinite(half_extent) and half_extent > 1e-6):
            raise PipelineError(f"the cloud is degenerate (extent {half_extent:g} m)")
        return MetricGridMap(center=center, half_extent=half_extent)

    def voxelize(self, points: np.ndarray, grid_map: MetricGridMap) -> torch.Tensor:
        grid = torch.from_numpy(grid_map.to_grid(points).astype(np.float32))
        return voxelize(grid[None].to(self.device), GRID_SIZE).contiguous(memory_format=self.memory_format)

    # ---- model --------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, points: np.ndarray) -> Encoding:
        """Keypoints of a metric cloud ((N, 3), any float dtype; NaNs are dropped)."""
        points = self.clean(points)
        grid_map = self.grid_map_for(points)
        voxels = self.voxelize(points, grid_map)
        with self._lock:
            heatmaps = self._heatmaps(voxels)
            keypoints = spatial_expectation(heatmaps, self.model.heatmap_temperature)[0][0]
        return Encoding(keypoints, grid_map, len(points), int(voxels.sum().item()))

    @torch.inference_mode()
    def decode_probabilities(self, keypoints_grid: torch.Tensor) -> torch.Tensor:
        """(K, 3) grid-frame keypoints -> (64, 64, 64) occupancy probabilities (on the model's device)."""
        with self._lock:
            logits = self.model.decode(keypoints_grid[None].to(self.device, torch.float32))
        return torch.sigmoid(logits[0, 0].float())

    @torch.inference_mode()
    def goal(self, encoding: Encoding, angle: float, include_probabilities: bool = False) -> Goal:
        """Decode the keypoints rotated by ``angle`` (radians, about the grid's z axis)."""
        angle = float(angle)
        if not np.isfinite(angle):
            raise PipelineError(f"the angle must be a finite number of radians, got {angle}")
        kp = encoding.keypoints_grid.to(self.device, torch.float32)
        rotated = kp @ rotation_z(torch.tensor(angle, dtype=torch.float32, device=kp.device)).T
        prob = self.decode_probabilities(rotated)
        occupied = torch.nonzero(prob > self.threshold).cpu().numpy()
        grid_points = self._centers[occupied] if len(occupied) else np.zeros((0, 3))
        gm = encoding.grid_map
        return Goal(
            angle=angle,
            points=gm.to_metric(grid_points),
            keypoints=gm.to_metric(rotated.cpu().double().numpy()),
            voxel_size=gm.voxel_size,
            grid_origin=gm.center.copy(),
            probabilities=prob.cpu().numpy().astype(np.float32) if include_probabilities else None,
        )


def object_center(points: np.ndarray, centering: str = "circle") -> np.ndarray:
    """The grid origin for an (N, 3) cloud: see :attr:`PipelineConfig.centering`."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    center = (lo + hi) / 2.0
    if centering == "circle":
        center[:2] = min_enclosing_circle(points[:, :2])[0]
    return center


def min_enclosing_circle(xy: np.ndarray, exact_below: int = 4096, raster: int = 512) -> tuple[np.ndarray, float]:
    """Smallest circle containing 2-D points: (centre (2,), radius).

    Up to ``exact_below`` points: exact (Welzl's algorithm on the convex hull's vertices). Above, the
    points are first binned into a ``raster`` x ``raster`` grid over their extent and the circle is the
    exact one of the bins' corners (only the first and last occupied bin of each row can matter): it
    still contains every point and is at most one bin diagonal (extent / raster * 1.42) too large.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) > exact_below:
        xy = _raster_outline(xy, raster)
    xy = discard_interior(xy)
    try:
        from scipy.spatial import ConvexHull, QhullError

        candidates = xy[ConvexHull(xy).vertices]
    except (QhullError, ValueError):  # collinear or too few points: every distinct point is a candidate
        candidates = np.unique(xy, axis=0)
    pts = candidates[np.random.default_rng(0).permutation(len(candidates))].tolist()
    scale = float(np.abs(candidates).max()) if len(candidates) else 0.0
    eps = 1e-12 + 1e-9 * scale

    def inside(p, c, r):
        return (p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2 <= (r + eps) ** 2

    def two(a, b):
        c = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        return c, float(np.hypot(a[0] - c[0], a[1] - c[1]))

    def three(a, b, p):
        ax, ay = b[0] - a[0], b[1] - a[1]
        bx, by = p[0] - a[0], p[1] - a[1]
        d = 2 * (ax * by - ay * bx)
        if abs(d) < 1e-18:  # collinear: the widest pair
            return max((two(a, b), two(a, p), two(b, p)), key=lambda cr: cr[1])
        ux = (by * (ax * ax + ay * ay) - ay * (bx * bx + by * by)) / d
        uy = (ax * (bx * bx + by * by) - bx * (ax * ax + ay * ay)) / d
        return (a[0] + ux, a[1] + uy), float(np.hypot(ux, uy))

    c, r = (tuple(pts[0]) if pts else (0.0, 0.0)), 0.0
    for i, p in enumerate(pts):
        if inside(p, c, r):
            continue
        c, r = tuple(p), 0.0
        for j in range(i):
            q = pts[j]
            if inside(q, c, r):
                continue
            c, r = two(p, q)
            for k in range(j):
                if not inside(pts[k], c, r):
                    c, r = three(p, q, pts[k])
    return np.array(c, dtype=np.float64), r


def _raster_outline(xy: np.ndarray, n: int) -> np.ndarray:
    """Corners of the outermost occupied bins of each row of an n x n binning of ``xy`` (see above)."""
    lo = xy.min(axis=0)
    span = float((xy.max(axis=0) - lo).max())
    if span <= 0:
        return xy[:1]
    cell = span / n
    ij = np.minimum(((xy - lo) / cell).astype(np.int64), n - 1)
    occupied = np.zeros((n, n), dtype=bool)
    occupied[ij[:, 0], ij[:, 1]] = True
    rows = np.nonzero(occupied.any(axis=1))[0]
    first = occupied[rows].argmax(axis=1)
    last = n - 1 - occupied[rows, ::-1].argmax(axis=1)
    cells = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)])
    offsets = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return lo + ((cells[:, None, :] + offsets[None]) * cell).reshape(-1, 2)


def discard_interior(xy: np.ndarray) -> np.ndarray:
    """Drop points strictly inside the octagon of the extreme points in 8 directions (Akl-Toussaint).

    They cannot be hull vertices, so neither the convex hull nor the enclosing circle changes; for a dense
    cloud this leaves a small fraction of the points.
    """
    if len(xy) < 64:
        return xy
    angles = np.arange(8) * (np.pi / 4)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    corners = xy[np.argmax(xy @ directions.T, axis=0)]  # counter-clockwise
    if len(np.unique(corners, axis=0)) < 3:  # no interior to speak of
        return xy
    inside = np.ones(len(xy), dtype=bool)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        edge = b - a
        if not edge.any():  # the same point is extreme in two directions
            continue
        inside &= edge[0] * (xy[:, 1] - a[1]) - edge[1] * (xy[:, 0] - a[0]) > 0
    return xy[~inside]


def rotate_about_vertical(points: np.ndarray, angle: float, center: np.ndarray) -> np.ndarray:
    """Rotate metric points by ``angle`` about the z axis through ``center`` (for ground truth in demos)."""
    rot = rotation_z(torch.tensor(float(angle), dtype=torch.float64)).numpy()
    return (np.asarray(points, float) - center) @ rot.T + center


def voxel_iou(pred_points: np.ndarray, true_points: np.ndarray, grid_map: MetricGridMap) -> float:
    """IoU of the 64^3 occupancy of two metric point sets in the grid of ``grid_map``."""
    grids = [
        voxelize(torch.from_numpy(grid_map.to_grid(np.asarray(pts, float).reshape(1, -1, 3)).astype(np.float32)), GRID_SIZE)
        for pts in (pred_points, true_points)
    ]
    return float(grid_iou(*grids)[0])
