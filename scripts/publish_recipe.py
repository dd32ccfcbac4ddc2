"""Copies a ``kp-train --recipe`` run's report, curves, logs and metadata (no weights) into the docs.

    .venv/bin/python scripts/publish_recipe.py runs/recipe-mug docs/recipes/mug

The copy keeps the run folder's layout (``recipe.json``, ``model.json``, ``report.md`` with ``eval/`` figures,
``time_to_quality.png``, each stage's ``log.csv`` and ``config.json``), so that ``kp-eval --recipe-run
docs/recipes/mug`` shows its time-to-quality curve in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_training.recipes import publish  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the recipe's run folder (kp-train --recipe NAME --out RUN)")
    parser.add_argument("dest", type=Path, help="where the copy goes (an earlier copy there is replaced)")
    args = parser.parse_args(argv)
    if not (args.run / "recipe.json").is_file():
        parser.error(f"{args.run} is not a recipe's run folder (no recipe.json)")
    if args.dest.exists():
        if not (args.dest / "recipe.json").is_file() or list(args.dest.rglob("*.safetensors")):
            parser.error(f"{args.dest} exists and is not a published copy of a recipe run: choose another folder")
        shutil.rmtree(args.dest)
    for path in publish(args.run, args.dest):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
