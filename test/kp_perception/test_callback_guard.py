"""Our own log rate limit and the callback guard (ROS-free: a stand-in logger)."""

import pytest

from kp_perception.callback_guard import CallbackFailures, Throttle, guarded


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throttle_lets_one_event_through_per_period_and_the_period_can_change():
    clock = Clock()
    throttle = Throttle(clock)
    assert throttle.ready(5.0)
    clock.now += 4.9
    assert not throttle.ready(5.0)
    assert throttle.ready(1.0)  # a shorter period, set at run time, applies at once
    clock.now += 0.5
    assert not throttle.ready(1.0)
    assert throttle.ready(0.0) and throttle.ready(0.0)  # 0: every event


class Logger:
    def __init__(self):
        self.errors = []

    def error(self, text):
        self.errors.append(text)


class Node:
    def __init__(self):
        self.failures = CallbackFailures(Logger())
        self.calls = 0

    @guarded()
    def on_message(self, message):
        self.calls += 1
        if message == "bad":
            raise RuntimeError("boom")
        return message

    def refuse(self, err, request):
        return f"refused {request}: {err}"

    @guarded(fallback=refuse)
    def on_request(self, request):
        raise KeyError(request)


def test_an_exception_is_counted_logged_once_and_the_callback_returns():
    node = Node()
    assert node.on_message("bad") is None
    assert node.on_message("bad") is None
    assert node.on_message("good") == "good" and node.calls == 3
    assert node.failures.total() == 2
    assert len(node.failures.logger.errors) == 1 and "on_message" in node.failures.logger.errors[0]
    assert dict(node.failures.key_values())["callback failures: on_message: RuntimeError"] == "2"


def test_a_fallback_answers_for_the_failed_callback():
    node = Node()
    assert node.on_request("x") == "refused x: 'x'"
    assert node.failures.total() == 1


def test_keyboard_interrupt_is_not_swallowed():
    class Stopping(Node):
        @guarded()
        def on_message(self, message):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stopping().on_message("x")
