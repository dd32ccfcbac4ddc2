"""The camera protocol: the node's own pipeline (:class:`kp_core.pipeline.Pipeline`) on simulated camera clouds
(:mod:`kp_training.camera`), scored by what a planner needs.

For each condition of :data:`kp_training.camera.CONDITIONS` and each seeded view (the object at a random yaw, the
camera at a random azimuth), the cloud goes through the pipeline exactly as the node runs it (each camera's
organized cloud without its veils and with its depth noise smoothed, then the conditioning) and the goal is decoded at each psi. Scores, all about the axis the service returns:

- goal IoU: the goal against the true object turned by psi about that axis, voxelized in the goal's grid;
- yaw error: the turn phi of the true object about that axis that best matches the goal (highest IoU: every
  10 deg on a sixth of the samples, then every degree within 10 deg of the best; any shape), minus psi,
  wrapped to [0, 180] deg;
- asymmetric part IoU: the same IoU over the voxels beyond the shape's body of revolution (:class:`BodyOfRevolution`:
  the largest solid of revolution about a vertical axis inside the shape; what lies beyond it is the mug's handle,
  a jug's handle and spout: the part that tells the yaw);
- asymmetric part seen: at least :data:`ASYMMETRIC_SEEN_PIXELS` pixels of the cloud show it;
- isolation: the share of the points that reached the grid which are the object's (its returns, or within
  2 mm of them: table, clutter and flying pixels farther away are not), and the same views as perfect object
  clouds (the object's pixels, no noise) for comparison.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.ndimage import maximum_filter1d

from kp_core.conditioning import organized_cloud
from kp_core.geometry import GRID_SIZE
from kp_core.goals import rotate_about_vertical

from .camera import CONDITIONS, OBJECT, CameraConditions, SceneRenderer, fused, perfect_object_cloud
from .sensor import surface_samples
from .shapes import Shape

ASYMMETRIC_SEEN_PIXELS = 30
WORLD_UP = np.array([0.0, 0.0, 1.0])
SOLID_SAMPLES = 60000
"""Solid samples of the ground truth: about eight per voxel of the mug's grid, so none of its voxels is missed."""


def _rings(points: np.ndarray, axis: np.ndarray, band: float, outer: bool = False) -> tuple:
    """The solid's samples ``points`` (N, 3) in rings about the vertical line through ``axis`` (2,): each ring one
    ``band`` high and one ``band`` wide. Returns per ring (R,): its height index, the largest angular gap between its
    samples as an arc at the ring's mid radius, its sample count, and with ``outer`` the radius below which 95 % of
    its samples lie."""
    offset = points[:, :2] - axis
    radius = np.hypot(offset[:, 0], offset[:, 1])
    angle = np.arctan2(offset[:, 1], offset[:, 0])
    height, ring_of_radius = (np.floor(v / band).astype(np.int64) for v in (points[:, 2], radius))
    ring = height * (ring_of_radius.max() + 1) + ring_of_radius
    order = np.lexsort((angle, ring))
    ring, angle, radius, height, ring_of_radius = (v[order] for v in (ring, angle, radius, height, ring_of_radius))
    starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    ends = np.r_[starts[1:], len(ring)] - 1
    steps = np.diff(angle, append=0.0)
    steps[ends] = angle[starts] + 2 * np.pi - angle[ends]
    gap = np.maximum.reduceat(steps, starts) * (ring_of_radius[starts] + 0.5) * band
    counts = ends - starts + 1
    if not outer:
        return height[starts], gap, counts
    by_radius = np.lexsort((radius, ring))  # the same ring order, samples sorted by radius within each
    return height[starts], gap, counts, radius[by_radius][starts + (0.95 * (counts - 1)).astype(np.int64)]


@dataclass(frozen=True)
class BodyOfRevolution:
    """The largest solid of revolution about a vertical axis inside a shape: each ring about the axis (one
    :attr:`band` high and wide) whose every direction holds solid. For a cup that is all of it but the handle.

    Attributes:
        axis: (2,) x, y of the vertical axis in the shape's frame, metres.
        band: ring height and width, metres.
        radius: (B,) the body's outer radius in each band from z = 0 up, metres (0 where it has none).
    """

    axis: np.ndarray
    band: float
    radius: np.ndarray

    def beyond(self, points: np.ndarray, axis_point: np.ndarray, margin: float) -> np.ndarray:
        """(N,) bool: ``points`` (N, 3) farther than the body's radius (the larger of the bands around their height,
        and the widest band above or below the shape) plus ``margin`` from the vertical through ``axis_point``."""
        widest = maximum_filter1d(self.radius, 3)
        index = np.floor(points[:, 2] / self.band).astype(np.int64)
        inside = (index >= 0) & (index < len(widest))
        limit = np.where(inside, widest[np.clip(index, 0, len(widest) - 1)], self.radius.max())
        return np.hypot(points[:, 0] - axis_point[0], points[:, 1] - axis_point[1]) > limit + margin


