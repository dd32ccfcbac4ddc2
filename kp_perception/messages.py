"""Building the node's ROS messages (markers, poses, service response) from pipeline results."""

from __future__ import annotations

import array
import colorsys
import dataclasses
import math
import struct
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseArray
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from .cloud_io import make_xyz_cloud

KEYPOINT_NS = "keypoints"
LABEL_NS = "keypoint_labels"
GOAL_NS = "goal_voxels"
GOAL_KEYPOINT_NS = "goal_keypoints"


@dataclass
class MarkerStyle:
    """Marker parameters (``marker.*`` on the node)."""

    scale: float = 0.0  # keypoint sphere diameter in metres; 0: three voxels of the grid
    text_scale: float = 0.0  # label height in metres; 0: the sphere diameter
    show_labels: bool = True
    alpha: float = 1.0
    keypoint_colors: tuple = ()  # flat RGB triples in [0, 1]; empty: a hue wheel; fewer than K: repeated
    goal_color: tuple = (0.2, 0.6, 1.0, 0.6)  # RGBA of the goal voxels


def keypoint_colors(count: int, style: MarkerStyle) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per keypoint: from ``style.keypoint_colors`` (cycled), else evenly spaced hues."""
    flat = list(style.keypoint_colors)
    if len(flat) >= 3:
        triples = [tuple(flat[i:i + 3]) for i in range(0, len(flat) - len(flat) % 3, 3)]
        rgb = [triples[i % len(triples)] for i in range(count)]
    else:
        rgb = [colorsys.hsv_to_rgb(i / max(count, 1), 0.85, 1.0) for i in range(count)]
    return [(float(r), float(g), float(b), float(style.alpha)) for r, g, b in rgb]


def pose_message(position, yaw: float) -> Pose:
    """A geometry_msgs/Pose at ``position`` turned by ``yaw`` radians about z."""
    pose = Pose()
    pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
    pose.orientation.z, pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return pose


def to_points(points: np.ndarray) -> list[Point]:
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(points, dtype=np.float64).reshape(-1, 3).tolist()]


def _marker(header, ns: str, marker_id: int, kind: int) -> Marker:
    m = Marker()
    m.header = header
    m.ns = ns
    m.id = marker_id
    m.type = kind
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    m.frame_locked = False
    return m


def _sphere_diameter(voxel_size: float, style: MarkerStyle) -> float:
    return float(style.scale if style.scale > 0 else 3.0 * voxel_size)


def keypoint_spheres(header, keypoints: np.ndarray, voxel_size: float, style: MarkerStyle,
                     ns: str = KEYPOINT_NS) -> Marker:
    """A SPHERE_LIST of the keypoints, one colour each."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    spheres = _marker(header, ns, 0, Marker.SPHERE_LIST)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = _sphere_diameter(voxel_size, style)
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=float(style.alpha))
    spheres.points = to_points(keypoints)
    spheres.colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in keypoint_colors(len(keypoints), style)]
    return spheres


def keypoint_markers(header, keypoints: np.ndarray, voxel_size: float, style: MarkerStyle) -> MarkerArray:
    """A SPHERE_LIST of the keypoints (one colour each) and a text label per keypoint."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    colors = keypoint_colors(len(keypoints), style)
    out = MarkerArray()
    out.markers.append(keypoint_spheres(header, keypoints, voxel_size, style))
    for i, c in enumerate(colors):
        label = _marker(header, LABEL_NS, i, Marker.TEXT_VIEW_FACING)
        if not style.show_labels:
            label.action = Marker.DELETE
        label.color = ColorRGBA(r=c[0], g=c[1], b=c[2], a=c[3])
        label.text = str(i)
        out.markers.append(label)
    _place_labels(out.markers[1:], keypoints, voxel_size, style)
    return out


def _place_labels(labels: list[Marker], keypoints: np.ndarray, voxel_size: float, style: MarkerStyle) -> None:
    """Each label just above its keypoint's sphere."""
    diameter = _sphere_diameter(voxel_size, style)
    text_height = float(style.text_scale if style.text_scale > 0 else diameter)
    lift = 0.75 * diameter + 0.5 * text_height
    for label, (x, y, z) in zip(labels, keypoints.tolist()):
        label.pose.position = Point(x=x, y=y, z=z + lift)
        label.scale.z = text_height


