"""Running a node until SIGINT or SIGTERM, and stopping it without races.

rclpy's own signal handlers shut the context down from the signal, while executor threads may still be waiting
on it or publishing: that gave exit status 1 (``RCLError: failed to initialize wait set``) and "Failed to
publish" noise on stops. Here a signal only sets an event; the main thread stops spinning, lets the callbacks in
flight finish while the context is still valid, destroys the node (which logs its summary), and only then shuts
rclpy down.

The executor is single-threaded in every mode: on the project's 2-core machine, idle, rclpy's multi-threaded
executor took a cloud erratically (stalls up to its spin timeout in bench/bench_perception.py). A cloud callback
that waits for a transform does not need a second thread of this executor: TF arrives on a node of its own
(:class:`kp_perception.frames.TfLookup`).
"""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .transport import use_node_profile

START_FAILED = 2


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
            rclpy.logging.get_logger(name).info(f"{middleware}; single-threaded executor")
            try:
                executor = SingleThreadedExecutor()
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
