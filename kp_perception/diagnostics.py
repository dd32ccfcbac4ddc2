"""What the node has done, counted for /diagnostics (diagnostic_msgs/DiagnosticArray; no diagnostic_updater
needed): input rate, clouds used, refused (by reason) and lost in transport, encode and service latency, and
the model it runs."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque

import numpy as np

OK, WARN, ERROR, STALE = (bytes([i]) for i in range(4))  # diagnostic_msgs/DiagnosticStatus levels (byte)
NO_CLOUD_WARNING_S = 5.0
"""An active node warns when it has had no cloud for this long."""


def _percentiles(values) -> str:
    if not values:
        return "none yet"
    a = np.asarray(values, dtype=np.float64)
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, max {a.max():.1f} ms (last {len(a)})"


class PerceptionStats:
    """Thread-safe counters and recent latencies; ``window`` seconds of arrival times give the input rate."""

    def __init__(self, window: float = 10.0, keep: int = 1000):
        self.window = window
        self._lock = threading.Lock()
        self._arrivals: deque = deque()
        self._last_arrival: float | None = None  # kept when the window has emptied
        self.received = 0
        self.used = 0
        self.lost = 0
        self.refused: Counter = Counter()
        self.last_refusal = ""
        self.goals_answered = 0
        self.goals_refused = 0
        self.last_goal_refusal = ""
        self.last_conditioning = ""
        self.last_yaw_spread: float | None = None
        self.encode_ms: deque = deque(maxlen=keep)
        self.age_ms: deque = deque(maxlen=keep)  # stamp -> callback: the driver, transport and queueing
        self.service_ms: deque = deque(maxlen=keep)

    def cloud_received(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.received += 1
            self._arrivals.append(now)
            self._last_arrival = now
            self._trim(now)

    def cloud_used(self, milliseconds: float) -> None:
        with self._lock:
            self.used += 1
            self.encode_ms.append(milliseconds)

    def yaw_spread(self, radians: float) -> None:
        """The calibrated yaw spread of the last answer (negative: the model has no calibration)."""
        with self._lock:
            self.last_yaw_spread = radians

    def cloud_conditioned(self, summary: str) -> None:
        """What the input conditioning did to the last used cloud (kp_core.conditioning)."""
        with self._lock:
            self.last_conditioning = summary

    def cloud_age(self, milliseconds: float) -> None:
        with self._lock:
            self.age_ms.append(milliseconds)

    def cloud_refused(self, category: str, reason: str) -> None:
        with self._lock:
            self.refused[category] += 1
            self.last_refusal = reason

    def clouds_lost(self, count: int) -> None:
        with self._lock:
            self.lost += int(count)

    def goal_answered(self, milliseconds: float) -> None:
        with self._lock:
            self.goals_answered += 1
            self.service_ms.append(milliseconds)

    def goal_refused(self, reason: str) -> None:
        with self._lock:
            self.goals_refused += 1
            self.last_goal_refusal = reason

    def refused_total(self) -> int:
        with self._lock:
            return sum(self.refused.values())

    def _trim(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - self.window:
            self._arrivals.popleft()

    def input_rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            return len(self._arrivals) / self.window

    def seconds_since_last_cloud(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            return None if self._last_arrival is None else now - self._last_arrival

    def level(self, active: bool, topic: str, failures: int, now: float | None = None) -> tuple[bytes, str]:
        """The status's level and message: OK while inactive or with clouds mostly used; WARN with no cloud for
        :data:`NO_CLOUD_WARNING_S`, most clouds refused, or callback failures (``failures``)."""
        now = time.monotonic() if now is None else now
        if not active:
            return OK, "inactive (configured, not subscribed)"
        idle = self.seconds_since_last_cloud(now)
        if idle is None or idle > NO_CLOUD_WARNING_S:
            return WARN, f"no cloud on {topic} for {'ever' if idle is None else f'{idle:.0f} s'}"
        with self._lock:
            refused, received, last = sum(self.refused.values()), self.received, self.last_refusal
        if refused and refused >= received / 2:
            return WARN, f"most clouds refused; last: {last}"
        if failures:
            return WARN, f"{failures} callback failures (see 'callback failures: ...')"
        return OK, f"{self.input_rate(now):.1f} clouds/s"

    def summary(self) -> str:
        with self._lock:
            refused = sum(self.refused.values())
            return (f"clouds received {self.received}, used {self.used}, refused {refused}, lost in transport "
                    f"{self.lost}; age on arrival {_percentiles(list(self.age_ms))}; "
                    f"encode {_percentiles(list(self.encode_ms))}; rotate_goal answered "
                    f"{self.goals_answered}, refused {self.goals_refused}, {_percentiles(list(self.service_ms))}")

    def key_values(self) -> list[tuple[str, str]]:
        with self._lock:
            pairs = [
                ("clouds received", str(self.received)),
                ("clouds used", str(self.used)),
                ("clouds refused", str(sum(self.refused.values()))),
                *((f"clouds refused: {category}", str(n)) for category, n in sorted(self.refused.items())),
                ("last refusal", self.last_refusal or "none"),
                ("input conditioning (last cloud used)", self.last_conditioning or "none yet"),
                ("clouds lost in transport", str(self.lost)),
                ("cloud age on arrival (stamp to callback)", _percentiles(list(self.age_ms))),
                ("encode latency", _percentiles(list(self.encode_ms))),
                ("rotate_goal answered", str(self.goals_answered)),
                ("rotate_goal refused", str(self.goals_refused)),
                ("last rotate_goal refusal", self.last_goal_refusal or "none"),
                ("rotate_goal latency", _percentiles(list(self.service_ms))),
                ("last answer's yaw spread", "none yet" if self.last_yaw_spread is None else
                 "no calibration" if self.last_yaw_spread < 0 else f"{math.degrees(self.last_yaw_spread):.1f} deg"),
            ]
        return pairs


def model_key_values(pipeline) -> list[tuple[str, str]]:
    """The model file and what its checkpoint says about it (architecture, training progress, metrics)."""
    meta = pipeline.metadata or {}
    architecture = meta.get("architecture", {})
    progress = meta.get("progress", {})
    validation = (meta.get("metrics") or {}).get("val", {})
    pairs = [
        ("model file", str(pipeline.model_path)),
        ("model sha256", str(meta.get("weights_sha256", "unknown"))[:16]),
        ("model", f"{architecture.get('encoder', '?')} encoder, K={pipeline.num_keypoints}"),
        ("model training", f"epoch {progress.get('epoch', '?')}, step {progress.get('global_step', '?')}, "
                           f"{progress.get('pairs_seen', '?')} pairs"),
        ("device", str(pipeline.device)),
        ("encoder", pipeline.encoder_path),
    ]
    for key in ("iou", "loss", "recon", "consistency"):
        if key in validation:
            pairs.append((f"model validation {key}", f"{float(validation[key]):.4g}"))
    return pairs


def diagnostic_array(name: str, level: bytes, message: str, pairs, stamp):
    """One DiagnosticStatus in a DiagnosticArray."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id="kp_perception")
    status.values = [KeyValue(key=k, value=v) for k, v in pairs]
    out = DiagnosticArray()
    out.header.stamp = stamp
    out.status = [status]
    return out
