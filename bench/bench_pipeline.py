"""Where the node's time goes, stage by stage, in this process (no ROS): the ROS-free pipeline on a 50k-point
mug cloud, in float32 and bf16 (the node's ``precision``), with 1 and 2 torch threads, on an idle CPU and on
one kept busy by other processes.

    .venv/bin/python bench/bench_pipeline.py                     # the shipped model
    .venv/bin/python bench/bench_pipeline.py --model runs/x/best.safetensors --busy 2

Stages: clean (finite points), placement (the grid on the cloud), voxelize (the model's input grid), encoder
(TorchScript when it traces, as the node runs it), expectation (keypoints from the heatmaps), encode (all of
the above: what a cloud costs the node after it arrived), decode and goal (a rotate-goal on that cloud).
``--busy N`` starts N processes that keep a core each busy while the same figures are taken again: several
torch threads per operation then wait on each other. Prints medians; not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_perception import mug_points  # noqa: E402

from kp_core.devices import cpu_description  # noqa: E402
from kp_core.pipeline import Pipeline  # noqa: E402
from kp_perception import default_model_path  # noqa: E402


def _burn(stop) -> None:
    x = 1.0
    while not stop.is_set():
        for _ in range(100_000):
            x = x * 1.0000001 + 1e-9


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def stages(model, points: np.ndarray, threads: int, repeats: int, precision: str) -> dict[str, float]:
    torch.set_num_threads(threads)
    pipe = Pipeline(model, optimize=True, precision=precision)
    pipe.warmup()
    clean = pipe.clean(points)
    grid_map = pipe.grid_map_for(clean)
    voxels = pipe.voxelize(clean, grid_map)
    encoding = pipe.encode(points)
    with torch.inference_mode():
        heatmaps = pipe._encode_heatmaps(voxels)
        figures = {
            "clean": median_ms(lambda: pipe.clean(points), repeats),
            "placement": median_ms(lambda: pipe.grid_map_for(clean), repeats),
            "voxelize": median_ms(lambda: pipe.voxelize(clean, grid_map), repeats),
            "encoder": median_ms(lambda: pipe._encode_heatmaps(voxels), repeats),
            "expectation": median_ms(lambda: pipe.model.keypoints_from_heatmaps(heatmaps), repeats),
        }
    figures["encode"] = median_ms(lambda: pipe.encode(points), repeats)
    figures["decode"] = median_ms(lambda: pipe.decode_probabilities(encoding.keypoints_grid), repeats)
    figures["goal"] = median_ms(lambda: pipe.goal(encoding, 0.5), repeats)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--points", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--busy", type=int, default=2, help="processes burning a core each for the busy figures (0: skip)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    points = mug_points(args.points)
    model = args.model or default_model_path()
    rows = {}
    for precision in args.precisions:
        for threads in (1, 2):
            rows[f"{precision}, idle, {threads} thread{'s' if threads > 1 else ''}"] = stages(
                model, points, threads, args.repeats, precision)
    if args.busy:
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.busy)]
        for p in burners:
            p.start()
        try:
            for precision in args.precisions:
                for threads in (1, 2):
                    rows[f"{precision}, {args.busy} busy cores, {threads} thread{'s' if threads > 1 else ''}"] = stages(
                        model, points, threads, args.repeats, precision)
        finally:
            stop.set()
            for p in burners:
                p.join(timeout=5)
    names = list(next(iter(rows.values())))
    print(f"kp_perception pipeline stages, {args.points} points, median ms of {args.repeats} (TorchScript encoder), "
          f"on {cpu_description()}:")
    print(f"  {'':<32}" + "".join(f"{n:>12}" for n in names))
    for label, figures in rows.items():
        print(f"  {label:<32}" + "".join(f"{figures[n]:12.1f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
