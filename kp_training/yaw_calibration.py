"""The yaw spread a canonical-yaw model answers with: how far its yaw, and so a goal's asymmetric part, may be off.

The node answers each rotate-goal with a yaw spread (kp_interfaces/srv/RotateGoal.srv). It comes from how well the
keypoints' horizontal layout fits the model's canonical layout (:func:`kp_core.geometry.yaw_alignment`; the
misalignment is 1 minus it). :func:`calibrate` measures that relation on simulated single camera views
(:mod:`kp_training.camera`: the clean, 3 mm noise, flying pixels and table ring conditions) of the shape the model was
trained on (its mesh units must be known), half of them looking at the side its asymmetric part
(:class:`kp_training.camera_protocol.BodyOfRevolution`: the mug's handle) is turned away from: for each view the
misalignment and the goal's yaw error (:func:`kp_training.camera_protocol.goal_scores`). The views are split into bins
of equal count by misalignment; a bin's spread is the 90th percentile of its yaw errors, made non-decreasing. The
checkpoint's JSON keeps the bins as ``yaw_calibration`` (:func:`kp_core.pipeline.calibrated_spread` reads them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kp_core.checkpoint import checkpoint_paths, update_metadata
from kp_core.goals import rotate_about_vertical

from .camera import CONDITIONS, SceneRenderer, fused
from .camera_protocol import ASYMMETRIC_SEEN_PIXELS, ShapeInMetres, goal_scores, shape_in_metres
from .shapes import load_trained_shape

SINGLE_VIEW = CONDITIONS[:5]


def roc_auc(positive, negative) -> float:
    """Probability that a positive scores above a negative (ties count half); NaN without both."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return float("nan")
    above = (positive[:, None] > negative[None]).sum() + 0.5 * (positive[:, None] == negative[None]).sum()
    return float(above / (len(positive) * len(negative)))


def measure(pipeline, obj: ShapeInMetres, views: int, seed: int) -> list[dict]:
    """``views`` seeded views per condition of :data:`SINGLE_VIEW`: per view whether the asymmetric part was seen,
    the pipeline's misalignment and the yaw error (deg) of its goal at psi = 0."""
    turned_to = obj.asymmetric_azimuth()
    rows = []
    for i, cond in enumerate(SINGLE_VIEW):
        rng = np.random.default_rng([seed, 17, i])
        for v in range(views):
            yaw = rng.uniform(0, 2 * math.pi)
            surface = rotate_about_vertical(obj.surface, yaw, np.zeros(3)) + [0.5, 0.1, 0.0]
            solid = rotate_about_vertical(obj.solid, yaw, np.zeros(3)) + [0.5, 0.1, 0.0]
            away = v % 2 == 0  # half the views look at the side the asymmetric part is turned away from
            azimuth = (yaw + turned_to + math.pi + rng.uniform(-0.6, 0.6)) if away else rng.uniform(0, 2 * math.pi)
            points, _, samples = fused(SceneRenderer(surface, rng).render(cond, azimuth))
            seen = bool(obj.asymmetric[samples[samples >= 0]].sum() >= ASYMMETRIC_SEEN_PIXELS)
            encoding = pipeline.encode(points)
            pose = pipeline.pose(encoding)
            error = goal_scores(pipeline.goal(encoding, 0.0), solid, 0.0, obj.body)["yaw_error_deg"]
            rows.append({"condition": cond.name, "seen": seen, "misalignment": pose.misalignment, "yaw_error_deg": error})
    return rows


def fit(rows: list[dict], bins: int) -> dict:
    """The calibration of :func:`measure`'s rows: ``bins`` bins of equal count by misalignment, each bin's
    ``spread_rad`` the 90th percentile of its yaw errors, made non-decreasing."""
    misalignment = np.array([r["misalignment"] for r in rows])
    error = np.radians([r["yaw_error_deg"] for r in rows])
    order = np.argsort(misalignment)
    groups = np.array_split(order, bins)
    edges = [float(misalignment[g].max()) for g in groups[:-1]]
    spreads = np.maximum.accumulate([float(np.percentile(error[g], 90)) for g in groups])
    return {"misalignment_edges": edges, "spread_rad": [float(v) for v in spreads]}


def calibrate(checkpoint, views: int = 24, bins: int = 5, seed: int = 0) -> dict:
    """The yaw calibration of a canonical-yaw ``checkpoint`` (.safetensors, .json or run folder), with how many
    views saw the asymmetric part and the ROC AUC with which the misalignment tells views that did not from views
    that did (None when every view saw it, or none did). ValueError: no canonical yaw, or no metric training
    shape."""
    from kp_core.pipeline import Pipeline

    weights, _ = checkpoint_paths(checkpoint)
    pipeline = Pipeline(weights, optimize=True, precision="fp32")
    if not getattr(pipeline.model, "canonical_yaw", False):
        raise ValueError(f"{weights} has no canonical yaw (trained without --canonical-yaw): there is no yaw to calibrate")
    obj = shape_in_metres(load_trained_shape(pipeline.metadata.get("train_config", {})), seed=seed)
    if bins < 1 or views * len(SINGLE_VIEW) < bins:
        raise ValueError(f"{views} views per condition cannot fill {bins} bins")
    rows = measure(pipeline, obj, views, seed)
    seen = [r["misalignment"] for r in rows if r["seen"]]
    hidden = [r["misalignment"] for r in rows if not r["seen"]]
    auc = roc_auc(hidden, seen)  # a hidden asymmetric part should misalign more
    return {**fit(rows, bins), "views": len(rows), "asymmetric_seen": len(seen),
            "auc_hidden_vs_seen": auc if math.isfinite(auc) else None}


def write(checkpoint, calibration: dict) -> Path:
    """Store ``calibration`` as the checkpoint JSON's ``yaw_calibration``; returns the JSON's path."""
    return update_metadata(checkpoint, lambda meta: meta.update(yaw_calibration=calibration))


def describe(calibration: dict) -> list[str]:
    """Lines for a person: the views, the AUC and each bin's spread in degrees."""
    edges = calibration["misalignment_edges"]
    auc = calibration["auc_hidden_vs_seen"]
    lines = [f"{calibration['views']} views ({calibration['asymmetric_seen']} saw the asymmetric part); ROC AUC of the "
             f"misalignment, hidden vs seen: {'-' if auc is None else f'{auc:.3f}'}"]
    for lo, hi, spread in zip([0.0] + edges, edges + [1.0], calibration["spread_rad"]):
        lines.append(f"  misalignment {lo:.5f}-{hi:.5f}: yaw spread {math.degrees(spread):.1f} deg")
    return lines
