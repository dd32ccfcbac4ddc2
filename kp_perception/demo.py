"""kp-demo: the perception node on a simulated depth sensor looking at the mug, end to end.

Starts kp_perception_node (a subprocess on a private, localhost-only ROS domain), publishes the built-in
mug at an arbitrary pose on a z-up "world" frame at 10 Hz, first whole, then as a single-view partial
cloud (the points a sensor at one viewpoint sees), both with noise. For each it waits for the keypoints,
calls the rotate_goal service at several angles and scores each goal against ground truth: the whole mug
rotated by the same angle about its vertical axis through its centre, voxelized in the goal's grid (IoU).
Writes PNG snapshots (cloud + keypoints, goal voxels + rotated keypoints, IoU against the angle) and a
results.json into --out.

    kp-demo                                   # the shipped model, results in ./kp_demo
    kp-demo --model runs/x/best.safetensors --angles 0 45 90 180 --out /tmp/demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .pipeline import default_model_path, rotate_about_vertical, voxel_iou
from .process import RosProcess, node_command, pick_domain_id, ros_env, use_local_ros

WORLD = "world"
TOPIC = "/points"  # the node's default topic, as config/kp_perception.rviz shows


@dataclass
class Scene:
    """The mug (solid samples, metres, world frame) at its pose, and the sensor position."""

    solid: np.ndarray  # (N, 3) every solid sample of the posed mug (ground truth)
    center: np.ndarray  # (3,) the mug's centre: its bounding-box centre in its own (unrotated) frame
    size: float  # max(diameter about the vertical axis through the centre, height)
    sensor: np.ndarray  # (3,) viewpoint of the partial cloud


def make_scene(seed: int = 0) -> Scene:
    """The built-in mug in metres at a random yaw on a table in front of a sensor (world frame, z up)."""
    from kp_training.shapes import load_shape

    shape = load_shape("mug")
    norm = shape.normalization
    local = shape.points.numpy().astype(np.float64) * norm["mesh_units_per_grid_unit"]  # centred, metres
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-math.pi, math.pi)
    position = np.array([0.55, -0.15, 0.75]) + rng.uniform(-0.05, 0.05, size=3)
    solid = rotate_about_vertical(local, yaw, np.zeros(3)) + position
    # The mug's own centre (its canonical bounding-box centre, which the training shapes are centred on).
    center = position
    radius = np.hypot(*(solid[:, :2] - center[:2]).T).max()
    size = float(2 * max(radius, np.abs(solid[:, 2] - center[2]).max()))
    return Scene(solid=solid, center=center, size=size, sensor=np.array([0.0, 0.0, 1.05]))


def visible_points(points: np.ndarray, viewpoint: np.ndarray, pixel_rad: float = 0.004, depth_tol: float = 0.002) -> np.ndarray:
    """The points a range sensor at ``viewpoint`` sees: per angular pixel, those within ``depth_tol`` of the nearest."""
    rays = points - viewpoint
    rng_ = np.linalg.norm(rays, axis=1)
    azimuth = np.arctan2(rays[:, 1], rays[:, 0])
    elevation = np.arcsin(np.clip(rays[:, 2] / rng_, -1, 1))
    u = np.floor(azimuth / pixel_rad).astype(np.int64)
    v = np.floor(elevation / pixel_rad).astype(np.int64)
    pixel = (u - u.min()) * (v.max() - v.min() + 1) + (v - v.min())
    order = np.lexsort((rng_, pixel))
    first = np.ones(len(order), bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    nearest = np.empty(pixel.max() + 1)
    nearest[pixel[order][first]] = rng_[order][first]
    return points[rng_ <= nearest[pixel] + depth_tol]


def sensor_clouds(scene: Scene, noise: float, max_points: int, seed: int) -> dict[str, np.ndarray]:
    """Noisy "whole" (every solid sample, subsampled) and "partial" (one view) clouds."""
    rng = np.random.default_rng(seed)
    whole = scene.solid[rng.choice(len(scene.solid), size=min(max_points, len(scene.solid)), replace=False)]
    partial = visible_points(scene.solid, scene.sensor)
    if len(partial) > max_points:
        partial = partial[rng.choice(len(partial), size=max_points, replace=False)]
    return {name: pts + rng.normal(scale=noise, size=pts.shape) for name, pts in (("whole", whole), ("partial", partial))}


class SimSensor:
    """A node publishing the current cloud at a fixed rate, collecting keypoint markers, calling the service."""

    def __init__(self, domain_id: int, rate_hz: float):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from kp_interfaces.srv import RotateGoal

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("kp_demo_sensor", context=self.context)
        self.pub = self.node.create_publisher(PointCloud2, TOPIC, 2)
        self.client = self.node.create_client(RotateGoal, "/kp_perception_node/rotate_goal")
        self.RotateGoal = RotateGoal
        self.lock = threading.Lock()
        self.cloud = None
        self.markers = []
        self.node.create_subscription(MarkerArray, "/kp_perception_node/keypoint_markers", self._on_markers, 5)
        self.node.create_timer(1.0 / rate_hz, self._tick)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def show(self, points: np.ndarray) -> float:
        """Start publishing ``points``; returns the time (s) from which markers belong to it."""
        from .cloud_io import make_xyz_cloud

        msg = make_xyz_cloud(points.astype(np.float32))
        msg.header.frame_id = WORLD
        with self.lock:
            self.cloud = msg
        return time.time()

    def _tick(self) -> None:
        with self.lock:
            msg = self.cloud
        if msg is not None:
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.pub.publish(msg)

    def _on_markers(self, msg) -> None:
        with self.lock:
            self.markers.append(msg)
            del self.markers[:-5]

    def keypoints_after(self, since: float, timeout: float) -> np.ndarray:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for msg in reversed(self.markers):
                    stamp = msg.markers[0].header.stamp
                    if stamp.sec + stamp.nanosec * 1e-9 >= since:
                        return np.array([[p.x, p.y, p.z] for p in msg.markers[0].points])
            time.sleep(0.05)
        raise TimeoutError(f"no keypoint markers from the node within {timeout:g} s")

    def rotate_goal(self, angle: float, timeout: float):
        response = self.client.call(self.RotateGoal.Request(angle=float(angle)), timeout_sec=timeout)
        if response is None:
            raise TimeoutError(f"rotate_goal did not answer within {timeout:g} s")
        return response

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def snapshot(path: Path, title: str, cloud: np.ndarray, keypoints: np.ndarray, goals: list[dict], center: np.ndarray) -> None:
    """One PNG: the input cloud with its keypoints, then each goal's voxels with its rotated keypoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(goals)
    fig = plt.figure(figsize=(4.2 * panels, 4.4))
    colors = plt.get_cmap("hsv")(np.linspace(0, 1, len(keypoints), endpoint=False))
    rng = np.random.default_rng(0)

    def scatter(ax, pts, **kw):
        if len(pts) > 6000:
            pts = pts[rng.choice(len(pts), 6000, replace=False)]
        if len(pts):
            ax.scatter(*(pts - center).T, **kw)

    span = max(np.abs(cloud - center).max(), 1e-3) * 1.1
    axes = []
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    scatter(ax, cloud, s=0.4, c="0.55", alpha=0.5, depthshade=False)
    ax.scatter(*(keypoints - center).T, s=28, c=colors, edgecolors="k", linewidths=0.4, depthshade=False)
    ax.set_title(f"{title}: cloud ({len(cloud)} pts) + keypoints", fontsize=9)
    axes.append(ax)
    for i, g in enumerate(goals):
        ax = fig.add_subplot(1, panels, 2 + i, projection="3d")
        scatter(ax, g["truth"], s=0.3, c="tab:green", alpha=0.15, depthshade=False)
        scatter(ax, g["points"], s=0.6, c="tab:blue", alpha=0.35, depthshade=False)
        ax.scatter(*(g["keypoints"] - center).T, s=28, c=colors, edgecolors="k", linewidths=0.4, depthshade=False)
        ax.set_title(f"goal {math.degrees(g['angle']):.0f} deg: IoU {g['iou']:.3f}\n(blue: prediction, green: truth)", fontsize=9)
        axes.append(ax)
    for ax in axes:
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_zlim(-span, span)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=25, azim=-60)
        ax.tick_params(labelsize=6)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def iou_plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, res in results.items():
        ax.plot([g["angle_deg"] for g in res["goals"]], [g["iou"] for g in res["goals"]], "o-", label=name)
    ax.set_xlabel("rotation about the vertical axis (deg)")
    ax.set_ylabel("goal IoU vs. ground truth")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kp-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"checkpoint (default: the shipped {default_model_path().name})")
    parser.add_argument("--out", type=Path, default=Path("kp_demo"), help="output folder (default ./kp_demo)")
    parser.add_argument("--angles", type=float, nargs="+", default=[0, 45, 90, 180, 270], help="goal angles, degrees")
    parser.add_argument("--scenarios", nargs="+", default=["whole", "partial"], choices=["whole", "partial"])
    parser.add_argument("--noise", type=float, default=0.001, help="sensor noise, metres (default 0.001)")
    parser.add_argument("--points", type=int, default=120000, help="points per cloud at most (default 120000: enough to fill the whole mug's voxels)")
    parser.add_argument("--rate", type=float, default=10.0, help="sensor rate, Hz (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="pose and noise seed")
    parser.add_argument("--device", default="cpu", help="the node's torch device (default cpu)")
    parser.add_argument("--auto-size", action="store_true", help="let the node size the grid from each cloud "
                        "instead of telling it the mug's size (object_size)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node at each step")
    parser.add_argument("--verbose", action="store_true", help="echo the node's log")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model = Path(args.model) if args.model else default_model_path()
    if not (model.exists() or model.with_suffix(".json").exists()):
        print(f"kp-demo: no model at {model}; train one (kp-train) and pass --model", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(args.seed)
    clouds = sensor_clouds(scene, args.noise, args.points, args.seed)

    domain = pick_domain_id()
    home = args.out / "ros_home"
    use_local_ros(domain, home)
    params = {"model_path": str(model.resolve()), "input_topic": TOPIC, "device": args.device,
              "object_size": 0.0 if args.auto_size else round(scene.size, 6)}
    print(f"kp-demo: starting kp_perception_node (ROS_DOMAIN_ID={domain}, localhost only) with {model}")
    node = RosProcess(node_command(params=params), ros_env(domain, home), echo=args.verbose)
    sensor = None
    results: dict = {}
    try:
        if not node.wait_for_line("ready", args.timeout):
            print(f"kp-demo: the node did not start:\n{node.output}", file=sys.stderr)
            return 1
        sensor = SimSensor(domain, args.rate)
        if not sensor.client.wait_for_service(timeout_sec=args.timeout):
            print("kp-demo: rotate_goal service not found", file=sys.stderr)
            return 1
        for name in args.scenarios:
            cloud = clouds[name]
            since = sensor.show(cloud)
            keypoints = sensor.keypoints_after(since, args.timeout)
            goals = []
            for deg in args.angles:
                angle = math.radians(deg)
                t0 = time.perf_counter()
                response = sensor.rotate_goal(angle, args.timeout)
                latency = time.perf_counter() - t0
                if not response.success:
                    print(f"kp-demo: {name} {deg:g} deg refused: {response.message}", file=sys.stderr)
                    return 1
                from kp_training.geometry import MetricGridMap

                from .cloud_io import read_xyz

                o = response.grid_origin
                grid = MetricGridMap(center=[o.x, o.y, o.z], half_extent=response.voxel_size * 32)
                points = read_xyz(response.goal_cloud, dtype=np.float64)
                truth = rotate_about_vertical(scene.solid, angle, scene.center)
                iou = voxel_iou(points, truth, grid)
                goals.append({"angle": angle, "angle_deg": deg, "iou": iou, "voxels": len(points), "points": points,
                              "truth": truth, "latency_ms": latency * 1000,
                              "keypoints": np.array([[p.x, p.y, p.z] for p in response.keypoints])})
                print(f"  {name:>7} {deg:6.1f} deg: IoU {iou:.3f}  ({len(points)} voxels, {latency * 1000:.0f} ms)")
            # Context for the scores: the input cloud itself against the unrotated truth, in the same grid
            # (what an exact copy of the input would score at 0 deg; low for a partial view).
            reference = voxel_iou(cloud, scene.solid, grid)
            print(f"  {name:>7} input cloud vs truth at 0 deg: IoU {reference:.3f}")
            shown = [g for g in goals if g["angle_deg"] in (0, 90, 180)] or goals[:3]
            png = args.out / f"{name}.png"
            snapshot(png, name, cloud, keypoints, shown, scene.center)
            results[name] = {
                "cloud_points": len(cloud),
                "mean_iou": float(np.mean([g["iou"] for g in goals])),
                "input_vs_truth_iou": reference,
                "goals": [{k: g[k] for k in ("angle_deg", "iou", "voxels", "latency_ms")} for g in goals],
                "snapshot": str(png),
            }
        if all(g["voxels"] == 0 for res in results.values() for g in res["goals"]):
            print("kp-demo: note: the model predicted no occupied voxel at all: is it trained (see its .json metrics)?")
        iou_plot(args.out / "iou.png", results)
        summary = {"model": str(model), "object_size_m": scene.size, "mug_center": scene.center.tolist(),
                   "noise_m": args.noise, "object_size_param": params["object_size"], "scenarios": results}
        (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        for name, res in results.items():
            print(f"kp-demo: {name}: mean goal IoU {res['mean_iou']:.3f} over {len(res['goals'])} angles -> {res['snapshot']}")
        print(f"kp-demo: wrote {args.out / 'results.json'} and {args.out / 'iou.png'}")
        return 0
    except (TimeoutError, KeyboardInterrupt) as err:
        print(f"kp-demo: stopped: {err or 'interrupted'}\n{node.output[-2000:]}", file=sys.stderr)
        return 1
    finally:
        if sensor is not None:
            sensor.close()
        code = node.stop()
        if code not in (0, None) and args.verbose:
            print(f"kp-demo: node exited with {code}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
