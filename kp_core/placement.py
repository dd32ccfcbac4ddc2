"""Where the 64^3 grid goes on an object's cloud: one rule for training inputs and for the node.

The grid origin is the object's centre as seen from above (the centre of the smallest circle enclosing
the points' x, y; the middle of their height), which turns with the object's yaw, so a rotation about the
grid's vertical axis is a rotation about an axis attached to the object. The grid's half extent is the
object's normalized half extent times a zoom (> 1 for single camera views, whose hidden side reaches
past the seen points), so the object keeps its size in grid units whatever part of it a sensor saw.
"""

from __future__ import annotations

import numpy as np

from .geometry import bounds

CENTERINGS = ("circle", "box")


def serving_metadata(inputs: str = "sensor", zoom: float = 1.0, object_scale: float = 1.0) -> dict:
    """What a checkpoint's JSON says about how its model is served (:func:`kp_core.pipeline.served_centering`):
    the inputs it was trained on ("sensor" clouds, or "solid" grids, which the node refuses) and the grid
    placement (centering: "circle" for sensor clouds, "origin" for solid grids; zoom; object scale)."""
    centering = "circle" if inputs == "sensor" else "origin"
    return {"inputs": inputs, "placement": {"zoom": zoom, "centering": centering, "object_scale": object_scale}}


def trained_inputs(metadata: dict) -> str | None:
    """The inputs a checkpoint says its model was trained on (:func:`serving_metadata`, or its training config's),
    None when it does not say."""
    return metadata.get("inputs") or (metadata.get("train_config") or {}).get("inputs")


def grid_zoom(placement: dict | None) -> float:
    """The zoom a user's cloud gets from a checkpoint's ``placement`` metadata.

    Training draws each view's scale from the augmentation range and places a grid of half extent ``zoom``
    normalized units; a real object at the trained size is scale 1, the edge of that range. Dividing the
    zoom by the range's middle (``object_scale``) shows the real object at the size the model saw most.
    """
    placement = placement or {}
    return float(placement.get("zoom", 1.0)) / float(placement.get("object_scale", 1.0))


def object_center(points: np.ndarray, centering: str = "circle", bottom: float | None = None) -> np.ndarray:
    """The grid origin for an (N, 3) cloud.

    ``"circle"``: x, y at the centre of the smallest circle enclosing the points seen from above, z in the
    middle of their height (invariant to the object's yaw); ``"box"``: the axis-aligned bounding-box centre
    (which moves with the yaw of an asymmetric object). ``bottom``: the height the object stands at (its support
    plane, :mod:`kp_core.conditioning`), used instead of the lowest point, which the plane's removal took away.
    """
    if centering not in CENTERINGS:
        raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
    lo, hi = bounds(points)
    if bottom is not None:
        lo[2] = min(float(bottom), hi[2])
    center = (lo + hi) / 2.0
    if centering == "circle":
        center[:2] = min_enclosing_circle(points[:, :2])[0]
    return center


def min_enclosing_circle(xy: np.ndarray, exact_below: int = 4096, raster: int = 512) -> tuple[np.ndarray, float]:
    """Smallest circle containing 2-D points: (centre (2,), radius).

    Up to ``exact_below`` points: exact (Welzl's algorithm on the convex hull's vertices). Above, the
    points are first binned into a ``raster`` x ``raster`` grid over their extent and the circle is the
    exact one of the bins' corners (only the outer corners of each row's occupied bins can matter): it
    still contains every point and is at most one bin diagonal (extent / raster * 1.42) too large.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) > exact_below:
        xy = _raster_outline(xy, raster)
    xy = discard_interior(xy)
    try:
        from scipy.spatial import ConvexHull, QhullError

        candidates = xy[ConvexHull(xy).vertices]
    except (QhullError, ValueError):  # collinear or too few points: every distinct point is a candidate
        candidates = np.unique(xy, axis=0)
    pts = candidates[np.random.default_rng(0).permutation(len(candidates))].tolist()
    scale = float(np.abs(candidates).max()) if len(candidates) else 0.0
    eps = 1e-12 + 1e-9 * scale

    def inside(p, c, r):
        return (p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2 <= (r + eps) ** 2

    def two(a, b):
        c = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        return c, float(np.hypot(a[0] - c[0], a[1] - c[1]))

    def three(a, b, p):
        ax, ay = b[0] - a[0], b[1] - a[1]
        bx, by = p[0] - a[0], p[1] - a[1]
        d = 2 * (ax * by - ay * bx)
        if abs(d) < 1e-18:  # collinear: the widest pair
            return max((two(a, b), two(a, p), two(b, p)), key=lambda cr: cr[1])
        ux = (by * (ax * ax + ay * ay) - ay * (bx * bx + by * by)) / d
        uy = (ax * (bx * bx + by * by) - bx * (ax * ax + ay * ay)) / d
        return (a[0] + ux, a[1] + uy), float(np.hypot(ux, uy))

    c, r = (tuple(pts[0]) if pts else (0.0, 0.0)), 0.0
    for i, p in enumerate(pts):
        if inside(p, c, r):
            continue
        c, r = tuple(p), 0.0
        for j in range(i):
            q = pts[j]
            if inside(q, c, r):
                continue
            c, r = two(p, q)
            for k in range(j):
                if not inside(pts[k], c, r):
                    c, r = three(p, q, pts[k])
    return np.array(c, dtype=np.float64), r


def _raster_outline(xy: np.ndarray, n: int) -> np.ndarray:
    """Outer corners of the occupied bins of each row of an n x n binning of ``xy`` (see above)."""
    lo, hi = bounds(xy)
    span = float((hi - lo).max())
    if span <= 0:
        return xy[:1]
    cell = span / n
    # Column by column and one flat index: half the time of the same on (N, 2) arrays.
    rows = np.minimum(((xy[:, 0] - lo[0]) / cell).astype(np.int64), n - 1)
    cols = np.minimum(((xy[:, 1] - lo[1]) / cell).astype(np.int64), n - 1)
    occupied = np.zeros(n * n, dtype=bool)
    occupied[rows * n + cols] = True
    occupied = occupied.reshape(n, n)
    rows = np.nonzero(occupied.any(axis=1))[0]
    first = occupied[rows].argmax(axis=1)  # the row's first occupied bin
    end = n - occupied[rows, ::-1].argmax(axis=1)  # one past its last
    # The row's bins lie in the rectangle [row, row + 1] x [first, end]: its four corners are all the hull needs.
    corners = np.concatenate([np.stack([r, c], 1) for r in (rows, rows + 1) for c in (first, end)])
    return lo + corners * cell


def discard_interior(xy: np.ndarray) -> np.ndarray:
    """Drop points strictly inside the octagon of the extreme points in 8 directions (Akl-Toussaint).

    They cannot be hull vertices, so neither the convex hull nor the enclosing circle changes; for a dense
    cloud this leaves a small fraction of the points.
    """
    if len(xy) < 64:
        return xy
    angles = np.arange(8) * (np.pi / 4)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    corners = xy[np.argmax(xy @ directions.T, axis=0)]  # counter-clockwise
    if len(np.unique(corners, axis=0)) < 3:  # no interior to speak of
        return xy
    inside = np.ones(len(xy), dtype=bool)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        edge = b - a
        if not edge.any():  # the same point is extreme in two directions
            continue
        inside &= edge[0] * (xy[:, 1] - a[1]) - edge[1] * (xy[:, 0] - a[0]) > 0
    return xy[~inside]
