"""The node's work, shared by the plain node (:mod:`kp_perception.node`) and the managed (lifecycle) node
(:mod:`kp_perception.lifecycle_node`): clouds in, keypoints out, rotate-goal answers, /diagnostics.

The steps follow the ROS 2 managed-node life cycle: ``configure`` reads the parameters, loads and warms the
model and creates the publishers; ``activate`` subscribes and serves; ``deactivate`` stops both; ``cleanup``
releases everything. The plain node runs configure and activate at start.

All the model work is in :mod:`kp_core.pipeline` (ROS-free); this module only adapts ROS to it. Bad input
never stops the node: clouds it cannot use give a throttled warning, service calls it cannot answer return
success=false with the reason, and no answer is ever a success with non-finite numbers in it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseArray, PoseStamped
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from kp_interfaces.srv import RotateGoal

from kp_core.conditioning import organized_cloud, robust_center
from kp_core.pipeline import Pipeline, PipelineError, goal_angle, in_crop_box, require_points

from . import default_model_path
from .callback_guard import CallbackFailures, Throttle, guarded
from .cloud_io import CloudError, cloud_size, make_xyz_cloud, read_xyz
from .diagnostics import PerceptionStats, diagnostic_array, model_key_values
from .frames import FrameMapper, TransformUnavailable, fixed_lookup, up_in_source
from .messages import (
    KeypointMarkers, NotFinite, fill_goal_response, fill_pose_response, goal_markers, keypoint_poses, pose_message,
)
from .parameters import (
    DIAGNOSTICS_TOPIC, GOAL_CLOUD_TOPIC, GOAL_MARKERS_TOPIC, KEYPOINT_MARKERS_TOPIC, KEYPOINTS_TOPIC, OBJECT_CLOUD_TOPIC,
    OBJECT_POSE_TOPIC, SERVICE_NAME,
    SettingsError, check_read_only, read_settings,
)
from .qos import CloudSubscription

LOCAL_RANGE = 100.0  # metres: clouds farther from their frame's origin are moved near it before encoding


def uses_tf(get) -> bool:
    """Whether clouds are transformed with TF (``get``: a parameter's value by name)."""
    return bool(str(get("target_frame"))) and bool(get("use_tf"))


REFUSALS = (CloudError, TransformUnavailable, NotFinite, PipelineError)
"""What a cloud or a call may be refused for; each class names its kind (``category``); anything else is ours."""


def refusal_category(err: Exception) -> str:
    """A short, bounded key for /diagnostics' refusal counts: the refusal's type says it."""
    return err.category if isinstance(err, REFUSALS) else "internal error"


@dataclass
class Located:
    """An encoding and where it is: its header (frame and stamp of the answers) and the offset (whole metres,
    float64) its points were moved by before encoding; every position that comes out is moved back."""

    header: Header
    encoding: object  # kp_core.pipeline.Encoding
    offset: np.ndarray
    float64: bool  # the points were float64: answer in float64

    @property
    def keypoints(self) -> np.ndarray:
        return self.encoding.keypoints + self.offset

    def goal(self, pipeline: Pipeline, angle: float, include_probabilities: bool):
        goal = pipeline.goal(self.encoding, angle, include_probabilities=include_probabilities)
        moved = {name: np.asarray(getattr(goal, name), dtype=np.float64) + self.offset
                 for name in ("points", "keypoints", "grid_origin", "axis_point")}
        return dataclasses.replace(goal, **moved)


class Perception:
    """Subscriptions, publishers, service and diagnostics of one node (``node``: a Node or a LifecycleNode)."""

    def __init__(self, node, managed: bool = False):
        self.node = node
        self.managed = managed
        self.logger = node.get_logger()
        self.settings = None
        self.pipeline: Pipeline | None = None
        self.frames: FrameMapper | None = None
        self.stats = PerceptionStats()
        self.failures = CallbackFailures(self.logger)  # exceptions that escaped a callback (see guarded)
        self._cloud_warnings = Throttle()  # warn_throttle_sec, applied here: see kp_perception.callback_guard
        self._goal_warnings = Throttle()
        self.active = False
        self._tf = None
        self._object_tf = None  # (frame, TransformBroadcaster) when object_frame is set
        self._latest: Located | None = None  # the latest usable cloud's encoding
        self._latest_lock = threading.Lock()
        self._keypoint_markers = KeypointMarkers()  # used under _cloud_lock only
        self._cloud_lock = threading.Lock()  # held while a cloud is processed (deactivate waits for it)
        self._service_lock = threading.Lock()
        self._views_lock = threading.Lock()  # the goal waiting for its viewers, and their publishers
        self._pending_views = None  # (header, goal, goal cloud) of the last answer, not yet published
        self._views_guard = None  # triggers _publish_goal_views after an answer
        self._cloud_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._views_group = MutuallyExclusiveCallbackGroup()
        self.cloud_input: CloudSubscription | None = None  # created by configure, subscribed while active
        self._service = None
        self._publishers: list = []
        self._diagnostics_pub = None
        self._timer = None
        self.input_topic = ""

    def _get(self, name):
        return self.node.get_parameter(name).value

    # ---- life cycle -----------------------------------------------------------------------------
    def configure(self) -> None:
        """Read the parameters, load and warm up the model, create the publishers and the diagnostics timer.

        Raises:
            SettingsError, PipelineError, TransformUnavailable, CheckpointError...: the node cannot run (the
            message says why); nothing is left half-created.
        """
        import torch

        get = self._get
        check_read_only(get)
        self.settings = read_settings(get)
        self.stats = PerceptionStats()  # a new configuration counts afresh
        if get("num_threads") > 0:
            torch.set_num_threads(get("num_threads"))
        try:
            self.pipeline = Pipeline(get("model_path") or default_model_path(), device=get("device"),
                                     config=self._pipeline_config(self.settings), optimize=bool(get("optimize")),
                                     precision=str(get("precision")).lower())
            self.pipeline.warmup()
            self.frames = self._frame_mapper(get)
            self.input_topic = str(get("input_topic"))
            self.cloud_input = CloudSubscription(self.node, self.input_topic, self._on_cloud, self._cloud_group, get,
                                                self.stats, self.failures)
            create = self.node.create_lifecycle_publisher if self.managed else self.node.create_publisher
            self.keypoint_marker_pub = create(MarkerArray, KEYPOINT_MARKERS_TOPIC, 10)
            self.keypoints_pub = create(PoseArray, KEYPOINTS_TOPIC, 10)
            # The last goal stays available (transient local, depth 1) to a viewer that subscribes later.
            latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.goal_marker_pub = create(MarkerArray, GOAL_MARKERS_TOPIC, latched)
            self.goal_cloud_pub = create(PointCloud2, GOAL_CLOUD_TOPIC, latched)
            self.object_cloud_pub = create(PointCloud2, OBJECT_CLOUD_TOPIC, 1)
            self.object_pose_pub = create(PoseStamped, OBJECT_POSE_TOPIC, 10)
            self._publishers = [self.keypoint_marker_pub, self.keypoints_pub, self.goal_marker_pub, self.goal_cloud_pub,
                                self.object_cloud_pub, self.object_pose_pub]
            self._object_tf = self._tf_broadcaster(str(get("object_frame")))
            self._views_guard = self.node.create_guard_condition(self._publish_goal_views,
                                                                 callback_group=self._views_group)
            # Diagnostics go out in every state, so a monitor sees an inactive node too.
            from diagnostic_msgs.msg import DiagnosticArray

            self._diagnostics_pub = self.node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
            self._timer = self.node.create_timer(float(get("diagnostics_period")), self._on_timer,
                                                 callback_group=self._cloud_group)
        except Exception:
            self.cleanup(log=False)
            raise
        meta = self.pipeline.metadata
        self.model_description = (
            f"model {self.pipeline.model_path} ({meta['architecture'].get('encoder', '?')} encoder, "
            f"K={self.pipeline.num_keypoints}) on {self.pipeline.device}"
            f", {self.pipeline.encoder_path}, {torch.get_num_threads()} torch threads"
        )

    def _tf_broadcaster(self, frame: str):
        """(frame, tf2_ros TransformBroadcaster) for ``object_frame``, None when it is empty.

        Raises:
            SettingsError: object_frame is set but tf2_ros is not installed.
        """
        if not frame:
            return None
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError as err:
            raise SettingsError("object_frame needs tf2_ros, which is not installed (install ros-$ROS_DISTRO-tf2-ros), "
                                "or leave object_frame empty and read ~/object_pose") from err
        return frame, TransformBroadcaster(self.node)

    def _publish_object_pose(self, located: Located) -> None:
        """~/object_pose (while someone subscribes) and the object_frame transform (when set) of a cloud."""
        watched = self.object_pose_pub.get_subscription_count() > 0
        if not watched and self._object_tf is None:
            return
        pose = self.pipeline.pose(located.encoding)
        message = PoseStamped(header=located.header, pose=pose_message(pose.position + located.offset, pose.yaw))
        if watched:
            self.object_pose_pub.publish(message)
        if self._object_tf is not None:
            from geometry_msgs.msg import TransformStamped

            frame, broadcaster = self._object_tf
            transform = TransformStamped(header=located.header, child_frame_id=frame)
            p, q = message.pose.position, message.pose.orientation
            transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = p.x, p.y, p.z
            transform.transform.rotation = q
            broadcaster.sendTransform(transform)

    def _frame_mapper(self, get) -> FrameMapper:
        target = str(get("target_frame"))
        if not target:
            return FrameMapper("")
        if uses_tf(get):
            from .frames import TfLookup

            self._tf = TfLookup(self.node, lambda: self.settings.tf_timeout)
            return FrameMapper(target, self._tf)
        return FrameMapper(target, fixed_lookup(lambda: self.settings.input_transform))

    def activate(self) -> None:
        """Subscribe to the input topic and serve ~/rotate_goal."""
        self.cloud_input.open()
        self._service = self.node.create_service(RotateGoal, SERVICE_NAME, self._on_rotate_goal,
                                                 callback_group=self._service_group)
        self.active = True
        frames = f", answering in {self.frames.target_frame!r}" if self.frames.target_frame else ""
        self.logger.info(
            f"ready: {self.model_description}; listening on {self.node.resolve_topic_name(self.input_topic)} "
            f"({self.cloud_input.describe()}){frames}, service {self.node.resolve_service_name(SERVICE_NAME)}"
        )

    def deactivate(self) -> None:
        """Stop taking clouds and calls (waits for the one in progress, if any)."""
        self.active = False
        with self._cloud_lock:
            if self.cloud_input is not None:
                self.cloud_input.close()
        with self._service_lock:
            if self._service is not None:
                self.node.destroy_service(self._service)
                self._service = None

    def cleanup(self, log: bool = True) -> None:
        """Release the publishers, timer, transform listener and model (after :meth:`deactivate`)."""
        if log and self.pipeline is not None:
            self.logger.info(f"stopping: {self.stats.summary()}")
        self.deactivate()
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        destroy = self.node.destroy_lifecycle_publisher if self.managed else self.node.destroy_publisher
        with self._views_lock:  # not while a goal is being published
            self._pending_views = None
            if self._views_guard is not None:
                self.node.destroy_guard_condition(self._views_guard)
                self._views_guard = None
            for pub in self._publishers:
                destroy(pub)
            self._publishers = []
        if self._diagnostics_pub is not None:
            self.node.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        if self._tf is not None:
            self._tf.close()
            self._tf = None
        self._object_tf = None
        with self._latest_lock:
            self._latest = None
        self.cloud_input = None
        self.pipeline = None  # the model's memory goes with it

    # ---- parameters -----------------------------------------------------------------------------
    def _failed_validation(self, err: Exception, *args) -> SetParametersResult:
        return SetParametersResult(successful=False, reason=f"internal error: {type(err).__name__}: {err}")

    @guarded(fallback=_failed_validation)
    def on_set_parameters(self, params) -> SetParametersResult:
        """Validate a change of the run-time parameters as a whole (nothing is applied here: the change may
        still be refused; :meth:`on_parameters_set` applies it once it is accepted)."""
        new = {p.name: p.value for p in params}

        def get(name):
            return new[name] if name in new else self._get(name)

        try:
            settings = read_settings(get)
            if self.pipeline is not None:
                self.pipeline.check(self._pipeline_config(settings))
        except (SettingsError, ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    @guarded()
    def on_parameters_set(self, params) -> None:
        """Apply an accepted change: new settings objects, swapped in whole (a cloud in flight keeps its snapshot)."""
        settings = read_settings(self._get)
        if self.pipeline is not None:
            self.pipeline.config = self._pipeline_config(settings)
        self.settings = settings

    @staticmethod
    def _pipeline_config(settings):
        """The pipeline's settings: cropping is done here, in the answer frame (:meth:`_localize`)."""
        return dataclasses.replace(settings.pipeline, crop_enabled=False)

    # ---- clouds ---------------------------------------------------------------------------------
    def _encode(self, cloud: PointCloud2) -> Located:
        """A cloud's keypoints, in the frame the node answers in."""
        cfg = self.settings.pipeline  # one snapshot for the whole cloud
        frame, transform = self.frames.transform(cloud.header)
        if cloud.height > 1:  # an image of points in the camera's frame: veils, noise, undersides go while it is at hand
            image = read_xyz(cloud, max_points=cfg.max_points, keep_nonfinite=True).reshape(cloud.height, cloud.width, 3)
            image, kept = organized_cloud(image, cfg.conditioning, up=up_in_source(transform))
            points = np.compress(kept.ravel(), image.reshape(-1, 3), axis=0)  # several times faster than [kept]
        else:
            points = read_xyz(cloud, max_points=cfg.max_points)
        if transform is not None:
            points = transform.apply(points)
        float64 = points.dtype == np.float64
        points, offset = self._localize(points, cfg)
        located = Located(Header(stamp=cloud.header.stamp, frame_id=frame), self.pipeline.encode(points), offset, float64)
        if not np.isfinite(located.keypoints).all():
            raise NotFinite("the keypoints are not finite (the cloud's coordinates are out of range)")
        return located

    def _localize(self, points: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
        """Crop (in the answer frame), then move the points near the origin by a whole number of metres.

        Far from the frame's origin (map or UTM frames, 1e5 m away) the pipeline's tolerances, which scale with
        the coordinates, would move the grid by up to a voxel; within LOCAL_RANGE nothing moves (offset 0). The
        crop box is in the answer frame, so cropping happens here, before the shift (the pipeline is given a
        config without it, see :meth:`_pipeline_config`). ``cfg``: the cloud's snapshot of the pipeline settings.
        """
        if cfg.crop_enabled and len(points):
            points = points[in_crop_box(points, cfg)]
            require_points(len(points), cfg)
        offset = np.zeros(3)
        if len(points):
            middle = robust_center(points)  # not one point: a stray return must not set the offset
            if np.isfinite(middle).all() and np.abs(middle).max() > LOCAL_RANGE:
                offset = np.round(middle)
                points = np.asarray(points, dtype=np.float64) - offset
        return points, offset

    def _refuse_cloud(self, err: Exception) -> None:
        category = refusal_category(err)
        internal = category == "internal error"
        text = f"{type(err).__name__}: {err}" if internal else str(err)
        self.stats.cloud_refused(category, text)
        if not self._cloud_warnings.ready(self.settings.warn_throttle):
            return
        line = f"ignoring a cloud on {self.input_topic}: {text} ({self.stats.refused_total()} ignored so far)"
        # One call site per severity: rclpy refuses a call site whose severity changes.
        if internal:
            self.logger.error(line)
        else:
            self.logger.warning(line)

    @guarded()
    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._cloud_lock:
            if not self.active:
                return
            start = time.perf_counter()
            self.stats.cloud_received()
            stamp = msg.header.stamp
            if stamp.sec or stamp.nanosec:  # an unstamped cloud has no age
                now = self.node.get_clock().now().nanoseconds
                self.stats.cloud_age((now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6)
            try:
                located = self._encode(msg)
            except Exception as err:  # never let one message take the node down
                self._refuse_cloud(err)
                return
            with self._latest_lock:
                self._latest = located
            keypoints, header = located.keypoints, located.header
            self.keypoint_marker_pub.publish(self._keypoint_markers(header, keypoints,
                                                                    located.encoding.grid_map.voxel_size,
                                                                    self.settings.style))
            self.keypoints_pub.publish(keypoint_poses(header, keypoints))
            self._publish_object_pose(located)
            conditioned = located.encoding.conditioned
            if conditioned is not None:
                self.stats.cloud_conditioned(conditioned.summary)
                if self.object_cloud_pub.get_subscription_count() > 0:  # only when watched (e.g. by RViz)
                    self.object_cloud_pub.publish(make_xyz_cloud(
                        conditioned.points + located.offset, header, dtype=np.float64 if located.float64 else np.float32))
            self.stats.cloud_used((time.perf_counter() - start) * 1000)

    # ---- service --------------------------------------------------------------------------------
    def _failed_goal(self, err: Exception, *args) -> RotateGoal.Response:
        return RotateGoal.Response(success=False, message=f"internal error: {type(err).__name__}: {err}")

    @guarded(fallback=_failed_goal)
    def _on_rotate_goal(self, request: RotateGoal.Request, response: RotateGoal.Response) -> RotateGoal.Response:
        with self._service_lock:
            return self._rotate_goal(request, response)

    def _rotate_goal(self, request, response):
        start = time.perf_counter()
        try:
            if not self.active:
                raise PipelineError("the node is not active")
            requested = float(request.angle)
            angle = goal_angle(requested)  # before the request's cloud is encoded for nothing
            if cloud_size(request.cloud) > 0:
                located = self._encode(request.cloud)
                source = "the request's cloud"
            else:
                with self._latest_lock:
                    located = self._latest
                if located is None:
                    raise PipelineError(
                        f"no usable cloud received on {self.node.resolve_topic_name(self.input_topic)} yet; "
                        "publish one there or pass one in the request")
                stamp = located.header.stamp
                source = f"the latest cloud from {self.input_topic} (stamp {stamp.sec}.{stamp.nanosec:09d})"
            header = located.header
            goal = located.goal(self.pipeline, angle, bool(request.include_occupancy))
            fill_goal_response(response, header, goal, float64=located.float64)
            pose = self.pipeline.pose(located.encoding)  # the goal found the axis: no second decode
            fill_pose_response(response, pose, located.offset)
            self.stats.yaw_spread(pose.yaw_spread)
        except Exception as err:  # keep serving whatever happens
            known = isinstance(err, REFUSALS)
            response = RotateGoal.Response(success=False)
            response.message = str(err) if known else f"internal error: {type(err).__name__}: {err}"
            self.stats.goal_refused(response.message)
            if self._goal_warnings.ready(self.settings.warn_throttle):
                line = f"rotate_goal refused: {response.message}"
                if known:  # one call site per severity (see _refuse_cloud)
                    self.logger.warning(line)
                else:
                    self.logger.error(line)
            return response
        reduced_note = f" (reduced to {angle:.6f})" if angle != requested else ""
        response.message = (
            f"{len(goal.points)} occupied voxels ({goal.voxel_size * 1000:.2f} mm) for a rotation of {requested:.6g} rad"
            f"{reduced_note} of {source}, in {(time.perf_counter() - start) * 1000:.1f} ms")
        self.stats.goal_answered((time.perf_counter() - start) * 1000)
        # The viewers' copies go out after the answer, from their own callback: a planner waits for the answer,
        # RViz can wait a few milliseconds for the picture.
        with self._views_lock:
            self._pending_views = (header, goal, response.goal_cloud)
            if self._views_guard is not None:
                self._views_guard.trigger()
        return response

    @guarded()
    def _publish_goal_views(self) -> None:
        """~/goal_cloud (latched) and, when someone watches them, ~/goal_markers of the last answered goal;
        of several answers in quick succession only the newest is drawn."""
        with self._views_lock:
            pending, self._pending_views = self._pending_views, None
            if pending is None or not self._publishers or not self.active:
                return
            header, goal, cloud = pending
            self.goal_cloud_pub.publish(cloud)
            if self.goal_marker_pub.get_subscription_count() > 0:  # only when watched (e.g. by RViz)
                self.goal_marker_pub.publish(goal_markers(header, goal.points, goal.keypoints, goal.voxel_size,
                                                          self.settings.style))

    # ---- housekeeping and /diagnostics ------------------------------------------------------------
    @guarded()
    def _on_timer(self) -> None:
        with self._cloud_lock:  # not while deactivate takes the subscription down
            if self.active:
                self.cloud_input.check_publishers()
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None or self.pipeline is None:
            return
        now = time.monotonic()
        rate = self.stats.input_rate(now)
        topic = self.node.resolve_topic_name(self.input_topic)
        level, message = self.stats.level(self.active, topic, self.failures.total(), now)
        pairs = [
            ("state", "active" if self.active else "inactive"),
            ("input topic", topic),
            ("input QoS", self.cloud_input.describe()),
            ("target frame", self.frames.target_frame or "each cloud's own"),
            ("input rate", f"{rate:.2f} Hz"),
            *self.stats.key_values(),
            *self.failures.key_values(),
            *model_key_values(self.pipeline),
        ]
        name = f"{self.node.get_fully_qualified_name().lstrip('/')}: perception"
        self._diagnostics_pub.publish(diagnostic_array(name, level, message, pairs, self.node.get_clock().now().to_msg()))
