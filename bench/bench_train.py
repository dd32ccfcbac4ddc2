#!/usr/bin/env python3
"""Training throughput per preset on this machine: pairs per second and step time (not a test).

Each step is exactly what ``kp-train`` runs (``Trainer.train_step``): draw a batch of pairs, voxelize both
views on the device, forward, the three losses, backward, Adam.

    python bench/bench_train.py                       # fast and cnn on a CPU; all presets on a GPU
    python bench/bench_train.py --presets paper --precision tf32 --steps 20   # the paper's reference on a GPU
    python bench/bench_train.py --recipe node --precision bf16 --channels-last  # each stage of kp-train --recipe node
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kp_core.devices import cpu_description
from kp_core.models import PRESETS
from kp_training.recipes import RECIPES, stage_configs
from kp_training.train import TRAINING_PRECISIONS, TrainConfig, Trainer


def bench(name: str, fields: dict, args, out: Path, init_from: Path | None = None) -> dict:
    """Median step time of a run with config ``fields`` in the scratch folder ``out`` (no validation set to speak
    of), started from ``init_from`` (a stage after the first: the previous one's untrained weights will do); its
    weights are left in ``out / "last"``."""
    config = TrainConfig(**{**fields, "out": str(out), "val_pairs": 1, "init_from": init_from and str(init_from),
                            "device": args.device, "precision": args.precision, "channels_last": args.channels_last,
                            "compile": args.compile})
    trainer = Trainer(config)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        trainer.train_step()
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        trainer.train_step()
        sync()
        times.append(time.perf_counter() - start)
    trainer.save_last()
    step = statistics.median(times)
    return {"name": name, "device": str(trainer.device), "precision": trainer.precision,
            "batch_pairs": config.batch_pairs, "step_ms": 1000 * step, "pairs_per_s": config.batch_pairs / step,
            "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), help="default: fast cnn on CPU, all on GPU")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="instead of presets: each stage of this recipe "
                        "as it trains (its batch, inputs, conditioning, frozen encoder, ...)")
    parser.add_argument("--batch-pairs", type=int, default=8, help="pairs per step of a preset")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 on GPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS + ("auto",), default="auto")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and args.device != "cpu"
    presets = args.presets or (sorted(PRESETS) if gpu else ["fast", "cnn"])
    if args.recipe:
        recipe = RECIPES[args.recipe]
        runs = [(f"{args.recipe}:{stage.name}", fields)
                for stage, fields in zip(recipe.stages, stage_configs(recipe, {}, Path("unused")))]
    else:
        runs = [(preset, {"preset": preset, "batch_pairs": args.batch_pairs}) for preset in presets]
    args.steps = args.steps or (20 if gpu else 3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads on {cpu_description()}"
          + (f", {torch.cuda.get_device_name()}" if gpu else ""))
    print(f"{'run':26} {'device':6} {'precision':9} {'batch':>5} {'params':>8} {'step ms':>9} {'pairs/s':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for i, (name, fields) in enumerate(runs):
            stage_out = Path(scratch) / str(i)
            previous = Path(scratch) / str(i - 1) / "last" if args.recipe and "init_from" in fields else None
            r = bench(name, fields, args, stage_out, previous)
            print(f"{r['name']:26} {r['device']:6} {r['precision']:9} {r['batch_pairs']:5d} {r['params_M']:7.2f}M"
                  f" {r['step_ms']:9.1f} {r['pairs_per_s']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
