"""The ROS-free perception pipeline: metric points -> keypoints, and rotate-goal decoding.

    points (N, 3) metres, any frame
      -> clean (finite, crop box) -> condition (far points, support plane, the object's cluster:
         kp_core.conditioning) -> MetricGridMap (enclosing-circle centre, half extent)
      -> grid frame -> the model's input grid -> model.encode -> keypoints (K, 3) grid frame
      -> to_metric -> keypoints in the input frame
    goal(angle): R_z(angle) keypoints -> model.decode -> sigmoid -> voxels > 0.5 -> metric centres,
                 moved by (I - R_z(angle)) a: the turn about the object's axis a

The grid is placed by the same rule the model was trained with (origin at :func:`kp_core.placement.object_center`):
origin at the centre of the smallest circle enclosing the cloud seen from above, half extent the object's
size (``object_size``, else the trained shape's, from the checkpoint) times the checkpoint's zoom. The goal
is the object turned about its own vertical axis, the vertical line through the centroid of the decoded
object (:func:`kp_core.goals.decoded_axis`): attached to the object, not to the part of it one camera saw
(how the turn is decoded: :mod:`kp_core.goals`). The input frame must be z-up for the object, as the model was trained.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .conditioning import Conditioned, ConditioningConfig, ConditioningError, ObjectSize, condition
from .devices import native_bf16, resolve_device
from .geometry import (
    GRID_SIZE,
    NORMALIZE_MARGIN,
    MetricGridMap,
    bounds,
    voxel_centers,
    yaw_alignment,
    yaw_to_template,
)
from .goals import decoded_axis, goal_keypoints
from .placement import CENTERINGS, grid_zoom, object_center, trained_inputs

DEFAULT_MARGIN = NORMALIZE_MARGIN
"""Grid units kept free when the extent comes from the cloud (as the training shapes are normalized)."""


class PipelineError(ValueError):
    """Input the pipeline cannot use (the message says why, for a user)."""

    category = "unusable geometry"
    """The refusal's kind, as /diagnostics counts it (each subclass its own)."""


class TooFewPoints(PipelineError):
    category = "too few points"


class TooManyPoints(PipelineError):
    category = "too many points"


class NoObject(PipelineError):
    """The input conditioning found no object of the model's size in the cloud."""

    category = "no object found"


def pipeline_device(name: str) -> torch.device:
    """:func:`kp_core.devices.resolve_device`, its errors as :class:`PipelineError`."""
    try:
        return resolve_device(name)
    except ValueError as err:
        raise PipelineError(str(err)) from err


MIN_OBJECT_SIZE = 0.001
"""Smallest ``object_size`` (metres) other than 0: below it every cloud would fill a single voxel."""


