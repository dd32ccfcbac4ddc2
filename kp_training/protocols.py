"""The evaluation protocols of ``kp-eval`` (:mod:`kp_training.evaluate`, which holds their settings,
``EvalConfig``): the numbers of each protocol as plain dicts (rendering: :mod:`kp_training.report`).

1. Representation power (Table I): reconstruction of ``--samples`` seeded random augmentations (the training
   sampler, :func:`kp_training.data.sample_transforms` + :func:`~kp_training.data.make_views`), scored by BCE,
   IoU, the paper's Chamfer (with its sampling floor: ground truth against itself) and the exact mean
   nearest-neighbour distance in voxels (:mod:`kp_training.metrics`).
2. Latent interpolation (Fig. 6): base = the unscaled shape rotated by pi about z, goal = base rotated by a
   further 90 deg; for psi in [0, 90) deg: KP-Net ``g(R_z(psi) f(X))``, KP-Net (Interp.)
   ``g((1-a) R_z(psi) f(X) + a R_z(psi - 90) f(X*))`` and CNN-Net ``g((1-a) f(X) + a f(X*))``, a = psi / 90,
   against the rotated shape voxelized again. The same curves averaged over random base poses and scales,
   and the KP-Net goal IoU over the whole circle.
3. Equivariance error ``|f(phi(X)) - phi(f(X))|`` in voxels for rotation-only, scale-only and full
   transforms of the canonical shape, per keypoint and overall.
4. What a user sees (KP-Net, and optionally a second KP-Net, ``--kp-compare``, e.g. the previous model):
   simulated depth-sensor clouds of the shape at its trained size in ``--sensor-poses`` seeded yaw poses,
   whole (fused from several cameras) and single-view, the grid placed by the node's rule, and the goal
   IoU at psi = 0, 15, ..., 345 deg against the solid turned about its own vertical axis
   (:func:`kp_training.goal_quality.sensor_goal_iou`): mean, minimum and spread (max - min) over psi.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from kp_core.geometry import GRID_SIZE, rotate_z_points, transform_points

from .data import make_views, sample_transforms
from .goal_quality import psi_grid, sensor_goal_iou, sensor_sampler
from .metrics import (
    binary_cross_entropy,
    chamfer_paper,
    chamfer_sampling_floor,
    keypoint_distance,
    mean_nn_distance,
    summarize,
    voxel_iou,
)
from .shapes import metres_per_unit

if TYPE_CHECKING:  # the settings live with the job that reads them
    from .evaluate import EvalConfig


KP, KP_INTERP, CNN = "KP-Net", "KP-Net (Interp.)", "CNN-Net"
KP_COMPARE = "KP-Net (compared)"
METRICS = ("bce", "iou", "chamfer", "distance")
PAPER_TABLE_I = {
    CNN: {"bce": (0.006, 0.001), "iou": (0.984, 0.003), "chamfer": (9.244, 0.953)},
    KP: {"bce": (0.012, 0.0144), "iou": (0.970, 0.011), "chamfer": (9.366, 0.929)},
}
METHOD_FORMULAS = {
    KP: "KP-Net: g(R_z(psi) f(X)).",
    KP_INTERP: "KP-Net (Interp.): g((1-a) R_z(psi) f(X) + a R_z(psi-90) f(X*)).",
    CNN: "CNN-Net: g((1-a) f(X) + a f(X*)).",
    KP_COMPARE: "KP-Net (compared): the second KP-Net's g(R_z(psi) f(X)).",
}
EQUIVARIANCE_MODES = ("rotation", "scale", "rotation+scale")
# separate sampling streams, so that adding or leaving out a model does not change another's numbers
_STREAMS = {"transforms": 0, "floor": 1, KP: 2, KP_INTERP: 3, CNN: 4, "poses": 5, "equivariance": 6, "sensor": 7,
            KP_COMPARE: 8}
SENSOR_KINDS = {"whole": 1.0, "single": 0.0}  # share of fused multi-camera clouds


def _generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + _STREAMS[stream])


# ----------------------------------------------------------------------------------------------- models


@torch.no_grad()
def encode(model, voxels: torch.Tensor, batch: int) -> torch.Tensor:
    """Latents of (B, 1, G, G, G) voxels, ``batch`` at a time."""
    return torch.cat([model.encode(voxels[i : i + batch]).float() for i in range(0, len(voxels), batch)])


def score(logits: torch.Tensor, target: torch.Tensor, generator: torch.Generator, chamfer_points: int) -> dict:
    """All reconstruction metrics of a batch: (B, 1, G, G, G) logits against 0/1 targets -> metric -> (B,)."""
    probs = torch.sigmoid(logits.float())
    return {
        "bce": binary_cross_entropy(logits, target).cpu(),
        "iou": voxel_iou(probs, target).cpu(),
        "chamfer": chamfer_paper(probs, target, chamfer_points, generator).cpu(),
        "distance": mean_nn_distance(probs, target).cpu(),
    }


@torch.no_grad()
def decode_and_score(model, latents: torch.Tensor, targets, generator: torch.Generator, batch: int,
                     chamfer_points: int, keep: set[int] | None = None) -> tuple[dict, dict[int, torch.Tensor]]:
    """Decode ``latents`` batch by batch and score them against ``targets``.

    Args:
        latents: (N, ...) latents.
        targets: callable ``(start, stop) -> (stop - start, 1, G, G, G)`` ground truth.
        keep: indices whose probability grids to return (for figures).

    Returns:
        metric -> (N,) values, and index -> (1, G, G, G) probabilities (CPU) for ``keep``.
    """
    parts: dict[str, list] = {m: [] for m in METRICS}
    kept: dict[int, torch.Tensor] = {}
    for start in range(0, len(latents), batch):
        stop = min(start + batch, len(latents))
        logits = model.decode(latents[start:stop]).float()
        for m, v in score(logits, targets(start, stop), generator, chamfer_points).items():
            parts[m].append(v)
        for i in keep or ():
            if start <= i < stop:
                kept[i] = torch.sigmoid(logits[i - start]).cpu()
    return {m: torch.cat(v) for m, v in parts.items()}, kept


# ----------------------------------------------------------------------------------- 1. representation


@torch.no_grad()
def representation_power(models: dict, points: torch.Tensor, cfg: EvalConfig, device: torch.device) -> dict:
    """Table I on ``cfg.samples`` seeded augmentations; the same views for every model.

    Returns:
        {"per_example": {method: {metric: list}}, "summary": {method: {metric: summary}},
         "transforms": {"angle": list, "scale": list}, "examples": figure data}
    """
    angle, scale = sample_transforms(cfg.samples, _generator(cfg.seed, "transforms"), device,
                                     (cfg.scale_min, cfg.scale_max))
    per: dict[str, dict[str, list]] = {name: {m: [] for m in METRICS} for name in models}
    per["Ground truth (sampling floor)"] = {"chamfer": []}
    gens = {name: _generator(cfg.seed, name) for name in models}
    floor_gen = _generator(cfg.seed, "floor")
    n_fig = min(cfg.figure_examples, cfg.samples)
    examples = {"ground_truth": [], "keypoints": [], KP: [], CNN: [], **{name: [] for name in models}}
    for start in range(0, cfg.samples, cfg.batch):
        stop = min(start + cfg.batch, cfg.samples)
        views = make_views(points, angle[start:stop], scale[start:stop])
        per["Ground truth (sampling floor)"]["chamfer"] += chamfer_sampling_floor(
            views, cfg.chamfer_points, floor_gen).cpu().tolist()
        for name, model in models.items():
            latent = model.encode(views)
            logits = model.decode(latent).float()
            for m, v in score(logits, views, gens[name], cfg.chamfer_points).items():
                per[name][m] += v.tolist()
            for i in range(start, min(stop, n_fig)):
                examples[name].append(torch.sigmoid(logits[i - start]).cpu())
                if name == KP:
                    examples["keypoints"].append(latent[i - start].cpu())
        for i in range(start, min(stop, n_fig)):
            examples["ground_truth"].append(views[i - start].cpu())
    summary = {name: {m: summarize(v) for m, v in metrics.items()} for name, metrics in per.items()}
    return {
        "per_example": per,
        "summary": summary,
        "transforms": {"angle": angle.cpu().tolist(), "scale": scale.cpu().tolist()},
        "examples": examples,
    }


# ----------------------------------------------------------------------------------- 2. interpolation


@torch.no_grad()
def interpolation(kp_model, cnn_model, points: torch.Tensor, base_angle: float, scale: torch.Tensor,
                  psi: torch.Tensor, batch: int, chamfer_points: int, seed: int,
                  keep: set[int] | None = None, compare_model=None) -> tuple[dict, dict]:
    """Fig. 6 curves for one base pose.

    The base view is ``R_z(base_angle) S p``, the goal ``R_z(base_angle + 90 deg) S p`` and the ground truth
    at ``psi`` is ``R_z(base_angle + psi) S p`` voxelized again. ``compare_model``: a second KP-Net, whose
    ``g(R_z(psi) f(X))`` is the curve :data:`KP_COMPARE`.

    Args:
        points: (N, 3) shape points on the device.
        scale: (3,) per-axis scale of the pose.
        psi: (A,) angles in radians.

    Returns:
        method -> metric -> (A,) tensor, and method -> {angle index -> (1, G, G, G) probabilities} for ``keep``.
    """
    device = points.device
    psi = psi.to(device)
    base_angle_t = torch.tensor([base_angle, base_angle + math.pi / 2], device=device)
    ends = make_views(points, base_angle_t, scale.to(device).expand(2, 3))  # base, goal
    scales = scale.to(device).expand(len(psi), 3)

    # ground truth voxelized once for all methods (kept as bool: 1/4 of the memory)
    truth = torch.cat([make_views(points, base_angle + psi[i : i + batch], scales[i : i + batch]).bool()
                       for i in range(0, len(psi), batch)])

    def targets(start, stop):
        return truth[start:stop].float()

    a = (psi / (math.pi / 2)).float()
    latents: dict[str, torch.Tensor] = {}
    if kp_model is not None:
        kp_base, kp_goal = encode(kp_model, ends, batch).unbind(0)
        rot_base = rotate_z_points(kp_base.expand(len(psi), -1, -1), psi)
        rot_goal = rotate_z_points(kp_goal.expand(len(psi), -1, -1), psi - math.pi / 2)
        latents[KP] = rot_base
        latents[KP_INTERP] = (1 - a)[:, None, None] * rot_base + a[:, None, None] * rot_goal
    if compare_model is not None:
        latents[KP_COMPARE] = rotate_z_points(encode(compare_model, ends[:1], batch).expand(len(psi), -1, -1), psi)
    if cnn_model is not None:
        z_base, z_goal = encode(cnn_model, ends, batch).unbind(0)
        latents[CNN] = (1 - a)[:, None] * z_base + a[:, None] * z_goal
    curves, kept = {}, {}
    for method, latent in latents.items():
        model = {CNN: cnn_model, KP_COMPARE: compare_model}.get(method, kp_model)
        gen = torch.Generator().manual_seed(seed * 1000 + _STREAMS[method])
        curves[method], kept[method] = decode_and_score(model, latent, targets, gen, batch, chamfer_points, keep)
    return curves, kept


@torch.no_grad()
def ground_truth_views(points: torch.Tensor, base_angle: float, scale: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """(A, 1, G, G, G) re-voxelized shape at ``base_angle + psi`` (CPU)."""
    psi = psi.to(points.device)
    return make_views(points, base_angle + psi, scale.to(points.device).expand(len(psi), 3)).cpu()


def _curves_to_lists(curves: dict) -> dict:
    return {method: {m: v.tolist() for m, v in metrics.items()} for method, metrics in curves.items()}


@torch.no_grad()
def interpolation_suite(kp_model, cnn_model, points: torch.Tensor, cfg: EvalConfig, compare_model=None) -> dict:
    """Fig. 6 on the base pose, the pose-averaged curves, the KP-Net circle and the paper's claim
    (:func:`paper_claim`); ``compare_model``: a second KP-Net's curve beside them."""
    one = torch.ones(3)
    psi = torch.arange(cfg.angles, dtype=torch.float64) * (math.pi / 2) / cfg.angles
    psi = psi.float()
    strip_index = sorted({int(round(i * cfg.angles / cfg.strip_angles)) for i in range(cfg.strip_angles)})
    strip_index = [i for i in strip_index if i < cfg.angles]
    base, kept = interpolation(kp_model, cnn_model, points, math.pi, one, psi, cfg.batch, cfg.chamfer_points,
                               cfg.seed, keep=set(strip_index) if cfg.figures else None, compare_model=compare_model)
    result = {
        "base_pose": {"angle_deg": 180.0, "scale": [1.0, 1.0, 1.0]},
        "psi_deg": torch.rad2deg(psi).tolist(),
        "curves": _curves_to_lists(base),
        "strip": {"index": strip_index, "grids": kept},
    }
    if cfg.poses:
        gen = _generator(cfg.seed, "poses")
        pose_angle, pose_scale = sample_transforms(cfg.poses, gen, "cpu", (cfg.scale_min, cfg.scale_max))
        psi_p = (torch.arange(cfg.pose_angles, dtype=torch.float64) * (math.pi / 2) / cfg.pose_angles).float()
        runs: dict[str, dict[str, list]] = {}
        for p in range(cfg.poses):
            curves, _ = interpolation(kp_model, cnn_model, points, float(pose_angle[p]), pose_scale[p], psi_p,
                                      cfg.batch, cfg.chamfer_points, cfg.seed + 1 + p, compare_model=compare_model)
            for method, metrics in curves.items():
                for m, v in metrics.items():
                    runs.setdefault(method, {}).setdefault(m, []).append(v)
        stacked = {method: {m: torch.stack(v).double() for m, v in metrics.items()} for method, metrics in runs.items()}
        result["pose_average"] = {
            "psi_deg": torch.rad2deg(psi_p).tolist(),
            "poses": {"angle_deg": torch.rad2deg(pose_angle).tolist(), "scale": pose_scale.tolist()},
            "mean": {method: {m: _nanmean(v).tolist() for m, v in ms.items()} for method, ms in stacked.items()},
            "std": {method: {m: _nanstd(v).tolist() for m, v in ms.items()} for method, ms in stacked.items()},
        }
    if kp_model is not None:
        result["circle"] = circle(kp_model, points, cfg, pose_angle if cfg.poses else None,
                                  pose_scale if cfg.poses else None)
    claim = paper_claim(result)
    if claim is not None:
        result["claim"] = claim
    return result


