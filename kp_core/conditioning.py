"""Input conditioning: from what a depth camera publishes to the object's points, before the grid is placed.

A cloud in a z-up frame may hold a whole tabletop scene: the table, the object, other objects, stray returns
and flying pixels at depth edges. The grid must see only the object, so:

1. **Far points** (always): points farther than ``far_factor`` object sizes from the cloud's median cannot be
   the object; they are dropped (one return at 1e30 m must not size the grid). This also keeps every later
   step's arithmetic far from overflow.
2. **Support plane** (RANSAC on a random subset): the best near-horizontal planes, each kept only when it
   *supports* something (:func:`supports`): points stand clearly above it, a good share of its own points lie
   outside the convex hull of the foot of what stands above, seen from above (a table around an object; not a
   mug's inner floor, its rim or the underside of a held mug), and nothing inside the hull of what stands above
   reaches below it. Everything on or below a support plane is dropped (its thickness measured per square of the
   object's size: a camera's noise grows with range); the object's wall is continued down through that band
   (:func:`extend_foot`), and the plane's height becomes the object's bottom for the grid's placement.
3. **Clusters**: the remaining points are binned into cells of about a twelfth of the object's size; occupied
   cells that touch (26-neighbourhood) form clusters. A cluster is plausible when its size, max(x extent,
   y extent, height), lies between ``min_size`` and ``max_size`` times the model's object size and it holds at
   least ``min_cluster_share`` of the points of the most populous such cluster. Of several, the object is the
   one whose width and height (:func:`dimensions`; heights from the support plane) are nearest the object's
   (:meth:`ObjectSize.mismatch`), or, with a hint point, the one nearest the hint. Objects of the model's
   height and width side by side cannot be told apart this way: crop the cloud or give a hint. The chosen
   cluster then takes in the clusters that fit within the object's width and height with it
   (:func:`parts_of_object`): one view can show an object in pieces (a far camera sees a mug's front and, across
   its opening, a strip of its inner back wall, with nothing between them).
4. **Sparse cells**: cells whose 3x3x3 neighbourhood holds fewer than ``sparse_fraction`` of a typical point's
   neighbourhood count link no cluster (:func:`clusters`) and are dropped: isolated returns, flying pixels
   trailing off an edge, the stray returns of a noisy table.

Before all this, an organized cloud (an image of points, as a depth camera publishes it) loses its veils
(:func:`kept_pixels`): pixels whose step to an image neighbour runs almost along the camera's ray and is long,
the mixed depths of flying pixels at a silhouette and the far side of the same step. It is exact and cheap where
the image is at hand; the node does it on each organized cloud in the camera's own frame. Then the depth noise is
averaged down along each ray over the image neighbours on the same surface (:func:`smooth_ranges`), which a
cloud no longer holds once it is unorganized. Where the world's up is known in the image's frame, the surfaces it
sees facing down from below go too (:func:`underside_pixels`): a held object's underside, which no camera above
an object on a table sees, and which made the model's answers worse (:func:`organized_cloud` does all three). An
unorganized cloud keeps its underside: without the camera, a face seen from below cannot be told from a cup's inner
floor seen from above.

An already segmented object cloud is one cluster with no support plane under it and passes unchanged but for
isolated points. Everything here is numpy and scipy (no ROS, no open3d), so training can run the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import bounds


class ConditioningError(ValueError):
    """No object can be found in the cloud (the message says why, for a user)."""


MAX_SMOOTH_PIXELS = 10


@dataclass(frozen=True)
class ConditioningConfig:
    """How the object is isolated (sizes relative to the model's object size unless in metres)."""

    enabled: bool = True
    """Plane removal, clustering and sparse cells; False: only the far-point gate."""
    far_factor: float = 50.0
    plane_tolerance_m: float = 0.003
    """Least distance from the plane that counts as above it (grows with the plane's measured noise)."""
    max_tilt_deg: float = 15.0
    plane_samples: int = 2000
    plane_hypotheses: int = 128
    min_outside_share: float = 0.3
    """A support plane has at least this share of its points outside the hull of what stands on it."""
    min_support_width: float = 0.8
    """A support plane's points reach at least this share of the width of the foot of what stands on it."""
    min_cluster_share: float = 0.1
    """A candidate cluster holds at least this share of the points of the most populous plausible one (the object
    is a dense surface; stray returns of a noisy table are not)."""
    cell_fraction: float = 1.0 / 12.0
    min_cell_m: float = 0.004
    cluster_samples: int = 60000
    min_size: float = 0.3
    max_size: float = 1.3
    sparse_fraction: float = 0.1
    veil_angle_deg: float = 10.0
    """Organized clouds: a step between image neighbours within this angle of the camera's ray is a veil (0: off)."""
    veil_jump_m: float = 0.01
    """... when it is also longer than this (shorter steps are depth noise)."""
    smooth_pixels: int = 2
    """Organized clouds: depth noise averaged over the pixels up to this many away along each image axis
    (:func:`smooth_ranges`; 0: off)."""
    smooth_radius_m: float = 0.0025
    """... and within this distance across the rays at the image's median range."""
    smooth_tolerance_m: float = 0.01
    """... whose range is within four times the image's noise of the pixel's, and never more than this."""
    underside_angle_deg: float = 45.0
    """Organized clouds whose frame's up is known: a surface facing within this angle of straight down, seen by a
    camera below it, is an object's underside (a held object seen from below), which a camera above never sees;
    it is dropped (:func:`underside_pixels`; 0: off)."""
    part_slack: float = 0.1
    """Another cluster is a part of the chosen one when both fit within the object's width and height times
    (1 + this), plus a cell (see :func:`parts_of_object`)."""
    seed: int = 0

    def validate(self) -> "ConditioningConfig":
        checks = [
            (self.far_factor > 1, "far_factor must be > 1"),
            (self.plane_tolerance_m > 0 and self.min_cell_m > 0, "plane_tolerance_m and min_cell_m must be > 0"),
            (0 <= self.max_tilt_deg < 90, "max_tilt_deg must be in [0, 90)"),
            (self.plane_samples >= 3 and self.plane_hypotheses >= 1, "plane_samples >= 3 and plane_hypotheses >= 1"),
            (0 < self.cell_fraction < 1, "cell_fraction must be in (0, 1)"),
            (0 < self.min_size < 1 < self.max_size, "need 0 < min_size < 1 < max_size"),
            (0 <= self.sparse_fraction < 1 and 0 <= self.min_outside_share <= 1,
             "sparse_fraction must be in [0, 1) and min_outside_share in [0, 1]"),
            (self.cluster_samples >= 100, "cluster_samples must be >= 100"),
            (0 <= self.veil_angle_deg < 90 and self.veil_jump_m >= 0, "veil_angle_deg must be in [0, 90), veil_jump_m >= 0"),
            (self.part_slack >= 0, "part_slack must be >= 0"),
            (0 <= self.underside_angle_deg < 90, "underside_angle_deg must be in [0, 90)"),
            (0 <= self.smooth_pixels <= MAX_SMOOTH_PIXELS and self.smooth_radius_m > 0
             and self.smooth_tolerance_m >= MIN_TOLERANCE_M,
             f"smooth_pixels must be in [0, {MAX_SMOOTH_PIXELS}], smooth_radius_m > 0, smooth_tolerance_m >= "
             f"{MIN_TOLERANCE_M}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


def veil_pixels(organized: np.ndarray, origin: np.ndarray, max_angle_deg: float, min_jump_m: float) -> np.ndarray:
    """The veils of an organized cloud: (H, W) bool.

    A step from a pixel to its right or lower neighbour that runs within ``max_angle_deg`` of the camera's ray
    through the pixel and is longer than ``min_jump_m`` crosses a depth edge; its farther end is a veil (a flying
    pixel, or the background just behind a silhouette). A surface seen within that angle of grazing goes too.

    Args:
        organized: (H, W, 3) points (NaN where the camera had no return), in any frame.
        origin: (3,) the camera's optical centre in that frame.
    """
    # float32 components and squared lengths, no square root or division, on the flat image (contiguous: several
    # times faster than 2-D slices). Only the steps longer than the jump (a few percent of a camera's image: its
    # depth edges) get the ray test, on those pixels alone.
    points = np.asarray(organized, dtype=np.float32)
    height, width = points.shape[:2]
    x, y, z = (np.ascontiguousarray(points[..., i]).ravel() for i in range(3))
    ox, oy, oz = (np.float32(v) for v in np.asarray(origin, dtype=np.float64))
    cos2 = np.float32(np.cos(np.radians(max_angle_deg)) ** 2)
    jump2 = np.float32(min_jump_m**2)
    veil = np.zeros(height * width, dtype=bool)
    for step in (1, width):  # to the right-hand neighbour, to the one below
        s2 = squared_steps(x, y, z, step)
        first = np.flatnonzero(s2 > jump2)  # False where either end is NaN
        if step == 1:
            first = first[first % width != width - 1]  # the last column has no right-hand neighbour
        second = first + step
        dx, dy, dz, s2 = x[second] - x[first], y[second] - y[first], z[second] - z[first], s2[first]
        rx, ry, rz = x[first] - ox, y[first] - oy, z[first] - oz
        r2 = rx * rx + ry * ry + rz * rz
        along = dx * rx + dy * ry + dz * rz
        edge = along * along > cos2 * s2 * r2
        fx, fy, fz = x[second] - ox, y[second] - oy, z[second] - oz
        farther = fx * fx + fy * fy + fz * fz > r2
        veil[second[edge & farther]] = True
        veil[first[edge & ~farther]] = True
    return veil.reshape(height, width)


def squared_steps(x: np.ndarray, y: np.ndarray, z: np.ndarray, step: int) -> np.ndarray:
    """(N - step,) squared distance from each of the points (x, y, z), each (N,), to the one ``step`` later."""
    total = np.subtract(x[step:], x[:-step])
    total *= total
    for c in (y, z):
        d = np.subtract(c[step:], c[:-step])
        d *= d
        total += d
    return total


def smooth_ranges(organized: np.ndarray, keep: np.ndarray, origin: np.ndarray, max_pixels: int, radius_m: float,
                  max_tolerance_m: float) -> np.ndarray:
    """An organized cloud with its depth noise averaged down: (H, W, 3) points, of the input's dtype.

    Each kept pixel moves along its ray to the mean of its range and those of the pairs of kept pixels k = 1 .. n
    columns to either side of which both lie within a tolerance of its own, then likewise along its column
    (edge-preserving smoothing one image axis at a time, as depth cameras' own spatial filters do). A depth
    camera's noise lies along the ray and one surface's range changes about linearly across a few pixels, so the
    mean keeps the surface and divides the noise. Where the ranges break away (a depth edge, another surface, a
    flying pixel behind), a pair is left out; taking neighbours in pairs also keeps a range ramp (a wall seen at
    a grazing angle) ending where it ends.

    - The tolerance is four times the image's own noise (:func:`depth_noise`), within [1 mm, ``max_tolerance_m``]:
      a wider one would round the creases of a sharp camera's view (a cup's rim and foot seen from above).
    - n covers ``radius_m`` at the image's median range (:func:`pixel_footprint`), within [1, ``max_pixels``]: a
      distant object spans few pixels, and a wider window would blur its parts into each other.

    Args:
        organized: (H, W, 3) points (NaN where the camera had no return), in any frame.
        keep: (H, W) bool, the pixels that are smoothed and that take part (:func:`kept_pixels`).
        origin: (3,) the camera's optical centre in that frame.
    """
    organized = np.asarray(organized)
    # Camera-relative rays, a component at a time (float32 holds them; the output keeps the input's precision).
    rays = [(organized[..., c] - origin[c]).astype(np.float32) for c in range(3)]
    ranges = np.sqrt(rays[0] * rays[0] + rays[1] * rays[1] + rays[2] * rays[2])
    # Pixels not kept get a range no tolerance reaches (finite, so that a weight of 0 zeroes it).
    smoothed = np.where(keep, ranges, np.float32(FAR_RANGE_M))
    tolerance = np.float32(np.clip(NOISE_TOLERANCE * depth_noise(smoothed), MIN_TOLERANCE_M, max_tolerance_m))
    footprint = pixel_footprint(rays, ranges, keep)
    pixels = int(np.clip(radius_m // footprint, 1, max_pixels)) if footprint > 0 else max_pixels
    for axis in (1, 0):
        smoothed = _smooth_along(smoothed, axis, pixels, tolerance)
    stretch = np.where(keep, smoothed, ranges)
    stretch /= np.maximum(ranges, np.float32(1e-6))  # NaN where the camera had no return: those stay NaN
    stretch -= 1
    out = np.array(organized, copy=True)
    for c in range(3):
        rays[c] *= stretch
        out[..., c] += rays[c]
    return out


FAR_RANGE_M = 1e6
MIN_TOLERANCE_M = 0.001
NOISE_TOLERANCE = 4.0
EDGE_SECOND_DIFFERENCE_M = 0.05
ESTIMATE_ROW_STRIDE = 4


def pixel_footprint(rays: list[np.ndarray], ranges: np.ndarray, keep: np.ndarray,
                    row_stride: int = ESTIMATE_ROW_STRIDE, samples: int = 2048) -> float:
    """Metres between neighbouring pixels' rays at the image's median range (0 without two neighbouring returns):
    the angle between the rays of kept row neighbours (about ``samples`` pairs from every ``row_stride``-th row)
    times the median range of those pixels.

    Args:
        rays: the (H, W) x, y and z components of each pixel's point less the camera's centre.
        ranges: (H, W) their lengths.
    """
    both = keep[::row_stride, :-1] & keep[::row_stride, 1:]
    pairs = np.flatnonzero(both)
    if not pairs.size:
        return 0.0
    pairs = pairs[:: max(1, pairs.size // samples)]
    row, column = np.divmod(pairs, both.shape[1])
    row *= row_stride
    reach = ranges[row, column]
    turn = sum((r[row, column] / reach - r[row, column + 1] / ranges[row, column + 1]) ** 2 for r in rays)
    return float(np.sqrt(np.median(turn)) * np.median(reach))


def depth_noise(ranges: np.ndarray, row_stride: int = ESTIMATE_ROW_STRIDE) -> float:
    """The image's depth noise (standard deviation along the ray, metres; 0 without three neighbouring returns),
    from the second differences of the ranges along its rows (every ``row_stride``-th row): a surface's range is
    nearly linear over three pixels, so what remains is noise, whose variance it has six times. Steps over depth
    edges and pixels without a return (:data:`FAR_RANGE_M`) are left out; the median makes the estimate robust to
    the rest.

    Args:
        ranges: (H, W) ranges, :data:`FAR_RANGE_M` where there is no return to use.
    """
    rows = ranges[::row_stride]
    second = np.abs(rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:])
    returns = rows < FAR_RANGE_M / 2
    usable = second[(second < EDGE_SECOND_DIFFERENCE_M) & returns[:, :-2] & returns[:, 1:-1] & returns[:, 2:]]
    return float(np.median(usable)) / (0.6745 * np.sqrt(6.0)) if usable.size else 0.0


def _smooth_along(ranges: np.ndarray, axis: int, half_window: int, tolerance: np.float32) -> np.ndarray:
    """(H, W) ranges, each replaced by the mean of itself and the pairs of pixels k = 1 .. ``half_window`` before
    and after it along ``axis`` of which both lie within ``tolerance`` of it.

    Taking neighbours in pairs keeps a surface's range ramp (a wall seen at a grazing angle) exactly where it ends:
    at its last pixel a one-sided mean would pull it several millimetres back along the ramp."""
    size = ranges.shape[axis]
    padding = [(0, 0), (0, 0)]
    padding[axis] = (half_window, half_window)
    padded = np.pad(ranges, padding, constant_values=np.float32(FAR_RANGE_M))
    total = np.zeros_like(ranges)
    count = np.ones_like(ranges)
    before, after, size_of = np.empty_like(ranges), np.empty_like(ranges), np.empty_like(ranges)
    near, gap = np.empty(ranges.shape, dtype=bool), np.empty(ranges.shape, dtype=bool)
    for k in range(1, half_window + 1):
        for step, offset in ((before, half_window - k), (after, half_window + k)):
            neighbour = padded[:, offset:offset + size] if axis == 1 else padded[offset:offset + size]
            np.subtract(neighbour, ranges, out=step)
        np.less(np.abs(before, out=size_of), tolerance, out=near)
        np.less(np.abs(after, out=size_of), tolerance, out=gap)
        near &= gap
        before += after
        before *= near
        total += before
        count += near  # a pair: counted twice, below
    count *= 2
    count -= 1  # the pixel itself once
    total /= count
    total += ranges
    return total


def organized_cloud(organized: np.ndarray, cfg: ConditioningConfig, origin: np.ndarray | None = None,
                    up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An organized cloud (H, W, 3) as the conditioning takes it: its points with the depth noise averaged down
    (:func:`smooth_ranges`, with ``smooth_pixels``; as given with 0 or with conditioning off) and the (H, W)
    pixels to use (:func:`kept_pixels`, and with ``up``, the world's up direction in the cloud's frame, not the
    object's underside: :func:`underside_pixels`). ``origin``: the camera's centre, default the frame's origin."""
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    keep = kept_pixels(organized, cfg, origin)
    if cfg.enabled and cfg.smooth_pixels > 0 and min(keep.shape) > 1 and keep.any():
        # Only the rectangle that holds returns (an object cloud published as an image is mostly empty); it starts
        # on a row the noise and footprint estimates sample, so that they read the same rows as on the whole image.
        rows, columns = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
        first_row = rows[0] - rows[0] % ESTIMATE_ROW_STRIDE
        box = slice(first_row, rows[-1] + 1), slice(columns[0], columns[-1] + 1)
        organized = np.array(organized, copy=True)
        organized[box] = smooth_ranges(organized[box], keep[box], origin, cfg.smooth_pixels, cfg.smooth_radius_m,
                                       cfg.smooth_tolerance_m)
    if cfg.enabled and up is not None and cfg.underside_angle_deg > 0 and min(keep.shape) > 2 * UNDERSIDE_STEP:
        keep &= ~underside_pixels(organized, keep, origin, up, cfg.underside_angle_deg)
    return organized, keep


UNDERSIDE_STEP = 2
"""Pixels from a pixel to the neighbours its surface normal is taken from (after smoothing: over such a baseline a
camera's remaining noise tilts the normal by a few degrees)."""


def underside_pixels(organized: np.ndarray, keep: np.ndarray, origin: np.ndarray, up: np.ndarray,
                     max_angle_deg: float, step: int = UNDERSIDE_STEP) -> np.ndarray:
    """(H, W) bool: the kept pixels that show a surface facing within ``max_angle_deg`` of straight down, from a
    camera below the point: an object's underside (a held object seen from below). A camera above an object, as
    in every cloud the model was trained on, sees no such surface: this is then empty, for the cost of one product
    of the image with ``up``.

    A pixel's normal is the cross product of its tangents along the row and the column: each the step between its
    kept neighbours ``step`` pixels to either side, or from the pixel to the one kept neighbour at a silhouette (a
    pixel with neither has none); the normal is turned towards the camera.

    Args:
        organized: (H, W, 3) points (NaN where the camera had no return), in any frame.
        keep: (H, W) bool, the pixels to judge and to take normals from.
        origin: (3,) the camera's optical centre in that frame; up: (3,) the world's up direction in it.
    """
    up = np.asarray(up, dtype=np.float32)
    up = up / np.linalg.norm(up)
    points = np.asarray(organized, dtype=np.float32)
    origin = np.asarray(origin, dtype=np.float32)
    out = np.zeros(keep.shape, dtype=bool)
    rows, columns = np.nonzero(keep & (points @ up > origin @ up))  # the camera below the point (NaN: False)
    if not len(rows):
        return out
    seen = points[rows, columns]
    tangents = []
    for along_row, along_column in ((0, step), (step, 0)):
        ahead = _kept_neighbour(points, keep, rows + along_row, columns + along_column)
        behind = _kept_neighbour(points, keep, rows - along_row, columns - along_column)
        tangent = ahead - behind
        for neighbour, sign in ((ahead, 1.0), (behind, -1.0)):  # a silhouette: one side only
            one = np.isnan(tangent[:, 0]) & np.isfinite(neighbour[:, 0])
            tangent[one] = sign * (neighbour[one] - seen[one])
        tangents.append(tangent)
    normal = np.cross(tangents[0], tangents[1])
    facing = normal @ up
    facing *= np.sign(((origin - seen) * normal).sum(axis=1))  # the normal turned towards the camera
    down = facing < -np.cos(np.radians(max_angle_deg)) * np.linalg.norm(normal, axis=1)  # NaN: False
    out[rows[down], columns[down]] = True
    return out


def _kept_neighbour(points: np.ndarray, keep: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(N, 3) the points of pixels (``rows``, ``columns``): NaN where one is outside the image or not kept."""
    h, w = keep.shape
    inside = (rows >= 0) & (rows < h) & (columns >= 0) & (columns < w)
    rows, columns = np.where(inside, rows, 0), np.where(inside, columns, 0)
    return np.where((inside & keep[rows, columns])[:, None], points[rows, columns], np.float32(np.nan))


def kept_pixels(organized: np.ndarray, cfg: ConditioningConfig, origin: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: the finite pixels of an organized cloud (H, W, 3) but its veils (:func:`veil_pixels`; none with
    ``veil_angle_deg`` 0 or with conditioning off). ``origin``: the camera's centre, default the frame's origin (a
    depth camera publishes in its own optical frame)."""
    organized = np.asarray(organized)
    keep = np.isfinite(organized[..., 0]) & np.isfinite(organized[..., 1]) & np.isfinite(organized[..., 2])
    if cfg.enabled and cfg.veil_angle_deg > 0 and min(organized.shape[:2]) > 1:
        keep &= ~veil_pixels(organized, np.zeros(3) if origin is None else origin, cfg.veil_angle_deg, cfg.veil_jump_m)
    return keep


MAX_THICKENING = 3.0
"""A plane lies at most this many times its own tolerance thick anywhere (a slice through an object's walls
would otherwise look like a very noisy plane)."""


@dataclass
class Plane:
    """A plane n . p + d = 0 with its unit normal pointing up, and how thick its points lie."""

    normal: np.ndarray  # (3,)
    offset: float
    tolerance: float  # metres: points within this of the plane belong to it

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of (N, 3) points above the plane."""
        return points @ self.normal + self.offset

    def z_at(self, xy: np.ndarray) -> float:
        """The plane's z at a horizontal position."""
        n = self.normal
        return float(-(n[0] * xy[0] + n[1] * xy[1] + self.offset) / n[2])

    def thickness(self, sample: np.ndarray, tile: float, cell: float) -> "Thickness":
        """How thick the plane lies, square by square: 3 robust standard deviations of the heights of the ``sample``
        points near the plane in each ``tile`` x ``tile`` square (at least :attr:`tolerance`), leaving out what
        lies inside the convex hull (seen from above, grown by ``cell``) of anything standing clearly above the
        plane: an object's lowest millimetres and a cup's inner floor are not the plane's noise. A depth camera's
        noise grows with range, so the far part of a table lies thicker than the near part."""
        heights = self.height(sample)
        standing = sample[heights > max(3 * self.tolerance, 0.01)]
        near = np.abs(heights) <= 3 * self.tolerance
        if len(standing) >= 3:
            near &= outside_hull(sample[:, :2], standing[:, :2], cell)
        near = sample[near]
        if len(near) < 10:
            return Thickness(np.zeros(2), np.ones(2, dtype=np.int64), np.full(1, self.tolerance), tile, self.tolerance)
        # Thickness per tile of a small dense table over the near points' extent; points beyond it get the
        # plane's own tolerance.
        lo = bounds(near[:, :2])[0]
        tiles = ((near[:, :2] - lo) / tile).astype(np.int64)  # >= 0: truncation floors
        shape = bounds(tiles)[1] + 1
        flat = tiles[:, 0] * shape[1] + tiles[:, 1]
        heights = self.height(near)
        squares, counts, middle = group_medians(flat, heights)
        _, _, deviation = group_medians(flat, np.abs(heights - middle[np.searchsorted(squares, flat)]))
        sigma, full = 1.4826 * deviation[counts >= 5], squares[counts >= 5]
        table = np.full(int(shape[0] * shape[1]), self.tolerance)
        table[full] = np.minimum(np.maximum(self.tolerance, 3.0 * sigma), MAX_THICKENING * self.tolerance)
        return Thickness(lo, shape, table, tile, self.tolerance)


def sorted_groups(group: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N,) ``values`` sorted within each group of (N,) integer ``group`` labels: (G,) sorted labels, where each
    group starts in the sorted values and how many it holds, and the (N,) sorted values (group by group)."""
    order = np.lexsort((values, group))
    group, values = group[order], values[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return group[starts], starts, np.diff(np.r_[starts, len(group)]), values


def group_medians(group: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The median of (N,) ``values`` in each group of (N,) integer ``group`` labels, as np.median computes it
    (the mean of the two middle values of an even count): (G,) sorted labels, their counts and medians."""
    labels, starts, counts, values = sorted_groups(group, values)
    return labels, counts, (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2


@dataclass
class Thickness:
    """A plane's thickness per square (:meth:`Plane.thickness`): built once from a sample, read at any points."""

    lo: np.ndarray  # (2,) the first square's corner
    shape: np.ndarray  # (2,) squares along x and y
    table: np.ndarray  # (shape[0] * shape[1],) metres
    tile: float
    tolerance: float  # outside the squares

    def split(self, points: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) bool masks of (N, 3) points at ``heights`` above the plane: above the thickness under them, and
        within it (the plane's own points). Only the points whose height lies between the thinnest and the
        thickest square need their square looked up (:meth:`at`): few, on a whole scene's table."""
        thinnest, thickest = min(self.table.min(), self.tolerance), max(self.table.max(), self.tolerance)
        magnitude = np.abs(heights)
        above, within = heights > thickest, magnitude <= thinnest
        unsure = np.flatnonzero((magnitude > thinnest) & (magnitude <= thickest))
        thickness = self.at(points[unsure])
        above[unsure] = heights[unsure] > thickness
        within[unsure] = magnitude[unsure] <= thickness
        return above, within

    def at(self, points: np.ndarray) -> np.ndarray:
        """(N,) the thickness under each of (N, 3) points."""
        ix = np.floor((points[:, 0] - self.lo[0]) / self.tile)
        iy = np.floor((points[:, 1] - self.lo[1]) / self.tile)
        inside = (ix >= 0) & (ix < self.shape[0]) & (iy >= 0) & (iy < self.shape[1])
        index = np.where(inside, ix * self.shape[1] + iy, 0).astype(np.int64)
        return np.where(inside, self.table[index], self.tolerance)


@dataclass
class Conditioned:
    """The object's points and what was done to find them."""

    points: np.ndarray  # (M, 3)
    floor_z: float | None = None  # the support plane's height under the object, None without one
    removed: dict = field(default_factory=dict)  # step -> points dropped
    clusters: int = 1
    summary: str = ""
    extended: int = 0  # the last this-many points continue the wall down to the plane (:func:`extend_foot`)

    @property
    def returns(self) -> np.ndarray:
        """(M - extended, 3) the points that came from the cloud (all but the wall's copies)."""
        return self.points[: len(self.points) - self.extended]


def robust_center(points: np.ndarray, samples: int = 2048) -> np.ndarray:
    """(3,) per-axis median of an evenly strided subset of (N, 3) points (one far point cannot move it)."""
    step = max(1, len(points) // samples)
    return np.median(np.asarray(points[::step], dtype=np.float64), axis=0)


def within(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: points in the cube of half side ``radius`` about ``center`` (column by column: cheap)."""
    keep = np.abs(points[:, 0] - center[0]) <= radius
    keep &= np.abs(points[:, 1] - center[1]) <= radius
    keep &= np.abs(points[:, 2] - center[2]) <= radius
    return keep


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane of (N >= 3, 3) points: (unit normal with n_z >= 0, offset d) with n . p + d = 0."""
    mean = points.mean(axis=0)
    normal = np.linalg.svd(points - mean, full_matrices=False)[2][-1]
    if normal[2] < 0:
        normal = -normal
    return normal, float(-normal @ mean)


def horizontal_planes(points: np.ndarray, cfg: ConditioningConfig, rng: np.random.Generator,
                      max_planes: int = 3) -> list[Plane]:
    """Up to ``max_planes`` distinct near-horizontal planes (normal within ``max_tilt_deg`` of +z) holding the
    most of ``points`` (a random subset of a cloud), best first: RANSAC over ``plane_hypotheses`` triples, each
    refined by least squares; only planes holding at least 5 % of the points. (A cup's inner floor can hold more
    points than the ring of table around it: the caller tests each for support.)

    Half the triples are drawn at random, half among points of nearly the same height (neighbours in z order): a
    horizontal layer holding a tenth of the points gives a pure random triple once in a thousand draws, but a
    pure same-height triple about once in ten."""
    if len(points) < 3:
        return []
    sample = points[np.argsort(points[:, 2], kind="stable")]
    n, half = len(sample), cfg.plane_hypotheses // 2
    spread = max(2, n // 100)
    anchors = rng.integers(0, n, size=half)
    layered = np.clip(anchors[:, None] + rng.integers(-spread, spread + 1, size=(half, 2)), 0, n - 1)
    index = np.concatenate([rng.integers(0, n, size=(cfg.plane_hypotheses - half, 3)),
                            np.concatenate([anchors[:, None], layered], axis=1)])
    triples = sample[index]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    normals *= np.sign(normals[:, 2:3]) + (normals[:, 2:3] == 0)
    upright = normals[:, 2] >= np.cos(np.radians(cfg.max_tilt_deg))
    normals, anchors = normals[upright], triples[ok][upright, 0]
    if not len(normals):
        return []
    offsets = -(normals * anchors).sum(axis=1)
    # MSAC scores (truncated quadratic): a plane between two parallel layers a few millimetres apart, which
    # grazes both, scores below either layer's own plane.
    scores = sample @ normals.T  # (points, hypotheses), computed in place from here
    scores += offsets
    scores /= cfg.plane_tolerance_m
    np.square(scores, out=scores)
    np.subtract(1.0, scores, out=scores)
    scores = np.maximum(scores, 0.0, out=scores).sum(axis=0)
    planes, middle = [], sample.mean(axis=0)
    for best in np.argsort(-scores):
        if scores[best] < max(3, 0.05 * len(sample)) * 2 / 3 or len(planes) == max_planes:
            break
        height = float(middle @ normals[best] + offsets[best])
        if any(abs(float(middle @ p.normal + p.offset) - height) < cfg.plane_tolerance_m for p in planes):
            continue  # the same plane as one already found
        # Refit on the hypothesis's core only: vertical walls cross every horizontal band, and their points would
        # tilt the fit and widen its noise towards a neighbouring layer.
        residual = sample @ normals[best] + offsets[best]
        core = sample[np.abs(residual) <= cfg.plane_tolerance_m / 2]
        if len(core) < 3:
            continue
        normal, offset = fit_plane(core)
        if normal[2] < np.cos(np.radians(cfg.max_tilt_deg)):
            continue
        residual = sample @ normal + offset
        residual = residual[np.abs(residual) <= cfg.plane_tolerance_m]
        sigma = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        planes.append(Plane(normal, offset, max(cfg.plane_tolerance_m, 3.0 * sigma)))
    return planes


def _cell_keys(cells: np.ndarray, dims: np.ndarray) -> np.ndarray:
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]


def outside_hull(xy: np.ndarray, hull_of: np.ndarray, slack: float) -> np.ndarray:
    """(N,) bool: 2-D points farther than ``slack`` outside the convex hull of ``hull_of`` (all of them when the
    hull is degenerate)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        equations = ConvexHull(hull_of).equations  # (F, 3): n . p + d <= 0 inside
    except (QhullError, ValueError):
        return np.ones(len(xy), dtype=bool)
    return (xy @ equations[:, :2].T + equations[:, 2]).max(axis=1) > slack


def covers_an_area(points: np.ndarray, cell: float, share: float = 0.3) -> bool:
    """Whether points seen from above fill an area rather than trace a line: at least ``share`` of the squares of
    side ``cell`` they occupy have three or four of their four side neighbours occupied too. A table, or a ring
    of it two squares wide, does; a band of an object's walls cut by a horizontal plane (one square wide) does
    not. ``points`` must be dense (a whole cloud, or an evenly strided part of it; not a random subset), or the
    squares have holes."""
    if len(points) < 10:
        return False
    ij = ((points[:, :2] - bounds(points[:, :2])[0]) / cell).astype(np.int64) + 1  # >= 0: truncation floors
    shape = bounds(ij)[1] + 2
    if int(shape[0]) * int(shape[1]) > DENSE_CELLS:  # larger than any table this node looks at
        return True
    grid = np.zeros(tuple(shape), dtype=bool)
    grid[ij[:, 0], ij[:, 1]] = True
    neighbours = (grid[:-2, 1:-1].astype(np.int8) + grid[2:, 1:-1] + grid[1:-1, :-2] + grid[1:-1, 2:])
    inner = grid[1:-1, 1:-1]
    return float((neighbours[inner] >= 3).mean()) >= share


def clearance(thickness):
    """How high above a plane a point stands clearly on it, where the plane lies ``thickness`` thick (metres, a
    scalar or an array)."""
    return np.maximum(2 * thickness, 0.01)


def supports(plane: Plane, thickness: Thickness, points: np.ndarray, cell: float, cfg: ConditioningConfig,
             cloud: np.ndarray) -> bool:
    """Whether ``plane`` (its ``thickness`` from ``points``) is a support under ``points`` (a random subset of
    ``cloud``, the whole cloud).

    Something stands clearly on it (higher than twice the plane's local thickness and 1 cm); its own points crowd
    about it and fill an area (:func:`covers_an_area`) as a surface's do, and reach at least
    ``min_support_width`` of the width of the foot of what stands on it (its lowest two ``cell``, or tenth); at least
    ``min_outside_share`` of them lie outside the convex hull of that foot, seen from above (a table around an
    object does, however far a handle or a spout overhangs it; a cup's inner floor, its rim or the underside of a
    held cup do not); and almost nothing inside the hull of all that stands on it reaches below the plane (a
    cup's walls do, below its inner floor).
    """
    height = plane.height(points)
    thickness = thickness.at(points)
    band = np.abs(height) <= thickness
    on = points[band]
    clear = height > clearance(thickness)
    if clear.sum() < 3 or len(on) < 3:
        return False
    standing, rise = points[clear], height[clear]
    foot = standing[rise <= max(rise.min() + 2 * cell, float(np.percentile(rise, 10)))]
    if len(foot) < 3 or dimensions(on, trim=1.0)[0] < cfg.min_support_width * dimensions(foot, trim=10.0)[0]:
        return False
    # A surface's points crowd about the plane (normal noise: 68 % within a third of its 3-sigma band); walls
    # that merely cross the band spread evenly through it (33 %).
    if float((np.abs(height[band]) <= thickness[band] / 3).mean()) < 0.5:
        return False
    if float(outside_hull(on[:, :2], foot[:, :2], cell).mean()) < cfg.min_outside_share:
        return False
    below = points[height < -thickness]
    hanging = int((~outside_hull(below[:, :2], standing[:, :2], -cell)).sum()) if len(below) else 0
    if hanging > 0.02 * len(standing):
        return False
    # The dearest test last. An evenly strided part of the plane's points (a dense cloud keeps several per square),
    # gathered by index: copying all of a scene's table first would cost more than the test.
    on = np.flatnonzero(np.abs(plane.height(cloud)) <= plane.tolerance)
    return covers_an_area(cloud[on[:: max(1, len(on) // 40000)]], 2 * cell)


DENSE_CELLS = 1 << 21
"""Up to this many cells in the binned box, cells are looked up in a dense table (no sorting)."""


@dataclass
class Clusters:
    """Occupied cells of a cloud grouped into touching clusters."""

    keys: np.ndarray  # (C,) sorted cell keys
    label: np.ndarray  # (C,) cluster of each cell
    count: np.ndarray  # (C,) points of the binned subset in each cell
    sparse: np.ndarray  # (C,) bool: cells too sparse to link (see clusters)
    point_cell: np.ndarray  # (N,) index into keys of each binned point's cell
    lo: np.ndarray  # (3,) the cells' origin
    dims: np.ndarray  # (3,) cells per axis (with a one-cell border)
    cell: float

    def boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """(C, 3) lowest and highest corners of each cluster's cells: from the cells (a few thousand), not the
        points, so exact to a cell."""
        n = int(self.label.max()) + 1
        index = np.stack(np.unravel_index(self.keys, tuple(self.dims)), axis=1).astype(np.float64)
        lo, hi = np.full((n, 3), np.inf), np.full((n, 3), -np.inf)
        np.minimum.at(lo, self.label, index)
        np.maximum.at(hi, self.label, index + 1)
        return self.lo + lo * self.cell, self.lo + hi * self.cell

    def cells_of(self, points: np.ndarray) -> np.ndarray:
        """(N,) index into :attr:`keys` of each point's cell, -1 where the cell is not occupied."""
        cells = np.floor((points - self.lo) / self.cell).astype(np.int64)
        inside = np.all((cells >= 0) & (cells < self.dims), axis=1)
        keys = _cell_keys(np.clip(cells, 0, self.dims - 1), self.dims)
        total = int(np.prod(self.dims))
        if total <= DENSE_CELLS:
            table = np.full(total, -1, dtype=np.int64)
            table[self.keys] = np.arange(len(self.keys))
            return np.where(inside, table[keys], -1)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        return np.where(inside & (self.keys[pos] == keys), pos, -1)


def clusters(points: np.ndarray, cell: float, sparse_fraction: float = 0.0) -> Clusters:
    """Bin (N, 3) points into cubic cells of side ``cell`` and label the touching groups of occupied cells.

    Cells whose 3x3x3 neighbourhood holds fewer than ``sparse_fraction`` of the typical point's neighbourhood
    count (the median over points) link nothing: flying pixels trailing off an object and the stray returns of a
    noisy table must not join the object to the table or to each other. Each stays a cluster of its own.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lo = bounds(points)[0] - cell  # a border cell on each side: neighbour keys never wrap
    cells = ((points - lo) / cell).astype(np.int64)  # >= 0: truncation floors
    dims = bounds(cells)[1] + 2
    point_keys = _cell_keys(cells, dims)
    total = int(np.prod(dims))
    if total <= DENSE_CELLS:  # counting into a table: no sort
        per_cell = np.bincount(point_keys, minlength=total)
        keys = np.flatnonzero(per_cell)
        count = per_cell[keys]
        table = np.zeros(total, dtype=np.int64)
        table[keys] = np.arange(len(keys))
        point_cell = table[point_keys]
    else:
        keys, point_cell, count = np.unique(point_keys, return_inverse=True, return_counts=True)
    offsets = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
               if (dx, dy, dz) > (0, 0, 0)]  # one of each pair of opposite neighbours
    rows, cols = [], []
    for dx, dy, dz in offsets:
        target = keys + (dx * dims[1] + dy) * dims[2] + dz
        pos = np.clip(np.searchsorted(keys, target), 0, len(keys) - 1)
        hit = keys[pos] == target
        rows.append(np.nonzero(hit)[0])
        cols.append(pos[hit])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    density = count.astype(np.int64).copy()
    density += np.bincount(rows, weights=count[cols], minlength=len(keys)).astype(np.int64)
    density += np.bincount(cols, weights=count[rows], minlength=len(keys)).astype(np.int64)
    order = np.argsort(density, kind="stable")
    typical = density[order][np.searchsorted(np.cumsum(count[order]), count.sum() / 2)]  # median over points
    sparse = density < sparse_fraction * typical
    linked = ~sparse[rows] & ~sparse[cols]
    rows, cols = rows[linked], cols[linked]
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(keys), len(keys)))
    _, label = connected_components(graph, directed=False)
    return Clusters(keys, label, count, sparse, point_cell, lo, dims, cell)


DIRECTIONS = np.stack([np.cos(np.arange(8) * np.pi / 8), np.sin(np.arange(8) * np.pi / 8)], axis=1)
"""Eight horizontal directions, 22.5 deg apart: a width measured along all of them hardly depends on the yaw."""


def dimensions(points: np.ndarray, trim: float = 0.0) -> tuple[float, float]:
    """(width, height) of (N, 3) points: the largest horizontal extent along :data:`DIRECTIONS` and the vertical
    extent; ``trim`` (percent) ignores that share of the points at each end (stray returns)."""
    def extent(values):
        if trim <= 0:
            lo, hi = bounds(values.reshape(len(values), -1))
            return (hi - lo).reshape(values.shape[1:])
        lo, hi = np.percentile(values, [trim, 100 - trim], axis=0)
        return hi - lo

    return float(extent(points[:, :2] @ DIRECTIONS.T).max()), float(extent(points[:, 2]))


@dataclass(frozen=True)
class ObjectSize:
    """The model's object in metres: its width (:func:`dimensions`) and height."""

    width: float
    height: float

    @property
    def size(self) -> float:
        return max(self.width, self.height)

    def mismatch(self, width: float, height: float) -> float:
        """How far a cluster's (width, height) is from the object's, in log ratios. The height counts twice (a
        view from any side shows all of it); a width below the object's counts half (one view shows part of the
        object's width), above it in full."""
        w = np.log(max(width, 1e-9) / self.width)
        return 2.0 * abs(np.log(max(height, 1e-9) / self.height)) + (w if w > 0 else -0.5 * w)


def choose_object(points: np.ndarray, cl: Clusters, cells: np.ndarray, obj: ObjectSize, cfg: ConditioningConfig,
                  hint: np.ndarray | None = None, floor: Plane | None = None) -> tuple[int, str]:
    """The label of the object's cluster (see the module's docstring), and a line saying what was chosen.

    Raises:
        ConditioningError: no cluster has a plausible size.
    """
    size = obj.size
    labels = cl.label[cells]
    n = int(cl.label.max()) + 1
    lo, hi = cl.boxes()
    counts = np.bincount(cl.label, weights=cl.count, minlength=n).astype(np.int64)
    extent = hi - lo
    sizes = extent.max(axis=1)
    # The cells' boxes are up to a cell too large on each side: they only narrow the search down, and the
    # clusters they leave are measured on their points.
    plausible = (sizes + 2 * cl.cell >= cfg.min_size * size) & (sizes <= cfg.max_size * size + 2 * cl.cell)
    plausible &= counts >= 3
    if plausible.any():
        plausible &= counts >= cfg.min_cluster_share * counts[plausible].max()
    for c in np.nonzero(plausible)[0]:
        mine = points if n == 1 else points[labels == c]
        lo[c], hi[c] = bounds(mine)
        extent[c] = hi[c] - lo[c]
        sizes[c] = extent[c].max()
        plausible[c] = cfg.min_size * size <= sizes[c] <= cfg.max_size * size + cl.cell
    if not plausible.any():
        largest = int(np.argmax(counts))
        raise ConditioningError(
            f"no cluster of the cloud has the model's object size ({size * 1000:.0f} mm): {n} clusters, the largest "
            f"({counts[largest]} points) measures {' x '.join(f'{v * 1000:.0f}' for v in extent[largest])} mm; "
            "crop the cloud around the object or set object_size")
    candidates = np.nonzero(plausible)[0]
    if hint is not None:
        nearest = np.linalg.norm(np.clip(hint, lo[candidates], hi[candidates]) - hint, axis=1)
        chosen = int(candidates[np.argmin(nearest)])
        rule = "nearest the hint"
    elif len(candidates) == 1:
        chosen, rule = int(candidates[0]), "the only one"
    else:  # stray returns stuck to a cluster must not decide: trimmed dimensions
        mismatch = []
        for c in candidates:
            mine = points[labels == c]
            mine = mine[:: max(1, len(mine) // 4000)]  # an evenly strided subset: percentiles need no more
            width, height = dimensions(mine, trim=2.0)
            if floor is not None:  # the plane took the object's lowest millimetres: measure from it
                height = float(np.percentile(mine[:, 2], 98)) - floor.z_at(mine[:, :2].mean(axis=0))
            mismatch.append(obj.mismatch(width, height))
        chosen = int(candidates[int(np.argmin(mismatch))])
        rule = "width and height nearest the object's"
    line = (f"{n} clusters, {len(candidates)} of plausible size; chose {rule} "
            f"({sizes[chosen] * 1000:.0f} mm, {counts[chosen]} points binned)")
    return chosen, line


def parts_of_object(points: np.ndarray, cl: Clusters, labels: np.ndarray, chosen: int, obj: ObjectSize,
                    cfg: ConditioningConfig, floor: Plane | None = None) -> np.ndarray:
    """(C,) bool: the chosen cluster and the other clusters that are parts of the same object.

    Nearest first, another cluster joins when the chosen one and the parts so far still fit, with it, within the
    object's width and height times (1 + ``part_slack``) plus a cell (heights from the support plane when there
    is one). A neighbouring object, a box 25 cm away or a table's edge does not fit; a strip of the object's own
    surface that the view cut off from the rest does. Clusters of sparse cells only never join (they are not
    surface).

    Args:
        points: (N, 3) the binned points; ``labels``: (N,) their clusters.
    """
    n = int(cl.label.max()) + 1
    parts = np.zeros(n, dtype=bool)
    parts[chosen] = True
    if n == 1:
        return parts
    dense = np.zeros(n, dtype=bool)
    dense[cl.label[~cl.sparse]] = True
    lo, hi = cl.boxes()
    mine = points[labels == chosen]
    width, height = (1 + cfg.part_slack) * obj.width + cl.cell, (1 + cfg.part_slack) * obj.height + cl.cell
    base = floor.z_at(mine[:, :2].mean(axis=0)) if floor is not None else None
    # The boxes narrow the search down: a width is at least the x and y extents, which the cells' boxes
    # overstate by up to a cell on each side.
    reach = np.maximum(hi, hi[chosen]) - np.minimum(lo, lo[chosen]) - 2 * cl.cell
    candidates = np.nonzero(dense & ~parts & (reach[:, :2].max(axis=1) <= width) & (reach[:, 2] <= height))[0]
    centre = (lo[chosen] + hi[chosen]) / 2
    for c in candidates[np.argsort(np.linalg.norm((lo[candidates] + hi[candidates]) / 2 - centre, axis=1))]:
        joined = np.concatenate([mine, points[labels == c]])
        w, h = dimensions(joined)
        if base is not None:
            h = float(joined[:, 2].max()) - base
        if w <= width and h <= height:
            parts[c], mine = True, joined
    return parts


def condition(points: np.ndarray, obj: ObjectSize | None, cfg: ConditioningConfig = ConditioningConfig(),
              hint: np.ndarray | None = None) -> Conditioned:
    """The object's points of a cloud (see the module's docstring).

    Args:
        points: (N, 3) finite points in a z-up frame (metres).
        obj: the model's object size in metres; None when unknown: only far points (beyond ``far_factor`` times
            the cloud's own 90th-percentile spread) go.
        hint: (3,) a point near the object, or None.

    Raises:
        ConditioningError: no object-sized group of points.
    """
    points = np.asarray(points, dtype=np.float64)
    object_size = None if obj is None else obj.size
    removed = {}
    center = robust_center(points)
    if object_size is None:
        spread = np.abs(points[:: max(1, len(points) // 2048)] - center).max(axis=1)
        radius = cfg.far_factor * max(float(np.percentile(spread, 90)), 1e-9)
    else:
        radius = cfg.far_factor * object_size
    keep = within(points, center, radius)
    if not keep.all():
        removed["far"] = int((~keep).sum())
        points = np.compress(keep, points, axis=0)
    if not cfg.enabled or object_size is None or len(points) < 4:
        return Conditioned(points, removed=removed, summary=_summary(removed, "conditioning off" if not cfg.enabled else ""))
    rng = np.random.default_rng(cfg.seed)
    cell = max(cfg.min_cell_m, cfg.cell_fraction * object_size)
    sample = points[rng.choice(len(points), size=min(cfg.plane_samples, len(points)), replace=False)]
    floor = floor_thickness = None
    for plane in horizontal_planes(sample, cfg, rng):
        # Nothing stands clearly on a plane at the object's top (its rim): no thickness, however measured (never
        # less than the plane's tolerance), makes it a support, and measuring it costs a convex hull.
        if int((plane.height(sample) > clearance(plane.tolerance)).sum()) < 3:
            continue
        thickness = plane.thickness(sample, tile=obj.size, cell=cell / 2)
        if supports(plane, thickness, sample, cell / 2, cfg, points):
            floor, floor_thickness = plane, thickness
            break
    if floor is not None:
        above, _ = floor_thickness.split(points, floor.height(points))
        removed["plane and below"] = int((~above).sum())
        points = np.compress(above, points, axis=0)
    if len(points) < 3:
        raise ConditioningError("nothing stands on the supporting plane the cloud shows (only the plane itself)")
    binned = points if len(points) <= cfg.cluster_samples else points[
        rng.choice(len(points), size=cfg.cluster_samples, replace=False)]
    cl = clusters(binned, cell, cfg.sparse_fraction)
    chosen, line = choose_object(binned, cl, cl.point_cell, obj, cfg, hint, floor)
    parts = parts_of_object(binned, cl, cl.label[cl.point_cell], chosen, obj, cfg, floor)
    if parts.sum() > 1:
        line += f" with {int(parts.sum()) - 1} more of its parts"
    mine = parts[cl.label]
    dense = ~cl.sparse
    if floor is None and (mine & dense).all():  # one cluster, nothing sparse: an object cloud, passed unchanged
        return Conditioned(points, removed=removed, clusters=1, summary=_summary(removed, f"no support plane; {line}"))
    cells = cl.point_cell if binned is points else cl.cells_of(points)
    keep = cells >= 0
    keep[keep] = mine[cells[keep]]
    sparse = keep.copy()
    sparse[keep] = ~dense[cells[keep]]
    removed["other clusters"] = int((~keep).sum())
    removed["sparse"] = int(sparse.sum())
    object_points = points[keep & ~sparse]
    floor_z, extended = None, 0
    plane_note = "support plane removed" if floor is not None else "no support plane"
    if floor is not None and len(object_points):
        floor_z = floor.z_at(object_points[:, :2].mean(axis=0))
        if object_points[:, 2].min() - floor_z > 2 * cell:  # the object does not stand on it
            floor_z = None
        else:
            foot = extend_foot(object_points, floor, floor_thickness)
            if len(foot):
                object_points, extended = np.concatenate([object_points, foot]), len(foot)
                plane_note += f", the wall continued down to it ({len(foot)} points)"
    removed = {k: v for k, v in removed.items() if v}
    return Conditioned(object_points, floor_z=floor_z, removed=removed, clusters=int(cl.label.max()) + 1,
                       summary=_summary(removed, f"{plane_note}; {line}"), extended=extended)


FOOT_RING_M = 0.002
"""The object's points at most this far above the plane's band under them are its wall's lowest ring ..."""
FOOT_COLUMN_M = 0.006
"""... where the wall goes on above them: object points in this-many metres starting :data:`FOOT_RING_M` above the
ring's top (a gap: a cup's inner floor, lying as low as the ring, is not a wall over itself), ..."""
FOOT_COLUMN_RADIUS_M = 0.003
"""... within this horizontal distance (a wall seen through a camera's noise along its rays)."""
FOOT_EDGE_M = 0.006
"""... and lie within this of the object's outline seen from above (its outer wall, not a cup's inner floor): in
each of :data:`FOOT_SECTORS` sectors about the object's middle, the 90th percentile of its points' distances from
it (a camera's noise and stray returns do not move it)."""
FOOT_SECTORS = 36
FOOT_STEP_M = 0.001
"""The ring's copies step down to the plane this far apart (finer than the node's voxels)."""


def extend_foot(object_points: np.ndarray, floor: Plane, thickness: Thickness) -> np.ndarray:
    """(M, 3) points that continue the object's wall down through the plane's band to the plane: its lowest ring
    (:data:`FOOT_RING_M` above the band, at the object's outline seen from above, where the wall goes on upwards)
    copied straight down in steps of :data:`FOOT_STEP_M`. The band took the object's lowest millimetres with the
    table, and a model trained on whole objects misses them; but the band's own points cannot give them back: a
    camera's noise along its rays mixes the table's returns next to the wall with the wall's own there, and those
    under the foot are as many table as object. Where the camera saw no wall down to the band, nothing is added; nor
    under a surface inside the outline (a cup's inner floor, seen from above, can lie as low as the ring: the model
    never saw a slab there).

    Args:
        object_points: (N, 3) the object's points, all above the band; ``thickness``: the band's, per square.
    """
    height = floor.height(object_points)
    top = thickness.at(object_points) + FOOT_RING_M
    ring = height <= top
    ring[ring] = at_outline(object_points, ring)
    column = (height > top + FOOT_RING_M) & (height <= top + FOOT_RING_M + FOOT_COLUMN_M)
    if ring.sum() < 3 or column.sum() < 3:
        return np.zeros((0, 3))
    from scipy.spatial import cKDTree

    ring_points, ring_height = object_points[ring], height[ring]
    # A stray table return left above the band has no wall over it.
    over = cKDTree(object_points[column, :2]).query_ball_point(ring_points[:, :2], FOOT_COLUMN_RADIUS_M,
                                                               return_length=True)
    foot, rise = ring_points[over >= 3], ring_height[over >= 3]
    steps = np.arange(FOOT_STEP_M, float(rise.max(initial=0.0)), FOOT_STEP_M)
    copies = [foot[rise > d] - d * floor.normal for d in steps]
    return np.concatenate(copies) if copies else np.zeros((0, 3))


def at_outline(points: np.ndarray, which: np.ndarray) -> np.ndarray:
    """(which.sum(),) bool: which of the (N, 3) ``points[which]`` lie within :data:`FOOT_EDGE_M` of the outline of
    all ``points`` seen from above (see :data:`FOOT_EDGE_M`)."""
    offset = points[:, :2] - robust_center(points, samples=4000)[:2]
    radius = np.hypot(offset[:, 0], offset[:, 1])
    sector = (np.floor((np.arctan2(offset[:, 1], offset[:, 0]) + np.pi) / (2 * np.pi) * FOOT_SECTORS)
              .astype(np.int64) % FOOT_SECTORS)
    labels, starts, counts, radii = sorted_groups(sector, radius)
    outline = np.full(FOOT_SECTORS, np.inf)
    outline[labels] = radii[starts + (0.9 * (counts - 1)).astype(np.int64)]
    return radius[which] >= outline[sector[which]] - FOOT_EDGE_M


def _summary(removed: dict, note: str) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in removed.items()) or "none"
    return f"{note}; points dropped: {dropped}" if note else f"points dropped: {dropped}"
