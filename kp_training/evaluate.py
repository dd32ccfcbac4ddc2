"""``kp-eval``: the paper's evaluation of KP-Net and the CNN-Net baseline from their checkpoints.

Writes into ``--out``: ``results.json`` (everything), ``table1.md``, CSV files of every curve and PNG
figures, and optionally a Markdown report (``--results-md``, e.g. docs/RESULTS.md) with the tables beside the
paper's numbers, the figures, the exact command and the checkpoints' training configs.

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
5. Figures (Fig. 5 reconstructions, Fig. 6 curves, Fig. 7 strip, circle, equivariance, sensor goal curves).

Example::

    kp-eval --kp runs/kpnet --cnn runs/cnn --out docs/results --results-md docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kp_core.checkpoint import CheckpointError, checkpoint_paths, load_model
from kp_core.devices import resolve_device
from kp_core.geometry import GRID_SIZE, rotate_z_points, transform_points
from kp_core.placement import grid_zoom

from . import __version__
from .cli import add_config_flags, given, setting
from .data import SCALE_RANGE, ViewSampler, make_views, sample_transforms
from .goal_quality import psi_grid, sensor_goal_iou
from .metrics import (
    binary_cross_entropy,
    chamfer_paper,
    chamfer_sampling_floor,
    keypoint_distance,
    mean_nn_distance,
    summarize,
    voxel_iou,
)
from .sensor import SensorConfig
from .shapes import UP_AXES, load_shape, metres_per_unit

KP, KP_INTERP, CNN = "KP-Net", "KP-Net (Interp.)", "CNN-Net"
METRICS = ("bce", "iou", "chamfer", "distance")
PAPER_TABLE_I = {
    CNN: {"bce": (0.006, 0.001), "iou": (0.984, 0.003), "chamfer": (9.244, 0.953)},
    KP: {"bce": (0.012, 0.0144), "iou": (0.970, 0.011), "chamfer": (9.366, 0.929)},
}
METHOD_FORMULAS = {
    KP: "KP-Net: g(R_z(psi) f(X)).",
    KP_INTERP: "KP-Net (Interp.): g((1-a) R_z(psi) f(X) + a R_z(psi-90) f(X*)).",
    CNN: "CNN-Net: g((1-a) f(X) + a f(X*)).",
}
EQUIVARIANCE_MODES = ("rotation", "scale", "rotation+scale")
# separate sampling streams, so that adding or leaving out a model does not change another's numbers
_STREAMS = {"transforms": 0, "floor": 1, KP: 2, KP_INTERP: 3, CNN: 4, "poses": 5, "equivariance": 6, "sensor": 7}
KP_COMPARE = "KP-Net (compared)"
SENSOR_KINDS = {"whole": 1.0, "single": 0.0}  # share of fused multi-camera clouds


@dataclass
class EvalConfig:
    """All settings of one evaluation (stored in ``results.json``)."""

    kp: str | None = setting(None, "KP-Net checkpoint (.safetensors, .json, or a run folder -> best)", metavar="RUN_OR_CKPT")
    cnn: str | None = setting(None, "CNN-Net checkpoint (.safetensors, .json, or a run folder -> best)", metavar="RUN_OR_CKPT")
    kp_compare: str | None = setting(None, "a second KP-Net (e.g. the previous shipped model) scored beside --kp on "
                                     "sensor-like clouds", metavar="RUN_OR_CKPT")
    out: str = setting("outputs/eval", "output folder for tables, JSON, CSV and PNG files")
    results_md: str | None = setting(None, "also write a Markdown report (e.g. docs/RESULTS.md)", metavar="FILE")
    samples: int = setting(500, "augmentations for Table I (paper: 500)")
    angles: int = setting(200, "interpolation angles over [0, 90) deg (paper: 200)")
    poses: int = setting(32, "random base poses for the averaged curves (0: skip)")
    pose_angles: int = setting(46, "angles per random pose")
    circle_angles: int = setting(72, "angles over [0, 360) deg for the KP-Net circle")
    equivariance_samples: int = setting(200, "random transforms per equivariance mode")
    sensor_poses: int = setting(24, "poses per kind (whole, single view) for the sensor-like rotate-goal protocol (0: skip)")
    sensor_psi_step: float = setting(15.0, "goal angle step in degrees over [0, 360)")
    figure_examples: int = setting(3, "rows of the Fig. 5 figure")
    strip_angles: int = setting(5, "columns of the Fig. 7 strip")
    chamfer_points: int = setting(1000, "points per cloud for the paper's Chamfer")
    seed: int = setting(0, "seed of every random draw of the evaluation")
    batch: int = setting(16, "grids per forward pass")
    device: str = setting("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    shape: str | None = setting(None, "'mug' or a mesh file (default: the checkpoints' training shape)")
    up_axis: str | None = setting(None, "up axis of --shape", choices=UP_AXES)
    scale_min: float = setting(SCALE_RANGE[0], "smallest per-axis scale of the augmentations")
    scale_max: float = setting(SCALE_RANGE[1], "largest per-axis scale of the augmentations")
    figures: bool = setting(True, "write PNG figures")
    note: str | None = setting(None, "a note printed at the top of the Markdown report")
    num_threads: int | None = setting(None, "CPU threads for torch")
    command: list[str] = setting(help="the command line, for the report", cli=False, default_factory=list)

    def validate(self) -> None:
        if self.kp is None and self.cnn is None:
            raise ValueError("give at least one checkpoint: --kp (KP-Net) and/or --cnn (CNN-Net)")
        positive = {"samples": self.samples, "angles": self.angles, "batch": self.batch,
                    "circle_angles": self.circle_angles, "equivariance_samples": self.equivariance_samples,
                    "chamfer_points": self.chamfer_points, "strip_angles": self.strip_angles}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not 0 < self.sensor_psi_step <= 360:
            raise ValueError(f"--sensor-psi-step must be in (0, 360] degrees, got {self.sensor_psi_step}")
        for name, value in {"poses": self.poses, "figure_examples": self.figure_examples, "sensor_poses": self.sensor_poses}.items():
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.poses and self.pose_angles < 1:
            raise ValueError(f"--pose-angles must be >= 1, got {self.pose_angles}")
        if not 0 < self.scale_min <= self.scale_max <= 1:
            raise ValueError(f"need 0 < --scale-min <= --scale-max <= 1, got {self.scale_min}, {self.scale_max}")
        if self.up_axis is not None and self.up_axis not in UP_AXES:
            raise ValueError(f"--up-axis must be one of {UP_AXES}")


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
    examples = {"ground_truth": [], "keypoints": [], KP: [], CNN: []}
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
                if model.kind == "keypoint":
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
                  keep: set[int] | None = None) -> tuple[dict, dict]:
    """Fig. 6 curves for one base pose.

    The base view is ``R_z(base_angle) S p``, the goal ``R_z(base_angle + 90 deg) S p`` and the ground truth
    at ``psi`` is ``R_z(base_angle + psi) S p`` voxelized again.

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
    if cnn_model is not None:
        z_base, z_goal = encode(cnn_model, ends, batch).unbind(0)
        latents[CNN] = (1 - a)[:, None] * z_base + a[:, None] * z_goal
    curves, kept = {}, {}
    for method, latent in latents.items():
        model = cnn_model if method == CNN else kp_model
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
def interpolation_suite(kp_model, cnn_model, points: torch.Tensor, cfg: EvalConfig) -> dict:
    """Fig. 6 on the base pose, the pose-averaged curves and the KP-Net circle."""
    device = points.device
    one = torch.ones(3)
    psi = torch.arange(cfg.angles, dtype=torch.float64) * (math.pi / 2) / cfg.angles
    psi = psi.float()
    strip_index = sorted({int(round(i * cfg.angles / cfg.strip_angles)) for i in range(cfg.strip_angles)})
    strip_index = [i for i in strip_index if i < cfg.angles]
    base, kept = interpolation(kp_model, cnn_model, points, math.pi, one, psi, cfg.batch, cfg.chamfer_points,
                               cfg.seed, keep=set(strip_index) if cfg.figures else None)
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
                                      cfg.batch, cfg.chamfer_points, cfg.seed + 1 + p)
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
    return result


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


