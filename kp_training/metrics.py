"""Reconstruction and equivariance metrics as pure, batched tensor functions (any device).

Conventions (see :mod:`kp_core.geometry`): grids are (B, 1, G, G, G) with array axes (x, y, z) over the
cube [-1, 1]^3; one voxel is ``2 / G`` grid units. Predictions are given as *probabilities* (apply
``torch.sigmoid`` to decoder logits first) except for :func:`binary_cross_entropy`, which takes logits.

Metrics of the paper's Table I and Fig. 6:

- :func:`binary_cross_entropy`: plain BCE of the sigmoid outputs, averaged over voxels.
- :func:`voxel_iou`: IoU of the grids thresholded at 0.5.
- :func:`chamfer_paper`: the paper's Chamfer convention (thresholded grids -> occupied voxel centres in the
  grid frame -> up to 1000 points sampled from each without replacement -> *sum* of squared nearest-neighbour
  distances, forward plus backward). It has a sampling floor: two different random subsets of the *same*
  grid already score well above zero (see :func:`chamfer_sampling_floor`).

A better-defined distance, :func:`mean_nn_distance`: the mean symmetric nearest-neighbour distance over *all*
occupied voxels, in voxel units (exact, via a separable Euclidean distance transform).

And the equivariance error of keypoints, :func:`keypoint_distance` (in voxel units).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kp_core.geometry import voxel_centers
from kp_core.voxelize import voxelize

PAPER_CHAMFER_POINTS = 1000
"""Points sampled from each grid for the paper's Chamfer distance."""

_FAR = 1.0e9  # "no occupied voxel" in squared-distance transforms (finite, so sums stay finite)


