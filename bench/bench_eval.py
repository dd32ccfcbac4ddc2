#!/usr/bin/env python3
"""Evaluation cost on this machine (not a test): milliseconds per example of each metric and of the
forward passes ``kp-eval`` runs, to size its flags (``--samples``, ``--angles``, ``--poses``, ...).

    python bench/bench_eval.py                          # CPU or the GPU, untrained fast/cnn models
    python bench/bench_eval.py --presets paper cnn --batch 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kp_training.data import make_views, sample_transforms
from kp_training.metrics import binary_cross_entropy, chamfer_paper, mean_nn_distance, voxel_iou
from kp_core.models import PRESETS, build_model, model_config
from kp_training.shapes import load_shape


def timed(fn, device, repeats: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["fast", "cnn"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    points = load_shape("mug").points.to(device)
    angle, scale = sample_transforms(args.batch, torch.Generator().manual_seed(0), device)
    views = make_views(points, angle, scale)
    noisy = (views + 0.3 * torch.rand_like(views) > 0.65).float()  # an imperfect "reconstruction"
    logits = (noisy * 2 - 1) * 5
    gen = torch.Generator().manual_seed(0)
    rows = {
        "voxelize (make_views)": lambda: make_views(points, angle, scale),
        "BCE": lambda: binary_cross_entropy(logits, views),
        "IoU": lambda: voxel_iou(noisy, views),
        "Chamfer (paper, 1000 pts)": lambda: chamfer_paper(noisy, views, generator=gen),
        "mean NN distance (exact)": lambda: mean_nn_distance(noisy, views),
    }
    with torch.no_grad():
        for preset in args.presets:
            model = build_model(model_config(preset)).to(device).eval()
            rows[f"{preset}: encode"] = lambda m=model: m.encode(views)
            latent = model.encode(views)
            rows[f"{preset}: decode"] = lambda m=model, z=latent: m.decode(z)
        print(f"device {device}, batch {args.batch}, torch threads {torch.get_num_threads()}")
        for name, fn in rows.items():
            seconds = timed(fn, device, args.repeats)
            print(f"{name:32s} {1000 * seconds / args.batch:9.2f} ms per example")


if __name__ == "__main__":
    main()