def fit_body_of_revolution(solid: np.ndarray) -> BodyOfRevolution:
    """The :class:`BodyOfRevolution` of a densely sampled solid ``solid`` (N, 3, metres, z up from 0): rings four
    sample spacings wide, full when no gap between their samples is wider than that; the axis is the one whose
    body holds the most samples (a pattern search from the centre of the lowest tenth of the solid, to an eighth of a
    spacing)."""
    from scipy.spatial import cKDTree

    probe = solid[np.random.default_rng(0).choice(len(solid), size=min(2000, len(solid)), replace=False)]
    spacing = float(np.median(cKDTree(solid).query(probe, k=2)[0][:, 1]))
    band = 4 * spacing

    def held(axis):
        _, gap, counts = _rings(solid, axis, band)
        return int(counts[gap <= band].sum())

    low = solid[solid[:, 2] < solid[:, 2].min() + 0.1 * np.ptp(solid[:, 2])]
    axis = low[:, :2].mean(axis=0)
    best, step = held(axis), 4 * spacing
    while step > spacing / 8:
        for direction in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            candidate = axis + step * np.asarray(direction)
            if (count := held(candidate)) > best:
                best, axis = count, candidate
                break
        else:
            step /= 2
    height, gap, _, outer = _rings(solid, axis, band, outer=True)
    radius = np.zeros(int(height.max()) + 1)
    full = gap <= band
    np.maximum.at(radius, height[full], outer[full])
    return BodyOfRevolution(axis=axis, band=band, radius=radius)


@dataclass
class ShapeInMetres:
    """A shape's solid and surface samples in metres, standing on z = 0, with its body of revolution and what lies
    beyond it (the asymmetric part)."""

    lattice: np.ndarray  # (L, 3): every solid sample of the shape
    solid: np.ndarray  # (N, 3): a subset of them, for scoring
    surface: np.ndarray  # (M, 3)

    @cached_property
    def body(self) -> BodyOfRevolution:
        return fit_body_of_revolution(self.lattice)

    @cached_property
    def asymmetric(self) -> np.ndarray:
        """(M,) bool: the surface samples beyond the body of revolution (by more than half a band)."""
        return self.body.beyond(self.surface, self.body.axis, self.body.band / 2)

    def asymmetric_azimuth(self) -> float:
        """Direction (radians about z, from the body's axis) the asymmetric part points to: its surface samples'
        circular mean."""
        offset = self.surface[self.asymmetric, :2] - self.body.axis
        angles = np.arctan2(offset[:, 1], offset[:, 0])
        return float(np.arctan2(np.sin(angles).sum(), np.cos(angles).sum()))


def shape_in_metres(shape: Shape, surface_count: int = 300_000, seed: int = 0) -> ShapeInMetres:
    """The shape at its real size (its mesh must be in metres) with its bottom at z = 0 and its bounding box
    centred on the z axis."""
    norm = shape.normalization
    if norm.get("units") != "m":
        raise ValueError(f"the camera protocol needs a shape in metres; {shape.name} is in mesh units")
    unit = float(norm["mesh_units_per_grid_unit"])
    rng = np.random.default_rng(seed)
    lattice = shape.points.double().numpy() * unit
    surface = surface_samples(shape.points, count=surface_count, seed=seed).double().numpy() * unit
    bottom = lattice[:, 2].min()
    lattice[:, 2] -= bottom
    surface[:, 2] -= bottom
    solid = lattice[rng.choice(len(lattice), size=min(SOLID_SAMPLES, len(lattice)), replace=False)]
    return ShapeInMetres(lattice=lattice, solid=solid, surface=surface)


