"""Writes test/assets/jug.stl: a 1 l jug with a handle on one side and a spout on the other, in millimetres, y up.

The second object of the one-command recipe (``kp-train --recipe node --shape test/assets/jug.stl --mesh-units mm
--up-axis y``): not a mug (taller, a spout that breaks the symmetry opposite the handle), in other units and
with another up axis than the built-in mug. Run it again to rebuild the asset (trimesh only; deterministic).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import trimesh

OUT = Path(__file__).resolve().parents[1] / "test" / "assets" / "jug.stl"


def jug() -> trimesh.Trimesh:
    """Millimetres, z up while built: body radius 50, height 170, 4 mm walls, 8 mm bottom."""
    wall = trimesh.creation.annulus(r_min=46.0, r_max=50.0, height=170.0, sections=96)
    wall.apply_translation((0.0, 0.0, 85.0))
    bottom = trimesh.creation.cylinder(radius=50.0, height=8.0, sections=96)
    bottom.apply_translation((0.0, 0.0, 4.0))
    # The handle: a half ring of capsules in the xz plane, from the wall at z = 60 out to x = 90 and back at z = 140.
    arc = np.linspace(-np.pi / 2, np.pi / 2, 10)
    joints = np.column_stack([48.0 + 40.0 * np.cos(arc), np.zeros_like(arc), 100.0 + 40.0 * np.sin(arc)])
    handle = [trimesh.creation.capsule(height=float(np.linalg.norm(b - a)), radius=7.0, count=(16, 16),
                                       transform=segment_transform(a, b)) for a, b in zip(joints[:-1], joints[1:])]
    spout = trimesh.creation.cone(radius=16.0, height=38.0, sections=48)
    spout.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2 - 0.5, (0, 1, 0)))  # out along -x, up
    spout.apply_translation((-44.0, 0.0, 150.0))
    return trimesh.util.concatenate([wall, bottom, *handle, spout])


def segment_transform(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pose of a capsule (built along z about the origin) from ``a`` to ``b``."""
    transform = trimesh.geometry.align_vectors((0.0, 0.0, 1.0), b - a)
    transform[:3, 3] = (a + b) / 2
    return transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    mesh = jug()
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))  # z up -> y up
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(mesh.faces)} faces)")


if __name__ == "__main__":
    main()
