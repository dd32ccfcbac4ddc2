"""kp_perception_node's parameters (declared with descriptors) and the settings objects they make.

Shared by the plain node (:mod:`kp_perception.node`) and the managed one (:mod:`kp_perception.lifecycle_node`).
Read-only parameters are fixed for the life of the node (or, for the managed node, until cleanup); the others
can be set at run time and are validated as a whole before any is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from kp_core.conditioning import MAX_SMOOTH_PIXELS, ConditioningConfig

from .messages import MarkerStyle
from kp_core.pipeline import MIN_OBJECT_SIZE, PipelineConfig, PipelineError, check_precision

NODE_NAME = "kp_perception_node"
SERVICE_NAME = "~/rotate_goal"
KEYPOINT_MARKERS_TOPIC = "~/keypoint_markers"
KEYPOINTS_TOPIC = "~/keypoints"
GOAL_MARKERS_TOPIC = "~/goal_markers"
GOAL_CLOUD_TOPIC = "~/goal_cloud"
OBJECT_CLOUD_TOPIC = "~/object_cloud"
OBJECT_POSE_TOPIC = "~/object_pose"
DIAGNOSTICS_TOPIC = "/diagnostics"

RELIABILITIES = ("auto", "reliable", "best_effort")
IDENTITY_TRANSFORM = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


class SettingsError(ValueError):
    """A parameter value the node cannot use (the message names the parameter)."""


def _float_range(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]


def _int_range(lo: int, hi: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    type: int
    read_only: bool = False
    float_range: tuple | None = None
    int_range: tuple | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=self.type, description=self.description, read_only=self.read_only)
        if self.float_range:
            d.floating_point_range = _float_range(*self.float_range)
        if self.int_range:
            d.integer_range = _int_range(*self.int_range)
        return d


PARAMETERS = [
    Param("model_path", "", "KP-Net checkpoint (.safetensors, its .json, or a run directory); empty: the model "
          "shipped in the kp_perception package (models/mug.safetensors)", ParameterType.PARAMETER_STRING, read_only=True),
    Param("device", "cpu", "torch device: cpu, cuda, cuda:N or auto", ParameterType.PARAMETER_STRING, read_only=True),
    Param("num_threads", 1, "torch CPU threads per operation; 1 keeps latency steady on a CPU shared with other "
          "work (a robot's always is: several threads per operation then wait on each other) and lets a cloud and "
          "a service call run side by side; 0: torch's default, one per core (bench/bench_perception.py)",
          ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(0, 256)),
    Param("optimize", True, "trace the encoder with TorchScript and fold it for inference (faster on CPU: "
          "bench/bench_pipeline.py; checked against the eager model at start, which is kept if they differ)",
          ParameterType.PARAMETER_BOOL, read_only=True),
    Param("precision", "auto", "number format of the model's convolutions: auto (bf16 on a CPU with native bf16 "
          "instructions, else fp32), fp32 or bf16 (a faster encoder, bench/bench_pipeline.py; keypoints within 0.25 "
          "voxel of fp32's, checked at start)", ParameterType.PARAMETER_STRING, read_only=True),
    Param("input_topic", "points", "PointCloud2 topic of the object", ParameterType.PARAMETER_STRING, read_only=True),
    Param("qos.reliability", "auto", "input subscription reliability: auto (reliable, which large clouds need, "
          "switching to best effort if a best-effort publisher appears on the topic), reliable, or best_effort "
          "(matches every publisher, but clouds over ~0.5 MB are mostly lost)", ParameterType.PARAMETER_STRING, read_only=True),
    Param("qos.depth", 1, "input subscription queue depth (keep last): 1 = always the newest cloud",
          ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(1, 100)),
    Param("target_frame", "", "frame the node works and answers in (z up for the object); empty: each cloud's "
          "own frame, untransformed", ParameterType.PARAMETER_STRING, read_only=True),
    Param("use_tf", True, "with target_frame set: transform each cloud with TF (tf2_ros) at its stamp; false: "
          "with input_transform", ParameterType.PARAMETER_BOOL, read_only=True),
    Param("tf_timeout", 0.1, "seconds to wait for a cloud's transform before refusing it", ParameterType.PARAMETER_DOUBLE,
          float_range=(0.0, 10.0)),
    Param("input_transform", list(IDENTITY_TRANSFORM), "fixed transform from the clouds' frame to target_frame "
          "when use_tf is false: translation x, y, z (m) and quaternion x, y, z, w", ParameterType.PARAMETER_DOUBLE_ARRAY),
    Param("object_size", 0.0, f"object size in metres, max(diameter about its vertical axis, height), at least "
          f"{MIN_OBJECT_SIZE} m; 0: the model's trained size (a model without a metric size needs it set)",
          ParameterType.PARAMETER_DOUBLE, float_range=(0.0, 100.0)),
    Param("object_frame", "", "publish the object's pose (~/object_pose) as this TF frame, child of the answer "
          "frame, for every cloud (needs tf2_ros); empty: no TF. ~/object_pose itself goes out while someone "
          "subscribes", ParameterType.PARAMETER_STRING, read_only=True),
    Param("conditioning.enabled", True, "isolate the object in a scene before encoding (kp_core.conditioning): "
          "drop the supporting plane (a table) and what lies below it, keep the cluster of points whose size "
          "matches the model's object, drop isolated points; false: only points far from the cloud's median are "
          "dropped. An already segmented object cloud loses only its isolated points", ParameterType.PARAMETER_BOOL),
    Param("conditioning.veil_angle_deg", 10.0, "organized clouds (height > 1, in the camera's own frame): drop the "
          "farther end of a step between image neighbours that runs within this angle of the camera's ray and is "
          "longer than 1 cm (flying pixels at depth edges); 0: off", ParameterType.PARAMETER_DOUBLE, float_range=(0.0, 89.0)),
    Param("conditioning.smooth_pixels", 2, "organized clouds: average each pixel's range (along its ray) with those "
          "of the pairs of image neighbours up to this many pixels away along its row, then its column, that lie "
          "within four times the image's depth noise of it (at most 1 cm; fewer pixels where 2.5 mm across the "
          "rays spans fewer): a depth camera's noise, with depth edges kept sharp; 0: off",
          ParameterType.PARAMETER_INTEGER, int_range=(0, MAX_SMOOTH_PIXELS)),
    Param("conditioning.underside_angle_deg", 45.0, "organized clouds brought into target_frame (from the camera's "
          "own frame): drop the pixels whose surface faces within this angle of straight down (target_frame's -z), "
          "seen by the camera below them: the underside of a held object, which the model, trained on cameras above "
          "the object, never saw; 0: off",
          ParameterType.PARAMETER_DOUBLE, float_range=(0.0, 89.0)),
    Param("crop.enabled", False, "keep only points inside the crop box (target frame)", ParameterType.PARAMETER_BOOL),
    Param("crop.min", [-1.0, -1.0, -1.0], "crop box minimum corner x, y, z (metres)", ParameterType.PARAMETER_DOUBLE_ARRAY),
    Param("crop.max", [1.0, 1.0, 1.0], "crop box maximum corner x, y, z (metres)", ParameterType.PARAMETER_DOUBLE_ARRAY),
    Param("min_points", 30, "fewest finite points (after cropping) a cloud needs", ParameterType.PARAMETER_INTEGER,
          int_range=(1, 1_000_000)),
    Param("max_points", 4_000_000, "clouds with more points are refused", ParameterType.PARAMETER_INTEGER,
          int_range=(1, 100_000_000)),
    Param("marker.scale", 0.0, "keypoint sphere diameter in metres (0: three voxels)", ParameterType.PARAMETER_DOUBLE,
          float_range=(0.0, 10.0)),
    Param("marker.text_scale", 0.0, "label height in metres (0: the sphere diameter)", ParameterType.PARAMETER_DOUBLE,
          float_range=(0.0, 10.0)),
    Param("marker.show_labels", True, "publish a text label per keypoint", ParameterType.PARAMETER_BOOL),
    Param("marker.alpha", 1.0, "keypoint marker opacity", ParameterType.PARAMETER_DOUBLE, float_range=(0.0, 1.0)),
    Param("marker.keypoint_colors", [0.0], "flat RGB triples in [0, 1] for the keypoints, cycled; fewer than 3 "
          "values: evenly spaced hues", ParameterType.PARAMETER_DOUBLE_ARRAY),
    Param("marker.goal_color", [0.2, 0.6, 1.0, 0.6], "RGBA of the goal voxels", ParameterType.PARAMETER_DOUBLE_ARRAY),
    Param("warn_throttle_sec", 5.0, "at most one warning about unusable clouds per this many seconds",
          ParameterType.PARAMETER_DOUBLE, float_range=(0.0, 3600.0)),
    Param("diagnostics_period", 1.0, "seconds between diagnostic_msgs/DiagnosticArray messages on /diagnostics",
          ParameterType.PARAMETER_DOUBLE, read_only=True, float_range=(0.1, 60.0)),
]


def declare_parameters(node) -> None:
    for p in PARAMETERS:
        node.declare_parameter(p.name, p.default, p.descriptor())


@dataclass(frozen=True)
class Settings:
    """Everything the parameters decide, validated together."""

    pipeline: PipelineConfig
    style: MarkerStyle
    warn_throttle: float
    input_transform: tuple  # 7 floats: x, y, z, qx, qy, qz, qw (quaternion normalized)
    tf_timeout: float


def read_settings(get) -> Settings:
    """Settings from ``get(name) -> value``; raises :class:`SettingsError` naming the parameter at fault."""
    crop_min, crop_max = (numbers(name, get(name), 3) for name in ("crop.min", "crop.max"))
    try:
        pipeline = PipelineConfig(
            object_size=float(get("object_size")),
            crop_enabled=bool(get("crop.enabled")),
            crop_min=crop_min,
            crop_max=crop_max,
            min_points=int(get("min_points")),
            max_points=int(get("max_points")),
            conditioning=ConditioningConfig(enabled=bool(get("conditioning.enabled")),
                                            veil_angle_deg=float(get("conditioning.veil_angle_deg")),
                                            smooth_pixels=int(get("conditioning.smooth_pixels")),
                                            underside_angle_deg=float(get("conditioning.underside_angle_deg"))),
        ).validate()
    except PipelineError as err:
        raise SettingsError(str(err)) from err
    style = MarkerStyle(
        scale=float(get("marker.scale")),
        text_scale=float(get("marker.text_scale")),
        show_labels=bool(get("marker.show_labels")),
        alpha=float(get("marker.alpha")),
        keypoint_colors=colour_values("marker.keypoint_colors", get("marker.keypoint_colors")),
        goal_color=colour_values("marker.goal_color", get("marker.goal_color"), (3, 4)),
    )
    return Settings(pipeline=pipeline, style=style, warn_throttle=float(get("warn_throttle_sec")),
                    input_transform=normalized_transform(get("input_transform")), tf_timeout=float(get("tf_timeout")))


def shown(values, limit: int = 7) -> str:
    """A parameter's value for a refusal: short, whatever its length."""
    values = list(values)
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(f'{v:g}' if isinstance(v, float) else repr(v) for v in values[:limit])}, ...] ({len(values)} values)"


