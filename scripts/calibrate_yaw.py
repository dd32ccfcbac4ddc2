"""Fit a canonical-yaw model's yaw calibration and write it into its checkpoint JSON (``yaw_calibration``).

The node answers each rotate-goal with a yaw spread (kp_interfaces/srv/RotateGoal.srv): how far the object's
yaw, and so the goal's asymmetric part, may be off. It comes from how well the keypoints' horizontal layout fits
the model's canonical layout (kp_core.geometry.yaw_alignment; the misalignment is 1 minus it). This script
measures that relation on simulated single camera views (kp_training/camera.py: the clean, 3 mm noise, flying
pixels and table ring conditions) of the shape the model was trained on (its mesh units must be known), half of
them looking at the side its asymmetric part (the mug's handle: what lies beyond the shape's body of revolution,
kp_training/camera_protocol.BodyOfRevolution) is turned away from: for each view the misalignment and the goal's
yaw error (kp_training/camera_protocol.goal_scores). The views are split into bins of equal count by
misalignment; a bin's spread is the 90th percentile of its yaw errors, made non-decreasing. It prints the ROC
AUC with which the misalignment tells views that saw the asymmetric part from views that did not.

    .venv/bin/python scripts/calibrate_yaw.py kp_perception/models/mug --views 24
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_core.checkpoint import atomic_write_json, checkpoint_paths  # noqa: E402
from kp_core.goals import rotate_about_vertical  # noqa: E402
from kp_core.pipeline import Pipeline  # noqa: E402
from kp_training.camera import CONDITIONS, SceneRenderer, fused  # noqa: E402
from kp_training.camera_protocol import ASYMMETRIC_SEEN_PIXELS, ShapeInMetres, goal_scores, shape_in_metres  # noqa: E402
from kp_training.shapes import load_trained_shape  # noqa: E402

SINGLE_VIEW = CONDITIONS[:5]


def roc_auc(positive, negative) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return float("nan")
    above = (positive[:, None] > negative[None]).sum() + 0.5 * (positive[:, None] == negative[None]).sum()
    return float(above / (len(positive) * len(negative)))


def measure(pipeline: Pipeline, obj: ShapeInMetres, views: int, seed: int) -> list[dict]:
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
    misalignment = np.array([r["misalignment"] for r in rows])
    error = np.radians([r["yaw_error_deg"] for r in rows])
    order = np.argsort(misalignment)
    groups = np.array_split(order, bins)
    edges = [float(misalignment[g].max()) for g in groups[:-1]]
    spreads = np.maximum.accumulate([float(np.percentile(error[g], 90)) for g in groups])
    return {"misalignment_edges": edges, "spread_rad": [float(v) for v in spreads]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a canonical-yaw checkpoint (.safetensors, .json or run folder)")
    parser.add_argument("--views", type=int, default=24, help="views per condition")
    parser.add_argument("--bins", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the calibration, do not write it")
    args = parser.parse_args(argv)
    weights, meta_path = checkpoint_paths(args.model)
    pipeline = Pipeline(weights, optimize=True, precision="fp32")
    if not getattr(pipeline.model, "canonical_yaw", False):
        parser.error(f"{weights} has no canonical yaw (trained without --canonical-yaw): there is no yaw to calibrate")
    try:
        obj = shape_in_metres(load_trained_shape(pipeline.metadata.get("train_config", {})), seed=args.seed)
    except (OSError, ValueError) as err:
        parser.error(f"{weights}: its training shape: {err}")
    rows = measure(pipeline, obj, args.views, args.seed)
    calibration = fit(rows, args.bins)
    seen = [r["misalignment"] for r in rows if r["seen"]]
    hidden = [r["misalignment"] for r in rows if not r["seen"]]
    auc = roc_auc(hidden, seen)  # a hidden asymmetric part should misalign more
    calibration.update(views=len(rows), asymmetric_seen=len(seen), auc_hidden_vs_seen=auc,
                       command="scripts/calibrate_yaw.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{len(rows)} views ({len(seen)} saw the asymmetric part); ROC AUC of the misalignment, hidden vs seen: {auc:.3f}")
    for lo, hi, spread in zip([0.0] + calibration["misalignment_edges"], calibration["misalignment_edges"] + [1.0],
                              calibration["spread_rad"]):
        print(f"  misalignment {lo:.5f}-{hi:.5f}: yaw spread {math.degrees(spread):.1f} deg")
    if not args.dry_run:
        meta = json.loads(meta_path.read_text())
        meta["yaw_calibration"] = calibration
        atomic_write_json(meta_path, meta)
        print(f"wrote yaw_calibration into {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
