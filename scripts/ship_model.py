#!/usr/bin/env python3
"""Copy a trained KP-Net checkpoint into the package as the node's default model.

    python scripts/ship_model.py runs/ship-cyl             # -> kp_perception/models/mug.{safetensors,json}
    python scripts/ship_model.py runs/x/best.safetensors --name mug --note "why this one"

The weights are loaded and saved again (checked against their SHA-256, re-hashed under the new name), and the
metadata keeps the run's training config, metrics and progress plus where the model came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kp_core.checkpoint import COMMITTED_MAX_BYTES, checkpoint_paths, load_model, save_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "kp_perception" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run folder (its best checkpoint), .safetensors or .json")
    parser.add_argument("--name", default="mug", help="file stem under kp_perception/models/")
    parser.add_argument("--note", default=None, help="free text stored as metadata['shipped']['note']")
    args = parser.parse_args()
    model, meta = load_model(args.checkpoint)
    if model.kind != "keypoint":
        parser.error(f"{args.checkpoint} is a {model.kind!r} model; the node needs a KP-Net")
    source, _ = checkpoint_paths(args.checkpoint)
    meta["shipped"] = {"from": str(source), "from_sha256": meta.pop("weights_sha256"), "note": args.note}
    weights = save_checkpoint(MODELS / args.name, model, meta)
    size = weights.stat().st_size
    if size > COMMITTED_MAX_BYTES:
        weights.unlink()
        weights.with_suffix(".json").unlink()
        parser.error(f"{size / 2**20:.1f} MB is over the {COMMITTED_MAX_BYTES / 2**20:.0f} MB limit for a shipped model")
    print(f"shipped {source} -> {weights} ({size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
