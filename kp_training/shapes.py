"""Training shapes as dense solid point sets in the grid frame.

A shape is the built-in procedural mug or any mesh file trimesh reads (OBJ, STL, PLY, GLB, OFF, ...).
Either way it becomes a set of points that fill the *solid* (walls and bottom filled, the cup's cavity
and the handle's gap empty), sampled once on a jittered lattice and cached on disk.

Normalization: the bounding-box centre goes to the origin (z up) and the shape is scaled so that its
circumradius about the z axis and its half-height are ``1 - NORMALIZE_MARGIN`` grid units. Rotations
about z then never move a point out of the cube, and the augmentation scales (at most 1) only shrink,
so no augmentation clips the object.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kp_core.conditioning import dimensions
from kp_core.geometry import GRID_SIZE, NORMALIZE_MARGIN, fitting_half_extent

DEFAULT_SPACING = 0.75 * (2.0 / GRID_SIZE) / 2.0
"""Lattice spacing in grid units: half a voxel at the smallest augmentation scale (0.75), so every
voxel inside the solid receives points whatever the augmentation."""

SHAPE_CACHE_VERSION = 1
UP_AXES = ("x", "y", "z")
MESH_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254}
"""Metres per unit of each length unit a mesh file may be written in (``--mesh-units``)."""


@dataclass
class Shape:
    """A normalized solid shape.

    Attributes:
        name: short name ("mug" or the mesh file's stem).
        points: (N, 3) float32 tensor, samples of the solid in the grid frame.
        normalization: JSON-able dict: ``center`` (mesh units, the bounding-box centre),
            ``mesh_units_per_grid_unit`` (the half extent), ``up_axis``, ``source``, ``margin``.
    """

    name: str
    points: torch.Tensor
    normalization: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MugDimensions:
    """Proportions of the procedural mug in metres (a typical 300 ml ceramic mug)."""

    outer_radius: float = 0.041
    height: float = 0.096
    wall: float = 0.0045
    bottom: float = 0.007
    handle_offset: float = 0.004  # how far inside the outer wall the handle's torus is centred
    handle_radius: float = 0.028  # major radius of the handle's torus (in the xz plane)
    handle_thickness: float = 0.0065  # half thickness of the handle bar in the torus plane
    handle_width: float = 0.0075  # half width of the handle bar along y
    handle_height: float = 0.52  # torus centre height as a fraction of the mug height


def mug_occupancy(points: np.ndarray, dims: MugDimensions = MugDimensions()) -> np.ndarray:
    """Inside test of the procedural mug: open-top cup with a bottom, plus a half-torus handle on +x.

    Args:
        points: (N, 3) points in metres, mug base centre at the origin, z up.

    Returns:
        (N,) bool, True inside the solid.
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    r = np.hypot(x, y)
    in_height = (z >= 0.0) & (z <= dims.height)
    cavity = (r < dims.outer_radius - dims.wall) & (z > dims.bottom)
    body = in_height & (r <= dims.outer_radius) & ~cavity

    cx = dims.outer_radius - dims.handle_offset
    cz = dims.height * dims.handle_height
    rho = np.hypot(x - cx, z - cz)
    bar = ((rho - dims.handle_radius) / dims.handle_thickness) ** 2 + (y / dims.handle_width) ** 2 <= 1.0
    handle = bar & (x >= dims.outer_radius - dims.wall)
    return body | handle


def sample_solid(
    occupancy: Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    spacing: float,
    seed: int = 0,
    chunk: int = 1 << 21,
) -> np.ndarray:
    """Stratified samples of a solid: one jittered point per lattice cell whose point is inside.

    Args:
        occupancy: maps (M, 3) points to (M,) bool.
        lower, upper: (3,) corners of the box to sample.
        spacing: lattice cell size.

    Returns:
        (N, 3) float32 points inside the solid.
    """
    rng = np.random.default_rng(seed)
    counts = np.maximum(np.ceil((np.asarray(upper) - np.asarray(lower)) / spacing).astype(int), 1)
    total = int(np.prod(counts))
    kept = []
    for start in range(0, total, chunk):
        flat = np.arange(start, min(start + chunk, total))
        cell = np.stack(np.unravel_index(flat, counts), axis=-1)
        pts = lower + (cell + rng.random(cell.shape)) * spacing
        kept.append(pts[occupancy(pts)].astype(np.float32))
    points = np.concatenate(kept) if kept else np.zeros((0, 3), np.float32)
    if len(points) == 0:
        raise ValueError("the solid is empty: no lattice point fell inside it")
    return points


def _normalize(center: np.ndarray, half_extent: float, points: np.ndarray, **extra) -> dict:
    """The normalization metadata; ``points``: the normalized solid, whose ``width`` and ``height``
    (:func:`kp_core.conditioning.dimensions`, in mesh units) tell the node's conditioning what the object is."""
    width, height = dimensions(np.asarray(points, dtype=np.float64) * half_extent)
    return {
        "center": [float(c) for c in center],
        "mesh_units_per_grid_unit": float(half_extent),
        "margin": NORMALIZE_MARGIN,
        "width": width,
        "height": height,
        **extra,
    }


def make_mug(dims: MugDimensions = MugDimensions(), spacing: float = DEFAULT_SPACING, seed: int = 0) -> Shape:
    """The built-in procedural mug as a normalized solid point set (not cached: it is cheap)."""
    handle_tip = dims.outer_radius - dims.handle_offset + dims.handle_radius + dims.handle_thickness
    lo = np.array([-dims.outer_radius, -dims.outer_radius, 0.0])
    hi = np.array([handle_tip, dims.outer_radius, dims.height])
    center = (lo + hi) / 2.0
    # Farthest from the vertical axis through the centre: the handle's tip, or the far side of the
    # body (radius R about an axis |c_xy| away); and the half height.
    extremes = np.array([[handle_tip - center[0], 0.0, 0.0], [dims.outer_radius + np.hypot(*center[:2]), 0.0, 0.0], [0.0, 0.0, dims.height / 2]])
    half_extent = fitting_half_extent(extremes, NORMALIZE_MARGIN)
    points = sample_solid(
        lambda p: mug_occupancy(p * half_extent + center, dims),
        lower=(lo - center) / half_extent - spacing,
        upper=(hi - center) / half_extent + spacing,
        spacing=spacing,
        seed=seed,
    )
    normalization = _normalize(center, half_extent, points, source="procedural:mug", up_axis="z", units="m")
    return Shape(name="mug", points=torch.from_numpy(points), normalization=normalization)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _up_rotation(up_axis: str) -> np.ndarray:
    """Rotation taking the mesh's up axis to +z (right-handed)."""
    if up_axis == "z":
        return np.eye(3)
    if up_axis == "y":  # y-up (glTF, ShapeNet): (x, y, z) -> (x, -z, y)
        return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    if up_axis == "x":
        return np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")


def load_mesh_triangles(path: str | os.PathLike) -> np.ndarray:
    """All triangles of a mesh file (every part of a scene, with its transform) as (T, 3, 3) float64."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    try:
        loaded = trimesh.load(str(path), force="scene")
    except Exception as err:  # trimesh raises many types for unreadable files
        raise ValueError(f"could not read mesh {path}: {err}") from err
    meshes = loaded.dump() if hasattr(loaded, "dump") else [loaded]
    triangles = [m.triangles for m in meshes if isinstance(m, trimesh.Trimesh) and len(m.faces)]
    if not triangles:
        raise ValueError(f"mesh {path} has no triangles (a point cloud or an empty file?)")
    tris = np.concatenate(triangles).astype(np.float64)
    if not np.all(np.isfinite(tris)):
        raise ValueError(f"mesh {path} has non-finite vertex coordinates")
    return tris


def solid_voxels_from_triangles(triangles: np.ndarray, lower: np.ndarray, spacing: float, counts: np.ndarray):
    """Fill a triangle soup into a solid voxel grid, robust to holes, open tubes and several parts.

    The surface is rasterized by dense area-weighted samples, small holes (up to about two cells) are
    closed, and everything not reachable from the outside by a flood fill is solid. A cup's cavity and a
    handle's gap are reachable from outside, so they stay empty; a closed shell is filled.

    Returns:
        (nx, ny, nz) bool grid; cell ``(i, j, k)`` spans ``lower + [i, i + 1) * spacing`` etc.
    """
    from scipy import ndimage

    surface = np.zeros(tuple(counts), dtype=bool)
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    # Barycentric samples per triangle, dense enough that no cell on the surface is skipped.
    edge = np.maximum.reduce([np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1)])
    steps = np.clip(np.ceil(2.0 * edge / spacing).astype(int), 1, 512)
    for n in np.unique(steps):
        sel = steps == n
        u, v = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = u + v <= n
        w1, w2 = (u[keep] / n)[None, :, None], (v[keep] / n)[None, :, None]
        pts = a[sel][:, None] + w1 * (b[sel] - a[sel])[:, None] + w2 * (c[sel] - a[sel])[:, None]
        idx = np.floor((pts.reshape(-1, 3) - lower) / spacing).astype(int)
        idx = np.clip(idx, 0, counts - 1)
        surface[idx[:, 0], idx[:, 1], idx[:, 2]] = True

    closed = ndimage.binary_closing(surface, structure=np.ones((3, 3, 3), bool), iterations=1, border_value=0)
    padded = np.pad(closed, 1)
    labels, _ = ndimage.label(~padded)
    outside = labels == labels[0, 0, 0]
    return ~outside[1:-1, 1:-1, 1:-1]


def load_mesh_shape(
    path: str | os.PathLike,
    up_axis: str = "z",
    spacing: float = DEFAULT_SPACING,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Shape:
    """A mesh file as a normalized solid point set, cached by file content and settings."""
    path = Path(path)
    rotation = _up_rotation(up_axis)
    cache_root = Path(cache_dir or os.environ.get("KP_CACHE_DIR") or Path.home() / ".cache" / "kp_training")
    key = hashlib.sha256(
        json.dumps([SHAPE_CACHE_VERSION, _file_digest(path) if path.is_file() else str(path), up_axis, spacing, seed]).encode()
    ).hexdigest()[:20]
    cache_file = cache_root / f"{path.stem}-{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                return Shape(path.stem, torch.from_numpy(data["points"]), json.loads(str(data["normalization"])))
        except (OSError, ValueError, KeyError):
            cache_file.unlink(missing_ok=True)  # a broken cache entry is rebuilt, never trusted

    triangles = load_mesh_triangles(path) @ rotation.T
    vertices = triangles.reshape(-1, 3)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    center = (lo + hi) / 2.0
    half_extent = fitting_half_extent(vertices - center, NORMALIZE_MARGIN)
    tris = (triangles - center) / half_extent

    lower = (lo - center) / half_extent - 2 * spacing
    counts = np.ceil(((hi - center) / half_extent + 2 * spacing - lower) / spacing).astype(int)
    solid = solid_voxels_from_triangles(tris, lower, spacing, counts)
    cells = np.argwhere(solid)
    if len(cells) == 0:
        raise ValueError(f"mesh {path} encloses no volume at spacing {spacing}")
    rng = np.random.default_rng(seed)
    points = (lower + (cells + rng.random(cells.shape)) * spacing).astype(np.float32)
    normalization = _normalize(center, half_extent, points, source=str(path.resolve()), up_axis=up_axis, units="mesh")

    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_root, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, points=points, normalization=np.array(json.dumps(normalization)))
    os.replace(tmp.name, cache_file)
    return Shape(name=path.stem, points=torch.from_numpy(points), normalization=normalization)


def metres_per_unit(shape: Shape) -> float:
    """Metres per normalized unit of a shape: its own for a shape in metres (the built-in mug), else the
    built-in mug's (a mesh in unknown units is taken to be mug-sized, e.g. to place simulated cameras)."""
    norm = shape.normalization
    if norm.get("units") == "m":
        return float(norm["mesh_units_per_grid_unit"])
    return float(make_mug().normalization["mesh_units_per_grid_unit"])


def in_metres(shape: Shape, mesh_units: str) -> Shape:
    """The same shape with its normalization in metres (``units: "m"``): a mesh file written in ``mesh_units``
    (a key of :data:`MESH_UNITS`). The solid itself is normalized, so only the metadata changes."""
    if mesh_units not in MESH_UNITS:
        raise ValueError(f"mesh units must be one of {sorted(MESH_UNITS)}, got {mesh_units!r}")
    norm = shape.normalization
    if norm.get("units") == "m":
        if MESH_UNITS[mesh_units] != 1.0:
            raise ValueError(f"{shape.name} is in metres already; mesh units {mesh_units!r} do not apply")
        return shape
    factor = MESH_UNITS[mesh_units]
    metric = {**norm, "units": "m", "mesh_units": mesh_units,
              "center": [c * factor for c in norm["center"]],
              "mesh_units_per_grid_unit": norm["mesh_units_per_grid_unit"] * factor,
              "width": norm["width"] * factor, "height": norm["height"] * factor}
    return Shape(shape.name, shape.points, metric)


def trained_shape(train_config: dict) -> tuple[str, str, str | None]:
    """The shape a checkpoint's ``train_config`` names: (source, up axis, mesh units), the arguments of
    :func:`load_shape`."""
    return train_config.get("shape", "mug"), train_config.get("up_axis", "z"), train_config.get("mesh_units")


def load_trained_shape(train_config: dict) -> Shape:
    """The shape a checkpoint's ``train_config`` names, loaded as it was for training."""
    source, up_axis, mesh_units = trained_shape(train_config)
    return load_shape(source, up_axis=up_axis, mesh_units=mesh_units)


def load_shape(source: str = "mug", up_axis: str = "z", spacing: float = DEFAULT_SPACING, seed: int = 0,
               mesh_units: str | None = None) -> Shape:
    """The built-in ``"mug"`` or a mesh file path, as a normalized solid :class:`Shape`; ``mesh_units``: the
    unit the mesh file is written in (then the shape has a metric size, :func:`in_metres`)."""
    if source == "mug":
        shape = make_mug(spacing=spacing, seed=seed)
    else:
        shape = load_mesh_shape(source, up_axis=up_axis, spacing=spacing, seed=seed)
    return in_metres(shape, mesh_units) if mesh_units is not None else shape