def numbers(name: str, values, count: int | None = None) -> tuple:
    """A double-array parameter as finite floats, ``count`` of them when given; refusals name the parameter."""
    values = list(values)
    if count is not None and len(values) != count:
        raise SettingsError(f"{name} needs {count} values, got {len(values)}: {shown(values)}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise SettingsError(f"{name} needs finite numbers, got {shown(values)}")
    return floats


def colour_values(name: str, values, counts: tuple[int, ...] | None = None) -> tuple:
    """A colour parameter: values in [0, 1], ``counts`` of them when given."""
    floats = numbers(name, values)
    if counts is not None and len(floats) not in counts:
        raise SettingsError(f"{name} needs {' or '.join(map(str, counts))} values (RGB or RGBA), got {len(floats)}")
    if not all(0.0 <= v <= 1.0 for v in floats):
        raise SettingsError(f"{name} needs values in [0, 1], got {shown(values)}")
    return floats


def normalized_transform(values) -> tuple:
    """``input_transform`` checked (7 finite numbers, a non-zero quaternion) with its quaternion normalized."""
    v = np.asarray(numbers("input_transform", values, 7), dtype=np.float64)
    norm = float(np.linalg.norm(v[3:]))
    if not 0.5 < norm < 2.0:  # far from a unit quaternion: more likely a typo than a rotation
        raise SettingsError(f"input_transform's quaternion (qx, qy, qz, qw) must have norm 1, got {norm:g}")
    v[3:] /= norm
    return tuple(float(x) for x in v)


def check_read_only(get) -> None:
    """The read-only parameters that need checking before anything is loaded."""
    reliability = str(get("qos.reliability")).lower()
    if reliability not in RELIABILITIES:
        raise SettingsError(f"qos.reliability must be one of {', '.join(RELIABILITIES)}, got {reliability!r}")
    try:
        check_precision(str(get("precision")).lower())
    except PipelineError as err:
        raise SettingsError(str(err)) from err
