"""Building the node's ROS messages (markers, poses, service response) from pipeline results."""

from __future__ import annotations

import array
import colorsys
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseArray
from std_msgs.msg import ColorRGBA
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


def keypoint_markers(header, keypoints: np.ndarray, voxel_size: float, style: MarkerStyle) -> MarkerArray:
    """A SPHERE_LIST of the keypoints (one colour each) and a text label per keypoint."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    diameter = style.scale if style.scale > 0 else 3.0 * voxel_size
    colors = keypoint_colors(len(keypoints), style)
    spheres = _marker(header, KEYPOINT_NS, 0, Marker.SPHERE_LIST)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = float(diameter)
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=float(style.alpha))
    spheres.points = to_points(keypoints)
    spheres.colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in colors]
    out = MarkerArray()
    out.markers.append(spheres)
    text_height = style.text_scale if style.text_scale > 0 else diameter
    for i, (p, c) in enumerate(zip(keypoints.tolist(), colors)):
        label = _marker(header, LABEL_NS, i, Marker.TEXT_VIEW_FACING)
        if not style.show_labels:
            label.action = Marker.DELETE
        label.pose.position = Point(x=p[0], y=p[1], z=p[2] + 0.75 * diameter + 0.5 * text_height)
        label.scale.z = float(text_height)
        label.color = ColorRGBA(r=c[0], g=c[1], b=c[2], a=c[3])
        label.text = str(i)
        out.markers.append(label)
    return out


def goal_markers(header, goal_points: np.ndarray, goal_keypoints: np.ndarray, voxel_size: float,
                 style: MarkerStyle) -> MarkerArray:
    """The goal as a CUBE_LIST of voxels (one cube per occupied voxel) plus its rotated keypoints."""
    cubes = _marker(header, GOAL_NS, 0, Marker.CUBE_LIST)
    cubes.scale.x = cubes.scale.y = cubes.scale.z = float(voxel_size)
    r, g, b, a = (list(style.goal_color) + [1.0] * 4)[:4]
    cubes.color = ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))
    cubes.points = to_points(goal_points)
    spheres = keypoint_markers(header, goal_keypoints, voxel_size, style).markers[0]
    spheres.ns = GOAL_KEYPOINT_NS
    out = MarkerArray()
    out.markers = [cubes, spheres]
    return out


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


def fill_goal_response(response, header, goal) -> None:
    """Write a :class:`kp_perception.pipeline.Goal` into a RotateGoal response (success=True)."""
    response.success = True
    response.header = header
    response.goal_cloud = make_xyz_cloud(goal.points, header=header)
    response.keypoints = to_points(goal.keypoints)
    response.voxel_size = float(goal.voxel_size)
    ox, oy, oz = (float(v) for v in goal.grid_origin)
    response.grid_origin = Point(x=ox, y=oy, z=oz)
    occupancy = array.array("f")
    if goal.probabilities is not None:
        occupancy.frombytes(np.ascontiguousarray(goal.probabilities, dtype=np.float32).tobytes())
    response.occupancy = occupancy