def paper_claim(interp: dict, at_deg: float = 45.0) -> dict | None:
    """The paper's reading of Fig. 6 (KP-Net rotates the object in latent space where CNN-Net's interpolation
    cannot) at the angle nearest ``at_deg``: both IoUs and KP-Net's margin at the base pose and, with random poses,
    their means and standard deviations over the poses; ``holds`` when the mean margin exceeds both standard
    deviations; with a compared KP-Net, its IoU there too. None without both curves."""
    if KP not in interp["curves"] or CNN not in interp["curves"]:
        return None

    def at(psi_deg, values):
        return float(values[int(np.abs(np.asarray(psi_deg) - at_deg).argmin())])

    kp, cnn = (at(interp["psi_deg"], interp["curves"][m]["iou"]) for m in (KP, CNN))
    claim = {"psi_deg": at(interp["psi_deg"], interp["psi_deg"]), "base": {"kp": kp, "cnn": cnn, "margin": kp - cnn}}
    avg = interp.get("pose_average")
    if avg:
        mean = {m: at(avg["psi_deg"], avg["mean"][m]["iou"]) for m in (KP, CNN)}
        std = {m: at(avg["psi_deg"], avg["std"][m]["iou"]) for m in (KP, CNN)}
        margin = mean[KP] - mean[CNN]
        claim["poses"] = {"count": len(avg["poses"]["angle_deg"]), "psi_deg": at(avg["psi_deg"], avg["psi_deg"]),
                          "kp": mean[KP], "kp_std": std[KP], "cnn": mean[CNN], "cnn_std": std[CNN], "margin": margin,
                          "holds": bool(margin > max(std[KP], std[CNN]))}
    if KP_COMPARE in interp["curves"]:
        claim["base"]["compared"] = at(interp["psi_deg"], interp["curves"][KP_COMPARE]["iou"])
        if avg:
            claim["poses"]["compared"] = at(avg["psi_deg"], avg["mean"][KP_COMPARE]["iou"])
            claim["poses"]["compared_std"] = at(avg["psi_deg"], avg["std"][KP_COMPARE]["iou"])
    return claim


