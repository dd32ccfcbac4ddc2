"""Benchmark kp_perception_node: cloud -> markers latency, service round trips, resident memory.

    .venv/bin/python bench/bench_perception.py                      # the shipped model
    .venv/bin/python bench/bench_perception.py --model runs/x/best.safetensors --points 50000
    .venv/bin/python bench/bench_perception.py --untrained           # same cost, no trained model needed

The node runs as a subprocess on a private, localhost-only ROS domain. Cloud -> markers: a 50k-point
cloud of the mug (whole, noisy) is published with the current time as its stamp; the latency is the
arrival time of the keypoint markers (which carry that stamp) minus the stamp, one cloud at a time.
Service: round trips of rotate_goal on the latest cloud, and with a 50k-point cloud in the request.
Memory: the node's VmRSS / VmHWM from /proc. Targets (default model, this 2-core CPU): p50 < 50 ms
cloud -> markers, p50 < 100 ms service. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_perception.demo import make_scene  # noqa: E402
from kp_perception.pipeline import default_model_path  # noqa: E402
from kp_perception.process import RosProcess, node_command, pick_domain_id, ros_env, use_local_ros  # noqa: E402

TOPIC = "/kp_bench/points"


def untrained_model(folder: Path) -> Path:
    """The "fast" preset with random weights, its output bias set so a mug decodes to ~13% occupied voxels."""
    import torch

    from kp_training.checkpoint import save_checkpoint
    from kp_training.models import build_model, model_config
    from kp_training.shapes import load_shape
    from kp_training.voxelize import voxelize

    torch.manual_seed(0)
    model = build_model(model_config("fast")).eval()
    with torch.no_grad():
        logits = model(voxelize(load_shape("mug").points[None]))["logits"].flatten()
        model.decoder.out.bias -= torch.quantile(logits[::7], 0.87)
    return save_checkpoint(folder / "untrained_fast", model, {})


def memory_kb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def percentiles(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "max": float(a.max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--untrained", action="store_true", help="benchmark the fast architecture with random weights")
    parser.add_argument("--points", type=int, default=50000)
    parser.add_argument("--clouds", type=int, default=60, help="clouds timed (after 5 warm-up)")
    parser.add_argument("--calls", type=int, default=40, help="service calls timed per kind (after 3 warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-threads", type=int, default=None, help="the node's num_threads (default: its params file's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from kp_interfaces.srv import RotateGoal
    from kp_perception.cloud_io import make_xyz_cloud

    tmp = Path(tempfile.mkdtemp(prefix="kp_bench_"))
    model = untrained_model(tmp) if args.untrained else Path(args.model) if args.model else default_model_path()
    if not model.exists():
        print(f"bench: no model at {model}; pass --model or --untrained", file=sys.stderr)
        return 2
    scene = make_scene(0)
    rng = np.random.default_rng(0)
    pts = scene.solid[rng.choice(len(scene.solid), args.points, replace=len(scene.solid) < args.points)]
    pts = pts + rng.normal(scale=0.001, size=pts.shape)

    domain = pick_domain_id()
    use_local_ros(domain, tmp / "ros")
    node = RosProcess(node_command(params={"model_path": str(model), "input_topic": TOPIC, "device": args.device,
                                           "object_size": round(scene.size, 6), "qos.reliability": "reliable",
                                           **({} if args.num_threads is None else {"num_threads": args.num_threads})}),
                      ros_env(domain, tmp / "ros"))
    ctx = rclpy.Context()
    try:
        if not node.wait_for_line("ready", 120):
            print(node.output, file=sys.stderr)
            return 1
        rss_idle = memory_kb(node.proc.pid)
        rclpy.init(context=ctx, domain_id=domain)
        probe = rclpy.create_node("kp_bench", context=ctx)
        arrived = {}
        cond = threading.Condition()

        def on_markers(msg):
            now = time.time()
            s = msg.markers[0].header.stamp
            with cond:
                arrived[(s.sec, s.nanosec)] = now
                cond.notify_all()

        probe.create_subscription(MarkerArray, "/kp_perception_node/keypoint_markers", on_markers, 10)
        pub = probe.create_publisher(PointCloud2, TOPIC, 10)
        client = probe.create_client(RotateGoal, "/kp_perception_node/rotate_goal")
        executor = MultiThreadedExecutor(num_threads=2, context=ctx)
        executor.add_node(probe)
        threading.Thread(target=executor.spin, daemon=True).start()
        assert client.wait_for_service(timeout_sec=60), "service not found"
        cloud = make_xyz_cloud(pts.astype(np.float32))
        cloud.header.frame_id = "world"

        # Cloud -> markers, one cloud in flight at a time.
        latencies = []
        deadline = time.monotonic() + 60
        while not arrived and time.monotonic() < deadline:  # wait until the subscription is matched
            cloud.header.stamp = probe.get_clock().now().to_msg()
            pub.publish(cloud)
            time.sleep(0.3)
        for i in range(args.clouds + 5):
            t = time.time()
            sec, nsec = int(t), int((t - int(t)) * 1e9)
            cloud.header.stamp.sec, cloud.header.stamp.nanosec = sec, nsec
            pub.publish(cloud)
            with cond:
                if not cond.wait_for(lambda: (sec, nsec) in arrived, timeout=10):
                    print(f"bench: cloud {i} got no markers in 10 s", file=sys.stderr)
                    continue
                latency = arrived[(sec, nsec)] - (sec + nsec * 1e-9)
            if i >= 5:
                latencies.append(latency * 1000)
            time.sleep(0.02)

        def round_trips(make_request, n):
            times = []
            for i in range(n + 3):
                request = make_request(i)
                t0 = time.perf_counter()
                response = client.call(request, timeout_sec=30)
                dt = (time.perf_counter() - t0) * 1000
                assert response is not None and response.success, getattr(response, "message", "timeout")
                if i >= 3:
                    times.append(dt)
                time.sleep(0.05)
            return times, response

        latest, response = round_trips(lambda i: RotateGoal.Request(angle=0.1 * i), args.calls)
        goal_voxels = response.goal_cloud.width
        with_cloud, _ = round_trips(lambda i: RotateGoal.Request(angle=0.1 * i, cloud=cloud), max(args.calls // 2, 5))
        occupancy, _ = round_trips(lambda i: RotateGoal.Request(angle=0.1 * i, include_occupancy=True), max(args.calls // 2, 5))
        rss = memory_kb(node.proc.pid)
        executor.shutdown(timeout_sec=2)
        probe.destroy_node()
    finally:
        if rclpy.ok(context=ctx):
            rclpy.shutdown(context=ctx)
        node.stop()
        summary = [line for line in node.lines if "stopping:" in line]

    figures = {
        "model": str(model) + (" (untrained weights)" if args.untrained else ""),
        "points": args.points,
        "cpu_cores": os.cpu_count(),
        "node_num_threads": args.num_threads if args.num_threads is not None else "params file default",
        "cloud_to_markers_ms": percentiles(latencies),
        "service_latest_cloud_ms": percentiles(latest),
        "service_with_50k_cloud_ms": percentiles(with_cloud),
        "service_latest_with_occupancy_ms": percentiles(occupancy),
        "goal_voxels": int(goal_voxels),
        "node_rss_mb": {"idle": rss_idle.get("VmRSS", 0) / 1024, "after": rss.get("VmRSS", 0) / 1024,
                        "peak": rss.get("VmHWM", 0) / 1024},
    }
    print(f"kp_perception bench: {figures['model']}, {args.points} points, {os.cpu_count()} CPU cores")
    rows = [("cloud -> markers", "cloud_to_markers_ms", 50.0), ("service (latest cloud)", "service_latest_cloud_ms", 100.0),
            ("service (+50k cloud in request)", "service_with_50k_cloud_ms", None),
            ("service (latest, +64^3 occupancy)", "service_latest_with_occupancy_ms", None)]
    for label, key, target in rows:
        f = figures[key]
        verdict = "" if target is None else f"   target p50 < {target:.0f} ms: {'met' if f['p50'] < target else 'MISSED'}"
        print(f"  {label:<34} p50 {f['p50']:7.1f} ms   p99 {f['p99']:7.1f} ms   (n={f['n']}){verdict}")
    m = figures["node_rss_mb"]
    print(f"  goal voxels per call: {goal_voxels}")
    print(f"  node resident memory: {m['idle']:.0f} MB after start, {m['after']:.0f} MB after the run, peak {m['peak']:.0f} MB")
    if summary:
        print("  node's own account: " + summary[-1].split("stopping: ", 1)[1])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not math.isnan(figures["cloud_to_markers_ms"]["p50"]) else 1


if __name__ == "__main__":
    sys.exit(main())
