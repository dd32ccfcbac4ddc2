"""kp_perception_node: keypoints of an object from PointCloud2, and rotate-goal predictions as a service.

Subscribes:  <input_topic> (sensor_msgs/PointCloud2; sensor-data QoS, depth 1 by default)
Publishes:   ~/keypoint_markers (visualization_msgs/MarkerArray: SPHERE_LIST + labels, input header)
             ~/keypoints (geometry_msgs/PoseArray, input header)
             ~/goal_markers (visualization_msgs/MarkerArray: CUBE_LIST of goal voxels + goal keypoints)
             ~/goal_cloud (sensor_msgs/PointCloud2: the last goal's occupied voxel centres)
Service:     ~/rotate_goal (kp_interfaces/srv/RotateGoal)

All the model work is in :mod:`kp_perception.pipeline` (ROS-free); this module only adapts ROS to it.
Bad input never stops the node: clouds it cannot use give a throttled warning, service calls it cannot
answer return success=false with the reason.
"""

from __future__ import annotations

import queue
import sys
from collections import deque
import threading
import time
from dataclasses import dataclass

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from kp_interfaces.srv import RotateGoal

from .cloud_io import CloudError, cloud_size, make_xyz_cloud, read_xyz
from .messages import MarkerStyle, fill_goal_response, goal_markers, keypoint_markers, keypoint_poses
from .pipeline import Encoding, Pipeline, PipelineConfig, PipelineError

NODE_NAME = "kp_perception_node"
SERVICE_NAME = "~/rotate_goal"
KEYPOINT_MARKERS_TOPIC = "~/keypoint_markers"
KEYPOINTS_TOPIC = "~/keypoints"
GOAL_MARKERS_TOPIC = "~/goal_markers"
GOAL_CLOUD_TOPIC = "~/goal_cloud"


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


P = ParameterType
PARAMETERS = [
    Param("model_path", "", "KP-Net checkpoint (.safetensors, its .json, or a run directory); empty: the model "
          "shipped in the kp_perception package (models/mug_fast.safetensors)", P.PARAMETER_STRING, read_only=True),
    Param("device", "cpu", "torch device: cpu, cuda, cuda:N or auto", P.PARAMETER_STRING, read_only=True),
    Param("num_threads", 0, "torch CPU threads (0: torch's default)", P.PARAMETER_INTEGER, read_only=True,
          int_range=(0, 256)),
    Param("optimize", True, "trace the encoder with TorchScript and fold it for inference (about 3x faster on "
          "CPU; checked against the eager model at start, which is kept if they differ)", P.PARAMETER_BOOL, read_only=True),
    Param("input_topic", "points", "PointCloud2 topic of the object (z up)", P.PARAMETER_STRING, read_only=True),
    Param("qos.reliability", "best_effort", "input subscription reliability: best_effort (sensor data) or reliable",
          P.PARAMETER_STRING, read_only=True),
    Param("qos.depth", 1, "input subscription queue depth", P.PARAMETER_INTEGER, read_only=True, int_range=(1, 100)),
    Param("object_size", 0.0, "object size in metres, max(diameter about its vertical axis, height); 0: measured "
          "from each cloud's bounding box (best for whole clouds; set it for partial views)", P.PARAMETER_DOUBLE,
          float_range=(0.0, 100.0)),
    Param("centering", "circle", "grid origin: circle (x, y: centre of the smallest circle around the cloud seen "
          "from above, z: mid-height; invariant to the object's yaw) or box (bounding-box centre)",
          P.PARAMETER_STRING),
    Param("crop.enabled", False, "keep only points inside the crop box (input frame)", P.PARAMETER_BOOL),
    Param("crop.min", [-1.0, -1.0, -1.0], "crop box minimum corner x, y, z (metres)", P.PARAMETER_DOUBLE_ARRAY),
    Param("crop.max", [1.0, 1.0, 1.0], "crop box maximum corner x, y, z (metres)", P.PARAMETER_DOUBLE_ARRAY),
    Param("min_points", 30, "fewest finite points (after cropping) a cloud needs", P.PARAMETER_INTEGER,
          int_range=(1, 1_000_000)),
    Param("max_points", 4_000_000, "clouds with more points are refused", P.PARAMETER_INTEGER,
          int_range=(1, 100_000_000)),
    Param("marker.scale", 0.0, "keypoint sphere diameter in metres (0: three voxels)", P.PARAMETER_DOUBLE,
          float_range=(0.0, 10.0)),
    Param("marker.text_scale", 0.0, "label height in metres (0: the sphere diameter)", P.PARAMETER_DOUBLE,
          float_range=(0.0, 10.0)),
    Param("marker.show_labels", True, "publish a text label per keypoint", P.PARAMETER_BOOL),
    Param("marker.alpha", 1.0, "keypoint marker opacity", P.PARAMETER_DOUBLE, float_range=(0.0, 1.0)),
    Param("marker.keypoint_colors", [0.0], "flat RGB triples in [0, 1] for the keypoints, cycled; fewer than 3 "
          "values: evenly spaced hues", P.PARAMETER_DOUBLE_ARRAY),
    Param("marker.goal_color", [0.2, 0.6, 1.0, 0.6], "RGBA of the goal voxels", P.PARAMETER_DOUBLE_ARRAY),
    Param("warn_throttle_sec", 5.0, "at most one warning about unusable clouds per this many seconds",
          P.PARAMETER_DOUBLE, float_range=(0.0, 3600.0)),
]
PARAMETER_NAMES = [p.name for p in PARAMETERS]


