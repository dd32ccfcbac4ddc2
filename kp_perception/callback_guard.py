"""Keeping a node alive whatever its callbacks meet: a rate limit for log lines that we apply ourselves, and a
guard that turns an exception escaping a callback into a counted, logged event.

Why our own rate limit: rclpy keys a log call's severity and throttle settings by its call site and raises
``ValueError`` when either changes between two calls from the same line ("Logger severity cannot be changed
between calls", "Logging filter parameters cannot be changed between calls"). A run-time parameter such as
``warn_throttle_sec``, or one line logging a warning or an error by case, would then kill the callback. Here every
line is logged without rclpy's filters, each severity from its own call site, after :class:`Throttle` said so.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from typing import Callable


class Throttle:
    """At most one event per ``period`` seconds, the period given at each call (so it can change at run time).

    ``period`` 0 lets every event through. Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def ready(self, period: float) -> bool:
        """True when an event may be emitted now (and records it)."""
        now = self._clock()
        with self._lock:
            if self._last is not None and period > 0 and now - self._last < period:
                return False
            self._last = now
            return True


class CallbackFailures:
    """Counts exceptions that escaped a node's callbacks, and logs the first of each (callback, type) once."""

    def __init__(self, logger):
        self.logger = logger
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, callback: str, err: BaseException) -> None:
        key = f"{callback}: {type(err).__name__}"
        with self._lock:
            self.counts[key] += 1
            first = self.counts[key] == 1
        if first:
            self.logger.error(f"{callback} failed and was skipped (the node keeps running; /diagnostics counts "
                              f"these): {type(err).__name__}: {err}")

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def key_values(self) -> list[tuple[str, str]]:
        with self._lock:
            return [("callback failures", str(sum(self.counts.values()))),
                    *((f"callback failures: {key}", str(n)) for key, n in sorted(self.counts.items()))]


def guarded(fallback: Callable | None = None):
    """Decorate a callback method so that no exception leaves it.

    The instance must have a ``failures`` attribute (:class:`CallbackFailures`). On an exception the failure is
    recorded and ``fallback(self, err, *args)`` is returned (None without a fallback): a service callback's
    fallback builds a refusal, a parameter callback's a refused result.
    """

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as err:  # noqa: BLE001 - the point of the guard
                self.failures.record(method.__name__, err)
                return None if fallback is None else fallback(self, err, *args)

        return wrapper

    return decorate