class KeypointMarkers:
    """:func:`keypoint_markers` for a stream of clouds: the markers are built once per keypoint count and style,
    then only their stamp, frame, positions and sizes change (building dozens of markers anew per cloud is a
    visible share of the node's cloud callback). Not thread-safe: one instance per publishing callback."""

    def __init__(self):
        self._key = None
        self._header = Header()  # shared by every marker of the array
        self._array: MarkerArray | None = None

    def __call__(self, header, keypoints: np.ndarray, voxel_size: float, style: MarkerStyle) -> MarkerArray:
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
        self._header.stamp, self._header.frame_id = header.stamp, header.frame_id
        key = (len(keypoints), dataclasses.astuple(style))
        if key != self._key:  # built with this cloud's positions and sizes already
            self._array, self._key = keypoint_markers(self._header, keypoints, voxel_size, style), key
            return self._array
        spheres = self._array.markers[0]
        spheres.scale.x = spheres.scale.y = spheres.scale.z = _sphere_diameter(voxel_size, style)
        spheres.points = to_points(keypoints)
        _place_labels(self._array.markers[1:], keypoints, voxel_size, style)
        return self._array


def goal_markers(header, goal_points: np.ndarray, goal_keypoints: np.ndarray, voxel_size: float,
                 style: MarkerStyle) -> bytes:
    """The goal as a CUBE_LIST of voxels (one cube per occupied voxel) plus its rotated keypoints, as a
    serialized visualization_msgs/MarkerArray (publish it as is).

    A goal has tens of thousands of voxels: one Python ``Point`` each costs interpreter time per voxel and
    starved the service (``bench/bench_perception.py`` times the goal). The voxel centres go into the serialized message straight from numpy instead
    (:func:`serialize_with_points`).
    """
    cubes = _marker(header, GOAL_NS, 0, Marker.CUBE_LIST)
    cubes.scale.x = cubes.scale.y = cubes.scale.z = float(voxel_size)
    r, g, b, a = (list(style.goal_color) + [1.0] * 4)[:4]
    cubes.color = ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))
    spheres = keypoint_spheres(header, goal_keypoints, voxel_size, style, ns=GOAL_KEYPOINT_NS)
    out = MarkerArray()
    out.markers = [cubes, spheres]
    return serialize_with_points(out, cubes, goal_points)


# Two coordinate triples no real point has (tiny subnormal-range doubles), to find where a marker's points
# go in its serialized form.
_MARK_A = (1.2345678901234567e-301, -2.3456789012345678e-302, 3.4567890123456789e-303)
_MARK_B = (-4.567890123456789e-304, 5.678901234567891e-305, -6.789012345678912e-306)


_splice_checked: dict = {}  # message type -> whether splicing reproduced it (checked once per process)


def serialize_with_points(message, marker, points: np.ndarray) -> bytes:
    """Serialize ``message`` (containing ``marker``) with ``points`` ((N, 3) float64) as ``marker.points``.

    The message is serialized with one and with two marker points; where the two marker triples land gives the
    byte order, the first point's offset and the sequence length just before it. The result is the one-point
    serialization with the length replaced and the points' bytes (from numpy) in place of the one point.
    Inserting whole 24-byte points keeps every later field's alignment (CDR aligns to at most 8 bytes). The
    first use in a process checks the result against a deserialization; if the layout is not what is expected
    the message is built the ordinary way, so the result is always a valid serialization.
    """
    from rclpy.serialization import serialize_message

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    kind = type(message)
    if len(points) >= 2 and _splice_checked.get(kind, True):
        marker.points = [Point(x=_MARK_A[0], y=_MARK_A[1], z=_MARK_A[2])]
        one = serialize_message(message)
        marker.points.append(Point(x=_MARK_B[0], y=_MARK_B[1], z=_MARK_B[2]))
        two = serialize_message(message)
        marker.points = []
        layout = _point_sequence_layout(one, two)
        if layout is not None and kind not in _splice_checked:
            _splice_checked[kind] = _splice_reproduces(message, marker, one, layout)
        if layout is not None and _splice_checked[kind]:
            return _splice(one, layout, points)
        _splice_checked[kind] = False
    marker.points = to_points(points)  # the ordinary way
    data = serialize_message(message)
    marker.points = []
    return data


def _splice(one: bytes, layout, points: np.ndarray) -> bytes:
    order, length_at, first_at = layout
    body = np.ascontiguousarray(points, dtype=np.dtype(np.float64).newbyteorder(order)).tobytes()
    return b"".join((one[:length_at], struct.pack(order + "I", len(points)), one[length_at + 4:first_at], body,
                     one[first_at + 24:]))


def _point_sequence_layout(one: bytes, two: bytes):
    """(byte order, offset of the sequence length, offset of the first point) from serializations with one and
    two marker points, or None. Padding bytes hold whatever was in memory, so only the values are compared."""
    for order in "<>":
        a, b = struct.pack(order + "3d", *_MARK_A), struct.pack(order + "3d", *_MARK_B)
        first = one.find(a)
        if first < 0 or one.count(a) != 1 or two[first:first + 48] != a + b or len(two) != len(one) + 24:
            continue
        for length_at in (first - 4, first - 8):  # right before the points, or before 4 bytes of padding
            if length_at >= 0 and struct.unpack_from(order + "I", one, length_at)[0] == 1 \
                    and struct.unpack_from(order + "I", two, length_at)[0] == 2:
                return order, length_at, first
    return None