class PerceptionNode(Node):
    """ROS adapter over :class:`kp_perception.pipeline.Pipeline`."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for p in PARAMETERS:
            self.declare_parameter(p.name, p.default, p.descriptor())
        get = lambda name: self.get_parameter(name).value  # noqa: E731

        import torch

        if get("num_threads") > 0:
            torch.set_num_threads(get("num_threads"))
        self.pipeline_config = self._pipeline_config(get)
        self.style = self._marker_style(get)
        self.warn_throttle = float(get("warn_throttle_sec"))
        self.pipeline = Pipeline(get("model_path") or None, device=get("device"), config=self.pipeline_config,
                                 optimize=bool(get("optimize")))
        self.pipeline.warmup()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._latest: tuple | None = None  # (header, Encoding) of the latest usable cloud
        self._latest_lock = threading.Lock()
        self.clouds_received = 0
        self.clouds_rejected = 0
        self._cloud_ms: deque = deque(maxlen=2000)  # callback durations, for the summary at shutdown
        self._goal_ms: deque = deque(maxlen=2000)

        reliability = str(get("qos.reliability")).lower()
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"qos.reliability must be best_effort or reliable, got {reliability!r}")
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(get("qos.depth")),
            reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        self.input_topic = get("input_topic")
        self._cloud_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(PointCloud2, self.input_topic, self._on_cloud, qos, callback_group=self._cloud_group)
        self.keypoint_marker_pub = self.create_publisher(MarkerArray, KEYPOINT_MARKERS_TOPIC, 10)
        self.keypoints_pub = self.create_publisher(PoseArray, KEYPOINTS_TOPIC, 10)
        self.goal_marker_pub = self.create_publisher(MarkerArray, GOAL_MARKERS_TOPIC, 1)
        self.goal_cloud_pub = self.create_publisher(PointCloud2, GOAL_CLOUD_TOPIC, 1)
        self.create_service(RotateGoal, SERVICE_NAME, self._on_rotate_goal, callback_group=self._service_group)

        # Goal markers (tens of thousands of cubes take ~0.1 s to build and send) go out from a worker thread
        # after the service has answered; only the newest pending goal is kept.
        self._goal_queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._goal_thread = threading.Thread(target=self._publish_goals, name="goal_markers", daemon=True)
        self._goal_thread.start()

        meta = self.pipeline.metadata
        self.get_logger().info(
            f"ready: model {self.pipeline.model_path} ({meta['architecture'].get('encoder', '?')} encoder, "
            f"K={self.pipeline.num_keypoints}) on {self.pipeline.device}"
            f"{', optimized encoder' if self.pipeline.optimized else ''}, {torch.get_num_threads()} torch threads; listening on "
            f"{self.resolve_topic_name(self.input_topic)}, service {self.resolve_service_name(SERVICE_NAME)}"
        )

    # ---- parameters -----------------------------------------------------------------------------
    @staticmethod
    def _pipeline_config(get) -> PipelineConfig:
        return PipelineConfig(
            object_size=float(get("object_size")),
            crop_enabled=bool(get("crop.enabled")),
            crop_min=tuple(float(v) for v in get("crop.min")),
            crop_max=tuple(float(v) for v in get("crop.max")),
            min_points=int(get("min_points")),
            max_points=int(get("max_points")),
            centering=str(get("centering")),
        ).validate()

    @staticmethod
    def _marker_style(get) -> MarkerStyle:
        return MarkerStyle(
            scale=float(get("marker.scale")),
            text_scale=float(get("marker.text_scale")),
            show_labels=bool(get("marker.show_labels")),
            alpha=float(get("marker.alpha")),
            keypoint_colors=tuple(float(v) for v in get("marker.keypoint_colors")),
            goal_color=tuple(float(v) for v in get("marker.goal_color")),
        )

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate a change of the run-time parameters and apply it atomically."""
        new = {p.name: p.value for p in params}
        get = lambda name: new[name] if name in new else self.get_parameter(name).value  # noqa: E731
        try:
            config = self._pipeline_config(get)
            style = self._marker_style(get)
            if len(style.goal_color) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in style.goal_color + style.keypoint_colors):
                raise ValueError("colours need values in [0, 1] and marker.goal_color 3 or 4 of them")
        except (PipelineError, ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.pipeline.config = self.pipeline_config = config
        self.style = style
        self.warn_throttle = float(get("warn_throttle_sec"))
        return SetParametersResult(successful=True)

    # ---- clouds ---------------------------------------------------------------------------------
    def _warn_cloud(self, text: str) -> None:
        self.clouds_rejected += 1
        self.get_logger().warning(
            f"ignoring a cloud on {self.input_topic}: {text} ({self.clouds_rejected} ignored so far)",
            throttle_duration_sec=self.warn_throttle,
        )

    def _encode_msg(self, msg: PointCloud2) -> Encoding:
        points = read_xyz(msg, max_points=self.pipeline_config.max_points)
        return self.pipeline.encode(points)

    def _on_cloud(self, msg: PointCloud2) -> None:
        start = time.perf_counter()
        self.clouds_received += 1
        try:
            encoding = self._encode_msg(msg)
        except (CloudError, PipelineError) as err:
            self._warn_cloud(str(err))
            return
        except Exception as err:  # never let one message take the node down
            self.get_logger().error(f"failed on a cloud: {type(err).__name__}: {err}", throttle_duration_sec=self.warn_throttle)
            self.clouds_rejected += 1
            return
        with self._latest_lock:
            self._latest = (msg.header, encoding)
        keypoints = encoding.keypoints
        self.keypoint_marker_pub.publish(keypoint_markers(msg.header, keypoints, encoding.grid_map.voxel_size, self.style))
        self.keypoints_pub.publish(keypoint_poses(msg.header, keypoints))
        self._cloud_ms.append((time.perf_counter() - start) * 1000)

    # ---- service --------------------------------------------------------------------------------
    def _on_rotate_goal(self, request: RotateGoal.Request, response: RotateGoal.Response) -> RotateGoal.Response:
        start = time.perf_counter()
        try:
            angle = float(request.angle)
            if angle != angle or angle in (float("inf"), float("-inf")):
                raise PipelineError(f"angle must be a finite number of radians, got {angle}")
            if cloud_size(request.cloud) > 0:
                header, encoding, source = request.cloud.header, self._encode_msg(request.cloud), "the request's cloud"
            else:
                with self._latest_lock:
                    latest = self._latest
                if latest is None:
                    raise PipelineError(
                        f"no usable cloud received on {self.resolve_topic_name(self.input_topic)} yet; "
                        "publish one there or pass one in the request"
                    )
                header, encoding = latest
                source = f"the latest cloud from {self.input_topic} (stamp {header.stamp.sec}.{header.stamp.nanosec:09d})"
            goal = self.pipeline.goal(encoding, angle, include_probabilities=bool(request.include_occupancy))
        except (CloudError, PipelineError) as err:
            response.success = False
            response.message = str(err)
            self.get_logger().warning(f"rotate_goal refused: {err}")
            return response
        except Exception as err:  # keep serving whatever happens
            response.success = False
            response.message = f"internal error: {type(err).__name__}: {err}"
            self.get_logger().error(f"rotate_goal failed: {response.message}")
            return response
        fill_goal_response(response, header, goal)
        response.message = (
            f"{len(goal.points)} occupied voxels ({goal.voxel_size * 1000:.2f} mm) for a rotation of "
            f"{angle:.4f} rad of {source}, in {(time.perf_counter() - start) * 1000:.1f} ms"
        )
        self._goal_ms.append((time.perf_counter() - start) * 1000)
        self.goal_cloud_pub.publish(response.goal_cloud)
        if self.goal_marker_pub.get_subscription_count() > 0:  # tens of thousands of cubes: only when watched
            self._queue_goal_markers(header, goal)
        return response

    def _queue_goal_markers(self, header, goal) -> None:
        item = (header, goal, self.style)
        while True:
            try:
                self._goal_queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._goal_queue.get_nowait()
                except queue.Empty:
                    pass

    def _publish_goals(self) -> None:
        while not self._stop.is_set():
            try:
                header, goal, style = self._goal_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.goal_marker_pub.publish(goal_markers(header, goal.points, goal.keypoints, goal.voxel_size, style))
            except Exception as err:  # e.g. the context is shutting down
                if not self._stop.is_set():
                    self.get_logger().error(f"publishing goal markers failed: {err}")

    def timing_summary(self) -> str:
        def stats(values):
            if not values:
                return "none"
            a = sorted(values)
            return f"{len(a)}, p50 {a[len(a) // 2]:.1f} ms, p99 {a[min(len(a) - 1, int(0.99 * len(a)))]:.1f} ms"

        return (f"clouds received {self.clouds_received}, ignored {self.clouds_rejected}; cloud callbacks: "
                f"{stats(list(self._cloud_ms))}; rotate_goal computations: {stats(list(self._goal_ms))}")

    def destroy_node(self):
        try:
            self.get_logger().info(f"stopping: {self.timing_summary()}")
        except Exception:  # the logger may already be gone at interpreter shutdown
            pass
        self._stop.set()
        self._goal_thread.join(timeout=2.0)
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = PerceptionNode()
        except Exception as err:  # a bad model path, device or parameter: say so plainly and exit
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {type(err).__name__}: {err}")
            return 2
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
