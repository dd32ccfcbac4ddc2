"""Running a node until SIGINT or SIGTERM, and stopping it without races.

rclpy's own signal handlers shut the context down from the signal, while executor threads may still be waiting
on it or publishing: that gave exit status 1 (``RCLError: failed to initialize wait set``) and "Failed to
publish" noise on stops. Here a signal only sets an event; the main thread stops spinning, lets the callbacks in
flight finish while the context is still valid, destroys the node (which logs its summary), and only then shuts
rclpy down.

The executor is single-threaded unless the node says its callbacks may wait for data that only another executor
thread can deliver (``node.executor_threads`` > 1: TF lookups). On the project's 2-core machine, idle, rclpy's
multi-threaded executor took a cloud erratically: a 50k-point cloud's stamp -> callback p50 10.6-11.9 ms, p99
92-101 ms in bench/bench_perception.py, with stalls up to the 0.1 s spin timeout, against 6.7-9.1 ms, p99 12-14 ms
single-threaded, while the service's p50 stayed at 29-30 ms (30-33 ms multi-threaded).
"""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .transport import use_node_profile

START_FAILED = 2


class _Executor(MultiThreadedExecutor):
    """MultiThreadedExecutor whose shutdown lets the callbacks in flight finish first.

    rclpy's shutdown destroys the executor's guard condition before joining its worker threads; a callback
    that was just handed to a worker then fails on that guard ("exception was never retrieved: cannot use
    Destroyable"). Joining the workers first closes that window.
    """

    def shutdown(self, timeout_sec=None, **kwargs) -> bool:
        pool = getattr(self, "_executor", None)  # the worker pool (rclpy Foxy to Rolling)
        if pool is not None:
            pool.shutdown(wait=True)
        return super().shutdown(timeout_sec, **kwargs)


def run(make_node, name: str, args=None) -> int:
    """Build the node with ``make_node()`` and spin it until a signal; 0 on a clean stop, 2 if it cannot start."""
    middleware = use_node_profile()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):  # shuts rclpy down last
            try:
                node = make_node()
            except Exception as err:  # a bad model path, device or parameter: say so plainly and exit
                rclpy.logging.get_logger(name).fatal(f"cannot start: {type(err).__name__}: {err}")
                return START_FAILED
            threads = int(getattr(node, "executor_threads", 1))
            rclpy.logging.get_logger(name).info(
                f"{middleware}; {'single-threaded executor' if threads == 1 else f'{threads}-thread executor'}")
            try:
                executor = SingleThreadedExecutor() if threads == 1 else _Executor(num_threads=threads)
                executor.add_node(node)
                escaped = set()
                while not stop.is_set() and rclpy.ok():
                    try:
                        executor.spin_once(timeout_sec=0.1)
                    except Exception as err:  # a callback we do not guard ourselves: never the end of the node
                        if type(err) not in escaped:
                            escaped.add(type(err))
                            rclpy.logging.get_logger(name).error(
                                f"a callback raised {type(err).__name__}: {err}; the node keeps running")
                executor.shutdown()  # waits for the callbacks in flight
            finally:
                node.destroy_node()  # while the context is still valid
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
