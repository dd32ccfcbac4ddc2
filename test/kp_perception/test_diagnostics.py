"""What /diagnostics says (kp_perception/diagnostics.py), with the clock given: the input rate over its window,
the status level and its reason, refusals per kind, percentiles, the model's lines."""

from types import SimpleNamespace

import pytest

from kp_perception.diagnostics import NO_CLOUD_WARNING_S, OK, WARN, PerceptionStats, model_key_values


def test_the_input_rate_counts_the_arrivals_of_the_last_window():
    stats = PerceptionStats(window=10.0)
    for t in (0.0, 1.0, 2.0, 11.5):
        stats.cloud_received(now=t)
    assert stats.input_rate(now=11.5) == pytest.approx(2 / 10)  # 2.0 and 11.5 are within 10 s of 11.5
    assert stats.input_rate(now=30.0) == 0.0
    assert stats.seconds_since_last_cloud(now=12.0) == pytest.approx(0.5)
    assert PerceptionStats().seconds_since_last_cloud(now=1.0) is None


def test_the_level_says_why():
    stats = PerceptionStats()
    assert stats.level(active=False, topic="/points", failures=0, now=0.0) == (OK, "inactive (configured, not subscribed)")
    assert stats.level(True, "/points", 0, now=0.0) == (WARN, "no cloud on /points for ever")
    stats.cloud_received(now=100.0)
    stats.cloud_used(12.0)
    level, message = stats.level(True, "/points", 0, now=100.5)
    assert level == OK and message == "0.1 clouds/s"
    level, message = stats.level(True, "/points", 0, now=100.0 + NO_CLOUD_WARNING_S + 1)
    assert level == WARN and message == "no cloud on /points for 6 s"
    assert stats.level(True, "/points", failures=2, now=100.5) == (
        WARN, "2 callback failures (see 'callback failures: ...')")
    stats.cloud_received(now=100.2)
    stats.cloud_refused("too few points", "only 3 finite points")  # one of two refused: most
    assert stats.level(True, "/points", failures=0, now=100.5) == (WARN, "most clouds refused; last: only 3 finite points")


def test_key_values_count_refusals_per_kind_and_give_percentiles():
    stats = PerceptionStats()
    for ms in range(1, 101):
        stats.cloud_used(float(ms))
    stats.cloud_refused("no transform", "a")
    stats.cloud_refused("no transform", "b")
    stats.cloud_refused("not finite", "c")
    stats.yaw_spread(-1.0)
    values = dict(stats.key_values())
    assert values["clouds refused"] == "3"
    assert values["clouds refused: no transform"] == "2" and values["clouds refused: not finite"] == "1"
    assert values["last refusal"] == "c"
    assert values["encode latency"] == "p50 50.5 ms, p99 99.0 ms, max 100.0 ms (last 100)"
    assert values["rotate_goal latency"] == "none yet"
    assert values["last answer's yaw spread"] == "no calibration"
    stats.yaw_spread(0.5)
    assert dict(stats.key_values())["last answer's yaw spread"] == "28.6 deg"


def test_the_models_lines_come_from_its_checkpoint():
    pipeline = SimpleNamespace(
        model_path="/m/mug.safetensors", num_keypoints=32, device="cpu", encoder_path="eager (fp32)",
        metadata={"weights_sha256": "ab" * 32, "architecture": {"encoder": "cylinder"},
                  "progress": {"epoch": 4, "global_step": 400, "pairs_seen": 1600},
                  "metrics": {"val": {"iou": 0.67781, "loss": 0.266}}})
    values = dict(model_key_values(pipeline))
    assert values["model"] == "cylinder encoder, K=32"
    assert values["model sha256"] == "ab" * 8
    assert values["model training"] == "epoch 4, step 400, 1600 pairs"
    assert values["model validation iou"] == "0.6778" and "model validation recon" not in values
