"""The node's pipeline on simulated depth-camera scenes, with and without input conditioning.

Runs the camera protocol (kp_training/camera_protocol.py: 640 x 480 organized depth images of the shape the model
was trained on, at its real size, on a table with noise, flying pixels, table remnants, clutter, various cameras)
through kp_core.pipeline.Pipeline, once with the node's default conditioning and once with it off (only far points
dropped), and prints both conditions tables, plus what the conditioning costs per cloud. The same table comes out
of kp-eval --camera-views N.

    .venv/bin/python bench/bench_camera.py --views 6            # shipped model, both settings
    .venv/bin/python bench/bench_camera.py --model runs/x --conditioning on
    .venv/bin/python bench/bench_camera.py --conditioning on --veils both --only flying   # each camera's veils dropped or kept
    .venv/bin/python bench/bench_camera.py --conditioning on --smoothing both --only noise  # depth noise smoothed or not
    .venv/bin/python bench/bench_camera.py --conditioning on --only whole --views 36 --psi 0 30 60 90  # and per psi
    .venv/bin/python bench/bench_camera.py --conditioning on --underside both --only held  # a held object's underside
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_core.checkpoint import read_metadata  # noqa: E402
from kp_core.conditioning import ConditioningConfig, condition, kept_pixels, organized_cloud  # noqa: E402
from kp_core.pipeline import Pipeline, PipelineConfig  # noqa: E402
from kp_perception import default_model_path  # noqa: E402
from kp_perception.frames import RigidTransform, up_in_source  # noqa: E402
from kp_training.camera import CONDITIONS, SceneRenderer, fused, optical_frame  # noqa: E402
from kp_training.camera_protocol import camera_protocol, conditions_markdown, shape_in_metres  # noqa: E402
from kp_training.shapes import load_trained_shape  # noqa: E402


def conditioning_cost(pipeline: Pipeline, shape, conditions, repeats: int = 5) -> list[tuple]:
    """Median milliseconds, one view of each condition, of what the node does to each camera's organized image in
    the camera's own frame (float32, as a cloud carries it): dropping its veils (kp_core.conditioning.kept_pixels)
    and that with the depth noise smoothed and the object's underside dropped (kp_core.conditioning.organized_cloud);
    then of
    kp_core.conditioning.condition on the fused cloud."""
    obj = shape_in_metres(shape)
    size = pipeline.object_size()
    cfg = ConditioningConfig()
    rows = []
    for i, cond in enumerate(conditions):
        rng = np.random.default_rng([99, i])
        surface = obj.surface + [0.5, 0.1, 0.0]
        views = SceneRenderer(surface, rng).render(cond, rng.uniform(0, 6.28))
        points, _, _ = fused(views)
        published = [optical_frame(v, surface.mean(0)) for v in views]  # as each camera's driver publishes it
        images = [image.astype(np.float32) for image, _ in published]
        # The world's up in each camera's frame, as the node takes it from the camera's pose.
        ups = [up_in_source(RigidTransform.from_xyz_quaternion(*pose)) for _, pose in published]
        times = {"veils": [], "smoothed": [], "condition": []}
        for _ in range(repeats):
            for key, run in (("veils", lambda: [kept_pixels(image, cfg) for image in images]),
                             ("smoothed", lambda: [organized_cloud(image, cfg, up=up) for image, up in zip(images, ups)]),
                             ("condition", lambda: condition(points, size))):
                start = time.perf_counter()
                run()
                times[key].append((time.perf_counter() - start) * 1000)
        rows.append((cond.name, len(points), *(float(np.median(times[key])) for key in times)))
    return rows


def per_psi_markdown(result: dict) -> str:
    """Goal IoU per psi and condition, mean over the views the pipeline answered (as the conditions table)."""
    psis = result["psi_deg"]
    lines = ["\n| condition | " + " | ".join(f"psi {p:g} deg" for p in psis) + " |", "|---|" + "---|" * len(psis)]
    names = list(dict.fromkeys(row["condition"] for row in result["rows"]))
    for name in names:
        answered = [row["camera"]["goal_iou"] for row in result["rows"]
                    if row["condition"] == name and "goal_iou" in row["camera"]]
        cells = [f"{v:.3f}" for v in np.mean(answered, axis=0)] if answered else ["-"] * len(psis)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chosen(flag: str, both: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The variants a ``both|on|off`` flag asks for, of [(label, config fields) on, ... off]."""
    return both if flag == "both" else both[:1] if flag == "on" else both[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_path()), help="checkpoint (default: the shipped model)")
    parser.add_argument("--views", type=int, default=6, help="seeded views per condition")
    parser.add_argument("--conditioning", choices=("both", "on", "off"), default="both")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--veils", choices=("both", "on", "off"), default="on",
                        help="conditioning on: drop each camera's veils (flying pixels) first, or not, or compare")
    parser.add_argument("--smoothing", choices=("both", "on", "off"), default="on",
                        help="conditioning on: smooth each camera's depth noise (kp_core.conditioning.smooth_ranges) "
                        "or not, or compare")
    parser.add_argument("--underside", choices=("both", "on", "off"), default="on",
                        help="conditioning on: drop what each camera sees of the object's underside "
                        "(kp_core.conditioning.underside_pixels) or not, or compare")
    parser.add_argument("--only", default="", help="only the conditions whose name contains this text")
    parser.add_argument("--cost-only", action="store_true", help="only what the conditioning costs per view")
    parser.add_argument("--psi", type=float, nargs="+", default=[0.0, 90.0], metavar="DEG",
                        help="goal angles in degrees (more than the default two: a goal IoU per psi table too)")
    args = parser.parse_args(argv)
    shape = load_trained_shape(read_metadata(args.model).get("train_config", {}))
    conditions = [c for c in CONDITIONS if args.only in c.name]
    settings = [] if args.cost_only else [("on", True), ("off", False)] if args.conditioning == "both" else [
        (args.conditioning, args.conditioning == "on")]
    veils = chosen(args.veils, [("veils dropped", {"veil_angle_deg": 10.0}), ("veils kept", {"veil_angle_deg": 0.0})])
    smoothing = chosen(args.smoothing, [("depth smoothed", {}), ("depth as measured", {"smooth_pixels": 0})])
    underside = chosen(args.underside, [("underside dropped", {}), ("underside kept", {"underside_angle_deg": 0.0})])
    variants = [(setting, enabled, [v, s, u]) for setting, enabled in settings
                for v in (veils if enabled else [("", {})]) for s in (smoothing if enabled else [("", {})])
                for u in (underside if enabled else [("", {})])]
    for setting, enabled, parts in variants:
        fields = {key: value for _, part in parts for key, value in part.items()}
        config = PipelineConfig(conditioning=ConditioningConfig(enabled=enabled, **fields))
        pipeline = Pipeline(args.model, optimize=True, precision=args.precision, config=config)
        start = time.perf_counter()
        result = camera_protocol(pipeline, shape, args.views, psis_deg=tuple(args.psi), seed=args.seed,
                                 conditions=conditions)
        labels = "".join(f", {label}" for label, _ in parts if label)
        print(f"\n## {Path(args.model).name}, conditioning {setting}{labels}: {args.views} views "
              f"per condition, psi {result['psi_deg']} deg ({time.perf_counter() - start:.0f} s)\n")
        print(conditions_markdown(result["summary"]))
        if len(args.psi) > 2:
            print(per_psi_markdown(result))
    print("\n## What the conditioning costs (one view per condition, median of 5)\n")
    print("| condition | points | each camera's image: veils ms | veils, smoothing and underside ms | "
          "kp_core.conditioning.condition ms |\n|---|---|---|---|---|")
    for name, count, veil_ms, smoothed_ms, ms in conditioning_cost(Pipeline(args.model), shape, conditions):
        print(f"| {name} | {count} | {veil_ms:.1f} | {smoothed_ms:.1f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
