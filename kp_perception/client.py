"""kp-rotate-goal: ask kp_perception_node for the object rotated about its vertical axis.

    kp-rotate-goal 90 --degrees                 # the latest cloud the node received on its topic
    kp-rotate-goal 1.2 --cloud mug.ply --frame-id camera_link --out /tmp/goal --occupancy

Prints a summary and saves the goal cloud as <out>.ply and <out>.npy ((M, 3) metres in the response's frame;
float32, or float64 when the node answered in float64, e.g. for a cloud far from its frame's origin), the rotated keypoints as <out>_keypoints.npy and, with --occupancy, the 64^3
probabilities as <out>_occupancy.npy. Exit status: 0 success, 1 the node refused (its message is printed),
2 no answer (service not found or timed out), 3 bad arguments or input file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

DEFAULT_SERVICE = "/kp_perception_node/rotate_goal"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kp-rotate-goal", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("angle", type=float, help="rotation about the object's vertical axis (radians, or degrees with --degrees)")
    parser.add_argument("--degrees", action="store_true", help="the angle is in degrees")
    parser.add_argument("--cloud", type=Path, help="send this cloud (.npy (N, 3) or .ply/.pcd/.xyz via trimesh) "
                        "instead of using the node's latest")
    parser.add_argument("--frame-id", default="object", help="frame of --cloud (default: object)")
    parser.add_argument("--service", default=DEFAULT_SERVICE, help=f"service name (default {DEFAULT_SERVICE})")
    parser.add_argument("--occupancy", action="store_true", help="also fetch and save the 64^3 probabilities")
    parser.add_argument("--out", type=Path, default=Path("goal"), help="output path stem (default ./goal)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the service and the reply")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def load_cloud_file(path: Path) -> np.ndarray:
    """(N, 3) points from .npy (its float32 or float64 kept) or a point/mesh file trimesh reads (its vertices)."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        import trimesh

        loaded = trimesh.load(path, process=False)
        points = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))))
    points = np.asarray(points)
    if points.dtype not in (np.float32, np.float64):
        points = points.astype(np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{path}: expected (N, 3) points, got shape {points.shape}")
    return points


def summarize(response) -> tuple[dict, np.ndarray]:
    """A printable summary of a RotateGoal response, and its goal points ((M, 3))."""
    from .cloud_io import read_xyz

    goal = read_xyz(response.goal_cloud)  # float32, or float64 when the node answered in float64
    summary = {
        "success": bool(response.success),
        "message": response.message,
        "frame_id": response.header.frame_id,
        "stamp": f"{response.header.stamp.sec}.{response.header.stamp.nanosec:09d}",
        "goal_voxels": int(len(goal)),
        "voxel_size_m": float(response.voxel_size),
        "grid_origin": [response.grid_origin.x, response.grid_origin.y, response.grid_origin.z],
        "keypoints": len(response.keypoints),
    }
    if len(goal):
        summary["goal_min"] = goal.min(0).round(4).tolist()
        summary["goal_max"] = goal.max(0).round(4).tolist()
        summary["goal_centroid"] = goal.mean(0).round(4).tolist()
    return summary, goal


def save_outputs(response, goal: np.ndarray, stem: Path) -> list[Path]:
    from .cloud_io import write_ply

    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [write_ply(stem.with_name(stem.name + ".ply"), goal)]
    npy = stem.with_name(stem.name + ".npy")
    np.save(npy, goal)
    kp = stem.with_name(stem.name + "_keypoints.npy")
    np.save(kp, np.array([[p.x, p.y, p.z] for p in response.keypoints], dtype=np.float32).reshape(-1, 3))
    written += [npy, kp]
    if len(response.occupancy):
        occ = stem.with_name(stem.name + "_occupancy.npy")
        np.save(occ, np.asarray(response.occupancy, dtype=np.float32).reshape(64, 64, 64))
        written.append(occ)
    return written


def main(argv=None) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else [sys.argv[0], *argv]
    args = parse_args(remove_ros_args(argv)[1:])
    angle = math.radians(args.angle) if args.degrees else args.angle
    try:
        cloud_points = load_cloud_file(args.cloud) if args.cloud else None
    except (ValueError, OSError) as err:
        print(f"kp-rotate-goal: {err}", file=sys.stderr)
        return 3

    from kp_interfaces.srv import RotateGoal

    from .cloud_io import make_xyz_cloud

    rclpy.init(args=argv)
    node = rclpy.create_node("kp_rotate_goal_client")
    try:
        client = node.create_client(RotateGoal, args.service)
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"kp-rotate-goal: service {args.service} not available after {args.timeout:g} s "
                  "(is kp_perception_node running, on this ROS_DOMAIN_ID?)", file=sys.stderr)
            return 2
        request = RotateGoal.Request(angle=float(angle), include_occupancy=args.occupancy)
        if cloud_points is not None:
            # In the file's own precision: float64 coordinates (a map frame far from its origin) stay float64.
            request.cloud = make_xyz_cloud(cloud_points, dtype=np.float64 if cloud_points.dtype == np.float64 else np.float32)
            request.cloud.header.frame_id = args.frame_id
            request.cloud.header.stamp = node.get_clock().now().to_msg()
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done() or future.result() is None:
            print(f"kp-rotate-goal: no reply from {args.service} within {args.timeout:g} s", file=sys.stderr)
            return 2
        response = future.result()
        summary, goal = summarize(response)
        if response.success:
            summary["saved"] = [str(p) for p in save_outputs(response, goal, args.out)]
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            for key, value in summary.items():
                print(f"{key:>14}: {value}")
        return 0 if response.success else 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
