"""Copies a ``kp-train --recipe`` run's report, curves, logs and metadata into the docs (its weights with --weights).

    .venv/bin/python scripts/publish_recipe.py runs/recipe-mug docs/recipes/mug
    .venv/bin/python scripts/publish_recipe.py --weights runs/repro-kpnet docs/recipes/repro-kpnet   # a small model

The copy keeps the run folder's layout (``recipe.json``, ``model.json``, ``report.md`` with ``eval/`` figures,
``time_to_quality.png``, each stage's ``log.csv`` and ``config.json``), so that ``kp-eval --recipe-run
docs/recipes/mug`` shows its time-to-quality curve in docs/NODE_RESULTS.md. ``--weights`` adds ``model.safetensors``
(up to 25 MB): the copy is then a model that kp-eval and the node load, once the run folder is gone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kp_core.checkpoint import checkpoint_paths  # noqa: E402
from kp_training.recipes import MODEL_STEM, RECIPE_FILE, publish  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the recipe's run folder (kp-train --recipe NAME --out RUN)")
    parser.add_argument("dest", type=Path, help="where the copy goes (an earlier copy there is replaced)")
    parser.add_argument("--weights", action="store_true", help="copy the run's model weights too (at most 25 MB)")
    args = parser.parse_args(argv)
    if not (args.run / RECIPE_FILE).is_file():
        parser.error(f"{args.run} is not a recipe's run folder (no recipe.json)")
    if args.dest.exists():
        published_weights, _ = checkpoint_paths(args.dest / MODEL_STEM)
        if not (args.dest / RECIPE_FILE).is_file() or set(args.dest.rglob("*.safetensors")) - {published_weights}:
            parser.error(f"{args.dest} exists and is not a published copy of a recipe run: choose another folder")
    # Copied beside the destination first: a refused run (unfinished, weights too large) leaves an earlier copy be.
    staging = args.dest.with_name(args.dest.name + ".publishing")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        copied = publish(args.run, staging, weights=args.weights)
    except ValueError as err:
        shutil.rmtree(staging, ignore_errors=True)
        parser.error(str(err))
    if args.dest.exists():
        shutil.rmtree(args.dest)
    staging.rename(args.dest)
    for path in copied:
        print(args.dest / path.relative_to(staging))
    return 0


if __name__ == "__main__":
    sys.exit(main())
