#!/usr/bin/env python3
"""Plot a training run's time to quality (log.csv: IoU against minutes of step time) as a PNG.

    python scripts/plot_run.py runs/ship-cyl docs/node_results/training_curve.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from kp_training.figures import plot_training_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (with log.csv)")
    parser.add_argument("png", type=Path, help="output PNG")
    args = parser.parse_args()
    log = args.run / "log.csv"
    if not log.is_file():
        parser.error(f"{log} not found")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        parser.error(f"{log} has no rows yet")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    plot_training_curve(args.png, rows, title=f"{args.run.name}: time to quality")
    print(f"wrote {args.png} ({len(rows)} epochs, {float(rows[-1]['wall_s']) / 60:.0f} min)")


if __name__ == "__main__":
    main()