# ----------------------------------------------------------------------------------- outputs


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
        zoom = grid_zoom(meta.get("placement"))  # as the node places the grid on the object at its trained size
        per_kind = {}
        for kind, whole_fraction in SENSOR_KINDS.items():
            sampler = ViewSampler(points, model.input_from_points, SensorConfig(whole_fraction=whole_fraction),
                                  metres_per_unit=unit, zoom=zoom)
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


def sensor_markdown(sensor: dict) -> str:
    lines = ["| model | clouds | mean goal IoU | min over psi | spread over psi | IoU at psi 0 / 90 / 180 / 270 | about the true axis: mean / min | reconstruction IoU | axis error [mm] |",
             "|---|---|---|---|---|---|---|---|---|"]
    psi = np.asarray(sensor["psi_deg"])
    at = [int(np.abs(psi - w).argmin()) for w in (0, 90, 180, 270)]
    for name, res in sensor["models"].items():
        for kind in SENSOR_KINDS:
            r = res[kind]
            lines.append(f"| {name} | {kind} | {r['mean']:.3f} | {r['min']:.3f} | {r['spread']:.3f} | "
                         + " / ".join(f"{r['iou_per_psi'][i]:.3f}" for i in at)
                         + f" | {r['mean_true_axis']:.3f} / {r['min_true_axis']:.3f} | {r['recon_iou']:.3f} | {r['axis_error_mm']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def _fmt(stats: dict | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None or not math.isfinite(stats["mean"]):
        return f"n/a [{stats['n_undefined']} undefined]" if stats and stats.get("n_undefined") else "n/a"
    text = f"{stats['mean']:.{digits}f} ({stats['std']:.{digits}f})"
    if stats.get("n_undefined"):
        text += f" [{stats['n_undefined']} undefined]"
    return text


def table1_markdown(summary: dict, include_paper: bool = True) -> str:
    """Table I as Markdown: ours (mean (std)) and the paper's numbers, plus the Chamfer sampling floor."""
    lines = [
        "| Method | BCE ↓ | IoU ↑ | Chamfer (paper conv.) ↓ | Mean NN distance [voxels] ↓ |",
        "|---|---|---|---|---|",
    ]
    for method in (CNN, KP):
        if method in summary:
            s = summary[method]
            lines.append(f"| {method} (ours) | {_fmt(s['bce'])} | {_fmt(s['iou'])} | {_fmt(s['chamfer'])} "
                         f"| {_fmt(s['distance'])} |")
        if include_paper and (method in summary):
            p = PAPER_TABLE_I[method]
            lines.append(f"| {method} (paper) | {p['bce'][0]} ({p['bce'][1]}) | {p['iou'][0]} ({p['iou'][1]}) "
                         f"| {p['chamfer'][0]} ({p['chamfer'][1]}) | not reported |")
    floor = summary.get("Ground truth (sampling floor)")
    if floor:
        lines.append(f"| Ground truth vs itself (Chamfer sampling floor) | 0 | 1 | {_fmt(floor['chamfer'])} | 0 |")
    return "\n".join(lines) + "\n"


def _at_angles(psi_deg: list[float], wanted=(0, 15, 30, 45, 60, 75, 89)) -> list[int]:
    psi = np.asarray(psi_deg)
    return sorted({int(np.abs(psi - w).argmin()) for w in wanted})


def interpolation_markdown(interp: dict) -> str:
    psi = interp["psi_deg"]
    idx = _at_angles(psi)
    methods = list(interp["curves"])
    lines = ["| psi [deg] | " + " | ".join(f"{m} IoU" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for i in idx:
        lines.append(f"| {psi[i]:.1f} | " + " | ".join(f"{interp['curves'][m]['iou'][i]:.3f}" for m in methods) + " |")
    mean_row = " | ".join(f"**{np.nanmean(interp['curves'][m]['iou']):.3f}**" for m in methods)
    lines.append(f"| mean over [0, 90) | {mean_row} |")
    if "pose_average" in interp:
        avg = interp["pose_average"]
        row = " | ".join(f"{np.nanmean(avg['mean'][m]['iou']):.3f}" for m in methods)
        lines.append(f"| mean over [0, 90), {len(avg['poses']['angle_deg'])} random poses | {row} |")
    return "\n".join(lines) + "\n"


def _modes(eq: dict) -> dict:
    return {k: v for k, v in eq.items() if isinstance(v, dict)}


def equivariance_markdown(eq: dict) -> str:
    lines = ["| Transforms | mean [voxels] | median | 90th percentile | mean / keypoint spread | worst keypoint (mean) "
             "| best keypoint (mean) |", "|---|---|---|---|---|---|---|"]
    for mode, r in _modes(eq).items():
        o, pk = r["overall"], r["per_keypoint_mean"]
        lines.append(f"| {mode} | {o['mean']:.2f} | {o['median']:.2f} | {o['p90']:.2f} | {r['relative_to_spread']:.3f} | "
                     f"{max(pk):.2f} (#{int(np.argmax(pk))}) | {min(pk):.2f} (#{int(np.argmin(pk))}) |")
    lines.append(f"\nKeypoint spread (RMS distance of the canonical keypoints from their centroid): "
                 f"{eq['keypoint_spread_voxels']:.2f} voxels.")
    return "\n".join(lines) + "\n"


def write_tables_and_csv(out: Path, results: dict) -> None:
    rep = results.get("representation")
    if rep:
        (out / "table1.md").write_text(table1_markdown(rep["summary"]))
        methods = [m for m in (KP, CNN) if m in rep["per_example"]]
        header = ["index", "angle_rad", "scale_x", "scale_y", "scale_z", "gt_chamfer_floor"]
        header += [f"{m}_{metric}" for m in methods for metric in METRICS]
        rows = []
        tr = rep["transforms"]
        for i in range(len(tr["angle"])):
            row = [i, tr["angle"][i], *tr["scale"][i], rep["per_example"]["Ground truth (sampling floor)"]["chamfer"][i]]
            row += [rep["per_example"][m][metric][i] for m in methods for metric in METRICS]
            rows.append(row)
        _write_csv(out / "representation_per_example.csv", header, rows)
    interp = results.get("interpolation")
    if interp:
        methods = list(interp["curves"])
        header = ["psi_deg"] + [f"{m}_{metric}" for m in methods for metric in METRICS]
        rows = [[interp["psi_deg"][i]] + [interp["curves"][m][metric][i] for m in methods for metric in METRICS]
                for i in range(len(interp["psi_deg"]))]
        _write_csv(out / "interpolation.csv", header, rows)
        (out / "interpolation.md").write_text(interpolation_markdown(interp))
        if "pose_average" in interp:
            avg = interp["pose_average"]
            header = ["psi_deg"] + [f"{m}_{metric}_{stat}" for m in methods for metric in METRICS for stat in ("mean", "std")]
            rows = [[avg["psi_deg"][i]] + [avg[stat][m][metric][i] for m in methods for metric in METRICS for stat in ("mean", "std")]
                    for i in range(len(avg["psi_deg"]))]
            _write_csv(out / "interpolation_pose_average.csv", header, rows)
        if "circle" in interp:
            c = interp["circle"]
            header = ["psi_deg", "kp_iou"] + (["kp_iou_pose_mean", "kp_iou_pose_std"] if "pose_mean_iou" in c else [])
            rows = [[c["psi_deg"][i], c["iou"][i]] + ([c["pose_mean_iou"][i], c["pose_std_iou"][i]] if "pose_mean_iou" in c else [])
                    for i in range(len(c["psi_deg"]))]
            _write_csv(out / "circle.csv", header, rows)
    sensor = results.get("sensor")
    if sensor:
        (out / "sensor_goal.md").write_text(sensor_markdown(sensor))
        names = list(sensor["models"])
        header = ["psi_deg"] + [f"{n}_{kind}_iou" for n in names for kind in SENSOR_KINDS]
        rows = [[p] + [sensor["models"][n][kind]["iou_per_psi"][i] for n in names for kind in SENSOR_KINDS]
                for i, p in enumerate(sensor["psi_deg"])]
        _write_csv(out / "sensor_goal.csv", header, rows)
    eq = results.get("equivariance")
    if eq:
        (out / "equivariance.md").write_text(equivariance_markdown(eq))
        modes = _modes(eq)
        k = len(next(iter(modes.values()))["per_keypoint_mean"])
        _write_csv(out / "equivariance_per_keypoint.csv", ["keypoint"] + [f"{m}_mean_voxels" for m in modes],
                   [[i] + [modes[m]["per_keypoint_mean"][i] for m in modes] for i in range(k)])


def make_figures(out: Path, results: dict, figure_data: dict) -> dict[str, str]:
    """Write the PNG figures; returns figure name -> file name (relative to ``out``)."""
    from . import figures

    written: dict[str, str] = {}
    rep = figure_data.get("examples")
    if rep and rep["ground_truth"]:
        labels = []
        tr = results["representation"]["transforms"]
        for i in range(len(rep["ground_truth"])):
            s = tr["scale"][i]
            labels.append(f"{math.degrees(tr['angle'][i]):.0f} deg, s=({s[0]:.2f},{s[1]:.2f},{s[2]:.2f})")
        figures.reconstruction_figure(
            out / "fig5_reconstructions.png", rep["ground_truth"], rep["keypoints"] or None,
            rep[KP] or None, rep[CNN] or None, labels)
        written["reconstructions"] = "fig5_reconstructions.png"
    interp = results.get("interpolation")
    if interp:
        psi = np.asarray(interp["psi_deg"])
        figures.plot_interpolation(out / "fig6_interpolation.png", psi, interp["curves"],
                                   title="Latent interpolation, base pose (180 deg, unscaled)")
        written["interpolation"] = "fig6_interpolation.png"
        if "pose_average" in interp:
            avg = interp["pose_average"]
            figures.plot_interpolation(out / "fig6_interpolation_pose_average.png", np.asarray(avg["psi_deg"]),
                                       avg["mean"], spread=avg["std"],
                                       title=f"Latent interpolation, mean (band: std) over {len(avg['poses']['angle_deg'])} random poses and scales")
            written["interpolation_pose_average"] = "fig6_interpolation_pose_average.png"
        if "circle" in interp:
            c = interp["circle"]
            figures.plot_circle(out / "circle_iou.png", np.asarray(c["psi_deg"]), np.asarray(c["iou"]),
                                np.asarray(c["pose_mean_iou"]) if "pose_mean_iou" in c else None,
                                np.asarray(c["pose_std_iou"]) if "pose_std_iou" in c else None)
            written["circle"] = "circle_iou.png"
        strip = figure_data.get("strip")
        if strip and strip["grids"]:
            index = strip["index"]
            rows = {"Ground truth": list(strip["ground_truth"])}
            for method in (KP, KP_INTERP, CNN):
                if method in strip["grids"]:
                    rows[method] = [strip["grids"][method].get(i) for i in index]
            angles = [interp["psi_deg"][i] for i in index]
            figures.interpolation_strip(out / "fig7_interpolation_strip.png", angles, rows)
            written["strip"] = "fig7_interpolation_strip.png"
    sensor = results.get("sensor")
    if sensor:
        figures.plot_sensor_goal(out / "sensor_goal_iou.png", np.asarray(sensor["psi_deg"]),
                                 {name: {kind: np.asarray(r[kind]["iou_per_psi"]) for kind in SENSOR_KINDS}
                                  for name, r in sensor["models"].items()})
        written["sensor"] = "sensor_goal_iou.png"
    eq = results.get("equivariance")
    if eq:
        figures.plot_equivariance(out / "equivariance.png", {m: np.asarray(r["per_keypoint_mean"]) for m, r in _modes(eq).items()})
        written["equivariance"] = "equivariance.png"
    return written


def _finite(obj):
    """JSON-safe copy: non-finite floats (e.g. the Chamfer of an empty reconstruction) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _checkpoint_info(path: str, meta: dict) -> dict:
    weights, _ = checkpoint_paths(path)
    keys = ("architecture", "train_config", "progress", "metrics", "normalization", "code_version", "precision",
            "device", "weights_sha256", "shape", "placement", "inputs")
    return {"path": str(weights), **{k: meta[k] for k in keys if k in meta}}


def results_markdown(results: dict, out: Path, md_path: Path) -> str:
    """The report (docs/RESULTS.md): tables beside the paper's, figures, commands, checkpoint configs."""
    cfg = results["config"]
    rel = Path(os.path.relpath(out, md_path.parent))
    fig = results.get("figures", {})

    def image(key: str, alt: str) -> str:
        return f"![{alt}]({(rel / fig[key]).as_posix()})\n" if key in fig else ""

    lines = ["# Results", ""]
    lines.append(f"Generated by `kp-eval` {results['kp_eval_version']} on {results['generated']} "
                 f"({results['environment']['device']}, torch {results['environment']['torch']}, "
                 f"{results['elapsed_s']:.0f} s). Regenerate with the command below; every number and figure "
                 f"here comes from it.")
    lines.append("")
    if cfg.get("note"):
        lines += [f"> **Note:** {cfg['note']}", ""]
    for name, info in results["checkpoints"].items():
        progress = info.get("progress", {})
        if not progress:
            lines += [f"> **{name}** has no training progress in its metadata (an untrained or hand-made checkpoint?).", ""]
        elif progress.get("pairs_seen", 10**9) < 100_000:
            lines += [f"> **{name}** was trained on only {progress.get('pairs_seen')} pairs "
                      f"({progress.get('epoch')} epochs; the paper: 400 epochs x 4000 pairs = 1.6 M pairs): "
                      "its numbers are not comparable to the paper's.", ""]
    lines += ["## Command", "", "```bash", "kp-eval " + shlex.join(cfg["command"]), "```", ""]
    lines += [f"Seed {cfg['seed']}, device `{results['environment']['device']}`, "
              f"shape `{results['shape']['source']}`. Settings: {cfg['samples']} augmentations for Table I, "
              f"{cfg['angles']} interpolation angles, {cfg['poses']} random poses x {cfg['pose_angles']} angles "
              f"for the averaged curves, {cfg['circle_angles']} angles on the circle, "
              f"{cfg['equivariance_samples']} transforms per equivariance mode.", ""]
    rep = results.get("representation")
    if rep:
        lines += ["## Representation power (Table I)", "",
                  f"Reconstruction of {cfg['samples']} seeded random augmentations (rotation about z in [0, 2 pi), "
                  f"per-axis scale in [{cfg['scale_min']}, {cfg['scale_max']})), the same views for both networks; "
                  "mean (standard deviation).", "", table1_markdown(rep["summary"]),
                  "BCE: plain BCE of the sigmoid outputs averaged over voxels. IoU: at 0.5, per example. "
                  "Chamfer (the paper's convention): thresholded grids, occupied voxel centres in the [-1, 1] frame, "
                  f"up to {cfg['chamfer_points']} points sampled from each, sum of squared nearest-neighbour distances "
                  "forward plus backward. It is dominated by its sampling floor (the ground-truth row: two random "
                  "subsets of the *same* grid). Mean NN distance: the mean symmetric nearest-neighbour distance over "
                  "all occupied voxels in voxels (exact; 0 for a perfect reconstruction).", "",
                  ]
        if "reconstructions" in fig:
            columns = ["a) ground truth"] + (["b) keypoints (colour = keypoint index)", "c) KP-Net reconstruction"]
                                             if KP in rep["summary"] else []) + (["d) CNN-Net reconstruction"] if CNN in rep["summary"] else [])
            lines += [image("reconstructions", "Reconstructions (Fig. 5)"),
                      "Fig. 5 style: " + ", ".join(columns) + " (surface voxels, coloured by height).", ""]
    interp = results.get("interpolation")
    if interp:
        lines += ["## Latent interpolation (Fig. 6)", "",
                  "Base X: the unscaled shape rotated by 180 deg about z; goal X*: rotated a further 90 deg. Ground "
                  "truth at each angle psi: the rotated shape voxelized again. a = psi / 90 deg. "
                  + " ".join(METHOD_FORMULAS[m] for m in interp["curves"]), "",
                  interpolation_markdown(interp), image("interpolation", "Interpolation (Fig. 6)"), ""]
        if "pose_average" in interp:
            lines += ["Averaged over random base poses (rotation and anisotropic scale of the training sampler; "
                      "band: one standard deviation):", "", image("interpolation_pose_average", "Pose-averaged interpolation"), ""]
        if "strip" in fig:
            lines += [image("strip", "Interpolation strip (Fig. 7)"), "Fig. 7 style: rows ground truth and methods, "
                      "columns rotation angles.", ""]
        if "circle" in interp:
            c = interp["circle"]
            idx = [int(np.abs(np.asarray(c["psi_deg"]) - w).argmin()) for w in (0, 90, 180, 270)]
            lines += ["### KP-Net goal IoU over the whole circle", "",
                      "| psi [deg] | " + " | ".join(f"{c['psi_deg'][i]:.0f}" for i in idx) + " | mean |",
                      "|---|" + "---|" * (len(idx) + 1),
                      "| IoU, base pose | " + " | ".join(f"{c['iou'][i]:.3f}" for i in idx) + f" | {np.mean(c['iou']):.3f} |"]
            if "pose_mean_iou" in c:
                lines.append("| IoU, random poses (mean) | " + " | ".join(f"{c['pose_mean_iou'][i]:.3f}" for i in idx)
                             + f" | {np.mean(c['pose_mean_iou']):.3f} |")
            lines += ["", image("circle", "Goal IoU over the circle"), ""]
    sensor = results.get("sensor")
    if sensor:
        lines += ["## Rotate-goal on sensor-like clouds (what the node answers)", "",
                  f"{len(sensor['pose_angle_deg'])} seeded yaw poses of the shape at its trained size, each seen as a "
                  "simulated depth-sensor cloud (surface samples, z-buffer visibility, depth noise up to 1.5 mm, "
                  "25-100 % density, up to 1 % outliers): *whole* = fused from 4 cameras around it, *single* = one "
                  "camera (azimuth anywhere, elevation 10-70 deg, 0.4-1.5 m). The grid is placed by the node's rule "
                  "(each model's own zoom); the goal `g(R_z(psi)(k - a) + a)` about the decoded object's vertical axis "
                  "`a` is scored against the solid turned by psi about its true vertical axis, voxelized in the same "
                  f"grid, at psi = 0, {sensor['psi_deg'][1]:.0f}, ..., {sensor['psi_deg'][-1]:.0f} deg. Spread = max - min "
                  "over psi of the pose-averaged IoU; axis error = distance between the decoded and the true axis.", "",
                  sensor_markdown(sensor), image("sensor", "Goal IoU on sensor-like clouds"), ""]
    eq = results.get("equivariance")
    if eq:
        lines += ["## Equivariance error", "",
                  "`|f(phi(X)) - phi(f(X))|` per keypoint, in voxels (1 voxel = 2/64 grid units), X the canonical "
                  "(unrotated, unscaled) shape voxelized, phi a random rotation about z (scale 1), a random per-axis "
                  "scale (angle 0), or both; statistics over all transforms x keypoints. Re-voxelization alone "
                  "moves surfaces by up to about half a voxel.", "", equivariance_markdown(eq),
                  image("equivariance", "Equivariance error per keypoint"), ""]
    lines += ["## Checkpoints", ""]
    for name, info in results["checkpoints"].items():
        lines += [f"### {name}", "", f"`{info['path']}` (SHA-256 of the weights `{info.get('weights_sha256', '?')}`)", ""]
        for key in ("architecture", "train_config", "progress"):
            if key in info:
                lines += [f"{key}:", "", "```json", json.dumps(info[key], indent=2, sort_keys=True), "```", ""]
        val = info.get("metrics", {}).get("val")
        if val:
            lines += ["validation metrics at the checkpoint: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()), ""]
    lines += ["## Files", "", f"Everything above is in `{rel.as_posix()}/`: `results.json` (all numbers), "
              "`table1.md`, `representation_per_example.csv`, `interpolation.csv`, "
              "`interpolation_pose_average.csv`, `circle.csv`, `equivariance_per_keypoint.csv` and the PNG figures.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- driver


def load_checkpoints(cfg: EvalConfig, device: torch.device) -> dict[str, tuple]:
    """name -> (model, metadata); checks that --kp is a keypoint net and --cnn a latent net."""
    loaded = {}
    for name, path, kind, flag in ((KP, cfg.kp, "keypoint", "--kp"), (CNN, cfg.cnn, "latent", "--cnn"),
                                   (KP_COMPARE, cfg.kp_compare, "keypoint", "--kp-compare")):
        if path is None:
            continue
        if not Path(path).exists() and not checkpoint_paths(path)[1].exists():
            raise CheckpointError(f"{flag} {path}: no such checkpoint file or run directory")
        model, meta = load_model(path, device)
        if model.kind != kind:
            raise ValueError(f"{flag} {path} is a {model.kind!r} model, expected a {kind!r} model "
                             f"({'KP-Net' if kind == 'keypoint' else 'CNN-Net'})")
        loaded[name] = (model, meta)
    return loaded


def choose_shape(cfg: EvalConfig, loaded: dict):
    """The shape to evaluate on: --shape, else the one the checkpoints were trained on (they must agree)."""
    trained = {}
    for name, (_, meta) in loaded.items():
        tc = meta.get("train_config", {})
        trained[name] = (tc.get("shape", "mug"), tc.get("up_axis", "z"))
    if cfg.shape is not None:
        source, up = cfg.shape, cfg.up_axis or "z"
    else:
        if len(set(trained.values())) > 1:
            raise ValueError(f"the checkpoints were trained on different shapes {trained}; pass --shape")
        source, up = next(iter(trained.values()))
        up = cfg.up_axis or up
    if source != "mug" and not Path(source).is_file():
        raise ValueError(f"shape {source!r} (from the checkpoint's training config) not found: pass --shape")
    return load_shape(source, up_axis=up)


def evaluate(cfg: EvalConfig, loaded: dict | None = None) -> dict:
    """Run the whole evaluation and write every output into ``cfg.out``; returns the results dict.

    ``loaded``: :func:`load_checkpoints`'s result when the caller has loaded them already (kp-eval does, so
    that a bad checkpoint is a usage error before any work)."""
    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    start_time = time.perf_counter()
    loaded = dict(loaded) if loaded is not None else load_checkpoints(cfg, device)
    shape = choose_shape(cfg, loaded)
    points = shape.points.to(device)
    compared = loaded.pop(KP_COMPARE, None)
    models = {name: model for name, (model, _) in loaded.items()}
    kp_model, cnn_model = models.get(KP), models.get(CNN)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "kp_eval_version": __version__,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "environment": {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
                        "torch": torch.__version__, "python": platform.python_version()},
        "shape": {"name": shape.name, **shape.normalization},
        "checkpoints": {name: _checkpoint_info(cfg.kp if name == KP else cfg.cnn, meta) for name, (_, meta) in loaded.items()},
    }
    if compared is not None:
        results["checkpoints"][KP_COMPARE] = _checkpoint_info(cfg.kp_compare, compared[1])
    for name, (_, meta) in loaded.items():
        norm = meta.get("normalization")
        if norm and norm.get("source") != shape.normalization.get("source"):
            print(f"warning: {name} was trained on {norm.get('source')}, evaluating on {shape.normalization.get('source')}",
                  file=sys.stderr)
    figure_data: dict = {}

    print(f"kp-eval: Table I on {cfg.samples} augmentations ({', '.join(models)}) on {device}", flush=True)
    rep = representation_power(models, points, cfg, device)
    figure_data["examples"] = rep.pop("examples")
    results["representation"] = rep

    print(f"kp-eval: interpolation ({cfg.angles} angles, {cfg.poses} random poses)", flush=True)
    interp = interpolation_suite(kp_model, cnn_model, points, cfg)
    strip = interp.pop("strip")
    if cfg.figures:
        strip["ground_truth"] = ground_truth_views(points, math.pi, torch.ones(3),
                                                   torch.deg2rad(torch.tensor([interp["psi_deg"][i] for i in strip["index"]])))
    figure_data["strip"] = strip
    results["interpolation"] = interp

    if kp_model is not None:
        print(f"kp-eval: equivariance ({cfg.equivariance_samples} transforms per mode)", flush=True)
        results["equivariance"] = equivariance(kp_model, points, cfg)

    if cfg.sensor_poses and (kp_model is not None or compared is not None):
        print(f"kp-eval: rotate-goal on sensor-like clouds ({cfg.sensor_poses} poses x whole/single)", flush=True)
        kp_models = {KP: loaded[KP]} if KP in loaded else {}
        if compared is not None:
            kp_models[KP_COMPARE] = compared
        results["sensor"] = sensor_suite(kp_models, shape, cfg, device)

    write_tables_and_csv(out, results)
    if cfg.figures:
        print("kp-eval: figures", flush=True)
        results["figures"] = make_figures(out, results, figure_data)
    results["elapsed_s"] = time.perf_counter() - start_time
    (out / "results.json").write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    if cfg.results_md:
        md_path = Path(cfg.results_md)
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(results_markdown(results, out, md_path))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kp-eval",
        description="Evaluate KP-Net and/or CNN-Net checkpoints: Table I, the Fig. 6 interpolation, equivariance "
                    "errors and figures (PNG) into --out; optionally a Markdown report (--results-md).")
    add_config_flags(parser, EvalConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    cfg = EvalConfig(**given(args, EvalConfig), command=argv)
    try:  # what the user gave: refused as a usage error (exit 2) before any work
        cfg.validate()
        loaded = load_checkpoints(cfg, resolve_device(cfg.device))
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    except (ValueError, CheckpointError, OSError) as err:
        parser.error(str(err))
    try:  # a failure from here on is not a usage error: it raises, with its traceback (exit 1)
        results = evaluate(cfg, loaded)
    except KeyboardInterrupt:
        print("\nkp-eval: interrupted", file=sys.stderr)
        return 130
    out = Path(cfg.out)
    rep = results.get("representation", {}).get("summary", {})
    for method in (CNN, KP):
        if method in rep:
            s = rep[method]
            print(f"{method}: BCE {_fmt(s['bce'])}  IoU {_fmt(s['iou'])}  Chamfer {_fmt(s['chamfer'])}  "
                  f"NN distance {_fmt(s['distance'])} voxels")
    for name, res in results.get("sensor", {}).get("models", {}).items():
        for kind in SENSOR_KINDS:
            r = res[kind]
            print(f"{name}, {kind} sensor clouds: goal IoU mean {r['mean']:.3f}, min {r['min']:.3f}, spread {r['spread']:.3f} over psi")
    print(f"kp-eval: wrote {out / 'results.json'}" + (f" and {cfg.results_md}" if cfg.results_md else "")
          + f" in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
