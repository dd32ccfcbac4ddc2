"""Bringing clouds into the frame the node works in (``target_frame``): with TF (tf2_ros) at each cloud's stamp,
or with a fixed ``input_transform`` for setups without TF. All in float64, so a far-away frame (map, UTM)
keeps its millimetres.

The model needs the object z-up; depth cameras publish in an optical frame (z forward), so a robot names a
z-up frame (base_link, a table frame) as ``target_frame`` and everything the node publishes or answers is in
that frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TransformUnavailable(RuntimeError):
    """No transform for a cloud (the message says which, and why)."""

    category = "no transform"  # /diagnostics' refusal counts


@dataclass(frozen=True)
class RigidTransform:
    """p_target = rotation @ p_source + translation (float64)."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @classmethod
    def from_xyz_quaternion(cls, x, y, z, qx, qy, qz, qw) -> "RigidTransform":
        q = np.array([qx, qy, qz, qw], dtype=np.float64)
        q /= np.linalg.norm(q)
        qx, qy, qz, qw = q
        rotation = np.array([
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
            [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
            [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
        ])
        return cls(rotation, np.array([x, y, z], dtype=np.float64))

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.rotation, np.eye(3)) and not self.translation.any())

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of any float type -> float64 (N, 3) in the target frame."""
        points = np.asarray(points, dtype=np.float64)
        if self.is_identity:
            return points
        return points @ self.rotation.T + self.translation


class FrameMapper:
    """Maps a cloud's points into ``target_frame``; empty target: every cloud stays in its own frame.

    ``lookup(target, source, stamp)`` returns a :class:`RigidTransform` or raises
    :class:`TransformUnavailable`; it is TF's when ``use_tf``, else the fixed ``input_transform``.
    """

    def __init__(self, target_frame: str, lookup=None):
        self.target_frame = target_frame
        self._lookup = lookup

    def __call__(self, header, points: np.ndarray) -> tuple[str, np.ndarray]:
        """(frame of the result, points in it). Clouds already in the target frame are left as they are."""
        frame, transform = self.transform(header)
        return frame, points if transform is None else transform.apply(points)

    def transform(self, header) -> tuple[str, RigidTransform | None]:
        """(frame of the result, the transform of the cloud into it; None: the cloud stays as it is)."""
        if not self.target_frame or header.frame_id == self.target_frame:
            return header.frame_id, None
        if not header.frame_id:
            raise TransformUnavailable(f"the cloud has no frame_id, so it cannot be brought into {self.target_frame!r}")
        return self.target_frame, self._lookup(self.target_frame, header.frame_id, header.stamp)


def up_in_source(transform: RigidTransform | None) -> np.ndarray | None:
    """(3,) the answer frame's up (its +z, the object's vertical) in the frame of a cloud ``transform`` maps from;
    None without a transform: a cloud that is in the answer frame already says nothing of where its camera is."""
    return None if transform is None else np.array(transform.rotation[2], dtype=np.float64)


def fixed_lookup(settings_source):
    """A lookup that always answers the fixed transform ``settings_source()`` (7 numbers, read on each use so a
    new ``input_transform`` applies at once)."""

    def lookup(target, source, stamp):
        return RigidTransform.from_xyz_quaternion(*settings_source())

    return lookup


class TfLookup:
    """Transforms from TF (tf2_ros Buffer + TransformListener), at the cloud's stamp.

    The listener's /tf subscriptions live on a node of their own, spun by a thread of their own: a cloud callback
    that waits for a transform blocks only its own executor, which stays single-threaded (rclpy's multi-threaded
    executor delivered clouds erratically; see bench/bench_perception.py), while transforms keep arriving.
    """

    def __init__(self, node, timeout_source):
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError as err:
            raise TransformUnavailable(
                "target_frame with use_tf needs tf2_ros, which is not installed (install ros-$ROS_DISTRO-tf2-ros), "
                "or set use_tf: false and give the fixed transform as input_transform") from err
        import threading

        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self._node = Node(f"{node.get_name()}_tf_listener", namespace=node.get_namespace(), context=node.context,
                          start_parameter_services=False)
        self._buffer = Buffer()
        self._listener = TransformListener(self._buffer, self._node)
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="tf_listener", daemon=True)
        self._thread.start()
        self._timeout = timeout_source

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:  # the context shut down first
            pass

    def __call__(self, target, source, stamp) -> RigidTransform:
        from rclpy.duration import Duration
        from rclpy.time import Time
        from tf2_ros import TransformException

        try:
            msg = self._buffer.lookup_transform(target, source, Time.from_msg(stamp),
                                                timeout=Duration(seconds=float(self._timeout())))
        except TransformException as err:
            raise TransformUnavailable(
                f"no transform from {source!r} to {target!r} at {stamp.sec}.{stamp.nanosec:09d} within "
                f"{self._timeout():g} s: {err}") from err
        t, q = msg.transform.translation, msg.transform.rotation
        return RigidTransform.from_xyz_quaternion(t.x, t.y, t.z, q.x, q.y, q.z, q.w)

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join()
        self._listener.unregister()
        self._node.destroy_node()