def _splice_reproduces(message, marker, one: bytes, layout) -> bool:
    """Whether splicing three points into ``one`` deserializes to ``message`` with those points."""
    from rclpy.serialization import deserialize_message, serialize_message

    probe = np.array([[1.5, -2.25, 3.125], [4.0, 5.5, -6.75], [7.0, 8.0, 9.0]])
    try:
        got = deserialize_message(_splice(one, layout, probe), type(message))
    except Exception:
        return False
    marker.points = to_points(probe)
    expected = deserialize_message(serialize_message(message), type(message))  # float32 fields rounded alike
    marker.points = []
    return bool(got == expected)


def keypoint_poses(header, keypoints: np.ndarray) -> PoseArray:
    """The keypoints as poses (identity orientation) in the input frame."""
    out = PoseArray()
    out.header = header
    poses = []
    for x, y, z in np.asarray(keypoints, dtype=np.float64).reshape(-1, 3).tolist():
        pose = Pose()
        pose.position = Point(x=x, y=y, z=z)
        pose.orientation.w = 1.0
        poses.append(pose)
    out.poses = poses
    return out


class NotFinite(ValueError):
    """A result with NaN or infinite numbers (coordinates beyond what the message's types hold)."""

    category = "not finite"  # /diagnostics' refusal counts


FLOAT32_KEEPS = 2.0 ** 23 / 100
"""float32 keeps a coordinate to 1/100 of a voxel up to this many voxels from the frame's origin."""


def fill_pose_response(response, pose, offset) -> None:
    """The object's pose (:class:`kp_core.pipeline.ObjectPose`, moved by ``offset``) and its yaw spread into a
    RotateGoal response.

    Raises:
        NotFinite: the pose is not finite.
    """
    position = np.asarray(pose.position, dtype=np.float64) + offset
    if not (np.all(np.isfinite(position)) and math.isfinite(pose.yaw) and math.isfinite(pose.yaw_spread)):
        raise NotFinite("the object's pose would not be finite; nothing is answered")
    response.object_pose = pose_message(position, pose.yaw)
    response.yaw_spread = float(pose.yaw_spread)


def fill_goal_response(response, header, goal, float64: bool = False) -> None:
    """Write a :class:`kp_core.pipeline.Goal` into a RotateGoal response (success=True).

    ``goal_cloud`` has float32 x, y, z, or float64 when ``float64`` (the input was float64) or when float32 would
    not keep the goal to 1/100 of a voxel (far from the frame's origin). ``rotation_axis`` (when the service
    type has it) is the goal's ``axis_point``, else the grid origin (older pipelines turn about it).

    Raises:
        NotFinite: some number of the answer is NaN or infinite as the message would carry it.
    """
    points = np.asarray(goal.points, dtype=np.float64).reshape(-1, 3)
    voxel_size = float(goal.voxel_size)
    if not float64 and len(points) and np.abs(points).max() > voxel_size * FLOAT32_KEEPS:
        float64 = True
    dtype = np.float64 if float64 else np.float32
    origin = np.asarray(goal.grid_origin, dtype=np.float64).reshape(3)
    axis = np.asarray(getattr(goal, "axis_point", None) if getattr(goal, "axis_point", None) is not None
                      else origin, dtype=np.float64).reshape(3)
    keypoints = np.asarray(goal.keypoints, dtype=np.float64).reshape(-1, 3)
    probabilities = goal.probabilities
    checks = {"goal points": points.astype(dtype), "keypoints": keypoints, "grid origin": origin,
              "rotation axis": axis, "voxel size": np.float32(voxel_size)}
    if probabilities is not None:
        checks["occupancy"] = np.asarray(probabilities, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = [name for name, values in checks.items() if not np.all(np.isfinite(values))]
    if bad:
        raise NotFinite(f"the goal's {', '.join(bad)} would not be finite (coordinates beyond what the message "
                        "types hold); nothing is answered")
    response.success = True
    response.header = header
    response.goal_cloud = make_xyz_cloud(points, header=header, dtype=dtype)
    response.keypoints = to_points(keypoints)
    response.voxel_size = voxel_size
    response.grid_origin = Point(x=float(origin[0]), y=float(origin[1]), z=float(origin[2]))
    if hasattr(response, "rotation_axis"):
        response.rotation_axis = Point(x=float(axis[0]), y=float(axis[1]), z=float(axis[2]))
    occupancy = array.array("f")
    if probabilities is not None:
        occupancy.frombytes(np.ascontiguousarray(probabilities, dtype=np.float32).tobytes())
    response.occupancy = occupancy