def _nanmean(v: torch.Tensor) -> torch.Tensor:
    return torch.nanmean(v, dim=0)


def _nanstd(v: torch.Tensor) -> torch.Tensor:
    mean = torch.nanmean(v, dim=0, keepdim=True)
    return torch.nanmean((v - mean) ** 2, dim=0).sqrt()


@torch.no_grad()
def circle(kp_model, points: torch.Tensor, cfg: EvalConfig, pose_angle=None, pose_scale=None) -> dict:
    """KP-Net goal IoU of ``g(R_z(psi) f(X))`` for psi over [0, 360) deg: base pose and random poses."""
    psi = (torch.arange(cfg.circle_angles, dtype=torch.float64) * (2 * math.pi) / cfg.circle_angles).float()

    def curve(angle: float, scale: torch.Tensor) -> torch.Tensor:
        x = make_views(points, torch.tensor([angle], device=points.device), scale.to(points.device)[None])
        kp = encode(kp_model, x, 1)
        latents = rotate_z_points(kp.expand(len(psi), -1, -1), psi.to(points.device))
        scales = scale.to(points.device).expand(len(psi), 3)
        ious = []
        for start in range(0, len(psi), cfg.batch):
            stop = min(start + cfg.batch, len(psi))
            logits = kp_model.decode(latents[start:stop]).float()
            target = make_views(points, angle + psi[start:stop].to(points.device), scales[start:stop])
            ious.append(voxel_iou(torch.sigmoid(logits), target).cpu())
        return torch.cat(ious)

    out = {"psi_deg": torch.rad2deg(psi).tolist(), "iou": curve(math.pi, torch.ones(3)).tolist()}
    if pose_angle is not None:
        runs = torch.stack([curve(float(a), s) for a, s in zip(pose_angle, pose_scale)]).double()
        out["pose_mean_iou"] = runs.mean(0).tolist()
        out["pose_std_iou"] = runs.std(0, unbiased=False).tolist()
    return out