def _keys(points: np.ndarray, origin: np.ndarray, voxel: float) -> np.ndarray:
    """Flat voxel indices of metric points in the goal's 64^3 grid (-1 outside)."""
    index = np.floor((points - origin) / voxel + GRID_SIZE / 2).astype(np.int64)
    inside = np.all((index >= 0) & (index < GRID_SIZE), axis=-1)
    flat = (index[..., 0] * GRID_SIZE + index[..., 1]) * GRID_SIZE + index[..., 2]
    return np.where(inside, flat, -1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def goal_scores(goal, truth: np.ndarray, psi: float, body: BodyOfRevolution | None) -> dict:
    """Goal IoU, yaw error (deg) and the asymmetric part's IoU (beyond ``body`` about the goal's axis; None without
    a body) of one goal (:class:`kp_core.pipeline.Goal`) against the true solid ``truth`` (N, 3, metres, the object
    as it is in the cloud, standing on z = 0) turned by ``psi``."""
    origin, voxel, axis = goal.grid_origin, goal.voxel_size, goal.axis_point
    predicted = np.unique(_keys(goal.points, origin, voxel))
    predicted = predicted[predicted >= 0]

    def best_turn(samples, degrees):
        ious = []
        for phi in degrees:
            turned = np.unique(_keys(rotate_about_vertical(samples, math.radians(phi), axis), origin, voxel))
            ious.append(_iou(predicted, turned[turned >= 0]))
        return float(degrees[int(np.argmax(ious))])

    coarse = best_turn(truth[::6], np.arange(0.0, 360.0, 10.0))
    best = best_turn(truth, coarse + np.arange(-10.0, 11.0, 1.0))
    error = abs((best - math.degrees(psi) + 180.0) % 360.0 - 180.0)
    expected = rotate_about_vertical(truth, psi, axis)
    truth_keys = np.unique(_keys(expected, origin, voxel))
    truth_keys = truth_keys[truth_keys >= 0]
    scores = {"goal_iou": _iou(predicted, truth_keys), "yaw_error_deg": error, "asymmetric_iou": None}
    if body is not None:
        centres = np.stack(np.unravel_index(np.arange(GRID_SIZE ** 3), (GRID_SIZE,) * 3), -1)
        region = np.nonzero(body.beyond((centres - GRID_SIZE / 2 + 0.5) * voxel + origin, axis, voxel))[0]
        scores["asymmetric_iou"] = _iou(np.intersect1d(predicted, region), np.intersect1d(truth_keys, region))
    return scores


ON_OBJECT_M = 0.002
"""A point the grid used counts as the object's when it is within this of the object's true surface: the table's
returns at the contact line are the object's base as far as a 2.7 mm voxel can tell."""


def object_share(used: np.ndarray, returns: np.ndarray, surface: np.ndarray) -> float:
    """Share of ``used`` points that are the object's: its own ``returns`` (the cloud's points the simulator
    labelled as the object, noise and all; matched exactly, as the conditioning only selects points), or points
    within :data:`ON_OBJECT_M` of its dense ``surface`` samples."""
    if not len(used):
        return 0.0
    from scipy.spatial import cKDTree

    rows = lambda x: np.ascontiguousarray(x, dtype=np.float64).view([("", np.float64)] * 3).ravel()  # noqa: E731
    mine = np.isin(rows(used), rows(returns))
    if not mine.all():
        mine[~mine] = np.isfinite(cKDTree(surface).query(used[~mine], distance_upper_bound=ON_OBJECT_M)[0])
    return float(mine.mean())


def run_view(pipeline, obj: ShapeInMetres, cond: CameraConditions, psis: list[float], rng: np.random.Generator,
             snapshot=None) -> dict:
    """One seeded view of one condition: the pipeline's answers on the camera cloud and on the perfect object
    cloud of the same view, scored. ``snapshot``: a PNG path for a picture of the camera cloud's answers."""
    yaw = rng.uniform(0, 2 * math.pi)
    place = np.array([0.5, 0.1, 0.0])
    pivot = np.zeros(3)
    solid = rotate_about_vertical(obj.solid, yaw, pivot) + place
    surface = rotate_about_vertical(obj.surface, yaw, pivot) + place
    views = SceneRenderer(surface, rng).render(cond, rng.uniform(0, 2 * math.pi))
    samples = fused(views)[2]  # what the cameras returned, before anything is filtered
    seen = bool(obj.asymmetric[samples[samples >= 0]].sum() >= ASYMMETRIC_SEEN_PIXELS)
    # Each camera's organized cloud loses its veils and what it sees of the object's underside, and its depth noise
    # is smoothed, as the node's would; then they are fused.
    images = [organized_cloud(v.points, pipeline.config.conditioning, v.position, up=WORLD_UP) for v in views]
    points, labels, samples = fused([dataclasses.replace(v, points=image) for v, (image, _) in zip(views, images)],
                                    [kept for _, kept in images])
    row = {"condition": cond.name, "asymmetric_seen": seen, "points": int(len(points))}
    for kind, cloud in (("camera", points), ("perfect", perfect_object_cloud(views, surface))):
        try:
            encoding = pipeline.encode(cloud)
        except ValueError as err:  # a refusal: scored as nothing
            row[kind] = {"refused": str(err)}
            continue
        goals = [pipeline.goal(encoding, psi) for psi in psis]
        answers = [goal_scores(goal, solid, psi, obj.body) for goal, psi in zip(goals, psis)]
        result = {key: [a[key] for a in answers] for key in answers[0]}
        if kind == "camera" and snapshot is not None:
            picture(snapshot, cond.name, encoding, goals, answers, solid)
        if kind == "camera" and encoding.conditioned is not None:
            # The wall's copies down to the plane count as the points they copy.
            result["object_share"] = object_share(encoding.conditioned.returns, points[labels == OBJECT], surface)
        row[kind] = result
    return row


def summarize(rows: list[dict]) -> dict:
    """Per condition: goal IoU (camera and perfect clouds), yaw error median / p90 / share within 10 deg (all,
    asymmetric part seen, hidden), the asymmetric part's IoU, refusals and isolation."""
    out = {}
    for name in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == name]
        answered = [r for r in mine if "goal_iou" in r["camera"]]

        def flat(key, kind="camera", keep=lambda r: True):
            return np.array([v for r in mine if "goal_iou" in r[kind] and keep(r) for v in r[kind][key]
                             if v is not None], dtype=np.float64)

        def within(errors):
            return float((errors <= 10.0).mean()) if len(errors) else None

        errors = flat("yaw_error_deg")
        seen, hidden = (flat("yaw_error_deg", keep=lambda r, s=s: r["asymmetric_seen"] is s) for s in (True, False))
        iou, perfect = flat("goal_iou"), flat("goal_iou", "perfect")
        shares = np.array([r["camera"]["object_share"] for r in answered if "object_share" in r["camera"]])
        out[name] = {
            "views": len(mine),
            "refused": len(mine) - len(answered),
            "goal_iou_mean": float(iou.mean()) if len(iou) else None,
            "goal_iou_perfect_mean": float(perfect.mean()) if len(perfect) else None,
            "yaw_median_deg": float(np.median(errors)) if len(errors) else None,
            "yaw_p90_deg": float(np.percentile(errors, 90)) if len(errors) else None,
            "within_10_deg": within(errors),
            "within_10_deg_seen": within(seen),
            "within_10_deg_hidden": within(hidden),
            "asymmetric_seen_views": sum(1 for r in mine if r["asymmetric_seen"]),
            "asymmetric_iou_seen": float(flat("asymmetric_iou", keep=lambda r: r["asymmetric_seen"]).mean())
            if len(flat("asymmetric_iou", keep=lambda r: r["asymmetric_seen"])) else None,
            "object_share_mean": float(shares.mean()) if len(shares) else None,
            "only_object_views": float((shares >= 0.99).mean()) if len(shares) else None,
        }
    return out


