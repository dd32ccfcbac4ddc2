"""Fit a canonical-yaw model's yaw calibration and write it into its checkpoint JSON (``yaw_calibration``).

How: kp_training/yaw_calibration.py (simulated single camera views of the model's training shape; each view's
keypoint misalignment against its goal's yaw error, binned). It prints the ROC AUC with which the misalignment tells
views that saw the asymmetric part (the mug's handle) from views that did not. ``kp-train --recipe node`` runs the
same at its end.

    .venv/bin/python scripts/calibrate_yaw.py kp_perception/models/mug --views 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_training import yaw_calibration  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a canonical-yaw checkpoint (.safetensors, .json or run folder)")
    parser.add_argument("--views", type=int, default=24, help="views per condition")
    parser.add_argument("--bins", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the calibration, do not write it")
    args = parser.parse_args(argv)
    try:
        calibration = yaw_calibration.calibrate(args.model, args.views, args.bins, args.seed)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    calibration["command"] = "scripts/calibrate_yaw.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print("\n".join(yaw_calibration.describe(calibration)))
    if not args.dry_run:
        print(f"wrote yaw_calibration into {yaw_calibration.write(args.model, calibration)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