# ----------------------------------------------------------------------------------- 3. equivariance


@torch.no_grad()
def equivariance(kp_model, points: torch.Tensor, cfg: EvalConfig) -> dict:
    """``|f(phi(X)) - phi(f(X))|`` in voxels, X the canonical (unrotated, unscaled) shape.

    Modes: "rotation" (random z angle, unit scale), "scale" (zero angle, random per-axis scale),
    "rotation+scale" (the training augmentation).

    Returns:
        mode -> {"per_keypoint_mean": (K,) list, "overall": summary over all samples x keypoints,
        "per_sample_mean": summary of each sample's mean over keypoints, "relative_to_spread": mean error /
        spread}, and "keypoint_spread_voxels": RMS distance of the canonical keypoints from their centroid
        (collapsed keypoints are trivially "equivariant": read the error against the spread).
    """
    device = points.device
    canonical = make_views(points, torch.zeros(1, device=device), torch.ones(1, 3, device=device))
    kp0 = encode(kp_model, canonical, 1)  # (1, K, 3)
    gen = _generator(cfg.seed, "equivariance")
    centred = kp0[0] - kp0[0].mean(0)
    spread = float(centred.norm(dim=-1).pow(2).mean().sqrt()) * GRID_SIZE / 2.0
    out = {"keypoint_spread_voxels": spread}
    for mode in EQUIVARIANCE_MODES:
        angle, scale = sample_transforms(cfg.equivariance_samples, gen, device, (cfg.scale_min, cfg.scale_max))
        if mode == "rotation":
            scale = torch.ones_like(scale)
        elif mode == "scale":
            angle = torch.zeros_like(angle)
        errors = []
        for start in range(0, len(angle), cfg.batch):
            a, s = angle[start : start + cfg.batch], scale[start : start + cfg.batch]
            moved = encode(kp_model, make_views(points, a, s), cfg.batch)
            expected = transform_points(kp0.expand(len(a), -1, -1), a, s)
            errors.append(keypoint_distance(moved, expected).cpu())
        err = torch.cat(errors).double()  # (n, K)
        out[mode] = {
            "per_keypoint_mean": err.mean(0).tolist(),
            "per_keypoint_median": err.median(0).values.tolist(),
            "overall": summarize(err),
            "per_sample_mean": summarize(err.mean(1)),
            "relative_to_spread": float(err.mean()) / spread if spread > 0 else math.nan,
        }
    return out