def picture(path, name: str, encoding, goals: list, answers: list[dict], solid: np.ndarray) -> None:
    """The cloud the grid used with its keypoints, then each goal (blue) over the truth (green) turned about the
    returned axis (:func:`kp_training.figures.demo_snapshot`)."""
    from .figures import demo_snapshot

    shown = [{"angle": g.angle, "iou": a["goal_iou"], "points": g.points, "keypoints": g.keypoints,
              "truth": rotate_about_vertical(solid, g.angle, g.axis_point)} for g, a in zip(goals, answers)]
    demo_snapshot(path, name, encoding.conditioned.points, encoding.keypoints, shown, goals[0].axis_point)


def camera_protocol(pipeline, shape: Shape, views: int, psis_deg=(0.0, 90.0), seed: int = 0,
                    conditions=CONDITIONS, snapshot=None) -> dict:
    """Every condition on ``views`` seeded views: {"rows": per view, "summary": per condition}. ``snapshot``: a PNG
    path for a picture of the first view's answers (the first condition)."""
    obj = shape_in_metres(shape, seed=seed)
    psis = [math.radians(p) for p in psis_deg]
    rows = []
    for i, cond in enumerate(conditions):
        rng = np.random.default_rng([seed, i])
        rows += [run_view(pipeline, obj, cond, psis, rng, snapshot if i == j == 0 else None) for j in range(views)]
    return {"psi_deg": list(psis_deg), "views": views, "rows": rows, "summary": summarize(rows)}


def _cell(value, digits=2, percent=False):
    if value is None:
        return "-"
    return f"{100 * value:.0f} %" if percent else f"{value:.{digits}f}"


def conditions_markdown(summary: dict) -> str:
    """The conditions table as Markdown."""
    lines = ["| condition | goal IoU | same views, perfect object cloud | yaw error median / p90 (deg) | "
             "within 10 deg: all / asymmetric part seen / hidden | asymmetric part IoU (seen) | object's share of the points used | "
             "refused |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {_cell(s['goal_iou_mean'], 3)} | {_cell(s['goal_iou_perfect_mean'], 3)} | "
            f"{_cell(s['yaw_median_deg'], 0)} / {_cell(s['yaw_p90_deg'], 0)} | "
            f"{_cell(s['within_10_deg'], percent=True)} / {_cell(s['within_10_deg_seen'], percent=True)} "
            f"({s['asymmetric_seen_views']} views) / {_cell(s['within_10_deg_hidden'], percent=True)} | "
            f"{_cell(s['asymmetric_iou_seen'], 3)} | {_cell(s['object_share_mean'], 3)} | {s['refused']} of {s['views']} |")
    return "\n".join(lines) + "\n"