def _check_grid(name: str, grid: torch.Tensor) -> None:
    if grid.ndim != 5 or grid.shape[1] != 1 or not (grid.shape[2] == grid.shape[3] == grid.shape[4]):
        raise ValueError(f"{name} must have shape (B, 1, G, G, G), got {tuple(grid.shape)}")


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    _check_grid("pred", pred)
    _check_grid("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


def occupancy(grid: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Boolean occupancy: ``grid > threshold`` (a boolean grid is returned unchanged).

    Args:
        grid: (B, 1, G, G, G) probabilities, 0/1 floats or bools.

    Returns:
        (B, 1, G, G, G) bool.
    """
    return grid if grid.dtype == torch.bool else grid > threshold


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain BCE of ``sigmoid(logits)`` against ``target``, averaged over the voxels of each example.

    Computed from the logits (``binary_cross_entropy_with_logits``), which equals the BCE of the sigmoid
    probabilities without their rounding to 0 or 1.

    Args:
        logits: (B, 1, G, G, G) decoder outputs before the sigmoid.
        target: (B, 1, G, G, G) occupancy in {0, 1}.

    Returns:
        (B,) mean BCE per example.
    """
    _check_pair(logits, target)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return loss.flatten(1).mean(dim=1)


def voxel_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of the occupied voxels, per example.

    Args:
        pred: (B, 1, G, G, G) predicted probabilities (occupied where ``> threshold``) or bools.
        target: (B, 1, G, G, G) ground-truth occupancy (0/1 or bools).
        threshold: occupancy threshold applied to both grids (0.5 in the paper).

    Returns:
        (B,) IoU in [0, 1]; 1 where both grids are empty.
    """
    _check_pair(pred, target)
    a, b = occupancy(pred, threshold).flatten(1), occupancy(target, threshold).flatten(1)
    inter = (a & b).sum(dim=1).float()
    union = (a | b).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def metric_points_iou(pred_points, true_points, grid_map) -> float:
    """:func:`voxel_iou` of two metric point sets ((N, 3) and (M, 3)), each voxelized in the 64^3 grid of
    ``grid_map`` (a :class:`kp_core.geometry.MetricGridMap`): how the demo and tests score a goal."""
    grids = [voxelize(torch.from_numpy(grid_map.to_grid(np.asarray(pts, np.float64).reshape(1, -1, 3)).astype(np.float32)))
             for pts in (pred_points, true_points)]
    return float(voxel_iou(*grids)[0])


def _sample_rows(points: torch.Tensor, num: int, generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``num`` rows of (N, 3) ``points`` drawn without replacement (all of them when N <= num)."""
    if len(points) <= num:
        return points
    index = torch.randperm(len(points), generator=generator)[:num].to(points.device)
    return points[index]


def _occupied_centres(occ: torch.Tensor) -> torch.Tensor:
    """(G, G, G) bool -> (N, 3) voxel centres in the grid frame."""
    centres = voxel_centers(occ.shape[-1], device=occ.device)
    return centres[torch.nonzero(occ)]


def chamfer_paper(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_points: int = PAPER_CHAMFER_POINTS,
    generator: torch.Generator | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """The paper's Chamfer distance between two occupancy grids, per example.

    Both grids are thresholded; the occupied voxel centres (grid frame, [-1, 1]) form two point clouds
    ``P`` and ``Q``; up to ``num_points`` points are sampled from each without replacement; the result is
    ``sum_p min_q |p - q|^2 + sum_q min_p |q - p|^2`` over the samples.

    Args:
        pred: (B, 1, G, G, G) predicted probabilities or bools.
        target: (B, 1, G, G, G) ground-truth occupancy.
        num_points: points sampled from each cloud (1000 in the paper).
        generator: CPU generator for the sampling (seed it for reproducible numbers).
        threshold: occupancy threshold.

    Returns:
        (B,) float32: 0 when both grids are empty, NaN when exactly one is (undefined).
    """
    _check_pair(pred, target)
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    a, b = occupancy(pred, threshold)[:, 0], occupancy(target, threshold)[:, 0]
    out = torch.empty(len(a), dtype=torch.float32)
    for i in range(len(a)):
        p = _sample_rows(_occupied_centres(a[i]), num_points, generator)
        q = _sample_rows(_occupied_centres(b[i]), num_points, generator)
        if len(p) == 0 or len(q) == 0:
            out[i] = 0.0 if len(p) == len(q) else math.nan
            continue
        d2 = torch.cdist(p[None].double(), q[None].double())[0] ** 2
        out[i] = float(d2.min(dim=1).values.sum() + d2.min(dim=0).values.sum())
    return out.to(pred.device)


def chamfer_sampling_floor(
    target: torch.Tensor,
    num_points: int = PAPER_CHAMFER_POINTS,
    generator: torch.Generator | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """:func:`chamfer_paper` of each grid against itself: what a *perfect* reconstruction scores.

    Args:
        target: (B, 1, G, G, G) occupancy.

    Returns:
        (B,) Chamfer of two independent random subsets of the same occupied voxels (0 when a grid has at
        most ``num_points`` occupied voxels, since then both "subsets" are all of them).
    """
    return chamfer_paper(target, target, num_points, generator, threshold)


def squared_distance_transform(occ: torch.Tensor, chunk: int = 16, backend: str = "auto") -> torch.Tensor:
    """Exact squared Euclidean distance (in voxels) from every voxel to the nearest occupied voxel.

    ``backend="torch"``: separable, batched on the tensor's device: ``d^2 = min over occupied
    (dx^2 + dy^2 + dz^2)`` as three 1-D min-plus passes, one per axis, each a brute-force minimum over the
    G positions of a line (exact). ``backend="scipy"``: ``scipy.ndimage.distance_transform_edt`` per example
    (faster on a CPU). ``"auto"`` picks scipy for CPU tensors and torch otherwise; both give the same numbers.

    Args:
        occ: (B, 1, G, G, G) bool occupancy.
        chunk: examples processed together by the torch backend.
        backend: "auto", "torch" or "scipy".

    Returns:
        (B, 1, G, G, G) float32 squared distances; 0 on occupied voxels; ``>= 1e9`` everywhere when a grid
        is empty.
    """
    _check_grid("occ", occ)
    if backend not in ("auto", "torch", "scipy"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'scipy', got {backend!r}")
    if backend == "scipy" or (backend == "auto" and occ.device.type == "cpu"):
        return _squared_distance_transform_scipy(occ)
    g = occ.shape[-1]
    results = []
    for start in range(0, len(occ), chunk):
        d = torch.where(occ[start : start + chunk, 0], 0.0, _FAR).float()  # (b, G, G, G)
        for axis in (1, 2, 3):
            lines = d.movedim(axis, -1)  # (..., G): one 1-D line per row
            pos = torch.arange(g, device=occ.device, dtype=torch.float32)
            best = torch.full_like(lines, _FAR)
            for j in range(g):  # out[i] = min_j (in[j] + (i - j)^2)
                best = torch.minimum(best, lines[..., j : j + 1] + (pos - j) ** 2)
            d = best.movedim(-1, axis)
        results.append(d.clamp(max=_FAR))
    return torch.cat(results)[:, None] if results else occ.float()


def _squared_distance_transform_scipy(occ: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage

    grids = occ[:, 0].cpu().numpy()
    out = torch.full(occ.shape, _FAR, dtype=torch.float32)
    for i, grid in enumerate(grids):
        if grid.any():
            out[i, 0] = torch.from_numpy(ndimage.distance_transform_edt(~grid) ** 2).float()
    return out.to(occ.device)


def directed_mean_nn_distance(source: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Mean distance (voxel units) from each occupied voxel of ``source`` to the nearest one of ``target``.

    Args:
        source: (B, 1, G, G, G) probabilities or bools.
        target: (B, 1, G, G, G) probabilities or bools.

    Returns:
        (B,): 0 when ``source`` is empty, NaN when only ``target`` is empty.
    """
    _check_pair(source, target)
    a, b = occupancy(source, threshold), occupancy(target, threshold)
    dist = squared_distance_transform(b).sqrt()
    count = a.flatten(1).sum(dim=1)
    total = (dist * a).flatten(1).sum(dim=1)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    target_empty = ~b.flatten(1).any(dim=1)
    return torch.where(target_empty & (count > 0), torch.full_like(mean, math.nan), mean)


def mean_nn_distance(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Mean symmetric nearest-neighbour distance over *all* occupied voxels, in voxel units.

    ``0.5 * (mean_{p in P} min_{q in Q} |p - q| + mean_{q in Q} min_{p in P} |q - p|)`` with ``P``, ``Q`` the
    occupied voxels of the thresholded grids (distances between voxel centres, 1 = one voxel). Unlike
    :func:`chamfer_paper` it involves no sampling: identical grids score exactly 0, a solid shifted by one
    voxel scores (its voxels not covered by the shifted copy) / (its voxels).

    Args:
        pred: (B, 1, G, G, G) predicted probabilities or bools.
        target: (B, 1, G, G, G) ground-truth occupancy.

    Returns:
        (B,) float32: 0 when both grids are empty, NaN when exactly one is.
    """
    forward = directed_mean_nn_distance(pred, target, threshold)
    backward = directed_mean_nn_distance(target, pred, threshold)
    return 0.5 * (forward + backward)


def keypoint_distance(a: torch.Tensor, b: torch.Tensor, grid_size: int = 64) -> torch.Tensor:
    """Euclidean distance between corresponding keypoints, in voxels of a ``grid_size``^3 grid.

    Args:
        a: (B, K, 3) keypoints in the grid frame.
        b: (B, K, 3) keypoints in the grid frame.

    Returns:
        (B, K) distances; one voxel is ``2 / grid_size`` grid units.
    """
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"keypoints must both be (B, K, 3), got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a - b).norm(dim=-1) * (grid_size / 2.0)


def summarize(values: torch.Tensor | list[float]) -> dict:
    """Mean, standard deviation (population, like NumPy's default) and more of the finite entries.

    Returns:
        dict with ``mean``, ``std``, ``median``, ``min``, ``max``, ``p90``, ``n`` (finite entries) and
        ``n_undefined`` (NaN entries, e.g. Chamfer of an empty reconstruction).
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    finite = v[torch.isfinite(v)]
    stats = {"n": int(finite.numel()), "n_undefined": int(v.numel() - finite.numel())}
    if finite.numel() == 0:
        return {**stats, **{k: math.nan for k in ("mean", "std", "median", "min", "max", "p90")}}
    return {
        **stats,
        "mean": float(finite.mean()),
        "std": float(finite.std(unbiased=False)) if finite.numel() > 1 else 0.0,
        "median": float(finite.median()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "p90": float(torch.quantile(finite, 0.9)),
    }