# ----------------------------------------------------------------------------------- 4. sensor-like clouds


def sensor_suite(kp_models: dict, shape, cfg: EvalConfig, device: torch.device) -> dict:
    """Goal IoU on simulated sensor clouds (whole and single-view) for each KP-Net in ``kp_models``
    (name -> (model, metadata)); every model sees the same poses and cameras, placed by its own zoom."""
    unit = metres_per_unit(shape)
    psi = psi_grid(cfg.sensor_psi_step)
    points = shape.points.to(device)
    angle = torch.rand(cfg.sensor_poses, generator=_generator(cfg.seed, "sensor")) * (2 * math.pi)
    scale = torch.ones(cfg.sensor_poses, 3)  # the object at its trained size, as the node assumes
    result: dict = {"psi_deg": torch.rad2deg(psi).tolist(), "pose_angle_deg": torch.rad2deg(angle).tolist(), "models": {}}
    for name, (model, meta) in kp_models.items():
        per_kind = {}
        for kind, whole_fraction in SENSOR_KINDS.items():
            sampler = sensor_sampler(model, meta, points, unit, whole_fraction)
            zoom = sampler.zoom
            generator = _generator(cfg.seed, "sensor")  # the same cameras for every model
            scores = sensor_goal_iou(model, sampler, angle, scale, psi, generator, batch=cfg.batch)
            per_psi = scores["iou"].mean(0)
            per_kind[kind] = {
                "iou_per_psi": per_psi.tolist(),
                "iou_per_psi_std": scores["iou"].std(0).tolist() if len(angle) > 1 else [0.0] * len(psi),
                "mean": float(per_psi.mean()), "min": float(per_psi.min()),
                "spread": float(per_psi.max() - per_psi.min()),
                "iou_true_axis_per_psi": scores["iou_true_axis"].mean(0).tolist(),
                "mean_true_axis": float(scores["iou_true_axis"].mean()),
                "min_true_axis": float(scores["iou_true_axis"].mean(0).min()),
                "recon_iou": float(scores["recon_iou"].mean()),
                "axis_error_mm": float(scores["axis_error"].mean()) * zoom * unit * 1000,
                "per_cloud_mean": scores["iou"].mean(1).tolist(),
            }
        result["models"][name] = {"zoom": zoom, **per_kind}
    return result


