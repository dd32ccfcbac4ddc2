"""Simulated depth cameras looking at a tabletop scene: what a robot's camera publishes, with its artifacts.

:mod:`kp_training.sensor` makes the object's own clouds for training; this module renders whole organized depth
images (640 x 480 by default) of a scene in metres, world frame z up: the object standing on a table at z = 0,
optionally a second object, seen by a pinhole camera. Each artifact is a field of :class:`CameraConditions`:

- depth noise along each ray, growing with the square of the range (as a stereo camera's does);
- flying pixels: pixels just outside the object's silhouette whose depth is a mix of the object's and the
  background's (pushed back along the ray);
- the table: none (a segmented object), a ring of table left around the object's base (imperfect plane removal),
  or a whole table patch not centred on the object;
- clutter: a box standing on the table 25 cm from the object;
- the underside visible (the object held by a gripper: no table, a camera below);
- the camera's distance and elevation, and the density (a share of the pixels dropped).

Every pixel carries a label (:data:`OBJECT`, :data:`TABLE`, :data:`CLUTTER`, :data:`FLYING`), so an evaluation
knows which points are the object's, and which surface sample each object pixel shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NONE, OBJECT, TABLE, CLUTTER, FLYING = range(5)
TABLE_KINDS = ("none", "ring", "patch")


@dataclass(frozen=True)
class CameraConditions:
    """One condition of the camera protocol (distances in metres)."""

    name: str = "clean object cloud"
    distance_m: float = 0.6
    elevation_deg: float = 30.0
    noise_m: float = 0.001
    """Standard deviation of the depth noise along the ray at 0.6 m; it grows with the range squared."""
    flying: float = 0.0
    """Flying pixels, as a share of the object's pixels (placed just outside its silhouette)."""
    table: str = "none"
    ring_m: float = 0.02
    clutter: bool = False
    cameras: int = 1
    """1: a single view; more: that many cameras around the object, their clouds fused ("whole")."""
    underside: bool = False
    """The object is held (no table) and one more camera looks at it from 30 deg below."""
    keep: float = 1.0
    width: int = 640
    height: int = 480
    hfov_deg: float = 60.0

    def validate(self) -> "CameraConditions":
        checks = [
            (self.distance_m > 0.05, "distance_m must be > 0.05"),
            (-89 <= self.elevation_deg <= 89, "elevation_deg must be in [-89, 89]"),
            (self.noise_m >= 0 and 0 <= self.flying < 1 and 0 < self.keep <= 1, "noise_m, flying, keep out of range"),
            (self.table in TABLE_KINDS, f"table must be one of {TABLE_KINDS}"),
            (self.cameras >= 1 and self.width >= 8 and self.height >= 8, "cameras >= 1 and an image of 8 x 8 or more"),
            (not (self.underside and self.table != "none"), "a held object (underside) stands on no table"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


@dataclass
class CameraView:
    """One rendered camera: organized points (H, W, 3) in the world frame (NaN: no return), labels (H, W), the
    object's surface sample each object pixel shows (-1 elsewhere), and the camera's position."""

    points: np.ndarray
    labels: np.ndarray
    sample: np.ndarray
    position: np.ndarray


def look_at_basis(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3) rows: right, down, forward of a camera at ``position`` looking at ``target`` (world z up)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight down or up
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def camera_position(target: np.ndarray, distance: float, elevation_deg: float, azimuth: float) -> np.ndarray:
    e = math.radians(elevation_deg)
    return target + distance * np.array([math.cos(e) * math.cos(azimuth), math.cos(e) * math.sin(azimuth), math.sin(e)])


def box_surface(corner: np.ndarray, size: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Points on the faces of an axis-aligned box but its bottom one (it stands on something)."""
    unit = rng.random((count, 3))
    axis = rng.integers(0, 3, count)
    unit[np.arange(count), axis] = np.where(axis == 2, 1.0, rng.integers(0, 2, count))
    return corner + unit * size


class SceneRenderer:
    """Renders :class:`CameraConditions` for one posed object.

    Args:
        surface: (M, 3) dense surface samples of the posed object in the world frame (metres), standing on z = 0.
        rng: every random draw (noise, flying pixels, dropout, camera azimuth jitter, clutter).
    """

    def __init__(self, surface: np.ndarray, rng: np.random.Generator):
        self.surface = np.asarray(surface, dtype=np.float64)
        self.rng = rng
        self.center = (self.surface.min(axis=0) + self.surface.max(axis=0)) / 2
        bottom = self.surface[self.surface[:, 2] < self.surface[:, 2].min() + 0.005]
        self.footprint = bottom[:, :2]

    def render(self, cond: CameraConditions, azimuth: float) -> list[CameraView]:
        """Every camera of ``cond``, the first at ``azimuth`` (radians) about the object."""
        cond = cond.validate()
        clutter = None
        if cond.clutter:
            direction = azimuth + self.rng.uniform(-1.2, 1.2) + math.pi / 2
            where = self.center[:2] + 0.25 * np.array([math.cos(direction), math.sin(direction)])
            clutter = box_surface(np.array([*(where - [0.04, 0.03]), 0.0]), np.array([0.08, 0.06, 0.12]), 60000, self.rng)
        cameras = [(cond.elevation_deg, azimuth + 2 * math.pi * i / cond.cameras) for i in range(cond.cameras)]
        if cond.underside:
            cameras.append((-30.0, azimuth + math.pi / cond.cameras))
        views = []
        for elevation, az in cameras:
            position = camera_position(self.center, cond.distance_m, elevation, az)
            views.append(self._render_one(cond, position, clutter))
        return views

    def _render_one(self, cond: CameraConditions, position: np.ndarray, clutter: np.ndarray | None) -> CameraView:
        h, w = cond.height, cond.width
        basis = look_at_basis(position, self.center)
        focal = (w / 2) / math.tan(math.radians(cond.hfov_deg) / 2)
        rng_ = np.full(h * w, np.inf)
        labels = np.zeros(h * w, dtype=np.int8)
        sample = np.full(h * w, -1, dtype=np.int64)

        def splat(points: np.ndarray, label: int, keep_index: bool) -> None:
            rel = (points - position) @ basis.T  # right, down, forward
            front = rel[:, 2] > 1e-3
            u = np.floor(focal * rel[:, 0] / np.where(front, rel[:, 2], 1) + w / 2).astype(np.int64)
            v = np.floor(focal * rel[:, 1] / np.where(front, rel[:, 2], 1) + h / 2).astype(np.int64)
            ok = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            index = np.nonzero(ok)[0]
            pixel = v[ok] * w + u[ok]
            distance = np.linalg.norm(points[ok] - position, axis=1)
            order = np.lexsort((distance, pixel))  # nearest sample of each pixel first
            first = np.ones(len(order), dtype=bool)
            first[1:] = pixel[order][1:] != pixel[order][:-1]
            pixel, distance, index = pixel[order][first], distance[order][first], index[order][first]
            nearer = distance < rng_[pixel]
            rng_[pixel[nearer]] = distance[nearer]
            labels[pixel[nearer]] = label
            if keep_index:
                sample[pixel[nearer]] = index[nearer]
            else:
                sample[pixel[nearer]] = -1

        # Rays of every pixel, for the table (a plane: exact per pixel).
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        directions = (np.stack([(u - w / 2) / focal, (v - h / 2) / focal, np.ones_like(u)], -1).reshape(-1, 3) @ basis)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        if cond.table != "none":
            t = np.where(directions[:, 2] < -1e-6, -position[2] / np.where(directions[:, 2] < -1e-6, directions[:, 2], -1), np.inf)
            hit = position + directions * np.where(np.isfinite(t), t, 0)[:, None]
            if cond.table == "ring":
                from scipy.spatial import cKDTree

                near, _ = cKDTree(self.footprint).query(hit[:, :2], distance_upper_bound=cond.ring_m)
                on_table = np.isfinite(near)
            else:  # a 1.2 x 0.8 m patch, not centred on the object
                offset = np.abs(hit[:, :2] - (self.center[:2] + [0.15, -0.1]))
                on_table = (offset[:, 0] <= 0.6) & (offset[:, 1] <= 0.4)
            use = np.isfinite(t) & on_table & (t < rng_)
            rng_[use], labels[use] = t[use], TABLE
        splat(self.surface, OBJECT, keep_index=True)
        if clutter is not None:
            splat(clutter, CLUTTER, keep_index=False)
        rng_ = rng_.reshape(h, w)
        labels = labels.reshape(h, w)
        sample = sample.reshape(h, w)
        if cond.flying > 0:
            self._flying_pixels(cond, rng_, labels, sample)
        valid = np.isfinite(rng_)
        sigma = cond.noise_m * (np.where(valid, rng_, 0.0) / 0.6) ** 2  # no return: infinite range, no noise
        noisy = rng_ + self.rng.standard_normal(rng_.shape) * sigma
        if cond.keep < 1:
            valid &= self.rng.random(valid.shape) < cond.keep
        points = position + directions.reshape(h, w, 3) * np.where(valid, noisy, np.nan)[..., None]
        labels = np.where(valid, labels, NONE).astype(np.int8)
        sample = np.where(valid & (labels == OBJECT), sample, -1)
        return CameraView(points=points, labels=labels, sample=sample, position=position)

    def _flying_pixels(self, cond: CameraConditions, rng_: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> None:
        """Pixels just outside the object's silhouette get a depth between the object's and the background's."""
        obj = labels == OBJECT
        edge = np.zeros_like(obj)
        source = np.zeros(obj.shape + (2,), dtype=np.int64)
        for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            shifted = np.roll(obj, (dv, du), axis=(0, 1))
            fresh = shifted & ~obj & ~edge
            edge |= fresh
            rows, cols = np.nonzero(fresh)
            source[rows, cols] = np.stack([(rows - dv) % obj.shape[0], (cols - du) % obj.shape[1]], 1)
        rows, cols = np.nonzero(edge)
        count = min(len(rows), int(round(cond.flying * obj.sum())))
        if count == 0:
            return
        pick = self.rng.choice(len(rows), size=count, replace=False)
        rows, cols = rows[pick], cols[pick]
        front = rng_[source[rows, cols, 0], source[rows, cols, 1]]
        back = rng_[rows, cols]
        back = np.where(np.isfinite(back), back, front + self.rng.uniform(0.05, 0.5, count))
        rng_[rows, cols] = front + self.rng.random(count) * (back - front)
        labels[rows, cols] = FLYING
        sample[rows, cols] = -1


def optical_frame(view: CameraView, target: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """A view as its camera's driver publishes it: points (H, W, 3) in the camera's optical frame (x right, y down,
    z forward; NaN where no return), and the camera's pose in the z-up world frame as x, y, z, qx, qy, qz, qw (the
    node's ``input_transform``). ``target``: the point the camera looks at (:attr:`SceneRenderer.center`)."""
    from scipy.spatial.transform import Rotation

    basis = look_at_basis(view.position, target)  # rows: the optical axes in the world frame
    pose = [*map(float, view.position), *map(float, Rotation.from_matrix(basis.T).as_quat())]
    return (view.points - view.position) @ basis.T, pose


def fused(views: list[CameraView], keep: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views' returns as one unorganized cloud: points (N, 3), labels (N,), object samples (N,). ``keep``:
    (H, W) masks of the pixels to use, one per view (default: every return)."""
    valid = keep if keep is not None else [np.isfinite(v.points[..., 0]) for v in views]
    return (np.concatenate([v.points[m] for v, m in zip(views, valid)]),
            np.concatenate([v.labels[m] for v, m in zip(views, valid)]),
            np.concatenate([v.sample[m] for v, m in zip(views, valid)]))


def perfect_object_cloud(views: list[CameraView], surface: np.ndarray) -> np.ndarray:
    """The same views' object pixels without noise, table, clutter or flying pixels: the surface samples they
    show (the baseline a scene's answer is compared with)."""
    samples = np.concatenate([v.sample[v.sample >= 0] for v in views])
    return np.asarray(surface, dtype=np.float64)[np.unique(samples)]


CONDITIONS = (
    CameraConditions("clean object cloud, 1 mm noise"),
    CameraConditions("3 mm depth noise", noise_m=0.003),
    CameraConditions("2 % flying pixels", flying=0.02),
    CameraConditions("2 cm ring of table left", table="ring"),
    CameraConditions("3 mm noise, flying pixels, table ring", noise_m=0.003, flying=0.02, table="ring"),
    CameraConditions("tabletop scene (table patch, a box 25 cm away)", table="patch", clutter=True),
    CameraConditions("tabletop scene, 3 mm noise, flying pixels", table="patch", clutter=True, noise_m=0.003,
                     flying=0.02),
    CameraConditions("top-down camera at 0.3 m", distance_m=0.3, elevation_deg=80.0, table="patch"),
    CameraConditions("near-horizontal camera at 1.2 m", distance_m=1.2, elevation_deg=10.0, table="patch"),
    CameraConditions("sparse (25 % of the pixels)", keep=0.25, table="patch"),
    CameraConditions("whole: 4 cameras around", cameras=4, table="patch"),
    CameraConditions("whole with the underside (held object)", cameras=4, underside=True),
)
"""The protocol's conditions: each row of the conditions table (kp-eval --camera-views)."""

