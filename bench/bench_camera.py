"""The node's pipeline on simulated depth-camera scenes, with and without input conditioning.

Runs the camera protocol (kp_training/camera_protocol.py: 640 x 480 organized depth images of the mug on a table
with noise, flying pixels, table remnants, clutter, various cameras) through kp_core.pipeline.Pipeline, once with
the node's default conditioning and once with it off (only far points dropped), and prints both conditions
tables, plus what the conditioning costs per cloud. The same table comes out of kp-eval --camera-views N.

    .venv/bin/python bench/bench_camera.py --views 6            # shipped model, both settings
    .venv/bin/python bench/bench_camera.py --model runs/x --conditioning on
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_core.conditioning import ConditioningConfig, condition  # noqa: E402
from kp_core.pipeline import Pipeline, PipelineConfig  # noqa: E402
from kp_perception import default_model_path  # noqa: E402
from kp_training.camera import CONDITIONS, SceneRenderer, fused  # noqa: E402
from kp_training.camera_protocol import camera_protocol, conditions_markdown, shape_in_metres  # noqa: E402
from kp_training.shapes import load_shape  # noqa: E402


def conditioning_cost(pipeline: Pipeline, shape, repeats: int = 5) -> list[tuple[str, int, float]]:
    """Median milliseconds of kp_core.conditioning.condition on one view of each condition."""
    obj = shape_in_metres(shape)
    size = pipeline.object_size()
    rows = []
    for i, cond in enumerate(CONDITIONS):
        rng = np.random.default_rng([99, i])
        points, _, _ = fused(SceneRenderer(obj.surface + [0.5, 0.1, 0.0], rng).render(cond, rng.uniform(0, 6.28)))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            condition(points, size)
            times.append((time.perf_counter() - start) * 1000)
        rows.append((cond.name, len(points), float(np.median(times))))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_path()), help="checkpoint (default: the shipped model)")
    parser.add_argument("--views", type=int, default=6, help="seeded views per condition")
    parser.add_argument("--conditioning", choices=("both", "on", "off"), default="both")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-only", action="store_true", help="only what the conditioning costs per view")
    args = parser.parse_args(argv)
    shape = load_shape("mug")
    settings = () if args.cost_only else ("on", "off") if args.conditioning == "both" else (args.conditioning,)
    for setting in settings:
        config = PipelineConfig(conditioning=ConditioningConfig(enabled=setting == "on"))
        pipeline = Pipeline(args.model, optimize=True, precision=args.precision, config=config)
        start = time.perf_counter()
        result = camera_protocol(pipeline, shape, args.views, seed=args.seed)
        print(f"\n## {Path(args.model).name}, conditioning {setting}: {args.views} views per condition, psi "
              f"{result['psi_deg']} deg ({time.perf_counter() - start:.0f} s)\n")
        print(conditions_markdown(result["summary"]))
    print("\n## What the conditioning costs (kp_core.conditioning.condition, one view per condition, median of 5)\n")
    print("| condition | points | ms |\n|---|---|---|")
    for name, count, ms in conditioning_cost(Pipeline(args.model), shape):
        print(f"| {name} | {count} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
