"""What moving a stamped xyz cloud between two ROS processes costs on this computer, by cloud size: the floor under
the node's cloud -> markers latency.

    .venv/bin/python bench/bench_transport.py                                  # the subscriber as the node runs
    .venv/bin/python bench/bench_transport.py --subscriber-profile none        # both with Fast DDS's defaults
    .venv/bin/python bench/bench_transport.py --publisher-profile driver.xml   # a driver with a profile of its own

An echo process subscribes to the cloud (reliable, keep last 1, single-threaded executor, as kp_perception_node
does) and publishes its header back; the latency is the header's arrival here minus the cloud's stamp. The echo
stands in for the node and by default runs with the node's Fast DDS profile
(kp_perception/middleware/fastdds_profile.xml); this process stands in for the driver and runs with Fast DDS's
defaults unless given a profile. Both stay on loopback
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a private domain). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_perception.demo.processes import pick_domain_id, ros_env, use_local_ros  # noqa: E402
from kp_perception.transport import FASTDDS_PROFILE, PROFILES_VARIABLE  # noqa: E402

IN, OUT = "/kp_transport/cloud", "/kp_transport/header"


def echo() -> None:
    """The echo process: every cloud's header goes straight back."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("kp_transport_echo")
    pub = node.create_publisher(Header, OUT, 10)
    node.create_subscription(PointCloud2, IN, lambda msg: pub.publish(msg.header), 1)
    executor = SingleThreadedExecutor()  # as the node runs (kp_perception/runner.py)
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass


def measure(points_per_cloud: list[int], clouds: int, env: dict) -> dict[int, dict]:
    """``env``: the echo process's environment (its Fast DDS profile included)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from kp_perception.cloud_io import make_xyz_cloud

    proc = subprocess.Popen([sys.executable, __file__, "--echo"], env=env, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("kp_transport_bench")
    arrived, cond = {}, threading.Condition()

    def on_header(msg):
        with cond:
            arrived[(msg.stamp.sec, msg.stamp.nanosec)] = time.time()
            cond.notify_all()

    node.create_subscription(Header, OUT, on_header, 10)
    pub = node.create_publisher(PointCloud2, IN, 10)
    executor = SingleThreadedExecutor()  # rclpy's multi-threaded one stalls messages here (kp_perception/runner.py)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    def send(cloud, timeout):
        t = time.time()
        sec, nsec = int(t), int((t - int(t)) * 1e9)
        cloud.header.stamp.sec, cloud.header.stamp.nanosec = sec, nsec
        pub.publish(cloud)
        with cond:
            if not cond.wait_for(lambda: (sec, nsec) in arrived, timeout=timeout):
                return None
            return (arrived[(sec, nsec)] - (sec + nsec * 1e-9)) * 1000

    results = {}
    try:
        rng = np.random.default_rng(0)
        for count in points_per_cloud:
            cloud = make_xyz_cloud(rng.uniform(-0.1, 0.1, size=(count, 3)).astype(np.float32))
            deadline = time.monotonic() + 60
            while send(cloud, 1.0) is None:  # until the echo is matched
                if time.monotonic() > deadline:
                    raise RuntimeError("the echo process never answered")
            times, lost = [], 0
            for _ in range(clouds):
                latency = send(cloud, 5.0)
                lost += latency is None
                if latency is not None:
                    times.append(latency)
                time.sleep(0.02)
            a = np.asarray(times)
            results[count] = {"bytes": len(cloud.data), "p50": float(np.percentile(a, 50)),
                              "p90": float(np.percentile(a, 90)), "lost": lost}
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[20000, 50000, 100000], help="points per cloud")
    parser.add_argument("--clouds", type=int, default=60, help="clouds timed per size")
    parser.add_argument("--subscriber-profile", default="node", metavar="XML|node|none",
                        help="the echo's Fast DDS profile: node (the node's own, default), none (Fast DDS's defaults) or a file")
    parser.add_argument("--publisher-profile", type=Path, metavar="XML", help="this process's Fast DDS profile (default: none)")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        echo()
        return 0
    subscriber = {"node": FASTDDS_PROFILE, "none": None}.get(args.subscriber_profile, Path(args.subscriber_profile))
    for flag, profile in (("--subscriber-profile", subscriber), ("--publisher-profile", args.publisher_profile)):
        if profile is not None and not profile.is_file():
            parser.error(f"{flag}: no file {profile}")
    os.environ.pop(PROFILES_VARIABLE, None)
    if args.publisher_profile is not None:
        os.environ[PROFILES_VARIABLE] = str(args.publisher_profile.resolve())
    domain = pick_domain_id()
    with tempfile.TemporaryDirectory(prefix="kp_transport_") as home:
        use_local_ros(domain, home)
        env = ros_env(domain, home)
        env.pop(PROFILES_VARIABLE, None)
        if subscriber is not None:
            env[PROFILES_VARIABLE] = str(subscriber.resolve())
        results = measure(args.points, args.clouds, env)
    subscriber_name = "the node's" if args.subscriber_profile == "node" else subscriber or "none"
    print(f"cloud transport between two processes, reliable, {os.cpu_count()} CPU cores; Fast DDS profile of the "
          f"publisher: {args.publisher_profile or 'none'}, of the subscriber: {subscriber_name}:")
    for count, r in results.items():
        print(f"  {count:>7} points ({r['bytes'] / 1e6:.2f} MB): stamp -> echo back p50 {r['p50']:.1f} ms, "
              f"p90 {r['p90']:.1f} ms" + (f", {r['lost']} lost" if r["lost"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