@dataclass
class PipelineConfig:
    """Settings of :class:`Pipeline` (the node's parameters of the same names)."""

    object_size: float = 0.0
    """The object's size in metres: max(diameter about its vertical axis, height). 0: the trained shape's
    size from the checkpoint (a checkpoint without one needs it set: :meth:`Pipeline.check`)."""
    crop_enabled: bool = False
    crop_min: tuple[float, float, float] = (-1e3, -1e3, -1e3)
    crop_max: tuple[float, float, float] = (1e3, 1e3, 1e3)
    min_points: int = 30
    max_points: int = 4_000_000
    margin: float = DEFAULT_MARGIN
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    """How the object is isolated from a scene (:mod:`kp_core.conditioning`); far points always go."""

    def validate(self) -> "PipelineConfig":
        if not (np.isfinite(self.object_size) and (self.object_size == 0 or self.object_size >= MIN_OBJECT_SIZE)):
            raise PipelineError(f"object_size must be 0 (the model's size) or at least {MIN_OBJECT_SIZE} m (1 mm), got "
                                f"{self.object_size:g} m: below that every cloud would fill a single voxel")
        lo, hi = np.asarray(self.crop_min, float), np.asarray(self.crop_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise PipelineError(f"crop box needs 3 values each with min < max, got {self.crop_min} / {self.crop_max}")
        if self.min_points < 1 or self.max_points < self.min_points:
            raise PipelineError(f"need 1 <= min_points <= max_points, got {self.min_points}, {self.max_points}")
        if not 0.0 <= self.margin < 1.0:
            raise PipelineError(f"margin must be in [0, 1), got {self.margin}")
        try:
            self.conditioning.validate()
        except ValueError as err:
            raise PipelineError(f"conditioning: {err}") from err
        return self


@dataclass
class Encoding:
    """Keypoints of one cloud, with the map between its frame and the grid frame."""

    keypoints_grid: torch.Tensor  # (K, 3) grid frame, on the model's device
    grid_map: MetricGridMap
    num_points: int  # points used after cleaning
    conditioned: Conditioned | None = field(default=None, repr=False)  # the object's points and how they were found
    axis_grid: torch.Tensor | None = field(default=None, repr=False)  # (3,) the goal's axis, found on first use

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
    grid_origin: np.ndarray  # (3,) metric origin of the goal's grid: the cloud's grid origin carried by the turn
    axis_point: np.ndarray  # (3,) metric point on the vertical axis the object was turned about (z: grid origin's)
    probabilities: np.ndarray | None = field(default=None, repr=False)  # (64, 64, 64) float32, axes (x, y, z)


@dataclass
class ObjectPose:
    """Where the object is and which way it faces, as one cloud shows it (the input frame, metres)."""

    position: np.ndarray  # (3,) on the object's vertical axis (the decoded object's centroid), at its bottom
    yaw: float  # radians about z: the keypoints' layout fitted to the model's canonical one; 0 without one
    misalignment: float  # 1 - yaw_alignment: how far the layout is from the canonical one turned by yaw
    yaw_spread: float  # radians, calibrated (:meth:`Pipeline.yaw_spread`); -1 when the model has no calibration


def calibrated_spread(calibration: dict | None, misalignment: float) -> float:
    """The yaw spread (radians) a checkpoint's ``yaw_calibration`` gives a misalignment: the spread of the first
    bin whose upper edge it does not exceed (the last bin's beyond); -1 without a calibration."""
    if not calibration:
        return -1.0
    edges, spreads = calibration["misalignment_edges"], calibration["spread_rad"]
    index = int(np.searchsorted(np.asarray(edges, dtype=np.float64), misalignment, side="left"))
    return float(spreads[min(index, len(spreads) - 1)])


SERVING_PRECISIONS = ("auto", "fp32", "bf16")
"""Number formats the pipeline's convolutions run in (training has its own: kp_training.train)."""


def check_precision(precision: str) -> str:
    """``precision`` if the pipeline can serve in it, else PipelineError."""
    if precision not in SERVING_PRECISIONS:
        raise PipelineError(f"precision must be one of {', '.join(SERVING_PRECISIONS)}, got {precision!r}")
    return precision


BF16_KEYPOINT_TOLERANCE_VOXELS = 0.25
"""How far bf16 keypoints may sit from float32 ones on the start-up probe (``bench/bench_pipeline.py`` prints the
error on a mug cloud)."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a CPU with native bf16 instructions (:func:`~kp_core.devices.native_bf16`), else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def served_centering(metadata: dict, path: Path) -> str:
    """The grid placement a checkpoint was trained with, which the pipeline then uses (``placement.centering``),
    or PipelineError when the node cannot give the model what it was trained on: its inputs were not sensor
    clouds (solid grids, or not recorded), or its placement is not one the node knows."""
    inputs = trained_inputs(metadata)
    if inputs != "sensor":
        trained = "solid voxel grids (inputs: solid)" if inputs == "solid" else "inputs it does not record"
        raise PipelineError(f"{path} was trained on {trained}; the node encodes what a depth camera sees: train a model "
                            "for it with `kp-train --recipe node`")
    centering = (metadata.get("placement") or {}).get("centering")
    if centering not in CENTERINGS:
        raise PipelineError(f"{path} places its grid by {centering!r} (placement.centering), which the node does not "
                            f"know ({', '.join(CENTERINGS)}): train a model for it with `kp-train --recipe node`")
    return centering


def in_crop_box(points: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """(N,) bool: which of (N, 3) points lie inside ``cfg``'s crop box (whether or not cropping is enabled)."""
    keep = np.ones(len(points), dtype=bool)
    for axis in range(3):  # column by column: numpy's .all(axis=1) over (N, 3) is several times slower
        keep &= (points[:, axis] >= cfg.crop_min[axis]) & (points[:, axis] <= cfg.crop_max[axis])
    return keep


def goal_angle(angle) -> float:
    """A requested turn in radians, reduced to [-pi, pi] in float64 before anything rounds it to float32 (1e39 and
    0.5 + 2 pi 1e6 are fine angles); raises PipelineError when it is not a finite number."""
    angle = float(angle)
    if not math.isfinite(angle):
        raise PipelineError(f"the angle must be a finite number of radians, got {angle}")
    return math.remainder(angle, 2 * math.pi)


def require_points(count: int, cfg: PipelineConfig) -> None:
    """Raises PipelineError when fewer than ``cfg.min_points`` finite points (inside the crop box) remain."""
    if count < cfg.min_points:
        where = " inside the crop box" if cfg.crop_enabled else ""
        raise TooFewPoints(f"only {count} finite points{where}; at least min_points = {cfg.min_points} are needed")


def trained_object_size(metadata: dict, margin: float = DEFAULT_MARGIN) -> ObjectSize | None:
    """The trained shape's width and height in metres from a checkpoint's metadata (its ``normalization``), the
    size the node isolates the object by when ``object_size`` is not set; None when its mesh's units were not
    given. Without a recorded width and height: the grid's extent less ``margin`` for both."""
    norm = metadata.get("normalization") or {}
    if norm.get("units") != "m" or "mesh_units_per_grid_unit" not in norm:
        return None
    size = float(norm["mesh_units_per_grid_unit"]) * 2.0 * (1.0 - margin)
    return ObjectSize(float(norm.get("width", size)), float(norm.get("height", size)))


class Pipeline:
    """Model + settings; thread-safe (a lock serializes every use of the model).

    The checkpoint says how to serve it (its JSON: inputs, grid placement, zoom, object scale, metric size) and
    the pipeline serves it exactly that way, or refuses it (:func:`served_centering`, :meth:`check`).
    """

    def __init__(self, model_path: str | Path, device: str = "cpu",
                 config: PipelineConfig | None = None, threshold: float = 0.5, optimize: bool = False,
                 precision: str = "fp32"):
        check_precision(precision)
        self.model_path = Path(model_path)
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
        self.centering = served_centering(self.metadata, self.model_path)
        self.zoom = grid_zoom(self.metadata.get("placement"))
        normalization = self.metadata.get("normalization") or {}
        # The trained shape's half extent in metres, when its mesh was in metres (the built-in mug is).
        self.trained_half_extent = (float(normalization["mesh_units_per_grid_unit"])
                                    if normalization.get("units") == "m" and "mesh_units_per_grid_unit" in normalization else None)
        self.precision = resolve_precision(precision, self.device)
        """fp32 or bf16: the convolutions' number format (bf16: a bf16 copy of the traced encoder, autocast for the
        rest; keypoints stay float32)."""
        self.optimized = False
        self.encoder_path = "eager encoder" + ("" if optimize else " (optimize off)")
        """Which encoder runs, and why, for the node's log and diagnostics."""
        self._encode_heatmaps = self._eager_heatmaps
        """The encoder that runs: voxels -> heatmap logits, in :attr:`precision` (it sets that up itself)."""
        if optimize:
            self._optimize_encoder()
        self.config = self.check(config or PipelineConfig())
        self.threshold = threshold
        self._lock = threading.Lock()
        self._centers = voxel_centers(GRID_SIZE).numpy().astype(np.float64)

    def _probe_input(self) -> torch.Tensor:
        """A made-up encoder input (a box of points) for tracing and warm-up."""
        axes = torch.linspace(-0.5, 0.5, 24)
        box = torch.stack(torch.meshgrid(axes, axes * 0.8, axes * 1.4, indexing="ij"), -1).reshape(1, -1, 3)
        return self.model.input_from_points(box.to(self.device)).contiguous(memory_format=self.memory_format)

    def _autocast(self):
        """bf16 autocast for the model's convolutions when :attr:`precision` asks for it."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _eager_heatmaps(self, voxels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.encoder(voxels)

    def _optimize_encoder(self) -> None:
        """Trace the encoder and let TorchScript fold it for inference (oneDNN's fused kernels on CPU, faster
        again in bf16: ``bench/bench_pipeline.py`` measures both).

        Kept only when it reproduces the eager float32 encoder on a test grid (float32: the heatmaps to 1e-4;
        bf16: the keypoints to :data:`BF16_KEYPOINT_TOLERANCE_VOXELS`); otherwise the eager one stays.
        """
        import warnings

        probe = self._probe_input()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
                encoder = copy.deepcopy(self.model.encoder).eval().to(dtype)  # bf16 weights: no casts at run time
                folded = torch.jit.optimize_for_inference(torch.jit.trace(encoder, probe.to(dtype)))
                traced = lambda voxels: folded(voxels.to(dtype))  # noqa: E731
                heatmaps = traced(probe)
                reference = self.model.encoder(probe)
                if self.precision == "bf16":
                    keypoints = self.model.keypoints_from_heatmaps(heatmaps)[0]
                    error = (keypoints - self.model.keypoints_from_heatmaps(reference)[0]).norm(dim=-1).max()
                    same = float(error) * GRID_SIZE / 2 < BF16_KEYPOINT_TOLERANCE_VOXELS
                else:
                    same = torch.allclose(heatmaps, reference, atol=1e-4, rtol=1e-4)
        except Exception as err:  # tracing is an optimization only
            self.encoder_path = f"eager encoder (TorchScript failed: {type(err).__name__}: {err})"
            return
        if same:
            self._encode_heatmaps, self.optimized = traced, True
            self.encoder_path = f"TorchScript encoder ({self.precision}; traced, frozen for inference; matches the eager one)"
        else:
            self.encoder_path = "eager encoder (the TorchScript one differed from it on a test grid)"

    @torch.inference_mode()
    def warmup(self, runs: int = 3) -> None:
        """Run the encoder and decoder a few times on a made-up input, so that the first real cloud does not
        pay for TorchScript's profiling runs and oneDNN's kernel set-up, nor the placement's and the
        conditioning's first use (they import scipy)."""
        made_up = np.random.default_rng(0).normal(size=(5000, 3))
        object_center(made_up, "circle")
        with contextlib.suppress(ConditioningError):
            condition(made_up, ObjectSize(1.0, 1.0))  # imports scipy.sparse
        probe = self._probe_input()
        with self._lock:
            for _ in range(runs):
                keypoints = self.model.keypoints_from_heatmaps(self._encode_heatmaps(probe))[0]
            with self._autocast():
                self.model.decode(keypoints)

    # ---- points -> grid ------------------------------------------------------------------------
    def clean(self, points: np.ndarray, config: PipelineConfig | None = None) -> np.ndarray:
        """Finite points inside the crop box, as float64 (N, 3); raises PipelineError when too few remain.

        ``config``: the settings to use (default :attr:`config`); :meth:`encode` passes one snapshot to every step.
        """
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise PipelineError(f"expected (N, 3) points, got shape {points.shape}")
        cfg = config or self.config
        if len(points) > cfg.max_points:
            raise TooManyPoints(f"the cloud has {len(points)} points, more than max_points = {cfg.max_points}")
        points = points.astype(np.float64, copy=False)
        keep = None
        # One pass first: the sum is finite when no coordinate is NaN or infinite (a sum that overflows on finite
        # coordinates only sends the cloud through the column test). Column by column: numpy's .all(axis=1) over
        # (N, 3) is several times slower.
        with np.errstate(over="ignore", invalid="ignore"):  # inf - inf and overflows are what it looks for
            finite = bool(np.isfinite(points.sum()))
        if not finite:
            keep = np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])
        if cfg.crop_enabled:
            crop = in_crop_box(points, cfg)
            keep = crop if keep is None else keep & crop
        if keep is not None and not keep.all():
            points = np.compress(keep, points, axis=0)  # several times faster than points[keep]
        require_points(len(points), cfg)
        return points

    def check(self, config: PipelineConfig) -> PipelineConfig:
        """``config`` validated, and for this model: a model without a metric size (its mesh's units were not
        given) needs ``object_size``. Raises PipelineError; returns ``config``."""
        config.validate()
        if self.trained_half_extent is None and config.object_size == 0:
            raise self._no_metric_size()
        return config

    def _no_metric_size(self) -> PipelineError:
        return PipelineError(f"{self.model_path} has no metric size (it was trained on a mesh of unknown units): set "
                             "object_size to the object's size in metres, or retrain with `kp-train --mesh-units`")

    def object_size(self, config: PipelineConfig | None = None) -> ObjectSize | None:
        """The object's size in metres: the trained shape's width and height when its mesh was in metres (scaled
        to ``object_size`` when that is set), else ``object_size`` for both, else None (a model without a metric
        size and no ``object_size``, which :meth:`check` refuses)."""
        cfg = config or self.config
        trained = trained_object_size(self.metadata, cfg.margin)
        if cfg.object_size > 0:
            if trained is None:
                return ObjectSize(cfg.object_size, cfg.object_size)
            factor = cfg.object_size / trained.size
            return ObjectSize(trained.width * factor, trained.height * factor)
        return trained

    def condition(self, points: np.ndarray, config: PipelineConfig | None = None,
                  hint: np.ndarray | None = None) -> Conditioned:
        """The object's points of a cleaned cloud (:func:`kp_core.conditioning.condition`), as PipelineError when
        there are none or too few."""
        cfg = config or self.config
        try:
            conditioned = condition(points, self.object_size(cfg), cfg.conditioning, hint)
        except ConditioningError as err:
            raise NoObject(str(err)) from err
        if len(conditioned.points) < cfg.min_points:
            raise PipelineError(f"only {len(conditioned.points)} points are left of the object ({conditioned.summary}); "
                                f"at least min_points = {cfg.min_points} are needed")
        return conditioned

    def grid_map_for(self, points: np.ndarray, config: PipelineConfig | None = None,
                     bottom: float | None = None) -> MetricGridMap:
        """The grid frame on the object, by the training rule: origin from the checkpoint's centering (``bottom``: the height
        the object stands at), half extent the object's (``object_size``, else the trained shape's) times the zoom."""
        cfg = config or self.config
        center = object_center(points, self.centering, bottom)
        if cfg.object_size > 0:
            object_half_extent = cfg.object_size / 2.0 / (1.0 - cfg.margin)
        elif self.trained_half_extent is not None:
            object_half_extent = self.trained_half_extent
        else:
            raise self._no_metric_size()
        half_extent = object_half_extent * self.zoom
        if not (np.isfinite(half_extent) and half_extent > 1e-6):
            raise PipelineError(f"the cloud is degenerate (extent {half_extent:g} m)")
        grid_map = MetricGridMap(center=center, half_extent=half_extent)
        lo, hi = bounds(points)
        span = float((hi - lo).max())
        if span < 2 * grid_map.voxel_size:
            raise PipelineError(f"the cloud is degenerate: its points span {span:.3g} m, less than two voxels "
                                f"({2 * grid_map.voxel_size:.3g} m) of the grid")
        return grid_map

    def voxelize(self, points: np.ndarray, grid_map: MetricGridMap) -> torch.Tensor:
        """The model's input grid of metric points (points outside the grid are dropped)."""
        grid = torch.from_numpy(grid_map.to_grid(points).astype(np.float32))
        return self.model.input_from_points(grid[None].to(self.device)).contiguous(memory_format=self.memory_format)

    # ---- model --------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, points: np.ndarray, hint: np.ndarray | None = None) -> Encoding:
        """Keypoints of the object in a metric cloud ((N, 3), any float dtype; NaNs are dropped), a scene or the
        object alone (:meth:`condition`; ``hint``: a point near the object)."""
        config = self.config  # one snapshot: the node may swap in new settings meanwhile
        conditioned = self.condition(self.clean(points, config), config, hint)
        points = conditioned.points
        grid_map = self.grid_map_for(points, config, conditioned.floor_z)
        voxels = self.voxelize(points, grid_map)
        with self._lock:  # each encoder sets its precision up itself (autocast only around the traced bf16 one)
            heatmaps = self._encode_heatmaps(voxels)
        keypoints = self.model.keypoints_from_heatmaps(heatmaps)[0][0]
        return Encoding(keypoints, grid_map, len(points), conditioned)

    @torch.inference_mode()
    def decode_probabilities(self, keypoints_grid: torch.Tensor) -> torch.Tensor:
        """(K, 3) grid-frame keypoints -> (64, 64, 64) occupancy probabilities (on the model's device)."""
        with self._lock, self._autocast():
            logits = self.model.decode(keypoints_grid[None].to(self.device, torch.float32))
        return torch.sigmoid(logits[0, 0].float())

    @torch.inference_mode()
    def axis(self, encoding: Encoding) -> torch.Tensor:
        """(3,) grid-frame point (z = 0) on the object's own vertical axis, found once per encoding."""
        if encoding.axis_grid is None:
            kp = encoding.keypoints_grid.to(self.device, torch.float32)[None]
            with self._lock, self._autocast():
                encoding.axis_grid = decoded_axis(self.model, kp, self.threshold)[0]
        return encoding.axis_grid

    @torch.inference_mode()
    def pose(self, encoding: Encoding) -> ObjectPose:
        """The object's pose: a point on its own vertical axis (:meth:`axis`) at its bottom (the support plane's
        height when the conditioning found one, else the lowest point), and its yaw from the canonical-yaw fit of
        the keypoints, with the calibrated spread of that yaw (see :class:`ObjectPose`)."""
        axis = encoding.grid_map.to_metric(self.axis(encoding).cpu().double().numpy())
        conditioned = encoding.conditioned
        if conditioned is not None and conditioned.floor_z is not None:
            bottom = conditioned.floor_z
        elif conditioned is not None and len(conditioned.points):
            bottom = float(conditioned.points[:, 2].min())
        else:
            bottom = float(encoding.grid_map.center[2] - encoding.grid_map.half_extent)
        template = getattr(self.model, "yaw_template", None)
        if not getattr(self.model, "canonical_yaw", False) or template is None:
            return ObjectPose(np.array([axis[0], axis[1], bottom]), 0.0, 1.0, -1.0)
        keypoints = encoding.keypoints_grid.to(self.device, torch.float32)[None]
        yaw = float(yaw_to_template(keypoints, template)[0])
        misalignment = 1.0 - float(yaw_alignment(keypoints, template)[0])
        spread = calibrated_spread(self.metadata.get("yaw_calibration"), misalignment)
        return ObjectPose(np.array([axis[0], axis[1], bottom]), yaw, misalignment, spread)

    @torch.inference_mode()
    def goal(self, encoding: Encoding, angle: float, include_probabilities: bool = False) -> Goal:
        """The object turned by ``angle`` (radians) about its own vertical axis: the keypoints turned about
        the grid's axis are decoded and the result is moved by the offset of the turn about the object's axis
        (:mod:`kp_core.goals`), into the goal's own grid."""
        angle = goal_angle(angle)
        kp = encoding.keypoints_grid.to(self.device, torch.float32)
        axis = self.axis(encoding)
        # In float64: the goal grid's offset keeps the input's precision (the decoder takes the keypoints in float32).
        turned, offset = goal_keypoints(kp.double(), axis.to(kp.device).double(),
                                        torch.tensor(angle, dtype=torch.float64, device=kp.device))
        prob = self.decode_probabilities(turned)
        occupied = torch.nonzero(prob > self.threshold).cpu().numpy()
        grid_points = self._centers[occupied] if len(occupied) else np.zeros((0, 3))
        gm = encoding.grid_map
        offset = offset.cpu().double().numpy()
        goal_grid = MetricGridMap(center=gm.center + offset * gm.half_extent, half_extent=gm.half_extent)
        return Goal(
            angle=angle,
            points=goal_grid.to_metric(grid_points),
            keypoints=goal_grid.to_metric(turned.cpu().double().numpy()),
            voxel_size=gm.voxel_size,
            grid_origin=goal_grid.center.copy(),
            axis_point=gm.to_metric(axis.cpu().double().numpy()),
            probabilities=prob.cpu().numpy().astype(np.float32) if include_probabilities else None,
        )

